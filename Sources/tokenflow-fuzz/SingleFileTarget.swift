import Diffusion
import Glibc
import Tensors

/// The `single-file` target: `SingleFileCheckpoint(path:)`, the parser of an original-layout Stable Diffusion
/// checkpoint (architecture recognised from tensor shapes), then what `tokenflow info` and the loaders do with
/// it before they read the weights.
///
/// The input is a safetensors file whose data section may be absent: a real checkpoint header is 125 KB but
/// its data megabytes to gigabytes, far too much to mutate a million times. Before each execution the input
/// file gets a data section of `dataSection` bytes appended as a hole (`ftruncate`: a sparse file, nothing
/// written, and the parser maps it without touching a page), so every header whose tensors lie within it
/// parses as a whole checkpoint would. Offsets beyond it are refused by the parser's own bounds check (a
/// pass). Not extending to the exact size the header declares saves a second parse of the header per
/// execution; short data sections are the `safetensors` target's business.
enum SingleFileTarget {
    /// The data section every input gets: 64 MiB, 8x the larger fixture checkpoint's.
    static let dataSection = 64 << 20
    /// Tensors read through the stores only up to this size: the zero pages of the hole cost nothing to
    /// map but each read one is a page fault and a conversion.
    static let maxReadBytes = 64 << 10

    static let target = FuzzTarget(name: "single-file", format: .checkpoint, seeds: ["Tests/Fuzz/seeds/single-file"]) { workspace in
        {
            try appendDataSection(workspace.input)
            let checkpoint = try SingleFileCheckpoint(path: workspace.input)
            describe(checkpoint)
            try locateTensors(checkpoint)
        }
    }

