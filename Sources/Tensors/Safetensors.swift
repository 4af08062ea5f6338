#if canImport(Glibc)
import Glibc
#endif

// Safetensors stores everything little-endian; the reader and writer copy raw bytes to and from
// Float/UInt16/UInt64 values, which is only correct on a little-endian host.
#if !_endian(little)
#error("Safetensors.swift assumes a little-endian host")
#endif

/// Element types that may appear in a safetensors header.
///
/// Only F32, F16 and BF16 can be read into (or written from) a `Tensor`; the others are recognised so
/// that a file containing them still opens and the error names the offending tensor and dtype.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case f8E5M2 = "F8_E5M2", f8E4M3 = "F8_E4M3"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .f8E5M2, .f8E4M3, .i8, .u8, .bool: 1
        }
    }

    /// True for the dtypes `SafetensorsFile.tensor(_:)` converts to Float32 and `writeSafetensors` writes.
    public var isFloatConvertible: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let dtype: SafetensorsDType
    public let shape: [Int]

    public init(dtype: SafetensorsDType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
    }
}

public enum SafetensorsError: Error, CustomStringConvertible {
    /// The file could not be opened or mapped (missing, unreadable, not a regular file).
    case cannotOpen(path: String, reason: String)
    /// The file's framing or JSON header is malformed.
    case invalidFile(path: String, reason: String)
    /// One tensor's header entry is malformed.
    case invalidTensor(path: String, tensor: String, reason: String)
    /// The tensor exists but its dtype cannot be converted to Float32.
    case unsupportedDType(path: String, tensor: String, dtype: SafetensorsDType)
    case tensorNotFound(path: String, tensor: String)
    case cannotWrite(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason):
            "cannot open safetensors file '\(path)': \(reason)"
        case let .invalidFile(path, reason):
            "invalid safetensors file '\(path)': \(reason)"
        case let .invalidTensor(path, tensor, reason):
            "invalid safetensors file '\(path)': tensor '\(tensor)': \(reason)"
        case let .unsupportedDType(path, tensor, dtype):
            "safetensors file '\(path)': dtype \(dtype.rawValue) of tensor '\(tensor)' is not supported (F32, F16, BF16 are)"
        case let .tensorNotFound(path, tensor):
            "safetensors file '\(path)' has no tensor named '\(tensor)'"
        case let .cannotWrite(path, reason):
            "cannot write safetensors file '\(path)': \(reason)"
        }
    }
}

/// A memory-mapped safetensors file: an 8-byte little-endian header length N, N bytes of JSON header,
/// then the data section that the header's `data_offsets` index into.
///
/// The header is fully validated when the file is opened, so `tensor(_:)` only fails for unknown names
/// or unsupported dtypes. The mapping is read-only and never changes, so instances can be shared
/// between threads. (As with any mmap, truncating the file while it is open can raise SIGBUS.)
public final class SafetensorsFile: @unchecked Sendable {
    /// Headers larger than this are rejected rather than parsed (real models have headers of < 1 MB).
    public static let maxHeaderLength = 100_000_000

    public let path: String
    /// All tensor names, sorted.
    public let tensorNames: [String]
    /// The optional `__metadata__` string map.
    public let metadata: [String: String]

    private struct Entry {
        let info: SafetensorsTensorInfo
        /// Byte range inside the data section.
        let bytes: Range<Int>
    }

