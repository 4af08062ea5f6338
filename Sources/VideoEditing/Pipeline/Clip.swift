import Tensors

/// One RGB frame, 8 bits per channel, rows packed without padding.
public struct Frame: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Checks a clip is editable: at least one frame, all the same size, pixel counts that match.
func validateClip(_ frames: [Frame]) throws {
    guard let first = frames.first else { throw EditError.invalidClip("the clip has no frames") }
    for (index, frame) in frames.enumerated() {
        try validateFrame(frame, index: index, first: (first.width, first.height))
    }
}

/// Checks frame `index` has pixels for its size, and the size of the clip's first frame (if any).
func validateFrame(_ frame: Frame, index: Int, first: (width: Int, height: Int)?) throws {
    if frame.width < 1 || frame.height < 1 { throw EditError.invalidClip("frame size \(frame.width)x\(frame.height) is empty") }
    if let first, frame.width != first.width || frame.height != first.height {
        throw EditError.invalidClip("frame \(index) is \(frame.width)x\(frame.height), frame 0 is \(first.width)x\(first.height): all frames must have one size")
    }
    if frame.pixels.count != frame.width * frame.height * 3 {
        throw EditError.invalidClip("frame \(index) has \(frame.pixels.count) bytes, expected \(frame.width * frame.height * 3) (packed RGB24)")
    }
}

/// Frame -> [1, 3, H, W] in [-1, 1] at `width` x `height` (resampled when the sizes differ).
func imageTensor(_ frame: Frame, width: Int, height: Int) throws -> Tensor {
    let planar = try Tensor(uninitializedShape: [1, 3, frame.height, frame.width])
    let plane = frame.width * frame.height
    frame.pixels.withUnsafeBufferPointer { pixels in
        for i in 0..<plane {
            for c in 0..<3 { planar[flat: c * plane + i] = Float(pixels[i * 3 + c]) / 255 * 2 - 1 }
        }
    }
    if width == frame.width && height == frame.height { return planar }
    return try resize(planar, width: width, height: height)
}

/// [1, 3, H, W] in [-1, 1] (a VAE decode) -> Frame at `width` x `height`, rounded and clamped to 0...255.
func frame(from image: Tensor, width: Int, height: Int) throws -> Frame {
    let sized = image.shape[3] == width && image.shape[2] == height ? image : try resize(image, width: width, height: height)
    let plane = width * height
    try requireAllocatable(bytes: plane * 3, for: "a \(width)x\(height) RGB24 frame")
    var pixels = [UInt8](repeating: 0, count: plane * 3)
    for i in 0..<plane {
        for c in 0..<3 {
            // (y / 2 + 0.5) clamped to [0, 1], as the reference's decode_latents, then to 8 bits (a NaN,
            // which callers refuse earlier, would become 0 rather than trap).
            let value = sized[flat: c * plane + i] / 2 + 0.5
            let unit = value.isNaN ? 0 : min(max(value, 0), 1)
            pixels[i * 3 + c] = UInt8((unit * 255).rounded())
        }
    }
    return Frame(width: width, height: height, pixels: pixels)
}

/// Separable resampling of [N, C, H, W] with a triangle (bilinear) filter widened by the scale
/// when shrinking, so downscaling averages instead of aliasing (like PIL's BILINEAR).
func resize(_ x: Tensor, width: Int, height: Int) throws -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let horizontal = resampleWeights(from: w, to: width)
    let vertical = resampleWeights(from: h, to: height)
    let rows = try Tensor(zeros: [n * c, h, width])
    for plane in 0..<(n * c) {
        for y in 0..<h {
            let src = x.pointer + (plane * h + y) * w, dst = rows.mutablePointer + (plane * h + y) * width
            for (ox, taps) in horizontal.enumerated() { dst[ox] = taps.reduce(0) { $0 + $1.weight * src[$1.index] } }
        }
    }
    let out = try Tensor(zeros: [n, c, height, width])
    for plane in 0..<(n * c) {
        for (oy, taps) in vertical.enumerated() {
            let dst = out.mutablePointer + (plane * height + oy) * width
            for tap in taps {
                let src = rows.pointer + (plane * h + tap.index) * width
                for ox in 0..<width { dst[ox] += tap.weight * src[ox] }
            }
        }
    }
    return out
}

private func resampleWeights(from source: Int, to target: Int) -> [[(index: Int, weight: Float)]] {
    let scale = Double(source) / Double(target)
    let support = max(1.0, scale) // filter radius in source pixels
    return (0..<target).map { o in
        let centre = (Double(o) + 0.5) * scale
        let first = max(0, Int((centre - support).rounded(.down))), last = min(source - 1, Int((centre + support).rounded(.up)))
        var taps: [(index: Int, weight: Float)] = []
        var total = 0.0
        for i in first...last {
            let weight = max(0, 1 - abs((Double(i) + 0.5 - centre) / support))
            if weight > 0 { taps.append((i, Float(weight))); total += weight }
        }
        if taps.isEmpty { return [(min(max(Int(centre), 0), source - 1), 1)] }
        return taps.map { ($0.index, Float(Double($0.weight) / total)) }
    }
}
