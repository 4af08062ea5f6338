import Diffusion
import Foundation
import Tensors
import VideoEditing
import XCTest

let tokenFlowFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// Loaded once: the tiny SD2-style random-weight model.
let tinyModel = try! StableDiffusionModel(directory: tokenFlowFixtures + "/models/sd2-tiny")

/// A moving-gradient test clip (deterministic integer pattern).
func patternClip(frames: Int, width: Int, height: Int) -> [Frame] {
    (0..<frames).map { f in
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = (y * width + x) * 3
                pixels[i] = UInt8((4 * x + 3 * f) % 256)
                pixels[i + 1] = UInt8((4 * y + 5 * f) % 256)
                pixels[i + 2] = UInt8((2 * (x + y) + 7 * f) % 256)
            }
        }
        return Frame(width: width, height: height, pixels: pixels)
    }
}

func quickSettings(_ method: String = TokenFlowPnP.name) -> EditSettings {
    var settings = EditSettings()
    settings.method = method
    settings.prompt = "a marble sculpture"
    settings.inversionPrompt = "a colorful video"
    settings.steps = 2
    settings.inversionSteps = 2
    settings.batchSize = 2
    settings.workingSize = .input
    return settings
}

final class EditPipelineTests: XCTestCase {
    override func setUp() { Threading.configure(threads: 2) }

    func testShortLastBatchOddSizeKeepsCountOrderAndSize() throws {
        let clip = patternClip(frames: 5, width: 37, height: 29) // 3 batches of 2, 2, 1; 37x29 -> 40x32 working
        let result = try EditPipeline(model: tinyModel, settings: quickSettings()).run(clip)
        XCTAssertEqual(result.frames.count, 5)
        for frame in result.frames {
            XCTAssertEqual(frame.width, 37)
            XCTAssertEqual(frame.height, 29)
            XCTAssertEqual(frame.pixels.count, 37 * 29 * 3)
        }
        XCTAssertEqual(result.finalLatents.shape, [5, 4, 4, 5])
        XCTAssertNotEqual(result.frames[0].pixels, clip[0].pixels)
    }

    func testSameSeedGivesSameBytesAndOtherSeedDiffers() throws {
        let clip = patternClip(frames: 4, width: 64, height: 48)
        var settings = quickSettings()
        let first = try EditPipeline(model: tinyModel, settings: settings).run(clip)
        let second = try EditPipeline(model: tinyModel, settings: settings).run(clip)
        XCTAssertEqual(first.frames, second.frames)
        XCTAssertEqual(first.finalLatents.scalars, second.finalLatents.scalars)
        settings.seed = 99
        XCTAssertNotEqual(try seededSchedule(settings, frameCount: 4), try seededSchedule(quickSettings(), frameCount: 4))
    }

    /// precision=bf16 reaches the model through the pipeline: with a bfloat16 unit the edit differs from fp32's (by how much
    /// is the UNet tests' and the benchmarks' matter: on the tiny random model an edit amplifies bf16's rounding
    /// well beyond a real model's), elsewhere it is fp32's, bit for bit.
    func testBfloat16PrecisionReachesTheModel() throws {
        let clip = patternClip(frames: 4, width: 64, height: 48)
        var settings = quickSettings()
        let fp32 = try EditPipeline(model: tinyModel, settings: settings).run(clip)
        settings.precision = ComputePrecision.bfloat16.rawValue
        let pipeline = try EditPipeline(model: tinyModel, settings: settings)
        XCTAssertEqual(pipeline.precision, .bfloat16)
        let bf16 = try pipeline.run(clip)
        XCTAssertEqual(bf16.frames.count, 4)
        XCTAssertFalse(bf16.finalLatents.scalars.contains { !$0.isFinite })
        if ComputePrecision.bfloat16.computed == .bfloat16 {
            XCTAssertNotEqual(bf16.finalLatents.scalars, fp32.finalLatents.scalars, "bf16 computed nothing in bf16")
        } else {
            XCTAssertEqual(bf16.frames, fp32.frames)
        }
    }

