import Glibc
import VideoEditing
import XCTest

/// `tokenflow edit --keyframes FILE`: the file's form (its fit to the clip is `checkClip`'s, tested with the
/// methods). Tests/Host/fuzz.sh fuzzes the same reader.
final class KeyframeFileTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/tokenflow-keyframes.XXXXXX".utf8CString)
        guard let path = mkdtemp(&template) else { throw XCTSkip("no temporary folder") }
        folder = String(cString: path)
    }

    override func tearDown() {
        for name in ["keys.json", "fifo"] { unlink(folder + "/" + name) }
        rmdir(folder)
    }

    func write(_ text: String) -> String {
        let path = folder + "/keys.json"
        let file = fopen(path, "w")!
        fputs(text, file)
        fclose(file)
        return path
    }

    func message(_ path: String) -> String {
        do {
            _ = try KeyframeFile.read(path)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    func testReadsOneListPerStep() throws {
        XCTAssertEqual(try KeyframeFile.read(write("[[0, 4, 8], [3, 7, 9]]\n")), [[0, 4, 8], [3, 7, 9]])
        XCTAssertEqual(try KeyframeFile.read(write("[]")), [])
    }

    func testMalformedFilesAreRefusedByName() {
        for text in ["[[0, 4, 8]", "[[0.5]]", "[[1e300]]", "{\"steps\": []}", "[[\"3\"]]", ""] {
            let refusal = message(write(text))
            XCTAssertTrue(refusal.contains("keyframe file '\(folder)/keys.json' must be JSON like [[3, 10], [5, 12]]"),
                          "\(text): \(refusal)")
        }
    }

    func testOnlyRegularFilesAreRead() throws {
        XCTAssertTrue(message(folder + "/missing.json").contains("cannot read keyframe file"))
        // A FIFO would block a reader forever; it is refused without opening it for a blocking read.
        XCTAssertEqual(mkfifo(folder + "/fifo", 0o600), 0)
        XCTAssertTrue(message(folder + "/fifo").contains("not a regular file"), message(folder + "/fifo"))
        XCTAssertTrue(message(folder).contains("not a regular file"))
    }

    func testLargeFilesAreRefusedBeforeReading() {
        let path = write(String(repeating: " ", count: KeyframeFile.sizeLimit + 1) + "[]")
        XCTAssertTrue(message(path).contains("more than the \(KeyframeFile.sizeLimit)"), message(path))
    }
}
