import CBLAS
import CKernels
import Tensors

/// What runs the numbers on this CPU. The engine runs on any x86-64: the Swift code is compiled for the
/// baseline, and the hot kernels are C with a variant per instruction set, chosen at run time (CKernels/cpu.c).
/// OpenBLAS picks its own kernels, not always ones that fit the CPU (`blasCoreChoice`).
public enum KernelCPU {
    static let features = tokenflow_cpu_features()

    /// (name, bit) of the features reported, in order.
    private static let named: [(name: String, bit: Int)] = [
        ("AVX", TOKENFLOW_CPU_AVX), ("AVX2", TOKENFLOW_CPU_AVX2), ("FMA", TOKENFLOW_CPU_FMA), ("F16C", TOKENFLOW_CPU_F16C),
        ("AVX-512F", TOKENFLOW_CPU_AVX512F), ("AVX-512BW", TOKENFLOW_CPU_AVX512BW), ("AVX-512VL", TOKENFLOW_CPU_AVX512VL),
        ("AVX512-BF16", TOKENFLOW_CPU_AVX512BF16), ("AMX-BF16", TOKENFLOW_CPU_AMX_BF16),
    ]

    private static func has(_ bit: Int) -> Bool { Int(features) & bit == bit }

    /// Makes OpenBLAS use the best kernels it has for this CPU (once). Every public entry that reads a user's
    /// file (a model folder, a single-file checkpoint, an inversion file) calls it before the first GEMM.
    public static func require() {
        _ = blasCoreChoice
    }

    /// The OpenBLAS core chosen for this CPU by its features, made once, and the one OpenBLAS had chosen (nil:
    /// OpenBLAS's choice stands). OpenBLAS identifies CPUs mostly by model number: a CPU newer than the OpenBLAS
    /// build gets Prescott's SSE3 kernels (measured on an Emerald Rapids Xeon, 1 thread: GEMM 9-12 GFLOP/s
    /// instead of 29-77 with Cooperlake's), and a Haswell model without FMA (a virtual machine can hide it) gets
    /// Haswell's FMA kernels, which it cannot run (seen under `qemu-x86_64 -cpu Haswell,-fma`: SIGILL). A user's
    /// own OPENBLAS_CORETYPE is left alone.
    static let blasCoreChoice: (core: String, replaced: String)? = {
        guard getenv("OPENBLAS_CORETYPE") == nil else { return nil }
        let current = String(cString: openblas_get_corename())
        let usesAVX2 = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"].contains(current.lowercased())
        let core: String
        if has(TOKENFLOW_CPU_AVX2_PATH) {
            guard !usesAVX2 else { return nil }
            let avx512 = TOKENFLOW_CPU_AVX512F | TOKENFLOW_CPU_AVX512BW | TOKENFLOW_CPU_AVX512VL
            core = has(avx512 | TOKENFLOW_CPU_AVX512BF16) ? "Cooperlake" : has(avx512) ? "SkylakeX" : "Haswell"
        } else {
            guard usesAVX2 else { return nil }
            core = has(TOKENFLOW_CPU_AVX) ? "Sandybridge" : "Nehalem"
        }
        return tokenflow_blas_select_core(core) == 0 ? (core, current) : nil
    }()

    /// The CPU's brand string, or "unknown CPU".
    public static var name: String {
        var buffer = [CChar](repeating: 0, count: 64)
        tokenflow_cpu_name(&buffer)
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let trimmed = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return trimmed.isEmpty ? "unknown CPU" : trimmed
    }

    /// One line for an edit's log: the CPU, the C kernels' path, the GEMMs' library and the precision the matrix
    /// products are computed in (`precision` asks for it).
    public static func summary(precision: ComputePrecision) -> String {
        let products: String
        switch (precision, precision.computed) {
        case (.bfloat16, .bfloat16): products = "matrix products in bf16 on \(Bfloat16Unit.current.map(\.description) ?? "?")"
        case (.bfloat16, _):
            let missing = Bfloat16Unit.inHardware ? "the avx512 kernel path" : "AMX-BF16 or AVX512-BF16, which this CPU has not"
            products = "matrix products in fp32 (precision bf16 needs \(missing))"
        default: products = "matrix products in fp32"
        }
        let openBLAS = "OpenBLAS core \(String(cString: openblas_get_corename()))"
        let gemms = GEMMLibrary.oneDNN ? "GEMMs on \(GEMMLibrary.oneDNNVersion), else \(openBLAS)" : "GEMMs on \(openBLAS)"
        return "\(name): C kernels on the \(KernelPath.current) path, \(gemms), \(products)"
    }

    /// What runs the numbers on this machine, for `tokenflow info` and benchmark output: the CPU, its vector
    /// features, the kernels' instruction set, the GEMMs' library and OpenBLAS's build and chosen core.
    public static var report: String {
        let present = named.filter { has($0.bit) }.map(\.name)
        let config = String(cString: openblas_get_config()), core = String(cString: openblas_get_corename())
        let chosen = blasCoreChoice.map { " (chosen by this library from the CPU's features, instead of OpenBLAS's \($0.replaced))" } ?? ""
        return "CPU: \(name) (\(present.isEmpty ? "no AVX" : present.joined(separator: ", ")))\n"
            + "kernels: Swift built for any x86-64; C kernels on the \(KernelPath.current) path (this CPU runs \(KernelPath.available.map(\.description).joined(separator: ", ")))\n"
            + "GEMM: " + (GEMMLibrary.oneDNN ? "\(GEMMLibrary.oneDNNVersion) for float32 products; OpenBLAS where oneDNN refuses one\n"
                                             : "OpenBLAS (oneDNN's kernels would need AVX2 and FMA)\n")
            + "OpenBLAS: \(config), core \(core)\(chosen)\n"
            + "precision bf16: \(bfloat16Units)"
    }

    /// Where precision bf16 would run, without asking Linux for AMX's tile state (`report` asks nothing).
    private static var bfloat16Units: String {
        guard Bfloat16Unit.inHardware else { return "computed as fp32 (no AMX-BF16 or AVX512-BF16)" }
        return has(TOKENFLOW_CPU_AMX_BF16) ? "on AMX (Linux's grant of the tile state is asked when first used; AVX512-BF16 without it)"
            : "on AVX512-BF16"
    }
}
