import Diffusion
import Foundation
import Tensors
import VideoEditing

/// A smooth synthetic panning shot: a field of low-frequency waves moving one pixel per frame, so
/// consecutive input frames differ little and a jump in the output is the edit's, not the input's.
func panningClip(frames: Int, width: Int, height: Int) -> [Frame] {
    (0..<frames).map { f in
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let u = Double(x + f), v = Double(y)
                let values = [sin(u / 9) + cos(v / 7), sin((u + v) / 13) - cos(u / 5), cos((u - v) / 11) + sin(v / 6)]
                for c in 0..<3 { pixels[(y * width + x) * 3 + c] = UInt8(max(0, min(255, 128 + 60 * values[c]))) }
            }
        }
        return Frame(width: width, height: height, pixels: pixels)
    }
}

/// Mean absolute difference of two frames, in 0...255 units.
func meanAbsoluteDifference(_ a: Frame, _ b: Frame) -> Double {
    zip(a.pixels, b.pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(a.pixels.count)
}

/// Window joins of a clip edited in windows of `window` frames, anchored (one stream, StreamEdit) and
/// independent (each window its own clip), against the whole clip as one edit:
/// - jump ratio: the mean change between the last frame of a window and the first of the next, over the
///   mean change between consecutive frames inside windows (1 = a join looks like any other cut);
/// - distance to the whole-clip edit: mean absolute difference of windows 1... to the one-edit result.
func measureSeams(model: StableDiffusionModel, settings: EditSettings, frames: Int, window: Int, width: Int, height: Int) throws -> String {
    let clip = panningClip(frames: frames, width: width, height: height)
    let whole = try EditPipeline(model: model, settings: settings).run(clip).frames

    var windowed = settings
    windowed.window = window
    let stream = StreamEdit(try EditPipeline(model: model, settings: windowed))
    var anchored: [Frame] = []
    for frame in clip {
        try stream.append(frame)
        while let edited = try stream.nextFrame(progress: nil) { anchored.append(edited) }
    }
    stream.endOfStream()
    while let edited = try stream.nextFrame(progress: nil) { anchored.append(edited) }

    let pipeline = try EditPipeline(model: model, settings: settings)
    var independent: [Frame] = []
    for start in stride(from: 0, to: frames, by: window) {
        independent += try pipeline.run(Array(clip[start..<min(start + window, frames)])).frames
    }

    func jumpRatio(_ out: [Frame]) -> Double {
        var joins: [Double] = [], inside: [Double] = []
        for i in 1..<out.count {
            let change = meanAbsoluteDifference(out[i - 1], out[i])
            if i % window == 0 { joins.append(change) } else { inside.append(change) }
        }
        return (joins.reduce(0, +) / Double(joins.count)) / (inside.reduce(0, +) / Double(inside.count))
    }
    func distanceToWhole(_ out: [Frame]) -> Double {
        let later = window..<frames
        return later.reduce(0.0) { $0 + meanAbsoluteDifference(out[$1], whole[$1]) } / Double(later.count)
    }
    return [
        "clip: \(frames) frames \(width)x\(height) (synthetic panning), window \(window), steps \(settings.steps)",
        String(format: "input:        jump ratio at window joins %.3f", jumpRatio(clip)),
        String(format: "whole clip:   jump ratio at window joins %.3f (one edit: the target)", jumpRatio(whole)),
        String(format: "anchored:     jump ratio %.3f, distance to the whole-clip edit %.2f (0-255)", jumpRatio(anchored), distanceToWhole(anchored)),
        String(format: "independent:  jump ratio %.3f, distance to the whole-clip edit %.2f (0-255)", jumpRatio(independent), distanceToWhole(independent)),
    ].joined(separator: "\n")
}
