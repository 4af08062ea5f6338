import Diffusion
import FoundationEssentials
import Synchronization

/// Keeps the most recently opened model loaded, so a host that opens one context per window (the
/// GStreamer element, the FFmpeg filter with `window`) loads real Stable Diffusion weights
/// (seconds, gigabytes) once instead of once per window. A loaded model is read-only, so contexts
/// running in parallel can share it.
///
/// The entry is keyed by the model folder and the modification times of its files (or by a checkpoint
/// file and its modification time), so a model replaced on disk is loaded again.
final class ModelCache: Sendable {
    static let shared = ModelCache()

    private struct Entry {
        let key: String
        let model: StableDiffusionModel
    }
    private let entry = Mutex<Entry?>(nil)

    /// The model at `directory`: a diffusers folder or a single-file checkpoint. Loaded anew, it embeds `prompts`
    /// before its UNet loads (`StableDiffusionModel(path:embedding:)`).
    func model(at directory: String, embedding prompts: [String]) throws -> StableDiffusionModel {
        let key = Self.key(for: directory)
        if let cached = entry.withLock({ $0?.key == key ? $0?.model : nil }) { return cached }
        // Loaded outside the lock: a second thread asking for another model is not held up.
        let model = try StableDiffusionModel(path: directory, embedding: prompts)
        entry.withLock { $0 = Entry(key: key, model: model) }
        return model
    }

    /// The folder plus each component file's modification time; a single-file checkpoint's own.
    private static func key(for directory: String) -> String {
        let manager = FileManager.default
        var parts = [directory]
        var isDirectory = false
        if manager.fileExists(atPath: directory, isDirectory: &isDirectory), !isDirectory {
            let date = (try? manager.attributesOfItem(atPath: directory))?[.modificationDate] as? Date
            return "\(directory)@\(date?.timeIntervalSince1970 ?? -1)"
        }
        for component in ["model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
            let path = "\(directory)/\(component)"
            let names = (try? manager.contentsOfDirectory(atPath: path))?.sorted().map { "\(path)/\($0)" } ?? [path]
            for file in names {
                let date = (try? manager.attributesOfItem(atPath: file))?[.modificationDate] as? Date
                parts.append("\(file)@\(date?.timeIntervalSince1970 ?? -1)")
            }
        }
        return parts.joined(separator: "|")
    }
}
