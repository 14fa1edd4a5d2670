//! Random checkpoints in the official layouts, at any shape: for benchmarks at real sizes
//! without shipping big files, and for tests on shapes the golden set does not cover.
//!
//! Values are drawn in sane ranges (unit-variance activations, decays inside (0.3, 0.999) for
//! RWKV v4–v6 and (0.545, 1) for v7, token-shift mixes in [0, 1], Mamba time steps
//! log-uniform in (0.001, 0.1)) so that the forward pass behaves like a trained model's.
//!
//! Layouts: RWKV v4, v5.2, v6 and v7 official (`emb.weight`, `blocks.N...`); Mamba-1 and
//! Mamba-2 transformers (`backbone...`; Mamba-1 with the LM head tied to the embedding,
//! Mamba-2 with `lm_head.weight`). Mamba sizes follow the published models: expand 2,
//! d_conv 4, dt_rank ceil(d/16), d_state 16 (Mamba-1) / 128 (Mamba-2), n_groups 1, Mamba-2
//! head dim = `head_size`. [`synthesize_with`] changes d_state and n_groups; a Mamba-2 file
//! with n_groups ≠ 1 gets a `config.json` beside it (its loader needs one to tell n_groups).

use crate::error::{Error, Result};
use crate::format::safetensors::write;
use crate::rng::Rng;
use crate::tensor::{f32_to_bf16, f32_to_f16, DType};
use std::path::Path;

/// Shape and dtype of a synthetic checkpoint.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Architecture name: "rwkv4", "rwkv5", "rwkv6", "rwkv7", "mamba1" or "mamba2".
    pub arch: String,
    /// Number of blocks.
    pub n_layer: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Head size (RWKV v5+; Mamba-2 head dim, which must divide 2·`n_embd`); must divide `n_embd`
    /// for RWKV.
    pub head_size: usize,
    /// Storage dtype of the matrices (F32, BF16 or F16); small vectors follow it too.
    pub dtype: DType,
    /// Seed of the generator.
    pub seed: u64,
}

/// The official RWKV-7 LoRA rank for width `c` and factor `k`: max(32, round(k·√c/32)·32).
pub fn rwkv7_lora_rank(c: usize, k: f32) -> usize {
    (((k * (c as f32).sqrt()) / 32.0).round() as usize * 32).max(32)
}

struct Builder {
    dtype: DType,
    tensors: Vec<(String, DType, Vec<usize>, Vec<u8>)>,
    rng: Rng,
}

impl Builder {
    fn push(&mut self, name: &str, shape: Vec<usize>, vals: Vec<f32>) {
        let bytes = match self.dtype {
            DType::BF16 => vals.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
            DType::F16 => vals.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect(),
            _ => vals.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        };
        self.tensors.push((name.to_string(), self.dtype, shape, bytes));
    }
    fn normal(&mut self, name: &str, shape: Vec<usize>, std: f32) {
        let n = shape.iter().product();
        let v = (0..n).map(|_| self.rng.normal() * std).collect();
        self.push(name, shape, v);
    }
    fn uniform(&mut self, name: &str, shape: Vec<usize>, lo: f32, hi: f32) {
        let n = shape.iter().product();
        let v = (0..n).map(|_| lo + (hi - lo) * self.rng.uniform()).collect();
        self.push(name, shape, v);
    }
    fn constant(&mut self, name: &str, shape: Vec<usize>, c: f32) {
        let n = shape.iter().product();
        self.push(name, shape, vec![c; n]);
    }
}

/// Mamba sizes that [`SynthSpec`] does not carry; `None` keeps the defaults (d_state 16 for
/// Mamba-1 and 128 for Mamba-2, n_groups 1).
#[derive(Debug, Clone, Default)]
pub struct MambaSizes {
    /// SSM state size (per group for Mamba-2).
    pub d_state: Option<usize>,
    /// Mamba-2 groups sharing B and C; must divide the head count.
    pub n_groups: Option<usize>,
}

/// Writes a random checkpoint of `spec` to `path`.
pub fn synthesize(spec: &SynthSpec, path: &Path) -> Result<()> {
    synthesize_with(spec, &MambaSizes::default(), path)
}

