import Diffusion
import Foundation
import XCTest

/// JSONFile.decode: JSONDecoder behind a nesting check, because JSONDecoder's own error for nesting deeper
/// than 512 levels traps when the 513th bracket is the last byte (a trap would end this test process).
final class JSONFileTests: XCTestCase {
    func refusal<T: Decodable>(_ type: T.Type, _ text: String) -> String? {
        do {
            _ = try JSONFile.decode(T.self, from: Data(text.utf8))
            return nil
        } catch {
            return "\(error)"
        }
    }

    func testDeepNestingIsRefusedBeforeJSONDecoder() {
        let open513 = String(repeating: "[", count: 513)
        for text in [open513, "{\"a\": " + open513, String(repeating: "{\"a\":", count: 65) + "1"] {
            let message = refusal([Int].self, text)
            XCTAssertTrue(message?.contains("JSON nested deeper than 64 levels at byte") == true, message ?? "accepted")
        }
    }

    func testNestingWithinTheLimitReachesJSONDecoder() throws {
        let nested = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        let message = try XCTUnwrap(refusal([Int].self, nested))
        XCTAssertFalse(message.contains("nested deeper"), message)
        XCTAssertEqual(try JSONFile.decode([[Int]].self, from: Data("[[1, 2], [3]]".utf8)), [[1, 2], [3]])
    }

    /// Brackets inside strings, escaped quotes included, are text, not nesting.
    func testBracketsInStringsDoNotCount() throws {
        let brackets = String(repeating: "[", count: 100)
        let text = "[\"\(brackets)\", \"\\\"\(brackets)\"]"
        XCTAssertEqual(try JSONFile.decode([String].self, from: Data(text.utf8)), [brackets, "\"" + brackets])
    }
}
