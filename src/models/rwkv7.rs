//! RWKV-7 "Goose" (`x070`): B. Peng et al., "RWKV-7 Goose with Expressive Dynamic State
//! Evolution", 2025. The math of BlinkDL's `rwkv.model.RWKV_x070` (pip `rwkv` 0.8.32).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*`,
//! `blocks.N.ffn.*`, `ln_out`, `head.weight`); every size is read from tensor shapes.

use super::common::HeadConfig;
use super::stack::{for_units, save_last, shift, units_to_rows, Block as StackBlock, Norm, Stack, States};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Linear, Seg};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{self, group_norm, l2_normalize, sigmoid};
use crate::tensor::Matrix;

/// GroupNorm epsilon of `att.ln_x`: 1e-5 × head_size_divisor² (divisor 8).
const GN_EPS: f32 = 64e-5;
/// e^{-0.5} as the reference writes it: the decay is exp(-0.606531 · sigmoid(·)) ∈ (0.545, 1).
const DECAY_SCALE: f32 = 0.606531;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-7 model (C, H, N), all read from tensor shapes (H and N from `att.r_k`;
/// the channel-mix width and the LoRA ranks from their own tensors).
pub type Config = HeadConfig;

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// A low-rank pair used as `(x @ W1) @ W2`, stored here as two `[out, in]` matrices.
struct Lora {
    /// [D, C] (checkpoint `*1` is [C, D], transposed at load).
    down: Matrix,
    /// [C, D] (checkpoint `*2` is [D, C], transposed at load).
    up: Matrix,
}

/// One RWKV-7 block.
pub struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// Token-shift mixes x_r, x_w, x_k, x_v, x_a, x_g: each [C].
    x_mix: [Vec<f32>; 6],
    /// Decay bias w0, in-context learning-rate bias a0: [C].
    w0: Vec<f32>,
    a0: Vec<f32>,
    /// Value-residual bias v0: [C] (unused, and possibly absent, in block 0).
    v0: Option<Vec<f32>>,
    /// k_k (key normalization mix), k_a (key/learning-rate mix): [C].
    k_k: Vec<f32>,
    k_a: Vec<f32>,
    /// r_k: per-head bonus [H, N] flattened to [C].
    r_k: Vec<f32>,
    /// Low-rank paths: decay (w1/w2), learning rate (a1/a2), value residual (v1/v2), gate (g1/g2).
    w_lora: Lora,
    a_lora: Lora,
    v_lora: Option<Lora>,
    g_lora: Lora,
    /// receptance, key, value, output: [C, C].
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    output: Matrix,
    /// ln_x GroupNorm (H groups): [C].
    ln_x: Norm,
    /// Channel mix: ffn.x_k [C], ffn.key [F, C], ffn.value [C, F].
    ffn_x_k: Vec<f32>,
    ffn_key: Matrix,
    ffn_value: Matrix,
}

