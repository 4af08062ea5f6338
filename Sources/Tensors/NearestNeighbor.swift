/// For each row of `queries` [Nq, d], the index of the row of `candidates` [Nc, d] with the highest
/// cosine similarity (the first such index on ties, like torch.argmax).
///
/// The similarity matrix is computed in (256 x 1024) blocks with a running maximum per query, so
/// memory is one block per worker, never Nq x Nc.
public func nearestNeighborIndices(queries: Tensor, candidates: Tensor) throws -> [Int32] {
    precondition(queries.rank == 2 && candidates.rank == 2 && queries.shape[1] == candidates.shape[1],
                 "nearestNeighborIndices: \(queries.shape) and \(candidates.shape) must be [N, d] with equal d")
    let dim = queries.shape[1], queryCount = queries.shape[0], candidateCount = candidates.shape[0]
    precondition(candidateCount > 0, "nearestNeighborIndices: no candidates")
    let q = try rowNormalized(queries), c = try rowNormalized(candidates)
    var result = [Int32](repeating: 0, count: queryCount)
    let rowTile = 256, columnTile = 1024
    let rowTiles = (queryCount + rowTile - 1) / rowTile
    let qp = UncheckedBox(q.pointer), cp = UncheckedBox(c.pointer)
    try result.withUnsafeMutableBufferPointer { resultBuffer in
        let best = UncheckedBox(resultBuffer.baseAddress!)
        try Threading.parallelRanges(rowTiles, scratchFloats: rowTile * columnTile + rowTile) { tiles, scratch in
            let block = scratch, bestValue = scratch + rowTile * columnTile
            for tile in tiles {
                let firstRow = tile * rowTile, rows = min(rowTile, queryCount - firstRow)
                bestValue.initialize(repeating: -Float.infinity, count: rows)
                var firstColumn = 0
                while firstColumn < candidateCount {
                    let cols = min(columnTile, candidateCount - firstColumn)
                    sgemm(transposeB: true, m: rows, n: cols, k: dim, a: qp.value + firstRow * dim, lda: dim,
                          b: cp.value + firstColumn * dim, ldb: dim, c: block, ldc: cols, parallel: false)
                    for r in 0..<rows {
                        let s = block + r * cols
                        var value = bestValue[r], index = -1
                        // Strictly greater: earlier columns (and earlier blocks) win ties.
                        for j in 0..<cols where s[j] > value { value = s[j]; index = j }
                        if index >= 0 {
                            bestValue[r] = value
                            best.value[firstRow + r] = Int32(firstColumn + index)
                        }
                    }
                    firstColumn += cols
                }
            }
        }
    }
    return result
}

/// Rows scaled to unit L2 norm (all-zero rows stay zero).
public func rowNormalized(_ x: Tensor) throws -> Tensor {
    let width = x.shape.last!, rows = x.count / max(width, 1)
    let out = try Tensor(uninitializedShape: x.shape)
    let src = UncheckedBox(x.pointer), dst = UncheckedBox(out.mutablePointer)
    Threading.parallelRanges(rows) { range in
        for r in range {
            let s = src.value + r * width, d = dst.value + r * width
            var sum: Float = 0
            for j in 0..<width { sum += s[j] * s[j] }
            let inverse: Float = sum > 0 ? 1 / sum.squareRoot() : 0
            for j in 0..<width { d[j] = s[j] * inverse }
        }
    }
    return out
}
