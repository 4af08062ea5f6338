import Tensors
import XCTest

/// Each kernel against PyTorch (Tests/Fixtures/kernels.safetensors, written by
/// generate_kernel_fixtures.py). Tolerance: max abs error <= 1e-4 x max(1, |expected|max). Float32
/// GEMMs with K <= 600 accumulate ~1e-6 relative rounding; 1e-4 leaves room for a different
/// summation order (OpenBLAS vs MKL-DNN) and the polynomial exp/erf (~2e-7) without hiding a real bug,
/// which shows up as errors of order 1e-2 or more.
final class KernelTests: XCTestCase {
    static let fixtures = try! SafetensorsFile(path: fixturesDirectory + "/kernels.safetensors")
    let tolerance: Float = 1e-4

    func t(_ name: String) -> Tensor { try! Self.fixtures.tensor(name) }

    override func setUp() { Threading.configure(threads: 2) }

    func testMatmul() throws {
        assertClose(try matmul(t("matmul.a"), t("matmul.b")), t("matmul.out"), tolerance: tolerance, "matmul")
        assertClose(try matmul(t("bmm.a"), t("bmm.b")), t("bmm.out"), tolerance: tolerance, "batched matmul")
        assertClose(try matmul(t("matmul_bt.a"), t("matmul_bt.b"), transposeB: true), t("matmul_bt.out"),
                    tolerance: tolerance, "matmul with B transposed, split over threads")
    }

    func testMatmulIsTheSameOnOneAndTwoThreads() throws {
        let a = t("matmul_bt.a"), b = t("matmul_bt.b")
        Threading.configure(threads: 1)
        let single = try matmul(a, b, transposeB: true)
        Threading.configure(threads: 2)
        let double = try matmul(a, b, transposeB: true)
        XCTAssertEqual(single.scalars, double.scalars)
    }

    /// The float32 GEMMs against PyTorch on both libraries: oneDNN's (where the CPU has AVX2 and FMA) and OpenBLAS's
    /// (other CPUs, and any product oneDNN refuses), in linear layers and both convolution algorithms.
    func testGEMMLibraries() throws {
        try onEveryGEMMLibrary { library in
            assertClose(try matmul(t("matmul_bt.a"), t("matmul_bt.b"), transposeB: true), t("matmul_bt.out"), tolerance: tolerance,
                        "matmul with B transposed on \(library)")
            assertClose(try linear(t("linear.x"), weight: t("linear.w"), bias: t("linear.b")), t("linear.out"), tolerance: tolerance,
                        "linear on \(library)")
            for algorithm in [ConvolutionAlgorithm.im2col, .winograd4x4] {
                assertClose(try conv2d(t("conv3x3.x"), weight: t("conv3x3.w"), bias: t("conv3x3.b"), stride: 1, padding: .uniform(1),
                                       algorithm: algorithm), t("conv3x3.out"), tolerance: tolerance, "conv3x3 \(algorithm) on \(library)")
            }
        }
    }

    func testLinear() throws {
        assertClose(try linear(t("linear.x"), weight: t("linear.w"), bias: t("linear.b")), t("linear.out"),
                    tolerance: tolerance, "linear")
    }

    /// Every algorithm against PyTorch (Winograd applies to the 3x3 stride-1 cases; the others stay im2col), the
    /// Winograd transforms on every kernel path.
    func testConvolutions() throws {
        try onEveryKernelPath { path in
            for name in ["conv3x3", "conv3x3s2", "conv1x1", "conv3x3_wide"] {
                let w = t("\(name).w")
                let stride = name.contains("s2") ? 2 : 1
                let padding = w.shape[2] == 3 ? 1 : 0
                for algorithm in [ConvolutionAlgorithm.im2col, .winograd2x2, .winograd4x4] {
                    assertClose(try conv2d(t("\(name).x"), weight: w, bias: t("\(name).b"), stride: stride, padding: .uniform(padding),
                                           algorithm: algorithm),
                                t("\(name).out"), tolerance: tolerance, "\(name) \(algorithm), \(path) path")
                }
            }
        }
        let asymmetric = try conv2d(t("conv3x3s2_asym.x"), weight: t("conv3x3s2_asym.w"), bias: t("conv3x3s2_asym.b"),
                                stride: 2, padding: Padding2D(top: 0, left: 0, bottom: 1, right: 1))
        assertClose(asymmetric, t("conv3x3s2_asym.out"), tolerance: tolerance, "conv stride 2, pad right/bottom")
    }

