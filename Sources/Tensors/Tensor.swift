#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// An allocation that failed: the system refused the memory, the run's memory budget would be exceeded,
/// or the size does not fit in the address space. Thrown, never trapped: the engine runs inside other
/// people's processes.
public struct TensorAllocationError: Error, CustomStringConvertible, Equatable {
    public enum Reason: Equatable, Sendable {
        /// `posix_memalign` / `malloc` failed (address-space limit, no memory left).
        case systemRefused
        /// The run's `MemoryBudget` would be exceeded.
        case overBudget(limitBytes: Int, inUseBytes: Int)
        /// The size overflows or is negative.
        case sizeOverflow
        /// The address space left cannot hold OpenBLAS's GEMM buffers (`Threading.prepareBLASBuffers`).
        case blasBuffers(threads: Int)
    }
    /// What was being allocated ("a tensor of shape [1, 4, 64, 64]", "a 1920x1080 RGB24 frame").
    public let subject: String
    /// Its size, when it is known (nil when it overflows).
    public let bytes: Int?
    public let reason: Reason

    public init(subject: String, bytes: Int?, reason: Reason) {
        self.subject = subject
        self.bytes = bytes
        self.reason = reason
    }

    init(shape: [Int], reason: Reason) {
        self.init(subject: "a tensor of shape \(shape)", bytes: Tensor.byteCount(shape), reason: reason)
    }

    public var description: String {
        let size = bytes.map { TensorAllocationError.describe(bytes: $0) } ?? "more than the address space"
        switch reason {
        case .systemRefused:
            return "out of memory: the system refused \(size) for \(subject)"
        case .overBudget(let limit, let inUse):
            return "out of memory: \(subject) (\(size)) would exceed the memory_limit of "
                + "\(TensorAllocationError.describe(bytes: limit)) (\(TensorAllocationError.describe(bytes: inUse)) in use)"
        case .sizeOverflow:
            return "out of memory: \(subject) is larger than the address space"
        case .blasBuffers(let threads):
            return "out of memory: the address-space limit (ulimit -v) leaves no room for OpenBLAS's GEMM buffers "
                + "(\(size) for \(threads) threads); raise the limit or lower threads"
        }
    }

    static func describe(bytes: Int) -> String {
        let mib = Double(bytes) / 1_048_576
        return mib >= 1024 ? "\(Int((mib / 1024).rounded())) GiB" : "\(Int(mib.rounded(.up))) MiB"
    }
}

/// Swift arrays trap when their allocation fails. Before making one whose size comes from input (a host's
/// frame), this asks the system for that much once: a refused size becomes a thrown error instead.
public func requireAllocatable(bytes: Int, for subject: String) throws {
    guard bytes >= 0 else { throw TensorAllocationError(subject: subject, bytes: nil, reason: .sizeOverflow) }
    guard let probe = malloc(max(bytes, 1)) else {
        throw TensorAllocationError(subject: subject, bytes: bytes, reason: .systemRefused)
    }
    free(probe)
}

/// Bounds the tensor memory one run holds at once (the `memory_limit` setting). Tensors allocated
/// while a budget is current (`MemoryBudget.withCurrent`) are charged to it until they are freed.
/// Kernels allocate on the calling thread (workers only fill), so a thread-bound budget sees every
/// working tensor of a run.
public final class MemoryBudget: @unchecked Sendable {
    /// 0 = no limit (the run is still bounded by what the system grants).
    public let limitBytes: Int
    private let inUse = Atomic<Int>(0)
    private let highWater = Atomic<Int>(0)

    public init(limitBytes: Int) { self.limitBytes = max(0, limitBytes) }

    /// Bytes currently charged, and the most charged at once since the budget was made.
    public var inUseBytes: Int { inUse.load(ordering: .relaxed) }
    public var peakBytes: Int { highWater.load(ordering: .relaxed) }

    @TaskLocal public static var current: MemoryBudget?

    /// Runs `body` with this budget charged for every tensor allocated on this thread.
    public func withCurrent<R>(_ body: () throws -> R) rethrows -> R {
        try MemoryBudget.$current.withValue(self, operation: body)
    }

