import FoundationEssentials
import Synchronization
import Tensors

/// A Stable Diffusion model, loaded: from a diffusers folder (model_index.json, tokenizer/, text_encoder/,
/// unet/, vae/, scheduler/; every part's architecture from its own config), or from a single-file checkpoint
/// in the original layout (`SingleFileCheckpoint`: architecture recognised from the tensors, the built-in CLIP
/// vocabulary, Stable Diffusion's DDIM scheduler).
public final class StableDiffusionModel: @unchecked Sendable {
    /// The folder or file it was loaded from.
    public let path: String
    public let tokenizer: CLIPTokenizer
    public let textEncoderConfig: CLIPTextConfig
    /// The text encoder is needed only to embed prompts, and an edit's prompts are embedded before it starts
    /// (`prepareEmbeddings`): it is loaded with the model (every weight checked then), freed after that, and
    /// loaded again only for a prompt not embedded before. SD 2.x's is 1.4 GB in F32, not held through edits.
    /// A model loaded for known prompts embeds them first and never holds the encoder beside the UNet.
    private let textEncoder: Mutex<CLIPTextModel?>
    private let loadTextEncoder: () throws -> CLIPTextModel
    /// Embeddings by prompt (77 x D floats each, ~300 KB), at most `embeddingsKept`.
    private let embeddings: Mutex<[String: Tensor]>
    private static let embeddingsKept = 64
    public let unet: UNet
    public let vae: AutoencoderKL
    public let schedulerConfig: SchedulerConfig
    /// Names the scheduler configuration in errors (a folder's scheduler_config.json, or the checkpoint).
    public let schedulerConfigFile: String
    /// nil when the model says what it predicts (`schedulerConfig.predictionType`); otherwise why it cannot
    /// (an SD 2.x single file without metadata): the caller must choose epsilon or v.
    public let unknownPrediction: String?
    /// What was recognised, for a single file.
    public let checkpoint: SingleFileCheckpoint.Summary?

    /// A diffusers folder, or a single-file checkpoint when `path` is a file (or, missing, is named like one).
    /// `prompts`: see `init(directory:embedding:)`.
    public convenience init(path: String, embedding prompts: [String] = []) throws {
        var isDirectory = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let fileName = path.lowercased()
        let namedLikeFile = ([".safetensors"] + SingleFileCheckpoint.pickleExtensions).contains { fileName.hasSuffix($0) }
        if exists ? !isDirectory : namedLikeFile {
            try self.init(checkpoint: path, embedding: prompts)
        } else {
            try self.init(directory: path, embedding: prompts)
        }
    }

    /// `prompts`, when given, are embedded as soon as the text encoder is loaded, which is then freed before
    /// the UNet and VAE load into its pages: the three are never in memory at once (SD 2.x in F32: 1.4 GB less
    /// at the peak, and 1.4 GB fewer fresh pages to fault in). An edit with these prompts needs no encoder.
    public init(directory: String, embedding prompts: [String] = []) throws {
        KernelCPU.require()
        path = directory
        guard FileManager.default.fileExists(atPath: directory) else {
            throw ModelError.missingFile("\(directory) (the model directory does not exist)")
        }
        let index = "\(directory)/model_index.json"
        guard FileManager.default.fileExists(atPath: index) else { throw ModelError.missingFile(index) }
        tokenizer = try CLIPTokenizer(directory: "\(directory)/tokenizer")
        loadTextEncoder = { try CLIPTextModel(directory: "\(directory)/text_encoder") }
        let parts = try Self.loadParts(textEncoder: loadTextEncoder, embedding: prompts, tokenizer: tokenizer,
                                       unet: { try UNet(directory: "\(directory)/unet") },
                                       vae: { try AutoencoderKL(directory: "\(directory)/vae") })
        (textEncoderConfig, unet, vae) = (parts.textEncoderConfig, parts.unet, parts.vae)
        textEncoder = Mutex(parts.textEncoder)
        embeddings = Mutex(parts.embeddings)
        schedulerConfigFile = "\(directory)/scheduler/scheduler_config.json"
        schedulerConfig = try loadConfig(SchedulerConfig.self, directory: "\(directory)/scheduler", file: "scheduler_config.json")
        unknownPrediction = nil
        checkpoint = nil
        try checkParts(unetConfig: "\(directory)/unet/config.json", tokenizerConfig: "\(directory)/tokenizer/tokenizer_config.json")
    }

