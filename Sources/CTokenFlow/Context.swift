import CTokenFlowABI
import Diffusion
import Glibc
import Tensors
import VideoEditing

/// What a TFContext points to: one clip (its latents: frames are encoded as they are sent and decoded as
/// they are fetched, so no pixels are kept), the frames' pts, and the last error message.
///
/// A context goes collecting -> edited (tf_run succeeded) or failed (tf_run failed); it never goes back.
final class Context {
    enum State { case collecting, edited, failed }

    /// Frames larger than this per side are refused: far above any video size, and it keeps every byte
    /// count well inside Int.
    static let maxSide: Int32 = 1 << 15

    private let pipeline: EditPipeline
    private let clip: ClipEdit
    /// The explicit keyframe schedule (tf_set_keyframes) as sent, steps x batches flat; empty: drawn with
    /// the seed. Shaped at tf_run, once the frame count (hence the number of batches) is known.
    private var keyframes: [Int32] = []
    private var state = State.collecting
    private var timestamps: [Int64] = []
    private var nextOutput = 0
    /// The frame tf_get_frame handed out last; its pixels are reused for every frame (they all have one size).
    private var outputBuffer: UnsafeMutableBufferPointer<UInt8>?
    /// What tf_get_frame points the host to, at a fixed address for the context's life. Allocated at the
    /// first tf_get_frame (an allocation in init would leak when init throws: deinit does not run then).
    private var outputFrame: UnsafeMutablePointer<TFFrame>?
    /// tf_last_error's string for this context (malloc'd), nil until an error occurs.
    private var message: UnsafeMutablePointer<CChar>?

    init(_ settings: EditSettings) throws {
        let modelPath = try ModelLocation.resolve(settings.model, binary: tokenflow_library_file().map { String(cString: $0) })
        let model = try ModelCache.shared.model(at: modelPath)
        // EditPipeline reports scheduler problems as invalid settings; check the model's own scheduler
        // config first so that an unsupported one is reported as such (TF_ENOTSUP).
        _ = try DDIMScheduler(config: model.schedulerConfig, file: "\(modelPath)/scheduler/scheduler_config.json")
        pipeline = try EditPipeline(model: model, settings: settings)
        clip = pipeline.makeClip()
        Threading.configure(threads: settings.threads)
    }

    deinit {
        outputBuffer?.deallocate()
        outputFrame?.deallocate()
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
        if clip.frameCount > 0, clip.inputWidth != w || clip.inputHeight != h {
            throw CError(TF_EINVAL, "frame \(clip.frameCount) is \(w)x\(h), frame 0 was \(clip.inputWidth)x\(clip.inputHeight): all frames of a clip must have one size")
        }
        // Copy row by row: the host's rows may be padded (stride > 3 * width).
        let pixels = [UInt8](unsafeUninitializedCapacity: rowBytes * h) { buffer, count in
            for y in 0..<h {
                (buffer.baseAddress! + y * rowBytes).initialize(from: rgb + y * stride, count: rowBytes)
            }
            count = rowBytes * h
        }
        do { try clip.append(Frame(width: w, height: h, pixels: pixels)) } catch {
            state = .failed
            throw CError(error)
        }
        timestamps.append(pts)
    }

    func setKeyframes(_ pointer: UnsafePointer<Int32>?, count: UInt) throws {
        switch state {
        case .collecting: break
        case .edited: throw CError(TF_EPERM, "tf_set_keyframes after tf_run: a context edits one clip")
        case .failed: throw failedError
        }
        // A bound far above any real schedule (1000 steps x thousands of batches) that keeps sizes sane.
        guard count <= 1 << 28 else { throw CError(TF_EINVAL, "keyframe count \(count) is too large") }
        if count == 0 { keyframes = []; return }
        guard let pointer else { throw CError(TF_EINVAL, "keyframes is NULL but count is \(count)") }
        keyframes = Array(UnsafeBufferPointer(start: pointer, count: Int(count)))
    }

    func run(_ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) throws {
        switch state {
        case .collecting: break
        case .edited: throw CError(TF_EPERM, "tf_run was already called on this context")
        case .failed: throw failedError
        }
        do {
            guard clip.frameCount > 0 else { throw CError(TF_EINVAL, "no frames to edit: send them with tf_send_frame before tf_run") }
            try clip.edit(keyframes: try shapedKeyframes()) { progress in
                guard let callback else { return true }
                var report = TFProgress(stage: Self.stage(progress.stage), stage_name: stageNames[progress.stage],
                                        completed: Int32(clamping: progress.completed), total: Int32(clamping: progress.total),
                                        step: Int32(clamping: progress.step), steps: Int32(clamping: progress.steps))
                return callback(opaque, &report) == 0
            }
            state = .edited
        } catch {
            state = .failed
            throw CError(error)
        }
    }

    /// The explicit keyframe schedule shaped as steps x batches for this clip's frame count.
    private func shapedKeyframes() throws -> [[Int]]? {
        if keyframes.isEmpty { return nil }
        let batchSize = pipeline.settings.batchSize
        let batches = (clip.frameCount + batchSize - 1) / batchSize
        guard keyframes.count % batches == 0 else {
            throw CError(TF_EINVAL, "\(keyframes.count) keyframes are not steps x batches: \(clip.frameCount) frames in batches of \(batchSize) make \(batches) batches")
        }
        return Swift.stride(from: 0, to: keyframes.count, by: batches).map { start in
            keyframes[start..<(start + batches)].map { Int($0) }
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
        switch state {
        case .collecting: throw CError(TF_EPERM, "tf_get_frame before tf_run: nothing has been edited yet")
        case .edited: break
        case .failed: throw failedError
        }
        guard nextOutput < clip.frameCount else { throw CError(TF_EAGAIN, "every edited frame has been returned") }
        let output: Frame
        do { output = try clip.decode(nextOutput) } catch {
            state = .failed
            throw CError(error)
        }
        let buffer = outputBuffer ?? UnsafeMutableBufferPointer<UInt8>.allocate(capacity: output.pixels.count)
        outputBuffer = buffer
        _ = buffer.update(fromContentsOf: output.pixels)
        let handedOut = outputFrame ?? UnsafeMutablePointer<TFFrame>.allocate(capacity: 1)
        outputFrame = handedOut
        handedOut.initialize(to: TFFrame(data: UnsafePointer(buffer.baseAddress), width: Int32(output.width),
                                         height: Int32(output.height), stride: output.width * 3, pts: timestamps[nextOutput]))
        nextOutput += 1
        frame.pointee = UnsafePointer(handedOut)
    }
}

/// TFProgress.stage_name strings, static for the callback's lifetime rule.
nonisolated(unsafe) private let stageNames: [EditProgress.Stage: UnsafePointer<CChar>] = Dictionary(
    uniqueKeysWithValues: EditProgress.Stage.allCases.map { ($0, UnsafePointer(strdup($0.rawValue)!)) })
