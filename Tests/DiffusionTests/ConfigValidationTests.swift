import Diffusion
import Foundation
import Tensors
import XCTest

/// Mutated copies of the sd2-tiny model folders: every config value the engine uses is refused at load
/// with a message naming the key, never a trap (a trap would end this test process). The weights stay
/// the tiny model's, so a value that passed validation would fail on a tensor shape instead; each case
/// checks that the error is a config error naming the key.
final class ConfigValidationTests: XCTestCase {
    let model = tinyModelDirectory("sd2-tiny")

    /// A copy of `component` with `changes` applied to its config (a nil value removes the key).
    func componentCopy(_ component: String, _ changes: [String: Any?], configFile: String = "config.json",
                       weightsFile: String?) throws -> String {
        let source = "\(model)/\(component)"
        var config = try readComponentConfig(source, file: configFile)
        for (key, value) in changes { config[key] = value }
        let weights = try weightsFile.map { try readComponentTensors("\(source)/\($0)") }
        return try writeComponentCopy(self, config: config, weights: weights, weightsFile: weightsFile ?? "", configFile: configFile)
    }

    /// `load` must throw a config error (invalid or unsupported) whose message names `key`.
    func assertRefused(_ label: String, key: String, file: StaticString = #filePath, line: UInt = #line,
                       _ load: () throws -> Any) {
        XCTAssertThrowsError(try load(), label, file: file, line: line) { error in
            let message = "\(error)"
            switch error {
            case ModelError.invalidConfig, ModelError.unsupportedConfig, CLIPTokenizerError.badFile: break
            default: XCTFail("\(label): not a config error: \(message)", file: file, line: line)
            }
            XCTAssertTrue(message.contains(key), "\(label): \"\(message)\" does not name \(key)", file: file, line: line)
        }
    }

    func testUNetValuesAreRefused() throws {
        let cases: [(changes: [String: Any?], key: String)] = [
            (["layers_per_block": -1], "layers_per_block"),
            (["layers_per_block": 0], "layers_per_block"),
            (["layers_per_block": 1 << 40], "layers_per_block"),
            (["attention_head_dim": 0], "attention_head_dim"),
            (["attention_head_dim": -2], "attention_head_dim"),
            (["attention_head_dim": 3], "attention_head_dim"),
            (["attention_head_dim": [2, 4, 4]], "attention_head_dim"),
            (["attention_head_dim": [2, 4, 0, 4]], "attention_head_dim"),
            (["num_attention_heads": 0], "num_attention_heads"),
            (["norm_num_groups": 0], "norm_num_groups"),
            (["norm_num_groups": -4], "norm_num_groups"),
            (["norm_num_groups": 3], "norm_num_groups"),
            (["transformer_layers_per_block": [1, 1]], "transformer_layers_per_block"),
            (["transformer_layers_per_block": -1], "transformer_layers_per_block"),
            (["transformer_layers_per_block": [1, 1, 0, 1]], "transformer_layers_per_block"),
            (["block_out_channels": [8, 16, 16, 1 << 40]], "block_out_channels"),
            (["block_out_channels": [8, 16, 16, -16]], "block_out_channels"),
            (["block_out_channels": [Int]()], "block_out_channels"),
            // An odd timestep-embedding width (groups and heads of 1 so only that check fails).
            (["block_out_channels": [9, 18, 18, 18], "norm_num_groups": 1, "attention_head_dim": [1, 2, 2, 2]],
             "block_out_channels[0]"),
            (["in_channels": -4], "in_channels"),
            (["out_channels": 0], "out_channels"),
            (["cross_attention_dim": 0], "cross_attention_dim"),
            (["cross_attention_dim": 1 << 40], "cross_attention_dim"),
            (["norm_eps": -1], "norm_eps"),
            (["freq_shift": 4], "freq_shift"),
            (["downsample_padding": -3], "downsample_padding"),
            (["sample_size": 0], "sample_size"),
        ]
        for entry in cases {
            let directory = try componentCopy("unet", entry.changes, weightsFile: "diffusion_pytorch_model.safetensors")
            assertRefused("\(entry.changes)", key: entry.key) { try UNet(directory: directory) }
        }
    }

