import CBLAS
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The one place that decides how work is spread over cores.
///
/// Policy: OpenBLAS always runs single-threaded and every kernel (GEMM included) splits its own work
/// into `threadCount` parts run by `parallelFor`. OpenBLAS's own workers keep spinning for ~0.1 s
/// after each call, so mixing them with our loops oversubscribes the cores; single-threaded OpenBLAS
/// plus our row split was measured at the same GEMM throughput (2-core Zen 5, session 1 benchmarks).
public enum Threading {
    /// 0 = one per online core. Atomic: contexts on other threads may read it while one configures.
    private static let configuredThreads = Atomic<Int>(0)
    /// Set once, before the first kernel runs (a static let initialiser runs exactly once, thread-safely).
    private static let singleThreadedBLAS: Void = openblas_set_num_threads(1)

    /// Number of worker threads kernels use. Defaults to the number of online cores.
    public static var threadCount: Int {
        _ = singleThreadedBLAS
        let configured = configuredThreads.load(ordering: .relaxed)
        return configured > 0 ? configured : onlineCores
    }

    /// Sets the number of worker threads (0 = one per online core) for the whole process.
    public static func configure(threads: Int) {
        precondition(threads >= 0, "thread count must be >= 0")
        _ = singleThreadedBLAS
        configuredThreads.store(threads, ordering: .relaxed)
    }

    public static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Runs `body(i)` for i in 0..<count on up to `threadCount` threads; returns when all are done.
    public static func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        let workers = min(count, threadCount)
        if workers == 1 {
            for i in 0..<count { body(i) }
            return
        }
        // Each worker takes a contiguous chunk: neighbouring iterations usually touch neighbouring memory.
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let start = count * worker / workers
                let end = count * (worker + 1) / workers
                for i in start..<end { box.value(i) }
            }
        }
    }

    /// Splits `0..<count` into `threadCount` contiguous ranges (rounded to `granularity`) and runs them.
    public static func parallelRanges(_ count: Int, granularity: Int = 1, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let units = (count + granularity - 1) / granularity
        let workers = min(units, threadCount)
        parallelFor(workers) { worker in
            let start = min(count, units * worker / workers * granularity)
            let end = min(count, units * (worker + 1) / workers * granularity)
            if start < end { body(start..<end) }
        }
    }
}

/// Lets a non-Sendable closure or pointer cross into Dispatch's workers; callers guarantee that
/// workers write disjoint memory.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
