import FoundationEssentials
import Tensors

/// The weights of one model component (unet/, vae/, text_encoder/), read from its safetensors file.
///
/// Layers take their tensors by name with the shape the config implies; a missing tensor or a
/// different shape is an error naming both. `finish()` then rejects tensors nobody took, which
/// catches a config that does not describe the checkpoint (e.g. wrong layers_per_block).
public final class WeightStore {
    public let file: String
    private let safetensors: SafetensorsFile
    private var taken: Set<String> = []
    /// Tensors that may be present without being used (buffers some exporters save).
    private let ignorable: (String) -> Bool

    /// Opens `<directory>/<baseName>.safetensors`, or the `.fp16.safetensors` variant if only that exists.
    public init(directory: String, baseName: String, ignorable: @escaping (String) -> Bool = { _ in false }) throws {
        let candidates = ["\(directory)/\(baseName).safetensors", "\(directory)/\(baseName).fp16.safetensors"]
        guard let path = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            let pickle = "\(directory)/\(baseName).bin"
            if FileManager.default.fileExists(atPath: pickle) {
                throw ModelError.missingFile(candidates[0] + " (only \(baseName).bin, a PyTorch pickle, is there: "
                    + "weights must be safetensors; convert with diffusers' save_pretrained(..., safe_serialization=True))")
            }
            throw ModelError.missingFile(candidates[0] + " (or \(baseName).fp16.safetensors)")
        }
        file = path
        safetensors = try SafetensorsFile(path: path)
        self.ignorable = ignorable
    }

    public func contains(_ name: String) -> Bool { safetensors.info(name) != nil }

    /// The tensor `name`, which must have `shape`.
    public func take(_ name: String, shape: [Int]) throws -> Tensor {
        guard let info = safetensors.info(name) else {
            throw ModelError.missingTensor(file: file, tensor: name, expectedShape: shape)
        }
        guard info.shape == shape else {
            throw ModelError.wrongShape(file: file, tensor: name, expected: shape, found: info.shape)
        }
        taken.insert(name)
        return try safetensors.tensor(name)
    }

    /// Fails if the file holds tensors that no layer took.
    public func finish() throws {
        let unused = safetensors.tensorNames.filter { !taken.contains($0) && !ignorable($0) }
        if !unused.isEmpty { throw ModelError.unexpectedTensors(file: file, names: unused) }
    }
}

/// Reads a component's config file into a config type, with errors naming the file.
func loadConfig<T: Decodable>(_ type: T.Type, directory: String, file: String = "config.json") throws -> T {
    let path = "\(directory)/\(file)"
    let data: Data
    switch readRegularFile(path, limit: 16 << 20) {
    case .success(let bytes): data = Data(bytes)
    case .failure(let error) where error.missing: throw ModelError.missingFile(path)
    case .failure(let error): throw ModelError.invalidConfig(file: path, reason: "cannot be read: \(error)")
    }
    do {
        return try JSONFile.decode(T.self, from: data)
    } catch let error as DecodingError {
        throw ModelError.invalidConfig(file: path, reason: describe(error))
    } catch {
        throw ModelError.invalidConfig(file: path, reason: "\(error)")
    }
}

private func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }
    switch error {
    case .keyNotFound(let key, let context):
        let parent = path(context)
        return "missing key '\(parent.isEmpty ? "" : parent + ".")\(key.stringValue)'"
    case .typeMismatch(_, let context), .valueNotFound(_, let context):
        return "'\(path(context))': \(context.debugDescription)"
    case .dataCorrupted(let context):
        return path(context).isEmpty ? "not valid JSON (\(context.debugDescription))" : "'\(path(context))': \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}
