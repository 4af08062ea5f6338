import CKernels

/// A layer's weight in its file's precision: Float32 as a tensor; F16 and BF16 as their 16-bit values (half
/// the memory of Float32; SD's weights are most of an edit's peak), widened to Float32 for each kernel call
/// that uses them (`withFloat32`), in a temporary tensor freed when the call ends.
public struct Weights: @unchecked Sendable {
    public let shape: [Int]
    /// .f32, .f16 or .bf16.
    public let precision: SafetensorsDType
    private let values: Tensor?
    /// For F16/BF16: the 16-bit values, packed two per Float32 slot of a tensor storage (which gives the
    /// allocation its alignment, error and budget handling).
    private let halfValues: TensorStorage?

    public init(_ tensor: Tensor) {
        self.init(shape: tensor.shape, precision: .f32, values: tensor, halfValues: nil)
    }

    /// `count` 16-bit values of `precision` (.f16 or .bf16), copied from `source` (any alignment).
    init(shape: [Int], precision: SafetensorsDType, copying source: UnsafeRawPointer) throws {
        precondition(precision == .f16 || precision == .bf16, "Weights: \(precision) is not a 16-bit float")
        let count = Tensor.elementCount(shape)
        let storage = try TensorStorage(count: (count + 1) / 2, shape: shape)
        UnsafeMutableRawPointer(storage.pointer).copyMemory(from: source, byteCount: 2 * count)
        self.init(shape: shape, precision: precision, values: nil, halfValues: storage)
    }

    private init(shape: [Int], precision: SafetensorsDType, values: Tensor?, halfValues: TensorStorage?) {
        self.shape = shape
        self.precision = precision
        self.values = values
        self.halfValues = halfValues
    }

    public var count: Int { Tensor.elementCount(shape) }

    /// The same weights seen with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Weights {
        precondition(Tensor.elementCount(newShape) == count, "Weights: cannot reshape \(shape) to \(newShape)")
        return Weights(shape: newShape, precision: precision, values: values?.reshaped(newShape), halfValues: halfValues)
    }

    /// Runs `body` with the weights as a Float32 tensor (for F16/BF16 a widened copy, valid during `body`).
    public func withFloat32<R>(_ body: (Tensor) throws -> R) throws -> R {
        if let values { return try body(values) }
        return try body(try widened())
    }

    /// The weights as a Float32 tensor (for F16/BF16 a new widened copy).
    public func float32() throws -> Tensor {
        if let values { return values }
        return try widened()
    }

    private func widened() throws -> Tensor {
        guard let halfValues else { preconditionFailure("Weights without values") }
        let out = try Tensor(uninitializedShape: shape)
        let source = UncheckedBox(UnsafeRawPointer(halfValues.pointer)), destination = UncheckedBox(out.mutablePointer)
        let bfloat16 = precision == .bf16
        Threading.parallelRanges(count, granularity: 1 << 14) { range in
            widenHalfPrecision(source.value + 2 * range.lowerBound, bfloat16: bfloat16,
                               into: destination.value + range.lowerBound, count: range.count)
        }
        return out
    }
}

/// `count` IEEE half (or, with `bfloat16`, bfloat16) values at `source` (any alignment), widened exactly.
@inline(__always)
func widenHalfPrecision(_ source: UnsafeRawPointer, bfloat16: Bool, into destination: UnsafeMutablePointer<Float>, count: Int) {
    if bfloat16 { tokenflow_widen_bfloat16(source, destination, count) } else { tokenflow_widen_half(source, destination, count) }
}
