import CBLAS
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The one place that decides how work is spread over cores.
///
/// Policy: the GEMM libraries (oneDNN, OpenBLAS) always run single-threaded and every kernel (GEMM included)
/// splits its own work into `threadCount` parts run by `parallelFor`. OpenBLAS's own workers keep spinning for ~0.1 s
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
        workerRanges(count, granularity: granularity) { range, _ in body(range) }
    }

    /// The split of `parallelRanges`, declared once: worker i runs its range with its index i.
    private static func workerRanges(_ count: Int, granularity: Int, _ body: (Range<Int>, Int) -> Void) {
        if count <= 0 { return }
        let units = (count + granularity - 1) / granularity
        let workers = workerCount(count, granularity: granularity)
        parallelFor(workers) { worker in
            let start = min(count, units * worker / workers * granularity)
            let end = min(count, units * (worker + 1) / workers * granularity)
            if start < end { body(start..<end, worker) }
        }
    }
}

extension Threading {
    /// The number of workers `parallelRanges` runs for `count` items in blocks of `granularity`.
    static func workerCount(_ count: Int, granularity: Int) -> Int {
        min((count + granularity - 1) / granularity, threadCount)
    }

    /// `parallelRanges` with `floats` of scratch memory per worker, allocated (and charged to the run's
    /// `MemoryBudget`) on the calling thread before the loop: a failed allocation is a thrown error here,
    /// where a worker could only trap.
    public static func parallelRanges(_ count: Int, granularity: Int = 1, scratchFloats floats: Int,
                                      _ body: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) throws {
        if count <= 0 { return }
        let scratch = try Tensor(uninitializedShape: [workerCount(count, granularity: granularity), floats])
        parallelRanges(count, granularity: granularity, scratch: scratch.mutablePointer, floats: floats, body)
        withExtendedLifetime(scratch) {}
    }

    /// `parallelRanges` with worker i's scratch at `scratch + i * floats` (`workerCount` workers).
    static func parallelRanges(_ count: Int, granularity: Int, scratch: UnsafeMutablePointer<Float>, floats: Int,
                               _ body: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        let base = UncheckedBox(scratch)
        workerRanges(count, granularity: granularity) { range, worker in body(range, base.value + worker * floats) }
    }
}

extension Threading {
    /// Worker count whose OpenBLAS buffers exist (`prepareBLASBuffers`).
    private static let preparedBLASThreads = Mutex<Int>(0)
    /// Address space one OpenBLAS GEMM buffer takes: 128 MiB in Debian's 0.3.21 build (BUFFER_SIZE),
    /// plus a page; other builds use less, so this errs on the side of refusing.
    static let blasBufferBytes = (128 << 20) + 4096

    /// OpenBLAS gives every thread inside a GEMM call a working buffer and, when the allocation fails, retries
    /// forever: under a tight address-space limit the first GEMM of a worker would hang the host. So, before
    /// any edit: check that `threadCount` buffers fit, then make OpenBLAS allocate them now (one GEMM on every
    /// worker at once); later calls reuse them. Throws `TensorAllocationError` when they do not fit.
    public static func prepareBLASBuffers() throws {
        let threads = threadCount
        try preparedBLASThreads.withLock { prepared in
            if prepared >= threads { return }
            let bytes = threads * blasBufferBytes
            let probe = mmap(nil, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let probe, probe != MAP_FAILED else {
                throw TensorAllocationError(subject: "OpenBLAS's buffers", bytes: bytes, reason: .blasBuffers(threads: threads))
            }
            munmap(probe, bytes)
            let size = 256
            let operands = try Tensor(zeros: [threads, 3, size * size])
            let arrived = Atomic<Int>(0), base = UncheckedBox(operands.mutablePointer)
            parallelFor(threads) { worker in
                // Meet the other workers first (briefly, in case Dispatch runs them one after another), so the
                // GEMMs overlap and OpenBLAS allocates one buffer per concurrent caller.
                arrived.add(1, ordering: .relaxed)
                let deadline = DispatchTime.now().uptimeNanoseconds + 50_000_000
                while arrived.load(ordering: .relaxed) < threads && DispatchTime.now().uptimeNanoseconds < deadline {
                    sched_yield()
                }
                let a = base.value + worker * 3 * size * size, b = a + size * size, c = b + size * size
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(size), Int32(size), Int32(size),
                            1, a, Int32(size), b, Int32(size), 0, c, Int32(size))
            }
            withExtendedLifetime(operands) {}
            prepared = threads
        }
    }
}

/// Lets a non-Sendable closure or pointer cross into Dispatch's workers; callers guarantee that
/// workers write disjoint memory.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
