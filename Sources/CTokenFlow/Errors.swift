import CTokenFlowABI
import Diffusion
import Glibc
import Tensors
import VideoEditing

/// A failure at the C boundary: the code a tf_* function returns and the message tf_last_error gives.
struct CError: Error {
    let code: Int32
    let message: String

    init(_ code: Int32, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Maps any error the engine throws to the header's codes; the message is the error's own description.
    init(_ error: any Error) {
        if let error = error as? CError {
            self = error
            return
        }
        self.init(Self.code(for: error), "\(error)")
    }

    private static func code(for error: any Error) -> Int32 {
        switch error {
        case let error as EditError:
            switch error {
            case .cancelled: return TF_ECANCELED
            case .invalidSettings, .invalidClip: return TF_EINVAL
            case .outOfMemory: return TF_ENOMEM
            case .storage: return TF_EIO
            case .notFinite: return TF_ERANGE
            }
        case is TensorAllocationError:
            return TF_ENOMEM
        case is ModelLocation.MissingModel:
            return TF_ENOENT
        case let error as ModelError:
            switch error {
            case .missingFile: return TF_ENOENT
            case .unsupportedConfig, .unsupportedCheckpoint: return TF_ENOTSUP
            case .invalidInput: return TF_EINVAL
            case .invalidConfig, .missingTensor, .wrongShape, .unexpectedTensors: return TF_EIO
            }
        case let error as SafetensorsError:
            switch error {
            case .cannotOpen(let path, _): return exists(path) ? TF_EIO : TF_ENOENT
            case .unsupportedDType: return TF_ENOTSUP
            case .invalidFile, .invalidTensor, .tensorNotFound, .cannotWrite: return TF_EIO
            }
        case let error as CLIPTokenizerError:
            // The tokenizer reports missing and malformed files alike; the file system tells them apart.
            if case .badFile(let path, _) = error, !exists(path) { return TF_ENOENT }
            return TF_EIO
        default:
            return TF_EIO
        }
    }
}

func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// A C string for the tf_last_error of errors that have no context (tf_open failures, NULL contexts).
/// It is kept per thread, so concurrent tf_open calls on different threads do not see each other's errors.
enum ThreadError {
    /// Each thread's message, a malloc'd C string freed when it is replaced or when the thread exits.
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static func set(_ message: String) {
        free(pthread_getspecific(key))
        pthread_setspecific(key, strdup(message))
    }

    static var message: UnsafePointer<CChar> {
        pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) } ?? emptyCString
    }
}

/// A C string with static lifetime. Swift emits string literals NUL-terminated in read-only data.
func staticCString(_ string: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(string.utf8Start).assumingMemoryBound(to: CChar.self)
}

nonisolated(unsafe) let emptyCString = staticCString("")
