import ArgumentParser
import CVideoIO
import Diffusion
import Foundation
import Tensors
import VideoEditing

/// A failure while running a command (not a usage error, so no usage text is printed).
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A NUL-terminated C message buffer as a String.
func cMessage(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func printErr(_ message: String) {
    FileHandle.standardError.write((message + "\n").data(using: .utf8)!)
}

/// The running executable, links resolved (the install prefix is found beside it).
func executablePath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// --keyframes FILE: JSON, one list of keyframe indices per sampling step (`KeyframeFile`).
func readKeyframes(_ path: String?) throws -> [[Int]]? {
    guard let path else { return nil }
    do { return try KeyframeFile.read(path) } catch EditError.invalidSettings(let message) { throw ValidationError(message) }
}

func installModel(from source: String, to target: String, link: Bool) throws {
    let manager = FileManager.default
    let parent = URL(fileURLWithPath: target).deletingLastPathComponent().path
    try manager.createDirectory(atPath: parent, withIntermediateDirectories: true)
    // Build next to the target and swap it in, so a failed copy never leaves half a model installed.
    let staging = target + ".installing-\(getpid())"
    try? manager.removeItem(atPath: staging)
    do {
        if link {
            try manager.createSymbolicLink(atPath: staging, withDestinationPath: URL(fileURLWithPath: source).standardizedFileURL.path)
        } else {
            try copyFollowingLinks(from: source, to: staging)
        }
        if manager.fileExists(atPath: target) || (try? manager.destinationOfSymbolicLink(atPath: target)) != nil {
            try manager.removeItem(atPath: target)
        }
        try manager.moveItem(atPath: staging, toPath: target)
    } catch {
        try? manager.removeItem(atPath: staging)
        throw error
    }
}

/// Copies a folder, replacing symbolic links by what they point to: Hugging Face cache snapshots are
/// folders of links into a blob store, which a plain copy would leave dangling.
func copyFollowingLinks(from source: String, to destination: String) throws {
    let manager = FileManager.default
    let resolved = URL(fileURLWithPath: source).resolvingSymlinksInPath().path
    var isDirectory: ObjCBool = false
    guard manager.fileExists(atPath: resolved, isDirectory: &isDirectory) else {
        throw CommandError("cannot copy '\(source)': it does not exist (or is a dangling link)")
    }
    if isDirectory.boolValue {
        try manager.createDirectory(atPath: destination, withIntermediateDirectories: true)
        for name in try manager.contentsOfDirectory(atPath: resolved) {
            try copyFollowingLinks(from: "\(resolved)/\(name)", to: "\(destination)/\(name)")
        }
    } else {
        try manager.copyItem(atPath: resolved, toPath: destination)
    }
}

/// A decoded input clip: frames plus what the output needs to keep (timestamps, time base, rate).
struct DecodedClip {
    var frames: [Frame]
    var pts: [Int64]
    var timeBase: (Int32, Int32)
    var frameRate: (Int32, Int32)
}

func readClip(_ path: String) throws -> DecodedClip {
    var clip = VideoClip()
    var error = [CChar](repeating: 0, count: 1024)
    guard video_read(path, &clip, &error, error.count) == 0 else {
        throw CommandError(cMessage(error))
    }
    defer { video_clip_free(&clip) }
    let frameBytes = Int(clip.width) * Int(clip.height) * 3
    var frames: [Frame] = []
    for index in 0..<Int(clip.frame_count) {
        let start = clip.pixels + index * frameBytes
        frames.append(Frame(width: Int(clip.width), height: Int(clip.height), pixels: Array(UnsafeBufferPointer(start: start, count: frameBytes))))
    }
    let pts = Array(UnsafeBufferPointer(start: clip.pts, count: Int(clip.frame_count)))
    return DecodedClip(frames: frames, pts: pts, timeBase: (clip.time_base_num, clip.time_base_den),
                       frameRate: (clip.frame_rate_num, clip.frame_rate_den))
}

func writeClip(_ frames: [Frame], like source: DecodedClip, to path: String, audioFrom: String) throws {
    precondition(frames.count == source.pts.count)
    var clip = VideoClip()
    guard video_clip_allocate(&clip, Int32(frames[0].width), Int32(frames[0].height), Int32(frames.count)) == 0 else {
        throw CommandError("out of memory preparing the output")
    }
    defer { video_clip_free(&clip) }
    for (index, frame) in frames.enumerated() {
        frame.pixels.withUnsafeBufferPointer { (clip.pixels + index * frame.pixels.count).update(from: $0.baseAddress!, count: $0.count) }
        clip.pts[index] = source.pts[index]
    }
    (clip.time_base_num, clip.time_base_den) = source.timeBase
    (clip.frame_rate_num, clip.frame_rate_den) = source.frameRate
    var error = [CChar](repeating: 0, count: 1024)
    guard video_write(path, &clip, audioFrom, &error, error.count) == 0 else {
        throw CommandError(cMessage(error))
    }
}

func runEdit(input: String, output: String, settings: EditSettings, keyframes: [[Int]]?, inversionFile: String?,
             saveLatents: String?, saveCorrespondences: String?) throws {
    let pipeline = try EditPipeline(model: try loadModel(settings), settings: settings)
    printErr("running on \(KernelCPU.summary(precision: pipeline.precision))")
    let cove = pipeline.method as? Cove
    if saveCorrespondences != nil && cove == nil {
        throw CommandError("--save-correspondences is for method \(Cove.name), not \(settings.method)")
    }
    let clip = try readClip(input)
    let display = ProgressDisplay()
    let result: EditResult
    if let file = inversionFile {
        let inversion = try Inversion.load(from: file)
        guard inversion.latents.shape[0] == clip.frames.count,
              inversion.inputWidth == clip.frames[0].width, inversion.inputHeight == clip.frames[0].height else {
            throw CommandError("inversion '\(file)' was made from a clip of \(inversion.latents.shape[0]) frames at \(inversion.inputWidth)x\(inversion.inputHeight), not this input (\(clip.frames.count) frames at \(clip.frames[0].width)x\(clip.frames[0].height))")
        }
        result = try pipeline.edit(inversion, keyframes: keyframes, progress: display.handler)
    } else {
        result = try pipeline.run(clip.frames, keyframes: keyframes, progress: display.handler)
    }
    if let saveLatents { try saveLatentFile(result, to: saveLatents) }
    if let saveCorrespondences, let cove {
        // The edit's clip is gone; encoding the frames again costs far less than the edit did.
        let frames = pipeline.makeClip()
        for frame in clip.frames { try frames.append(frame) }
        try cove.writeCorrespondences(of: frames, to: saveCorrespondences)
    }
    try writeClip(result.frames, like: clip, to: output, audioFrom: input)
    printErr("wrote \(output) (\(result.frames.count) frames)")
}

/// --save-latents: inverted/<t> for each kept timestep and the final latents, as safetensors.
func saveLatentFile(_ result: EditResult, to path: String) throws {
    var tensors: [(name: String, tensor: Tensor)] = [("final", result.finalLatents)]
    for t in result.inversion.kept.keys.sorted(by: >) { tensors.append(("inverted/\(t)", result.inversion.kept[t]!)) }
    try writeSafetensors(tensors, to: path)
}

func describeModel(_ model: StableDiffusionModel) -> String {
    let unet = model.unet.config, vae = model.vae.config, text = model.textEncoderConfig
    var lines = ["model: \(model.path)"]
    if let checkpoint = model.checkpoint {
        lines.append("format: single-file checkpoint (original layout), \(checkpoint.family.rawValue)")
    }
    lines.append("unet: block_out_channels \(unet.blockOutChannels), heads per level \(unet.headsPerLevel), layers_per_block \(unet.layersPerBlock), cross_attention_dim \(unet.crossAttentionDim), \(unet.useLinearProjection ? "linear" : "conv") projections, sample_size \(unet.sampleSize)")
    lines.append("vae: block_out_channels \(vae.blockOutChannels), latent_channels \(vae.latentChannels), scaling_factor \(vae.scalingFactor)")
    lines.append("text_encoder: hidden_size \(text.hiddenSize), layers \(text.numHiddenLayers), heads \(text.numAttentionHeads), activation \(text.hiddenAct)")
    lines.append("tokenizer: pads with token \(model.tokenizer.padID)\(model.checkpoint == nil ? "" : " (the built-in CLIP vocabulary)")")
    let scheduler = model.schedulerConfig
    let prediction = model.unknownPrediction.map { "unknown (\($0)): edits need --prediction epsilon or v" }
        ?? scheduler.predictionType + (model.checkpoint.map { " (\($0.predictionSource))" } ?? "")
    lines.append("scheduler: \(scheduler.betaSchedule) betas, prediction_type \(prediction), timestep_spacing \(scheduler.timestepSpacing), steps_offset \(scheduler.stepsOffset)")
    if let checkpoint = model.checkpoint {
        for part in SingleFileCheckpoint.Part.allCases {
            lines.append("\(part.rawValue): \(describeParameters(checkpoint.parameterCounts[part] ?? [:]))")
        }
        if !checkpoint.unusedTensors.isEmpty {
            let shown = checkpoint.unusedTensors.prefix(4).joined(separator: ", ")
            lines.append("not used: \(checkpoint.unusedTensors.count) tensors (\(shown)\(checkpoint.unusedTensors.count > 4 ? ", ..." : ""))")
        }
        return lines.joined(separator: "\n")
    }
    for component in ["unet", "vae", "text_encoder"] {
        let directory = "\(model.path)/\(component)"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        for name in files {
            guard let file = try? SafetensorsFile(path: "\(directory)/\(name)") else { continue }
            var counts: [SafetensorsDType: Int] = [:]
            for tensor in file.tensorNames {
                guard let info = file.info(tensor) else { continue }
                counts[info.dtype, default: 0] += info.shape.reduce(1, *)
            }
            lines.append("\(component)/\(name): \(describeParameters(counts))")
        }
    }
    return lines.joined(separator: "\n")
}

/// "1.2M parameters (F16)": the total and the dtypes present.
func describeParameters(_ counts: [SafetensorsDType: Int]) -> String {
    let dtypes = counts.keys.map(\.rawValue).sorted().joined(separator: ", ")
    return "\(formatCount(counts.values.reduce(0, +))) parameters (\(dtypes))"
}

func formatCount(_ n: Int) -> String {
    n >= 1_000_000 ? String(format: "%.1fM", Double(n) / 1e6) : n >= 1000 ? String(format: "%.1fk", Double(n) / 1e3) : "\(n)"
}

/// A progress bar with ETA on a terminal; plain lines (at most one a second, plus each stage's end) otherwise.
final class ProgressDisplay {
    let isTerminal = isatty(STDERR_FILENO) == 1
    var stageStart = Date()
    var stage: EditProgress.Stage?
    var lastLine = Date.distantPast

    var handler: ProgressHandler { { [self] in show($0); return true } }

    func show(_ report: EditProgress) {
        if report.stage != stage { stage = report.stage; stageStart = Date() }
        let elapsed = Date().timeIntervalSince(stageStart)
        let remaining = report.completed > 0 ? elapsed / Double(report.completed) * Double(report.total - report.completed) : 0
        let eta = report.completed < report.total ? " ETA \(formatDuration(remaining))" : " done in \(formatDuration(elapsed))"
        let unit = report.stage == .encoding || report.stage == .decoding ? "frame" : "step"
        let label = "\(report.stage.rawValue) \(unit) \(report.step)/\(report.steps)"
        if isTerminal {
            let width = 30, filled = report.total > 0 ? width * report.completed / report.total : width
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write("\r\u{1B}[2K[\(bar)] \(label)\(eta)".data(using: .utf8)!)
            if report.completed == report.total { FileHandle.standardError.write("\n".data(using: .utf8)!) }
        } else if report.completed == report.total || Date().timeIntervalSince(lastLine) >= 1 {
            lastLine = Date()
            printErr("progress: \(label)\(eta)")
        }
    }
}

func formatDuration(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    return total >= 60 ? "\(total / 60)m\(String(format: "%02d", total % 60))s" : "\(total)s"
}
