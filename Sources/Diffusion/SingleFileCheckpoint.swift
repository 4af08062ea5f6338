#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import Tensors

/// A single-file Stable Diffusion checkpoint (`v1-5-pruned-emaonly.safetensors`, `v2-1_512-ema-pruned.safetensors`,
/// fine-tunes in the same layout), recognised from its tensors: the family (from the text encoder), the
/// diffusers configs of the UNet, VAE and text encoder (from the tensor shapes), and where each of the engine's
/// tensors is (`LDMLayout`). Nothing is read but the header until a part is loaded through `store(_:)`, which
/// reads its tensors one by one from the memory-mapped file.
///
/// Files that are not such a checkpoint are refused with what they are (`ModelError.unsupportedCheckpoint`):
/// pickles (never opened), LoRAs, SDXL, inpainting, ControlNet, standalone VAEs, partial checkpoints.
public final class SingleFileCheckpoint: @unchecked Sendable {
    public enum Family: String, Sendable {
        /// OpenAI CLIP ViT-L text encoder, stored with transformers' names under cond_stage_model.transformer.
        case sd1 = "Stable Diffusion 1.x"
        /// OpenCLIP ViT-H text encoder under cond_stage_model.model, q/k/v fused; SD 2.x runs its penultimate layer.
        case sd2 = "Stable Diffusion 2.x"
    }

    public enum Part: String, CaseIterable, Sendable {
        case unet, vae, textEncoder = "text_encoder"
    }

    public let path: String
    public let family: Family
    /// Each part's diffusers config.json, as recognised (plus the hyperparameters the file's metadata gives).
    public let configs: [Part: ConfigDocument]
    public let unetConfig: UNetConfig
    public let vaeConfig: VAEConfig
    public let textEncoderConfig: CLIPTextConfig
    /// "epsilon" or "v_prediction" when the file says so in its metadata or the family decides it (SD 1.x
    /// models predict noise); nil for an SD 2.x file without metadata, which may be either.
    public let predictionType: String?
    /// Why `predictionType` is what it is, for `tokenflow info`.
    public let predictionSource: String
    /// Tensors of the file that no part uses (EMA copies, the DDPM schedule buffers, ...), for `info`.
    public let unusedTensors: [String]
    let file: SafetensorsFile
    private let layouts: [Part: LDMLayout]
    private let ignorable: [Part: @Sendable (String) -> Bool]

    /// The files this loader refuses to open, by extension: PyTorch pickles, whose loading runs code.
    static let pickleExtensions = [".ckpt", ".pt", ".pth", ".bin", ".pkl"]
    static let supported = "Stable Diffusion 1.x and 2.x text-to-image checkpoints as one .safetensors file "
        + "(model.diffusion_model.*, first_stage_model.*, cond_stage_model.*), or a diffusers folder"

