import Diffusion
import Foundation
import Tensors
import XCTest

/// DDIMScheduler against diffusers' DDIMScheduler (SD 2.1-base's scheduler_config.json in both tiny
/// folders: scaled_linear, set_alpha_to_one false, steps_offset 1, leading spacing).
///
/// Timesteps are integers and must be exact; alphas_cumprod is computed as torch does it (float32
/// linspace with one rounding per element, cumprod accumulated in double) and must agree to 1e-6.
/// Step outputs are a few float32 operations per element whose order differs from PyTorch's
/// (x * (1/sqrt(a)) instead of x / sqrt(a)), so they agree to a few ulps: tolerance 1e-6 relative to the
/// output scale, 1e-5 for the 10-step loop, whose steps divide by sqrt(a_t) ~ 0.2 and so amplify earlier
/// rounding.
final class SchedulerTests: XCTestCase {
    func scheduler(_ model: String = "sd2-tiny", _ edit: (inout [String: Any]) -> Void = { _ in }) throws -> DDIMScheduler {
        var json = try readComponentConfig(tinyModelDirectory(model) + "/scheduler", file: "scheduler_config.json")
        edit(&json)
        let config = try JSONDecoder().decode(SchedulerConfig.self, from: JSONSerialization.data(withJSONObject: json))
        return try DDIMScheduler(config: config)
    }

    func testScheduleMatchesDiffusers() throws {
        for model in ["sd2-tiny", "sd15-tiny"] {
            var scheduler = try DDIMScheduler(directory: tinyModelDirectory(model) + "/scheduler")
            let expected = try expectedOutputs(model)
            let alphas = try expected.tensor("ddim.alphas_cumprod").scalars
            XCTAssertEqual(scheduler.alphasCumprod.count, 1000)
            let worst = zip(scheduler.alphasCumprod, alphas).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(worst, 1e-6, "\(model) alphas_cumprod")
            XCTAssertEqual(scheduler.finalAlphaCumprod, try expected.tensor("ddim.final_alpha_cumprod")[flat: 0], accuracy: 1e-7)
            for steps in [10, 50] {
                try scheduler.setTimesteps(steps)
                XCTAssertEqual(scheduler.timesteps, try expected.tensor("ddim.timesteps\(steps)").scalars.map { Int($0) }, "\(model) \(steps)")
                XCTAssertEqual(scheduler.inferenceSteps, steps)
            }
        }
    }

    /// Single eta-0 steps for epsilon and v_prediction at the first, a middle and the last timestep of
    /// the 10-step schedule (the last steps onto final_alpha_cumprod).
    func testStepsMatchDiffusers() throws {
        let expected = try expectedOutputs("sd2-tiny")
        for (key, prediction) in [("eps", "epsilon"), ("vpred", "v_prediction")] {
            var scheduler = try scheduler { $0["prediction_type"] = prediction }
            try scheduler.setTimesteps(10)
            for t in [901, 401, 1] {
                let name = "ddim.\(key).t\(t)"
                let (previous, original) = try scheduler.step(modelOutput: try expected.tensor("\(name).model_output"), timestep: t,
                                                          sample: try expected.tensor("\(name).sample"))
                assertMatches(previous, try expected.tensor("\(name).prev_sample"), tolerance: 1e-6, "\(name) prev_sample")
                assertMatches(original, try expected.tensor("\(name).pred_original_sample"), tolerance: 1e-6, "\(name) pred_original")
            }
        }
    }

    /// prediction_type "sample": the model predicts x0; fed diffusers' x0 of an epsilon step, it must
    /// land on that step's result.
    func testSamplePredictionIsConsistentWithEpsilon() throws {
        let expected = try expectedOutputs("sd2-tiny")
        var scheduler = try scheduler { $0["prediction_type"] = "sample" }
        try scheduler.setTimesteps(10)
        for t in [901, 401, 1] {
            let name = "ddim.eps.t\(t)"
            let x0 = try expected.tensor("\(name).pred_original_sample")
            let (previous, original) = try scheduler.step(modelOutput: x0, timestep: t, sample: try expected.tensor("\(name).sample"))
            XCTAssertEqual(original.scalars, x0.scalars)
            assertMatches(previous, try expected.tensor("\(name).prev_sample"), tolerance: 1e-5, "\(name) via x0")
        }
    }

