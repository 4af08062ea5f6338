// The functions of Include/tokenflow.h. Only the C boundary lives here (argument checks, the context's
// state machine, copies, error codes and messages); the settings are VideoEditing's SettingsTable and the
// editing its EditPipeline.
//
// Nothing may trap into the host: every argument is checked before it reaches Swift code that could
// trap on it (array bounds, integer overflow, preconditions), and every thrown error becomes a code.

import CTokenFlowABI
import Glibc
import VideoEditing

let versionString = "\(TOKENFLOW_VERSION_MAJOR).\(TOKENFLOW_VERSION_MINOR).\(TOKENFLOW_VERSION_PATCH)"

// C strings handed to callers with static lifetime: built once, never freed, never written.
nonisolated(unsafe) private let versionCString = UnsafePointer(strdup(versionString)!)

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
    case TF_EIO: return staticCString("input/output error (model files, or the temporary latent file)")
    case TF_EAGAIN: return staticCString("no more frames")
    case TF_ENOMEM: return staticCString("out of memory")
    case TF_EINVAL: return staticCString("invalid argument")
    case TF_ENOTSUP: return staticCString("not supported")
    case TF_ERANGE: return staticCString("the model produced values that are not finite")
    case TF_ECANCELED: return staticCString("cancelled")
    default: return staticCString("unknown error")
    }
}

@_cdecl("tf_option")
public func tf_option(_ index: Int32) -> UnsafePointer<TFOption>? {
    let options = OptionTable.options
    guard index >= 0, Int(index) < options.count else { return nil }
    return UnsafePointer(options.baseAddress! + Int(index))
}

@_cdecl("tf_settings_new")
public func tf_settings_new(_ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    withoutContext {
        guard let out else { throw CError(TF_EINVAL, "tf_settings_new: out is NULL") }
        out.pointee = OpaquePointer(Unmanaged.passRetained(SettingsHandle()).toOpaque())
    }
}

@_cdecl("tf_settings_set")
public func tf_settings_set(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?) -> Int32 {
    withoutContext {
        guard let handle else { throw CError(TF_EINVAL, "tf_settings_set: settings is NULL") }
        guard let name else { throw CError(TF_EINVAL, "tf_settings_set: name is NULL") }
        guard let key = String(validatingCString: name) else { throw CError(TF_EINVAL, "tf_settings_set: the name is not valid UTF-8") }
        var text = ""
        if let value {
            guard let valid = String(validatingCString: value) else { throw CError(TF_EINVAL, "\(key): the value is not valid UTF-8") }
            text = valid
        }
        try SettingsTable.set(key, text, in: &settings(handle).settings)
    }
}

@_cdecl("tf_settings_get")
public func tf_settings_get(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> UnsafePointer<CChar>? {
    guard let handle, let name, let key = String(validatingCString: name) else { return nil }
    return settings(handle).value(key)
}

@_cdecl("tf_settings_free")
public func tf_settings_free(_ handle: UnsafeMutablePointer<OpaquePointer?>?) {
    guard let handle, let pointer = handle.pointee else { return }
    Unmanaged<SettingsHandle>.fromOpaque(UnsafeRawPointer(pointer)).release()
    handle.pointee = nil
}

private func settings(_ handle: OpaquePointer) -> SettingsHandle {
    Unmanaged<SettingsHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

@_cdecl("tf_open")
public func tf_open(_ out: UnsafeMutablePointer<OpaquePointer?>?, _ handle: OpaquePointer?) -> Int32 {
    withoutContext {
        guard let out else { throw CError(TF_EINVAL, "tf_open: out is NULL") }
        out.pointee = nil
        guard let handle else { throw CError(TF_EINVAL, "tf_open: settings is NULL (create them with tf_settings_new)") }
        let context = try Context(settings(handle).settings)
        out.pointee = OpaquePointer(Unmanaged.passRetained(context).toOpaque())
    }
}

/// Runs `body` for a call that has no context: a thrown error becomes the return code and this thread's
/// message (tf_last_error(NULL)).
private func withoutContext(_ body: () throws -> Void) -> Int32 {
    returnCode(body, reportingTo: ThreadError.set)
}

/// TF_OK, or the code of the error `body` throws, whose message goes to `report`.
private func returnCode(_ body: () throws -> Void, reportingTo report: (String) -> Void) -> Int32 {
    do {
        try body()
        return TF_OK
    } catch {
        let failure = CError(error)
        report(failure.message)
        return failure.code
    }
}

@_cdecl("tf_send_frame")
public func tf_send_frame(_ ctx: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32,
                          _ stride: Int, _ pts: Int64, _ opaque: UnsafeMutableRawPointer?) -> Int32 {
    withContext(ctx, "tf_send_frame") { try $0.send(rgb, width: width, height: height, stride: stride, pts: pts, opaque: opaque) }
}

@_cdecl("tf_end_of_stream")
public func tf_end_of_stream(_ ctx: OpaquePointer?) -> Int32 {
    withContext(ctx, "tf_end_of_stream") { try $0.endOfStream() }
}

@_cdecl("tf_set_opaque_release")
public func tf_set_opaque_release(_ ctx: OpaquePointer?, _ release: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?) -> Int32 {
    withContext(ctx, "tf_set_opaque_release") { $0.setOpaqueRelease(release) }
}

@_cdecl("tf_set_progress_callback")
public func tf_set_progress_callback(_ ctx: OpaquePointer?, _ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) -> Int32 {
    withContext(ctx, "tf_set_progress_callback") { $0.setProgress(callback, opaque) }
}

@_cdecl("tf_set_keyframes")
public func tf_set_keyframes(_ ctx: OpaquePointer?, _ keyframes: UnsafePointer<Int32>?, _ count: Int) -> Int32 {
    // size_t arrives as Int: read its bits as the unsigned count the host passed.
    withContext(ctx, "tf_set_keyframes") { try $0.setKeyframes(keyframes, count: UInt(bitPattern: count)) }
}

@_cdecl("tf_run")
public func tf_run(_ ctx: OpaquePointer?, _ callback: TFProgressCallback?, _ opaque: UnsafeMutableRawPointer?) -> Int32 {
    withContext(ctx, "tf_run") { try $0.run(callback, opaque) }
}

@_cdecl("tf_get_frame")
public func tf_get_frame(_ ctx: OpaquePointer?, _ frame: UnsafeMutablePointer<UnsafePointer<TFFrame>?>?) -> Int32 {
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
    return returnCode({ try body(context) }, reportingTo: context.setError)
}
