import Diffusion
import Glibc
import Tensors
import VideoEditing

/// What the mutator knows of a target's input, for structure-aware mutations on top of byte-level ones.
enum InputFormat {
    case json
    /// 8-byte header length, JSON header, data.
    case safetensors
    /// A safetensors file whose data section the target supplies (`single-file`): also mutated by shape
    /// changes whose data is moved past the file's end to match (`ShapeMutations`).
    case checkpoint
    /// Text by lines (merges.txt).
    case lines
}

/// One parser under fuzzing.
///
/// Every target reads its input from one file, `Workspace.input`, which the driver rewrites before each
/// execution. So the parsers are reached through the calls hosts make (file paths, model folders), and
/// after a trap, a hang or a kill that file holds the input that caused it.
struct FuzzTarget: Sendable {
    let name: String
    let format: InputFormat
    /// Seed inputs, relative to the repository: files, or folders whose files are all seeds.
    let seeds: [String]
    /// Sets up the target's folder once and returns what runs one input. A thrown error is a refused input,
    /// which is a pass; only a signal (trap, crash) or a hang is a failure.
    let prepare: @Sendable (Workspace) throws -> () throws -> Void

    /// Crashing inputs found earlier, replayed by every run.
    var regressions: String { "Tests/Fuzz/regressions/\(name)" }

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    static let all: [FuzzTarget] = [
        FuzzTarget(name: "safetensors", format: .safetensors, seeds: ["Tests/Fuzz/seeds/safetensors"]) { workspace in
            {
                let file = try SafetensorsFile(path: workspace.input)
                // Every tensor, including those after one that is refused (unsupported dtypes throw).
                var firstError: Error?
                for name in file.tensorNames {
                    do { _ = try file.tensor(name) } catch { firstError = firstError ?? error }
                }
                if let firstError { throw firstError }
            }
        },
        componentConfig("unet-config", component: "unet") { folder in
            let unet = try UNet(directory: folder)
            // A loaded UNet must also run: config values the load accepts are used by the forward pass.
            // 5x3 latents (a 40x24 frame): odd sizes take the padding paths of every level.
            let config = unet.config
            _ = try unet(try Tensor(zeros: [1, config.inChannels, 5, 3]), timesteps: [981],
                     context: try Tensor(zeros: [1, 4, config.crossAttentionDim]))
        },
        componentConfig("vae-config", component: "vae") { folder in
            let vae = try AutoencoderKL(directory: folder)
            let config = vae.config
            _ = try vae.encodeMean(Tensor(zeros: [1, config.inChannels, 40, 24]))
            _ = try vae.decode(Tensor(zeros: [1, config.latentChannels, 5, 3]))
        },
        componentConfig("text-encoder-config", component: "text_encoder") { folder in
            let encoder = try CLIPTextModel(directory: folder)
            let config = encoder.config
            // As many tokens as Stable Diffusion sends (77), or as the model has positions.
            let ids = (0..<min(77, config.maxPositionEmbeddings)).map { Int32($0 % config.vocabSize) }
            _ = try encoder([ids])
        },
        componentConfig("scheduler-config", component: "scheduler", file: "scheduler_config.json",
                        extraSeeds: ["Tests/Fuzz/seeds/scheduler-config"]) { folder in
            var scheduler = try DDIMScheduler(directory: folder)
            let sample = try Tensor(shape: [1, 1, 2, 2], repeating: 0.5)
            // Step counts hosts use, each through every step as sampling and inversion do.
            for steps in [1, 2, 50, 1000] where steps <= scheduler.config.numTrainTimesteps {
                try scheduler.setTimesteps(steps)
                for t in scheduler.timesteps {
                    _ = try scheduler.step(modelOutput: sample, timestep: t, sample: sample)
                    _ = try scheduler.addNoise(original: sample, noise: sample, timestep: t)
                }
            }
        },
        tokenizerFile("tokenizer-vocab", file: "vocab.json", format: .json, seeds: ["Tests/Fuzz/tokenizer/vocab.json"]),
        tokenizerFile("tokenizer-merges", file: "merges.txt", format: .lines, seeds: ["Tests/Fuzz/tokenizer/merges.txt"]),
        tokenizerFile("tokenizer-config", file: "tokenizer_config.json", format: .json, seeds: [
            "Tests/Fixtures/models/sd2-tiny/tokenizer/tokenizer_config.json",
            "Tests/Fixtures/models/sd15-tiny/tokenizer/tokenizer_config.json",
        ]),
        tokenizerFile("special-tokens-map", file: "special_tokens_map.json", format: .json, seeds: [
            "Tests/Fixtures/models/sd2-tiny/tokenizer/special_tokens_map.json",
            "Tests/Fixtures/models/sd15-tiny/tokenizer/special_tokens_map.json",
        ]),
        FuzzTarget(name: "inversion", format: .safetensors, seeds: ["Tests/Fuzz/seeds/inversion"]) { workspace in
            let pipeline = try tinyPipeline(workspace)
            return {
                // `tokenflow edit --inversion FILE`: load, then everything the edit checks and sets up before
                // its first UNet call (the first progress report, where this run stops).
                let inversion = try Inversion.load(from: workspace.input)
                try editUntilFirstStep(pipeline, inversion)
            }
        },
        FuzzTarget(name: "keyframes", format: .json, seeds: ["Tests/Fuzz/seeds/keyframes"]) { workspace in
            let pipeline = try tinyPipeline(workspace)
            let inversion = try Inversion.load(from: workspace.path(tinyInversion))
            return {
                // `tokenflow edit --keyframes FILE` on a 10-frame clip in batches of 4, stopped at the first
                // UNet call: the schedule has been checked and turned into the sampling plan by then.
                try editUntilFirstStep(pipeline, inversion, keyframes: try KeyframeFile.read(workspace.input))
            }
        },
        SingleFileTarget.target,
    ]