    func testExplicitKeyframeScheduleIsHonoured() throws {
        let clip = patternClip(frames: 4, width: 64, height: 48)
        let pipeline = try EditPipeline(model: tinyModel, settings: quickSettings())
        let drawn = try seededSchedule(quickSettings(), frameCount: 4)
        XCTAssertEqual(try pipeline.run(clip, keyframes: drawn).finalLatents.scalars, try pipeline.run(clip).finalLatents.scalars)
        // A different schedule changes the result.
        let other = drawn.map { keys in keys.map { $0 % 2 == 0 ? $0 + 1 : $0 - 1 } }
        XCTAssertNotEqual(try pipeline.run(clip, keyframes: other).finalLatents.scalars, try pipeline.run(clip).finalLatents.scalars)
    }

    func testOneFrameClipWorksForEveryMethod() throws {
        let clip = patternClip(frames: 1, width: 24, height: 16)
        for method in EditMethods.all.map({ $0.name }) {
            let result = try EditPipeline(model: tinyModel, settings: quickSettings(method)).run(clip)
            XCTAssertEqual(result.frames.count, 1, "\(method)")
            XCTAssertEqual(result.frames[0].width, 24)
        }
    }

    func testProgressIsReportedForEveryUNetCallAndCancellationStopsTheRun() throws {
        let clip = patternClip(frames: 3, width: 32, height: 32) // batches: 2 + 1
        var reports: [EditProgress] = []
        _ = try EditPipeline(model: tinyModel, settings: quickSettings()).run(clip) { reports.append($0); return true }
        let sampling = reports.filter { $0.stage == .sampling }
        XCTAssertEqual(sampling.count, 2 * (1 + 2), "one keyframe pass and two batch passes per step")
        XCTAssertEqual(reports.filter { $0.stage == .inversion }.count, 2 * 2)
        XCTAssertEqual(reports.filter { $0.stage == .encoding }.count, 3)
        XCTAssertEqual(reports.filter { $0.stage == .decoding }.count, 3)
        XCTAssertEqual(sampling.last, EditProgress(stage: .sampling, completed: 6, total: 6, step: 2, steps: 2))
        XCTAssertEqual(sampling.map(\.step), [0, 0, 1, 1, 1, 2], "a step counts as done after its last batch pass")
        XCTAssertEqual(reports.filter { $0.stage == .inversion }.map(\.step), [0, 1, 1, 2])
        XCTAssertEqual(reports.filter { $0.stage == .decoding }.map { [$0.step, $0.steps] }, [[1, 3], [2, 3], [3, 3]])

        var calls = 0
        XCTAssertThrowsError(try EditPipeline(model: tinyModel, settings: quickSettings()).run(clip) { _ in
            calls += 1
            return calls < 6
        }) { XCTAssertEqual($0 as? EditError, .cancelled) }
        XCTAssertEqual(calls, 6, "no work after the handler said stop")
    }

