import Tensors

/// COVE's one-to-many token correspondences between the frames of a group (paper Sec. 3.2, Eq. 4-10).
///
/// Features [N, C, H, W] are normalised per token (Eq. 4). For token p of frame i, frame i+1's K matches are
/// the K tokens of the l x l window centred on p with the highest cosine similarity to p (Eq. 8 restricted
/// by Eq. 10); frame i+2's are searched in the window centred on frame i+1's top-1 match, with that match's
/// feature (Eq. 9), and so on to the last frame; the same backwards to frame 0. Rules the paper leaves open
/// (Tests/Fixtures/COVE-DECISIONS.md): window offsets -floor(l/2) ..< l - floor(l/2); positions outside the
/// map are left out; ties go to the lower flat index; a window with fewer than K positions repeats its last
/// one.
///
/// Cost: one hop depends only on (frame, token, direction), never on where the chain started, so every hop
/// is computed once, O(N H W l^2 C), and the chains are lookups; the (N H W)^2 similarity is never built.
public struct Correspondences: Sendable, Equatable {
    public let frames: Int, height: Int, width: Int
    /// Matches per other frame (K).
    public let count: Int
    /// Flat positions (y * width + x): [frame i][token p][frame j][rank k], rank 0 the most similar; for
    /// j == i, p itself K times.
    public let positions: [Int32]

    public var tokens: Int { height * width }

    /// The K positions in frame `j` that token `p` of frame `i` corresponds to.
    public func matches(frame i: Int, token p: Int, in j: Int) -> ArraySlice<Int32> {
        let start = ((i * tokens + p) * frames + j) * count
        return positions[start..<(start + count)]
    }

    public init(frames: Int, height: Int, width: Int, count: Int, positions: [Int32]) {
        precondition(positions.count == frames * height * width * frames * count, "positions do not fit the sizes")
        (self.frames, self.height, self.width, self.count, self.positions) = (frames, height, width, count, positions)
    }

    /// Correspondences of `features` [N, C, H, W] with an l x l `window` and `count` (K) matches per frame.
    public init(features: Tensor, window: Int, count: Int) throws {
        precondition(features.rank == 4 && window >= 1 && count >= 1, "correspondences of \(features.shape), window \(window), K \(count)")
        let (n, channels, height, width) = (features.shape[0], features.shape[1], features.shape[2], features.shape[3])
        let tokens = height * width
        let units = try unitTokens(features)
        let search = WindowSearch(height: height, width: width, window: window, count: count)
        // hops[direction][frame j][token q]: the K matches in frame j + 1 (direction 0) or j - 1 (direction 1)
        // of token q of frame j.
        var hops = [Int32](repeating: 0, count: 2 * n * tokens * count)
        let unitsBox = UncheckedBox(units.pointer)
        hops.withUnsafeMutableBufferPointer { buffer in
            let out = UncheckedBox(buffer.baseAddress!)
            Threading.parallelFor(2 * n) { item in
                let direction = item / n, frame = item % n
                let target = direction == 0 ? frame + 1 : frame - 1
                guard (0..<n).contains(target) else { return }
                for q in 0..<tokens {
                    let query = unitsBox.value + (frame * tokens + q) * channels
                    search.best(query: query, candidates: unitsBox.value + target * tokens * channels, channels: channels,
                                center: q, into: out.value + (item * tokens + q) * count)
                }
            }
        }
        var positions = [Int32](repeating: 0, count: n * tokens * n * count)
        for i in 0..<n {
            for p in 0..<tokens {
                let row = ((i * tokens + p) * n) * count
                for k in 0..<count { positions[row + i * count + k] = Int32(p) }
                for (direction, step) in [(0, 1), (1, -1)] {
                    var center = p, j = i + step
                    while (0..<n).contains(j) {
                        let hop = ((direction * n + (j - step)) * tokens + center) * count
                        for k in 0..<count { positions[row + j * count + k] = hops[hop + k] }
                        center = Int(hops[hop])
                        j += step
                    }
                }
            }
        }
        self.init(frames: n, height: height, width: width, count: count, positions: positions)
    }
}

/// [N, C, H, W] -> [N, H*W, C] with every token divided by its L2 norm (clamped like F.normalize).
func unitTokens(_ features: Tensor) throws -> Tensor {
    let tokens = try permute(features, [0, 2, 3, 1])
    let channels = features.shape[1]
    for t in 0..<(tokens.count / max(channels, 1)) {
        let row = tokens.mutablePointer + t * channels
        var squares: Float = 0
        for c in 0..<channels { squares += row[c] * row[c] }
        let scale = 1 / max(squares.squareRoot(), 1e-12)
        for c in 0..<channels { row[c] *= scale }
    }
    return tokens.reshaped([features.shape[0], features.shape[2] * features.shape[3], channels])
}

/// The top-K search of one hop inside an l x l window.
struct WindowSearch: Sendable {
    let height: Int, width: Int, window: Int, count: Int

    /// Writes the `count` window positions around `center` whose unit vectors in `candidates` [H*W, C] are
    /// most similar to `query` [C], best first (ties: lower flat index).
    func best(query: UnsafePointer<Float>, candidates: UnsafePointer<Float>, channels: Int, center: Int,
              into out: UnsafeMutablePointer<Int32>) {
        let first = -(window / 2)
        let (cy, cx) = (center / width, center % width)
        // The running top K, kept sorted: (score, position).
        var top: [(score: Float, position: Int)] = []
        top.reserveCapacity(count + 1)
        for y in max(0, cy + first)..<min(height, cy + first + window) {
            for x in max(0, cx + first)..<min(width, cx + first + window) {
                let position = y * width + x
                let row = candidates + position * channels
                var score: Float = 0
                for c in 0..<channels { score += query[c] * row[c] }
                // Positions arrive in ascending flat order, so an equal score never displaces an earlier one.
                if top.count == count, let last = top.last, score <= last.score { continue }
                let slot = top.firstIndex { score > $0.score } ?? top.count
                top.insert((score, position), at: slot)
                if top.count > count { top.removeLast() }
            }
        }
        for k in 0..<count { out[k] = Int32(top[min(k, top.count - 1)].position) }
    }
}
