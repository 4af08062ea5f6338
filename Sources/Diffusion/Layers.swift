import Tensors

// The parameterised layers shared by the UNet, the VAE and the text encoder, each loaded from a
// WeightStore under a diffusers/transformers module path ("down_blocks.0.resnets.1.conv1").
// Linear and convolution weights, nearly all of a model's parameters, stay in the file's precision
// (`Weights`: F16/BF16 files take half the memory): widened for each float32 call, rounded straight from the
// file's values by the bfloat16 kernels' packing; biases and norms are Float32.

public struct Linear: Sendable {
    public let weight: Weights
    public let bias: Tensor?

    init(_ store: WeightStore, _ prefix: String, in inFeatures: Int, out outFeatures: Int, bias hasBias: Bool = true) throws {
        weight = try store.takeWeights("\(prefix).weight", shape: [outFeatures, inFeatures])
        bias = hasBias ? try store.take("\(prefix).bias", shape: [outFeatures]) : nil
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try linear(x, weights: weight, bias: bias)
    }
}

public struct Conv2d: Sendable {
    public let weight: Weights
    public let bias: Tensor?
    public let stride: Int
    public let padding: Padding2D

    init(_ store: WeightStore, _ prefix: String, in inChannels: Int, out outChannels: Int, kernel: Int,
         stride: Int = 1, padding: Padding2D? = nil) throws {
        weight = try store.takeWeights("\(prefix).weight", shape: [outChannels, inChannels, kernel, kernel])
        bias = try store.take("\(prefix).bias", shape: [outChannels])
        self.stride = stride
        self.padding = padding ?? .uniform(kernel / 2)
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try conv2d(x, weights: weight, bias: bias, stride: stride, padding: padding)
    }
}

public struct GroupNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let groups: Int
    public let eps: Float

    init(_ store: WeightStore, _ prefix: String, channels: Int, groups: Int, eps: Float) throws {
        weight = try store.take("\(prefix).weight", shape: [channels])
        bias = try store.take("\(prefix).bias", shape: [channels])
        self.groups = groups
        self.eps = eps
    }

    public func callAsFunction(_ x: Tensor, silu: Bool = false) throws -> Tensor {
        try groupNorm(x, groups: groups, weight: weight, bias: bias, eps: eps, fusedSiLU: silu)
    }

    /// Over x itself, which the caller owns and no longer needs.
    public func inPlace(_ x: Tensor, silu: Bool = false) {
        groupNormInPlace(x, groups: groups, weight: weight, bias: bias, eps: eps, fusedSiLU: silu)
    }
}

public struct LayerNorm: Sendable {
    public let weight: Tensor
    public let bias: Tensor
    public let eps: Float

    init(_ store: WeightStore, _ prefix: String, width: Int, eps: Float) throws {
        weight = try store.take("\(prefix).weight", shape: [width])
        bias = try store.take("\(prefix).bias", shape: [width])
        self.eps = eps
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor { try layerNorm(x, weight: weight, bias: bias, eps: eps) }
}
