//! RWKV-6 "Finch" (`x060`): B. Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States
//! and Dynamic Recurrence", 2024. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32)
//! for version 6.0 (`att_one_v6_0` / `att_seq_v6_0`).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*` with
//! `time_maa_x/w/k/v/r/g`, `time_maa_w1 [C, 5D]`, `time_maa_w2 [5, D, C]`, `time_decay`,
//! `time_decay_w1 [C, Dd]`, `time_decay_w2 [Dd, C]`, `time_faaaa [H, N]`, `gate`, `ln_x`,
//! `blocks.N.ffn.*` with `time_maa_k/r`, `ln_out`, `head.weight`); every size, the two
//! LoRA ranks included, is read from tensor shapes (H and N from `time_faaaa`).

use super::common::{embed, head_logits, shape2, wkv5, ChannelMix, Norm};
use super::{count_layers, count_params, Architecture, Family, ModelInfo};
use crate::error::{Error, Result};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{add_assign, matmul, silu};
use crate::tensor::Matrix;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-6 model, all read from tensor shapes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of blocks (1 + largest `blocks.N`).
    pub n_layer: usize,
    /// C: residual width (`emb.weight` columns).
    pub n_embd: usize,
    /// V: vocabulary (`emb.weight` rows).
    pub n_vocab: usize,
    /// H: heads (`att.time_faaaa` rows).
    pub n_head: usize,
    /// N: head size (`att.time_faaaa` columns); C = H·N.
    pub head_size: usize,
    /// F: channel-mix hidden width (`ffn.key.weight` rows).
    pub n_ffn: usize,
    /// D: rank of the token-shift LoRA (`att.time_maa_w1` columns / 5).
    pub mix_rank: usize,
    /// Dd: rank of the decay LoRA (`att.time_decay_w1` columns).
    pub decay_rank: usize,
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

/// Order of the five data-dependent token shifts in `time_maa_w1/w2`.
const W: usize = 0;
const K: usize = 1;
const V: usize = 2;
const R: usize = 3;
const G: usize = 4;

