#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import Tensors

extension SingleFileCheckpoint {
    /// Writes the checkpoint as a diffusers folder at `directory` (which must not exist), as
    /// `StableDiffusionPipeline.save_pretrained` lays it out: model_index.json; unet/, vae/, text_encoder/ with
    /// the recognised config.json and the weights under diffusers' names (in the checkpoint's dtype when all of
    /// a part's tensors share one, F32 otherwise, so nothing is rounded); tokenizer/ with the built-in
    /// vocabulary and the family's padding; scheduler/ with Stable Diffusion's DDIM predicting `prediction`
    /// ("epsilon" or "v_prediction").
    ///
    /// Each part is built exactly as for an edit (same mapping, same checks), written, and released before the
    /// next, so memory peaks at one part's weights in F32. The folder is assembled beside `directory` and
    /// renamed into place, so a failure leaves nothing behind.
    public func convert(to directory: String, prediction: String) throws {
        let manager = FileManager.default
        if manager.fileExists(atPath: directory) {
            throw ModelError.invalidInput("\(directory) already exists; convert writes a new folder")
        }
        let staging = directory + ".converting-\(getpid())"
        try? manager.removeItem(atPath: staging)
        do {
            try manager.createDirectory(atPath: staging, withIntermediateDirectories: true)
            try writePart(.unet, to: staging, weightsFile: "diffusion_pytorch_model.safetensors") { store in
                _ = try UNet(config: unetConfig, configFile: configName(.unet)) { store }
            }
            try writePart(.vae, to: staging, weightsFile: "diffusion_pytorch_model.safetensors") { store in
                _ = try AutoencoderKL(config: vaeConfig, configFile: configName(.vae)) { store }
            }
            try writePart(.textEncoder, to: staging, weightsFile: "model.safetensors") { store in
                _ = try CLIPTextModel(config: textEncoderConfig, configFile: configName(.textEncoder)) { store }
            }
            try writeTokenizer(to: "\(staging)/tokenizer")
            try manager.createDirectory(atPath: "\(staging)/scheduler", withIntermediateDirectories: true)
            try write(SchedulerConfig.stableDiffusionDocument(prediction: prediction).json(),
                      to: "\(staging)/scheduler/scheduler_config.json")
            try write(Self.modelIndex.json(), to: "\(staging)/model_index.json")
            try manager.moveItem(atPath: staging, toPath: directory)
        } catch {
            try? manager.removeItem(atPath: staging)
            throw error
        }
    }

    /// Builds `part` through `build` with a recording store, then writes its config and the tensors taken.
    private func writePart(_ part: Part, to folder: String, weightsFile: String,
                           build: (WeightStore) throws -> Void) throws {
        let directory = "\(folder)/\(part.rawValue)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = configs[part] ?? [:]
        let dtypes = parameterCounts(part).keys.filter(\.isFloatConvertible)
        let dtype = dtypes.count == 1 ? dtypes[0] : .f32
        if part == .textEncoder {
            config["torch_dtype"] = .string(dtype == .f16 ? "float16" : dtype == .bf16 ? "bfloat16" : "float32")
        }
        try write(config.json(), to: "\(directory)/config.json")
        let store = store(part, recording: true)
        try build(store)
        try writeSafetensors(store.recorded, to: "\(directory)/\(weightsFile)", dtype: dtype, metadata: ["format": "pt"])
    }

    /// vocab.json and merges.txt of the built-in vocabulary; tokenizer_config.json and special_tokens_map.json
    /// as the SD 1.x / 2.x folders on the Hub have them (special tokens as plain strings).
    private func writeTokenizer(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try write(encoder.encode(try CLIPTokenizer.builtInVocabulary().vocabulary), to: "\(directory)/vocab.json")
        try write(Data(CLIPTokenizer.builtInMergesFile.utf8), to: "\(directory)/merges.txt")
        let pad: CLIPTokenizer.Padding = family == .sd1 ? .endOfText : .exclamationMark
        let special: ConfigDocument = [
            "bos_token": .string("<|startoftext|>"), "eos_token": .string("<|endoftext|>"),
            "pad_token": .string(pad.rawValue), "unk_token": .string("<|endoftext|>"),
        ]
        try write(special.json(), to: "\(directory)/special_tokens_map.json")
        var config = special
        config["model_max_length"] = .int(77)
        config["tokenizer_class"] = .string("CLIPTokenizer")
        config["do_lower_case"] = .bool(true)
        config["errors"] = .string("replace")
        config["clean_up_tokenization_spaces"] = .bool(false)
        try write(config.json(), to: "\(directory)/tokenizer_config.json")
    }

    private func write(_ data: Data, to path: String) throws {
        do {
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw ModelError.invalidInput("cannot write \(path): \(error)")
        }
    }

    /// model_index.json of a StableDiffusionPipeline without safety checker.
    private static let modelIndex: ConfigDocument = [
        "_class_name": .string("StableDiffusionPipeline"),
        "feature_extractor": .list([.null, .null]),
        "image_encoder": .list([.null, .null]),
        "requires_safety_checker": .bool(false),
        "safety_checker": .list([.null, .null]),
        "scheduler": .list([.string("diffusers"), .string("DDIMScheduler")]),
        "text_encoder": .list([.string("transformers"), .string("CLIPTextModel")]),
        "tokenizer": .list([.string("transformers"), .string("CLIPTokenizer")]),
        "unet": .list([.string("diffusers"), .string("UNet2DConditionModel")]),
        "vae": .list([.string("diffusers"), .string("AutoencoderKL")]),
    ]
}
