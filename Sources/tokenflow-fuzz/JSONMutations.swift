/// Where the values, keys, object members and array elements of a JSON text are, found by a tolerant
/// scan: it stops at the first syntax error and keeps what it found, since mutated inputs are often
/// broken. Mutations edit these byte ranges, so most results stay JSON with one value changed.
struct JSONLayout {
    enum Kind { case string, number, literal, object, array }

    /// Values (not keys) and their kinds, in document order.
    private(set) var values: [(range: Range<Int>, kind: Kind)] = []
    /// Object keys, quotes included.
    private(set) var keys: [Range<Int>] = []
    /// `"key": value` of each object member, and an array element; with `removal`, the range to delete to
    /// remove it including one adjacent comma.
    private(set) var members: [(range: Range<Int>, removal: Range<Int>)] = []
    private(set) var elements: [(range: Range<Int>, removal: Range<Int>)] = []

    private let bytes: [UInt8]
    private var index = 0
    /// Deeper documents are scanned only to this depth (the scan recurses).
    private static let maxDepth = 200

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        _ = value(depth: 0)
    }

    /// String and number tokens, for the mutation dictionary.
    func tokens(of input: [UInt8]) -> [[UInt8]] {
        let scalars = values.filter { $0.kind == .string || $0.kind == .number }.map(\.range)
        return (scalars + keys).map { Array(input[$0]) }
    }

    // MARK: Scanning

    private mutating func value(depth: Int) -> Bool {
        skipWhitespace()
        guard index < bytes.count, depth < Self.maxDepth else { return false }
        let start = index
        let kind: Kind
        switch bytes[index] {
        case UInt8(ascii: "{"):
            guard container(close: UInt8(ascii: "}"), depth: depth, isObject: true) else { return false }
            kind = .object
        case UInt8(ascii: "["):
            guard container(close: UInt8(ascii: "]"), depth: depth, isObject: false) else { return false }
            kind = .array
        case UInt8(ascii: "\""):
            guard string() else { return false }
            kind = .string
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            while index < bytes.count, "+-.eE0123456789".utf8.contains(bytes[index]) { index += 1 }
            kind = .number
        default:
            while index < bytes.count, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[index]) { index += 1 }
            guard index > start else { return false }
            kind = .literal
        }
        values.append((start..<index, kind))
        return true
    }

    /// An object or array; records members or elements with their removal ranges.
    private mutating func container(close: UInt8, depth: Int, isObject: Bool) -> Bool {
        index += 1
        skipWhitespace()
        if consume(close) { return true }
        var previousComma: Int?
        while true {
            skipWhitespace()
            let start = index
            if isObject {
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), string() else { return false }
                keys.append(start..<index)
                skipWhitespace()
                guard consume(UInt8(ascii: ":")) else { return false }
            }
            guard value(depth: depth + 1) else { return false }
            let end = index
            skipWhitespace()
            let comma = index < bytes.count && bytes[index] == UInt8(ascii: ",") ? index : nil
            // Removing an item takes the comma after it, or for the last item the comma before it.
            let removal = comma.map { start..<($0 + 1) } ?? previousComma.map { $0..<end } ?? start..<end
            if isObject { members.append((start..<end, removal)) } else { elements.append((start..<end, removal)) }
            guard let comma else { return consume(close) }
            index = comma + 1
            previousComma = comma
        }
    }

    private mutating func string() -> Bool {
        index += 1
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\""): index += 1; return true
            case UInt8(ascii: "\\"): index += 2
            default: index += 1
            }
        }
        return false
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }
}

