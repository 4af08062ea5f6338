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
/// Large images' 1x1 stride-1 convolutions are one GEMM on the input as stored. Other convolutions work in
/// bands (`ConvolutionBands`), so the unfold buffer (im2col) or transformed tiles (Winograd) stay at about
/// 16 MB whatever the image size (a whole-image unfold at 512x512 with 128 channels would be 1.2 GB).
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) throws -> Tensor {
    try conv2d(x, weight: weight, bias: bias, stride: stride, padding: .uniform(padding))
}

/// How a convolution is computed: `automatic` takes Winograd (Winograd.swift) for 3x3 stride-1 convolutions
/// where it is estimated to do less work than im2col + GEMM (`winogradTile`: F(4x4, 3x3) or F(2x2, 3x3) in fp32,
/// F(2x2, 3x3) in bfloat16); tests and benchmarks force each (the Winograd ones where they apply).
public enum ConvolutionAlgorithm: Sendable, CaseIterable {
    case automatic, im2col, winograd2x2, winograd4x4
}

/// `unfoldBudget` bounds the im2col band, and the Winograd band's transformed input and products, in elements
/// (tests lower it to exercise several bands). 4M elements: 16M made a bf16 VAE decode at 512x512 1.3x slower
/// (2 alternating pairs; larger bands of its large images), and its gain in fp32 was within this machine's noise.
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
    if kernelH == 3 && kernelW == 3 && stride == 1,
       let tile = winogradTile(algorithm, batch: batch, outH: outH, outW: outW) {
        try weight.withFloat32 {
            try winogradConvolution3x3(x, weight: $0, bias: bias, padding: padding, out: out, tile: tile, bandBudget: unfoldBudget)
        }
        return out
    }
    let k = inChannels * kernelH * kernelW
    try weight.withOperand { w in
        // bf16: the weights are rounded and packed once for every band, not per product.
        let packed = try packedForBfloat16(w, lda: k, m: outChannels, k: k)
        // A large image's 1x1 convolution is one GEMM per image on the input as stored: re-packing the weights per
        // image costs 1/outPlane of its products.
        if kernelH == 1 && kernelW == 1 && stride == 1 && padding == .uniform(0) && outPlane >= 4096 {
            for n in 0..<batch {
                let dst = out.mutablePointer + n * outChannels * outPlane
                if let bias { fill(dst, rows: outChannels, columns: outPlane, rowStride: outPlane, with: bias) }
                try weightGEMM(m: outChannels, n: outPlane, k: inChannels, a: w, lda: inChannels, packedA: packed,
                               b: GEMMOperand(x.pointer + n * inChannels * outPlane), ldb: outPlane,
                               beta: bias == nil ? 0 : 1, c: dst, ldc: outPlane)
            }
            return
        }
        // Each band is unfolded (im2col) and multiplied as one GEMM. Small images go several to a band when the
        // weights are larger than a core's L2 (4 MB in fp32), so they are packed once per band, not once per image
        // (at the UNet's 8x5 level, 1280 channels, packing them per image cost more than the products).
        let plan = ConvolutionBands(batch: batch, rows: outH, rowColumns: outW, columnBudget: unfoldBudget / max(k, 1),
                                    severalImages: outChannels * k >= 1 << 20)
        // A slot's padding columns are never written: zeros, so that no stray bits make slow (subnormal) products.
        let unfolded = try plan.padded ? Tensor(zeros: [k, plan.columns]) : Tensor(uninitializedShape: [k, plan.columns])
        let products = try Tensor(uninitializedShape: [outChannels, plan.columns])
        let source = UncheckedBox(x.pointer), columns = UncheckedBox(unfolded.mutablePointer)
        let product = UncheckedBox(products.mutablePointer), destination = UncheckedBox(out.mutablePointer)
        for band in plan.bands {
            let bandWidth = plan.columns(of: band)
            // Row (c, ky, kx) of the unfolded band holds input pixel (oy*stride+ky-top, ox*stride+kx-left) of each
            // part's image, from the part's column on.
            Threading.parallelRanges(inChannels) { channels in
                for part in band {
                    for c in channels {
                        let plane = source.value + (part.image * inChannels + c) * height * width
                        for ky in 0..<kernelH {
                            for kx in 0..<kernelW {
                                let row = columns.value + ((c * kernelH + ky) * kernelW + kx) * bandWidth + part.column
                                for r in 0..<part.rows {
                                    let iy = (part.firstRow + r) * stride + ky - padding.top
                                    let dstRow = row + r * outW
                                    if iy < 0 || iy >= height {
                                        dstRow.update(repeating: 0, count: outW)
                                        continue
                                    }
                                    let srcRow = plane + iy * width
                                    // Output columns whose input column ix = ox*stride + kx - left is inside the row.
                                    let shift = kx - padding.left
                                    let first = min(outW, max(0, (-shift + stride - 1) / stride))
                                    let lastInput = width - 1 - shift // largest ox*stride allowed
                                    let last = lastInput < 0 ? first : min(outW, max(first, lastInput / stride + 1))
                                    dstRow.update(repeating: 0, count: first)
                                    if stride == 1 {
                                        (dstRow + first).update(from: srcRow + first + shift, count: last - first)
                                    } else {
                                        for ox in first..<last { dstRow[ox] = srcRow[ox * stride + shift] }
                                    }
                                    (dstRow + last).update(repeating: 0, count: outW - last)
                                }
                            }
                        }
                    }
                }
            }
            // The bias is where the products are summed into (beta 1), as for one image: the sums round alike.
            if band.count == 1 {
                let part = band[0], dst = out.mutablePointer + (part.image * outChannels * outH + part.firstRow) * outW
                if let bias { fill(dst, rows: outChannels, columns: part.rows * outW, rowStride: outPlane, with: bias) }
                try weightGEMM(m: outChannels, n: part.rows * outW, k: k, a: w, lda: k, packedA: packed,
                               b: GEMMOperand(columns.value), ldb: bandWidth, beta: bias == nil ? 0 : 1, c: dst, ldc: outPlane)
                continue
            }
            if let bias { fill(product.value, rows: outChannels, columns: bandWidth, rowStride: bandWidth, with: bias) }
            try weightGEMM(m: outChannels, n: bandWidth, k: k, a: w, lda: k, packedA: packed, b: GEMMOperand(columns.value),
                           ldb: bandWidth, beta: bias == nil ? 0 : 1, c: product.value, ldc: bandWidth)
            // Each image's columns to its plane of the output, on every worker.
            Threading.parallelRanges(outChannels) { channels in
                for part in band {
                    for o in channels {
                        (destination.value + (part.image * outChannels + o) * outPlane)
                            .update(from: product.value + o * bandWidth + part.column, count: outPlane)
                    }
                }
            }
        }
        withExtendedLifetime((unfolded, products)) {}
    }
    return out
}

