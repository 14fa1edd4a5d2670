//! A state blob whose checksum the target recomputes, so that every mutation reaches the
//! checks behind it and, when accepted, an evaluation from that state. Input: `[model: u8]
//! [blob]`, the byte choosing one of the six golden models (one per architecture version).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sutra_fuzz::{check_state_blob, fnv1a, golden, GOLDEN};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    let Some((&which, blob)) = data.split_first() else { return };
    let mut blob = blob.to_vec();
    if let Some(end) = blob.len().checked_sub(8) {
        let sum = fnv1a(&blob[..end]);
        blob[end..].copy_from_slice(&sum.to_le_bytes());
    }
    check_state_blob(golden(which as usize % GOLDEN.len()), &blob);
});
