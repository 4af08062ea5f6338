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

    public func sample(_ clip: ClipEdit, store: LatentStore, keyframes: [[Int]]?, progress: ProgressReporter) throws {
        let model = context.model, scheduler = context.schedules.inversion
        let condition = try model.embed(clip.inversionPrompt)
        let timesteps = scheduler.timesteps
        let batches = batchRanges(count: store.frameCount, size: context.settings.batchSize)
        // Batch by batch through every timestep: only one batch's latents are in memory.
        for (b, range) in batches.enumerated() {
            var x = try store.read(LatentStore.last, range)
            let context = try repeated(condition, range.count)
            for (i, t) in timesteps.enumerated() {
                let output = try model.unet(x, timesteps: [Float(t)], context: context)
                x = try scheduler.step(modelOutput: output, timestep: t, sample: x).prevSample
                try requireFinite(x, "in sampling step \(i + 1)/\(timesteps.count) (timestep \(t)), frames \(range.lowerBound)-\(range.upperBound - 1)")
                try progress.unetCall(.sampling, b * timesteps.count + i + 1, of: timesteps.count * batches.count, steps: timesteps.count)
            }
            try store.write(store.current, range, x)
        }
    }
}
