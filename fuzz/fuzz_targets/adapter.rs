//! A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) through
//! `Adapter::load`, against the golden RWKV-7 or Mamba-1 model; whatever loads is attached to
//! a session, which evaluates two tokens. Input: `[model: u8][n: u32 LE][config: n bytes]
//! [safetensors]`, written into a folder of this process under `$TMPDIR`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use sutra::{Adapter, Session};
use sutra_fuzz::{call, golden, scratch_dir, split_prefixed, MAMBA1, RWKV7};

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch_dir("adapter"));
    let Some((&which, rest)) = data.split_first() else { return };
    let model = golden(if which % 2 == 0 { RWKV7 } else { MAMBA1 });
    let (config, weights) = split_prefixed(rest);
    for (name, bytes) in [("adapter_config.json", config), ("adapter_model.safetensors", weights)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    let Ok(adapter) = call("Adapter::load", || Adapter::load(model, dir)) else { return };
    let adapter = Arc::new(adapter);
    let mut s = Session::new(model);
    if let Err(e) = call("Session::set_adapter", || s.set_adapter(&adapter, 1.0)) {
        panic!("an adapter loaded for a model does not attach to a session of it: {e}");
    }
    let mut logits = vec![0f32; model.info().n_vocab];
    let _ = call("Session::eval", || s.eval(&[0, 1], Some(&mut logits)));
});
