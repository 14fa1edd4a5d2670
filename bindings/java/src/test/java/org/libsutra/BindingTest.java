package org.libsutra;

import java.io.File;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Checks the Java binding against libsutra: run by tests/java_binding.rs as
 * {@code java -Djava.library.path=... org.libsutra.BindingTest REPO_ROOT SCRATCH_DIR}; exits
 * non-zero on the first failed check and prints {@code java binding ok: N checks} at the end.
 */
public final class BindingTest {
    private static int checks;

    private BindingTest() {}

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError("check failed: " + what);
        }
        checks++;
    }

    private interface Body {
        void run() throws Exception;
    }

    /** Runs {@code body}, which must throw a SutraException of {@code status}; returns it. */
    private static SutraException expectSutra(int status, String what, Body body) throws Exception {
        try {
            body.run();
        } catch (SutraException e) {
            check(e.getStatus() == status, what + ": status " + e.getStatusName() + " (" + e.getMessage() + ")");
            check(e.getStatusName().equals(Sutra.statusName(status)), what + ": status name " + e.getStatusName());
            check(!e.getDetail().isEmpty() && e.getMessage().contains(e.getDetail()), what + ": message");
            return e;
        }
        throw new AssertionError(what + ": no SutraException");
    }

    private static void expectIllegalState(String what, Body body) throws Exception {
        try {
            body.run();
        } catch (IllegalStateException e) {
            checks++;
            return;
        }
        throw new AssertionError(what + ": no IllegalStateException");
    }

    private static float maxDiff(float[] a, float[] b) {
        check(a.length == b.length, "same logits length");
        float d = 0;
        for (int i = 0; i < a.length; i++) {
            d = Math.max(d, Math.abs(a[i] - b[i]));
        }
        return d;
    }

    private static int argmax(float[] v) {
        int best = 0;
        for (int i = 1; i < v.length; i++) {
            if (v[i] > v[best]) {
                best = i;
            }
        }
        return best;
    }

    private static int[] concat(int[] a, int[] b) {
        int[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    @SuppressWarnings("try") // closes resources early on purpose: close is idempotent
    public static void main(String[] args) throws Exception {
        String root = args[0];
        String scratch = args[1];
        String modelPath = root + "/models/rwkv7-shakespeare-6x256/model-bf16.safetensors";
        String tokPath = root + "/models/rwkv7-shakespeare-6x256/tokenizer.json";

        check(Sutra.version().split("\\.").length == 3, "version " + Sutra.version());
        check(Sutra.systemInfo().contains("kernels:"), "system info " + Sutra.systemInfo());

        try (Model model = Model.load(modelPath, new Model.Params().nThreads(2));
                Tokenizer tok = Tokenizer.load(tokPath)) {
            ModelInfo info = model.info();
            check(info.getArchitecture().equals("rwkv7") && info.getVersion() == 7, "info " + info);
            check(info.getNVocab() == model.nVocab() && model.nVocab() > 0, "n_vocab " + model.nVocab());
            check(info.getNLayer() == 6 && info.getNEmbd() == 256, "shape " + info);
            check(tok.nVocab() > 0 && tok.nVocab() <= model.nVocab(), "tokenizer vocab " + tok.nVocab());

            // Text round trips through UTF-8 bytes, also outside the BMP (not JNI's modified UTF-8).
            for (String text : new String[] {"To be, or not to be", "na\u00efve caf\u00e9 \u2014 \ud83c\udfad!", ""}) {
                int[] ids = tok.encode(text);
                check(tok.decode(ids).equals(text), "round trip of '" + text + "': " + Arrays.toString(ids));
            }
            int[] prompt = concat(new int[] {0}, tok.encode("ROMEO:\nWhat light"));

            // Generation: seeded, twice the same text, streamed in pieces that make the text.
            String[] texts = new String[2];
            for (int run = 0; run < 2; run++) {
                final StringBuilder streamed = new StringBuilder();
                final int[] pieces = {0};
                try (Session s = new Session(model);
                        Sampler smp = new Sampler(42).topP(0.9f).temperature(0.8f).dist()) {
                    Generation g = Generation.generate(s, tok, smp, "ROMEO:\n", 40, new String[] {"\n\n\n"},
                            piece -> {
                                streamed.append(piece);
                                pieces[0]++;
                                return true;
                            });
                    check(g.getNGenerated() > 0 && g.getNPromptTokens() > 0, "generated tokens");
                    check(pieces[0] > 0 && streamed.toString().equals(g.getText()), "streamed text is the result");
                    texts[run] = g.getText();
                }
            }
            check(!texts[0].trim().isEmpty() && texts[0].equals(texts[1]), "same seed, same text: " + texts[0]);
            System.out.println("generated: " + texts[0].replace("\n", "\\n"));

            try (Session s = model.newSession(); Sampler smp = Sampler.greedySampler()) {
                // The callback stops generation...
                Generation g = Generation.generate(s, tok, smp, "ROMEO:\n", 50, null, piece -> false);
                check(g.getStopReason() == StopReason.CALLBACK && g.getNGenerated() <= 2, "callback stops: "
                        + g.getStopReason() + " after " + g.getNGenerated());
                // ...its exception propagates...
                final RuntimeException boom = new RuntimeException("boom");
                try {
                    Generation.generate(s, tok, smp, "ROMEO:\n", 50, null, piece -> {
                        throw boom;
                    });
                    throw new AssertionError("the callback's exception must propagate");
                } catch (RuntimeException e) {
                    check(e == boom, "the callback's own exception: " + e);
                }
                // ...and it may not use or close the session libsutra is generating with.
                expectIllegalState("session used inside its generate", () -> Generation.generate(s, tok, smp, "A",
                        5, null, piece -> {
                            s.eval(new int[] {1});
                            return true;
                        }));
                expectIllegalState("session closed inside its generate", () -> Generation.generate(s, tok, smp, "A",
                        5, null, piece -> {
                            s.close();
                            return true;
                        }));
                check(!s.isClosed() && s.eval(new int[] {1}).length == model.nVocab(), "session usable after");
                Generation max = Generation.generate(s, tok, smp, "KING:\n",
                        new Generation.Options().maxTokens(3), null);
                check(max.getStopReason() == StopReason.MAX_TOKENS && max.getNGenerated() == 3, "max tokens");
                expectSutra(SutraException.INVALID_ARGUMENT, "null tokenizer",
                        () -> Generation.generate(s, null, smp, "A", 5, null, null));
            }

            // State: save, continue, restore, continue again: identical logits.
            int[] next = tok.encode(", that through yonder");
            try (Session s = new Session(model)) {
                float[] afterPrompt = s.eval(prompt);
                check(afterPrompt.length == model.nVocab(), "logits length");
                byte[] blob = s.saveState();
                check(blob.length > 0, "state blob");
                float[] a = s.eval(next);
                s.loadState(blob);
                float[] b = s.eval(next);
                check(Arrays.equals(a, b), "logits identical after restoring the state");

                // A corrupted blob is refused and changes nothing.
                byte[] bad = blob.clone();
                bad[bad.length / 2] ^= 0x55;
                s.loadState(blob);
                expectSutra(SutraException.FORMAT, "corrupted state blob", () -> s.loadState(bad));
                check(Arrays.equals(s.eval(next), a), "session unchanged by a refused blob");

                // Clone: both continue independently from the same state.
                s.loadState(blob);
                try (Session c = s.clone()) {
                    float[] fromClone = c.eval(next);
                    s.eval(tok.encode(" something else entirely"));
                    check(Arrays.equals(fromClone, a), "clone continues like the original");
                    c.reset();
                    check(Arrays.equals(c.eval(prompt), afterPrompt), "reset clone replays the prompt");
                }

                // The single-token path agrees with the sequence path.
                s.reset();
                check(maxDiff(s.evalStepwise(prompt), afterPrompt) < 1e-4f, "stepwise equals sequence eval");
            }

            // Batch eval equals separate evals.
            int[][] rows = {prompt, tok.encode("JULIET:\nO Romeo"), {0}};
            Session[] batch = new Session[rows.length];
            Session[] single = new Session[rows.length];
            for (int i = 0; i < rows.length; i++) {
                batch[i] = new Session(model);
                single[i] = new Session(model);
                batch[i].eval(new int[] {0, 11 + i});
                single[i].eval(new int[] {0, 11 + i});
            }
            float[][] got = Session.evalBatch(batch, rows);
            check(got.length == rows.length, "one logits row per session");
            for (int i = 0; i < rows.length; i++) {
                float d = maxDiff(got[i], single[i].eval(rows[i]));
                check(d < 1e-4f, "batch row " + i + " equals a separate eval (max diff " + d + ")");
            }
            final Session b0 = batch[0];
            final Session b1 = batch[1];
            SutraException dup = expectSutra(SutraException.INVALID_ARGUMENT, "a session twice in a batch",
                    () -> Session.evalBatch(new Session[] {b0, b0}, new int[][] {{1}, {2}}));
            check(dup.getDetail().contains("distinct"), "message names the repeat: " + dup.getDetail());
            expectSutra(SutraException.INVALID_ARGUMENT, "rows and sessions differ",
                    () -> Session.evalBatch(new Session[] {b0, b1}, new int[][] {{1}}));
            check(Session.evalBatch(new Session[0], new int[0][]).length == 0, "an empty batch does nothing");
            expectSutra(SutraException.INVALID_ARGUMENT, "empty row",
                    () -> Session.evalBatch(new Session[] {b0, b1}, new int[][] {{1}, {}}));
            for (int i = 0; i < rows.length; i++) {
                batch[i].close();
                single[i].close();
            }

            // Sampler: greedy is the argmax; a seeded chain repeats itself after reset.
            try (Session s = new Session(model); Sampler greedy = Sampler.greedySampler();
                    Sampler drawn = new Sampler(7).penalties(64, 1.1f, 0f, 0f).topK(40).minP(0.05f)
                            .temperature(1.0f).dist()) {
                float[] logits = s.eval(prompt);
                check(greedy.sample(logits) == argmax(logits), "greedy is the argmax");
                List<Integer> first = new ArrayList<>();
                List<Integer> second = new ArrayList<>();
                for (List<Integer> out : Arrays.asList(first, second)) {
                    drawn.reset();
                    for (int i = 0; i < 8; i++) {
                        int t = drawn.sample(logits);
                        drawn.accept(t);
                        out.add(t);
                    }
                }
                check(first.equals(second), "seeded sampler repeats after reset: " + first);
                try (Sampler banned = Sampler.greedySampler()) {
                    banned.close();
                    expectIllegalState("sampler after close", () -> banned.sample(logits));
                }
                try (Sampler biased = new Sampler(0)) {
                    int top = argmax(logits);
                    biased.logitBias(new int[] {top}, new float[] {Float.NEGATIVE_INFINITY}).greedy();
                    check(biased.sample(logits) != top, "a banned token is never picked");
                }
                try (Sampler odd = new Sampler(0)) {
                    expectSutra(SutraException.INVALID_ARGUMENT, "bias lengths differ",
                            () -> odd.logitBias(new int[] {1, 2}, new float[] {1f}));
                }
            }

            // Loading from memory gives the same model.
            byte[] bytes = Files.readAllBytes(Paths.get(modelPath));
            try (Model fromBytes = Model.loadFromMemory(bytes, null);
                    RandomAccessFile raf = new RandomAccessFile(modelPath, "r");
                    Session s1 = new Session(model); Session s2 = new Session(fromBytes)) {
                ByteBuffer mapped = raf.getChannel().map(FileChannel.MapMode.READ_ONLY, 0, raf.length());
                try (Model fromBuffer = Model.loadFromMemory(mapped, null); Session s3 = new Session(fromBuffer)) {
                    float[] ref = s1.eval(prompt);
                    check(Arrays.equals(ref, s2.eval(prompt)), "model from bytes gives the same logits");
                    check(Arrays.equals(ref, s3.eval(prompt)), "model from a mapped buffer gives the same logits");
                }
            }
            expectSutra(SutraException.FORMAT, "garbage bytes", () -> Model.loadFromMemory(new byte[64], null));

            // LoRA: train a few steps, save, load, attach, detach.
            int[] text = tok.encode("ROMEO:\nBut soft, what light through yonder window breaks?\n"
                    + "It is the east, and Juliet is the sun.\n");
            int[] tokens = Arrays.copyOf(text, text.length - 1);
            int[] targets = Arrays.copyOfRange(text, 1, text.length);
            TrainParams tp = new TrainParams();
            tp.loraRank = 4;
            tp.learningRate = 1e-2f;
            tp.seed = 1;
            String adapterDir = new File(scratch, "adapter").getPath();
            try (Trainer trainer = Trainer.create(model, tp)) {
                float first = trainer.step(tokens, targets, 1, tokens.length);
                float last = first;
                for (int i = 0; i < 4; i++) {
                    last = trainer.step(tokens, targets, 1, tokens.length);
                }
                check(first > 0 && last < first, "training lowers the loss: " + first + " -> " + last);
                trainer.saveAdapter(adapterDir);
                expectSutra(SutraException.INVALID_ARGUMENT, "tokens and targets of different sizes",
                        () -> trainer.step(tokens, targets, 2, tokens.length));
                try (Adapter snap = trainer.adapter(); Session s = new Session(model)) {
                    s.setAdapter(snap, 1f);
                    check(s.eval(prompt).length == model.nVocab(), "snapshot adapter evaluates");
                }
            }
            check(new File(adapterDir, "adapter_config.json").isFile(), "adapter folder written");
            try (Adapter adapter = Adapter.load(model, adapterDir); Session s = new Session(model)) {
                float[] base = s.eval(prompt);
                s.reset();
                s.setAdapter(adapter, 1f);
                adapter.close(); // the session keeps its own reference
                float[] tuned = s.eval(prompt);
                check(maxDiff(base, tuned) > 1e-3f, "the adapter changes the logits");
                s.reset();
                s.clearAdapters();
                check(Arrays.equals(s.eval(prompt), base), "detaching restores the base logits exactly");
            }
            expectSutra(SutraException.IO, "missing adapter",
                    () -> Adapter.load(model, scratch + "/no-such-adapter"));

            // Null and invalid arguments are exceptions, not crashes.
            try (Session s = new Session(model)) {
                expectSutra(SutraException.INVALID_ARGUMENT, "null tokens", () -> s.eval(null));
                expectSutra(SutraException.INVALID_ARGUMENT, "no tokens", () -> s.eval(new int[0]));
                expectSutra(SutraException.INVALID_ARGUMENT, "token out of range",
                        () -> s.eval(new int[] {model.nVocab()}));
                expectSutra(SutraException.INVALID_ARGUMENT, "null blob", () -> s.loadState(null));
                expectSutra(SutraException.INVALID_ARGUMENT, "null text", () -> tok.encode(null));
                expectSutra(SutraException.INVALID_ARGUMENT, "null ids", () -> tok.decode(null));
                expectSutra(SutraException.INVALID_ARGUMENT, "negative id", () -> tok.decode(new int[] {-1}));
                expectSutra(SutraException.INVALID_ARGUMENT, "null model", () -> new Session(null));
                expectSutra(SutraException.INVALID_ARGUMENT, "NUL in a path", () -> Model.load("a\0b"));
            }
            SutraException nul = expectSutra(SutraException.INVALID_ARGUMENT, "null path", () -> Model.load(null));
            check(nul.getDetail().contains("path"), "message names the argument: " + nul.getDetail());

            // Handles: close is idempotent; use after close throws; sessions outlive their model.
            Model second = Model.load(modelPath, 1, false);
            Session orphan = second.newSession();
            second.close();
            second.close();
            check(second.isClosed(), "closed");
            expectIllegalState("model after close", second::info);
            expectIllegalState("session from a closed model", () -> new Session(second));
            check(orphan.eval(prompt).length == model.nVocab(), "a session keeps its closed model alive");
            orphan.close();
            orphan.close();
            expectIllegalState("session after close", () -> orphan.eval(new int[] {1}));
            expectIllegalState("clone after close", orphan::clone);
        }

        // A missing file: SUTRA_ERR_IO naming the path.
        final String missing = "/no/such/dir/model.safetensors";
        SutraException e = expectSutra(SutraException.IO, "missing model", () -> Model.load(missing));
        check(e.getStatusName().equals("SUTRA_ERR_IO") && e.getMessage().contains(missing),
                "message names the path: " + e.getMessage());
        SutraException te = expectSutra(SutraException.IO, "missing tokenizer",
                () -> Tokenizer.load("/no/such/tokenizer.json"));
        check(te.getMessage().contains("/no/such/tokenizer.json"), "tokenizer message names the path");

        System.out.println("java binding ok: " + checks + " checks");
    }
}
