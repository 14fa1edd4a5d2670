/* finetune: LoRA-fine-tune a model on a text file, on the CPU, through the C API only.
 *
 *   finetune MODEL TOKENIZER TEXT OUT_DIR [STEPS] [CTX]
 *
 * Trains a new rank-8 adapter on every block matrix (AdamW, lr 3e-3) over windows of CTX
 * tokens of TEXT, two rows per step, printing the loss as it falls; saves the adapter as a
 * PEFT folder in OUT_DIR; then writes 40 tokens greedily after "ROMEO:" without and with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sutra.h"

static int fail(const char *what, sutra_status st) {
    fprintf(stderr, "\n%s failed: %s: %s\n", what, sutra_status_name(st), sutra_last_error());
    return 1;
}

static bool print_piece(const char *piece, size_t len, void *user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    return true;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; *len = (size_t)n; }
    return buf;
}

/* Greedy text after the prompt, with the adapter attached when it is not NULL. */
static sutra_status write_sample(sutra_model *model, sutra_tokenizer *tok, sutra_adapter *adapter, const char *label) {
    sutra_session *s = NULL;
    sutra_sampler *smp = NULL;
    sutra_status st = sutra_session_new(model, &s);
    if (st == SUTRA_OK && adapter) st = sutra_session_set_adapter(s, adapter, 1.0f);
    if (st == SUTRA_OK) st = sutra_sampler_new(1, &smp);
    if (st == SUTRA_OK) st = sutra_sampler_add_greedy(smp);
    if (st == SUTRA_OK) {
        sutra_generate_params gp = sutra_generate_default_params();
        gp.max_tokens = 40;
        printf("--- %s ---\nROMEO:\n", label);
        st = sutra_generate(s, tok, smp, "ROMEO:\n", 7, &gp, print_piece, NULL, NULL);
        printf("\n");
    }
    sutra_sampler_free(smp);
    sutra_session_free(s);
    return st;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER TEXT OUT_DIR [STEPS] [CTX]\n", argv[0]);
        return 2;
    }
    int steps = argc > 5 ? atoi(argv[5]) : 20;
    size_t ctx = argc > 6 ? (size_t)atoi(argv[6]) : 64;
    const size_t rows = 2;
    int rc = 1;
    sutra_model *model = NULL;
    sutra_tokenizer *tok = NULL;
    sutra_trainer *trainer = NULL;
    sutra_adapter *adapter = NULL;
    int32_t *ids = NULL, *tokens = NULL, *targets = NULL;
    char *text = NULL;
    sutra_status st;

    size_t text_len = 0;
    if (!(text = read_file(argv[3], &text_len))) { fprintf(stderr, "cannot read %s\n", argv[3]); goto done; }
    if ((st = sutra_model_load(argv[1], NULL, &model)) != SUTRA_OK) { rc = fail("sutra_model_load", st); goto done; }
    if ((st = sutra_tokenizer_load(argv[2], &tok)) != SUTRA_OK) { rc = fail("sutra_tokenizer_load", st); goto done; }
    size_t n_ids = 0;
    sutra_tokenize(tok, text, text_len, false, NULL, 0, &n_ids); /* the size first */
    ids = malloc(n_ids * sizeof *ids);
    if ((st = sutra_tokenize(tok, text, text_len, false, ids, n_ids, &n_ids)) != SUTRA_OK) {
        rc = fail("sutra_tokenize", st);
        goto done;
    }
    if (n_ids < rows * (ctx + 1)) { fprintf(stderr, "%s is too short for %zu x %zu tokens\n", argv[3], rows, ctx); goto done; }

    sutra_train_params tp = sutra_train_default_params();
    tp.learning_rate = 3e-3f;
    if ((st = sutra_trainer_new(model, NULL, &tp, &trainer)) != SUTRA_OK) { rc = fail("sutra_trainer_new", st); goto done; }
    tokens = malloc(rows * ctx * sizeof *tokens);
    targets = malloc(rows * ctx * sizeof *targets);
    size_t n_windows = (n_ids - 1) / ctx;
    for (int s = 0; s < steps; s++) {
        for (size_t r = 0; r < rows; r++) {
            size_t w = ((size_t)s * rows + r) % n_windows;
            memcpy(tokens + r * ctx, ids + w * ctx, ctx * sizeof *ids);
            memcpy(targets + r * ctx, ids + w * ctx + 1, ctx * sizeof *ids);
        }
        float loss = 0;
        if ((st = sutra_trainer_step(trainer, tokens, targets, rows, ctx, &loss)) != SUTRA_OK) {
            rc = fail("sutra_trainer_step", st);
            goto done;
        }
        printf("step %d loss %.4f\n", s + 1, loss);
    }
    if ((st = sutra_trainer_save_adapter(trainer, argv[4])) != SUTRA_OK) { rc = fail("sutra_trainer_save_adapter", st); goto done; }
    printf("saved %s\n", argv[4]);
    if ((st = sutra_adapter_load(model, argv[4], &adapter)) != SUTRA_OK) { rc = fail("sutra_adapter_load", st); goto done; }
    if ((st = write_sample(model, tok, NULL, "base")) != SUTRA_OK) { rc = fail("generate (base)", st); goto done; }
    if ((st = write_sample(model, tok, adapter, "adapter")) != SUTRA_OK) { rc = fail("generate (adapter)", st); goto done; }
    rc = 0;

done:
    sutra_adapter_free(adapter);
    sutra_trainer_free(trainer);
    sutra_tokenizer_free(tok);
    sutra_model_free(model);
    free(ids);
    free(tokens);
    free(targets);
    free(text);
    return rc;
}
