// Every config value the engine uses, checked at load before anything is built or allocated: the
// library runs inside other programs, so a malformed model folder must throw, never trap. Bounds are
// far above real Stable Diffusion models; they exist so that sizes computed from config values
// (channels x channels weights, timestep tables, layer lists) stay small enough to be refused by the
// tensor shape checks instead of exhausting memory or overflowing.

/// Upper bounds for config values (real SD 1.x/2.x/XL models are at least 4x below each).
enum ConfigLimits {
    static let channels = 16_384
    /// MLP widths (CLIP's intermediate_size is 4x hidden_size).
    static let features = 65_536
    static let layers = 1_000
    /// Resolution levels (block_out_channels entries); SD uses 4.
    static let levels = 16
    static let vocabulary = 1 << 20
    static let positions = 4_096
    static let trainTimesteps = 100_000
    static let sampleSize = 16_384
}

/// Checks of one config file; each failure is `ModelError.invalidConfig` naming the key, the value and
/// what is allowed.
struct ConfigCheck {
    let file: String

    func fail(_ reason: String) -> ModelError { .invalidConfig(file: file, reason: reason) }

    /// `key` = `value` must lie in `range`.
    func int(_ key: String, _ value: Int, _ range: ClosedRange<Int>) throws {
        guard range.contains(value) else { throw fail("\(key) = \(value) is outside \(range.lowerBound)...\(range.upperBound)") }
    }