    private let entries: [String: Entry]
    private let mapping: UnsafeRawBufferPointer
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        let mapping = try Self.map(path)
        let header: (entries: [String: Entry], metadata: [String: String], dataStart: Int)
        do {
            header = try Self.parseHeader(mapping, path: path)
        } catch {
            munmap(UnsafeMutableRawPointer(mutating: mapping.baseAddress), mapping.count)
            throw error
        }
        self.mapping = mapping
        entries = header.entries
        metadata = header.metadata
        dataStart = header.dataStart
        tensorNames = header.entries.keys.sorted()
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: mapping.baseAddress), mapping.count)
    }

    public func info(_ name: String) -> SafetensorsTensorInfo? { entries[name]?.info }

    /// The tensor `name` as a new Float32 tensor (F16 and BF16 are converted exactly).
    public func tensor(_ name: String) throws -> Tensor {
        guard let entry = entries[name] else { throw SafetensorsError.tensorNotFound(path: path, tensor: name) }
        return try read(name, entry, rows: 0..<(entry.info.shape.first ?? 1))
    }

    /// Rows `rows` (along the first axis) of the tensor `name`, as a new Float32 tensor of shape
    /// [rows.count, rest of the shape]: one part of a tensor that stores several side by side (a fused
    /// q/k/v projection), read without reading the rest.
    public func tensor(_ name: String, rows: Range<Int>) throws -> Tensor {
        guard let entry = entries[name] else { throw SafetensorsError.tensorNotFound(path: path, tensor: name) }
        try check(rows, of: name, entry)
        return try read(name, entry, rows: rows)
    }

    private func check(_ rows: Range<Int>, of name: String, _ entry: Entry) throws {
        guard let rowCount = entry.info.shape.first, rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw SafetensorsError.invalidTensor(path: path, tensor: name,
                                                 reason: "rows \(rows) are outside its shape \(entry.info.shape)")
        }
    }

    /// Rows `rows` of the tensor `name` in its file's precision (F32 as a tensor, F16/BF16 kept 16-bit):
    /// a layer's weight, at half the memory when the file is half precision.
    public func weights(_ name: String, rows: Range<Int>? = nil) throws -> Weights {
        guard let entry = entries[name] else { throw SafetensorsError.tensorNotFound(path: path, tensor: name) }
        guard entry.info.dtype == .f16 || entry.info.dtype == .bf16 else {
            return Weights(try rows.map { try tensor(name, rows: $0) } ?? tensor(name))
        }
        if let rows { try check(rows, of: name, entry) }
        let (shape, source) = try locate(name, entry, rows: rows ?? 0..<(entry.info.shape.first ?? 1))
        guard let source else { return Weights(try tensor(name)) } // no data: an empty tensor
        let weights = try Weights(shape: shape, bfloat16: entry.info.dtype == .bf16, copying: source)
        releasePages(source, byteCount: weights.count * 2)
        return weights
    }

    private func read(_ name: String, _ entry: Entry, rows: Range<Int>) throws -> Tensor {
        let (shape, source) = try locate(name, entry, rows: rows)
        let result = try Tensor(uninitializedShape: shape)
        let count = result.count, output = result.mutablePointer
        guard count > 0, let source else { return result }
        let dtype = entry.info.dtype
        copyOnEveryWorker(count: count, sourceElementBytes: dtype.byteSize, destinationElementBytes: 4, from: source, into: UnsafeMutableRawPointer(output)) { source, destination, count in
            switch dtype {
            case .f32: destination.copyMemory(from: source, byteCount: 4 * count)
            case .f16: widenHalfPrecision(source, bfloat16: false, into: destination.assumingMemoryBound(to: Float.self), count: count)
            default: widenHalfPrecision(source, bfloat16: true, into: destination.assumingMemoryBound(to: Float.self), count: count)
            }
        }
        releasePages(source, byteCount: count * entry.info.dtype.byteSize)
        return result
    }

    /// The shape of rows `rows` of a float tensor and where its data starts in the mapping (nil: the file
    /// has no data, so the tensor is empty).
    private func locate(_ name: String, _ entry: Entry, rows: Range<Int>) throws -> (shape: [Int], source: UnsafeRawPointer?) {
        let dtype = entry.info.dtype
        guard dtype.isFloatConvertible else {
            throw SafetensorsError.unsupportedDType(path: path, tensor: name, dtype: dtype)
        }
        let shape = entry.info.shape.isEmpty ? [] : [rows.count] + entry.info.shape.dropFirst()
        // Elements per row; the header's byte range was checked against the whole shape when the file opened.
        let rowElements = entry.info.shape.dropFirst().reduce(1, *)
        guard let base = mapping.baseAddress else { return (shape, nil) }
        // Safetensors does not align tensor data: every read is a byte copy or an unaligned load.
        return (shape, base + dataStart + entry.bytes.lowerBound + rows.lowerBound * rowElements * dtype.byteSize)
    }

    /// The I32 tensor `name` as integers (row-major), with its shape (correspondence files).
    public func int32Tensor(_ name: String) throws -> (shape: [Int], values: [Int32]) {
        guard let entry = entries[name] else { throw SafetensorsError.tensorNotFound(path: path, tensor: name) }
        guard entry.info.dtype == .i32 else {
            throw SafetensorsError.invalidTensor(path: path, tensor: name, reason: "dtype \(entry.info.dtype.rawValue), expected I32")
        }
        let count = entry.bytes.count / 4
        guard count > 0, let base = mapping.baseAddress else { return (entry.info.shape, []) }
        let source = base + dataStart + entry.bytes.lowerBound
        return (entry.info.shape, (0..<count).map { source.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self) })
    }

    /// Drops the mapped pages wholly inside a tensor just copied out: a model is read once, and keeping
    /// the file's pages resident beside the Float32 copies doubled the peak memory of loading (6.6 GB
    /// instead of 3.5 for SD 2.1's UNet). The pages are re-read from the file if touched again.
    private func releasePages(_ start: UnsafeRawPointer, byteCount: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (Int(bitPattern: start) + page - 1) / page * page
        let end = (Int(bitPattern: start) + byteCount) / page * page
        guard end > first, let address = UnsafeMutableRawPointer(bitPattern: first) else { return }
        madvise(address, end - first, MADV_DONTNEED)
    }

    // MARK: - Opening and validation

    /// Maps the whole file read-only. Files shorter than the 8-byte length field are rejected here,
    /// which also keeps a 0-byte file away from mmap (it rejects length 0).
    private static func map(_ path: String) throws -> UnsafeRawBufferPointer {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw SafetensorsError.cannotOpen(path: path, reason: errnoDescription()) }
        // The mapping stays valid after the descriptor is closed.
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw SafetensorsError.cannotOpen(path: path, reason: errnoDescription())
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw SafetensorsError.cannotOpen(path: path, reason: "not a regular file")
        }
        let size = Int(status.st_size)
        guard size >= 8 else {
            throw SafetensorsError.invalidFile(
                path: path, reason: "file is \(size) bytes, too short for the 8-byte header length")
        }
        let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let base, base != MAP_FAILED else {
            throw SafetensorsError.cannotOpen(path: path, reason: "mmap failed: \(errnoDescription())")
        }
        return UnsafeRawBufferPointer(start: base, count: size)
    }

    private static func parseHeader(
        _ file: UnsafeRawBufferPointer, path: String
    ) throws -> (entries: [String: Entry], metadata: [String: String], dataStart: Int) {
        // Compared as UInt64 first so a length near 2^64 cannot overflow Int.
        let declaredLength = file.loadUnaligned(as: UInt64.self)
        guard declaredLength <= UInt64(maxHeaderLength) else {
            throw SafetensorsError.invalidFile(
                path: path, reason: "header length \(declaredLength) exceeds the 100 MB limit")
        }
        let headerLength = Int(declaredLength)
        guard headerLength <= file.count - 8 else {
            throw SafetensorsError.invalidFile(
                path: path,
                reason: "header length \(headerLength) is larger than the \(file.count - 8) bytes after the length field")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(UnsafeRawBufferPointer(rebasing: file[8..<(8 + headerLength)]))
        } catch {
            throw SafetensorsError.invalidFile(
                path: path, reason: "header is not valid JSON: \(error.message) at header byte \(error.offset)")
        }
        guard case .object(let members) = json else {
            throw SafetensorsError.invalidFile(path: path, reason: "header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                metadata = try parseMetadata(value, path: path)
            } else {
                entries[name] = try parseEntry(name, value, dataSize: file.count - dataStart, path: path)
            }
        }
        try checkNoOverlap(entries, path: path)
        return (entries, metadata, dataStart)
    }

    private static func parseMetadata(_ value: JSONValue, path: String) throws -> [String: String] {
        guard case .object(let members) = value else {
            throw SafetensorsError.invalidFile(path: path, reason: "\"__metadata__\" is not a JSON object")
        }
        return try members.mapValues { value in
            guard case .string(let string) = value else {
                throw SafetensorsError.invalidFile(
                    path: path, reason: "\"__metadata__\" values must all be strings")
            }
            return string
        }
    }

    private static func parseEntry(_ name: String, _ value: JSONValue, dataSize: Int, path: String) throws -> Entry {
        func invalid(_ reason: String) -> SafetensorsError {
            .invalidTensor(path: path, tensor: name, reason: reason)
        }
        guard case .object(let fields) = value else { throw invalid("entry is not a JSON object") }
        // Lists of non-negative integers that fit in Int (shape entries and data offsets).
        func integers(_ key: String) throws -> [Int] {
            guard let field = fields[key] else { throw invalid("missing \"\(key)\"") }
            guard case .array(let elements) = field else { throw invalid("\"\(key)\" is not an array") }
            return try elements.map { element in
                guard case .number(let literal) = element, let integer = Int(literal), integer >= 0 else {
                    throw invalid("\"\(key)\" entry \(element) is not a non-negative 64-bit integer")
                }
                return integer
            }
        }

        guard let dtypeField = fields["dtype"] else { throw invalid("missing \"dtype\"") }
        guard case .string(let dtypeName) = dtypeField else { throw invalid("\"dtype\" is not a string") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            let known = SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw invalid("unknown dtype \"\(dtypeName)\" (known: \(known))")
        }
        let shape = try integers("shape")
        let offsets = try integers("data_offsets")
        guard offsets.count == 2 else { throw invalid("\"data_offsets\" must be [begin, end], got \(offsets)") }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else { throw invalid("data_offsets [\(begin), \(end)] end before they begin") }
        guard end <= dataSize else {
            throw invalid("data_offsets [\(begin), \(end)] extend past the end of the \(dataSize)-byte data section")
        }
        var byteCount = dtype.byteSize
        for dimension in shape {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw invalid("shape \(shape) is too large") }
            byteCount = product
        }
        guard end - begin == byteCount else {
            throw invalid(
                "data_offsets [\(begin), \(end)] span \(end - begin) bytes but shape \(shape) of \(dtype.rawValue) needs \(byteCount) bytes")
        }
        return Entry(info: SafetensorsTensorInfo(dtype: dtype, shape: shape), bytes: begin..<end)
    }

    /// After sorting by start, ranges are disjoint exactly when each one starts at or after the end of
    /// its predecessor. Empty ranges hold no bytes and cannot overlap anything.
    private static func checkNoOverlap(_ entries: [String: Entry], path: String) throws {
        let ranges = entries.map { (name: $0.key, bytes: $0.value.bytes) }
            .filter { !$0.bytes.isEmpty }
            .sorted { ($0.bytes.lowerBound, $0.name) < ($1.bytes.lowerBound, $1.name) }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.bytes.lowerBound < previous.bytes.upperBound {
            throw SafetensorsError.invalidTensor(
                path: path, tensor: next.name,
                reason: "data bytes [\(next.bytes.lowerBound), \(next.bytes.upperBound)) overlap tensor '\(previous.name)' "
                    + "bytes [\(previous.bytes.lowerBound), \(previous.bytes.upperBound))")
        }
    }
}

