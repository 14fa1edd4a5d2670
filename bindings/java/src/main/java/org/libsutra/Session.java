package org.libsutra;

/**
 * One sequence's recurrent state over a {@link Model}. Used by one thread at a time; sessions
 * of one model are independent. The session keeps its model's weights alive.
 */
public final class Session extends SutraHandle {
    private final int nVocab;

    /** A session at the initial state of {@code model}. */
    public Session(Model model) {
        this(Native.sessionNew(handleOf(model)), model == null ? 0 : model.nVocab());
    }

    private Session(long h, int nVocab) {
        super("Session", h);
        this.nVocab = nVocab;
    }

    /** Vocabulary size of the model (the length of the logits). */
    public int nVocab() {
        handle();
        return nVocab;
    }

    /** Feeds {@code tokens} (at least one) and returns the logits after the last. */
    public float[] eval(int[] tokens) {
        return Native.sessionEval(handle(), tokens, nVocab, false, true);
    }

    /** Feeds {@code tokens} without computing the logits. */
    public void feed(int[] tokens) {
        Native.sessionEval(handle(), tokens, nVocab, false, false);
    }

    /** Like {@link #eval} but one token at a time (the single-token path). */
    public float[] evalStepwise(int[] tokens) {
        return Native.sessionEval(handle(), tokens, nVocab, true, true);
    }

    /**
     * Advances distinct sessions of one model in one pass: {@code sessions[i]} is fed
     * {@code tokens[i]}. Returns each session's logits after its last token, the same as
     * separate {@link #eval} calls (to float rounding). On error no session is changed.
     */
    public static float[][] evalBatch(Session[] sessions, int[][] tokens) {
        if (sessions == null || tokens == null) {
            throw SutraException.invalidArgument(sessions == null ? "sessions is null" : "tokens is null");
        }
        if (sessions.length != tokens.length) {
            throw SutraException.invalidArgument("sessions (" + sessions.length + ") and tokens ("
                    + tokens.length + ") must have the same length");
        }
        int n = sessions.length;
        long[] hs = new long[n];
        int[] lens = new int[n];
        long total = 0;
        int v = 0;
        for (int i = 0; i < n; i++) {
            if (sessions[i] == null) {
                throw SutraException.invalidArgument("sessions[" + i + "] is null");
            }
            if (tokens[i] == null) {
                throw SutraException.invalidArgument("tokens[" + i + "] is null");
            }
            hs[i] = sessions[i].handle();
            if (i == 0) {
                v = sessions[0].nVocab;
            } else if (sessions[i].nVocab != v) {
                throw SutraException.invalidArgument("sessions[" + i + "] is of a model with another vocabulary");
            }
            lens[i] = tokens[i].length;
            total += lens[i];
        }
        if (total > Integer.MAX_VALUE) {
            throw SutraException.invalidArgument("more than 2^31-1 tokens in one batch");
        }
        int[] flat = new int[(int) total];
        int at = 0;
        for (int[] row : tokens) {
            System.arraycopy(row, 0, flat, at, row.length);
            at += row.length;
        }
        if (n == 0) {
            return new float[0][]; // as sutra_batch_eval: nothing to advance
        }
        float[] all = Native.batchEval(hs, flat, lens, v);
        float[][] out = new float[n][v];
        for (int i = 0; i < n; i++) {
            System.arraycopy(all, i * v, out[i], 0, v);
        }
        return out;
    }

    /** Back to the initial (empty-context) state; the adapters stay attached. */
    public void reset() {
        Native.sessionReset(handle());
    }

    /** A new session with a copy of this state (and adapters); both continue independently. */
    @Override
    public Session clone() {
        return new Session(Native.sessionClone(handle()), nVocab);
    }

    /** The recurrent state as a blob (versioned, fingerprinted, checksummed; no adapters). */
    public byte[] saveState() {
        return Native.sessionStateSave(handle());
    }

    /**
     * Restores a blob of {@link #saveState} from a model of the same shape. A foreign or
     * corrupted blob throws (SUTRA_ERR_FORMAT) and leaves the session unchanged.
     */
    public void loadState(byte[] blob) {
        Native.sessionStateLoad(handle(), blob);
    }

    /** From the next eval on computes with {@code adapter} at {@code scale} (0 detaches it). */
    public void setAdapter(Adapter adapter, float scale) {
        Native.sessionSetAdapter(handle(), handleOf(adapter), scale);
    }

    /** Detaches every adapter (the recurrent state is kept). */
    public void clearAdapters() {
        Native.sessionClearAdapters(handle());
    }

    @Override
    void free(long h) {
        Native.sessionFree(h);
    }
}
