//! llama.cpp's GGUF tensor names and layout conventions, undone onto the layouts libsutra's
//! models read: BlinkDL's official RWKV-6/RWKV-7 names, transformers' Mamba-1/Mamba-2 names.
//!
//! What llama.cpp's converter changed and this module changes back:
//! - names: `token_embd`, `blk.N.time_mix_*`, `blk.N.ssm_*`, `output`, `output_norm`, …;
//! - RWKV-7: the six token-shift mixes fused into one `time_mix_lerp_fused` `[6, C]` (split
//!   again, order r w k v a g), the low-rank matrices stored as `nn.Linear` weights (transposed
//!   back to the official `x @ W` layout), `r_k` flattened (reshaped to `[heads, head_size]`);
//! - RWKV-6: the five data-dependent mixes fused into `time_mix_lerp_fused` `[5, 1, 1, C]`
//!   (split again, order w k v r g; older files store them apart), the token-shift LoRA
//!   `time_mix_w1` `[5D, C]` and `time_mix_w2` `[5, C, D]` and the decay LoRA transposed back
//!   (`time_maa_w1 [C, 5D]`, `time_maa_w2 [5, D, C]`, `time_decay_w1 [C, Dd]`,
//!   `time_decay_w2 [Dd, C]`), and `rwkv6.rescale_every_n_layers` handed to the model, whose
//!   output matrices the converter divided (see [`crate::models::rwkv6`]);
//! - Mamba: `A` stored as `−exp(A_log)` (turned back into `A_log`), `conv1d` as `[D, K]`
//!   (the `[D, 1, K]` shape restored), Mamba-2 `D`, `A` and the grouped norm as `[1, H]`/`[G, D/G]`;
//! - hyper-parameters that shapes do not tell (Mamba-2 groups, epsilons) come from the
//!   metadata, handed to the models as the `config.json` they would read beside a checkpoint.
//!
//! Large matrices stay views of the file (any ggml type); only small vectors and the RWKV-7
//! low-rank matrices are rewritten, into owned f32.

use super::gguf::{GgufFile, GgufTensor};
use super::{Format, HfConfig, Renamed, SafetensorsFile};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// The record of `g`'s tensors under libsutra's names, the config its metadata stands for,
/// and its scalar metadata (`general.name`, …) as strings.
pub fn to_checkpoint(g: &GgufFile) -> Result<(SafetensorsFile, Option<HfConfig>)> {
    let arch = g
        .str("general.architecture")?
        .ok_or_else(|| Error::format(format!("{}: GGUF without general.architecture", g.name)))?;
    let mut out = Renamed::new(&g.name, "GGUF");
    let config = match arch {
        "rwkv7" => rwkv7(g, &mut out)?,
        "rwkv6" => rwkv6(g, &mut out)?,
        "mamba" | "mamba2" => mamba(g, arch, &mut out)?,
        other => {
            return Err(Error::unsupported(format!(
                "{}: GGUF architecture '{other}'; libsutra reads rwkv6, rwkv7, mamba and mamba2 GGUF files",
                g.name
            )))
        }
    };
    let mut metadata = HashMap::new();
    for (k, v) in &g.metadata {
        if !matches!(v, super::gguf::Value::Array(_)) && k != "tokenizer.chat_template" {
            metadata.insert(k.clone(), v.display());
        }
    }
    metadata.insert("gguf.version".into(), g.version.to_string());
    let file = SafetensorsFile {
        name: g.name.clone(),
        tensors: out.tensors,
        metadata,
        n_bytes: g.n_bytes,
        quant: None,
        format: Format::Gguf,
    };
    let config = config.map(|json| HfConfig { name: format!("{} (GGUF metadata)", g.name), json });
    Ok((file, config))
}

impl Renamed<'_> {
    /// `t` under `name` with `shape` (same element count, same bytes).
    fn reshaped(&mut self, name: String, t: &GgufTensor, shape: Vec<usize>) -> Result<()> {
        if shape.iter().product::<usize>() != t.tensor.numel() {
            return Err(Error::format(format!(
                "{}: GGUF tensor '{}' has dimensions {:?}, which do not fit shape {shape:?}",
                self.file, t.name, t.ne
            )));
        }
        let mut v = t.tensor.clone();
        v.shape = shape;
        self.put(name, v)
    }
}

/// The tensor's elements as f32 (dequantized when stored in a ggml block type).
fn floats(t: &GgufTensor) -> Result<Vec<f32>> {
    t.tensor.to_f32_vec()
}

/// `[rows, cols]` row-major → owned `[cols, rows]`.
fn transposed(name: &str, src: &[f32], rows: usize, cols: usize) -> Tensor {
    Tensor::from_f32(name, vec![cols, rows], &super::transpose(src, rows, cols))
}