// MARK: - Writer

/// Writes `tensors` (in order) as a safetensors file with elements stored as `dtype` (F32, F16 or BF16;
/// F16 and BF16 round to nearest even).
///
/// The header is padded with spaces to a multiple of 8 bytes so the data section starts 8-byte aligned.
/// The file is written to `path + ".tmp-<pid>"` and renamed into place, so `path` never holds a
/// half-written file; the temporary file is removed if anything fails.
/// `integers` are written after them as I32 tensors (name, shape, row-major values).
public func writeSafetensors(
    _ tensors: [(name: String, tensor: Tensor)], to path: String,
    dtype: SafetensorsDType = .f32, metadata: [String: String] = [:],
    integers: [(name: String, shape: [Int], values: [Int32])] = []
) throws {
    func failure(_ reason: String) -> SafetensorsError { .cannotWrite(path: path, reason: reason) }
    guard dtype.isFloatConvertible else {
        throw failure("dtype \(dtype.rawValue) cannot be written (F32, F16, BF16 can)")
    }
    if let wrong = integers.first(where: { Tensor.checkedElementCount($0.shape) != $0.values.count }) {
        throw failure("tensor '\(wrong.name)' has \(wrong.values.count) values for shape \(wrong.shape)")
    }
    var names = Set<String>()
    for name in tensors.map(\.name) + integers.map(\.name) {
        guard name != "__metadata__" else { throw failure("\"__metadata__\" is reserved and cannot name a tensor") }
        guard names.insert(name).inserted else { throw failure("tensor name '\(name)' is used twice") }
    }

    let entries = tensors.map { (name: $0.name, dtype: dtype, shape: $0.tensor.shape, count: $0.tensor.count) }
        + integers.map { (name: $0.name, dtype: SafetensorsDType.i32, shape: $0.shape, count: $0.values.count) }
    let header = safetensorsHeader(entries, metadata: metadata)
    let temporaryPath = path + ".tmp-\(getpid())"
    var fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw failure("cannot create '\(temporaryPath)': \(errnoDescription())") }
    do {
        func write(_ bytes: UnsafeRawBufferPointer) throws {
            guard var next = bytes.baseAddress else { return }
            var remaining = bytes.count
            while remaining > 0 {
                let written = Glibc.write(fd, next, remaining)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { throw failure("write to '\(temporaryPath)' failed: \(errnoDescription())") }
                next += written
                remaining -= written
            }
        }

        try withUnsafeBytes(of: UInt64(header.count)) { try write($0) }
        try header.withUnsafeBytes { try write($0) }
        for (_, tensor) in tensors {
            if dtype == .f32 {
                try write(UnsafeRawBufferPointer(start: tensor.pointer, count: tensor.count * MemoryLayout<Float>.stride))
                continue
            }
            // Converted in chunks so a large tensor never needs a second full-size buffer.
            let chunkSize = 1 << 16
            var converted = [UInt16](repeating: 0, count: min(chunkSize, tensor.count))
            for chunkStart in stride(from: 0, to: tensor.count, by: chunkSize) {
                let chunkCount = min(chunkSize, tensor.count - chunkStart)
                for i in 0..<chunkCount {
                    let value = tensor.pointer[chunkStart + i]
                    converted[i] = dtype == .f16 ? Float16(value).bitPattern : bfloat16FromFloat(value)
                }
                try converted.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<(2 * chunkCount)])) }
            }
        }
        for (_, _, values) in integers { try values.withUnsafeBytes { try write($0) } }
        // Flush before the rename so a crash cannot leave `path` naming a file with missing data.
        guard fsync(fd) == 0 else { throw failure("fsync of '\(temporaryPath)' failed: \(errnoDescription())") }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { throw failure("close of '\(temporaryPath)' failed: \(errnoDescription())") }
        guard rename(temporaryPath, path) == 0 else {
            throw failure("rename from '\(temporaryPath)' failed: \(errnoDescription())")
        }
    } catch {
        if fd >= 0 { close(fd) }
        unlink(temporaryPath)
        throw error
    }
}

