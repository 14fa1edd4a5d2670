package org.libsutra;

/**
 * Hyper-parameters of a {@link Trainer} ({@code sutra_train_params}); a new object holds
 * libsutra's defaults ({@code sutra_train_default_params}). Plain public fields, so that Kotlin
 * reads {@code TrainParams().apply { loraRank = 4; learningRate = 1e-2f }}.
 */
public final class TrainParams {
    /** r of a new adapter. */
    public int loraRank;
    /** lora_alpha of a new adapter. */
    public float loraAlpha;
    /** Comma-separated module-name suffixes ("att.key,ffn.value"); null: every block matrix. */
    public String targetModules;
    /** Seed of a new adapter's A. */
    public long seed;
    /** AdamW learning rate. */
    public float learningRate;
    /** AdamW beta1. */
    public float beta1;
    /** AdamW beta2. */
    public float beta2;
    /** AdamW epsilon. */
    public float eps;
    /** Decoupled weight decay. */
    public float weightDecay;
    /** Max global L2 norm of the gradient; 0 = none. */
    public float gradClip;
    /** Tokens per BPTT chunk; 0: the whole row at once. */
    public int bpttChunk;
    /** State tuning: 0 adapter only, 1 adapter and initial state, 2 initial state only. */
    public int trainState;
    /** Learning rate of the initial state; 0: learningRate. */
    public float stateLearningRate;

    /** libsutra's defaults. */
    public TrainParams() {
        int[] i = new int[3];
        float[] f = new float[8];
        long[] l = new long[1];
        Native.trainDefaultParams(i, f, l);
        loraRank = i[0];
        bpttChunk = i[1];
        trainState = i[2];
        loraAlpha = f[0];
        learningRate = f[1];
        beta1 = f[2];
        beta2 = f[3];
        eps = f[4];
        weightDecay = f[5];
        gradClip = f[6];
        stateLearningRate = f[7];
        seed = l[0];
    }

    int[] ints() {
        return new int[] {loraRank, bpttChunk, trainState};
    }

    float[] floats() {
        return new float[] {loraAlpha, learningRate, beta1, beta2, eps, weightDecay, gradClip, stateLearningRate};
    }
}
