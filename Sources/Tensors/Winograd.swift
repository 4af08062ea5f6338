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
    let transformedInput = try Tensor(uninitializedShape: [16, inChannels, bandTileRows * tilesW])
    let products = try Tensor(uninitializedShape: [16, outChannels, bandTileRows * tilesW])
    // Per worker: one tile row's 4 input rows split into even and odd columns, padded to whole vectors.
    let rowFloats = (tilesW + 1 + 16) / 16 * 16
    let u = UncheckedBox(transformedWeight.pointer), v = UncheckedBox(transformedInput.mutablePointer)
    let m = UncheckedBox(products.mutablePointer)
    let source = UncheckedBox(x.pointer), destination = UncheckedBox(out.mutablePointer)
    let biasPointer = bias.map { UncheckedBox($0.pointer) }

    var firstTileRow = 0
    while firstTileRow < allTileRows {
        let tileRows = min(bandTileRows, allTileRows - firstTileRow), tiles = tileRows * tilesW
        // V[xi][c][t] = (B^T d B)[xi] for the 4x4 input tile d of tile t (zero outside the image).
        try Threading.parallelRanges(inChannels, scratchFloats: 8 * rowFloats) { channels, scratch in
            for c in channels {
                for tileRow in 0..<tileRows {
                    let (image, row) = (firstTileRow + tileRow).quotientAndRemainder(dividingBy: tilesH)
                    transformInputRow(source.value + (image * inChannels + c) * height * width, height: height, width: width,
                                      top: 2 * row - padding.top, left: padding.left, tilesW: tilesW,
                                      scratch: scratch, rowFloats: rowFloats,
                                      into: v.value + c * tiles + tileRow * tilesW, positionStride: inChannels * tiles)
                }
            }
        }
        for position in 0..<16 {
            try weightGEMM(m: outChannels, n: tiles, k: inChannels, a: GEMMOperand(u.value + position * outChannels * inChannels),
                           lda: inChannels, b: GEMMOperand(v.value + position * inChannels * tiles), ldb: tiles,
                           c: m.value + position * outChannels * tiles, ldc: tiles)
        }
        // Y = A^T M A for every tile, plus the bias; outputs past an odd edge are dropped.
        Threading.parallelRanges(outChannels) { channels in
            for o in channels {
                for tileRow in 0..<tileRows {
                    let (image, row) = (firstTileRow + tileRow).quotientAndRemainder(dividingBy: tilesH)
                    transformOutputRow(m.value + o * tiles + tileRow * tilesW, positionStride: outChannels * tiles,
                                       tilesW: tilesW, bias: biasPointer?.value[o] ?? 0,
                                       into: destination.value + (image * outChannels + o) * outH * outW, outH: outH, outW: outW,
                                       firstRow: 2 * row)
                }
            }
        }
        firstTileRow += tileRows
    }
    withExtendedLifetime((transformedWeight, transformedInput, products)) {}
}