    /// A single-file checkpoint: each part is built from its recognised config and read tensor by tensor from
    /// the memory-mapped file, so loading needs no more memory than the same weights in a folder.
    public init(checkpoint file: String, embedding prompts: [String] = []) throws {
        KernelCPU.require()
        path = file
        let checkpoint = try SingleFileCheckpoint(path: file)
        self.checkpoint = checkpoint.summary
        tokenizer = try checkpoint.tokenizer()
        loadTextEncoder = {
            try CLIPTextModel(config: checkpoint.textEncoderConfig, configFile: checkpoint.configName(.textEncoder)) {
                checkpoint.store(.textEncoder)
            }
        }
        let parts = try Self.loadParts(
            textEncoder: loadTextEncoder, embedding: prompts, tokenizer: tokenizer,
            unet: { try UNet(config: checkpoint.unetConfig, configFile: checkpoint.configName(.unet)) { checkpoint.store(.unet) } },
            vae: { try AutoencoderKL(config: checkpoint.vaeConfig, configFile: checkpoint.configName(.vae)) { checkpoint.store(.vae) } })
        (textEncoderConfig, unet, vae) = (parts.textEncoderConfig, parts.unet, parts.vae)
        textEncoder = Mutex(parts.textEncoder)
        embeddings = Mutex(parts.embeddings)
        schedulerConfigFile = "\(file) (Stable Diffusion's DDIM scheduler)"
        schedulerConfig = try SchedulerConfig.stableDiffusionDocument(prediction: checkpoint.predictionType ?? "epsilon")
            .decode(SchedulerConfig.self, describing: schedulerConfigFile)
        unknownPrediction = checkpoint.predictionType == nil ? checkpoint.predictionSource : nil
        try checkParts(unetConfig: checkpoint.configName(.unet), tokenizerConfig: "the built-in CLIP tokenizer")
    }

    /// The parts must fit each other, or the first forward pass would fail on mismatched shapes; the scheduler
    /// is built once so every value is checked now, not at the first edit.
    private func checkParts(unetConfig unetFile: String, tokenizerConfig: String) throws {
        _ = try DDIMScheduler(config: schedulerConfig, file: schedulerConfigFile)
        if unet.config.crossAttentionDim != textEncoderConfig.hiddenSize {
            throw ModelError.invalidConfig(file: unetFile,
                                           reason: "cross_attention_dim = \(unet.config.crossAttentionDim) does not match the text encoder's hidden_size = \(textEncoderConfig.hiddenSize)")
        }
        for (key, value) in [("in_channels", unet.config.inChannels), ("out_channels", unet.config.outChannels)]
        where value != vae.config.latentChannels {
            throw ModelError.invalidConfig(file: unetFile,
                                           reason: "\(key) = \(value) does not match the VAE's latent_channels = \(vae.config.latentChannels)")
        }
        if tokenizer.maxLength > textEncoderConfig.maxPositionEmbeddings {
            throw ModelError.invalidConfig(file: tokenizerConfig,
                                           reason: "model_max_length = \(tokenizer.maxLength) exceeds the text encoder's max_position_embeddings = \(textEncoderConfig.maxPositionEmbeddings)")
        }
    }

    private struct Parts {
        let textEncoderConfig: CLIPTextConfig
        let textEncoder: CLIPTextModel?
        let embeddings: [String: Tensor]
        let unet: UNet
        let vae: AutoencoderKL
    }

