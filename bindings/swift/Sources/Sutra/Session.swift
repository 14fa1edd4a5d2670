import CSutra
import Foundation

/// One sequence's recurrent state. Used by one thread at a time (the C contract), so not
/// Sendable.
public final class Session {
    let handle: OpaquePointer
    /// The model this session runs.
    public let model: Model

    public init(model: Model) throws {
        var out: OpaquePointer?
        try check(sutra_session_new(model.handle, &out))
        handle = out!
        self.model = model
    }

    private init(handle: OpaquePointer, model: Model) {
        self.handle = handle
        self.model = model
    }

    deinit {
        sutra_session_free(handle)
    }

    /// Feeds tokens (at least one); returns the logits after the last one.
    @discardableResult
    public func eval(_ tokens: [Int32]) throws -> [Float] {
        var logits = [Float](repeating: 0, count: model.nVocab)
        try check(sutra_session_eval(handle, tokens, tokens.count, &logits))
        return logits
    }

    /// As eval, one token per step (the single-token path).
    @discardableResult
    public func evalStepwise(_ tokens: [Int32]) throws -> [Float] {
        var logits = [Float](repeating: 0, count: model.nVocab)
        try check(sutra_session_eval_stepwise(handle, tokens, tokens.count, &logits))
        return logits
    }

    /// Feeds tokens without computing the logits.
    public func advance(_ tokens: [Int32]) throws {
        try check(sutra_session_eval(handle, tokens, tokens.count, nil))
    }

    /// Back to the initial state.
    public func reset() throws {
        try check(sutra_session_reset(handle))
    }

    /// A new session with a copy of this state and adapters; both go on independently.
    public func clone() throws -> Session {
        var out: OpaquePointer?
        try check(sutra_session_clone(handle, &out))
        return Session(handle: out!, model: model)
    }

    /// The state blob (versioned, checksummed; adapters are not in it).
    public func saveState() throws -> [UInt8] {
        var n = 0
        try check(sutra_session_state_size(handle, &n))
        var blob = [UInt8](repeating: 0, count: n)
        try check(sutra_session_state_save(handle, &blob, n))
        return blob
    }

    /// Restores a blob of saveState; a foreign or corrupted one throws SUTRA_ERR_FORMAT and
    /// leaves the session unchanged.
    public func loadState(_ blob: [UInt8]) throws {
        try check(sutra_session_state_load(handle, blob, blob.count))
    }

    /// Computes with `adapter` at multiplier `scale` from the next eval (0 detaches it).
    public func setAdapter(_ adapter: Adapter, scale: Float = 1) throws {
        try check(sutra_session_set_adapter(handle, adapter.handle, scale))
    }

    /// Detaches every adapter (the state is kept).
    public func clearAdapters() throws {
        try check(sutra_session_clear_adapters(handle))
    }

    /// Advances distinct sessions of one model in one pass (`sutra_batch_eval`): session i is
    /// fed tokens[i]; returns each one's logits, the same as separate evals.
    public static func batchEval(_ sessions: [Session], tokens: [[Int32]]) throws -> [[Float]] {
        guard sessions.count == tokens.count else {
            throw SutraError(invalidArgument:
                "tokens: \(tokens.count) lists for \(sessions.count) sessions")
        }
        guard let first = sessions.first else {
            return []
        }
        let nVocab = first.model.nVocab
        var logits = [Float](repeating: 0, count: sessions.count * nVocab)
        let handles: [OpaquePointer?] = sessions.map { $0.handle }
        let lengths: [Int] = tokens.map { $0.count }
        let flat: [Int32] = tokens.flatMap { $0 }
        try flat.withUnsafeBufferPointer { (base: UnsafeBufferPointer<Int32>) throws -> Void in
            var rows: [UnsafePointer<Int32>?] = []
            var offset = 0
            for length in lengths {
                rows.append(base.baseAddress.map { $0 + offset })
                offset += length
            }
            try check(sutra_batch_eval(handles, handles.count, rows, lengths, &logits))
        }
        return (0..<sessions.count).map { Array(logits[($0 * nVocab)..<(($0 + 1) * nVocab)]) }
    }
}

/// Why a generation stopped.
public enum StopReason: Sendable, Equatable {
    case maxTokens, stopToken, stopString, callback
}

/// What a generation did.
public struct GenerateResult: Sendable, Equatable {
    public let nPromptTokens: Int
    public let nGenerated: Int
    public let stopReason: StopReason
}

