import Tensors

/// One setting as every host sees it: a name, a kind with its range or allowed values, the default, a
/// line of help and the methods that use it. Values cross the boundary as text, in one grammar per kind
/// (the parsers below), so the C API, the FFmpeg filter, the GStreamer element and the CLI accept exactly
/// the same values.
public struct Setting: Sendable {
    public enum Kind: Sendable, Equatable {
        /// UTF-8 text, any value.
        case text
        /// A decimal integer in the range.
        case integer(ClosedRange<Int64>)
        /// A finite decimal number in the range.
        case real(ClosedRange<Double>)
        /// One of the choices, by name (or by its index, as FFmpeg's named constants allow).
        case choice([Choice])
        /// A working size: "WxH" (multiples of 8), "input", a number (the longer side), "" = 512.
        case size
    }

    public struct Choice: Sendable, Equatable {
        public let name: String
        public let help: String
    }

    public let name: String
    public let help: String
    public let kind: Kind
    /// Names of the methods that use the setting; empty: every method.
    public let methods: [String]
    private let read: @Sendable (EditSettings) -> String
    private let write: @Sendable (inout EditSettings, String) throws -> Void

    /// The default, as text in the setting's grammar.
    public var defaultValue: String { read(EditSettings()) }

    /// The setting's value in `settings`, as text in its grammar.
    public func value(in settings: EditSettings) -> String { read(settings) }

    /// Parses `text` and stores it in `settings`; throws `EditError.invalidSettings` naming the setting,
    /// the value and what is allowed (and leaves `settings` unchanged).
    public func set(_ text: String, in settings: inout EditSettings) throws {
        do { try write(&settings, text) } catch let refusal as Refusal {
            throw EditError.invalidSettings("\(name): '\(text)' is not allowed\(refusal.why.isEmpty ? "" : " (\(refusal.why))"): expected \(allowed)")
        }
    }

    /// What values are allowed, for messages and help.
    public var allowed: String {
        switch kind {
        case .text: return "any text"
        case .integer(let range): return "an integer from \(range.lowerBound) to \(range.upperBound)"
        case .real(let range): return "a number from \(formatReal(range.lowerBound)) to \(formatReal(range.upperBound))"
        case .choice(let choices): return "one of " + choices.map(\.name).joined(separator: ", ")
        case .size: return "WxH (multiples of 8, each 8 to \(WorkingSize.maxSide)), 'input' (the input size rounded to a multiple of 8), a number (the longer side, 8 to \(WorkingSize.maxSide)), or empty (512)"
        }
    }
}

/// A parser's "no", turned by `Setting.set` into a message naming the setting and what it allows.
private struct Refusal: Error {
    var why = ""
}

// MARK: - One parser per kind

extension Setting {
    static func text(_ name: String, _ field: WritableKeyPath<EditSettings, String> & Sendable,
                     methods: [String] = [], help: String) -> Setting {
        Setting(name: name, help: help, kind: .text, methods: methods,
                read: { $0[keyPath: field] }, write: { $0[keyPath: field] = $1 })
    }

    static func integer<Value: FixedWidthInteger & Sendable>(
        _ name: String, _ field: WritableKeyPath<EditSettings, Value> & Sendable, _ range: ClosedRange<Int64>,
        methods: [String] = [], help: String
    ) -> Setting {
        Setting(name: name, help: help, kind: .integer(range), methods: methods,
                          read: { "\($0[keyPath: field])" },
                          write: { settings, text in
                              guard let value = Int64(text.trimmingSpaces) else { throw Refusal(why: "not an integer") }
                              guard range.contains(value), let typed = Value(exactly: value) else { throw Refusal() }
                              settings[keyPath: field] = typed
                          })
    }

    static func real(_ name: String, _ field: WritableKeyPath<EditSettings, Float> & Sendable, _ range: ClosedRange<Double>,
                     methods: [String] = [], help: String) -> Setting {
        Setting(name: name, help: help, kind: .real(range), methods: methods,
                          read: { "\($0[keyPath: field])" },
                          write: { settings, text in
                              let decimal = text.trimmingSpaces
                              // Decimal notation only (Double(_:) would also take hex floats and "nan").
                              guard decimal.allSatisfy({ "0123456789+-.eE".contains($0) }),
                                    let value = Double(decimal), value.isFinite else {
                                  throw Refusal(why: "not a finite decimal number")
                              }
                              guard range.contains(value) else { throw Refusal() }
                              settings[keyPath: field] = value == 0 ? 0 : Float(value) // -0 reads back as 0
                          })
    }