/// [`synthesize`] with explicit Mamba sizes. A Mamba-2 checkpoint with n_groups ≠ 1 is
/// written with a `config.json` beside it (overwriting one that is there).
pub fn synthesize_with(spec: &SynthSpec, mamba: &MambaSizes, path: &Path) -> Result<()> {
    if !matches!(spec.dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Err(Error::invalid(format!("--dtype {:?}: f32, bf16 or f16 expected", spec.dtype)));
    }
    if spec.n_layer == 0 || spec.n_embd == 0 || spec.n_vocab == 0 {
        return Err(Error::invalid("layers, width and vocab must be at least 1"));
    }
    let mut b = Builder { dtype: spec.dtype, tensors: Vec::new(), rng: Rng::new(spec.seed) };
    let mut config = None;
    match spec.arch.as_str() {
        "rwkv4" => rwkv4(spec, &mut b),
        "rwkv5" => rwkv5(spec, &mut b)?,
        "rwkv6" => rwkv6(spec, &mut b)?,
        "rwkv7" => rwkv7(spec, &mut b)?,
        "mamba1" => mamba1(spec, mamba.d_state.unwrap_or(16), &mut b)?,
        "mamba2" => config = mamba2(spec, mamba.d_state.unwrap_or(128), mamba.n_groups.unwrap_or(1), &mut b)?,
        other => {
            return Err(Error::unsupported(format!(
                "synth: architecture '{other}' (known: rwkv4, rwkv5, rwkv6, rwkv7, mamba1, mamba2)"
            )))
        }
    }
    write(path, &b.tensors, None)?;
    if let Some(text) = config {
        let cfg = path.parent().unwrap_or(Path::new(".")).join("config.json");
        std::fs::write(&cfg, text).map_err(|e| Error::io(&cfg, e))?;
    }
    Ok(())
}

/// Per-step decay factors exp(−exp(d)) in (0.3, 0.999): d in (ln(−ln 0.999), ln(−ln 0.3)).
const DECAY_LO: f32 = -6.9;
const DECAY_HI: f32 = 0.18;

/// The RWKV parts every version v4–v6 shares: embedding + ln0, ln1/ln2 of every block,
/// ln_out and head. `block` adds each block's own tensors.
fn rwkv_common(spec: &SynthSpec, b: &mut Builder, mut block: impl FnMut(&mut Builder, &str)) {
    let (c, v) = (spec.n_embd, spec.n_vocab);
    b.normal("emb.weight", vec![v, c], 1.0);
    b.constant("blocks.0.ln0.weight", vec![c], 1.0);
    b.constant("blocks.0.ln0.bias", vec![c], 0.0);
    for i in 0..spec.n_layer {
        let p = format!("blocks.{i}");
        for ln in ["ln1", "ln2"] {
            b.uniform(&format!("{p}.{ln}.weight"), vec![c], 0.8, 1.2);
            b.normal(&format!("{p}.{ln}.bias"), vec![c], 0.02);
        }
        block(b, &p);
    }
    b.constant("ln_out.weight", vec![c], 1.0);
    b.constant("ln_out.bias", vec![c], 0.0);
    b.normal("head.weight", vec![v, c], 1.0 / (c as f32).sqrt());
}

/// The v4–v6 channel mix matrices (FFN width F) with the given mix names.
fn rwkv_ffn(b: &mut Builder, p: &str, c: usize, f: usize, mixes: [&str; 2]) {
    let s = 1.0 / (c as f32).sqrt();
    for m in mixes {
        b.uniform(&format!("{p}.ffn.{m}"), vec![1, 1, c], 0.0, 1.0);
    }
    b.normal(&format!("{p}.ffn.key.weight"), vec![f, c], s);
    b.normal(&format!("{p}.ffn.receptance.weight"), vec![c, c], s);
    b.normal(&format!("{p}.ffn.value.weight"), vec![c, f], 0.5 / (f as f32).sqrt());
}

fn head_count(spec: &SynthSpec) -> Result<usize> {
    let (c, n) = (spec.n_embd, spec.head_size);
    if n == 0 || c % n != 0 {
        return Err(Error::invalid(format!("head size {n} must divide width {c}")));
    }
    Ok(c / n)
}

