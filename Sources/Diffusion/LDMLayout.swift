// The one table between the engine's tensor names (diffusers' module paths, which the layers ask for) and
// the names single-file Stable Diffusion checkpoints use: the original (LDM) layout that
// CompVis/stable-diffusion (SD 1.x) and Stability-AI/stablediffusion (SD 2.x) save, and AUTOMATIC1111 and
// ComfyUI load. It is written from the original modules' construction order:
//   model.diffusion_model.*  ldm's openaimodel.UNetModel   (input_blocks / middle_block / output_blocks)
//   first_stage_model.*      ldm's AutoencoderKL            (encoder.down.N.block.M, mid.block_1/attn_1/block_2)
//   cond_stage_model.*       SD 1.x: transformers' CLIPTextModel under `transformer.` (diffusers' own names);
//                            SD 2.x: open_clip's text tower under `model.` (resblocks, fused in_proj)
// The same mapping, written in Python from the same modules, made the test checkpoints and was checked
// there against diffusers' own single-file converters (Tests/Fixtures/generate_single_file_fixtures.py).

/// Where one of the engine's tensors is stored in a single-file checkpoint.
struct CheckpointTensor: Equatable {
    /// Part `index` of `count` equal row blocks.
    struct FusedPart: Equatable {
        let index: Int
        let count: Int
    }


    /// The checkpoint's key.
    let key: String
    /// The tensor is part `index` of `count` equal row blocks of the stored one: q, k and v of OpenCLIP's
    /// fused `in_proj_weight` [3C, C] / `in_proj_bias` [3C], in that order (as nn.MultiheadAttention
    /// splits them).
    var fusedPart: FusedPart?
    /// Stored as a 1x1 convolution kernel [out, in, 1, 1] where the engine has a Linear [out, in] (the VAE
    /// mid-block attention's q/k/v/proj_out: same numbers, two more axes).
    var storedAsConvolution = false
}

/// The renames of one checkpoint part: diffusers module path -> LDM module path, each with the renames of
/// the sub-modules whose names differ inside it.
struct LDMLayout {
    /// A sub-module whose name differs ("norm1" is "in_layers.0" inside an LDM ResBlock).
    struct Rename {
        let diffusers: String
        let ldm: String
        var fusedPart: CheckpointTensor.FusedPart?
        /// Its `.weight` is stored as a 1x1 convolution kernel.
        var weightIsConvolution = false
    }

    struct Module {
        let ldm: String
        let renames: [Rename]
    }

    /// Prefix of every key of the part in the checkpoint.
    let prefix: String
    private var modules: [String: Module] = [:]
    /// Tensors renamed as a whole (OpenCLIP's positional embedding is a bare parameter, not a module).
    private var tensors: [String: String] = [:]

    init(prefix: String) { self.prefix = prefix }

    private mutating func add(_ diffusers: String, _ ldm: String, _ renames: [Rename] = []) {
        modules[diffusers] = Module(ldm: ldm, renames: renames)
    }

    /// Where the engine's tensor `name` is stored, or nil when no module of the table holds it.
    func location(of name: String) -> CheckpointTensor? {
        if let whole = tensors[name] { return CheckpointTensor(key: prefix + whole) }
        // The longest module path that is a prefix of the name, found by cutting at dots from the right.
        var end = name.endIndex
        while let dot = name[..<end].lastIndex(of: ".") {
            if let module = modules[String(name[..<dot])] {
                return place(String(name[name.index(after: dot)...]), in: module)
            }
            end = dot
        }
        return modules[""].map { place(name, in: $0) }
    }

    private func place(_ rest: String, in module: Module) -> CheckpointTensor {
        let base = module.ldm.isEmpty ? prefix : prefix + module.ldm + "."
        for rename in module.renames where rest.hasPrefix(rename.diffusers + ".") {
            let tail = rest.dropFirst(rename.diffusers.count + 1)
            // A fused part keeps only the parameter kind: q_proj.weight -> in_proj_weight.
            let key = rename.fusedPart == nil ? base + rename.ldm + "." + tail : base + rename.ldm + tail
            return CheckpointTensor(key: key, fusedPart: rename.fusedPart,
                                    storedAsConvolution: rename.weightIsConvolution && tail == "weight")
        }
        return CheckpointTensor(key: base + rest)
    }
}