    static func choice(_ name: String, _ field: WritableKeyPath<EditSettings, String> & Sendable, _ choices: [Choice],
                       methods: [String] = [], help: String) -> Setting {
        Setting(name: name, help: help, kind: .choice(choices), methods: methods,
                          read: { $0[keyPath: field] },
                          write: { settings, text in
                              let key = text.trimmingSpaces
                              if let match = choices.first(where: { $0.name == key }) {
                                  settings[keyPath: field] = match.name
                              } else if let index = Int(key), choices.indices.contains(index) {
                                  settings[keyPath: field] = choices[index].name
                              } else {
                                  throw Refusal()
                              }
                          })
    }

    static func size(_ name: String, _ field: WritableKeyPath<EditSettings, WorkingSize> & Sendable,
                     methods: [String] = [], help: String) -> Setting {
        Setting(name: name, help: help, kind: .size, methods: methods,
                          read: { settings in
                              switch settings[keyPath: field] {
                              case .longerSide(let side): return "\(side)"
                              case .input: return "input"
                              case .exact(let w, let h): return "\(w)x\(h)"
                              }
                          },
                          write: { settings, text in
                              guard let size = parseWorkingSize(text.trimmingSpaces) else { throw Refusal() }
                              settings[keyPath: field] = size
                          })
    }
}

/// The working-size grammar: "" (longer side 512), "input", a number (longer side), "WxH" (multiples of 8).
private func parseWorkingSize(_ text: String) -> WorkingSize? {
    let sides = 8...WorkingSize.maxSide
    if text.isEmpty { return .longerSide(512) }
    if text.lowercased() == "input" { return .input }
    if let side = Int(text) { return sides.contains(side) ? .longerSide(side) : nil }
    let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false)
    guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]),
          sides.contains(w), sides.contains(h), w % 8 == 0, h % 8 == 0 else { return nil }
    return .exact(width: w, height: h)
}

