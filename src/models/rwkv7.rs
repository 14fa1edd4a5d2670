//! RWKV-7 "Goose" (`x070`): B. Peng et al., "RWKV-7 Goose with Expressive Dynamic State
//! Evolution", 2025. The math of BlinkDL's `rwkv.model.RWKV_x070` (pip `rwkv` 0.8.32).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*`,
//! `blocks.N.ffn.*`, `ln_out`, `head.weight`); every size is read from tensor shapes.

use super::common::{gather, scatter_add, HeadConfig};
use super::stack::{
    for_units, map_units, par_rows, par_rows2, save_last, shift, units_to_rows, Block as StackBlock, Norm, Stack,
    States, TrainCarry,
};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Linear, Seg};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{self, exp_fast, group_norm, l2_normalize, sigmoid, sigmoid_fast};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};

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
        let Config { n_embd: c, n_head: nh, head_size: n, .. } = *cfg;
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
        //    (The per-element exponentials are the inlined polynomial, so these loops vectorize.)
        //    (These element-wise passes run over blocks of rows in parallel in a prefill.)
        lora(lin, &self.w_lora, xw, t, low, w, f32::tanh);
        par_rows(w, c, |_, w| {
            for (w, &w0) in w.iter_mut().zip(&self.w0) {
                *w = exp_fast(-DECAY_SCALE * sigmoid_fast(w0 + *w));
            }
        });
        // 4. a = sigmoid(a0 + (xa·a1)·a2);  g = sigmoid(xg·g1)·g2.
        lora(lin, &self.a_lora, xa, t, low, a, |v| v);
        par_rows(a, c, |_, a| {
            for (a, &a0) in a.iter_mut().zip(&self.a0) {
                *a = sigmoid_fast(a0 + *a);
            }
        });
        lora(lin, &self.g_lora, xg, t, low, g, sigmoid);

        // 5. Value residual: block 0 sets v_first = v; later blocks mix towards it with
        //    gate sigmoid(v0 + (xv·v1)·v2).
        carry.resize(tc, 0.0);
        match (&self.v_lora, &self.v0) {
            (Some(vl), Some(v0)) if li > 0 => {
                lora(lin, vl, xv, t, low, y, |v| v);
                let (y, carry) = (&*y, &carry[..tc]);
                par_rows(v, c, |i, v| {
                    let (y, carry) = (&y[i * c..(i + 1) * c], &carry[i * c..(i + 1) * c]);
                    for (((v, &y), &cv), &v0) in v.iter_mut().zip(y).zip(carry).zip(v0) {
                        *v += (cv - *v) * sigmoid_fast(v0 + y);
                    }
                });
            }
            _ => carry[..tc].copy_from_slice(v),
        }

        // 6. Per row: kk = normalize_per_head(k ⊙ k_k);  k ← k ⊙ (1 + (a − 1) ⊙ k_a).
        let a = &*a;
        par_rows2(k, kk, c, |i, k, kk| {
            let a = &a[i * c..(i + 1) * c];
            for j in 0..c {
                kk[j] = k[j] * self.k_k[j];
                k[j] *= 1.0 + (a[j] - 1.0) * self.k_a[j];
            }
            l2_normalize(kk, nh, 1e-12);
        });
        // 7. Per head (independent, so they run in parallel, each over its sequence's rows):
        //    S [N(value), N(key)] ← S·diag(w) + (S·(−kk))·(kk ⊙ a)ᵀ + v·kᵀ;  y = S·r;
        //    y = GroupNorm(y)·ln_x + bias (one group per head);  y += (Σ r ⊙ k ⊙ r_k)·v;  y ⊙= g.
        let (r, k, v, w, g, kk) = (&*r, &*k, &*v, &*w, &*g, &*kk);
        let (lw, lb) = (self.ln_x.weight(), self.ln_x.bias());
        let head = |h: usize, state: &mut [f32], yh: &mut [f32], rows: std::ops::Range<usize>| {
            let hs = |i: usize| i * c + h * n..i * c + (h + 1) * n;
            let rk = &self.r_k[h * n..(h + 1) * n];
            // Over several rows the state is transposed once and stepped in that layout,
            // where the step's reductions need no horizontal sums (kernels::ssm).
            let mut cols = (rows.len() > 1).then(|| {
                let mut st = vec![0f32; n * n];
                transpose_square(state, n, &mut st);
                st
            });
            for (i, y) in rows.zip(yh.chunks_exact_mut(n)) {
                let (r, k, v) = (&r[hs(i)], &k[hs(i)], &v[hs(i)]);
                match cols.as_mut() {
                    Some(st) => wkv_head(st, true, r, &w[hs(i)], k, v, &kk[hs(i)], &a[hs(i)], y),
                    None => wkv_head(state, false, r, &w[hs(i)], k, v, &kk[hs(i)], &a[hs(i)], y),
                }
                group_norm(y, 1, &lw[h * n..(h + 1) * n], &lb[h * n..(h + 1) * n], GN_EPS);
                let bonus: f32 = (0..n).map(|j| r[j] * k[j] * rk[j]).sum();
                for (j, (y, g)) in y.iter_mut().zip(&g[hs(i)]).enumerate() {
                    *y = (*y + bonus * v[j]) * g;
                }
            }
            if let Some(st) = cols {
                transpose_square(&st, n, state);
            }
        };
        for_units(segs, st, wkv, nh, n, yh, t * nh * n * n, head);
        units_to_rows(segs, yh, nh, n, y);

        // 8. x += Wo·y.
        lin.apply(&self.output, y, t, xn);
        add_rows(x, xn, c);
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
        par_rows(hidden, self.ffn_key.rows, |_, h| h.iter_mut().for_each(|h| *h = h.max(0.0) * h.max(0.0)));
        lin.apply(&self.ffn_value, hidden, t, xn);
        add_rows(x, xn, c);
    }
}

