//! RWKV-6 "Finch" (`x060`): B. Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States
//! and Dynamic Recurrence", 2024. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32)
//! for version 6.0 (`att_one_v6_0` / `att_seq_v6_0`).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*` with
//! `time_maa_x/w/k/v/r/g`, `time_maa_w1 [C, 5D]`, `time_maa_w2 [5, D, C]`, `time_decay`,
//! `time_decay_w1 [C, Dd]`, `time_decay_w2 [Dd, C]`, `time_faaaa [H, N]`, `gate`, `ln_x`,
//! `blocks.N.ffn.*` with `time_maa_k/r`, `ln_out`, `head.weight`); every size, the two
//! LoRA ranks included, is read from tensor shapes (H and N from `time_faaaa`).
//!
//! A GGUF file's `rwkv6.rescale_every_n_layers` R arrives as the config key
//! [`GGUF_RESCALE_EVERY`]: its block i output matrices are already divided by 2^(i div R), so
//! the residual is halved after every R-th block, as llama.cpp does; LayerNorms make the
//! result the official one up to their epsilon.

use super::common::{
    wkv5, wkv5_backprop, wkv5_record, ChannelMix, ChannelMixRec, HeadConfig, Wkv5Bwd, Wkv5In, Wkv5Rec,
};
use super::stack::{delta_prev, halve_after, save_last, Block as StackBlock, Norm, Stack, States, TrainCarry};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::{add_assign, silu};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-6 model (C, H, N), all read from tensor shapes (H and N from
/// `time_faaaa`; the LoRA ranks per block from their own tensors).
pub type Config = HeadConfig;

/// The config key under which a GGUF file hands over its `rwkv6.rescale_every_n_layers`.
pub const GGUF_RESCALE_EVERY: &str = "gguf_rescale_every";

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// Order of the five data-dependent token shifts in `time_maa_w1/w2`.
const W: usize = 0;
const K: usize = 1;
const V: usize = 2;
const R: usize = 3;
const G: usize = 4;

/// One RWKV-6 block.
pub struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// time_maa_x: [C], mix of the LoRA input.
    maa_x: Vec<f32>,
    /// time_maa_w, _k, _v, _r, _g in that order: each [C].
    maa: [Vec<f32>; 5],
    /// time_maa_w1 transposed: [5D, C] (D: this block's token-shift rank, `time_maa_w1` columns / 5).
    maa_w1: Matrix,
    /// time_maa_w2[i] transposed: 5 × [C, D].
    maa_w2: Vec<Matrix>,
    /// time_decay: [C].
    decay: Vec<f32>,
    /// time_decay_w1 transposed: [Dd, C]; time_decay_w2 transposed: [C, Dd] (Dd: the decay rank).
    decay_w1: Matrix,
    decay_w2: Matrix,
    /// Bonus u = time_faaaa: [H, N] flattened to [C].
    faaaa: Vec<f32>,
    /// receptance, key, value, gate, output: [C, C].
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    gate: Matrix,
    output: Matrix,
    /// ln_x GroupNorm (H groups, eps 64e-5): [C].
    ln_x: Norm,
    /// Channel mix: time_maa_k/r [C], key [F, C], receptance [C, C], value [C, F].
    ffn: ChannelMix,
}

