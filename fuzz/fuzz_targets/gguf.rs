//! A GGUF file from memory (llama.cpp's container: metadata, tensor infos, ggml block types,
//! its tokenizer) through `Model::load_from_memory`; whatever loads is run: a prefill, a
//! step, a state round trip. The tokenizer it carries is loaded and exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use sutra::Model;
use sutra_fuzz::{call, exercise_model, params};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    if let Ok(model) = call("Model::load_from_memory (GGUF)", || Model::load_from_memory(data, &params())) {
        exercise_model(&Arc::new(model));
    }
    if let Ok(tok) = call("Tokenizer::from_bytes (GGUF)", || sutra::Tokenizer::from_bytes(data, "<fuzz>")) {
        sutra_fuzz::exercise_tokenizer(&tok);
    }
});
