import CKernels
import Foundation
import Tensors
import VideoEditing

/// One kernel at one Stable Diffusion shape; `run` is timed, `flops` is its floating-point work.
struct KernelCase {
    let name: String
    let flops: Double
    let run: () throws -> Void
}

func kernelCases() throws -> [KernelCase] {
    func random(_ shape: [Int]) throws -> Tensor {
        var state: UInt32 = 12345
        return try Tensor(shape: shape, values: (0..<Tensor.elementCount(shape)).map { _ in
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(state >> 8) / Float(1 << 24) - 0.5
        })
    }
    var cases: [KernelCase] = []
    // GEMM: attention projections and the GEGLU feed-forward at 64x64 and 32x32 latents.
    for (tokens, inFeatures, outFeatures) in [(4096, 320, 320), (4096, 320, 2560), (1024, 640, 5120), (256, 1280, 10240)] {
        let x = try random([tokens, inFeatures]), w = try random([outFeatures, inFeatures])
        cases.append(KernelCase(name: "gemm \(tokens)x\(inFeatures)->\(outFeatures)",
                                flops: 2.0 * Double(tokens * inFeatures * outFeatures)) { _ = try linear(x, weight: w) })
    }
    // 3x3 convolutions of the UNet resnets at each level, as the engine runs them, and by each algorithm for
    // comparison. GFLOP/s count a direct convolution's work for all.
    for (channels, size) in [(320, 64), (640, 32), (1280, 16), (1280, 8)] {
        let x = try random([1, channels, size, size]), w = try random([channels, channels, 3, 3])
        for (algorithm, suffix) in [(ConvolutionAlgorithm.automatic, ""), (.im2col, " im2col"), (.winograd2x2, " winograd 2x2"),
                                   (.winograd4x4, " winograd 4x4")] {
            cases.append(KernelCase(name: "conv3x3 \(channels)ch \(size)x\(size)\(suffix)",
                                    flops: 2.0 * Double(channels * channels * 9 * size * size)) {
                _ = try conv2d(x, weight: w, bias: nil, stride: 1, padding: .uniform(1), algorithm: algorithm)
            })
        }
    }
    // Self-attention at 64x64 latent (4096 tokens, 5 heads x 64), TokenFlow's extended attention over 3
    // keyframes' tokens, and cross-attention to 77 tokens.
    for (keys, label) in [(4096, "self"), (3 * 4096, "extended"), (77, "cross")] {
        let q = try random([1, 4096, 320]), k = try random([1, keys, 320]), v = try random([1, keys, 320])
        cases.append(KernelCase(name: "attention \(label) 4096x\(keys) 5 heads",
                                flops: 4.0 * Double(4096 * keys * 320)) { _ = try attention(query: q, key: k, value: v, heads: 5) })
    }
    let a = try random([4096, 320]), b = try random([4096, 320])
    cases.append(KernelCase(name: "nn-argmax 4096x4096 d320", flops: 2.0 * 4096 * 4096 * 320) {
        _ = try nearestNeighborIndices(queries: a, candidates: b)
    })
    return cases
}

/// The float32 FMA peak of `threads` cores on the current kernel path (CKernels' probe on every worker at once).
func fmaPeakGigaflops(threads: Int) -> Double {
    let iterations = 100_000_000
    // A warm-up on every worker, then ~0.25 s each. With the warm-up on the calling thread only and ~0.05 s, 2 threads
    // measured 166-207 GFLOP/s on a 2-core Emerald Rapids VM (1 thread: 170), below its 2-thread GEMMs' 250-287 and
    // two pinned processes' 179 + 169; this way 327-349.
    Threading.parallelFor(threads) { _ in _ = tokenflow_fma_probe(iterations / 5) }
    let start = DispatchTime.now().uptimeNanoseconds
    Threading.parallelFor(threads) { _ in _ = tokenflow_fma_probe(iterations) }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return Double(threads * iterations * tokenflow_fma_probe_flops_per_iteration()) / seconds / 1e9
}

func medianSeconds(repeats: Int, _ body: () throws -> Void) throws -> Double {
    try body() // warm-up: first-touch page faults and OpenBLAS buffer allocation
    var times: [Double] = []
    for _ in 0..<repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return times.sorted()[times.count / 2]
}

/// Runs the PyTorch peer script on the same shapes (its linear and convolution operands in bfloat16 for
/// `bf16`); returns GFLOP/s by case name (empty if unavailable).
func pytorchKernelFigures(python: String, script: String, threads: Int, precision: ComputePrecision) -> [String: Double] {
    guard FileManager.default.isExecutableFile(atPath: python) else { return [:] }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [script, "--threads", "\(threads)", "--precision", precision.rawValue]
    let pipe = Pipe()
    process.standardOutput = pipe
    do { try process.run() } catch { return [:] }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    var figures: [String: Double] = [:]
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        let parts = line.split(separator: "\t")
        if parts.count == 2, let gflops = Double(parts[1]) { figures[String(parts[0])] = gflops }
    }
    return figures
}

func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

/// The clip of the reference-parity fixtures (Tests/Fixtures/expected/tokenflow-frames.safetensors).
func parityClipFrames() throws -> [Frame] {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures/expected/tokenflow-frames.safetensors").path
    let tensor = try SafetensorsFile(path: path).tensor("frames")
    return (0..<tensor.shape[0]).map { f in
        Frame(width: tensor.shape[2], height: tensor.shape[1], pixels: tensor.row(f).scalars.map { UInt8($0) })
    }
}
