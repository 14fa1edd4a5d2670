//! llama.cpp's GGUF tensor names and layout conventions, undone onto the layouts libsutra's
//! models read: BlinkDL's official RWKV-7 names, transformers' Mamba-1/Mamba-2 names.
//!
//! What llama.cpp's converter changed and this module changes back:
//! - names: `token_embd`, `blk.N.time_mix_*`, `blk.N.ssm_*`, `output`, `output_norm`, …;
//! - RWKV-7: the six token-shift mixes fused into one `time_mix_lerp_fused` `[6, C]` (split
//!   again, order r w k v a g), the low-rank matrices stored as `nn.Linear` weights (transposed
//!   back to the official `x @ W` layout), `r_k` flattened (reshaped to `[heads, head_size]`);
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
        "mamba" | "mamba2" => mamba(g, arch, &mut out)?,
        other => {
            return Err(Error::unsupported(format!(
                "{}: GGUF architecture '{other}'; libsutra reads rwkv7, mamba and mamba2 GGUF files",
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
    let mut dst = vec![0f32; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    Tensor::from_f32(name, vec![cols, rows], &dst)
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

fn rwkv7(g: &GgufFile, out: &mut Renamed) -> Result<Option<serde_json::Value>> {
    let head_size = g
        .uint("rwkv7.wkv.head_size")?
        .ok_or_else(|| Error::format(format!("{}: GGUF rwkv7 without rwkv7.wkv.head_size", g.name)))?
        as usize;
    if head_size == 0 {
        return Err(Error::format(format!("{}: rwkv7.wkv.head_size is 0", g.name)));
    }
    let mut has_head = false;
    for t in &g.tensors {
        let top = match t.name.as_str() {
            "token_embd.weight" => Some("emb.weight"),
            "output.weight" => Some("head.weight"),
            "output_norm.weight" => Some("ln_out.weight"),
            "output_norm.bias" => Some("ln_out.bias"),
            "token_embd_norm.weight" => Some("blocks.0.ln0.weight"),
            "token_embd_norm.bias" => Some("blocks.0.ln0.bias"),
            _ => None,
        };
        if let Some(n) = top {
            has_head |= n == "head.weight";
            out.put(n.to_string(), t.tensor.clone())?;
            continue;
        }
        let (b, rest) = split_block(&t.name).ok_or_else(|| unknown(&g.name, "rwkv7", &t.name))?;
        let p = format!("blocks.{b}.");
        let same = match rest {
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
            "time_mix_w0.weight" => Some("att.w0"),
            "time_mix_a0.weight" => Some("att.a0"),
            "time_mix_v0.weight" => Some("att.v0"),
            "time_mix_k_k.weight" => Some("att.k_k"),
            "time_mix_k_a.weight" => Some("att.k_a"),
            "channel_mix_key.weight" => Some("ffn.key.weight"),
            "channel_mix_value.weight" => Some("ffn.value.weight"),
            "channel_mix_lerp_k.weight" => Some("ffn.x_k"),
            _ => None,
        };
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
                let [rows, cols] = t.tensor.shape[..] else {
                    return Err(Error::format(format!(
                        "{}: GGUF tensor '{}' has dimensions {:?}, 2 expected",
                        g.name, t.name, t.ne
                    )));
                };
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
    if !has_head {
        // Tied embeddings: the head is the embedding matrix.
        let emb = out.tensors.get("emb.weight").cloned();
        if let Some(e) = emb {
            out.put("head.weight".into(), e)?;
        }
    }
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
