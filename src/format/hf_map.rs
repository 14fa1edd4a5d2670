//! Hugging Face model folders: `config.json` with `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`, and the `RWKV7ForCausalLM` tensor names undone onto the
//! official BlinkDL RWKV-7 names that [`crate::models`] reads.
//!
//! Two `RWKV7ForCausalLM` layouts are read:
//! - the names of llama.cpp's gguf-py tensor map (`model.embeddings`, `model.layers.N.attention.*`,
//!   `model.layers.N.feed_forward.*`, `model.layers.N.{ln1,ln2}` or `{attn_norm,ffn_norm}`,
//!   `model.layers.0.pre_norm`, `model.norm`, `lm_head`): the official tensors under other
//!   names, same shapes and conventions, so every tensor is renamed in place;
//! - flash-linear-attention's (`model.layers.N.attn.{r,k,v,o}_proj`, `attn.{w,a,v,g}_lora.lora.{0,2}`,
//!   `attn.g_norm`, `ffn.*`): the low-rank matrices are `nn.Linear` weights (transposed back
//!   into the official `x @ W` layout, owned f32: they are small), the lora biases are the
//!   official `w0`/`a0`/`v0`, a fused `attn.x_x` `[6, C]` is split (order r w k v a g).
//!
//! Everything else (embedding, projections, head) stays a view of its shard's storage.
//!
//! The transformers RWKV-5.2 / RWKV-6 layouts (`Rwkv5ForCausalLM`, `Rwkv6ForCausalLM`, the
//! remote-code models of the RWKV/rwkv-5-world-* and RWKV/v6-Finch-*-HF repositories, which
//! llama.cpp's converter reads for `rwkv6`) are the official tensors under transformers'
//! names — `rwkv.embeddings`, `rwkv.blocks.0.pre_ln`, `rwkv.blocks.N.{ln1,ln2}`,
//! `rwkv.blocks.N.attention.*` (RWKV-5's `time_mix_key/value/receptance/gate` for
//! `time_mix_k/v/r/g`), `rwkv.blocks.N.feed_forward.*`, `rwkv.ln_out`, `head` — with the same
//! values and shapes, so every tensor is renamed in place. Their `rescale_every` is not
//! applied: transformers rescales only 16-bit weights, and libsutra computes in f32.
//! (RWKV-4's transformers layout, `RwkvForCausalLM`, is read by [`crate::models`] itself.)

use super::{Format, HfConfig, Renamed, SafetensorsFile};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

/// The single-file weights of a Hugging Face folder.
pub const SINGLE: &str = "model.safetensors";
/// The index of a sharded Hugging Face folder.
pub const INDEX: &str = "model.safetensors.index.json";

/// Opens the Hugging Face folder `dir`: its `config.json` (when present) and its weights,
/// `model.safetensors` or every shard named by `model.safetensors.index.json`, merged into one
/// record (each tensor viewing its own shard's storage) and renamed by [`map`].
pub fn open_dir(dir: &Path, use_mmap: bool) -> Result<(SafetensorsFile, Option<HfConfig>)> {
    let config = HfConfig::beside(dir)?;
    let single = dir.join(SINGLE);
    let index = dir.join(INDEX);
    let file = if single.exists() {
        SafetensorsFile::open(&single, use_mmap)?
    } else if index.exists() {
        open_sharded(dir, &index, use_mmap)?
    } else {
        // The file a model folder needs is not there: an I/O error, as for a missing file.
        return Err(Error::io_msg(
            dir,
            &format!("a folder without {SINGLE} or {INDEX} (a Hugging Face model folder holds one of them)"),
        ));
    };
    map(file, config)
}

