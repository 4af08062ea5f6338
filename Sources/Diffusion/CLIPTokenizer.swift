// CLIP's byte-level BPE tokenizer, as Stable Diffusion pipelines use it.
//
// The reference is transformers' slow `CLIPTokenizer` (4.46.3) without ftfy installed, which is what
// diffusers runs unless ftfy happens to be present. Its text cleanup is then
// `BasicTokenizer(strip_accents=False, do_split_on_punc=False)` followed by lower-casing:
//   1. cut "added tokens" (the special tokens) out of the raw text; they map straight to their ids;
//   2. drop NUL, U+FFFD and control/format/private-use/unassigned characters, turn whitespace into spaces,
//      put spaces around CJK ideographs, NFC-normalise, split on whitespace, lower-case (accents kept);
//   3. split each word with CLIP's pattern, map its UTF-8 bytes to printable symbols, apply BPE.
// Python 3.11, the reference, has Unicode 14.0 tables; characters assigned later are treated as it treats
// them (unassigned, so removed), whatever the Unicode version of Swift's tables. An exhaustive comparison
// (every code point in context) found one remaining difference: U+1171E, a mark whose general category
// changed after Unicode 14, which decides whether a neighbouring capital sigma lower-cases to "ς" or "σ".

import FoundationEssentials
import Tensors

/// A malformed tokenizer folder or configuration.
public enum CLIPTokenizerError: Error, CustomStringConvertible {
    /// A file of the tokenizer folder is missing, unreadable or malformed.
    case badFile(path: String, problem: String)
    /// A special token (`role` is its configuration key, such as "pad_token") has no id.
    case unknownSpecialToken(role: String, token: String)
    /// In-memory tables that cannot make a tokenizer (an empty token, a length without room for bos and eos).
    case invalidTable(String)

    public var description: String {
        switch self {
        case .badFile(let path, let problem):
            return "\(path): \(problem)"
        case .unknownSpecialToken(let role, let token):
            return "\(role) \"\(token)\" is neither in the vocabulary nor an added token"
        case .invalidTable(let problem):
            return problem
        }
    }
}

public struct CLIPTokenizer: Sendable {
    /// Length of every `encode` result: the text encoder's context (77 for Stable Diffusion).
    public let maxLength: Int
    /// The largest `maxLength` (model_max_length) accepted; far above any CLIP context.
    public static let maxLengthLimit = 4_096
    public let bosID: Int32
    public let eosID: Int32
    /// SD 2.x pads with "!" (id 0), SD 1.5 with "<|endoftext|>" (id 49407); the folder's files decide.
    public let padID: Int32
    private let unkID: Int32
    private let vocabulary: [String: Int32]
    private let mergeRanks: [SymbolPair: Int]
    /// Strings cut out of the raw text before any cleanup and mapped straight to an id, longest first.
    /// transformers does this for every special token, so with SD 2.x's pad token each "!" in a prompt
    /// becomes id 0 (the symbol "!") instead of being merged by BPE into "!</w>", "!!</w>", ...
    private let addedTokens: [(scalars: [Unicode.Scalar], id: Int32)]

