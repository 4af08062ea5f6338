import Diffusion
import Foundation
import Tensors
import XCTest

/// AutoencoderKL against diffusers on the tiny fixtures (non-square 64x48 image, 8x6 latent).
///
/// Tolerance 1e-4 relative to the output scale: the encoder and decoder are ~30 float32 conv/norm
/// layers deep and reordered float32 sums (im2col GEMM vs. PyTorch's conv) differ by ~1e-6 per layer;
/// a wrong layer (pad side, group count, eps, missing residual) gives errors of 1e-2 or more.
final class VAETests: XCTestCase {
    let tolerance: Float = 1e-4

    func vaeDirectory(_ model: String) -> String { tinyModelDirectory(model) + "/vae" }

    func checkAgainstDiffusers(_ model: String) throws {
        let vae = try AutoencoderKL(directory: vaeDirectory(model))
        let expected = try expectedOutputs(model)
        XCTAssertEqual(vae.scalingFactor, 0.18215)
        assertMatches(try vae.encodeMean(try expected.tensor("vae.encode.input")), try expected.tensor("vae.encode.mean"),
                      tolerance: tolerance, "\(model) encode mean")
        assertMatches(try vae.decode(try expected.tensor("vae.decode.input")), try expected.tensor("vae.decode.out"),
                      tolerance: tolerance, "\(model) decode")
    }

    func testSD2TinyVAEMatchesDiffusers() throws { try checkAgainstDiffusers("sd2-tiny") }
    func testSD15TinyFP16VAEMatchesDiffusers() throws { try checkAgainstDiffusers("sd15-tiny") }

    /// Each image of a batch is encoded on its own: the batch's first mean is the single image's, and
    /// mean/log-variance are split per image (a batch-wide split would mix images).
    func testBatchEncodesEachImage() throws {
        let vae = try AutoencoderKL(directory: vaeDirectory("sd2-tiny"))
        let expected = try expectedOutputs("sd2-tiny")
        let image = try expected.tensor("vae.encode.input")
        let other = try scaled(image, by: -0.5)
        let batch = try vae.encodeMean(concat([image, other], axis: 0))
        XCTAssertEqual(batch.shape, [2, 4, 8, 6])
        assertMatches(batch.slice(0..<1), try expected.tensor("vae.encode.mean"), tolerance: tolerance, "batch item 0")
        XCTAssertEqual(batch.slice(1..<2).scalars, try vae.encodeMean(other).scalars)
        let latents = try expected.tensor("vae.decode.input")
        let decoded = try vae.decode(concat([latents, latents], axis: 0))
        XCTAssertEqual(decoded.slice(1..<2).scalars, try vae.decode(latents).scalars)
    }

    /// Sizes that are not multiples of 8 behave as in diffusers: each downsampler pads right/bottom and
    /// halves with floor, so 61x45 gives a 7x5 latent. Too small or wrongly shaped inputs are refused.
    func testImageSizesAndInputValidation() throws {
        let vae = try AutoencoderKL(directory: vaeDirectory("sd2-tiny"))
        XCTAssertEqual(vae.downsamplingFactor, 8)
        let odd = try vae.encodeMean(Tensor(shape: [1, 3, 61, 45], repeating: 0.25))
        XCTAssertEqual(odd.shape, [1, 4, 7, 5])
        XCTAssertEqual(try vae.decode(odd).shape, [1, 3, 56, 40])
        XCTAssertEqual(try vae.encodeMean(Tensor(zeros: [1, 3, 8, 8])).shape, [1, 4, 1, 1])

        for bad in [[1, 3, 7, 64], [1, 4, 64, 64], [3, 64, 64], [0, 3, 64, 64]] {
            XCTAssertThrowsError(try vae.encodeMean(Tensor(zeros: bad)), "\(bad)") { error in
                guard case ModelError.invalidInput = error else { return XCTFail("\(bad): \(error)") }
            }
        }
        for bad in [[1, 3, 8, 8], [0, 4, 8, 8], [4, 8, 8]] {
            XCTAssertThrowsError(try vae.decode(Tensor(zeros: bad)), "\(bad)") { error in
                guard case ModelError.invalidInput = error else { return XCTFail("\(bad): \(error)") }
            }
        }
    }

