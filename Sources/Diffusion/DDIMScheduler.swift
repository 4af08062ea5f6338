#if canImport(Glibc)
import Glibc
#endif
import Tensors

/// diffusers' `DDIMScheduler` for deterministic sampling (eta = 0), with the same noise schedule,
/// timestep spacings and float32 arithmetic, so a sampling loop reproduces diffusers' latents.
///
/// The alpha products are public because DDIM inversion (TokenFlow's preprocessing) runs the same
/// update in the other direction: see `alphaCumprod(at:)` and `previousTimestep(_:)`.
public struct DDIMScheduler: Sendable {
    public enum Prediction: String, Sendable {
        case epsilon, vPrediction = "v_prediction", sample
    }

    public enum Spacing: String, Sendable {
        case leading, trailing, linspace
    }

    public let config: SchedulerConfig
    public let prediction: Prediction
    public let spacing: Spacing
    /// Cumulative products of (1 - beta), one per training timestep, in float32 as diffusers keeps them.
    public let alphasCumprod: [Float]
    /// The alpha product used "before" timestep 0: 1, or alphas_cumprod[0] when set_alpha_to_one is false.
    public let finalAlphaCumprod: Float
    /// Descending sampling timesteps, set by `setTimesteps`.
    public private(set) var timesteps: [Int] = []
    public private(set) var inferenceSteps: Int?

    /// Reads `<directory>/scheduler_config.json` (a diffusers `scheduler/` folder).
    public init(directory: String) throws {
        let file = "scheduler_config.json"
        try self.init(config: loadConfig(SchedulerConfig.self, directory: directory, file: file), file: "\(directory)/\(file)")
    }

    /// `file` names the configuration in errors.
    public init(config: SchedulerConfig, file: String = "scheduler_config.json") throws {
        func unsupported(_ key: String, _ value: String, _ supported: String) -> ModelError {
            .unsupportedConfig(file: file, key: key, value: value, supported: supported)
        }
        guard let prediction = Prediction(rawValue: config.predictionType) else {
            throw unsupported("prediction_type", config.predictionType, "epsilon, v_prediction, sample")
        }
        guard let spacing = Spacing(rawValue: config.timestepSpacing) else {
            throw unsupported("timestep_spacing", config.timestepSpacing, "leading, trailing, linspace")
        }
        // Not implemented (thresholding is for pixel-space models; SD checkpoints leave both off), and
        // ignoring either would silently change the samples.
        if config.thresholding { throw unsupported("thresholding", "true", "false") }
        if config.rescaleBetasZeroSNR { throw unsupported("rescale_betas_zero_snr", "true", "false") }
        // Bounds num_train_timesteps (the size of the tables below), betas and steps_offset.
        try config.validate(file: file)
        let count = config.numTrainTimesteps

        let betas: [Float]
        if let trained = config.trainedBetas {
            betas = trained
        } else {
            switch config.betaSchedule {
            case "linear":
                betas = torchLinspace(Float(config.betaStart), Float(config.betaEnd), count)
            case "scaled_linear": // linspace of the square roots, squared (in float32, like torch)
                betas = torchLinspace(Float(config.betaStart.squareRoot()), Float(config.betaEnd.squareRoot()), count).map { $0 * $0 }
            case "squaredcos_cap_v2":
                betas = cosineBetas(count)
            default:
                throw unsupported("beta_schedule", config.betaSchedule, "linear, scaled_linear, squaredcos_cap_v2")
            }
        }
        // torch.cumprod on CPU accumulates float32 input in double and rounds each output.
        var product = 1.0
        alphasCumprod = betas.map { beta in
            product *= Double(1 - beta)
            return Float(product)
        }
        finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
        self.config = config
        self.prediction = prediction
        self.spacing = spacing
    }

    /// Chooses `steps` sampling timesteps from the training schedule as diffusers' `set_timesteps` does.
    /// (diffusers' "trailing" spacing can return one extra, negative, timestep for a few step counts,
    /// e.g. 61; this returns exactly `steps`, equal to diffusers' first `steps`.)
    public mutating func setTimesteps(_ steps: Int) throws {
        let count = config.numTrainTimesteps
        guard steps >= 1, steps <= count else {
            throw ModelError.invalidInput("DDIM needs 1...\(count) steps (num_train_timesteps), got \(steps)")
        }
        let ascending: [Int]
        switch spacing {
        case .leading:
            ascending = (0..<steps).map { $0 * (count / steps) + config.stepsOffset }
        case .trailing:
            // np.round(np.arange(count, 0, -count / steps)) - 1; numpy's arange steps by
            // (start + step) - start, reproduced here so ties round the same way.
            let delta = (Double(count) - Double(count) / Double(steps)) - Double(count)
            ascending = (0..<steps).reversed().map { Int((Double(count) + Double($0) * delta).rounded(.toNearestOrEven)) - 1 }
        case .linspace:
            // np.linspace(0, count - 1, steps).round(): i * step, with the last point exactly count - 1.
            let step = steps > 1 ? Double(count - 1) / Double(steps - 1) : 0
            ascending = (0..<steps).map { $0 == steps - 1 && steps > 1 ? count - 1 : Int((Double($0) * step).rounded(.toNearestOrEven)) }
        }
        if let bad = ascending.first(where: { $0 < 0 || $0 >= count }) {
            throw ModelError.invalidInput("\(steps) steps with steps_offset \(config.stepsOffset) give timestep \(bad), outside 0..<\(count)")
        }
        timesteps = ascending.reversed()
        inferenceSteps = steps
    }

