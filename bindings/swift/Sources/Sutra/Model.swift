import CSutra

/// What a model is, as read from its checkpoint (`sutra_model_info`).
public struct ModelInfo: Sendable, Equatable {
    public let architecture: String
    public let isMamba: Bool
    public let version: Int
    public let nLayer: Int
    public let nEmbd: Int
    public let nVocab: Int
    public let nHead: Int
    public let headSize: Int
    public let nParams: UInt64
    /// Raw `sutra_dtype` of the large matrices (0 f32, 1 f16, 2 bf16, 6 q8, 7 q4, ...).
    public let weightDtype: Int32
    public let bytesPerToken: UInt64
    /// Raw `sutra_format` of the file (0 safetensors, 1 GGUF, 2 .pth).
    public let format: Int32
}

/// A loaded checkpoint. Immutable once loaded, so it may be shared by any number of threads
/// (the C contract); sessions keep it alive.
public final class Model: @unchecked Sendable {
    let handle: OpaquePointer

    /// Loads a checkpoint (`sutra_model_load`); `threads` 0 is one per core.
    public init(path: String, threads: Int32 = 0, useMmap: Bool = true,
                checkFinite: Bool = false) throws {
        var params = sutra_model_default_params()
        params.n_threads = threads
        params.use_mmap = useMmap
        params.check_finite = checkFinite
        var out: OpaquePointer?
        try check(sutra_model_load(path, &params, &out))
        handle = out!
    }

    /// Loads a checkpoint from bytes, e.g. weights bundled in an app (copied).
    public init(bytes: [UInt8], threads: Int32 = 0) throws {
        var params = sutra_model_default_params()
        params.n_threads = threads
        var out: OpaquePointer?
        try check(sutra_model_load_from_memory(bytes, bytes.count, &params, &out))
        handle = out!
    }

    deinit {
        sutra_model_free(handle)
    }

    /// Vocabulary size: the number of logits an eval returns.
    public var nVocab: Int { Int(sutra_model_n_vocab(handle)) }

    /// Architecture and sizes.
    public func info() throws -> ModelInfo {
        var i = sutra_model_info()
        try check(sutra_model_get_info(handle, &i))
        return ModelInfo(
            architecture: String(cString: i.architecture),
            isMamba: i.family == SUTRA_FAMILY_MAMBA,
            version: Int(i.version),
            nLayer: Int(i.n_layer),
            nEmbd: Int(i.n_embd),
            nVocab: Int(i.n_vocab),
            nHead: Int(i.n_head),
            headSize: Int(i.head_size),
            nParams: i.n_params,
            weightDtype: Int32(truncatingIfNeeded: i.weight_dtype.rawValue),
            bytesPerToken: i.bytes_per_token,
            format: Int32(truncatingIfNeeded: i.format.rawValue)
        )
    }
}

/// A tokenizer.json (BPE, WordPiece, Unigram) or an RWKV world vocabulary. Immutable and
/// shareable by threads.
public final class Tokenizer: @unchecked Sendable {
    let handle: OpaquePointer

    public init(path: String) throws {
        var out: OpaquePointer?
        try check(sutra_tokenizer_load(path, &out))
        handle = out!
    }

    deinit {
        sutra_tokenizer_free(handle)
    }

    /// Token ids of `text`.
    public func encode(_ text: String, addSpecialTokens: Bool = false) throws -> [Int32] {
        let len = text.utf8.count
        var n = 0
        let first = sutra_tokenize(handle, text, len, addSpecialTokens, nil, 0, &n)
        if first == SUTRA_OK && n == 0 {
            return []
        }
        if first != SUTRA_ERR_BUFFER_TOO_SMALL {
            try check(first)
        }
        let cap = n
        var ids = [Int32](repeating: 0, count: cap)
        try check(sutra_tokenize(handle, text, len, addSpecialTokens, &ids, cap, &n))
        return Array(ids.prefix(n))
    }

    /// The text of token ids (bytes that are not UTF-8 become U+FFFD).
    public func decode(_ ids: [Int32]) throws -> String {
        var n = 0
        let first = sutra_detokenize(handle, ids, ids.count, nil, 0, &n)
        if first == SUTRA_OK && n == 0 {
            return ""
        }
        if first != SUTRA_ERR_BUFFER_TOO_SMALL {
            try check(first)
        }
        let cap = n
        var buf = [CChar](repeating: 0, count: cap)
        try check(sutra_detokenize(handle, ids, ids.count, &buf, cap, &n))
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A PEFT LoRA adapter loaded for a model. Immutable and shareable; sessions it is attached
/// to keep their own reference.
public final class Adapter: @unchecked Sendable {
    let handle: OpaquePointer

    /// `path`: a folder with adapter_config.json and adapter_model.safetensors.
    public init(model: Model, path: String) throws {
        var out: OpaquePointer?
        try check(sutra_adapter_load(model.handle, path, &out))
        handle = out!
    }

    init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        sutra_adapter_free(handle)
    }
}
