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

    let queryTile = 128, keyTile = 1024
    let queryTiles = (queries + queryTile - 1) / queryTile
    let q = UncheckedBox(query.pointer), k = UncheckedBox(key.pointer), v = UncheckedBox(value.pointer)
    let o = UncheckedBox(out.mutablePointer)
    let workItems = batch * heads * queryTiles
    // Per worker: a score block, the output accumulator, and the running max and sum of each query row.
    let scratchFloats = queryTile * keyTile + queryTile * valueDim + 2 * queryTile
    try Threading.parallelRanges(workItems, scratchFloats: scratchFloats) { items, scratch in
        let scores = scratch, accumulator = scores + queryTile * keyTile
        let rowMax = accumulator + queryTile * valueDim, rowSum = rowMax + queryTile
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
                    // Keys after this query's position are masked (causal) by leaving them out of the row.
                    let allowed = causal ? max(0, min(cols, firstQuery + r - firstKey + 1)) : cols
                    if allowed < cols { (s + allowed).initialize(repeating: 0, count: cols - allowed) }
                    if allowed == 0 { continue }
                    let newMax = max(rowMax[r], maximum(s, allowed))
                    let tileSum = exponentiate(s, allowed, subtracting: newMax)
                    if rowMax[r] != newMax {
                        // Earlier tiles were scaled by exp(-oldMax); rescale them to the new maximum.
                        let correction = rowMax[r] == -Float.infinity ? 0 : vectorExpScalar(rowMax[r] - newMax)
                        rowSum[r] *= correction
                        multiply(accumulator + r * valueDim, valueDim, by: correction)
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

/// Largest of p[0..<n] (16 lanes at a time).
@inline(__always)
func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var lanes = FloatVector(repeating: -.infinity)
    var i = 0
    while i + 16 <= n { lanes = maxVector(lanes, loadVector(p + i)); i += 16 }
    var result = lanes.max()
    while i < n { result = max(result, p[i]); i += 1 }
    return result
}

/// p[i] = exp(p[i] - shift) in place; returns the sum.
@inline(__always)
func exponentiate(_ p: UnsafeMutablePointer<Float>, _ n: Int, subtracting shift: Float) -> Float {
    let shiftVector = FloatVector(repeating: shift)
    var sums = FloatVector(repeating: 0)
    var i = 0
    while i + 16 <= n {
        let e = vectorExp(loadVector(p + i) - shiftVector)
        storeVector(e, p + i)
        sums += e
        i += 16
    }
    var total = sums.sum()
    while i < n { p[i] = vectorExpScalar(p[i] - shift); total += p[i]; i += 1 }
    return total
}

/// p[0..<n] *= factor.
@inline(__always)
func multiply(_ p: UnsafeMutablePointer<Float>, _ n: Int, by factor: Float) {
    var i = 0
    while i + 16 <= n { storeVector(loadVector(p + i) * factor, p + i); i += 16 }
    while i < n { p[i] *= factor; i += 1 }
}
