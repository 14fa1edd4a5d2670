package org.libsutra;

import java.nio.charset.StandardCharsets;

/**
 * Streamed text generation ({@code sutra_generate}): feeds the prompt to a session, then
 * samples, feeds back and hands out text until maxTokens, a stop token, a stop string or the
 * callback says stop. The session keeps the state after the last fed token, so a chat
 * continues with the next prompt. The result holds the whole generated text and the counts.
 *
 * <pre>{@code
 * Generation g = Generation.generate(session, tokenizer, sampler, "ROMEO:\n", 200,
 *         new String[] {"\n\n"}, piece -> { System.out.print(piece); return true; });
 * }</pre>
 */
public final class Generation {
    /** What {@code sutra_generate_params} holds; defaults as libsutra's: 128 tokens, no stops, no special tokens. */
    public static final class Options {
        private int maxTokens = 128;
        private String[] stopStrings = new String[0];
        private int[] stopTokens = new int[0];
        private boolean addSpecialTokens;

        /** Most tokens to generate (default 128). */
        public Options maxTokens(int n) {
            maxTokens = n;
            return this;
        }

        /** Strings that end generation (never emitted, even split across tokens). */
        public Options stopStrings(String... s) {
            stopStrings = s;
            return this;
        }

        /** Token ids that end generation (not emitted, not fed). */
        public Options stopTokens(int... t) {
            stopTokens = t;
            return this;
        }

        /** Apply the tokenizer's special-token template to the prompt. */
        public Options addSpecialTokens(boolean on) {
            addSpecialTokens = on;
            return this;
        }
    }

    private final String text;
    private final int nPromptTokens;
    private final int nGenerated;
    private final StopReason stopReason;

    private Generation(String text, int[] r) {
        this.text = text;
        this.nPromptTokens = r[0];
        this.nGenerated = r[1];
        this.stopReason = StopReason.of(r[2]);
    }

    /** The text generated (the pieces the callback received, concatenated). */
    public String getText() {
        return text;
    }

    /** Tokens the prompt encoded to. */
    public int getNPromptTokens() {
        return nPromptTokens;
    }

    /** Tokens generated and fed to the session. */
    public int getNGenerated() {
        return nGenerated;
    }

    /** Why generation stopped. */
    public StopReason getStopReason() {
        return stopReason;
    }

    /**
     * Generates up to {@code maxTokens} tokens after {@code prompt}; {@code stopStrings} and
     * {@code callback} may be null.
     */
    public static Generation generate(Session session, Tokenizer tokenizer, Sampler sampler, String prompt,
            int maxTokens, String[] stopStrings, PieceCallback callback) {
        Options o = new Options().maxTokens(maxTokens);
        if (stopStrings != null) {
            o.stopStrings(stopStrings);
        }
        return generate(session, tokenizer, sampler, prompt, o, callback);
    }

    /** Generates with all the options; {@code callback} may be null. */
    public static Generation generate(Session session, Tokenizer tokenizer, Sampler sampler, String prompt,
            Options options, PieceCallback callback) {
        Options o = options == null ? new Options() : options;
        if (prompt == null) {
            throw SutraException.invalidArgument("prompt is null");
        }
        String[] stops = o.stopStrings == null ? new String[0] : o.stopStrings;
        byte[][] cs = new byte[stops.length][];
        for (int i = 0; i < stops.length; i++) {
            if (stops[i] == null) {
                throw SutraException.invalidArgument("stopStrings[" + i + "] is null");
            }
            cs[i] = Native.cstr(stops[i], "stopStrings[" + i + "]");
        }
        Sink sink = new Sink(callback);
        long s = SutraHandle.handleOf(session);
        long t = SutraHandle.handleOf(tokenizer);
        long smp = SutraHandle.handleOf(sampler);
        // The callback may not use or close the session or sampler while libsutra holds them.
        if (session != null) {
            session.enter();
        }
        try {
            if (sampler != null) {
                sampler.enter();
            }
            try {
                int[] r = Native.generate(s, t, smp, prompt.getBytes(StandardCharsets.UTF_8), o.maxTokens, cs,
                        o.stopTokens, o.addSpecialTokens, sink);
                return new Generation(sink.text.toString(), r);
            } finally {
                if (sampler != null) {
                    sampler.exit();
                }
            }
        } finally {
            if (session != null) {
                session.exit();
            }
        }
    }

    /** Called by the JNI glue with each piece's UTF-8 bytes. */
    static final class Sink {
        final PieceCallback callback;
        final StringBuilder text = new StringBuilder();

        Sink(PieceCallback callback) {
            this.callback = callback;
        }

        boolean piece(byte[] utf8) {
            String p = new String(utf8, StandardCharsets.UTF_8);
            text.append(p);
            return callback == null || callback.onPiece(p);
        }
    }
}