    func charge(_ bytes: Int, shape: [Int]) throws {
        let after = inUse.add(bytes, ordering: .relaxed).newValue
        if limitBytes > 0 && after > limitBytes {
            _ = inUse.subtract(bytes, ordering: .relaxed)
            throw TensorAllocationError(shape: shape, reason: .overBudget(limitBytes: limitBytes, inUseBytes: after - bytes))
        }
        _ = highWater.max(after, ordering: .relaxed)
    }

    func release(_ bytes: Int) { _ = inUse.subtract(bytes, ordering: .relaxed) }
}

/// Reference-counted, 64-byte aligned Float32 buffer shared by tensors and their views.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    private let budget: MemoryBudget?

    /// Allocates `count` floats, charged to the current `MemoryBudget`. `shape` only names the
    /// tensor in the error.
    public init(count: Int, shape: [Int]) throws {
        guard count >= 0, let bytes = Tensor.byteCount([max(count, 1)]) else {
            throw TensorAllocationError(shape: shape, reason: .sizeOverflow)
        }
        let budget = MemoryBudget.current
        try budget?.charge(bytes, shape: shape)
        var raw: UnsafeMutableRawPointer?
        // 64-byte alignment keeps AVX-512 loads and OpenBLAS packing on cache lines. Large buffers are whole
        // 4 KB pages from `LargeBufferArena` (backed by 2 MB pages), or where it has no room, aligned to and asked
        // to be backed by 2 MB pages (faulting fresh ones in 4 KB pages cost ~15% of an edit's time in the kernel).
        // Not rounded up to 2 MB: each buffer's last huge page would be resident whole, 0.4 GB over an edit.
        let huge = bytes >= TensorStorage.hugePageBytes
        let allocated = huge ? (bytes + LargeBufferArena.granule - 1) / LargeBufferArena.granule * LargeBufferArena.granule : bytes
        if huge, let reused = LargeBufferArena.shared.allocate(allocated) {
            raw = reused
        } else if posix_memalign(&raw, huge ? TensorStorage.hugePageBytes : 64, allocated) == 0, let raw {
            if huge { madvise(raw, allocated / TensorStorage.hugePageBytes * TensorStorage.hugePageBytes, MADV_HUGEPAGE) }
        } else {
            budget?.release(bytes)
            throw TensorAllocationError(shape: shape, reason: .systemRefused)
        }
        pointer = raw!.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        self.budget = budget
        self.allocatedBytes = allocated
    }

    static let hugePageBytes = 2 << 20
    /// Bytes allocated (whole 4 KB pages for a large buffer).
    private let allocatedBytes: Int

    /// Returns the pages of freed large buffers to the system (`LargeBufferArena.release`): at the end of a clip, so
    /// that a host that keeps the model loaded between clips does not also keep the last clip's working memory.
    public static func releaseFreedPages() { LargeBufferArena.shared.release() }

    deinit {
        if !LargeBufferArena.shared.free(pointer, allocatedBytes) { free(pointer) }
        budget?.release(max(count, 1) * MemoryLayout<Float>.stride)
    }
}

