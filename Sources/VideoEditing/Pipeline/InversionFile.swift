import Diffusion
import Tensors

/// Saving an inversion lets a clip be inverted once and edited with many prompts
/// (`tokenflow invert`, then `tokenflow edit --inversion FILE`).
///
/// Format: safetensors with `latents`, `last` and `inverted/<t>` per kept timestep, and the sizes,
/// prompt and step count in the metadata.
extension Inversion {
    static let formatVersion = "1"

    public func save(to path: String) throws {
        var tensors: [(name: String, tensor: Tensor)] = [("latents", latents), ("last", last)]
        for t in kept.keys.sorted(by: >) { tensors.append(("inverted/\(t)", kept[t]!)) }
        let metadata = [
            "format": "tokenflow-inversion", "version": Self.formatVersion,
            "last_timestep": "\(lastTimestep)", "inversion_steps": "\(inversionSteps)", "inversion_prompt": inversionPrompt,
            "input_width": "\(inputWidth)", "input_height": "\(inputHeight)",
            "working_width": "\(workingWidth)", "working_height": "\(workingHeight)",
        ]
        try writeSafetensors(tensors, to: path, metadata: metadata)
    }

    public static func load(from path: String) throws -> Inversion {
        KernelCPU.require()
        let file = try SafetensorsFile(path: path)
        let meta = file.metadata
        guard meta["format"] == "tokenflow-inversion" else {
            throw EditError.invalidSettings("'\(path)' is not a tokenflow inversion file (made by `tokenflow invert`)")
        }
        guard meta["version"] == formatVersion else {
            throw EditError.invalidSettings("'\(path)' is inversion format version \(meta["version"] ?? "?"), this build reads \(formatVersion)")
        }
        func integer(_ key: String) throws -> Int {
            guard let text = meta[key], let value = Int(text) else {
                throw EditError.invalidSettings("'\(path)': metadata '\(key)' is missing or not a number")
            }
            return value
        }
        var kept: [Int: Tensor] = [:]
        for name in file.tensorNames where name.hasPrefix("inverted/") {
            guard let t = Int(name.dropFirst("inverted/".count)) else {
                throw EditError.invalidSettings("'\(path)': tensor name '\(name)' has no timestep")
            }
            kept[t] = try file.tensor(name)
        }
        let latents = try file.tensor("latents"), last = try file.tensor("last")
        guard latents.rank == 4, last.shape == latents.shape, kept.values.allSatisfy({ $0.shape == latents.shape }) else {
            throw EditError.invalidSettings("'\(path)': latent tensors have inconsistent shapes")
        }
        return Inversion(latents: latents, kept: kept, last: last, lastTimestep: try integer("last_timestep"),
                         inputWidth: try integer("input_width"), inputHeight: try integer("input_height"),
                         workingWidth: try integer("working_width"), workingHeight: try integer("working_height"),
                         inversionPrompt: meta["inversion_prompt"] ?? "", inversionSteps: try integer("inversion_steps"))
    }
}
