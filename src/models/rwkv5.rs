//! RWKV-5.2 "Eagle": B. Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States and
//! Dynamic Recurrence", 2024. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32)
//! for version 5.2 (`att_one_v5_1` / `att_seq_v5_2`).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*` with
//! `time_mix_k/v/r/g`, `time_decay [H, N]`, `time_faaaa [H, N]`, `gate`, `ln_x`,
//! `blocks.N.ffn.*`, `ln_out`, `head.weight`); every size is read from tensor shapes
//! (H and N from `time_decay`).

use super::common::{
    one_minus, wkv5, wkv5_backprop, wkv5_record, ChannelMix, ChannelMixRec, HeadConfig, Wkv5Bwd, Wkv5In, Wkv5Rec,
};
use super::stack::{save_last, shift, Block as StackBlock, Norm, Stack, States, TrainCarry};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{add_assign, silu};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-5.2 model (C, H, N), all read from tensor shapes (H and N from
/// `time_decay`).
pub type Config = HeadConfig;

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One RWKV-5.2 block.
pub struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// Weight of the previous token in kx, vx, rx, gx: 1 − time_mix_k/v/r/g, each [C].
    mix: [Vec<f32>; 4],
    /// Per-step decay factor w = exp(−exp(time_decay)): [H, N] flattened to [C].
    decay: Vec<f32>,
    /// Bonus u = time_faaaa (used as is): [H, N] flattened to [C].
    faaaa: Vec<f32>,
    /// receptance, key, value, gate, output: [C, C].
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    gate: Matrix,
    output: Matrix,
    /// ln_x GroupNorm (H groups, eps 64e-5): [C].
    ln_x: Norm,
    /// Channel mix: mixes [C], key [F, C], receptance [C, C], value [C, F].
    ffn: ChannelMix,
}

