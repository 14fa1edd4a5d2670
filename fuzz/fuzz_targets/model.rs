//! A model from memory: a plain safetensors checkpoint of any architecture, or a libsutra
//! quantized file (q8/q4, RTN/AWQ, with the `config.json` it may embed), through
//! `Model::load_from_memory`; whatever loads is run: a prefill, a step, a state round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use sutra::Model;
use sutra_fuzz::{call, exercise_model, params};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    if let Ok(model) = call("Model::load_from_memory", || Model::load_from_memory(data, &params())) {
        exercise_model(&Arc::new(model));
    }
});
