import CKernels

/// Scaled dot-product attention, tiled with an online softmax so memory stays at one
/// (query tile x key tile) score block per worker instead of tokens x tokens x heads.
///
/// Layouts are the ones diffusers' attention processors use before splitting heads:
/// query [B, Nq, H*d], key [B, Nk, H*d], value [B, Nk, H*dv] -> output [B, Nq, H*dv].
/// Heads are addressed by column offset, so no head-split copies are made. `causal` masks key j > i
/// (CLIP's text encoder).
public func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float? = nil,
                      causal: Bool = false) throws -> Tensor {
    precondition(query.rank == 3 && key.rank == 3 && value.rank == 3, "attention expects [B, N, C] tensors")
    let (batch, queries, qWidth) = (query.shape[0], query.shape[1], query.shape[2])
    let (keys, kWidth, vWidth) = (key.shape[1], key.shape[2], value.shape[2])
    precondition(key.shape[0] == batch && value.shape[0] == batch && value.shape[1] == keys,
                 "attention: query \(query.shape), key \(key.shape), value \(value.shape) do not match")
    precondition(qWidth == kWidth && qWidth % heads == 0 && vWidth % heads == 0,
                 "attention: widths \(qWidth)/\(kWidth)/\(vWidth) do not split into \(heads) heads")
    let headDim = qWidth / heads, valueDim = vWidth / heads
    let scale = scale ?? 1 / Float(headDim).squareRoot()
    let out = try Tensor(uninitializedShape: [batch, queries, vWidth])
    let q = UncheckedBox(query.pointer), k = UncheckedBox(key.pointer), v = UncheckedBox(value.pointer)
    let o = UncheckedBox(out.mutablePointer)

    if !causal && ComputePrecision.effective == .bfloat16 {
        // precision=bf16: QK^T and PV on the bfloat16 unit. Each (image, head)'s keys and values are packed once (half their
        // float32 size), then shared by its query tiles. Causal attention (CLIP's, 77 tokens) stays float32.
        let packedFloats = (tokenflow_attention_bf16_packed_elements(keys, headDim, valueDim) + 1) / 2
        let packed = try Tensor(uninitializedShape: [batch * heads, packedFloats])
        let p = UncheckedBox(UnsafeMutableRawPointer(packed.mutablePointer).assumingMemoryBound(to: UInt16.self))
        Threading.parallelRanges(batch * heads) { items in
            for item in items {
                let (b, head) = item.quotientAndRemainder(dividingBy: heads)
                tokenflow_attention_pack_bf16(k.value + b * keys * kWidth + head * headDim, kWidth,
                                              v.value + b * keys * vWidth + head * valueDim, vWidth,
                                              keys, headDim, valueDim, p.value + 2 * item * packedFloats)
            }
        }
        let queryTile = Int(TOKENFLOW_ATTENTION_BF16_QUERY_TILE), queryTiles = (queries + queryTile - 1) / queryTile
        try Threading.parallelRanges(batch * heads * queryTiles, scratchFloats: tokenflow_attention_bf16_scratch_floats(headDim, valueDim)) { items, scratch in
            for item in items {
                let tile = item % queryTiles, head = (item / queryTiles) % heads, b = item / (queryTiles * heads)
                let firstQuery = tile * queryTile
                tokenflow_attention_tile_bf16(q.value + (b * queries + firstQuery) * qWidth + head * headDim, qWidth,
                                              p.value + 2 * (b * heads + head) * packedFloats, keys, headDim, valueDim, scale,
                                              o.value + (b * queries + firstQuery) * vWidth + head * valueDim, vWidth,
                                              min(queryTile, queries - firstQuery), scratch)
            }
        }
        withExtendedLifetime(packed) {}
        return out
    }

    // One work item per (image, head, query tile); the C kernel (CKernels/attention_tile.inc, on the CPU's
    // instruction-set path) fuses QK^T, the online softmax and PV over key tiles.
    let queryTile = Int(TOKENFLOW_ATTENTION_QUERY_TILE)
    let queryTiles = (queries + queryTile - 1) / queryTile
    let scratchFloats = tokenflow_attention_scratch_floats(headDim, valueDim)
    try Threading.parallelRanges(batch * heads * queryTiles, scratchFloats: scratchFloats) { items, scratch in
        for item in items {
            let tile = item % queryTiles, head = (item / queryTiles) % heads, b = item / (queryTiles * heads)
            let firstQuery = tile * queryTile
            tokenflow_attention_tile(
                q.value + (b * queries + firstQuery) * qWidth + head * headDim, qWidth,
                k.value + b * keys * kWidth + head * headDim, kWidth,
                v.value + b * keys * vWidth + head * valueDim, vWidth,
                o.value + (b * queries + firstQuery) * vWidth + head * valueDim, vWidth,
                min(queryTile, queries - firstQuery), keys, headDim, valueDim, scale,
                causal ? 1 : 0, firstQuery, scratch)
        }
    }
    return out
}
