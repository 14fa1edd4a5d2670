//! Random checkpoints in the official layouts, at any shape: for benchmarks at real sizes
//! without shipping big files, and for tests on shapes the golden set does not cover.
//!
//! Values are drawn in sane ranges (unit-variance activations, decays inside (0.545, 1),
//! token-shift mixes in [0, 1]) so that the forward pass behaves like a trained model's.

use crate::error::{Error, Result};
use crate::format::safetensors::write;
use crate::tensor::{f32_to_bf16, f32_to_f16, DType};
use std::path::Path;

/// Shape and dtype of a synthetic checkpoint.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Architecture name ("rwkv7").
    pub arch: String,
    /// Number of blocks.
    pub n_layer: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Head size (RWKV v5+); must divide `n_embd`.
    pub head_size: usize,
    /// Storage dtype of the matrices (F32, BF16 or F16); small vectors follow it too.
    pub dtype: DType,
    /// Seed of the generator.
    pub seed: u64,
}

/// A small deterministic generator (SplitMix64) with uniform and normal draws.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
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

/// Writes a random checkpoint of `spec` to `path`.
pub fn synthesize(spec: &SynthSpec, path: &Path) -> Result<()> {
    if !matches!(spec.dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Err(Error::invalid(format!("--dtype {:?}: f32, bf16 or f16 expected", spec.dtype)));
    }
    if spec.n_layer == 0 || spec.n_embd == 0 || spec.n_vocab == 0 {
        return Err(Error::invalid("layers, width and vocab must be at least 1"));
    }
    let mut b = Builder { dtype: spec.dtype, tensors: Vec::new(), rng: Rng::new(spec.seed) };
    match spec.arch.as_str() {
        "rwkv7" => rwkv7(spec, &mut b)?,
        other => return Err(Error::unsupported(format!("synth: architecture '{other}' (known: rwkv7)"))),
    }
    write(path, &b.tensors, None)
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
