#if canImport(Glibc)
import Glibc
#endif
import Tensors

/// Where an editing method may change what the UNet computes. Paths are diffusers module paths
/// ("up_blocks.1.resnets.1", "up_blocks.2.attentions.0.transformer_blocks.0"), so a method can name
/// the blocks its paper names.
public protocol UNetHooks: AnyObject {
    /// Replaces a transformer block's self-attention (attn1). `normed` is the block's norm1 output
    /// [B, N, C]; return the attention output [B, N, C] (before the residual add), or nil to run
    /// the layer as usual.
    func selfAttention(block: String, normed: Tensor, attention: AttentionLayer) throws -> Tensor?
    /// PnP feature injection: for each sample of the batch, the sample whose residual branch (norm1 to conv2,
    /// before the skip add) it takes at `resnet`; nil when each computes its own. Only the donors' branches
    /// are computed.
    func resnetResidualDonors(resnet: String) -> [Int]?
}

extension UNetHooks {
    public func selfAttention(block: String, normed: Tensor, attention: AttentionLayer) -> Tensor? { nil }
    public func resnetResidualDonors(resnet: String) -> [Int]? { nil }
}

/// diffusers' BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each
/// pre-LayerNorm with a residual add.
public struct TransformerBlock: Sendable {
    public let path: String
    public let norm1: LayerNorm, attn1: AttentionLayer
    let norm2: LayerNorm, attn2: AttentionLayer
    let norm3: LayerNorm, feedForwardIn: Linear, feedForwardOut: Linear

    init(_ store: WeightStore, _ path: String, dim: Int, heads: Int, contextDim: Int) throws {
        self.path = path
        norm1 = try LayerNorm(store, "\(path).norm1", width: dim, eps: 1e-5)
        attn1 = try AttentionLayer(store, "\(path).attn1", queryDim: dim, contextDim: dim, heads: heads)
        norm2 = try LayerNorm(store, "\(path).norm2", width: dim, eps: 1e-5)
        attn2 = try AttentionLayer(store, "\(path).attn2", queryDim: dim, contextDim: contextDim, heads: heads)
        norm3 = try LayerNorm(store, "\(path).norm3", width: dim, eps: 1e-5)
        feedForwardIn = try Linear(store, "\(path).ff.net.0.proj", in: dim, out: dim * 8)
        feedForwardOut = try Linear(store, "\(path).ff.net.2", in: dim * 4, out: dim)
    }

    func callAsFunction(_ x: Tensor, context: DistinctRows, hooks: UNetHooks?) throws -> Tensor {
        let normed = try norm1(x)
        let selfAttention = try hooks?.selfAttention(block: path, normed: normed, attention: attn1) ?? attn1(normed)
        let h = try add(selfAttention, x)
        addInPlace(h, try attn2(try norm2(h), context: context))
        try addFeedForward(into: h)
        return h
    }

    /// Rows per band of the feed-forward: its intermediates ([rows, 8 width] and [rows, 4 width]) at most 32 MB,
    /// and at least 256 rows, so the products stay large.
    public static func feedForwardBandRows(width: Int) -> Int { max(256, (8 << 20) / (12 * max(width, 1))) }

    /// h += feed-forward(norm3(h)), in bands of rows: whole, its intermediates were a UNet call's largest buffers
    /// (360 MB at 64x64 with 6 samples, where a 512x512 edit peaked); in bands they stay under 32 MB. Each row's
    /// result is the same either way (the norm, GEGLU and the products' sums are per row).
    private func addFeedForward(into h: Tensor) throws {
        let width = h.shape.last!, rows = h.count / max(width, 1)
        let flat = h.reshaped([rows, width])
        let bandRows = Self.feedForwardBandRows(width: width)
        let bands = max(1, (rows + bandRows - 1) / bandRows)
        for band in 0..<bands {
            let part = flat.slice(band * rows / bands ..< (band + 1) * rows / bands)
            addInPlace(part, try feedForwardOut(try geglu(feedForwardIn(norm3(part)))))
        }
    }
}

/// diffusers' Transformer2DModel (continuous input): GroupNorm, proj_in (Linear for SD2's
/// use_linear_projection, 1x1 conv for SD1), transformer blocks on [B, HW, C], proj_out, residual.
struct SpatialTransformer: Sendable {
    let norm: GroupNorm
    let linearProjection: Bool
    let projInLinear: Linear?, projOutLinear: Linear?
    let projInConv: Conv2d?, projOutConv: Conv2d?
    let blocks: [TransformerBlock]