/// The JSON header in the writer's layout: tensors back to back in the given order, space-padded.
private func safetensorsHeader(
    _ tensors: [(name: String, dtype: SafetensorsDType, shape: [Int], count: Int)], metadata: [String: String]
) -> [UInt8] {
    var members: [String] = []
    if !metadata.isEmpty {
        let pairs = metadata.sorted { $0.key < $1.key }.map { jsonString($0.key) + ":" + jsonString($0.value) }
        members.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
    }
    var offset = 0
    for (name, dtype, shape, count) in tensors {
        let end = offset + count * dtype.byteSize
        let shape = shape.map(String.init).joined(separator: ",")
        members.append(
            jsonString(name) + ":{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
        offset = end
    }
    var header = Array(("{" + members.joined(separator: ",") + "}").utf8)
    header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))
    return header
}

/// A JSON string literal; non-ASCII characters are written as raw UTF-8, which JSON allows.
private func jsonString(_ string: String) -> String {
    var result = "\""
    for scalar in string.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

// MARK: - BFloat16

/// Rounds to nearest, ties to even: adding 0x7FFF plus the lowest kept bit carries into the kept half
/// exactly when the dropped half is above the midpoint, or at it with an odd kept half. Overflow
/// rounds to infinity as it should; NaN is handled separately so the carry cannot turn it into infinity.
private func bfloat16FromFloat(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
    return UInt16((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
}

private func errnoDescription() -> String { String(cString: strerror(errno)) }

/// The bytes of a small regular file (a config, a vocabulary), or nil with the reason: missing, not a
/// regular file (a FIFO or a device, which would block or never end), larger than `limit`, unreadable.
public func readRegularFile(_ path: String, limit: Int = 256 << 20) -> Result<[UInt8], FileReadError> {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return .failure(FileReadError(missing: errno == ENOENT, reason: errnoDescription())) }
    defer { close(fd) }
    var status = stat()
    guard fstat(fd, &status) == 0 else { return .failure(FileReadError(reason: errnoDescription())) }
    guard status.st_mode & S_IFMT == S_IFREG else { return .failure(FileReadError(reason: "not a regular file")) }
    let size = Int(status.st_size)
    guard size <= limit else { return .failure(FileReadError(reason: "\(size) bytes, more than the \(limit) this file may have")) }
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { return .failure(FileReadError(reason: count == 0 ? "shorter than its size" : errnoDescription())) }
        done += count
    }
    return .success(bytes)
}

public struct FileReadError: Error, CustomStringConvertible {
    public var missing = false
    public let reason: String
    public var description: String { reason }
}

// MARK: - JSON

/// A JSON value from a safetensors header. Numbers keep their literal text: offsets must stay exact
/// integers, which a Double would not guarantee above 2^53.
private enum JSONValue: CustomStringConvertible {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// Short form for error messages.
    var description: String {
        switch self {
        case .object: "{...}"
        case .array: "[...]"
        case .string(let string): jsonString(string)
        case .number(let literal): literal
        case .bool(let value): "\(value)"
        case .null: "null"
        }
    }
}

/// A strict RFC 8259 parser over raw bytes. It rejects duplicate object keys (which would otherwise
/// let one header entry silently shadow another) and nesting deeper than `maxDepth`, so a hostile
/// header cannot exhaust the stack.
private struct JSONParser {
    struct SyntaxError: Error {
        let offset: Int
        let message: String
    }

    static let maxDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var index = 0
    private var depth = 0

    private init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws(SyntaxError) -> JSONValue {
        var parser = JSONParser(bytes)
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error("unexpected data after the JSON value") }
        return value
    }

    private mutating func parseValue() throws(SyntaxError) -> JSONValue {
        skipWhitespace()
        guard index < bytes.count else { throw error("unexpected end of JSON") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw unexpectedByte()
        }
    }

    private mutating func parseObject() throws(SyntaxError) -> JSONValue {
        try enterContainer()
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if !consume("}") {
            repeat {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw error("expected a string key")
                }
                let keyOffset = index
                let key = try parseString()
                skipWhitespace()
                guard consume(":") else { throw error("expected ':' after an object key") }
                let value = try parseValue()
                guard members.updateValue(value, forKey: key) == nil else {
                    throw SyntaxError(offset: keyOffset, message: "duplicate key \(jsonString(key))")
                }
                skipWhitespace()
            } while consume(",")
            guard consume("}") else { throw error("expected ',' or '}' in an object") }
        }
        depth -= 1
        return .object(members)
    }

    private mutating func parseArray() throws(SyntaxError) -> JSONValue {
        try enterContainer()
        var elements: [JSONValue] = []
        skipWhitespace()
        if !consume("]") {
            repeat {
                elements.append(try parseValue())
                skipWhitespace()
            } while consume(",")
            guard consume("]") else { throw error("expected ',' or ']' in an array") }
        }
        depth -= 1
        return .array(elements)
    }

    /// Consumes the opening bracket of an object or array.
    private mutating func enterContainer() throws(SyntaxError) {
        depth += 1
        guard depth <= Self.maxDepth else { throw error("nesting deeper than \(Self.maxDepth) levels") }
        index += 1
    }

    private mutating func parseString() throws(SyntaxError) -> String {
        let start = index
        index += 1  // opening quote
        var utf8: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let string = String(validating: utf8, as: UTF8.self) else {
                    throw SyntaxError(offset: start, message: "string is not valid UTF-8")
                }
                return string
            case UInt8(ascii: "\\"):
                try parseEscape(into: &utf8)
            case 0..<0x20:
                throw SyntaxError(offset: index - 1, message: "unescaped control character in a string")
            default:
                utf8.append(byte)
            }
        }
        throw SyntaxError(offset: start, message: "unterminated string")
    }

    private mutating func parseEscape(into utf8: inout [UInt8]) throws(SyntaxError) {
        guard index < bytes.count else { throw error("unterminated escape sequence") }
        let escape = bytes[index]
        index += 1
        switch escape {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
            var code = try parseHex4()
            // Characters outside the BMP are escaped as a UTF-16 surrogate pair.
            if (0xD800..<0xDC00).contains(code) {
                guard consume("\\"), consume("u") else { throw error("unpaired UTF-16 surrogate") }
                let low = try parseHex4()
                guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired UTF-16 surrogate") }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let scalar = Unicode.Scalar(code) else { throw error("unpaired UTF-16 surrogate") }
            utf8.append(contentsOf: String(scalar).utf8)
        default:
            index -= 1
            throw unexpectedByte()
        }
    }

    private mutating func parseHex4() throws(SyntaxError) -> UInt32 {
        var code: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count, let digit = hexDigitValue(bytes[index]) else {
                throw error("expected four hex digits after \\u")
            }
            code = code << 4 | digit
            index += 1
        }
        return code
    }

    private mutating func parseNumber() throws(SyntaxError) -> JSONValue {
        let start = index
        _ = consume("-")
        if !consume("0") {
            guard skipDigits() > 0 else { throw error("expected a digit") }
        }
        if consume(".") {
            guard skipDigits() > 0 else { throw error("expected a digit after '.'") }
        }
        if consume("e") || consume("E") {
            _ = consume("+") || consume("-")
            guard skipDigits() > 0 else { throw error("expected a digit in the exponent") }
        }
        return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
    }

    private mutating func skipDigits() -> Int {
        let start = index
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return index - start
    }

    private mutating func expectLiteral(_ literal: String) throws(SyntaxError) {
        for expected in literal.utf8 {
            guard index < bytes.count, bytes[index] == expected else { throw unexpectedByte() }
            index += 1
        }
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private mutating func consume(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
        index += 1
        return true
    }

    private func hexDigitValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    private func error(_ message: String) -> SyntaxError { SyntaxError(offset: index, message: message) }

    private func unexpectedByte() -> SyntaxError {
        guard index < bytes.count else { return error("unexpected end of JSON") }
        let byte = bytes[index]
        let shown = (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
        return error("unexpected \(shown)")
    }
}
