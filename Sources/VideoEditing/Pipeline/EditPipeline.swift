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

/// The clip pipeline every method shares: frames to latents (VAE encode), DDIM inversion with the
/// inversion prompt, the method's sampling, VAE decode back to frames at the input size; progress and
/// cancellation throughout. Not thread-safe: use one pipeline per thread.
public final class EditPipeline {
    public let model: StableDiffusionModel
    public let settings: EditSettings
    public let schedules: Schedules
    /// The method the `method` setting names.
    public let method: any EditingMethod

    /// Checks the settings against each other and the model (throws `EditError.invalidSettings`).
    public init(model: StableDiffusionModel, settings: EditSettings) throws {
        try SettingsTable.validate(settings)
        guard let methodType = EditMethods.named(settings.method) else {
            throw EditError.invalidSettings("method '\(settings.method)' is not one of \(EditMethods.all.map { $0.name }.joined(separator: ", "))")
        }
        self.model = model
        self.settings = settings
        schedules = try Schedules(config: model.schedulerConfig, settings: settings)
        method = try methodType.init(MethodContext(model: model, settings: settings, schedules: schedules))
    }

    /// Inversion, editing and decoding of a whole clip. `keyframes`: an explicit keyframe schedule
    /// (per sampling step, one absolute frame index per batch) instead of the one drawn with the seed.
    public func run(_ frames: [Frame], keyframes: [[Int]]? = nil, progress: ProgressHandler? = nil) throws -> EditResult {
        try validateClip(frames)
        try method.checkClip(frameCount: frames.count, keyframes: keyframes)
        let inversion = try invert(frames, progress: progress)
        return try edit(inversion, keyframes: keyframes, progress: progress)
    }

    /// VAE encode and DDIM inversion with the inversion prompt.
    public func invert(_ frames: [Frame], progress: ProgressHandler? = nil) throws -> Inversion {
        try validateClip(frames)
        let reporter = ProgressReporter(progress)
        let (inputWidth, inputHeight) = (frames[0].width, frames[0].height)
        let (width, height) = settings.workingSize.resolve(width: inputWidth, height: inputHeight)
        let vae = model.vae
        var encoded: [Tensor] = []
        for (index, frame) in frames.enumerated() {
            encoded.append(scaled(try vae.encodeMean(imageTensor(frame, width: width, height: height)), by: vae.scalingFactor))
            try reporter.frame(.encoding, index + 1, of: frames.count)
        }
        let latents = concat(encoded, axis: 0)

        let condition = try model.embed(settings.inversionPrompt)
        let scheduler = schedules.inversion
        let ascending = Array(scheduler.timesteps.reversed())
        let keep = Set(schedules.sampling.timesteps)
        let alphas = scheduler.alphasCumprod
        let x = latents.copy()
        var kept: [Int: Tensor] = [:]
        let batches = batchRanges(count: frames.count, size: settings.batchSize)
        for (i, t) in ascending.enumerated() {
            // DDIM run backwards: eps at t from the current (less noisy) latents, x0 from the previous
            // level, then forward to level t (the reference's ddim_inversion).
            let alphaT = alphas[t]
            let alphaPrevious = i > 0 ? alphas[ascending[i - 1]] : scheduler.finalAlphaCumprod
            for (b, range) in batches.enumerated() {
                let batch = x.slice(range).copy()
                let eps = noisePrediction(batch, timestep: t, context: repeated(condition, range.count), alpha: alphaT)
                let x0 = linearCombination(batch, 1 / alphaPrevious.squareRoot(), eps, -(1 - alphaPrevious).squareRoot() / alphaPrevious.squareRoot())
                let next = linearCombination(x0, alphaT.squareRoot(), eps, (1 - alphaT).squareRoot())
                x.slice(range).mutablePointer.update(from: next.pointer, count: next.count)
                try reporter.unetCall(.inversion, i * batches.count + b + 1, of: ascending.count * batches.count, steps: ascending.count)
            }
            if keep.contains(t) { kept[t] = x.copy() }
        }
        return Inversion(latents: latents, kept: kept, last: x, lastTimestep: ascending.last!,
                         inputWidth: inputWidth, inputHeight: inputHeight, workingWidth: width, workingHeight: height,
                         inversionPrompt: settings.inversionPrompt, inversionSteps: settings.inversionSteps)
    }

    /// UNet output as epsilon (v-prediction models are converted with the sample's alpha).
    func noisePrediction(_ x: Tensor, timestep: Int, context: Tensor, alpha: Float) -> Tensor {
        let output = model.unet(x, timesteps: [Float(timestep)], context: context)
        guard schedules.sampling.prediction == .vPrediction else { return output }
        return linearCombination(output, alpha.squareRoot(), x, (1 - alpha).squareRoot())
    }

    /// The method's sampling from the inversion, then VAE decode at the input size.
    public func edit(_ inversion: Inversion, keyframes: [[Int]]? = nil, progress: ProgressHandler? = nil) throws -> EditResult {
        if inversion.inversionSteps != settings.inversionSteps {
            throw EditError.invalidSettings("the inversion was made with \(inversion.inversionSteps) inversion steps, the settings ask for \(settings.inversionSteps)")
        }
        let count = inversion.latents.shape[0]
        try method.checkClip(frameCount: count, keyframes: keyframes)
        let reporter = ProgressReporter(progress)
        let final = try method.sample(inversion, keyframes: keyframes, progress: reporter)
        var frames: [Frame] = []
        for index in 0..<count {
            let image = try model.vae.decode(scaled(final.slice(index..<(index + 1)), by: 1 / model.vae.scalingFactor))
            frames.append(frame(from: image, width: inversion.inputWidth, height: inversion.inputHeight))
            try reporter.frame(.decoding, index + 1, of: count)
        }
        return EditResult(frames: frames, finalLatents: final, inversion: inversion)
    }
}
