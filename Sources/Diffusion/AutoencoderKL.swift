#if canImport(Glibc)
import Glibc
#endif
import Tensors

/// diffusers' `AutoencoderKL` (SD's VAE): an 8x convolutional encoder to a diagonal Gaussian over
/// latents, and the matching decoder. Latents here are *unscaled*: callers multiply encoder output by
/// `scalingFactor` before diffusion and divide by it before `decode`, as the pipelines do.
///
/// Images are processed one at a time (diffusers' "slicing"): every layer is per-image, so the result is
/// the same, and a batch of frames at 512x512 never holds more than one image's activations
/// (a 128-channel 512x512 map is 128 MB).
public final class AutoencoderKL: Sendable {
    public let config: VAEConfig
    let encoder: VAEEncoder
    let quantConv: Conv2d?
    let postQuantConv: Conv2d?
    let decoder: VAEDecoder

    public var scalingFactor: Float { config.scalingFactor }
    /// Image pixels per latent pixel along each axis (8 for SD).
    public var downsamplingFactor: Int { 1 << (config.blockOutChannels.count - 1) }

    /// Loads a diffusers `vae/` folder: config.json and diffusion_pytorch_model.safetensors (or the
    /// `.fp16.safetensors` variant), F32/F16/BF16.
    public convenience init(directory: String) throws {
        let config = try loadConfig(VAEConfig.self, directory: directory)
        try self.init(config: config, configFile: "\(directory)/config.json") {
            try WeightStore(directory: directory, baseName: "diffusion_pytorch_model")
        }
    }

    /// Checks `config` (named `configFile` in errors), then opens the weights and takes every tensor of them.
    init(config: VAEConfig, configFile: String, weights openStore: () throws -> WeightStore) throws {
        self.config = config
        try refuseUnsupported(config.unsupported, file: configFile)
        try Self.validate(config, file: configFile)

        let store = try openStore()
        let moments = 2 * config.latentChannels
        encoder = try VAEEncoder(store, config: config)
        quantConv = config.useQuantConv
            ? try Conv2d(store, "quant_conv", in: moments, out: moments, kernel: 1) : nil
        postQuantConv = config.usePostQuantConv
            ? try Conv2d(store, "post_quant_conv", in: config.latentChannels, out: config.latentChannels, kernel: 1) : nil
        decoder = try VAEDecoder(store, config: config)
        try store.finish()
    }

    private static func validate(_ config: VAEConfig, file: String) throws {
        let levels = config.blockOutChannels.count
        guard levels > 0 else { throw ModelError.invalidConfig(file: file, reason: "block_out_channels is empty") }
        if let other = config.downBlockTypes.first(where: { $0 != "DownEncoderBlock2D" }) {
            throw ModelError.unsupportedConfig(file: file, key: "down_block_types", value: other, supported: "DownEncoderBlock2D")
        }
        if let other = config.upBlockTypes.first(where: { $0 != "UpDecoderBlock2D" }) {
            throw ModelError.unsupportedConfig(file: file, key: "up_block_types", value: other, supported: "UpDecoderBlock2D")
        }
        guard config.downBlockTypes.count == levels, config.upBlockTypes.count == levels else {
            throw ModelError.invalidConfig(file: file, reason: "down_block_types and up_block_types need one entry per block_out_channels entry (\(levels))")
        }
        try config.validate(file: file)
    }

    /// The mean of the latent distribution, [B, latent, H/8, W/8], for images [B, in, H, W] in [-1, 1].
    ///
    /// Like diffusers, any H, W >= 8 is accepted: each downsampler pads right/bottom by one and maps a
    /// size n to floor(n / 2), so the latent is floor(H / 8) x floor(W / 8) and only multiples of 8 come
    /// back at the same size from `decode`.
    public func encodeMean(_ images: Tensor) throws -> Tensor {
        try encodeMoments(images).mean
    }

    /// A sample mean + std * noise of the latent distribution with standard normal noise drawn from
    /// `seed` (logvar clamped to [-30, 20] as diffusers does). The noise generator is this engine's
    /// own, so the sample is reproducible here but is not the one PyTorch draws for the same seed.
    public func encodeSample(_ images: Tensor, seed: UInt64) throws -> Tensor {
        let (mean, logvar) = try encodeMoments(images)
        let noise = try gaussianNoise(shape: mean.shape, seed: seed)
        let out = try Tensor(uninitializedShape: mean.shape)
        for i in 0..<out.count {
            let std = expf(0.5 * min(max(logvar[flat: i], -30), 20))
            out[flat: i] = mean[flat: i] + std * noise[flat: i]
        }
        return out
    }

