import ArgumentParser
import CVideoIO
import Diffusion
import Foundation
import Tensors
import TokenFlow

@main
struct TokenflowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenflow",
        abstract: "Text-driven, temporally consistent video editing with Stable Diffusion (TokenFlow), on the CPU.",
        discussion: """
        INPUT and OUTPUT are anything libavformat reads and writes: .mp4, .mkv, .mov, or image sequences \
        such as frames/%05d.png. Frame count, order, timestamps and frame rate are kept; audio is copied \
        when the output container accepts it.
        """,
        subcommands: [Edit.self, Invert.self, Reconstruct.self, Info.self, InstallModel.self]
    )
}

/// Options every editing command shares (engine settings in kebab-case).
struct EngineOptions: ParsableArguments {
    @Option(help: "Diffusers model folder (default: $TOKENFLOW_MODEL, then <prefix>/share/tokenflow/model).")
    var model: String?
    @Option(help: "Text describing the source clip; conditions the inversion.")
    var inversionPrompt: String = ""
    @Option(help: "DDIM sampling steps (1-1000).")
    var steps: Int = 50
    @Option(help: "DDIM inversion steps (1-1000; a multiple of --steps).")
    var inversionSteps: Int = 50
    @Option(help: "Frames per batch; one keyframe is drawn per batch and step.")
    var batchSize: Int = 8
    @Option(help: "Working size: WxH (multiples of 8), 'input' (the input's size rounded to 8), or omit for longer side 512.")
    var size: String?
    @Option(help: "Worker threads (0 = one per core).")
    var threads: Int = 0

    func workingSize() throws -> WorkingSize {
        guard let size else { return .longerSide(512) }
        if size == "input" { return .input }
        let parts = size.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 2 else { throw ValidationError("--size must be WxH (e.g. 512x320) or 'input', got '\(size)'") }
        return .exact(width: parts[0], height: parts[1])
    }

    func settings() throws -> EditSettings {
        var settings = EditSettings()
        settings.inversionPrompt = inversionPrompt
        settings.steps = steps
        settings.inversionSteps = inversionSteps
        settings.batchSize = batchSize
        settings.workingSize = try workingSize()
        return settings
    }

    func loadModel() throws -> StableDiffusionModel {
        guard threads >= 0 else { throw ValidationError("--threads must be >= 0") }
        Threading.configure(threads: threads)
        return try StableDiffusionModel(directory: try resolveModelDirectory(model))
    }
}

struct EditOptions: ParsableArguments {
    @Option(help: "The edit: text describing the result.")
    var prompt: String
    @Option(help: "Negative prompt for classifier-free guidance.")
    var negativePrompt: String = EditSettings().negativePrompt
    @Option(help: "Method: tokenflow (PnP injection), sdedit, or reconstruct.")
    var method: String = "tokenflow"
    @Option(help: "Classifier-free guidance scale.")
    var guidance: Float = 7.5
    @Option(help: "Fraction of steps with self-attention query/key injection [0,1].")
    var pnpAttnT: Float = 0.5
    @Option(name: .customLong("pnp-f-t"), help: "Fraction of steps with resnet feature injection [0,1].")
    var pnpFT: Float = 0.8
    @Option(help: "SDEdit: fraction of the schedule to run [0,1].")
    var strength: Float = 0.8
    @Option(help: "Seed for the keyframe choice.")
    var seed: UInt64 = 1
    @Option(help: "JSON file: one list of keyframe indices (one per batch) per sampling step.")
    var keyframes: String?
    @Option(help: "Write latents to this safetensors file: inverted/<t> per kept timestep, and final.")
    var saveLatents: String?
    @Option(help: "Reuse an inversion saved by `tokenflow invert` instead of inverting INPUT again.")
    var inversion: String?

    func apply(to settings: inout EditSettings) throws {
        guard let parsed = EditMethod(rawValue: method) else {
            throw ValidationError("--method must be tokenflow, sdedit or reconstruct, got '\(method)'")
        }
        settings.method = parsed
        settings.prompt = prompt
        settings.negativePrompt = negativePrompt
        settings.guidanceScale = guidance
        settings.pnpAttentionThreshold = pnpAttnT
        settings.pnpFeatureThreshold = pnpFT
        settings.strength = strength
        settings.seed = seed
        if let keyframes {
            guard let data = FileManager.default.contents(atPath: keyframes) else {
                throw ValidationError("cannot read keyframe file '\(keyframes)'")
            }
            do { settings.keyframes = try JSONDecoder().decode([[Int]].self, from: data) } catch {
                throw ValidationError("keyframe file '\(keyframes)' must be JSON like [[3, 10], [5, 12]] (one list per step): \(error)")
            }
        }
    }
}

struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Edit a clip with a text prompt.")
    @Argument(help: "Input video or image sequence.") var input: String
    @Argument(help: "Output video or image sequence (written only if the edit succeeds).") var output: String
    @OptionGroup var engine: EngineOptions
    @OptionGroup var edit: EditOptions

    func run() throws {
        var settings = try engine.settings()
        try edit.apply(to: &settings)
        try runEdit(input: input, output: output, settings: settings, engine: engine, edit: edit)
    }
}

struct Reconstruct: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Invert a clip and sample it back with the inversion prompt (a check of the model and settings).")
    @Argument(help: "Input video or image sequence.") var input: String
    @Argument(help: "Output video or image sequence.") var output: String
    @OptionGroup var engine: EngineOptions
    @Option(help: "Write latents to this safetensors file: inverted/<t> per kept timestep, and final.")
    var saveLatents: String?

    func run() throws {
        var settings = try engine.settings()
        settings.method = .reconstruct
        let model = try engine.loadModel()
        let session = try EditSession(model: model, settings: settings)
        let clip = try readClip(input)
        let result = try session.run(clip.frames, progress: ProgressDisplay().handler)
        if let saveLatents { try saveLatentFile(result, to: saveLatents) }
        try writeClip(result.frames, like: clip, to: output, audioFrom: input)
    }
}

struct Invert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invert a clip once and save it, so `edit --inversion FILE` can try many prompts.",
        discussion: "Use the same --steps, --inversion-steps, --size and --model for the edits.")
    @Argument(help: "Input video or image sequence.") var input: String
    @Argument(help: "Inversion file to write (safetensors).") var inversionFile: String
    @OptionGroup var engine: EngineOptions

    func run() throws {
        let model = try engine.loadModel()
        let session = try EditSession(model: model, settings: try engine.settings())
        let clip = try readClip(input)
        let inversion = try session.invert(clip.frames, progress: ProgressDisplay().handler)
        try inversion.save(to: inversionFile)
        printErr("wrote \(inversionFile)")
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a model folder: architecture, parameter counts, dtypes.")
    @Argument(help: "Diffusers model folder.") var model: String

    func run() throws {
        let loaded = try StableDiffusionModel(directory: model)
        print(describeModel(loaded))
    }
}

struct InstallModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install-model",
        abstract: "Validate a diffusers folder and install it as the default model (<prefix>/share/tokenflow/model).")
    @Argument(help: "Diffusers model folder.") var directory: String
    @Flag(help: "Link to the folder instead of copying it.") var link = false
    @Option(help: "Install here instead of the default model folder.") var destination: String?

    func run() throws {
        _ = try StableDiffusionModel(directory: directory) // refuses anything the engine cannot load
        let target = destination ?? defaultModelDirectory()
        try installModel(from: directory, to: target, link: link)
        print("installed \(directory) as \(target)")
    }
}
