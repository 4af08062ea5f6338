import Diffusion
import Tensors

/// A method that samples with TokenFlow's keyframe propagation (TokenFlow-PnP, SDEdit): it only chooses
/// the timesteps and the injection schedule.
public protocol PropagatingMethod: EditingMethod {
    var propagation: KeyframePropagation { get }
}

extension PropagatingMethod {
    public func checkClip(frameCount: Int, keyframes: [[Int]]?) throws {
        _ = try propagation.keyframeSchedule(frameCount: frameCount, explicit: keyframes)
    }

    public func sample(_ inversion: Inversion, keyframes: [[Int]]?, progress: ProgressReporter) throws -> Tensor {
        try propagation.sample(inversion, keyframes: keyframes, progress: progress)
    }
}

/// TokenFlow's sampling loop, shared by TokenFlow-PnP and SDEdit: at every step a keyframe pass (one
/// keyframe per batch, extended attention across the keyframes), then one pass per batch whose
/// self-attention is the keyframes' output propagated along the source's nearest-neighbour field
/// (`TokenFlowHooks`), classifier-free guidance and a DDIM step.
public struct KeyframePropagation {
    let context: MethodContext
    /// The sampling timesteps this method runs, in order.
    public let timesteps: [Int]
    /// Timesteps with PnP injection of resnet features / self-attention queries and keys.
    let featureInjection: Set<Int>
    let queryKeyInjection: Set<Int>

    init(_ context: MethodContext, timesteps: [Int], featureInjection: Set<Int> = [], queryKeyInjection: Set<Int> = []) throws {
        self.context = context
        self.timesteps = timesteps
        self.featureInjection = featureInjection
        self.queryKeyInjection = queryKeyInjection
        let settings = context.settings
        let inverted = Set(context.schedules.inversion.timesteps)
        if let missing = context.schedules.sampling.timesteps.first(where: { !inverted.contains($0) }) {
            throw EditError.invalidSettings("sampling timestep \(missing) (steps \(settings.steps)) is not among the inversion timesteps (inversion_steps \(settings.inversionSteps)); use inversion_steps that are a multiple of steps")
        }
    }

    var batchSize: Int { context.settings.batchSize }

    /// The latents sampling starts from: the clean latents noised to the first timestep with the noise
    /// the inversion found (x_T = sqrt(a_T) x_0 + sqrt(1 - a_T) eps, solved for eps).
    public func initialLatents(_ inversion: Inversion) -> Tensor {
        let scheduler = context.schedules.sampling
        let alphaLast = scheduler.alphasCumprod[inversion.lastTimestep]
        let eps = linearCombination(inversion.last, 1 / (1 - alphaLast).squareRoot(),
                                    inversion.latents, -alphaLast.squareRoot() / (1 - alphaLast).squareRoot())
        return scheduler.addNoise(original: inversion.latents, noise: eps, timestep: timesteps[0])
    }

