import CBLAS
import CKernels
import Tensors

/// The kernels (module Tensors) are compiled for x86-64-v3, so the first instruction of any Tensors function
/// may be one an older CPU lacks. Every public entry that reads a user's file with them (a model folder, a
/// single-file checkpoint, an inversion file) calls `require()` first: an older CPU gets an error, not SIGILL.
/// Detection is C compiled for any x86-64 (CKernels/cpu.c), and so is this module.
public enum KernelCPU {
    static let features = tokenflow_cpu_features()

    /// (name, bit) of the features reported, in order.
    private static let named: [(name: String, bit: Int)] = [
        ("AVX", TOKENFLOW_CPU_AVX), ("AVX2", TOKENFLOW_CPU_AVX2), ("FMA", TOKENFLOW_CPU_FMA), ("F16C", TOKENFLOW_CPU_F16C),
        ("AVX-512F", TOKENFLOW_CPU_AVX512F), ("AVX-512BW", TOKENFLOW_CPU_AVX512BW), ("AVX-512VL", TOKENFLOW_CPU_AVX512VL),
        ("AVX512-BF16", TOKENFLOW_CPU_AVX512BF16), ("AMX-BF16", TOKENFLOW_CPU_AMX_BF16),
    ]

    private static func has(_ bit: Int) -> Bool { Int(features) & bit == bit }

    /// Checks that this CPU runs the kernels, and (once) that OpenBLAS uses the best kernels it has for it.
    public static func require() throws {
        guard has(TOKENFLOW_CPU_AVX2_PATH) else {
            let missing = named.filter { TOKENFLOW_CPU_AVX2_PATH & $0.bit != 0 && !has($0.bit) }.map(\.name)
            throw ModelError.unsupportedCPU("the kernels of this build need an x86-64 CPU with AVX2, FMA and F16C (Intel Haswell, AMD Zen or later); this CPU (\(name)) has no \(missing.joined(separator: ", "))")
        }
        _ = blasCoreChoice
    }

    /// The OpenBLAS core chosen for this CPU when OpenBLAS's own choice is one it falls back to, made once
    /// (nil: OpenBLAS's choice stands). OpenBLAS identifies CPUs by model number, so a CPU newer than the
    /// OpenBLAS build gets Prescott's SSE3 kernels (measured on an Emerald Rapids Xeon, 1 thread: GEMM 9-12
    /// GFLOP/s instead of 29-77 with Cooperlake's). The features decide instead; a user's own
    /// OPENBLAS_CORETYPE is left alone.
    static let blasCoreChoice: String? = {
        let current = String(cString: openblas_get_corename())
        let knowsAVX2 = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"].contains(current.lowercased())
        guard !knowsAVX2, getenv("OPENBLAS_CORETYPE") == nil, has(TOKENFLOW_CPU_AVX2_PATH) else { return nil }
        let avx512 = TOKENFLOW_CPU_AVX512F | TOKENFLOW_CPU_AVX512BW | TOKENFLOW_CPU_AVX512VL
        let core = has(avx512 | TOKENFLOW_CPU_AVX512BF16) ? "Cooperlake" : has(avx512) ? "SkylakeX" : "Haswell"
        return tokenflow_blas_select_core(core) == 0 ? core : nil
    }()

    /// The CPU's brand string, or "unknown CPU".
    public static var name: String {
        var buffer = [CChar](repeating: 0, count: 64)
        tokenflow_cpu_name(&buffer)
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let trimmed = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return trimmed.isEmpty ? "unknown CPU" : trimmed
    }

    /// One line for an edit's log: the CPU, the C kernels' path, OpenBLAS's core and the precision the
    /// products with weights are computed in (`precision` asks for it).
    public static func summary(precision: ComputePrecision) -> String {
        let products: String
        switch (precision, precision.computed) {
        case (.bfloat16, .bfloat16): products = "products with weights in bf16 on AMX"
        case (.bfloat16, _):
            let missing = !ComputePrecision.bfloat16Hardware ? "AMX-BF16, which this CPU has not"
                : KernelPath.current != .avx512 ? "AMX on the avx512 kernel path" : "AMX, whose tile state Linux did not grant"
            products = "products with weights in fp32 (precision bf16 needs \(missing))"
        default: products = "products in fp32"
        }
        return "\(name): C kernels on the \(KernelPath.current) path, OpenBLAS core \(String(cString: openblas_get_corename())), \(products)"
    }

    /// What runs the numbers on this machine, for `tokenflow info` and benchmark output: the CPU, its vector
    /// features, the kernels' instruction set and OpenBLAS's build and chosen core.
    public static var report: String {
        let present = named.filter { has($0.bit) }.map(\.name)
        let config = String(cString: openblas_get_config()), core = String(cString: openblas_get_corename())
        let chosen = blasCoreChoice == nil ? "" : " (chosen by this library: OpenBLAS does not know this CPU)"
        return "CPU: \(name) (\(present.isEmpty ? "no AVX" : present.joined(separator: ", ")))\n"
            + "kernels: Swift built for AVX2/FMA/F16C (x86-64-v3); C kernels on the \(KernelPath.current) path (this CPU runs \(KernelPath.available.map(\.description).joined(separator: ", ")))\n"
            + "OpenBLAS: \(config), core \(core)\(chosen)\n"
            + "precision bf16: \(ComputePrecision.bfloat16Hardware ? "on AMX (Linux's grant of the tile state is asked when first used)" : "computed as fp32 (no AMX-BF16)")"
    }
}
