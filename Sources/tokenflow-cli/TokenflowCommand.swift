import ArgumentParser
import CVideoIO
import Diffusion
import Foundation
import Tensors
import VideoEditing

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
        subcommands: [Edit.self, Invert.self, Reconstruct.self, Info.self, Convert.self, InstallModel.self]
    )
}

/// Loads the model the settings name and applies the process-wide thread setting.
func loadModel(_ settings: EditSettings) throws -> StableDiffusionModel {
    Threading.configure(threads: settings.threads)
    let path = try ModelLocation.resolve(settings.model, binary: executablePath())
    return try StableDiffusionModel(path: path, embedding: settings.promptsToEmbed)
}

struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Edit a clip with a text prompt.", discussion: settingsHelp)
    @Argument(help: "Input video or image sequence.") var input: String
    @Argument(help: "Output video or image sequence (written only if the edit succeeds).") var output: String
    @Option(help: "JSON file: one list of keyframe indices (one per batch) per sampling step, instead of drawing them with the seed.")
    var keyframes: String?
    @Option(help: "Write latents to this safetensors file: inverted/<t> per kept timestep, and final.")
    var saveLatents: String?
    @Option(help: "Reuse an inversion saved by `tokenflow invert` instead of inverting INPUT again.")
    var inversion: String?
    @Option(help: "Method cove: write the token correspondences to this safetensors file (per group: positions [frames, tokens, frames, K], frames).")
    var saveCorrespondences: String?
    @OptionGroup var settings: SettingOptions

    func run() throws {
        try runEdit(input: input, output: output, settings: try settings.settings(), keyframes: try readKeyframes(keyframes),
                    inversionFile: inversion, saveLatents: saveLatents, saveCorrespondences: saveCorrespondences)
    }
}

struct Reconstruct: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invert a clip and sample it back with the inversion prompt (a check of the model and settings): edit --method \(Reconstruction.name).",
        discussion: settingsHelp)
    @Argument(help: "Input video or image sequence.") var input: String
    @Argument(help: "Output video or image sequence.") var output: String
    @Option(help: "Write latents to this safetensors file: inverted/<t> per kept timestep, and final.")
    var saveLatents: String?
    @OptionGroup var settings: SettingOptions

    func run() throws {
        var settings = try settings.settings()
        settings.method = Reconstruction.name
        try runEdit(input: input, output: output, settings: settings, keyframes: nil, inversionFile: nil, saveLatents: saveLatents,
                    saveCorrespondences: nil)
    }
}

struct Invert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Invert a clip once and save it, so `edit --inversion FILE` can try many prompts.",
        discussion: "Use the same --steps, --inversion_steps, --size and --model for the edits.\n\n" + settingsHelp)
    @Argument(help: "Input video or image sequence.") var input: String
    @Argument(help: "Inversion file to write (safetensors).") var inversionFile: String
    @OptionGroup var settings: SettingOptions

    func run() throws {
        let settings = try settings.settings()
        let pipeline = try EditPipeline(model: try loadModel(settings), settings: settings)
        let clip = try readClip(input)
        let inversion = try pipeline.invert(clip.frames, progress: ProgressDisplay().handler)
        try inversion.save(to: inversionFile)
        printErr("wrote \(inversionFile)")
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model folder or single-file checkpoint (what was recognised, parameter counts, dtypes) and what runs it here (CPU features, kernels, OpenBLAS).")
    @Argument(help: "Diffusers model folder or single-file .safetensors checkpoint.") var model: String

    func run() throws {
        let loaded = try StableDiffusionModel(path: model)
        print(describeModel(loaded))
        print(KernelCPU.report)
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a single-file checkpoint as a diffusers folder (safetensors weights, configs, tokenizer, scheduler).",
        discussion: "The folder loads in this engine and in diffusers (StableDiffusionPipeline.from_pretrained).")
    @Argument(help: "Single-file .safetensors checkpoint (SD 1.x or 2.x, original layout).") var checkpoint: String
    @Argument(help: "Folder to write (must not exist).") var directory: String
    @Option(help: "What the model predicts, for scheduler_config.json: auto, epsilon or v (SD 2.x files without metadata need epsilon or v).")
    var prediction = "auto"

    func run() throws {
        var settings = EditSettings()
        do { try SettingsTable.set("prediction", prediction, in: &settings) } catch let error as EditError {
            throw ValidationError("--\(error.description.dropFirst("invalid settings: ".count))")
        }
        let source = try SingleFileCheckpoint(path: checkpoint)
        let type: String
        switch settings.prediction {
        case "epsilon": type = "epsilon"
        case "v": type = "v_prediction"
        default:
            guard let known = source.predictionType else {
                throw CommandError("\(checkpoint) does not say what it predicts (\(source.predictionSource)): pass --prediction epsilon (512x512 base models) or --prediction v (768x768 models)")
            }
            type = known
        }
        try source.convert(to: directory, prediction: type)
        print("wrote \(directory) (\(source.family.rawValue), prediction_type \(type))")
    }
}

struct InstallModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install-model",
        abstract: "Validate a model (diffusers folder or single-file checkpoint) and install it as the default model (<prefix>/share/tokenflow/model).")
    @Argument(help: "Diffusers model folder or single-file .safetensors checkpoint.") var directory: String
    @Flag(help: "Link to the folder instead of copying it.") var link = false
    @Option(help: "Install here instead of the default model folder.") var destination: String?

    func run() throws {
        _ = try StableDiffusionModel(path: directory) // refuses anything the engine cannot load
        guard let target = destination ?? ModelLocation.installedModel(besideBinary: executablePath()) else {
            throw CommandError("cannot tell where this executable is installed; pass --destination DIR")
        }
        try installModel(from: directory, to: target, link: link)
        print("installed \(directory) as \(target)")
    }
}