    /// Winograd F(2x2, 3x3) and F(4x4, 3x3) against im2col at sizes the automatic choice gives them (a UNet
    /// level's channels, output sizes that are no multiple of the tile, one-sided padding, several bands of tile
    /// rows, a batch of two images in 16-column slots of one band). They differ from im2col by rounding only:
    /// measured max 3.4-4.3e-7 of the output scale for F(2x2, 3x3), 2.4-5.8e-6 for F(4x4, 3x3), whose transforms
    /// have coefficients up to 8; tolerance 1e-5 of the scale, while a wrong transform coefficient or tile offset
    /// errs by O(1). On every kernel path (the transforms' vector widths differ, so do their tails).
    func testWinogradMatchesIm2col() throws {
        try onEveryKernelPath { path in try winogradMatchesIm2col(path) }
    }

    func winogradMatchesIm2col(_ path: KernelPath) throws {
        for tile in WinogradTile.allCases {
            let algorithm: ConvolutionAlgorithm = tile == .two ? .winograd2x2 : .winograd4x4
            // A band budget of `rows` tile rows for a `width`-wide output with `channels` channels.
            func bands(of rows: Int, width: Int, channels: Int) -> Int {
                (tile.rawValue + 2) * (tile.rawValue + 2) * channels * ((width + tile.rawValue - 1) / tile.rawValue) * rows
            }
            for (shape, padding, budget) in [([2, 48, 33, 35], Padding2D.uniform(1), 4 << 20),
                                             ([1, 64, 40, 32], Padding2D(top: 1, left: 0, bottom: 1, right: 2),
                                              bands(of: 3, width: 33, channels: 64)),
                                             ([1, 16, 7, 5], Padding2D.uniform(1), 4 << 20),
                                             // Bands of 2 tile rows in each of 3 images of 3-5 tile rows.
                                             ([3, 16, 9, 11], Padding2D.uniform(1), bands(of: 2, width: 11, channels: 24))] {
                let x = try gaussianNoise(shape: shape, seed: UInt64(shape[1]))
                let w = try gaussianNoise(shape: [24, shape[1], 3, 3], seed: 5), b = try gaussianNoise(shape: [24], seed: 6)
                let expected = try conv2d(x, weight: w, bias: b, stride: 1, padding: padding, algorithm: .im2col)
                let winograd = try conv2d(x, weight: w, bias: b, stride: 1, padding: padding, unfoldBudget: budget, algorithm: algorithm)
                assertClose(winograd, expected, tolerance: 1e-5, "Winograd \(tile.rawValue)x\(tile.rawValue) \(shape) \(padding), \(path) path")
            }
        }
    }

    func testConvolutionInSeveralBandsMatchesOneBand() throws {
        let x = t("conv3x3_wide.x"), w = t("conv3x3_wide.w"), b = t("conv3x3_wide.b")
        // 64 channels x 9 taps x 18 columns = 10368 elements per output row: a budget of 3 rows
        // gives 7 bands of 3 rows with a short last band.
        let banded = try conv2d(x, weight: w, bias: b, stride: 1, padding: .uniform(1), unfoldBudget: 3 * 10368)
        assertClose(banded, t("conv3x3_wide.out"), tolerance: tolerance, "banded conv")
        let noBias = try conv2d(x, weight: w, bias: nil, stride: 1, padding: .uniform(1), unfoldBudget: 3 * 10368)
        let withBias = try conv2d(x, weight: w, bias: b, stride: 1, padding: .uniform(1))
        let plane = 20 * 18
        for i in stride(from: 0, to: noBias.count, by: 97) {
            XCTAssertEqual(noBias[flat: i] + b[flat: i / plane], withBias[flat: i], accuracy: 1e-4)
        }
    }

