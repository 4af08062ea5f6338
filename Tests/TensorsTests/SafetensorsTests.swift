import Foundation
import Tensors
import XCTest

final class SafetensorsTests: XCTestCase {
    private static let root = "/tmp/safetensors-tests-\(getpid())"
    /// A fresh directory per test, so tests can assert exactly which files exist.
    private var directory = ""

    override func setUpWithError() throws {
        directory = Self.root + "/" + name.filter { $0.isLetter || $0.isNumber }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(atPath: directory)
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

    // MARK: - Helpers

    private func path(_ file: String) -> String { directory + "/" + file }

    /// Writes a file from raw parts: an 8-byte little-endian length (the header's own length unless
    /// `declaredLength` overrides it), the header text and the data bytes.
    @discardableResult
    private func rawFile(_ header: String, data: [UInt8] = [], declaredLength: UInt64? = nil,
                         name: String = "raw.safetensors") throws -> String {
        let headerBytes = Array(header.utf8)
        var bytes = withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian, Array.init)
        bytes += headerBytes + data
        let filePath = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: filePath))
        return filePath
    }

    private func bytes(of values: [Float]) -> [UInt8] {
        values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
    }

    /// Asserts that `body` throws a SafetensorsError whose description contains every fragment.
    private func assertError<T>(_ body: @autoclosure () throws -> T, contains fragments: [String],
                                file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected a SafetensorsError containing \(fragments)", file: file, line: line)
        } catch let error as SafetensorsError {
            for fragment in fragments {
                XCTAssertTrue(error.description.contains(fragment),
                              "'\(error.description)' does not contain '\(fragment)'", file: file, line: line)
            }
        } catch {
            XCTFail("expected a SafetensorsError, got \(error)", file: file, line: line)
        }
    }

    /// Opening a header with one tensor entry `entry` (JSON object text) must fail mentioning `fragments`.
    private func assertEntryRejected(_ entry: String, data: [UInt8] = Array(repeating: 0, count: 8),
                                     contains fragments: [String], line: UInt = #line) throws {
        let filePath = try rawFile("{\"weight\":\(entry)}", data: data)
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "weight"] + fragments, line: line)
    }

    private func roundTrip(_ values: [Float], shape: [Int], dtype: SafetensorsDType) throws -> Tensor {
        let filePath = path("roundtrip.safetensors")
        try writeSafetensors([("x", Tensor(shape: shape, values: values))], to: filePath, dtype: dtype)
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.info("x"), SafetensorsTensorInfo(dtype: dtype, shape: shape))
        let tensor = try file.tensor("x")
        XCTAssertEqual(tensor.shape, shape)
        return tensor
    }

    /// The data section of a file written by `writeSafetensors`, as little-endian UInt16 values.
    private func storedHalfWords(_ filePath: String) throws -> [UInt16] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: filePath)))
        let headerLength = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        let data = bytes[(8 + headerLength)...]
        return stride(from: data.startIndex, to: data.endIndex, by: 2).map { UInt16(data[$0]) | UInt16(data[$0 + 1]) << 8 }
    }

    // MARK: - Round trips

    func testF32RoundTripIsExact() throws {
        let values: [Float] = [0, -0.0, 1, -2.5, 3.1415927, 0x1p-140, -3.4028235e38, .infinity, 1e-7, 123456.79]
        let tensor = try roundTrip(values, shape: [2, 5], dtype: .f32)
        XCTAssertEqual(tensor.scalars.map(\.bitPattern), values.map(\.bitPattern))
    }

    func testWritesViewsAndMultipleTensorsInOrder() throws {
        let base = try Tensor(shape: [3, 2], values: [1, 2, 3, 4, 5, 6])
        let filePath = path("views.safetensors")
        try writeSafetensors([("b_row", base.row(1)), ("a_rest", base.slice(1..<3)), ("c", base)], to: filePath)
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.tensorNames, ["a_rest", "b_row", "c"])
        XCTAssertEqual(try file.tensor("b_row").scalars, [3, 4])
        XCTAssertEqual(try file.tensor("a_rest").scalars, [3, 4, 5, 6])
        XCTAssertEqual(try file.tensor("a_rest").shape, [2, 2])
        XCTAssertEqual(try file.tensor("c").scalars, [1, 2, 3, 4, 5, 6])
        XCTAssertNil(file.info("missing"))
    }

    func testF16RoundTripOfRepresentableValues() throws {
        // 2^-24 is the smallest F16 subnormal, 2^-14 the smallest normal, 65504 the largest finite.
        let values: [Float] = [0, 1, -2.5, 819.0 / 8192, 1.0009765625, 0x1p-24, 0x1p-14, 65504, -65504, .infinity]
        let tensor = try roundTrip(values, shape: [values.count], dtype: .f16)
        XCTAssertEqual(tensor.scalars, values)
    }

    func testF16RoundsToNearestEven() throws {
        // F16 spacing just above 1 is 2^-10 = 0.0009765625.
        let values: [Float] = [
            1 + 0x1p-11,             // halfway between 1 and 1+2^-10: ties to even 1
            1 + 3 * 0x1p-11,         // halfway between 1+2^-10 and 1+2^-9: ties to even 1+2^-9
            1 + 0x1p-11 + 0x1p-20,   // just above halfway: up
            1.0009765625 - 0x1p-20,  // just below 1+2^-10: up to it
            65519,                   // below the overflow threshold 65520: largest finite
            65520,                   // overflow threshold: infinity
        ]
        let tensor = try roundTrip(values, shape: [values.count], dtype: .f16)
        XCTAssertEqual(tensor.scalars, [1, 1 + 0x1p-9, 1.0009765625, 1.0009765625, 65504, .infinity])
    }

    func testBF16RoundTripOfRepresentableValues() throws {
        let values: [Float] = [0, 1, -2.5, 0.5, 1 + 0x1p-7, 0x1.FEp127, 0x1p-133  /* largest finite and smallest subnormal BF16 */, -.infinity]
        let tensor = try roundTrip(values, shape: [2, 4], dtype: .bf16)
        XCTAssertEqual(tensor.scalars, values)
    }

    func testBF16RoundsToNearestEven() throws {
        // BF16 spacing just above 1 is 2^-7.
        let values: [Float] = [
            1 + 0x1p-8,               // halfway between 1 and 1+2^-7: ties to even 1
            1 + 3 * 0x1p-8,           // halfway between 1+2^-7 and 1+2^-6: ties to even 1+2^-6
            1 + 0x1p-8 + 0x1p-20,     // just above halfway: up
            -(1 + 0x1p-8),            // the sign does not change the tie rule
            .greatestFiniteMagnitude, // above the largest BF16's halfway point: infinity
            .nan,
            Float(bitPattern: 0x7F80_0001),  // NaN payload only in the dropped half: must stay NaN
            Float(bitPattern: 0x7FFF_FFFF),  // the rounding carry must not wrap into the sign bit
        ]
        let filePath = path("bf16.safetensors")
        try writeSafetensors([("x", Tensor(shape: [values.count], values: values))], to: filePath, dtype: .bf16)
        XCTAssertEqual(try storedHalfWords(filePath), [0x3F80, 0x3F82, 0x3F81, 0xBF80, 0x7F80, 0x7FC0, 0x7FC0, 0x7FFF])
        let scalars = try SafetensorsFile(path: filePath).tensor("x").scalars
        XCTAssertEqual(Array(scalars.prefix(5)), [1, 1 + 0x1p-6, 1 + 0x1p-7, -1, .infinity])
        XCTAssertTrue(scalars[5...].allSatisfy(\.isNaN))
    }

    /// Every one of the 65,536 F16 and BF16 bit patterns, at odd file offsets, widened by the C kernels on
    /// every path this CPU runs: F16 against Swift's own Float16 conversion (NaN as NaN), BF16 bit for bit
    /// against the upper half of a Float32. `weights` keeps the 16-bit values and widens them the same way.
    func testEveryHalfPrecisionValueWidensExactlyOnEveryKernelPath() throws {
        let patterns = (0...UInt16.max).map { $0 }
        let halfBytes = patterns.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
        let count = patterns.count
        var header = """
            {"h":{"dtype":"F16","shape":[256,256],"data_offsets":[1,\(1 + 2 * count)]},\
            "b":{"dtype":"BF16","shape":[\(count)],"data_offsets":[\(1 + 2 * count),\(1 + 4 * count)]}}
            """
        if (8 + header.utf8.count + 1) % 2 == 0 { header += " " }
        let filePath = try rawFile(header, data: [0xEE] + halfBytes + halfBytes)
        let file = try SafetensorsFile(path: filePath)
        defer { KernelPath.force(KernelPath.best) }
        for path in KernelPath.available {
            XCTAssertTrue(KernelPath.force(path))
            let weights = try file.weights("h"), bfloat16 = try file.weights("b")
            XCTAssertEqual(weights.precision, .f16)
            XCTAssertEqual(bfloat16.precision, .bf16)
            let halves = try file.tensor("h").scalars, widenedWeights = try weights.float32().scalars
            for (i, bits) in patterns.enumerated() {
                let expected = Float(Float16(bitPattern: bits))
                if expected.isNaN {
                    XCTAssertTrue(halves[i].isNaN && widenedWeights[i].isNaN, "F16 \(bits) on \(path)")
                } else {
                    XCTAssertEqual(halves[i].bitPattern, expected.bitPattern, "F16 \(bits) on \(path)")
                    XCTAssertEqual(widenedWeights[i].bitPattern, expected.bitPattern, "F16 \(bits) weights on \(path)")
                }
            }
            let expectedBFloat16 = patterns.map { UInt32($0) << 16 }
            XCTAssertEqual(try file.tensor("b").scalars.map(\.bitPattern), expectedBFloat16, "BF16 on \(path)")
            XCTAssertEqual(try bfloat16.float32().scalars.map(\.bitPattern), expectedBFloat16, "BF16 weights on \(path)")
        }
    }

    /// Weights stay in the file's precision; rows of a fused tensor and a new shape see the same values.
    func testWeightsKeepTheFilePrecision() throws {
        let values: [Float] = (0..<24).map { Float($0) * 0.25 - 2 }
        for dtype in [SafetensorsDType.f32, .f16, .bf16] {
            let filePath = path("weights-\(dtype.rawValue).safetensors")
            try writeSafetensors([("w", Tensor(shape: [6, 4], values: values))], to: filePath, dtype: dtype)
            let file = try SafetensorsFile(path: filePath)
            let weights = try file.weights("w")
            XCTAssertEqual(weights.precision, dtype)
            XCTAssertEqual(weights.shape, [6, 4])
            XCTAssertEqual(try weights.float32().scalars, values, "\(dtype.rawValue)")
            let rows = try file.weights("w", rows: 2..<4)
            XCTAssertEqual(rows.shape, [2, 4])
            XCTAssertEqual(try rows.withFloat32 { $0.scalars }, Array(values[8..<16]), "\(dtype.rawValue) rows")
            XCTAssertEqual(try rows.reshaped([2, 2, 2]).float32().shape, [2, 2, 2])
            assertError(try file.weights("w", rows: 5..<7), contains: [filePath, "rows 5..<7 are outside its shape [6, 4]"])
        }
    }

    func testMetadataAndUnusualNamesRoundTrip() throws {
        let metadata = ["format": "pt", "note": "quote \" backslash \\ newline \n tab \t bell \u{7} é 🎬", "": "empty key"]
        let name = "unet.\"odd\"\\name/é🎬"
        let filePath = path("metadata.safetensors")
        try writeSafetensors([(name, Tensor(shape: [1], values: [7]))], to: filePath, metadata: metadata)
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.metadata, metadata)
        XCTAssertEqual(file.tensorNames, [name])
        XCTAssertEqual(try file.tensor(name).scalars, [7])
    }

    func testNoMetadataGivesEmptyMap() throws {
        let filePath = path("plain.safetensors")
        try writeSafetensors([("x", Tensor(shape: [1], values: [1]))], to: filePath)
        XCTAssertEqual(try SafetensorsFile(path: filePath).metadata, [:])
    }

    func testHeaderIsPaddedToMultipleOf8() throws {
        for nameLength in 1...8 {
            let filePath = path("padded\(nameLength).safetensors")
            let name = String(repeating: "n", count: nameLength)
            try writeSafetensors([(name, Tensor(shape: [1], values: [1]))], to: filePath, dtype: .f16)
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: filePath)))
            let headerLength = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
            XCTAssertEqual(headerLength % 8, 0)
            XCTAssertEqual(bytes.count, 8 + headerLength + 2)
            let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
            XCTAssertTrue(header.trimmingCharacters(in: [" "]).hasSuffix("}"), header)
        }
    }

    func testZeroElementTensor() throws {
        let filePath = path("empty-tensor.safetensors")
        try writeSafetensors([("empty", Tensor(zeros: [0, 3])), ("after", Tensor(shape: [2], values: [4, 5]))],
                             to: filePath, dtype: .bf16)
        let file = try SafetensorsFile(path: filePath)
        let empty = try file.tensor("empty")
        XCTAssertEqual(empty.shape, [0, 3])
        XCTAssertEqual(empty.count, 0)
        XCTAssertEqual(try file.tensor("after").scalars, [4, 5])
    }

    func testZeroElementTensorsMayShareAnOffset() throws {
        let filePath = try rawFile("""
            {"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},
             "b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
             "c":{"dtype":"F16","shape":[2,0],"data_offsets":[4,4]}}
            """, data: bytes(of: [9]))
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(try file.tensor("b").scalars, [9])
        XCTAssertEqual(try file.tensor("c").shape, [2, 0])
    }

    func testScalarTensor() throws {
        let tensor = try roundTrip([42], shape: [], dtype: .f32)
        XCTAssertEqual(tensor.rank, 0)
        XCTAssertEqual(tensor.scalars, [42])
        XCTAssertEqual(try roundTrip([-0.5], shape: [], dtype: .f16).scalars, [-0.5])
    }

    func testUnalignedDataOffsets() throws {
        // An unused byte opens the data section, and the header is sized so that every tensor starts
        // at an odd file offset (the mapping is page aligned, so also at an odd address).
        let f16Bytes: [UInt8] = [0x00, 0x42]  // 3.0
        let bf16Bytes: [UInt8] = [0x00, 0xBF]  // -0.5
        var header = """
            {"a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},\
            "b":{"dtype":"F16","shape":[1],"data_offsets":[9,11]},\
            "c":{"dtype":"BF16","shape":[1,1],"data_offsets":[11,13]}}
            """
        if (8 + header.utf8.count + 1) % 2 == 0 { header += " " }
        let filePath = try rawFile(header, data: [0xEE] + bytes(of: [1.5, -2]) + f16Bytes + bf16Bytes)
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(try file.tensor("a").scalars, [1.5, -2])
        XCTAssertEqual(try file.tensor("b").scalars, [3])
        XCTAssertEqual(try file.tensor("c").scalars, [-0.5])
    }

    func testAcceptsWhitespaceEscapesAndUnknownFields() throws {
        let filePath = try rawFile("""
             \t{ "\\u0077eight\\ud83c\\udfac" : { "shape" : [ 2 ] , "dtype" : "F32",
                "data_offsets" : [ 0 , 8 ], "extra": [true, false, null, -1.5e3, {"k": "v"}] } }\n \r\n
            """, data: bytes(of: [1, 2]))
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.tensorNames, ["weight🎬"])
        XCTAssertEqual(try file.tensor("weight🎬").scalars, [1, 2])
    }

    // MARK: - Writer failures

    func testWriterRejectsBadArgumentsWithoutCreatingFiles() throws {
        let filePath = path("bad.safetensors")
        let one = try Tensor(shape: [1], values: [1])
        assertError(try writeSafetensors([("x", one), ("x", one)], to: filePath), contains: [filePath, "'x'", "twice"])
        assertError(try writeSafetensors([("__metadata__", one)], to: filePath), contains: [filePath, "__metadata__"])
        assertError(try writeSafetensors([("x", one)], to: filePath, dtype: .i32), contains: [filePath, "I32"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [])
    }

    func testWriterFailureLeavesNoTemporaryFile() throws {
        // Renaming a file over a non-empty directory fails after all the data has been written.
        let target = path("occupied")
        try FileManager.default.createDirectory(atPath: target + "/child", withIntermediateDirectories: true)
        assertError(try writeSafetensors([("x", Tensor(shape: [1], values: [1]))], to: target),
                    contains: [target, "rename"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["occupied"])
    }

    func testWriterFailsIntoMissingDirectory() throws {
        let filePath = path("missing-dir/out.safetensors")
        assertError(try writeSafetensors([("x", Tensor(shape: [1], values: [1]))], to: filePath),
                    contains: [filePath, "No such file"])
    }

    func testWriterReplacesExistingFile() throws {
        let filePath = path("replace.safetensors")
        try writeSafetensors([("old", Tensor(shape: [4], values: [1, 2, 3, 4]))], to: filePath)
        let oldFile = try SafetensorsFile(path: filePath)
        try writeSafetensors([("new", Tensor(shape: [1], values: [5]))], to: filePath)
        // The rename leaves the open mapping of the old file intact.
        XCTAssertEqual(try oldFile.tensor("old").scalars, [1, 2, 3, 4])
        XCTAssertEqual(try SafetensorsFile(path: filePath).tensorNames, ["new"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["replace.safetensors"])
    }

    // MARK: - Malformed files

    func testNonexistentPath() {
        let filePath = path("does-not-exist.safetensors")
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "No such file"])
    }

    func testDirectoryPath() {
        assertError(try SafetensorsFile(path: directory), contains: [directory, "not a regular file"])
    }

    func testEmptyFile() throws {
        let filePath = path("empty.safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: filePath, contents: Data()))
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "0 bytes", "8-byte header length"])
    }

    func testFileShorterThan8Bytes() throws {
        let filePath = path("short.safetensors")
        try Data([2, 0, 0, 0, 0]).write(to: URL(fileURLWithPath: filePath))
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "5 bytes"])
    }

    func testHeaderLengthLargerThanFile() throws {
        let filePath = try rawFile("{}", declaredLength: 3)
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "header length 3", "2 bytes"])
    }

    func testHeaderLengthOver100MB() throws {
        let filePath = try rawFile("{}", declaredLength: 100_000_001)
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "100000001", "100 MB"])
    }

    func testHeaderLengthOverflowingInt() throws {
        for length in [UInt64.max, UInt64(Int.max) + 1, UInt64(Int.max)] {
            let filePath = try rawFile("{}", declaredLength: length)
            assertError(try SafetensorsFile(path: filePath), contains: [filePath, "\(length)", "100 MB"])
        }
    }

    func testInvalidJSON() throws {
        let cases: [(header: String, expected: String)] = [
            ("", "unexpected end"),
            ("{", "expected a string key"),
            ("{\"a\":}", "unexpected '}'"),
            ("{\"a\":1,}", "expected a string key"),
            ("{\"a\" 1}", "expected ':'"),
            ("{\"a\":[1 2]}", "expected ',' or ']'"),
            ("{\"a\":1} x", "unexpected data after"),
            ("{'a':1}", "expected a string key"),
            ("{\"a\":01}", "expected ',' or '}'"),
            ("{\"a\":1.}", "after '.'"),
            ("{\"a\":-}", "expected a digit"),
            ("{\"a\":tru}", "unexpected '}'"),
            ("{\"a\":\"x\\q\"}", "unexpected 'q'"),
            ("{\"a\":\"\\ud83c\"}", "surrogate"),
            ("{\"a\":\"\\udc00\"}", "surrogate"),
            ("{\"a\":\"\\u12\"}", "hex digits"),
            ("{\"a\":\"tab\there\"}", "control character"),
            ("{\"a\":\"open}", "unterminated string"),
            ("{\"a\":1,\"a\":2}", "duplicate key \"a\""),
            (String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000), "nesting deeper"),
        ]
        for (header, expected) in cases {
            let filePath = try rawFile(header)
            assertError(try SafetensorsFile(path: filePath), contains: [filePath, "not valid JSON", expected])
        }
    }

    func testInvalidUTF8InHeader() throws {
        let filePath = path("utf8.safetensors")
        let header: [UInt8] = Array("{\"a".utf8) + [0xFF, 0xFE] + Array("\":1}".utf8)
        try Data(withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init) + header)
            .write(to: URL(fileURLWithPath: filePath))
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "not valid UTF-8"])
        // Outside strings only ASCII is valid JSON.
        let bare: [UInt8] = [0xC3, 0xA9]
        try Data(withUnsafeBytes(of: UInt64(bare.count).littleEndian, Array.init) + bare)
            .write(to: URL(fileURLWithPath: filePath))
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "byte 0xc3"])
    }

    func testJSONNotAnObject() throws {
        for header in ["[1,2]", "\"text\"", "42", "null"] {
            let filePath = try rawFile(header)
            assertError(try SafetensorsFile(path: filePath), contains: [filePath, "not a JSON object"])
        }
    }

    func testEntryNotAnObject() throws {
        try assertEntryRejected("[1]", contains: ["entry is not a JSON object"])
    }

    func testEntryMissingDType() throws {
        try assertEntryRejected("{\"shape\":[2],\"data_offsets\":[0,8]}", contains: ["missing \"dtype\""])
    }

    func testEntryMissingShape() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"data_offsets\":[0,8]}", contains: ["missing \"shape\""])
    }

    func testEntryMissingDataOffsets() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2]}", contains: ["missing \"data_offsets\""])
    }

    func testWrongFieldTypes() throws {
        try assertEntryRejected("{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}", contains: ["\"dtype\" is not a string"])
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}", contains: ["\"shape\" is not an array"])
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}", contains: ["[begin, end]"])
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}",
                                contains: ["\"shape\" entry \"2\"", "non-negative"])
    }

    func testUnknownDType() throws {
        try assertEntryRejected("{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}",
                                contains: ["unknown dtype \"F12\"", "BF16"])
    }

    func testUnsupportedDTypeOpensButCannotBeConverted() throws {
        let filePath = try rawFile("""
            {"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},
             "mask":{"dtype":"BOOL","shape":[2],"data_offsets":[8,10]}}
            """, data: Array(repeating: 1, count: 10))
        let file = try SafetensorsFile(path: filePath)
        XCTAssertEqual(file.info("ids"), SafetensorsTensorInfo(dtype: .i64, shape: [1]))
        XCTAssertEqual(file.info("mask")?.dtype, .bool)
        assertError(try file.tensor("ids"), contains: [filePath, "dtype I64 of tensor 'ids' is not supported", "F32, F16, BF16"])
        assertError(try file.tensor("mask"), contains: [filePath, "BOOL", "'mask'"])
    }

    func testNegativeShapeEntry() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}",
                                contains: ["\"shape\" entry -1", "non-negative"])
    }

    func testNonIntegerNumbers() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}", contains: ["\"shape\" entry 2.0"])
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8e0]}", contains: ["\"data_offsets\" entry 8e0"])
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551624]}",
                                contains: ["18446744073709551624", "64-bit"])
    }

    func testShapeWhoseByteCountOverflows() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}",
                                contains: ["too large"])
    }

    func testSizeMismatchBetweenShapeAndOffsets() throws {
        try assertEntryRejected("{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,6]}",
                                contains: ["span 6 bytes", "[2, 2] of F16 needs 8 bytes"])
    }

    func testOffsetsOutOfRange() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}",
                                contains: ["[4, 12]", "past the end of the 8-byte data section"])
    }

    func testOffsetsEndBeforeBegin() throws {
        try assertEntryRejected("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}", contains: ["end before they begin"])
    }

    func testOverlappingTensors() throws {
        let filePath = try rawFile("""
            {"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
             "second":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},
             "third":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}
            """, data: Array(repeating: 0, count: 12))
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "'first'", "'second'", "overlap"])
    }

    func testContainedRangeOverlaps() throws {
        let filePath = try rawFile("""
            {"outer":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},
             "inner":{"dtype":"F16","shape":[1],"data_offsets":[6,8]}}
            """, data: Array(repeating: 0, count: 16))
        assertError(try SafetensorsFile(path: filePath), contains: [filePath, "'outer'", "'inner'", "overlap"])
    }

    func testMetadataMustBeStrings() throws {
        for metadata in ["{\"n\":1}", "[\"a\"]"] {
            let filePath = try rawFile("{\"__metadata__\":\(metadata)}")
            assertError(try SafetensorsFile(path: filePath), contains: [filePath, "__metadata__"])
        }
    }

    func testUnknownTensorName() throws {
        let filePath = path("known.safetensors")
        try writeSafetensors([("known", Tensor(shape: [1], values: [1]))], to: filePath)
        let file = try SafetensorsFile(path: filePath)
        assertError(try file.tensor("unknown.weight"), contains: [filePath, "no tensor named 'unknown.weight'"])
    }
}