    func testVAEValuesAreRefused() throws {
        let cases: [(changes: [String: Any?], key: String)] = [
            (["layers_per_block": -1], "layers_per_block"),
            (["layers_per_block": 1 << 40], "layers_per_block"),
            (["norm_num_groups": 0], "norm_num_groups"),
            (["norm_num_groups": 5], "norm_num_groups"),
            (["latent_channels": 0], "latent_channels"),
            (["latent_channels": 1 << 40], "latent_channels"),
            (["in_channels": -3], "in_channels"),
            (["out_channels": 0], "out_channels"),
            (["block_out_channels": [8, 16, 16, 0]], "block_out_channels"),
            (["block_out_channels": [Int]()], "block_out_channels"),
            (["scaling_factor": 0], "scaling_factor"),
        ]
        for entry in cases {
            let directory = try componentCopy("vae", entry.changes, weightsFile: "diffusion_pytorch_model.safetensors")
            assertRefused("\(entry.changes)", key: entry.key) { try AutoencoderKL(directory: directory) }
        }
    }

    func testTextEncoderValuesAreRefused() throws {
        let cases: [(changes: [String: Any?], key: String)] = [
            (["num_hidden_layers": -1], "num_hidden_layers"),
            (["num_hidden_layers": 1 << 40], "num_hidden_layers"),
            (["hidden_size": 0], "hidden_size"),
            (["hidden_size": -32], "hidden_size"),
            (["num_attention_heads": 0], "num_attention_heads"),
            (["num_attention_heads": -4], "num_attention_heads"),
            (["num_attention_heads": 5], "num_attention_heads"),
            (["vocab_size": -1], "vocab_size"),
            (["vocab_size": 1 << 40], "vocab_size"),
            (["intermediate_size": 0], "intermediate_size"),
            (["max_position_embeddings": 0], "max_position_embeddings"),
            (["max_position_embeddings": 1 << 40], "max_position_embeddings"),
            (["layer_norm_eps": -1], "layer_norm_eps"),
        ]
        for entry in cases {
            let directory = try componentCopy("text_encoder", entry.changes, weightsFile: "model.safetensors")
            assertRefused("\(entry.changes)", key: entry.key) { try CLIPTextModel(directory: directory) }
        }
    }

    func testSchedulerValuesAreRefused() throws {
        var badBetas = [Double](repeating: 0.01, count: 1000)
        badBetas[3] = 2
        let cases: [(changes: [String: Any?], key: String)] = [
            (["num_train_timesteps": 1 << 40], "num_train_timesteps"),
            (["num_train_timesteps": 0], "num_train_timesteps"),
            (["num_train_timesteps": -5], "num_train_timesteps"),
            (["beta_start": -0.1], "beta_start"),
            (["beta_end": 1.5], "beta_end"),
            (["beta_end": 1], "beta_end"),
            (["steps_offset": 1 << 62], "steps_offset"),
            (["steps_offset": -1], "steps_offset"),
            (["clip_sample_range": 0], "clip_sample_range"),
            (["trained_betas": [0.1, 0.2]], "trained_betas"),
            (["trained_betas": badBetas], "trained_betas[3]"),
        ]
        for entry in cases {
            let directory = try componentCopy("scheduler", entry.changes, configFile: "scheduler_config.json", weightsFile: nil)
            assertRefused("\(entry.changes)", key: entry.key) { try DDIMScheduler(directory: directory) }
        }
    }

    /// A tokenizer folder with `changes` applied to tokenizer_config.json.
    func tokenizerCopy(_ changes: [String: Any?]) throws -> String {
        let directory = try componentCopy("tokenizer", changes, configFile: "tokenizer_config.json", weightsFile: nil)
        for name in ["vocab.json", "merges.txt", "special_tokens_map.json"] {
            // vocab.json and merges.txt are relative links in the fixtures: link to what they resolve to.
            let source = URL(fileURLWithPath: "\(model)/tokenizer/\(name)").resolvingSymlinksInPath().path
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/\(name)", withDestinationPath: source)
        }
        return directory
    }