    func testNormalizationOnEveryKernelPath() throws {
        let x = t("groupnorm.x"), w = t("groupnorm.w"), b = t("groupnorm.b")
        try onEveryKernelPath { path in
            assertClose(try groupNorm(x, groups: 8, weight: w, bias: b, eps: 1e-6), t("groupnorm.out"), tolerance: tolerance,
                        "groupnorm, \(path) path")
            assertClose(try groupNorm(x, groups: 8, weight: w, bias: b, eps: 1e-6, fusedSiLU: true), t("groupnorm_silu.out"),
                        tolerance: tolerance, "groupnorm + silu, \(path) path")
            let overwritten = try x.copy()
            groupNormInPlace(overwritten, groups: 8, weight: w, bias: b, eps: 1e-6, fusedSiLU: true)
            assertClose(overwritten, t("groupnorm_silu.out"), tolerance: tolerance, "groupnorm + silu in place, \(path) path")
            assertClose(try layerNorm(t("layernorm.x"), weight: t("layernorm.w"), bias: t("layernorm.b")), t("layernorm.out"),
                        tolerance: tolerance, "layernorm, \(path) path")
        }
    }

    func testActivationsOnEveryKernelPath() throws {
        let x = t("act.x")
        try onEveryKernelPath { path in
            assertClose(try silu(x), t("act.silu"), tolerance: tolerance, "silu, \(path) path")
            assertClose(try gelu(x), t("act.gelu"), tolerance: tolerance, "gelu, \(path) path")
            assertClose(try quickGelu(x), t("act.quick_gelu"), tolerance: tolerance, "quick_gelu, \(path) path")
            assertClose(try geglu(t("geglu.x")), t("geglu.out"), tolerance: tolerance, "geglu, \(path) path")
            assertClose(try softmax(t("softmax.x")), t("softmax.out"), tolerance: tolerance, "softmax, \(path) path")
        }
    }

    func testShapeOps() {
        let x = t("upsample.x")
        XCTAssertEqual(try upsampleNearest2x(x).scalars, t("upsample.out").scalars)
        XCTAssertEqual(try permute(x, [0, 2, 3, 1]).scalars, t("permute.out").scalars)
        XCTAssertEqual(try permute(x, [0, 2, 3, 1]).shape, [2, 5, 4, 3])
        XCTAssertEqual(try concat([x, t("concat.y")], axis: 1).scalars, t("concat.out").scalars)
        XCTAssertEqual(x.reshaped([2, -1]).shape, [2, 60])
        XCTAssertEqual(x.slice(1..<2).scalars, Array(x.scalars[60...]))
    }

    /// Rows gathered by index, views for a consecutive run; repeated rows found bytewise (-0 and 0 differ).
    func testGatherRowsAndDistinctRows() throws {
        let x = t("upsample.x")  // [2, 3, 5, 4]
        let a = x.row(0).scalars, b = x.row(1).scalars
        XCTAssertEqual(try gatherRows(x, [1, 0, 1]).scalars, b + a + b)
        let view = try gatherRows(x, [1])
        XCTAssertEqual(view.storage === x.storage, true)
        XCTAssertEqual(view.scalars, b)
        let batch = try gatherRows(x, [0, 1, 0, 0, 1])
        let rows = try DistinctRows(batch)
        XCTAssertEqual(rows.rowOf, [0, 1, 0, 0, 1])
        XCTAssertEqual(rows.distinct.shape, [2, 3, 5, 4])
        XCTAssertEqual(try gatherRows(rows.distinct, rows.rowOf).scalars, batch.scalars)
        let signs = try Tensor(shape: [3, 2], values: [0, 1, -0.0, 1, 0, 1])
        XCTAssertEqual(try DistinctRows(signs).rowOf, [0, 1, 0])
    }