    /// Decoder output [B, out, 8h, 8w] for unscaled latents [B, latent, h, w]; roughly [-1, 1],
    /// not clamped (diffusers' `decode(...).sample`).
    public func decode(_ latents: Tensor) throws -> Tensor {
        guard latents.rank == 4, latents.shape[0] > 0, latents.shape[1] == config.latentChannels,
              latents.shape[2] > 0, latents.shape[3] > 0 else {
            throw ModelError.invalidInput("VAE decode expects latents [B, \(config.latentChannels), h, w], got \(latents.shape)")
        }
        return try eachImage(latents) { latent in
            try decoder(try postQuantConv.map { try $0(latent) } ?? latent)
        }
    }

    /// Mean and log-variance halves of the encoder's moments, each [B, latent, h, w].
    private func encodeMoments(_ images: Tensor) throws -> (mean: Tensor, logvar: Tensor) {
        let minimum = downsamplingFactor
        guard images.rank == 4, images.shape[0] > 0, images.shape[1] == config.inChannels,
              images.shape[2] >= minimum, images.shape[3] >= minimum else {
            throw ModelError.invalidInput("VAE encode expects images [B, \(config.inChannels), H, W] with H, W >= \(minimum), got \(images.shape)")
        }
        let moments = try eachImage(images) { image in
            let h = try encoder(image)
            return try quantConv.map { try $0(h) } ?? h
        }
        let (batch, height, width) = (moments.shape[0], moments.shape[2], moments.shape[3])
        let latent = config.latentChannels
        // [B, 2, latent*h*w] -> [2, B, latent*h*w]: row 0 holds the means, row 1 the log-variances.
        let halves = try permute(moments.reshaped([batch, 2, latent * height * width]), [1, 0, 2])
        return (halves.row(0).reshaped([batch, latent, height, width]),
                halves.row(1).reshaped([batch, latent, height, width]))
    }

    /// `body` applied to each [1, ...] slice of `x`, results concatenated along the batch.
    private func eachImage(_ x: Tensor, _ body: (Tensor) throws -> Tensor) throws -> Tensor {
        try concat((0..<x.shape[0]).map { try body(x.slice($0..<($0 + 1))) }, axis: 0)
    }
}

/// diffusers' `Attention` as the VAE mid block builds it: GroupNorm, one head over all channels,
/// projections with biases, residual add; on [B, C, H, W] viewed as [B, HW, C] tokens.
struct VAEAttention: Sendable {
    let norm: GroupNorm
    let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear

