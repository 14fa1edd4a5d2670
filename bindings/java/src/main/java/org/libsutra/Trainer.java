package org.libsutra;

/**
 * Trains a LoRA adapter over a frozen model on the device (a q8/q4 model makes it QLoRA).
 * Used by one thread at a time.
 *
 * <pre>{@code
 * try (Trainer t = Trainer.create(model, null, new TrainParams())) {
 *     float loss = t.step(tokens, targets, 1, tokens.length);
 *     t.saveAdapter(dir);
 * }
 * }</pre>
 */
public final class Trainer extends SutraHandle {
    private Trainer(long h) {
        super("Trainer", h);
    }

    /** A new adapter from {@code params} (null: defaults). */
    public static Trainer create(Model model, TrainParams params) {
        return create(model, null, params);
    }

    /**
     * Training starts from a copy of {@code init} (null: a new adapter from {@code params}).
     * Throws SUTRA_ERR_UNSUPPORTED for an architecture without a backward pass.
     */
    public static Trainer create(Model model, Adapter init, TrainParams params) {
        TrainParams p = params == null ? new TrainParams() : params;
        return new Trainer(Native.trainerNew(SutraHandle.handleOf(model), SutraHandle.handleOf(init), p.ints(),
                p.floats(), p.seed, Native.cstr(p.targetModules, "targetModules")));
    }

    /**
     * One batch of {@code nRows} rows of {@code nTokens} tokens ({@code tokens} and
     * {@code targets} row-major; negative targets ignored), then one optimizer step. Returns
     * the mean cross-entropy before the step.
     */
    public float step(int[] tokens, int[] targets, int nRows, int nTokens) {
        return Native.trainerStep(handle(), tokens, targets, nRows, nTokens, true);
    }

    /** The loss and gradient of one batch, without changing the adapter. */
    public float compute(int[] tokens, int[] targets, int nRows, int nTokens) {
        return Native.trainerStep(handle(), tokens, targets, nRows, nTokens, false);
    }

    /** One optimizer step with the gradient of the last {@link #compute}. */
    public void apply() {
        Native.trainerApply(handle());
    }

    /** The last gradient of one adapter tensor by PEFT name; {@code n} is its element count. */
    public float[] gradient(String name, int n) {
        return Native.trainerGradient(handle(), Native.cstr(name, "name"), n);
    }

    /** A snapshot of the current adapter, for sessions. */
    public Adapter adapter() {
        return new Adapter(Native.trainerGetAdapter(handle()));
    }

    /** Writes the current adapter as a PEFT folder, creating {@code dir} if needed. */
    public void saveAdapter(String dir) {
        Native.trainerSaveAdapter(handle(), Native.cstr(dir, "dir"));
    }

    /** The initial state rows start from, as a session state blob. */
    public byte[] state() {
        return Native.trainerGetState(handle());
    }

    /** Starts every row from a session state blob of this model. */
    public void setState(byte[] blob) {
        Native.trainerSetState(handle(), blob);
    }

    @Override
    void free(long h) {
        Native.trainerFree(h);
    }
}
