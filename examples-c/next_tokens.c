/* next_tokens: load a model, feed the token ids given on the command line, and print the
 * five most likely next tokens with their logits.
 *
 *   next_tokens MODEL ID [ID ...]
 *
 * Uses only the C API of libsutra (include/sutra.h). */
#include <stdio.h>
#include <stdlib.h>

#include "sutra.h"

#define TOP_K 5

static int fail(const char *what, sutra_status st) {
    fprintf(stderr, "%s failed: %s: %s\n", what, sutra_status_name(st), sutra_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL ID [ID ...]\n", argv[0]);
        return 2;
    }
    size_t n_tokens = (size_t)(argc - 2);
    int32_t *tokens = malloc(n_tokens * sizeof *tokens);
    if (!tokens) return 1;
    for (size_t i = 0; i < n_tokens; i++) {
        char *end = NULL;
        long v = strtol(argv[i + 2], &end, 10);
        if (*end != '\0') {
            fprintf(stderr, "not a token id: %s\n", argv[i + 2]);
            free(tokens);
            return 2;
        }
        tokens[i] = (int32_t)v;
    }

    int rc = 1;
    sutra_model *model = NULL;
    sutra_session *session = NULL;
    float *logits = NULL;
    sutra_model_params params = sutra_model_default_params();
    sutra_status st = sutra_model_load(argv[1], &params, &model);
    if (st != SUTRA_OK) {
        rc = fail("sutra_model_load", st);
        goto done;
    }
    sutra_model_info info;
    if ((st = sutra_model_get_info(model, &info)) != SUTRA_OK) {
        rc = fail("sutra_model_get_info", st);
        goto done;
    }
    printf("libsutra %s: %s, %d layers, width %d, vocab %d\n", sutra_version(), info.architecture,
           info.n_layer, info.n_embd, info.n_vocab);

    int32_t n_vocab = sutra_model_n_vocab(model);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!logits) goto done;
    if ((st = sutra_session_new(model, &session)) != SUTRA_OK) {
        rc = fail("sutra_session_new", st);
        goto done;
    }
    if ((st = sutra_session_eval(session, tokens, n_tokens, logits)) != SUTRA_OK) {
        rc = fail("sutra_session_eval", st);
        goto done;
    }

    /* Selection of the TOP_K largest logits (ties: lower id first). */
    int32_t best[TOP_K];
    int k = 0;
    for (int32_t id = 0; id < n_vocab; id++) {
        int pos = k;
        while (pos > 0 && logits[best[pos - 1]] < logits[id]) pos--;
        if (pos >= TOP_K) continue;
        int last = k < TOP_K ? k : TOP_K - 1;
        for (int j = last; j > pos; j--) best[j] = best[j - 1];
        best[pos] = id;
        if (k < TOP_K) k++;
    }
    for (int i = 0; i < k; i++) printf("%d %d %.6f\n", i + 1, best[i], logits[best[i]]);
    rc = 0;

done:
    sutra_session_free(session);
    sutra_model_free(model);
    free(logits);
    free(tokens);
    return rc;
}