    /// encodeSample = mean + exp(logvar / 2) * noise with logvar clamped to [-30, 20]. A copy whose
    /// quant_conv outputs mean 0 and a constant logvar c makes the sample exactly exp(clamp(c) / 2) * noise.
    func testEncodeSampleUsesSeededNoiseAndClampedLogVariance() throws {
        let source = vaeDirectory("sd2-tiny")
        func vae(logvar: Float) throws -> AutoencoderKL {
            var tensors = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors")
            replaceTensor(&tensors, "quant_conv.weight", with: try Tensor(zeros: [8, 8, 1, 1]))
            replaceTensor(&tensors, "quant_conv.bias", with: try Tensor(shape: [8], values: [0, 0, 0, 0] + Array(repeating: logvar, count: 4)))
            return try AutoencoderKL(directory: writeComponentCopy(self, config: readComponentConfig(source),
                                                                   weights: tensors, weightsFile: "diffusion_pytorch_model.safetensors"))
        }
        let image = try Tensor(shape: [1, 3, 128, 128], repeating: 0.1)
        let half = try vae(logvar: 2 * log(0.5))
        let noise = try scaled(try half.encodeSample(image, seed: 7), by: 2)
        XCTAssertEqual(try half.encodeMean(image).scalars, Array(repeating: 0, count: noise.count))

        // Seeded: the same seed repeats, another seed differs.
        XCTAssertEqual(try scaled(try half.encodeSample(image, seed: 7), by: 2).scalars, noise.scalars)
        XCTAssertNotEqual(try half.encodeSample(image, seed: 8).scalars, noise.scalars)
        // Standard normal: 1024 samples, mean within 5 sigma (0.16), standard deviation within 0.1.
        let values = noise.scalars.map(Double.init)
        let mean = values.reduce(0, +) / Double(values.count)
        let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
        XCTAssertLessThan(abs(mean), 0.16)
        XCTAssertEqual(std, 1, accuracy: 0.1)

        // logvar 60 is clamped to 20 (std e^10), -100 to -30 (std e^-15): same noise, rescaled.
        assertMatches(try scaled(try vae(logvar: 60).encodeSample(image, seed: 7), by: exp(-10)), noise, tolerance: 1e-6, "logvar clamped at 20")
        assertMatches(try scaled(try vae(logvar: -100).encodeSample(image, seed: 7), by: exp(15)), noise, tolerance: 1e-6, "logvar clamped at -30")
    }

