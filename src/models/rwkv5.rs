//! RWKV-5.2 "Eagle": B. Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States and
//! Dynamic Recurrence", 2024. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32)
//! for version 5.2 (`att_one_v5_1` / `att_seq_v5_2`).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*` with
//! `time_mix_k/v/r/g`, `time_decay [H, N]`, `time_faaaa [H, N]`, `gate`, `ln_x`,
//! `blocks.N.ffn.*`, `ln_out`, `head.weight`); every size is read from tensor shapes
//! (H and N from `time_decay`).

use super::common::{embed, head_logits, one_minus, shape2, shift_rows, wkv5, ChannelMix, Norm};
use super::{count_layers, count_params, Architecture, Family, ModelInfo};
use crate::error::{Error, Result};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{matmul, silu};
use crate::tensor::Matrix;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-5.2 model, all read from tensor shapes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of blocks (1 + largest `blocks.N`).
    pub n_layer: usize,
    /// C: residual width (`emb.weight` columns).
    pub n_embd: usize,
    /// V: vocabulary (`emb.weight` rows).
    pub n_vocab: usize,
    /// H: heads (`att.time_decay` rows).
    pub n_head: usize,
    /// N: head size (`att.time_decay` columns); C = H·N.
    pub head_size: usize,
    /// F: channel-mix hidden width (`ffn.key.weight` rows).
    pub n_ffn: usize,
}

