#if canImport(Glibc)
import Glibc
#endif

/// Concatenation along `axis`.
public func concat(_ tensors: [Tensor], axis: Int) throws -> Tensor {
    precondition(!tensors.isEmpty, "concat of no tensors")
    let first = tensors[0]
    let axis = axis < 0 ? axis + first.rank : axis
    for t in tensors {
        precondition(t.rank == first.rank && (0..<first.rank).allSatisfy { $0 == axis || t.shape[$0] == first.shape[$0] },
                     "concat: \(t.shape) does not match \(first.shape) outside axis \(axis)")
    }
    var shape = first.shape
    shape[axis] = tensors.reduce(0) { $0 + $1.shape[axis] }
    let out = try Tensor(uninitializedShape: shape)
    let outer = first.shape[..<axis].reduce(1, *)
    let inner = first.shape[(axis + 1)...].reduce(1, *)
    var column = 0
    for t in tensors {
        let chunk = t.shape[axis] * inner, outChunk = shape[axis] * inner
        for o in 0..<outer {
            (out.mutablePointer + o * outChunk + column).update(from: t.pointer + o * chunk, count: chunk)
        }
        column += chunk
    }
    return out
}

/// Rows `rows` of the first dimension, in that order: result row i is `x` row `rows[i]`. A run of consecutive
/// rows is returned as a view, without copying.
public func gatherRows(_ x: Tensor, _ rows: [Int]) throws -> Tensor {
    precondition(x.rank >= 1 && rows.allSatisfy { (0..<x.shape[0]).contains($0) }, "gatherRows: \(rows) of \(x.shape)")
    if let first = rows.first, rows == Array(first..<(first + rows.count)) { return x.slice(first..<(first + rows.count)) }
    var shape = x.shape
    shape[0] = rows.count
    let out = try Tensor(uninitializedShape: shape)
    let rowSize = x.count / max(x.shape[0], 1)
    for (i, row) in rows.enumerated() {
        (out.mutablePointer + i * rowSize).update(from: x.pointer + row * rowSize, count: rowSize)
    }
    return out
}

/// A batch whose rows repeat, as its distinct rows (bytewise equal rows are one) and, for each row, which
/// distinct row it is: work that depends on a row alone is done once per distinct row, then spread with
/// `gatherRows(result, rowOf)`.
public struct DistinctRows {
    /// [distinct rows, ...], in order of first appearance.
    public let distinct: Tensor
    /// For each row of the batch, its row in `distinct`.
    public let rowOf: [Int]

    public init(_ batch: Tensor) throws {
        precondition(batch.rank >= 1, "DistinctRows of a scalar")
        let rowBytes = batch.count / max(batch.shape[0], 1) * MemoryLayout<Float>.stride
        var firsts: [Int] = [], rowOf: [Int] = []
        for row in 0..<batch.shape[0] {
            let bytes = UnsafeRawPointer(batch.pointer) + row * rowBytes
            if let match = firsts.firstIndex(where: { memcmp(UnsafeRawPointer(batch.pointer) + $0 * rowBytes, bytes, rowBytes) == 0 }) {
                rowOf.append(match)
            } else {
                rowOf.append(firsts.count)
                firsts.append(row)
            }
        }
        distinct = try gatherRows(batch, firsts)
        self.rowOf = rowOf
    }
}

/// Copy with dimensions reordered: result dimension i is input dimension `order[i]`.
public func permute(_ x: Tensor, _ order: [Int]) throws -> Tensor {
    precondition(order.sorted() == Array(0..<x.rank), "permute: \(order) is not a permutation of \(x.rank) dims")
    let shape = order.map { x.shape[$0] }
    let out = try Tensor(uninitializedShape: shape)
    let inStrides = x.strides
    let strides = order.map { inStrides[$0] } // input stride of each output dimension
    let rank = x.rank
    if rank == 0 { out.mutablePointer[0] = x.pointer[0]; return out }
    // Walk the output in order; the innermost output dimension is copied in a tight loop.
    let innerCount = shape[rank - 1], innerStride = strides[rank - 1]
    let outerCount = x.count / max(innerCount, 1)
    let src = UncheckedBox(x.pointer), dst = UncheckedBox(out.mutablePointer)
    Threading.parallelRanges(outerCount) { range in
        var index = [Int](repeating: 0, count: rank)
        for outer in range {
            var rest = outer, offset = 0
            for d in stride(from: rank - 2, through: 0, by: -1) {
                index[d] = rest % shape[d]; rest /= shape[d]
                offset += index[d] * strides[d]
            }
            let s = src.value + offset, o = dst.value + outer * innerCount
            for j in 0..<innerCount { o[j] = s[j * innerStride] }
        }
    }
    return out
}

/// Nearest-neighbour 2x upsampling of NCHW (F.interpolate(scale_factor=2, mode="nearest")).
public func upsampleNearest2x(_ x: Tensor) throws -> Tensor {
    precondition(x.rank == 4, "upsampleNearest2x expects NCHW, got \(x.shape)")
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let out = try Tensor(uninitializedShape: [n, c, 2 * h, 2 * w])
    let src = UncheckedBox(x.pointer), dst = UncheckedBox(out.mutablePointer)
    Threading.parallelRanges(n * c) { planes in
        for plane in planes {
            let s = src.value + plane * h * w, d = dst.value + plane * 4 * h * w
            for y in 0..<h {
                let row = d + 2 * y * 2 * w
                for xIndex in 0..<w { row[2 * xIndex] = s[y * w + xIndex]; row[2 * xIndex + 1] = s[y * w + xIndex] }
                (row + 2 * w).update(from: row, count: 2 * w)
            }
        }
    }
    return out
}

/// Nearest-neighbour resize of NCHW to height x width with PyTorch's index rule
/// (source = floor(destination * in / out)); exactly 2x equals `upsampleNearest2x`.
public func resizeNearest(_ x: Tensor, height: Int, width: Int) throws -> Tensor {
    precondition(x.rank == 4, "resizeNearest expects NCHW, got \(x.shape)")
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    if height == 2 * h && width == 2 * w { return try upsampleNearest2x(x) }
    let out = try Tensor(uninitializedShape: [n, c, height, width])
    let scaleY = Float(h) / Float(height), scaleX = Float(w) / Float(width)
    let sourceX = (0..<width).map { min(Int((Float($0) * scaleX).rounded(.down)), w - 1) }
    let src = UncheckedBox(x.pointer), dst = UncheckedBox(out.mutablePointer)
    Threading.parallelRanges(n * c) { planes in
        for plane in planes {
            for y in 0..<height {
                let sy = min(Int((Float(y) * scaleY).rounded(.down)), h - 1)
                let s = src.value + plane * h * w + sy * w, d = dst.value + (plane * height + y) * width
                for xIndex in 0..<width { d[xIndex] = s[sourceX[xIndex]] }
            }
        }
    }
    return out
}
