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
/// so every group follows the same look and joins the previous one. A stream edited window by window
/// (`window` W) continues the same way: each window's groups carry the stream's first frame and the
/// previous window's last (`CoveAnchor`), so windows of W frames edit exactly as groups of W frames.
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

    /// A frame a group's calls carry as an anchor: one of this clip's (an earlier group's), or one of an
    /// earlier window of the stream (`ClipEdit.coveCarried[index]`).
    enum AnchorFrame: Hashable {
        case clip(Int)
        case carried(Int)
    }

    /// A group's frames and the anchors its calls carry (§9).
    struct Group {
        let frames: Range<Int>
        /// Frames prepended to every call of the group, never updated by it: the first frame (of the clip, or
        /// of the stream) and the frame just before the group (one anchor when they are the same frame); none
        /// for the first group of a clip edited on its own.
        let anchors: [AnchorFrame]
        var rowCount: Int { anchors.count + frames.count }
        /// The frames the group's correspondences are computed on: the frame just before the group (adjacent
        /// to it, so chains stay valid), then the group's frames; the first frame of a stream has none.
        var correspondenceFrames: [AnchorFrame] { (anchors.last.map { [$0] } ?? []) + frames.map { .clip($0) } }
        /// Row (within a branch) of each correspondence frame: anchors come first, the group's frames after.
        var correspondenceRows: [Int] { (anchors.isEmpty ? [] : [anchors.count - 1]) + Array(anchors.count..<rowCount) }
    }

    /// ceil(N / cove_frames) consecutive groups of balanced sizes (no short remainder group). `carried`
    /// anchors of earlier windows (0, 1 or 2) are the first group's and replace the clip's first frame.
    func groups(frameCount: Int, carried: Int = 0) -> [Group] {
        let count = (frameCount + context.settings.coveFrames - 1) / context.settings.coveFrames
        var groups: [Group] = [], start = 0
        for g in 0..<count {
            let size = frameCount / count + (g < frameCount % count ? 1 : 0)
            let anchors: [AnchorFrame]
            if g == 0 {
                anchors = (0..<carried).map { .carried($0) }
            } else {
                let first: AnchorFrame = carried > 0 ? .carried(0) : .clip(0), previous = AnchorFrame.clip(start - 1)
                anchors = first == previous ? [first] : [first, previous]
            }
            groups.append(Group(frames: start..<(start + size), anchors: anchors))
            start += size
        }
        return groups
    }

    /// The groups of `clip`, with the anchors it carries from earlier windows.
    func groups(of clip: ClipEdit, frameCount: Int) -> [Group] { groups(frameCount: frameCount, carried: clip.coveCarried.count) }

    /// The clip frames whose per-step latents are recorded: the anchors of later groups, and, in a windowed
    /// stream, the frames later windows carry (the stream's first frame in window 0, every window's last).
    private func recordedFrames(_ groups: [Group], of clip: ClipEdit, frameCount: Int) -> Set<Int> {
        var frames = Set(groups.flatMap { $0.anchors.compactMap { anchor -> Int? in
            if case .clip(let frame) = anchor { return frame } else { return nil }
        } })
        if clip.leavesCoveAnchors {
            frames.insert(frameCount - 1)
            if clip.coveCarried.isEmpty { frames.insert(0) }
        }
        return frames
    }

    // MARK: Correspondences

    /// Runs `body` on each group with its correspondences (§2-3), computed group by group so memory stays
    /// bounded by a group whatever the clip's length: DIFT features of the group's frames (plain UNet on the
    /// clean latents noised to `cove_timestep` with one seeded noise, empty prompt, output of the last
    /// decoder level, in batches within the group), plus those of the frame before the group, kept from the
    /// previous group (or carried from the previous window), then the windowed top-K chains. `body` also gets
    /// the group's own features.
    private func forEachGroup(of clip: ClipEdit, _ groups: [Group], store: LatentStore,
                              _ body: (Int, Group, Correspondences, Tensor) throws -> Void) throws {
        let settings = context.settings, inputs = try diffusionFeatureInputs(store)
        var previous = clip.coveCarried.last?.features
        for (g, group) in groups.enumerated() {
            let features = try diffusionFeatures(store, frames: group.frames, inputs)
            var withPrevious = features
            if !group.anchors.isEmpty {
                // Not reachable: a group with anchors follows a group, or a window that carried its last frame.
                guard let previous else { throw EditError.invalidClip("COVE: no features of the frame before frames \(group.frames)") }
                withPrevious = try concat([previous, features], axis: 0)
            }
            try body(g, group, try Correspondences(features: withPrevious, window: settings.coveWindow, count: settings.coveK), features)
            previous = try features.slice((group.frames.count - 1)..<group.frames.count).copy()
        }
    }

    /// Every group's correspondences (§3) and the frames they are on: clip frames, and -1 for the frame
    /// carried from the previous window.
    public func correspondences(of clip: ClipEdit) throws -> [(frames: [Int], correspondences: Correspondences)] {
        guard let store = clip.store else { throw EditError.invalidClip("the clip has no frames") }
        var result: [(frames: [Int], correspondences: Correspondences)] = []
        try forEachGroup(of: clip, groups(of: clip, frameCount: store.frameCount), store: store) { _, group, correspondences, _ in
            let frames = group.correspondenceFrames.map { frame -> Int in
                if case .clip(let f) = frame { return f } else { return -1 }
            }
            result.append((frames, correspondences))
        }
        return result
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
        return try diffusionFeatures(store, frames: 0..<store.frameCount, try diffusionFeatureInputs(store))
    }

    /// What every frame's DIFT pass shares: the one seeded noise and the empty prompt's embedding.
    private func diffusionFeatureInputs(_ store: LatentStore) throws -> (noise: Tensor, empty: Tensor) {
        (try gaussianNoise(shape: store.latentShape, seed: context.settings.seed), try context.model.embed(""))
    }

    private func diffusionFeatures(_ store: LatentStore, frames: Range<Int>, _ inputs: (noise: Tensor, empty: Tensor)) throws -> Tensor {
        let model = context.model, settings = context.settings
        let t = settings.coveTimestep, alpha = context.schedules.sampling.alphasCumprod[t]
        let (noise, empty) = inputs
        let batches = batchRanges(count: frames.count, size: settings.batchSize)
        return try concat(batches.map { batch in
            let range = (frames.lowerBound + batch.lowerBound)..<(frames.lowerBound + batch.upperBound)
            let clean = try store.read(LatentStore.clean, range)
            let noisy = try concat((0..<range.count).map { f in
                try linearCombination(clean.slice(f..<(f + 1)), alpha.squareRoot(), noise.reshaped([1] + noise.shape), (1 - alpha).squareRoot())
            }, axis: 0)
            return try model.unet.upBlockOutput(noisy, timesteps: [Float(t)], context: try repeated(empty, range.count),
                                                upBlock: model.unet.config.blockOutChannels.count - 1)
        }, axis: 0)
    }

    /// An anchor's latents entering `step` of a pass: recorded while this clip's earlier group ran, or carried
    /// from an earlier window (`carried` picks the pass). Both exist before the group that needs them runs, so
    /// a miss is an internal error, thrown rather than trapped inside the host.
    private func anchorLatents(_ anchor: AnchorFrame, step: Int, recorded: [Int: [Tensor]], in clip: ClipEdit,
                               carried: KeyPath<CoveAnchor, [Tensor]>) throws -> Tensor {
        let steps: [Tensor]?
        switch anchor {
        case .clip(let frame): steps = recorded[frame]
        case .carried(let index): steps = clip.coveCarried.indices.contains(index) ? clip.coveCarried[index][keyPath: carried] : nil
        }
        guard let steps, steps.indices.contains(step) else {
            throw EditError.invalidClip("COVE: no latents of anchor \(anchor) at step \(step + 1)")
        }
        return steps[step]
    }

    // MARK: Inversion

    /// Per group, DDIM inversion with the inversion prompt, every UNet call with COVE's attention (§8.1).
    public func invert(_ clip: ClipEdit, store: LatentStore, progress: ProgressReporter) throws {
        let schedules = context.schedules, ascending = schedules.inversionAscending
        let groups = groups(of: clip, frameCount: store.frameCount)
        let condition = try context.model.embed(clip.inversionPrompt)
        let recorded = recordedFrames(groups, of: clip, frameCount: store.frameCount)
        // The latents entering each inversion step, for the frames later groups and windows use as anchors.
        var trajectories: [Int: [Tensor]] = [:]
        // The DIFT features of the frames later windows carry.
        var leftFeatures: [Int: Tensor] = [:]
        let hooks = CoveHooks()
        hooks.mergeRatio = context.settings.coveMerge
        try forEachGroup(of: clip, groups, store: store) { g, group, correspondences, features in
            let anchorCount = group.anchors.count, first = group.frames.lowerBound
            hooks.rowsPerBranch = group.rowCount
            hooks.correspondences = correspondences
            hooks.correspondenceRows = group.correspondenceRows
            if clip.leavesCoveAnchors {
                for frame in [0, store.frameCount - 1] where group.frames.contains(frame) {
                    leftFeatures[frame] = try features.slice((frame - first)..<(frame - first + 1)).copy()
                }
            }
            var x = try store.read(LatentStore.clean, group.frames)
            let textContext = try repeated(condition, group.rowCount)
            for (i, t) in ascending.enumerated() {
                for frame in recorded where group.frames.contains(frame) {
                    trajectories[frame, default: []].append(try x.slice((frame - first)..<(frame - first + 1)).copy())
                }
                let input = anchorCount == 0 ? x : try concat(try group.anchors.map { anchor in
                    try anchorLatents(anchor, step: i, recorded: trajectories, in: clip, carried: \.inversionInputs)
                } + [x], axis: 0)
                let output = try context.model.unet(input, timesteps: [Float(t)], context: textContext, hooks: hooks)
                x = try schedules.inversionStep(x, modelOutput: output.slice(anchorCount..<group.rowCount), step: i)
                try requireFinite(x, "in inversion step \(i + 1)/\(ascending.count) (timestep \(t)), frames \(first)-\(group.frames.upperBound - 1)")
                if let slot = store.inverted(t) { try store.write(slot, group.frames, x) }
                try progress.unetCall(.inversion, g * ascending.count + i + 1, of: groups.count * ascending.count, steps: ascending.count)
            }
            try store.write(LatentStore.last, group.frames, x)
        }
        for (frame, features) in leftFeatures {
            var source: [Int: Tensor] = [:]
            for t in store.invertedTimesteps { source[t] = try store.read(store.inverted(t)!, frame..<(frame + 1)) }
            clip.coveAnchorsLeft[frame] = CoveAnchor(features: features, inversionInputs: trajectories[frame] ?? [], source: source)
        }
    }

    // MARK: Sampling

    /// Per group, every sampling step: one UNet call on [source, x, x] with COVE's attention, injection in
    /// the early steps, classifier-free guidance and a DDIM step (§8.3).
    public func sample(_ clip: ClipEdit, store: LatentStore, keyframes: [[Int]]?, progress: ProgressReporter) throws {
        let model = context.model, settings = context.settings, scheduler = context.schedules.sampling
        let timesteps = scheduler.timesteps
        let groups = groups(of: clip, frameCount: store.frameCount)
        let recorded = recordedFrames(groups, of: clip, frameCount: store.frameCount)
        let sourceText = try model.embed(clip.inversionPrompt), uncondText = try model.embed(settings.negativePrompt)
        let condText = try model.embed(settings.prompt)
        func text(_ branch: Branch) -> Tensor {
            switch branch {
            case .source: return sourceText
            case .uncond: return uncondText
            case .cond: return condText
            }
        }
        // The edited latents entering each sampling step, for the frames later groups and windows use as anchors.
        var trajectories: [Int: [Tensor]] = [:]
        let hooks = CoveHooks()
        hooks.branchCount = Branch.allCases.count
        hooks.mergeRatio = settings.coveMerge
        try forEachGroup(of: clip, groups, store: store) { g, group, correspondences, _ in
            let anchorCount = group.anchors.count, first = group.frames.lowerBound
            let branches = BranchStack(framesPerBranch: group.rowCount)
            hooks.rowsPerBranch = group.rowCount
            hooks.correspondences = correspondences
            hooks.correspondenceRows = group.correspondenceRows
            let textContext = try branches.stack { try repeated(text($0), group.rowCount) }
            var x = try context.schedules.samplingStart(
                clean: try store.read(LatentStore.clean, group.frames), last: try store.read(LatentStore.last, group.frames),
                lastTimestep: clip.lastTimestep, firstTimestep: timesteps[0])
            for (step, t) in timesteps.enumerated() {
                for frame in recorded where group.frames.contains(frame) {
                    trajectories[frame, default: []].append(try x.slice((frame - first)..<(frame - first + 1)).copy())
                }
                // Not reachable without a slot: sampling timesteps are checked to be inversion timesteps.
                let slot = store.inverted(t)!
                var edited: [Tensor] = [], source: [Tensor] = []
                for anchor in group.anchors {
                    edited.append(try anchorLatents(anchor, step: step, recorded: trajectories, in: clip, carried: \.samplingInputs))
                    switch anchor {
                    case .clip(let frame):
                        source.append(try store.read(slot, frame..<(frame + 1)))
                    case .carried(let index):
                        guard let carried = clip.coveCarried[index].source[t] else {
                            throw EditError.invalidClip("COVE: the carried anchor has no source latents at timestep \(t)")
                        }
                        source.append(carried)
                    }
                }
                let editedRows = anchorCount == 0 ? x : try concat(edited + [x], axis: 0)
                let sourceRows = try concat(source + [try store.read(slot, group.frames)], axis: 0)
                hooks.injectFeatures = step < featureInjectionSteps
                hooks.injectQueryKey = step < queryKeyInjectionSteps
                let output = try model.unet(try branches.stack { $0 == .source ? sourceRows : editedRows }, timesteps: [Float(t)],
                                            context: textContext, hooks: hooks)
                let groupRows = anchorCount..<group.rowCount
                let uncond = branches.slice(output, .uncond).slice(groupRows), cond = branches.slice(output, .cond).slice(groupRows)
                let guided = try linearCombination(uncond, 1 - settings.guidanceScale, cond, settings.guidanceScale)
                x = try scheduler.step(modelOutput: guided, timestep: t, sample: x).prevSample
                try requireFinite(x, "in sampling step \(step + 1)/\(timesteps.count) (timestep \(t)), frames \(first)-\(group.frames.upperBound - 1)")
                try progress.unetCall(.sampling, g * timesteps.count + step + 1, of: groups.count * timesteps.count, steps: timesteps.count)
            }
            try store.write(store.current, group.frames, x)
        }
        for frame in clip.coveAnchorsLeft.keys { clip.coveAnchorsLeft[frame]?.samplingInputs = trajectories[frame] ?? [] }
    }
}

/// A frame of an earlier window that a window's COVE groups carry as an anchor (§9): what its own window
/// computed for it, so nothing else of that window is kept.
struct CoveAnchor {
    /// DIFT features [1, C0, h, w] (the previous window's last frame joins the first group's correspondences).
    let features: Tensor
    /// The latents entering every inversion step.
    let inversionInputs: [Tensor]
    /// The inverted latents at every sampling timestep (the source branch's rows).
    let source: [Int: Tensor]
    /// The edited latents entering every sampling step.
    var samplingInputs: [Tensor] = []
}
