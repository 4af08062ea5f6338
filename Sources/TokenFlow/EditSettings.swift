/// Which editing method a session runs.
public enum EditMethod: String, Sendable, CaseIterable {
    /// TokenFlow with plug-and-play feature injection (the paper's main method).
    case tokenflow
    /// TokenFlow propagation on an SDEdit schedule: start part-way (`strength`) from the inverted noise.
    case sdedit
    /// Inversion followed by plain DDIM sampling with the inversion prompt: reproduces the input.
    case reconstruct
}

/// The size frames are processed at. Frames are resampled to it and the results back to the input size.
public enum WorkingSize: Sendable, Equatable {
    /// Longer side scaled to this many pixels, aspect kept, both sides rounded to a multiple of 8.
    case longerSide(Int)
    /// The input's own size rounded to a multiple of 8.
    case input
    /// Exactly this size (both multiples of 8).
    case exact(width: Int, height: Int)

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

/// Everything that controls an edit; defaults follow the reference implementation.
public struct EditSettings: Sendable, Equatable {
    public var method: EditMethod = .tokenflow
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
    public var seed: UInt64 = 1
    /// Optional explicit keyframes: for each sampling step, one absolute frame index per batch.
    public var keyframes: [[Int]]? = nil
    public var workingSize: WorkingSize = .longerSide(512)

    public init() {}

    /// Checks every setting that does not depend on the clip or the model.
    public func validate() throws {
        func fail(_ message: String) throws -> Never { throw EditError.invalidSettings(message) }
        if steps < 1 || steps > 1000 { try fail("steps must be between 1 and 1000, got \(steps)") }
        if inversionSteps < 1 || inversionSteps > 1000 {
            try fail("inversion steps must be between 1 and 1000, got \(inversionSteps)")
        }
        if batchSize < 1 { try fail("batch size must be at least 1, got \(batchSize)") }
        for (name, value) in [("pnp_attn_t", pnpAttentionThreshold), ("pnp_f_t", pnpFeatureThreshold), ("strength", strength)] {
            if !(value >= 0 && value <= 1) { try fail("\(name) must be in [0, 1], got \(value)") }
        }
        if !guidanceScale.isFinite { try fail("guidance scale must be a finite number") }
        if case .exact(let w, let h) = workingSize, w < 8 || h < 8 || w % 8 != 0 || h % 8 != 0 {
            try fail("working size must be multiples of 8 (at least 8x8), got \(w)x\(h)")
        }
        if case .longerSide(let side) = workingSize, side < 8 { try fail("working size longer side must be >= 8, got \(side)") }
    }
}

public enum EditError: Error, CustomStringConvertible, Equatable {
    case invalidSettings(String)
    case invalidClip(String)
    case cancelled
    case model(String)

    public var description: String {
        switch self {
        case .invalidSettings(let message): return "invalid settings: \(message)"
        case .invalidClip(let message): return "invalid clip: \(message)"
        case .cancelled: return "cancelled"
        case .model(let message): return "model error: \(message)"
        }
    }
}
