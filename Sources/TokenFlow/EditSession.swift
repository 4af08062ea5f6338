import Diffusion
import Tensors

/// What a long-running session reports, at least once per UNet call.
public struct EditProgress: Sendable, Equatable {
    public enum Stage: String, Sendable {
        case encoding, inversion, sampling, decoding
    }
    public let stage: Stage
    /// Units done in this stage (frames for encoding/decoding, UNet calls otherwise) and their total.
    public let completed: Int
    public let total: Int

    public init(stage: Stage, completed: Int, total: Int) {
        self.stage = stage
        self.completed = completed
        self.total = total
    }
}

/// Called with each progress report; returning false cancels the run (it then throws EditError.cancelled).
public typealias ProgressHandler = (EditProgress) -> Bool

/// The source clip prepared for editing: clean latents and the DDIM-inverted latents.
///
/// Memory: `kept` holds one latent per frame per sampling step, 4 x (H/8) x (W/8) floats each —
/// 64 KiB per frame per step at 512x512 (3.2 MiB per frame for 50 steps).
public struct Inversion: Sendable {
    /// VAE latents (mean x scaling factor), [N, 4, H/8, W/8].
    public let latents: Tensor
    /// Inverted latents at each sampling timestep, by timestep.
    public let kept: [Int: Tensor]
    /// The inversion's final latents and their timestep (the noisiest).
    public let last: Tensor
    public let lastTimestep: Int
    public let inputWidth: Int, inputHeight: Int
    public let workingWidth: Int, workingHeight: Int
    /// The prompt and step count the inversion ran with (the source branch reuses the prompt).
    public let inversionPrompt: String
    public let inversionSteps: Int

    public init(latents: Tensor, kept: [Int: Tensor], last: Tensor, lastTimestep: Int, inputWidth: Int, inputHeight: Int,
                workingWidth: Int, workingHeight: Int, inversionPrompt: String, inversionSteps: Int) {
        self.latents = latents
        self.kept = kept
        self.last = last
        self.lastTimestep = lastTimestep
        self.inputWidth = inputWidth
        self.inputHeight = inputHeight
        self.workingWidth = workingWidth
        self.workingHeight = workingHeight
        self.inversionPrompt = inversionPrompt
        self.inversionSteps = inversionSteps
    }
}

public struct EditResult: Sendable {
    public let frames: [Frame]
    /// Latents after the last sampling step (before VAE decode), [N, 4, H/8, W/8].
    public let finalLatents: Tensor
    public let inversion: Inversion
}

/// Edits clips with one model and one set of settings. Not thread-safe: use one session per thread.
public final class EditSession {
    public let model: StableDiffusionModel
    public let settings: EditSettings
    let samplingScheduler: DDIMScheduler
    let inversionScheduler: DDIMScheduler
    /// Called with the latents after each TokenFlow/SDEdit sampling step (step index, timestep), e.g.
    /// to localise a divergence from a reference run.
    public var onStep: ((Int, Int, Tensor) -> Void)?

    public init(model: StableDiffusionModel, settings: EditSettings) throws {
        try settings.validate()
        self.model = model
        self.settings = settings
        do {
            var sampling = try DDIMScheduler(config: model.schedulerConfig)
            try sampling.setTimesteps(settings.steps)
            var inversion = try DDIMScheduler(config: model.schedulerConfig)
            try inversion.setTimesteps(settings.inversionSteps)
            samplingScheduler = sampling
            inversionScheduler = inversion
        } catch let error as ModelError {
            throw EditError.invalidSettings("\(error)")
        }
        if settings.method != .reconstruct {
            let inverted = Set(inversionScheduler.timesteps)
            if let missing = samplingScheduler.timesteps.first(where: { !inverted.contains($0) }) {
                throw EditError.invalidSettings("sampling timestep \(missing) (steps \(settings.steps)) is not among the inversion timesteps (inversion steps \(settings.inversionSteps)); use inversion steps that are a multiple of steps")
            }
        }
        if settings.method == .sdedit && sdeditTimesteps.isEmpty {
            throw EditError.invalidSettings("strength \(settings.strength) with \(settings.steps) steps leaves no sampling step")
        }
    }

    /// Inversion, editing and decoding of a whole clip.
    public func run(_ frames: [Frame], progress: ProgressHandler? = nil) throws -> EditResult {
        let inversion = try invert(frames, progress: progress)
        return try edit(inversion, progress: progress)
    }

    // MARK: - Preprocessing

