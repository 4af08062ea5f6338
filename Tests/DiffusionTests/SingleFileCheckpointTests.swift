import Diffusion
import Foundation
import Tensors
import XCTest

/// Single-file checkpoints in the original (LDM) layout: `Tests/Fixtures/models/<name>.safetensors` hold the
/// tiny folders' tensors bit for bit under the original names (written and checked against diffusers' own
/// converters by generate_single_file_fixtures.py), so every network output from the file must equal the
/// folder's exactly, and also match the diffusers references at the folder tests' tolerance.
final class SingleFileCheckpointTests: XCTestCase {
    func checkpointPath(_ model: String) -> String { tinyModelDirectory(model) + ".safetensors" }

    /// The UNet, VAE and text encoder fixture comparisons, run through both, compared bit for bit.
    func checkEqualsFolder(_ name: String, family: SingleFileCheckpoint.Family) throws {
        let file = try StableDiffusionModel(path: checkpointPath(name))
        let folder = try StableDiffusionModel(path: tinyModelDirectory(name))
        XCTAssertEqual(file.checkpoint?.family, family)
        XCTAssertNil(folder.checkpoint)
        let expected = try expectedOutputs(name)

        let sample = try expected.tensor("unet.sample"), context = try expected.tensor("unet.encoder_hidden_states")
        for t: Float in [1, 500, 981] {
            let out = try file.unet(sample, timesteps: [t], context: context)
            XCTAssertEqual(out.scalars, try folder.unet(sample, timesteps: [t], context: context).scalars, "\(name) UNet t=\(t)")
            assertMatches(out, try expected.tensor("unet.t\(Int(t)).out"), tolerance: 1e-4, "\(name) UNet vs diffusers t=\(t)")
        }
        let image = try expected.tensor("vae.encode.input"), latents = try expected.tensor("vae.decode.input")
        XCTAssertEqual(try file.vae.encodeMean(image).scalars, try folder.vae.encodeMean(image).scalars, "\(name) VAE encode")
        XCTAssertEqual(try file.vae.decode(latents).scalars, try folder.vae.decode(latents).scalars, "\(name) VAE decode")
        assertMatches(try file.vae.decode(latents), try expected.tensor("vae.decode.out"), tolerance: 1e-4, "\(name) VAE vs diffusers")

        let ids = try expected.tensor("text.input_ids")
        let sequences = (0..<ids.shape[0]).map { ids.row($0).scalars.map { Int32($0) } }
        let states = try file.withTextEncoder { try $0(sequences) }
        XCTAssertEqual(states.scalars, try folder.withTextEncoder { try $0(sequences) }.scalars, "\(name) text encoder")
        assertMatches(states, try expected.tensor("text.last_hidden_state"), tolerance: 1e-4, "\(name) text encoder vs transformers")
        // The built-in tokenizer pads as the folder's does (SD 2.x "!", SD 1.x "<|endoftext|>").
        let prompt = "A photo of an astronaut riding a horse on Mars, 4k, highly-detailed!"
        XCTAssertEqual(file.tokenizer.encode(prompt), folder.tokenizer.encode(prompt), "\(name) tokenizer")
        XCTAssertEqual(file.tokenizer.padID, folder.tokenizer.padID)
        XCTAssertEqual(try file.embed(prompt).scalars, try folder.embed(prompt).scalars, "\(name) prompt embedding")
    }

    func testSD2SingleFileEqualsFolderBitForBit() throws { try checkEqualsFolder("sd2-tiny", family: .sd2) }
    func testSD15FP16SingleFileEqualsFolderBitForBit() throws { try checkEqualsFolder("sd15-tiny", family: .sd1) }