/// A loaded RWKV-7 model.
pub type Rwkv7 = Stack<Block>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads an official-layout RWKV-7 checkpoint; every shape is checked against the sizes read
/// from `emb.weight`, `blocks.0.att.r_k`, `blocks.0.ffn.key.weight` and the LoRAs.
pub fn load(file: &SafetensorsFile) -> Result<Rwkv7> {
    let rd = WeightReader::new(file);
    let (cfg, n_vocab) = HeadConfig::read(&rd, "blocks.0.att.r_k")?;
    let (c, n_head, head_size) = (cfg.n_embd, cfg.n_head, cfg.head_size);
    let blocks_rd = rd.pp("blocks");
    let (n_ffn, _) = rd.shape2("blocks.0.ffn.key.weight")?;
    // A LoRA's rank is whatever `{p}1` holds: [C, D].
    let lora = |a: &WeightReader, p: &str| -> Result<Lora> {
        let d = match a.shape2(&format!("{p}1"))? {
            (r, d) if r == c => d,
            s => return Err(a.error(&format!("{p}1"), format!("has shape {s:?}, expected [{c}, rank]"))),
        };
        Ok(Lora {
            down: a.matrix_transposed(&format!("{p}1"), d, c)?,
            up: a.matrix_transposed(&format!("{p}2"), c, d)?,
        })
    };
    let blocks = (0..blocks_rd.count_children())
        .map(|i| {
            let b = blocks_rd.pp(i);
            let (a, f) = (b.pp("att"), b.pp("ffn"));
            let vec = |n: &str| a.vector(n, c);
            Ok(Block {
                ln1: Norm::layer(&b, "ln1", c)?,
                ln2: Norm::layer(&b, "ln2", c)?,
                x_mix: [vec("x_r")?, vec("x_w")?, vec("x_k")?, vec("x_v")?, vec("x_a")?, vec("x_g")?],
                w0: vec("w0")?,
                a0: vec("a0")?,
                // Block 0 never uses v0/v1/v2; files may or may not carry them.
                v0: if i == 0 { None } else { Some(vec("v0")?) },
                k_k: vec("k_k")?,
                k_a: vec("k_a")?,
                r_k: a.floats("r_k", &[n_head, head_size])?,
                w_lora: lora(&a, "w")?,
                a_lora: lora(&a, "a")?,
                v_lora: if i == 0 { None } else { Some(lora(&a, "v")?) },
                g_lora: lora(&a, "g")?,
                receptance: a.matrix("receptance.weight", c, c)?,
                key: a.matrix("key.weight", c, c)?,
                value: a.matrix("value.weight", c, c)?,
                output: a.matrix("output.weight", c, c)?,
                ln_x: Norm::layer(&a, "ln_x", c)?,
                ffn_x_k: f.vector("x_k", c)?,
                ffn_key: f.matrix("key.weight", n_ffn, c)?,
                ffn_value: f.matrix("value.weight", c, n_ffn)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    cfg.stack(ArchKind::Rwkv7, &rd, n_vocab, blocks, count_params(file))
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

/// `y = up(act(down(x)))` for `t` rows; `act` applied to the rank-D middle (`low`, scratch).
fn lora(lin: &mut Linear, l: &Lora, x: &[f32], t: usize, low: &mut [f32], y: &mut [f32], act: fn(f32) -> f32) {
    let low = &mut low[..t * l.down.rows];
    lin.apply(&l.down, x, t, low);
    low.iter_mut().for_each(|v| *v = act(*v));
    lin.apply(&l.up, low, t, y);
}

impl Block {
    /// The time mix (attention) of block `li` over the rows of `x`; adds its output to `x`.
    fn time_mix(&self, cfg: &Config, li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        let Config { n_embd: c, n_head: nh, head_size: n } = *cfg;
        let [att_x, wkv, _] = cfg.parts();
        let t = x.len() / c;
        let Exec { lin, scratch, carry } = ex;
        let rank = [&self.w_lora, &self.a_lora, &self.g_lora]
            .iter()
            .chain(self.v_lora.as_ref().iter())
            .map(|l| l.down.rows)
            .max()
            .unwrap_or(0);
        let tc = t * c;
        let [xn, xr, xw, xk, xv, xa, xg, r, k, v, w, a, g, low, y, kk, yh] =
            scratch.take([tc, tc, tc, tc, tc, tc, tc, tc, tc, tc, tc, tc, tc, t * rank, tc, tc, tc]);

        // 1. xn = ln1(x); token shift against the previous row's xn (att_x for a sequence's first).
        self.ln1.rows(x, xn);
        for (m, out) in self.x_mix.iter().zip([&mut *xr, &mut *xw, &mut *xk, &mut *xv, &mut *xa, &mut *xg]) {
            shift(segs, xn, st, att_x.clone(), m, out);
        }
        save_last(segs, xn, st, att_x);

        // 2. r = Wr·xr, k = Wk·xk, v = Wv·xv.
        lin.apply(&self.receptance, xr, t, r);
        lin.apply(&self.key, xk, t, k);
        lin.apply(&self.value, xv, t, v);

        // 3. w = exp(-e^{-1/2} · sigmoid(w0 + tanh(xw·w1)·w2)).
        lora(lin, &self.w_lora, xw, t, low, w, f32::tanh);
        for (i, w) in w.iter_mut().enumerate() {
            *w = (-DECAY_SCALE * sigmoid(self.w0[i % c] + *w)).exp();
        }
        // 4. a = sigmoid(a0 + (xa·a1)·a2);  g = sigmoid(xg·g1)·g2.
        lora(lin, &self.a_lora, xa, t, low, a, |v| v);
        for (i, a) in a.iter_mut().enumerate() {
            *a = sigmoid(self.a0[i % c] + *a);
        }
        lora(lin, &self.g_lora, xg, t, low, g, sigmoid);

        // 5. Value residual: block 0 sets v_first = v; later blocks mix towards it with
        //    gate sigmoid(v0 + (xv·v1)·v2).
        carry.resize(tc, 0.0);
        match (&self.v_lora, &self.v0) {
            (Some(vl), Some(v0)) if li > 0 => {
                lora(lin, vl, xv, t, low, y, |v| v);
                for i in 0..tc {
                    let gate = sigmoid(v0[i % c] + y[i]);
                    v[i] += (carry[i] - v[i]) * gate;
                }
            }
            _ => carry[..tc].copy_from_slice(v),
        }

        // 6. Per row: kk = normalize_per_head(k ⊙ k_k);  k ← k ⊙ (1 + (a − 1) ⊙ k_a).
        for ((k, a), kk) in k.chunks_exact_mut(c).zip(a.chunks_exact(c)).zip(kk.chunks_exact_mut(c)) {
            for j in 0..c {
                kk[j] = k[j] * self.k_k[j];
                k[j] *= 1.0 + (a[j] - 1.0) * self.k_a[j];
            }
            l2_normalize(kk, nh, 1e-12);
        }
        // 7. Per head (independent, so they run in parallel, each over its sequence's rows):
        //    S [N(value), N(key)] ← S·diag(w) + (S·(−kk))·(kk ⊙ a)ᵀ + v·kᵀ;  y = S·r;
        //    y = GroupNorm(y)·ln_x + bias (one group per head);  y += (Σ r ⊙ k ⊙ r_k)·v;  y ⊙= g.
        let (r, k, v, w, a, g, kk) = (&*r, &*k, &*v, &*w, &*a, &*g, &*kk);
        let (lw, lb) = (self.ln_x.weight(), self.ln_x.bias());
        let head = |h: usize, state: &mut [f32], yh: &mut [f32], rows: std::ops::Range<usize>| {
            let hs = |i: usize| i * c + h * n..i * c + (h + 1) * n;
            let rk = &self.r_k[h * n..(h + 1) * n];
            for (i, y) in rows.zip(yh.chunks_exact_mut(n)) {
                let (r, k, v) = (&r[hs(i)], &k[hs(i)], &v[hs(i)]);
                wkv_head(state, r, &w[hs(i)], k, v, &kk[hs(i)], &a[hs(i)], y);
                group_norm(y, 1, &lw[h * n..(h + 1) * n], &lb[h * n..(h + 1) * n], GN_EPS);
                let bonus: f32 = (0..n).map(|j| r[j] * k[j] * rk[j]).sum();
                for (j, (y, g)) in y.iter_mut().zip(&g[hs(i)]).enumerate() {
                    *y = (*y + bonus * v[j]) * g;
                }
            }
        };
        for_units(segs, st, wkv, nh, n, yh, t * nh * n * n, head);
        units_to_rows(segs, yh, nh, n, y);

        // 8. x += Wo·y.
        lin.apply(&self.output, y, t, xn);
        kernels::add_assign(x, xn);
    }

    /// The channel mix (FFN): x += Wv·relu(Wk·shift(ln2(x)))².
    fn channel_mix(&self, cfg: &Config, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        let c = cfg.n_embd;
        let [_, _, ffn_x] = cfg.parts();
        let t = x.len() / c;
        let Exec { lin, scratch, .. } = ex;
        let [xn, kx, hidden] = scratch.take([t * c, t * c, t * self.ffn_key.rows]);
        self.ln2.rows(x, xn);
        shift(segs, xn, st, ffn_x.clone(), &self.ffn_x_k, kx);
        save_last(segs, xn, st, ffn_x);
        lin.apply(&self.ffn_key, kx, t, hidden);
        hidden.iter_mut().for_each(|h| *h = h.max(0.0) * h.max(0.0));
        lin.apply(&self.ffn_value, hidden, t, xn);
        kernels::add_assign(x, xn);
    }
}

/// One head's WKV step on its state `s` [N(value), N(key)], writing `y = S·r`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn wkv_head(s: &mut [f32], r: &[f32], w: &[f32], k: &[f32], v: &[f32], kk: &[f32], a: &[f32], y: &mut [f32]) {
    let n = r.len();
    let mut b = [0f32; 256];
    let b = if n <= 256 { &mut b[..n] } else { return wkv_head_large(s, r, w, k, v, kk, a, y) };
    for j in 0..n {
        b[j] = kk[j] * a[j];
    }
    for (i, row) in s.chunks_mut(n).enumerate() {
        // sa = S[i,:]·(−kk)
        let sa: f32 = -row.iter().zip(kk).map(|(s, kk)| s * kk).sum::<f32>();
        let vi = v[i];
        let mut acc = 0f32;
        for j in 0..n {
            let nv = row[j] * w[j] + sa * b[j] + vi * k[j];
            row[j] = nv;
            acc += nv * r[j];
        }
        y[i] = acc;
    }
}

/// [`wkv_head`] for head sizes above 256 (heap scratch).
#[allow(clippy::too_many_arguments)]
#[cold]
fn wkv_head_large(s: &mut [f32], r: &[f32], w: &[f32], k: &[f32], v: &[f32], kk: &[f32], a: &[f32], y: &mut [f32]) {
    let n = r.len();
    let b: Vec<f32> = (0..n).map(|j| kk[j] * a[j]).collect();
    for (i, row) in s.chunks_mut(n).enumerate() {
        let sa: f32 = -row.iter().zip(kk).map(|(s, kk)| s * kk).sum::<f32>();
        let mut acc = 0f32;
        for j in 0..n {
            let nv = row[j] * w[j] + sa * b[j] + v[i] * k[j];
            row[j] = nv;
            acc += nv * r[j];
        }
        y[i] = acc;
    }
}

impl StackBlock for Block {
    type Config = Config;

    /// Layout: att_x [C] | wkv [H, N(value), N(key)] | ffn_x [C].
    fn state_len(cfg: &Config) -> usize {
        cfg.parts()[2].end
    }

    fn matrices(&self) -> Vec<&Matrix> {
        let mut m = vec![&self.receptance, &self.key, &self.value, &self.output, &self.ffn_key, &self.ffn_value];
        for l in [&self.w_lora, &self.a_lora, &self.g_lora].into_iter().chain(self.v_lora.as_ref()) {
            m.extend([&l.down, &l.up]);
        }
        m
    }

    fn forward(&self, cfg: &Config, li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        self.time_mix(cfg, li, ex, segs, st, x);
        self.channel_mix(cfg, ex, segs, st, x);
    }
}
