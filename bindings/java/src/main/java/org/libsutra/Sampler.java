package org.libsutra;

/**
 * A sampler chain: stages applied in the order added, a seeded random generator (same seed,
 * same tokens) and the token history the penalties use. Each stage method returns this
 * sampler, so a chain reads as one expression:
 *
 * <pre>{@code
 * Sampler s = new Sampler(42).topP(0.9f).temperature(0.8f).dist();
 * }</pre>
 *
 * Without a final {@link #greedy()} or {@link #dist()} the chain draws from the softmax of
 * what is left. Used by one thread at a time.
 */
public final class Sampler extends SutraHandle {
    /** An empty chain drawing with {@code seed}. */
    public Sampler(long seed) {
        super("Sampler", Native.samplerNew(seed));
    }

    /** A greedy (argmax) sampler. */
    public static Sampler greedySampler() {
        return new Sampler(0).greedy();
    }

    /** Appends greedy selection (argmax). */
    public Sampler greedy() {
        Native.samplerAddGreedy(handle());
        return this;
    }

    /** Appends a draw from the softmax of the remaining candidates. */
    public Sampler dist() {
        Native.samplerAddDist(handle());
        return this;
    }

    /** Appends temperature scaling ({@code t <= 0} selects greedily). */
    public Sampler temperature(float t) {
        Native.samplerAddTemperature(handle(), t);
        return this;
    }

    /** Appends top-k truncation (0 is off). */
    public Sampler topK(int k) {
        Native.samplerAddTopK(handle(), k);
        return this;
    }

    /** Appends top-p (nucleus) truncation keeping at least one candidate. */
    public Sampler topP(float p) {
        return topP(p, 1);
    }

    /** Appends top-p truncation keeping at least {@code minKeep} candidates. */
    public Sampler topP(float p, int minKeep) {
        Native.samplerAddTopP(handle(), p, minKeep);
        return this;
    }

    /** Appends min-p truncation (keeps probability >= p times the best one's). */
    public Sampler minP(float p) {
        Native.samplerAddMinP(handle(), p);
        return this;
    }

    /** Appends repetition/frequency/presence penalties over the last {@code lastN} tokens (0 = all). */
    public Sampler penalties(int lastN, float repeat, float frequency, float presence) {
        Native.samplerAddPenalties(handle(), lastN, repeat, frequency, presence);
        return this;
    }

    /** Appends RWKV's decaying presence penalty. */
    public Sampler rwkvPresence(float presence, float frequency, float decay) {
        Native.samplerAddRwkvPresence(handle(), presence, frequency, decay);
        return this;
    }

    /** Appends a logit bias: {@code bias[i]} is added to the logit of {@code ids[i]}. */
    public Sampler logitBias(int[] ids, float[] bias) {
        Native.samplerAddLogitBias(handle(), ids, bias);
        return this;
    }

    /** Picks a token from {@code logits} (does not {@link #accept} it). */
    public int sample(float[] logits) {
        return Native.samplerSample(handle(), logits);
    }

    /** Records {@code token} as generated, for the penalties. */
    public void accept(int token) {
        Native.samplerAccept(handle(), token);
    }

    /** Clears the history and restarts the random generator from the seed. */
    public void reset() {
        Native.samplerReset(handle());
    }

    @Override
    void free(long h) {
        Native.samplerFree(h);
    }
}
