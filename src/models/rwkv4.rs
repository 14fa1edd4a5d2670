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

use super::common::{one_minus, ChannelMix};
use super::stack::{halve_after, save_last, shift, Block as StackBlock, Norm, Parts, Stack, States};
use super::{count_params, ArchKind};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::sigmoid;
use crate::tensor::Matrix;

/// Initial value of the running maximum `pp` (the reference's -1e30, "minus infinity").
const PP_INIT: f32 = -1e30;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-4 model, read from tensor shapes (and `rescale_every` from config.json).
#[derive(Debug, Clone)]
pub struct Config {
    /// C: residual width (embedding columns).
    pub n_embd: usize,
    /// transformers `rescale_every` (0: none; only for the transformers layout).
    pub rescale_every: usize,
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One RWKV-4 block.
pub struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// Weight of the previous token in kx, vx, rx: 1 − time_mix_k/v/r, each [C].
    mix: [Vec<f32>; 3],
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
pub type Rwkv4 = Stack<Block>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// The names that differ between the two layouts (the rest are the same under `blocks.N`).
struct Names {
    root: &'static str,
    emb: &'static str,
    ln0: &'static str,
    att: &'static str,
    ffn: &'static str,
    mix: [&'static str; 3],
}

const OFFICIAL: Names = Names {
    root: "",
    emb: "emb.weight",
    ln0: "ln0",
    att: "att",
    ffn: "ffn",
    mix: ["time_mix_k", "time_mix_v", "time_mix_r"],
};
const TRANSFORMERS: Names = Names {
    root: "rwkv",
    emb: "embeddings.weight",
    ln0: "pre_ln",
    att: "attention",
    ffn: "feed_forward",
    mix: ["time_mix_key", "time_mix_value", "time_mix_receptance"],
};

/// Reads an RWKV-4 checkpoint in the official or the transformers layout (told apart by the
/// `rwkv.` prefix); every shape is checked against the width read from the embedding. For
/// the transformers layout, `config` (`config.json` beside the file) supplies
/// `rescale_every` and is checked against the shapes.
pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Rwkv4> {
    let top = WeightReader::new(file);
    let hf = top.has("rwkv.blocks.0.attention.time_first");
    let nm = if hf { &TRANSFORMERS } else { &OFFICIAL };
    let rd = if hf { top.pp(nm.root) } else { top.clone() };
    let (n_vocab, c) = rd.shape2(nm.emb)?;
    let blocks_rd = rd.pp("blocks");
    let n_layer = blocks_rd.count_children();
    let mut rescale_every = 0;
    if let (true, Some(cf)) = (hf, config) {
        cf.expect("hidden_size", c, &file.name, &rd.key(nm.emb))?;
        cf.expect("num_hidden_layers", n_layer, &file.name, &blocks_rd.key("N"))?;
        let ffn_key = blocks_rd.pp(0).pp(nm.ffn).key("key.weight");
        cf.expect("intermediate_size", top.shape2(&ffn_key)?.0, &file.name, &ffn_key)?;
        rescale_every = cf.usize("rescale_every").unwrap_or(0);
    }
    let blocks = (0..n_layer)
        .map(|i| {
            let b = blocks_rd.pp(i);
            let (a, f) = (b.pp(nm.att), b.pp(nm.ffn));
            let mix = |r: &WeightReader, n: &str| r.vector(n, c).map(one_minus);
            Ok(Block {
                ln1: Norm::layer(&b, "ln1", c)?,
                ln2: Norm::layer(&b, "ln2", c)?,
                mix: [mix(&a, nm.mix[0])?, mix(&a, nm.mix[1])?, mix(&a, nm.mix[2])?],
                decay: a.vector("time_decay", c)?.into_iter().map(|d| -d.exp()).collect(),
                first: a.vector("time_first", c)?,
                key: a.matrix("key.weight", c, c)?,
                value: a.matrix("value.weight", c, c)?,
                receptance: a.matrix("receptance.weight", c, c)?,
                output: a.matrix("output.weight", c, c)?,
                ffn: ChannelMix::load(&f, c, mix(&f, nm.mix[0])?, mix(&f, nm.mix[2])?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Stack::new(Parts {
        kind: ArchKind::Rwkv4,
        cfg: Config { n_embd: c, rescale_every },
        emb: rd.matrix(nm.emb, n_vocab, c)?,
        emb_norm: Some(Norm::layer(&blocks_rd.pp(0), nm.ln0, c)?),
        blocks,
        out_norm: Norm::layer(&rd, "ln_out", c)?,
        head: Some(top.matrix("head.weight", n_vocab, c)?),
        n_head: 0,
        head_size: 0,
        n_params: count_params(file),
    })
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

impl Config {
    /// One block's state: att_x | aa | bb | pp | ffn_x, each [C] (att_x, ffn_x: the previous
    /// row's ln1 / ln2 output; aa, bb, pp: the WKV numerator and denominator as aa·e^pp,
    /// bb·e^pp).
    fn parts(&self) -> [std::ops::Range<usize>; 5] {
        let c = self.n_embd;
        [0..c, c..2 * c, 2 * c..3 * c, 3 * c..4 * c, 4 * c..5 * c]
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl Block {
    /// The time mix (attention) over the rows of `x`; adds `scale` × its output to `x`.
    fn time_mix(&self, cfg: &Config, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32], scale: f32) {
        let c = cfg.n_embd;
        let [att_x, aa, bb, pp, _] = cfg.parts();
        let t = x.len() / c;
        let Exec { lin, scratch, .. } = ex;
        let [xn, kx, vx, rx, k, v, r] = scratch.take([t * c; 7]);

        // 1. xn = ln1(x); kx, vx, rx = token shifts against the previous row's xn.
        self.ln1.rows(x, xn);
        for (m, out) in self.mix.iter().zip([&mut *kx, &mut *vx, &mut *rx]) {
            shift(segs, xn, st, att_x.clone(), m, out);
        }
        save_last(segs, xn, st, att_x);

        // 2. k = K·kx, v = V·vx, r = R·rx.
        lin.apply(&self.key, kx, t, k);
        lin.apply(&self.value, vx, t, v);
        lin.apply(&self.receptance, rx, t, r);

        // 3. Per row and channel, in log space with running maximum pp (true numerator
        //    aa·e^pp, denominator bb·e^pp):
        //    wkv = (e^pp aa + e^(u+k) v) / (e^pp bb + e^(u+k));
        //    num ← e^w num + e^k v,  den ← e^w den + e^k  (w = −exp(time_decay)).
        //    The result sigmoid(r) ⊙ wkv goes to kx (reused).
        let y = kx;
        for (s, seg) in segs.iter().enumerate() {
            let state = st.seg(s);
            let (state, pp) = state.split_at_mut(pp.start);
            let pp = &mut pp[..c];
            let (aa, bb) = state[aa.start..bb.end].split_at_mut(c);
            for i in seg.rows() {
                let row = i * c..(i + 1) * c;
                let (k, v, r, y) = (&k[row.clone()], &v[row.clone()], &r[row.clone()], &mut y[row]);
                for j in 0..c {
                    let ww = self.first[j] + k[j];
                    let p = pp[j].max(ww);
                    let (e1, e2) = ((pp[j] - p).exp(), (ww - p).exp());
                    y[j] = sigmoid(r[j]) * (e1 * aa[j] + e2 * v[j]) / (e1 * bb[j] + e2);
                    let ww = self.decay[j] + pp[j];
                    let p = ww.max(k[j]);
                    let (e1, e2) = ((ww - p).exp(), (k[j] - p).exp());
                    aa[j] = e1 * aa[j] + e2 * v[j];
                    bb[j] = e1 * bb[j] + e2;
                    pp[j] = p;
                }
            }
        }

        // 4. x += scale · O·(r ⊙ wkv).
        lin.apply(&self.output, y, t, vx);
        x.iter_mut().zip(vx.iter()).for_each(|(x, o)| *x += scale * o);
    }
}

impl StackBlock for Block {
    type Config = Config;

    /// Layout: att_x [C] | aa [C] | bb [C] | pp [C] | ffn_x [C].
    fn state_len(cfg: &Config) -> usize {
        5 * cfg.n_embd
    }

    /// Zeros, except pp = −1e30 (an empty sum in log space).
    fn init_state(cfg: &Config, st: &mut [f32]) {
        st.fill(0.0);
        st[cfg.parts()[3].clone()].fill(PP_INIT);
    }

    fn matrices(&self) -> Vec<&Matrix> {
        let mut m = vec![&self.key, &self.value, &self.receptance, &self.output];
        m.extend(self.ffn.matrices());
        m
    }

    fn forward(&self, cfg: &Config, li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        // transformers' eval-mode rescaling (see the module doc): 1 when R = 0.
        let every = cfg.rescale_every;
        let scale = li.checked_div(every).map_or(1.0, |k| 0.5f32.powi(k as i32));
        self.time_mix(cfg, ex, segs, st, x, scale);
        // 5. Channel mix: x += scale · sigmoid(R·rx) ⊙ (V·relu(K·kx)²).
        self.ffn.forward(&self.ln2, ex, segs, st, cfg.parts()[4].clone(), x, scale);
        halve_after(every, li, x);
    }
}