/// One head's WKV step (`kernels::ssm`, with `b = kk ⊙ a`) on its state as stored, `s`
/// `[N(value), N(key)]`, or, with `transposed`, on `s` `[N(key), N(value)]`; writes `y = S·r`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn wkv_head(
    s: &mut [f32],
    transposed: bool,
    r: &[f32],
    w: &[f32],
    k: &[f32],
    v: &[f32],
    kk: &[f32],
    a: &[f32],
    y: &mut [f32],
) {
    let n = r.len();
    let mut small = [0f32; 256];
    let mut large = Vec::new();
    let b = if n <= 256 {
        &mut small[..n]
    } else {
        large.resize(n, 0f32);
        &mut large[..]
    };
    for j in 0..n {
        b[j] = kk[j] * a[j];
    }
    let x = kernels::ssm::Wkv7 { w, b, k, v, kk, r };
    if transposed {
        kernels::ssm::wkv7_update_cols(s, x, y)
    } else {
        kernels::ssm::wkv7_update(s, x, y)
    }
}

/// `x += d` over rows of `c` (in parallel in a prefill).
fn add_rows(x: &mut [f32], d: &[f32], c: usize) {
    par_rows(x, c, |i, x| kernels::add_assign(x, &d[i * c..(i + 1) * c]));
}

/// `t` = the transpose of the square `n × n` matrix `m`.
fn transpose_square(m: &[f32], n: usize, t: &mut [f32]) {
    for (i, row) in m.chunks_exact(n).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            t[j * n + i] = x;
        }
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

    super::stack::train_hooks!(Rec);
}

// ---------------------------------------------------------------------------------------------
// Training: the forward pass with a record, and its backward pass
// ---------------------------------------------------------------------------------------------

/// What the backward pass of one block needs, for one chunk of T tokens (every buffer
/// `[T, C]` unless said otherwise).
struct Rec {
    /// The block's state before the chunk.
    st0: Vec<f32>,
    /// Block input and ln1(x).
    x_in: Vec<f32>,
    xn: Vec<f32>,
    /// Token-shifted inputs x_r, x_w, x_k, x_v, x_a, x_g.
    mixed: [Vec<f32>; 6],
    /// r, raw k, raw v (before the value residual) and their LoRA `A x` (`[T, r]`, empty
    /// when untargeted); the output product's too.
    r: Vec<f32>,
    k: Vec<f32>,
    v_raw: Vec<f32>,
    ax: [Vec<f32>; 4],
    /// Decay path: h = down·x_w [T, D], p = up·tanh h, w = decay(w0 + p).
    w_h: Vec<f32>,
    w_p: Vec<f32>,
    w: Vec<f32>,
    /// Learning-rate path: h [T, D], p, a = σ(a0 + p).
    a_h: Vec<f32>,
    a_p: Vec<f32>,
    a: Vec<f32>,
    /// Gate path: h [T, D], g = up·σ(h).
    g_h: Vec<f32>,
    g: Vec<f32>,
    /// Value residual (blocks > 0): h [T, D], p, gate = σ(v0 + p); v after the residual.
    v_h: Vec<f32>,
    v_p: Vec<f32>,
    v_gate: Vec<f32>,
    v: Vec<f32>,
    /// k ⊙ k_k, kk = its per-head L2 normalization, k' = k ⊙ (1 + (a − 1) ⊙ k_a).
    kk_pre: Vec<f32>,
    kk: Vec<f32>,
    k_mod: Vec<f32>,
    /// WKV output, after ln_x and the bonus, after the gate.
    y_wkv: Vec<f32>,
    y_bonus: Vec<f32>,
    y_gated: Vec<f32>,
    /// Channel mix: its input, ln2, the shift, K·kx [T, F], relu², and the two `A x`.
    x_mid: Vec<f32>,
    xn2: Vec<f32>,
    kx: Vec<f32>,
    hid_pre: Vec<f32>,
    hid: Vec<f32>,
    ffn_ax: [Vec<f32>; 2],
}

