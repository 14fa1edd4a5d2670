//! RWKV-5.2 "Eagle": B. Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States and
//! Dynamic Recurrence", 2024. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32)
//! for version 5.2 (`att_one_v5_1` / `att_seq_v5_2`).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*` with
//! `time_mix_k/v/r/g`, `time_decay [H, N]`, `time_faaaa [H, N]`, `gate`, `ln_x`,
//! `blocks.N.ffn.*`, `ln_out`, `head.weight`); every size is read from tensor shapes
//! (H and N from `time_decay`).

use super::common::{one_minus, wkv5, ChannelMix, HeadConfig, Wkv5In};
use super::stack::{save_last, shift, Block as StackBlock, Norm, Stack, States};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{add_assign, silu};
use crate::tensor::Matrix;

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
}