/// The shards listed by the index at `index` (in folder `dir`), merged into one record named
/// after the folder. Every listed tensor must be in the shard the index names, no tensor may
/// be in two shards, and shard names must stay inside the folder.
fn open_sharded(dir: &Path, index: &Path, use_mmap: bool) -> Result<SafetensorsFile> {
    let iname = index.display().to_string();
    let text = super::read_text(index, "safetensors index", super::MAX_SIDE_FILE)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(format!("{iname}: the index is not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(format!("{iname}: no 'weight_map' object (tensor name -> shard file)")))?;
    if map.is_empty() {
        return Err(Error::format(format!("{iname}: 'weight_map' lists no tensors")));
    }
    // Shard file -> the tensors the index places there.
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::format(format!("{iname}: weight_map['{tensor}'] is {shard}, a shard file name was expected"))
        })?;
        let p = Path::new(shard);
        if shard.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::format(format!(
                "{iname}: shard '{shard}' (of tensor '{tensor}') is not a file name inside the folder \
                 (absolute paths and '..' are refused)"
            )));
        }
        wanted.entry(shard).or_default().push(tensor);
    }
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut metadata = HashMap::new();
    let mut n_bytes = 0usize;
    let mut home: HashMap<String, String> = HashMap::new();
    for (shard, names) in &wanted {
        let f = SafetensorsFile::open(&dir.join(shard), use_mmap)?;
        if let Some(q) = &f.quant {
            if !q.tensors.is_empty() {
                return Err(Error::unsupported(format!(
                    "{}: a libsutra quantized file as a shard of {iname}; quantized files load on their own",
                    f.name
                )));
            }
        }
        for name in names {
            if !f.tensors.contains_key(*name) {
                return Err(Error::format(format!(
                    "{iname}: tensor '{name}' is listed in shard '{shard}', which does not hold it ({})",
                    f.name
                )));
            }
        }
        n_bytes += f.n_bytes;
        for (k, v) in f.metadata {
            metadata.entry(k).or_insert(v);
        }
        for (name, t) in f.tensors {
            if let Some(other) = home.get(&name) {
                return Err(Error::format(format!(
                    "{iname}: tensor '{name}' is in two shards, '{other}' and '{shard}'"
                )));
            }
            home.insert(name.clone(), shard.to_string());
            tensors.insert(name, t);
        }
    }
    Ok(SafetensorsFile {
        name: dir.display().to_string(),
        tensors,
        metadata,
        n_bytes,
        quant: None,
        format: Format::Safetensors,
    })
}

/// Whether `file` (with its `config`) is in a `RWKV7ForCausalLM` layout: it has
/// `model.embeddings.weight`, and the config says so or layer 0 has an RWKV-7 `r_k`
/// (`model.layers.0.attention.r_k` / `model.layers.0.attn.r_k`).
pub fn is_rwkv7_hf(file: &SafetensorsFile, config: Option<&HfConfig>) -> bool {
    let says = config
        .and_then(|c| c.json.get("architectures"))
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("RWKV7ForCausalLM"))));
    let has = |k: &str| file.tensors.contains_key(k);
    has("model.embeddings.weight") && (says || has("model.layers.0.attention.r_k") || has("model.layers.0.attn.r_k"))
}

/// Whether `file` is in the transformers RWKV-5.2 / RWKV-6 layout: `rwkv.embeddings.weight`
/// and a layer-0 `rwkv.blocks.0.attention.time_faaaa` (RWKV-4's has `time_first` instead).
pub fn is_rwkv56_hf(file: &SafetensorsFile) -> bool {
    let has = |k: &str| file.tensors.contains_key(k);
    has("rwkv.embeddings.weight") && has("rwkv.blocks.0.attention.time_faaaa")
}

/// The names one Hugging Face layout uses, for its messages.
struct Layout {
    /// Its class name.
    arch: &'static str,
    /// Its embedding, head and layer names.
    emb: &'static str,
    head: &'static str,
    layers: &'static str,
    /// Its renaming onto the official names.
    rename: fn(&mut Renamed, &str, Tensor) -> Result<()>,
}

const RWKV7: Layout = Layout {
    arch: "RWKV7ForCausalLM",
    emb: "model.embeddings.weight",
    head: "lm_head.weight",
    layers: "model.layers.N",
    rename,
};

const RWKV56: Layout = Layout {
    arch: "Rwkv5ForCausalLM/Rwkv6ForCausalLM",
    emb: "rwkv.embeddings.weight",
    head: "head.weight",
    layers: "rwkv.blocks.N",
    rename: rename_rwkv56,
};

