//! Tokenize and detokenize arbitrary input on every kind of tokenizer of the fixtures (world,
//! byte-level BPE with and without NFC, WordPiece, Unigram). Input: `[tokenizer: u8][mode: u8]
//! [payload]`. Mode bit 0 clear: the payload is text, encoded (mode bit 1: with the
//! post-processor's special tokens) and decoded back, exactly where the tokenizer promises it;
//! set: the payload is ids (u32 LE), decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sutra_fuzz::{check_ids, check_text, TOKENIZERS};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    let [which, mode, payload @ ..] = data else { return };
    let i = *which as usize % TOKENIZERS.len();
    if mode & 1 == 0 {
        check_text(i, payload, mode & 2 != 0);
    } else {
        check_ids(i, payload);
    }
});
