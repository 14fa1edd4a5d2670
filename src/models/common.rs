//! Pieces shared by several RWKV blocks, so that none of them re-implements them: the RWKV
//! v4–v6 channel mix (identical in v4, v5.2 and v6 up to the mix convention) and the RWKV
//! v5.2/v6 WKV recurrence (v6 only makes the decay data dependent).

use super::stack::{for_units, save_last, shift, units_to_rows, Norm, States};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::WeightReader;
use crate::kernels::{group_norm, sigmoid};
use crate::tensor::Matrix;
use std::ops::Range;

/// `1 − v`: converts the v4/v5 `time_mix` (weight of the current token) into the weight of
/// the previous token that the token shift takes.
pub(crate) fn one_minus(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|m| 1.0 - m).collect()
}

/// The RWKV v4/v5.2/v6 channel mix: `x += sigmoid(R·rx) ⊙ (V·relu(K·kx)²)` with
/// `kx`, `rx` token shifts of ln2(x).
pub(crate) struct ChannelMix {
    /// Weight of the previous token in kx, rx: [C] (v4/v5 store 1 − time_mix_k/r, v6 time_maa_k/r).
    pub mix_k: Vec<f32>,
    pub mix_r: Vec<f32>,
    /// ffn.key [F, C].
    pub key: Matrix,
    /// ffn.receptance [C, C].
    pub receptance: Matrix,
    /// ffn.value [C, F].
    pub value: Matrix,
}

impl ChannelMix {
    /// Reads `key/receptance/value.weight` under `rd` (F from `key`'s rows) and the two mixes,
    /// given as the previous token's weight.
    pub fn load(rd: &WeightReader, c: usize, mix_k: Vec<f32>, mix_r: Vec<f32>) -> Result<ChannelMix> {
        let (f, _) = rd.shape2("key.weight")?;
        Ok(ChannelMix {
            mix_k,
            mix_r,
            key: rd.matrix("key.weight", f, c)?,
            receptance: rd.matrix("receptance.weight", c, c)?,
            value: rd.matrix("value.weight", c, f)?,
        })
    }

    /// The three matrices.
    pub fn matrices(&self) -> [&Matrix; 3] {
        [&self.key, &self.receptance, &self.value]
    }

    /// Runs the channel mix over the rows of `x` ([T, C]); `part` of each sequence's state is
    /// its previous row's ln2 output, updated to its last row's. Adds `scale` × the output.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ln2: &Norm,
        ex: &mut Exec,
        segs: &[Seg],
        st: &mut States,
        part: Range<usize>,
        x: &mut [f32],
        scale: f32,
    ) {
        let c = part.len();
        let t = x.len() / c;
        let Exec { lin, scratch, .. } = ex;
        let [xn, kx, rx, h] = scratch.take([t * c, t * c, t * c, t * self.key.rows]);
        // 1. xn = ln2(x); kx, rx = token shifts of xn.
        ln2.rows(x, xn);
        shift(segs, xn, st, part.clone(), &self.mix_k, kx);
        shift(segs, xn, st, part.clone(), &self.mix_r, rx);
        save_last(segs, xn, st, part);
        // 2. h = relu(K·kx)²;  r = sigmoid(R·rx);  x += scale · r ⊙ (V·h).
        lin.apply(&self.key, kx, t, h);
        h.iter_mut().for_each(|v| *v = v.max(0.0) * v.max(0.0));
        lin.apply(&self.receptance, rx, t, xn);
        lin.apply(&self.value, h, t, kx);
        for ((x, r), v) in x.iter_mut().zip(xn.iter()).zip(kx.iter()) {
            *x += scale * sigmoid(*r) * v;
        }
    }
}

/// The inputs of [`wkv5`], each [T, C] except `w`, which is [T, C] (v6) or [C] (v5.2, the
/// same every token); `g` is already silu'd.
pub(crate) struct Wkv5In<'a> {
    pub r: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub w: &'a [f32],
    pub g: &'a [f32],
}

