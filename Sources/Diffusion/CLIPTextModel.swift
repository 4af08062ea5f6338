import Tensors

/// transformers' `CLIPTextModel` (the text tower SD conditions on): token + position embeddings,
/// pre-LayerNorm transformer layers with causal self-attention, final LayerNorm. Returns
/// `last_hidden_state`, which is what Stable Diffusion feeds to the UNet's cross-attention.
public final class CLIPTextModel: Sendable {
    public let config: CLIPTextConfig
    let tokenEmbedding: Tensor
    let positionEmbedding: Tensor
    let layers: [CLIPEncoderLayer]
    let finalLayerNorm: LayerNorm

    /// Loads a diffusers `text_encoder/` folder: config.json and model.safetensors (or the
    /// model.fp16.safetensors variant), weights under the `text_model.` prefix.
    public convenience init(directory: String) throws {
        let config = try loadConfig(CLIPTextConfig.self, directory: directory)
        try self.init(config: config, configFile: "\(directory)/config.json") {
            // Older transformers versions saved the position_ids buffer (int64 arange), which the model recomputes.
            try WeightStore(directory: directory, baseName: "model", ignorable: { $0 == "text_model.embeddings.position_ids" })
        }
    }

    /// Checks `config` (named `configFile` in errors), then opens the weights and takes every tensor of them.
    init(config: CLIPTextConfig, configFile: String, weights openStore: () throws -> WeightStore) throws {
        self.config = config
        guard let activation = CLIPActivation(rawValue: config.hiddenAct) else {
            throw ModelError.unsupportedConfig(file: configFile, key: "hidden_act", value: config.hiddenAct,
                                               supported: "gelu, quick_gelu")
        }
        try config.validate(file: configFile)
        let hidden = config.hiddenSize
        let store = try openStore()
        tokenEmbedding = try store.take("text_model.embeddings.token_embedding.weight", shape: [config.vocabSize, hidden])
        positionEmbedding = try store.take("text_model.embeddings.position_embedding.weight",
                                           shape: [config.maxPositionEmbeddings, hidden])
        layers = try (0..<config.numHiddenLayers).map {
            try CLIPEncoderLayer(store, "text_model.encoder.layers.\($0)", config: config, activation: activation)
        }
        finalLayerNorm = try LayerNorm(store, "text_model.final_layer_norm", width: hidden, eps: config.layerNormEps)
        try store.finish()
    }

    /// `last_hidden_state` [B, L, hidden] for B token sequences of equal length L (SD: 77, padded).
    /// Throws `ModelError.invalidInput` for ragged or over-long sequences and out-of-vocabulary ids.
    public func callAsFunction(_ ids: [[Int32]]) throws -> Tensor {
        let length = ids.first?.count ?? 0
        guard !ids.isEmpty, length > 0, ids.allSatisfy({ $0.count == length }) else {
            throw ModelError.invalidInput("text encoder needs one or more token sequences of equal, non-zero length")
        }
        guard length <= config.maxPositionEmbeddings else {
            throw ModelError.invalidInput("\(length) tokens exceed the text encoder's \(config.maxPositionEmbeddings) positions")
        }
        if let bad = ids.joined().first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw ModelError.invalidInput("token id \(bad) is outside the vocabulary (0..<\(config.vocabSize))")
        }
        var h = try embed(ids)
        for layer in layers { h = try layer(h) }
        return try finalLayerNorm(h)
    }

    /// token_embedding[id] + position_embedding[position], [B, L, hidden].
    private func embed(_ ids: [[Int32]]) throws -> Tensor {
        let hidden = config.hiddenSize, length = ids[0].count
        let out = try Tensor(uninitializedShape: [ids.count, length, hidden])
        for (b, sequence) in ids.enumerated() {
            for (position, id) in sequence.enumerated() {
                let token = tokenEmbedding.pointer + Int(id) * hidden
                let place = positionEmbedding.pointer + position * hidden
                let row = out.mutablePointer + (b * length + position) * hidden
                for j in 0..<hidden { row[j] = token[j] + place[j] }
            }
        }
        return out
    }
}

/// The `hidden_act` values SD's text encoders use.
enum CLIPActivation: String, Sendable {
    case gelu // SD 2.x (OpenCLIP ViT-H): exact erf GELU
    case quickGelu = "quick_gelu" // SD 1.x (OpenAI CLIP ViT-L): x * sigmoid(1.702 x)

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        switch self {
        case .gelu: try Tensors.gelu(x)
        case .quickGelu: try Tensors.quickGelu(x)
        }
    }
}

/// transformers' `CLIPEncoderLayer`: x + attn(LN1(x)), then h + fc2(act(fc1(LN2(h)))).
struct CLIPEncoderLayer: Sendable {
    let layerNorm1: LayerNorm, query: Linear, key: Linear, value: Linear, output: Linear
    let layerNorm2: LayerNorm, fc1: Linear, fc2: Linear
    let heads: Int
    let activation: CLIPActivation

    init(_ store: WeightStore, _ path: String, config: CLIPTextConfig, activation: CLIPActivation) throws {
        let width = config.hiddenSize
        layerNorm1 = try LayerNorm(store, "\(path).layer_norm1", width: width, eps: config.layerNormEps)
        query = try Linear(store, "\(path).self_attn.q_proj", in: width, out: width)
        key = try Linear(store, "\(path).self_attn.k_proj", in: width, out: width)
        value = try Linear(store, "\(path).self_attn.v_proj", in: width, out: width)
        output = try Linear(store, "\(path).self_attn.out_proj", in: width, out: width)
        layerNorm2 = try LayerNorm(store, "\(path).layer_norm2", width: width, eps: config.layerNormEps)
        fc1 = try Linear(store, "\(path).mlp.fc1", in: width, out: config.intermediateSize)
        fc2 = try Linear(store, "\(path).mlp.fc2", in: config.intermediateSize, out: width)
        heads = config.numAttentionHeads
        self.activation = activation
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        let normed = try layerNorm1(x)
        // SD feeds no attention mask: padding tokens are attended to, under the causal mask only.
        // The kernel's default scale is head_dim^-0.5, as CLIP's.
        let attended = try attention(query: query(normed), key: key(normed), value: value(normed), heads: heads, causal: true)
        let h = try add(x, output(attended))
        addInPlace(h, try fc2(try activation(try fc1(try layerNorm2(h)))))
        return h
    }
}
