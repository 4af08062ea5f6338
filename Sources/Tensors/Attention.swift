/// Scaled dot-product attention, tiled with an online softmax so memory stays at one
/// (query tile x key tile) score block per worker instead of tokens x tokens x heads.
///
/// Layouts are the ones diffusers' attention processors use before splitting heads:
/// query [B, Nq, H*d], key [B, Nk, H*d], value [B, Nk, H*dv] -> output [B, Nq, H*dv].
/// Heads are addressed by column offset, so no head-split copies are made. `causal` masks key j > i
/// (CLIP's text encoder).
public func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, scale: Float? = nil,
                      causal: Bool = false) -> Tensor {
    precondition(query.rank == 3 && key.rank == 3 && value.rank == 3, "attention expects [B, N, C] tensors")
    let (batch, queries, qWidth) = (query.shape[0], query.shape[1], query.shape[2])
    let (keys, kWidth, vWidth) = (key.shape[1], key.shape[2], value.shape[2])
    precondition(key.shape[0] == batch && value.shape[0] == batch && value.shape[1] == keys,
                 "attention: query \(query.shape), key \(key.shape), value \(value.shape) do not match")
    precondition(qWidth == kWidth && qWidth % heads == 0 && vWidth % heads == 0,
                 "attention: widths \(qWidth)/\(kWidth)/\(vWidth) do not split into \(heads) heads")
    let headDim = qWidth / heads, valueDim = vWidth / heads
    let scale = scale ?? 1 / Float(headDim).squareRoot()
    let out = Tensor(uninitializedShape: [batch, queries, vWidth])

    let queryTile = 128, keyTile = 512
    let queryTiles = (queries + queryTile - 1) / queryTile
    let q = UncheckedBox(query.pointer), k = UncheckedBox(key.pointer), v = UncheckedBox(value.pointer)
    let o = UncheckedBox(out.mutablePointer)
    let workItems = batch * heads * queryTiles
    Threading.parallelRanges(workItems) { items in
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: queryTile * keyTile)
        let accumulator = UnsafeMutablePointer<Float>.allocate(capacity: queryTile * valueDim)
        let rowMax = UnsafeMutablePointer<Float>.allocate(capacity: queryTile)
        let rowSum = UnsafeMutablePointer<Float>.allocate(capacity: queryTile)
        defer { scores.deallocate(); accumulator.deallocate(); rowMax.deallocate(); rowSum.deallocate() }
        for item in items {
            let tile = item % queryTiles, head = (item / queryTiles) % heads, b = item / (queryTiles * heads)
            let firstQuery = tile * queryTile
            let rows = min(queryTile, queries - firstQuery)
            let qBase = q.value + (b * queries + firstQuery) * qWidth + head * headDim
            let kBase = k.value + b * keys * kWidth + head * headDim
            let vBase = v.value + b * keys * vWidth + head * valueDim
            accumulator.initialize(repeating: 0, count: rows * valueDim)
            rowMax.initialize(repeating: -Float.infinity, count: rows)
            rowSum.initialize(repeating: 0, count: rows)
            let keyLimit = causal ? min(keys, firstQuery + rows) : keys
            var firstKey = 0
            while firstKey < keyLimit {
                let cols = min(keyTile, keyLimit - firstKey)
                sgemm(transposeB: true, m: rows, n: cols, k: headDim, alpha: scale,
                      a: qBase, lda: qWidth, b: kBase + firstKey * kWidth, ldb: kWidth,
                      c: scores, ldc: cols, parallel: false)
                for r in 0..<rows {
                    let s = scores + r * cols
                    if causal {
                        let lastAllowed = firstQuery + r - firstKey
                        if lastAllowed + 1 < cols {
                            for j in max(0, lastAllowed + 1)..<cols { s[j] = -Float.infinity }
                        }
                    }
                    var tileMax = -Float.infinity
                    for j in 0..<cols { tileMax = max(tileMax, s[j]) }
                    let newMax = max(rowMax[r], tileMax)
                    if newMax == -Float.infinity { // every key masked so far
                        s.initialize(repeating: 0, count: cols)
                        continue
                    }
                    let shift = FloatVector(repeating: newMax)
                    mapVectors(s, s, cols) { vectorExp($0 - shift) }
                    if causal { // exp(-inf) is clamped to ~1e-38 by vectorExp; masked keys must weigh 0
                        let lastAllowed = firstQuery + r - firstKey
                        if lastAllowed + 1 < cols { for j in max(0, lastAllowed + 1)..<cols { s[j] = 0 } }
                    }
                    var tileSum: Float = 0
                    for j in 0..<cols { tileSum += s[j] }
                    if rowMax[r] != newMax {
                        let correction = rowMax[r] == -Float.infinity ? 0 : vectorExpScalar(rowMax[r] - newMax)
                        rowSum[r] *= correction
                        let acc = accumulator + r * valueDim
                        for j in 0..<valueDim { acc[j] *= correction }
                        rowMax[r] = newMax
                    }
                    rowSum[r] += tileSum
                }
                sgemm(m: rows, n: valueDim, k: cols, a: scores, lda: cols, b: vBase + firstKey * vWidth, ldb: vWidth,
                      beta: 1, c: accumulator, ldc: valueDim, parallel: false)
                firstKey += cols
            }
            let oBase = o.value + (b * queries + firstQuery) * vWidth + head * valueDim
            for r in 0..<rows {
                let inverse = 1 / rowSum[r]
                for j in 0..<valueDim { oBase[r * vWidth + j] = accumulator[r * valueDim + j] * inverse }
            }
        }
    }
    return out
}

@inline(__always)
func vectorExpScalar(_ x: Float) -> Float { vectorExp(FloatVector(repeating: x))[0] }
