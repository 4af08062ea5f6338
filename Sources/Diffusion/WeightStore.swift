import FoundationEssentials
import Tensors

/// The weights of one model component (unet/, vae/, text_encoder/): its safetensors file in a diffusers
/// folder, or its part of a single-file checkpoint, where `LDMLayout` says under which key each tensor is.
///
/// Layers take their tensors by their diffusers name with the shape the config implies; a missing tensor or a
/// different shape is an error naming both. `finish()` then rejects tensors nobody took, which
/// catches a config that does not describe the checkpoint (e.g. wrong layers_per_block).
public final class WeightStore {
    public let file: String
    private let safetensors: SafetensorsFile
    /// For a part of a single-file checkpoint: where each tensor is, and the keys of the part.
    private let checkpoint: (layout: LDMLayout, keys: [String])?
    /// Keys taken so far (the checkpoint's keys for a single file).
    private var taken: Set<String> = []
    /// Tensors that may be present without being used (buffers some exporters save); file keys.
    private let ignorable: (String) -> Bool
    /// With `recording`, every tensor taken, by its diffusers name, in the order taken (for conversion).
    public private(set) var recorded: [(name: String, tensor: Tensor)] = []
    private let recording: Bool

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
        checkpoint = nil
        self.ignorable = ignorable
        recording = false
    }

    /// The part of an open single-file checkpoint that owns the keys starting with `owning` (all of them must
    /// be taken or ignorable), its tensors found through `layout`.
    init(checkpoint file: SafetensorsFile, layout: LDMLayout, owning prefix: String, ignorable: @escaping (String) -> Bool,
         recording: Bool) {
        self.file = file.path
        safetensors = file
        checkpoint = (layout, file.tensorNames.filter { $0.hasPrefix(prefix) })
        self.ignorable = ignorable
        self.recording = recording
    }

    public func contains(_ name: String) -> Bool {
        guard let checkpoint else { return safetensors.info(name) != nil }
        return checkpoint.layout.location(of: name).map { safetensors.info($0.key) != nil } ?? false
    }

    /// The tensor `name`, which must have `shape`, as Float32.
    public func take(_ name: String, shape: [Int]) throws -> Tensor {
        let tensor = try locate(name, shape: shape) { key, rows in
            try rows.map { try safetensors.tensor(key, rows: $0) } ?? safetensors.tensor(key)
        }.reshaped(shape)
        if recording { recorded.append((name, tensor)) }
        return tensor
    }

    /// The weight `name`, which must have `shape`, in the file's precision (F16/BF16 stay 16-bit).
    public func takeWeights(_ name: String, shape: [Int]) throws -> Weights {
        let weights = try locate(name, shape: shape) { key, rows in try safetensors.weights(key, rows: rows) }.reshaped(shape)
        if recording { recorded.append((name, try weights.float32())) }
        return weights
    }

    /// Finds `name` (in a single-file checkpoint: through the layout), checks its shape, marks it taken and
    /// reads it with `read(file key, rows of a fused tensor)`.
    private func locate<T>(_ name: String, shape: [Int], read: (String, Range<Int>?) throws -> T) throws -> T {
        guard let checkpoint else {
            guard let info = safetensors.info(name) else {
                throw ModelError.missingTensor(file: file, tensor: name, expectedShape: shape)
            }
            guard info.shape == shape else {
                throw ModelError.wrongShape(file: file, tensor: name, expected: shape, found: info.shape)
            }
            taken.insert(name)
            return try read(name, nil)
        }
        // A single-file checkpoint: errors name the checkpoint's key and the engine's name.
        guard let location = checkpoint.layout.location(of: name) else {
            throw ModelError.missingTensor(file: file, tensor: name, expectedShape: shape)
        }
        let described = "\(location.key) (\(name))"
        guard let info = safetensors.info(location.key) else {
            throw ModelError.missingTensor(file: file, tensor: described, expectedShape: shape)
        }
        var stored = shape
        if let part = location.fusedPart, !shape.isEmpty { stored[0] *= part.count }
        let convolution = stored + [1, 1]
        guard info.shape == stored || (location.storedAsConvolution && info.shape == convolution) else {
            throw ModelError.wrongShape(file: file, tensor: described,
                                        expected: location.storedAsConvolution ? convolution : stored, found: info.shape)
        }
        taken.insert(location.key)
        if let part = location.fusedPart, let rows = shape.first {
            return try read(location.key, part.index * rows..<(part.index + 1) * rows)
        }
        return try read(location.key, nil)
    }

    /// Fails if the file (or the checkpoint's part) holds tensors that no layer took.
    public func finish() throws {
        let keys = checkpoint?.keys ?? safetensors.tensorNames
        let unused = keys.filter { !taken.contains($0) && !ignorable($0) }
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
