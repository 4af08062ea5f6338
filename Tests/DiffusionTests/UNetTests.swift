import Diffusion
import Tensors
import XCTest

/// UNet noise predictions against diffusers' UNet2DConditionModel on the tiny fixtures (batch 2,
/// non-square 16x8 latent, three timesteps and per-sample timesteps). Tolerance 1e-4 relative to the
/// output scale: the network is ~40 float32 layers deep, and reordered float32 sums differ by ~1e-6
/// per layer; a wrong layer (head split, eps, projection, skip order) gives errors of 1e-2 or more.
final class UNetTests: XCTestCase {
    let tolerance: Float = 1e-4

    func check(_ model: String) throws {
        let unet = try UNet(directory: tinyModelDirectory(model) + "/unet")
        let expected = try expectedOutputs(model)
        let sample = try expected.tensor("unet.sample"), context = try expected.tensor("unet.encoder_hidden_states")
        for t in [1, 500, 981] {
            let out = try unet(sample, timesteps: [Float(t)], context: context)
            assertMatches(out, try expected.tensor("unet.t\(t).out"), tolerance: tolerance, "\(model) t=\(t)")
        }
        let perSample = try expected.tensor("unet.per_sample.timesteps").scalars
        assertMatches(try unet(sample, timesteps: perSample, context: context), try expected.tensor("unet.per_sample.out"),
                      tolerance: tolerance, "\(model) per-sample timesteps")
    }

    func testSD2StyleUNetMatchesDiffusers() throws { try check("sd2-tiny") }
    func testSD15StyleUNetMatchesDiffusers() throws { try check("sd15-tiny") }

    /// precision=bf16 against diffusers' UNet with every linear, convolution and attention operand rounded to
    /// bfloat16 (Tests/Fixtures/generate_bf16_fixtures.py). Rounding moves these tiny random networks' output by 1-1.6%
    /// rms from fp32's, and one float32 ulp of difference in the activations before rounding (what any other
    /// summation order gives) already moves the reference by 0.8-1.1% rms (the fixture's rounding noise): so
    /// this bounds the engine's bf16 output to that noise (gross errors, e.g. a wrong layout or scale, are far
    /// outside it), and the exact numerics are the kernel tests' (Tensors' PrecisionTests, against float64).
    /// On each bfloat16 unit the CPU has (AMX, AVX512-BF16). Without one, bf16 is computed as fp32 and must equal
    /// fp32's output exactly.
    func checkBfloat16(_ model: String) throws {
        let unet = try UNet(directory: tinyModelDirectory(model) + "/unet")
        let inputs = try expectedOutputs(model), expected = try expectedOutputs("bf16-\(model)")
        let sample = try inputs.tensor("unet.sample"), context = try inputs.tensor("unet.encoder_hidden_states")
        defer { if let best = Bfloat16Unit.best { Bfloat16Unit.force(best) } }
        for unit in Bfloat16Unit.available.isEmpty ? [nil] : Bfloat16Unit.available.map(Optional.some) {
          if let unit { XCTAssertTrue(Bfloat16Unit.force(unit)) }
          for t in [1, 500, 981] {
            let bf16 = try ComputePrecision.$current.withValue(.bfloat16) { try unet(sample, timesteps: [Float(t)], context: context) }
            let fp32 = try unet(sample, timesteps: [Float(t)], context: context)
            guard ComputePrecision.bfloat16.computed == .bfloat16 else {
                XCTAssertEqual(bf16.scalars, fp32.scalars, "\(model) t=\(t) without a bfloat16 unit")
                continue
            }
            let reference = try expected.tensor("unet.t\(t).out"), noise = try expected.tensor("unet.t\(t).rounding_noise_rms")[flat: 0]
            let error = relativeRMS(bf16, reference), on = unit.map(\.description) ?? "-"
            print("\(model) t=\(t) on \(on): bf16 \(error) rms from the reference (rounding noise \(noise)), fp32 \(relativeRMS(fp32, reference))")
            XCTAssertLessThanOrEqual(error, 1.5 * noise, "\(model) t=\(t) on \(on): bf16 against diffusers with rounded operands")
            XCTAssertGreaterThan(relativeRMS(bf16, fp32), 1e-3, "\(model) t=\(t) on \(on): bf16 should differ from fp32")
          }
        }
    }

    /// sqrt(sum (a - b)^2 / sum b^2).
    private func relativeRMS(_ a: Tensor, _ b: Tensor) -> Float {
        var difference = 0.0, magnitude = 0.0
        for i in 0..<b.count {
            difference += Double(a[flat: i] - b[flat: i]) * Double(a[flat: i] - b[flat: i])
            magnitude += Double(b[flat: i]) * Double(b[flat: i])
        }
        return Float((difference / magnitude).squareRoot())
    }

    func testSD2StyleUNetInBfloat16MatchesDiffusersWithRoundedOperands() throws { try checkBfloat16("sd2-tiny") }
    func testSD15StyleUNetInBfloat16MatchesDiffusersWithRoundedOperands() throws { try checkBfloat16("sd15-tiny") }