/// One tile row of one channel: V[xi][t] = (B^T d B)[xi] for its tiles, 16 at a time. The tile at column tx
/// reads padded input columns 2tx ..< 2tx + 4, that is even[tx], odd[tx], even[tx + 1], odd[tx + 1] of each of
/// its 4 input rows (from `top`), so splitting the rows into even and odd columns makes every operand a
/// contiguous vector.
@inline(__always)
private func transformInputRow(_ plane: UnsafePointer<Float>, height: Int, width: Int, top: Int, left: Int, tilesW: Int,
                               scratch: UnsafeMutablePointer<Float>, rowFloats: Int,
                               into v: UnsafeMutablePointer<Float>, positionStride: Int) {
    // scratch: even and odd columns of rows 0...3 (row i at 2 * i * rowFloats, its odd columns after).
    for i in 0..<4 {
        let even = scratch + 2 * i * rowFloats, odd = even + rowFloats
        even.initialize(repeating: 0, count: 2 * rowFloats)
        let y = top + i
        guard y >= 0 && y < height else { continue }
        let row = plane + y * width
        // Padded column p is input column p - left; tile columns reach p = 2 * tilesW + 1.
        let first = max(0, left), end = min(2 * tilesW + 2, width + left)
        var p = first
        if p < end && p & 1 == 1 { odd[p >> 1] = row[p - left]; p += 1 }
        while p + 1 < end { even[p >> 1] = row[p - left]; odd[p >> 1] = row[p + 1 - left]; p += 2 }
        if p < end { even[p >> 1] = row[p - left] }
    }
    typealias Row = (FloatVector, FloatVector, FloatVector, FloatVector)
    var tx = 0
    while tx < tilesW {
        // Row i of d B: from d's row i, whose columns j are even/odd vectors (d_i0, d_i1, d_i2, d_i3).
        func rowTimesB(_ i: Int) -> Row {
            let even = scratch + 2 * i * rowFloats + tx, odd = even + rowFloats
            let (a, b, c, e) = (loadVector(even), loadVector(odd), loadVector(even + 1), loadVector(odd + 1))
            return (a - c, b + c, c - b, b - e)
        }
        let (w0, w1, w2, w3) = (rowTimesB(0), rowTimesB(1), rowTimesB(2), rowTimesB(3))
        let lanes = min(16, tilesW - tx)
        func store(_ row: Row, _ i: Int) {
            storeLanes(row.0, v + (4 * i) * positionStride + tx, lanes)
            storeLanes(row.1, v + (4 * i + 1) * positionStride + tx, lanes)
            storeLanes(row.2, v + (4 * i + 2) * positionStride + tx, lanes)
            storeLanes(row.3, v + (4 * i + 3) * positionStride + tx, lanes)
        }
        // B^T (d B): rows w0 - w2, w1 + w2, w2 - w1, w1 - w3.
        store((w0.0 - w2.0, w0.1 - w2.1, w0.2 - w2.2, w0.3 - w2.3), 0)
        store((w1.0 + w2.0, w1.1 + w2.1, w1.2 + w2.2, w1.3 + w2.3), 1)
        store((w2.0 - w1.0, w2.1 - w1.1, w2.2 - w1.2, w2.3 - w1.3), 2)
        store((w1.0 - w3.0, w1.1 - w3.1, w1.2 - w3.2, w1.3 - w3.3), 3)
        tx += 16
    }
}

/// One tile row of one output channel: the 2x2 outputs A^T M A (+ bias) of its tiles, 16 at a time, written
/// to output rows firstRow and firstRow + 1 (those past the image's edge dropped).
@inline(__always)
private func transformOutputRow(_ m: UnsafePointer<Float>, positionStride: Int, tilesW: Int, bias: Float,
                                into plane: UnsafeMutablePointer<Float>, outH: Int, outW: Int, firstRow: Int) {
    var tx = 0
    while tx < tilesW {
        let lanes = min(16, tilesW - tx)
        func p(_ position: Int) -> FloatVector { loadLanes(m + position * positionStride + tx, lanes) }
        // A^T M: rows p0 + p1 + p2 and p1 - p2 - p3 (p_i is row i of M, columns j = positions 4i + j).
        let top = (p(0) + p(4) + p(8), p(1) + p(5) + p(9), p(2) + p(6) + p(10), p(3) + p(7) + p(11))
        let bottom = (p(4) - p(8) - p(12), p(5) - p(9) - p(13), p(6) - p(10) - p(14), p(7) - p(11) - p(15))
        // (A^T M) A: columns t0 + t1 + t2 and t1 - t2 - t3.
        let y00 = top.0 + top.1 + top.2 + bias, y01 = top.1 - top.2 - top.3 + bias
        let y10 = bottom.0 + bottom.1 + bottom.2 + bias, y11 = bottom.1 - bottom.2 - bottom.3 + bias
        func write(_ left: FloatVector, _ right: FloatVector, row: Int) {
            guard row < outH else { return }
            var pairs = SIMD32<Float>()
            pairs.evenHalf = left
            pairs.oddHalf = right
            let out = plane + row * outW + 2 * tx, columns = min(2 * lanes, outW - 2 * tx)
            if columns == 32 {
                UnsafeMutableRawPointer(out).storeBytes(of: pairs, as: SIMD32<Float>.self)
            } else {
                for column in 0..<columns { out[column] = pairs[column] }
            }
        }
        write(y00, y01, row: firstRow)
        write(y10, y11, row: firstRow + 1)
        tx += 16
    }
}