extension LDMLayout {
    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."
    static let clipPrefix = "cond_stage_model.transformer."
    static let openCLIPPrefix = "cond_stage_model.model."

    /// ldm's ResBlock: in_layers = (GroupNorm, SiLU, conv), emb_layers = (SiLU, Linear),
    /// out_layers = (GroupNorm, SiLU, Dropout, conv), skip_connection (1x1 conv when the width changes).
    private static let unetResnet = [
        Rename(diffusers: "norm1", ldm: "in_layers.0"), Rename(diffusers: "conv1", ldm: "in_layers.2"),
        Rename(diffusers: "time_emb_proj", ldm: "emb_layers.1"), Rename(diffusers: "norm2", ldm: "out_layers.0"),
        Rename(diffusers: "conv2", ldm: "out_layers.3"), Rename(diffusers: "conv_shortcut", ldm: "skip_connection"),
    ]
    /// The VAE's ResnetBlock: diffusers' names except the 1x1 shortcut.
    private static let vaeResnet = [Rename(diffusers: "conv_shortcut", ldm: "nin_shortcut")]
    /// The VAE's AttnBlock: GroupNorm `norm`, then q/k/v/proj_out as 1x1 convolutions.
    private static let vaeAttention = [
        Rename(diffusers: "group_norm", ldm: "norm"),
        Rename(diffusers: "to_q", ldm: "q", weightIsConvolution: true),
        Rename(diffusers: "to_k", ldm: "k", weightIsConvolution: true),
        Rename(diffusers: "to_v", ldm: "v", weightIsConvolution: true),
        Rename(diffusers: "to_out.0", ldm: "proj_out", weightIsConvolution: true),
    ]
    /// open_clip's ResidualAttentionBlock: ln_1, attn (nn.MultiheadAttention), ln_2, mlp (c_fc, gelu, c_proj).
    private static let openCLIPLayer = [
        Rename(diffusers: "layer_norm1", ldm: "ln_1"), Rename(diffusers: "layer_norm2", ldm: "ln_2"),
        Rename(diffusers: "self_attn.q_proj", ldm: "attn.in_proj_", fusedPart: .init(index: 0, count: 3)),
        Rename(diffusers: "self_attn.k_proj", ldm: "attn.in_proj_", fusedPart: .init(index: 1, count: 3)),
        Rename(diffusers: "self_attn.v_proj", ldm: "attn.in_proj_", fusedPart: .init(index: 2, count: 3)),
        Rename(diffusers: "self_attn.out_proj", ldm: "attn.out_proj"),
        Rename(diffusers: "mlp.fc1", ldm: "mlp.c_fc"), Rename(diffusers: "mlp.fc2", ldm: "mlp.c_proj"),
    ]

    /// The index of the LDM input block of a down level's resnet `layer` (input_blocks.0 is conv_in; each
    /// level has layersPerBlock blocks, then its downsampler's block except on the last level).
    static func inputBlock(level: Int, layer: Int, layersPerBlock: Int) -> Int {
        1 + level * (layersPerBlock + 1) + layer
    }

