import CBLAS
import FoundationEssentials
import Tensors

/// A diffusers-format Stable Diffusion folder, loaded: model_index.json, tokenizer/, text_encoder/,
/// unet/, vae/, scheduler/. Every part's architecture comes from its own config.
public final class StableDiffusionModel: @unchecked Sendable {
    public let directory: String
    public let tokenizer: CLIPTokenizer
    public let textEncoder: CLIPTextModel
    public let unet: UNet
    public let vae: AutoencoderKL
    public let schedulerConfig: SchedulerConfig

    public init(directory: String) throws {
        // Loading runs the kernels (weight conversion); they need AVX2/FMA, so check the CPU first.
        guard tokenflow_cpu_runs_kernels() != 0 else {
            throw ModelError.unsupportedCPU("the kernels of this build need an x86-64 CPU with AVX2, FMA and F16C (Intel Haswell, AMD Zen or later); this CPU lacks one of them")
        }
        self.directory = directory
        guard FileManager.default.fileExists(atPath: directory) else {
            throw ModelError.missingFile("\(directory) (the model directory does not exist)")
        }
        let index = "\(directory)/model_index.json"
        guard FileManager.default.fileExists(atPath: index) else { throw ModelError.missingFile(index) }
        tokenizer = try CLIPTokenizer(directory: "\(directory)/tokenizer")
        textEncoder = try CLIPTextModel(directory: "\(directory)/text_encoder")
        unet = try UNet(directory: "\(directory)/unet")
        vae = try AutoencoderKL(directory: "\(directory)/vae")
        let schedulerFile = "\(directory)/scheduler/scheduler_config.json"
        schedulerConfig = try loadConfig(SchedulerConfig.self, directory: "\(directory)/scheduler", file: "scheduler_config.json")
        // Builds the schedule once: every scheduler value is checked now, not at the first edit.
        _ = try DDIMScheduler(config: schedulerConfig, file: schedulerFile)

        // The parts must fit each other, or the first forward pass would fail on mismatched shapes.
        let unetFile = "\(directory)/unet/config.json"
        if unet.config.crossAttentionDim != textEncoder.config.hiddenSize {
            throw ModelError.invalidConfig(file: unetFile,
                                           reason: "cross_attention_dim = \(unet.config.crossAttentionDim) does not match the text encoder's hidden_size = \(textEncoder.config.hiddenSize)")
        }
        for (key, value) in [("in_channels", unet.config.inChannels), ("out_channels", unet.config.outChannels)]
        where value != vae.config.latentChannels {
            throw ModelError.invalidConfig(file: unetFile,
                                           reason: "\(key) = \(value) does not match the VAE's latent_channels = \(vae.config.latentChannels)")
        }
        if tokenizer.maxLength > textEncoder.config.maxPositionEmbeddings {
            throw ModelError.invalidConfig(file: "\(directory)/tokenizer/tokenizer_config.json",
                                           reason: "model_max_length = \(tokenizer.maxLength) exceeds the text encoder's max_position_embeddings = \(textEncoder.config.maxPositionEmbeddings)")
        }
    }

    /// Text embeddings [1, 77, D] of `prompt` (tokenized, truncated and padded to 77 tokens).
    public func embed(_ prompt: String) throws -> Tensor {
        try textEncoder([tokenizer.encode(prompt)])
    }
}
