import Tensors
import XCTest

/// The tiled kernels at Stable Diffusion's real sizes (64x64 latent = 4096 tokens), checked row by row
/// against a direct double-precision computation on a sample of rows.
final class LargeShapeTests: XCTestCase {
    override func setUp() { Threading.configure(threads: 2) }

    func randomTensor(_ shape: [Int], seed: UInt64) throws -> Tensor { try gaussianNoise(shape: shape, seed: seed) }

    func testAttentionAt4096TokensFiveHeads() throws {
        let tokens = 4096, heads = 5, dim = 64
        let q = try randomTensor([1, tokens, heads * dim], seed: 1)
        let k = try randomTensor([1, tokens, heads * dim], seed: 2)
        let v = try randomTensor([1, tokens, heads * dim], seed: 3)
        // Every instruction-set path this CPU runs (the C kernels' dispatch).
        defer { KernelPath.force(KernelPath.best) }
        let outputs = try KernelPath.available.map { path in
            XCTAssertTrue(KernelPath.force(path))
            return (path, try attention(query: q, key: k, value: v, heads: heads))
        }
        let width = heads * dim
        for row in [0, 1, 127, 128, 2049, 4095] {
            for head in [0, 4] {
                var scores = [Double](repeating: 0, count: tokens)
                for j in 0..<tokens {
                    var dot = 0.0
                    for d in 0..<dim { dot += Double(q[flat: row * width + head * dim + d]) * Double(k[flat: j * width + head * dim + d]) }
                    scores[j] = dot / Double(dim).squareRoot()
                }
                let top = scores.max()!
                let weights = scores.map { exp($0 - top) }
                let total = weights.reduce(0, +)
                for d in stride(from: 0, to: dim, by: 7) {
                    var expected = 0.0
                    for j in 0..<tokens { expected += weights[j] * Double(v[flat: j * width + head * dim + d]) }
                    expected /= total
                    for (path, out) in outputs {
                        XCTAssertEqual(Double(out[flat: row * width + head * dim + d]), expected, accuracy: 1e-4,
                                       "row \(row) head \(head) dim \(d), \(path) path")
                    }
                }
            }
        }
    }

    func testNearestNeighbourAt4096By4096Tokens() throws {
        let tokens = 4096, dim = 320
        let a = try randomTensor([tokens, dim], seed: 4), b = try randomTensor([tokens, dim], seed: 5)
        let indices = try nearestNeighborIndices(queries: a, candidates: b)
        func norm(_ t: Tensor, _ r: Int) -> Double {
            (0..<dim).reduce(0.0) { $0 + Double(t[flat: r * dim + $1]) * Double(t[flat: r * dim + $1]) }.squareRoot()
        }
        let bNorms = (0..<tokens).map { norm(b, $0) }
        for row in [0, 255, 256, 1023, 1024, 3000, 4095] {
            var best = -Double.infinity, bestIndex = -1
            for j in 0..<tokens {
                var dot = 0.0
                for d in 0..<dim { dot += Double(a[flat: row * dim + d]) * Double(b[flat: j * dim + d]) }
                let cosine = dot / bNorms[j]
                if cosine > best { best = cosine; bestIndex = j }
            }
            XCTAssertEqual(Int(indices[row]), bestIndex, "row \(row)")
        }
    }
}
