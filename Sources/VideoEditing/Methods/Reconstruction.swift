import Tensors

/// Inversion followed by plain DDIM sampling over the inversion schedule with the inversion prompt and no
/// guidance: reproduces the input, a check of the model, the settings and the inversion.
public struct Reconstruction: EditingMethod {
    public static let name = "reconstruct"
    public static let summary = "inversion then plain sampling: reproduces the input (a check)"

    let context: MethodContext

    public init(_ context: MethodContext) throws { self.context = context }

    public func checkClip(frameCount: Int, keyframes: [[Int]]?) throws {
        if keyframes != nil { throw EditError.invalidSettings("method \(Self.name) has no keyframes; do not give a keyframe schedule") }
    }

    public func sample(_ inversion: Inversion, keyframes: [[Int]]?, progress: ProgressReporter) throws -> Tensor {
        let model = context.model, scheduler = context.schedules.inversion
        let condition = try model.embed(inversion.inversionPrompt)
        let x = inversion.last.copy()
        let timesteps = scheduler.timesteps
        let batches = batchRanges(count: x.shape[0], size: context.settings.batchSize)
        for (i, t) in timesteps.enumerated() {
            for (b, range) in batches.enumerated() {
                let batch = x.slice(range).copy()
                let output = model.unet(batch, timesteps: [Float(t)], context: repeated(condition, range.count))
                let previous = scheduler.step(modelOutput: output, timestep: t, sample: batch).prevSample
                x.slice(range).mutablePointer.update(from: previous.pointer, count: previous.count)
                try progress.unetCall(.sampling, i * batches.count + b + 1, of: timesteps.count * batches.count, steps: timesteps.count)
            }
        }
        return x
    }
}