    func testInvalidSettingsAndClipsAreRejectedWithClearErrors() throws {
        func rejects(_ change: (inout EditSettings) -> Void, _ words: String, line: UInt = #line) {
            var settings = quickSettings()
            change(&settings)
            XCTAssertThrowsError(try EditPipeline(model: tinyModel, settings: settings), line: line) { error in
                XCTAssertTrue("\(error)".contains(words), "\(error)", line: line)
            }
        }
        // Settings set as fields are held to the table's ranges, with the table's messages.
        rejects({ $0.steps = 0 }, "steps: '0' is not allowed: expected an integer from 1 to 1000")
        rejects({ $0.inversionSteps = -1 }, "inversion_steps: '-1'")
        rejects({ $0.batchSize = 0 }, "batch_size: '0'")
        rejects({ $0.pnpAttentionThreshold = 1.5 }, "pnp_attn_t: '1.5' is not allowed: expected a number from 0 to 1")
        rejects({ $0.pnpFeatureThreshold = -0.1 }, "pnp_f_t")
        rejects({ $0.strength = 2 }, "strength")
        rejects({ $0.guidanceScale = .nan }, "guidance: 'nan' is not allowed (not a finite decimal number)")
        rejects({ $0.workingSize = .exact(width: 30, height: 32) }, "size: '30x32' is not allowed: expected WxH (multiples of 8")
        rejects({ $0.method = "bogus" }, "method: 'bogus' is not allowed: expected one of tokenflow, sdedit, reconstruct, cove")
        rejects({ $0.steps = 3; $0.inversionSteps = 2 }, "not among the inversion timesteps")
        rejects({ $0.method = SDEdit.name; $0.strength = 0.1 }, "leaves no sampling step")

        let session = try EditPipeline(model: tinyModel, settings: quickSettings())
        XCTAssertThrowsError(try session.run([])) { XCTAssertTrue("\($0)".contains("no frames")) }
        var mismatched = patternClip(frames: 2, width: 16, height: 16)
        mismatched[1] = patternClip(frames: 1, width: 24, height: 16)[0]
        XCTAssertThrowsError(try session.run(mismatched)) { XCTAssertTrue("\($0)".contains("frame 1 is 24x16")) }
        let broken = Frame(width: 16, height: 16, pixels: [1, 2, 3])
        XCTAssertThrowsError(try session.run([broken])) { XCTAssertTrue("\($0)".contains("packed RGB24")) }

        var reports = 0
        // Step 1: keyframe 0 is not in batch 1 (frames 2..<4); refused before any work is done.
        XCTAssertThrowsError(try session.run(patternClip(frames: 4, width: 16, height: 16), keyframes: [[0, 3], [1, 0]]) { _ in
            reports += 1
            return true
        }) {
            XCTAssertTrue("\($0)".contains("keyframe 0 at step 1 is outside batch 1"), "\($0)")
        }
        XCTAssertEqual(reports, 0)
        let reconstruct = try EditPipeline(model: tinyModel, settings: quickSettings(Reconstruction.name))
        XCTAssertThrowsError(try reconstruct.run(patternClip(frames: 2, width: 16, height: 16), keyframes: [[0], [1]])) {
            XCTAssertTrue("\($0)".contains("has no keyframes"), "\($0)")
        }
    }
}

/// The keyframe schedule a TokenFlow-PnP edit with `settings` draws for a clip of `frameCount` frames.
func seededSchedule(_ settings: EditSettings, frameCount: Int) throws -> [[Int]] {
    let pipeline = try EditPipeline(model: tinyModel, settings: settings)
    return try (pipeline.method as! TokenFlowPnP).propagation.keyframeSchedule(frameCount: frameCount, explicit: nil)
}

final class StepCountTests: XCTestCase {
    /// Injection step counts must equal Python's int(steps * fraction) for the decimals users type,
    /// although Float stores 0.7 as 0.69999999.
    func testStepCountsMatchPythonForTypedDecimals() {
        XCTAssertEqual(scheduleStepCount(10, fraction: 0.7), 7)   // Python: int(10 * 0.7) = 7
        XCTAssertEqual(scheduleStepCount(50, fraction: 0.8), 40)  // int(50 * 0.8) = 40
        XCTAssertEqual(scheduleStepCount(50, fraction: 0.5), 25)
        XCTAssertEqual(scheduleStepCount(10, fraction: 0.35), 3)  // int(3.5) = 3
        XCTAssertEqual(scheduleStepCount(3, fraction: 0.3), 0)    // int(0.9) = 0
        XCTAssertEqual(scheduleStepCount(7, fraction: 1), 7)
    }
}

/// Broken weights (NaN, as some real checkpoints have) end an edit with an error naming the stage, step
/// and frames, never with NaN frames or a conversion trap.
final class NonFiniteTests: XCTestCase {
    /// sd2-tiny with NaN in the first element of `tensor` of `component`'s weights (other parts linked).
    func poisonedModel(_ component: String, _ tensor: String) throws -> String {
        let manager = FileManager.default
        let source = tokenFlowFixtures + "/models/sd2-tiny"
        let directory = manager.temporaryDirectory.appendingPathComponent("tokenflow-nan-\(UUID().uuidString)").path
        try manager.createDirectory(atPath: "\(directory)/\(component)", withIntermediateDirectories: true)
        addTeardownBlock { try? manager.removeItem(atPath: directory) }
        for entry in try manager.contentsOfDirectory(atPath: source) where entry != component {
            try manager.createSymbolicLink(atPath: "\(directory)/\(entry)", withDestinationPath: "\(source)/\(entry)")
        }
        try manager.copyItem(atPath: "\(source)/\(component)/config.json", toPath: "\(directory)/\(component)/config.json")
        let weights = "\(source)/\(component)/diffusion_pytorch_model.safetensors"
        let file = try SafetensorsFile(path: weights)
        let tensors = try file.tensorNames.map { (name: $0, tensor: try file.tensor($0)) }
        tensors.first { $0.name == tensor }!.tensor[flat: 0] = .nan
        try writeSafetensors(tensors, to: "\(directory)/\(component)/diffusion_pytorch_model.safetensors")
        return directory
    }