    /// Every instruction-set path this CPU runs (the C kernels' dispatch), against PyTorch's SDPA.
    func testAttentionOnEveryKernelPath() throws {
        try onEveryKernelPath { path in
            for (name, heads) in [("attn_self", 4), ("attn_cross", 5)] {
                let out = try attention(query: t("\(name).q"), key: t("\(name).k"), value: t("\(name).v"), heads: heads)
                assertClose(out, t("\(name).out"), tolerance: tolerance, "\(name), \(path) path")
            }
            let causal = try attention(query: t("attn_causal.q"), key: t("attn_causal.k"), value: t("attn_causal.v"),
                                       heads: 4, causal: true)
            assertClose(causal, t("attn_causal.out"), tolerance: tolerance, "causal attention, \(path) path")
        }
    }

    func testNearestNeighbourMatchesTorchArgmaxIncludingTies() throws {
        let indices = try nearestNeighborIndices(queries: t("nn.queries"), candidates: t("nn.candidates"))
        let expected = t("nn.indices").scalars.map { Int32($0) }
        XCTAssertEqual(indices, expected)
        XCTAssertEqual(indices[3], 5, "exact tie must resolve to the first index")
        XCTAssertEqual(indices[4], 20, "tie across the 1024-column block boundary must resolve to the first index")
    }
}

