/* generate: write text with a model, streaming it as it comes. Uses only the C API.
 *
 *   generate MODEL TOKENIZER [PROMPT] [N_TOKENS] [SEED]
 *
 * Samples with top-p 0.9 and temperature 0.8 (the settings of BlinkDL's RWKV demos). */
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

static int fail(const char *what, sutra_status st) {
    fprintf(stderr, "\n%s failed: %s: %s\n", what, sutra_status_name(st), sutra_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER [PROMPT] [N_TOKENS] [SEED]\n", argv[0]);
        return 2;
    }
    const char *prompt = argc > 3 ? argv[3] : "ROMEO:\n";
    int n_tokens = argc > 4 ? atoi(argv[4]) : 200;
    unsigned long long seed = argc > 5 ? strtoull(argv[5], NULL, 10) : 42;

    int rc = 1;
    sutra_model *model = NULL;
    sutra_tokenizer *tok = NULL;
    sutra_session *session = NULL;
    sutra_sampler *sampler = NULL;
    sutra_status st;

    if ((st = sutra_model_load(argv[1], NULL, &model)) != SUTRA_OK) { rc = fail("sutra_model_load", st); goto done; }
    if ((st = sutra_tokenizer_load(argv[2], &tok)) != SUTRA_OK) { rc = fail("sutra_tokenizer_load", st); goto done; }
    if ((st = sutra_session_new(model, &session)) != SUTRA_OK) { rc = fail("sutra_session_new", st); goto done; }
    if ((st = sutra_sampler_new(seed, &sampler)) != SUTRA_OK) { rc = fail("sutra_sampler_new", st); goto done; }
    if ((st = sutra_sampler_add_top_p(sampler, 0.9f, 1)) != SUTRA_OK ||
        (st = sutra_sampler_add_temperature(sampler, 0.8f)) != SUTRA_OK ||
        (st = sutra_sampler_add_dist(sampler)) != SUTRA_OK) {
        rc = fail("sutra_sampler_add", st);
        goto done;
    }

    /* Stop at the end-of-text token when the tokenizer has one. */
    int32_t eot = sutra_tokenizer_token_id(tok, "<|endoftext|>");
    sutra_generate_params params = sutra_generate_default_params();
    params.max_tokens = n_tokens;
    if (eot >= 0) {
        params.stop_tokens = &eot;
        params.n_stop_tokens = 1;
    }
    sutra_generate_result result;
    fputs(prompt, stdout);
    st = sutra_generate(session, tok, sampler, prompt, strlen(prompt), &params, print_piece, NULL, &result);
    if (st != SUTRA_OK) { rc = fail("sutra_generate", st); goto done; }
    printf("\n");
    fprintf(stderr, "[%d prompt tokens, %d generated]\n", result.n_prompt_tokens, result.n_generated);
    rc = 0;

done:
    sutra_sampler_free(sampler);
    sutra_session_free(session);
    sutra_tokenizer_free(tok);
    sutra_model_free(model);
    return rc;
}