/// A loaded RWKV-5.2 model.
pub type Rwkv5 = Stack<Block>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads an official-layout RWKV-5.2 checkpoint; every shape is checked against the sizes
/// read from `emb.weight`, `blocks.0.att.time_decay` and each block's `ffn.key.weight`.
pub fn load(file: &SafetensorsFile) -> Result<Rwkv5> {
    let rd = WeightReader::new(file);
    let (cfg, n_vocab) = HeadConfig::read(&rd, "blocks.0.att.time_decay")?;
    let (c, hn) = (cfg.n_embd, [cfg.n_head, cfg.head_size]);
    let blocks_rd = rd.pp("blocks");
    let blocks = (0..blocks_rd.count_children())
        .map(|i| {
            let b = blocks_rd.pp(i);
            let (a, f) = (b.pp("att"), b.pp("ffn"));
            let mix = |r: &WeightReader, n: &str| r.vector(n, c).map(one_minus);
            Ok(Block {
                ln1: Norm::layer(&b, "ln1", c)?,
                ln2: Norm::layer(&b, "ln2", c)?,
                mix: [mix(&a, "time_mix_k")?, mix(&a, "time_mix_v")?, mix(&a, "time_mix_r")?, mix(&a, "time_mix_g")?],
                decay: a.floats("time_decay", &hn)?.into_iter().map(|d| (-d.exp()).exp()).collect(),
                faaaa: a.floats("time_faaaa", &hn)?,
                receptance: a.matrix("receptance.weight", c, c)?,
                key: a.matrix("key.weight", c, c)?,
                value: a.matrix("value.weight", c, c)?,
                gate: a.matrix("gate.weight", c, c)?,
                output: a.matrix("output.weight", c, c)?,
                ln_x: Norm::layer(&a, "ln_x", c)?,
                ffn: ChannelMix::load(&f, c, mix(&f, "time_mix_k")?, mix(&f, "time_mix_r")?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    cfg.stack(ArchKind::Rwkv5, &rd, n_vocab, blocks, count_params(file))
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
        let Exec { lin, scratch, .. } = ex;
        let tc = t * c;
        let [xn, kx, vx, rx, gx, r, k, v, g, yh] = scratch.take([tc; 10]);

        // 1. xn = ln1(x); kx, vx, rx, gx = token shifts against the previous row's xn.
        self.ln1.rows(x, xn);
        for (m, out) in self.mix.iter().zip([&mut *kx, &mut *vx, &mut *rx, &mut *gx]) {
            shift(segs, xn, st, att_x.clone(), m, out);
        }
        save_last(segs, xn, st, att_x);

        // 2. r = R·rx, k = K·kx, v = V·vx, g = silu(G·gx).
        lin.apply(&self.receptance, rx, t, r);
        lin.apply(&self.key, kx, t, k);
        lin.apply(&self.value, vx, t, v);
        lin.apply(&self.gate, gx, t, g);
        g.iter_mut().for_each(|v| *v = silu(*v));

        // 3. Per head, S [N(key), N(value)]: y = r·(u ⊙ k vᵀ + S);  S ← k vᵀ + diag(w)·S;
        //    y = GroupNorm(H)(y)·ln_x + bias;  y ⊙= g.
        let inp = Wkv5In { r, k, v, w: &self.decay, g };
        wkv5(segs, st, wkv, cfg.n_head, &inp, &self.faaaa, &self.ln_x, yh, xn);

        // 4. x += O·y.
        lin.apply(&self.output, xn, t, kx);
        add_assign(x, kx);
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
        m.extend(self.ffn.matrices());
        m
    }

    fn forward(&self, cfg: &Config, _li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        self.time_mix(cfg, ex, segs, st, x);
        // 5. Channel mix: x += sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
        self.ffn.forward(&self.ln2, ex, segs, st, cfg.parts()[2].clone(), x, 1.0);
    }

    super::stack::train_hooks!(Rec);
}

// ---------------------------------------------------------------------------------------------
// Training: the forward pass with a record, and its backward pass
// ---------------------------------------------------------------------------------------------

/// What the backward pass of one block needs, for one chunk of T tokens (every buffer
/// `[T, C]` unless said otherwise).
struct Rec {
    /// The shift state att_x before the chunk, [C].
    att_x0: Vec<f32>,
    /// Block input and ln1(x).
    x_in: Vec<f32>,
    xn: Vec<f32>,
    /// Token-shifted inputs kx, vx, rx, gx (the order of `Block::mix`).
    mixed: [Vec<f32>; 4],
    /// r, k, v; G·gx and its SiLU g.
    r: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g_pre: Vec<f32>,
    g: Vec<f32>,
    /// `A x` of the receptance, key, value, gate and output products (empty when untargeted).
    ax: [Vec<f32>; 5],
    /// The WKV stage, and its gated output (the output product's input).
    wkv: Wkv5Rec,
    y: Vec<f32>,
    /// The channel mix.
    ffn: ChannelMixRec,
}

/// Indices into [`Block::mix`] and [`Rec::mixed`].
const MK: usize = 0;
const MV: usize = 1;
const MR: usize = 2;
const MG: usize = 3;

impl Block {
    /// The record of [`train_forward`](StackBlock::train_forward), computing `x` forward;
    /// the steps are `time_mix`'s and the channel mix's.
    fn record(
        &self,
        cfg: &Config,
        _li: usize,
        set: &LoraSet,
        _carry: &mut TrainCarry,
        st: &mut [f32],
        x: &mut [f32],
    ) -> Rec {
        use crate::train::act::{self, Act};
        let c = cfg.n_embd;
        let [pa, pw, pf] = cfg.parts();
        let t = x.len() / c;
        let z = || vec![0f32; t * c];
        let (x_in, att_x0) = (x.to_vec(), st[pa.clone()].to_vec());
        // 1. xn = ln1(x); kx, vx, rx, gx = token shifts against att_x; att_x ← the last xn.
        let mut xn = z();
        self.ln1.rows(x, &mut xn);
        let mut mixed: [Vec<f32>; 4] = std::array::from_fn(|_| z());
        for (m, out) in self.mix.iter().zip(mixed.iter_mut()) {
            act::token_shift_fwd(&xn, &att_x0, m, out);
        }
        st[pa].copy_from_slice(&xn[(t - 1) * c..]);
        // 2. r = R·rx, k = K·kx, v = V·vx, g = silu(G·gx).
        let mut ax: [Vec<f32>; 5] = Default::default();
        let (mut r, mut k, mut v, mut g_pre, mut g) = (z(), z(), z(), z(), z());
        lin_fwd(&self.receptance, set, &mixed[MR], t, &mut r, &mut ax[0]);
        lin_fwd(&self.key, set, &mixed[MK], t, &mut k, &mut ax[1]);
        lin_fwd(&self.value, set, &mixed[MV], t, &mut v, &mut ax[2]);
        lin_fwd(&self.gate, set, &mixed[MG], t, &mut g_pre, &mut ax[3]);
        act::act_fwd(Act::Silu, &g_pre, &mut g);
        // 3. WKV per head from the chunk's start state, GroupNorm ln_x, ⊙ g.
        let inp = Wkv5In { r: &r, k: &k, v: &v, w: &self.decay, g: &g };
        let (wkv, y) = wkv5_record(cfg, &inp, &self.faaaa, &self.ln_x, &mut st[pw]);
        // 4. x += O·y.
        let mut out = z();
        lin_fwd(&self.output, set, &y, t, &mut out, &mut ax[4]);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        // 5. Channel mix.
        let ffn = self.ffn.record(&self.ln2, set, &mut st[pf], x);
        Rec { att_x0, x_in, xn, mixed, r, k, v, g_pre, g, ax, wkv, y, ffn }
    }

    /// Backward of [`record`](Self::record), its steps in reverse: `dx` is dL/d(block output)
    /// in, dL/d(input) out; `dst` dL/d(state after the chunk) in, dL/d(state before) out.
    #[allow(clippy::too_many_arguments)]
    fn backprop(
        &self,
        cfg: &Config,
        _li: usize,
        set: &LoraSet,
        rec: &Rec,
        _carry: &mut TrainCarry,
        grads: &mut LoraGrads,
        dst: &mut [f32],
        dx: &mut [f32],
    ) {
        use crate::train::act::{self, Act};
        let c = cfg.n_embd;
        let [pa, pw, pf] = cfg.parts();
        let t = dx.len() / c;
        let z = || vec![0f32; t * c];
        // 5. Channel mix (dx becomes dL/d(its input)).
        self.ffn.backprop(&self.ln2, set, &rec.ffn, grads, &mut dst[pf], dx);
        // 4. x_mid = x_in + O·y.
        let mut d_y = z();
        lin_bwd(&self.output, set, grads, &rec.y, &rec.ax[4], dx, t, &mut d_y);
        // 3. The WKV stage; the decay is a frozen constant.
        let (mut d_r, mut d_k, mut d_v, mut d_g) = (z(), z(), z(), z());
        let inp = Wkv5In { r: &rec.r, k: &rec.k, v: &rec.v, w: &self.decay, g: &rec.g };
        let d = Wkv5Bwd { dr: &mut d_r, dk: &mut d_k, dv: &mut d_v, dw: None, dg: &mut d_g };
        wkv5_backprop(cfg, &inp, &self.faaaa, &self.ln_x, &rec.wkv, &d_y, &mut dst[pw], d);
        // 2. The four products and the SiLU gate.
        let mut d_gpre = z();
        act::act_bwd(Act::Silu, &rec.g_pre, &d_g, &mut d_gpre);
        let mut d_mixed: [Vec<f32>; 4] = std::array::from_fn(|_| z());
        lin_bwd(&self.receptance, set, grads, &rec.mixed[MR], &rec.ax[0], &d_r, t, &mut d_mixed[MR]);
        lin_bwd(&self.key, set, grads, &rec.mixed[MK], &rec.ax[1], &d_k, t, &mut d_mixed[MK]);
        lin_bwd(&self.value, set, grads, &rec.mixed[MV], &rec.ax[2], &d_v, t, &mut d_mixed[MV]);
        lin_bwd(&self.gate, set, grads, &rec.mixed[MG], &rec.ax[3], &d_gpre, t, &mut d_mixed[MG]);
        // 1. Token shifts (att_x out is the last xn row, att_x in the first row's previous) and ln1.
        let mut d_xn = z();
        d_xn[(t - 1) * c..].copy_from_slice(&dst[pa.clone()]);
        dst[pa.clone()].fill(0.0);
        for (m, d) in self.mix.iter().zip(&d_mixed) {
            act::token_shift_bwd(&rec.xn, &rec.att_x0, m, d, &mut d_xn, Some(&mut dst[pa.clone()]), None);
        }
        self.ln1.rows_bwd(&rec.x_in, &d_xn, dx);
    }
}
