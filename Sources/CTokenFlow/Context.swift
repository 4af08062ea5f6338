import CTokenFlowABI
import Diffusion
import Glibc
import Tensors
import TokenFlow

/// What a TFContext points to: one clip's frames, its edit, and the last error message.
///
/// A context goes collecting -> edited (tf_run succeeded) or failed (tf_run failed); it never goes back.
final class Context {
    enum State { case collecting, edited, failed }

    /// Frame and working sizes larger than this per side are refused: far above any video size, and it
    /// keeps every byte count well inside Int.
    static let maxSide: Int32 = 1 << 15

    private var session: EditSession
    private let keyframes: [Int32]
    private var state = State.collecting
    private var inputs: [Frame] = []
    private var timestamps: [Int64] = []
    private var outputs: [Frame] = []
    private var nextOutput = 0
    /// The frame tf_get_frame handed out last; reused for every frame (they all have one size).
    private var outputBuffer: UnsafeMutableBufferPointer<UInt8>?
    /// tf_last_error's string for this context (malloc'd), nil until an error occurs.
    private var message: UnsafeMutablePointer<CChar>?

    init(_ request: OpenRequest) throws {
        let model = try ModelCache.shared.model(at: request.modelPath)
        // EditSession reports scheduler problems as invalid settings; check the model's own scheduler
        // config first so that an unsupported one is reported as such (TF_ENOTSUP).
        _ = try DDIMScheduler(config: model.schedulerConfig, file: "\(request.modelPath)/scheduler/scheduler_config.json")
        session = try EditSession(model: model, settings: request.settings)
        keyframes = request.keyframes
        Threading.configure(threads: request.threads)
    }

    deinit {
        outputBuffer?.deallocate()
        free(message)
    }

    var lastError: UnsafePointer<CChar> { message.map { UnsafePointer($0) } ?? emptyCString }

    func setError(_ text: String) {
        free(message)
        message = strdup(text)
    }

    private var failedError: CError {
        CError(TF_EPERM, "tf_run failed earlier on this context; it can only be closed")
    }

    func send(_ rgb: UnsafePointer<UInt8>?, width: Int32, height: Int32, stride: Int, pts: Int64) throws {
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
        switch state {
        case .collecting: break
        case .edited: throw CError(TF_EPERM, "tf_send_frame after tf_run: a context edits one clip; open a new context for another")
        case .failed: throw failedError
        }
        if let first = inputs.first, first.width != w || first.height != h {
            throw CError(TF_EINVAL, "frame \(inputs.count) is \(w)x\(h), frame 0 was \(first.width)x\(first.height): all frames of a clip must have one size")
        }
        // Copy row by row: the host's rows may be padded (stride > 3 * width).
        let pixels = [UInt8](unsafeUninitializedCapacity: rowBytes * h) { buffer, count in
            for y in 0..<h {
                (buffer.baseAddress! + y * rowBytes).initialize(from: rgb + y * stride, count: rowBytes)
            }
            count = rowBytes * h
        }
        inputs.append(Frame(width: w, height: h, pixels: pixels))
        timestamps.append(pts)
    }

    func run(_ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) throws {
        switch state {
        case .collecting: break
        case .edited: throw CError(TF_EPERM, "tf_run was already called on this context")
        case .failed: throw failedError
        }
        do {
            guard !inputs.isEmpty else { throw CError(TF_EINVAL, "no frames to edit: send them with tf_send_frame before tf_run") }
            let session = try sessionForClip()
            let result = try session.run(inputs) { progress in
                guard let callback else { return true }
                return callback(opaque, Self.stage(progress.stage), Int32(clamping: progress.completed), Int32(clamping: progress.total)) == 0
            }
            outputs = result.frames
            inputs = []
            state = .edited
        } catch {
            inputs = []
            state = .failed
            throw CError(error)
        }
    }

    /// The session, with the explicit keyframe schedule shaped as steps x batches for this clip's
    /// frame count and checked before the (long) run starts.
    private func sessionForClip() throws -> EditSession {
        if keyframes.isEmpty { return session }
        let batchSize = session.settings.batchSize
        let batches = (inputs.count + batchSize - 1) / batchSize
        guard keyframes.count % batches == 0 else {
            throw CError(TF_EINVAL, "keyframes_count \(keyframes.count) is not steps x batches: \(inputs.count) frames in batches of \(batchSize) make \(batches) batches")
        }
        var settings = session.settings
        settings.keyframes = Swift.stride(from: 0, to: keyframes.count, by: batches).map { start in
            keyframes[start..<(start + batches)].map { Int($0) }
        }
        let clipSession = try EditSession(model: session.model, settings: settings)
        _ = try clipSession.keyframeSchedule(frameCount: inputs.count)
        return clipSession
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

    func nextFrame(into frame: UnsafeMutablePointer<TFFrame>) throws {
        switch state {
        case .collecting: throw CError(TF_EPERM, "tf_get_frame before tf_run: nothing has been edited yet")
        case .edited: break
        case .failed: throw failedError
        }
        guard nextOutput < outputs.count else { throw CError(TF_EAGAIN, "every edited frame has been returned") }
        let output = outputs[nextOutput]
        let buffer = outputBuffer ?? UnsafeMutableBufferPointer<UInt8>.allocate(capacity: output.pixels.count)
        outputBuffer = buffer
        _ = buffer.update(fromContentsOf: output.pixels)
        // The host now holds the only copy it needs; free frames as they are returned.
        outputs[nextOutput].pixels = []
        frame.pointee = TFFrame(data: UnsafePointer(buffer.baseAddress), width: Int32(output.width), height: Int32(output.height),
                                stride: output.width * 3, pts: timestamps[nextOutput])
        nextOutput += 1
    }
}