/// How a convolution's GEMMs cut the batch (im2col: output rows; Winograd: tile rows) into bands of at most
/// `columnBudget` columns. With `severalImages`, small images go several to a band, so the weights are packed
/// (and for Winograd transformed) once per band, not once per image; each image then takes a slot of columns
/// rounded up to 16, so that every image's columns sit alike in the GEMM's 16-column blocks and identical images
/// give identical outputs (OpenBLAS rounds the columns of a partial block differently; tested on both libraries).
/// Otherwise, and for images over the budget, a band is one image, or a range of its rows.
struct ConvolutionBands {
    /// Rows firstRow ..< firstRow + rows of one image, at `column` of its band.
    struct Part {
        let image: Int, firstRow: Int, rows: Int, column: Int
    }
    let bands: [[Part]]
    /// The widest band's columns.
    let columns: Int
    /// Whether a band has columns no image fills (a slot's padding).
    let padded: Bool
    /// Whether the bands are made of slots: several images to a band.
    private let slotted: Bool
    private let rowColumns: Int, slot: Int

    init(batch: Int, rows: Int, rowColumns: Int, columnBudget: Int, severalImages: Bool) {
        let imageColumns = rows * rowColumns, slot = (imageColumns + 15) / 16 * 16
        let imagesPerBand = severalImages ? min(batch, columnBudget / slot) : min(1, columnBudget / imageColumns)
        (self.slot, self.rowColumns, slotted) = (slot, rowColumns, severalImages && imagesPerBand > 0)
        if imagesPerBand > 0 {
            bands = Swift.stride(from: 0, to: batch, by: imagesPerBand).map { first in
                (first..<min(batch, first + imagesPerBand)).map {
                    Part(image: $0, firstRow: 0, rows: rows, column: ($0 - first) * slot)
                }
            }
            columns = severalImages ? imagesPerBand * slot : imageColumns
        } else {
            // As few bands as the budget allows, of even sizes (a short last band makes narrow GEMMs).
            let mostRows = max(1, columnBudget / max(rowColumns, 1)), bandCount = (rows + mostRows - 1) / mostRows
            let bandRows = (rows + bandCount - 1) / bandCount
            bands = (0..<batch).flatMap { image in
                Swift.stride(from: 0, to: rows, by: bandRows).map {
                    [Part(image: image, firstRow: $0, rows: min(bandRows, rows - $0), column: 0)]
                }
            }
            columns = bandRows * rowColumns
        }
        padded = slotted && slot > imageColumns
    }