    /// Loads the text encoder and embeds `prompts`, then the UNet and the VAE. The encoder is kept only when there
    /// are no prompts; otherwise it is freed before the UNet loads, into its pages.
    private static func loadParts(textEncoder load: () throws -> CLIPTextModel, embedding prompts: [String], tokenizer: CLIPTokenizer,
                                  unet: () throws -> UNet, vae: () throws -> AutoencoderKL) throws -> Parts {
        try LargeBufferArena.shared.keepingFreedPages {
            // In a scope of its own, so the encoder (unless kept) is freed before `unet()` allocates.
            let (config, kept, embeddings) = try {
                let encoder = try load()
                var embeddings: [String: Tensor] = [:]
                for prompt in prompts where embeddings[prompt] == nil {
                    embeddings[prompt] = try embedding(of: prompt, encoder: encoder, tokenizer: tokenizer)
                }
                return (encoder.config, prompts.isEmpty ? encoder : nil, embeddings)
            }()
            return Parts(textEncoderConfig: config, textEncoder: kept, embeddings: embeddings, unet: try unet(), vae: try vae())
        }
    }

    /// Text embeddings [1, 77, D] of `prompt` (tokenized, truncated and padded to 77 tokens).
    private static func embedding(of prompt: String, encoder: CLIPTextModel, tokenizer: CLIPTokenizer) throws -> Tensor {
        try encoder([tokenizer.encode(prompt)])
    }

    /// Text embeddings [1, 77, D] of `prompt`, kept per prompt.
    public func embed(_ prompt: String) throws -> Tensor {
        if let kept = embeddings.withLock({ $0[prompt] }) { return kept }
        let embedding = try withTextEncoder { try Self.embedding(of: prompt, encoder: $0, tokenizer: tokenizer) }
        embeddings.withLock { kept in
            if kept.count >= StableDiffusionModel.embeddingsKept { kept.removeAll() }
            kept[prompt] = embedding
        }
        return embedding
    }

    /// Embeds `prompts` (kept for `embed`), then frees the text encoder: an edit calls this before its work.
    public func prepareEmbeddings(_ prompts: [String]) throws {
        for prompt in prompts { _ = try embed(prompt) }
        let freed = textEncoder.withLock { encoder in
            defer { encoder = nil }
            return encoder != nil
        }
        // Its pages go back to the system now; kept for reuse, they would stay on top of the edit's peak. (A model
        // loaded for these prompts held no encoder: nothing to give back, and another clip's kept pages stay.)
        if freed { TensorStorage.releaseFreedPages() }
    }

    /// Runs `body` with the text encoder, loading it again if it was freed (outside any run's memory budget:
    /// it is the model's, not the run's).
    public func withTextEncoder<R>(_ body: (CLIPTextModel) throws -> R) throws -> R {
        try textEncoder.withLock { encoder in
            let loaded = try encoder ?? MemoryBudget.$current.withValue(nil) { try loadTextEncoder() }
            encoder = loaded
            return try body(loaded)
        }
    }

    /// Whether the text encoder is in memory now.
    public var holdsTextEncoder: Bool { textEncoder.withLock { $0 != nil } }
}

extension SchedulerConfig {
    /// The DDIM scheduler Stable Diffusion 1.x and 2.x are run with, as their diffusers folders'
    /// scheduler_config.json says (the original configs' linear_start 0.00085 / linear_end 0.012 over 1000
    /// steps; ldm's "linear" schedule is diffusers' scaled_linear), predicting `prediction`.
    public static func stableDiffusionDocument(prediction: String) -> ConfigDocument {
        [
            "_class_name": .string("DDIMScheduler"),
            "num_train_timesteps": .int(1000),
            "beta_start": .number(0.00085),
            "beta_end": .number(0.012),
            "beta_schedule": .string("scaled_linear"),
            "clip_sample": .bool(false),
            "set_alpha_to_one": .bool(false),
            "steps_offset": .int(1),
            "timestep_spacing": .string("leading"),
            "prediction_type": .string(prediction),
        ]
    }
}
