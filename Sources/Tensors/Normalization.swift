// GroupNorm, LayerNorm and softmax. Statistics are accumulated in 16 float lanes and reduced in
// Double, then applied in one pass; two passes (mean, then squared deviations) avoid the
// cancellation of the E[x^2] - E[x]^2 shortcut.

@inline(__always)
private func meanAndInverseStd(_ p: UnsafePointer<Float>, _ count: Int, _ eps: Float) -> (Float, Float) {
    var lanes = FloatVector(repeating: 0)
    var i = 0
    while i + 16 <= count { lanes += loadVector(p + i); i += 16 }
    var sum = Double(lanes.sum())
    while i < count { sum += Double(p[i]); i += 1 }
    let mean = Float(sum / Double(count))
    let meanVector = FloatVector(repeating: mean)
    lanes = FloatVector(repeating: 0)
    i = 0
    while i + 16 <= count { let d = loadVector(p + i) - meanVector; lanes += d * d; i += 16 }
    var squares = Double(lanes.sum())
    while i < count { let d = p[i] - mean; squares += Double(d * d); i += 1 }
    let variance = Float(squares / Double(count))
    return (mean, 1 / (variance + eps).squareRoot())
}

/// GroupNorm over x [N, C, ...] with per-channel affine weight/bias [C]; `fusedSiLU` applies
/// x * sigmoid(x) to the result (the UNet/VAE resnets always follow GroupNorm with SiLU).
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-5,
                      fusedSiLU: Bool = false) throws -> Tensor {
    let n = x.shape[0], c = x.shape[1]
    precondition(c % groups == 0, "groupNorm: \(c) channels not divisible into \(groups) groups")
    precondition(weight.count == c && bias.count == c, "groupNorm: affine parameters must have \(c) entries")
    let spatial = x.count / max(n * c, 1)
    let channelsPerGroup = c / groups
    let out = try Tensor(uninitializedShape: x.shape)
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    let gamma = UncheckedBox(weight.pointer), beta = UncheckedBox(bias.pointer)
    Threading.parallelFor(n * groups) { item in
        let group = item % groups
        let base = item * channelsPerGroup * spatial
        let (mean, inverseStd) = meanAndInverseStd(input.value + base, channelsPerGroup * spatial, eps)
        for channelInGroup in 0..<channelsPerGroup {
            let channel = group * channelsPerGroup + channelInGroup
            // y = x * a + b with a, b folded per channel.
            let a = inverseStd * gamma.value[channel]
            let b = beta.value[channel] - mean * a
            let offset = base + channelInGroup * spatial
            mapVectors(input.value + offset, output.value + offset, spatial) { v in
                let y = v * a + b
                return fusedSiLU ? siluVector(y) : y
            }
        }
    }
    return out
}

/// LayerNorm over the last dimension with weight/bias of that size.
public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float = 1e-5) throws -> Tensor {
    let width = x.shape.last!
    precondition(weight.count == width && bias.count == width, "layerNorm: affine parameters must have \(width) entries")
    let rows = x.count / max(width, 1)
    let out = try Tensor(uninitializedShape: x.shape)
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    let gamma = UncheckedBox(weight.pointer), beta = UncheckedBox(bias.pointer)
    let body: (Range<Int>) -> Void = { range in
        for r in range {
            let src = input.value + r * width, dst = output.value + r * width
            let (mean, inverseStd) = meanAndInverseStd(src, width, eps)
            for j in 0..<width { dst[j] = (src[j] - mean) * inverseStd * gamma.value[j] + beta.value[j] }
        }
    }
    if x.count < 1 << 16 { body(0..<rows) } else { Threading.parallelRanges(rows, body) }
    return out
}

/// Softmax over the last dimension.
public func softmax(_ x: Tensor) throws -> Tensor {
    let width = x.shape.last!
    let rows = x.count / max(width, 1)
    let out = try Tensor(uninitializedShape: x.shape)
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    let body: (Range<Int>) -> Void = { range in
        for r in range { softmaxRow(input.value + r * width, output.value + r * width, width) }
    }
    if x.count < 1 << 16 { body(0..<rows) } else { Threading.parallelRanges(rows, body) }
    return out
}

@inline(__always)
func softmaxRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ width: Int) {
    var maximum = -Float.infinity
    for j in 0..<width { maximum = max(maximum, src[j]) }
    let shift = FloatVector(repeating: maximum)
    mapVectors(src, dst, width) { vectorExp($0 - shift) }
    var sum: Float = 0
    for j in 0..<width { sum += dst[j] }
    let inverse = 1 / sum
    for j in 0..<width { dst[j] *= inverse }
}
