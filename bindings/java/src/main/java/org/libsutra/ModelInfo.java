package org.libsutra;

/** What a model is ({@code sutra_model_info}). */
public final class ModelInfo {
    /** {@code sutra_family}: RWKV. */
    public static final int FAMILY_RWKV = 0;
    /** {@code sutra_family}: Mamba. */
    public static final int FAMILY_MAMBA = 1;

    private final String architecture;
    private final long[] v;

    ModelInfo(String architecture, long[] values) {
        this.architecture = architecture;
        this.v = values.clone();
    }

    /** Architecture name: "rwkv7", "mamba2", ... */
    public String getArchitecture() {
        return architecture;
    }

    /** {@link #FAMILY_RWKV} or {@link #FAMILY_MAMBA}. */
    public int getFamily() {
        return (int) v[0];
    }

    /** Version within the family (RWKV 4..7, Mamba 1..2). */
    public int getVersion() {
        return (int) v[1];
    }

    public int getNLayer() {
        return (int) v[2];
    }

    public int getNEmbd() {
        return (int) v[3];
    }

    public int getNVocab() {
        return (int) v[4];
    }

    /** Heads (0 where the architecture has none). */
    public int getNHead() {
        return (int) v[5];
    }

    /** Head size (0 where none). */
    public int getHeadSize() {
        return (int) v[6];
    }

    /** Elements of every tensor in the file. */
    public long getNParams() {
        return v[7];
    }

    /** {@code sutra_dtype} of the large matrices (0 f32, 1 f16, 2 bf16, 6 q8, 7 q4, ...). */
    public int getWeightDtype() {
        return (int) v[8];
    }

    /** Weight bytes read to decode one token. */
    public long getBytesPerToken() {
        return v[9];
    }

    @Override
    public String toString() {
        return architecture + " (" + getNLayer() + " layers x " + getNEmbd() + ", vocab " + getNVocab()
                + ", " + getNParams() + " params)";
    }
}
