import CTokenFlowABI
import Diffusion
import Glibc
import Tensors
import VideoEditing

/// What a TFContext points to: one stream (its latents: frames are encoded as they are sent and decoded
/// as they are fetched, so no pixels are kept), each pending frame's pts and opaque value, and the last
/// error message.
///
/// A context goes streaming -> ended (tf_end_of_stream or tf_run: no more frames) and, on any failure, to
/// failed, where it can only be closed.
final class Context {
    enum State { case streaming, ended, failed }

    /// Frames larger than this per side are refused: far above any video size, and it keeps every byte
    /// count well inside Int.
    static let maxSide: Int32 = 1 << 15

    private let stream: StreamEdit
    /// The explicit keyframe schedule (tf_set_keyframes) as sent, steps x batches flat; empty: drawn with
    /// the seed. Shaped at the end of the stream, once the frame count (hence the number of batches) is known.
    private var keyframes: [Int32] = []
    private var state = State.streaming
    /// pts and opaque of the frames sent and not yet returned, in order.
    private var pending = FrameQueue()
    private var progress: (callback: TFProgressCallback, opaque: UnsafeMutableRawPointer?)?
    private var releaseOpaque: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?
    /// The frame tf_get_frame handed out last; its pixels are reused for every frame (they all have one size).
    private var outputBuffer: UnsafeMutableBufferPointer<UInt8>?
    /// What tf_get_frame points the host to, at a fixed address for the context's life. Allocated at the
    /// first tf_get_frame (an allocation in init would leak when init throws: deinit does not run then).
    private var outputFrame: UnsafeMutablePointer<TFFrame>?
    /// tf_last_error's string for this context (malloc'd), nil until an error occurs.
    private var message: UnsafeMutablePointer<CChar>?

    init(_ settings: EditSettings) throws {
        let modelPath = try ModelLocation.resolve(settings.model, binary: tokenflow_library_file().map { String(cString: $0) })
        let model = try ModelCache.shared.model(at: modelPath, embedding: settings.promptsToEmbed)
        // EditPipeline reports scheduler problems as invalid settings; check the model's own scheduler
        // config first so that an unsupported one is reported as such (TF_ENOTSUP).
        _ = try DDIMScheduler(config: model.schedulerConfig, file: model.schedulerConfigFile)
        stream = StreamEdit(try EditPipeline(model: model, settings: settings))
        Threading.configure(threads: settings.threads)
    }

    deinit {
        if let releaseOpaque { pending.opaques.forEach { releaseOpaque($0) } }
        outputBuffer?.deallocate()
        outputFrame?.deallocate()
        free(message)
    }

    var lastError: UnsafePointer<CChar> { message.map { UnsafePointer($0) } ?? emptyCString }

    func setError(_ text: String) {
        free(message)
        message = strdup(text)
    }

    /// Throws unless the context is in one of `states`; `what` says what the call needs.
    private func require(_ states: Set<State>, _ what: String) throws {
        if states.contains(state) { return }
        if state == .failed { throw CError(TF_EPERM, "an earlier call failed on this context; it can only be closed") }
        throw CError(TF_EPERM, what)
    }