    /// A band's columns: its images' slots, or its one part's rows.
    func columns(of band: [Part]) -> Int { slotted ? band.count * slot : band[0].rows * rowColumns }
}

/// Row r of the rows x columns floats at `pointer` (rows `rowStride` apart) set to bias[r], on every worker: this
/// first write into a new output is where its pages are faulted in and zeroed.
private func fill(_ pointer: UnsafeMutablePointer<Float>, rows: Int, columns: Int, rowStride: Int, with bias: Tensor) {
    let output = UncheckedBox(pointer), values = UncheckedBox(bias.pointer)
    Threading.parallelRanges(rows) { rows in
        for row in rows { (output.value + row * rowStride).initialize(repeating: values.value[row], count: columns) }
    }
}

/// The Winograd tiling a 3x3 stride-1 convolution takes, nil for im2col. In fp32 the one with the least estimated
/// work per (input, output) channel pair: positions x (columns + 170). The columns are the batch's tiles (im2col:
/// output pixels, 9 positions), each image's rounded up to its 16-column slot (`ConvolutionBands`), so small
/// images' edge tiles and padding count whole; 170 columns' worth stands for the work per weight that does not
/// grow with the batch: transforming (Winograd) and packing the weights per call. Fitted to
/// `tokenflow-bench kernels` (this engine's shapes, 2 threads, Emerald Rapids): at each UNet level of batch 3 at
/// 64x64 latent and of batch 24 at the 256x160 edit's 32x20, it picks the measured fastest, or one within 1.05x
/// of it (at 4x3, where all three were). bfloat16 keeps F(2x2, 3x3) from 256 tiles: F(4x4, 3x3)'s error with
/// bfloat16 operands is 7x F(2x2, 3x3)'s (`WinogradTile`).
private func winogradTile(_ algorithm: ConvolutionAlgorithm, batch: Int, outH: Int, outW: Int) -> WinogradTile? {
    func tilesPerImage(_ tile: WinogradTile) -> Int {
        ((outH + tile.rawValue - 1) / tile.rawValue) * ((outW + tile.rawValue - 1) / tile.rawValue)
    }
    switch algorithm {
    case .im2col: return nil
    case .winograd2x2: return .two
    case .winograd4x4: return .four
    case .automatic where ComputePrecision.effective == .bfloat16: return batch * tilesPerImage(.two) >= 256 ? .two : nil
    case .automatic:
        func work(positions: Int, perImage: Int) -> Int { positions * (batch * ((perImage + 15) / 16 * 16) + 170) }
        let im2col = work(positions: 9, perImage: outH * outW)
        let two = work(positions: 16, perImage: tilesPerImage(.two)), four = work(positions: 36, perImage: tilesPerImage(.four))
        return four <= min(two, im2col) ? .four : two < im2col ? .two : nil
    }
}