    /// Reads a diffusers `tokenizer/` folder: vocab.json, merges.txt, tokenizer_config.json and
    /// special_tokens_map.json. Both configuration files are required: guessing the pad token would silently
    /// change an SD 2.x model's conditioning.
    public init(directory: String) throws {
        func path(_ name: String) -> String { directory + "/" + name }
        let vocabulary = try TokenizerFiles.decodeJSON([String: Int32].self, at: path("vocab.json"))
        let merges = try TokenizerFiles.readMerges(at: path("merges.txt"))
        let configPath = path("tokenizer_config.json")
        let config = try TokenizerFiles.decodeJSON(TokenizerConfig.self, at: configPath)
        let specialTokensMap = try TokenizerFiles.decodeJSON(TokenizerConfig.self, at: path("special_tokens_map.json"))

        // Folders saved by transformers >= 4.34 carry `added_tokens_decoder`, and transformers then ignores
        // special_tokens_map.json; in older folders (as published for SD 1.5 and 2.x) the map's values
        // override the config's.
        let isLegacy = config.addedTokensDecoder == nil
        // An empty token would match everywhere in the text without consuming it (tokenize would never end).
        func token(_ key: KeyPath<TokenizerConfig, AddedToken?>, _ name: String, default value: String) throws -> String {
            let fromMap = isLegacy ? specialTokensMap[keyPath: key] : nil
            let content = (fromMap ?? config[keyPath: key])?.content ?? value
            if content.isEmpty {
                throw CLIPTokenizerError.badFile(path: fromMap != nil ? path("special_tokens_map.json") : configPath,
                                                 problem: "\(name) is empty")
            }
            return content
        }
        var addedTokens: [String: Int32] = [:]
        for (id, added) in config.addedTokensDecoder ?? [:] {
            guard let id = Int32(id) else {
                throw CLIPTokenizerError.badFile(
                    path: configPath, problem: "added_tokens_decoder key \"\(id)\" is not an id")
            }
            if added.content.isEmpty {
                throw CLIPTokenizerError.badFile(path: configPath, problem: "added_tokens_decoder \"\(id)\" has empty content")
            }
            addedTokens[added.content] = id
        }
        let maxLength = config.modelMaxLength ?? 77
        guard (2...Self.maxLengthLimit).contains(maxLength) else {
            throw CLIPTokenizerError.badFile(
                path: configPath, problem: "model_max_length = \(maxLength) is outside 2...\(Self.maxLengthLimit)")
        }
        try self.init(
            vocabulary: vocabulary, merges: merges,
            bos: token(\.bosToken, "bos_token", default: "<|startoftext|>"),
            eos: token(\.eosToken, "eos_token", default: "<|endoftext|>"),
            pad: token(\.padToken, "pad_token", default: "<|endoftext|>"),
            unk: token(\.unkToken, "unk_token", default: "<|endoftext|>"),
            addedTokens: addedTokens, maxLength: maxLength)
    }

    /// Builds a tokenizer from in-memory tables. Merges are in priority order (first merges first). Special
    /// tokens take their ids from `addedTokens`, else from `vocabulary`; all of them, and every added token,
    /// are matched verbatim in the raw text. Defaults are transformers' `CLIPTokenizer` defaults.
    public init(
        vocabulary: [String: Int32], merges: [(String, String)],
        bos: String = "<|startoftext|>", eos: String = "<|endoftext|>",
        pad: String = "<|endoftext|>", unk: String = "<|endoftext|>",
        addedTokens: [String: Int32] = [:], maxLength: Int = 77
    ) throws {
        guard (2...Self.maxLengthLimit).contains(maxLength) else {
            throw CLIPTokenizerError.invalidTable("maxLength \(maxLength) is outside 2...\(Self.maxLengthLimit)")
        }
        for (role, token) in [("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", unk)] where token.isEmpty {
            throw CLIPTokenizerError.invalidTable("\(role) is empty")
        }
        if let empty = addedTokens.first(where: { $0.key.isEmpty }) {
            throw CLIPTokenizerError.invalidTable("added token \(empty.value) is empty")
        }
        func id(_ role: String, _ token: String) throws -> Int32 {
            guard let id = addedTokens[token] ?? vocabulary[token] else {
                throw CLIPTokenizerError.unknownSpecialToken(role: role, token: token)
            }
            return id
        }
        bosID = try id("bos_token", bos)
        eosID = try id("eos_token", eos)
        padID = try id("pad_token", pad)
        unkID = try id("unk_token", unk)
        var added = addedTokens
        for (token, id) in [(bos, bosID), (eos, eosID), (pad, padID), (unk, unkID)] { added[token] = id }
        self.addedTokens = added.map { (Array($0.key.unicodeScalars), $0.value) }
            .sorted { $0.scalars.count > $1.scalars.count }
        self.vocabulary = vocabulary
        // Python builds its rank table with dict(zip(merges, range(...))): a repeated pair keeps its last rank.
        mergeRanks = Dictionary(
            merges.enumerated().map { (SymbolPair(first: $1.0, second: $1.1), $0) },
            uniquingKeysWith: { _, last in last })
        self.maxLength = maxLength
    }

    /// The ids the text encoder takes: bos, the prompt's tokens cut to `maxLength - 2`, eos, then padding
    /// up to `maxLength`. Equals transformers'
    /// `tokenizer(text, padding="max_length", max_length=model_max_length, truncation=True).input_ids`.
    public func encode(_ text: String) -> [Int32] {
        var ids = [bosID] + tokenize(text).prefix(maxLength - 2) + [eosID]
        ids += repeatElement(padID, count: maxLength - ids.count)
        return ids
    }