    func testNaNWeightsAreAnErrorNamingTheStageAndStep() throws {
        let clip = patternClip(frames: 3, width: 16, height: 16)
        let unet = try StableDiffusionModel(directory: try poisonedModel("unet", "conv_in.weight"))
        XCTAssertThrowsError(try EditPipeline(model: unet, settings: quickSettings()).run(clip)) {
            XCTAssertTrue("\($0)".contains("NaN or infinite values in inversion step 1/2 (timestep 1), frames 0-1"), "\($0)")
        }
        let vae = try StableDiffusionModel(directory: try poisonedModel("vae", "decoder.conv_in.weight"))
        XCTAssertThrowsError(try EditPipeline(model: vae, settings: quickSettings()).run(clip)) {
            XCTAssertTrue("\($0)".contains("NaN or infinite values in VAE decoding, frame 0"), "\($0)")
        }
        let encoder = try StableDiffusionModel(directory: try poisonedModel("vae", "encoder.conv_in.weight"))
        XCTAssertThrowsError(try EditPipeline(model: encoder, settings: quickSettings()).run(clip)) {
            XCTAssertTrue("\($0)".contains("NaN or infinite values in VAE encoding, frame 0"), "\($0)")
        }
    }
}

/// An inversion from a file that does not fit the model is refused by name, never run.
final class InversionCheckTests: XCTestCase {
    func testMalformedInversionsAreRefused() throws {
        let pipeline = try EditPipeline(model: tinyModel, settings: quickSettings())
        let good = try pipeline.invert(patternClip(frames: 2, width: 16, height: 16))
        func variant(latents: Tensor? = nil, lastTimestep: Int? = nil, width: Int? = nil) -> Inversion {
            Inversion(latents: latents ?? good.latents, kept: latents == nil ? good.kept : [:], last: latents ?? good.last,
                             lastTimestep: lastTimestep ?? good.lastTimestep, inputWidth: width ?? good.inputWidth,
                             inputHeight: good.inputHeight, workingWidth: good.workingWidth, workingHeight: good.workingHeight,
                             inversionPrompt: good.inversionPrompt, inversionSteps: good.inversionSteps)
        }
        let cases: [(Inversion, String)] = [
            (variant(latents: try Tensor(zeros: [2, 8, 2, 2])), "latents of shape [2, 8, 2, 2], expected [frames >= 1, 4,"),
            (variant(latents: try Tensor(zeros: [2, 4, 0, 0])), "latents of shape [2, 4, 0, 0]"),
            (variant(latents: try Tensor(zeros: [0, 4, 2, 2])), "latents of shape [0, 4, 2, 2]"),
            (variant(latents: try Tensor(zeros: [2, 4, 3, 2])), "latents of 2x3 for a working size of 16x16 (expected 1/8 of it)"),
            (variant(lastTimestep: 5000), "last timestep 5000, but this model's 2-step inversion ends at 501"),
            (variant(lastTimestep: 5), "last timestep 5, but this model's 2-step inversion ends at 501"),
            (variant(lastTimestep: -1), "last timestep -1"),
            (variant(width: 0), "input size 0x16 is not a frame size"),
        ]
        for (inversion, message) in cases {
            XCTAssertThrowsError(try pipeline.edit(inversion)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        XCTAssertEqual(try pipeline.edit(good).frames.count, 2)
    }
}