    /// VAE encode and DDIM inversion with the inversion prompt.
    public func invert(_ frames: [Frame], progress: ProgressHandler? = nil) throws -> Inversion {
        try validateClip(frames)
        let reporter = ProgressReporter(handler: progress)
        let (inputWidth, inputHeight) = (frames[0].width, frames[0].height)
        let (width, height) = settings.workingSize.resolve(width: inputWidth, height: inputHeight)
        let vae = model.vae
        var encoded: [Tensor] = []
        for (index, frame) in frames.enumerated() {
            encoded.append(scaled(try vae.encodeMean(imageTensor(frame, width: width, height: height)), by: vae.scalingFactor))
            try reporter.report(.encoding, index + 1, frames.count)
        }
        let latents = concat(encoded, axis: 0)

        let condition = try model.embed(settings.inversionPrompt)
        let ascending = Array(inversionScheduler.timesteps.reversed())
        let keep = Set(samplingScheduler.timesteps)
        let alphas = inversionScheduler.alphasCumprod
        let x = latents.copy()
        var kept: [Int: Tensor] = [:]
        let batches = batchRanges(count: frames.count)
        for (i, t) in ascending.enumerated() {
            // DDIM run backwards: eps at t from the current (less noisy) latents, x0 from the previous
            // level, then forward to level t (the reference's ddim_inversion).
            let alphaT = alphas[t]
            let alphaPrevious = i > 0 ? alphas[ascending[i - 1]] : inversionScheduler.finalAlphaCumprod
            for (b, range) in batches.enumerated() {
                let batch = x.slice(range).copy()
                let eps = noisePrediction(batch, timestep: t, context: repeated(condition, range.count), alpha: alphaT)
                let x0 = linearCombination(batch, 1 / alphaPrevious.squareRoot(), eps, -(1 - alphaPrevious).squareRoot() / alphaPrevious.squareRoot())
                let next = linearCombination(x0, alphaT.squareRoot(), eps, (1 - alphaT).squareRoot())
                x.slice(range).mutablePointer.update(from: next.pointer, count: next.count)
                try reporter.report(.inversion, i * batches.count + b + 1, ascending.count * batches.count)
            }
            if keep.contains(t) { kept[t] = x.copy() }
        }
        return Inversion(latents: latents, kept: kept, last: x, lastTimestep: ascending.last!,
                         inputWidth: inputWidth, inputHeight: inputHeight, workingWidth: width, workingHeight: height,
                         inversionPrompt: settings.inversionPrompt, inversionSteps: settings.inversionSteps)
    }

    /// UNet output as epsilon (v-prediction models are converted with the sample's alpha).
    func noisePrediction(_ x: Tensor, timestep: Int, context: Tensor, alpha: Float, hooks: UNetHooks? = nil) -> Tensor {
        let output = model.unet(x, timesteps: [Float(timestep)], context: context, hooks: hooks)
        guard samplingScheduler.prediction == .vPrediction else { return output }
        return linearCombination(output, alpha.squareRoot(), x, (1 - alpha).squareRoot())
    }

    // MARK: - Editing

    /// Sampling from the inversion with the session's method, then VAE decode at the input size.
    public func edit(_ inversion: Inversion, progress: ProgressHandler? = nil) throws -> EditResult {
        if inversion.inversionSteps != settings.inversionSteps {
            throw EditError.invalidSettings("the inversion was made with \(inversion.inversionSteps) inversion steps, the settings ask for \(settings.inversionSteps)")
        }
        let reporter = ProgressReporter(handler: progress)
        let final: Tensor
        switch settings.method {
        case .reconstruct: final = try reconstruct(inversion, reporter)
        case .tokenflow, .sdedit: final = try tokenflowSample(inversion, reporter)
        }
        var frames: [Frame] = []
        let count = final.shape[0]
        for index in 0..<count {
            let image = try model.vae.decode(scaled(final.slice(index..<(index + 1)), by: 1 / model.vae.scalingFactor))
            frames.append(frame(from: image, width: inversion.inputWidth, height: inversion.inputHeight))
            try reporter.report(.decoding, index + 1, count)
        }
        return EditResult(frames: frames, finalLatents: final, inversion: inversion)
    }

    /// Plain DDIM sampling over the inversion schedule with the inversion prompt (no guidance).
    func reconstruct(_ inversion: Inversion, _ reporter: ProgressReporter) throws -> Tensor {
        let condition = try model.embed(inversion.inversionPrompt)
        let x = inversion.last.copy()
        let timesteps = inversionScheduler.timesteps
        let batches = batchRanges(count: x.shape[0])
        for (i, t) in timesteps.enumerated() {
            for (b, range) in batches.enumerated() {
                let batch = x.slice(range).copy()
                let output = model.unet(batch, timesteps: [Float(t)], context: repeated(condition, range.count))
                let previous = inversionScheduler.step(modelOutput: output, timestep: t, sample: batch).prevSample
                x.slice(range).mutablePointer.update(from: previous.pointer, count: previous.count)
                try reporter.report(.sampling, i * batches.count + b + 1, timesteps.count * batches.count)
            }
        }
        return x
    }