/// Value-level JSON mutations: numbers at the edges of every range a parser might check, strings and keys
/// from the dictionary, values of another type, members dropped or duplicated (duplicate keys), arrays of
/// the wrong length, deep nesting.
enum JSONMutations {
    static let numbers = [
        "-1", "0", "1", "2", "3", "4", "7", "8", "63", "64", "77", "255", "256", "1000", "4096", "4097", "16384", "16385",
        "65536", "100000", "1048576", "2147483647", "2147483648", "4294967296", "4611686018427387904",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616",
        "99999999999999999999999999", "1e308", "-1e308", "1e309", "1e-320", "3.5e38", "0.5", "-0", "-0.0", "1.0", "1e2",
        "NaN", "Infinity", "-Infinity", "0.00001", "2.5",
    ]
    static let strings = [
        "\"\"", "\" \"", "\"\\u0000\"", "\"\\ud800\"", "\"\\uD83D\\uDE00\"", "\"<|endoftext|>\"", "\"<|startoftext|>\"",
        "\"!\"", "\"a\"", "\"\\\\\"", "\"" + String(repeating: "x", count: 1000) + "\"",
    ]
    static let others = ["null", "true", "false", "[]", "{}", "[0]", "[[]]", "{\"a\":0}", "[-1,0,1]", "\"\"", "0", "-1"]

    static func apply(_ input: [UInt8], dictionary: [[UInt8]], random: inout Random) -> [UInt8] {
        let layout = JSONLayout(input)
        var data = input
        func replace(_ range: Range<Int>, _ text: [UInt8]) { data.replaceSubrange(range, with: text) }
        func token(_ text: String) -> [UInt8] { Array(text.utf8) }
        let numbers = layout.values.filter { $0.kind == .number }.map(\.range)
        let strings = layout.values.filter { $0.kind == .string }.map(\.range)
        let stringTokens = dictionary.filter { $0.first == UInt8(ascii: "\"") }
        let anyValue = layout.values.isEmpty ? nil : random.pick(layout.values).range

        switch random.below(12) {
        case 0:  // a number at an edge
            if let range = numbers.isEmpty ? anyValue : random.pick(numbers) { replace(range, token(random.pick(Self.numbers))) }
        case 1:  // a string from the dictionary or an awkward one
            if let range = strings.isEmpty ? anyValue : random.pick(strings) {
                replace(range, random.chance(60) && !stringTokens.isEmpty ? random.pick(stringTokens) : token(random.pick(Self.strings)))
            }
        case 2:  // a key renamed (often to a key that exists: a duplicate)
            if !layout.keys.isEmpty && !stringTokens.isEmpty { replace(random.pick(layout.keys), random.pick(stringTokens)) }
        case 3:  // a value of another type
            if let range = anyValue { replace(range, token(random.pick(others))) }
        case 4:  // a member dropped
            if !layout.members.isEmpty { data.removeSubrange(random.pick(layout.members).removal) }
        case 5:  // a member duplicated
            if !layout.members.isEmpty {
                let member = random.pick(layout.members).range
                data.insert(contentsOf: Array(input[member]) + [UInt8(ascii: ",")], at: member.lowerBound)
            }
        case 6:  // an array element dropped
            if !layout.elements.isEmpty { data.removeSubrange(random.pick(layout.elements).removal) }
        case 7:  // an array element repeated (longer lists)
            if !layout.elements.isEmpty {
                let element = Array(input[random.pick(layout.elements).range]) + [UInt8(ascii: ",")]
                let copies = random.pick([1, 1, 2, 15, 100])
                data.insert(contentsOf: Array(repeatElement(element, count: copies).joined()), at: random.pick(layout.elements).range.lowerBound)
            }
        case 8:  // a value wrapped in a list or an object
            if let range = anyValue {
                let inner = Array(input[range])
                replace(range, random.chance(50) ? token("[") + inner + token("]") : token("{\"a\":") + inner + token("}"))
            }
        case 9:  // deep nesting around every depth limit (64: safetensors, JSONFile; 512: JSONDecoder), closed
                 // or left open at the end of the input
            if let range = anyValue {
                let depth = random.pick([63, 64, 65, 512, 513, 20_000])
                let open = Array(repeating: UInt8(ascii: "["), count: depth)
                if random.chance(50) {
                    replace(range, open + Array(repeating: UInt8(ascii: "]"), count: depth))
                } else {
                    data.replaceSubrange(range.lowerBound..., with: open)
                }
            }
        case 10:  // one value replaced by another of the document
            if let range = anyValue, let source = layout.values.isEmpty ? nil : random.pick(layout.values).range {
                replace(range, Array(input[source]))
            }
        default:  // a list of edge numbers, of a length lists are checked against
            if let range = anyValue {
                let items = (0..<random.pick([0, 1, 2, 3, 4, 5, 17])).map { _ in random.pick(Self.numbers) }
                replace(range, token("[" + items.joined(separator: ",") + "]"))
            }
        }
        return data
    }
}