/// The RWKV v5.2/v6 WKV recurrence over the rows of every sequence, for all heads, then the
/// per-head GroupNorm (`ln_x`, eps 64e-5) and the gate, into `y` [T, C].
///
/// Per head, state S is N×N indexed [key i, value j]:
/// `y_j = Σ_i r_i (u_i k_i v_j + S_ij)`;  `S_ij ← k_i v_j + w_i S_ij`.
/// `u` (time_faaaa) is [C]; `part` is the WKV state [H, N, N] of each sequence; `yh` is
/// scratch of [T, C].
#[allow(clippy::too_many_arguments)]
pub(crate) fn wkv5(
    segs: &[Seg],
    st: &mut States,
    part: Range<usize>,
    n_head: usize,
    inp: &Wkv5In,
    u: &[f32],
    ln_x: &Norm,
    yh: &mut [f32],
    y: &mut [f32],
) {
    const GN_EPS: f32 = 64e-5;
    let c = u.len();
    let n = c / n_head;
    let t = y.len() / c;
    let w_stride = if inp.w.len() == c { 0 } else { c };
    let (lw, lb) = (ln_x.weight(), ln_x.bias());
    let head = |h: usize, s: &mut [f32], yh: &mut [f32], rows: Range<usize>| {
        let hs = |i: usize| i * c + h * n..i * c + (h + 1) * n;
        let uh = &u[h * n..(h + 1) * n];
        for (i, y) in rows.zip(yh.chunks_exact_mut(n)) {
            let (r, k, v) = (&inp.r[hs(i)], &inp.k[hs(i)], &inp.v[hs(i)]);
            let w = &inp.w[i * w_stride + h * n..i * w_stride + (h + 1) * n];
            y.fill(0.0);
            for (ki, row) in s.chunks_exact_mut(n).enumerate() {
                let (ri, kk, wi) = (r[ki], k[ki], w[ki]);
                let ruk = ri * uh[ki] * kk;
                for j in 0..n {
                    let kv = kk * v[j];
                    y[j] += ri * row[j] + ruk * v[j];
                    row[j] = row[j] * wi + kv;
                }
            }
            group_norm(y, 1, &lw[h * n..(h + 1) * n], &lb[h * n..(h + 1) * n], GN_EPS);
            for (y, g) in y.iter_mut().zip(&inp.g[hs(i)]) {
                *y *= g;
            }
        }
    };
    for_units(segs, st, part, n_head, n, yh, t * n_head * n * n, head);
    units_to_rows(segs, yh, n_head, n, y);
}

/// Sizes of an RWKV v5.2, v6 or v7 model (read from tensor shapes), and its block state layout.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// C: residual width (`emb.weight` columns).
    pub n_embd: usize,
    /// H: heads.
    pub n_head: usize,
    /// N: head size; C = H·N.
    pub head_size: usize,
}

impl HeadConfig {
    /// Reads C from `emb.weight` and H, N from the `[H, N]` tensor `heads` (which must have
    /// H·N = C); returns the sizes and the vocabulary.
    pub(crate) fn read(rd: &WeightReader, heads: &str) -> Result<(HeadConfig, usize)> {
        let (n_vocab, c) = rd.shape2("emb.weight")?;
        match rd.shape2(heads)? {
            (h, n) if h * n == c => Ok((HeadConfig { n_embd: c, n_head: h, head_size: n }, n_vocab)),
            s => {
                Err(rd.error(heads, format!("has shape {s:?}, expected [heads, head_size] with heads*head_size = {c}")))
            }
        }
    }

    /// One block's state: att_x [C] | wkv [H, N, N] | ffn_x [C] (att_x, ffn_x: the previous
    /// row's ln1 / ln2 output).
    pub(crate) fn parts(&self) -> [Range<usize>; 3] {
        let (c, hnn) = (self.n_embd, self.n_head * self.head_size * self.head_size);
        [0..c, c..c + hnn, c + hnn..2 * c + hnn]
    }

