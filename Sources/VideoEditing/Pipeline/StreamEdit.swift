/// A stream of any length, edited as one clip (`window` 0: at the end of the stream) or window by window
/// (`window` W: every W frames, so output starts after W frames). Frames are encoded as they arrive and only
/// latents are kept; edited frames are decoded one at a time as they are fetched.
///
/// Windows share the edit's look: every keyframe pass of window w > 0 also attends to two anchor frames
/// at the same step, the first keyframe of window 0 (the look every window follows, as Text2Video-Zero and
/// FRESCO anchor chunks to the first frame) and the last keyframe of window w - 1 (continuity at the join).
/// Their latents per step are small (2 x 64 KiB per step at 512x512) and their keys/values are recomputed in
/// the pass, so nothing of an earlier window but those latents is kept. Window 0 is edited exactly as a
/// clip of its own. COVE's windows carry the same two frames into their groups (`CoveAnchor`: their
/// per-step latents and features), so windows of W frames edit as one clip in groups of W frames.
public final class StreamEdit {
    public let pipeline: EditPipeline
    /// Frames being collected (the window being filled).
    private var filling: ClipEdit
    /// Complete windows waiting to be edited or output, in order; the first is being output.
    private var windows: [ClipEdit] = []
    private var nextOutput = 0
    private var ended = false
    /// Window 0's first keyframe and the latest edited window's last keyframe, per step.
    private var firstKeyframe: [AnchorLatents]?
    private var previousLastKeyframe: [AnchorLatents]?
    /// COVE: window 0's first frame and the latest edited window's last frame.
    private var coveFirstFrame: CoveAnchor?
    private var covePreviousLastFrame: CoveAnchor?
    /// Windows edited so far (the index of the next one).
    public private(set) var windowsEdited = 0
    /// An explicit keyframe schedule for a whole-stream edit (window 0 only).
    public var keyframes: [[Int]]?

    public init(_ pipeline: EditPipeline) {
        self.pipeline = pipeline
        filling = pipeline.makeClip()
    }

    var window: Int { pipeline.settings.window }

    /// Frames received so far.
    public private(set) var framesIn = 0
    /// The first received frame's size (0 x 0 before it); every frame of the stream has it.
    public private(set) var inputSize = (width: 0, height: 0)

    /// Encodes a frame into the window being filled.
    public func append(_ frame: Frame) throws {
        guard !ended else { throw EditError.invalidClip("frames cannot be added after the end of the stream") }
        if framesIn > 0 && (frame.width, frame.height) != inputSize {
            throw EditError.invalidClip("frame \(framesIn) is \(frame.width)x\(frame.height), frame 0 was \(inputSize.width)x\(inputSize.height): all frames of a stream must have one size")
        }
        try filling.append(frame)
        if framesIn == 0 { inputSize = (frame.width, frame.height) }
        framesIn += 1
        if window > 0 && filling.frameCount == window { closeWindow() }
    }

    /// No more frames: the last (partial) window, or the whole stream, can be edited.
    public func endOfStream() {
        ended = true
        if filling.frameCount > 0 { closeWindow() }
    }

    private func closeWindow() {
        windows.append(filling)
        filling = pipeline.makeClip()
    }

    /// Edits every complete window that is not edited yet (in order).
    public func editComplete(progress: ProgressHandler?) throws {
        for clip in windows where !clip.isEdited { try edit(clip, progress: progress) }
    }

    /// The next edited frame, editing the next complete window first if needed (this is where the long
    /// work happens). nil: no frame can be given until more frames arrive, or, after the end of the
    /// stream, every frame has been given.
    public func nextFrame(progress: ProgressHandler?) throws -> Frame? {
        if let current = windows.first, nextOutput == current.frameCount {
            windows.removeFirst() // its latents are freed
            nextOutput = 0
        }
        guard let current = windows.first else { return nil }
        if !current.isEdited { try edit(current, progress: progress) }
        nextOutput += 1
        return try current.decode(nextOutput - 1)
    }

    private func edit(_ clip: ClipEdit, progress: ProgressHandler?) throws {
        if keyframes != nil && window > 0 {
            throw EditError.invalidSettings("an explicit keyframe schedule needs the whole stream as one clip (window 0), window is \(window)")
        }
        if windowsEdited > 0, let first = firstKeyframe, let last = previousLastKeyframe {
            clip.anchors = try zip(first, last).map { try AnchorLatents.stacked([$0, $1]) }
        }
        if windowsEdited > 0, let first = coveFirstFrame, let last = covePreviousLastFrame {
            // With 1-frame windows, window 0's last frame is the stream's first: carried once.
            clip.coveCarried = window == 1 && windowsEdited == 1 ? [first] : [first, last]
        }
        clip.leavesCoveAnchors = window > 0
        let index = windowsEdited
        try clip.edit(keyframes: keyframes, progress: progress.map { handler in { report in
            var numbered = report
            numbered.window = index
            return handler(numbered)
        } })
        if let recorded = clip.keyframeLatents {
            if windowsEdited == 0 { firstKeyframe = recorded.first }
            previousLastKeyframe = recorded.last
        }
        if windowsEdited == 0 { coveFirstFrame = clip.coveAnchorsLeft[0] }
        covePreviousLastFrame = clip.coveAnchorsLeft[clip.frameCount - 1]
        windowsEdited += 1
    }
}
