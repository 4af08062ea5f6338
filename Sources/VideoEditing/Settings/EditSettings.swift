import Tensors

/// Every setting of the library, with its default. Hosts never set these fields directly: they go through
/// `SettingsTable` (by name, from text), which is the one place that declares each setting's name, range,
/// help and the methods that use it. The defaults here are the only ones: the table reads them.
/// Defaults follow the reference TokenFlow implementation.
public struct EditSettings: Sendable, Equatable {
    /// Model folder or single-file checkpoint; "" = $TOKENFLOW_MODEL, then the model installed with the library (`ModelLocation`).
    public var model: String = ""
    /// What the model predicts: "auto" (what the model says: a folder's scheduler config, a checkpoint's
    /// metadata or family), "epsilon" (noise) or "v" (velocity, SD 2.x 768 models); the latter two override.
    public var prediction: String = "auto"
    /// Editing method, by name (`EditMethods`).
    public var method: String = EditMethods.defaultMethod.name
    public var prompt: String = ""
    public var negativePrompt: String = "ugly, blurry, low res, unrealistic, unaesthetic"
    /// Describes the source video; conditions the inversion and the source branch.
    public var inversionPrompt: String = ""
    public var guidanceScale: Float = 7.5
    /// Sampling (denoising) steps.
    public var steps: Int = 50
    /// DDIM inversion steps; the sampling timesteps must be among the inversion timesteps
    /// (true when inversionSteps is a multiple of steps).
    public var inversionSteps: Int = 50
    /// Frames per batch; one keyframe is drawn from each batch at every step.
    public var batchSize: Int = 8
    /// Fraction of the sampling steps with self-attention query/key injection.
    public var pnpAttentionThreshold: Float = 0.5
    /// Fraction of the sampling steps with resnet feature injection.
    public var pnpFeatureThreshold: Float = 0.8
    /// SDEdit: fraction of the schedule that is run (1 = from pure inverted noise).
    public var strength: Float = 0.8
    /// Seed of the keyframe choice.
    public var seed: UInt64 = 1
    public var workingSize: WorkingSize = .longerSide(512)
    /// Worker threads, 0 = one per core. Process-wide: applied by whoever loads the model (C API, CLI).
    public var threads: Int = 0
    /// Frames a host edits together per run, 0 = the whole stream. Read by the hosts (FFmpeg, GStreamer).
    public var window: Int = 0
    /// Keyframes a keyframe's extended attention covers at most (`KeyframePropagation`): up to this many
    /// keyframes the edit is exactly the reference's; beyond, the cost per frame stays constant.
    public var keyframeContext: Int = 8
    /// COVE (Tests/Fixtures/COVE-DECISIONS.md §1): correspondences per token and other frame (K), the
    /// correspondence window (l x l latent tokens), the token-merge ratio, the DIFT timestep, frames per group.
    public var coveK: Int = 3
    public var coveWindow: Int = 9
    public var coveMerge: Float = 0.5
    public var coveTimestep: Int = 261
    public var coveFrames: Int = 32
    /// MiB of latents kept in memory; the rest of a long clip's latents go to a temporary file.
    public var latentMemory: Int = 1024
    /// MiB of working tensors one edit may hold at once, 0 = no limit (`MemoryBudget`). The model's
    /// weights and the latents kept under `latentMemory` are not counted.
    public var memoryLimit: Int = 0
    /// Folder for that temporary file; "" = $TMPDIR, then /tmp.
    public var temporaryDirectory: String = ""
    /// Precision of the model's products with its weights: "fp32" or "bf16" (`ComputePrecision`).
    public var precision: String = ComputePrecision.float32.rawValue

    public init() {}
}

/// The size frames are processed at. Frames are resampled to it and the results back to the input size.
public enum WorkingSize: Sendable, Equatable {
    /// Longer side scaled to this many pixels, aspect kept, both sides rounded to a multiple of 8.
    case longerSide(Int)
    /// The input's own size rounded to a multiple of 8.
    case input
    /// Exactly this size (both multiples of 8).
    case exact(width: Int, height: Int)

    /// Largest side accepted anywhere (16K video); keeps every pixel and latent count far inside Int.
    public static let maxSide = 16384

    /// The processing size for an input of `width` x `height`.
    public func resolve(width: Int, height: Int) -> (width: Int, height: Int) {
        func roundTo8(_ value: Double) -> Int { max(8, Int((value / 8).rounded()) * 8) }
        switch self {
        case .longerSide(let side):
            let scale = Double(side) / Double(max(width, height))
            return (roundTo8(Double(width) * scale), roundTo8(Double(height) * scale))
        case .input:
            return (roundTo8(Double(width)), roundTo8(Double(height)))
        case .exact(let w, let h):
            return (w, h)
        }
    }
}

public enum EditError: Error, CustomStringConvertible, Equatable {
    case invalidSettings(String)
    case invalidClip(String)
    case cancelled
    case outOfMemory(String)
    /// The temporary latent file could not be created, written or read.
    case storage(String)
    /// The model produced NaN or infinite values (named: stage, step, frames).
    case notFinite(String)

    public var description: String {
        switch self {
        case .invalidSettings(let message): return "invalid settings: \(message)"
        case .invalidClip(let message): return "invalid clip: \(message)"
        case .cancelled: return "cancelled"
        case .outOfMemory(let message): return "out of memory: \(message)"
        case .storage(let message): return "storage: \(message)"
        case .notFinite(let message):
            return "the model produced NaN or infinite values \(message); its weights may be broken (some Stable Diffusion 1.x checkpoints produce NaN), or a setting such as guidance is too large"
        }
    }
}

extension EditSettings {
    /// Every prompt an edit embeds (COVE's DIFT uses the empty one). A model loaded for these settings embeds
    /// them before its UNet loads (`StableDiffusionModel(path:embedding:)`), so the text encoder is never in
    /// memory beside it.
    public var promptsToEmbed: [String] { [prompt, negativePrompt, inversionPrompt, ""] }
}