/// RWKV v5/v6 FFN width: 3.5·C rounded down to a multiple of 32 (at least 32).
fn ffn_v5(c: usize) -> usize {
    (c * 7 / 2 / 32 * 32).max(32)
}

fn rwkv4(spec: &SynthSpec, b: &mut Builder) {
    let c = spec.n_embd;
    let s = 1.0 / (c as f32).sqrt();
    rwkv_common(spec, b, |b, p| {
        b.uniform(&format!("{p}.att.time_decay"), vec![c], DECAY_LO, DECAY_HI);
        b.uniform(&format!("{p}.att.time_first"), vec![c], -1.0, 0.5);
        for m in ["k", "v", "r"] {
            b.uniform(&format!("{p}.att.time_mix_{m}"), vec![1, 1, c], 0.0, 1.0);
        }
        for m in ["key", "value", "receptance", "output"] {
            b.normal(&format!("{p}.att.{m}.weight"), vec![c, c], s);
        }
        rwkv_ffn(b, p, c, 4 * c, ["time_mix_k", "time_mix_r"]);
    });
}

fn rwkv5(spec: &SynthSpec, b: &mut Builder) -> Result<()> {
    let (c, n) = (spec.n_embd, spec.head_size);
    let h = head_count(spec)?;
    let s = 1.0 / (c as f32).sqrt();
    rwkv_common(spec, b, |b, p| {
        for m in ["k", "v", "r", "g"] {
            b.uniform(&format!("{p}.att.time_mix_{m}"), vec![1, 1, c], 0.0, 1.0);
        }
        b.uniform(&format!("{p}.att.time_decay"), vec![h, n], DECAY_LO, DECAY_HI);
        b.uniform(&format!("{p}.att.time_faaaa"), vec![h, n], -0.5, 0.5);
        for m in ["receptance", "key", "value", "gate", "output"] {
            b.normal(&format!("{p}.att.{m}.weight"), vec![c, c], s);
        }
        b.uniform(&format!("{p}.att.ln_x.weight"), vec![c], 0.5, 1.0);
        b.normal(&format!("{p}.att.ln_x.bias"), vec![c], 0.02);
        rwkv_ffn(b, p, c, ffn_v5(c), ["time_mix_k", "time_mix_r"]);
    });
    Ok(())
}

fn rwkv6(spec: &SynthSpec, b: &mut Builder) -> Result<()> {
    let (c, n) = (spec.n_embd, spec.head_size);
    let h = head_count(spec)?;
    let s = 1.0 / (c as f32).sqrt();
    // RWKV-LM's LoRA ranks: 32 (mix) and 64 (decay), doubled from width 4096.
    let (d, dd) = if c >= 4096 { (64, 128) } else { (32, 64) };
    rwkv_common(spec, b, |b, p| {
        for m in ["x", "w", "k", "v", "r", "g"] {
            b.uniform(&format!("{p}.att.time_maa_{m}"), vec![1, 1, c], 0.0, 1.0);
        }
        b.normal(&format!("{p}.att.time_maa_w1"), vec![c, 5 * d], s);
        b.normal(&format!("{p}.att.time_maa_w2"), vec![5, d, c], 0.1 / (d as f32).sqrt());
        b.uniform(&format!("{p}.att.time_decay"), vec![1, 1, c], DECAY_LO, DECAY_HI);
        b.normal(&format!("{p}.att.time_decay_w1"), vec![c, dd], s);
        b.normal(&format!("{p}.att.time_decay_w2"), vec![dd, c], 0.1 / (dd as f32).sqrt());
        b.uniform(&format!("{p}.att.time_faaaa"), vec![h, n], -0.5, 0.5);
        for m in ["receptance", "key", "value", "gate", "output"] {
            b.normal(&format!("{p}.att.{m}.weight"), vec![c, c], s);
        }
        b.uniform(&format!("{p}.att.ln_x.weight"), vec![c], 0.5, 1.0);
        b.normal(&format!("{p}.att.ln_x.bias"), vec![c], 0.02);
        rwkv_ffn(b, p, c, ffn_v5(c), ["time_maa_k", "time_maa_r"]);
    });
    Ok(())
}

