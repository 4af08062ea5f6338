import Tensors

/// Seeded random choices: the same seed gives the same mutations on every machine.
struct Random {
    private var generator: SplitMix64

    init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    mutating func next() -> UInt64 { generator.next() }
    /// Uniform in 0..<n (0 when n <= 1).
    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(generator.next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
    /// A position in 0...count (an insertion point).
    mutating func position(in count: Int) -> Int { below(count + 1) }
    /// A non-empty range of at most `limit` elements inside 0..<count (count > 0).
    mutating func range(in count: Int, limit: Int = 64) -> Range<Int> {
        let start = below(count), length = 1 + below(min(limit, count - start))
        return start..<(start + length)
    }
}

/// Mutates inputs: 1 to 4 mutations, structure-aware for the target's format (JSON values, safetensors
/// framing, lines) most of the time and byte-level otherwise, so both well-formed inputs that
/// reach deep checks and malformed ones that test the framing are produced.
struct Mutator {
    let format: InputFormat
    let maxLength: Int
    /// Tokens of the corpus (JSON strings and numbers with their quotes, or words of text): spliced into
    /// inputs so every target gets its own dictionary (dtypes, config keys, block types, special tokens).
    let dictionary: [[UInt8]]

    init(format: InputFormat, corpus: [[UInt8]], maxLength: Int) {
        self.format = format
        self.maxLength = maxLength
        var tokens = Set<[UInt8]>()
        for input in corpus {
            switch format {
            case .json: tokens.formUnion(JSONLayout(input).tokens(of: input))
            case .safetensors, .checkpoint: tokens.formUnion(SafetensorsFraming(input).map { JSONLayout($0.header).tokens(of: $0.header) } ?? [])
            case .lines: tokens.formUnion(input.split(whereSeparator: { $0 == 0x0A || $0 == 0x20 }).map(Array.init))
            }
        }
        dictionary = tokens.sorted { $0.lexicographicallyPrecedes($1) }
    }

    func mutate(_ input: [UInt8], other: [UInt8], random: inout Random) -> [UInt8] {
        var data = input
        // Mostly one mutation, so that most inputs differ from a valid one by a single value.
        let count = random.chance(60) ? 1 : 2 + random.below(3)
        for _ in 0..<count {
            switch format {
            case .json where random.chance(90):
                data = JSONMutations.apply(data, dictionary: dictionary, random: &random)
            case .safetensors where random.chance(90):
                data = SafetensorsMutations.apply(data, dictionary: dictionary, random: &random)
            case .checkpoint where random.chance(90):
                data = SafetensorsMutations.apply(data, dictionary: dictionary, movesData: true, random: &random)
            case .lines where random.chance(60):
                data = LineMutations.apply(data, dictionary: dictionary, random: &random)
            default:
                data = ByteMutations.apply(data, other: other, dictionary: dictionary, random: &random)
            }
        }
        return Array(data.prefix(maxLength))
    }
}

/// Mutations that know nothing of the format.
enum ByteMutations {
    /// Little-endian integers at the edges of signed and unsigned widths, and the safetensors header limit.
    static let interestingIntegers: [UInt64] = [
        0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
        1 << 32, 1 << 62, UInt64(Int64.max), 1 << 63, .max, 100_000_000, 100_000_001,
    ]
    static let interestingBytes: [UInt8] = [0, 0xFF, 0x7F, 0x80, 0x20, 0x0A, 0x22, 0x5C, 0x2C, 0x3A, 0x7B, 0x7D, 0x5B, 0x5D, 0xC3, 0xED]

    static func apply(_ input: [UInt8], other: [UInt8], dictionary: [[UInt8]], random: inout Random) -> [UInt8] {
        var data = input
        if data.isEmpty { return random.chance(50) ? random.pick(dictionary + [[0x7B, 0x7D]]) : [UInt8(truncatingIfNeeded: random.next())] }
        switch random.below(9) {
        case 0:  // flip one bit
            let i = random.below(data.count)
            data[i] ^= 1 << UInt8(random.below(8))
        case 1:  // set one byte
            data[random.below(data.count)] = random.chance(50) ? random.pick(interestingBytes) : UInt8(truncatingIfNeeded: random.next())
        case 2:  // insert random bytes
            let bytes = (0...random.below(8)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            data.insert(contentsOf: bytes, at: random.position(in: data.count))
        case 3:  // delete a range
            data.removeSubrange(random.range(in: data.count))
        case 4:  // duplicate a range somewhere else
            let copied = data[random.range(in: data.count)]
            data.insert(contentsOf: copied, at: random.position(in: data.count))
        case 5:  // overwrite with an interesting integer of 1, 2, 4 or 8 bytes
            let width = random.pick([1, 2, 4, 8]), value = random.pick(interestingIntegers)
            let start = random.below(data.count)
            for k in 0..<min(width, data.count - start) { data[start + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
        case 6:  // insert a dictionary token
            if !dictionary.isEmpty { data.insert(contentsOf: random.pick(dictionary), at: random.position(in: data.count)) }
        case 7:  // splice in part of another corpus input
            if !other.isEmpty { data.insert(contentsOf: other[random.range(in: other.count, limit: 256)], at: random.position(in: data.count)) }
        default:  // truncate
            data.removeSubrange(random.below(data.count)...)
        }
        return data
    }
}

/// Line-level mutations for merges.txt (one merge, two symbols, per line after a "#version" line).
enum LineMutations {
    /// Lines with the wrong number of symbols, whitespace only, Unicode line and space separators, a header.
    static let lines = ["", " ", "\t", "a", "a b c", "#version: 0.2", "a\u{2028}b", "\u{3000}", "a</w> b</w>", "<|endoftext|> a",
                        String(repeating: "x", count: 300) + " y"]

    static func apply(_ input: [UInt8], dictionary: [[UInt8]], random: inout Random) -> [UInt8] {
        var lines = input.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        let i = random.below(lines.count)
        switch random.below(7) {
        case 0: lines.remove(at: i)
        case 1: lines.insert(lines[i], at: random.position(in: lines.count))
        case 2: lines.swapAt(i, random.below(lines.count))
        case 3: lines.insert(Array(random.pick(Self.lines).utf8), at: random.position(in: lines.count))
        case 4:  // replace one symbol of a line with a dictionary token
            var symbols = lines[i].split(separator: 0x20).map(Array.init)
            if !symbols.isEmpty && !dictionary.isEmpty { symbols[random.below(symbols.count)] = random.pick(dictionary) }
            lines[i] = Array(symbols.joined(separator: [0x20]))
        case 5:  // join two lines
            if i + 1 < lines.count { lines[i] += [0x20] + lines.remove(at: i + 1) }
        default:  // many copies of a line (repeated merges keep their last rank)
            lines.insert(contentsOf: repeatElement(lines[i], count: 1 + random.below(200)), at: i)
        }
        return Array(lines.joined(separator: [0x0A]))
    }
}
