/// ToMe's bipartite soft matching (Bolya et al., "Token Merging"), as COVE merges the tokens a token's
/// correspondences gather (COVE Sec. 3.3, Eq. 12), on `tokens` [Q, M, C]: Q independent sets of M tokens.
///
/// In each set, tokens at even positions form side a, odd positions side b. Each a token's match is its
/// most cosine-similar b token (ties: the lower b index); the r a tokens with the most similar matches
/// (ties: the lower a index first) are merged into their matches by the plain mean of the b token and every
/// a token merged into it. r = min(floor(ratio * M), floor(M / 2)). Returns [Q, M - r, C]: the unmerged a
/// tokens by ascending a index, then every b token in order. The order does not matter to attention over
/// the set; it is fixed so results can be compared with a reference.
public func bipartiteSoftMatching(_ tokens: Tensor, ratio: Float) throws -> Tensor {
    precondition(tokens.rank == 3, "bipartiteSoftMatching expects [sets, tokens, channels], got \(tokens.shape)")
    let (sets, count, width) = (tokens.shape[0], tokens.shape[1], tokens.shape[2])
    let merged = min(countOfFraction(count, ratio), count / 2)
    if merged == 0 { return tokens }
    let aCount = (count + 1) / 2, bCount = count / 2
    let kept = count - merged
    let out = try Tensor(uninitializedShape: [sets, kept, width])
    // Per worker: the unit tokens and the member count of each b token.
    let scratchFloats = count * width + bCount
    let input = UncheckedBox(tokens.pointer), output = UncheckedBox(out.mutablePointer)
    try Threading.parallelRanges(sets, scratchFloats: scratchFloats) { range, scratch in
        let units = scratch, members = units + count * width
        for set in range {
            let x = input.value + set * count * width, y = output.value + set * kept * width
            // Unit vectors (norm clamped like F.normalize's eps), token t at row t.
            for t in 0..<count {
                var squares: Float = 0
                for c in 0..<width { squares += x[t * width + c] * x[t * width + c] }
                let scale = 1 / max(squares.squareRoot(), 1e-12)
                for c in 0..<width { units[t * width + c] = x[t * width + c] * scale }
            }
            // Each a token's best b (a = token 2i, b = token 2j + 1).
            var best = [(score: Float, match: Int)](repeating: (-.infinity, 0), count: aCount)
            for i in 0..<aCount {
                let a = units + 2 * i * width
                for j in 0..<bCount {
                    let b = units + (2 * j + 1) * width
                    var dot: Float = 0
                    for c in 0..<width { dot += a[c] * b[c] }
                    if dot > best[i].score || j == 0 { best[i] = (dot, j) }
                }
            }
            // The `merged` a tokens with the highest scores; a stable sort keeps lower a indices first on ties.
            let order = (0..<aCount).sorted { best[$0].score > best[$1].score || (best[$0].score == best[$1].score && $0 < $1) }
            let mergedA = order.prefix(merged), keptA = order.dropFirst(merged).sorted()
            for (row, i) in keptA.enumerated() {
                (y + row * width).update(from: x + 2 * i * width, count: width)
            }
            // b tokens: the sum of the b token and its merged a tokens, divided by how many there are.
            let bOut = y + keptA.count * width
            for j in 0..<bCount {
                (bOut + j * width).update(from: x + (2 * j + 1) * width, count: width)
                members[j] = 1
            }
            for i in mergedA {
                let j = best[i].match
                for c in 0..<width { bOut[j * width + c] += x[2 * i * width + c] }
                members[j] += 1
            }
            for j in 0..<bCount where members[j] > 1 {
                for c in 0..<width { bOut[j * width + c] /= members[j] }
            }
        }
    }
    return out
}

/// floor(count * fraction), with products within 1e-4 of an integer rounded up to it: a Float fraction
/// such as 0.7 is stored as 0.69999999, and 10 x that must still give 7 (as the reference computes it from
/// a decimal). Step fractions and merge ratios both count this way.
public func countOfFraction(_ count: Int, _ fraction: Float) -> Int {
    Int((Double(count) * Double(fraction) + 1e-4).rounded(.down))
}