    /// The timestep a DDIM step from `timestep` lands on: timestep - num_train_timesteps / steps
    /// (negative after the last step). diffusers uses this rule for every spacing.
    public func previousTimestep(_ timestep: Int) -> Int {
        guard let inferenceSteps else { preconditionFailure("DDIMScheduler: call setTimesteps before stepping") }
        return timestep - config.numTrainTimesteps / inferenceSteps
    }

    /// alphas_cumprod[timestep], or `finalAlphaCumprod` for a negative timestep (past the last step).
    public func alphaCumprod(at timestep: Int) -> Float {
        precondition(timestep < alphasCumprod.count, "timestep \(timestep) is outside the training schedule")
        return timestep >= 0 ? alphasCumprod[timestep] : finalAlphaCumprod
    }

    /// One deterministic DDIM step (eta = 0) from `sample` at `timestep` given the model's output:
    /// the sample at the previous timestep and the predicted clean sample x0.
    public func step(modelOutput: Tensor, timestep: Int, sample: Tensor) throws -> (prevSample: Tensor, predOriginal: Tensor) {
        precondition(modelOutput.shape == sample.shape, "DDIM step: model output \(modelOutput.shape) vs sample \(sample.shape)")
        precondition(timestep >= 0, "DDIM step: negative timestep \(timestep)")
        let alpha = alphaCumprod(at: timestep), alphaPrevious = alphaCumprod(at: previousTimestep(timestep))
        let sqrtAlpha = alpha.squareRoot(), sqrtBeta = (1 - alpha).squareRoot()
        var predOriginal: Tensor, predEpsilon: Tensor
        switch prediction {
        case .epsilon:
            predOriginal = try linearCombination(sample, 1 / sqrtAlpha, modelOutput, -sqrtBeta / sqrtAlpha)
            predEpsilon = modelOutput
        case .vPrediction:
            predOriginal = try linearCombination(sample, sqrtAlpha, modelOutput, -sqrtBeta)
            predEpsilon = try linearCombination(modelOutput, sqrtAlpha, sample, sqrtBeta)
        case .sample:
            predOriginal = modelOutput
            predEpsilon = try linearCombination(sample, 1 / sqrtBeta, modelOutput, -sqrtAlpha / sqrtBeta)
        }
        if config.clipSample {
            predOriginal = try clamped(predOriginal, -config.clipSampleRange, config.clipSampleRange)
        }
        // With eta = 0 the variance term vanishes: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps.
        let prevSample = try linearCombination(predOriginal, alphaPrevious.squareRoot(), predEpsilon, (1 - alphaPrevious).squareRoot())
        return (prevSample, predOriginal)
    }

    /// sqrt(a_t) original + sqrt(1 - a_t) noise: the forward process at `timestep`.
    public func addNoise(original: Tensor, noise: Tensor, timestep: Int) throws -> Tensor {
        precondition(original.shape == noise.shape, "addNoise: original \(original.shape) vs noise \(noise.shape)")
        precondition(timestep >= 0 && timestep < alphasCumprod.count, "addNoise: timestep \(timestep) is outside the training schedule")
        let alpha = alphasCumprod[timestep]
        return try linearCombination(original, alpha.squareRoot(), noise, (1 - alpha).squareRoot())
    }
}

/// torch.linspace(start, end, count, dtype=float32): each half computed from its own end point with
/// one rounding (the first half start + i * step, the second end - (count - 1 - i) * step).
private func torchLinspace(_ start: Float, _ end: Float, _ count: Int) -> [Float] {
    guard count > 1 else { return [start] }
    let step = (end - start) / Float(count - 1)
    return (0..<count).map { i in
        i < count / 2 ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(count - 1 - i))
    }
}

/// diffusers' `betas_for_alpha_bar` with the cosine alpha-bar (Nichol & Dhariwal), computed in
/// double and stored as float32.
private func cosineBetas(_ count: Int) -> [Float] {
    func alphaBar(_ t: Double) -> Double {
        let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
        return c * c
    }
    return (0..<count).map { i in
        Float(min(1 - alphaBar(Double(i + 1) / Double(count)) / alphaBar(Double(i) / Double(count)), 0.999))
    }
}
