import CBLAS

/// The kernels (module Tensors) are compiled for x86-64-v3, so the first instruction of any Tensors function
/// may be one an older CPU lacks. Every public entry that reads a user's file with them (a model folder, a
/// single-file checkpoint, an inversion file) calls `require()` first: an older CPU gets an error, not SIGILL.
/// The check itself is C compiled for any x86-64 (CBLAS/shim.h).
public enum KernelCPU {
    public static func require() throws {
        guard tokenflow_cpu_runs_kernels() != 0 else {
            throw ModelError.unsupportedCPU("the kernels of this build need an x86-64 CPU with AVX2, FMA and F16C (Intel Haswell, AMD Zen or later); this CPU lacks one of them")
        }
    }
}
