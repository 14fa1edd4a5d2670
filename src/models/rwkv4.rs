//! RWKV-4 "Dove": B. Peng et al., "RWKV: Reinventing RNNs for the Transformer Era", EMNLP
//! Findings 2023. The math of BlinkDL's `rwkv.model.RWKV` (pip `rwkv` 0.8.32) for v4.
//!
//! Two checkpoint layouts, the same function:
//! - official (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*`, `blocks.N.ffn.*`,
//!   `ln_out`, `head.weight`);
//! - transformers `RwkvForCausalLM` (`rwkv.embeddings.weight`, `rwkv.blocks.N.pre_ln`,
//!   `rwkv.blocks.N.attention.time_mix_key`, `rwkv.blocks.N.feed_forward.*`, `rwkv.ln_out`,
//!   `head.weight`), which stores the same raw `time_decay`/`time_first` values. Its
//!   `config.json` `rescale_every` R (when present beside the file) is honoured as
//!   transformers does in eval mode: block i's attention-output and FFN-value products are
//!   divided by 2^(i div R) and the residual stream is halved after every R-th block. Since
//!   every block input and the output go through a LayerNorm, this changes results only
//!   through the LayerNorm epsilon; it is a no-op for models of at most R layers.
//!
//! Every size is read from tensor shapes.

use super::common::{embed, head_logits, one_minus, shape2, shift_rows, ChannelMix, Norm};
use super::{count_layers, count_params, Architecture, Family, ModelInfo};
use crate::error::{Error, Result};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::{matmul, sigmoid};
use crate::tensor::Matrix;

/// Initial value of the running maximum `pp` (the reference's -1e30, "minus infinity").
const PP_INIT: f32 = -1e30;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-4 model, all read from tensor shapes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of blocks (1 + largest `blocks.N`).
    pub n_layer: usize,
    /// C: residual width (embedding columns).
    pub n_embd: usize,
    /// V: vocabulary (embedding rows).
    pub n_vocab: usize,
    /// F: channel-mix hidden width (`ffn.key.weight` rows).
    pub n_ffn: usize,
    /// transformers `rescale_every` (0: none; only for the transformers layout).
    pub rescale_every: usize,
}

impl Config {
    /// f32 elements of one layer's state: att_x, aa, bb, pp, ffn_x, each [C].
    pub fn layer_state_len(&self) -> usize {
        5 * self.n_embd
    }
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One RWKV-4 block.
struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// Weight of the previous token in kx, vx, rx: 1 − time_mix_k/v/r, each [C].
    mix_k: Vec<f32>,
    mix_v: Vec<f32>,
    mix_r: Vec<f32>,
    /// w = −exp(time_decay): log of the per-step decay, [C].
    decay: Vec<f32>,
    /// u = time_first: log-weight bonus of the current token, [C].
    first: Vec<f32>,
    /// key, value, receptance, output: [C, C].
    key: Matrix,
    value: Matrix,
    receptance: Matrix,
    output: Matrix,
    /// Channel mix: mixes [C], key [F, C], receptance [C, C], value [C, F].
    ffn: ChannelMix,
}