    /// Appends the hole after the header when the header is whole; a file whose length field points past its
    /// end is left as it is (the parser refuses it as a truncated file).
    static func appendDataSection(_ path: String) throws {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw FuzzError("cannot open \(path): \(errnoText())") }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw FuzzError("cannot stat \(path): \(errnoText())") }
        var length: UInt64 = 0
        guard pread(fd, &length, 8, 0) == 8 else { return }  // shorter than the length field
        let size = UInt64(status.st_size), headerEnd = 8 &+ UInt64(littleEndian: length)
        guard headerEnd >= 8, headerEnd <= size else { return }
        let extended = max(size, headerEnd + UInt64(dataSection))
        guard ftruncate(fd, off_t(extended)) == 0 else { throw FuzzError("cannot extend \(path): \(errnoText())") }
    }

    /// What `tokenflow info` prints of a checkpoint (Sources/tokenflow-cli/Support.swift, describeModel) and
    /// the config.json files `tokenflow convert` writes: every value the recognition produced.
    static func describe(_ checkpoint: SingleFileCheckpoint) {
        let unet = checkpoint.unetConfig, vae = checkpoint.vaeConfig, text = checkpoint.textEncoderConfig
        var lines = ["\(checkpoint.family.rawValue)",
                     "unet \(unet.blockOutChannels) \(unet.headsPerLevel) \(unet.layersPerBlock) \(unet.crossAttentionDim) \(unet.useLinearProjection) \(unet.sampleSize)",
                     "vae \(vae.blockOutChannels) \(vae.latentChannels) \(vae.scalingFactor)",
                     "text_encoder \(text.hiddenSize) \(text.numHiddenLayers) \(text.numAttentionHeads) \(text.hiddenAct)",
                     "prediction \(checkpoint.predictionType ?? "unknown") (\(checkpoint.predictionSource))"]
        let summary = checkpoint.summary
        for part in SingleFileCheckpoint.Part.allCases {
            let counts = summary.parameterCounts[part] ?? [:]
            lines.append("\(checkpoint.configName(part)): \(counts.values.reduce(0, +)) parameters (\(counts.keys.map(\.rawValue).sorted()))")
            // convert writes each part's config.json from this document.
            _ = try? checkpoint.configs[part]?.json()
        }
        lines.append("not used: \(summary.unusedTensors.count) tensors (\(summary.unusedTensors.prefix(4).joined(separator: ", ")))")
        blackHole(lines)
    }

    /// Where the loaders find their tensors: `contains` for names of every kind of module the layouts map
    /// (renamed, fused q/k/v, stored as 1x1 convolutions, unmapped), and `take` for a few of them with the
    /// shape the loader would ask for (from the recognised config), when they are small. A tensor refused
    /// here (missing, wrong shape) is a refused input.
    static func locateTensors(_ checkpoint: SingleFileCheckpoint) throws {
        let unet = checkpoint.unetConfig, vae = checkpoint.vaeConfig, text = checkpoint.textEncoderConfig
        let levels = unet.blockOutChannels.count, vaeLevels = vae.blockOutChannels.count
        var unetNames = ["conv_in.weight", "time_embedding.linear_1.weight", "time_embedding.linear_2.bias",
                         "mid_block.resnets.0.norm1.weight", "mid_block.attentions.0.proj_in.weight",
                         "mid_block.resnets.1.time_emb_proj.weight", "conv_norm_out.weight", "conv_out.bias",
                         "no_such_module.weight", "weight"]
        for level in [0, levels - 1] {
            unetNames += ["down_blocks.\(level).resnets.0.conv1.weight", "down_blocks.\(level).resnets.0.conv_shortcut.weight",
                          "down_blocks.\(level).attentions.0.transformer_blocks.0.attn2.to_k.weight",
                          "down_blocks.\(level).downsamplers.0.conv.weight",
                          "up_blocks.\(level).resnets.\(unet.layersPerBlock).conv2.weight",
                          "up_blocks.\(level).attentions.0.proj_out.bias", "up_blocks.\(level).upsamplers.0.conv.weight"]
        }
        var vaeNames = ["encoder.conv_in.weight", "decoder.conv_out.bias", "quant_conv.weight", "post_quant_conv.bias",
                        "encoder.mid_block.attentions.0.group_norm.weight", "decoder.mid_block.attentions.0.to_out.0.weight",
                        "encoder.mid_block.resnets.1.conv_shortcut.weight", "decoder.conv_norm_out.bias"]
        for level in [0, vaeLevels - 1] {
            vaeNames += ["encoder.down_blocks.\(level).resnets.0.conv_shortcut.weight", "encoder.down_blocks.\(level).downsamplers.0.conv.weight",
                         "decoder.up_blocks.\(level).resnets.\(vae.layersPerBlock).norm1.weight", "decoder.up_blocks.\(level).upsamplers.0.conv.bias"]
        }
        var textNames = ["text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
                         "text_model.final_layer_norm.weight"]
        for layer in [0, text.numHiddenLayers - 1, text.numHiddenLayers] {
            textNames += ["q_proj.weight", "k_proj.bias", "v_proj.weight", "out_proj.weight"].map { "text_model.encoder.layers.\(layer).self_attn.\($0)" }
            textNames += ["text_model.encoder.layers.\(layer).layer_norm1.weight", "text_model.encoder.layers.\(layer).mlp.fc2.bias"]
        }
        var found = 0
        for (part, names) in [(SingleFileCheckpoint.Part.unet, unetNames), (.vae, vaeNames), (.textEncoder, textNames)] {
            let store = checkpoint.store(part)
            found += names.filter(store.contains).count
        }
        blackHole(found)

        // Read as the loaders read them: rows of a fused q/k/v (each a third of in_proj_*, SD 2.x), a VAE
        // attention weight stored as a 1x1 convolution, a plain one.
        let hidden = text.hiddenSize, width = vae.blockOutChannels.last ?? 0
        let reads: [(SingleFileCheckpoint.Part, String, [Int])] = [
            (.textEncoder, "text_model.encoder.layers.0.self_attn.v_proj.bias", [hidden]),
            (.textEncoder, "text_model.encoder.layers.0.self_attn.k_proj.weight", [hidden, hidden]),
            (.vae, "decoder.mid_block.attentions.0.to_q.weight", [width, width]),
            (.unet, "conv_out.bias", [unet.outChannels]),
        ]
        for (part, name, shape) in reads {
            let (elements, overflow) = shape.reduce((1, false)) { product, dimension in
                let (value, overflow) = product.0.multipliedReportingOverflow(by: dimension)
                return (value, product.1 || overflow)
            }
            guard !overflow, elements <= maxReadBytes / 12 else { continue }  // up to 3 fused parts of 4 bytes
            blackHole(try checkpoint.store(part).take(name, shape: shape).shape)
        }
    }

    /// Keeps a value the optimizer would otherwise drop with the work that made it.
    @inline(never)
    static func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }
}