/// A loaded RWKV-6 model.
pub type Rwkv6 = Stack<Block>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads an official-layout RWKV-6 checkpoint; every shape is checked against the sizes read
/// from `emb.weight`, `blocks.0.att.time_faaaa`, and each block's LoRAs (each block may have
/// its own ranks); `config` may carry [`GGUF_RESCALE_EVERY`].
pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Rwkv6> {
    let rd = WeightReader::new(file);
    let (mut cfg, n_vocab) = HeadConfig::read(&rd, "blocks.0.att.time_faaaa")?;
    cfg.halve_every = config.and_then(|c| c.usize(GGUF_RESCALE_EVERY)).unwrap_or(0);
    let (c, n_head, head_size) = (cfg.n_embd, cfg.n_head, cfg.head_size);
    let rank = |a: &WeightReader, name: &str, div: usize| -> Result<usize> {
        match a.shape2(name)? {
            (r, d) if r == c && d % div == 0 && d > 0 => Ok(d / div),
            s => Err(a.error(name, format!("has shape {s:?}, expected [{c}, {div}·rank]"))),
        }
    };
    let blocks_rd = rd.pp("blocks");
    let blocks = (0..blocks_rd.count_children())
        .map(|i| {
            let b = blocks_rd.pp(i);
            let (a, f) = (b.pp("att"), b.pp("ffn"));
            let vec = |n: &str| a.vector(n, c);
            let (d, dd) = (rank(&a, "time_maa_w1", 5)?, rank(&a, "time_decay_w1", 1)?);
            Ok(Block {
                ln1: Norm::layer(&b, "ln1", c)?,
                ln2: Norm::layer(&b, "ln2", c)?,
                maa_x: vec("time_maa_x")?,
                maa: [
                    vec("time_maa_w")?,
                    vec("time_maa_k")?,
                    vec("time_maa_v")?,
                    vec("time_maa_r")?,
                    vec("time_maa_g")?,
                ],
                maa_w1: a.matrix_transposed("time_maa_w1", 5 * d, c)?,
                maa_w2: a.stacked_transposed("time_maa_w2", 5, c, d)?,
                decay: vec("time_decay")?,
                decay_w1: a.matrix_transposed("time_decay_w1", dd, c)?,
                decay_w2: a.matrix_transposed("time_decay_w2", c, dd)?,
                faaaa: a.floats("time_faaaa", &[n_head, head_size])?,
                receptance: a.matrix("receptance.weight", c, c)?,
                key: a.matrix("key.weight", c, c)?,
                value: a.matrix("value.weight", c, c)?,
                gate: a.matrix("gate.weight", c, c)?,
                output: a.matrix("output.weight", c, c)?,
                ln_x: Norm::layer(&a, "ln_x", c)?,
                ffn: ChannelMix::load(&f, c, f.vector("time_maa_k", c)?, f.vector("time_maa_r", c)?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    cfg.stack(ArchKind::Rwkv6, &rd, n_vocab, blocks, count_params(file))
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl Block {
    /// The time mix (attention) over the rows of `x`; adds its output to `x`.
    fn time_mix(&self, cfg: &Config, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        let c = cfg.n_embd;
        let [att_x, wkv, _] = cfg.parts();
        let t = x.len() / c;
        let d = self.maa_w2[0].cols;
        let Exec { lin, scratch, .. } = ex;
        let tc = t * c;
        let [xn, sx, xxx, m, mi, xw, xk, xv, xr, xg, r, k, v, g, low, w, yh] = scratch.take([
            tc,
            tc,
            tc,
            t * 5 * d,
            t * d,
            tc,
            tc,
            tc,
            tc,
            tc,
            tc,
            tc,
            tc,
            tc,
            t * self.decay_w1.rows,
            tc,
            tc,
        ]);

        // 1. xn = ln1(x); sx = prev − xn (prev: the previous row's xn, att_x for a sequence's first).
        self.ln1.rows(x, xn);
        delta_prev(segs, xn, st, att_x.clone(), sx);
        save_last(segs, xn, st, att_x);

        // 2. m = tanh((xn + sx ⊙ maa_x)·w1) viewed as [5, D];  m_i = m[i]·w2[i]  (i = w, k, v, r, g).
        for (o, ((xn, sx), mx)) in xxx.iter_mut().zip(xn.iter().zip(sx.iter()).zip(self.maa_x.iter().cycle())) {
            *o = xn + sx * mx;
        }
        lin.apply(&self.maa_w1, xxx, t, m);
        m.iter_mut().for_each(|v| *v = v.tanh());
        // 3. For each i: xi = xn + sx ⊙ (maa_i + m_i).
        let mut mixed = [xw, xk, xv, xr, xg];
        for (i, out) in mixed.iter_mut().enumerate() {
            for tok in 0..t {
                mi[tok * d..(tok + 1) * d].copy_from_slice(&m[tok * 5 * d + i * d..tok * 5 * d + (i + 1) * d]);
            }
            lin.apply(&self.maa_w2[i], mi, t, out);
            for (j, o) in out.iter_mut().enumerate() {
                *o = xn[j] + sx[j] * (self.maa[i][j % c] + *o);
            }
        }

        // 4. r = R·xr, k = K·xk, v = V·xv, g = silu(G·xg).
        lin.apply(&self.receptance, mixed[R], t, r);
        lin.apply(&self.key, mixed[K], t, k);
        lin.apply(&self.value, mixed[V], t, v);
        lin.apply(&self.gate, mixed[G], t, g);
        g.iter_mut().for_each(|v| *v = silu(*v));

        // 5. Data-dependent decay: w = exp(−exp(time_decay + tanh(xw·dw1)·dw2)), [T, C].
        lin.apply(&self.decay_w1, mixed[W], t, low);
        low.iter_mut().for_each(|v| *v = v.tanh());
        lin.apply(&self.decay_w2, low, t, w);
        for (j, w) in w.iter_mut().enumerate() {
            *w = (-(self.decay[j % c] + *w).exp()).exp();
        }

        // 6. Per head, S [N(key), N(value)]: y = r·(u ⊙ k vᵀ + S);  S ← k vᵀ + diag(w)·S;
        //    y = GroupNorm(H)(y)·ln_x + bias;  y ⊙= g.
        let inp = Wkv5In { r, k, v, w, g };
        wkv5(segs, st, wkv, cfg.n_head, &inp, &self.faaaa, &self.ln_x, yh, xn);

        // 7. x += O·y.
        lin.apply(&self.output, xn, t, sx);
        add_assign(x, sx);
    }
}

impl StackBlock for Block {
    type Config = Config;

    /// Layout: att_x [C] | wkv [H, N(key), N(value)] | ffn_x [C].
    fn state_len(cfg: &Config) -> usize {
        cfg.parts()[2].end
    }

    fn matrices(&self) -> Vec<&Matrix> {
        let mut m = vec![&self.receptance, &self.key, &self.value, &self.gate, &self.output];
        m.extend([&self.maa_w1, &self.decay_w1, &self.decay_w2]);
        m.extend(&self.maa_w2);
        m.extend(self.ffn.matrices());
        m
    }

    fn forward(&self, cfg: &Config, li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        self.time_mix(cfg, ex, segs, st, x);
        // 8. Channel mix: kx = xn + (prev − xn) ⊙ maa_k (rx likewise);
        //    x += sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
        self.ffn.forward(&self.ln2, ex, segs, st, cfg.parts()[2].clone(), x, 1.0);
        // 9. A GGUF file's rescaling (see the module doc).
        halve_after(cfg.halve_every, li, x);
    }

    super::stack::train_hooks!(Rec);
}

// ---------------------------------------------------------------------------------------------
// Training: the forward pass with a record, and its backward pass
// ---------------------------------------------------------------------------------------------

/// What the backward pass of one block needs, for one chunk of T tokens (every buffer
/// `[T, C]` unless said otherwise).
struct Rec {
    /// Block input and sx = prev − xn (xn = ln1(x), prev: the previous row's xn, att_x for
    /// the first).
    x_in: Vec<f32>,
    sx: Vec<f32>,
    /// (xn + sx ⊙ maa_x)·w1 before its tanh: [T, 5D].
    m_pre: Vec<f32>,
    /// m_i·w2[i] (i = w, k, v, r, g).
    p: [Vec<f32>; 5],
    /// The data-dependent token shifts xw, xk, xv, xr, xg.
    mixed: [Vec<f32>; 5],
    /// r, k, v; G·xg and its SiLU g.
    r: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g_pre: Vec<f32>,
    g: Vec<f32>,
    /// Decay path: xw·dw1 before its tanh [T, Dd], tanh(·)·dw2, w = exp(−exp(time_decay + ·)).
    w_pre: Vec<f32>,
    w_p: Vec<f32>,
    w: Vec<f32>,
    /// `A x` of the receptance, key, value, gate and output products (empty when untargeted).
    ax: [Vec<f32>; 5],
    /// The WKV stage, and its gated output (the output product's input).
    wkv: Wkv5Rec,
    y: Vec<f32>,
    /// The channel mix.
    ffn: ChannelMixRec,
}

impl Block {
    /// The record of [`train_forward`](StackBlock::train_forward), computing `x` forward;
    /// the steps are `time_mix`'s and the channel mix's.
    fn record(
        &self,
        cfg: &Config,
        li: usize,
        set: &LoraSet,
        _carry: &mut TrainCarry,
        st: &mut [f32],
        x: &mut [f32],
    ) -> Rec {
        use crate::kernels::matmul;
        use crate::train::act::{self, Act};
        let c = cfg.n_embd;
        let [pa, pw, pf] = cfg.parts();
        let t = x.len() / c;
        let d = self.maa_w2[0].cols;
        let z = || vec![0f32; t * c];
        let (x_in, att_x0) = (x.to_vec(), st[pa.clone()].to_vec());
        // 1. xn = ln1(x); sx = prev − xn (prev: the previous row's xn, att_x for the first);
        //    att_x ← the last xn.
        let (mut xn, mut sx) = (z(), z());
        self.ln1.rows(x, &mut xn);
        for (i, (o, cur)) in sx.chunks_exact_mut(c).zip(xn.chunks_exact(c)).enumerate() {
            let prev = if i == 0 { &att_x0[..] } else { &xn[(i - 1) * c..i * c] };
            o.iter_mut().zip(prev).zip(cur).for_each(|((o, p), x)| *o = p - x);
        }
        st[pa].copy_from_slice(&xn[(t - 1) * c..]);
        // 2. m = tanh((xn + sx ⊙ maa_x)·w1) viewed as [5, D];  p_i = m[i]·w2[i].
        let mut xxx = z();
        for (o, ((xn, sx), mx)) in xxx.iter_mut().zip(xn.iter().zip(&sx).zip(self.maa_x.iter().cycle())) {
            *o = xn + sx * mx;
        }
        let mut m_pre = vec![0f32; t * 5 * d];
        matmul(&self.maa_w1, &xxx, t, &mut m_pre);
        let mut m = vec![0f32; t * 5 * d];
        act::act_fwd(Act::Tanh, &m_pre, &mut m);
        // 3. x_i = xn + sx ⊙ (maa_i + p_i).
        let mut p: [Vec<f32>; 5] = std::array::from_fn(|_| z());
        let mut mixed: [Vec<f32>; 5] = std::array::from_fn(|_| z());
        let mut mi = vec![0f32; t * d];
        for (i, (p, out)) in p.iter_mut().zip(mixed.iter_mut()).enumerate() {
            for (dst, src) in mi.chunks_exact_mut(d).zip(m.chunks_exact(5 * d)) {
                dst.copy_from_slice(&src[i * d..(i + 1) * d]);
            }
            matmul(&self.maa_w2[i], &mi, t, p);
            for (j, o) in out.iter_mut().enumerate() {
                *o = xn[j] + sx[j] * (self.maa[i][j % c] + p[j]);
            }
        }
        // 4. r = R·xr, k = K·xk, v = V·xv, g = silu(G·xg).
        let mut ax: [Vec<f32>; 5] = Default::default();
        let (mut r, mut k, mut v, mut g_pre, mut g) = (z(), z(), z(), z(), z());
        lin_fwd(&self.receptance, set, &mixed[R], t, &mut r, &mut ax[0]);
        lin_fwd(&self.key, set, &mixed[K], t, &mut k, &mut ax[1]);
        lin_fwd(&self.value, set, &mixed[V], t, &mut v, &mut ax[2]);
        lin_fwd(&self.gate, set, &mixed[G], t, &mut g_pre, &mut ax[3]);
        act::act_fwd(Act::Silu, &g_pre, &mut g);
        // 5. w = exp(−exp(time_decay + tanh(xw·dw1)·dw2)).
        let mut w_pre = vec![0f32; t * self.decay_w1.rows];
        matmul(&self.decay_w1, &mixed[W], t, &mut w_pre);
        let mut w_t = vec![0f32; w_pre.len()];
        act::act_fwd(Act::Tanh, &w_pre, &mut w_t);
        let (mut w_p, mut w) = (z(), z());
        matmul(&self.decay_w2, &w_t, t, &mut w_p);
        act::bias_act_fwd(Act::Rwkv6Decay, &w_p, &self.decay, &mut w);
        // 6. WKV per head from the chunk's start state, GroupNorm ln_x, ⊙ g.
        let inp = Wkv5In { r: &r, k: &k, v: &v, w: &w, g: &g };
        let (wkv, y) = wkv5_record(cfg, &inp, &self.faaaa, &self.ln_x, &mut st[pw]);
        // 7. x += O·y.
        let mut out = z();
        lin_fwd(&self.output, set, &y, t, &mut out, &mut ax[4]);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        // 8. Channel mix.
        let ffn = self.ffn.record(&self.ln2, set, &mut st[pf], x);
        // 9. A GGUF file's rescaling.
        halve_after(cfg.halve_every, li, x);
        Rec { x_in, sx, m_pre, p, mixed, r, k, v, g_pre, g, w_pre, w_p, w, ax, wkv, y, ffn }
    }

    /// Backward of [`record`](Self::record), its steps in reverse: `dx` is dL/d(block output)
    /// in, dL/d(input) out; `dst` dL/d(state after the chunk) in, dL/d(state before) out.
    #[allow(clippy::too_many_arguments)]
    fn backprop(
        &self,
        cfg: &Config,
        li: usize,
        set: &LoraSet,
        rec: &Rec,
        _carry: &mut TrainCarry,
        grads: &mut LoraGrads,
        dst: &mut [f32],
        dx: &mut [f32],
    ) {
        use crate::train::act::{self, Act};
        use crate::train::linear::matrix_bwd_input_par;
        let c = cfg.n_embd;
        let [pa, pw, pf] = cfg.parts();
        let t = dx.len() / c;
        let d = self.maa_w2[0].cols;
        let z = || vec![0f32; t * c];
        // 9. The rescaling: out = x/2 after the blocks it halves, so dL/dx halves too.
        halve_after(cfg.halve_every, li, dx);
        // 8. Channel mix (dx becomes dL/d(its input)).
        self.ffn.backprop(&self.ln2, set, &rec.ffn, grads, &mut dst[pf], dx);
        // 7. x_mid = x_in + O·y.
        let mut d_y = z();
        lin_bwd(&self.output, set, grads, &rec.y, &rec.ax[4], dx, t, &mut d_y);
        // 6. The WKV stage.
        let (mut d_r, mut d_k, mut d_v, mut d_w, mut d_g) = (z(), z(), z(), z(), z());
        let inp = Wkv5In { r: &rec.r, k: &rec.k, v: &rec.v, w: &rec.w, g: &rec.g };
        let dd = Wkv5Bwd { dr: &mut d_r, dk: &mut d_k, dv: &mut d_v, dw: Some(&mut d_w), dg: &mut d_g };
        wkv5_backprop(cfg, &inp, &self.faaaa, &self.ln_x, &rec.wkv, &d_y, &mut dst[pw], dd);
        let mut d_mixed: [Vec<f32>; 5] = std::array::from_fn(|_| z());
        // 5. The decay path, into d xw.
        let mut d_wp = z();
        act::bias_act_bwd(Act::Rwkv6Decay, &rec.w_p, &self.decay, &d_w, &mut d_wp, None);
        let mut d_wt = vec![0f32; rec.w_pre.len()];
        matrix_bwd_input_par(&self.decay_w2, &d_wp, &mut d_wt);
        let mut d_wpre = vec![0f32; rec.w_pre.len()];
        act::act_bwd(Act::Tanh, &rec.w_pre, &d_wt, &mut d_wpre);
        matrix_bwd_input_par(&self.decay_w1, &d_wpre, &mut d_mixed[W]);
        // 4. The four products and the SiLU gate.
        let mut d_gpre = z();
        act::act_bwd(Act::Silu, &rec.g_pre, &d_g, &mut d_gpre);
        lin_bwd(&self.receptance, set, grads, &rec.mixed[R], &rec.ax[0], &d_r, t, &mut d_mixed[R]);
        lin_bwd(&self.key, set, grads, &rec.mixed[K], &rec.ax[1], &d_k, t, &mut d_mixed[K]);
        lin_bwd(&self.value, set, grads, &rec.mixed[V], &rec.ax[2], &d_v, t, &mut d_mixed[V]);
        lin_bwd(&self.gate, set, grads, &rec.mixed[G], &rec.ax[3], &d_gpre, t, &mut d_mixed[G]);
        // 3. x_i = xn + sx ⊙ (maa_i + p_i): into d xn, d sx and d p_i → d m [T, 5D].
        let (mut d_xn, mut d_sx) = (z(), z());
        let mut d_m = vec![0f32; t * 5 * d];
        let (mut d_p, mut d_mi) = (z(), vec![0f32; t * d]);
        for (i, dm) in d_mixed.iter().enumerate() {
            for j in 0..t * c {
                d_xn[j] += dm[j];
                d_sx[j] += dm[j] * (self.maa[i][j % c] + rec.p[i][j]);
                d_p[j] = dm[j] * rec.sx[j];
            }
            d_mi.fill(0.0);
            matrix_bwd_input_par(&self.maa_w2[i], &d_p, &mut d_mi);
            for (dst, src) in d_m.chunks_exact_mut(5 * d).zip(d_mi.chunks_exact(d)) {
                dst[i * d..(i + 1) * d].copy_from_slice(src);
            }
        }
        // 2. m = tanh(xxx·w1), xxx = xn + sx ⊙ maa_x.
        let mut d_mpre = vec![0f32; t * 5 * d];
        act::act_bwd(Act::Tanh, &rec.m_pre, &d_m, &mut d_mpre);
        let mut d_xxx = z();
        matrix_bwd_input_par(&self.maa_w1, &d_mpre, &mut d_xxx);
        for j in 0..t * c {
            d_xn[j] += d_xxx[j];
            d_sx[j] += d_xxx[j] * self.maa_x[j % c];
        }
        // 1. sx = prev − xn: prev is the previous row's xn, att_x (in) for the first row; the
        //    last xn row is att_x (out).
        for i in 0..t {
            for j in 0..c {
                d_xn[i * c + j] -= d_sx[i * c + j];
                if i > 0 {
                    d_xn[(i - 1) * c + j] += d_sx[i * c + j];
                }
            }
        }
        let last = &mut d_xn[(t - 1) * c..];
        last.iter_mut().zip(&dst[pa.clone()]).for_each(|(d, s)| *d += s);
        dst[pa].copy_from_slice(&d_sx[..c]);
        self.ln1.rows_bwd(&rec.x_in, &d_xn, dx);
    }
}
