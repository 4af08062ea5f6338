import CKernels

/// 3x3, stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
/// Convolutional Neural Networks", 2016): each 2x2 block of outputs comes from a 4x4 input tile, with 16
/// multiplies per (input, output) channel pair instead of im2col's 36. Tiles are transformed (V = B^T d B), the
/// 16 positions of the transform are 16 GEMMs [Cout x Cin] x [Cin x tiles] against the transformed weights
/// (U = G g G^T), and the products are transformed back (Y = A^T M A). The transforms of F(2x2, 3x3) use only
/// 0, +-1 and 1/2, so its rounding stays close to a direct convolution's (measured: 4.3e-7 of the output scale
/// from im2col); the larger F(4x4, 3x3) was not taken: its transforms' larger coefficients amplify rounding.
///
/// The weight transform is made per call (16/9 of the weight's size, not kept: weights stay as small as
/// their file); its cost is spread over the tiles, so small images, where it would dominate, use im2col
/// (`conv2d`'s choice). Tiles are processed in bands of tile rows so the transformed input and products stay
/// within `bandBudget` elements each, whatever the image size.
func winogradConvolution3x3(_ x: Tensor, weight: Tensor, bias: Tensor?, padding: Padding2D, out: Tensor,
                            bandBudget: Int) throws {
    let (batch, inChannels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let outChannels = weight.shape[0], (outH, outW) = (out.shape[2], out.shape[3])
    let tilesH = (outH + 1) / 2, tilesW = (outW + 1) / 2
    let transformedWeight = try transformWeights(weight)
    // Tile rows of all images in one sequence (image-major), cut into bands: one band's GEMMs cover several
    // images of a batch, so small images still make wide GEMMs (per image, packing dominated at 32x20).
    let allTileRows = batch * tilesH
    let bandTileRows = max(1, min(allTileRows, bandBudget / max(16 * max(inChannels, outChannels) * tilesW, 1)))
    let bandTiles = bandTileRows * tilesW
    // bfloat16 products: the 16 transformed weight matrices are rounded and packed once for every band, and the
    // input transform writes its tiles rounded, straight into the products' packed layout (`PackedB`): the
    // float32 transformed input, written and read again to be packed, was most of a bf16 convolution's time.
    let bfloat16 = ComputePrecision.effective == .bfloat16
    let u = UncheckedBox(transformedWeight.pointer)
    let packedWeights = try (0..<16).map { position in
        bfloat16 ? try packedForBfloat16(GEMMOperand(u.value + position * outChannels * inChannels), lda: inChannels,
                                         m: outChannels, k: inChannels) : nil
    }
    let packedInput = bfloat16 ? try (0..<16).map { _ in try PackedB(k: inChannels, n: bandTiles) } : []
    let transformedInput = try Tensor(uninitializedShape: bfloat16 ? [0] : [16, inChannels, bandTiles])
    let products = try Tensor(uninitializedShape: [16, outChannels, bandTiles])
    // Per worker: one tile row's 4 input rows split into even and odd columns, padded to whole vectors (and for
    // bfloat16, two channels' transformed band).
    let inputScratch = tokenflow_winograd_input_scratch_floats(tilesW)
    let v = UncheckedBox(transformedInput.mutablePointer), m = UncheckedBox(products.mutablePointer)
    let source = UncheckedBox(x.pointer), destination = UncheckedBox(out.mutablePointer)
    let biasPointer = bias.map { UncheckedBox($0.pointer) }

    var firstTileRow = 0
    while firstTileRow < allTileRows {
        let tileRows = min(bandTileRows, allTileRows - firstTileRow), tiles = tileRows * tilesW
        // V[xi][c][t] = (B^T d B)[xi] for the 4x4 input tile d of tile t (zero outside the image), into
        // v[xi * stride + t] (stride: the positions' distance).
        func transform(channel c: Int, scratch: UnsafeMutablePointer<Float>, into v: UnsafeMutablePointer<Float>, stride: Int) {
            for tileRow in 0..<tileRows {
                let (image, row) = (firstTileRow + tileRow).quotientAndRemainder(dividingBy: tilesH)
                tokenflow_winograd_input_row(source.value + (image * inChannels + c) * height * width, height, width,
                                             2 * row - padding.top, padding.left, tilesW, scratch, v + tileRow * tilesW, stride)
            }
        }
        if bfloat16 {
            let pairs = (inChannels + 1) / 2
            try Threading.parallelRanges(pairs, scratchFloats: 32 * tiles + inputScratch) { range, scratch in
                let even = scratch, odd = scratch + 16 * tiles
                for pair in range {
                    let c = 2 * pair
                    transform(channel: c, scratch: scratch + 32 * tiles, into: even, stride: tiles)
                    if c + 1 < inChannels { transform(channel: c + 1, scratch: scratch + 32 * tiles, into: odd, stride: tiles) }
                    for position in 0..<16 {
                        packedInput[position].writeRows(c, even: even + position * tiles,
                                                        odd: c + 1 < inChannels ? odd + position * tiles : nil, columns: tiles)
                    }
                }
            }
            for position in 0..<16 {
                for row in packedInput[position].paddedRows { packedInput[position].writeRows(row, even: nil, odd: nil, columns: tiles) }
            }
        } else {
            try Threading.parallelRanges(inChannels, scratchFloats: inputScratch) { channels, scratch in
                for c in channels { transform(channel: c, scratch: scratch, into: v.value + c * tiles, stride: inChannels * tiles) }
            }
        }
        for position in 0..<16 {
            let a = GEMMOperand(u.value + position * outChannels * inChannels), c = m.value + position * outChannels * tiles
            if bfloat16 {
                try weightGEMM(m: outChannels, n: tiles, k: inChannels, a: a, lda: inChannels, packedA: packedWeights[position],
                               b: GEMMOperand(UnsafeRawPointer(packedInput[position].pointer), type: TOKENFLOW_ELEMENT_BFLOAT16),
                               ldb: tiles, packedB: packedInput[position], c: c, ldc: tiles)
            } else {
                try weightGEMM(m: outChannels, n: tiles, k: inChannels, a: a, lda: inChannels,
                               b: GEMMOperand(v.value + position * inChannels * tiles), ldb: tiles, c: c, ldc: tiles)
            }
        }
        // Y = A^T M A for every tile, plus the bias; outputs past an odd edge are dropped.
        Threading.parallelRanges(outChannels) { channels in
            for o in channels {
                for tileRow in 0..<tileRows {
                    let (image, row) = (firstTileRow + tileRow).quotientAndRemainder(dividingBy: tilesH)
                    tokenflow_winograd_output_row(m.value + o * tiles + tileRow * tilesW, outChannels * tiles, tilesW,
                                                  biasPointer?.value[o] ?? 0,
                                                  destination.value + (image * outChannels + o) * outH * outW, outH, outW,
                                                  2 * row)
                }
            }
        }
        firstTileRow += tileRows
    }
    withExtendedLifetime((transformedWeight, transformedInput, products, packedWeights, packedInput)) {}
}

/// U[xi][o][c] = (G g G^T)[xi] for every 3x3 filter g = weight[o][c] (CKernels/winograd.inc): made per call, so
/// it must be cheap.
private func transformWeights(_ weight: Tensor) throws -> Tensor {
    let (outChannels, inChannels) = (weight.shape[0], weight.shape[1])
    let transformed = try Tensor(uninitializedShape: [16, outChannels, inChannels])
    let g = UncheckedBox(weight.pointer), u = UncheckedBox(transformed.mutablePointer)
    Threading.parallelRanges(outChannels) { channels in
        tokenflow_winograd_weights(g.value, u.value, outChannels, inChannels, channels.lowerBound, channels.upperBound)
    }
    return transformed
}