    public init(path: String) throws {
        KernelCPU.require()
        self.path = path
        try Self.refuseNonSafetensors(path)
        file = try SafetensorsFile(path: path)
        let names = file.tensorNames
        try Self.refuseOtherKinds(path, names)

        func has(_ part: Part) -> Bool { names.contains { $0.hasPrefix(Self.keyPrefix(part)) } }
        let hasUNet = has(.unet), hasVAE = has(.vae), hasText = has(.textEncoder)
        guard hasUNet && hasVAE && hasText else {
            throw Self.partial(path, names, unet: hasUNet, vae: hasVAE, text: hasText)
        }
        let reader = ShapeReader(file: file)
        if file.info("cond_stage_model.model.token_embedding.weight") != nil {
            family = .sd2
        } else if file.info(LDMLayout.clipPrefix + "text_model.embeddings.token_embedding.weight") != nil {
            family = .sd1
        } else {
            let example = names.first { $0.hasPrefix("cond_stage_model.") } ?? ""
            throw ModelError.unsupportedCheckpoint(
                file: path, what: "its text encoder (cond_stage_model.*, e.g. '\(example)') is neither SD 1.x's CLIP "
                    + "(cond_stage_model.transformer.text_model.*) nor SD 2.x's OpenCLIP (cond_stage_model.model.*)",
                supported: Self.supported)
        }

        (predictionType, predictionSource) = Self.prediction(file.metadata, family: family)
        let text = try Self.recogniseTextEncoder(reader, family: family)
        let unet = try Self.recogniseUNet(reader, family: family, prediction: predictionType)
        let vae = try Self.recogniseVAE(reader, family: family, prediction: predictionType)
        var configs: [Part: ConfigDocument] = [.unet: unet.config, .vae: vae.config, .textEncoder: text.config]
        for part in Part.allCases {
            try Self.applyMetadata(file.metadata, part: part, to: &configs[part, default: [:]], file: path)
        }
        try Self.requireHeads(configs[.unet]?["attention_head_dim"], part: .unet, key: "attention_head_dim", file: path,
                              why: "SD 2.x's heads are 64 channels wide, and an attention level of this UNet is not a multiple of 64")
        try Self.requireHeads(configs[.textEncoder]?["num_attention_heads"], part: .textEncoder, key: "num_attention_heads",
                              file: path, why: "CLIP's heads are 64 channels wide, and this text encoder's width is not a multiple of 64")
        self.configs = configs
        unetConfig = try configs[.unet, default: [:]].decode(UNetConfig.self, describing: "\(path) (unet)")
        vaeConfig = try configs[.vae, default: [:]].decode(VAEConfig.self, describing: "\(path) (vae)")
        textEncoderConfig = try configs[.textEncoder, default: [:]].decode(CLIPTextConfig.self, describing: "\(path) (text_encoder)")
        layouts = [.unet: unet.layout, .vae: vae.layout, .textEncoder: text.layout]
        ignorable = [.unet: { _ in false }, .vae: { _ in false }, .textEncoder: text.ignorable]

        let prefixes = Part.allCases.map(Self.keyPrefix)
        unusedTensors = names.filter { name in
            !prefixes.contains { name.hasPrefix($0) } || text.ignorable(name)
        }
    }

    /// The weights of `part`, read from the mapped file tensor by tensor. With `recording`, the store keeps
    /// every tensor it hands out under its diffusers name (for `convert`).
    public func store(_ part: Part, recording: Bool = false) -> WeightStore {
        WeightStore(checkpoint: file, layout: layouts[part] ?? LDMLayout(prefix: ""), owning: Self.keyPrefix(part),
                    ignorable: ignorable[part] ?? { _ in false }, recording: recording)
    }

    /// Every key starting with this belongs to the part (the text encoder owns all of cond_stage_model.*).
    static func keyPrefix(_ part: Part) -> String {
        switch part {
        case .unet: LDMLayout.unetPrefix
        case .vae: LDMLayout.vaePrefix
        case .textEncoder: "cond_stage_model."
        }
    }

    /// "<path> (unet)": how errors name a part's recognised config.
    public func configName(_ part: Part) -> String { "\(path) (\(part.rawValue), recognised from the weights)" }

    /// Parameters per dtype of `part`'s tensors (for `info`).
    public func parameterCounts(_ part: Part) -> [SafetensorsDType: Int] {
        let prefix = Self.keyPrefix(part)
        let own = ignorable[part] ?? { _ in false }
        var counts: [SafetensorsDType: Int] = [:]
        for name in file.tensorNames where name.hasPrefix(prefix) && !own(name) {
            if let info = file.info(name) { counts[info.dtype, default: 0] += info.shape.reduce(1, *) }
        }
        return counts
    }

    /// What `tokenflow info` tells about a checkpoint. A loaded model keeps this, not the checkpoint, so the
    /// file is unmapped once its weights are copied (as a folder's files are).
    public struct Summary: Sendable {
        public let family: Family
        public let predictionType: String?
        public let predictionSource: String
        public let parameterCounts: [Part: [SafetensorsDType: Int]]
        public let unusedTensors: [String]
    }

    public var summary: Summary {
        Summary(family: family, predictionType: predictionType, predictionSource: predictionSource,
                parameterCounts: Dictionary(uniqueKeysWithValues: Part.allCases.map { ($0, parameterCounts($0)) }),
                unusedTensors: unusedTensors)
    }

    /// The tokenizer SD uses with this family: the built-in CLIP vocabulary, padded as the family's folders pad.
    public func tokenizer() throws -> CLIPTokenizer {
        try CLIPTokenizer.builtIn(padding: family == .sd1 ? .endOfText : .exclamationMark)
    }

    // MARK: - What the file is

