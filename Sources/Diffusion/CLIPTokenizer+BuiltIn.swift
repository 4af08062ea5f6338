// The CLIP tokenizer built into the library, for models that come without a tokenizer folder (single-file
// checkpoints): the merge list is embedded (CLIPMerges.swift) and the vocabulary is derived from it as CLIP
// builds it, so the two cannot disagree.

extension CLIPTokenizer {
    /// The token Stable Diffusion pads prompts with (transformers' `pad_token` of its tokenizer folders).
    public enum Padding: String, Sendable {
        /// SD 1.x (openai/clip-vit-large-patch14's tokenizer): id 49407.
        case endOfText = "<|endoftext|>"
        /// SD 2.x: "!", id 0; as a special token, a "!" in a prompt is also encoded as id 0.
        case exclamationMark = "!"
    }

    /// CLIP's tokenizer with the built-in vocabulary, Stable Diffusion's 77 tokens and `padding`: equal to
    /// the tokenizer folders SD 1.x (`.endOfText`) and SD 2.x (`.exclamationMark`) ship.
    public static func builtIn(padding: Padding) throws -> CLIPTokenizer {
        let tables = try builtInTables.get()
        return try CLIPTokenizer(vocabulary: tables.vocabulary, merges: tables.merges, pad: padding.rawValue, maxLength: 77)
    }

    /// The built-in vocabulary (token -> id) and merges, as a tokenizer folder's vocab.json and merges.txt hold them.
    public static func builtInVocabulary() throws -> (vocabulary: [String: Int32], merges: [(String, String)]) {
        try builtInTables.get()
    }

    /// The text of the built-in merges.txt.
    public static var builtInMergesFile: String { clipMergesText + "\n" }

    /// Parsed once per process (49,408 tokens).
    private static let builtInTables = Result { () throws -> (vocabulary: [String: Int32], merges: [(String, String)]) in
        let merges = try TokenizerFiles.parseMerges(clipMergesText, path: "the built-in merges.txt")
        // CLIP's order: the 256 byte symbols (printable bytes stand for themselves, the others follow from
        // U+0100, so ordering by code point is byte-symbol order), the same with the end-of-word marker, one
        // token per merge, then the two special tokens.
        let symbols = byteSymbols.sorted { ($0.unicodeScalars.first?.value ?? 0) < ($1.unicodeScalars.first?.value ?? 0) }
        let tokens = symbols + symbols.map { $0 + "</w>" } + merges.map { $0.0 + $0.1 } + ["<|startoftext|>", "<|endoftext|>"]
        guard tokens.count == 49_408 else {
            throw CLIPTokenizerError.invalidTable("the built-in merges give \(tokens.count) tokens, CLIP has 49408")
        }
        // As vocab.json was written from a Python dict comprehension, a repeated token keeps its last id.
        let vocabulary = Dictionary(tokens.enumerated().map { ($1, Int32($0)) }, uniquingKeysWith: { _, last in last })
        return (vocabulary, merges)
    }
}