    /// The configs recognised from the shapes (plus the file's metadata) are the folders' own.
    func testRecognisedConfigsAreTheFolders() throws {
        for name in ["sd2-tiny", "sd15-tiny"] {
            let checkpoint = try SingleFileCheckpoint(path: checkpointPath(name))
            let unet = try UNet(directory: tinyModelDirectory(name) + "/unet").config
            XCTAssertEqual(checkpoint.unetConfig.blockOutChannels, unet.blockOutChannels)
            XCTAssertEqual(checkpoint.unetConfig.downBlockTypes, unet.downBlockTypes)
            XCTAssertEqual(checkpoint.unetConfig.upBlockTypes, unet.upBlockTypes)
            XCTAssertEqual(checkpoint.unetConfig.layersPerBlock, unet.layersPerBlock)
            XCTAssertEqual(checkpoint.unetConfig.headsPerLevel, unet.headsPerLevel)
            XCTAssertEqual(checkpoint.unetConfig.crossAttentionDim, unet.crossAttentionDim)
            XCTAssertEqual(checkpoint.unetConfig.useLinearProjection, unet.useLinearProjection)
            XCTAssertEqual(checkpoint.unetConfig.transformerLayersPerBlock, unet.transformerLayersPerBlock)
            XCTAssertEqual(checkpoint.unetConfig.normNumGroups, unet.normNumGroups)
            let text = try CLIPTextModel(directory: tinyModelDirectory(name) + "/text_encoder").config
            XCTAssertEqual(checkpoint.textEncoderConfig.numHiddenLayers, text.numHiddenLayers, "\(name): SD 2.x drops the last resblock")
            XCTAssertEqual(checkpoint.textEncoderConfig.hiddenAct, text.hiddenAct)
            XCTAssertEqual(checkpoint.textEncoderConfig.intermediateSize, text.intermediateSize)
            XCTAssertEqual(checkpoint.textEncoderConfig.numAttentionHeads, text.numAttentionHeads)
        }
        XCTAssertEqual(try SingleFileCheckpoint(path: checkpointPath("sd15-tiny")).predictionType, "epsilon")
        XCTAssertNil(try SingleFileCheckpoint(path: checkpointPath("sd2-tiny")).predictionType, "SD 2.x without metadata")
    }

    /// A bf16 "full" checkpoint (EMA copies beside the weights, as v1-5-pruned.safetensors): the non-EMA
    /// weights are used (as diffusers and AUTOMATIC1111 do), read from BF16; the result equals a folder
    /// holding the same BF16 values.
    func testBF16FullCheckpointUsesTheNonEMAWeights() throws {
        var tensors = try floatTensors(checkpointPath("sd15-tiny"))
        for (name, tensor) in tensors where name.hasPrefix("model.diffusion_model.") {
            // ldm's LitEma names: the parameter name without "model." and without dots.
            let emaName = "model_ema." + name.dropFirst("model.".count).replacingOccurrences(of: ".", with: "")
            tensors.append((emaName, try scaled(tensor, by: -1)))
        }
        let file = try writeCheckpoint(tensors, dtype: .bf16, metadata: metadata(of: "sd15-tiny"))
        let model = try StableDiffusionModel(path: file)
        XCTAssertEqual(model.checkpoint?.parameterCounts[.unet]?.keys.sorted { $0.rawValue < $1.rawValue }, [.bf16])
        let unetSource = tinyModelDirectory("sd15-tiny") + "/unet"
        let folder = try writeComponentCopy(self, config: readComponentConfig(unetSource),
                                            weights: readComponentTensors("\(unetSource)/diffusion_pytorch_model.fp16.safetensors"),
                                            weightsFile: "diffusion_pytorch_model.safetensors", dtype: .bf16)
        let expected = try expectedOutputs("sd15-tiny")
        let sample = try expected.tensor("unet.sample"), context = try expected.tensor("unet.encoder_hidden_states")
        XCTAssertEqual(try model.unet(sample, timesteps: [500], context: context).scalars,
                       try UNet(directory: folder)(sample, timesteps: [500], context: context).scalars)
        XCTAssertTrue(model.checkpoint?.unusedTensors.contains { $0.hasPrefix("model_ema.") } ?? false)
    }