    /// Pickles are refused by name and by their first bytes, before anything else reads the file.
    private static func refuseNonSafetensors(_ path: String) throws {
        let lowered = path.lowercased()
        let pickle = "a PyTorch pickle: loading one can run any code it contains, so this engine never opens pickles. "
            + "Use the model's .safetensors release, or convert the file once with trusted tools "
            + "(Python: torch.load, then safetensors.torch.save_file)"
        if let suffix = pickleExtensions.first(where: { lowered.hasSuffix($0) }) {
            throw ModelError.unsupportedCheckpoint(file: path, what: "a \(suffix) file is \(pickle)", supported: supported)
        }
        let head = try firstBytes(path, count: 9)
        // torch.save writes a ZIP archive (since PyTorch 1.6) or, before, a bare pickle (protocol 2 to 5).
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            throw ModelError.unsupportedCheckpoint(file: path, what: "it starts like a ZIP archive, the format of "
                + "torch.save: it is \(pickle)", supported: supported)
        }
        if head.count >= 2, head[0] == 0x80, (2...5).contains(head[1]) {
            throw ModelError.unsupportedCheckpoint(file: path, what: "it starts with a pickle header: it is \(pickle)",
                                                   supported: supported)
        }
    }

    /// Up to `count` bytes from the start of a regular file (opened without blocking, as every model file is).
    private static func firstBytes(_ path: String, count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            if errno == ENOENT { throw ModelError.missingFile("\(path) (\(reason))") }
            throw SafetensorsError.cannotOpen(path: path, reason: reason)
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw SafetensorsError.cannotOpen(path: path, reason: "not a regular file")
        }
        var bytes = [UInt8](repeating: 0, count: count)
        let read = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, count) }
        return Array(bytes.prefix(max(0, read)))
    }

    /// Layouts this engine does not run, told apart by a key each has.
    private static func refuseOtherKinds(_ path: String, _ names: [String]) throws {
        func refuse(_ what: String) -> ModelError { .unsupportedCheckpoint(file: path, what: what, supported: supported) }
        if let lora = names.first(where: { $0.hasPrefix("lora_") || $0.contains(".lora_down.") || $0.contains(".lora_up.")
            || $0.contains(".lora_A.") || $0.contains(".lora_B.") }) {
            throw refuse("it is a LoRA (low-rank adapter weights such as '\(lora)'), which modifies a model and is not one")
        }
        if let sdxl = names.first(where: { $0.hasPrefix("conditioner.embedders.") }) {
            throw refuse("it is a Stable Diffusion XL checkpoint (text encoders under conditioner.embedders.*, e.g. '\(sdxl)')")
        }
        if let control = names.first(where: { $0.hasPrefix("control_model.") }) {
            throw refuse("it is a ControlNet ('\(control)')")
        }
        if names.contains("emb_params") || names.contains(where: { $0.hasPrefix("string_to_param.") }) {
            throw refuse("it is a textual-inversion embedding, not a model")
        }
        if let embedding = names.first(where: { $0.hasPrefix(LDMLayout.unetPrefix + "label_emb.") }) {
            throw refuse("its UNet has class embeddings ('\(embedding)'): an SD 2.x upscaler or unCLIP checkpoint")
        }
    }

    private static func partial(_ path: String, _ names: [String], unet: Bool, vae: Bool, text: Bool) -> ModelError {
        let parts = [(unet, "UNet (model.diffusion_model.*)"), (vae, "VAE (first_stage_model.*)"),
                     (text, "text encoder (cond_stage_model.*)")]
        let present = parts.filter(\.0).map { "a \($0.1)" }, missing = parts.filter { !$0.0 }.map { "no \($0.1)" }
        let what: String
        if present.isEmpty {
            if names.contains("encoder.conv_in.weight") && names.contains("decoder.conv_in.weight") {
                what = "it is a standalone VAE (encoder.*, decoder.*), not a whole model"
            } else if names.contains("conv_in.weight") && names.contains(where: { $0.hasPrefix("down_blocks.") }) {
                what = "it is one part of a diffusers folder (diffusers' names, such as a UNet's "
                    + "diffusion_pytorch_model.safetensors): give the folder that holds model_index.json"
            } else {
                what = "it holds none of a Stable Diffusion checkpoint's parts (first tensors: "
                    + names.prefix(3).map { "'\($0)'" }.joined(separator: ", ") + ")"
            }
        } else {
            what = "it is a partial checkpoint: it holds \(present.joined(separator: " and ")) but "
                + missing.joined(separator: " and ")
        }
        return .unsupportedCheckpoint(file: path, what: what, supported: supported)
    }

    /// What the model predicts. The SAI model spec's metadata says it when present; SD 1.x models predict noise
    /// (as diffusers assumes for them); SD 2.x comes as 512x512 "base" models predicting noise and 768x768
    /// models predicting velocity, with the same tensors, so an SD 2.x file without metadata cannot tell.
    private static func prediction(_ metadata: [String: String], family: Family) -> (String?, String) {
        switch metadata["modelspec.prediction_type"] {
        case "epsilon": return ("epsilon", "the file's metadata (modelspec.prediction_type)")
        case "v", "v_prediction": return ("v_prediction", "the file's metadata (modelspec.prediction_type)")
        default: break
        }
        if let architecture = metadata["modelspec.architecture"] {
            if architecture.hasSuffix("-768-v") { return ("v_prediction", "the file's metadata (modelspec.architecture \(architecture))") }
            if architecture.hasSuffix("-v2-512") || architecture == "stable-diffusion-v1" {
                return ("epsilon", "the file's metadata (modelspec.architecture \(architecture))")
            }
        }
        switch family {
        case .sd1: return ("epsilon", "Stable Diffusion 1.x models predict noise")
        case .sd2: return (nil, "SD 2.x 512x512 base models predict noise, 768x768 models velocity, and the file has no metadata saying which")
        }
    }

    // MARK: - Configs from shapes

    /// Shapes of the file's tensors, with errors naming the key the recognition needed.
    private struct ShapeReader {
        let file: SafetensorsFile

        func shape(_ key: String, rank: Int) throws -> [Int] {
            guard let info = file.info(key) else {
                throw ModelError.invalidConfig(file: file.path, reason: "no tensor '\(key)', which recognising the architecture needs")
            }
            guard info.shape.count == rank, info.shape.allSatisfy({ $0 > 0 }) else {
                throw ModelError.invalidConfig(file: file.path, reason: "tensor '\(key)' has shape \(info.shape), expected \(rank) non-zero dimensions")
            }
            return info.shape
        }

        func has(_ key: String) -> Bool { file.info(key) != nil }

        /// How many of `key(0)`, `key(1)`, ... exist, counting from 0.
        func count(_ key: (Int) -> String) -> Int {
            var count = 0
            while has(key(count)) { count += 1 }
            return count
        }

        /// The indices N of keys "<prefix>N." (input_blocks.N., ...).
        func indices(under prefix: String) -> Set<Int> {
            Set(file.tensorNames.compactMap { name -> Int? in
                guard name.hasPrefix(prefix) else { return nil }
                return Int(name.dropFirst(prefix.count).prefix { $0 != "." })
            })
        }
    }

    private static func recogniseUNet(_ reader: ShapeReader, family: Family, prediction: String?) throws
        -> (config: ConfigDocument, layout: LDMLayout) {
        let p = LDMLayout.unetPrefix
        let path = reader.file.path
        let convIn = try reader.shape(p + "input_blocks.0.0.weight", rank: 4)
        switch convIn[1] {
        case 4: break
        case 9: throw ModelError.unsupportedCheckpoint(
            file: path, what: "it is an inpainting checkpoint (the UNet's conv_in takes 9 channels: latents, mask and masked image)",
            supported: "text-to-image checkpoints, whose UNet takes the 4 latent channels")
        case 8: throw ModelError.unsupportedCheckpoint(
            file: path, what: "its UNet takes 8 input channels (latents plus an image, as InstructPix2Pix)",
            supported: "text-to-image checkpoints, whose UNet takes the 4 latent channels")
        default: throw ModelError.unsupportedCheckpoint(
            file: path, what: "its UNet's conv_in takes \(convIn[1]) channels",
            supported: "text-to-image checkpoints, whose UNet takes the 4 latent channels")
        }

        // Level structure: input_blocks.0 is conv_in, then per level layersPerBlock resnet blocks and a
        // downsampler block (`.0.op`) except after the last level.
        let inputBlocks = reader.indices(under: p + "input_blocks.")
        let downsamplers = inputBlocks.filter { reader.has(p + "input_blocks.\($0).0.op.weight") }.sorted()
        let levels = downsamplers.count + 1
        let layersPerBlock = (inputBlocks.count - downsamplers.count - 1) / levels
        let structured = layersPerBlock >= 1 && inputBlocks == Set(0..<inputBlocks.count)
            && inputBlocks.count == 1 + levels * layersPerBlock + downsamplers.count
            && downsamplers == (0..<(levels - 1)).map { LDMLayout.inputBlock(level: $0, layer: layersPerBlock, layersPerBlock: layersPerBlock) }
            && reader.indices(under: p + "output_blocks.") == Set(0..<(levels * (layersPerBlock + 1)))
        guard structured else {
            throw ModelError.unsupportedCheckpoint(
                file: path, what: "its UNet's \(inputBlocks.count) input blocks (downsamplers at \(downsamplers)) do not form "
                    + "the levels of Stable Diffusion's UNet (openaimodel.UNetModel)", supported: supported)
        }

        var widths: [Int] = [], downAttention: [Bool] = [], depths: [Int] = []
        var linearProjection: Bool?, crossAttentionDim: Int?
        for level in 0..<levels {
            let block = "\(p)input_blocks.\(LDMLayout.inputBlock(level: level, layer: 0, layersPerBlock: layersPerBlock))"
            widths.append(try reader.shape("\(block).0.out_layers.3.weight", rank: 4)[0])
            let attention = reader.has("\(block).1.proj_in.weight")
            downAttention.append(attention)
            depths.append(attention ? reader.count { "\(block).1.transformer_blocks.\($0).norm1.weight" } : 1)
            if attention, linearProjection == nil {
                // SD 2.x projects in and out of the transformer with Linear layers, SD 1.x with 1x1 convolutions.
                linearProjection = reader.file.info("\(block).1.proj_in.weight")?.shape.count == 2
                crossAttentionDim = try reader.shape("\(block).1.transformer_blocks.0.attn2.to_k.weight", rank: 2)[1]
            }
        }
        let upAttention = (0..<levels).map { reader.has("\(p)output_blocks.\($0 * (layersPerBlock + 1)).1.proj_in.weight") }
        let outChannels = try reader.shape(p + "out.2.weight", rank: 4)[0]

        // Heads are not in the weights: the original configs give SD 1.x 8 heads (v1-inference.yaml num_heads)
        // and SD 2.x heads of 64 channels (v2-inference.yaml num_head_channels). diffusers' configs call the
        // head count attention_head_dim.
        // A level without attention uses no heads (any divisor of its width passes validation); where the
        // count cannot be told it stays null, and `requireHeads` refuses unless the metadata gives it.
        let heads: ConfigValue
        switch family {
        case .sd1: heads = .int(8)
        case .sd2: heads = .list(zip(widths, downAttention).map { width, attention in
            width % 64 == 0 ? .int(width / 64) : attention ? .null : .int(1)
        })
        }
        let depth: ConfigValue = Set(depths).count == 1 ? .int(depths[0]) : .list(depths.map { .int($0) })
        let config: ConfigDocument = [
            "_class_name": .string("UNet2DConditionModel"),
            "in_channels": .int(convIn[1]),
            "out_channels": .int(outChannels),
            "block_out_channels": .list(widths.map { .int($0) }),
            "layers_per_block": .int(layersPerBlock),
            "down_block_types": .list(downAttention.map { .string($0 ? "CrossAttnDownBlock2D" : "DownBlock2D") }),
            "up_block_types": .list(upAttention.map { .string($0 ? "CrossAttnUpBlock2D" : "UpBlock2D") }),
            "mid_block_type": .string("UNetMidBlock2DCrossAttn"),
            "attention_head_dim": heads,
            "cross_attention_dim": .int(crossAttentionDim ?? widths[0]),
            "transformer_layers_per_block": depth,
            "use_linear_projection": .bool(linearProjection ?? false),
            "norm_num_groups": .int(32),  // ldm's Normalize: GroupNorm(32, channels) everywhere
            "norm_eps": .number(1e-5),
            "flip_sin_to_cos": .bool(true),
            "freq_shift": .int(0),
            "downsample_padding": .int(1),
            "act_fn": .string("silu"),
            // 768x768 (96 latents) for velocity-predicting SD 2.x models, 512x512 otherwise.
            "sample_size": .int(prediction == "v_prediction" ? 96 : 64),
            // diffusers sets it for SD 2.1 768 so fp16 attention does not overflow; attention here is fp32.
            "upcast_attention": .bool(prediction == "v_prediction"),
        ]
        let layout = LDMLayout.unet(levels: levels, layersPerBlock: layersPerBlock, downAttention: downAttention,
                                    upAttention: upAttention)
        return (config, layout)
    }

    private static func recogniseVAE(_ reader: ShapeReader, family: Family, prediction: String?) throws
        -> (config: ConfigDocument, layout: LDMLayout) {
        let p = LDMLayout.vaePrefix
        let convIn = try reader.shape(p + "encoder.conv_in.weight", rank: 4)
        let levels = reader.count { "\(p)encoder.down.\($0).block.0.conv1.weight" }
        let layersPerBlock = reader.count { "\(p)encoder.down.0.block.\($0).conv1.weight" }
        guard levels >= 1, layersPerBlock >= 1 else {
            throw ModelError.unsupportedCheckpoint(file: reader.file.path, what: "its VAE has no encoder blocks "
                + "(first_stage_model.encoder.down.0.block.0.*)", supported: supported)
        }
        let widths = try (0..<levels).map { try reader.shape("\(p)encoder.down.\($0).block.0.conv2.weight", rank: 4)[0] }
        let latentChannels = try reader.shape(p + "decoder.conv_in.weight", rank: 4)[1]
        let outChannels = try reader.shape(p + "decoder.conv_out.weight", rank: 4)[0]
        let config: ConfigDocument = [
            "_class_name": .string("AutoencoderKL"),
            "in_channels": .int(convIn[1]),
            "out_channels": .int(outChannels),
            "latent_channels": .int(latentChannels),
            "block_out_channels": .list(widths.map { .int($0) }),
            "layers_per_block": .int(layersPerBlock),
            "down_block_types": .list(Array(repeating: .string("DownEncoderBlock2D"), count: levels)),
            "up_block_types": .list(Array(repeating: .string("UpDecoderBlock2D"), count: levels)),
            "norm_num_groups": .int(32),
            "act_fn": .string("silu"),
            // The scale_factor of SD 1.x and 2.x's configs (the latents' standard deviation in training).
            "scaling_factor": .number(0.18215),
            "sample_size": .int(prediction == "v_prediction" ? 768 : 512),
            "mid_block_add_attention": .bool(reader.has(p + "encoder.mid.attn_1.q.weight")),
            "use_quant_conv": .bool(reader.has(p + "quant_conv.weight")),
            "use_post_quant_conv": .bool(reader.has(p + "post_quant_conv.weight")),
        ]
        return (config, LDMLayout.vae(levels: levels, layersPerBlock: layersPerBlock))
    }

    private static func recogniseTextEncoder(_ reader: ShapeReader, family: Family) throws
        -> (config: ConfigDocument, layout: LDMLayout, ignorable: @Sendable (String) -> Bool) {
        let tokens: [Int], positions: [Int], layers: Int, intermediate: Int
        let layout: LDMLayout, ignorable: @Sendable (String) -> Bool
        switch family {
        case .sd1:
            let p = LDMLayout.clipPrefix + "text_model."
            tokens = try reader.shape(p + "embeddings.token_embedding.weight", rank: 2)
            positions = try reader.shape(p + "embeddings.position_embedding.weight", rank: 2)
            layers = reader.count { "\(p)encoder.layers.\($0).mlp.fc1.weight" }
            intermediate = try reader.shape(p + "encoder.layers.0.mlp.fc1.weight", rank: 2)[0]
            layout = LDMLayout.clip()
            // The int64 position_ids buffer that transformers of 2022 saved; the model recomputes it.
            let positionIDs = p + "embeddings.position_ids"
            ignorable = { $0 == positionIDs }
        case .sd2:
            let p = LDMLayout.openCLIPPrefix
            tokens = try reader.shape(p + "token_embedding.weight", rank: 2)
            positions = try reader.shape(p + "positional_embedding", rank: 2)
            let resblocks = reader.count { "\(p)transformer.resblocks.\($0).ln_1.weight" }
            // SD 2.x conditions on the penultimate layer's output, then ln_final (FrozenOpenCLIPEmbedder,
            // layer="penultimate"): the last resblock is never run (diffusers' converted encoder has 23 of 24).
            layers = resblocks - 1
            guard layers >= 1 else {
                throw ModelError.unsupportedCheckpoint(file: reader.file.path, what: "its OpenCLIP text encoder has "
                    + "\(resblocks) resblocks; SD 2.x runs all but the last, so it needs at least 2", supported: supported)
            }
            intermediate = try reader.shape(p + "transformer.resblocks.0.mlp.c_fc.weight", rank: 2)[0]
            layout = LDMLayout.openCLIP(layers: layers)
            let lastBlock = "\(p)transformer.resblocks.\(layers)."
            let unused: Set = [p + "text_projection", p + "logit_scale"]  // the CLIP image-text head
            ignorable = { $0.hasPrefix(lastBlock) || unused.contains($0) }
        }
        let hidden = tokens[1]
        guard positions[1] == hidden else {
            throw ModelError.invalidConfig(file: reader.file.path, reason: "the text encoder's token embedding is \(hidden) wide but its position embedding \(positions[1])")
        }
        let config: ConfigDocument = [
            "architectures": .list([.string("CLIPTextModel")]),
            "model_type": .string("clip_text_model"),
            "vocab_size": .int(tokens[0]),
            "hidden_size": .int(hidden),
            "intermediate_size": .int(intermediate),
            "num_hidden_layers": .int(layers),
            // CLIP's heads are 64 channels wide (ViT-L: 12 of 64, ViT-H: 16 of 64).
            "num_attention_heads": hidden % 64 == 0 ? .int(hidden / 64) : .null,
            "max_position_embeddings": .int(positions[0]),
            "hidden_act": .string(family == .sd1 ? "quick_gelu" : "gelu"),
            "layer_norm_eps": .number(1e-5),
            "projection_dim": .int(hidden),  // unused by CLIPTextModel (no projection head)
            "bos_token_id": .int(49406),
            "eos_token_id": .int(49407),
            "pad_token_id": .int(1),
        ]
        return (config, layout, ignorable)
    }

    /// Heads that could not be told from the family's rule (null) and were not given by the metadata.
    private static func requireHeads(_ value: ConfigValue?, part: Part, key: String, file: String, why: String) throws {
        let unknown: Bool
        switch value {
        case .null?: unknown = true
        case .list(let values)?: unknown = values.contains(.null)
        default: unknown = false
        }
        if unknown {
            throw ModelError.unsupportedCheckpoint(
                file: file, what: "its \(part.rawValue)'s attention heads cannot be told: \(why) (metadata "
                    + "tokenflow.\(part.rawValue)_config can give \(key))", supported: supported)
        }
    }

    /// The hyperparameters a file's metadata may give, per part (`tokenflow.<part>_config`, a JSON object of
    /// diffusers config entries): the ones no tensor shape shows.
    static let metadataKeys: [Part: Set<String>] = [
        .unet: ["attention_head_dim", "norm_num_groups", "norm_eps", "sample_size", "upcast_attention"],
        .vae: ["norm_num_groups", "scaling_factor", "sample_size"],
        .textEncoder: ["num_attention_heads", "layer_norm_eps"],
    ]

    private static func applyMetadata(_ metadata: [String: String], part: Part, to config: inout ConfigDocument,
                                      file: String) throws {
        let key = "tokenflow.\(part.rawValue)_config"
        guard let text = metadata[key] else { return }
        let source = "\(file) (metadata \(key))"
        let values: ConfigDocument
        do {
            // Through JSONFile's nesting check, as every JSON a user supplies: JSONDecoder itself traps on
            // a 513th bracket at the end of the text (Tests/Fuzz/regressions/single-file/).
            values = try JSONFile.decode(ConfigDocument.self, from: Data(text.utf8))
        } catch {
            throw ModelError.invalidConfig(file: source, reason: "not a JSON object of config values: \(error)")
        }
        let allowed = metadataKeys[part] ?? []
        for (name, value) in values.sorted(by: { $0.key < $1.key }) {
            guard allowed.contains(name) else {
                throw ModelError.invalidConfig(file: source, reason: "'\(name)' cannot be given here (the weights decide it); "
                    + "allowed: \(allowed.sorted().joined(separator: ", "))")
            }
            config[name] = value
        }
    }
}

// MARK: - Config documents

/// One value of a config.json.
public enum ConfigValue: Codable, Sendable, Equatable {
    case bool(Bool), int(Int), number(Double), string(String), list([ConfigValue]), null

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int.self) { self = .int(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else { self = .list(try container.decode([ConfigValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .list(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}

/// A config.json's contents: the file `convert` writes, and what the config types are decoded from.
public typealias ConfigDocument = [String: ConfigValue]

extension ConfigDocument {
    /// As a config.json file: pretty-printed, keys sorted.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// Decoded as a config type, exactly as the same config.json would be; errors name `describing`.
    func decode<T: Decodable>(_ type: T.Type, describing: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: try json())
        } catch {
            throw ModelError.invalidConfig(file: describing, reason: "\(error)")
        }
    }
}