    /// A list of `count` entries (any count in `counts`), each in `range`.
    func ints(_ key: String, _ values: [Int], count counts: ClosedRange<Int>, _ range: ClosedRange<Int>) throws {
        guard counts.contains(values.count) else {
            let allowed = counts.lowerBound == counts.upperBound ? "\(counts.lowerBound)" : "\(counts.lowerBound)...\(counts.upperBound)"
            throw fail("\(key) has \(values.count) entries, needs \(allowed)")
        }
        for (index, value) in values.enumerated() where !range.contains(value) {
            throw fail("\(key)[\(index)] = \(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
    }

    /// A finite number in `range` (or strictly above its lower bound when `open`).
    func number<T: BinaryFloatingPoint>(_ key: String, _ value: T, _ range: ClosedRange<T>, openBelow: Bool = false,
                                        openAbove: Bool = false) throws {
        let inside = value.isFinite && range.contains(value) && !(openBelow && value == range.lowerBound)
            && !(openAbove && value == range.upperBound)
        guard inside else {
            let low = openBelow ? "(\(range.lowerBound)" : "[\(range.lowerBound)"
            let high = openAbove ? "\(range.upperBound))" : "\(range.upperBound)]"
            throw fail("\(key) = \(value) is outside \(low), \(high)")
        }
    }

    /// Every entry of `channels` (named `key`) divisible by `groups` (named `groupsKey`).
    func divisible(_ key: String, _ channels: [Int], by groupsKey: String, _ groups: Int) throws {
        for (index, value) in channels.enumerated() where value % groups != 0 {
            throw fail("\(key)[\(index)] = \(value) is not divisible by \(groupsKey) = \(groups)")
        }
    }
}

extension UNetConfig {
    /// Ranges and consistency of every value the UNet uses (block types are checked by `UNet`).
    func validate(file: String) throws {
        let check = ConfigCheck(file: file)
        try check.int("in_channels", inChannels, 1...ConfigLimits.channels)
        try check.int("out_channels", outChannels, 1...ConfigLimits.channels)
        try check.ints("block_out_channels", blockOutChannels, count: 1...ConfigLimits.levels, 1...ConfigLimits.channels)
        let levels = blockOutChannels.count
        try check.int("layers_per_block", layersPerBlock, 1...ConfigLimits.layers)
        try check.int("norm_num_groups", normNumGroups, 1...ConfigLimits.channels)
        try check.divisible("block_out_channels", blockOutChannels, by: "norm_num_groups", normNumGroups)
        try check.ints(headsKey, headsPerLevel, count: levels...levels, 1...ConfigLimits.channels)
        for level in 0..<levels where blockOutChannels[level] % headsPerLevel[level] != 0 {
            throw check.fail("\(headsKey)[\(level)] = \(headsPerLevel[level]) does not divide block_out_channels[\(level)] = \(blockOutChannels[level])")
        }
        try check.ints("transformer_layers_per_block", transformerLayersPerBlock, count: levels...levels, 1...ConfigLimits.layers)
        try check.int("cross_attention_dim", crossAttentionDim, 1...ConfigLimits.channels)
        // The sinusoidal timestep embedding fills two halves of block_out_channels[0].
        if blockOutChannels[0] % 2 != 0 {
            throw check.fail("block_out_channels[0] = \(blockOutChannels[0]) must be even (the timestep embedding has sin and cos halves)")
        }
        try check.number("norm_eps", normEps, 0...1, openBelow: true)
        try check.number("freq_shift", freqShift, 0...Float(blockOutChannels[0] / 2), openAbove: true)
        try check.int("downsample_padding", downsamplePadding, 0...1)
        try check.int("sample_size", sampleSize, 1...ConfigLimits.sampleSize)
    }
}

extension VAEConfig {
    /// Ranges and consistency of every value the VAE uses (block types are checked by `AutoencoderKL`).
    func validate(file: String) throws {
        let check = ConfigCheck(file: file)
        try check.int("in_channels", inChannels, 1...ConfigLimits.channels)
        try check.int("out_channels", outChannels, 1...ConfigLimits.channels)
        try check.int("latent_channels", latentChannels, 1...ConfigLimits.channels)
        try check.ints("block_out_channels", blockOutChannels, count: 1...ConfigLimits.levels, 1...ConfigLimits.channels)
        try check.int("layers_per_block", layersPerBlock, 1...ConfigLimits.layers)
        try check.int("norm_num_groups", normNumGroups, 1...ConfigLimits.channels)
        try check.divisible("block_out_channels", blockOutChannels, by: "norm_num_groups", normNumGroups)
        try check.number("scaling_factor", scalingFactor, 0...Float.greatestFiniteMagnitude, openBelow: true)
    }
}

extension CLIPTextConfig {
    func validate(file: String) throws {
        let check = ConfigCheck(file: file)
        try check.int("vocab_size", vocabSize, 1...ConfigLimits.vocabulary)
        try check.int("hidden_size", hiddenSize, 1...ConfigLimits.channels)
        try check.int("intermediate_size", intermediateSize, 1...ConfigLimits.features)
        try check.int("num_hidden_layers", numHiddenLayers, 1...ConfigLimits.layers)
        try check.int("num_attention_heads", numAttentionHeads, 1...ConfigLimits.channels)
        if hiddenSize % numAttentionHeads != 0 {
            throw check.fail("num_attention_heads = \(numAttentionHeads) does not divide hidden_size = \(hiddenSize)")
        }
        try check.int("max_position_embeddings", maxPositionEmbeddings, 1...ConfigLimits.positions)
        try check.number("layer_norm_eps", layerNormEps, 0...1, openBelow: true)
    }
}

extension SchedulerConfig {
    func validate(file: String) throws {
        let check = ConfigCheck(file: file)
        try check.int("num_train_timesteps", numTrainTimesteps, 1...ConfigLimits.trainTimesteps)
        // Betas are probabilities of noise per step: 1 would zero every later alpha product.
        try check.number("beta_start", betaStart, 0...1, openAbove: true)
        try check.number("beta_end", betaEnd, 0...1, openAbove: true)
        if let trainedBetas {
            if trainedBetas.count != numTrainTimesteps {
                throw check.fail("trained_betas has \(trainedBetas.count) entries for num_train_timesteps = \(numTrainTimesteps)")
            }
            for (index, beta) in trainedBetas.enumerated() {
                try check.number("trained_betas[\(index)]", beta, 0...1, openAbove: true)
            }
        }
        try check.number("clip_sample_range", clipSampleRange, 0...Float.greatestFiniteMagnitude, openBelow: true)
        try check.int("steps_offset", stepsOffset, 0...(numTrainTimesteps - 1))
    }
}