    init(_ store: WeightStore, _ path: String, channels: Int, heads: Int, layers: Int, config: UNetConfig) throws {
        norm = try GroupNorm(store, "\(path).norm", channels: channels, groups: config.normNumGroups, eps: 1e-6)
        linearProjection = config.useLinearProjection
        if linearProjection {
            projInLinear = try Linear(store, "\(path).proj_in", in: channels, out: channels)
            projOutLinear = try Linear(store, "\(path).proj_out", in: channels, out: channels)
            projInConv = nil; projOutConv = nil
        } else {
            projInConv = try Conv2d(store, "\(path).proj_in", in: channels, out: channels, kernel: 1)
            projOutConv = try Conv2d(store, "\(path).proj_out", in: channels, out: channels, kernel: 1)
            projInLinear = nil; projOutLinear = nil
        }
        blocks = try (0..<layers).map {
            try TransformerBlock(store, "\(path).transformer_blocks.\($0)", dim: channels, heads: heads,
                                 contextDim: config.crossAttentionDim)
        }
    }

    func callAsFunction(_ x: Tensor, context: DistinctRows, hooks: UNetHooks?) throws -> Tensor {
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var h = try norm(x)
        if let projInConv { h = try projInConv(h) }
        h = try permute(h.reshaped([batch, channels, height * width]), [0, 2, 1])
        if let projInLinear { h = try projInLinear(h) }
        for block in blocks { h = try block(h, context: context, hooks: hooks) }
        if let projOutLinear { h = try projOutLinear(h) }
        h = try permute(h, [0, 2, 1]).reshaped([batch, channels, height, width])
        if let projOutConv { h = try projOutConv(h) }
        addInPlace(h, x)
        return h
    }
}

/// One level of the UNet: resnets, optional spatial transformers after each, optional resampler.
struct UNetLevel: Sendable {
    let resnets: [ResnetBlock]
    let transformers: [SpatialTransformer]
    let downsample: Downsample?
    let upsample: Upsample?
}

/// diffusers' UNet2DConditionModel for Stable Diffusion 1.x/2.x checkpoints, built from unet/config.json.
public final class UNet: @unchecked Sendable {
    public let config: UNetConfig
    let timeLinear1: Linear, timeLinear2: Linear
    let convIn: Conv2d
    let down: [UNetLevel]
    let mid: UNetLevel
    let up: [UNetLevel]
    let normOut: GroupNorm, convOut: Conv2d

    /// Loads `<directory>/config.json` and the weights beside it.
    public convenience init(directory: String) throws {
        let config = try loadConfig(UNetConfig.self, directory: directory)
        try self.init(config: config, configFile: "\(directory)/config.json") {
            try WeightStore(directory: directory, baseName: "diffusion_pytorch_model")
        }
    }

