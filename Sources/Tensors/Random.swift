#if canImport(Glibc)
import Glibc
#endif

/// Small, fast, seedable generator (SplitMix64): the same sequence on every platform, so keyframe
/// choices and noise are reproducible from a seed.
public struct SplitMix64: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1] (never 0, so its logarithm is finite).
    public mutating func nextUnit() -> Double { (Double(next() >> 11) + 1) * 0x1p-53 }
}

/// Standard normal samples from a seed: SplitMix64 uniforms through the Box-Muller transform
/// (both outputs of each pair used). Deterministic on every platform.
public func gaussianNoise(shape: [Int], seed: UInt64) throws -> Tensor {
    var generator = SplitMix64(seed: seed)
    let out = try Tensor(uninitializedShape: shape)
    var i = 0
    while i < out.count {
        let radius = (-2 * log(generator.nextUnit())).squareRoot(), angle = 2 * Double.pi * generator.nextUnit()
        out[flat: i] = Float(radius * cos(angle))
        if i + 1 < out.count { out[flat: i + 1] = Float(radius * sin(angle)) }
        i += 2
    }
    return out
}