    /// The prompt's token ids without bos, eos, truncation or padding.
    public func tokenize(_ text: String) -> [Int32] {
        let scalars = Array(text.unicodeScalars)
        var ids: [Int32] = []
        var segmentStart = 0
        var i = 0
        while i < scalars.count {
            guard let added = addedTokens.first(where: { scalars[i...].starts(with: $0.scalars) }) else {
                i += 1
                continue
            }
            appendTextIDs(scalars[segmentStart..<i], to: &ids)
            ids.append(added.id)
            i += added.scalars.count
            segmentStart = i
        }
        appendTextIDs(scalars[segmentStart...], to: &ids)
        return ids
    }

    /// Tokenizes text that holds no added token (transformers' `CLIPTokenizer._tokenize`).
    private func appendTextIDs(_ text: ArraySlice<Unicode.Scalar>, to ids: inout [Int32]) {
        for word in TextCleanup.words(text) {
            for piece in PreTokenizer.pieces(of: word) {
                let piece = String(String.UnicodeScalarView(piece))
                // transformers' BPE cache is seeded with these two, so they map to their ids unsplit.
                if piece == "<|startoftext|>" || piece == "<|endoftext|>" {
                    ids.append(vocabulary[piece] ?? unkID)
                    continue
                }
                for symbol in bpe(piece.utf8.map { Self.byteSymbols[Int($0)] }) {
                    ids.append(vocabulary[symbol] ?? unkID)
                }
            }
        }
    }

    /// Merges a word's byte symbols by merge priority. The last symbol carries the end-of-word marker.
    private func bpe(_ bytes: [String]) -> [String] {
        var word = bytes
        word[word.count - 1] += "</w>"
        while word.count > 1 {
            var best: (rank: Int, pair: SymbolPair)?
            for i in 0..<(word.count - 1) {
                let pair = SymbolPair(first: word[i], second: word[i + 1])
                if let rank = mergeRanks[pair], rank < best?.rank ?? .max { best = (rank, pair) }
            }
            guard let pair = best?.pair else { break }
            // Merge every occurrence, left to right, without overlaps.
            var merged: [String] = []
            var i = 0
            while i < word.count {
                if i + 1 < word.count, word[i] == pair.first, word[i + 1] == pair.second {
                    merged.append(pair.first + pair.second)
                    i += 2
                } else {
                    merged.append(word[i])
                    i += 1
                }
            }
            word = merged
        }
        return word
    }
}

// Helpers are nested in CLIPTokenizer so their names cannot clash with other files of the module.
extension CLIPTokenizer {
    private struct SymbolPair: Hashable, Sendable {
        let first: String
        let second: String
    }

    /// CLIP's byte-to-symbol table: BPE works on printable characters, so the printable Latin-1 bytes stand
    /// for themselves and the other 68 bytes (controls, space, soft hyphen, ...) map to U+0100 onwards in
    /// byte order.
    static let byteSymbols: [String] = {
        var nextUnprintable: UInt32 = 256
        return (0...255).map { (byte: UInt32) -> String in
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            var value = byte
            if !printable {
                value = nextUnprintable
                nextUnprintable += 1
            }
            return String(Unicode.Scalar(value)!)
        }
    }()

    /// transformers' BasicTokenizer as CLIPTokenizer configures it without ftfy (no accent stripping, no
    /// punctuation splitting), followed by Python's str.lower().
    private enum TextCleanup {
        /// Cleans text and splits it into lower-cased words, in BasicTokenizer's order.
        static func words(_ text: ArraySlice<Unicode.Scalar>) -> [[Unicode.Scalar]] {
            var cleaned = String.UnicodeScalarView()
            for scalar in text where scalar.value != 0 && scalar.value != 0xFFFD && !isControl(scalar) {
                if isWhitespace(scalar) {
                    cleaned.append(" ")
                } else if isCJKIdeograph(scalar) {
                    cleaned.append(contentsOf: [" ", scalar, " "])
                } else {
                    cleaned.append(scalar)
                }
            }
            // `_nfcCodeUnits` is the standard library's NFC (underscored but public); Foundation's
            // precomposedStringWithCanonicalMapping is not in FoundationEssentials.
            let normalized = String(decoding: String(cleaned)._nfcCodeUnits, as: UTF8.self)
            // Python's str.split() also splits on U+2028 and U+2029, which survive the cleanup above; every
            // other Python whitespace character is a control character or a space separator, gone by now.
            return normalized.unicodeScalars.split(whereSeparator: \.properties.isWhitespace).map(lowercased)
        }

