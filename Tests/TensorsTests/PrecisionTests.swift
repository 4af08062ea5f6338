import Foundation
import Tensors
import XCTest

/// `precision=bf16`: the products with weights (linear and convolution layers) and attention's take bfloat16
/// operands and sum in float32, on Intel AMX or AVX512-BF16. The reference is float64 products of the same
/// operands rounded to bfloat16 here, by integer arithmetic (the kernels round with the CPU's VCVTNE2PS2BF16): what
/// stays is float32 summation error. Without a bfloat16 unit (another CPU, or a kernel path forced below avx512)
/// bf16 must compute exactly what fp32 computes; every test runs on every kernel path and every bfloat16 unit this
/// CPU has.
final class PrecisionTests: XCTestCase {
    private var bfloat16Unit: Bool { ComputePrecision.bfloat16.computed == .bfloat16 }

    private func onEveryKernelPath(_ body: () throws -> Void) throws {
        defer {
            KernelPath.force(KernelPath.best)
            if let best = Bfloat16Unit.best { Bfloat16Unit.force(best) }
        }
        for path in KernelPath.available {
            XCTAssertTrue(KernelPath.force(path))
            for unit in Bfloat16Unit.available.isEmpty ? [nil] : Bfloat16Unit.available.map(Optional.some) {
                if let unit { XCTAssertTrue(Bfloat16Unit.force(unit)) }
                XCTAssertEqual(bfloat16Unit, path == .avx512 && Bfloat16Unit.inHardware, "bfloat16 products on the \(path) path")
                try body()
            }
        }
    }

    /// Rounded to the nearest bfloat16, ties to even (NaN stays NaN; none of the tests' values is subnormal).
    private func bfloat16(_ x: Float) -> Float {
        if x.isNaN { return x }
        let bits = x.bitPattern
        return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
    }

    private func rounded(_ t: Tensor) throws -> Tensor {
        let out = try Tensor(uninitializedShape: t.shape)
        for i in 0..<t.count { out.mutablePointer[i] = bfloat16(t[flat: i]) }
        return out
    }

    func testBfloat16LinearMatchesFloat64ProductsOfRoundedOperands() throws { try onEveryKernelPath {
        // (rows, inputs, outputs): edges of the 32 x 32 micro-tile, one element, K over the 1024-deep blocks,
        // M over the 512-row blocks, N over the 4096-column ones (130 rows: split by rows, so each worker has all
        // 4200 columns), and rows split over the workers.
        for (rows, inputs, outputs) in [(37, 70, 45), (1, 1, 1), (64, 2100, 33), (600, 96, 700), (33, 1056, 1030), (130, 32, 4200)] {
            let x = try gaussianNoise(shape: [rows, inputs], seed: UInt64(rows)), w = try gaussianNoise(shape: [outputs, inputs], seed: 7)
            let bias = try gaussianNoise(shape: [outputs], seed: 8)
            let bf16 = try ComputePrecision.$current.withValue(.bfloat16) { try linear(x, weight: w, bias: bias) }
            let fp32 = try linear(x, weight: w, bias: bias)
            let label = "linear \(rows)x\(inputs) -> \(outputs)"
            guard bfloat16Unit else {
                XCTAssertEqual(bf16.scalars, fp32.scalars, "\(label): bf16 without a bfloat16 unit is fp32")
                continue
            }
            let (xr, wr) = (try rounded(x), try rounded(w))
            var worst = 0.0, worstAgainstFP32 = 0.0
            for r in 0..<rows {
                for o in 0..<outputs {
                    var sum = Double(bias[flat: o]), magnitude = abs(Double(bias[flat: o]))
                    for i in 0..<inputs {
                        let product = Double(xr[flat: r * inputs + i]) * Double(wr[flat: o * inputs + i])
                        sum += product
                        magnitude += abs(product)
                    }
                    let got = Double(bf16[flat: r * outputs + o])
                    worst = max(worst, abs(got - sum) / magnitude)
                    worstAgainstFP32 = max(worstAgainstFP32, abs(got - Double(fp32[flat: r * outputs + o])) / magnitude)
                }
            }
            // float32 sums of up to 2100 terms: a few ulp of the terms' magnitude.
            XCTAssertLessThanOrEqual(worst, 1e-6, "\(label): against float64 of the rounded operands")
            // And it is bf16: operands rounded to 8 significant bits differ from fp32 by up to ~2^-8 per product,
            // far above the summation error bound just checked.
            XCTAssertGreaterThan(worstAgainstFP32, 1e-5, "\(label): bf16 products should differ from fp32")
            XCTAssertLessThanOrEqual(worstAgainstFP32, 1e-2, "\(label): bf16 against fp32")
        }
    } }