/// `file` with a `RWKV7ForCausalLM` or transformers RWKV-5/6 layout renamed onto the official
/// names (see the module documentation); any other layout is returned as it is.
pub fn map(file: SafetensorsFile, config: Option<HfConfig>) -> Result<(SafetensorsFile, Option<HfConfig>)> {
    let layout = if is_rwkv7_hf(&file, config.as_ref()) {
        &RWKV7
    } else if is_rwkv56_hf(&file) {
        &RWKV56
    } else {
        return Ok((file, config));
    };
    let SafetensorsFile { name, tensors, metadata, n_bytes, quant, format } = file;
    if quant.is_some() {
        return Err(Error::unsupported(format!(
            "{name}: a libsutra quantized file in the {} layout; quantize the official layout",
            layout.arch
        )));
    }
    let mut out = Renamed::new(&name, layout.arch);
    for (key, t) in tensors {
        (layout.rename)(&mut out, &key, t)?;
    }
    if !out.tensors.contains_key("head.weight") {
        let tied = config.as_ref().and_then(|c| c.bool("tie_word_embeddings")).unwrap_or(false);
        match out.tensors.get("emb.weight") {
            Some(e) if tied => {
                let e = e.clone();
                out.put("head.weight".into(), e)?;
            }
            _ => {
                return Err(Error::format(format!(
                    "{name}: {} without '{}' (and config.json does not set tie_word_embeddings)",
                    layout.arch, layout.head
                )))
            }
        }
    }
    let tensors = out.tensors;
    if let (Some(c), Some(e)) = (config.as_ref(), tensors.get("emb.weight")) {
        if let [v, d] = e.squeezed_shape()[..] {
            c.expect("hidden_size", d, &name, layout.emb)?;
            c.expect("vocab_size", v, &name, layout.emb)?;
        }
        let layers = tensors
            .keys()
            .filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        c.expect("num_hidden_layers", layers, &name, layout.layers)?;
    }
    Ok((SafetensorsFile { name, tensors, metadata, n_bytes, quant: None, format }, config))
}

fn unknown(out: &Renamed, key: &str) -> Error {
    Error::unsupported(format!("{}: tensor '{key}' is not part of the {} layout libsutra reads", out.file, out.layout))
}

/// An owned f32 `[cols, rows]` copy of the 2-D `t` (`[rows, cols]`), or a format error naming `key`.
fn transposed(file: &str, key: &str, t: &Tensor) -> Result<Tensor> {
    let [rows, cols] = t.squeezed_shape()[..] else {
        return Err(Error::format(format!("{file}: tensor '{key}' has shape {:?}, expected 2-D", t.shape)));
    };
    let src = t.to_f32_vec().map_err(|e| e.context(file))?;
    Ok(Tensor::from_f32(key, vec![cols, rows], &super::transpose(&src, rows, cols)))
}

