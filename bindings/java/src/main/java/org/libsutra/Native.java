package org.libsutra;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * The native methods of libsutra_jni (src/main/c/sutra_jni.c), one per C call or close to it.
 * Handles are the C pointers as longs; 0 is NULL, which libsutra reports as
 * SUTRA_ERR_INVALID_ARGUMENT naming the argument. Text crosses as UTF-8 bytes.
 */
final class Native {
    private Native() {}

    static {
        // On Android (API < 23) and on desktop JVMs without an rpath, libsutra.so must be loaded
        // before the glue that needs it; where the dynamic linker finds it anyway this may fail.
        try {
            System.loadLibrary("sutra");
        } catch (UnsatisfiedLinkError ignored) {
            // libsutra_jni's own dependency lookup (rpath, the app's lib folder) still applies.
        }
        System.loadLibrary("sutra_jni");
    }

    /** UTF-8 bytes of {@code s} with a final NUL for C; null stays null (libsutra names it). */
    static byte[] cstr(String s, String what) {
        if (s == null) {
            return null;
        }
        if (s.indexOf('\0') >= 0) {
            throw SutraException.invalidArgument(what + " contains a NUL character");
        }
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        byte[] z = new byte[b.length + 1];
        System.arraycopy(b, 0, z, 0, b.length);
        return z;
    }

    /** UTF-8 bytes of {@code s} (no NUL); null stays null. */
    static byte[] utf8(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    static String string(byte[] utf8) {
        return new String(utf8, StandardCharsets.UTF_8);
    }

    static native String version();

    static native String systemInfo();

    static native String statusName(int status);

    static native void modelDefaultParams(int[] out);

    static native long modelLoad(byte[] path, int nThreads, boolean useMmap, boolean checkFinite);

    static native long modelLoadFromBytes(byte[] data, int nThreads, boolean useMmap, boolean checkFinite);

    static native long modelLoadFromBuffer(
            ByteBuffer buffer, long offset, long len, int nThreads, boolean useMmap, boolean checkFinite);

    static native void modelFree(long model);

    static native int modelNVocab(long model);

    static native String modelInfo(long model, long[] out);

    static native long sessionNew(long model);

    static native void sessionFree(long session);

    static native void sessionReset(long session);

    static native long sessionClone(long session);

    static native float[] sessionEval(long session, int[] tokens, int nVocab, boolean stepwise, boolean wantLogits);

    static native float[] batchEval(long[] sessions, int[] flatTokens, int[] rowLengths, int nVocab);

    static native byte[] sessionStateSave(long session);

    static native void sessionStateLoad(long session, byte[] blob);

    static native void sessionSetAdapter(long session, long adapter, float scale);

    static native void sessionClearAdapters(long session);

    static native long tokenizerLoad(byte[] path);

    static native void tokenizerFree(long tokenizer);

    static native int tokenizerNVocab(long tokenizer);

    static native int tokenizerTokenId(long tokenizer, byte[] token);

    static native int[] tokenize(long tokenizer, byte[] text, boolean addSpecialTokens);

    static native byte[] detokenize(long tokenizer, int[] ids);

    static native long samplerNew(long seed);

    static native void samplerFree(long sampler);

    static native void samplerAddGreedy(long sampler);

    static native void samplerAddDist(long sampler);

    static native void samplerAddTemperature(long sampler, float t);

    static native void samplerAddTopK(long sampler, int k);

    static native void samplerAddTopP(long sampler, float p, int minKeep);

    static native void samplerAddMinP(long sampler, float p);

    static native void samplerAddPenalties(long sampler, int lastN, float repeat, float frequency, float presence);

    static native void samplerAddRwkvPresence(long sampler, float presence, float frequency, float decay);

    static native void samplerAddLogitBias(long sampler, int[] ids, float[] bias);

    static native int samplerSample(long sampler, float[] logits);

    static native void samplerAccept(long sampler, int token);

    static native void samplerReset(long sampler);

    static native int[] generate(
            long session,
            long tokenizer,
            long sampler,
            byte[] prompt,
            int maxTokens,
            byte[][] stopStrings,
            int[] stopTokens,
            boolean addSpecialTokens,
            Object sink);

    static native long adapterLoad(long model, byte[] path);

    static native void adapterFree(long adapter);

    static native void trainDefaultParams(int[] ints, float[] floats, long[] longs);

    static native long trainerNew(long model, long init, int[] ints, float[] floats, long seed, byte[] targetModules);

    static native void trainerFree(long trainer);

    static native float trainerStep(long trainer, int[] tokens, int[] targets, int nRows, int nTokens, boolean apply);

    static native void trainerApply(long trainer);

    static native float[] trainerGradient(long trainer, byte[] name, int n);

    static native long trainerGetAdapter(long trainer);

    static native void trainerSaveAdapter(long trainer, byte[] dir);

    static native byte[] trainerGetState(long trainer);

    static native void trainerSetState(long trainer, byte[] blob);
}