impl Config {
    /// f32 elements of one layer's state: att_x [C], wkv [H, N, N], ffn_x [C].
    pub fn layer_state_len(&self) -> usize {
        2 * self.n_embd + self.n_head * self.head_size * self.head_size
    }
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One RWKV-5.2 block.
struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// Weight of the previous token in kx, vx, rx, gx: 1 − time_mix_k/v/r/g, each [C].
    mix_k: Vec<f32>,
    mix_v: Vec<f32>,
    mix_r: Vec<f32>,
    mix_g: Vec<f32>,
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
pub struct Rwkv5 {
    info: ModelInfo,
    cfg: Config,
    /// emb.weight: [V, C].
    emb: Matrix,
    /// blocks.0.ln0, applied to the embedding row: [C].
    ln0: Norm,
    blocks: Vec<Block>,
    /// ln_out: [C].
    ln_out: Norm,
    /// head.weight: [V, C].
    head: Matrix,
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Rwkv5 {
    /// Reads an official-layout RWKV-5.2 checkpoint; every shape is checked against the sizes
    /// read from `emb.weight`, `blocks.0.att.time_decay` and `blocks.0.ffn.key.weight`.
    pub fn load(file: &SafetensorsFile) -> Result<Rwkv5> {
        let rd = WeightReader::new(file);
        let (n_vocab, c) = shape2(&rd, "emb.weight")?;
        let (n_head, head_size) = match shape2(&rd, "blocks.0.att.time_decay")? {
            (h, n) if h * n == c => (h, n),
            s => {
                return Err(Error::format(format!(
                    "{}: tensor 'blocks.0.att.time_decay' has shape {s:?}, expected [heads, head_size] with \
                     heads*head_size = {c}",
                    file.name
                )))
            }
        };
        let (n_ffn, _) = shape2(&rd, "blocks.0.ffn.key.weight")?;
        let n_layer = count_layers(file, "blocks.");
        let cfg = Config { n_layer, n_embd: c, n_vocab, n_head, head_size, n_ffn };

        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let a = |n: &str| format!("blocks.{i}.att.{n}");
            let f = |n: &str| format!("blocks.{i}.ffn.{n}");
            let hn = [n_head, head_size];
            blocks.push(Block {
                ln1: Norm::load(&rd, &format!("blocks.{i}.ln1"), c)?,
                ln2: Norm::load(&rd, &format!("blocks.{i}.ln2"), c)?,
                mix_k: one_minus(rd.vector(&a("time_mix_k"), c)?),
                mix_v: one_minus(rd.vector(&a("time_mix_v"), c)?),
                mix_r: one_minus(rd.vector(&a("time_mix_r"), c)?),
                mix_g: one_minus(rd.vector(&a("time_mix_g"), c)?),
                decay: rd.floats(&a("time_decay"), &hn)?.into_iter().map(|d| (-d.exp()).exp()).collect(),
                faaaa: rd.floats(&a("time_faaaa"), &hn)?,
                receptance: rd.matrix(&a("receptance.weight"), c, c)?,
                key: rd.matrix(&a("key.weight"), c, c)?,
                value: rd.matrix(&a("value.weight"), c, c)?,
                gate: rd.matrix(&a("gate.weight"), c, c)?,
                output: rd.matrix(&a("output.weight"), c, c)?,
                ln_x: Norm::load(&rd, &a("ln_x"), c)?,
                ffn: ChannelMix::load(
                    &rd,
                    &format!("blocks.{i}.ffn"),
                    c,
                    one_minus(rd.vector(&f("time_mix_k"), c)?),
                    one_minus(rd.vector(&f("time_mix_r"), c)?),
                )?,
            });
        }
        let emb = rd.matrix("emb.weight", n_vocab, c)?;
        let head = rd.matrix("head.weight", n_vocab, c)?;
        let bytes_per_token = blocks
            .iter()
            .map(|b| {
                [&b.receptance, &b.key, &b.value, &b.gate, &b.output].iter().map(|m| m.n_bytes()).sum::<usize>()
                    + b.ffn.n_bytes()
            })
            .sum::<usize>()
            + head.n_bytes()
            + emb.n_bytes() / n_vocab.max(1);
        let info = ModelInfo {
            family: Family::Rwkv,
            version: 5,
            arch_name: "rwkv5",
            n_layer,
            n_embd: c,
            n_vocab,
            n_head,
            head_size,
            n_params: count_params(file),
            weight_dtype: blocks.first().map_or(emb.dtype(), |b| b.key.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        Ok(Rwkv5 {
            info,
            ln0: Norm::load(&rd, "blocks.0.ln0", c)?,
            ln_out: Norm::load(&rd, "ln_out", c)?,
            cfg,
            emb,
            blocks,
            head,
        })
    }

    /// The sizes read from the checkpoint.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl Rwkv5 {
    /// The time mix (attention) of `blk` for `t` tokens; adds its output to `x`.
    fn time_mix(&self, blk: &Block, st: &mut [f32], x: &mut [f32], t: usize) {
        let Config { n_embd: c, n_head, .. } = self.cfg;
        let (att_x, wkv) = st.split_at_mut(c);
        let z = || vec![0f32; t * c];

        // 1. xn = ln1(x); kx, vx, rx, gx = token shifts against the previous xn.
        let mut xn = z();
        blk.ln1.layer_norm_rows(x, &mut xn);
        let (mut kx, mut vx, mut rx, mut gx) = (z(), z(), z(), z());
        shift_rows(&xn, att_x, &blk.mix_k, &mut kx);
        shift_rows(&xn, att_x, &blk.mix_v, &mut vx);
        shift_rows(&xn, att_x, &blk.mix_r, &mut rx);
        shift_rows(&xn, att_x, &blk.mix_g, &mut gx);
        att_x.copy_from_slice(&xn[(t - 1) * c..]);

        // 2. r = R·rx, k = K·kx, v = V·vx, g = silu(G·gx).
        let (mut r, mut k, mut v, mut g) = (z(), z(), z(), z());
        matmul(&blk.receptance, &rx, t, &mut r);
        matmul(&blk.key, &kx, t, &mut k);
        matmul(&blk.value, &vx, t, &mut v);
        matmul(&blk.gate, &gx, t, &mut g);
        g.iter_mut().for_each(|v| *v = silu(*v));

        // 3. Per head, S [N(key), N(value)]: y = r·(u ⊙ k vᵀ + S);  S ← k vᵀ + diag(w)·S;
        //    y = GroupNorm(H)(y)·ln_x + bias;  y ⊙= g.
        let wkv = &mut wkv[..n_head * self.cfg.head_size * self.cfg.head_size];
        wkv5(wkv, n_head, &r, &k, &v, &blk.decay, &blk.faaaa, &g, &blk.ln_x, t, &mut xn);

        // 4. x += O·y.
        matmul(&blk.output, &xn, t, &mut kx);
        crate::kernels::add_assign(x, &kx);
    }
}

impl Architecture for Rwkv5 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Layout: for each layer, att_x [C] | wkv [H, N(key), N(value)] | ffn_x [C].
    fn state_len(&self) -> usize {
        self.cfg.n_layer * self.cfg.layer_state_len()
    }

    fn forward(&self, state: &mut [f32], tokens: &[u32], logits: Option<&mut [f32]>) {
        let c = self.cfg.n_embd;
        let t = tokens.len();
        if t == 0 {
            return;
        }
        // 0. x = ln0(emb[token]).
        let mut x = vec![0f32; t * c];
        embed(&self.emb, tokens, &mut x, |r, o| self.ln0.layer_norm_rows(r, o));
        let stride = self.cfg.layer_state_len();
        for (li, blk) in self.blocks.iter().enumerate() {
            let st = &mut state[li * stride..(li + 1) * stride];
            self.time_mix(blk, st, &mut x, t);
            // 5. Channel mix: x += sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
            blk.ffn.forward(&blk.ln2, &mut st[stride - c..], &mut x, t);
        }
        // 6. logits = head · ln_out(x), for the last token or for all of them.
        head_logits(&self.head, &x, t, logits, |r, o| self.ln_out.layer_norm_rows(r, o));
    }
}
