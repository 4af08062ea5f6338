import Diffusion
import Tensors

/// COVE (Wang et al., NeurIPS 2024): correspondence-guided video editing. Every decision, with the paper's
/// section and equation, is in Tests/Fixtures/COVE-DECISIONS.md; the section numbers below are that file's.
///
/// Per group of at most `cove_frames` frames (§9): diffusion features of every frame (DIFT, §2) give each
/// token K corresponding positions in every other frame (`Correspondences`, §3); DDIM inversion and
/// sampling then run with spatio-temporal self-attention over the group and correspondence-guided attention
/// at the latent resolution (`CoveHooks`, §4-7), the source's features injected PnP-style in the early
/// steps (§8). Longer clips are split into balanced groups; each group after the first also carries two
/// anchor frames (the clip's first frame and the previous group's last), whose per-step latents are kept,
/// so every group follows the same look and joins the previous one.
public struct Cove: EditingMethod {
    public static let name = "cove"
    public static let summary = "COVE: spatio-temporal attention plus attention along diffusion-feature correspondences (Wang et al. 2024)"

    let context: MethodContext
    let featureInjectionSteps: Int
    let queryKeyInjectionSteps: Int

    public init(_ context: MethodContext) throws {
        self.context = context
        let settings = context.settings
        try context.schedules.requireSamplingTimestepsInverted(settings)
        guard context.schedules.sampling.alphasCumprod.indices.contains(settings.coveTimestep) else {
            throw EditError.invalidSettings("cove_timestep \(settings.coveTimestep) is outside the model's training schedule (0 to \(context.schedules.sampling.alphasCumprod.count - 1))")
        }
        featureInjectionSteps = scheduleStepCount(settings.steps, fraction: settings.pnpFeatureThreshold)
        queryKeyInjectionSteps = scheduleStepCount(settings.steps, fraction: settings.pnpAttentionThreshold)
    }

    public func checkClip(frameCount: Int, keyframes: [[Int]]?) throws {
        if keyframes != nil { throw EditError.invalidSettings("method \(Self.name) has no keyframes; do not give a keyframe schedule") }
    }

    // MARK: Groups

    /// A group's frames and the anchors its calls carry (§9).
    struct Group {
        let frames: Range<Int>
        /// Clip frames prepended to every call of the group, never updated by it: the clip's first frame and
        /// the previous group's last (one anchor when they are the same frame), none for the first group.
        let anchors: [Int]
        /// Rows of a branch: the anchors, then the group's frames.
        var rows: [Int] { anchors + Array(frames) }
        /// The frames the group's correspondences are computed on: the previous group's last frame (adjacent
        /// to the group, so chains stay valid), then the group's frames; the clip's first frame has none.
        var correspondenceFrames: [Int] { (anchors.last.map { [$0] } ?? []) + Array(frames) }
        /// Row (within a branch) of each correspondence frame.
        var correspondenceRows: [Int] { correspondenceFrames.map { rows.firstIndex(of: $0)! } }
    }

    /// ceil(N / cove_frames) consecutive groups of balanced sizes (no short remainder group).
    func groups(frameCount: Int) -> [Group] {
        let count = (frameCount + context.settings.coveFrames - 1) / context.settings.coveFrames
        var groups: [Group] = [], start = 0
        for g in 0..<count {
            let size = frameCount / count + (g < frameCount % count ? 1 : 0)
            let anchors = g == 0 ? [] : Array(Set([0, start - 1])).sorted()
            groups.append(Group(frames: start..<(start + size), anchors: anchors))
            start += size
        }
        return groups
    }

    // MARK: Correspondences

    /// The correspondences of every group (§2-3): DIFT features of each frame (plain UNet on the clean
    /// latents noised to `cove_timestep` with one seeded noise, empty prompt, output of the last decoder
    /// level), then the windowed top-K chains per group.
    public func correspondences(of clip: ClipEdit) throws -> [(frames: [Int], correspondences: Correspondences)] {
        guard let store = clip.store else { throw EditError.invalidClip("the clip has no frames") }
        let features = try diffusionFeatures(store)
        let settings = context.settings
        return try groups(frameCount: store.frameCount).map { group in
            let frames = group.correspondenceFrames
            let groupFeatures = try gatherFrames(features, frames)
            return (frames, try Correspondences(features: groupFeatures, window: settings.coveWindow, count: settings.coveK))
        }
    }

