// The config.json files diffusers and transformers write, read by their own key names. Absent keys
// take diffusers' defaults. Keys the engine does not implement are read too, so a checkpoint that
// needs them is refused with a message naming the key instead of being run wrongly.

/// Reads keys of one JSON object with defaults (synthesised Decodable would require every key).
struct ConfigReader {
    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    let container: KeyedDecodingContainer<Key>

    init(_ decoder: Decoder) throws { container = try decoder.container(keyedBy: Key.self) }

    func callAsFunction<T: Decodable>(_ key: String, _ defaultValue: T) throws -> T {
        try container.decodeIfPresent(T.self, forKey: Key(stringValue: key)) ?? defaultValue
    }

    func optional<T: Decodable>(_ key: String) throws -> T? {
        try container.decodeIfPresent(T.self, forKey: Key(stringValue: key))
    }

    func required<T: Decodable>(_ key: String) throws -> T {
        try container.decode(T.self, forKey: Key(stringValue: key))
    }
}

/// A JSON value that is either one integer or a list of integers (attention_head_dim and friends).
public enum IntOrList: Decodable, Sendable, Equatable {
    case one(Int)
    case list([Int])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int.self) { self = .one(value) } else { self = .list(try container.decode([Int].self)) }
    }

    /// One value per block.
    public func expanded(to count: Int) -> [Int] {
        switch self {
        case .one(let value): return Array(repeating: value, count: count)
        case .list(let values): return values
        }
    }
}

public struct UNetConfig: Decodable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var blockOutChannels: [Int]
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var midBlockType: String?
    public var layersPerBlock: Int
    /// Heads per level: SD1/SD2 checkpoints store the head *count* under attention_head_dim
    /// (diffusers' historical naming) unless num_attention_heads is set.
    public var headsPerLevel: [Int]
    public var crossAttentionDim: Int
    public var normNumGroups: Int
    public var normEps: Float
    public var useLinearProjection: Bool
    public var flipSinToCos: Bool
    public var freqShift: Float
    public var downsamplePadding: Int
    public var transformerLayersPerBlock: [Int]
    public var sampleSize: Int
    /// The key the heads came from (num_attention_heads or attention_head_dim), for messages.
    var headsKey = "attention_head_dim"
    /// Settings this engine does not implement, with the value found, for a clear refusal.
    var unsupported: [(key: String, value: String, supported: String)] = []

    public init(from decoder: Decoder) throws {
        let c = try ConfigReader(decoder)
        inChannels = try c("in_channels", 4)
        outChannels = try c("out_channels", 4)
        blockOutChannels = try c("block_out_channels", [320, 640, 1280, 1280])
        downBlockTypes = try c("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
        upBlockTypes = try c("up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        midBlockType = try c("mid_block_type", "UNetMidBlock2DCrossAttn")
        layersPerBlock = try c("layers_per_block", 2)
        let levels = blockOutChannels.count
        let explicitHeads: IntOrList? = try c.optional("num_attention_heads")
        if explicitHeads != nil { headsKey = "num_attention_heads" }
        let heads: IntOrList = try explicitHeads ?? c("attention_head_dim", IntOrList.one(8))
        headsPerLevel = heads.expanded(to: levels)
        crossAttentionDim = try c("cross_attention_dim", 1280)
        normNumGroups = try c("norm_num_groups", 32)
        normEps = try c("norm_eps", 1e-5)
        useLinearProjection = try c("use_linear_projection", false)
        flipSinToCos = try c("flip_sin_to_cos", true)
        freqShift = try c("freq_shift", 0)
        downsamplePadding = try c("downsample_padding", 1)
        transformerLayersPerBlock = try c("transformer_layers_per_block", IntOrList.one(1)).expanded(to: levels)
        // upcast_attention (true in SD 2.x 768) asks for attention scores in fp32 where the model runs in
        // fp16; this engine computes attention in fp32 always, so both values are honoured. Read only to
        // refuse a value of the wrong type.
        let _: Bool = try c("upcast_attention", false)
        sampleSize = try c("sample_size", 64)

        func refuse(_ key: String, _ value: String, _ supported: String) { unsupported.append((key, value, supported)) }
        if let value: Int = try c.optional("num_class_embeds") { refuse("num_class_embeds", "\(value)", "null") }
        if let value: String = try c.optional("class_embed_type") { refuse("class_embed_type", value, "null") }
        if let value: String = try c.optional("addition_embed_type") { refuse("addition_embed_type", value, "null") }
        if let value: String = try c.optional("encoder_hid_dim_type") { refuse("encoder_hid_dim_type", value, "null") }
        if let value: Int = try c.optional("time_cond_proj_dim") { refuse("time_cond_proj_dim", "\(value)", "null") }
        for (key, expected) in [("act_fn", "silu"), ("resnet_time_scale_shift", "default"), ("time_embedding_type", "positional")] {
            let value: String = try c(key, expected)
            if value != expected { refuse(key, value, expected) }
        }
        for key in ["dual_cross_attention", "only_cross_attention", "center_input_sample"] {
            let value: Bool = (try? c(key, false)) ?? true
            if value { refuse(key, "true", "false") }
        }
        for key in ["conv_in_kernel", "conv_out_kernel"] {
            let value: Int = try c(key, 3)
            if value != 3 { refuse(key, "\(value)", "3") }
        }
        let midScale: Float = try c("mid_block_scale_factor", 1)
        if midScale != 1 { refuse("mid_block_scale_factor", "\(midScale)", "1") }
    }
}

public struct VAEConfig: Decodable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var latentChannels: Int
    public var blockOutChannels: [Int]
    public var downBlockTypes: [String]
    public var upBlockTypes: [String]
    public var layersPerBlock: Int
    public var normNumGroups: Int
    public var scalingFactor: Float
    public var midBlockAddAttention: Bool
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    var unsupported: [(key: String, value: String, supported: String)] = []

    public init(from decoder: Decoder) throws {
        let c = try ConfigReader(decoder)
        inChannels = try c("in_channels", 3)
        outChannels = try c("out_channels", 3)
        latentChannels = try c("latent_channels", 4)
        blockOutChannels = try c("block_out_channels", [64])
        downBlockTypes = try c("down_block_types", ["DownEncoderBlock2D"])
        upBlockTypes = try c("up_block_types", ["UpDecoderBlock2D"])
        layersPerBlock = try c("layers_per_block", 1)
        normNumGroups = try c("norm_num_groups", 32)
        scalingFactor = try c("scaling_factor", 0.18215)
        // shift_factor (SD3/Flux VAEs) shifts the latents; Stable Diffusion 1.x/2.x VAEs have none, and
        // their pipelines (as diffusers' StableDiffusionPipeline) never apply one.
        if let shift: Float = try c.optional("shift_factor"), shift != 0 {
            unsupported.append(("shift_factor", "\(shift)", "null (a Stable Diffusion 1.x/2.x VAE)"))
        }
        midBlockAddAttention = try c("mid_block_add_attention", true)
        useQuantConv = try c("use_quant_conv", true)
        usePostQuantConv = try c("use_post_quant_conv", true)
        let act: String = try c("act_fn", "silu")
        if act != "silu" { unsupported.append(("act_fn", act, "silu")) }
    }
}

