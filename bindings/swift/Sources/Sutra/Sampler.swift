import CSutra

/// A sampler chain: stages applied in the order added, drawing with a seed (same seed, same
/// tokens). Used by one thread at a time, so not Sendable. Stage methods return the sampler:
/// `try Sampler(seed: 42).topP(0.9).temperature(0.8).dist()`.
public final class Sampler {
    let handle: OpaquePointer

    public init(seed: UInt64 = 0) throws {
        var out: OpaquePointer?
        try check(sutra_sampler_new(seed, &out))
        handle = out!
    }

    deinit {
        sutra_sampler_free(handle)
    }

    /// Appends greedy selection (argmax).
    @discardableResult
    public func greedy() throws -> Sampler {
        try check(sutra_sampler_add_greedy(handle))
        return self
    }

    /// Appends a draw from the softmax of the remaining candidates.
    @discardableResult
    public func dist() throws -> Sampler {
        try check(sutra_sampler_add_dist(handle))
        return self
    }

    /// Appends temperature scaling (t <= 0 selects greedily).
    @discardableResult
    public func temperature(_ t: Float) throws -> Sampler {
        try check(sutra_sampler_add_temperature(handle, t))
        return self
    }

    /// Appends top-k truncation (0 is off).
    @discardableResult
    public func topK(_ k: Int32) throws -> Sampler {
        try check(sutra_sampler_add_top_k(handle, k))
        return self
    }

    /// Appends nucleus truncation keeping at least `minKeep` candidates.
    @discardableResult
    public func topP(_ p: Float, minKeep: Int = 1) throws -> Sampler {
        try check(sutra_sampler_add_top_p(handle, p, minKeep))
        return self
    }

    /// Appends min-p truncation.
    @discardableResult
    public func minP(_ p: Float) throws -> Sampler {
        try check(sutra_sampler_add_min_p(handle, p))
        return self
    }

    /// Appends repetition/frequency/presence penalties over the last `lastN` tokens.
    @discardableResult
    public func penalties(lastN: Int32 = 64, repetition: Float = 1, frequency: Float = 0,
                          presence: Float = 0) throws -> Sampler {
        try check(sutra_sampler_add_penalties(handle, lastN, repetition, frequency, presence))
        return self
    }

    /// Appends RWKV's decaying presence penalty.
    @discardableResult
    public func rwkvPresence(presence: Float, frequency: Float, decay: Float) throws -> Sampler {
        try check(sutra_sampler_add_rwkv_presence(handle, presence, frequency, decay))
        return self
    }

    /// Appends a logit bias: the value is added to the token's logit (-infinity bans it).
    @discardableResult
    public func logitBias(_ bias: [Int32: Float]) throws -> Sampler {
        let ids = Array(bias.keys)
        let values = ids.map { bias[$0]! }
        try check(sutra_sampler_add_logit_bias(handle, ids, values, ids.count))
        return self
    }

    /// Picks a token from n_vocab logits (does not accept it).
    public func sample(_ logits: [Float]) throws -> Int32 {
        var token: Int32 = 0
        try check(sutra_sampler_sample(handle, logits, logits.count, &token))
        return token
    }

    /// Records `token` as generated, for the penalties.
    public func accept(_ token: Int32) throws {
        try check(sutra_sampler_accept(handle, token))
    }

    /// Clears the history and restarts the random generator from the seed.
    public func reset() throws {
        try check(sutra_sampler_reset(handle))
    }
}

/// A LoRA trainer over a frozen model (a q8/q4 model makes it QLoRA). Used by one thread at a
/// time, so not Sendable.
public final class Trainer {
    let handle: OpaquePointer
    public let model: Model

    /// A new adapter of rank `rank` (or training from a copy of `initial`); nil parameters
    /// keep `sutra_train_default_params()`.
    public init(model: Model, initial: Adapter? = nil, rank: Int32? = nil, alpha: Float? = nil,
                learningRate: Float? = nil, seed: UInt64? = nil) throws {
        var params = sutra_train_default_params()
        if let r = rank { params.lora_rank = r }
        if let a = alpha { params.lora_alpha = a }
        if let lr = learningRate { params.learning_rate = lr }
        if let s = seed { params.seed = s }
        var out: OpaquePointer?
        try check(sutra_trainer_new(model.handle, initial?.handle, &params, &out))
        handle = out!
        self.model = model
    }

    deinit {
        sutra_trainer_free(handle)
    }

    /// One optimizer step on rows of equal length (targets < 0 are ignored); returns the
    /// batch's mean cross-entropy before the step.
    public func step(tokens: [[Int32]], targets: [[Int32]]) throws -> Float {
        let width = tokens.first?.count ?? 0
        guard tokens.count == targets.count,
              tokens.allSatisfy({ $0.count == width }),
              targets.allSatisfy({ $0.count == width }) else {
            throw SutraError(invalidArgument:
                "targets: rows must match tokens' \(tokens.count) rows of \(width)")
        }
        let flatTokens: [Int32] = tokens.flatMap { $0 }
        let flatTargets: [Int32] = targets.flatMap { $0 }
        var loss: Float = 0
        try check(sutra_trainer_step(handle, flatTokens, flatTargets, tokens.count, width, &loss))
        return loss
    }

    /// A snapshot of the current adapter, for sessions.
    public func adapter() throws -> Adapter {
        var out: OpaquePointer?
        try check(sutra_trainer_get_adapter(handle, &out))
        return Adapter(handle: out!)
    }

    /// Writes the current adapter as a PEFT folder (created if needed).
    public func saveAdapter(to directory: String) throws {
        try check(sutra_trainer_save_adapter(handle, directory))
    }
}