    /// Writes the correspondences of every group as safetensors (§9): `group<g>.positions` I32
    /// [frames, h*w, frames, K] (flat positions y * w + x; [i, p, j, k] = the k-th match in frame j of token
    /// p of frame i) and `group<g>.frames` I32 (the clip frame of each row); metadata `info`, sorted JSON.
    public func writeCorrespondences(of clip: ClipEdit, to path: String) throws {
        let groups = try correspondences(of: clip)
        var integers: [(name: String, shape: [Int], values: [Int32])] = []
        for (g, group) in groups.enumerated() {
            let c = group.correspondences
            integers.append(("group\(g).positions", [c.frames, c.tokens, c.frames, c.count], c.positions))
            integers.append(("group\(g).frames", [group.frames.count], group.frames.map(Int32.init)))
        }
        let settings = context.settings, first = groups[0].correspondences
        let info = "{\"cove_k\": \(settings.coveK), \"cove_timestep\": \(settings.coveTimestep), \"cove_window\": \(settings.coveWindow), "
            + "\"groups\": \(groups.count), \"height\": \(first.height), \"layout\": \"[i, p, j, k]: flat position y * width + x in frame j of the k-th match of token p of frame i\", "
            + "\"seed\": \(settings.seed), \"width\": \(first.width)}"
        try writeSafetensors([], to: path, metadata: ["info": info], integers: integers)
    }

    /// The DIFT features of every frame of the clip [N, C0, h, w] (§2).
    public func diffusionFeatures(of clip: ClipEdit) throws -> Tensor {
        guard let store = clip.store else { throw EditError.invalidClip("the clip has no frames") }
        return try diffusionFeatures(store)
    }

    private func diffusionFeatures(_ store: LatentStore) throws -> Tensor {
        let model = context.model, settings = context.settings
        let t = settings.coveTimestep, alpha = context.schedules.sampling.alphasCumprod[t]
        let noise = try gaussianNoise(shape: store.latentShape, seed: settings.seed)
        let empty = try model.embed("")
        let batches = batchRanges(count: store.frameCount, size: settings.batchSize)
        return try concat(batches.map { range in
            let clean = try store.read(LatentStore.clean, range)
            let noisy = try concat((0..<range.count).map { f in
                try linearCombination(clean.slice(f..<(f + 1)), alpha.squareRoot(), noise.reshaped([1] + noise.shape), (1 - alpha).squareRoot())
            }, axis: 0)
            return try model.unet.upBlockOutput(noisy, timesteps: [Float(t)], context: try repeated(empty, range.count),
                                                upBlock: model.unet.config.blockOutChannels.count - 1)
        }, axis: 0)
    }

    // MARK: Inversion

    /// Per group, DDIM inversion with the inversion prompt, every UNet call with COVE's attention (§8.1).
    public func invert(_ clip: ClipEdit, store: LatentStore, progress: ProgressReporter) throws {
        let schedules = context.schedules, ascending = schedules.inversionAscending
        let groups = groups(frameCount: store.frameCount)
        let correspondences = try self.correspondences(of: clip)
        let condition = try context.model.embed(clip.inversionPrompt)
        // The latents entering each inversion step, for the frames later groups use as anchors.
        var trajectories: [Int: [Tensor]] = [:]
        let hooks = CoveHooks()
        hooks.mergeRatio = context.settings.coveMerge
        for (g, group) in groups.enumerated() {
            let rows = group.rows, anchorCount = group.anchors.count
            hooks.rowsPerBranch = rows.count
            hooks.correspondences = correspondences[g].correspondences
            hooks.correspondenceRows = group.correspondenceRows
            let recorded = anchorFrames(of: group, in: groups)
            var x = try store.read(LatentStore.clean, group.frames)
            let textContext = try repeated(condition, rows.count)
            for (i, t) in ascending.enumerated() {
                for frame in recorded { trajectories[frame, default: []].append(try x.slice((frame - group.frames.lowerBound)..<(frame - group.frames.lowerBound + 1)).copy()) }
                let input = anchorCount == 0 ? x : try concat(group.anchors.map { trajectories[$0]![i] } + [x], axis: 0)
                let output = try context.model.unet(input, timesteps: [Float(t)], context: textContext, hooks: hooks)
                x = try schedules.inversionStep(x, modelOutput: output.slice(anchorCount..<rows.count), step: i)
                try requireFinite(x, "in inversion step \(i + 1)/\(ascending.count) (timestep \(t)), frames \(group.frames.lowerBound)-\(group.frames.upperBound - 1)")
                if let slot = store.inverted(t) { try store.write(slot, group.frames, x) }
                try progress.unetCall(.inversion, g * ascending.count + i + 1, of: groups.count * ascending.count, steps: ascending.count)
            }
            try store.write(LatentStore.last, group.frames, x)
        }
    }

