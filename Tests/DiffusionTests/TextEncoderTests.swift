import Diffusion
import Foundation
import Tensors
import XCTest

/// CLIPTextModel against transformers on the tiny fixtures: three prompts (empty, ordinary, truncated
/// at 77 tokens) and the sampling loop's two prompts, for the gelu (SD2) and quick_gelu (SD1.5, F16
/// weights) variants.
///
/// Tolerance 1e-4 relative to the output scale: two pre-LN layers plus the final LayerNorm in float32,
/// where reordered sums differ by ~1e-6; a wrong activation, missing causal mask or wrong head split
/// changes the output by 1e-2 or more.
final class TextEncoderTests: XCTestCase {
    let tolerance: Float = 1e-4

    func encoderDirectory(_ model: String) -> String { tinyModelDirectory(model) + "/text_encoder" }

    /// Rows of a float-stored id tensor [B, L] as token sequences.
    func tokenIDs(_ ids: Tensor) -> [[Int32]] {
        (0..<ids.shape[0]).map { ids.row($0).scalars.map { Int32($0) } }
    }

    func checkAgainstTransformers(_ model: String, activation: String) throws {
        let encoder = try CLIPTextModel(directory: encoderDirectory(model))
        XCTAssertEqual(encoder.config.hiddenAct, activation)
        let expected = try expectedOutputs(model)
        let states = try encoder(tokenIDs(try expected.tensor("text.input_ids")))
        assertMatches(states, try expected.tensor("text.last_hidden_state"), tolerance: tolerance, "\(model) prompts")
        let loopStates = try encoder(tokenIDs(try expected.tensor("ddim.loop.input_ids")))
        assertMatches(loopStates, try expected.tensor("ddim.loop.encoder_hidden_states"), tolerance: tolerance, "\(model) loop prompts")
    }

    func testSD2TinyGeluEncoderMatchesTransformers() throws { try checkAgainstTransformers("sd2-tiny", activation: "gelu") }
    func testSD15TinyQuickGeluFP16EncoderMatchesTransformers() throws {
        try checkAgainstTransformers("sd15-tiny", activation: "quick_gelu")
    }

    /// The causal mask makes each position depend only on the tokens up to it: changing the last token
    /// leaves every earlier state unchanged.
    /// An edit's prompts are embedded before it starts and the text encoder is then freed; an embedded prompt
    /// is kept, and a new one loads the encoder again, giving what a model that never freed it gives.
    func testTextEncoderIsFreedAfterAnEditsPromptsAndLoadedAgainForANewOne() throws {
        let model = try StableDiffusionModel(directory: tinyModelDirectory("sd2-tiny"))
        let untouched = try StableDiffusionModel(directory: tinyModelDirectory("sd2-tiny"))
        XCTAssertTrue(model.holdsTextEncoder)
        try model.prepareEmbeddings(["a marble sculpture", ""])
        XCTAssertFalse(model.holdsTextEncoder)
        XCTAssertEqual(try model.embed("a marble sculpture").scalars, try untouched.embed("a marble sculpture").scalars)
        XCTAssertFalse(model.holdsTextEncoder, "a prepared prompt needs no encoder")
        XCTAssertEqual(try model.embed("a watercolor").scalars, try untouched.embed("a watercolor").scalars)
        XCTAssertTrue(model.holdsTextEncoder, "a new prompt loads it again")
    }

    /// A model loaded for known prompts embeds them before its UNet loads and keeps no encoder: its embeddings are
    /// the ones a model embedding later gives, and a new prompt loads the encoder as usual.
    func testModelLoadedForItsPromptsEmbedsThemFirstAndKeepsNoEncoder() throws {
        for path in [tinyModelDirectory("sd2-tiny"), tinyModelDirectory("sd15-tiny")] {
            let model = try StableDiffusionModel(path: path, embedding: ["a marble sculpture", "", "a marble sculpture"])
            let untouched = try StableDiffusionModel(path: path)
            XCTAssertFalse(model.holdsTextEncoder, path)
            for prompt in ["a marble sculpture", ""] {
                XCTAssertEqual(try model.embed(prompt).scalars, try untouched.embed(prompt).scalars, path)
            }
            XCTAssertFalse(model.holdsTextEncoder, "\(path): embedded prompts need no encoder")
            XCTAssertEqual(try model.embed("a watercolor").scalars, try untouched.embed("a watercolor").scalars, path)
            XCTAssertTrue(model.holdsTextEncoder, "\(path): a new prompt loads it again")
        }
    }

    func testStatesAreCausal() throws {
        let encoder = try CLIPTextModel(directory: encoderDirectory("sd2-tiny"))
        var ids = [Int32](repeating: 0, count: 77)
        ids[0] = 49406
        ids[1] = 320
        ids[2] = 49407
        var changed = ids
        changed[76] = 1125
        let a = try encoder([ids]), b = try encoder([changed])
        let width = encoder.config.hiddenSize
        XCTAssertEqual(Array(a.scalars[..<(76 * width)]), Array(b.scalars[..<(76 * width)]))
        XCTAssertNotEqual(Array(a.scalars[(76 * width)...]), Array(b.scalars[(76 * width)...]))
    }

