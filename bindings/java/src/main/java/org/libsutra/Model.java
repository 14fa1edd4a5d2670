package org.libsutra;

import java.nio.ByteBuffer;

/**
 * A loaded checkpoint (RWKV or Mamba safetensors, or a libsutra quantized file). Immutable and
 * shareable by threads. Sessions keep the weights alive after the model is closed.
 *
 * <pre>{@code
 * try (Model m = Model.load(path, new Model.Params().nThreads(4))) { ... }
 * }</pre>
 */
public final class Model extends SutraHandle {
    /** How to load a model; starts from libsutra's defaults (all cores, mmap on). */
    public static final class Params {
        private int nThreads;
        private boolean useMmap;
        private boolean checkFinite;

        /** libsutra's defaults ({@code sutra_model_default_params}). */
        public Params() {
            int[] d = new int[3];
            Native.modelDefaultParams(d);
            nThreads = d[0];
            useMmap = d[1] != 0;
            checkFinite = d[2] != 0;
        }

        /** Worker threads for this model's products; 0 = one per available core. */
        public Params nThreads(int n) {
            nThreads = n;
            return this;
        }

        /** Map the file (true, default) or read it into memory (false). */
        public Params useMmap(boolean on) {
            useMmap = on;
            return this;
        }

        /** Scan every weight for NaN/Inf at load (a full read of the file). */
        public Params checkFinite(boolean on) {
            checkFinite = on;
            return this;
        }

        public int getNThreads() {
            return nThreads;
        }

        public boolean getUseMmap() {
            return useMmap;
        }

        public boolean getCheckFinite() {
            return checkFinite;
        }
    }

    private final int nVocab;

    private Model(long h) {
        super("Model", h);
        nVocab = Native.modelNVocab(h);
    }

    /** Loads {@code path} with the default parameters. */
    public static Model load(String path) {
        return load(path, new Params());
    }

    /** Loads {@code path} with {@code nThreads} workers (0 = all cores), mapped or read. */
    public static Model load(String path, int nThreads, boolean useMmap) {
        return load(path, new Params().nThreads(nThreads).useMmap(useMmap));
    }

    /** Loads {@code path}; {@code params} null means the defaults. */
    public static Model load(String path, Params params) {
        Params p = params == null ? new Params() : params;
        return new Model(Native.modelLoad(Native.cstr(path, "path"), p.nThreads, p.useMmap, p.checkFinite));
    }

    /** Loads a checkpoint from bytes (copied; the array may be reused afterwards). */
    public static Model loadFromMemory(byte[] data, Params params) {
        Params p = params == null ? new Params() : params;
        return new Model(Native.modelLoadFromBytes(data, p.nThreads, p.useMmap, p.checkFinite));
    }

    /**
     * Loads a checkpoint from the remaining bytes of a buffer (copied). A direct buffer, such as
     * a memory-mapped Android asset ({@code AssetFileDescriptor} + {@code FileChannel.map}), is
     * read in place without a copy on the Java heap.
     */
    public static Model loadFromMemory(ByteBuffer data, Params params) {
        Params p = params == null ? new Params() : params;
        if (data != null && !data.isDirect()) {
            byte[] copy = new byte[data.remaining()];
            data.duplicate().get(copy);
            return loadFromMemory(copy, p);
        }
        long off = data == null ? 0 : data.position();
        long len = data == null ? 0 : data.remaining();
        return new Model(Native.modelLoadFromBuffer(data, off, len, p.nThreads, p.useMmap, p.checkFinite));
    }

    /** Vocabulary size (the length of every logits array). */
    public int nVocab() {
        handle();
        return nVocab;
    }

    /** Architecture and sizes, as read from the checkpoint. */
    public ModelInfo info() {
        long[] v = new long[10];
        String arch = Native.modelInfo(handle(), v);
        return new ModelInfo(arch, v);
    }

    /** A new session at the model's initial state (same as {@code new Session(model)}). */
    public Session newSession() {
        return new Session(this);
    }

    @Override
    void free(long h) {
        Native.modelFree(h);
    }
}