    /// The frames of `group` that later groups carry as anchors: the clip's first frame, each group's last.
    /// Group g's anchors (frame 0, the last frame of group g-1) are recorded by earlier groups at every step
    /// before group g runs, so the trajectory lookups of inversion and sampling always find them.
    private func anchorFrames(of group: Group, in groups: [Group]) -> [Int] {
        guard groups.count > 1 else { return [] }
        return Array(Set([0, group.frames.upperBound - 1].filter { group.frames.contains($0) })).sorted()
    }

    // MARK: Sampling

    /// Per group, every sampling step: one UNet call on [source, x, x] with COVE's attention, injection in
    /// the early steps, classifier-free guidance and a DDIM step (§8.3).
    public func sample(_ clip: ClipEdit, store: LatentStore, keyframes: [[Int]]?, progress: ProgressReporter) throws {
        let model = context.model, settings = context.settings, scheduler = context.schedules.sampling
        let timesteps = scheduler.timesteps
        let groups = groups(frameCount: store.frameCount)
        let correspondences = try self.correspondences(of: clip)
        let sourceText = try model.embed(clip.inversionPrompt), uncondText = try model.embed(settings.negativePrompt)
        let condText = try model.embed(settings.prompt)
        func text(_ branch: Branch) -> Tensor {
            switch branch {
            case .source: return sourceText
            case .uncond: return uncondText
            case .cond: return condText
            }
        }
        // The edited latents entering each sampling step, for the frames later groups use as anchors.
        var trajectories: [Int: [Tensor]] = [:]
        let hooks = CoveHooks()
        hooks.branchCount = Branch.allCases.count
        hooks.mergeRatio = settings.coveMerge
        for (g, group) in groups.enumerated() {
            let rows = group.rows, anchorCount = group.anchors.count
            let branches = BranchStack(framesPerBranch: rows.count)
            hooks.rowsPerBranch = rows.count
            hooks.correspondences = correspondences[g].correspondences
            hooks.correspondenceRows = group.correspondenceRows
            let recorded = anchorFrames(of: group, in: groups)
            let textContext = try branches.stack { try repeated(text($0), rows.count) }
            var x = try context.schedules.samplingStart(
                clean: try store.read(LatentStore.clean, group.frames), last: try store.read(LatentStore.last, group.frames),
                lastTimestep: clip.lastTimestep, firstTimestep: timesteps[0])
            for (step, t) in timesteps.enumerated() {
                for frame in recorded { trajectories[frame, default: []].append(try x.slice((frame - group.frames.lowerBound)..<(frame - group.frames.lowerBound + 1)).copy()) }
                let edited = anchorCount == 0 ? x : try concat(group.anchors.map { trajectories[$0]![step] } + [x], axis: 0)
                // Not reachable without a slot: sampling timesteps are checked to be inversion timesteps.
                let source = try store.read(store.inverted(t)!, rows)
                hooks.injectFeatures = step < featureInjectionSteps
                hooks.injectQueryKey = step < queryKeyInjectionSteps
                let output = try model.unet(try branches.stack { $0 == .source ? source : edited }, timesteps: [Float(t)],
                                            context: textContext, hooks: hooks)
                let groupRows = anchorCount..<rows.count
                let uncond = branches.slice(output, .uncond).slice(groupRows), cond = branches.slice(output, .cond).slice(groupRows)
                let guided = try linearCombination(uncond, 1 - settings.guidanceScale, cond, settings.guidanceScale)
                x = try scheduler.step(modelOutput: guided, timestep: t, sample: x).prevSample
                try requireFinite(x, "in sampling step \(step + 1)/\(timesteps.count) (timestep \(t)), frames \(group.frames.lowerBound)-\(group.frames.upperBound - 1)")
                try progress.unetCall(.sampling, g * timesteps.count + step + 1, of: groups.count * timesteps.count, steps: timesteps.count)
            }
            try store.write(store.current, group.frames, x)
        }
    }
}