    /// One keyframe (absolute frame index) per batch for every timestep: `explicit` after checking it
    /// fits the clip, or drawn with the seed.
    public func keyframeSchedule(frameCount: Int, explicit: [[Int]]?) throws -> [[Int]] {
        let batches = batchRanges(count: frameCount, size: batchSize)
        if let explicit {
            guard explicit.count == timesteps.count else {
                throw EditError.invalidSettings("keyframe schedule has \(explicit.count) steps, expected \(timesteps.count)")
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
        var generator = SplitMix64(seed: context.settings.seed)
        return timesteps.map { _ in batches.map { $0.lowerBound + Int(generator.next() % UInt64($0.count)) } }
    }

    func sample(_ inversion: Inversion, keyframes explicit: [[Int]]?, progress: ProgressReporter) throws -> Tensor {
        let plan = try Plan(self, inversion, keyframes: explicit)
        var x = initialLatents(inversion)
        for step in timesteps.indices {
            x = try sampleStep(x, step: step, inversion: inversion, plan: plan, progress: progress)
        }
        return x
    }

    /// One sampling step (`step` indexes `timesteps`) from latents `x`; for stepping through an edit, or
    /// checking a step against a reference from the reference's state.
    public func sampleStep(_ x: Tensor, step: Int, inversion: Inversion, keyframes explicit: [[Int]]? = nil) throws -> Tensor {
        guard timesteps.indices.contains(step) else {
            throw EditError.invalidSettings("step \(step) is not a sampling step of these settings (0..<\(timesteps.count))")
        }
        return try sampleStep(x, step: step, inversion: inversion, plan: try Plan(self, inversion, keyframes: explicit),
                              progress: ProgressReporter(nil))
    }

    /// What every step needs, prepared once per edit.
    struct Plan {
        let keyframes: [[Int]]
        let batches: [Range<Int>]
        /// Text embeddings [1, 77, D] per branch.
        let embeddings: [Branch: Tensor]

        init(_ sampler: KeyframePropagation, _ inversion: Inversion, keyframes explicit: [[Int]]?) throws {
            let frameCount = inversion.latents.shape[0]
            let model = sampler.context.model, settings = sampler.context.settings
            batches = batchRanges(count: frameCount, size: sampler.batchSize)
            keyframes = try sampler.keyframeSchedule(frameCount: frameCount, explicit: explicit)
            embeddings = [.source: try model.embed(inversion.inversionPrompt), .uncond: try model.embed(settings.negativePrompt),
                          .cond: try model.embed(settings.prompt)]
        }

        func context(_ branches: BranchStack) -> Tensor {
            branches.stack { repeated(embeddings[$0]!, branches.framesPerBranch) }
        }
    }

    func sampleStep(_ x: Tensor, step: Int, inversion: Inversion, plan: Plan, progress: ProgressReporter) throws -> Tensor {
        let t = timesteps[step]
        guard let source = inversion.kept[t] else {
            throw EditError.invalidSettings("the inversion has no latents for timestep \(t); invert with these steps")
        }
        let model = context.model, settings = context.settings
        let hooks = TokenFlowHooks()
        hooks.injectFeatures = featureInjection.contains(t)
        hooks.injectQueryKey = queryKeyInjection.contains(t)
        let callsPerStep = 1 + plan.batches.count, totalCalls = timesteps.count * callsPerStep
        func reportCall(_ call: Int) throws {
            try progress.unetCall(.sampling, step * callsPerStep + call, of: totalCalls, steps: timesteps.count)
        }

        // a) Keyframe pass: fills the hooks' per-block records; its prediction is not used.
        let keys = plan.keyframes[step]
        hooks.pass = .keyframes
        hooks.branches = BranchStack(framesPerBranch: keys.count)
        let keyLatents = gatherFrames(x, keys)
        _ = model.unet(hooks.branches.stack { $0 == .source ? gatherFrames(source, keys) : keyLatents },
                       timesteps: [Float(t)], context: plan.context(hooks.branches), hooks: hooks)
        try reportCall(1)

        // b) Batch passes with propagated self-attention, c) guidance and DDIM step per batch.
        let next = Tensor(uninitializedShape: x.shape)
        for (b, range) in plan.batches.enumerated() {
            hooks.pass = .batch(index: b, frames: range, batchSize: batchSize)
            hooks.branches = BranchStack(framesPerBranch: range.count)
            let batch = x.slice(range)
            let output = model.unet(hooks.branches.stack { $0 == .source ? source.slice(range) : batch },
                                    timesteps: [Float(t)], context: plan.context(hooks.branches), hooks: hooks)
            let uncond = hooks.branches.slice(output, .uncond), cond = hooks.branches.slice(output, .cond)
            let guided = linearCombination(uncond, 1 - settings.guidanceScale, cond, settings.guidanceScale)
            let previous = context.schedules.sampling.step(modelOutput: guided, timestep: t, sample: batch.copy()).prevSample
            next.slice(range).mutablePointer.update(from: previous.pointer, count: previous.count)
            try reportCall(b + 2)
        }
        return next
    }
}
