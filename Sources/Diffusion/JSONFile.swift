import FoundationEssentials

/// Decoding of the JSON users supply (model configs, tokenizer files, keyframe schedules, the config metadata of
/// single-file checkpoints): Foundation's JSONDecoder, after a nesting check of our own.
///
/// JSONDecoder refuses nesting deeper than 512 levels, but when the 513th opening bracket is the last byte
/// of the input, building that error traps inside FoundationEssentials (swift-foundation as shipped with
/// Swift 6.3.1: `JSONError.SourceLocation.sourceLocation(at:fullSource:)` reads past the end), which would
/// kill the host with SIGILL. Found by fuzzing (Tests/Fuzz/regressions/*/json-nesting-*). Inputs nested
/// deeper than `maxDepth` are refused before JSONDecoder sees them; no such file nests more than 3 levels.
public enum JSONFile {
    public static let maxDepth = 64

    /// Throws `DecodingError.dataCorrupted` (as JSONDecoder does for malformed JSON) for too deep nesting.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        if let offset = firstTooDeepBracket(data) {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: [], debugDescription: "JSON nested deeper than \(maxDepth) levels at byte \(offset)"))
        }
        return try JSONDecoder().decode(T.self, from: data)
    }

    /// The offset of the first bracket opening level `maxDepth + 1`, outside strings. Where a closing
    /// bracket has no opening one the JSON is already malformed and JSONDecoder stops there, so the count
    /// may go negative without missing a depth the decoder reaches.
    static func firstTooDeepBracket(_ data: Data) -> Int? {
        var depth = 0, inString = false, escaped = false
        for (offset, byte) in data.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maxDepth { return offset }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return nil
    }
}
