/// Zero padding on each side of a 2-D convolution's input.
public struct Padding2D: Sendable, Equatable {
    public var top: Int, left: Int, bottom: Int, right: Int
    public init(top: Int, left: Int, bottom: Int, right: Int) {
        self.top = top; self.left = left; self.bottom = bottom; self.right = right
    }
    public static func uniform(_ p: Int) -> Padding2D { Padding2D(top: p, left: p, bottom: p, right: p) }
}

/// 2-D convolution, NCHW input, weight [Cout, Cin, kh, kw] (PyTorch layout), optional bias [Cout].
///
/// 1x1 stride-1 convolutions are one GEMM on the input as stored. Other kernels unfold the input
/// (im2col) one band of output rows at a time, so the unfold buffer stays at about 16 MB whatever
/// the image size (a whole-image unfold at 512x512 with 128 channels would be 1.2 GB).
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) throws -> Tensor {
    try conv2d(x, weight: weight, bias: bias, stride: stride, padding: .uniform(padding))
}

/// How a convolution is computed: `automatic` takes Winograd F(2x2, 3x3) (Winograd.swift) for 3x3 stride-1
/// convolutions with at least 256 tiles of 2x2 outputs over the batch, and im2col + GEMM otherwise; tests and
/// benchmarks force either (`winograd` where it applies).
public enum ConvolutionAlgorithm: Sendable {
    case automatic, im2col, winograd
}

/// `unfoldBudget` bounds the im2col band, and the Winograd band's transformed input and products, in elements
/// (tests lower it to exercise several bands).
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Padding2D,
                   unfoldBudget: Int = 4 << 20, algorithm: ConvolutionAlgorithm = .automatic) throws -> Tensor {
    try conv2d(x, weights: Weights(weight), bias: bias, stride: stride, padding: padding, unfoldBudget: unfoldBudget,
               algorithm: algorithm)
}

/// `conv2d` with a layer's weights in their file's precision (`Weights.withOperand`; Winograd transforms them
/// in Float32).
public func conv2d(_ x: Tensor, weights weight: Weights, bias: Tensor?, stride: Int, padding: Padding2D,
                   unfoldBudget: Int = 4 << 20, algorithm: ConvolutionAlgorithm = .automatic) throws -> Tensor {
    precondition(x.rank == 4 && weight.shape.count == 4, "conv2d: input \(x.shape) and weight \(weight.shape) must be 4-D")
    let (batch, inChannels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (outChannels, kernelH, kernelW) = (weight.shape[0], weight.shape[2], weight.shape[3])
    precondition(weight.shape[1] == inChannels, "conv2d: input has \(inChannels) channels, weight \(weight.shape) expects \(weight.shape[1])")
    precondition(bias == nil || bias!.count == outChannels, "conv2d: bias must have \(outChannels) entries")
    let outH = (height + padding.top + padding.bottom - kernelH) / stride + 1
    let outW = (width + padding.left + padding.right - kernelW) / stride + 1
    precondition(outH > 0 && outW > 0, "conv2d: input \(x.shape) too small for kernel \(kernelH)x\(kernelW)")
    let out = try Tensor(uninitializedShape: [batch, outChannels, outH, outW])
    let outPlane = outH * outW
    let winogradApplies = kernelH == 3 && kernelW == 3 && stride == 1
    // Winograd's weight transform is made once per call and its saving grows with the tiles of the whole batch:
    // measured (1 thread), 256 tiles (one 32x32 image) 1.7x faster than im2col, 64 tiles (16x16) 2x slower.
    let tiles = batch * ((outH + 1) / 2) * ((outW + 1) / 2)
    if winogradApplies && (algorithm == .winograd || (algorithm == .automatic && tiles >= 256)) {
        try weight.withFloat32 { try winogradConvolution3x3(x, weight: $0, bias: bias, padding: padding, out: out, bandBudget: unfoldBudget) }
        return out
    }
    let k = inChannels * kernelH * kernelW

    try weight.withOperand { w in
        // bf16: the weights are rounded and packed once for every image and band, not per product.
        let packed = try packedForBfloat16(w, lda: k, m: outChannels, k: k)
        for n in 0..<batch {
            let src = x.pointer + n * inChannels * height * width
            let dst = out.mutablePointer + n * outChannels * outPlane
            if let bias { // on every worker: this first write faults in and zeroes the new output's pages
                let output = UncheckedBox(dst), values = UncheckedBox(bias.pointer)
                Threading.parallelRanges(outChannels) { channels in
                    for o in channels { (output.value + o * outPlane).initialize(repeating: values.value[o], count: outPlane) }
                }
            }
            let beta: Float = bias == nil ? 0 : 1
            if kernelH == 1 && kernelW == 1 && stride == 1 && padding == .uniform(0) {
                try weightGEMM(m: outChannels, n: outPlane, k: inChannels, a: w, lda: inChannels, packedA: packed,
                               b: GEMMOperand(src), ldb: outPlane, beta: beta, c: dst, ldc: outPlane)
                continue
            }
            let bandRows = max(1, min(outH, unfoldBudget / max(k * outW, 1)))
            let unfolded = try Tensor(uninitializedShape: [k, bandRows * outW])
            let columns = unfolded.mutablePointer
            var firstRow = 0
            while firstRow < outH {
                let rows = min(bandRows, outH - firstRow)
                let bandWidth = rows * outW
                let source = UncheckedBox(src), columnBox = UncheckedBox(columns)
                // Row (c, ky, kx) of the unfolded band holds input pixel (oy*stride+ky-top, ox*stride+kx-left).
                Threading.parallelRanges(inChannels) { channels in
                    for c in channels {
                        let plane = source.value + c * height * width
                        for ky in 0..<kernelH {
                            for kx in 0..<kernelW {
                                let row = columnBox.value + ((c * kernelH + ky) * kernelW + kx) * bandWidth
                                for r in 0..<rows {
                                    let iy = (firstRow + r) * stride + ky - padding.top
                                    let dstRow = row + r * outW
                                    if iy < 0 || iy >= height {
                                        dstRow.initialize(repeating: 0, count: outW)
                                        continue
                                    }
                                    let srcRow = plane + iy * width
                                    // Output columns whose input column ix = ox*stride + kx - left is inside the row.
                                    let shift = kx - padding.left
                                    let first = min(outW, max(0, (-shift + stride - 1) / stride))
                                    let lastInput = width - 1 - shift // largest ox*stride allowed
                                    let last = lastInput < 0 ? first : min(outW, max(first, lastInput / stride + 1))
                                    dstRow.initialize(repeating: 0, count: first)
                                    if stride == 1 {
                                        (dstRow + first).update(from: srcRow + first + shift, count: last - first)
                                    } else {
                                        for ox in first..<last { dstRow[ox] = srcRow[ox * stride + shift] }
                                    }
                                    (dstRow + last).initialize(repeating: 0, count: outW - last)
                                }
                            }
                        }
                    }
                }
                try weightGEMM(m: outChannels, n: bandWidth, k: k, a: w, lda: k, packedA: packed,
                               b: GEMMOperand(columns), ldb: bandWidth, beta: beta, c: dst + firstRow * outW, ldc: outPlane)
                firstRow += rows
            }
            withExtendedLifetime(unfolded) {}  // `columns` points into it
        }
    }
    return out
}
