/* A program built against an installed libsutra by tests/install.rs (pkg-config and CMake,
 * shared and static): loads MODEL, feeds the token ids given and prints
 *
 *   sutra VERSION vocab N top ID LOGIT
 *
 * (the most likely next token), or the status and message of a failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sutra.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL TOKEN...\n", argv[0]);
        return 2;
    }
    if (strcmp(sutra_version(), SUTRA_VERSION) != 0) {
        fprintf(stderr, "header %s, library %s\n", SUTRA_VERSION, sutra_version());
        return 1;
    }
    int rc = 1;
    size_t n = (size_t)(argc - 2);
    int32_t *tokens = malloc(n * sizeof *tokens);
    float *logits = NULL;
    sutra_model *model = NULL;
    sutra_session *session = NULL;
    sutra_status st;
    for (size_t i = 0; i < n; i++) tokens[i] = (int32_t)atoi(argv[i + 2]);
    if ((st = sutra_model_load(argv[1], NULL, &model)) != SUTRA_OK ||
        (st = sutra_session_new(model, &session)) != SUTRA_OK) {
        fprintf(stderr, "%s: %s\n", sutra_status_name(st), sutra_last_error());
        goto done;
    }
    int32_t n_vocab = sutra_model_n_vocab(model);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    if ((st = sutra_session_eval(session, tokens, n, logits)) != SUTRA_OK) {
        fprintf(stderr, "%s: %s\n", sutra_status_name(st), sutra_last_error());
        goto done;
    }
    int32_t top = 0;
    for (int32_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[top]) top = i;
    printf("sutra %s vocab %d top %d %.6f\n", sutra_version(), n_vocab, top, logits[top]);
    rc = 0;
done:
    sutra_session_free(session);
    sutra_model_free(model);
    free(logits);
    free(tokens);
    return rc;
}