/// Large buffers (whole 4 KB pages, backed by 2 MB ones) carved from one reserved range of addresses, whose pages
/// stay when they are freed. glibc maps a block over 32 MB anew every time and trims its heap, so a fresh large
/// buffer has every page faulted in and zeroed by the kernel on first touch, while a UNet call allocates what the
/// previous one did (measured: 12% of a UNet forward at batch 3, 64x64, was page zeroing). Best fit among the free
/// ranges, which coalesce, else the range's unused end: like a heap that is never trimmed, the pages touched stay at
/// about the most ever live at once, until `release` or until nothing is live (outside `keepingFreedPages`). Where the range cannot be reserved
/// (an address-space limit, strict overcommit) or is full, buffers come from the system as before.
public final class LargeBufferArena: Sendable {
    /// The unit of sizes and offsets.
    public static let granule = 4096
    /// The engine's: twice the machine's memory, whose addresses cost nothing until touched (MAP_NORESERVE).
    public static let shared = LargeBufferArena(capacity: 2 * sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE)))

    /// The reserved mapping, and its first 2 MB boundary, where the range starts.
    private let mapping: UInt, base: UInt, capacity: Int

    private struct State: Sendable {
        /// Free ranges (offset, bytes), by offset, never adjacent (freeing coalesces them).
        var free: [(offset: Int, bytes: Int)] = []
        /// Where the never-used end of the range starts.
        var top = 0
        /// Calls of `keepingFreedPages` under way.
        var holds = 0
        /// Whether nothing is live: the whole used range is free.
        var nothingLive: Bool { free.count == 1 && free[0] == (0, top) }
    }
    private let state = Mutex(State())

    /// Reserves `capacity` bytes (rounded down to 2 MB) of addresses; none when that is refused.
    public init(capacity: Int) {
        let page = TensorStorage.hugePageBytes
        let wanted = max(capacity, 0) / page * page
        let mapping = wanted > 0 ? mmap(nil, wanted + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) : MAP_FAILED
        guard let mapping, mapping != MAP_FAILED else { self.mapping = 0; base = 0; self.capacity = 0; return }
        let aligned = (UInt(bitPattern: mapping) + UInt(page) - 1) / UInt(page) * UInt(page)
        madvise(UnsafeMutableRawPointer(bitPattern: aligned), wanted, MADV_HUGEPAGE)
        base = aligned
        self.capacity = wanted
        self.mapping = UInt(bitPattern: mapping)
    }

    deinit { if mapping != 0 { munmap(UnsafeMutableRawPointer(bitPattern: mapping), capacity + TensorStorage.hugePageBytes) } }

    /// `bytes` (a multiple of `granule`) from the range, or nil when it has no room.
    public func allocate(_ bytes: Int) -> UnsafeMutableRawPointer? {
        guard capacity > 0 else { return nil }
        let offset: Int? = state.withLock { state in
            // Best fit: the smallest free range that holds `bytes`.
            if let best = state.free.indices.filter({ state.free[$0].bytes >= bytes }).min(by: { state.free[$0].bytes < state.free[$1].bytes }) {
                let range = state.free[best]
                if range.bytes == bytes { state.free.remove(at: best) } else { state.free[best] = (range.offset + bytes, range.bytes - bytes) }
                return range.offset
            }
            // A free range at the end grows into the unused end; otherwise the unused end alone.
            var start = state.top
            if let last = state.free.last, last.offset + last.bytes == state.top { start = last.offset }
            guard start + bytes <= capacity else { return nil }
            if start < state.top { state.free.removeLast() }
            state.top = max(state.top, start + bytes)
            return start
        }
        return offset.flatMap { UnsafeMutableRawPointer(bitPattern: base + UInt($0)) }
    }

    /// Whether `pointer` is inside the range.
    public func contains(_ pointer: UnsafeRawPointer) -> Bool {
        let address = UInt(bitPattern: pointer)
        return address >= base && address < base + UInt(capacity)
    }

    /// Takes back a buffer `allocate` gave; false when `pointer` is not from the range.
    public func free(_ pointer: UnsafeMutableRawPointer, _ bytes: Int) -> Bool {
        guard contains(pointer) else { return false }
        var offset = Int(UInt(bitPattern: pointer) - base), length = bytes
        state.withLock { state in
            var index = state.free.firstIndex { $0.offset > offset } ?? state.free.count
            if index < state.free.count, offset + length == state.free[index].offset {
                length += state.free[index].bytes
                state.free.remove(at: index)
            }
            if index > 0, state.free[index - 1].offset + state.free[index - 1].bytes == offset {
                index -= 1
                offset = state.free[index].offset
                length += state.free[index].bytes
                state.free.remove(at: index)
            }
            state.free.insert((offset, length), at: index)
            returnPagesIfIdle(&state)
        }
        return true
    }

    /// Runs `body` keeping freed pages even when nothing is live (they go back at its end if nothing is live then):
    /// a model part loaded into the pages of one freed just before needs no fresh pages faulted in.
    public func keepingFreedPages<R>(_ body: () throws -> R) rethrows -> R {
        state.withLock { $0.holds += 1 }
        defer {
            state.withLock { state in
                state.holds -= 1
                returnPagesIfIdle(&state)
            }
        }
        return try body()
    }

    /// Returns the pages of every free range to the system (they stay free, and are zeroed again on next touch).
    public func release() {
        guard capacity > 0 else { return }
        state.withLock { returnFreePages(&$0) }
    }

    /// Nothing live (a model unloaded after its last clip) and no `keepingFreedPages` under way: every page goes
    /// back to the system.
    private func returnPagesIfIdle(_ state: inout State) {
        if state.holds == 0, state.nothingLive { returnFreePages(&state) }
    }

    private func returnFreePages(_ state: inout State) {
        for range in state.free { madvise(UnsafeMutableRawPointer(bitPattern: base + UInt(range.offset)), range.bytes, MADV_DONTNEED) }
        // The free range at the end joins the unused end.
        if let last = state.free.last, last.offset + last.bytes == state.top {
            state.top = last.offset
            state.free.removeLast()
        }
    }
}

