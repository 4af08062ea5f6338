import Foundation
import Tensors
import VideoEditing
import XCTest

/// Clips of any length: latents beyond the memory budget in an unlinked temporary file, and keyframe
/// passes limited to `keyframe_context` keyframes.
final class LongClipTests: XCTestCase {
    override func setUp() { Threading.configure(threads: 2) }

    func settings(frames: Int) -> EditSettings {
        var settings = quickSettings()
        settings.steps = 1
        settings.inversionSteps = 1
        return settings
    }

    /// Latents spilled to the temporary file give exactly the in-memory edit, and the file is unlinked
    /// from the start (the folder stays empty) while its space is in use.
    func testLatentsBeyondTheBudgetGoToAnUnlinkedFileWithTheSameResult() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tokenflow-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var spilled = settings(frames: 6)
        spilled.workingSize = .exact(width: 512, height: 512) // a latent is 4 x 64 x 64 floats, 64 KiB
        spilled.latentMemory = 1 // MiB: 3 records of (4 + 1 step) x 64 KiB
        spilled.temporaryDirectory = folder
        var inMemory = spilled
        inMemory.latentMemory = 1024
        let frames = patternClip(frames: 6, width: 64, height: 48)

        func edit(_ settings: EditSettings) throws -> ClipEdit {
            let clip = try EditPipeline(model: tinyModel, settings: settings).makeClip()
            for frame in frames { try clip.append(frame) }
            return clip
        }
        let clip = try edit(spilled)
        XCTAssertEqual(clip.latentBytes.memory, 3 * 5 * 65536)
        XCTAssertEqual(clip.latentBytes.disk, 3 * 5 * 65536)
        var folderWasEmpty = true
        try clip.edit { _ in
            folderWasEmpty = folderWasEmpty && (try? FileManager.default.contentsOfDirectory(atPath: folder))?.isEmpty == true
            return true
        }
        let reference = try edit(inMemory)
        XCTAssertEqual(reference.latentBytes.disk, 0)
        try reference.edit()
        XCTAssertEqual(try clip.editedLatents().scalars, try reference.editedLatents().scalars)
        XCTAssertTrue(folderWasEmpty, "the temporary file is unlinked as soon as it is created")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [])
    }

    func testAnUnusableTemporaryFolderIsAClearError() throws {
        var settings = settings(frames: 4)
        settings.latentMemory = 1
        settings.workingSize = .exact(width: 512, height: 512)
        settings.temporaryDirectory = "/nonexistent/tokenflow"
        XCTAssertThrowsError(try EditPipeline(model: tinyModel, settings: settings).run(patternClip(frames: 5, width: 16, height: 16))) {
            XCTAssertTrue("\($0)".contains("cannot create a temporary file for latents in /nonexistent/tokenflow"), "\($0)")
        }
    }

    /// Keyframe passes: one over all keyframes up to keyframe_context; beyond, passes of keyframe_context
    /// keyframes overlapping by half, each keyframe recorded by exactly one pass, in order, near its centre.
    func testKeyframePassesCoverTheClipInOrderAroundTheirCentres() throws {
        var settings = settings(frames: 4)
        for context in [2, 3, 4, 8] {
            settings.keyframeContext = context
            let propagation = (try EditPipeline(model: tinyModel, settings: settings).method as! TokenFlowPnP).propagation
            for count in 1...40 {
                let passes = propagation.keyframePasses(count: count)
                if count <= context {
                    XCTAssertEqual(passes.map { [$0.members, $0.keeps] }, [[0..<count, 0..<count]])
                    continue
                }
                XCTAssertEqual(passes.flatMap { Array($0.keeps) }, Array(0..<count), "context \(context) count \(count)")
                for pass in passes {
                    XCTAssertEqual(pass.members.count, context)
                    XCTAssertTrue(pass.members.lowerBound >= 0 && pass.members.upperBound <= count)
                    XCTAssertTrue(pass.keeps.allSatisfy { pass.members.contains($0) })
                    // Interior keyframes see at least a quarter of the context on each side.
                    for keyframe in pass.keeps where keyframe >= context / 4 && keyframe < count - context / 4 {
                        XCTAssertGreaterThanOrEqual(keyframe - pass.members.lowerBound, context / 4 - 1, "\(context) \(count) \(keyframe)")
                        XCTAssertGreaterThanOrEqual(pass.members.upperBound - 1 - keyframe, context / 4 - 1, "\(context) \(count) \(keyframe)")
                    }
                }
            }
        }
    }

    /// Up to keyframe_context keyframes the edit is the whole-clip edit bit for bit; beyond, it runs one
    /// keyframe pass per half context and reports every UNet call.
    func testKeyframeContextKeepsShortClipsExactAndBoundsLongOnes() throws {
        let clip = patternClip(frames: 10, width: 32, height: 24) // batches of 2: 5 keyframes
        var wide = settings(frames: 10)
        wide.keyframeContext = 5
        var wider = wide
        wider.keyframeContext = 64
        XCTAssertEqual(try EditPipeline(model: tinyModel, settings: wide).run(clip).finalLatents.scalars,
                       try EditPipeline(model: tinyModel, settings: wider).run(clip).finalLatents.scalars)
        var narrow = wide
        narrow.keyframeContext = 2 // passes over keyframes 0-1, 1-2, 2-3, 3-4
        var reports: [EditProgress] = []
        let limited = try EditPipeline(model: tinyModel, settings: narrow).run(clip) { reports.append($0); return true }
        XCTAssertEqual(reports.filter { $0.stage == .sampling }.count, 4 + 5)
        XCTAssertEqual(limited.frames.count, 10)
        XCTAssertNotEqual(limited.finalLatents.scalars, try EditPipeline(model: tinyModel, settings: wide).run(clip).finalLatents.scalars)
    }
}