    /// Runs `body`; a failure of the engine leaves the context failed. Refused input (a frame of another
    /// size, a keyframe schedule that does not fit) is refused before the engine changes anything, so the
    /// context stays usable.
    private func engine<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch {
            if case EditError.invalidClip = error {} else { state = .failed }
            throw CError(error)
        }
    }

    func send(_ rgb: UnsafePointer<UInt8>?, width: Int32, height: Int32, stride: Int, pts: Int64,
              opaque: UnsafeMutableRawPointer?) throws {
        guard let rgb else { throw CError(TF_EINVAL, "rgb is NULL") }
        guard (1...Self.maxSide).contains(width) && (1...Self.maxSide).contains(height) else {
            throw CError(TF_EINVAL, "frame size \(width)x\(height): each side must be between 1 and \(Self.maxSide)")
        }
        let (w, h) = (Int(width), Int(height))
        let rowBytes = w * 3
        guard stride >= rowBytes else {
            throw CError(TF_EINVAL, "stride \(stride) is less than 3 * width (\(rowBytes)) for packed RGB24")
        }
        guard !stride.multipliedReportingOverflow(by: h).overflow else {
            throw CError(TF_EINVAL, "stride \(stride) x height \(h) overflows")
        }
        try require([.streaming], "tf_send_frame after the end of the stream (tf_end_of_stream or tf_run): open a new context for another stream")
        // Copy row by row: the host's rows may be padded (stride > 3 * width).
        try requireAllocatable(bytes: rowBytes * h, for: "a \(w)x\(h) RGB24 frame")
        let pixels = [UInt8](unsafeUninitializedCapacity: rowBytes * h) { buffer, count in
            for y in 0..<h {
                (buffer.baseAddress! + y * rowBytes).initialize(from: rgb + y * stride, count: rowBytes)
            }
            count = rowBytes * h
        }
        try engine { try stream.append(Frame(width: w, height: h, pixels: pixels)) }
        pending.push(pts: pts, opaque: opaque)
    }

    func setKeyframes(_ pointer: UnsafePointer<Int32>?, count: UInt) throws {
        try require([.streaming], "tf_set_keyframes after the end of the stream: the schedule is an input of the edit")
        let window = stream.pipeline.settings.window
        if count > 0 && window > 0 {
            throw CError(TF_EINVAL, "an explicit keyframe schedule needs the whole stream as one clip (window 0), window is \(window)")
        }
        // A bound far above any real schedule (1000 steps x thousands of batches) that keeps sizes sane.
        guard count <= 1 << 28 else { throw CError(TF_EINVAL, "keyframe count \(count) is too large") }
        if count == 0 { keyframes = []; return }
        guard let pointer else { throw CError(TF_EINVAL, "keyframes is NULL but count is \(count)") }
        keyframes = Array(UnsafeBufferPointer(start: pointer, count: Int(count)))
    }

    func setProgress(_ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) {
        progress = callback.map { ($0, opaque) }
    }

    func setOpaqueRelease(_ release: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?) {
        releaseOpaque = release
    }

    /// No more frames: what is left is edited by the next tf_get_frame. The keyframe schedule is checked
    /// against the stream now, before any long work.
    func endOfStream() throws {
        try require([.streaming], "the end of the stream was already signalled")
        try engine {
            let schedule = try shapedKeyframes()
            if let schedule { try stream.pipeline.method.checkClip(frameCount: stream.framesIn, keyframes: schedule) }
            stream.keyframes = schedule
        }
        stream.endOfStream()
        state = .ended
    }

    /// tf_run: the end of the stream, then every window edited now (tf_get_frame only decodes). Any failure
    /// leaves the context failed.
    func run(_ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) throws {
        try require([.streaming], "tf_run was already called on this context (or the end of the stream was signalled)")
        try engine {
            guard stream.framesIn > 0 else { throw CError(TF_EINVAL, "no frames to edit: send them with tf_send_frame before tf_run") }
            setProgress(callback, opaque)
            try endOfStream()
            try stream.editComplete(progress: progressHandler)
        }
    }

    /// The explicit keyframe schedule shaped as steps x batches for the stream's frame count.
    private func shapedKeyframes() throws -> [[Int]]? {
        if keyframes.isEmpty { return nil }
        let batchSize = stream.pipeline.settings.batchSize
        let batches = (stream.framesIn + batchSize - 1) / batchSize
        guard batches > 0, keyframes.count % batches == 0 else {
            throw CError(TF_EINVAL, "\(keyframes.count) keyframes are not steps x batches: \(stream.framesIn) frames in batches of \(batchSize) make \(batches) batches")
        }
        return Swift.stride(from: 0, to: keyframes.count, by: batches).map { start in
            keyframes[start..<(start + batches)].map { Int($0) }
        }
    }

    /// The context's progress callback as the engine's handler.
    private var progressHandler: ProgressHandler? {
        guard let progress else { return nil }
        return { report in
            var c = TFProgress(stage: Self.stage(report.stage), stage_name: stageNames[report.stage],
                               completed: Int32(clamping: report.completed), total: Int32(clamping: report.total),
                               step: Int32(clamping: report.step), steps: Int32(clamping: report.steps),
                               window: Int32(clamping: report.window))
            return progress.callback(progress.opaque, &c) == 0
        }
    }

    private static func stage(_ stage: EditProgress.Stage) -> Int32 {
        let value: TFStage
        switch stage {
        case .encoding: value = TF_STAGE_ENCODING
        case .inversion: value = TF_STAGE_INVERSION
        case .sampling: value = TF_STAGE_SAMPLING
        case .decoding: value = TF_STAGE_DECODING
        }
        return Int32(value.rawValue)
    }

    func nextFrame(into frame: UnsafeMutablePointer<UnsafePointer<TFFrame>?>) throws {
        try require([.streaming, .ended], "")
        guard let output = try engine({ try stream.nextFrame(progress: progressHandler) }) else {
            throw CError(TF_EAGAIN, state == .ended ? "every edited frame has been returned" : "no edited frame yet: send more frames, or end the stream")
        }
        if outputBuffer == nil { try requireAllocatable(bytes: output.pixels.count, for: "the output frame") }
        let buffer = outputBuffer ?? UnsafeMutableBufferPointer<UInt8>.allocate(capacity: output.pixels.count)
        outputBuffer = buffer
        _ = buffer.update(fromContentsOf: output.pixels)
        let handedOut = outputFrame ?? UnsafeMutablePointer<TFFrame>.allocate(capacity: 1)
        outputFrame = handedOut
        let (pts, opaque) = pending.pop()
        handedOut.initialize(to: TFFrame(data: UnsafePointer(buffer.baseAddress), width: Int32(output.width),
                                         height: Int32(output.height), stride: output.width * 3, pts: pts, opaque: opaque))
        frame.pointee = UnsafePointer(handedOut)
    }
}

/// The pts and opaque values of the frames sent and not yet returned (first in, first out).
struct FrameQueue {
    private var items: [(pts: Int64, opaque: UnsafeMutableRawPointer?)] = []
    private var head = 0

    mutating func push(pts: Int64, opaque: UnsafeMutableRawPointer?) { items.append((pts, opaque)) }

    mutating func pop() -> (pts: Int64, opaque: UnsafeMutableRawPointer?) {
        let item = items[head]
        head += 1
        // Drop returned entries now and then, so a long stream does not keep them all.
        if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    var opaques: [UnsafeMutableRawPointer] { items[head...].compactMap(\.opaque) }
}

/// TFProgress.stage_name strings, static for the callback's lifetime rule.
nonisolated(unsafe) private let stageNames: [EditProgress.Stage: UnsafePointer<CChar>] = Dictionary(
    uniqueKeysWithValues: EditProgress.Stage.allCases.map { ($0, UnsafePointer(strdup($0.rawValue)!)) })