    func testBfloat16ConvolutionsOnEveryAlgorithm() throws { try onEveryKernelPath {
        let x = try gaussianNoise(shape: [2, 48, 33, 35], seed: 11), w = try gaussianNoise(shape: [40, 48, 3, 3], seed: 12)
        let pointwise = try gaussianNoise(shape: [40, 48, 1, 1], seed: 13), bias = try gaussianNoise(shape: [40], seed: 14)
        for algorithm in [ConvolutionAlgorithm.im2col, .winograd2x2] {
            let bf16 = try ComputePrecision.$current.withValue(.bfloat16) {
                try conv2d(x, weight: w, bias: bias, stride: 1, padding: .uniform(1), algorithm: algorithm)
            }
            let fp32 = try conv2d(x, weight: w, bias: bias, stride: 1, padding: .uniform(1), algorithm: algorithm)
            guard bfloat16Unit else {
                XCTAssertEqual(bf16.scalars, fp32.scalars, "\(algorithm): bf16 without a bfloat16 unit is fp32")
                continue
            }
            if algorithm == .im2col {
                // im2col's products are the input's and the weight's own values: rounding them first gives the same sums.
                let reference = try conv2d(try rounded(x), weight: try rounded(w), bias: bias, stride: 1, padding: .uniform(1), algorithm: .im2col)
                assertClose(bf16, reference, tolerance: 1e-5, "im2col bf16 against fp32 of the rounded operands")
            }
            // Winograd rounds its transformed tiles and filters instead: compared with fp32 (measured ~3e-3 of the scale).
            assertClose(bf16, fp32, tolerance: 1e-2, "\(algorithm) bf16 against fp32")
            XCTAssertGreaterThan(scaledMaxError(bf16, fp32), 1e-5, "\(algorithm): bf16 should differ from fp32")
        }
        let bf16 = try ComputePrecision.$current.withValue(.bfloat16) { try conv2d(x, weight: pointwise, bias: bias, stride: 1, padding: 0) }
        let reference = bfloat16Unit ? try conv2d(try rounded(x), weight: try rounded(pointwise), bias: bias, stride: 1, padding: 0)
                            : try conv2d(x, weight: pointwise, bias: bias, stride: 1, padding: 0)
        assertClose(bf16, reference, tolerance: bfloat16Unit ? 1e-5 : 0, "1x1 bf16")
        // The weights are packed once for all images: 128 channels x 9 taps = 1152 deep, over two 1024-deep
        // blocks, two images, stride 2 (im2col).
        let deep = try gaussianNoise(shape: [2, 128, 9, 7], seed: 15), deepWeight = try gaussianNoise(shape: [36, 128, 3, 3], seed: 16)
        let deepBias = try gaussianNoise(shape: [36], seed: 17)
        let strided = try ComputePrecision.$current.withValue(.bfloat16) {
            try conv2d(deep, weight: deepWeight, bias: deepBias, stride: 2, padding: 1)
        }
        let stridedReference = bfloat16Unit ? try conv2d(try rounded(deep), weight: try rounded(deepWeight), bias: deepBias, stride: 2, padding: 1)
                                   : try conv2d(deep, weight: deepWeight, bias: deepBias, stride: 2, padding: 1)
        assertClose(strided, stridedReference, tolerance: bfloat16Unit ? 1e-5 : 0, "stride-2 bf16, 1152 deep")
        // An odd depth (3 channels x 9 taps = 27, as a VAE's first layer): the last pair of k is half zero.
        let rgb = try gaussianNoise(shape: [1, 3, 17, 19], seed: 18), rgbWeight = try gaussianNoise(shape: [8, 3, 3, 3], seed: 19)
        let odd = try ComputePrecision.$current.withValue(.bfloat16) {
            try conv2d(rgb, weight: rgbWeight, bias: nil, stride: 1, padding: .uniform(1), algorithm: .im2col)
        }
        let oddReference = bfloat16Unit ? try conv2d(try rounded(rgb), weight: try rounded(rgbWeight), bias: nil, stride: 1, padding: .uniform(1), algorithm: .im2col)
                               : try conv2d(rgb, weight: rgbWeight, bias: nil, stride: 1, padding: .uniform(1), algorithm: .im2col)
        assertClose(odd, oddReference, tolerance: bfloat16Unit ? 1e-5 : 0, "27-deep bf16")
    } }