    /// The sampling timesteps an SDEdit run uses: the last `strength` fraction of the schedule.
    var sdeditTimesteps: [Int] {
        let all = samplingScheduler.timesteps
        let count = min(scheduleStepCount(all.count, fraction: settings.strength), all.count)
        return Array(all.suffix(count))
    }

    /// What every TokenFlow/SDEdit step needs, prepared once per edit.
    struct SamplingPlan {
        let timesteps: [Int]
        let keyframes: [[Int]]
        let batches: [Range<Int>]
        let featureInjection: Set<Int>
        let queryKeyInjection: Set<Int>
        /// Text embeddings [1, 77, D] of the three branches: source (inversion prompt), uncond, cond.
        let source: Tensor, negative: Tensor, prompt: Tensor

        func context(_ n: Int) -> Tensor {
            concat([repeated(source, n), repeated(negative, n), repeated(prompt, n)], axis: 0)
        }
    }

    func samplingPlan(_ inversion: Inversion) throws -> SamplingPlan {
        let frameCount = inversion.latents.shape[0]
        let batches = batchRanges(count: frameCount)
        let pnp = settings.method == .tokenflow
        let schedule = samplingScheduler.timesteps
        func injected(_ fraction: Float) -> Set<Int> {
            pnp ? Set(schedule.prefix(scheduleStepCount(settings.steps, fraction: fraction))) : []
        }
        return SamplingPlan(
            timesteps: editTimesteps, keyframes: try keyframeSchedule(frameCount: frameCount, batches: batches), batches: batches,
            featureInjection: injected(settings.pnpFeatureThreshold), queryKeyInjection: injected(settings.pnpAttentionThreshold),
            source: try model.embed(inversion.inversionPrompt), negative: try model.embed(settings.negativePrompt),
            prompt: try model.embed(settings.prompt))
    }

    /// The latents sampling starts from: the clean latents noised to the first edit timestep with the
    /// noise the inversion found (x_T = sqrt(a_T) x_0 + sqrt(1 - a_T) eps, solved for eps).
    public func initialLatents(_ inversion: Inversion) -> Tensor {
        let alphaLast = samplingScheduler.alphasCumprod[inversion.lastTimestep]
        let eps = linearCombination(inversion.last, 1 / (1 - alphaLast).squareRoot(),
                                    inversion.latents, -alphaLast.squareRoot() / (1 - alphaLast).squareRoot())
        return samplingScheduler.addNoise(original: inversion.latents, noise: eps, timestep: editTimesteps[0])
    }

    /// One TokenFlow/SDEdit sampling step (`step` indexes `editTimesteps`) from latents `x`; for
    /// stepping through an edit, or checking a step against a reference from the reference's state.
    public func sampleStep(_ x: Tensor, step: Int, inversion: Inversion) throws -> Tensor {
        guard settings.method != .reconstruct, editTimesteps.indices.contains(step) else {
            throw EditError.invalidSettings("step \(step) is not a TokenFlow sampling step of these settings")
        }
        return try sampleStep(x, step: step, inversion: inversion, plan: try samplingPlan(inversion),
                              reporter: ProgressReporter(handler: nil))
    }

    func tokenflowSample(_ inversion: Inversion, _ reporter: ProgressReporter) throws -> Tensor {
        let plan = try samplingPlan(inversion)
        var x = initialLatents(inversion)
        for (step, t) in plan.timesteps.enumerated() {
            x = try sampleStep(x, step: step, inversion: inversion, plan: plan, reporter: reporter)
            onStep?(step, t, x)
        }
        return x
    }