    /// clip_sample clamps x0 to clip_sample_range before the update (the noise estimate is kept).
    func testClipSample() throws {
        let expected = try expectedOutputs("sd2-tiny")
        var scheduler = try scheduler {
            $0["clip_sample"] = true
            $0["clip_sample_range"] = 0.5
        }
        try scheduler.setTimesteps(10)
        let t = 401, name = "ddim.eps.t401"
        let eps = try expected.tensor("\(name).model_output")
        let (previous, original) = try scheduler.step(modelOutput: eps, timestep: t, sample: try expected.tensor("\(name).sample"))
        let clipped = try clamped(try expected.tensor("\(name).pred_original_sample"), -0.5, 0.5)
        assertMatches(original, clipped, tolerance: 1e-6, "clipped x0")
        let alphaPrevious = scheduler.alphaCumprod(at: scheduler.previousTimestep(t))
        assertMatches(previous, try linearCombination(clipped, alphaPrevious.squareRoot(), eps, (1 - alphaPrevious).squareRoot()),
                      tolerance: 1e-6, "prev from clipped x0")
    }

    func testAddNoiseMatchesDiffusers() throws {
        let expected = try expectedOutputs("sd2-tiny")
        let scheduler = try scheduler()
        let original = try expected.tensor("ddim.add_noise.original"), noise = try expected.tensor("ddim.add_noise.noise")
        let out = try expected.tensor("ddim.add_noise.out")
        for (b, t) in try expected.tensor("ddim.add_noise.timesteps").scalars.enumerated() {
            let rows = b..<(b + 1)
            assertMatches(try scheduler.addNoise(original: original.slice(rows), noise: noise.slice(rows), timestep: Int(t)),
                          out.slice(rows), tolerance: 1e-6, "add_noise t=\(t)")
        }
    }

    /// The pipeline's 10-step guided loop, driven by diffusers' own guided noise predictions.
    func testSamplingLoopMatchesDiffusers() throws {
        for model in ["sd2-tiny", "sd15-tiny"] {
            let expected = try expectedOutputs(model)
            var scheduler = try DDIMScheduler(directory: tinyModelDirectory(model) + "/scheduler")
            try scheduler.setTimesteps(10)
            var x = try expected.tensor("ddim.loop.init")
            for (i, t) in scheduler.timesteps.enumerated() {
                x = try scheduler.step(modelOutput: try expected.tensor("ddim.loop.noise_pred\(i)"), timestep: t, sample: x).prevSample
                assertMatches(x, try expected.tensor("ddim.loop.step\(i)"), tolerance: 1e-5, "\(model) step \(i)")
            }
            assertMatches(x, try expected.tensor("ddim.loop.final"), tolerance: 1e-5, "\(model) final")
        }
    }

    /// DDIM inversion uses the same alphas: previousTimestep walks the schedule and reaches
    /// final_alpha_cumprod after the last step.
    func testPreviousTimestepAndAlphaLookup() throws {
        var scheduler = try scheduler()
        try scheduler.setTimesteps(10)
        XCTAssertEqual(scheduler.timesteps.dropFirst().map { $0 }, scheduler.timesteps.dropLast().map(scheduler.previousTimestep))
        XCTAssertEqual(scheduler.previousTimestep(1), -99)
        XCTAssertEqual(scheduler.alphaCumprod(at: -99), scheduler.finalAlphaCumprod)
        XCTAssertEqual(scheduler.finalAlphaCumprod, scheduler.alphasCumprod[0]) // set_alpha_to_one false
        XCTAssertEqual(scheduler.alphaCumprod(at: 500), scheduler.alphasCumprod[500])
        XCTAssertEqual(try self.scheduler { $0["set_alpha_to_one"] = true }.finalAlphaCumprod, 1)
    }

