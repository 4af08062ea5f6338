import Diffusion
import Foundation
import XCTest

/// Parity with transformers' slow CLIPTokenizer (fixtures from Tests/Fixtures/generate_tokenizer_fixtures.py).
final class CLIPTokenizerTests: XCTestCase {
    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    private static let tokenizerFixtures = fixtures.appendingPathComponent("tokenizer")

    private struct Cases: Decodable {
        let maxLength: Int
        let cases: [Case]
        enum CodingKeys: String, CodingKey { case maxLength = "max_length", cases }
    }

    private struct Case: Decodable {
        let name: String
        let text: String
        let sd2: Expected
        let sd15: Expected
    }

    private struct Expected: Decodable {
        let inputIDs: [Int32]
        let tokens: [Int32]
        enum CodingKeys: String, CodingKey { case inputIDs = "input_ids", tokens }
    }

    private func loadCases() throws -> Cases {
        let data = try Data(contentsOf: Self.tokenizerFixtures.appendingPathComponent("cases.json"))
        return try JSONDecoder().decode(Cases.self, from: data)
    }

    private func loadTokenizer(_ variant: String) throws -> CLIPTokenizer {
        try CLIPTokenizer(directory: Self.tokenizerFixtures.appendingPathComponent(variant).path)
    }

    func testSD2MatchesTransformers() throws {
        try checkParity(variant: "sd2", expected: \.sd2)
    }

    func testSD15MatchesTransformers() throws {
        try checkParity(variant: "sd15", expected: \.sd15)
    }

    /// The tokenizer built into the library (single-file checkpoints have no tokenizer folder), with each
    /// family's padding, against the same transformers references.
    func testBuiltInSD2MatchesTransformers() throws {
        try checkParity(variant: "sd2", expected: \.sd2, tokenizer: CLIPTokenizer.builtIn(padding: .exclamationMark))
    }

    func testBuiltInSD15MatchesTransformers() throws {
        try checkParity(variant: "sd15", expected: \.sd15, tokenizer: CLIPTokenizer.builtIn(padding: .endOfText))
    }

    /// The embedded merges are the fixture's merges.txt byte for byte, and the vocabulary derived from them is
    /// its vocab.json (derive_clip_vocab.py wrote both from the same merge list).
    func testBuiltInVocabularyIsTheFixtureFiles() throws {
        let folder = Self.fixtures.appendingPathComponent("clip-tokenizer")
        let merges = try String(contentsOf: folder.appendingPathComponent("merges.txt"), encoding: .utf8)
        XCTAssertEqual(CLIPTokenizer.builtInMergesFile, merges)
        let vocabulary = try JSONDecoder().decode([String: Int32].self, from: Data(contentsOf: folder.appendingPathComponent("vocab.json")))
        let builtIn = try CLIPTokenizer.builtInVocabulary()
        XCTAssertEqual(builtIn.vocabulary.count, 49_408)
        XCTAssertEqual(builtIn.vocabulary, vocabulary)
        XCTAssertEqual(builtIn.merges.count, 48_894)
    }

    private func checkParity(variant: String, expected: KeyPath<Case, Expected>, tokenizer: CLIPTokenizer? = nil) throws {
        let fixture = try loadCases()
        let tokenizer = try tokenizer ?? loadTokenizer(variant)
        XCTAssertEqual(tokenizer.maxLength, fixture.maxLength)
        XCTAssertGreaterThanOrEqual(fixture.cases.count, 40)
        for testCase in fixture.cases {
            let want = testCase[keyPath: expected]
            XCTAssertEqual(tokenizer.encode(testCase.text), want.inputIDs, "\(variant) input_ids: \(testCase.name)")
            XCTAssertEqual(tokenizer.tokenize(testCase.text), want.tokens, "\(variant) tokens: \(testCase.name)")
        }
    }

    func testSpecialTokenIDs() throws {
        let sd2 = try loadTokenizer("sd2")
        let sd15 = try loadTokenizer("sd15")
        XCTAssertEqual([sd2.bosID, sd2.eosID, sd2.padID], [49406, 49407, 0])
        XCTAssertEqual([sd15.bosID, sd15.eosID, sd15.padID], [49406, 49407, 49407])
    }

    /// Folders saved by transformers < 4.34 (as published for SD 1.5 and 2.x) have no added_tokens_decoder,
    /// write special tokens as AddedToken objects, and let special_tokens_map.json override the config.
    func testLegacyFolderTakesPadTokenFromSpecialTokensMap() throws {
        let folder = try makeFolder()
        let eos = #"{"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": false, "rstrip": false}"#
        try write(#"{"do_lower_case": true, "model_max_length": 77, "pad_token": "<|endoftext|>", "eos_token": \#(eos)}"#,
                  to: folder.appendingPathComponent("tokenizer_config.json"))
        try write(#"{"pad_token": "!", "eos_token": {"content": "<|endoftext|>"}}"#,
                  to: folder.appendingPathComponent("special_tokens_map.json"))
        let legacy = try CLIPTokenizer(directory: folder.path)
        let sd2 = try loadTokenizer("sd2")
        XCTAssertEqual(legacy.padID, 0)
        for text in ["wow!!! so cool!", "a photo of a cat", "<|endoftext|>!"] {
            XCTAssertEqual(legacy.encode(text), sd2.encode(text), text)
        }
    }