    /// Checks `config` (named `configFile` in errors), then opens the weights and takes every tensor of them.
    init(config: UNetConfig, configFile: String, weights openStore: () throws -> WeightStore) throws {
        self.config = config
        try refuseUnsupported(config.unsupported, file: configFile)
        let channels = config.blockOutChannels, levels = channels.count
        func check(_ condition: Bool, _ key: String, _ value: String, _ supported: String) throws {
            if !condition { throw ModelError.unsupportedConfig(file: configFile, key: key, value: value, supported: supported) }
        }
        try check(levels >= 1 && config.downBlockTypes.count == levels && config.upBlockTypes.count == levels,
                  "down_block_types/up_block_types", "\(config.downBlockTypes.count)/\(config.upBlockTypes.count) entries",
                  "one per block_out_channels entry (\(levels))")
        for (level, type) in config.downBlockTypes.enumerated() {
            try check(["CrossAttnDownBlock2D", "DownBlock2D"].contains(type), "down_block_types[\(level)]", type,
                      "CrossAttnDownBlock2D, DownBlock2D")
        }
        for (level, type) in config.upBlockTypes.enumerated() {
            try check(["CrossAttnUpBlock2D", "UpBlock2D"].contains(type), "up_block_types[\(level)]", type,
                      "CrossAttnUpBlock2D, UpBlock2D")
        }
        try check(config.midBlockType == "UNetMidBlock2DCrossAttn", "mid_block_type", config.midBlockType ?? "null",
                  "UNetMidBlock2DCrossAttn")
        // Ranges and consistency (heads, groups, depths) before any layer is built.
        try config.validate(file: configFile)
        let store = try openStore()

        let timeInput = channels[0], timeDim = channels[0] * 4
        timeLinear1 = try Linear(store, "time_embedding.linear_1", in: timeInput, out: timeDim)
        timeLinear2 = try Linear(store, "time_embedding.linear_2", in: timeDim, out: timeDim)
        convIn = try Conv2d(store, "conv_in", in: config.inChannels, out: channels[0], kernel: 3)
        let groups = config.normNumGroups, eps = config.normEps

        func transformer(_ path: String, _ width: Int, level: Int) throws -> SpatialTransformer {
            try SpatialTransformer(store, path, channels: width, heads: config.headsPerLevel[level],
                                   layers: config.transformerLayersPerBlock[level], config: config)
        }

        var down: [UNetLevel] = []
        var outputChannels = channels[0]
        for level in 0..<levels {
            let inputChannels = outputChannels
            outputChannels = channels[level]
            let path = "down_blocks.\(level)"
            let hasAttention = config.downBlockTypes[level] == "CrossAttnDownBlock2D"
            var resnets: [ResnetBlock] = [], transformers: [SpatialTransformer] = []
            for layer in 0..<config.layersPerBlock {
                resnets.append(try ResnetBlock(store, "\(path).resnets.\(layer)", in: layer == 0 ? inputChannels : outputChannels,
                                               out: outputChannels, groups: groups, eps: eps, timeEmbeddingDim: timeDim))
                if hasAttention { transformers.append(try transformer("\(path).attentions.\(layer)", outputChannels, level: level)) }
            }
            let downsample = level == levels - 1 ? nil
                : try Downsample(store, "\(path).downsamplers.0", channels: outputChannels, padding: config.downsamplePadding)
            down.append(UNetLevel(resnets: resnets, transformers: transformers, downsample: downsample, upsample: nil))
        }
        self.down = down

        let midChannels = channels[levels - 1]
        mid = UNetLevel(
            resnets: try (0..<2).map {
                try ResnetBlock(store, "mid_block.resnets.\($0)", in: midChannels, out: midChannels, groups: groups, eps: eps,
                                timeEmbeddingDim: timeDim)
            },
            transformers: [try transformer("mid_block.attentions.0", midChannels, level: levels - 1)],
            downsample: nil, upsample: nil)

        var up: [UNetLevel] = []
        let reversed = Array(channels.reversed())
        outputChannels = reversed[0]
        for index in 0..<levels {
            let previousOutput = outputChannels
            outputChannels = reversed[index]
            let inputChannels = reversed[min(index + 1, levels - 1)]
            let level = levels - 1 - index // heads and transformer depth mirror the down path
            let path = "up_blocks.\(index)"
            let hasAttention = config.upBlockTypes[index] == "CrossAttnUpBlock2D"
            var resnets: [ResnetBlock] = [], transformers: [SpatialTransformer] = []
            for layer in 0...config.layersPerBlock {
                let skipChannels = layer == config.layersPerBlock ? inputChannels : outputChannels
                let resnetInput = layer == 0 ? previousOutput : outputChannels
                resnets.append(try ResnetBlock(store, "\(path).resnets.\(layer)", in: resnetInput + skipChannels,
                                               out: outputChannels, groups: groups, eps: eps, timeEmbeddingDim: timeDim))
                if hasAttention { transformers.append(try transformer("\(path).attentions.\(layer)", outputChannels, level: level)) }
            }
            let upsample = index == levels - 1 ? nil : try Upsample(store, "\(path).upsamplers.0", channels: outputChannels)
            up.append(UNetLevel(resnets: resnets, transformers: transformers, downsample: nil, upsample: upsample))
        }
        self.up = up
        normOut = try GroupNorm(store, "conv_norm_out", channels: channels[0], groups: groups, eps: eps)
        convOut = try Conv2d(store, "conv_out", in: channels[0], out: config.outChannels, kernel: 3)
        try store.finish()
    }

    /// The transformer block at a diffusers module path ("up_blocks.3.attentions.2.transformer_blocks.0"),
    /// for running one layer on its own (tests, inspection).
    public func transformerBlock(_ path: String) -> TransformerBlock? {
        for level in down + [mid] + up {
            for transformer in level.transformers {
                if let block = transformer.blocks.first(where: { $0.path == path }) { return block }
            }
        }
        return nil
    }

