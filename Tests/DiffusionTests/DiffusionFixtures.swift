import Foundation
import Tensors
import XCTest

/// Tests/Fixtures, found from this source file's location.
let diffusionFixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// The tiny random-weight models written by generate_sd_fixtures.py ("sd2-tiny", "sd15-tiny").
func tinyModelDirectory(_ name: String) -> String { "\(diffusionFixturesDirectory)/models/\(name)" }

/// diffusers' outputs for a tiny model (Tests/Fixtures/expected/<name>.safetensors).
func expectedOutputs(_ name: String) throws -> SafetensorsFile {
    try SafetensorsFile(path: "\(diffusionFixturesDirectory)/expected/\(name).safetensors")
}

/// max |actual - expected| / max(1, max |expected|).
func relativeMaxError(_ actual: Tensor, _ expected: Tensor) -> Float {
    precondition(actual.count == expected.count, "sizes differ: \(actual.shape) vs \(expected.shape)")
    var worst: Float = 0, scale: Float = 1
    for i in 0..<actual.count {
        let difference = abs(actual[flat: i] - expected[flat: i])
        worst = difference.isNaN ? .infinity : max(worst, difference)
        scale = max(scale, abs(expected[flat: i]))
    }
    return worst / scale
}

func assertMatches(_ actual: Tensor, _ expected: Tensor, tolerance: Float, _ label: String,
                   file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "\(label): shape", file: file, line: line)
    guard actual.count == expected.count else { return }
    let error = relativeMaxError(actual, expected)
    XCTAssertLessThanOrEqual(error, tolerance, "\(label): relative max error \(error)", file: file, line: line)
}
