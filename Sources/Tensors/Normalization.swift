// GroupNorm, LayerNorm and softmax, by the C kernels of the current path (CKernels/elementwise.inc):
// statistics in two passes (mean, then squared deviations, which avoids the cancellation of the
// E[x^2] - E[x]^2 shortcut), summed in float lanes and reduced in double, then applied in one pass.
import CKernels

/// GroupNorm over x [N, C, ...] with per-channel affine weight/bias [C]; `fusedSiLU` applies
/// x * sigmoid(x) to the result (the UNet/VAE resnets always follow GroupNorm with SiLU).
public func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-5,
                      fusedSiLU: Bool = false) throws -> Tensor {
    let out = try Tensor(uninitializedShape: x.shape)
    groupNorm(x, into: out, groups: groups, weight: weight, bias: bias, eps: eps, fusedSiLU: fusedSiLU)
    return out
}

/// `groupNorm` written over x itself (each group's statistics are taken before it is overwritten): for a caller
/// that owns x and no longer needs it, one activation fewer in memory.
public func groupNormInPlace(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float = 1e-5, fusedSiLU: Bool = false) {
    groupNorm(x, into: x, groups: groups, weight: weight, bias: bias, eps: eps, fusedSiLU: fusedSiLU)
}

private func groupNorm(_ x: Tensor, into out: Tensor, groups: Int, weight: Tensor, bias: Tensor, eps: Float, fusedSiLU: Bool) {
    let n = x.shape[0], c = x.shape[1]
    precondition(c % groups == 0, "groupNorm: \(c) channels not divisible into \(groups) groups")
    precondition(weight.count == c && bias.count == c, "groupNorm: affine parameters must have \(c) entries")
    let spatial = x.count / max(n * c, 1)
    let channelsPerGroup = c / groups
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    let gamma = UncheckedBox(weight.pointer), beta = UncheckedBox(bias.pointer)
    let activation = fusedSiLU ? TOKENFLOW_ACTIVATION_SILU : TOKENFLOW_ACTIVATION_NONE
    Threading.parallelFor(n * groups) { item in
        let firstChannel = (item % groups) * channelsPerGroup, base = item * channelsPerGroup * spatial
        tokenflow_group_norm(input.value + base, output.value + base, channelsPerGroup, spatial,
                             gamma.value + firstChannel, beta.value + firstChannel, eps, activation)
    }
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
        tokenflow_layer_norm(input.value + range.lowerBound * width, output.value + range.lowerBound * width, range.count,
                             width, gamma.value, beta.value, eps)
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
        tokenflow_softmax(input.value + range.lowerBound * width, output.value + range.lowerBound * width, range.count, width)
    }
    if x.count < 1 << 16 { body(0..<rows) } else { Threading.parallelRanges(rows, body) }
    return out
}
