import CKernels
import Synchronization

/// A layer's weight in its file's precision: Float32 as a tensor; F16 and BF16 as their 16-bit values (half
/// the memory of Float32; SD's weights are most of an edit's peak), widened to Float32 for each kernel call
/// that uses them (`withFloat32`), in a buffer reused from call to call.
public struct Weights: @unchecked Sendable {
    public let shape: [Int]
    private let values: Values

    private enum Values {
        case float32(Tensor)
        /// The 16-bit values, packed two per Float32 slot of a tensor storage (which gives the allocation its
        /// alignment, error and budget handling).
        case half(TensorStorage, bfloat16: Bool)
    }

    public init(_ tensor: Tensor) {
        self.init(shape: tensor.shape, values: .float32(tensor))
    }

    /// `count` IEEE half (or, with `bfloat16`, bfloat16) values, copied from `source` (any alignment).
    init(shape: [Int], bfloat16: Bool, copying source: UnsafeRawPointer) throws {
        let count = Tensor.elementCount(shape)
        let storage = try TensorStorage(count: (count + 1) / 2, shape: shape)
        copyOnEveryWorker(count: count, sourceElementBytes: 2, destinationElementBytes: 2, from: source, into: UnsafeMutableRawPointer(storage.pointer)) {
            $1.copyMemory(from: $0, byteCount: 2 * $2)
        }
        self.init(shape: shape, values: .half(storage, bfloat16: bfloat16))
    }

    private init(shape: [Int], values: Values) {
        self.shape = shape
        self.values = values
    }

    public var count: Int { Tensor.elementCount(shape) }

    /// .f32, .f16 or .bf16.
    public var precision: SafetensorsDType {
        switch values {
        case .float32: .f32
        case .half(_, let bfloat16): bfloat16 ? .bf16 : .f16
        }
    }

    /// The same weights seen with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Weights {
        precondition(Tensor.elementCount(newShape) == count, "Weights: cannot reshape \(shape) to \(newShape)")
        switch values {
        case .float32(let tensor): return Weights(shape: newShape, values: .float32(tensor.reshaped(newShape)))
        case .half: return Weights(shape: newShape, values: values)
        }
    }

    /// Runs `body` with the weights as a Float32 tensor. For F16/BF16 it is a widened copy in a reused buffer:
    /// valid during `body` only, which must not keep it.
    public func withFloat32<R>(_ body: (Tensor) throws -> R) throws -> R {
        switch values {
        case .float32(let tensor):
            return try body(tensor)
        case .half(let halves, let bfloat16):
            let buffer = try BufferPool.widening.take(count: count, shape: shape)
            defer { BufferPool.widening.give(back: buffer) }
            let widened = Tensor(shape: shape, storage: buffer)
            widen(halves, bfloat16: bfloat16, into: widened)
            return try body(widened)
        }
    }

    /// Runs `body` with the weights as a `weightGEMM` operand in `ComputePrecision.current`: for bfloat16 products
    /// the 16-bit values as stored (the kernel's packing rounds from them: no widened copy), else Float32 (widened
    /// into a reused buffer for F16/BF16, as `withFloat32`).
    func withOperand<R>(_ body: (GEMMOperand) throws -> R) throws -> R {
        if case .half(let halves, let bfloat16) = values, ComputePrecision.effective == .bfloat16 {
            return try body(GEMMOperand(UnsafeRawPointer(halves.pointer), type: bfloat16 ? TOKENFLOW_ELEMENT_BFLOAT16 : TOKENFLOW_ELEMENT_HALF))
        }
        return try withFloat32 { try body(GEMMOperand($0.pointer)) }
    }

    /// The weights as a Float32 tensor (for F16/BF16 a new widened copy).
    public func float32() throws -> Tensor {
        switch values {
        case .float32(let tensor):
            return tensor
        case .half(let halves, let bfloat16):
            let widened = try Tensor(uninitializedShape: shape)
            widen(halves, bfloat16: bfloat16, into: widened)
            return widened
        }
    }

    private func widen(_ halves: TensorStorage, bfloat16: Bool, into tensor: Tensor) {
        let source = UncheckedBox(UnsafeRawPointer(halves.pointer)), destination = UncheckedBox(tensor.mutablePointer)
        Threading.parallelRanges(count, granularity: 1 << 14) { range in
            widenHalfPrecision(source.value + 2 * range.lowerBound, bfloat16: bfloat16,
                               into: destination.value + range.lowerBound, count: range.count)
        }
    }
}

/// Buffers kept between kernel calls, because a new allocation per call page-faults its whole size every time
/// (measured: +20% on a batch-1 UNet forward at 64x64, 2 threads, when weights were widened into fresh ones).
/// A pool holds at most one buffer per caller running at once, each as large as its largest request, outside
/// any run's memory budget: like the weights, they outlive runs.
final class BufferPool: Sendable {
    private let free = Mutex<[TensorStorage]>([])

    /// Buffers for widened F16/BF16 weights (`Weights.withFloat32`): up to the largest weight, 59 MB for a
    /// 1280-channel 3x3 convolution.
    static let widening = BufferPool()
    /// Packing buffers of the bfloat16 products (`weightGEMM`), one per worker (9 MB each).
    static let packing = BufferPool()

    func take(count: Int, shape: [Int]) throws -> TensorStorage {
        let reusable: TensorStorage? = free.withLock { buffers in
            if let index = buffers.firstIndex(where: { $0.count >= count }) { return buffers.remove(at: index) }
            if !buffers.isEmpty { buffers.removeLast() } // too small: make room for a larger one
            return nil
        }
        if let reusable { return reusable }
        return try MemoryBudget.$current.withValue(nil) { try TensorStorage(count: count, shape: shape) }
    }

    func give(back buffer: TensorStorage) { free.withLock { $0.append(buffer) } }
}

/// Fills a new buffer of `count` elements from a model file's mapping, in parts of 2 MB of the destination on
/// every worker (`fill(source, destination, elements)` for each part): faulting in and zeroing the fresh pages
/// is most of loading a model (5 GB of F32 weights spent ~5 s in the kernel on one thread), and each worker
/// pays for its own parts.
func copyOnEveryWorker(count: Int, sourceElementBytes: Int, destinationElementBytes: Int, from source: UnsafeRawPointer,
                       into destination: UnsafeMutableRawPointer, _ fill: (UnsafeRawPointer, UnsafeMutableRawPointer, Int) -> Void) {
    let from = UncheckedBox(source), into = UncheckedBox(destination)
    Threading.parallelRanges(count, granularity: TensorStorage.hugePageBytes / destinationElementBytes) { range in
        fill(from.value + range.lowerBound * sourceElementBytes, into.value + range.lowerBound * destinationElementBytes, range.count)
    }
}

/// `count` IEEE half (or, with `bfloat16`, bfloat16) values at `source` (any alignment), widened exactly.
@inline(__always)
func widenHalfPrecision(_ source: UnsafeRawPointer, bfloat16: Bool, into destination: UnsafeMutablePointer<Float>, count: Int) {
    if bfloat16 { tokenflow_widen_bfloat16(source, destination, count) } else { tokenflow_widen_half(source, destination, count) }
}
