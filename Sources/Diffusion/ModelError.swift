/// Errors loading or running a Stable Diffusion model (folder or single file). Each names the file or tensor.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case missingFile(String)
    case invalidConfig(file: String, reason: String)
    case unsupportedConfig(file: String, key: String, value: String, supported: String)
    case missingTensor(file: String, tensor: String, expectedShape: [Int])
    case wrongShape(file: String, tensor: String, expected: [Int], found: [Int])
    case unexpectedTensors(file: String, names: [String])
    case invalidInput(String)
    /// A file that is not a model this engine runs (a LoRA, an SDXL or inpainting checkpoint, a pickle, a
    /// partial checkpoint): `what` says what it is, `supported` what would work.
    case unsupportedCheckpoint(file: String, what: String, supported: String)

    public var description: String {
        switch self {
        case .missingFile(let path):
            return "missing model file: \(path)"
        case .invalidConfig(let file, let reason):
            return "invalid config \(file): \(reason)"
        case .unsupportedConfig(let file, let key, let value, let supported):
            return "unsupported value in \(file): \(key) = \(value) (supported: \(supported))"
        case .missingTensor(let file, let tensor, let shape):
            return "\(file): missing tensor '\(tensor)' (expected shape \(shape))"
        case .wrongShape(let file, let tensor, let expected, let found):
            return "\(file): tensor '\(tensor)' has shape \(found), expected \(expected)"
        case .unexpectedTensors(let file, let names):
            let shown = names.prefix(5).joined(separator: ", ")
            return "\(file): \(names.count) unexpected tensor(s) the config does not account for: \(shown)\(names.count > 5 ? ", ..." : "")"
        case .invalidInput(let reason):
            return "invalid input: \(reason)"
        case .unsupportedCheckpoint(let file, let what, let supported):
            return "unsupported model file \(file): \(what); supported: \(supported)"
        }
    }
}