    func testInvalidTokenSequencesAreRefused() throws {
        let encoder = try CLIPTextModel(directory: encoderDirectory("sd2-tiny"))
        let valid = [Int32](repeating: 0, count: 77)
        var tooLarge = valid
        tooLarge[5] = 49408
        var negative = valid
        negative[0] = -1
        for (label, ids) in [("id 49408", [tooLarge]), ("id -1", [negative]), ("no sequence", []), ("empty", [[]]),
                             ("ragged", [valid, Array(valid.prefix(10))]), ("78 tokens", [valid + [0]])] {
            XCTAssertThrowsError(try encoder(ids), label) { error in
                guard case ModelError.invalidInput = error else { return XCTFail("\(label): \(error)") }
            }
        }
        XCTAssertEqual(try encoder([Array(valid.prefix(5))]).shape, [1, 5, 32]) // shorter than 77 is fine
    }

    // MARK: - Loader errors

    func weights(_ model: String = "sd2-tiny") throws -> [(name: String, tensor: Tensor)] {
        try readComponentTensors("\(encoderDirectory(model))/model.safetensors")
    }

    /// transformers < 4.31 saved the int64 position_ids buffer; it is ignored (here stored as F32,
    /// the name is what matters).
    func testSavedPositionIDsAreIgnored() throws {
        var tensors = try weights()
        tensors.append((name: "text_model.embeddings.position_ids", tensor: try Tensor(shape: [1, 77], values: (0..<77).map(Float.init))))
        let directory = try writeComponentCopy(self, config: readComponentConfig(encoderDirectory("sd2-tiny")), weights: tensors,
                                               weightsFile: "model.safetensors")
        let ids = [[Int32](repeating: 7, count: 77)]
        let reference = try CLIPTextModel(directory: encoderDirectory("sd2-tiny"))
        XCTAssertEqual(try CLIPTextModel(directory: directory)(ids).scalars, try reference(ids).scalars)
    }

    func testMissingConfigIsReported() throws {
        let directory = try writeComponentCopy(self, config: nil, weights: weights(), weightsFile: "model.safetensors")
        XCTAssertThrowsError(try CLIPTextModel(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .missingFile("\(directory)/config.json"))
        }
    }

    func testMissingWeightsAreReported() throws {
        let directory = try writeComponentCopy(self, config: readComponentConfig(encoderDirectory("sd15-tiny")), weights: nil, weightsFile: "")
        XCTAssertThrowsError(try CLIPTextModel(directory: directory)) { error in
            guard case ModelError.missingFile(let path) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasPrefix("\(directory)/model.safetensors"), path)
        }
    }

    func testWrongShapeNamesTheTensor() throws {
        var tensors = try weights()
        replaceTensor(&tensors, "text_model.encoder.layers.1.mlp.fc1.weight", with: try Tensor(zeros: [32, 64]))
        let directory = try writeComponentCopy(self, config: readComponentConfig(encoderDirectory("sd2-tiny")), weights: tensors,
                                               weightsFile: "model.safetensors")
        XCTAssertThrowsError(try CLIPTextModel(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .wrongShape(file: "\(directory)/model.safetensors",
                                                             tensor: "text_model.encoder.layers.1.mlp.fc1.weight",
                                                             expected: [64, 32], found: [32, 64]))
        }
    }

    /// A config with fewer layers than the checkpoint leaves tensors unused: refused, not run truncated.
    func testUnexpectedTensorsAreReported() throws {
        var config = try readComponentConfig(encoderDirectory("sd2-tiny"))
        config["num_hidden_layers"] = 1
        let directory = try writeComponentCopy(self, config: config, weights: weights(), weightsFile: "model.safetensors")
        XCTAssertThrowsError(try CLIPTextModel(directory: directory)) { error in
            guard case ModelError.unexpectedTensors(_, let names) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(names.count, 16)
            XCTAssertTrue(names.allSatisfy { $0.hasPrefix("text_model.encoder.layers.1.") }, "\(names)")
        }
    }

    func testUnsupportedActivationIsRefused() throws {
        var config = try readComponentConfig(encoderDirectory("sd2-tiny"))
        config["hidden_act"] = "gelu_new"
        let directory = try writeComponentCopy(self, config: config, weights: weights(), weightsFile: "model.safetensors")
        XCTAssertThrowsError(try CLIPTextModel(directory: directory)) { error in
            XCTAssertEqual(error as? ModelError, .unsupportedConfig(file: "\(directory)/config.json", key: "hidden_act",
                                                                    value: "gelu_new", supported: "gelu, quick_gelu"))
        }
    }
}