fn unknown(file: &str, arch: &str, name: &str) -> Error {
    Error::unsupported(format!("{file}: GGUF tensor '{name}' is not part of the {arch} layout libsutra reads"))
}

/// `blk.N.rest` → `(N, rest)`.
fn split_block(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// The top-level RWKV tensors (embedding, ln0, ln_out, head) under their official names.
fn rwkv_top(name: &str) -> Option<&'static str> {
    match name {
        "token_embd.weight" => Some("emb.weight"),
        "output.weight" => Some("head.weight"),
        "output_norm.weight" => Some("ln_out.weight"),
        "output_norm.bias" => Some("ln_out.bias"),
        "token_embd_norm.weight" => Some("blocks.0.ln0.weight"),
        "token_embd_norm.bias" => Some("blocks.0.ln0.bias"),
        _ => None,
    }
}

/// The block tensors RWKV-6 and RWKV-7 GGUF files name alike (`blk.N.` stripped), under
/// their official names (`blocks.N.` to prepend).
fn rwkv_block_common(rest: &str) -> Option<&'static str> {
    match rest {
        "attn_norm.weight" => Some("ln1.weight"),
        "attn_norm.bias" => Some("ln1.bias"),
        "attn_norm_2.weight" => Some("ln2.weight"),
        "attn_norm_2.bias" => Some("ln2.bias"),
        "time_mix_key.weight" => Some("att.key.weight"),
        "time_mix_value.weight" => Some("att.value.weight"),
        "time_mix_receptance.weight" => Some("att.receptance.weight"),
        "time_mix_output.weight" => Some("att.output.weight"),
        "time_mix_ln.weight" => Some("att.ln_x.weight"),
        "time_mix_ln.bias" => Some("att.ln_x.bias"),
        _ => None,
    }
}

/// Tied embeddings: without `output.weight` the head is the embedding matrix.
fn tie_head(out: &mut Renamed) -> Result<()> {
    if !out.tensors.contains_key("head.weight") {
        if let Some(e) = out.tensors.get("emb.weight").cloned() {
            out.put("head.weight".into(), e)?;
        }
    }
    Ok(())
}

/// The 2-D `t` as its `[rows, cols]`, or a format error naming it.
fn dims2(g: &GgufFile, t: &GgufTensor) -> Result<[usize; 2]> {
    match t.tensor.shape[..] {
        [rows, cols] => Ok([rows, cols]),
        _ => Err(Error::format(format!("{}: GGUF tensor '{}' has dimensions {:?}, 2 expected", g.name, t.name, t.ne))),
    }
}