impl Block {
    /// The record of [`train_forward`](StackBlock::train_forward), computing `x` forward.
    fn record(
        &self,
        cfg: &Config,
        li: usize,
        set: &LoraSet,
        carry: &mut TrainCarry,
        st: &mut [f32],
        x: &mut [f32],
    ) -> Rec {
        use crate::train::act::{self, Act};
        let Config { n_embd: c, n_head: nh, head_size: n, .. } = *cfg;
        let [pa, pw, pf] = cfg.parts();
        let t = x.len() / c;
        let z = || vec![0f32; t * c];
        let st0 = st.to_vec();
        let x_in = x.to_vec();
        let mut xn = z();
        self.ln1.rows(x, &mut xn);
        let mut mixed: [Vec<f32>; 6] = std::array::from_fn(|_| z());
        for (m, out) in self.x_mix.iter().zip(mixed.iter_mut()) {
            act::token_shift_fwd(&xn, &st0[pa.clone()], m, out);
        }
        st[pa].copy_from_slice(&xn[(t - 1) * c..]);
        let [xr, xw, xk, xv, xa, xg] = &mixed;
        let mut ax: [Vec<f32>; 4] = Default::default();
        let (mut r, mut k, mut v_raw) = (z(), z(), z());
        lin_fwd(&self.receptance, set, xr, t, &mut r, &mut ax[0]);
        lin_fwd(&self.key, set, xk, t, &mut k, &mut ax[1]);
        lin_fwd(&self.value, set, xv, t, &mut v_raw, &mut ax[2]);
        let low = |l: &Lora, x: &[f32]| {
            let mut h = vec![0f32; t * l.down.rows];
            crate::kernels::matmul(&l.down, x, t, &mut h);
            h
        };
        let up = |l: &Lora, h: &[f32]| {
            let mut p = z();
            crate::kernels::matmul(&l.up, h, t, &mut p);
            p
        };
        let w_h = low(&self.w_lora, xw);
        let mut w_t = vec![0f32; w_h.len()];
        act::act_fwd(Act::Tanh, &w_h, &mut w_t);
        let w_p = up(&self.w_lora, &w_t);
        let mut w = z();
        act::bias_act_fwd(Act::Rwkv7Decay, &w_p, &self.w0, &mut w);
        let a_h = low(&self.a_lora, xa);
        let a_p = up(&self.a_lora, &a_h);
        let mut a = z();
        act::bias_act_fwd(Act::Sigmoid, &a_p, &self.a0, &mut a);
        let g_h = low(&self.g_lora, xg);
        let mut g_s = vec![0f32; g_h.len()];
        act::act_fwd(Act::Sigmoid, &g_h, &mut g_s);
        let g = up(&self.g_lora, &g_s);
        let (mut v_h, mut v_p, mut v_gate, mut v) = (Vec::new(), Vec::new(), Vec::new(), z());
        match (&self.v_lora, &self.v0) {
            (Some(vl), Some(v0)) if li > 0 => {
                v_h = low(vl, xv);
                v_p = up(vl, &v_h);
                v_gate = z();
                act::bias_act_fwd(Act::Sigmoid, &v_p, v0, &mut v_gate);
                act::lerp_fwd(&v_raw, &carry.v_first, &v_gate, &mut v);
            }
            _ => {
                v.copy_from_slice(&v_raw);
                carry.v_first = v.clone();
            }
        }
        let (mut kk_pre, mut kk, mut k_mod) = (z(), z(), z());
        for (i0, j) in (0..t).flat_map(|r| (0..c).map(move |j| (r * c, j))) {
            let i = i0 + j;
            kk_pre[i] = k[i] * self.k_k[j];
            k_mod[i] = k[i] * (1.0 + (a[i] - 1.0) * self.k_a[j]);
        }
        crate::train::norm::l2_normalize_fwd(&kk_pre, n, 1e-12, &mut kk);
        // WKV and bonus per head from the chunk's start state, heads in parallel.
        let heads = map_units(&mut st[pw], n * n, |h, s| {
            let [r, w, k, v, kk, a] = [&r, &w, &k_mod, &v, &kk, &a].map(|src| {
                let mut b = vec![0f32; t * n];
                gather(src, h, n, c, &mut b);
                b
            });
            let inp = crate::train::wkv::WkvInputs { r: &r, w: &w, k: &k, v: &v, kk: &kk, a: &a };
            let (mut yh, mut yb) = (vec![0f32; t * n], vec![0f32; t * n]);
            crate::train::wkv::wkv_fwd(n, &inp, s, &mut yh);
            crate::train::wkv::wkv_bonus_fwd(&r, &k, &v, &self.r_k[h * n..(h + 1) * n], &mut yb);
            (yh, yb)
        });
        let mut y_wkv = z();
        for (h, (yh, _)) in heads.iter().enumerate() {
            scatter_add(yh, h, n, c, &mut y_wkv);
        }
        let mut y_ln = z();
        crate::train::norm::group_norm_fwd(&y_wkv, nh, self.ln_x.weight(), self.ln_x.bias(), GN_EPS, &mut y_ln);
        let mut y_bonus = y_ln;
        for (h, (_, yb)) in heads.iter().enumerate() {
            scatter_add(yb, h, n, c, &mut y_bonus);
        }
        let y_gated: Vec<f32> = y_bonus.iter().zip(&g).map(|(y, g)| y * g).collect();
        let mut out = z();
        lin_fwd(&self.output, set, &y_gated, t, &mut out, &mut ax[3]);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        // Channel mix.
        let x_mid = x.to_vec();
        let (mut xn2, mut kx) = (z(), z());
        self.ln2.rows(x, &mut xn2);
        act::token_shift_fwd(&xn2, &st0[pf.clone()], &self.ffn_x_k, &mut kx);
        st[pf].copy_from_slice(&xn2[(t - 1) * c..]);
        let f = self.ffn_key.rows;
        let mut ffn_ax: [Vec<f32>; 2] = Default::default();
        let mut hid_pre = vec![0f32; t * f];
        lin_fwd(&self.ffn_key, set, &kx, t, &mut hid_pre, &mut ffn_ax[0]);
        let mut hid = vec![0f32; t * f];
        act::act_fwd(Act::ReluSq, &hid_pre, &mut hid);
        lin_fwd(&self.ffn_value, set, &hid, t, &mut out, &mut ffn_ax[1]);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        Rec {
            st0,
            x_in,
            xn,
            mixed,
            r,
            k,
            v_raw,
            ax,
            w_h,
            w_p,
            w,
            a_h,
            a_p,
            a,
            g_h,
            g,
            v_h,
            v_p,
            v_gate,
            v,
            kk_pre,
            kk,
            k_mod,
            y_wkv,
            y_bonus,
            y_gated,
            x_mid,
            xn2,
            kx,
            hid_pre,
            hid,
            ffn_ax,
        }
    }

