import Diffusion
import Tensors

/// An editing method: how the edited latents are sampled from a clip's inversion. The clip pipeline
/// (`EditPipeline`: frames to latents, inversion, decoding, progress, cancellation) is shared; a method
/// only samples. Adding one is a new file conforming to this protocol (plus its UNet hooks) and a line in
/// `EditMethods.all`; its name then appears in every host's `method` setting.
public protocol EditingMethod: SendableMetatype {
    /// The value of the `method` setting that selects it.
    static var name: String { get }
    /// One sentence for help texts.
    static var summary: String { get }
    /// Checks what the method needs of the settings (throws `EditError.invalidSettings`).
    init(_ context: MethodContext) throws
    /// Checks the per-clip inputs before the long run starts (throws `EditError.invalidSettings`).
    func checkClip(frameCount: Int, keyframes: [[Int]]?) throws
    /// DDIM inversion of the clip's clean latents (`LatentStore.clean`) with the inversion prompt: the
    /// latents at every sampling timestep (`store.inverted(t)`) and the last ones (`LatentStore.last`),
    /// reporting every UNet call. The default inverts batch by batch with the plain UNet.
    func invert(_ clip: ClipEdit, store: LatentStore, progress: ProgressReporter) throws
    /// Samples the edit from the clip's inversion in `store` (`LatentStore.last`, the inverted latents)
    /// into `store.current`, batch by batch, reporting every UNet call.
    func sample(_ clip: ClipEdit, store: LatentStore, keyframes: [[Int]]?, progress: ProgressReporter) throws
}

extension EditingMethod {
    public func invert(_ clip: ClipEdit, store: LatentStore, progress: ProgressReporter) throws {
        try clip.invertInBatches(store: store, progress: progress)
    }
}

/// The registered methods.
public enum EditMethods {
    /// Every method, in the order hosts list them; the first is the default. New methods go at the end: hosts
    /// may select a choice by its index (as FFmpeg constants), so indices never change.
    public static let all: [any EditingMethod.Type] = [TokenFlowPnP.self, SDEdit.self, Reconstruction.self, Cove.self]

    static var defaultMethod: any EditingMethod.Type { all[0] }

    public static func named(_ name: String) -> (any EditingMethod.Type)? {
        all.first { $0.name == name }
    }
}

/// What a method is made with.
public struct MethodContext {
    public let model: StableDiffusionModel
    public let settings: EditSettings
    public let schedules: Schedules
}

/// The two DDIM schedules of an edit: sampling (`steps`) and inversion (`inversion_steps`).
public struct Schedules: Sendable {
    public let sampling: DDIMScheduler
    public let inversion: DDIMScheduler

    init(model: StableDiffusionModel, settings: EditSettings) throws {
        let config = try Self.schedulerConfig(of: model, prediction: settings.prediction)
        do {
            var sampling = try DDIMScheduler(config: config)
            try sampling.setTimesteps(settings.steps)
            var inversion = try DDIMScheduler(config: config)
            try inversion.setTimesteps(settings.inversionSteps)
            self.sampling = sampling
            self.inversion = inversion
        } catch let error as ModelError {
            throw EditError.invalidSettings("\(error)")
        }
    }

    /// The model's scheduler with the `prediction` setting applied: "auto" keeps what the model says and
    /// refuses a model that cannot say (an SD 2.x single file without metadata: the wrong choice would not
    /// fail, it would produce noise), "epsilon" and "v" override it.
    static func schedulerConfig(of model: StableDiffusionModel, prediction: String) throws -> SchedulerConfig {
        var config = model.schedulerConfig
        switch prediction {
        case "epsilon": config.predictionType = "epsilon"
        case "v": config.predictionType = "v_prediction"
        default:
            if let reason = model.unknownPrediction {
                throw EditError.invalidSettings("prediction: \(model.path) does not say what it predicts (\(reason)): "
                    + "set prediction to epsilon (such as v2-1_512-ema-pruned) or v (such as v2-1_768-ema-pruned)")
            }
        }
        return config
    }

    /// The latents sampling starts from at `firstTimestep`: the clean latents noised with the noise the
    /// inversion found (x_T = sqrt(a_T) x_0 + sqrt(1 - a_T) eps, solved for eps from the last latents).
    func samplingStart(clean: Tensor, last: Tensor, lastTimestep: Int, firstTimestep: Int) throws -> Tensor {
        let alphaLast = sampling.alphasCumprod[lastTimestep]
        let eps = try linearCombination(last, 1 / (1 - alphaLast).squareRoot(), clean, -alphaLast.squareRoot() / (1 - alphaLast).squareRoot())
        return try sampling.addNoise(original: clean, noise: eps, timestep: firstTimestep)
    }

    /// Methods that start sampling from inverted latents need every sampling timestep among the inversion's.
    func requireSamplingTimestepsInverted(_ settings: EditSettings) throws {
        let inverted = Set(inversion.timesteps)
        if let missing = sampling.timesteps.first(where: { !inverted.contains($0) }) {
            throw EditError.invalidSettings("sampling timestep \(missing) (steps \(settings.steps)) is not among the inversion timesteps (inversion_steps \(settings.inversionSteps)); use inversion_steps that are a multiple of steps")
        }
    }

    /// The inversion timesteps in the order inversion runs them (least noisy first).
    var inversionAscending: [Int] { Array(inversion.timesteps.reversed()) }

    /// Step `step` of DDIM inversion (the reference's ddim_inversion): eps at timestep t from the current
    /// (less noisy) latents `x`, x0 from the previous level, then forward to level t.
    func inversionStep(_ x: Tensor, modelOutput: Tensor, step: Int) throws -> Tensor {
        let ascending = inversionAscending, alphas = inversion.alphasCumprod
        let alphaT = alphas[ascending[step]]
        let alphaPrevious = step > 0 ? alphas[ascending[step - 1]] : inversion.finalAlphaCumprod
        // v-prediction models give v; eps = sqrt(alpha) v + sqrt(1 - alpha) x at the sample's own level.
        let eps = sampling.prediction == .vPrediction
            ? try linearCombination(modelOutput, alphaT.squareRoot(), x, (1 - alphaT).squareRoot()) : modelOutput
        let x0 = try linearCombination(x, 1 / alphaPrevious.squareRoot(), eps, -(1 - alphaPrevious).squareRoot() / alphaPrevious.squareRoot())
        return try linearCombination(x0, alphaT.squareRoot(), eps, (1 - alphaT).squareRoot())
    }
}

/// Consecutive frame ranges of `size` frames; the last may be shorter.
func batchRanges(count: Int, size: Int) -> [Range<Int>] {
    stride(from: 0, to: count, by: size).map { $0..<min($0 + size, count) }
}

/// int(steps * fraction) as the reference computes it (`Tensors.countOfFraction`).
public func scheduleStepCount(_ steps: Int, fraction: Float) -> Int { countOfFraction(steps, fraction) }

/// `x` [1, ...] repeated n times along the first dimension.
func repeated(_ x: Tensor, _ n: Int) throws -> Tensor { try concat(Array(repeating: x, count: n), axis: 0) }

/// Frames `indices` of [N, ...] stacked in order.
func gatherFrames(_ x: Tensor, _ indices: [Int]) throws -> Tensor {
    try concat(indices.map { x.slice($0..<($0 + 1)) }, axis: 0)
}
