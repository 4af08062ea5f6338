import Diffusion
import Foundation
import Tensors
import VideoEditing
import XCTest

/// Whole edits from the single-file checkpoints of the tiny models (Tests/Fixtures/models/<name>.safetensors,
/// the folders' tensors under the original layout's names) must equal the folders' edits frame for frame,
/// and the `prediction` setting decides what an SD 2.x file without metadata predicts.
final class SingleFileEditTests: XCTestCase {
    override func setUp() { Threading.configure(threads: 2) }

    func models(_ name: String) throws -> (file: StableDiffusionModel, folder: StableDiffusionModel) {
        let folder = tokenFlowFixtures + "/models/" + name
        return (try StableDiffusionModel(path: folder + ".safetensors"), try StableDiffusionModel(path: folder))
    }

    func testEditsFromSingleFilesEqualTheFoldersFrameForFrame() throws {
        let clip = patternClip(frames: 5, width: 40, height: 32)
        for name in ["sd2-tiny", "sd15-tiny"] {
            let (file, folder) = try models(name)
            for method in EditMethods.all.map({ $0.name }) {
                var settings = quickSettings(method)
                settings.steps = 3
                settings.inversionSteps = 3
                // The SD 2.x file does not say what it predicts; the folder's scheduler says epsilon.
                settings.prediction = name == "sd2-tiny" ? "epsilon" : "auto"
                let fromFile = try EditPipeline(model: file, settings: settings).run(clip)
                let fromFolder = try EditPipeline(model: folder, settings: settings).run(clip)
                XCTAssertEqual(fromFile.frames, fromFolder.frames, "\(name) \(method): frames")
                XCTAssertEqual(fromFile.finalLatents.scalars, fromFolder.finalLatents.scalars, "\(name) \(method): latents")
                XCTAssertNotEqual(fromFile.frames[0].pixels, clip[0].pixels, "\(name) \(method): the edit changed nothing")
            }
        }
    }

    /// An SD 2.x file without metadata may be a noise- or a velocity-predicting model: editing with
    /// prediction=auto is refused with a message saying what to set; epsilon and v each run as asked.
    func testSD2SingleFileNeedsAnExplicitPrediction() throws {
        let (file, _) = try models("sd2-tiny")
        var settings = quickSettings()
        XCTAssertThrowsError(try EditPipeline(model: file, settings: settings)) { error in
            guard case EditError.invalidSettings(let message) = error else { return XCTFail("\(error)") }
            for phrase in ["prediction", "sd2-tiny.safetensors", "epsilon", "or v", "768"] {
                XCTAssertTrue(message.contains(phrase), "\"\(message)\" does not say \"\(phrase)\"")
            }
        }
        settings.prediction = "epsilon"
        XCTAssertEqual(try EditPipeline(model: file, settings: settings).schedules.sampling.prediction, .epsilon)
        settings.prediction = "v"
        XCTAssertEqual(try EditPipeline(model: file, settings: settings).schedules.sampling.prediction, .vPrediction)
        // SD 1.x files predict noise.
        let (sd15, _) = try models("sd15-tiny")
        XCTAssertEqual(try EditPipeline(model: sd15, settings: quickSettings()).schedules.sampling.prediction, .epsilon)
    }

    /// With a folder, auto is the folder's scheduler_config.json and an explicit value overrides it.
    func testPredictionSettingOverridesAFolder() throws {
        let (_, folder) = try models("sd2-tiny")
        var settings = quickSettings()
        XCTAssertEqual(try EditPipeline(model: folder, settings: settings).schedules.sampling.prediction, .epsilon)
        settings.prediction = "v"
        let pipeline = try EditPipeline(model: folder, settings: settings)
        XCTAssertEqual(pipeline.schedules.sampling.prediction, .vPrediction)
        XCTAssertEqual(pipeline.schedules.inversion.prediction, .vPrediction)
        XCTAssertThrowsError(try SettingsTable.set("prediction", "velocity", in: &settings)) {
            XCTAssertTrue("\($0)".contains("expected one of auto, epsilon, v"), "\($0)")
        }
    }
}