/// The first `lanes` (1...16) elements at `pointer`, zeros after them (never reading past them).
@inline(__always)
private func loadLanes(_ pointer: UnsafePointer<Float>, _ lanes: Int) -> FloatVector {
    if lanes == 16 { return loadVector(pointer) }
    var vector = FloatVector(repeating: 0)
    for lane in 0..<lanes { vector[lane] = pointer[lane] }
    return vector
}

/// The first `lanes` (1...16) elements of `vector` to `pointer`.
@inline(__always)
private func storeLanes(_ vector: FloatVector, _ pointer: UnsafeMutablePointer<Float>, _ lanes: Int) {
    if lanes == 16 { storeVector(vector, pointer) } else { for lane in 0..<lanes { pointer[lane] = vector[lane] } }
}

/// U[xi][o][c] = (G g G^T)[xi] for every 3x3 filter g = weight[o][c], 16 input channels at a time (the taps of 16
/// filters gathered into vectors, the 16 positions stored contiguously): made per call, so it must be cheap.
private func transformWeights(_ weight: Tensor) throws -> Tensor {
    let (outChannels, inChannels) = (weight.shape[0], weight.shape[1])
    let transformed = try Tensor(uninitializedShape: [16, outChannels, inChannels])
    let g = UncheckedBox(weight.pointer), u = UncheckedBox(transformed.mutablePointer)
    typealias Row = (FloatVector, FloatVector, FloatVector)
    // Per worker: the 9 taps of 16 filters, tap-major (inserting lanes into a vector one by one was 5x slower).
    try Threading.parallelRanges(outChannels, scratchFloats: 9 * 16) { channels, taps in
        for o in channels {
            var c = 0
            while c < inChannels {
                let lanes = min(16, inChannels - c), filters = g.value + (o * inChannels + c) * 9
                if lanes < 16 { taps.initialize(repeating: 0, count: 9 * 16) }
                for lane in 0..<lanes { for k in 0..<9 { taps[k * 16 + lane] = filters[lane * 9 + k] } }
                func tap(_ k: Int) -> FloatVector { loadVector(taps + k * 16) }
                // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2 (g_i is the filter's row i).
                let g0: Row = (tap(0), tap(1), tap(2)), g1: Row = (tap(3), tap(4), tap(5)), g2: Row = (tap(6), tap(7), tap(8))
                let half = FloatVector(repeating: 0.5)
                let rows: (Row, Row, Row, Row) = (
                    g0,
                    ((g0.0 + g1.0 + g2.0) * half, (g0.1 + g1.1 + g2.1) * half, (g0.2 + g1.2 + g2.2) * half),
                    ((g0.0 - g1.0 + g2.0) * half, (g0.1 - g1.1 + g2.1) * half, (g0.2 - g1.2 + g2.2) * half),
                    g2)
                func store(_ r: Row, _ i: Int) { // (G g) G^T, row i: r0, (r0 + r1 + r2) / 2, (r0 - r1 + r2) / 2, r2
                    let base = u.value + (4 * i * outChannels + o) * inChannels + c, step = outChannels * inChannels
                    storeLanes(r.0, base, lanes)
                    storeLanes((r.0 + r.1 + r.2) * half, base + step, lanes)
                    storeLanes((r.0 - r.1 + r.2) * half, base + 2 * step, lanes)
                    storeLanes(r.2, base + 3 * step, lanes)
                }
                store(rows.0, 0); store(rows.1, 1); store(rows.2, 2); store(rows.3, 3)
                c += 16
            }
        }
    }
    return transformed
}