        /// `_is_control`: any "C" category except tab, newline and carriage return (Swift strings hold no
        /// surrogates). Noncharacters such as U+FFFF are unassigned ("Cn") yet have an age.
        private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
            if scalar == "\t" || scalar == "\n" || scalar == "\r" { return false }
            // The reference's Python 3.11 has Unicode 14.0 tables; to it, characters assigned later (new emoji,
            // say) are unassigned, so it removes them. Swift's tables are newer.
            guard let age = scalar.properties.age, age <= (major: 14, minor: 0) else { return true }
            switch scalar.properties.generalCategory {
            case .control, .format, .privateUse, .unassigned: return true
            default: return false
            }
        }

        /// `_is_whitespace`: space, tab, newline, carriage return and space separators.
        private static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
            scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r"
                || scalar.properties.generalCategory == .spaceSeparator
        }

        /// `_is_chinese_char`: the CJK ideograph blocks (not kana or hangul).
        private static func isCJKIdeograph(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar.value {
            case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
                0x2B820...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
                return true
            default:
                return false
            }
        }

        /// Python's str.lower(): full lower-case mappings plus the Final_Sigma rule, which Swift's
        /// lowercased() lacks: a capital sigma ending a word ("ΟΔΟΣ") becomes "ς", elsewhere "σ".
        private static func lowercased(_ word: Substring.UnicodeScalarView) -> [Unicode.Scalar] {
            let word = Array(word)
            var result: [Unicode.Scalar] = []
            for (i, scalar) in word.enumerated() {
                if scalar == "\u{03A3}" {
                    result.append(isFinalSigma(word, at: i) ? "\u{03C2}" : "\u{03C3}")
                } else {
                    result.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
                }
            }
            return result
        }

        /// Unicode's Final_Sigma context: skipping case-ignorable characters, a cased letter before and none after.
        private static func isFinalSigma(_ word: [Unicode.Scalar], at index: Int) -> Bool {
            func nearestNotIgnorable(_ scalars: some Sequence<Unicode.Scalar>) -> Unicode.Scalar? {
                scalars.first { !$0.properties.isCaseIgnorable }
            }
            let before = nearestNotIgnorable(word[..<index].reversed())
            let after = nearestNotIgnorable(word[(index + 1)...])
            return before?.properties.isCased == true && after?.properties.isCased != true
        }
    }

    /// CLIP's pattern `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
    /// (case-insensitive), as Python's `regex.findall` applies it to one cleaned word.
    private enum PreTokenizer {
        private static let literals: [[Unicode.Scalar]] =
            ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

        /// At each position the first alternative that matches wins, in pattern order.
        static func pieces(of word: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
            var pieces: [ArraySlice<Unicode.Scalar>] = []
            var start = 0
            while start < word.count {
                var end = start + 1
                if let literal = literals.first(where: { matchesIgnoringCase(word[start...], $0) }) {
                    end = start + literal.count
                } else {
                    switch characterClass(word[start]) {
                    case .unmatched:
                        start += 1
                        continue
                    case .number:
                        break  // `[\p{N}]` takes one character.
                    case let runClass:
                        while end < word.count && characterClass(word[end]) == runClass { end += 1 }
                    }
                }
                pieces.append(word[start..<end])
                start = end
            }
            return pieces
        }

        /// The text is already lower-cased, so the only other character that still matches a letter of the
        /// literals under IGNORECASE is U+017F LATIN SMALL LETTER LONG S, whose simple case fold is "s":
        /// Python makes "'ſ" one piece, like "'s".
        private static func matchesIgnoringCase(_ text: ArraySlice<Unicode.Scalar>, _ literal: [Unicode.Scalar]) -> Bool {
            text.count >= literal.count && zip(text, literal).allSatisfy { $0 == $1 || ($0 == "\u{017F}" && $1 == "s") }
        }

        private enum CharacterClass { case letter, number, other, unmatched }

        /// Which of `[\p{L}]+`, `[\p{N}]` and `[^\s\p{L}\p{N}]+` a character belongs to (words hold no whitespace).
        private static func characterClass(_ scalar: Unicode.Scalar) -> CharacterClass {
            switch scalar.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
                return .letter
            case .decimalNumber, .letterNumber, .otherNumber:
                return .number
            default:
                // U+0345 COMBINING GREEK YPOGEGRAMMENI (a mark) case-folds to the letter "ι". Under IGNORECASE
                // `regex` therefore keeps it out of the negated class, yet not in `[\p{L}]`: it matches no
                // alternative and findall skips it. It is the only character that behaves so (checked exhaustively).
                return scalar == "\u{0345}" ? .unmatched : .other
            }
        }
    }

    /// A special or added token as transformers serialises it: a plain string or an AddedToken object.
    private struct AddedToken: Decodable {
        let content: String

        private enum CodingKeys: String, CodingKey { case content, lstrip, rstrip, singleWord = "single_word" }

        init(from decoder: any Decoder) throws {
            if let content = try? decoder.singleValueContainer().decode(String.self) {
                self.content = content
                return
            }
            let container = try decoder.container(keyedBy: CodingKeys.self)
            content = try container.decode(String.self, forKey: .content)
            // These flags make transformers strip spaces around the token or match it only as a whole word;
            // no Stable Diffusion tokenizer sets them, so refuse rather than tokenize differently.
            for flag in [CodingKeys.lstrip, .rstrip, .singleWord]
            where try container.decodeIfPresent(Bool.self, forKey: flag) == true {
                throw DecodingError.dataCorruptedError(
                    forKey: flag, in: container, debugDescription: "\(flag.rawValue) added tokens are not supported")
            }
        }
    }

    /// The keys read from tokenizer_config.json; special_tokens_map.json uses the same token keys.
    private struct TokenizerConfig: Decodable {
        let bosToken: AddedToken?
        let eosToken: AddedToken?
        let padToken: AddedToken?
        let unkToken: AddedToken?
        let modelMaxLength: Int?
        let addedTokensDecoder: [String: AddedToken]?

        private enum CodingKeys: String, CodingKey {
            case bosToken = "bos_token", eosToken = "eos_token", padToken = "pad_token", unkToken = "unk_token"
            case modelMaxLength = "model_max_length", addedTokensDecoder = "added_tokens_decoder"
        }
    }

    enum TokenizerFiles {
        static func decodeJSON<T: Decodable>(_ type: T.Type, at path: String) throws -> T {
            let data = try read(path)
            do {
                return try JSONFile.decode(T.self, from: data)
            } catch let DecodingError.dataCorrupted(context), let DecodingError.keyNotFound(_, context),
                let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context)
            {
                // The context names the offending key; its debugDescription is readable, unlike the enum's.
                let location = context.codingPath.map(\.stringValue).joined(separator: ".")
                let problem = context.underlyingError.map { "\($0)" } ?? context.debugDescription
                throw CLIPTokenizerError.badFile(path: path, problem: location.isEmpty ? problem : "\(location): \(problem)")
            } catch {
                throw CLIPTokenizerError.badFile(path: path, problem: "\(error)")
            }
        }

        /// transformers reads merges.txt as `read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]`: the first
        /// line is a "#version" header, and at most 48,894 merges are used (CLIP's 49,408 tokens are 256 byte
        /// symbols, the same with "</w>", 48,894 merges and the two special tokens).
        static func readMerges(at path: String) throws -> [(String, String)] {
            guard let text = String(validating: try read(path), as: UTF8.self) else {
                throw CLIPTokenizerError.badFile(path: path, problem: "is not valid UTF-8")
            }
            return try parseMerges(text, path: path)
        }

        /// The merges of merges.txt's `text`; `path` names it in errors.
        static func parseMerges(_ text: String, path: String) throws -> [(String, String)] {
            var lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false)
                .dropFirst().prefix(48_894)
            while let last = lines.last, last.allSatisfy(\.properties.isWhitespace) { lines.removeLast() }
            guard !lines.isEmpty else { throw CLIPTokenizerError.badFile(path: path, problem: "holds no merges") }
            return try lines.enumerated().map { index, line in
                let symbols = line.split(whereSeparator: \.properties.isWhitespace)
                    .map { String(String.UnicodeScalarView($0)) }
                guard symbols.count == 2 else {
                    let text = String(String.UnicodeScalarView(line))
                    throw CLIPTokenizerError.badFile(
                        path: path, problem: "line \(index + 2) is not two symbols: \"\(text)\"")
                }
                return (symbols[0], symbols[1])
            }
        }

        private static func read(_ path: String) throws -> Data {
            switch readRegularFile(path) {
            case .success(let bytes): return Data(bytes)
            case .failure(let error) where error.missing: throw CLIPTokenizerError.badFile(path: path, problem: "file is missing")
            case .failure(let error): throw CLIPTokenizerError.badFile(path: path, problem: "cannot be read: \(error)")
            }
        }
    }
}