    /// Checkpoints converted before diffusers 0.14 name the mid-block attention projections
    /// query/key/value/proj_attn; diffusers renames them on load and so must this loader.
    func testLegacyAttentionNamesLoad() throws {
        let source = vaeDirectory("sd2-tiny")
        let renames = ["to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"]
        var renamed = 0
        let tensors = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors").map { entry in
            for (new, old) in renames where entry.name.contains(".attentions.0.\(new).") {
                renamed += 1
                return (name: entry.name.replacingOccurrences(of: ".\(new).", with: ".\(old)."), tensor: entry.tensor)
            }
            return entry
        }
        XCTAssertEqual(renamed, 16) // encoder and decoder: 4 projections x (weight, bias)
        let legacy = try AutoencoderKL(directory: writeComponentCopy(self, config: readComponentConfig(source), weights: tensors,
                                                                     weightsFile: "diffusion_pytorch_model.safetensors"))
        let current = try AutoencoderKL(directory: source)
        let expected = try expectedOutputs("sd2-tiny")
        let image = try expected.tensor("vae.encode.input"), latents = try expected.tensor("vae.decode.input")
        XCTAssertEqual(try legacy.encodeMean(image).scalars, try current.encodeMean(image).scalars)
        XCTAssertEqual(try legacy.decode(latents).scalars, try current.decode(latents).scalars)
    }

    /// The same weights stored as F16 and BF16 load and give the F32 model's outputs up to the rounding.
    ///
    /// Rounding a weight to F16 changes it by at most u = 2^-11 relative, to BF16 by u = 2^-8 (unit
    /// roundoff of 11 and 8 significant bits). The roundings are independent, so each of the ~35 conv
    /// and linear layers perturbs the signal by ~u/sqrt(3) (rms of a uniform error) in a random
    /// direction: about u * sqrt(35 / 3) ~ 3.4u rms at the output, a few times that at the worst of
    /// thousands of outputs. Tolerance 16u relative to the output scale (F16 7.8e-3, BF16 6.3e-2; the
    /// measured worst is ~3u), while a wrongly decoded format (byte order, exponent bias) errs by O(1).
    func testF16AndBF16WeightsMatchF32Model() throws {
        let source = vaeDirectory("sd2-tiny")
        let reference = try AutoencoderKL(directory: source)
        let expected = try expectedOutputs("sd2-tiny")
        let image = try expected.tensor("vae.encode.input"), latents = try expected.tensor("vae.decode.input")
        let tensors = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors")
        for (dtype, unitRoundoff) in [(SafetensorsDType.f16, Float(0x1p-11)), (.bf16, Float(0x1p-8))] {
            let directory = try writeComponentCopy(self, config: readComponentConfig(source), weights: tensors,
                                                   weightsFile: "diffusion_pytorch_model.safetensors", dtype: dtype)
            let converted = try AutoencoderKL(directory: directory)
            assertMatches(try converted.encodeMean(image), try reference.encodeMean(image), tolerance: 16 * unitRoundoff, "\(dtype) encode")
            assertMatches(try converted.decode(latents), try reference.decode(latents), tolerance: 16 * unitRoundoff, "\(dtype) decode")
        }
    }

    // MARK: - Loader errors

    func testMissingConfigIsReported() throws {
        let source = vaeDirectory("sd2-tiny")
        let directory = try writeComponentCopy(self, config: nil, weights: readComponentTensors("\(source)/diffusion_pytorch_model.safetensors"),
                                               weightsFile: "diffusion_pytorch_model.safetensors")
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .missingFile("\(directory)/config.json"))
        }
    }

    func testMissingWeightsAreReported() throws {
        let directory = try writeComponentCopy(self, config: readComponentConfig(vaeDirectory("sd2-tiny")), weights: nil, weightsFile: "")
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            guard case ModelError.missingFile(let path) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasPrefix("\(directory)/diffusion_pytorch_model.safetensors"), path)
        }
        // Only a PyTorch pickle: the message says safetensors are needed and how to get them.
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(directory)/diffusion_pytorch_model.bin", contents: Data([0x80])))
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            XCTAssertTrue("\(error)".contains("PyTorch pickle") && "\(error)".contains("safe_serialization=True"), "\(error)")
        }
    }

    func testWrongShapeNamesTheTensor() throws {
        let source = vaeDirectory("sd15-tiny")
        var tensors = try readComponentTensors("\(source)/diffusion_pytorch_model.fp16.safetensors")
        replaceTensor(&tensors, "decoder.up_blocks.1.resnets.2.conv1.weight", with: try Tensor(zeros: [16, 16, 1, 1]))
        let directory = try writeComponentCopy(self, config: readComponentConfig(source), weights: tensors,
                                               weightsFile: "diffusion_pytorch_model.fp16.safetensors", dtype: .f16)
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .wrongShape(file: "\(directory)/diffusion_pytorch_model.fp16.safetensors",
                                                             tensor: "decoder.up_blocks.1.resnets.2.conv1.weight",
                                                             expected: [16, 16, 3, 3], found: [16, 16, 1, 1]))
        }
    }

    /// A tensor the config does not account for means the config does not describe the checkpoint.
    func testUnexpectedTensorIsReported() throws {
        let source = vaeDirectory("sd2-tiny")
        var tensors = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors")
        tensors.append((name: "encoder.down_blocks.3.resnets.2.norm1.weight", tensor: try Tensor(zeros: [16])))
        let directory = try writeComponentCopy(self, config: readComponentConfig(source), weights: tensors,
                                               weightsFile: "diffusion_pytorch_model.safetensors")
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .unexpectedTensors(file: "\(directory)/diffusion_pytorch_model.safetensors",
                                                                    names: ["encoder.down_blocks.3.resnets.2.norm1.weight"]))
        }
    }

    /// An old-style 4-D [C, C, 1, 1] attention projection (LDM conv layout) is refused by name, as
    /// diffusers' from_pretrained refuses it; only its single-file converter squeezes those.
    func testFourDimensionalLegacyProjectionIsRefused() throws {
        let source = vaeDirectory("sd2-tiny")
        let tensors = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors").map { entry in
            guard entry.name.hasPrefix("encoder.mid_block.attentions.0.to_q.") else { return entry }
            let name = entry.name.replacingOccurrences(of: ".to_q.", with: ".query.")
            return (name: name, tensor: entry.tensor.rank == 2 ? entry.tensor.reshaped([16, 16, 1, 1]) : entry.tensor)
        }
        let directory = try writeComponentCopy(self, config: readComponentConfig(source), weights: tensors,
                                               weightsFile: "diffusion_pytorch_model.safetensors")
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .wrongShape(file: "\(directory)/diffusion_pytorch_model.safetensors",
                                                             tensor: "encoder.mid_block.attentions.0.query.weight",
                                                             expected: [16, 16], found: [16, 16, 1, 1]))
        }
    }

    func testUnsupportedConfigValuesAreRefused() throws {
        let source = vaeDirectory("sd2-tiny")
        let weights = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors")
        let cases: [(key: String, value: Any, shown: String, supported: String)] = [
            ("act_fn", "relu", "relu", "silu"),
            ("down_block_types", Array(repeating: "AttnDownEncoderBlock2D", count: 4), "AttnDownEncoderBlock2D", "DownEncoderBlock2D"),
            // An SD3/Flux VAE's latent shift: Stable Diffusion 1.x/2.x pipelines never apply one.
            ("shift_factor", 0.0609, "0.0609", "null (a Stable Diffusion 1.x/2.x VAE)"),
        ]
        for entry in cases {
            var config = try readComponentConfig(source)
            config[entry.key] = entry.value
            let directory = try writeComponentCopy(self, config: config, weights: weights, weightsFile: "diffusion_pytorch_model.safetensors")
            XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
                XCTAssertEqual(error as? ModelError, .unsupportedConfig(file: "\(directory)/config.json", key: entry.key,
                                                                        value: entry.shown, supported: entry.supported))
            }
        }
        var config = try readComponentConfig(source)
        config["norm_num_groups"] = 3
        let directory = try writeComponentCopy(self, config: config, weights: weights, weightsFile: "diffusion_pytorch_model.safetensors")
        XCTAssertThrowsError(try AutoencoderKL(directory: directory)) { error in
            guard case ModelError.invalidConfig = error else { return XCTFail("\(error)") }
        }
    }
}