/// softplus⁻¹(y) = y + ln(−expm1(−y)): the dt bias that gives time step y.
fn inv_softplus(y: f32) -> f32 {
    y + (-(-y).exp_m1()).ln()
}

/// A time step log-uniform in (0.001, 0.1), as Mamba's initialization.
fn time_step(rng: &mut Rng) -> f32 {
    (0.001f32.ln() + (0.1f32.ln() - 0.001f32.ln()) * rng.uniform()).exp()
}

/// Embedding, per-layer norm (the mixer is added by `mixer`) and norm_f of both Mamba versions.
fn mamba_common(spec: &SynthSpec, b: &mut Builder, mut mixer: impl FnMut(&mut Builder, &str)) {
    let (d, v) = (spec.n_embd, spec.n_vocab);
    b.normal("backbone.embeddings.weight", vec![v, d], 1.0 / (d as f32).sqrt());
    for i in 0..spec.n_layer {
        b.uniform(&format!("backbone.layers.{i}.norm.weight"), vec![d], 0.8, 1.2);
        mixer(b, &format!("backbone.layers.{i}.mixer"));
    }
    b.uniform("backbone.norm_f.weight", vec![d], 0.8, 1.2);
}

fn mamba1(spec: &SynthSpec, ns: usize, b: &mut Builder) -> Result<()> {
    let d = spec.n_embd;
    let (di, r, k) = (2 * d, d.div_ceil(16), 4);
    if ns == 0 {
        return Err(Error::invalid("d_state must be at least 1"));
    }
    mamba_common(spec, b, |b, p| {
        b.normal(&format!("{p}.in_proj.weight"), vec![2 * di, d], 1.0 / (d as f32).sqrt());
        b.normal(&format!("{p}.conv1d.weight"), vec![di, 1, k], 0.5);
        b.normal(&format!("{p}.conv1d.bias"), vec![di], 0.1);
        b.normal(&format!("{p}.x_proj.weight"), vec![r + 2 * ns, di], 1.0 / (di as f32).sqrt());
        b.normal(&format!("{p}.dt_proj.weight"), vec![di, r], 0.5 / (r as f32).sqrt());
        let bias = (0..di).map(|_| inv_softplus(time_step(&mut b.rng))).collect();
        b.push(&format!("{p}.dt_proj.bias"), vec![di], bias);
        let a_log = (0..di * ns).map(|j| ((j % ns + 1) as f32).ln() + 0.05 * b.rng.normal()).collect();
        b.push(&format!("{p}.A_log"), vec![di, ns], a_log);
        b.uniform(&format!("{p}.D"), vec![di], 0.9, 1.1);
        b.normal(&format!("{p}.out_proj.weight"), vec![d, di], 0.5 / (di as f32).sqrt());
    });
    Ok(())
}

/// Returns the text of the `config.json` to write beside the file, when n_groups ≠ 1.
fn mamba2(spec: &SynthSpec, ns: usize, ng: usize, b: &mut Builder) -> Result<Option<String>> {
    let d = spec.n_embd;
    let (di, np, k) = (2 * d, spec.head_size, 4);
    if np == 0 || di % np != 0 {
        return Err(Error::invalid(format!("head dim {np} must divide d_inner {di} (2 x width)")));
    }
    let nh = di / np;
    if ns == 0 || ng == 0 || nh % ng != 0 {
        return Err(Error::invalid(format!("n_groups {ng} must divide the {nh} heads; d_state {ns} must be >= 1")));
    }
    let cd = di + 2 * ng * ns;
    mamba_common(spec, b, |b, p| {
        b.normal(&format!("{p}.in_proj.weight"), vec![di + cd + nh, d], 1.0 / (d as f32).sqrt());
        b.normal(&format!("{p}.conv1d.weight"), vec![cd, 1, k], 0.5);
        b.normal(&format!("{p}.conv1d.bias"), vec![cd], 0.1);
        let bias = (0..nh).map(|_| inv_softplus(time_step(&mut b.rng))).collect();
        b.push(&format!("{p}.dt_bias"), vec![nh], bias);
        let a_log = (0..nh).map(|_| (1.0 + 15.0 * b.rng.uniform()).ln()).collect();
        b.push(&format!("{p}.A_log"), vec![nh], a_log);
        b.uniform(&format!("{p}.D"), vec![nh], 0.9, 1.1);
        b.uniform(&format!("{p}.norm.weight"), vec![di], 0.8, 1.2);
        b.normal(&format!("{p}.out_proj.weight"), vec![d, di], 0.5 / (di as f32).sqrt());
    });
    b.normal("lm_head.weight", vec![spec.n_vocab, d], 1.0 / (d as f32).sqrt());
    Ok((ng != 1).then(|| {
        format!(
            "{{\n  \"model_type\": \"mamba2\",\n  \"hidden_size\": {d},\n  \"num_hidden_layers\": {},\n  \
             \"num_heads\": {nh},\n  \"head_dim\": {np},\n  \"n_groups\": {ng},\n  \"state_size\": {ns},\n  \
             \"expand\": 2,\n  \"conv_kernel\": {k},\n  \"vocab_size\": {},\n  \"layer_norm_epsilon\": 1e-05,\n  \
             \"tie_word_embeddings\": false\n}}\n",
            spec.n_layer, spec.n_vocab
        )
    }))
}