    /// The SAI model spec's metadata says what an SD 2.x file predicts.
    func testPredictionFromModelSpecMetadata() throws {
        let tensors = try floatTensors(checkpointPath("sd2-tiny"))
        let sd2Metadata = try metadata(of: "sd2-tiny")
        for (key, value, expected) in [("modelspec.prediction_type", "v", "v_prediction"),
                                       ("modelspec.prediction_type", "epsilon", "epsilon"),
                                       ("modelspec.architecture", "stable-diffusion-v2-768-v", "v_prediction"),
                                       ("modelspec.architecture", "stable-diffusion-v2-512", "epsilon")] {
            let file = try writeCheckpoint(tensors, metadata: sd2Metadata.merging([key: value]) { $1 })
            let model = try StableDiffusionModel(path: file)
            XCTAssertEqual(model.schedulerConfig.predictionType, expected, "\(key) \(value)")
            XCTAssertNil(model.unknownPrediction)
        }
        let model = try StableDiffusionModel(path: checkpointPath("sd2-tiny"))
        XCTAssertNotNil(model.unknownPrediction)
        XCTAssertTrue(model.unknownPrediction?.contains("768") ?? false, model.unknownPrediction ?? "")
    }

    /// `convert` writes a diffusers folder holding exactly the folder's tensors under diffusers' names, in
    /// the checkpoint's dtype (F32 for a part of mixed dtypes: sd2-tiny's text encoder keeps its token
    /// embedding F16); the engine loads it and computes the same outputs.
    func testConvertWritesTheFolder() throws {
        for (name, weightSuffix) in [("sd2-tiny", ""), ("sd15-tiny", ".fp16")] {
            let checkpoint = try SingleFileCheckpoint(path: checkpointPath(name))
            let directory = temporaryPath("converted-\(name)")
            try checkpoint.convert(to: directory, prediction: "epsilon")
            for (part, file) in [("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")] {
                let converted = try SafetensorsFile(path: "\(directory)/\(part)/\(file).safetensors")
                let original = try SafetensorsFile(path: "\(tinyModelDirectory(name))/\(part)/\(file)\(weightSuffix).safetensors")
                XCTAssertEqual(converted.tensorNames, original.tensorNames, "\(name) \(part)")
                let dtypes = Set(original.tensorNames.compactMap { original.info($0)?.dtype })
                for tensor in original.tensorNames {
                    XCTAssertEqual(converted.info(tensor)?.shape, original.info(tensor)?.shape, "\(name) \(part) \(tensor)")
                    XCTAssertEqual(converted.info(tensor)?.dtype, dtypes.count == 1 ? original.info(tensor)?.dtype : .f32,
                                   "\(name) \(part) \(tensor)")
                    XCTAssertEqual(try converted.tensor(tensor).scalars, try original.tensor(tensor).scalars, "\(name) \(part) \(tensor)")
                }
            }
            let loaded = try StableDiffusionModel(path: directory)
            let folder = try StableDiffusionModel(path: tinyModelDirectory(name))
            let prompt = "a watercolor painting! of a lighthouse"
            XCTAssertEqual(loaded.tokenizer.encode(prompt), folder.tokenizer.encode(prompt))
            XCTAssertEqual(try loaded.embed(prompt).scalars, try folder.embed(prompt).scalars)
            XCTAssertEqual(loaded.unet.config.headsPerLevel, folder.unet.config.headsPerLevel)
            XCTAssertEqual(loaded.schedulerConfig.betaSchedule, folder.schedulerConfig.betaSchedule)
            XCTAssertEqual(try DDIMScheduler(config: loaded.schedulerConfig).alphasCumprod,
                           try DDIMScheduler(config: folder.schedulerConfig).alphasCumprod)
            XCTAssertThrowsError(try checkpoint.convert(to: directory, prediction: "epsilon")) {
                XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
            }
        }
    }

    // MARK: - Refused files

