//! A Hugging Face `tokenizer.json` (BPE, WordPiece, Unigram models; normalizers,
//! pre-tokenizers, decoders, post-processors, added tokens) through `Tokenizer::from_bytes`;
//! whatever loads encodes a sample text and decodes ids every way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sutra::Tokenizer;
use sutra_fuzz::{call, exercise_tokenizer};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    if let Ok(tok) = call("Tokenizer::from_bytes", || Tokenizer::from_bytes(data, "fuzz/tokenizer.json")) {
        exercise_tokenizer(&tok);
    }
});