    /// The common end of a v5.2–v7 loader: embedding with ln0, ln_out and head around `blocks`.
    pub(crate) fn stack<B: super::stack::Block<Config = HeadConfig>>(
        self,
        kind: super::ArchKind,
        rd: &WeightReader,
        n_vocab: usize,
        blocks: Vec<B>,
        n_params: u64,
    ) -> Result<super::stack::Stack<B>> {
        let c = self.n_embd;
        super::stack::Stack::new(super::stack::Parts {
            kind,
            emb: rd.matrix("emb.weight", n_vocab, c)?,
            emb_norm: Some(Norm::layer(rd, "blocks.0.ln0", c)?),
            blocks,
            out_norm: Norm::layer(rd, "ln_out", c)?,
            head: Some(rd.matrix("head.weight", n_vocab, c)?),
            n_head: self.n_head,
            head_size: self.head_size,
            n_params,
            cfg: self,
        })
    }
}

/// The embedding key of a Mamba checkpoint: transformers' `backbone.embeddings.weight` or the
/// original `backbone.embedding.weight`.
pub(crate) fn mamba_embedding_key(rd: &WeightReader) -> &'static str {
    if rd.has("backbone.embedding.weight") && !rd.has("backbone.embeddings.weight") {
        "backbone.embedding.weight"
    } else {
        "backbone.embeddings.weight"
    }
}

/// A Mamba mixer's conv1d bias (`mixer` reader), zeros when absent; refuses in/out projection
/// biases (`use_bias = true`), which libsutra does not run.
pub(crate) fn mamba_conv_bias(mixer: &WeightReader, channels: usize) -> Result<Vec<f32>> {
    for bias in ["in_proj.bias", "out_proj.bias"] {
        if mixer.has(bias) {
            return Err(crate::error::Error::unsupported(format!(
                "{}: tensor '{}' (use_bias = true) is not supported",
                mixer.file_name(),
                mixer.key(bias)
            )));
        }
    }
    if mixer.has("conv1d.bias") {
        mixer.vector("conv1d.bias", channels)
    } else {
        Ok(vec![0.0; channels])
    }
}

/// The common end of a Mamba loader: the embedding, `norm_f` (RMSNorm, `eps`) and the head
/// (`lm_head.weight`, or tied to the embedding when absent) around `blocks`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mamba_stack<B: super::stack::Block>(
    kind: super::ArchKind,
    rd: &WeightReader,
    cfg: B::Config,
    (n_vocab, dm, eps): (usize, usize, f32),
    blocks: Vec<B>,
    (n_head, head_size): (usize, usize),
    n_params: u64,
) -> Result<super::stack::Stack<B>> {
    let head = if rd.has("lm_head.weight") { Some(rd.matrix("lm_head.weight", n_vocab, dm)?) } else { None };
    super::stack::Stack::new(super::stack::Parts {
        kind,
        cfg,
        emb: rd.matrix(mamba_embedding_key(rd), n_vocab, dm)?,
        emb_norm: None,
        blocks,
        out_norm: Norm::rms(rd, "backbone.norm_f.weight", dm, eps)?,
        head,
        n_head,
        head_size,
        n_params,
    })
}

/// Mamba's causal conv1d then SiLU over the rows of every sequence: row i's input is
/// `x[i·stride + off ..][..ch]`, its output `out[i·ch ..][..ch]`; `part` of each sequence's
/// state is the conv window `[ch, K]` (see `kernels::conv1d_causal_step`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_silu(
    segs: &[Seg],
    st: &mut States,
    part: Range<usize>,
    x: &[f32],
    (stride, off): (usize, usize),
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    let ch = b.len();
    for (s, seg) in segs.iter().enumerate() {
        let window = &mut st.seg(s)[part.clone()];
        for i in seg.rows() {
            let o = &mut out[i * ch..(i + 1) * ch];
            crate::kernels::conv1d_causal_step(window, &x[i * stride + off..i * stride + off + ch], w, b, o);
            o.iter_mut().for_each(|v| *v = crate::kernels::silu(*v));
        }
    }
}

/// Columns `from .. from + len` of the `[T, w]` rows of `src`, as `[T, len]` (the training
/// passes split fused projections this way).
pub(crate) fn columns(src: &[f32], w: usize, from: usize, len: usize) -> Vec<f32> {
    src.chunks_exact(w).flat_map(|r| r[from..from + len].iter().copied()).collect()
}