/// One RWKV-6 block.
struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// time_maa_x: [C], mix of the LoRA input.
    maa_x: Vec<f32>,
    /// time_maa_w, _k, _v, _r, _g in that order: each [C].
    maa: [Vec<f32>; 5],
    /// time_maa_w1 transposed: [5D, C].
    maa_w1: Matrix,
    /// time_maa_w2[i] transposed: 5 × [C, D].
    maa_w2: Vec<Matrix>,
    /// time_decay: [C].
    decay: Vec<f32>,
    /// time_decay_w1 transposed: [Dd, C]; time_decay_w2 transposed: [C, Dd].
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
pub struct Rwkv6 {
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

impl Rwkv6 {
    /// Reads an official-layout RWKV-6 checkpoint; every shape is checked against the sizes
    /// read from `emb.weight`, `blocks.0.att.time_faaaa`, `blocks.0.ffn.key.weight` and the
    /// block's LoRAs.
    pub fn load(file: &SafetensorsFile) -> Result<Rwkv6> {
        let rd = WeightReader::new(file);
        let (n_vocab, c) = shape2(&rd, "emb.weight")?;
        let (n_head, head_size) = match shape2(&rd, "blocks.0.att.time_faaaa")? {
            (h, n) if h * n == c => (h, n),
            s => {
                return Err(Error::format(format!(
                    "{}: tensor 'blocks.0.att.time_faaaa' has shape {s:?}, expected [heads, head_size] with \
                     heads*head_size = {c}",
                    file.name
                )))
            }
        };
        let (n_ffn, _) = shape2(&rd, "blocks.0.ffn.key.weight")?;
        let n_layer = count_layers(file, "blocks.");
        let rank = |name: &str, div: usize| -> Result<usize> {
            match shape2(&rd, name)? {
                (r, d) if r == c && d % div == 0 && d > 0 => Ok(d / div),
                s => Err(Error::format(format!(
                    "{}: tensor '{name}' has shape {s:?}, expected [{c}, {div}·rank]",
                    file.name
                ))),
            }
        };
        let mix_rank = rank("blocks.0.att.time_maa_w1", 5)?;
        let decay_rank = rank("blocks.0.att.time_decay_w1", 1)?;
        let cfg = Config { n_layer, n_embd: c, n_vocab, n_head, head_size, n_ffn, mix_rank, decay_rank };

        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let a = |n: &str| format!("blocks.{i}.att.{n}");
            let f = |n: &str| format!("blocks.{i}.ffn.{n}");
            let vec = |n: &str| rd.vector(&a(n), c);
            // Each block may have its own ranks: read them from its own w1.
            let (d, dd) = (rank(&a("time_maa_w1"), 5)?, rank(&a("time_decay_w1"), 1)?);
            blocks.push(Block {
                ln1: Norm::load(&rd, &format!("blocks.{i}.ln1"), c)?,
                ln2: Norm::load(&rd, &format!("blocks.{i}.ln2"), c)?,
                maa_x: vec("time_maa_x")?,
                maa: [
                    vec("time_maa_w")?,
                    vec("time_maa_k")?,
                    vec("time_maa_v")?,
                    vec("time_maa_r")?,
                    vec("time_maa_g")?,
                ],
                maa_w1: rd.matrix_transposed(&a("time_maa_w1"), 5 * d, c)?,
                maa_w2: rd.stacked_transposed(&a("time_maa_w2"), 5, c, d)?,
                decay: vec("time_decay")?,
                decay_w1: rd.matrix_transposed(&a("time_decay_w1"), dd, c)?,
                decay_w2: rd.matrix_transposed(&a("time_decay_w2"), c, dd)?,
                faaaa: rd.floats(&a("time_faaaa"), &[n_head, head_size])?,
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
                    rd.vector(&f("time_maa_k"), c)?,
                    rd.vector(&f("time_maa_r"), c)?,
                )?,
            });
        }
        let emb = rd.matrix("emb.weight", n_vocab, c)?;
        let head = rd.matrix("head.weight", n_vocab, c)?;
        let bytes_per_token = blocks
            .iter()
            .map(|b| {
                [&b.receptance, &b.key, &b.value, &b.gate, &b.output, &b.maa_w1, &b.decay_w1, &b.decay_w2]
                    .iter()
                    .map(|m| m.n_bytes())
                    .sum::<usize>()
                    + b.maa_w2.iter().map(|m| m.n_bytes()).sum::<usize>()
                    + b.ffn.n_bytes()
            })
            .sum::<usize>()
            + head.n_bytes()
            + emb.n_bytes() / n_vocab.max(1);
        let info = ModelInfo {
            family: Family::Rwkv,
            version: 6,
            arch_name: "rwkv6",
            n_layer,
            n_embd: c,
            n_vocab,
            n_head,
            head_size,
            n_params: count_params(file),
            weight_dtype: blocks.first().map_or(emb.dtype(), |b| b.key.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        Ok(Rwkv6 {
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

impl Rwkv6 {
    /// The time mix (attention) of `blk` for `t` tokens; adds its output to `x`.
    fn time_mix(&self, blk: &Block, st: &mut [f32], x: &mut [f32], t: usize) {
        let Config { n_embd: c, n_head, head_size, .. } = self.cfg;
        let (att_x, wkv) = st.split_at_mut(c);
        let z = || vec![0f32; t * c];
        let d = blk.maa_w2[0].cols;

        // 1. xn = ln1(x); sx = prev − xn (prev: the previous token's xn, att_x for the first).
        let mut xn = z();
        blk.ln1.layer_norm_rows(x, &mut xn);
        let mut sx = z();
        for i in 0..t {
            let prev = if i == 0 { &att_x[..] } else { &xn[(i - 1) * c..i * c] };
            for j in 0..c {
                sx[i * c + j] = prev[j] - xn[i * c + j];
            }
        }
        att_x.copy_from_slice(&xn[(t - 1) * c..]);

        // 2. m = tanh((xn + sx ⊙ maa_x)·w1) viewed as [5, D];  m_i = m[i]·w2[i]  (i = w, k, v, r, g).
        let mut xxx = z();
        for (o, ((xn, sx), mx)) in xxx.iter_mut().zip(xn.iter().zip(&sx).zip(blk.maa_x.iter().cycle())) {
            *o = xn + sx * mx;
        }
        let mut m = vec![0f32; t * 5 * d];
        matmul(&blk.maa_w1, &xxx, t, &mut m);
        m.iter_mut().for_each(|v| *v = v.tanh());
        // 3. For each i: xi = xn + sx ⊙ (maa_i + m_i), computed in place in `mixed[i]`.
        let mut mi = vec![0f32; t * d];
        let mut mixed: [Vec<f32>; 5] = [z(), z(), z(), z(), z()];
        for (i, out) in mixed.iter_mut().enumerate() {
            for tok in 0..t {
                mi[tok * d..(tok + 1) * d].copy_from_slice(&m[tok * 5 * d + i * d..tok * 5 * d + (i + 1) * d]);
            }
            matmul(&blk.maa_w2[i], &mi, t, out);
            for (j, o) in out.iter_mut().enumerate() {
                *o = xn[j] + sx[j] * (blk.maa[i][j % c] + *o);
            }
        }

        // 4. r = R·xr, k = K·xk, v = V·xv, g = silu(G·xg).
        let (mut r, mut k, mut v, mut g) = (z(), z(), z(), z());
        matmul(&blk.receptance, &mixed[R], t, &mut r);
        matmul(&blk.key, &mixed[K], t, &mut k);
        matmul(&blk.value, &mixed[V], t, &mut v);
        matmul(&blk.gate, &mixed[G], t, &mut g);
        g.iter_mut().for_each(|v| *v = silu(*v));

        // 5. Data-dependent decay: w = exp(−exp(time_decay + tanh(xw·dw1)·dw2)), [t, C].
        let mut low = vec![0f32; t * blk.decay_w1.rows];
        matmul(&blk.decay_w1, &mixed[W], t, &mut low);
        low.iter_mut().for_each(|v| *v = v.tanh());
        let mut w = z();
        matmul(&blk.decay_w2, &low, t, &mut w);
        for (j, w) in w.iter_mut().enumerate() {
            *w = (-(blk.decay[j % c] + *w).exp()).exp();
        }

        // 6. Per head, S [N(key), N(value)]: y = r·(u ⊙ k vᵀ + S);  S ← k vᵀ + diag(w)·S;
        //    y = GroupNorm(H)(y)·ln_x + bias;  y ⊙= g.
        let wkv = &mut wkv[..n_head * head_size * head_size];
        wkv5(wkv, n_head, &r, &k, &v, &w, &blk.faaaa, &g, &blk.ln_x, t, &mut xn);

        // 7. x += O·y.
        matmul(&blk.output, &xn, t, &mut sx);
        add_assign(x, &sx);
    }
}

impl Architecture for Rwkv6 {
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
            // 8. Channel mix: kx = xn + (prev − xn) ⊙ maa_k (rx likewise);
            //    x += sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
            blk.ffn.forward(&blk.ln2, &mut st[stride - c..], &mut x, t);
        }
        // 9. logits = head · ln_out(x), for the last token or for all of them.
        head_logits(&self.head, &x, t, logits, |r, o| self.ln_out.layer_norm_rows(r, o));
    }
}
