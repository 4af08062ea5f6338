import CKernels

/// 3x3, stride-1 convolution by Winograd's minimal filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for
/// Convolutional Neural Networks", 2016), m = 2 or 4 (`WinogradTile`): each m x m block of outputs comes from an
/// (m + 2) x (m + 2) input tile. Tiles are transformed (V = B^T d B), the (m + 2)^2 positions of the transform
/// are that many GEMMs [Cout x Cin] x [Cin x tiles] against the transformed weights (U = G g G^T), and the
/// products are transformed back (Y = A^T M A).
///
/// The weight transform is made per call ((m + 2)^2 / 9 of the weight's size, not kept: weights stay as small as
/// their file); its cost is spread over the tiles, so small images, where it would dominate, use im2col
/// (`conv2d`'s choice). Tiles are processed in bands (`ConvolutionBands`) so the transformed input and products
/// stay within `bandBudget` elements each, whatever the image size.
func winogradConvolution3x3(_ x: Tensor, weight: Tensor, bias: Tensor?, padding: Padding2D, out: Tensor,
                            tile: WinogradTile, bandBudget: Int) throws {
    let (batch, inChannels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let outChannels = weight.shape[0], (outH, outW) = (out.shape[2], out.shape[3])
    let m = tile.rawValue, positions = tile.positions
    let tilesH = (outH + m - 1) / m, tilesW = (outW + m - 1) / m
    let transformedWeight = try transformWeights(weight, tile: tile)
    // Bands of tiles: one band's GEMMs cover several images of a batch, so small images still make wide GEMMs
    // (per image, packing dominated at 32x20).
    let plan = ConvolutionBands(batch: batch, rows: tilesH, rowColumns: tilesW,
                                columnBudget: bandBudget / max(positions * max(inChannels, outChannels), 1), severalImages: true)
    let bandTiles = plan.columns
    // bfloat16 products: the transformed weight matrices are rounded and packed once for every band, and the
    // input transform writes its tiles rounded, straight into the products' packed layout (`PackedB`): the
    // float32 transformed input, written and read again to be packed, was most of a bf16 convolution's time.
    let bfloat16 = ComputePrecision.effective == .bfloat16
    let u = UncheckedBox(transformedWeight.pointer)
    let packedWeights = try (0..<positions).map { position in
        bfloat16 ? try packedForBfloat16(GEMMOperand(u.value + position * outChannels * inChannels), lda: inChannels,
                                         m: outChannels, k: inChannels) : nil
    }
    let packedInput = bfloat16 ? try (0..<positions).map { _ in try PackedB(k: inChannels, n: bandTiles) } : []
    // A slot's padding columns are never written: zeros, so that no stray bits make slow (subnormal) products.
    let transformedInput = try bfloat16 ? Tensor(uninitializedShape: [0])
        : plan.padded ? Tensor(zeros: [positions, inChannels, bandTiles]) : Tensor(uninitializedShape: [positions, inChannels, bandTiles])
    let products = try Tensor(uninitializedShape: [positions, outChannels, bandTiles])
    // Per worker: one tile row's m + 2 input rows split into column phases, padded to whole vectors (and for
    // bfloat16, two channels' transformed band).
    let inputScratch = tokenflow_winograd_input_scratch_floats(m, tilesW)
    let v = UncheckedBox(transformedInput.mutablePointer), p = UncheckedBox(products.mutablePointer)
    let source = UncheckedBox(x.pointer), destination = UncheckedBox(out.mutablePointer)
    let biasPointer = bias.map { UncheckedBox($0.pointer) }

    for band in plan.bands {
        let tiles = plan.columns(of: band)
        // V[xi][c][t] = (B^T d B)[xi] for the input tile d of tile t (zero outside the image), into
        // v[xi * stride + t] (stride: the positions' distance).
        func transform(channel c: Int, scratch: UnsafeMutablePointer<Float>, into v: UnsafeMutablePointer<Float>, stride: Int) {
            for part in band {
                for tileRow in 0..<part.rows {
                    tokenflow_winograd_input_row(m, source.value + (part.image * inChannels + c) * height * width, height, width,
                                                 m * (part.firstRow + tileRow) - padding.top, padding.left, tilesW, scratch,
                                                 v + part.column + tileRow * tilesW, stride)
                }
            }
        }
        if bfloat16 {
            let pairs = (inChannels + 1) / 2
            try Threading.parallelRanges(pairs, scratchFloats: 2 * positions * tiles + inputScratch) { range, scratch in
                let even = scratch, odd = scratch + positions * tiles
                if plan.padded { scratch.update(repeating: 0, count: 2 * positions * tiles) }
                for pair in range {
                    let c = 2 * pair
                    transform(channel: c, scratch: scratch + 2 * positions * tiles, into: even, stride: tiles)
                    if c + 1 < inChannels { transform(channel: c + 1, scratch: scratch + 2 * positions * tiles, into: odd, stride: tiles) }
                    for position in 0..<positions {
                        packedInput[position].writeRows(c, even: even + position * tiles,
                                                        odd: c + 1 < inChannels ? odd + position * tiles : nil, columns: tiles)
                    }
                }
            }
            for position in 0..<positions {
                for row in packedInput[position].paddedRows { packedInput[position].writeRows(row, even: nil, odd: nil, columns: tiles) }
            }
        } else {
            try Threading.parallelRanges(inChannels, scratchFloats: inputScratch) { channels, scratch in
                for c in channels { transform(channel: c, scratch: scratch, into: v.value + c * tiles, stride: inChannels * tiles) }
            }
        }
        if bfloat16 {
            for position in 0..<positions {
                try weightGEMM(m: outChannels, n: tiles, k: inChannels, a: GEMMOperand(u.value + position * outChannels * inChannels),
                               lda: inChannels, packedA: packedWeights[position],
                               b: GEMMOperand(UnsafeRawPointer(packedInput[position].pointer), type: TOKENFLOW_ELEMENT_BFLOAT16),
                               ldb: tiles, packedB: packedInput[position], c: p.value + position * outChannels * tiles, ldc: tiles)
            }
        } else {
            positionProducts(positions: positions, outChannels: outChannels, inChannels: inChannels, tiles: tiles,
                             weights: u.value, input: v.value, products: p.value)
        }
        // Y = A^T M A for every tile, plus the bias; outputs past the image's edge are dropped.
        Threading.parallelRanges(outChannels) { channels in
            for o in channels {
                for part in band {
                    for tileRow in 0..<part.rows {
                        tokenflow_winograd_output_row(m, p.value + o * tiles + part.column + tileRow * tilesW, outChannels * tiles,
                                                      tilesW, biasPointer?.value[o] ?? 0,
                                                      destination.value + (part.image * outChannels + o) * outH * outW, outH, outW,
                                                      m * (part.firstRow + tileRow))
                    }
                }
            }
        }
    }
    withExtendedLifetime((transformedWeight, transformedInput, products, packedWeights, packedInput)) {}
}

/// The float32 products of one band, P[xi] = U[xi] V[xi] for every position xi: independent GEMMs, so each worker
/// takes whole positions, single-threaded (split by rows too only when there are too few positions to go round).
/// Splitting each GEMM's rows over the workers instead made every worker pack the whole V[xi] of every position.
private func positionProducts(positions: Int, outChannels: Int, inChannels: Int, tiles: Int,
                              weights: UnsafePointer<Float>, input: UnsafePointer<Float>, products: UnsafeMutablePointer<Float>) {
    // Enough items for ~4 per worker, so uneven shares idle a worker for at most about a quarter of its time.
    let rowBlocks = min((4 * Threading.threadCount + positions - 1) / positions, (outChannels + 15) / 16)
    let rowsPerBlock = ((outChannels + rowBlocks - 1) / rowBlocks + 15) / 16 * 16
    let u = UncheckedBox(weights), v = UncheckedBox(input), p = UncheckedBox(products)
    Threading.parallelFor(positions * rowBlocks) { item in
        let (position, block) = item.quotientAndRemainder(dividingBy: rowBlocks)
        let first = block * rowsPerBlock, rows = min(rowsPerBlock, outChannels - first)
        if rows <= 0 { return }
        sgemm(m: rows, n: tiles, k: inChannels, a: u.value + (position * outChannels + first) * inChannels, lda: inChannels,
              b: v.value + position * inChannels * tiles, ldb: tiles, c: p.value + (position * outChannels + first) * tiles, ldc: tiles,
              parallel: false)
    }
}

/// Winograd's tilings: F(m x m, 3x3) for m = 2 or 4.
/// - F(2x2, 3x3): 16 multiplies per (input, output) channel pair and 2x2 outputs, against im2col's 36. Its
///   transforms use only 0, +-1 and 1/2, so its rounding stays near a direct convolution's (max 4.7e-7 of the
///   output scale from im2col, `KernelTests`).
/// - F(4x4, 3x3): 36 multiplies per 4x4 outputs, against 144: 4x fewer than im2col and 1.8x fewer than
///   F(2x2, 3x3). Its transforms' coefficients (up to 8) amplify rounding: max 5.8e-6 of the output scale from
///   im2col in fp32, and in relative rms 3.1e-6 against F(2x2, 3x3)'s 5.6e-7; with bfloat16 operands 2.7%
///   against 0.38% (`scripts/winograd_error.py`), so bfloat16 takes F(2x2, 3x3).
public enum WinogradTile: Int, Sendable, CaseIterable {
    case two = 2, four = 4
    /// The transform's positions: the GEMMs per band.
    var positions: Int { (rawValue + 2) * (rawValue + 2) }
}

/// U[xi][o][c] = (G g G^T)[xi] for every 3x3 filter g = weight[o][c] (CKernels/winograd.inc): made per call, so
/// it must be cheap.
private func transformWeights(_ weight: Tensor, tile: WinogradTile) throws -> Tensor {
    let (outChannels, inChannels) = (weight.shape[0], weight.shape[1])
    let transformed = try Tensor(uninitializedShape: [tile.positions, outChannels, inChannels])
    let g = UncheckedBox(weight.pointer), u = UncheckedBox(transformed.mutablePointer)
    Threading.parallelRanges(outChannels) { channels in
        tokenflow_winograd_weights(tile.rawValue, g.value, u.value, outChannels, inChannels, channels.lowerBound,
                                   channels.upperBound)
    }
    return transformed
}
