package org.libsutra;

/** Why a generation stopped ({@code sutra_stop_reason}). */
public enum StopReason {
    /** maxTokens were generated. */
    MAX_TOKENS,
    /** A stop token was sampled (not emitted, not fed). */
    STOP_TOKEN,
    /** A stop string appeared (not emitted). */
    STOP_STRING,
    /** The callback returned false. */
    CALLBACK;

    static StopReason of(int code) {
        StopReason[] all = values();
        if (code < 0 || code >= all.length) {
            throw new SutraException(SutraException.INTERNAL, Native.statusName(SutraException.INTERNAL),
                    "unknown stop reason " + code);
        }
        return all[code];
    }
}