fn rwkv6(g: &GgufFile, out: &mut Renamed) -> Result<Option<serde_json::Value>> {
    if let Some(eps) = g.float("rwkv6.attention.layer_norm_epsilon")? {
        if (eps - 1e-5).abs() > 1e-9 {
            return Err(Error::unsupported(format!(
                "{}: rwkv6.attention.layer_norm_epsilon is {eps}; libsutra's RWKV-6 LayerNorms use 1e-5",
                g.name
            )));
        }
    }
    for t in &g.tensors {
        if let Some(n) = rwkv_top(&t.name) {
            out.put(n.to_string(), t.tensor.clone())?;
            continue;
        }
        let (b, rest) = split_block(&t.name).ok_or_else(|| unknown(&g.name, "rwkv6", &t.name))?;
        let p = format!("blocks.{b}.");
        let same = rwkv_block_common(rest).or(match rest {
            "time_mix_gate.weight" => Some("att.gate.weight"),
            "time_mix_first.weight" => Some("att.time_faaaa"),
            "time_mix_decay.weight" => Some("att.time_decay"),
            "time_mix_lerp_x.weight" => Some("att.time_maa_x"),
            "time_mix_lerp_w.weight" => Some("att.time_maa_w"),
            "time_mix_lerp_k.weight" => Some("att.time_maa_k"),
            "time_mix_lerp_v.weight" => Some("att.time_maa_v"),
            "time_mix_lerp_r.weight" => Some("att.time_maa_r"),
            "time_mix_lerp_g.weight" => Some("att.time_maa_g"),
            "channel_mix_lerp_k.weight" => Some("ffn.time_maa_k"),
            "channel_mix_lerp_r.weight" => Some("ffn.time_maa_r"),
            "channel_mix_key.weight" => Some("ffn.key.weight"),
            "channel_mix_value.weight" => Some("ffn.value.weight"),
            "channel_mix_receptance.weight" => Some("ffn.receptance.weight"),
            _ => None,
        });
        if let Some(n) = same {
            out.put(format!("{p}{n}"), t.tensor.clone())?;
            continue;
        }
        let official = match rest {
            "time_mix_w1.weight" => "att.time_maa_w1",
            "time_mix_decay_w1.weight" => "att.time_decay_w1",
            "time_mix_decay_w2.weight" => "att.time_decay_w2",
            "time_mix_w2.weight" => "att.time_maa_w2",
            "time_mix_lerp_fused.weight" => "",
            _ => return Err(unknown(&g.name, "rwkv6", &t.name)),
        };
        let name = format!("{p}{official}");
        match rest {
            // [5, C, D] → [5, D, C]: each of the five matrices transposed.
            "time_mix_w2.weight" => {
                let [five, c, d] = t.tensor.shape[..] else {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' has dimensions {:?}, [D, C, 5] expected",
                        g.name, t.name, t.ne
                    )));
                };
                let v = floats(t)?;
                let mut dst = Vec::with_capacity(v.len());
                for m in v.chunks_exact(c * d) {
                    dst.extend(transposed(&name, m, c, d).to_f32_vec()?);
                }
                out.put(name.clone(), Tensor::from_f32(&name, vec![five, d, c], &dst))?;
            }
            "time_mix_lerp_fused.weight" => {
                let v = floats(t)?;
                if v.len() % 5 != 0 || t.tensor.shape.first() != Some(&5) {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' has dimensions {:?}: five mixes of C expected",
                        g.name, t.name, t.ne
                    )));
                }
                let c = v.len() / 5;
                for (i, k) in ["w", "k", "v", "r", "g"].iter().enumerate() {
                    let name = format!("{p}att.time_maa_{k}");
                    out.put(name.clone(), Tensor::from_f32(&name, vec![1, 1, c], &v[i * c..(i + 1) * c]))?;
                }
            }
            // Stored as nn.Linear weights; the official layout multiplies `x @ W`.
            _ => {
                let [rows, cols] = dims2(g, t)?;
                out.put(name.clone(), transposed(&name, &floats(t)?, rows, cols))?;
            }
        }
    }
    tie_head(out)?;
    let mut cfg = serde_json::Map::new();
    if let Some(r) = g.uint("rwkv6.rescale_every_n_layers")? {
        cfg.insert(crate::models::rwkv6::GGUF_RESCALE_EVERY.into(), r.into());
    }
    Ok(Some(serde_json::Value::Object(cfg)))
}

fn rwkv7(g: &GgufFile, out: &mut Renamed) -> Result<Option<serde_json::Value>> {
    let head_size = g
        .uint("rwkv7.wkv.head_size")?
        .ok_or_else(|| Error::format(format!("{}: GGUF rwkv7 without rwkv7.wkv.head_size", g.name)))?
        as usize;
    if head_size == 0 {
        return Err(Error::format(format!("{}: rwkv7.wkv.head_size is 0", g.name)));
    }
    for t in &g.tensors {
        if let Some(n) = rwkv_top(&t.name) {
            out.put(n.to_string(), t.tensor.clone())?;
            continue;
        }
        let (b, rest) = split_block(&t.name).ok_or_else(|| unknown(&g.name, "rwkv7", &t.name))?;
        let p = format!("blocks.{b}.");
        let same = rwkv_block_common(rest).or(match rest {
            "time_mix_w0.weight" => Some("att.w0"),
            "time_mix_a0.weight" => Some("att.a0"),
            "time_mix_v0.weight" => Some("att.v0"),
            "time_mix_k_k.weight" => Some("att.k_k"),
            "time_mix_k_a.weight" => Some("att.k_a"),
            "channel_mix_key.weight" => Some("ffn.key.weight"),
            "channel_mix_value.weight" => Some("ffn.value.weight"),
            "channel_mix_lerp_k.weight" => Some("ffn.x_k"),
            _ => None,
        });
        if let Some(n) = same {
            out.put(format!("{p}{n}"), t.tensor.clone())?;
            continue;
        }
        match rest {
            "time_mix_r_k.weight" => {
                let n = t.tensor.numel();
                if n % head_size != 0 {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' has {n} elements, not a multiple of the head size {head_size}",
                        g.name, t.name
                    )));
                }
                out.reshaped(format!("{p}att.r_k"), t, vec![n / head_size, head_size])?;
            }
            // Stored as nn.Linear weights [rank, C] (w1…) and [C, rank] (w2…): the official
            // layout multiplies `x @ W`, the transposes.
            "time_mix_w1.weight" | "time_mix_a1.weight" | "time_mix_v1.weight" | "time_mix_g1.weight"
            | "time_mix_w2.weight" | "time_mix_a2.weight" | "time_mix_v2.weight" | "time_mix_g2.weight" => {
                let [rows, cols] = dims2(g, t)?;
                let key = &rest["time_mix_".len().."time_mix_".len() + 2];
                let name = format!("{p}att.{key}");
                let v = transposed(&name, &floats(t)?, rows, cols);
                out.put(name, v)?;
            }
            "time_mix_lerp_fused.weight" => {
                let v = floats(t)?;
                if v.len() % 6 != 0 {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' has dimensions {:?}: six mixes of C expected",
                        g.name, t.name, t.ne
                    )));
                }
                let c = v.len() / 6;
                for (i, k) in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"].iter().enumerate() {
                    let name = format!("{p}att.{k}");
                    let part = Tensor::from_f32(&name, vec![1, 1, c], &v[i * c..(i + 1) * c]);
                    out.put(name, part)?;
                }
            }
            _ => return Err(unknown(&g.name, "rwkv7", &t.name)),
        }
    }
    tie_head(out)?;
    Ok(None)
}