/// What to generate: `sutra_generate_params`.
public struct GenerateOptions: Sendable {
    public var maxTokens: Int32
    /// Strings that end generation; never emitted, even when split across tokens.
    public var stop: [String]
    public var stopTokens: [Int32]
    public var addSpecialTokens: Bool

    public init(maxTokens: Int32 = 128, stop: [String] = [], stopTokens: [Int32] = [],
                addSpecialTokens: Bool = false) {
        self.maxTokens = maxTokens
        self.stop = stop
        self.stopTokens = stopTokens
        self.addSpecialTokens = addSpecialTokens
    }
}

/// The Swift closure behind the C callback's user_data.
private final class PieceSink {
    let onPiece: (String) -> Bool

    init(_ onPiece: @escaping (String) -> Bool) {
        self.onPiece = onPiece
    }
}

extension Session {
    /// Feeds `prompt`, then samples up to `options.maxTokens` tokens (`sutra_generate`),
    /// calling `onPiece` with each piece of text (whole UTF-8 characters) on this thread;
    /// returning false stops. The session keeps the state after the last fed token.
    @discardableResult
    public func generate(tokenizer: Tokenizer, sampler: Sampler, prompt: String,
                         options: GenerateOptions = GenerateOptions(),
                         onPiece: @escaping (String) -> Bool) throws -> GenerateResult {
        let sink = PieceSink(onPiece)
        let user = Unmanaged.passUnretained(sink).toOpaque()
        var params = sutra_generate_default_params()
        params.max_tokens = options.maxTokens
        params.add_special_tokens = options.addSpecialTokens
        let owned: [UnsafeMutablePointer<CChar>?] = options.stop.map { strdup($0) }
        defer { owned.forEach { free($0) } }
        let stops: [UnsafePointer<CChar>?] = owned.map { UnsafePointer($0) }
        var result = sutra_generate_result()
        let status = stops.withUnsafeBufferPointer {
            (stopBuf: UnsafeBufferPointer<UnsafePointer<CChar>?>) -> sutra_status in
            options.stopTokens.withUnsafeBufferPointer {
                (tokenBuf: UnsafeBufferPointer<Int32>) -> sutra_status in
                params.stop_strings = stopBuf.baseAddress
                params.n_stop_strings = stopBuf.count
                params.stop_tokens = tokenBuf.baseAddress
                params.n_stop_tokens = tokenBuf.count
                return withExtendedLifetime(sink) {
                    sutra_generate(handle, tokenizer.handle, sampler.handle, prompt,
                                   prompt.utf8.count, &params, { piece, len, user in
                        guard let user = user else { return false }
                        let sink = Unmanaged<PieceSink>.fromOpaque(user).takeUnretainedValue()
                        let bytes = UnsafeRawBufferPointer(start: piece, count: len)
                        return sink.onPiece(String(decoding: bytes, as: UTF8.self))
                    }, user, &result)
                }
            }
        }
        try check(status)
        let reason: StopReason
        switch result.stop_reason {
        case SUTRA_STOP_REASON_STOP_TOKEN: reason = .stopToken
        case SUTRA_STOP_REASON_STOP_STRING: reason = .stopString
        case SUTRA_STOP_REASON_CALLBACK: reason = .callback
        default: reason = .maxTokens
        }
        return GenerateResult(nPromptTokens: Int(result.n_prompt_tokens),
                              nGenerated: Int(result.n_generated), stopReason: reason)
    }

    /// Generation as an async stream of text pieces. The generation runs on its own thread;
    /// ending the iteration early or cancelling the consuming task terminates the stream,
    /// and its onTermination makes the C callback return false, which stops the generation.
    /// The session and the sampler belong to that thread until the stream finishes: do not
    /// use them meanwhile (they are not Sendable).
    public func stream(tokenizer: Tokenizer, sampler: Sampler, prompt: String,
                       options: GenerateOptions = GenerateOptions())
        -> AsyncThrowingStream<String, Error> {
        let job = UncheckedSendable(value: (self, sampler))
        return AsyncThrowingStream { continuation in
            let stop = StopFlag()
            continuation.onTermination = { _ in stop.stop() }
            let thread = Thread {
                let (session, sampler) = job.value
                do {
                    try session.generate(tokenizer: tokenizer, sampler: sampler, prompt: prompt,
                                         options: options) { piece in
                        if stop.isStopped {
                            return false
                        }
                        continuation.yield(piece)
                        return !stop.isStopped
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.name = "sutra-generate"
            thread.start()
        }
    }
}
