// Element-wise kernels. Large tensors are split over the worker threads in contiguous chunks. The hot ones
// (activations, GEGLU, the scaled add) are C kernels with a variant per instruction set (CKernels).
import CKernels

/// Runs `body` over `0..<count` in parallel chunks when the tensor is big enough to pay for it.
@inline(__always)
func forEachChunk(_ count: Int, _ body: (Range<Int>) -> Void) {
    if count < 1 << 16 {
        body(0..<count)
    } else {
        Threading.parallelRanges(count, granularity: 4096, body)
    }
}

/// out = op(x) element-wise, vectorised (at the x86-64 baseline: for the light operations that are not hot).
public func map(_ x: Tensor, _ op: (FloatVector) -> FloatVector) throws -> Tensor {
    let out = try Tensor(uninitializedShape: x.shape)
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    forEachChunk(x.count) { range in
        mapVectors(input.value + range.lowerBound, output.value + range.lowerBound, range.count, op)
    }
    return out
}

/// out = activation(x) element-wise, by the C kernel of the current path.
private func activated(_ x: Tensor, _ activation: tokenflow_activation) throws -> Tensor {
    let out = try Tensor(uninitializedShape: x.shape)
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    forEachChunk(x.count) { range in
        tokenflow_activation_apply(activation, input.value + range.lowerBound, output.value + range.lowerBound, range.count)
    }
    return out
}

/// x * sigmoid(x)
public func silu(_ x: Tensor) throws -> Tensor { try activated(x, TOKENFLOW_ACTIVATION_SILU) }

/// 0.5 x (1 + erf(x / sqrt 2)): PyTorch's default (exact) GELU.
public func gelu(_ x: Tensor) throws -> Tensor { try activated(x, TOKENFLOW_ACTIVATION_GELU) }

/// x * sigmoid(1.702 x): CLIP's quick_gelu.
public func quickGelu(_ x: Tensor) throws -> Tensor { try activated(x, TOKENFLOW_ACTIVATION_QUICK_GELU) }

/// GEGLU as in diffusers' feed-forward: x [..., 2D] -> hidden [..., D] * gelu(gate [..., D]).
public func geglu(_ x: Tensor) throws -> Tensor {
    let width = x.shape.last! / 2
    precondition(width * 2 == x.shape.last!, "geglu needs an even last dimension, got \(x.shape)")
    let rows = x.count / max(2 * width, 1)
    let out = try Tensor(uninitializedShape: Array(x.shape.dropLast()) + [width])
    let input = UncheckedBox(x.pointer), output = UncheckedBox(out.mutablePointer)
    let body: (Range<Int>) -> Void = { range in
        tokenflow_geglu(input.value + range.lowerBound * 2 * width, output.value + range.lowerBound * width, range.count, width)
    }
    if x.count < 1 << 16 { body(0..<rows) } else { Threading.parallelRanges(rows, body) }
    return out
}

/// a + b for equal shapes.
public func add(_ a: Tensor, _ b: Tensor) throws -> Tensor {
    precondition(a.shape == b.shape, "add: shapes differ \(a.shape) vs \(b.shape)")
    let out = try a.copy()
    addInPlace(out, b)
    return out
}

/// target += other (equal element counts).
public func addInPlace(_ target: Tensor, _ other: Tensor, scale: Float = 1) {
    precondition(target.count == other.count, "addInPlace: sizes differ \(target.shape) vs \(other.shape)")
    let t = UncheckedBox(target.mutablePointer), o = UncheckedBox(other.pointer)
    forEachChunk(target.count) { range in
        tokenflow_add_scaled(t.value + range.lowerBound, o.value + range.lowerBound, range.count, scale)
    }
}

/// x * factor.
public func scaled(_ x: Tensor, by factor: Float) throws -> Tensor { try map(x) { $0 * factor } }

/// a * sa + b * sb, element-wise (used by schedulers and guidance).
public func linearCombination(_ a: Tensor, _ sa: Float, _ b: Tensor, _ sb: Float) throws -> Tensor {
    precondition(a.count == b.count, "linearCombination: sizes differ \(a.shape) vs \(b.shape)")
    let out = try Tensor(uninitializedShape: a.shape)
    let pa = UncheckedBox(a.pointer), pb = UncheckedBox(b.pointer), po = UncheckedBox(out.mutablePointer)
    forEachChunk(a.count) { range in
        for i in range { po.value[i] = pa.value[i] * sa + pb.value[i] * sb }
    }
    return out
}

/// x [N, C, ...] + perChannel [N, C] (or [C]) broadcast over the trailing dimensions.
public func addPerChannel(_ x: Tensor, _ perChannel: Tensor) throws -> Tensor {
    let n = x.shape[0], c = x.shape[1]
    let inner = x.count / max(n * c, 1)
    precondition(perChannel.count == n * c || perChannel.count == c,
                 "addPerChannel: \(perChannel.shape) does not broadcast to \(x.shape)")
    let shared = perChannel.count == c
    let out = try x.copy()
    let o = UncheckedBox(out.mutablePointer), p = UncheckedBox(perChannel.pointer)
    Threading.parallelRanges(n * c) { planes in
        for plane in planes {
            let value = p.value[shared ? plane % c : plane]
            let row = o.value + plane * inner
            for i in 0..<inner { row[i] += value }
        }
    }
    return out
}

/// Clamp every element to [low, high].
public func clamped(_ x: Tensor, _ low: Float, _ high: Float) throws -> Tensor {
    try map(x) { clampedVector($0, low, high) }
}

/// True when every element is a finite number (no NaN, no infinity).
public func isFinite(_ x: Tensor) -> Bool {
    let p = x.pointer
    for i in 0..<x.count where !p[i].isFinite { return false }
    return true
}
