import Diffusion
import Tensors

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

/// The clip pipeline every method shares: frames to latents (VAE encode, as they arrive), DDIM inversion
/// with the inversion prompt, the method's sampling, VAE decode back to frames at the input size; progress
/// and cancellation throughout. The latents live in a `LatentStore` (memory up to `latent_memory`, then a
/// temporary file), so a clip of any length is one edit in bounded memory. Not thread-safe: use one
/// pipeline per thread.
public final class EditPipeline {
    public let model: StableDiffusionModel
    public let settings: EditSettings
    public let schedules: Schedules
    /// The method the `method` setting names.
    public let method: any EditingMethod
    /// Bounds the working tensors of this pipeline's edits (`memory_limit`); every entry point of
    /// `ClipEdit` that computes runs under it (`ClipEdit.computing`).
    public let memoryBudget: MemoryBudget
    /// The precision of the model's products with its weights (`precision`), for every entry point that computes.
    public let precision: ComputePrecision

    /// Checks the settings against each other and the model (throws `EditError.invalidSettings`).
    public init(model: StableDiffusionModel, settings: EditSettings) throws {
        try SettingsTable.validate(settings)
        guard let methodType = EditMethods.named(settings.method) else {
            throw EditError.invalidSettings("method '\(settings.method)' is not one of \(EditMethods.all.map { $0.name }.joined(separator: ", "))")
        }
        self.model = model
        self.settings = settings
        memoryBudget = MemoryBudget(limitBytes: settings.memoryLimit << 20)
        guard let precision = ComputePrecision(rawValue: settings.precision) else {
            throw EditError.invalidSettings("precision '\(settings.precision)' is not one of \(ComputePrecision.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self.precision = precision
        schedules = try Schedules(model: model, settings: settings)
        method = try methodType.init(MethodContext(model: model, settings: settings, schedules: schedules))
        // The text encoder is freed before the work starts; an inversion file's own prompt, if another, is
        // embedded when it comes.
        try model.prepareEmbeddings(settings.promptsToEmbed)
    }

    /// An empty clip to append frames to.
    public func makeClip() -> ClipEdit { ClipEdit(self) }

    /// Inversion, editing and decoding of a whole clip. `keyframes`: an explicit keyframe schedule
    /// (per sampling step, one absolute frame index per batch) instead of the one drawn with the seed.
    public func run(_ frames: [Frame], keyframes: [[Int]]? = nil, progress: ProgressHandler? = nil) throws -> EditResult {
        try validateClip(frames)
        try method.checkClip(frameCount: frames.count, keyframes: keyframes)
        let clip = try encode(frames, progress: progress)
        try clip.invert(progress: ProgressReporter(progress))
        return try finish(clip, keyframes: keyframes, progress: progress)
    }

    /// VAE encode and DDIM inversion with the inversion prompt.
    public func invert(_ frames: [Frame], progress: ProgressHandler? = nil) throws -> Inversion {
        let clip = try encode(frames, progress: progress)
        try clip.invert(progress: ProgressReporter(progress))
        return try clip.inversion()
    }

    /// The method's sampling from an inversion made earlier (or by the reference), then VAE decode at the
    /// input size.
    public func edit(_ inversion: Inversion, keyframes: [[Int]]? = nil, progress: ProgressHandler? = nil) throws -> EditResult {
        if inversion.inversionSteps != settings.inversionSteps {
            throw EditError.invalidSettings("the inversion was made with \(inversion.inversionSteps) inversion steps, the settings ask for \(settings.inversionSteps)")
        }
        try check(inversion)
        try method.checkClip(frameCount: inversion.latents.shape[0], keyframes: keyframes)
        return try finish(try ClipEdit(self, inversion: inversion), keyframes: keyframes, progress: progress)
    }

    /// An inversion from a file (or a caller) fits this model and these settings: latents [N >= 1, the VAE's
    /// latent channels, h >= 1, w >= 1] everywhere, of the working size's latent size; a last timestep that is
    /// the last of this model's inversion schedule (any other would start sampling from the wrong noise
    /// level); sizes that are real frame sizes.
    private func check(_ inversion: Inversion) throws {
        func refuse(_ problem: String) -> EditError { .invalidSettings("the inversion does not fit this model: \(problem)") }
        let shape = inversion.latents.shape, channels = model.vae.config.latentChannels
        guard shape.count == 4, shape[0] >= 1, shape[1] == channels, shape[2] >= 1, shape[3] >= 1 else {
            throw refuse("latents of shape \(shape), expected [frames >= 1, \(channels), height >= 1, width >= 1]")
        }
        if let other = ([inversion.last] + Array(inversion.kept.values)).first(where: { $0.shape != shape }) {
            throw refuse("latents of shapes \(shape) and \(other.shape)")
        }
        let factor = model.vae.downsamplingFactor
        guard shape[2] * factor == inversion.workingHeight, shape[3] * factor == inversion.workingWidth else {
            throw refuse("latents of \(shape[3])x\(shape[2]) for a working size of \(inversion.workingWidth)x\(inversion.workingHeight) (expected 1/\(factor) of it)")
        }
        let last = schedules.inversionAscending.last ?? 0
        guard inversion.lastTimestep == last else {
            throw refuse("last timestep \(inversion.lastTimestep), but this model's \(settings.inversionSteps)-step inversion ends at \(last)")
        }
        let sides = 1...WorkingSize.maxSide * 2
        guard sides.contains(inversion.inputWidth), sides.contains(inversion.inputHeight) else {
            throw refuse("input size \(inversion.inputWidth)x\(inversion.inputHeight) is not a frame size (1 to \(sides.upperBound) per side)")
        }
    }

    private func encode(_ frames: [Frame], progress: ProgressHandler?) throws -> ClipEdit {
        try validateClip(frames)
        let clip = makeClip(), reporter = ProgressReporter(progress)
        for (index, frame) in frames.enumerated() {
            try clip.append(frame)
            try reporter.frame(.encoding, index + 1, of: frames.count)
        }
        return clip
    }

    private func finish(_ clip: ClipEdit, keyframes: [[Int]]?, progress: ProgressHandler?) throws -> EditResult {
        let reporter = ProgressReporter(progress)
        try clip.sample(keyframes: keyframes, progress: reporter)
        var frames: [Frame] = []
        for index in 0..<clip.frameCount {
            frames.append(try clip.decode(index))
            try reporter.frame(.decoding, index + 1, of: clip.frameCount)
        }
        return EditResult(frames: frames, finalLatents: try clip.editedLatents(), inversion: try clip.inversion())
    }
}

/// One clip through the pipeline, a frame at a time: `append` encodes each frame as it arrives (only its
/// latents are kept), `invert` and `sample` edit the whole clip, `decode` gives one edited frame.
public final class ClipEdit {
    let pipeline: EditPipeline
    /// The clip's latents; nil until the first frame (its size fixes the working size).
    private(set) var store: LatentStore?
    public private(set) var inputWidth = 0, inputHeight = 0
    /// The inversion prompt the source branch uses (the settings', or a loaded inversion's).
    let inversionPrompt: String
    public private(set) var lastTimestep = 0
    /// Per sampling step, frames of earlier windows the keyframe passes attend to (windowed streams).
    var anchors: [AnchorLatents]?
    /// Per sampling step, this clip's first and last keyframe's latents (the anchors of later windows).
    var keyframeLatents: (first: [AnchorLatents], last: [AnchorLatents])?
    /// COVE in a windowed stream: the frames of earlier windows this clip's groups carry (the stream's first
    /// frame, then the previous window's last; one when they are the same frame).
    var coveCarried: [CoveAnchor] = []
    /// Whether this clip is a window that later windows follow, so COVE keeps what they carry of it...
    var leavesCoveAnchors = false
    /// ... by clip frame: its first frame (window 0 only) and its last, once edited.
    var coveAnchorsLeft: [Int: CoveAnchor] = [:]
    private var state = State.collecting
    private enum State { case collecting, inverted, edited }

    /// The pages of the large buffers the clip's work freed (kept for reuse while it runs) go back to the system,
    /// so a host that keeps the model loaded between clips does not keep them too.
    deinit { TensorStorage.releaseFreedPages() }

    init(_ pipeline: EditPipeline) {
        self.pipeline = pipeline
        inversionPrompt = pipeline.settings.inversionPrompt
    }

    /// A clip whose inversion was made earlier.
    init(_ pipeline: EditPipeline, inversion: Inversion) throws {
        self.pipeline = pipeline
        inversionPrompt = inversion.inversionPrompt
        inputWidth = inversion.inputWidth
        inputHeight = inversion.inputHeight
        lastTimestep = inversion.lastTimestep
        store = try LatentStore(inversion, invertedTimesteps: pipeline.schedules.sampling.timesteps, settings: pipeline.settings)
        state = .inverted
    }

    public var frameCount: Int { store?.frameCount ?? 0 }
    public var isEdited: Bool { state == .edited }
    /// Bytes of latents the clip keeps in memory and in its temporary file.
    public var latentBytes: (memory: Int, disk: Int) { (store?.bytesInMemory ?? 0, store?.bytesOnDisk ?? 0) }
    var settings: EditSettings { pipeline.settings }

    /// Every entry point that computes runs here: under the pipeline's memory budget and precision, with
    /// OpenBLAS's buffers in place (so an address-space limit is an error, never a hang inside OpenBLAS).
    private func computing<R>(_ body: () throws -> R) throws -> R {
        try Threading.prepareBLASBuffers()
        return try ComputePrecision.$current.withValue(pipeline.precision) { try pipeline.memoryBudget.withCurrent(body) }
    }

    /// Encodes one frame (resampled to the working size) and keeps its latents.
    public func append(_ frame: Frame) throws {
        try computing {
            guard state == .collecting else { throw EditError.invalidClip("frames can only be added before the clip is edited") }
            try validateFrame(frame, index: frameCount, first: store == nil ? nil : (inputWidth, inputHeight))
            if store == nil { (inputWidth, inputHeight) = (frame.width, frame.height) }
            let (width, height) = settings.workingSize.resolve(width: inputWidth, height: inputHeight)
            let vae = pipeline.model.vae
            let latents = try scaled(try vae.encodeMean(imageTensor(frame, width: width, height: height)), by: vae.scalingFactor)
            let store = self.store ?? LatentStore(latentShape: Array(latents.shape.dropFirst()),
                                                  invertedTimesteps: pipeline.schedules.sampling.timesteps, settings: settings)
            self.store = store
            try requireFinite(latents, "in VAE encoding, frame \(store.frameCount)")
            let index = try store.appendFrame()
            try store.write(LatentStore.clean, index..<(index + 1), latents)
        }
    }

    /// The method's DDIM inversion of every frame with the inversion prompt (`EditingMethod.invert`).
    func invert(progress: ProgressReporter) throws {
        try computing {
            guard let store, state == .collecting else { throw EditError.invalidClip("the clip has no frames") }
            try pipeline.method.invert(self, store: store, progress: progress)
            lastTimestep = pipeline.schedules.inversionAscending.last!
            state = .inverted
        }
    }

    /// Batch by batch (each batch through every timestep, so only one batch is in memory) with the plain
    /// UNet, keeping the latents at the sampling timesteps and the last ones: every method's inversion but
    /// COVE's.
    func invertInBatches(store: LatentStore, progress: ProgressReporter) throws {
        let schedules = pipeline.schedules, ascending = schedules.inversionAscending
        let condition = try pipeline.model.embed(inversionPrompt)
        let batches = batchRanges(count: store.frameCount, size: settings.batchSize)
        let calls = ascending.count * batches.count
        for (b, range) in batches.enumerated() {
            var x = try store.read(LatentStore.clean, range)
            let context = try repeated(condition, range.count)
            for (i, t) in ascending.enumerated() {
                let output = try pipeline.model.unet(x, timesteps: [Float(t)], context: context)
                x = try schedules.inversionStep(x, modelOutput: output, step: i)
                try requireFinite(x, "in inversion step \(i + 1)/\(ascending.count) (timestep \(t)), frames \(range.lowerBound)-\(range.upperBound - 1)")
                if let slot = store.inverted(t) { try store.write(slot, range, x) }
                try progress.unetCall(.inversion, b * ascending.count + i + 1, of: calls, steps: ascending.count)
            }
            try store.write(LatentStore.last, range, x)
        }
    }

    /// Inversion (if not done) and the method's sampling of the whole clip; then `decode` gives the frames.
    public func edit(keyframes: [[Int]]? = nil, progress: ProgressHandler? = nil) throws {
        try sample(keyframes: keyframes, progress: ProgressReporter(progress))
    }

    /// The method's sampling; the edited latents end in the store's `current` slot.
    func sample(keyframes: [[Int]]?, progress: ProgressReporter) throws {
        try computing {
            guard let store else { throw EditError.invalidClip("the clip has no frames") }
            try pipeline.method.checkClip(frameCount: store.frameCount, keyframes: keyframes)
            if state == .collecting { try invert(progress: progress) }
            guard state == .inverted else { throw EditError.invalidClip("the clip was edited already") }
            try pipeline.method.sample(self, store: store, keyframes: keyframes, progress: progress)
            state = .edited
        }
    }

    /// Edited frame `index`, decoded and resampled to the input size.
    public func decode(_ index: Int) throws -> Frame {
        try computing {
            guard let store, state == .edited, (0..<store.frameCount).contains(index) else {
                throw EditError.invalidClip("frame \(index) has not been edited")
            }
            let vae = pipeline.model.vae
            let image = try vae.decode(scaled(try store.read(store.current, index..<(index + 1)), by: 1 / vae.scalingFactor))
            try requireFinite(image, "in VAE decoding, frame \(index)")
            return try frame(from: image, width: inputWidth, height: inputHeight)
        }
    }

    /// The edited latents of every frame, [N, 4, H/8, W/8] (the whole clip in memory: for tests and files).
    public func editedLatents() throws -> Tensor {
        try computing {
            guard let store else { throw EditError.invalidClip("the clip has no frames") }
            return try store.read(store.current, 0..<store.frameCount)
        }
    }

    /// The inversion as tensors (the whole clip in memory: for saving it, and for tests).
    func inversion() throws -> Inversion {
        try computing {
            guard let store, state != .collecting else { throw EditError.invalidClip("the clip has not been inverted") }
            let frames = 0..<store.frameCount
            var kept: [Int: Tensor] = [:]
            for t in store.invertedTimesteps { kept[t] = try store.read(store.inverted(t)!, frames) }
            let (width, height) = settings.workingSize.resolve(width: inputWidth, height: inputHeight)
            return Inversion(latents: try store.read(LatentStore.clean, frames), kept: kept, last: try store.read(LatentStore.last, frames),
                             lastTimestep: lastTimestep, inputWidth: inputWidth, inputHeight: inputHeight,
                             workingWidth: width, workingHeight: height, inversionPrompt: inversionPrompt,
                             inversionSteps: settings.inversionSteps)
        }
    }
}
