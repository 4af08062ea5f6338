import Tensors
import VideoEditing
import XCTest

/// COVE's correspondences (paper Sec. 3.2) and token merging (Sec. 3.3 Eq. 12) against the independent
/// PyTorch implementation of Tests/Fixtures/generate_cove_fixtures.py (brute force: the full similarity
/// matrix masked to the window, top-K, chained), and on synthetic features with known motion.
final class CoveCorrespondenceTests: XCTestCase {
    override func setUp() { Threading.configure(threads: 2) }

    static let fixture = try! SafetensorsFile(path: "\(tokenFlowFixtures)/expected/cove-sd2-tiny.safetensors")

    /// Positions exact: the features are stored, their rank margins are >= 2.9e-5 (random) or exact ties
    /// resolved by the lower flat index (palette features, every dot product a multiple of 1/4).
    func testEqualsBruteForceOnRandomFeaturesEvenWindowsAndTies() throws {
        for (name, features, window, k) in [("corr", "corr.features", 5, 3), ("corr.even", "corr.features", 2, 3),
                                            ("corr.ties", "corr.ties.features", 3, 2)] {
            let expected = try Self.fixture.int32Tensor("\(name).positions")
            let found = try Correspondences(features: Self.fixture.tensor(features), window: window, count: k)
            XCTAssertEqual([found.frames, found.tokens, found.frames, found.count], expected.shape, name)
            let differing = zip(found.positions, expected.values).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(name): \(differing) of \(expected.values.count) positions differ")
        }
    }

    /// Features that move by a known shift per frame (|shift| <= 4 tokens, window 9): the chain recovers
    /// every shift exactly, forwards and backwards, for every token whose path stays on the map.
    func testChainRecoversKnownShifts() throws {
        let (frames, channels, height, width) = (5, 16, 20, 24)
        let shifts = [(0, 0), (2, -3), (-4, 1), (3, 4), (-1, -2)]  // (dy, dx) from frame f-1 to frame f
        // A random pattern on a large canvas; frame f shows it offset by the sum of the shifts so far, so
        // content at (y, x) in frame f-1 is at (y + dy, x + dx) in frame f.
        let canvas = try gaussianNoise(shape: [channels, 60, 60], seed: 7)
        let features = try Tensor(uninitializedShape: [frames, channels, height, width])
        var offsets: [(Int, Int)] = []
        var (oy, ox) = (20, 20)
        for f in 0..<frames {
            oy -= shifts[f].0; ox -= shifts[f].1
            offsets.append((oy, ox))
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width {
                        features[flat: ((f * channels + c) * height + y) * width + x] = canvas[flat: (c * 60 + y + oy) * 60 + x + ox]
                    }
                }
            }
        }
        let found = try Correspondences(features: features, window: 9, count: 3)
        var checked = 0
        for i in 0..<frames {
            for p in 0..<(height * width) {
                let (y, x) = (p / width, p % width)
                for j in 0..<frames where j != i {
                    // Where token p's content is in frame j.
                    let (ty, tx) = (y + offsets[i].0 - offsets[j].0, x + offsets[i].1 - offsets[j].1)
                    // Only chains whose every hop lands on the map have a defined answer.
                    let path = (min(i, j)...max(i, j)).map { (y + offsets[i].0 - offsets[$0].0, x + offsets[i].1 - offsets[$0].1) }
                    guard path.allSatisfy({ (0..<height).contains($0.0) && (0..<width).contains($0.1) }) else { continue }
                    XCTAssertEqual(Int(found.matches(frame: i, token: p, in: j).first!), ty * width + tx,
                                   "frame \(i) token (\(y), \(x)) -> frame \(j)")
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 4000)
    }

    /// A static clip: every token's best match is itself, in every frame.
    func testStaticFeaturesGiveIdentity() throws {
        let frame = try gaussianNoise(shape: [1, 8, 6, 7], seed: 3)
        let found = try Correspondences(features: concat(Array(repeating: frame, count: 4), axis: 0), window: 3, count: 2)
        for i in 0..<4 { for p in 0..<42 { for j in 0..<4 { XCTAssertEqual(found.matches(frame: i, token: p, in: j).first, Int32(p)) } } }
    }

    /// ToMe's bipartite soft matching with ratio 0.5 on 4 sets of 15 tokens (two with exact duplicates):
    /// 1e-6, the fp32-vs-fp64 difference of the reference being 1.2e-7.
    func testTokenMergingMatchesReference() throws {
        let merged = try bipartiteSoftMatching(Self.fixture.tensor("tome.tokens"), ratio: 0.5)
        let expected = try Self.fixture.tensor("tome.merged")
        XCTAssertEqual(merged.shape, expected.shape)
        let worst = zip(merged.scalars, expected.scalars).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(worst, 1e-6)
        // Ratio 0 keeps every token.
        XCTAssertEqual(try bipartiteSoftMatching(Self.fixture.tensor("tome.tokens"), ratio: 0).shape, [4, 15, 8])
    }
}
