import Tensors
import VideoEditing
import XCTest

/// Streams: frames in one at a time, edited as one clip (window 0) or window by window with anchors.
final class StreamEditTests: XCTestCase {
    override func setUp() { Threading.configure(threads: 2) }

    /// Sends `frames`, collecting every frame the stream gives after each (as a host does), then ends it.
    func stream(_ frames: [Frame], _ settings: EditSettings) throws -> (frames: [Frame], outAfterSending: [Int]) {
        let stream = StreamEdit(try EditPipeline(model: tinyModel, settings: settings))
        var out: [Frame] = [], outAfterSending: [Int] = []
        for (index, frame) in frames.enumerated() {
            try stream.append(frame)
            while let edited = try stream.nextFrame(progress: nil) {
                out.append(edited)
                outAfterSending.append(index + 1)
            }
        }
        stream.endOfStream()
        while let edited = try stream.nextFrame(progress: nil) {
            out.append(edited)
            outAfterSending.append(frames.count)
        }
        return (out, outAfterSending)
    }

    func testWholeStreamIsTheClipEdit() throws {
        let clip = patternClip(frames: 6, width: 32, height: 24)
        let streamed = try stream(clip, quickSettings())
        XCTAssertEqual(streamed.frames, try EditPipeline(model: tinyModel, settings: quickSettings()).run(clip).frames)
        XCTAssertEqual(streamed.outAfterSending, Array(repeating: 6, count: 6), "window 0: output after the end of the stream")
    }

    /// Window 0 of a windowed stream is an edit of its own frames; later windows attend to anchors, so
    /// they differ from independent edits of their frames; output starts after each window is complete.
    func testWindowsAreEditedAsTheyFillAndLaterOnesFollowTheAnchors() throws {
        let clip = patternClip(frames: 10, width: 32, height: 24)
        var settings = quickSettings()
        settings.window = 4
        let streamed = try stream(clip, settings)
        XCTAssertEqual(streamed.frames.count, 10)
        XCTAssertEqual(streamed.outAfterSending, [4, 4, 4, 4, 8, 8, 8, 8, 10, 10])
        let independent = try EditPipeline(model: tinyModel, settings: quickSettings())
        XCTAssertEqual(Array(streamed.frames[0..<4]), try independent.run(Array(clip[0..<4])).frames)
        XCTAssertNotEqual(Array(streamed.frames[4..<8]), try independent.run(Array(clip[4..<8])).frames)
        XCTAssertTrue(streamed.frames.allSatisfy { $0.width == 32 && $0.height == 24 })
    }

    /// COVE's windows carry the stream's first frame and the previous window's last into their groups,
    /// as the groups of one clip carry them (COVE-DECISIONS.md §9): windows of W frames give exactly the
    /// frames of the whole clip edited in groups of W (the same UNet calls, batch for batch). With W = 1
    /// the stream's first frame is also window 0's last, carried once.
    func testCoveWindowsEditAsGroupsOfOneClip() throws {
        for (frames, window) in [(12, 4), (3, 1)] {
            let clip = patternClip(frames: frames, width: 32, height: 24)
            var settings = quickSettings(Cove.name)
            settings.coveWindow = 5
            settings.coveFrames = window
            let grouped = try EditPipeline(model: tinyModel, settings: settings).run(clip).frames
            settings.coveFrames = 32
            settings.window = window
            let streamed = try stream(clip, settings)
            XCTAssertEqual(streamed.outAfterSending, (0..<frames).map { ($0 / window + 1) * window }, "window \(window)")
            XCTAssertTrue(streamed.frames == grouped, "window \(window): the windows differ from the groups")
            // Later windows follow their anchors: not the edit of their frames alone.
            let alone = try EditPipeline(model: tinyModel, settings: settings).run(Array(clip[window..<(2 * window)])).frames
            XCTAssertNotEqual(Array(streamed.frames[window..<(2 * window)]), alone, "window \(window)")
        }
    }

    func testStreamsRefuseWhatTheyCannotDo() throws {
        var settings = quickSettings()
        settings.window = 2
        let stream = StreamEdit(try EditPipeline(model: tinyModel, settings: settings))
        stream.keyframes = [[0], [1]]
        try stream.append(patternClip(frames: 1, width: 16, height: 16)[0])
        XCTAssertThrowsError(try stream.append(patternClip(frames: 1, width: 24, height: 16)[0])) {
            XCTAssertTrue("\($0)".contains("frame 1 is 24x16, frame 0 was 16x16"), "\($0)")
        }
        try stream.append(patternClip(frames: 1, width: 16, height: 16)[0])
        XCTAssertThrowsError(try stream.nextFrame(progress: nil)) {
            XCTAssertTrue("\($0)".contains("needs the whole stream as one clip (window 0), window is 2"), "\($0)")
        }
        stream.endOfStream()
        XCTAssertThrowsError(try stream.append(patternClip(frames: 1, width: 16, height: 16)[0])) {
            XCTAssertTrue("\($0)".contains("after the end of the stream"), "\($0)")
        }
    }
}
