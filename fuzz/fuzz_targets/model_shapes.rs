//! Structure-aware fuzzing of the model loaders: the input is a list of edits to a valid small
//! checkpoint (a tensor's dimension, rank or dtype changed, a tensor dropped or copied into a
//! second layer, a value made NaN or huge, the quantized record's shapes, types and group size
//! changed), and the target writes the result as a well-formed safetensors container. Byte
//! mutations of a whole file (`model`) mostly stop at the container's checks; these reach
//! the architecture loaders' shape checks, and whatever passes them is evaluated.
//!
//! Input: `[base: u8]` then edits of 4 bytes `[op, a, b, c]` (at most 16, see [`edit`]): `base`
//! picks one of the seeds of `model`, embedded below.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use sutra::format::safetensors::{serialize, TensorBytes};
use sutra::format::SafetensorsFile;
use sutra::tensor::{DType, Storage};
use sutra::Model;
use sutra_fuzz::{call, exercise_model, params};

macro_rules! seed {
    ($name:literal) => {
        include_bytes!(concat!("../seeds/model/", $name, ".safetensors"))
    };
}

/// The checkpoints edited: every architecture and layout, and quantized files (q8, q4, AWQ,
/// an embedded config).
const BASES: [&[u8]; 10] = [
    seed!("rwkv4-w16-f32"),
    seed!("rwkv4-hf-w16-f32"),
    seed!("rwkv5-w16-f32"),
    seed!("rwkv6-w16-f32"),
    seed!("rwkv7-w16-f32"),
    seed!("mamba1-w16-f32"),
    seed!("mamba2-w16-f32"),
    seed!("rwkv7-w32-q4-rtn"),
    seed!("mamba2-w32-g2-q8-rtn"),
    seed!("rwkv7-w32-q4-awq"),
];

/// The largest checkpoint written (bigger edits are skipped, not findings).
const MAX_BYTES: usize = 8 << 20;

/// A base checkpoint taken apart: tensors in name order, and the metadata.
struct Parts {
    tensors: Vec<TensorBytes>,
    metadata: BTreeMap<String, String>,
}

fn base(i: usize) -> &'static Parts {
    static PARTS: [OnceLock<Parts>; 10] = [const { OnceLock::new() }; 10];
    PARTS[i].get_or_init(|| {
        let file = SafetensorsFile::parse(Arc::new(Storage::from_bytes(BASES[i])), "base").expect("a valid seed");
        let tensors =
            file.tensors.iter().map(|(n, t)| (n.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec())).collect();
        Parts { tensors, metadata: file.metadata.into_iter().collect() }
    })
}

/// `data` cycled or cut to `n` bytes.
fn resized(data: &[u8], n: usize) -> Vec<u8> {
    if data.is_empty() {
        return vec![0; n];
    }
    data.iter().copied().cycle().take(n).collect()
}

/// Resizes a tensor's data to what its shape and dtype need; false if too big.
fn fit(t: &mut TensorBytes) -> bool {
    let Some(numel) = t.2.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else { return false };
    let Some(n) = numel.checked_mul(t.1.size_of(1)).filter(|&n| n <= MAX_BYTES) else { return false };
    if t.3.len() != n {
        t.3 = resized(&t.3, n);
    }
    true
}

const DTYPES: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::I8, DType::U8, DType::I64];
const SPECIAL: [f32; 8] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e30, -1e-30, f32::MAX];

