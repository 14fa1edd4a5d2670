// libllama's llama_model_quantize (what llama-quantize calls) with a numeric llama_ftype and,
// optionally, the output and token-embedding tensor types (numeric ggml_type): made the
// rwkv6-w256-* GGUF fixtures (tests/fixtures/formats/README.md). Build it against a
// llama.cpp tree L with libllama built (shared/anchors/README.md):
//   gcc -O2 -o llama_quantize scripts/llama_quantize.c -I$L/include -I$L/ggml/include \
//       -L$L/build/bin -lllama -lggml -lggml-base -Wl,-rpath,$L/build/bin
//   llama_quantize IN.gguf OUT.gguf FTYPE [OUTPUT_TYPE [EMBD_TYPE]]   (e.g. 3 = Q4_1, 15 = Q4_K_M)
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char ** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s IN.gguf OUT.gguf FTYPE [OUTPUT_TYPE [EMBD_TYPE]]\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    struct llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.nthread = 2;
    qp.ftype = (enum llama_ftype) atoi(argv[3]);
    if (argc > 4) qp.output_tensor_type = (enum ggml_type) atoi(argv[4]);
    if (argc > 5) qp.token_embedding_type = (enum ggml_type) atoi(argv[5]);
    return (int) llama_model_quantize(argv[1], argv[2], &qp);
}
