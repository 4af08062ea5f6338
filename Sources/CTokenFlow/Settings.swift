import CTokenFlowABI
import Glibc
import TokenFlow

/// What tf_open needs from a caller's TFSettings, read and checked without trusting anything in it.
struct OpenRequest {
    var settings = EditSettings()
    var modelPath = ""
    /// Explicit keyframe schedule as sent (steps x batches, flat); empty: drawn with the seed.
    /// Shaped at tf_run, once the frame count (hence the number of batches) is known.
    var keyframes: [Int32] = []
    var threads = 0

    init(_ pointer: UnsafePointer<TFSettings>) throws {
        // Read struct_size alone first: a caller's struct may be smaller than ours.
        let size = UnsafeRawPointer(pointer).load(as: Int.self)
        let known = MemoryLayout<TFSettings>.size
        if size < known {
            throw CError(TF_EINVAL, "settings.struct_size is \(size), this library needs \(known): initialise TFSettings with tf_default_settings")
        }
        if size > known {
            throw CError(TF_ENOTSUP, "settings.struct_size is \(size), larger than this library's \(known): the caller was built against a newer tokenflow.h (library version \(versionString))")
        }
        let s = pointer.pointee
        let reservedIsZero = withUnsafeBytes(of: s.reserved) { $0.allSatisfy { $0 == 0 } }
        if !reservedIsZero { throw CError(TF_EINVAL, "settings.reserved must be zero") }

        settings.prompt = try string(s.prompt, "prompt")
        settings.negativePrompt = try string(s.negative_prompt, "negative_prompt")
        settings.inversionPrompt = try string(s.inversion_prompt, "inversion_prompt")
        switch s.method {
        case Int32(TF_METHOD_TOKENFLOW.rawValue): settings.method = .tokenflow
        case Int32(TF_METHOD_SDEDIT.rawValue): settings.method = .sdedit
        case Int32(TF_METHOD_RECONSTRUCT.rawValue): settings.method = .reconstruct
        default: throw CError(TF_EINVAL, "settings.method \(s.method) is not a TFMethod (0, 1 or 2)")
        }
        settings.steps = Int(s.steps)
        settings.inversionSteps = Int(s.inversion_steps)
        settings.guidanceScale = s.guidance_scale
        settings.batchSize = Int(s.batch_size)
        settings.pnpAttentionThreshold = s.pnp_attn_t
        settings.pnpFeatureThreshold = s.pnp_f_t
        settings.strength = s.strength
        settings.seed = s.seed
        // The engine checks multiples of 8 and minimums; the maximum keeps sizes far from overflow.
        if s.working_width > Context.maxSide || s.working_height > Context.maxSide || s.working_longer_side > Context.maxSide {
            throw CError(TF_EINVAL, "working size \(s.working_width) x \(s.working_height) (longer side \(s.working_longer_side)) is larger than \(Context.maxSide)")
        }
        switch (s.working_width, s.working_height) {
        case (0, 0): settings.workingSize = .longerSide(Int(s.working_longer_side))
        case (-1, -1): settings.workingSize = .input
        case let (w, h) where w > 0 && h > 0: settings.workingSize = .exact(width: Int(w), height: Int(h))
        case let (w, h):
            throw CError(TF_EINVAL, "working size \(w) x \(h): use 0 x 0 (longer side working_longer_side), -1 x -1 (input size) or a size in multiples of 8")
        }
        // The engine checks the ranges of the values above; do it here so tf_open reports them.
        do { try settings.validate() } catch { throw CError(error) }

        if s.threads < 0 { throw CError(TF_EINVAL, "settings.threads must be >= 0 (0 = one per core), got \(s.threads)") }
        threads = Int(s.threads)

        // A bound far above any real schedule (1000 steps x thousands of batches) that keeps sizes sane.
        if s.keyframes_count < 0 || s.keyframes_count > 1 << 28 {
            throw CError(TF_EINVAL, "settings.keyframes_count \(UInt(bitPattern: s.keyframes_count)) is too large")
        }
        if s.keyframes_count > 0 {
            guard let keyframes = s.keyframes else {
                throw CError(TF_EINVAL, "settings.keyframes is NULL but keyframes_count is \(s.keyframes_count)")
            }
            self.keyframes = Array(UnsafeBufferPointer(start: keyframes, count: s.keyframes_count))
        }

        modelPath = try resolveModelPath(s.model_path)
    }
}

/// The string at `pointer` (NULL = ""), which must be UTF-8.
private func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws -> String {
    guard let pointer else { return "" }
    guard let value = String(validatingCString: pointer) else { throw CError(TF_EINVAL, "settings.\(name) is not valid UTF-8") }
    return value
}

/// settings.model_path, else $TOKENFLOW_MODEL, else the model installed beside the library
/// (<prefix>/share/tokenflow/model for <prefix>/lib/libtokenflow.so). Empty strings count as unset.
private func resolveModelPath(_ given: UnsafePointer<CChar>?) throws -> String {
    if let given, given.pointee != 0 {
        guard let path = String(validatingCString: given) else { throw CError(TF_EINVAL, "settings.model_path is not valid UTF-8") }
        return path
    }
    if let environment = getenv("TOKENFLOW_MODEL"), environment.pointee != 0 {
        return String(cString: environment)
    }
    let installed = installedModelPath()
    if let installed, exists(installed) { return installed }
    throw CError(TF_ENOENT, "no model given: set TFSettings.model_path or the TOKENFLOW_MODEL environment variable to a diffusers Stable Diffusion folder, or install one at \(installed ?? "<prefix>/share/tokenflow/model")")
}

/// <prefix>/share/tokenflow/model, where <prefix> is the parent of the directory holding this library.
private func installedModelPath() -> String? {
    guard let file = tokenflow_library_file().map({ String(cString: $0) }) else { return nil }
    let directory = file.lastIndex(of: "/").map { String(file[..<$0]) } ?? "."
    // realpath resolves the directory as the kernel would before "..", and gives a clean path for messages.
    guard let resolved = realpath(directory.isEmpty ? "/" : directory, nil) else { return nil }
    defer { free(resolved) }
    var prefix = String(cString: resolved)
    if let slash = prefix.lastIndex(of: "/") { prefix = String(prefix[..<slash]) }
    return prefix + "/share/tokenflow/model"
}
