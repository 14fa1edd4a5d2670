//! RWKV-6 "Finch" (`x060`): B. Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States
//! and Dynamic Recurrence", 2024. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32)
//! for version 6.0 (`att_one_v6_0` / `att_seq_v6_0`).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*` with
//! `time_maa_x/w/k/v/r/g`, `time_maa_w1 [C, 5D]`, `time_maa_w2 [5, D, C]`, `time_decay`,
//! `time_decay_w1 [C, Dd]`, `time_decay_w2 [Dd, C]`, `time_faaaa [H, N]`, `gate`, `ln_x`,
//! `blocks.N.ffn.*` with `time_maa_k/r`, `ln_out`, `head.weight`); every size, the two
//! LoRA ranks included, is read from tensor shapes (H and N from `time_faaaa`).

use super::common::{wkv5, ChannelMix, HeadConfig, Wkv5In};
use super::stack::{delta_prev, save_last, Block as StackBlock, Norm, Stack, States};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{add_assign, silu};
use crate::tensor::Matrix;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-6 model (C, H, N), all read from tensor shapes (H and N from
/// `time_faaaa`; the LoRA ranks per block from their own tensors).
pub type Config = HeadConfig;

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
/// its own ranks).
pub fn load(file: &SafetensorsFile) -> Result<Rwkv6> {
    let rd = WeightReader::new(file);
    let (cfg, n_vocab) = HeadConfig::read(&rd, "blocks.0.att.time_faaaa")?;
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

    fn forward(&self, cfg: &Config, _li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        self.time_mix(cfg, ex, segs, st, x);
        // 8. Channel mix: kx = xn + (prev − xn) ⊙ maa_k (rx likewise);
        //    x += sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
        self.ffn.forward(&self.ln2, ex, segs, st, cfg.parts()[2].clone(), x, 1.0);
    }
}