    /// Backward of [`record`](Self::record): `dx` is dL/d(block output) in, dL/d(input) out.
    #[allow(clippy::too_many_arguments)]
    fn backprop(
        &self,
        cfg: &Config,
        li: usize,
        set: &LoraSet,
        rec: &Rec,
        carry: &mut TrainCarry,
        grads: &mut LoraGrads,
        dst: &mut [f32],
        dx: &mut [f32],
    ) {
        use crate::train::act::{self, Act};
        use crate::train::linear::matrix_bwd_input_par;
        let Config { n_embd: c, n_head: nh, head_size: n, .. } = *cfg;
        let [pa, pw, pf] = cfg.parts();
        let t = dx.len() / c;
        let z = || vec![0f32; t * c];
        // Channel mix: x_out = x_mid + Wv·relu²(Wk·shift(ln2(x_mid))).
        let f = self.ffn_key.rows;
        let mut d_hid = vec![0f32; t * f];
        lin_bwd(&self.ffn_value, set, grads, &rec.hid, &rec.ffn_ax[1], dx, t, &mut d_hid);
        let mut d_hid_pre = vec![0f32; t * f];
        act::act_bwd(Act::ReluSq, &rec.hid_pre, &d_hid, &mut d_hid_pre);
        let mut d_kx = z();
        lin_bwd(&self.ffn_key, set, grads, &rec.kx, &rec.ffn_ax[0], &d_hid_pre, t, &mut d_kx);
        // The shift state out is the chunk's last ln2 row; the one in feeds the first row.
        let mut d_xn2 = z();
        d_xn2[(t - 1) * c..].copy_from_slice(&dst[pf.clone()]);
        dst[pf.clone()].fill(0.0);
        act::token_shift_bwd(
            &rec.xn2,
            &rec.st0[pf.clone()],
            &self.ffn_x_k,
            &d_kx,
            &mut d_xn2,
            Some(&mut dst[pf]),
            None,
        );
        self.ln2.rows_bwd(&rec.x_mid, &d_xn2, dx);
        // Time mix: x_mid = x_in + Wo·(g ⊙ (ln_x(wkv) + bonus)).
        let mut d_yg = z();
        lin_bwd(&self.output, set, grads, &rec.y_gated, &rec.ax[3], dx, t, &mut d_yg);
        let mut d_ybonus = z();
        let mut d_g = z();
        for i in 0..t * c {
            d_ybonus[i] = d_yg[i] * rec.g[i];
            d_g[i] = d_yg[i] * rec.y_bonus[i];
        }
        let mut d_ywkv = z();
        crate::train::norm::group_norm_bwd(
            &rec.y_wkv,
            nh,
            self.ln_x.weight(),
            GN_EPS,
            &d_ybonus,
            &mut d_ywkv,
            None,
            None,
        );
        // Bonus and WKV backward per head, heads in parallel; dS enters as dL/d(state after
        // the chunk) and leaves as dL/d(state before it).
        let heads = map_units(&mut dst[pw.clone()], n * n, |h, ds| {
            let col = |src: &[f32]| {
                let mut b = vec![0f32; t * n];
                gather(src, h, n, c, &mut b);
                b
            };
            let [r, w, k, v, kk, a] = [&rec.r, &rec.w, &rec.k_mod, &rec.v, &rec.kk, &rec.a].map(|x| col(x));
            let mut hb = [(); 3].map(|_| vec![0f32; t * n]);
            let [b0, b1, b2] = &mut hb;
            crate::train::wkv::wkv_bonus_bwd(
                &r,
                &k,
                &v,
                &self.r_k[h * n..(h + 1) * n],
                &col(&d_ybonus),
                b0,
                b1,
                b2,
                None,
            );
            let mut hd = [(); 6].map(|_| vec![0f32; t * n]);
            let inp = crate::train::wkv::WkvInputs { r: &r, w: &w, k: &k, v: &v, kk: &kk, a: &a };
            let [dr, dw, dk, dv, dkk, da] = &mut hd;
            let mut g = crate::train::wkv::WkvGrads { dr, dw, dk, dv, dkk, da };
            let mut scratch = vec![0f32; crate::train::wkv::wkv_scratch_len(n, t)];
            let s0 = &rec.st0[pw.start + h * n * n..pw.start + (h + 1) * n * n];
            crate::train::wkv::wkv_bwd(n, &inp, s0, &col(&d_ywkv), ds, &mut g, &mut scratch);
            (hb, hd)
        });
        let (mut d_r, mut d_kmod, mut d_v) = (z(), z(), z());
        for (h, (hb, _)) in heads.iter().enumerate() {
            for (d, out) in hb.iter().zip([&mut d_r, &mut d_kmod, &mut d_v]) {
                scatter_add(d, h, n, c, out);
            }
        }
        let (mut d_w, mut d_kk, mut d_a) = (z(), z(), z());
        for (h, (_, hd)) in heads.iter().enumerate() {
            for (d, out) in hd.iter().zip([&mut d_r, &mut d_w, &mut d_kmod, &mut d_v, &mut d_kk, &mut d_a]) {
                scatter_add(d, h, n, c, out);
            }
        }
        // kk = l2norm(k ⊙ k_k);  k' = k ⊙ (1 + (a − 1) ⊙ k_a).
        let mut d_kkpre = z();
        crate::train::norm::l2_normalize_bwd(&rec.kk_pre, n, 1e-12, &d_kk, &mut d_kkpre);
        let mut d_k = z();
        for (i0, j) in (0..t).flat_map(|r| (0..c).map(move |j| (r * c, j))) {
            let i = i0 + j;
            let (kk_, ka) = (self.k_k[j], self.k_a[j]);
            d_k[i] = d_kkpre[i] * kk_ + d_kmod[i] * (1.0 + (rec.a[i] - 1.0) * ka);
            d_a[i] += d_kmod[i] * rec.k[i] * ka;
        }
        // Value residual: block 0's v is v_first, which later blocks pull towards.
        let mut d_vraw = z();
        let mut d_xs: [Vec<f32>; 6] = std::array::from_fn(|_| z());
        match (&self.v_lora, &self.v0) {
            (Some(vl), Some(v0)) if li > 0 => {
                let mut d_gate = z();
                act::lerp_bwd(
                    &rec.v_raw,
                    &carry.v_first,
                    &rec.v_gate,
                    &d_v,
                    &mut d_vraw,
                    &mut carry.d_v_first,
                    &mut d_gate,
                );
                let mut d_vp = z();
                act::bias_act_bwd(Act::Sigmoid, &rec.v_p, v0, &d_gate, &mut d_vp, None);
                let mut d_vh = vec![0f32; rec.v_h.len()];
                matrix_bwd_input_par(&vl.up, &d_vp, &mut d_vh);
                matrix_bwd_input_par(&vl.down, &d_vh, &mut d_xs[3]);
            }
            _ => {
                for i in 0..t * c {
                    d_vraw[i] = d_v[i] + carry.d_v_first[i];
                }
            }
        }
        // g = up·σ(down·x_g).
        let mut d_gs = vec![0f32; rec.g_h.len()];
        matrix_bwd_input_par(&self.g_lora.up, &d_g, &mut d_gs);
        let mut d_gh = vec![0f32; rec.g_h.len()];
        act::act_bwd(Act::Sigmoid, &rec.g_h, &d_gs, &mut d_gh);
        matrix_bwd_input_par(&self.g_lora.down, &d_gh, &mut d_xs[5]);
        // a = σ(a0 + up·down·x_a).
        let mut d_ap = z();
        act::bias_act_bwd(Act::Sigmoid, &rec.a_p, &self.a0, &d_a, &mut d_ap, None);
        let mut d_ah = vec![0f32; rec.a_h.len()];
        matrix_bwd_input_par(&self.a_lora.up, &d_ap, &mut d_ah);
        matrix_bwd_input_par(&self.a_lora.down, &d_ah, &mut d_xs[4]);
        // w = decay(w0 + up·tanh(down·x_w)).
        let mut d_wp = z();
        act::bias_act_bwd(Act::Rwkv7Decay, &rec.w_p, &self.w0, &d_w, &mut d_wp, None);
        let mut d_wt = vec![0f32; rec.w_h.len()];
        matrix_bwd_input_par(&self.w_lora.up, &d_wp, &mut d_wt);
        let mut d_wh = vec![0f32; rec.w_h.len()];
        act::act_bwd(Act::Tanh, &rec.w_h, &d_wt, &mut d_wh);
        matrix_bwd_input_par(&self.w_lora.down, &d_wh, &mut d_xs[1]);
        // r, k, v products.
        let [xr, _, xk, xv, ..] = &rec.mixed;
        lin_bwd(&self.receptance, set, grads, xr, &rec.ax[0], &d_r, t, &mut d_xs[0]);
        lin_bwd(&self.key, set, grads, xk, &rec.ax[1], &d_k, t, &mut d_xs[2]);
        lin_bwd(&self.value, set, grads, xv, &rec.ax[2], &d_vraw, t, &mut d_xs[3]);
        // Token shifts and ln1.
        let mut d_xn = z();
        d_xn[(t - 1) * c..].copy_from_slice(&dst[pa.clone()]);
        dst[pa.clone()].fill(0.0);
        for (m, d) in self.x_mix.iter().zip(&d_xs) {
            act::token_shift_bwd(&rec.xn, &rec.st0[pa.clone()], m, d, &mut d_xn, Some(&mut dst[pa.clone()]), None);
        }
        self.ln1.rows_bwd(&rec.x_in, &d_xn, dx);
    }
}
