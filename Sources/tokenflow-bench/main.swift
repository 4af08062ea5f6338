import Foundation
import Diffusion
import Tensors
import VideoEditing

// tokenflow-bench: kernel throughput at Stable Diffusion shapes, side by side with PyTorch.
//   tokenflow-bench kernels [--threads N] [--python PATH] [--only TEXT]   GFLOP/s table (PyTorch column when PATH
//                                                           runs torch; --only: the kernels whose name contains TEXT)
//   tokenflow-bench memory attention|nn                      peak RSS growth of one 4096-token call
//   tokenflow-bench unet DIR [--batch B] [--repeats N] [--latent WxH]
//                                                            one UNet forward, at 64x64 latent unless given
//   tokenflow-bench vae MODEL_DIR [--size WxH] [--repeats N]  VAE encode and decode of one image (DIR/vae)
//   tokenflow-bench edit MODEL_DIR [--repeats N]              the reference-parity clip end to end (16 frames
//                                                            of 64x64, 10 inversion + 10 sampling steps, batch 8)
//   tokenflow-bench seams MODEL_DIR [--frames N] [--window W] [--steps S] [--size WxH]
//                                                            window joins: anchored vs independent windows
//   tokenflow-bench load MODEL                               load time and peak RSS of a whole model (a folder
//                                                            or a single-file checkpoint); run once per process
// kernels, unet and vae take --precision fp32|bf16 (the `precision` setting: the products with weights).
let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String) -> String? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    return arguments[i + 1]
}
/// A WxH option (`--size`, `--latent`) as (width, height); a malformed one ends the run with a message.
func sizeOption(_ name: String, default size: (width: Int, height: Int)) -> (width: Int, height: Int) {
    guard let text = option(name) else { return size }
    let parts = text.split(separator: "x").compactMap { Int($0) }
    guard parts.count == 2 && parts.allSatisfy({ $0 > 0 }) else { print("error: \(name) takes WxH, such as 32x20, not \(text)"); exit(2) }
    return (parts[0], parts[1])
}
let threads = Int(option("--threads") ?? "") ?? Threading.onlineCores
Threading.configure(threads: threads)
guard let precision = ComputePrecision(rawValue: option("--precision") ?? ComputePrecision.float32.rawValue) else {
    print("error: --precision is one of \(ComputePrecision.allCases.map(\.rawValue).joined(separator: ", "))"); exit(2)
}
/// `medianSeconds` in the asked precision.
func timed(repeats: Int, _ body: () throws -> Void) throws -> Double {
    try ComputePrecision.$current.withValue(precision) { try medianSeconds(repeats: repeats, body) }
}

