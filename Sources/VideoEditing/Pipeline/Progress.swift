import Tensors

/// What a long-running edit reports, at least once per UNet call and once per frame encoded or decoded.
public struct EditProgress: Sendable, Equatable {
    public enum Stage: String, Sendable, CaseIterable {
        case encoding, inversion, sampling, decoding
    }
    public let stage: Stage
    /// Units done in this stage (frames for encoding/decoding, UNet calls otherwise) and the stage's total.
    public let completed: Int
    public let total: Int
    /// Denoising steps done in this stage and the stage's step count (for encoding/decoding: frames),
    /// so no host has to re-derive the engine's step counts from the settings.
    public let step: Int
    public let steps: Int
    /// The window of a windowed stream (`StreamEdit`) being edited, from 0.
    public var window = 0

    public init(stage: Stage, completed: Int, total: Int, step: Int, steps: Int) {
        self.stage = stage
        self.completed = completed
        self.total = total
        self.step = step
        self.steps = steps
    }
}

/// Called with each progress report; returning false cancels the run (it then throws EditError.cancelled).
public typealias ProgressHandler = (EditProgress) -> Bool

/// Forwards progress to the caller's handler and turns a "stop" answer into EditError.cancelled.
public struct ProgressReporter {
    let handler: ProgressHandler?

    public init(_ handler: ProgressHandler?) { self.handler = handler }

    /// Frame `completed` of `total` encoded or decoded.
    func frame(_ stage: EditProgress.Stage, _ completed: Int, of total: Int) throws {
        try send(EditProgress(stage: stage, completed: completed, total: total, step: completed, steps: total))
    }

    /// UNet call `completed` of `total`, in a stage of `steps` steps with the same number of calls each.
    public func unetCall(_ stage: EditProgress.Stage, _ completed: Int, of total: Int, steps: Int) throws {
        let callsPerStep = max(total / max(steps, 1), 1)
        try send(EditProgress(stage: stage, completed: completed, total: total, step: completed / callsPerStep, steps: steps))
    }

    private func send(_ progress: EditProgress) throws {
        if let handler, !handler(progress) { throw EditError.cancelled }
    }
}

/// Throws `EditError.notFinite` naming `place` (stage, step, frames) when `x` holds a NaN or an infinity,
/// so a broken model ends the edit with a message instead of flowing into frames (or trapping there).
func requireFinite(_ x: Tensor, _ place: @autoclosure () -> String) throws {
    if !isFinite(x) { throw EditError.notFinite(place()) }
}