    /// Hooks that change nothing must give exactly the plain forward; a hook must see every block.
    func testNeutralHooksSeeEveryBlockAndChangeNothing() throws {
        final class Recorder: UNetHooks {
            var attentionBlocks: [String] = [], resnets: [String] = []
            func selfAttention(block: String, normed: Tensor, attention: AttentionLayer) throws -> Tensor? {
                attentionBlocks.append(block)
                return try attention(normed)
            }
            func resnetResidualDonors(resnet: String) -> [Int]? { resnets.append(resnet); return nil }
        }
        let unet = try UNet(directory: tinyModelDirectory("sd2-tiny") + "/unet")
        let expected = try expectedOutputs("sd2-tiny")
        let sample = try expected.tensor("unet.sample"), context = try expected.tensor("unet.encoder_hidden_states")
        let recorder = Recorder()
        let hooked = try unet(sample, timesteps: [500], context: context, hooks: recorder)
        XCTAssertEqual(hooked.scalars, try unet(sample, timesteps: [500], context: context).scalars)
        // 3 attention levels x 2 down + 1 mid + 3 levels x 3 up = 16 transformer blocks; 8 + 2 + 12 resnets.
        XCTAssertEqual(recorder.attentionBlocks.count, 16)
        XCTAssertEqual(recorder.resnets.count, 22)
        XCTAssertTrue(recorder.attentionBlocks.contains("up_blocks.1.attentions.1.transformer_blocks.0"))
        XCTAssertTrue(recorder.resnets.contains("up_blocks.1.resnets.1"))
    }

    /// Samples that share a prompt share its cross-attention keys and values (projected once): each sample of
    /// such a batch still gets what it gets alone, up to the GEMMs' float32 rounding of a different row
    /// count (1e-5 of the output scale; a wrong key/value row gives errors of 1e-2 or more).
    func testSamplesSharingAPromptGetWhatEachGetsAlone() throws {
        let unet = try UNet(directory: tinyModelDirectory("sd2-tiny") + "/unet")
        let expected = try expectedOutputs("sd2-tiny")
        let samples = try expected.tensor("unet.sample"), contexts = try expected.tensor("unet.encoder_hidden_states")
        let rows = [0, 1, 1, 0], prompts = [1, 1, 0, 1]
        let batch = try gatherRows(samples, rows), context = try gatherRows(contexts, prompts)
        XCTAssertEqual(try DistinctRows(context).distinct.shape[0], 2)
        let out = try unet(batch, timesteps: [500], context: context)
        for (index, (row, prompt)) in zip(rows, prompts).enumerated() {
            let alone = try unet(samples.slice(row..<(row + 1)), timesteps: [500], context: contexts.slice(prompt..<(prompt + 1)))
            assertMatches(out.slice(index..<(index + 1)), alone, tolerance: 1e-5, "sample \(index) (image \(row), prompt \(prompt))")
        }
    }

    /// The feed-forward runs in bands of rows (`TransformerBlock.feedForwardBandRows`): a batch whose first level
    /// spans several bands gives each sample what it gets alone, in one band. Tolerance as above (other row
    /// counts per product may sum in another order).
    func testFeedForwardInBandsGivesEachSampleWhatItGetsAlone() throws {
        let unet = try UNet(directory: tinyModelDirectory("sd2-tiny") + "/unet")
        let contexts = try expectedOutputs("sd2-tiny").tensor("unet.encoder_hidden_states")
        let size = 64, tokens = size * size, width = unet.config.blockOutChannels[0]
        let bandRows = TransformerBlock.feedForwardBandRows(width: width)
        let batch = bandRows / tokens + 2
        XCTAssertLessThan(tokens, bandRows, "one sample alone is one band")
        XCTAssertGreaterThan(batch * tokens, bandRows, "the batch spans two bands or more")
        let count = batch * unet.config.inChannels * tokens
        let samples = try Tensor(shape: [batch, unet.config.inChannels, size, size],
                                 values: (0..<count).map { Float(sin(Double($0) * 0.37)) })
        let prompts = (0..<batch).map { $0 % contexts.shape[0] }
        let out = try unet(samples, timesteps: [500], context: try gatherRows(contexts, prompts))
        for (index, prompt) in prompts.enumerated() {
            let alone = try unet(samples.slice(index..<(index + 1)), timesteps: [500], context: contexts.slice(prompt..<(prompt + 1)))
            assertMatches(out.slice(index..<(index + 1)), alone, tolerance: 1e-5, "sample \(index)")
        }
    }

    /// upcast_attention (true in SD 2.x 768 checkpoints) asks for fp32 attention scores; attention always
    /// runs in fp32 here, so such a model loads and gives exactly the same output. A value of the wrong
    /// type is refused.
    func testUpcastAttentionIsHonouredByFP32Attention() throws {
        let source = tinyModelDirectory("sd2-tiny") + "/unet"
        let weights = try readComponentTensors("\(source)/diffusion_pytorch_model.safetensors")
        var config = try readComponentConfig(source)
        config["upcast_attention"] = true
        let upcast = try UNet(directory: try writeComponentCopy(self, config: config, weights: weights,
                                                                weightsFile: "diffusion_pytorch_model.safetensors"))
        let expected = try expectedOutputs("sd2-tiny")
        let sample = try expected.tensor("unet.sample"), context = try expected.tensor("unet.encoder_hidden_states")
        XCTAssertEqual(try upcast(sample, timesteps: [500], context: context).scalars,
                       try UNet(directory: source)(sample, timesteps: [500], context: context).scalars)
        config["upcast_attention"] = "yes"
        let wrongType = try writeComponentCopy(self, config: config, weights: weights, weightsFile: "diffusion_pytorch_model.safetensors")
        XCTAssertThrowsError(try UNet(directory: wrongType)) { XCTAssertTrue("\($0)".contains("upcast_attention"), "\($0)") }
    }
}