/// Applies one edit; false if the result would be too big.
fn edit(p: &mut Parts, [op, a, b, c]: [u8; 4]) -> bool {
    let n = p.tensors.len();
    if n == 0 {
        return true;
    }
    let t = &mut p.tensors[a as usize % n];
    match op % 10 {
        // A dimension set to c.
        0 if !t.2.is_empty() => {
            let d = b as usize % t.2.len();
            t.2[d] = c as usize;
            fit(t)
        }
        // A dimension scaled by 2 (b even) or halved (b odd).
        1 if !t.2.is_empty() => {
            let d = c as usize % t.2.len();
            t.2[d] = if b % 2 == 0 { t.2[d] * 2 } else { t.2[d] / 2 };
            fit(t)
        }
        // Rank: a trailing dimension of c added (b even) or the last one dropped.
        2 => {
            if b % 2 == 0 {
                t.2.push(c as usize);
            } else {
                t.2.pop();
            }
            fit(t)
        }
        // Another dtype.
        3 => {
            t.1 = DTYPES[b as usize % DTYPES.len()];
            fit(t)
        }
        // A value made special (NaN, ±inf, huge, zero) or, for integer tensors, set to c.
        4 => {
            let size = t.1.size_of(1);
            if t.3.len() >= size {
                let at = (b as usize * 256 + c as usize) % (t.3.len() / size) * size;
                let v = SPECIAL[c as usize % SPECIAL.len()];
                let bytes = match t.1 {
                    DType::F32 => v.to_le_bytes().to_vec(),
                    DType::F16 => sutra::tensor::f32_to_f16(v).to_le_bytes().to_vec(),
                    DType::BF16 => sutra::tensor::f32_to_bf16(v).to_le_bytes().to_vec(),
                    _ => vec![c; size],
                };
                t.3[at..at + size].copy_from_slice(&bytes);
            }
            true
        }
        // The tensor dropped.
        5 => {
            p.tensors.remove(a as usize % n);
            true
        }
        // The tensor (b bit 7: every tensor of layer 0) copied into layer 1, 2 or 3, making the
        // model deeper.
        6 => {
            let layer = format!(".{}.", 1 + (b & 0x7f) % 3);
            let picked: Vec<usize> = if b & 0x80 != 0 { (0..n).collect() } else { vec![a as usize % n] };
            for i in picked {
                let t = &p.tensors[i];
                let name = t.0.replacen(".0.", &layer, 1);
                if name != t.0 && !p.tensors.iter().any(|u| u.0 == name) {
                    let copy = (name, t.1, t.2.clone(), t.3.clone());
                    p.tensors.push(copy);
                }
            }
            true
        }
        // The quantized record: an entry's shape (b bit 0: which dimension; bit 1: c × 32) ...
        7 => quant_entry(p, a, |e| {
            let d = b as usize % 2;
            let v = if b & 2 != 0 { c as u64 * 32 } else { c as u64 };
            if let Some(s) = e.get_mut("shape").and_then(Value::as_array_mut).and_then(|s| s.get_mut(d)) {
                *s = v.into();
            }
        }),
        // ... or its type swapped between q8 and q4 ...
        8 => quant_entry(p, a, |e| {
            let q = if e.get("type").and_then(Value::as_str) == Some("q8") { "q4" } else { "q8" };
            e["type"] = q.into();
        }),
        // ... or a metadata record changed: the group size, or one dropped.
        _ => {
            if b % 2 == 0 {
                let g = ["32", "64", "128", "0", "16", "256"][c as usize % 6];
                p.metadata.insert("sutra.group_size".into(), g.into());
            } else if let Some(k) = p.metadata.keys().nth(c as usize % p.metadata.len().max(1)).cloned() {
                p.metadata.remove(&k);
            }
            true
        }
    }
}

/// Applies `f` to entry `a` of the `sutra.tensors` record, if the file has one.
fn quant_entry(p: &mut Parts, a: u8, f: impl FnOnce(&mut Value)) -> bool {
    let Some(text) = p.metadata.get("sutra.tensors") else { return true };
    let Ok(mut v) = serde_json::from_str::<Value>(text) else { return true };
    if let Some(obj) = v.as_object_mut() {
        let n = obj.len();
        if let Some((_, e)) = obj.iter_mut().nth(a as usize % n.max(1)) {
            f(e);
        }
    }
    p.metadata.insert("sutra.tensors".into(), v.to_string());
    true
}

fuzz_target!(init: sutra_fuzz::init(), |data: &[u8]| {
    let Some((&which, ops)) = data.split_first() else { return };
    let b = base(which as usize % BASES.len());
    let mut parts = Parts { tensors: b.tensors.clone(), metadata: b.metadata.clone() };
    for op in ops.chunks_exact(4).take(16) {
        if !edit(&mut parts, op.try_into().expect("4 bytes")) {
            return;
        }
    }
    let meta = (!parts.metadata.is_empty()).then_some(&parts.metadata);
    let Ok(bytes) = serialize(&parts.tensors, meta) else { return };
    if let Ok(model) = call("Model::load_from_memory", || Model::load_from_memory(&bytes, &params())) {
        exercise_model(&Arc::new(model));
    }
});