    init(_ store: WeightStore, _ path: String, channels: Int, groups: Int) throws {
        norm = try GroupNorm(store, "\(path).group_norm", channels: channels, groups: groups, eps: 1e-6)
        // Checkpoints converted before diffusers 0.14 name the projections query/key/value/proj_attn;
        // diffusers renames them on load (`_convert_deprecated_attention_blocks`), so accept both.
        // Its single-file converter also squeezes LDM's [C, C, 1, 1] conv weights; in a diffusers
        // folder diffusers refuses those shapes, and so does this loader (wrongShape).
        let legacy = !store.contains("\(path).to_q.weight") && store.contains("\(path).query.weight")
        let names = legacy ? ["query", "key", "value", "proj_attn"] : ["to_q", "to_k", "to_v", "to_out.0"]
        toQ = try Linear(store, "\(path).\(names[0])", in: channels, out: channels)
        toK = try Linear(store, "\(path).\(names[1])", in: channels, out: channels)
        toV = try Linear(store, "\(path).\(names[2])", in: channels, out: channels)
        toOut = try Linear(store, "\(path).\(names[3])", in: channels, out: channels)
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let tokens = try permute(norm(x).reshaped([batch, channels, height * width]), [0, 2, 1])
        let attended = try toOut(try attention(query: toQ(tokens), key: toK(tokens), value: toV(tokens), heads: 1))
        let out = try permute(attended, [0, 2, 1]).reshaped(x.shape)
        addInPlace(out, x)
        return out
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, optional attention, resnet.
struct VAEMidBlock: Sendable {
    let first: ResnetBlock, attention: VAEAttention?, second: ResnetBlock

    init(_ store: WeightStore, _ path: String, channels: Int, config: VAEConfig) throws {
        let groups = config.normNumGroups
        first = try ResnetBlock(store, "\(path).resnets.0", in: channels, out: channels, groups: groups, eps: 1e-6,
                                timeEmbeddingDim: nil)
        attention = config.midBlockAddAttention
            ? try VAEAttention(store, "\(path).attentions.0", channels: channels, groups: groups) : nil
        second = try ResnetBlock(store, "\(path).resnets.1", in: channels, out: channels, groups: groups, eps: 1e-6,
                                 timeEmbeddingDim: nil)
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        let h = try first(x)
        return try second(try attention.map { try $0(h) } ?? h)
    }
}

/// diffusers' `Encoder`: conv_in, DownEncoderBlock2D per level (resnets, then a stride-2 downsampler
/// except on the last level), mid block, GroupNorm + SiLU, conv_out to the 2 * latent moments.
struct VAEEncoder: Sendable {
    let convIn: Conv2d
    let levels: [(resnets: [ResnetBlock], downsample: Downsample?)]
    let mid: VAEMidBlock
    let normOut: GroupNorm
    let convOut: Conv2d

    init(_ store: WeightStore, config: VAEConfig) throws {
        let channels = config.blockOutChannels, groups = config.normNumGroups
        convIn = try Conv2d(store, "encoder.conv_in", in: config.inChannels, out: channels[0], kernel: 3)
        var levels: [(resnets: [ResnetBlock], downsample: Downsample?)] = []
        var previous = channels[0]
        for (i, width) in channels.enumerated() {
            let path = "encoder.down_blocks.\(i)"
            let resnets = try (0..<config.layersPerBlock).map { j in
                try ResnetBlock(store, "\(path).resnets.\(j)", in: j == 0 ? previous : width, out: width,
                                groups: groups, eps: 1e-6, timeEmbeddingDim: nil)
            }
            // padding 0: the VAE pads only the right and bottom edges before its stride-2 conv.
            let downsample = i == channels.count - 1
                ? nil : try Downsample(store, "\(path).downsamplers.0", channels: width, padding: 0)
            levels.append((resnets, downsample))
            previous = width
        }
        self.levels = levels
        mid = try VAEMidBlock(store, "encoder.mid_block", channels: previous, config: config)
        normOut = try GroupNorm(store, "encoder.conv_norm_out", channels: previous, groups: groups, eps: 1e-6)
        convOut = try Conv2d(store, "encoder.conv_out", in: previous, out: 2 * config.latentChannels, kernel: 3)
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        var h = try convIn(x)
        for level in levels {
            for resnet in level.resnets { h = try resnet(h) }
            if let downsample = level.downsample { h = try downsample(h) }
        }
        return try convOut(try normOut(mid(h), silu: true))
    }
}

/// diffusers' `Decoder`: conv_in, mid block, UpDecoderBlock2D per level in reverse channel order
/// (layers_per_block + 1 resnets, then 2x nearest upsampling + conv except on the last level),
/// GroupNorm + SiLU, conv_out.
struct VAEDecoder: Sendable {
    let convIn: Conv2d
    let mid: VAEMidBlock
    let levels: [(resnets: [ResnetBlock], upsample: Upsample?)]
    let normOut: GroupNorm
    let convOut: Conv2d

    init(_ store: WeightStore, config: VAEConfig) throws {
        let channels = Array(config.blockOutChannels.reversed()), groups = config.normNumGroups
        convIn = try Conv2d(store, "decoder.conv_in", in: config.latentChannels, out: channels[0], kernel: 3)
        mid = try VAEMidBlock(store, "decoder.mid_block", channels: channels[0], config: config)
        var levels: [(resnets: [ResnetBlock], upsample: Upsample?)] = []
        var previous = channels[0]
        for (i, width) in channels.enumerated() {
            let path = "decoder.up_blocks.\(i)"
            let resnets = try (0...config.layersPerBlock).map { j in
                try ResnetBlock(store, "\(path).resnets.\(j)", in: j == 0 ? previous : width, out: width,
                                groups: groups, eps: 1e-6, timeEmbeddingDim: nil)
            }
            let upsample = i == channels.count - 1 ? nil : try Upsample(store, "\(path).upsamplers.0", channels: width)
            levels.append((resnets, upsample))
            previous = width
        }
        self.levels = levels
        normOut = try GroupNorm(store, "decoder.conv_norm_out", channels: previous, groups: groups, eps: 1e-6)
        convOut = try Conv2d(store, "decoder.conv_out", in: previous, out: config.outChannels, kernel: 3)
    }

    func callAsFunction(_ z: Tensor) throws -> Tensor {
        var h = try mid(try convIn(z))
        for level in levels {
            for resnet in level.resnets { h = try resnet(h) }
            if let upsample = level.upsample { h = try upsample(h) }
        }
        return try convOut(try normOut(h, silu: true))
    }
}