    /// Winograd in bfloat16 writes its transformed input rounded into the products' packed layout: with small
    /// integer images and filters every value on the way (transformed tiles: integers; transformed filters:
    /// quarters; products and sums) is exact in bfloat16 and float32, so any difference from im2col in fp32 is a
    /// layout error. Odd channel counts (a half-empty last pair), several bands of tile rows, a partial last band.
    func testBfloat16WinogradIsExactOnSmallIntegers() throws { try onEveryKernelPath {
        var generator = SystemRandomNumberGenerator()
        func integers(_ shape: [Int]) throws -> Tensor {
            try Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float(Int.random(in: -2...2, using: &generator)) })
        }
        for (inChannels, outChannels) in [(37, 20), (64, 33), (1, 3)] {
            let x = try integers([2, inChannels, 9, 11]), w = try integers([outChannels, inChannels, 3, 3])
            let bias = try integers([outChannels])
            let bf16 = try ComputePrecision.$current.withValue(.bfloat16) {
                try conv2d(x, weight: w, bias: bias, stride: 1, padding: .uniform(1), unfoldBudget: 16 * max(inChannels, outChannels) * 6 * 3,
                           algorithm: .winograd2x2)
            }
            let exact = try conv2d(x, weight: w, bias: bias, stride: 1, padding: .uniform(1), algorithm: .im2col)
            XCTAssertEqual(bf16.scalars, exact.scalars, "winograd bf16, \(inChannels) -> \(outChannels) channels")
        }
    } }

    /// Attention's QK^T and PV in bfloat16: against float64 attention of the bfloat16-rounded queries, keys and
    /// values. What stays is the rounding of the softmax weights P to bfloat16 (2^-9 of each weight, so at most
    /// 2^-9 of the largest value) and float32 sums: tolerance 4e-3 of the values' scale. Head widths 40, 64 and
    /// 80 (SD 1.5's and 2.x's), query and key counts off the 32-row and 64-key tiles; causal attention stays fp32.
    func testBfloat16AttentionMatchesFloat64OfRoundedOperands() throws { try onEveryKernelPath {
        for (queries, keys, heads, headDim) in [(70, 77, 2, 40), (33, 130, 3, 64), (100, 1, 1, 80), (64, 300, 2, 64)] {
            let q = try gaussianNoise(shape: [2, queries, heads * headDim], seed: 31)
            let k = try gaussianNoise(shape: [2, keys, heads * headDim], seed: 32)
            let v = try gaussianNoise(shape: [2, keys, heads * headDim], seed: 33)
            let label = "attention \(queries)x\(keys), \(heads) heads of \(headDim)"
            let bf16 = try ComputePrecision.$current.withValue(.bfloat16) { try attention(query: q, key: k, value: v, heads: heads) }
            let fp32 = try attention(query: q, key: k, value: v, heads: heads)
            guard bfloat16Unit else {
                XCTAssertEqual(bf16.scalars, fp32.scalars, "\(label): bf16 without a bfloat16 unit is fp32")
                continue
            }
            let (qr, kr, vr) = (try rounded(q), try rounded(k), try rounded(v))
            let width = heads * headDim, scale = 1 / Double(headDim).squareRoot()
            var worst = 0.0
            for b in 0..<2 {
                for head in 0..<heads {
                    for i in 0..<queries {
                        var scores = [Double](repeating: 0, count: keys)
                        for j in 0..<keys {
                            var dot = 0.0
                            for c in 0..<headDim {
                                dot += Double(qr[flat: (b * queries + i) * width + head * headDim + c]) * Double(kr[flat: (b * keys + j) * width + head * headDim + c])
                            }
                            scores[j] = dot * scale
                        }
                        let top = scores.max()!, weights = scores.map { exp($0 - top) }, total = weights.reduce(0, +)
                        for c in 0..<headDim {
                            var sum = 0.0
                            for j in 0..<keys { sum += weights[j] * Double(vr[flat: (b * keys + j) * width + head * headDim + c]) }
                            worst = max(worst, abs(sum / total - Double(bf16[flat: (b * queries + i) * width + head * headDim + c])))
                        }
                    }
                }
            }
            let valueScale = Double(v.scalars.map(abs).max()!)
            XCTAssertLessThanOrEqual(worst / valueScale, 4e-3, "\(label): against float64 of the rounded operands")
            XCTAssertGreaterThan(scaledMaxError(bf16, fp32), 1e-5, "\(label): bf16 should differ from fp32")
        }
        // Causal attention is computed in float32 whatever the precision.
        let x = try gaussianNoise(shape: [1, 77, 64], seed: 34)
        let causal = try ComputePrecision.$current.withValue(.bfloat16) { try attention(query: x, key: x, value: x, heads: 2, causal: true) }
        XCTAssertEqual(causal.scalars, try attention(query: x, key: x, value: x, heads: 2, causal: true).scalars)
    } }

    /// F16 and BF16 weights go into the bf16 products as stored: packing rounds from the 16-bit values, with the
    /// same result as widening them first (exactly: F16 widens exactly, and BF16 is its own rounding); in fp32
    /// they are widened. Linear layers (weights as the transposed B), and 1x1 and im2col convolutions (as A).
    func testSixteenBitWeightsGiveTheSameProductsAsWidenedOnes() throws { try onEveryKernelPath {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("precision-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let x = try gaussianNoise(shape: [70, 48], seed: 41), image = try gaussianNoise(shape: [1, 48, 9, 11], seed: 42)
        let bias = try gaussianNoise(shape: [40], seed: 43)
        for dtype in [SafetensorsDType.f16, .bf16] {
            let path = "\(directory)/weights-\(dtype.rawValue).safetensors"
            try writeSafetensors([("linear", try gaussianNoise(shape: [40, 48], seed: 44)),
                                  ("conv", try gaussianNoise(shape: [40, 48, 3, 3], seed: 45)),
                                  ("pointwise", try gaussianNoise(shape: [40, 48, 1, 1], seed: 46))], to: path, dtype: dtype)
            let file = try SafetensorsFile(path: path)
            let (linearWeights, conv, pointwise) = (try file.weights("linear"), try file.weights("conv"), try file.weights("pointwise"))
            for precision in ComputePrecision.allCases {
                try ComputePrecision.$current.withValue(precision) {
                    let label = "\(dtype.rawValue) weights, \(precision.rawValue)"
                    XCTAssertEqual(try linear(x, weights: linearWeights, bias: bias).scalars,
                                   try linear(x, weight: try linearWeights.float32(), bias: bias).scalars, "\(label): linear")
                    XCTAssertEqual(try conv2d(image, weights: conv, bias: bias, stride: 1, padding: .uniform(1), algorithm: .im2col).scalars,
                                   try conv2d(image, weight: try conv.float32(), bias: bias, stride: 1, padding: .uniform(1), algorithm: .im2col).scalars,
                                   "\(label): im2col convolution")
                    XCTAssertEqual(try conv2d(image, weights: pointwise, bias: bias, stride: 1, padding: .uniform(0)).scalars,
                                   try conv2d(image, weight: try pointwise.float32(), bias: bias, stride: 1, padding: .uniform(0)).scalars,
                                   "\(label): 1x1 convolution")
                }
            }
        }
    } }

    /// A NaN in the input must reach the output (the engine reports non-finite results; it must not hide them).
    func testBfloat16KeepsNaN() throws { try onEveryKernelPath {
        let x = try gaussianNoise(shape: [40, 64], seed: 21), w = try gaussianNoise(shape: [50, 64], seed: 22)
        x.mutablePointer[3 * 64 + 5] = .nan
        let out = try ComputePrecision.$current.withValue(.bfloat16) { try linear(x, weight: w) }
        for o in 0..<50 { XCTAssertTrue(out[flat: 3 * 50 + o].isNaN, "row 3, output \(o)") }
        XCTAssertTrue(out[flat: 0].isFinite)
        // In attention, a NaN key reaches every query's output.
        let keys = try gaussianNoise(shape: [1, 40, 64], seed: 23)
        keys.mutablePointer[7 * 64] = .nan
        let queries = try gaussianNoise(shape: [1, 20, 64], seed: 24)
        let attended = try ComputePrecision.$current.withValue(.bfloat16) { try attention(query: queries, key: keys, value: keys, heads: 1) }
        XCTAssertTrue(attended.scalars.allSatisfy(\.isNaN), "a NaN key")
    } }
}