    /// Sinusoidal timestep embedding as diffusers' get_timestep_embedding (max period 10000).
    func timestepFeatures(_ timesteps: [Float]) throws -> Tensor {
        let dim = config.blockOutChannels[0], half = dim / 2
        let out = try Tensor(uninitializedShape: [timesteps.count, dim])
        for (row, t) in timesteps.enumerated() {
            for i in 0..<half {
                // float32 like torch: frequency, then t * frequency, rounded to float before sin/cos.
                let exponent = -Float(9.210340371976184) * Float(i) / (Float(half) - config.freqShift)
                let argument = t * Float(exp(Double(exponent)))
                let (first, second) = config.flipSinToCos ? (cos(Double(argument)), sin(Double(argument)))
                                                          : (sin(Double(argument)), cos(Double(argument)))
                out[flat: row * dim + i] = Float(first)
                out[flat: row * dim + half + i] = Float(second)
            }
        }
        return out
    }

    /// Noise prediction for `sample` [B, C, H, W] at `timesteps` (one per batch item, or one for all)
    /// with text embeddings `context` [B, 77, D].
    public func callAsFunction(_ sample: Tensor, timesteps: [Float], context: Tensor, hooks: UNetHooks? = nil) throws -> Tensor {
        try forward(sample, timesteps: timesteps, context: context, hooks: hooks, stopAfterUpBlock: nil)
    }

    /// The output of decoder level `upBlock` (diffusers' `up_blocks[upBlock]`), the UNet stopped there:
    /// diffusion features for correspondences (DIFT; COVE uses the last level, at the latent resolution).
    public func upBlockOutput(_ sample: Tensor, timesteps: [Float], context: Tensor, upBlock: Int) throws -> Tensor {
        precondition(up.indices.contains(upBlock), "UNet has no up block \(upBlock)")
        return try forward(sample, timesteps: timesteps, context: context, hooks: nil, stopAfterUpBlock: upBlock)
    }

    private func forward(_ sample: Tensor, timesteps: [Float], context: Tensor, hooks: UNetHooks?,
                         stopAfterUpBlock: Int?) throws -> Tensor {
        let batch = sample.shape[0]
        precondition(timesteps.count == 1 || timesteps.count == batch, "UNet: \(timesteps.count) timesteps for batch \(batch)")
        precondition(context.shape[0] == batch, "UNet: context batch \(context.shape[0]) != sample batch \(batch)")
        let perSample = timesteps.count == 1 ? Array(repeating: timesteps[0], count: batch) : timesteps
        let embedding = try timeLinear2(try silu(timeLinear1(timestepFeatures(perSample))))
        let activatedEmbedding = try silu(embedding)
        let text = try DistinctRows(context)
        func resnet(_ block: ResnetBlock, _ x: Tensor) throws -> Tensor {
            try block(x, activatedTimeEmbedding: activatedEmbedding,
                      residualDonors: hooks?.resnetResidualDonors(resnet: block.path))
        }

        var h = try convIn(sample)
        var skips = [h]
        for level in down {
            for (index, block) in level.resnets.enumerated() {
                h = try resnet(block, h)
                if index < level.transformers.count { h = try level.transformers[index](h, context: text, hooks: hooks) }
                skips.append(h)
            }
            if let downsample = level.downsample {
                h = try downsample(h)
                skips.append(h)
            }
        }
        h = try resnet(mid.resnets[0], h)
        h = try mid.transformers[0](h, context: text, hooks: hooks)
        h = try resnet(mid.resnets[1], h)
        for (levelIndex, level) in up.enumerated() {
            for (index, block) in level.resnets.enumerated() {
                h = try resnet(block, try concat([h, skips.removeLast()], axis: 1))
                if index < level.transformers.count { h = try level.transformers[index](h, context: text, hooks: hooks) }
            }
            if let upsample = level.upsample, let next = skips.last {
                // Upsample to the matching encoder size: differs from 2x when a level had an odd size.
                h = try upsample(h, size: (next.shape[2], next.shape[3]))
            }
            if levelIndex == stopAfterUpBlock { return h }
        }
        return try convOut(try normOut(h, silu: true))
    }
}