    /// openaimodel.UNetModel. Output blocks run from the deepest level, layersPerBlock + 1 per level; the
    /// last of each level but the shallowest ends in an Upsample, after the SpatialTransformer if any.
    static func unet(levels: Int, layersPerBlock: Int, downAttention: [Bool], upAttention: [Bool]) -> LDMLayout {
        var layout = LDMLayout(prefix: unetPrefix)
        layout.add("time_embedding.linear_1", "time_embed.0")
        layout.add("time_embedding.linear_2", "time_embed.2")
        layout.add("conv_in", "input_blocks.0.0")
        for level in 0..<levels {
            for layer in 0..<layersPerBlock {
                let block = inputBlock(level: level, layer: layer, layersPerBlock: layersPerBlock)
                layout.add("down_blocks.\(level).resnets.\(layer)", "input_blocks.\(block).0", unetResnet)
                if downAttention[level] { layout.add("down_blocks.\(level).attentions.\(layer)", "input_blocks.\(block).1") }
            }
            let downsampler = inputBlock(level: level, layer: layersPerBlock, layersPerBlock: layersPerBlock)
            layout.add("down_blocks.\(level).downsamplers.0.conv", "input_blocks.\(downsampler).0.op")
        }
        layout.add("mid_block.resnets.0", "middle_block.0", unetResnet)
        layout.add("mid_block.attentions.0", "middle_block.1")
        layout.add("mid_block.resnets.1", "middle_block.2", unetResnet)
        for up in 0..<levels {
            for layer in 0...layersPerBlock {
                let block = up * (layersPerBlock + 1) + layer
                layout.add("up_blocks.\(up).resnets.\(layer)", "output_blocks.\(block).0", unetResnet)
                if upAttention[up] { layout.add("up_blocks.\(up).attentions.\(layer)", "output_blocks.\(block).1") }
            }
            let last = up * (layersPerBlock + 1) + layersPerBlock
            layout.add("up_blocks.\(up).upsamplers.0.conv", "output_blocks.\(last).\(upAttention[up] ? 2 : 1).conv")
        }
        layout.add("conv_norm_out", "out.0")
        layout.add("conv_out", "out.2")
        return layout
    }

    /// ldm's Encoder/Decoder. The decoder's `up` list is indexed by resolution level (up.0 is the
    /// full-resolution level, run last), so diffusers' up_blocks.i is up.(levels - 1 - i). Everything not
    /// listed (conv_in, conv_out, quant_conv, post_quant_conv) has diffusers' name.
    static func vae(levels: Int, layersPerBlock: Int) -> LDMLayout {
        var layout = LDMLayout(prefix: vaePrefix)
        layout.add("", "")
        for level in 0..<levels {
            for layer in 0..<layersPerBlock {
                layout.add("encoder.down_blocks.\(level).resnets.\(layer)", "encoder.down.\(level).block.\(layer)", vaeResnet)
            }
            layout.add("encoder.down_blocks.\(level).downsamplers.0", "encoder.down.\(level).downsample")
            let decoderLevel = levels - 1 - level
            for layer in 0...layersPerBlock {
                layout.add("decoder.up_blocks.\(level).resnets.\(layer)", "decoder.up.\(decoderLevel).block.\(layer)", vaeResnet)
            }
            layout.add("decoder.up_blocks.\(level).upsamplers.0", "decoder.up.\(decoderLevel).upsample")
        }
        for part in ["encoder", "decoder"] {
            layout.add("\(part).mid_block.resnets.0", "\(part).mid.block_1", vaeResnet)
            layout.add("\(part).mid_block.attentions.0", "\(part).mid.attn_1", vaeAttention)
            layout.add("\(part).mid_block.resnets.1", "\(part).mid.block_2", vaeResnet)
            layout.add("\(part).conv_norm_out", "\(part).norm_out")
        }
        return layout
    }

    /// SD 1.x: transformers' CLIPTextModel, stored under its own names.
    static func clip() -> LDMLayout {
        var layout = LDMLayout(prefix: clipPrefix)
        layout.add("", "")
        return layout
    }

    /// SD 2.x: open_clip's text tower. `layers` is the engine's layer count (the checkpoint has one more).
    static func openCLIP(layers: Int) -> LDMLayout {
        var layout = LDMLayout(prefix: openCLIPPrefix)
        layout.tensors["text_model.embeddings.position_embedding.weight"] = "positional_embedding"
        layout.add("text_model.embeddings.token_embedding", "token_embedding")
        layout.add("text_model.final_layer_norm", "ln_final")
        for layer in 0..<layers {
            layout.add("text_model.encoder.layers.\(layer)", "transformer.resblocks.\(layer)", openCLIPLayer)
        }
        return layout
    }
}