    /// Spacings and beta schedules the tiny models do not use, against diffusers
    /// (Tests/Fixtures/expected/schedulers.safetensors, from generate_scheduler_fixtures.py).
    func testOtherSpacingsMatchDiffusers() throws {
        let expected = try SafetensorsFile(path: "\(diffusionFixturesDirectory)/expected/schedulers.safetensors")
        for name in expected.tensorNames where name.hasPrefix("timesteps.") {
            let parts = name.split(separator: ".") // timesteps.<spacing>.o<offset>.n<steps>
            let spacing = String(parts[1]), offset = Int(parts[2].dropFirst())!, steps = Int(parts[3].dropFirst())!
            var scheduler = try scheduler {
                $0["timestep_spacing"] = spacing
                $0["steps_offset"] = offset
            }
            try scheduler.setTimesteps(steps)
            let reference = try expected.tensor(name).scalars.map { Int($0) }
            // diffusers returns one extra, negative, timestep for trailing spacing at some step counts
            // (62 for 61 steps); the engine returns exactly `steps`, equal to diffusers' first `steps`.
            XCTAssertEqual(scheduler.timesteps, Array(reference.prefix(steps)), name)
            XCTAssertTrue(reference.dropFirst(steps).allSatisfy { $0 < 0 }, name)
        }
    }

    func testOtherBetaSchedulesMatchDiffusers() throws {
        let expected = try SafetensorsFile(path: "\(diffusionFixturesDirectory)/expected/schedulers.safetensors")
        for schedule in ["linear", "squaredcos_cap_v2"] {
            let scheduler = try scheduler {
                $0["beta_schedule"] = schedule
                $0["beta_start"] = 0.0001
                $0["beta_end"] = 0.02
            }
            let reference = try expected.tensor("alphas_cumprod.\(schedule)").scalars
            for (t, value) in reference.enumerated() {
                XCTAssertEqual(scheduler.alphasCumprod[t], value, accuracy: 1e-6 * value, "\(schedule) t=\(t)")
            }
        }
    }

    // MARK: - Errors

    func testUnsupportedConfigValuesAreRefused() throws {
        let cases: [(key: String, value: Any, shown: String)] = [
            ("thresholding", true, "true"), ("rescale_betas_zero_snr", true, "true"),
            ("beta_schedule", "sigmoid", "sigmoid"), ("timestep_spacing", "karras", "karras"),
            ("prediction_type", "flow", "flow"),
        ]
        for entry in cases {
            XCTAssertThrowsError(try scheduler { $0[entry.key] = entry.value }, entry.key) { error in
                guard case ModelError.unsupportedConfig(_, let key, let value, _) = error else { return XCTFail("\(entry.key): \(error)") }
                XCTAssertEqual(key, entry.key)
                XCTAssertEqual(value, entry.shown)
            }
        }
        XCTAssertThrowsError(try scheduler { $0["trained_betas"] = [0.1, 0.2] }) { error in
            guard case ModelError.invalidConfig = error else { return XCTFail("\(error)") }
        }
    }

    func testStepCountsAreValidated() throws {
        var scheduler = try scheduler()
        for steps in [0, -3, 1001] {
            XCTAssertThrowsError(try scheduler.setTimesteps(steps), "\(steps)") { error in
                guard case ModelError.invalidInput = error else { return XCTFail("\(steps): \(error)") }
            }
        }
        // Leading spacing with steps_offset 1 and 1000 steps would reach timestep 1000 (diffusers then
        // fails with an index error in step).
        XCTAssertThrowsError(try scheduler.setTimesteps(1000)) { error in
            guard case ModelError.invalidInput = error else { return XCTFail("\(error)") }
        }
        try scheduler.setTimesteps(999)
        XCTAssertEqual(scheduler.timesteps.first, 999)
        XCTAssertEqual(scheduler.timesteps.last, 1)
    }

    func testMissingConfigIsReported() throws {
        let directory = try writeComponentCopy(self, config: nil, weights: nil, weightsFile: "")
        XCTAssertThrowsError(try DDIMScheduler(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .missingFile("\(directory)/scheduler_config.json"))
        }
    }
}
