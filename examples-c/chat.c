/* chat: an interactive loop that keeps the recurrent state between turns, so the history is
 * never re-read. Uses only the C API.
 *
 *   chat MODEL TOKENIZER [SEED]
 *
 * Each line typed is fed as "User: <line>\n\nAssistant:"; the reply streams until a blank
 * line. An empty line or end of input quits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sutra.h"

static bool print_piece(const char *piece, size_t len, void *user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER [SEED]\n", argv[0]);
        return 2;
    }
    unsigned long long seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 7;
    sutra_model *model = NULL;
    sutra_tokenizer *tok = NULL;
    sutra_session *session = NULL;
    sutra_sampler *sampler = NULL;
    int rc = 1;
    if (sutra_model_load(argv[1], NULL, &model) != SUTRA_OK || sutra_tokenizer_load(argv[2], &tok) != SUTRA_OK ||
        sutra_session_new(model, &session) != SUTRA_OK || sutra_sampler_new(seed, &sampler) != SUTRA_OK ||
        sutra_sampler_add_top_p(sampler, 0.8f, 1) != SUTRA_OK ||
        sutra_sampler_add_temperature(sampler, 0.8f) != SUTRA_OK) {
        fprintf(stderr, "setup failed: %s\n", sutra_last_error());
        goto done;
    }
    const char *stops[] = {"\n\n", "\nUser:"};
    sutra_generate_params params = sutra_generate_default_params();
    params.max_tokens = 200;
    params.stop_strings = stops;
    params.n_stop_strings = 2;

    char line[1024];
    char turn[1200];
    int first = 1;
    for (;;) {
        printf("User: ");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0') break;
        /* Only the new text is fed: the session's state already holds the conversation. */
        snprintf(turn, sizeof turn, "%sUser: %s\n\nAssistant:", first ? "" : "\n\n", line);
        first = 0;
        printf("Assistant:");
        sutra_status st = sutra_generate(session, tok, sampler, turn, strlen(turn), &params, print_piece, NULL, NULL);
        if (st != SUTRA_OK) {
            fprintf(stderr, "\nsutra_generate failed: %s\n", sutra_last_error());
            goto done;
        }
        printf("\n");
    }
    rc = 0;
done:
    sutra_sampler_free(sampler);
    sutra_session_free(session);
    sutra_tokenizer_free(tok);
    sutra_model_free(model);
    return rc;
}
