//! An RWKV world vocabulary (`rwkv_vocab_v20230424.txt`: lines `<id> <Python str or bytes
//! literal> <byte length>`) through `Tokenizer::from_bytes`, which detects it by its leading
//! digit; whatever loads encodes a sample text and decodes ids every way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sutra::Tokenizer;
use sutra_fuzz::{call, exercise_tokenizer};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    if let Ok(tok) = call("Tokenizer::from_bytes", || Tokenizer::from_bytes(data, "fuzz/rwkv_vocab.txt")) {
        exercise_tokenizer(&tok);
    }
});