// As the engine does before its first kernel (OpenBLAS's core included); every figure names the machine.
KernelCPU.require()
print(KernelCPU.report)
switch arguments.first {
case "kernels":
    let python = option("--python") ?? ProcessInfo.processInfo.environment["TOKENFLOW_TORCH_PYTHON"] ?? "venv/bin/python"
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/bench_kernels_torch.py").path
    let torch = pytorchKernelFigures(python: python, script: script, threads: threads, precision: precision)
    let peak = fmaPeakGigaflops(threads: threads)
    print("threads=\(threads)  (GFLOP/s, median of 5; PyTorch column from \(torch.isEmpty ? "-- no PyTorch venv found" : python))")
    print(String(format: "float32 FMA peak, %d threads, %@ path: %.1f GFLOP/s", threads, "\(KernelPath.current)", peak))
    print("precision \(precision.rawValue) (products with weights computed in \(precision.computed.rawValue)); PyTorch in the same dtype")
    print("kernel".padding(toLength: 38, withPad: " ", startingAt: 0) + "   swift  of peak  pytorch  swift/pytorch")
    let only = option("--only") // a part of the kernels' names, e.g. "conv"
    for kernel in try kernelCases() where only.map(kernel.name.contains) ?? true {
        let seconds = try timed(repeats: 5, kernel.run)
        let gflops = kernel.flops / seconds / 1e9
        var line = kernel.name.padding(toLength: 38, withPad: " ", startingAt: 0)
            + String(format: " %7.1f  %6.0f%%", gflops, 100 * gflops / peak)
        if let reference = torch[kernel.name] {
            line += String(format: "  %7.1f  %6.2f", reference, gflops / reference)
        }
        print(line)
    }
case "memory":
    let kind = arguments.dropFirst().first ?? "attention"
    let q = try Tensor(shape: [1, 4096, 320], repeating: 0.01), k = try Tensor(shape: [1, 4096, 320], repeating: 0.02)
    let before = peakResidentMegabytes()
    if kind == "nn" {
        _ = try nearestNeighborIndices(queries: q.reshaped([4096, 320]), candidates: k.reshaped([4096, 320]))
    } else {
        _ = try attention(query: q, key: k, value: k, heads: 5)
    }
    let after = peakResidentMegabytes()
    let fullMatrix = kind == "nn" ? 4096.0 * 4096 * 4 / 1e6 : 4096.0 * 4096 * 5 * 4 / 1e6
    print(String(format: "%@: peak RSS %.1f MB before, %.1f MB after (+%.1f MB); a full similarity matrix would be %.0f MB",
                 kind, before, after, after - before, fullMatrix))
case "unet":
    guard arguments.count >= 2 else { print("usage: tokenflow-bench unet MODEL_DIR [--batch B] [--repeats N] [--latent WxH]"); exit(2) }
    let batch = Int(option("--batch") ?? "") ?? 1, repeats = Int(option("--repeats") ?? "") ?? 3
    let loadStart = DispatchTime.now().uptimeNanoseconds
    let unet: UNet
    do { unet = try UNet(directory: arguments[1] + "/unet") } catch { print("error: \(error)"); exit(1) }
    let loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
    // --latent WxH: e.g. 32x20, the latent of the 256x160 benchmark edit (batch 24: its three branches of 8 frames).
    let (width, height) = sizeOption("--latent", default: (unet.config.sampleSize, unet.config.sampleSize))
    let sample = try Tensor(shape: [batch, unet.config.inChannels, height, width], repeating: 0.1)
    // A different prompt per sample, as TokenFlow's three branches have (and PyTorch's side's random ones): samples
    // sharing a prompt would share its cross-attention keys and values.
    let context = try concat((0..<batch).map { try Tensor(shape: [1, 77, unet.config.crossAttentionDim], repeating: 0.05 + 0.01 * Float($0)) }, axis: 0)
    let seconds = try timed(repeats: repeats) { _ = try unet(sample, timesteps: [500], context: context) }
    print(String(format: "swift_unet_forward batch=%d latent=%dx%d seconds=%.3f load_seconds=%.2f peak_rss_mb=%.0f precision=%@",
                 batch, width, height, seconds, loadSeconds, peakResidentMegabytes(), precision.computed.rawValue))
case "vae":
    guard arguments.count >= 2 else { print("usage: tokenflow-bench vae MODEL_DIR [--size WxH] [--repeats N]"); exit(2) }
    do {
        let vae = try AutoencoderKL(directory: arguments[1] + "/vae")
        let size = sizeOption("--size", default: (512, 512))
        let image = try Tensor(shape: [1, 3, size.height, size.width], repeating: 0.1)
        var latents = image
        let repeats = Int(option("--repeats") ?? "") ?? 1
        let encode = try timed(repeats: repeats) { latents = try vae.encodeMean(image) }
        let decode = try timed(repeats: repeats) { _ = try vae.decode(latents) }
        print(String(format: "swift_vae size=%dx%d encode_seconds=%.2f decode_seconds=%.2f precision=%@", size.width, size.height, encode, decode,
                     precision.computed.rawValue))
    } catch { print("error: \(error)"); exit(1) }
case "edit":
    guard arguments.count >= 2 else { print("usage: tokenflow-bench edit MODEL_DIR [--repeats N]"); exit(2) }
    do {
        let model = try StableDiffusionModel(path: arguments[1])
        let frames = try parityClipFrames()
        var settings = EditSettings()
        settings.prompt = "a marble sculpture"
        settings.negativePrompt = "ugly, blurry"
        settings.inversionPrompt = "a colorful video"
        settings.steps = 10
        settings.inversionSteps = 10
        settings.workingSize = .input
        let session = try EditPipeline(model: model, settings: settings)
        var stages: [EditProgress.Stage: Double] = [:]
        var stageStart = DispatchTime.now().uptimeNanoseconds, current: EditProgress.Stage?
        let seconds = try medianSeconds(repeats: Int(option("--repeats") ?? "") ?? 5) {
            stages = [:]; current = nil; stageStart = DispatchTime.now().uptimeNanoseconds
            _ = try! session.run(frames) { report in
                let now = DispatchTime.now().uptimeNanoseconds
                if report.stage != current { current = report.stage; stageStart = now }
                stages[report.stage] = Double(now - stageStart) / 1e9
                return true
            }
        }
        let breakdown = [EditProgress.Stage.encoding, .inversion, .sampling, .decoding]
            .map { String(format: "%@=%.3f", $0.rawValue, stages[$0] ?? 0) }.joined(separator: " ")
        print(String(format: "swift_tokenflow_edit frames=16 size=64x64 seconds=%.3f (last run: %@)", seconds, breakdown))
    } catch { print("error: \(error)"); exit(1) }
case "seams":
    guard arguments.count >= 2 else { print("usage: tokenflow-bench seams MODEL_DIR [--frames N] [--window W] [--steps S] [--size WxH]"); exit(2) }
    do {
        let model = try StableDiffusionModel(path: arguments[1])
        let size = sizeOption("--size", default: (96, 64))
        var settings = EditSettings()
        settings.prompt = "a watercolor painting"
        settings.inversionPrompt = "a panning shot"
        settings.steps = Int(option("--steps") ?? "") ?? 4
        settings.inversionSteps = settings.steps
        settings.workingSize = .input
        let report = try measureSeams(model: model, settings: settings, frames: Int(option("--frames") ?? "") ?? 32,
                                      window: Int(option("--window") ?? "") ?? 8, width: size.width, height: size.height)
        print(report)
    } catch { print("error: \(error)"); exit(1) }
case "load":
    guard arguments.count >= 2 else { print("usage: tokenflow-bench load MODEL"); exit(2) }
    do {
        let start = DispatchTime.now().uptimeNanoseconds
        let model = try StableDiffusionModel(path: arguments[1])
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        // The peak includes the process itself (~20 MB) besides the Float32 weights.
        print(String(format: "swift_model_load %@ seconds=%.2f peak_rss_mb=%.0f (%@)", arguments[1], seconds,
                     peakResidentMegabytes(), model.checkpoint == nil ? "diffusers folder" : "single file"))
    } catch { print("error: \(error)"); exit(1) }
default:
    print("usage: tokenflow-bench kernels [--threads N] [--python PATH] [--only TEXT] | memory attention|nn")
    exit(2)
}