fn mamba(g: &GgufFile, arch: &str, out: &mut Renamed) -> Result<Option<serde_json::Value>> {
    let v2 = arch == "mamba2";
    if g.get(&format!("{arch}.ssm.dt_b_c_rms")) == Some(&super::gguf::Value::Bool(true)) {
        return Err(Error::unsupported(format!(
            "{}: {arch}.ssm.dt_b_c_rms (Falcon-Mamba's extra norms) is not supported",
            g.name
        )));
    }
    for t in &g.tensors {
        let top = match t.name.as_str() {
            "token_embd.weight" => Some("backbone.embeddings.weight"),
            "output.weight" => Some("lm_head.weight"),
            "output_norm.weight" => Some("backbone.norm_f.weight"),
            _ => None,
        };
        if let Some(n) = top {
            out.put(n.to_string(), t.tensor.clone())?;
            continue;
        }
        let (b, rest) = split_block(&t.name).ok_or_else(|| unknown(&g.name, arch, &t.name))?;
        let p = format!("backbone.layers.{b}.");
        let m = format!("{p}mixer.");
        match rest {
            "attn_norm.weight" => out.put(format!("{p}norm.weight"), t.tensor.clone())?,
            "ssm_in.weight" => out.put(format!("{m}in_proj.weight"), t.tensor.clone())?,
            "ssm_out.weight" => out.put(format!("{m}out_proj.weight"), t.tensor.clone())?,
            "ssm_x.weight" if !v2 => out.put(format!("{m}x_proj.weight"), t.tensor.clone())?,
            "ssm_dt.weight" if !v2 => out.put(format!("{m}dt_proj.weight"), t.tensor.clone())?,
            "ssm_dt.bias" if !v2 => out.put(format!("{m}dt_proj.bias"), t.tensor.clone())?,
            "ssm_dt.bias" => out.reshaped(format!("{m}dt_bias"), t, vec![t.tensor.numel()])?,
            "ssm_conv1d.bias" => out.put(format!("{m}conv1d.bias"), t.tensor.clone())?,
            "ssm_conv1d.weight" => {
                let [d, k] = t.tensor.shape[..] else {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' has dimensions {:?}, [K, D] expected",
                        g.name, t.name, t.ne
                    )));
                };
                out.reshaped(format!("{m}conv1d.weight"), t, vec![d, 1, k])?;
            }
            "ssm_d" => out.reshaped(format!("{m}D"), t, vec![t.tensor.numel()])?,
            "ssm_norm.weight" if v2 => out.reshaped(format!("{m}norm.weight"), t, vec![t.tensor.numel()])?,
            "ssm_a" => {
                // llama.cpp stores A = −exp(A_log); the models read A_log.
                let a = floats(t)?;
                if let Some(i) = a.iter().position(|&x| x.is_nan() || x >= 0.0) {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' holds {} at index {i}: A = -exp(A_log) must be negative",
                        g.name, t.name, a[i]
                    )));
                }
                let log: Vec<f32> = a.iter().map(|&x| (-x).ln()).collect();
                let shape = if v2 { vec![log.len()] } else { t.tensor.shape.clone() };
                let name = format!("{m}A_log");
                out.put(name.clone(), Tensor::from_f32(&name, shape, &log))?;
            }
            _ => return Err(unknown(&g.name, arch, &t.name)),
        }
    }
    let mut cfg = serde_json::Map::new();
    if let Some(eps) = g.float(&format!("{arch}.attention.layer_norm_rms_epsilon"))? {
        cfg.insert("layer_norm_epsilon".into(), eps.into());
    }
    if v2 {
        if let Some(n) = g.uint("mamba2.ssm.group_count")? {
            cfg.insert("n_groups".into(), n.into());
        }
        if let Some(n) = g.uint("mamba2.ssm.state_size")? {
            cfg.insert("state_size".into(), n.into());
        }
    }
    Ok(Some(serde_json::Value::Object(cfg)))
}