public struct CLIPTextConfig: Decodable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var maxPositionEmbeddings: Int
    public var hiddenAct: String
    public var layerNormEps: Float

    public init(from decoder: Decoder) throws {
        let c = try ConfigReader(decoder)
        vocabSize = try c("vocab_size", 49408)
        hiddenSize = try c("hidden_size", 512)
        intermediateSize = try c("intermediate_size", 2048)
        numHiddenLayers = try c("num_hidden_layers", 12)
        numAttentionHeads = try c("num_attention_heads", 8)
        maxPositionEmbeddings = try c("max_position_embeddings", 77)
        hiddenAct = try c("hidden_act", "quick_gelu")
        layerNormEps = try c("layer_norm_eps", 1e-5)
    }
}

public struct SchedulerConfig: Decodable, Sendable {
    public var numTrainTimesteps: Int
    /// Double, as Python reads them: diffusers takes their square roots in double precision.
    public var betaStart: Double
    public var betaEnd: Double
    public var betaSchedule: String
    public var trainedBetas: [Float]?
    public var clipSample: Bool
    public var clipSampleRange: Float
    public var setAlphaToOne: Bool
    public var stepsOffset: Int
    public var predictionType: String
    public var timestepSpacing: String
    public var thresholding: Bool
    public var rescaleBetasZeroSNR: Bool

    public init(from decoder: Decoder) throws {
        let c = try ConfigReader(decoder)
        numTrainTimesteps = try c("num_train_timesteps", 1000)
        betaStart = try c("beta_start", 0.0001)
        betaEnd = try c("beta_end", 0.02)
        betaSchedule = try c("beta_schedule", "linear")
        trainedBetas = try c.optional("trained_betas")
        clipSample = try c("clip_sample", true)
        clipSampleRange = try c("clip_sample_range", 1)
        setAlphaToOne = try c("set_alpha_to_one", true)
        stepsOffset = try c("steps_offset", 0)
        predictionType = try c("prediction_type", "epsilon")
        timestepSpacing = try c("timestep_spacing", "leading")
        thresholding = try c("thresholding", false)
        rescaleBetasZeroSNR = try c("rescale_betas_zero_snr", false)
    }
}

/// Throws the first unsupported setting a config recorded.
func refuseUnsupported(_ unsupported: [(key: String, value: String, supported: String)], file: String) throws {
    if let first = unsupported.first {
        throw ModelError.unsupportedConfig(file: file, key: first.key, value: first.value, supported: first.supported)
    }
}