/// A safetensors file split at its framing: the 8-byte little-endian header length, the JSON header and the
/// data section (nil when the length field does not fit the file).
struct SafetensorsFraming {
    var header: [UInt8]
    var data: [UInt8]

    init?(_ bytes: [UInt8]) {
        guard bytes.count >= 8 else { return nil }
        let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard length <= UInt64(bytes.count - 8) else { return nil }
        header = Array(bytes[8..<(8 + Int(length))])
        data = Array(bytes[(8 + Int(length))...])
    }

    func bytes(length: UInt64? = nil) -> [UInt8] {
        let length = length ?? UInt64(header.count)
        return (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) } + header + data
    }
}

/// Safetensors mutations: the JSON header's values (dtypes, shapes, offsets, metadata) with the length
/// field kept consistent, so mutations get past the framing; or the framing itself (length field, data size).
/// With `movesData` (the target supplies the data section), also shape changes that keep the offsets right.
enum SafetensorsMutations {
    static func apply(_ input: [UInt8], dictionary: [[UInt8]], movesData: Bool = false, random: inout Random) -> [UInt8] {
        guard var file = SafetensorsFraming(input) else {
            return ByteMutations.apply(input, other: [], dictionary: dictionary, random: &random)
        }
        // Without movesData the draws are those of before, so the other targets' runs are unchanged.
        switch random.below(movesData ? 13 : 10) {
        case 10...:
            file.header = ShapeMutations.apply(file.header, random: &random)
        case 0:  // a length field that disagrees with the header
            let lengths: [UInt64] = [0, 1, UInt64(file.header.count) &- 1, UInt64(file.header.count) + 1,
                                     UInt64(file.header.count + file.data.count), 100_000_001, 1 << 32, 1 << 63, .max]
            return file.bytes(length: random.pick(lengths))
        case 1:  // a data section cut short or grown
            if random.chance(50), !file.data.isEmpty { file.data.removeSubrange(random.below(file.data.count)...) } else {
                file.data += repeatElement(0x41, count: 1 + random.below(64))
            }
        case 2:  // header padding (the writer pads with spaces to a multiple of 8)
            file.header += repeatElement(UInt8(ascii: random.pick([" ", "\n", "\0"])), count: 1 + random.below(8))
        default:
            file.header = JSONMutations.apply(file.header, dictionary: dictionary, random: &random)
        }
        return file.bytes()
    }
}

/// A tensor's shape changed and its data_offsets moved past every other tensor's data to span exactly the new
/// shape. A shape edited as plain JSON almost never agrees with its offsets, so the safetensors parser
/// refuses it and the checks of what shapes mean (the single-file recognition) are never reached; with the
/// data section supplied by the target (a hole), the moved data always exists.
///
/// Entries are found as the flat objects around each "data_offsets" key, by a scan as tolerant as
/// `JSONLayout`'s: an entry it cannot read is left alone.
enum ShapeMutations {
    /// New dimensions: zero, small counts, the widths and channel counts of Stable Diffusion, and too large.
    static let dimensions = [0, 1, 2, 3, 4, 8, 9, 16, 32, 63, 64, 65, 77, 320, 768, 1024, 1 << 20, 1 << 31, Int.max]
    /// Bytes per element; the other dtypes have one.
    static let elementSizes: [String: Int] = ["F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4,
                                              "F16": 2, "BF16": 2, "I16": 2, "U16": 2]

    struct Entry {
        var shape: Range<Int>
        var dimensions: [Int]
        var offsets: Range<Int>
        var end: Int
        var elementSize: Int
    }

