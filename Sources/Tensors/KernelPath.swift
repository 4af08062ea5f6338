import CKernels

/// The instruction-set variant the C kernels (module CKernels) run: the best this CPU has, chosen at run
/// time, or one forced by TOKENFLOW_KERNELS=portable|avx2|avx512 (clamped to what the CPU runs) or by
/// `force` (tests run every kernel on every path this CPU can run).
public enum KernelPath: Int, CaseIterable, Sendable, CustomStringConvertible {
    case portable, avx2, avx512

    /// The path in use.
    public static var current: KernelPath { KernelPath(rawValue: Int(tokenflow_current_path().rawValue)) ?? .portable }

    /// The best path this CPU runs.
    public static var best: KernelPath { KernelPath(rawValue: Int(tokenflow_best_path().rawValue)) ?? .portable }

    /// The paths this CPU runs, portable first.
    public static var available: [KernelPath] { allCases.filter { $0.rawValue <= best.rawValue } }

    /// Makes the kernels run `path`; false (nothing changed) when this CPU cannot run it.
    @discardableResult
    public static func force(_ path: KernelPath) -> Bool {
        tokenflow_force_path(tokenflow_path(rawValue: UInt32(path.rawValue))) == 0
    }

    public var description: String { String(cString: tokenflow_path_name(tokenflow_path(rawValue: UInt32(rawValue)))) }
}
