import Diffusion
import Tensors

/// The UNet behaviour of one COVE call (Tests/Fixtures/COVE-DECISIONS.md §4-8), installed as UNet hooks.
///
/// A call stacks `branchCount` branches (1 in inversion; 3 in sampling, in `Branch` order) of
/// `rowsPerBranch` frames each: the anchors, then the group's frames.
/// - Every self-attention is spatio-temporal (§7): each token attends to all tokens of all frames of its
///   branch.
/// - At the latent resolution (the layers whose token grid is the correspondences'), each token of a
///   correspondence frame then attends, instead, to the merged set of the spatio-temporal outputs at its
///   corresponding positions in the other correspondence frames (CGA, §4-6; ToMe merging, §5).
/// - PnP injection in the early sampling steps (§8.4): the source branch's self-attention queries/keys
///   and resnet features are copied over the guidance branches, at FLATTEN's blocks.
public final class CoveHooks: UNetHooks {
    /// Decoder blocks whose self-attention queries and keys are injected (FLATTEN's saved_q4..q9).
    static let queryKeyInjectionBlocks: Set<String> = Set(
        [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0)].map { "up_blocks.\($0.0).attentions.\($0.1).transformer_blocks.0" })
    /// Resnets whose conv2 features are injected (FLATTEN's saved_features0..2).
    static let featureInjectionResnets: Set<String> = ["up_blocks.1.resnets.0", "up_blocks.1.resnets.1", "up_blocks.2.resnets.0"]
    /// Query tokens whose correspondence sets are gathered, merged and attended to at once (bounds the
    /// gathered [tokens, (N-1) K, C] tensor: 512 x 93 x 320 floats = 58 MiB for 32 frames at SD's width).
    static let tokensPerChunk = 512

    public var branchCount = 1
    public var rowsPerBranch = 0
    /// The group's correspondences and, for each of their frames, its row within a branch.
    public var correspondences: Correspondences?
    public var correspondenceRows: [Int] = []
    public var mergeRatio: Float = 0.5
    public var injectQueryKey = false
    public var injectFeatures = false

    public init() {}

    private var branches: BranchStack { BranchStack(framesPerBranch: rowsPerBranch) }

    public func selfAttention(block: String, normed: Tensor, attention: AttentionLayer) throws -> Tensor? {
        let tokens = normed.shape[1], width = normed.shape[2]
        var query = try attention.toQ(normed), key = try attention.toK(normed)
        let value = try attention.toV(normed)
        if injectQueryKey && Self.queryKeyInjectionBlocks.contains(block) {
            query = try branches.sourceCopiedToGuidance(query)
            key = try branches.sourceCopiedToGuidance(key)
        }
        let n = rowsPerBranch
        var outputs: [Tensor] = []
        for branch in 0..<branchCount {
            let rows = (branch * n)..<((branch + 1) * n)
            // Spatio-temporal: the branch's frames as one sequence of n * tokens queries and keys.
            let joint = { (t: Tensor) in t.slice(rows).reshaped([1, n * tokens, width]) }
            let spatioTemporal = try attention.attend(query: joint(query), key: joint(key), value: joint(value))
                .reshaped([n, tokens, width])
            if let correspondences, correspondences.frames >= 2, correspondences.tokens == tokens {
                outputs.append(try correspondenceGuided(spatioTemporal, correspondences, heads: attention.heads))
            } else {
                outputs.append(spatioTemporal)
            }
        }
        return try attention.toOut(branchCount == 1 ? outputs[0] : concat(outputs, axis: 0))
    }

    public func resnetResidualDonors(resnet: String) -> [Int]? {
        injectFeatures && Self.featureInjectionResnets.contains(resnet) ? branches.sourceDonors : nil
    }

    /// CGA (Eq. 11-14) on one branch's spatio-temporal output `st` [rows, tokens, C]: for each token of a
    /// correspondence frame, its corresponding tokens in the other correspondence frames (frame order,
    /// then rank), merged (ToMe), are the keys and values of a single-query attention; no projections
    /// (the caller applies to_out). Rows that are not correspondence frames keep their `st` output.
    private func correspondenceGuided(_ st: Tensor, _ correspondences: Correspondences, heads: Int) throws -> Tensor {
        let tokens = st.shape[1], width = st.shape[2]
        let frames = correspondences.frames, k = correspondences.count
        let gatheredCount = (frames - 1) * k
        let out = try st.copy()
        for (i, row) in correspondenceRows.enumerated() {
            for first in stride(from: 0, to: tokens, by: Self.tokensPerChunk) {
                let chunk = first..<min(tokens, first + Self.tokensPerChunk)
                let gathered = try Tensor(uninitializedShape: [chunk.count, gatheredCount, width])
                for (local, p) in chunk.enumerated() {
                    var slot = 0
                    for j in 0..<frames where j != i {
                        let frameBase = st.pointer + correspondenceRows[j] * tokens * width
                        for position in correspondences.matches(frame: i, token: p, in: j) {
                            (gathered.mutablePointer + (local * gatheredCount + slot) * width)
                                .update(from: frameBase + Int(position) * width, count: width)
                            slot += 1
                        }
                    }
                }
                let merged = try bipartiteSoftMatching(gathered, ratio: mergeRatio)
                let queries = st.row(row).slice(chunk).reshaped([chunk.count, 1, width])
                let attended = try attention(query: queries, key: merged, value: merged, heads: heads)
                (out.mutablePointer + (row * tokens + first) * width).update(from: attended.pointer, count: attended.count)
            }
        }
        return out
    }
}