    func sampleStep(_ x: Tensor, step: Int, inversion: Inversion, plan: SamplingPlan, reporter: ProgressReporter) throws -> Tensor {
        let t = plan.timesteps[step]
        guard let source = inversion.kept[t] else {
            throw EditError.invalidSettings("the inversion has no latents for timestep \(t); invert with these steps")
        }
        let hooks = TokenFlowHooks()
        hooks.injectFeatures = plan.featureInjection.contains(t)
        hooks.injectQueryKey = plan.queryKeyInjection.contains(t)
        let callsPerStep = 1 + plan.batches.count, totalCalls = plan.timesteps.count * callsPerStep

        // a) Keyframe pass: fills the hooks' per-block records; its prediction is not used.
        let keys = plan.keyframes[step]
        hooks.pass = .keyframes
        hooks.framesPerBranch = keys.count
        let keyLatents = gatherFrames(x, keys)
        _ = model.unet(concat([gatherFrames(source, keys), keyLatents, keyLatents], axis: 0),
                       timesteps: [Float(t)], context: plan.context(keys.count), hooks: hooks)
        try reporter.report(.sampling, step * callsPerStep + 1, totalCalls)

        // b) Batch passes with propagated self-attention, c) guidance and DDIM step per batch.
        let next = Tensor(uninitializedShape: x.shape)
        for (b, range) in plan.batches.enumerated() {
            hooks.pass = .batch(index: b, frames: range, batchSize: settings.batchSize)
            hooks.framesPerBranch = range.count
            let batch = x.slice(range)
            let output = model.unet(concat([source.slice(range), batch, batch], axis: 0),
                                    timesteps: [Float(t)], context: plan.context(range.count), hooks: hooks)
            let n = range.count
            let uncond = output.slice(n..<(2 * n)), cond = output.slice((2 * n)..<(3 * n))
            let guided = linearCombination(uncond, 1 - settings.guidanceScale, cond, settings.guidanceScale)
            let previous = samplingScheduler.step(modelOutput: guided, timestep: t, sample: batch.copy()).prevSample
            next.slice(range).mutablePointer.update(from: previous.pointer, count: previous.count)
            try reporter.report(.sampling, step * callsPerStep + b + 2, totalCalls)
        }
        return next
    }

    // MARK: - Batches and keyframes

    /// Consecutive frame ranges of batchSize frames; the last may be shorter.
    func batchRanges(count: Int) -> [Range<Int>] {
        stride(from: 0, to: count, by: settings.batchSize).map { $0..<min($0 + settings.batchSize, count) }
    }

    /// The sampling timesteps the session's method runs (empty for reconstruction, which samples over
    /// the inversion schedule without keyframes).
    public var editTimesteps: [Int] {
        switch settings.method {
        case .tokenflow: return samplingScheduler.timesteps
        case .sdedit: return sdeditTimesteps
        case .reconstruct: return []
        }
    }

    /// One keyframe (absolute frame index) per batch for every step the method runs (`editTimesteps`):
    /// the explicit schedule from the settings, or the one drawn with the seed.
    public func keyframeSchedule(frameCount: Int) throws -> [[Int]] {
        try keyframeSchedule(frameCount: frameCount, batches: batchRanges(count: frameCount))
    }

    func keyframeSchedule(frameCount: Int, batches: [Range<Int>]) throws -> [[Int]] {
        let steps = editTimesteps.count
        if let explicit = settings.keyframes {
            guard explicit.count == steps else {
                throw EditError.invalidSettings("keyframe schedule has \(explicit.count) steps, expected \(steps)")
            }
            for (step, keys) in explicit.enumerated() {
                guard keys.count == batches.count else {
                    throw EditError.invalidSettings("keyframe schedule step \(step) has \(keys.count) keyframes, expected one per batch (\(batches.count))")
                }
                for (b, key) in keys.enumerated() where !batches[b].contains(key) {
                    throw EditError.invalidSettings("keyframe \(key) at step \(step) is outside batch \(b) (frames \(batches[b].lowerBound)..<\(batches[b].upperBound))")
                }
            }
            return explicit
        }
        var generator = SplitMix64(seed: settings.seed)
        return (0..<steps).map { _ in batches.map { $0.lowerBound + Int(generator.next() % UInt64($0.count)) } }
    }
}

/// int(steps * fraction) as the reference computes it from a decimal: a Float like 0.7 is stored as
/// 0.69999999, and 10 x that must still give 7 steps, so products within 1e-4 of an integer round up to it.
public func scheduleStepCount(_ steps: Int, fraction: Float) -> Int {
    Int((Double(steps) * Double(fraction) + 1e-4).rounded(.down))
}

/// `x` [1, ...] repeated n times along the first dimension.
func repeated(_ x: Tensor, _ n: Int) -> Tensor { concat(Array(repeating: x, count: n), axis: 0) }

/// Frames `indices` of [N, ...] stacked in order.
func gatherFrames(_ x: Tensor, _ indices: [Int]) -> Tensor {
    concat(indices.map { x.slice($0..<($0 + 1)) }, axis: 0)
}

/// Forwards progress to the caller's handler and turns a "stop" answer into EditError.cancelled.
struct ProgressReporter {
    let handler: ProgressHandler?

    func report(_ stage: EditProgress.Stage, _ completed: Int, _ total: Int) throws {
        if let handler, !handler(EditProgress(stage: stage, completed: completed, total: total)) {
            throw EditError.cancelled
        }
    }
}