/// A loaded RWKV-4 model.
pub struct Rwkv4 {
    info: ModelInfo,
    cfg: Config,
    /// Embedding: [V, C].
    emb: Matrix,
    /// blocks.0.ln0 (transformers: pre_ln), applied to the embedding row: [C].
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

/// The checkpoint name of an official-layout key in the file's layout.
fn key_name(hf: bool, official: &str) -> String {
    if !hf || official == "head.weight" {
        return official.to_string();
    }
    let k = official
        .replace("emb.", "embeddings.")
        .replace(".ln0", ".pre_ln")
        .replace(".att", ".attention")
        .replace(".ffn", ".feed_forward")
        .replace("time_mix_k", "time_mix_key")
        .replace("time_mix_v", "time_mix_value")
        .replace("time_mix_r", "time_mix_receptance");
    format!("rwkv.{k}")
}

impl Rwkv4 {
    /// Reads an RWKV-4 checkpoint in the official or the transformers layout (told apart by
    /// the `rwkv.` prefix); every shape is checked against the sizes read from the
    /// embedding and `blocks.0.ffn.key.weight`. For the transformers layout, `config`
    /// (`config.json` beside the file) supplies `rescale_every` and is checked against the
    /// shapes.
    pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Rwkv4> {
        let rd = WeightReader::new(file);
        let hf = rd.has("rwkv.blocks.0.attention.time_first");
        let name = |k: &str| key_name(hf, k);
        let (n_vocab, c) = shape2(&rd, &name("emb.weight"))?;
        let (n_ffn, _) = shape2(&rd, &name("blocks.0.ffn.key.weight"))?;
        let n_layer = count_layers(file, &name("blocks."));
        let mut rescale_every = 0;
        if let (true, Some(cf)) = (hf, config) {
            cf.expect("hidden_size", c, &file.name, &name("emb.weight"))?;
            cf.expect("num_hidden_layers", n_layer, &file.name, &name("blocks.N"))?;
            cf.expect("intermediate_size", n_ffn, &file.name, &name("blocks.0.ffn.key.weight"))?;
            rescale_every = cf.usize("rescale_every").unwrap_or(0);
        }
        let cfg = Config { n_layer, n_embd: c, n_vocab, n_ffn, rescale_every };

        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let a = |n: &str| name(&format!("blocks.{i}.att.{n}"));
            let f = |n: &str| name(&format!("blocks.{i}.ffn.{n}"));
            let decay = rd.vector(&a("time_decay"), c)?;
            blocks.push(Block {
                ln1: Norm::load(&rd, &name(&format!("blocks.{i}.ln1")), c)?,
                ln2: Norm::load(&rd, &name(&format!("blocks.{i}.ln2")), c)?,
                mix_k: one_minus(rd.vector(&a("time_mix_k"), c)?),
                mix_v: one_minus(rd.vector(&a("time_mix_v"), c)?),
                mix_r: one_minus(rd.vector(&a("time_mix_r"), c)?),
                decay: decay.into_iter().map(|d| -d.exp()).collect(),
                first: rd.vector(&a("time_first"), c)?,
                key: rd.matrix(&a("key.weight"), c, c)?,
                value: rd.matrix(&a("value.weight"), c, c)?,
                receptance: rd.matrix(&a("receptance.weight"), c, c)?,
                output: rd.matrix(&a("output.weight"), c, c)?,
                ffn: ChannelMix::load(
                    &rd,
                    &name(&format!("blocks.{i}.ffn")),
                    c,
                    one_minus(rd.vector(&f("time_mix_k"), c)?),
                    one_minus(rd.vector(&f("time_mix_r"), c)?),
                )?,
            });
        }
        let emb = rd.matrix(&name("emb.weight"), n_vocab, c)?;
        let head = rd.matrix("head.weight", n_vocab, c)?;
        let bytes_per_token = blocks
            .iter()
            .map(|b| {
                [&b.key, &b.value, &b.receptance, &b.output].iter().map(|m| m.n_bytes()).sum::<usize>()
                    + b.ffn.n_bytes()
            })
            .sum::<usize>()
            + head.n_bytes()
            + emb.n_bytes() / n_vocab.max(1);
        if n_ffn == 0 || c == 0 {
            return Err(Error::format(format!("{}: zero width or FFN size", file.name)));
        }
        let info = ModelInfo {
            family: Family::Rwkv,
            version: 4,
            arch_name: "rwkv4",
            n_layer,
            n_embd: c,
            n_vocab,
            n_head: 0,
            head_size: 0,
            n_params: count_params(file),
            weight_dtype: blocks.first().map_or(emb.dtype(), |b| b.key.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        Ok(Rwkv4 {
            info,
            ln0: Norm::load(&rd, &name("blocks.0.ln0"), c)?,
            ln_out: Norm::load(&rd, &name("ln_out"), c)?,
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

impl Rwkv4 {
    /// The time mix (attention) of `blk` for `t` tokens; adds `scale` × its output to `x`.
    fn time_mix(&self, blk: &Block, st: &mut [f32], x: &mut [f32], t: usize, scale: f32) {
        let c = self.cfg.n_embd;
        let (att_x, rest) = st.split_at_mut(c);
        let (aa, rest) = rest.split_at_mut(c);
        let (bb, rest) = rest.split_at_mut(c);
        let pp = &mut rest[..c];
        let z = || vec![0f32; t * c];

        // 1. xn = ln1(x); kx, vx, rx = token shifts against the previous xn (att_x for the first).
        let mut xn = z();
        blk.ln1.layer_norm_rows(x, &mut xn);
        let (mut kx, mut vx, mut rx) = (z(), z(), z());
        shift_rows(&xn, att_x, &blk.mix_k, &mut kx);
        shift_rows(&xn, att_x, &blk.mix_v, &mut vx);
        shift_rows(&xn, att_x, &blk.mix_r, &mut rx);
        att_x.copy_from_slice(&xn[(t - 1) * c..]);

        // 2. k = K·kx, v = V·vx, r = sigmoid(R·rx).
        let (mut k, mut v, mut r) = (z(), z(), z());
        matmul(&blk.key, &kx, t, &mut k);
        matmul(&blk.value, &vx, t, &mut v);
        matmul(&blk.receptance, &rx, t, &mut r);

        // 3. Per token and channel, in log space with running maximum pp (true numerator
        //    aa·e^pp, denominator bb·e^pp):
        //    wkv = (e^pp aa + e^(u+k) v) / (e^pp bb + e^(u+k));
        //    num ← e^w num + e^k v,  den ← e^w den + e^k  (w = −exp(time_decay)).
        //    The result r ⊙ wkv goes to kx (reused).
        let y = &mut kx;
        for i in 0..t {
            let row = i * c..(i + 1) * c;
            let (k, v, r, y) = (&k[row.clone()], &v[row.clone()], &r[row.clone()], &mut y[row]);
            for j in 0..c {
                let ww = blk.first[j] + k[j];
                let p = pp[j].max(ww);
                let (e1, e2) = ((pp[j] - p).exp(), (ww - p).exp());
                y[j] = sigmoid(r[j]) * (e1 * aa[j] + e2 * v[j]) / (e1 * bb[j] + e2);
                let ww = blk.decay[j] + pp[j];
                let p = ww.max(k[j]);
                let (e1, e2) = ((ww - p).exp(), (k[j] - p).exp());
                aa[j] = e1 * aa[j] + e2 * v[j];
                bb[j] = e1 * bb[j] + e2;
                pp[j] = p;
            }
        }

        // 4. x += scale · O·(r ⊙ wkv).
        matmul(&blk.output, y, t, &mut vx);
        x.iter_mut().zip(&vx).for_each(|(x, o)| *x += scale * o);
    }
}

impl Architecture for Rwkv4 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Layout: for each layer, att_x [C] | aa [C] | bb [C] | pp [C] | ffn_x [C]
    /// (att_x, ffn_x: the previous token's ln1 / ln2 output; aa, bb, pp: the WKV numerator and
    /// denominator as aa·e^pp, bb·e^pp).
    fn state_len(&self) -> usize {
        self.cfg.n_layer * self.cfg.layer_state_len()
    }

    /// Zeros, except pp = −1e30 (an empty sum in log space).
    fn init_state(&self, state: &mut [f32]) {
        let c = self.cfg.n_embd;
        for layer in state.chunks_exact_mut(self.cfg.layer_state_len()) {
            layer.fill(0.0);
            layer[3 * c..4 * c].fill(PP_INIT);
        }
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
        let every = self.cfg.rescale_every;
        for (li, blk) in self.blocks.iter().enumerate() {
            let st = &mut state[li * stride..(li + 1) * stride];
            // transformers' eval-mode rescaling (see the module doc): 1 when R = 0.
            let scale = li.checked_div(every).map_or(1.0, |k| 0.5f32.powi(k as i32));
            self.time_mix(blk, st, &mut x, t, scale);
            // 5. Channel mix: x += scale · sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
            let ffn_x = &mut st[4 * c..5 * c];
            if scale == 1.0 {
                blk.ffn.forward(&blk.ln2, ffn_x, &mut x, t);
            } else {
                let mut d = x.clone();
                blk.ffn.forward(&blk.ln2, ffn_x, &mut d, t);
                x.iter_mut().zip(&d).for_each(|(x, d)| *x += scale * (d - *x));
            }
            if every > 0 && (li + 1) % every == 0 {
                x.iter_mut().for_each(|v| *v *= 0.5);
            }
        }
        // 6. logits = head · ln_out(x), for the last token or for all of them.
        head_logits(&self.head, &x, t, logits, |r, o| self.ln_out.layer_norm_rows(r, o));
    }
}