    static func apply(_ header: [UInt8], random: inout Random) -> [UInt8] {
        let entries = Self.entries(header)
        guard !entries.isEmpty else { return header }
        let dataEnd = entries.map(\.end).max() ?? 0
        let entry = random.pick(entries)
        var shape = entry.dimensions
        let other = random.pick(entries).dimensions
        // A dimension from the list or from another tensor (so widths agree or disagree by one step).
        let value = random.chance(50) || other.isEmpty ? random.pick(dimensions) : random.pick(other)
        switch random.below(6) {
        case 0: shape.insert(value, at: random.position(in: shape.count))
        case 1: if !shape.isEmpty { shape.remove(at: random.below(shape.count)) }
        default: if shape.isEmpty { shape = [value] } else { shape[random.below(shape.count)] = value }
        }
        var replacements = [(entry.shape, "[" + shape.map(String.init).joined(separator: ",") + "]")]
        // Too large for 64 bits: the offsets stay, and the parser refuses the shape.
        let size = shape.reduce(Optional(entry.elementSize)) { size, dimension in
            size.flatMap { let (product, overflow) = $0.multipliedReportingOverflow(by: dimension); return overflow ? nil : product }
        }
        if let size {
            let (end, overflow) = dataEnd.addingReportingOverflow(size)
            if !overflow { replacements.append((entry.offsets, "[\(dataEnd),\(end)]")) }
        }
        var data = header
        for (range, text) in replacements.sorted(by: { $0.0.lowerBound > $1.0.lowerBound }) {
            data.replaceSubrange(range, with: Array(text.utf8))
        }
        return data
    }

    static func entries(_ header: [UInt8]) -> [Entry] {
        let key = Array("\"data_offsets\"".utf8)
        var entries: [Entry] = [], index = 0
        while let found = search(key, in: header, from: index) {
            index = found + key.count
            guard let open = header[..<found].lastIndex(of: UInt8(ascii: "{")),
                  let close = header[index...].firstIndex(of: UInt8(ascii: "}")),
                  let offsets = list(after: found, in: header, before: close), offsets.values.count == 2,
                  let shapeKey = search(Array("\"shape\"".utf8), in: header, from: open, before: close),
                  let shape = list(after: shapeKey, in: header, before: close) else { continue }
            var elementSize = 1
            if let dtypeKey = search(Array("\"dtype\"".utf8), in: header, from: open, before: close),
               let start = header[(dtypeKey + 7)..<close].firstIndex(of: UInt8(ascii: "\"")),
               let end = header[(start + 1)..<close].firstIndex(of: UInt8(ascii: "\"")) {
                elementSize = elementSizes[String(decoding: header[(start + 1)..<end], as: UTF8.self)] ?? 1
            }
            entries.append(Entry(shape: shape.range, dimensions: shape.values, offsets: offsets.range,
                                 end: offsets.values[1], elementSize: elementSize))
        }
        return entries
    }

    /// The value of the key at `key` ("[...]" and its values), if it is a list of integers.
    private static func list(after key: Int, in bytes: [UInt8], before limit: Int) -> (range: Range<Int>, values: [Int])? {
        let whitespace: [UInt8] = [0x20, 0x09, 0x0A, 0x0D]
        guard let quote = bytes[(key + 1)..<limit].firstIndex(of: UInt8(ascii: "\"")),
              let open = bytes[(quote + 1)..<limit].firstIndex(where: { !whitespace.contains($0) && $0 != UInt8(ascii: ":") }),
              bytes[open] == UInt8(ascii: "["), bytes[(quote + 1)..<open].filter({ $0 == UInt8(ascii: ":") }).count == 1,
              let close = bytes[open..<limit].firstIndex(of: UInt8(ascii: "]")) else { return nil }
        let items = bytes[(open + 1)..<close].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            .map { String(decoding: $0.filter { !whitespace.contains($0) }, as: UTF8.self) }
        if items == [""] { return (open..<(close + 1), []) }  // []
        let values = items.compactMap { Int($0) }
        guard values.count == items.count else { return nil }
        return (open..<(close + 1), values)
    }

    private static func search(_ needle: [UInt8], in bytes: [UInt8], from start: Int, before limit: Int? = nil) -> Int? {
        let end = (limit ?? bytes.count) - needle.count
        guard start <= end else { return nil }
        for index in start...end where bytes[index] == needle[0] && bytes[index..<(index + needle.count)].elementsEqual(needle) {
            return index
        }
        return nil
    }
}
