// Vectorised exp and erf for the activation and softmax kernels. Scalar libm calls cannot be
// vectorised by the compiler and dominate attention/GELU time at SD sizes.

public typealias FloatVector = SIMD16<Float>

/// exp(x) with ~1 ulp error over [-87, 88] (Cephes-style range reduction + degree-6 polynomial).
/// Inputs below -87.3 return ~1e-38 instead of underflowing to 0, which is harmless for softmax sums.
///
/// Only plain vector arithmetic: rounding to an integer and building 2^n use the 1.5 x 2^23 trick
/// (adding it leaves round(v) in the low mantissa bits) because Swift's generic SIMD rounding and
/// float-to-int conversions run lane by lane and were measured at 3x the cost of everything else.
@inline(__always)
public func vectorExp(_ x: FloatVector) -> FloatVector {
    let clamped = clampedVector(x, -87.3, 88.7)
    let magic = FloatVector(repeating: 12_582_912) // 1.5 * 2^23
    let shifted = clamped * 1.44269504088896341 + magic
    let n = shifted - magic
    // ln 2 split in two parts so r keeps full precision.
    var r = clamped - n * 0.693359375
    r = r + n * 2.12194440e-4
    var p = FloatVector(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * r * r + r + 1
    let integer = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- 0x4B40_0000
    return y * unsafeBitCast((integer &+ 127) &<< 23, to: FloatVector.self)
}

/// erf(x) with absolute error below 2e-7 (Abramowitz & Stegun 7.1.26 on |x|, sign restored).
@inline(__always)
public func vectorErf(_ x: FloatVector) -> FloatVector {
    let a = x.replacing(with: -x, where: x .< 0)
    let t = 1 / (1 + 0.3275911 * a)
    var p = FloatVector(repeating: 1.061405429)
    p = p * t - 1.453152027
    p = p * t + 1.421413741
    p = p * t - 0.284496736
    p = p * t + 0.254829592
    let y = 1 - p * t * vectorExp(-a * a)
    return y.replacing(with: -y, where: x .< 0)
}

/// Lane-wise max/min and clamp as compare-and-blend: Swift's pointwiseMax/min handle NaN lane by lane
/// and compile to scalar code (measured: most of the attention kernel's time).
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