    func testInMemoryTables() throws {
        let vocabulary: [String: Int32] = [
            "a": 0, "b": 1, "a</w>": 2, "b</w>": 3, "ab</w>": 4, "<|startoftext|>": 5, "<|endoftext|>": 6,
        ]
        let tokenizer = try CLIPTokenizer(vocabulary: vocabulary, merges: [("a", "b</w>")], maxLength: 6)
        XCTAssertEqual(tokenizer.tokenize("AB ba"), [4, 1, 2])
        XCTAssertEqual(tokenizer.encode("ab"), [5, 4, 6, 6, 6, 6])
        XCTAssertEqual(tokenizer.encode("ab ab ab ab ab"), [5, 4, 4, 4, 4, 6])
        XCTAssertThrowsError(try CLIPTokenizer(vocabulary: vocabulary, merges: [], pad: "!")) { error in
            XCTAssertEqual("\(error)", #"pad_token "!" is neither in the vocabulary nor an added token"#)
        }
    }

    // MARK: - Errors

    func testMissingVocabulary() throws {
        let folder = try makeFolder()
        try FileManager.default.removeItem(at: folder.appendingPathComponent("vocab.json"))
        assertLoadFails(folder, mentioning: ["vocab.json", "missing"])
    }

    func testCorruptVocabulary() throws {
        let folder = try makeFolder()
        try write(#"{"a": 0, "b": "#, to: folder.appendingPathComponent("vocab.json"))
        assertLoadFails(folder, mentioning: ["vocab.json"])
    }

    func testVocabularyOfWrongType() throws {
        let folder = try makeFolder()
        try write(#"["a", "b"]"#, to: folder.appendingPathComponent("vocab.json"))
        assertLoadFails(folder, mentioning: ["vocab.json"])
    }

    func testMissingMerges() throws {
        let folder = try makeFolder()
        try FileManager.default.removeItem(at: folder.appendingPathComponent("merges.txt"))
        assertLoadFails(folder, mentioning: ["merges.txt", "missing"])
    }

    func testMalformedMerges() throws {
        let folder = try makeFolder()
        try write("#version: 0.2\ni n\nt h e\n", to: folder.appendingPathComponent("merges.txt"))
        assertLoadFails(folder, mentioning: ["merges.txt", "line 3"])
        try write("#version: 0.2\n\n", to: folder.appendingPathComponent("merges.txt"))
        assertLoadFails(folder, mentioning: ["merges.txt", "no merges"])
    }

    func testMissingOrCorruptConfiguration() throws {
        let folder = try makeFolder()
        try FileManager.default.removeItem(at: folder.appendingPathComponent("special_tokens_map.json"))
        assertLoadFails(folder, mentioning: ["special_tokens_map.json", "missing"])

        let other = try makeFolder()
        try write(#"{"model_max_length": "77"}"#, to: other.appendingPathComponent("tokenizer_config.json"))
        assertLoadFails(other, mentioning: ["tokenizer_config.json", "model_max_length"])
    }

    func testUnknownPadToken() throws {
        let folder = try makeFolder()
        try write(#"{"pad_token": "<|pad|>"}"#, to: folder.appendingPathComponent("special_tokens_map.json"))
        try write(#"{"model_max_length": 77}"#, to: folder.appendingPathComponent("tokenizer_config.json"))
        assertLoadFails(folder, mentioning: ["pad_token", "<|pad|>"])
    }

    func testRefusesStrippingAddedTokens() throws {
        let folder = try makeFolder()
        try write(#"{"added_tokens_decoder": {"0": {"content": "!", "rstrip": true}}, "pad_token": "!"}"#,
                  to: folder.appendingPathComponent("tokenizer_config.json"))
        assertLoadFails(folder, mentioning: ["tokenizer_config.json", "rstrip"])
    }

    // MARK: - Helpers

    /// A scratch copy of the sd2 fixture folder (vocabulary files linked, configuration files copied).
    private func makeFolder() throws -> URL {
        let manager = FileManager.default
        let folder = manager.temporaryDirectory.appendingPathComponent("clip-tokenizer-test-\(UUID().uuidString)")
        try manager.createDirectory(at: folder, withIntermediateDirectories: true)
        addTeardownBlock { try? manager.removeItem(at: folder) }
        let vocabularyFolder = Self.fixtures.appendingPathComponent("clip-tokenizer")
        for name in ["vocab.json", "merges.txt"] {
            try manager.createSymbolicLink(at: folder.appendingPathComponent(name),
                                           withDestinationURL: vocabularyFolder.appendingPathComponent(name))
        }
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            try manager.copyItem(at: Self.tokenizerFixtures.appendingPathComponent("sd2").appendingPathComponent(name),
                                 to: folder.appendingPathComponent(name))
        }
        return folder
    }

    private func write(_ text: String, to url: URL) throws {
        try? FileManager.default.removeItem(at: url)
        try text.write(to: url, atomically: true, encoding: .utf8)
    }

    private func assertLoadFails(_ folder: URL, mentioning parts: [String], line: UInt = #line) {
        XCTAssertThrowsError(try CLIPTokenizer(directory: folder.path), line: line) { error in
            XCTAssertTrue(error is CLIPTokenizerError, "\(type(of: error))", line: line)
            let message = "\(error)"
            for part in parts {
                XCTAssertTrue(message.contains(part), "\"\(message)\" does not mention \(part)", line: line)
            }
        }
    }
}