// MARK: - Modified model-component copies (also used by TextEncoderTests)

/// A component's config.json as a JSON object.
func readComponentConfig(_ directory: String, file: String = "config.json") throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(file)"))
    return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// Every tensor of a safetensors file, upcast to F32, in the file's order.
func readComponentTensors(_ path: String) throws -> [(name: String, tensor: Tensor)] {
    let file = try SafetensorsFile(path: path)
    return try file.tensorNames.map { (name: $0, tensor: try file.tensor($0)) }
}

func replaceTensor(_ tensors: inout [(name: String, tensor: Tensor)], _ name: String, with tensor: Tensor) {
    guard let index = tensors.firstIndex(where: { $0.name == name }) else { return XCTFail("no tensor \(name)") }
    tensors[index].tensor = tensor
}

/// Writes a component folder into a fresh temporary directory (removed after the test): config.json
/// unless `config` is nil, `weightsFile` in `dtype` unless `weights` is nil. Returns the directory.
func writeComponentCopy(_ test: XCTestCase, config: [String: Any]?, weights: [(name: String, tensor: Tensor)]?,
                        weightsFile: String, dtype: SafetensorsDType = .f32, configFile: String = "config.json") throws -> String {
    let manager = FileManager.default
    let directory = manager.temporaryDirectory.appendingPathComponent("diffusion-test-\(UUID().uuidString)")
    try manager.createDirectory(at: directory, withIntermediateDirectories: true)
    test.addTeardownBlock { try? manager.removeItem(at: directory) }
    if let config {
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            .write(to: directory.appendingPathComponent(configFile))
    }
    if let weights {
        try writeSafetensors(weights, to: directory.appendingPathComponent(weightsFile).path, dtype: dtype)
    }
    return directory.path
}
