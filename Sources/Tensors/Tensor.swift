#if canImport(Glibc)
import Glibc
#endif

/// Reference-counted, 64-byte aligned Float32 buffer shared by tensors and their views.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0, "negative element count")
        var raw: UnsafeMutableRawPointer?
        // 64-byte alignment keeps AVX-512 loads and OpenBLAS packing on cache lines.
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes for a tensor")
        }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
    }

    deinit { free(pointer) }
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
    public init(uninitializedShape shape: [Int]) {
        self.init(shape: shape, storage: TensorStorage(count: Tensor.elementCount(shape)))
    }

    public init(zeros shape: [Int]) {
        self.init(uninitializedShape: shape)
        pointer.initialize(repeating: 0, count: count)
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(uninitializedShape: shape)
        pointer.initialize(repeating: value, count: count)
    }

    public init(shape: [Int], values: [Float]) {
        precondition(values.count == Tensor.elementCount(shape), "\(values.count) values for shape \(shape)")
        self.init(uninitializedShape: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    public static func elementCount(_ shape: [Int]) -> Int { shape.reduce(1, *) }

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
    public func copy() -> Tensor {
        let result = Tensor(uninitializedShape: shape)
        result.mutablePointer.update(from: pointer, count: count)
        return result
    }

    public var description: String {
        let preview = scalars.prefix(6).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(\(shape)) [\(preview)\(count > 6 ? ", ..." : "")]"
    }
}