    /// `load` must throw ModelError.unsupportedCheckpoint whose message contains each of `phrases` and says
    /// what is supported.
    func assertRefused(_ path: String, _ phrases: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try StableDiffusionModel(path: path), file: file, line: line) { error in
            let message = "\(error)"
            guard case ModelError.unsupportedCheckpoint = error else {
                return XCTFail("not an unsupported-checkpoint error: \(message)", file: file, line: line)
            }
            for phrase in phrases + [path, "supported:"] {
                XCTAssertTrue(message.contains(phrase), "\"\(message)\" does not say \"\(phrase)\"", file: file, line: line)
            }
        }
    }

    func testLoRAIsRefused() throws {
        let lora = try writeCheckpoint([
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", try Tensor(zeros: [4, 8])),
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", try Tensor(zeros: [8, 4])),
            ("lora_unet_down_blocks_0_attentions_0_proj_in.alpha", try Tensor(zeros: [])),
        ])
        assertRefused(lora, ["is a LoRA", "lora_unet_down_blocks_0_attentions_0_proj_in"])
        let peft = try writeCheckpoint([("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", try Tensor(zeros: [4, 8]))])
        assertRefused(peft, ["is a LoRA"])
    }

    func testSDXLIsRefused() throws {
        var tensors = try floatTensors(checkpointPath("sd2-tiny"))
        tensors.append(("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", try Tensor(zeros: [8, 4])))
        assertRefused(try writeCheckpoint(tensors), ["Stable Diffusion XL", "conditioner.embedders"])
    }

    func testInpaintingIsRefused() throws {
        var tensors = try floatTensors(checkpointPath("sd15-tiny"))
        replaceTensor(&tensors, "model.diffusion_model.input_blocks.0.0.weight", with: try Tensor(zeros: [8, 9, 3, 3]))
        assertRefused(try writeCheckpoint(tensors), ["inpainting", "9 channels"])
    }

    func testPartialCheckpointsAreRefused() throws {
        let tensors = try floatTensors(checkpointPath("sd15-tiny"))
        let vaeOnly = try writeCheckpoint(tensors.filter { $0.name.hasPrefix("first_stage_model.") })
        assertRefused(vaeOnly, ["partial checkpoint", "a VAE (first_stage_model.*)", "no UNet (model.diffusion_model.*)",
                                "no text encoder (cond_stage_model.*)"])
        let noText = try writeCheckpoint(tensors.filter { !$0.name.hasPrefix("cond_stage_model.") })
        assertRefused(noText, ["partial checkpoint", "no text encoder (cond_stage_model.*)"])
        let noUNet = try writeCheckpoint(tensors.filter { !$0.name.hasPrefix("model.diffusion_model.") })
        assertRefused(noUNet, ["partial checkpoint", "no UNet"])
        // A VAE distributed alone (vae-ft-mse-840000-ema-pruned.safetensors): the VAE's own names, no prefix.
        let standalone = try writeCheckpoint(tensors.filter { $0.name.hasPrefix("first_stage_model.") }
            .map { (String($0.name.dropFirst("first_stage_model.".count)), $0.tensor) })
        assertRefused(standalone, ["standalone VAE"])
    }

    /// Pickles are refused by extension without being opened, and by their first bytes under any name.
    func testPicklesAreNeverOpened() throws {
        let ckpt = temporaryPath("model.ckpt")
        // Not even a pickle: an extension refusal must not depend on the content.
        try Data("anything".utf8).write(to: URL(fileURLWithPath: ckpt))
        assertRefused(ckpt, ["a .ckpt file is a PyTorch pickle", "never opens pickles"])
        let zip = temporaryPath("renamed.safetensors")
        try Data([0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60)).write(to: URL(fileURLWithPath: zip))
        assertRefused(zip, ["ZIP archive", "PyTorch pickle"])
        let pickle = temporaryPath("pickle.safetensors")
        try Data([0x80, 0x02, 0x7D, 0x71, 0x00] + [UInt8](repeating: 0x2E, count: 20)).write(to: URL(fileURLWithPath: pickle))
        assertRefused(pickle, ["pickle header", "PyTorch pickle"])
    }

    func testOtherLayoutsAreRefused() throws {
        let tensors = try floatTensors(checkpointPath("sd15-tiny"))
        var control = tensors
        control.append(("control_model.time_embed.0.weight", try Tensor(zeros: [4, 4])))
        assertRefused(try writeCheckpoint(control), ["ControlNet"])
        var unknownText = tensors.filter { !$0.name.hasPrefix("cond_stage_model.") }
        unknownText.append(("cond_stage_model.embedder.weight", try Tensor(zeros: [4, 4])))
        assertRefused(try writeCheckpoint(unknownText), ["neither SD 1.x's CLIP", "cond_stage_model.embedder.weight"])
        // One file of a diffusers folder given instead of the folder.
        assertRefused(tinyModelDirectory("sd2-tiny") + "/unet/diffusion_pytorch_model.safetensors",
                      ["one part of a diffusers folder", "model_index.json"])
        // SD 2.x heads are 64 channels wide: widths of 8 and 16 with attention leave them unknown unless the
        // metadata gives them (the tiny files' metadata does).
        assertRefused(try writeCheckpoint(try floatTensors(checkpointPath("sd2-tiny"))),
                      ["unet's attention heads cannot be told", "tokenflow.unet_config", "attention_head_dim"])
    }

    // MARK: - Errors name the checkpoint's key

    func testMissingAndUnexpectedTensorsNameTheirKeys() throws {
        let tensors = try floatTensors(checkpointPath("sd15-tiny"))
        let missingKey = "model.diffusion_model.input_blocks.1.0.in_layers.0.weight"
        let missing = try writeCheckpoint(tensors.filter { $0.name != missingKey }, metadata: metadata(of: "sd15-tiny"))
        XCTAssertThrowsError(try StableDiffusionModel(path: missing)) { error in
            guard case ModelError.missingTensor = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("\(missingKey) (down_blocks.0.resnets.0.norm1.weight)"), "\(error)")
        }
        var extra = tensors
        extra.append(("model.diffusion_model.input_blocks.1.0.extra.weight", try Tensor(zeros: [2])))
        XCTAssertThrowsError(try StableDiffusionModel(path: try writeCheckpoint(extra, metadata: metadata(of: "sd15-tiny")))) { error in
            guard case ModelError.unexpectedTensors = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("model.diffusion_model.input_blocks.1.0.extra.weight"), "\(error)")
        }
        var wrongShape = try floatTensors(checkpointPath("sd2-tiny"))
        let fused = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
        replaceTensor(&wrongShape, fused, with: try Tensor(zeros: [64, 32]))
        XCTAssertThrowsError(try StableDiffusionModel(path: try writeCheckpoint(wrongShape, metadata: metadata(of: "sd2-tiny")))) { error in
            guard case ModelError.wrongShape = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("\(fused) (text_model.encoder.layers.0.self_attn.q_proj.weight)"), "\(error)")
        }
    }

    /// Metadata may give only what the weights cannot show; anything else is refused by name.
    func testMetadataCannotOverrideShapes() throws {
        let tensors = try floatTensors(checkpointPath("sd2-tiny"))
        var changed = try metadata(of: "sd2-tiny")
        changed["tokenflow.unet_config"] = #"{"block_out_channels": [8, 16, 16, 32]}"#
        XCTAssertThrowsError(try SingleFileCheckpoint(path: try writeCheckpoint(tensors, metadata: changed))) { error in
            guard case ModelError.invalidConfig = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("tokenflow.unet_config") && "\(error)".contains("block_out_channels"), "\(error)")
        }
        changed["tokenflow.unet_config"] = "[1, 2"
        XCTAssertThrowsError(try SingleFileCheckpoint(path: try writeCheckpoint(tensors, metadata: changed))) { error in
            XCTAssertTrue("\(error)".contains("not a JSON object"), "\(error)")
        }
    }

    // MARK: - Helpers

    /// Every float tensor of a checkpoint, upcast to F32, in the file's order (integer buffers such as
    /// position_ids cannot be written by writeSafetensors and are left out; the loader ignores them anyway).
    func floatTensors(_ path: String) throws -> [(name: String, tensor: Tensor)] {
        let file = try SafetensorsFile(path: path)
        return try file.tensorNames.filter { file.info($0)?.dtype.isFloatConvertible ?? false }
            .map { (name: $0, tensor: try file.tensor($0)) }
    }

    func temporaryPath(_ name: String) -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("single-file-test-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        return directory.appendingPathComponent(name).path
    }

    /// The metadata of a tiny checkpoint (its hyperparameters: heads, group counts).
    func metadata(of model: String) throws -> [String: String] { try SafetensorsFile(path: checkpointPath(model)).metadata }

    /// `tensors` as a checkpoint file in a fresh temporary folder.
    func writeCheckpoint(_ tensors: [(name: String, tensor: Tensor)], dtype: SafetensorsDType = .f32,
                         metadata: [String: String] = [:]) throws -> String {
        let path = temporaryPath("checkpoint.safetensors")
        try writeSafetensors(tensors, to: path, dtype: dtype, metadata: metadata)
        return path
    }
}
