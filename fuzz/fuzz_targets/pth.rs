//! A PyTorch `.pth` archive from memory (zip central directory, local headers, zip64
//! records, the restricted pickle of a state dict, storages) through
//! `Model::load_from_memory`; whatever loads is run: a prefill, a step, a state round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use sutra::Model;
use sutra_fuzz::{call, exercise_model, params};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    if let Ok(model) = call("Model::load_from_memory (.pth)", || Model::load_from_memory(data, &params())) {
        exercise_model(&Arc::new(model));
    }
});
