// Vector helpers of the Swift element-wise code that is not hot (`map`, `clamped`): the hot kernels, exp and
// erf among them, are C with a variant per instruction set (CKernels/vector.inc).

public typealias FloatVector = SIMD16<Float>

/// Lane-wise max/min and clamp as compare-and-blend: Swift's pointwiseMax/min handle NaN lane by lane
/// and compile to scalar code.
@inline(__always)
public func maxVector(_ a: FloatVector, _ b: FloatVector) -> FloatVector { a.replacing(with: b, where: b .> a) }

@inline(__always)
public func minVector(_ a: FloatVector, _ b: FloatVector) -> FloatVector { a.replacing(with: b, where: b .< a) }

@inline(__always)
public func clampedVector(_ x: FloatVector, _ low: Float, _ high: Float) -> FloatVector {
    maxVector(minVector(x, FloatVector(repeating: high)), FloatVector(repeating: low))
}

@inline(__always)
func loadVector(_ p: UnsafePointer<Float>) -> FloatVector {
    UnsafeRawPointer(p).loadUnaligned(as: FloatVector.self)
}

@inline(__always)
func storeVector(_ v: FloatVector, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: FloatVector.self)
}

/// Applies `vectorOp` to 16 elements at a time (the tail is padded), from `input` to `output`
/// (which may be the same buffer).
@inline(__always)
func mapVectors(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ count: Int,
                _ vectorOp: (FloatVector) -> FloatVector) {
    var i = 0
    while i + 16 <= count {
        storeVector(vectorOp(loadVector(input + i)), output + i)
        i += 16
    }
    if i < count {
        var tail = FloatVector(repeating: 0)
        for j in 0..<(count - i) { tail[j] = input[i + j] }
        let result = vectorOp(tail)
        for j in 0..<(count - i) { output[i + j] = result[j] }
    }
}
