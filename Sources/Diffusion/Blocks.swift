import Tensors

/// diffusers' `Attention` module: to_q/to_k/to_v projections, multi-head scaled dot-product
/// attention, to_out.0. The pieces are public so an editing hook can run them separately
/// (inject queries/keys, attend across frames) without re-implementing the layer.
public struct AttentionLayer: Sendable {
    public let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear
    public let heads: Int

    /// The UNet's transformer attention (diffusers' `Attention` with `bias=False`): q/k/v projections have
    /// no bias, to_out has one. (The VAE's attention, which has biases, is `VAEAttention`.)
    init(_ store: WeightStore, _ prefix: String, queryDim: Int, contextDim: Int, heads: Int) throws {
        toQ = try Linear(store, "\(prefix).to_q", in: queryDim, out: queryDim, bias: false)
        toK = try Linear(store, "\(prefix).to_k", in: contextDim, out: queryDim, bias: false)
        toV = try Linear(store, "\(prefix).to_v", in: contextDim, out: queryDim, bias: false)
        toOut = try Linear(store, "\(prefix).to_out.0", in: queryDim, out: queryDim)
        self.heads = heads
    }

    /// Attention of `x` [B, N, C] over `context` [B, M, Cc] (itself when nil).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) throws -> Tensor {
        let source = context ?? x
        return try toOut(try attend(query: try toQ(x), key: try toK(source), value: try toV(source)))
    }

    /// Cross-attention of `x` [B, N, C] over the batch's text embeddings [B, M, Cc], each distinct one projected
    /// to keys and values once (every frame of a TokenFlow branch has the same prompt).
    public func callAsFunction(_ x: Tensor, context: DistinctRows) throws -> Tensor {
        let key = try gatherRows(toK(context.distinct), context.rowOf)
        let value = try gatherRows(toV(context.distinct), context.rowOf)
        return try toOut(try attend(query: try toQ(x), key: key, value: value))
    }

    /// Multi-head attention on already projected [B, N, C] tensors (before to_out).
    public func attend(query: Tensor, key: Tensor, value: Tensor) throws -> Tensor {
        try attention(query: query, key: key, value: value, heads: heads)
    }
}

/// diffusers' `ResnetBlock2D` (time-embedding "default" shift mode; the VAE passes no embedding).
public struct ResnetBlock: Sendable {
    public let path: String
    let norm1: GroupNorm, conv1: Conv2d, norm2: GroupNorm, conv2: Conv2d
    let timeProjection: Linear?
    let shortcut: Conv2d?

    init(_ store: WeightStore, _ path: String, in inChannels: Int, out outChannels: Int, groups: Int, eps: Float,
         timeEmbeddingDim: Int?) throws {
        self.path = path
        norm1 = try GroupNorm(store, "\(path).norm1", channels: inChannels, groups: groups, eps: eps)
        conv1 = try Conv2d(store, "\(path).conv1", in: inChannels, out: outChannels, kernel: 3)
        timeProjection = try timeEmbeddingDim.map { try Linear(store, "\(path).time_emb_proj", in: $0, out: outChannels) }
        norm2 = try GroupNorm(store, "\(path).norm2", channels: outChannels, groups: groups, eps: eps)
        conv2 = try Conv2d(store, "\(path).conv2", in: outChannels, out: outChannels, kernel: 3)
        shortcut = inChannels == outChannels ? nil : try Conv2d(store, "\(path).conv_shortcut", in: inChannels, out: outChannels, kernel: 1)
    }

    /// `activatedTimeEmbedding` is silu(temb) [B, T], computed once per UNet call.
    /// `residualDonors` (PnP feature injection): for each sample, the sample whose residual branch (norm1 to
    /// conv2) it takes; only the donors' branches are computed.
    public func callAsFunction(_ x: Tensor, activatedTimeEmbedding: Tensor? = nil, residualDonors: [Int]? = nil) throws -> Tensor {
        var branchInput = x, branchEmbedding = activatedTimeEmbedding
        var donorRows: [Int]?
        if let residualDonors {
            precondition(residualDonors.count == x.shape[0], "ResnetBlock: \(residualDonors.count) donors for batch \(x.shape[0])")
            let donors = Array(Set(residualDonors)).sorted()
            let rowOfDonor = Dictionary(uniqueKeysWithValues: donors.enumerated().map { ($0.element, $0.offset) })
            branchInput = try gatherRows(x, donors)
            branchEmbedding = try activatedTimeEmbedding.map { try gatherRows($0, donors) }
            donorRows = residualDonors.map { rowOfDonor[$0]! }
        }
        var h = try conv1(try norm1(branchInput, silu: true))
        if let timeProjection, let branchEmbedding {
            h = try addPerChannel(h, timeProjection(branchEmbedding))
        }
        // h is this call's own: normalized over itself, the branch holds at most three activations at once (x,
        // a normalized one, a convolution's output).
        norm2.inPlace(h, silu: true)
        h = try conv2(h)
        if let donorRows { h = try gatherRows(h, donorRows) }
        let residual = try shortcut.map { try $0(x) } ?? x
        addInPlace(h, residual)
        return h
    }
}

/// Stride-2 3x3 convolution (`Downsample2D` with use_conv). The VAE's uses padding 0 after padding
/// the right and bottom edges by one; the UNet's pads 1 on every side.
struct Downsample: Sendable {
    let conv: Conv2d

    init(_ store: WeightStore, _ prefix: String, channels: Int, padding: Int) throws {
        let pad = padding == 0 ? Padding2D(top: 0, left: 0, bottom: 1, right: 1) : .uniform(padding)
        conv = try Conv2d(store, "\(prefix).conv", in: channels, out: channels, kernel: 3, stride: 2, padding: pad)
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor { try conv(x) }
}

/// Nearest-neighbour upsampling to `size` (2x unless the encoder side had odd sizes), then 3x3 conv.
struct Upsample: Sendable {
    let conv: Conv2d

    init(_ store: WeightStore, _ prefix: String, channels: Int) throws {
        conv = try Conv2d(store, "\(prefix).conv", in: channels, out: channels, kernel: 3)
    }

    func callAsFunction(_ x: Tensor, size: (height: Int, width: Int)? = nil) throws -> Tensor {
        let target = size ?? (x.shape[2] * 2, x.shape[3] * 2)
        return try conv(try resizeNearest(x, height: target.height, width: target.width))
    }
}
