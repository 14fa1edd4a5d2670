package org.libsutra;

/**
 * A Hugging Face {@code tokenizer.json} (BPE, WordPiece, Unigram) or an RWKV world vocabulary.
 * Immutable and shareable by threads.
 */
public final class Tokenizer extends SutraHandle {
    private Tokenizer(long h) {
        super("Tokenizer", h);
    }

    /** Loads {@code tokenizer.json} or {@code rwkv_vocab_v20230424.txt}. */
    public static Tokenizer load(String path) {
        return new Tokenizer(Native.tokenizerLoad(Native.cstr(path, "path")));
    }

    /** The ids of {@code text}, without special tokens. */
    public int[] encode(String text) {
        return encode(text, false);
    }

    /** The ids of {@code text}; {@code addSpecialTokens} applies the tokenizer's template. */
    public int[] encode(String text, boolean addSpecialTokens) {
        if (text == null) {
            throw SutraException.invalidArgument("text is null");
        }
        return Native.tokenize(handle(), Native.utf8(text), addSpecialTokens);
    }

    /** The text of {@code ids} (bytes that are not valid UTF-8 become U+FFFD). */
    public String decode(int[] ids) {
        if (ids == null) {
            throw SutraException.invalidArgument("ids is null");
        }
        return Native.string(Native.detokenize(handle(), ids));
    }

    /** Number of token ids (largest id + 1). */
    public int nVocab() {
        return Native.tokenizerNVocab(handle());
    }

    /** The id of the token spelled {@code token}, or -1. */
    public int tokenId(String token) {
        return Native.tokenizerTokenId(handle(), Native.cstr(token, "token"));
    }

    @Override
    void free(long h) {
        Native.tokenizerFree(h);
    }
}
