//! A state blob (`src/session.rs`: magic, version, fingerprint, count, f32 values, FNV-1a
//! checksum) through `Session::load_state` on a session of the golden RWKV-4 model. Most
//! mutations stop at the checksum; `state_fixed` gets past it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sutra_fuzz::{check_state_blob, golden, RWKV4};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    check_state_blob(golden(RWKV4), data);
});
