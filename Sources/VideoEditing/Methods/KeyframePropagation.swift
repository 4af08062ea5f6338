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

    public func sample(_ clip: ClipEdit, store: LatentStore, keyframes: [[Int]]?, progress: ProgressReporter) throws {
        clip.keyframeLatents = try propagation.sample(store, inversionPrompt: clip.inversionPrompt, lastTimestep: clip.lastTimestep,
                                                      keyframes: keyframes, anchors: clip.anchors, progress: progress)
    }
}

/// Frames of an earlier window of a stream at one sampling step: source latents (inverted, at the step's
/// timestep) and edited latents (before the step), [k, 4, H/8, W/8] each.
public struct AnchorLatents {
    let source: Tensor
    let edited: Tensor

    /// Several anchors' latents stacked.
    static func stacked(_ anchors: [AnchorLatents]) throws -> AnchorLatents {
        AnchorLatents(source: try concat(anchors.map(\.source), axis: 0), edited: try concat(anchors.map(\.edited), axis: 0))
    }
}

/// TokenFlow's sampling loop, shared by TokenFlow-PnP and SDEdit: at every step a keyframe pass (one
/// keyframe per batch, extended attention across the keyframes), then one pass per batch whose
/// self-attention is the keyframes' output propagated along the source's nearest-neighbour field
/// (`TokenFlowHooks`), classifier-free guidance and a DDIM step.
///
/// Clips of any length: each step sweeps the clip in order. With at most `keyframe_context` keyframes
/// (batches) there is one keyframe pass over all of them, exactly as the reference does. Beyond, keyframe
/// passes cover `keyframe_context` consecutive keyframes, successive passes overlapping by half; each keeps
/// the records of the keyframes nearest its centre (so every keyframe attends to at least a quarter of the
/// context on each side, and no pass boundary is a seam), and the batches whose keyframes b and b-1 are
/// recorded run right after it; records are dropped once no batch needs them. Memory and the cost per
/// frame then stay constant with the clip's length.
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
        try context.schedules.requireSamplingTimestepsInverted(settings)
    }

    var batchSize: Int { context.settings.batchSize }

    /// The latents sampling starts from: the clean latents noised to the first timestep with the noise
    /// the inversion found (x_T = sqrt(a_T) x_0 + sqrt(1 - a_T) eps, solved for eps).
    public func initialLatents(_ inversion: Inversion) throws -> Tensor {
        try initialLatents(clean: inversion.latents, last: inversion.last, lastTimestep: inversion.lastTimestep)
    }

    func initialLatents(clean: Tensor, last: Tensor, lastTimestep: Int) throws -> Tensor {
        try context.schedules.samplingStart(clean: clean, last: last, lastTimestep: lastTimestep, firstTimestep: timesteps[0])
    }

    /// The keyframe passes of a step over `count` keyframes: the batches each covers (`members`) and
    /// those whose records it keeps (`keeps`, consecutive and in order across the passes).
    public func keyframePasses(count: Int) -> [(members: Range<Int>, keeps: Range<Int>)] {
        let context = context.settings.keyframeContext
        guard count > context else { return [(0..<count, 0..<count)] }
        var starts = Array(stride(from: 0, to: count - context, by: max(1, context / 2)))
        starts.append(count - context)
        // Each keyframe goes to the pass whose centre is nearest (ties: the earlier pass).
        let centres = starts.map { Double($0) + Double(context - 1) / 2 }
        var bounds = [0]
        for j in 1..<starts.count { bounds.append(Int(((centres[j - 1] + centres[j]) / 2).rounded(.down)) + 1) }
        bounds.append(count)
        return starts.indices.map { j in (starts[j]..<(starts[j] + context), bounds[j]..<bounds[j + 1]) }
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

    /// Samples the clip in `store`; returns the latents of its first and last keyframe at every step (the
    /// anchors later windows of a stream attend to).
    func sample(_ store: LatentStore, inversionPrompt: String, lastTimestep: Int, keyframes explicit: [[Int]]?,
                anchors: [AnchorLatents]?, progress: ProgressReporter) throws -> (first: [AnchorLatents], last: [AnchorLatents]) {
        let plan = try Plan(self, frameCount: store.frameCount, inversionPrompt: inversionPrompt, keyframes: explicit)
        for range in plan.batches {
            let start = try initialLatents(clean: try store.read(LatentStore.clean, range), last: try store.read(LatentStore.last, range),
                                       lastTimestep: lastTimestep)
            try store.write(store.current, range, start)
        }
        var first: [AnchorLatents] = [], last: [AnchorLatents] = []
        for step in timesteps.indices {
            let keys = plan.keyframes[step], sourceSlot = store.inverted(timesteps[step]) ?? LatentStore.last
            for (frame, list) in [(keys[0], 0), (keys[keys.count - 1], 1)] {
                let anchor = AnchorLatents(source: try store.read(sourceSlot, [frame]), edited: try store.read(store.current, [frame]))
                if list == 0 { first.append(anchor) } else { last.append(anchor) }
            }
            try sampleStep(store, step: step, plan: plan, anchors: anchors?[step], progress: progress)
        }
        return (first, last)
    }

    /// One sampling step (`step` indexes `timesteps`) from latents `x`; for stepping through an edit, or
    /// checking a step against a reference from the reference's state.
    public func sampleStep(_ x: Tensor, step: Int, inversion: Inversion, keyframes explicit: [[Int]]? = nil) throws -> Tensor {
        guard timesteps.indices.contains(step) else {
            throw EditError.invalidSettings("step \(step) is not a sampling step of these settings (0..<\(timesteps.count))")
        }
        let store = try LatentStore(inversion, invertedTimesteps: context.schedules.sampling.timesteps, settings: context.settings)
        let frames = 0..<store.frameCount
        try store.write(store.current, frames, x)
        let plan = try Plan(self, frameCount: store.frameCount, inversionPrompt: inversion.inversionPrompt, keyframes: explicit)
        try sampleStep(store, step: step, plan: plan, anchors: nil, progress: ProgressReporter(nil))
        return try store.read(store.current, frames)
    }

    /// What every step needs, prepared once per edit.
    struct Plan {
        let keyframes: [[Int]]
        let batches: [Range<Int>]
        /// Text embeddings [1, 77, D] of the branches: the inversion prompt, the negative prompt, the prompt.
        let source: Tensor, uncond: Tensor, cond: Tensor

        init(_ sampler: KeyframePropagation, frameCount: Int, inversionPrompt: String, keyframes explicit: [[Int]]?) throws {
            let model = sampler.context.model, settings = sampler.context.settings
            batches = batchRanges(count: frameCount, size: sampler.batchSize)
            keyframes = try sampler.keyframeSchedule(frameCount: frameCount, explicit: explicit)
            source = try model.embed(inversionPrompt)
            uncond = try model.embed(settings.negativePrompt)
            cond = try model.embed(settings.prompt)
        }

        func context(_ branches: BranchStack) throws -> Tensor {
            try branches.stack { branch in
                switch branch {
                case .source: return try repeated(source, branches.framesPerBranch)
                case .uncond: return try repeated(uncond, branches.framesPerBranch)
                case .cond: return try repeated(cond, branches.framesPerBranch)
                }
            }
        }
    }

    /// One step over the whole clip: the store's `current` latents in, `next` out, then swapped. `anchors`:
    /// frames of earlier windows every keyframe pass also attends to (their outputs are not used).
    func sampleStep(_ store: LatentStore, step: Int, plan: Plan, anchors: AnchorLatents?, progress: ProgressReporter) throws {
        let t = timesteps[step]
        guard let sourceSlot = store.inverted(t) else {
            throw EditError.invalidSettings("the inversion has no latents for timestep \(t); invert with these steps")
        }
        let model = context.model, settings = context.settings
        let hooks = TokenFlowHooks()
        hooks.injectFeatures = featureInjection.contains(t)
        hooks.injectQueryKey = queryKeyInjection.contains(t)
        let passes = keyframePasses(count: plan.batches.count)
        let callsPerStep = passes.count + plan.batches.count, totalCalls = timesteps.count * callsPerStep
        var calls = 0
        func reportCall() throws {
            calls += 1
            try progress.unetCall(.sampling, step * callsPerStep + calls, of: totalCalls, steps: timesteps.count)
        }
        func run(_ source: Tensor, _ edited: Tensor) throws -> Tensor {
            try model.unet(hooks.branches.stack { $0 == .source ? source : edited },
                       timesteps: [Float(t)], context: plan.context(hooks.branches), hooks: hooks)
        }

        var nextBatch = 0
        for pass in passes {
            // a) Keyframe pass: fills the hooks' per-keyframe records; its prediction is not used.
            let keys = pass.members.map { plan.keyframes[step][$0] }
            var source = try store.read(sourceSlot, keys), edited = try store.read(store.current, keys)
            var members = Array(pass.members)
            if let anchors {
                source = try concat([source, anchors.source], axis: 0)
                edited = try concat([edited, anchors.edited], axis: 0)
                members += (0..<anchors.source.shape[0]).map { -1 - $0 } // not batches of this clip: never recorded
            }
            hooks.pass = .keyframes(batches: members, keep: pass.keeps)
            hooks.branches = BranchStack(framesPerBranch: members.count)
            _ = try run(source, edited)
            try reportCall()

            // b) The batches whose keyframes are now recorded: propagated self-attention, then
            // c) guidance and DDIM step per batch.
            while nextBatch < pass.keeps.upperBound {
                let b = nextBatch, range = plan.batches[b]
                hooks.pass = .batch(index: b, frames: range, batchSize: batchSize)
                hooks.branches = BranchStack(framesPerBranch: range.count)
                let batch = try store.read(store.current, range)
                let output = try run(try store.read(sourceSlot, range), batch)
                let uncond = hooks.branches.slice(output, .uncond), cond = hooks.branches.slice(output, .cond)
                let guided = try linearCombination(uncond, 1 - settings.guidanceScale, cond, settings.guidanceScale)
                let previous = try context.schedules.sampling.step(modelOutput: guided, timestep: t, sample: batch).prevSample
                try requireFinite(previous, "in sampling step \(step + 1)/\(timesteps.count) (timestep \(t)), frames \(range.lowerBound)-\(range.upperBound - 1)")
                try store.write(store.next, range, previous)
                hooks.forgetRecords(before: b)
                try reportCall()
                nextBatch += 1
            }
        }
        store.finishStep()
    }
}