    func testTokenizerValuesAreRefused() throws {
        var decoder = try XCTUnwrap(readComponentConfig("\(model)/tokenizer", file: "tokenizer_config.json")["added_tokens_decoder"] as? [String: Any])
        decoder["49408"] = ["content": "", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true]
        let cases: [(changes: [String: Any?], key: String)] = [
            (["model_max_length": 1 << 62], "model_max_length"),
            (["model_max_length": 4097], "model_max_length"),
            (["model_max_length": 1], "model_max_length"),
            (["model_max_length": -77], "model_max_length"),
            (["added_tokens_decoder": decoder], "added_tokens_decoder \"49408\""),
            (["pad_token": ""], "pad_token"),
        ]
        for entry in cases {
            let directory = try tokenizerCopy(entry.changes)
            assertRefused("\(entry.changes)", key: entry.key) { try CLIPTokenizer(directory: directory) }
        }
        // The in-memory tables are checked the same way (an empty token would never end tokenize).
        let vocabulary: [String: Int32] = ["a</w>": 0, "<|startoftext|>": 1, "<|endoftext|>": 2]
        XCTAssertThrowsError(try CLIPTokenizer(vocabulary: vocabulary, merges: [], addedTokens: ["": 3])) {
            XCTAssertTrue("\($0)".contains("empty"), "\($0)")
        }
        XCTAssertThrowsError(try CLIPTokenizer(vocabulary: vocabulary, merges: [], maxLength: 1)) {
            XCTAssertTrue("\($0)".contains("maxLength"), "\($0)")
        }
        XCTAssertThrowsError(try CLIPTokenizer(vocabulary: vocabulary, merges: [], maxLength: Int.max)) {
            XCTAssertTrue("\($0)".contains("maxLength"), "\($0)")
        }
    }

    /// A whole-model copy: `component` written by `replace`, every other part linked to sd2-tiny.
    func modelCopy(replacing component: String, with replace: () throws -> String) throws -> String {
        let manager = FileManager.default
        let directory = manager.temporaryDirectory.appendingPathComponent("diffusion-model-\(UUID().uuidString)").path
        try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? manager.removeItem(atPath: directory) }
        try manager.copyItem(atPath: "\(model)/model_index.json", toPath: "\(directory)/model_index.json")
        for part in ["tokenizer", "text_encoder", "unet", "vae", "scheduler"] where part != component {
            try manager.createSymbolicLink(atPath: "\(directory)/\(part)", withDestinationPath: "\(model)/\(part)")
        }
        try manager.createSymbolicLink(atPath: "\(directory)/\(component)", withDestinationPath: try replace())
        return directory
    }

    /// The scheduler is checked when the model loads, not at the first edit.
    func testModelLoadChecksTheScheduler() throws {
        let directory = try modelCopy(replacing: "scheduler") {
            try componentCopy("scheduler", ["num_train_timesteps": 1 << 40], configFile: "scheduler_config.json", weightsFile: nil)
        }
        assertRefused("num_train_timesteps 2^40", key: "num_train_timesteps") { try StableDiffusionModel(directory: directory) }
    }

    /// A tokenizer longer than the text encoder's positions is refused at load.
    func testModelLoadChecksTokenizerAgainstTextEncoder() throws {
        let directory = try modelCopy(replacing: "tokenizer") { try tokenizerCopy(["model_max_length": 78]) }
        assertRefused("model_max_length 78", key: "max_position_embeddings") { try StableDiffusionModel(directory: directory) }
        // The unmodified copy loads (the links and copies are right).
        XCTAssertNoThrow(try StableDiffusionModel(directory: modelCopy(replacing: "tokenizer") { try tokenizerCopy([:]) }))
    }
}
