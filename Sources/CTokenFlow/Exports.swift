// The functions of Include/tokenflow.h. Only the C boundary lives here (argument checks, the context's
// state machine, copies, error codes and messages); the editing is TokenFlow's EditSession.
//
// Nothing may trap into the host: every argument is checked before it reaches Swift code that could
// trap on it (array bounds, integer overflow, preconditions), and every thrown error becomes a code.

import CTokenFlowABI
import Glibc
import TokenFlow

let versionString = "\(TOKENFLOW_VERSION_MAJOR).\(TOKENFLOW_VERSION_MINOR).\(TOKENFLOW_VERSION_PATCH)"

// C strings handed to callers with static lifetime: built once, never freed, never written.
nonisolated(unsafe) private let versionCString = UnsafePointer(strdup(versionString)!)
nonisolated(unsafe) private let defaultNegativePrompt = UnsafePointer(strdup(EditSettings().negativePrompt)!)

@_cdecl("tf_version")
public func tf_version() -> UInt32 {
    UInt32(TOKENFLOW_VERSION_MAJOR << 16 | TOKENFLOW_VERSION_MINOR << 8 | TOKENFLOW_VERSION_PATCH)
}

@_cdecl("tf_version_string")
public func tf_version_string() -> UnsafePointer<CChar> { versionCString }

@_cdecl("tf_strerror")
public func tf_strerror(_ code: Int32) -> UnsafePointer<CChar> {
    switch code {
    case TF_OK: return staticCString("success")
    case TF_EPERM: return staticCString("operation not permitted in this state")
    case TF_ENOENT: return staticCString("model not found")
    case TF_EIO: return staticCString("model files unreadable or corrupt")
    case TF_EAGAIN: return staticCString("no more frames")
    case TF_ENOMEM: return staticCString("out of memory")
    case TF_EINVAL: return staticCString("invalid argument")
    case TF_ENOTSUP: return staticCString("not supported")
    case TF_ECANCELED: return staticCString("cancelled")
    default: return staticCString("unknown error")
    }
}

@_cdecl("tf_default_settings")
public func tf_default_settings(_ settings: UnsafeMutablePointer<TFSettings>?) {
    guard let settings else { return }
    let defaults = EditSettings()
    var s = TFSettings() // all zero: NULL strings and keyframes, zero reserved tail, 0 x 0 working size
    s.struct_size = MemoryLayout<TFSettings>.size
    s.negative_prompt = defaultNegativePrompt
    s.method = Int32(TF_METHOD_TOKENFLOW.rawValue)
    s.steps = Int32(defaults.steps)
    s.inversion_steps = Int32(defaults.inversionSteps)
    s.guidance_scale = defaults.guidanceScale
    s.batch_size = Int32(defaults.batchSize)
    s.pnp_attn_t = defaults.pnpAttentionThreshold
    s.pnp_f_t = defaults.pnpFeatureThreshold
    s.strength = defaults.strength
    s.seed = defaults.seed
    if case .longerSide(let side) = defaults.workingSize { s.working_longer_side = Int32(side) }
    settings.pointee = s
}

@_cdecl("tf_open")
public func tf_open(_ out: UnsafeMutablePointer<OpaquePointer?>?, _ settings: UnsafePointer<TFSettings>?) -> Int32 {
    do {
        guard let out else { throw CError(TF_EINVAL, "tf_open: out is NULL") }
        out.pointee = nil
        guard let settings else { throw CError(TF_EINVAL, "tf_open: settings is NULL (initialise them with tf_default_settings)") }
        let context = try Context(OpenRequest(settings))
        out.pointee = OpaquePointer(Unmanaged.passRetained(context).toOpaque())
        return TF_OK
    } catch {
        let failure = CError(error)
        ThreadError.set(failure.message)
        return failure.code
    }
}

@_cdecl("tf_send_frame")
public func tf_send_frame(_ ctx: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32,
                          _ stride: Int, _ pts: Int64) -> Int32 {
    withContext(ctx, "tf_send_frame") { try $0.send(rgb, width: width, height: height, stride: stride, pts: pts) }
}

@_cdecl("tf_run")
public func tf_run(_ ctx: OpaquePointer?, _ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) -> Int32 {
    withContext(ctx, "tf_run") { try $0.run(callback, opaque) }
}

@_cdecl("tf_get_frame")
public func tf_get_frame(_ ctx: OpaquePointer?, _ frame: UnsafeMutablePointer<TFFrame>?) -> Int32 {
    withContext(ctx, "tf_get_frame") { context in
        guard let frame else { throw CError(TF_EINVAL, "tf_get_frame: frame is NULL") }
        try context.nextFrame(into: frame)
    }
}

@_cdecl("tf_last_error")
public func tf_last_error(_ ctx: OpaquePointer?) -> UnsafePointer<CChar> {
    guard let ctx else { return ThreadError.message }
    return context(ctx).lastError
}

@_cdecl("tf_close")
public func tf_close(_ ctx: UnsafeMutablePointer<OpaquePointer?>?) {
    guard let ctx, let handle = ctx.pointee else { return }
    Unmanaged<Context>.fromOpaque(UnsafeRawPointer(handle)).release()
    ctx.pointee = nil
}

private func context(_ handle: OpaquePointer) -> Context {
    Unmanaged<Context>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

/// Runs `body` on the context behind `handle`; a thrown error becomes the return code and the
/// context's message. A NULL context has nowhere to keep a message, so it goes to the thread's.
private func withContext(_ handle: OpaquePointer?, _ function: String, _ body: (Context) throws -> Void) -> Int32 {
    guard let handle else {
        ThreadError.set("\(function): ctx is NULL")
        return TF_EINVAL
    }
    let context = context(handle)
    do {
        try body(context)
        return TF_OK
    } catch {
        let failure = CError(error)
        context.setError(failure.message)
        return failure.code
    }
}