/// conv2d on images down to 1 pixel wide or high (the VAE's last levels for tiny inputs), against a
/// direct convolution written out in the test: every tap outside the image must read zero.
final class SmallConvolutionTests: XCTestCase {
    func directConvolution(_ x: Tensor, _ w: Tensor, stride: Int, padding: Padding2D) throws -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, k) = (w.shape[0], w.shape[2])
        let outH = (h + padding.top + padding.bottom - k) / stride + 1, outW = (wd + padding.left + padding.right - k) / stride + 1
        let out = try Tensor(zeros: [n, o, outH, outW])
        for b in 0..<n { for oc in 0..<o { for oy in 0..<outH { for ox in 0..<outW {
            var sum: Float = 0
            for ic in 0..<c { for ky in 0..<k { for kx in 0..<k {
                let iy = oy * stride + ky - padding.top, ix = ox * stride + kx - padding.left
                if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                    sum += x[flat: ((b * c + ic) * h + iy) * wd + ix] * w[flat: ((oc * c + ic) * k + ky) * k + kx]
                }
            }}}
            out[flat: ((b * o + oc) * outH + oy) * outW + ox] = sum
        }}}}
        return out
    }

    /// im2col's bands: several small images to a band when the weights are large (the second case: 128 x 1024 x
    /// 3 x 3), each image in its own 16-column slot; else one image, or bands of its rows, to a band (3-5 rows in
    /// bands of 2). For 3x3 (stride 1 and 2) and 1x1 convolutions, with and without a bias, against a direct
    /// convolution; and identical images give identical outputs.
    func testIm2colBands() throws {
        for (inChannels, outChannels, rowsPerBand) in [(5, 6, 2), (1024, 128, 5)] {
            let image = try gaussianNoise(shape: [1, inChannels, 5, 7], seed: 21), other = try gaussianNoise(shape: [1, inChannels, 5, 7], seed: 20)
            // Images 0 and 2 are the same.
            let x = try Tensor(uninitializedShape: [3, inChannels, 5, 7])
            for (n, source) in [image, other, image].enumerated() {
                for i in 0..<source.count { x[flat: n * source.count + i] = source[flat: i] }
            }
            let bias = try gaussianNoise(shape: [outChannels], seed: 22)
            for (kernel, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
                let w = try gaussianNoise(shape: [outChannels, inChannels, kernel, kernel], seed: UInt64(23 + kernel))
                let outW = (7 + 2 * padding - kernel) / stride + 1
                let direct = try directConvolution(x, w, stride: stride, padding: .uniform(padding))
                for withBias in [false, true] {
                    let label = "\(inChannels) -> \(outChannels) channels, \(kernel)x\(kernel) stride \(stride), bias \(withBias)"
                    let banded = try conv2d(x, weight: w, bias: withBias ? bias : nil, stride: stride, padding: .uniform(padding),
                                            unfoldBudget: rowsPerBand * inChannels * kernel * kernel * outW * (inChannels > 5 ? 16 : 1),
                                            algorithm: .im2col)
                    let expected = try direct.copy()
                    let plane = direct.count / (3 * outChannels)
                    if withBias {
                        for i in 0..<expected.count { expected[flat: i] += bias[flat: (i / plane) % outChannels] }
                    }
                    assertClose(banded, expected, tolerance: 1e-5, label)
                    let imageSize = outChannels * plane
                    XCTAssertEqual(Array(banded.scalars[0..<imageSize]), Array(banded.scalars[(2 * imageSize)..<(3 * imageSize)]),
                                   "\(label): identical images")
                }
            }
        }
    }

    /// Identical images in a batch give identical outputs, by every algorithm, from 1x1 to 8x8 images in
    /// batches of 5 to 18: each image's columns sit alike in the GEMMs (`ConvolutionBands`' slots). A static shot
    /// stays static, and COVE's merging, which breaks exact ties by index, sees the same scores for each copy. On
    /// both GEMM libraries.
    func testIdenticalImagesGiveIdenticalOutputs() throws {
        for (inChannels, outChannels, size, batch) in [(32, 32, 8, 6), (64, 32, 4, 18), (64, 64, 2, 18), (64, 64, 1, 18),
                                                       (96, 64, 4, 6), (1024, 128, 5, 5)] {
            let image = try gaussianNoise(shape: [1, inChannels, size, size], seed: 3)
            let x = try Tensor(uninitializedShape: [batch, inChannels, size, size])
            for n in 0..<batch { (x.mutablePointer + n * image.count).update(from: image.pointer, count: image.count) }
            for (kernel, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
                let w = try gaussianNoise(shape: [outChannels, inChannels, kernel, kernel], seed: 4)
                let bias = try gaussianNoise(shape: [outChannels], seed: 5)
                for algorithm in ConvolutionAlgorithm.allCases {
                    try onEveryGEMMLibrary { library in
                        let y = try conv2d(x, weight: w, bias: bias, stride: stride, padding: .uniform(padding), algorithm: algorithm)
                        let imageSize = y.count / batch, first = Array(y.scalars[0..<imageSize])
                        for n in 1..<batch {
                            XCTAssertEqual(Array(y.scalars[(n * imageSize)..<((n + 1) * imageSize)]), first,
                                           "image \(n) of \(batch) \(size)x\(size), \(inChannels) -> \(outChannels), \(kernel)x\(kernel) stride \(stride), \(algorithm) on \(library)")
                        }
                    }
                }
            }
        }
    }

    /// On every kernel path (the Winograd transforms' vector tails).
    func testTinyImagesAndEveryPadding() throws {
        try onEveryKernelPath { path in try tinyImagesAndEveryPadding(path) }
    }

    func tinyImagesAndEveryPadding(_ path: KernelPath) throws {
        let w = try gaussianNoise(shape: [3, 2, 3, 3], seed: 7)
        for (h, wd) in [(1, 1), (1, 2), (2, 1), (1, 5), (4, 1), (3, 3)] {
            let x = try gaussianNoise(shape: [2, 2, h, wd], seed: UInt64(h * 10 + wd))
            for (stride, padding) in [(1, Padding2D.uniform(1)), (2, .uniform(1)), (2, Padding2D(top: 0, left: 0, bottom: 1, right: 1))] {
                let outH = (h + padding.top + padding.bottom - 3) / stride + 1, outW = (wd + padding.left + padding.right - 3) / stride + 1
                guard outH > 0 && outW > 0 else { continue }
                for algorithm in [ConvolutionAlgorithm.im2col, .winograd2x2, .winograd4x4] {
                    let actual = try conv2d(x, weight: w, bias: nil, stride: stride, padding: padding, algorithm: algorithm)
                    assertClose(actual, try directConvolution(x, w, stride: stride, padding: padding), tolerance: 1e-5,
                                "\(h)x\(wd) stride \(stride) padding \(padding) \(algorithm), \(path) path")
                }
            }
        }
    }
}
