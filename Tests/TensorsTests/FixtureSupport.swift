import Foundation
import Tensors
import XCTest

/// Folder of the committed fixtures (Tests/Fixtures), found from this source file's location.
let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// Largest |actual - expected| divided by max(1, largest |expected|): the "relative to output scale" error.
func scaledMaxError(_ actual: Tensor, _ expected: Tensor) -> Float {
    precondition(actual.count == expected.count)
    var worst: Float = 0, scale: Float = 1
    for i in 0..<actual.count {
        worst = max(worst, abs(actual[flat: i] - expected[flat: i]))
        scale = max(scale, abs(expected[flat: i]))
    }
    return actual[flat: 0].isNaN ? .infinity : worst / scale
}

func assertClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float, _ label: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "\(label): shape", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let error = scaledMaxError(actual, expected)
    XCTAssertLessThanOrEqual(error, tolerance, "\(label): scaled max error \(error)", file: file, line: line)
    XCTAssertFalse(actual.scalars.contains { !$0.isFinite }, "\(label): non-finite output", file: file, line: line)
}

/// Runs `body` with the float32 GEMMs on each library this CPU runs (`GEMMLibrary`: oneDNN where the CPU has AVX2
/// and FMA; OpenBLAS always), named for messages; oneDNN again after, where it is the default.
func onEveryGEMMLibrary(_ body: (String) throws -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
    defer { GEMMLibrary.force(oneDNN: GEMMLibrary.oneDNNAvailable) }
    for oneDNN in GEMMLibrary.oneDNNAvailable ? [true, false] : [false] {
        XCTAssertTrue(GEMMLibrary.force(oneDNN: oneDNN), file: file, line: line)
        try body(oneDNN ? "oneDNN" : "OpenBLAS")
    }
}

/// Runs `body` on every kernel path this CPU runs (the C kernels' variants), then goes back to the best one.
func onEveryKernelPath(_ body: (KernelPath) throws -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
    defer { KernelPath.force(KernelPath.best) }
    for path in KernelPath.available {
        XCTAssertTrue(KernelPath.force(path), "\(path) path", file: file, line: line)
        XCTAssertEqual(KernelPath.current, path, file: file, line: line)
        try body(path)
    }
}
