//! A model from memory with the text of its `config.json` (Mamba `n_groups`, epsilons, RWKV-4
//! transformers `rescale_every`, bare `Infinity`/`NaN` spellings), through
//! `Model::load_from_memory_with_config`. Input: `[flags: u8][n: u32 LE][config: n bytes]
//! [safetensors]`; flags bit 0 turns on `check_finite` (the NaN/Inf scan of every tensor).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use sutra::{Model, ModelParams};
use sutra_fuzz::{call, exercise_model, params, split_prefixed};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (config, weights) = split_prefixed(rest);
    let Ok(config) = std::str::from_utf8(config) else { return };
    let params = ModelParams { check_finite: flags & 1 != 0, ..params() };
    let loaded = call("Model::load_from_memory_with_config", || {
        Model::load_from_memory_with_config(weights, Some(config), &params)
    });
    if let Ok(model) = loaded {
        exercise_model(&Arc::new(model));
    }
});