fn rwkv7(spec: &SynthSpec, b: &mut Builder) -> Result<()> {
    let (c, v, n) = (spec.n_embd, spec.n_vocab, spec.head_size);
    if n == 0 || c % n != 0 {
        return Err(Error::invalid(format!("head size {n} must divide width {c}")));
    }
    let h = c / n;
    let f = 4 * c;
    let (dw, da, dv, dg) =
        (rwkv7_lora_rank(c, 2.5), rwkv7_lora_rank(c, 2.5), rwkv7_lora_rank(c, 1.7), rwkv7_lora_rank(c, 5.0));
    let s = 1.0 / (c as f32).sqrt();
    b.normal("emb.weight", vec![v, c], 1.0);
    b.constant("blocks.0.ln0.weight", vec![c], 1.0);
    b.constant("blocks.0.ln0.bias", vec![c], 0.0);
    for i in 0..spec.n_layer {
        let p = format!("blocks.{i}");
        for ln in ["ln1", "ln2"] {
            b.uniform(&format!("{p}.{ln}.weight"), vec![c], 0.8, 1.2);
            b.normal(&format!("{p}.{ln}.bias"), vec![c], 0.02);
        }
        for x in ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"] {
            b.uniform(&format!("{p}.att.{x}"), vec![1, 1, c], 0.0, 1.0);
        }
        b.uniform(&format!("{p}.att.w0"), vec![1, 1, c], -3.0, 1.0);
        b.uniform(&format!("{p}.att.a0"), vec![1, 1, c], -0.5, 0.5);
        b.uniform(&format!("{p}.att.v0"), vec![1, 1, c], 0.5, 1.5);
        for (name, d) in [("w", dw), ("a", da), ("v", dv), ("g", dg)] {
            b.normal(&format!("{p}.att.{name}1"), vec![c, d], s);
            b.normal(&format!("{p}.att.{name}2"), vec![d, c], 0.1 / (d as f32).sqrt());
        }
        b.uniform(&format!("{p}.att.k_k"), vec![1, 1, c], 0.7, 1.0);
        b.uniform(&format!("{p}.att.k_a"), vec![1, 1, c], 0.8, 1.2);
        b.normal(&format!("{p}.att.r_k"), vec![h, n], 0.1);
        for m in ["receptance", "key", "value", "output"] {
            b.normal(&format!("{p}.att.{m}.weight"), vec![c, c], s);
        }
        b.uniform(&format!("{p}.att.ln_x.weight"), vec![c], 0.5, 1.0);
        b.normal(&format!("{p}.att.ln_x.bias"), vec![c], 0.02);
        b.uniform(&format!("{p}.ffn.x_k"), vec![1, 1, c], 0.0, 1.0);
        b.normal(&format!("{p}.ffn.key.weight"), vec![f, c], s);
        b.normal(&format!("{p}.ffn.value.weight"), vec![c, f], 0.5 / (f as f32).sqrt());
    }
    b.constant("ln_out.weight", vec![c], 1.0);
    b.constant("ln_out.bias", vec![c], 0.0);
    b.normal("head.weight", vec![v, c], s);
    Ok(())
}
