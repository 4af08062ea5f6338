import CBLAS
import CDNNL
import CKernels
import Synchronization

/// Row-major single-precision GEMM: C = alpha * op(A) * op(B) + beta * C, with op(A) M x K and op(B) K x N.
///
/// Large products are split over `Threading.threadCount` workers along M (or N when M is small), each
/// computing its block single-threaded on oneDNN's or OpenBLAS's GEMM (`GEMMLibrary`).
public func sgemm(
    transposeA: Bool = false, transposeB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    parallel: Bool = true
) {
    if m == 0 || n == 0 { return }
    let pa = UncheckedBox(a), pb = UncheckedBox(b), pc = UncheckedBox(c)
    switch GEMMSplit(m: m, n: n, k: k, threads: parallel ? Threading.threadCount : 1) {
    case .none:
        sgemmBlock(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    case .rows:
        Threading.parallelRanges(m, granularity: 16) { rows in
            let aBlock = transposeA ? pa.value + rows.lowerBound : pa.value + rows.lowerBound * lda
            sgemmBlock(transposeA, transposeB, rows.count, n, k, alpha, aBlock, lda, pb.value, ldb, beta,
                       pc.value + rows.lowerBound * ldc, ldc)
        }
    case .columns:
        Threading.parallelRanges(n, granularity: 16) { cols in
            let bBlock = transposeB ? pb.value + cols.lowerBound * ldb : pb.value + cols.lowerBound
            sgemmBlock(transposeA, transposeB, m, cols.count, k, alpha, pa.value, lda, bBlock, ldb, beta,
                       pc.value + cols.lowerBound, ldc)
        }
    }
}

/// How a GEMM's output is split over the workers: not at all below ~1 MFLOP (the split costs more than it
/// saves), else into blocks of rows, or of columns when there are few rows and many more columns.
private enum GEMMSplit {
    case none, rows, columns

    init(m: Int, n: Int, k: Int, threads: Int) {
        if threads == 1 || m * n * max(k, 1) < 1 << 19 { self = .none } else { self = m >= n || m >= 64 * threads ? .rows : .columns }
    }
}

/// The precision of the model's matrix products: float32, the default and the parity reference; or bfloat16
/// operands with float32 sums for the products with weights (linear and convolution layers, `weightGEMM`) and
/// attention's QK^T and PV (softmax in float32), computed on the CPU's bfloat16 unit (`Bfloat16Unit`) and as
/// float32 where it has none. Norms, activations, causal attention and the nearest-neighbour search stay float32.
/// A run sets it with `ComputePrecision.$current.withValue`; it is read on the calling thread of each layer.
public enum ComputePrecision: String, Sendable, CaseIterable {
    case float32 = "fp32", bfloat16 = "bf16"

    @TaskLocal public static var current: ComputePrecision = .float32

    /// What `current` is computed in here.
    public static var effective: ComputePrecision { current.computed }

    /// What this precision is computed in here: bfloat16 needs a bfloat16 unit and the avx512 kernel path (both
    /// units pack with AVX-512; a path forced lower, by TOKENFLOW_KERNELS or a test, computes float32).
    public var computed: ComputePrecision {
        self == .bfloat16 && KernelPath.current == .avx512 && Bfloat16Unit.current != nil ? .bfloat16 : .float32
    }
}

/// Where bfloat16 products run (bf16_products.c): Intel AMX's tiles where the CPU has AMX-BF16 and Linux grants
/// the tile state; else AVX512-BF16's dot products (AMD Zen 4 and 5, Intel Cooper Lake). The best one this CPU
/// has is used unless `force` chose a lower one (tests run both where AMX is).
public enum Bfloat16Unit: Int, CaseIterable, Sendable, CustomStringConvertible {
    case avx512 = 1, amx = 2

    /// The unit in use; nil when the CPU has none. The first call asks Linux for AMX's tile state.
    public static var current: Bfloat16Unit? { Bfloat16Unit(rawValue: Int(tokenflow_bf16_current_unit().rawValue)) }

    /// The best unit this CPU has, as `current` asks it.
    public static var best: Bfloat16Unit? { Bfloat16Unit(rawValue: Int(tokenflow_bf16_best_unit().rawValue)) }

    /// Whether this CPU has bfloat16 products at all. Reading it asks nothing of the OS.
    public static var inHardware: Bool {
        let needed = TOKENFLOW_CPU_AVX512F | TOKENFLOW_CPU_AVX512BW | TOKENFLOW_CPU_AVX512VL | TOKENFLOW_CPU_AVX512BF16
        return Int(tokenflow_cpu_features()) & needed == needed
    }

    /// The units this CPU has, lowest first.
    public static var available: [Bfloat16Unit] { allCases.filter { $0.rawValue <= best?.rawValue ?? 0 } }

    /// Makes bfloat16 products run on `unit`; false (nothing changed) when this CPU has no such unit.
    @discardableResult
    public static func force(_ unit: Bfloat16Unit) -> Bool {
        tokenflow_bf16_force_unit(tokenflow_bf16_unit(rawValue: UInt32(unit.rawValue))) == 0
    }

    public var description: String { self == .amx ? "AMX" : "AVX512-BF16" }
}

/// An operand of `weightGEMM`: float32 values, or a layer's weights as their file stores them (`Weights`), which
/// the bfloat16 kernels round from directly, with no float32 copy.
struct GEMMOperand {
    let pointer: UnsafeRawPointer
    let type: tokenflow_element_type

    init(_ values: UnsafePointer<Float>) { self.init(UnsafeRawPointer(values), type: TOKENFLOW_ELEMENT_FLOAT32) }
    init(_ pointer: UnsafeRawPointer, type: tokenflow_element_type) { self.pointer = pointer; self.type = type }

    /// The operand from its element `index` on.
    func advanced(by index: Int) -> GEMMOperand {
        GEMMOperand(pointer + index * (type == TOKENFLOW_ELEMENT_FLOAT32 ? 4 : 2), type: type)
    }
}

/// A, an m x k weight matrix used by several `weightGEMM`s (a convolution's, for every image and band), rounded
/// and packed once for bfloat16 products; nil when the products are float32 (or empty).
func packedForBfloat16(_ a: GEMMOperand, lda: Int, m: Int, k: Int) throws -> Tensor? {
    guard m > 0, k > 0, a.type != TOKENFLOW_ELEMENT_FLOAT32 || ComputePrecision.effective == .bfloat16 else { return nil }
    let packed = try Tensor(uninitializedShape: [(tokenflow_gemm_bf16_packed_a_elements(m, k) + 1) / 2])
    tokenflow_gemm_bf16_pack_a(a.pointer, a.type, lda, m, k,
                               UnsafeMutableRawPointer(packed.mutablePointer).assumingMemoryBound(to: UInt16.self))
    return packed
}

/// C = A op(B) + beta * C for a layer's weights (linear and convolution layers), in `ComputePrecision.current`:
/// `sgemm` for float32; for bfloat16, the bfloat16 unit's products split over the workers like `sgemm`'s, each with its own
/// packing buffer (9 MB, kept between calls in `BufferPool.packing`), A's rounding skipped when `packedA`
/// (`packedForBfloat16` of this A) is given, and B's when `packedB` is (a `PackedB` its producer wrote; `b` is
/// then not read). A non-transposed B is float32.
func weightGEMM(transposeB: Bool = false, m: Int, n: Int, k: Int, a: GEMMOperand, lda: Int, packedA: Tensor? = nil,
                b: GEMMOperand, ldb: Int, packedB: PackedB? = nil, beta: Float = 0, c: UnsafeMutablePointer<Float>,
                ldc: Int) throws {
    if m == 0 || n == 0 { return }
    // 16-bit and packed operands come only from `Weights.withOperand`, `packedForBfloat16` and `PackedB` under
    // bfloat16 products (a bfloat16 unit present, for good), so they take the bfloat16 path whatever happened
    // since; float32 ones, unless bfloat16 is asked. K = 0 reads neither operand.
    let sixteenBit = a.type != TOKENFLOW_ELEMENT_FLOAT32 || b.type != TOKENFLOW_ELEMENT_FLOAT32 || packedA != nil || packedB != nil
    guard k > 0 && (sixteenBit || ComputePrecision.effective == .bfloat16) else {
        sgemm(transposeB: transposeB, m: m, n: n, k: k, a: a.pointer.assumingMemoryBound(to: Float.self), lda: lda,
              b: b.pointer.assumingMemoryBound(to: Float.self), ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    let split = GEMMSplit(m: m, n: n, k: k, threads: Threading.threadCount)
    let count = split == .columns ? n : m, granularity = 32 // blocks of one 32 x 32 micro-tile
    let floats = (tokenflow_gemm_bf16_scratch_bytes() + 3) / 4, workers = Threading.workerCount(count, granularity: granularity)
    let buffer = try BufferPool.packing.take(count: workers * floats, shape: [workers, floats])
    defer { BufferPool.packing.give(back: buffer) }
    let pc = UncheckedBox(c)
    let packed = UncheckedBox(packedA.map { UnsafeRawPointer($0.pointer).assumingMemoryBound(to: UInt16.self) })
    let packedColumns = UncheckedBox(packedB.map { $0.pointer })
    Threading.parallelRanges(count, granularity: granularity, scratch: buffer.pointer, floats: floats) { range, scratch in
        let (rows, columns) = split == .columns ? (0..<m, range) : (range, 0..<n)
        let aBlock = a.advanced(by: rows.lowerBound * lda)
        let packedRows = packed.value.map { $0 + tokenflow_gemm_bf16_packed_a_elements(rows.lowerBound, k) } // 32-row panels
        let bBlock = b.advanced(by: transposeB ? columns.lowerBound * ldb : columns.lowerBound)
        let packedBlock = packedColumns.value.map { $0 + tokenflow_gemm_bf16_packed_b_elements(k, columns.lowerBound) } // 32-column panels
        tokenflow_gemm_bf16(transposeB ? 1 : 0, rows.count, columns.count, k, aBlock.pointer, aBlock.type, lda, packedRows,
                            bBlock.pointer, bBlock.type, ldb, packedBlock, beta, pc.value + rows.lowerBound * ldc + columns.lowerBound,
                            ldc, scratch)
    }
    withExtendedLifetime((packedA, packedB)) {}
}

/// A k x n float32 B packed whole for bfloat16 products by the code that makes it (Winograd's input transform):
/// `writeRows` puts each pair of rows in place, rounded, so B never exists as float32 in memory.
struct PackedB: Sendable {
    let k: Int, n: Int
    private let storage: Tensor

    init(k: Int, n: Int) throws {
        self.k = k
        self.n = n
        storage = try Tensor(uninitializedShape: [(tokenflow_gemm_bf16_packed_b_elements(k, n) + 1) / 2])
    }

    var pointer: UnsafeMutablePointer<UInt16> { UnsafeMutableRawPointer(storage.mutablePointer).assumingMemoryBound(to: UInt16.self) }

    /// Rows `row` (even) and row + 1 from `columns` (<= n) floats each (nil: zeros, as past the last row), for
    /// products of that many columns. Every pair of round32(k) rows must be written; pairs may be written from
    /// several threads at once.
    func writeRows(_ row: Int, even: UnsafePointer<Float>?, odd: UnsafePointer<Float>?, columns: Int) {
        precondition(row % 2 == 0 && row < (k + 31) / 32 * 32 && columns <= n, "PackedB rows \(row) of \(k), \(columns) of \(n) columns")
        tokenflow_gemm_bf16_pack_b_rows(even, odd, columns, row, k, pointer)
    }

    /// Rows past k up to the next multiple of 32, which the products read: zero.
    var paddedRows: StrideTo<Int> { stride(from: (k + 1) / 2 * 2, to: (k + 31) / 32 * 32, by: 2) }
}

/// Where float32 GEMMs run: on oneDNN where the CPU has AVX2 and FMA (the avx2 kernel path or better): there its
/// GEMMs ran the engine's products in 0.86-0.95 of OpenBLAS's time (UNet forwards at 64x64 batch 3 and 32x20 batch
/// 24, the VAE at 512x512; alternating runs on an Emerald Rapids Xeon, 2 threads). Elsewhere on OpenBLAS: oneDNN
/// picks its kernels by the CPU's feature bits and would run FMA on a CPU that reports AVX2 without FMA, as a
/// virtual machine may. OpenBLAS also computes a product oneDNN refuses (no memory for its working buffers).
/// The engine's products use beta 0 or 1 only, so a refused product's C is as it was (`tokenflow_dnnl_sgemm`).
public enum GEMMLibrary {
    /// Whether oneDNN can run here: the CPU has AVX2 and FMA.
    public static let oneDNNAvailable = KernelPath.best.rawValue >= KernelPath.avx2.rawValue
    private static let useOneDNN = Atomic<Bool>(oneDNNAvailable)

    /// Whether float32 GEMMs run on oneDNN now.
    public static var oneDNN: Bool { useOneDNN.load(ordering: .relaxed) }

    /// Makes float32 GEMMs run on oneDNN (where available) or on OpenBLAS (tests run both); false when this CPU
    /// cannot run the one asked for.
    @discardableResult
    public static func force(oneDNN: Bool) -> Bool {
        guard !oneDNN || oneDNNAvailable else { return false }
        useOneDNN.store(oneDNN, ordering: .relaxed)
        return true
    }

    /// "oneDNN 2.6.3": the version loaded.
    public static var oneDNNVersion: String {
        let version = dnnl_version().pointee
        return "oneDNN \(version.major).\(version.minor).\(version.patch)"
    }
}

@inline(__always)
private func sgemmBlock(
    _ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int
) {
    if k == 0 {
        // OpenBLAS returns early for K = 0 without applying beta; define the result explicitly.
        for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
        return
    }
    func operation(_ transposed: Bool) -> CChar { CChar(UInt8(ascii: transposed ? "T" : "N")) }
    if GEMMLibrary.oneDNN,
       tokenflow_dnnl_sgemm(operation(ta), operation(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == 0 { return }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Matrix product of the last two dimensions, batched over the leading ones (which must match,
/// or `b` may be a plain matrix shared by every batch item).
public func matmul(_ a: Tensor, _ b: Tensor, transposeB: Bool = false) throws -> Tensor {
    precondition(a.rank >= 2 && b.rank >= 2, "matmul needs matrices, got \(a.shape) and \(b.shape)")
    let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1]
    let bRows = b.shape[b.rank - 2], bCols = b.shape[b.rank - 1]
    let n = transposeB ? bRows : bCols
    precondition((transposeB ? bCols : bRows) == k, "matmul inner dimensions differ: \(a.shape) x \(b.shape)")
    let batchShape = Array(a.shape.dropLast(2))
    let batch = Tensor.elementCount(batchShape)
    let bShared = b.rank == 2
    precondition(bShared || Array(b.shape.dropLast(2)) == batchShape, "matmul batch shapes differ: \(a.shape) x \(b.shape)")
    let out = try Tensor(uninitializedShape: batchShape + [m, n])
    if bShared {
        // One big GEMM over all batch rows.
        sgemm(transposeB: transposeB, m: batch * m, n: n, k: k, a: a.pointer, lda: k,
              b: b.pointer, ldb: bCols, c: out.mutablePointer, ldc: n)
    } else {
        for i in 0..<batch {
            sgemm(transposeB: transposeB, m: m, n: n, k: k, a: a.pointer + i * m * k, lda: k,
                  b: b.pointer + i * bRows * bCols, ldb: bCols, c: out.mutablePointer + i * m * n, ldc: n)
        }
    }
    return out
}

/// y = x W^T + bias over the last dimension, with `weight` [out, in] as stored by PyTorch's nn.Linear.
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
    try linear(x, weights: Weights(weight), bias: bias)
}

/// `linear` with a layer's weights in their file's precision (`Weights.withOperand`).
public func linear(_ x: Tensor, weights: Weights, bias: Tensor? = nil) throws -> Tensor {
    precondition(weights.shape.count == 2 && x.shape.last == weights.shape[1],
                 "linear: input \(x.shape) does not fit weight \(weights.shape)")
    let outFeatures = weights.shape[0], inFeatures = weights.shape[1]
    let rows = x.count / max(inFeatures, 1)
    let out = try Tensor(uninitializedShape: Array(x.shape.dropLast()) + [outFeatures])
    let o = out.mutablePointer
    if let bias {
        precondition(bias.count == outFeatures, "linear: bias \(bias.shape) for \(outFeatures) outputs")
        // On every worker: this first write into the new output is where its pages are faulted in and zeroed.
        let output = UncheckedBox(o), values = UncheckedBox(bias.pointer)
        Threading.parallelRanges(rows, granularity: 64) { range in
            for r in range { (output.value + r * outFeatures).update(from: values.value, count: outFeatures) }
        }
    }
    try weights.withOperand { w in
        try weightGEMM(transposeB: true, m: rows, n: outFeatures, k: inFeatures, a: GEMMOperand(x.pointer), lda: inFeatures,
                       b: w, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: o, ldc: outFeatures)
    }
    return out
}