/// A range bound as the text a user would type ("0", "7.5", "100").
private func formatReal(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? "\(Int64(value))" : "\(value)"
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

// MARK: - The table

/// Every setting of the library, declared once. Hosts build their options from it (the C API's
/// tf_option, hence the FFmpeg filter's AVOptions and the GStreamer element's properties; the CLI's
/// options), so adding a row here adds the setting everywhere.
public enum SettingsTable {
    public static let all: [Setting] = {
        let propagating = [TokenFlowPnP.name, SDEdit.name]
        let prompted = propagating + [Cove.name], injecting = [TokenFlowPnP.name, Cove.name]
        return [
            .text("model", \.model,
                  help: "Stable Diffusion model: a diffusers folder or a single-file .safetensors checkpoint (SD 1.x, 2.x); empty: $TOKENFLOW_MODEL, then the model installed with the library"),
            .choice("prediction", \.prediction, [
                Setting.Choice(name: "auto", help: "what the model says: a folder's scheduler config, a checkpoint's metadata; SD 1.x checkpoints predict noise, SD 2.x checkpoints without metadata need epsilon or v"),
                Setting.Choice(name: "epsilon", help: "noise (SD 1.x, SD 2.x 512x512 base models)"),
                Setting.Choice(name: "v", help: "velocity (SD 2.x 768x768 models)"),
            ], help: "what the model predicts (the scheduler's prediction type)"),
            .text("prompt", \.prompt, methods: prompted, help: "edit prompt: what the edited video shows"),
            .text("negative_prompt", \.negativePrompt, methods: prompted, help: "negative prompt for classifier-free guidance"),
            .text("inversion_prompt", \.inversionPrompt,
                  help: "prompt describing the source video; conditions the inversion and the source branch"),
            .choice("method", \.method, EditMethods.all.map { Setting.Choice(name: $0.name, help: $0.summary) },
                    help: "editing method"),
            .integer("steps", \.steps, 1...1000, help: "sampling (denoising) steps"),
            .integer("inversion_steps", \.inversionSteps, 1...1000, help: "DDIM inversion steps (a multiple of steps)"),
            .real("guidance", \.guidanceScale, 0...100, methods: prompted, help: "classifier-free guidance scale"),
            .real("pnp_attn_t", \.pnpAttentionThreshold, 0...1, methods: injecting,
                  help: "fraction of the sampling steps with self-attention query/key injection"),
            .real("pnp_f_t", \.pnpFeatureThreshold, 0...1, methods: injecting,
                  help: "fraction of the sampling steps with convolution feature injection"),
            .real("strength", \.strength, 0...1, methods: [SDEdit.name], help: "fraction of the sampling schedule that is run"),
            .integer("batch_size", \.batchSize, 1...4096, help: "frames per batch; each batch has one keyframe per step"),
            .integer("seed", \.seed, 0...4_294_967_295, methods: prompted,
                     help: "seed of the keyframe choice (TokenFlow) and of the noise of the correspondence features (COVE)"),
            .size("size", \.workingSize,
                  help: "working size: WxH (multiples of 8), 'input' (the input size rounded to a multiple of 8), a number (the longer side, aspect kept), or empty (512)"),
            .integer("threads", \.threads, 0...1024, help: "worker threads, 0 = one per core (process-wide)"),
            .integer("keyframe_context", \.keyframeContext, 2...4096, methods: propagating,
                     help: "keyframes a keyframe's extended attention covers at most; clips with up to this many keyframes (batches) are edited exactly as the reference does, longer ones at a constant cost per frame"),
            .integer("cove_k", \.coveK, 1...16, methods: [Cove.name],
                     help: "corresponding tokens kept per token in every other frame (top K by diffusion-feature similarity)"),
            .integer("cove_window", \.coveWindow, 1...63, methods: [Cove.name],
                     help: "side of the window, in latent tokens, searched for a token's correspondences in the next frame"),
            .real("cove_merge", \.coveMerge, 0...0.5, methods: [Cove.name],
                  help: "fraction of a token's corresponding tokens merged (token merging) before it attends to them"),
            .integer("cove_timestep", \.coveTimestep, 0...999, methods: [Cove.name],
                     help: "diffusion timestep at which the frames' features for correspondences are taken"),
            .integer("cove_frames", \.coveFrames, 1...256, methods: [Cove.name],
                     help: "frames edited jointly (attention over all of them; cost grows with its square); longer clips are edited in groups that share anchor frames"),
            .integer("latent_memory", \.latentMemory, 0...(1 << 30),
                     help: "MiB of latents kept in memory; the rest of a long stream's latents go to a temporary file (0: every latent goes to the file)"),
            .integer("memory_limit", \.memoryLimit, 0...(1 << 30),
                     help: "MiB of working tensors one edit may hold at once (the model's weights and the latents under latent_memory not counted); beyond it the edit stops with an out-of-memory error instead of growing; 0 = no limit"),
            .text("temp_dir", \.temporaryDirectory,
                  help: "folder for the temporary latent file of long clips; empty: $TMPDIR, then /tmp"),
            .choice("precision", \.precision, [
                Setting.Choice(name: ComputePrecision.float32.rawValue, help: "float32 throughout (the reference implementation's numerics)"),
                Setting.Choice(name: ComputePrecision.bfloat16.rawValue,
                               help: "bfloat16 operands with float32 sums in the linear, convolution and attention products, on CPUs with Intel AMX (several times faster products) or else AVX512-BF16 (AMD Zen 4 and 5); results differ from fp32's by about 1e-2 relative; computed as fp32 on other CPUs"),
            ], help: "precision of the model's matrix products; softmax, normalisation and activations stay float32"),
            .integer("window", \.window, 0...Int64(Int32.max),
                     help: "frames edited and output together; each window attends to anchor frames of earlier ones, so all share one look; 0 = the whole stream as one edit, output at its end"),
        ]
    }()

    /// The setting called `name`; '-' is accepted for '_' (the spelling of GStreamer properties and
    /// command-line options).
    public static func named(_ name: String) -> Setting? {
        let key = String(name.map { $0 == "-" ? "_" : $0 })
        return all.first { $0.name == key }
    }

    /// Checks every value of `settings` with its setting's parser, so settings made in Swift (fields set
    /// directly) are held to the same ranges as settings set by name.
    public static func validate(_ settings: EditSettings) throws {
        var copy = settings
        for setting in all { try setting.set(setting.value(in: settings), in: &copy) }
    }

    /// Parses `text` into the setting called `name`.
    public static func set(_ name: String, _ text: String, in settings: inout EditSettings) throws {
        guard let setting = named(name) else {
            throw EditError.invalidSettings("unknown setting '\(name)'; the settings are: \(all.map(\.name).joined(separator: ", "))")
        }
        try setting.set(text, in: &settings)
    }
}
