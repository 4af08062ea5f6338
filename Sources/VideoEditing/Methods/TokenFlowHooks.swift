#if canImport(Glibc)
import Glibc
#endif
import Diffusion
import Tensors

/// The UNet behaviour of one TokenFlow denoising step, installed as UNet hooks.
///
/// Every UNet call stacks the three branches of `Branch` in the batch, `branches.framesPerBranch` frames each.
/// - Keyframe pass: each transformer block's self-attention is extended (uncond and cond keyframes
///   attend to the keys/values of all keyframes of the pass in their branch; the source branch attends
///   per frame), and each block keeps, for the keyframes the pass is asked to keep, their output and the
///   source branch's norm1 states.
/// - Batch pass b: self-attention is not run; each token takes the stored keyframe output at the token
///   of keyframe b (and b-1) whose source norm1 state is cosine-nearest, blended by frame distance.
/// - PnP injection (TokenFlow-PnP only, on the early steps): the uncond and cond branches' queries/keys
///   in the decoder's self-attention, and their features after up_blocks.1.resnets.1's conv2, are
///   replaced by the source branch's.
final class TokenFlowHooks: UNetHooks {
    enum Pass {
        /// Keyframes of the batches `batches` (in the batch's frame order); the records of the batches in
        /// `keep` are kept.
        case keyframes(batches: [Int], keep: Range<Int>)
        /// Batch `index` of frames `frames` (absolute indices), with `batchSize` the nominal batch size.
        case batch(index: Int, frames: Range<Int>, batchSize: Int)
    }

    /// Blocks whose self-attention queries/keys are injected: decoder blocks 4-11, as in the reference.
    static let queryKeyInjectionBlocks: Set<String> = Set(
        [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)].map { "up_blocks.\($0.0).attentions.\($0.1).transformer_blocks.0" })
    static let featureInjectionResnet = "up_blocks.1.resnets.1"

    var pass: Pass = .keyframes(batches: [], keep: 0..<0)
    var branches = BranchStack(framesPerBranch: 0)
    var injectQueryKey = false
    var injectFeatures = false

    /// What a keyframe pass leaves for the batch passes, per keyframe and transformer block.
    struct KeyframeRecord {
        /// Self-attention output [3 (branches), tokens, C].
        let output: Tensor
        /// Source-branch norm1 states, [tokens, C].
        let sourceNorm: Tensor
    }
    /// By the keyframe's batch index, then by block.
    private(set) var records: [Int: [String: KeyframeRecord]] = [:]

    /// Drops the records no batch from `batch` on needs (batch b uses keyframes b and b-1).
    func forgetRecords(before batch: Int) {
        records = records.filter { $0.key >= batch - 1 }
    }

    func selfAttention(block: String, normed: Tensor, attention: AttentionLayer) throws -> Tensor? {
        switch pass {
        case .keyframes(let batches, let keep):
            return try keyframeAttention(block: block, normed: normed, attention: attention, batches: batches, keep: keep)
        case .batch(let index, let frames, let batchSize):
            return try propagatedAttention(block: block, normed: normed, batch: index, frames: frames, batchSize: batchSize)
        }
    }

    func resnetResidualDonors(resnet: String) -> [Int]? {
        injectFeatures && resnet == Self.featureInjectionResnet ? branches.sourceDonors : nil
    }

    private func keyframeAttention(block: String, normed: Tensor, attention: AttentionLayer, batches: [Int], keep: Range<Int>) throws -> Tensor {
        let n = branches.framesPerBranch, tokens = normed.shape[1], width = normed.shape[2]
        var query = try attention.toQ(normed), key = try attention.toK(normed)
        let value = try attention.toV(normed)
        if injectQueryKey && Self.queryKeyInjectionBlocks.contains(block) {
            query = try branches.sourceCopiedToGuidance(query)
            key = try branches.sourceCopiedToGuidance(key)
        }
        let output = try attention.toOut(branches.stack { branch in
            let (q, k, v) = (branches.slice(query, branch), branches.slice(key, branch), branches.slice(value, branch))
            // Source: each frame attends to itself.
            if branch == .source { return try attention.attend(query: q, key: k, value: v) }
            // Uncond/cond: every keyframe attends to all keyframes' tokens. Queries of all keyframes share
            // one key set, so they are stacked as one sequence of n * tokens queries.
            let joint = { (t: Tensor) in t.reshaped([1, n * tokens, width]) }
            return try attention.attend(query: joint(q), key: joint(k), value: joint(v)).reshaped([n, tokens, width])
        })
        let sourceNorm = branches.slice(normed, .source)
        for (index, batch) in batches.enumerated() where keep.contains(batch) {
            let own = try Tensor(uninitializedShape: [Branch.allCases.count, tokens, width])
            for branch in Branch.allCases {
                let rows = branches.slice(output, branch).row(index)
                own.row(branch.rawValue).mutablePointer.update(from: rows.pointer, count: rows.count)
            }
            records[batch, default: [:]][block] = KeyframeRecord(output: own, sourceNorm: try sourceNorm.row(index).copy())
        }
        return output
    }

    private func propagatedAttention(block: String, normed: Tensor, batch: Int, frames: Range<Int>, batchSize: Int) throws -> Tensor {
        // Not reachable from input: KeyframePropagation runs batch b only after the passes that record
        // keyframes b and b-1, and drops a record only when no later batch needs it.
        guard let record = records[batch]?[block], let previousRecord = batch > 0 ? records[batch - 1]?[block] : record else {
            preconditionFailure("no keyframe record for \(block) of batch \(batch) or \(batch - 1)")
        }
        let n = branches.framesPerBranch, tokens = normed.shape[1], width = normed.shape[2]
        let sourceNorm = branches.slice(normed, .source).reshaped([n * tokens, width])
        func nearest(_ keyframe: KeyframeRecord) throws -> [Int32] {
            try nearestNeighborIndices(queries: sourceNorm, candidates: keyframe.sourceNorm)
        }
        let current = try nearest(record)
        let previous = batch > 0 ? try nearest(previousRecord) : nil
        let out = try Tensor(uninitializedShape: [Branch.allCases.count * n, tokens, width])
        for (local, frameIndex) in frames.enumerated() {
            // Weight of keyframe b by distance to the batch centres (reference: sigmoid(d2 / (d1 + d2))).
            var weight: Float = 1
            if previous != nil {
                let d1 = Float(abs(frameIndex - (batch * batchSize + batchSize / 2)))
                let d2 = Float(abs(frameIndex - ((batch - 1) * batchSize + batchSize / 2)))
                weight = 1 / (1 + Float(exp(Double(-(d2 / (d1 + d2))))))
            }
            for branch in Branch.allCases.map(\.rawValue) {
                let currentRows = record.output.pointer + branch * tokens * width
                let previousRows = previousRecord.output.pointer + branch * tokens * width
                let destination = out.mutablePointer + ((branch * n + local) * tokens) * width
                for token in 0..<tokens {
                    let a = currentRows + Int(current[local * tokens + token]) * width
                    let d = destination + token * width
                    if let previous {
                        let p = previousRows + Int(previous[local * tokens + token]) * width
                        for j in 0..<width { d[j] = weight * a[j] + (1 - weight) * p[j] }
                    } else {
                        d.update(from: a, count: width)
                    }
                }
            }
        }
        return out
    }
}