    /// The seed inversion: 10 frames of 16x16 (latents [10, 4, 2, 2]), 2 steps, from sd2-tiny.
    static let tinyInversion = "Tests/Fuzz/seeds/inversion/sd2-tiny-10x16x16.safetensors"

    /// A component folder of the sd2-tiny model whose config is the input (weights linked from the fixture).
    /// Seeds: both tiny models' configs, and `extraSeeds`.
    private static func componentConfig(_ name: String, component: String, file: String = "config.json",
                                        extraSeeds: [String] = [],
                                        load: @escaping @Sendable (String) throws -> Void) -> FuzzTarget {
        let fixture = "Tests/Fixtures/models/sd2-tiny/\(component)"
        let seeds = ["sd2-tiny", "sd15-tiny"].map { "Tests/Fixtures/models/\($0)/\(component)/\(file)" } + extraSeeds
        return FuzzTarget(name: name, format: .json, seeds: seeds) { workspace in
            let folder = try workspace.linkedFolder(component, from: fixture, inputAs: file)
            return { try load(folder) }
        }
    }

    /// The fuzzing tokenizer folder (a small vocabulary, so an execution is fast) with `file` as the input.
    private static func tokenizerFile(_ name: String, file: String, format: InputFormat, seeds: [String]) -> FuzzTarget {
        FuzzTarget(name: name, format: format, seeds: seeds) { workspace in
            let folder = try workspace.linkedFolder("tokenizer", from: "Tests/Fuzz/tokenizer", inputAs: file)
            return {
                let tokenizer = try CLIPTokenizer(directory: folder)
                // Added tokens, punctuation, Greek final sigma, CJK, a combining mark, empty and long prompts.
                for prompt in ["a photo of a cat", "<|startoftext|>it's!! ΟΔΟΣ 猫 cafe\u{301} \u{345}x", "",
                               String(repeating: "tokenflow ", count: 40)] {
                    _ = tokenizer.encode(prompt)
                }
            }
        }
    }

    /// Edits until the first progress report (after the first UNet call), which cancels the edit: reaching it
    /// means every check of the inputs passed.
    private static func editUntilFirstStep(_ pipeline: EditPipeline, _ inversion: Inversion, keyframes: [[Int]]? = nil) throws {
        do {
            _ = try pipeline.edit(inversion, keyframes: keyframes, progress: { _ in false })
        } catch EditError.cancelled {}
    }

    /// An edit pipeline on the tiny model with 2 steps in batches of 4, its temporary files in the workspace.
    private static func tinyPipeline(_ workspace: Workspace) throws -> EditPipeline {
        var settings = EditSettings()
        settings.model = workspace.path("Tests/Fixtures/models/sd2-tiny")
        settings.prompt = "a marble statue"
        settings.steps = 2
        settings.inversionSteps = 2
        settings.batchSize = 4
        settings.workingSize = .input
        settings.temporaryDirectory = workspace.folder
        return try EditPipeline(model: StableDiffusionModel(directory: settings.model), settings: settings)
    }
}