/// Files `t` (called `key` in the checkpoint) under its official name.
fn rename(out: &mut Renamed, key: &str, t: Tensor) -> Result<()> {
    let top = match key {
        "model.embeddings.weight" => Some("emb.weight"),
        "lm_head.weight" => Some("head.weight"),
        "model.norm.weight" => Some("ln_out.weight"),
        "model.norm.bias" => Some("ln_out.bias"),
        _ => None,
    };
    if let Some(n) = top {
        return out.put(n.to_string(), t);
    }
    let (n, rest) = key
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
        .ok_or_else(|| unknown(out, key))?;
    let p = format!("blocks.{n}.");
    // Layer norms, under either spelling.
    for (from, to) in [("ln1.", "ln1."), ("attn_norm.", "ln1."), ("ln2.", "ln2."), ("ffn_norm.", "ln2.")] {
        if let Some(tail) = rest.strip_prefix(from) {
            return out.put(format!("{p}{to}{tail}"), t);
        }
    }
    if let Some(tail) = rest.strip_prefix("pre_norm.") {
        if n != 0 {
            return Err(unknown(out, key));
        }
        return out.put(format!("blocks.0.ln0.{tail}"), t);
    }
    // gguf-py's names: the official ones under `attention.` / `feed_forward.`.
    if let Some(tail) = rest.strip_prefix("attention.") {
        return out.put(format!("{p}att.{tail}"), t);
    }
    if let Some(tail) = rest.strip_prefix("feed_forward.").or_else(|| rest.strip_prefix("ffn.")) {
        return out.put(format!("{p}ffn.{tail}"), t);
    }
    // flash-linear-attention's names.
    let Some(tail) = rest.strip_prefix("attn.") else { return Err(unknown(out, key)) };
    let proj = match tail {
        "r_proj.weight" => Some("receptance.weight"),
        "k_proj.weight" => Some("key.weight"),
        "v_proj.weight" => Some("value.weight"),
        "o_proj.weight" => Some("output.weight"),
        "g_norm.weight" => Some("ln_x.weight"),
        "g_norm.bias" => Some("ln_x.bias"),
        "x_r" | "x_w" | "x_k" | "x_v" | "x_a" | "x_g" | "k_k" | "k_a" | "r_k" => Some(tail),
        _ => None,
    };
    if let Some(o) = proj {
        return out.put(format!("{p}att.{o}"), t);
    }
    if tail == "x_x" {
        let v = t.to_f32_vec().map_err(|e| e.context(out.file))?;
        if t.squeezed_shape().first() != Some(&6) || v.len() % 6 != 0 {
            return Err(Error::format(format!(
                "{}: tensor '{key}' has shape {:?}, expected [6, C] (the r w k v a g token-shift mixes)",
                out.file, t.shape
            )));
        }
        let c = v.len() / 6;
        for (i, m) in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"].iter().enumerate() {
            out.put(format!("{p}att.{m}"), Tensor::from_f32(m, vec![c], &v[i * c..(i + 1) * c]))?;
        }
        return Ok(());
    }
    for l in ["w", "a", "v", "g"] {
        let Some(part) = tail.strip_prefix(&format!("{l}_lora.lora.")) else { continue };
        return match part {
            "0.weight" => out.put(format!("{p}att.{l}1"), transposed(out.file, key, &t)?),
            "2.weight" => out.put(format!("{p}att.{l}2"), transposed(out.file, key, &t)?),
            "2.bias" if l != "g" => out.put(format!("{p}att.{l}0"), t),
            _ => Err(unknown(out, key)),
        };
    }
    Err(unknown(out, key))
}

/// Files `t` (called `key` in a transformers RWKV-5/6 checkpoint) under its official name.
fn rename_rwkv56(out: &mut Renamed, key: &str, t: Tensor) -> Result<()> {
    let top = match key {
        "rwkv.embeddings.weight" => Some("emb.weight"),
        "head.weight" => Some("head.weight"),
        "rwkv.ln_out.weight" => Some("ln_out.weight"),
        "rwkv.ln_out.bias" => Some("ln_out.bias"),
        _ => None,
    };
    if let Some(n) = top {
        return out.put(n.to_string(), t);
    }
    let (n, rest) = key
        .strip_prefix("rwkv.blocks.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
        .ok_or_else(|| unknown(out, key))?;
    let p = format!("blocks.{n}.");
    if let Some(tail) = rest.strip_prefix("pre_ln.") {
        if n != 0 {
            return Err(unknown(out, key));
        }
        return out.put(format!("blocks.0.ln0.{tail}"), t);
    }
    if rest.starts_with("ln1.") || rest.starts_with("ln2.") {
        return out.put(format!("{p}{rest}"), t);
    }
    let (part, tail) = if let Some(tail) = rest.strip_prefix("attention.") {
        ("att", tail)
    } else if let Some(tail) = rest.strip_prefix("feed_forward.") {
        ("ffn", tail)
    } else {
        return Err(unknown(out, key));
    };
    // RWKV-5's token-shift mixes under their long names; every other name is the official one.
    let official = match (part, tail) {
        (_, "time_mix_key") => "time_mix_k",
        (_, "time_mix_receptance") => "time_mix_r",
        ("att", "time_mix_value") => "time_mix_v",
        ("att", "time_mix_gate") => "time_mix_g",
        ("att", "time_decay" | "time_faaaa" | "time_decay_w1" | "time_decay_w2" | "time_maa_w1" | "time_maa_w2")
        | ("att", "time_maa_x" | "time_maa_w" | "time_maa_k" | "time_maa_v" | "time_maa_r" | "time_maa_g")
        | ("att", "key.weight" | "value.weight" | "receptance.weight" | "gate.weight" | "output.weight")
        | ("att", "ln_x.weight" | "ln_x.bias")
        | ("ffn", "time_maa_k" | "time_maa_r" | "key.weight" | "value.weight" | "receptance.weight") => tail,
        _ => return Err(unknown(out, key)),
    };
    out.put(format!("{p}{part}.{official}"), t)
}