/// A dense, row-major (C-contiguous) Float32 tensor.
///
/// Tensors are values over shared storage: `reshaped` and `slice` return views without copying;
/// kernels return new tensors. Only functions named `...InPlace` or code holding `mutablePointer`
/// write into existing storage.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let storage: TensorStorage
    /// Element offset of this tensor's first element inside `storage`.
    public let offset: Int

    public init(shape: [Int], storage: TensorStorage, offset: Int = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(offset + Tensor.elementCount(shape) <= storage.count, "view \(shape)+\(offset) exceeds storage")
        self.shape = shape
        self.storage = storage
        self.offset = offset
    }

    /// A new tensor; contents are uninitialised (every kernel writes all of its output).
    public init(uninitializedShape shape: [Int]) throws {
        guard let count = Tensor.checkedElementCount(shape) else {
            throw TensorAllocationError(shape: shape, reason: .sizeOverflow)
        }
        self.init(shape: shape, storage: try TensorStorage(count: count, shape: shape))
    }

    public init(zeros shape: [Int]) throws {
        try self.init(uninitializedShape: shape)
        pointer.initialize(repeating: 0, count: count)
    }

    public init(shape: [Int], repeating value: Float) throws {
        try self.init(uninitializedShape: shape)
        pointer.initialize(repeating: value, count: count)
    }

    public init(shape: [Int], values: [Float]) throws {
        precondition(values.count == Tensor.elementCount(shape), "\(values.count) values for shape \(shape)")
        try self.init(uninitializedShape: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    public static func elementCount(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// The element count, or nil when a dimension is negative or the product overflows.
    public static func checkedElementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// Bytes of a Float32 tensor of `shape`, or nil when that overflows.
    public static func byteCount(_ shape: [Int]) -> Int? {
        guard let count = checkedElementCount(shape) else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        return overflow ? nil : bytes
    }

    public var count: Int { Tensor.elementCount(shape) }
    public var rank: Int { shape.count }

    /// Row-major strides in elements.
    public var strides: [Int] {
        var result = [Int](repeating: 1, count: shape.count)
        var step = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            result[axis] = step
            step *= shape[axis]
        }
        return result
    }

    /// Read-only view of the elements (valid while the tensor is alive).
    public var pointer: UnsafeMutablePointer<Float> { storage.pointer + offset }
    /// Pointer for kernels that fill a tensor they just created or that is documented as in-place.
    public var mutablePointer: UnsafeMutablePointer<Float> { storage.pointer + offset }

    public var scalars: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    public subscript(flat index: Int) -> Float {
        get { pointer[index] }
        nonmutating set { pointer[index] = newValue }
    }

    /// Same elements, new shape (one dimension may be -1). No copy.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let inferred = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != inferred }.map(\.element).reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            resolved[inferred] = count / known
        }
        precondition(Tensor.elementCount(resolved) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: resolved, storage: storage, offset: offset)
    }

    /// Rows `range` of the first dimension. No copy.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "slice \(range) of \(shape)")
        let rowSize = count / max(shape[0], 1)
        var newShape = shape
        newShape[0] = range.count
        return Tensor(shape: newShape, storage: storage, offset: offset + range.lowerBound * rowSize)
    }

    /// Element `index` of the first dimension, with that dimension removed. No copy.
    public func row(_ index: Int) -> Tensor {
        let s = slice(index..<(index + 1))
        return s.reshaped(Array(shape.dropFirst()))
    }

    /// A copy with its own storage.
    public func copy() throws -> Tensor {
        let result = try Tensor(uninitializedShape: shape)
        result.mutablePointer.update(from: pointer, count: count)
        return result
    }

    public var description: String {
        let preview = scalars.prefix(6).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(\(shape)) [\(preview)\(count > 6 ? ", ..." : "")]"
    }
}
