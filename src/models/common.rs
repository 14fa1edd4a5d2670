//! Pieces shared by several RWKV blocks, so that none of them re-implements them: the RWKV
//! v4–v6 channel mix (identical in v4, v5.2 and v6 up to the mix convention) and the RWKV
//! v5.2/v6 WKV recurrence (v6 only makes the decay data dependent).

use super::stack::{for_units, map_units, save_last, shift, units_to_rows, Norm, States};
use crate::error::Result;
use crate::exec::{Exec, Seg};
use crate::format::WeightReader;
use crate::kernels::{group_norm, sigmoid};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};
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

/// The inputs of [`wkv5`] (and of [`wkv5_record`]), each [T, C] except `w`, which is [T, C]
/// (v6) or [C] (v5.2, the same every token); `g` is already silu'd.
pub(crate) struct Wkv5In<'a> {
    /// Receptance.
    pub r: &'a [f32],
    /// Key.
    pub k: &'a [f32],
    /// Value.
    pub v: &'a [f32],
    /// Decay factor in (0, 1).
    pub w: &'a [f32],
    /// Gate silu(G·gx).
    pub g: &'a [f32],
}

/// GroupNorm epsilon of the v5.2/v6 `att.ln_x`: 1e-5 × head_size_divisor² (divisor 8).
const WKV5_GN_EPS: f32 = 64e-5;

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
            group_norm(y, 1, &lw[h * n..(h + 1) * n], &lb[h * n..(h + 1) * n], WKV5_GN_EPS);
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
    /// R > 0: the residual stream is halved after every R-th block (RWKV-6 GGUF files, whose
    /// converter divided block i's attention-output and FFN-value matrices by 2^(i div R)
    /// to keep 16-bit activations in range); 0: never.
    pub halve_every: usize,
}

impl HeadConfig {
    /// Reads C from `emb.weight` and H, N from the `[H, N]` tensor `heads` (which must have
    /// H·N = C; a single head's `[1, N]` reads as `[N]` once squeezed); returns the sizes and
    /// the vocabulary.
    pub(crate) fn read(rd: &WeightReader, heads: &str) -> Result<(HeadConfig, usize)> {
        let (n_vocab, c) = rd.shape2("emb.weight")?;
        let shape = match rd.shape(heads)?[..] {
            [n] if n == c => (1, n),
            _ => rd.shape2(heads)?,
        };
        match shape {
            (h, n) if h * n == c => Ok((HeadConfig { n_embd: c, n_head: h, head_size: n, halve_every: 0 }, n_vocab)),
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
            crate::kernels::vectorized(|| o.iter_mut().for_each(|v| *v = crate::kernels::silu(*v)));
        }
    }
}

/// Columns `from .. from + len` of the `[T, w]` rows of `src`, as `[T, len]` (the training
/// passes split fused projections this way).
pub(crate) fn columns(src: &[f32], w: usize, from: usize, len: usize) -> Vec<f32> {
    src.chunks_exact(w).flat_map(|r| r[from..from + len].iter().copied()).collect()
}

/// Writes `src` `[T, len]` into columns `from .. from + len` of the `[T, w]` rows of `dst`
/// (the inverse of [`columns`]).
pub(crate) fn set_columns(src: &[f32], from: usize, dst: &mut [f32], w: usize) {
    let rows = dst.len() / w;
    if rows == 0 || src.is_empty() {
        return;
    }
    let len = src.len() / rows;
    for (s, d) in src.chunks_exact(len).zip(dst.chunks_exact_mut(w)) {
        d[from..from + len].copy_from_slice(s);
    }
}

// ---------------------------------------------------------------------------------------------
// Training: the pieces of the v5.2/v6 training passes that both share
// ---------------------------------------------------------------------------------------------

/// `[T, C]` → head `h`'s `[T, N]`.
pub(crate) fn gather(x: &[f32], h: usize, n: usize, c: usize, out: &mut [f32]) {
    for (o, row) in out.chunks_exact_mut(n).zip(x.chunks_exact(c)) {
        o.copy_from_slice(&row[h * n..(h + 1) * n]);
    }
}

/// Adds head `h`'s `[T, N]` into `[T, C]`.
pub(crate) fn scatter_add(src: &[f32], h: usize, n: usize, c: usize, x: &mut [f32]) {
    for (s, row) in src.chunks_exact(n).zip(x.chunks_exact_mut(c)) {
        row[h * n..(h + 1) * n].iter_mut().zip(s).for_each(|(d, v)| *d += v);
    }
}

/// What the backward of [`ChannelMix::record`] needs, for one chunk of T tokens (each
/// `[T, C]` unless said otherwise).
pub(crate) struct ChannelMixRec {
    /// The channel mix's input and ln2 of it.
    x_in: Vec<f32>,
    xn: Vec<f32>,
    /// The shift state before the chunk, [C].
    prev0: Vec<f32>,
    /// The token shifts kx, rx.
    kx: Vec<f32>,
    rx: Vec<f32>,
    /// K·kx and relu² of it ([T, F]), R·rx, V·h.
    h_pre: Vec<f32>,
    h: Vec<f32>,
    r_pre: Vec<f32>,
    vh: Vec<f32>,
    /// `A x` of the key, receptance and value products (empty when untargeted).
    ax: [Vec<f32>; 3],
}

impl ChannelMix {
    /// Training forward over one chunk `x` (`[T, C]`, in and out) with the LoRA branches of
    /// `set`: [`forward`](Self::forward) with `scale` 1 (RWKV-5.2 and RWKV-6), keeping what the
    /// backward needs. `st` (`[C]`) enters as the shift state before the chunk and leaves as
    /// the chunk's last ln2 row.
    ///
    /// 1. xn = ln2(x); kx, rx = token shifts of xn against `st`.
    /// 2. h = relu(K·kx)²; x += σ(R·rx) ⊙ (V·h).
    pub fn record(&self, ln2: &Norm, set: &LoraSet, st: &mut [f32], x: &mut [f32]) -> ChannelMixRec {
        use crate::train::act::{self, Act};
        let c = st.len();
        let t = x.len() / c;
        let z = || vec![0f32; t * c];
        let (x_in, prev0) = (x.to_vec(), st.to_vec());
        // 1.
        let (mut xn, mut kx, mut rx) = (z(), z(), z());
        ln2.rows(x, &mut xn);
        act::token_shift_fwd(&xn, &prev0, &self.mix_k, &mut kx);
        act::token_shift_fwd(&xn, &prev0, &self.mix_r, &mut rx);
        st.copy_from_slice(&xn[(t - 1) * c..]);
        // 2.
        let f = self.key.rows;
        let mut ax: [Vec<f32>; 3] = Default::default();
        let (mut h_pre, mut h) = (vec![0f32; t * f], vec![0f32; t * f]);
        lin_fwd(&self.key, set, &kx, t, &mut h_pre, &mut ax[0]);
        act::act_fwd(Act::ReluSq, &h_pre, &mut h);
        let (mut r_pre, mut vh, mut out) = (z(), z(), z());
        lin_fwd(&self.receptance, set, &rx, t, &mut r_pre, &mut ax[1]);
        lin_fwd(&self.value, set, &h, t, &mut vh, &mut ax[2]);
        act::gate_fwd(Act::Sigmoid, &vh, &r_pre, &mut out);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        ChannelMixRec { x_in, xn, prev0, kx, rx, h_pre, h, r_pre, vh, ax }
    }

    /// Backward of [`record`](Self::record), its steps in reverse: `dx` enters as dL/d(output)
    /// and leaves as dL/d(input); `dst` (`[C]`) enters as dL/d(shift state after the chunk)
    /// and leaves as dL/d(shift state before it); the pairs' gradients are **accumulated**.
    pub fn backprop(
        &self,
        ln2: &Norm,
        set: &LoraSet,
        rec: &ChannelMixRec,
        grads: &mut LoraGrads,
        dst: &mut [f32],
        dx: &mut [f32],
    ) {
        use crate::train::act::{self, Act};
        let c = dst.len();
        let t = dx.len() / c;
        let z = || vec![0f32; t * c];
        let f = self.key.rows;
        // 2. x_out = x + σ(r_pre) ⊙ vh,  vh = V·h,  h = relu²(K·kx),  r_pre = R·rx.
        let (mut d_vh, mut d_rpre) = (z(), z());
        act::gate_bwd(Act::Sigmoid, &rec.vh, &rec.r_pre, dx, &mut d_vh, &mut d_rpre);
        let mut d_h = vec![0f32; t * f];
        lin_bwd(&self.value, set, grads, &rec.h, &rec.ax[2], &d_vh, t, &mut d_h);
        let mut d_hpre = vec![0f32; t * f];
        act::act_bwd(Act::ReluSq, &rec.h_pre, &d_h, &mut d_hpre);
        let (mut d_kx, mut d_rx) = (z(), z());
        lin_bwd(&self.key, set, grads, &rec.kx, &rec.ax[0], &d_hpre, t, &mut d_kx);
        lin_bwd(&self.receptance, set, grads, &rec.rx, &rec.ax[1], &d_rpre, t, &mut d_rx);
        // 1. The state out is the last ln2 row; the state in is the first row's previous one.
        let mut d_xn = z();
        d_xn[(t - 1) * c..].copy_from_slice(dst);
        dst.fill(0.0);
        act::token_shift_bwd(&rec.xn, &rec.prev0, &self.mix_k, &d_kx, &mut d_xn, Some(&mut *dst), None);
        act::token_shift_bwd(&rec.xn, &rec.prev0, &self.mix_r, &d_rx, &mut d_xn, Some(&mut *dst), None);
        ln2.rows_bwd(&rec.x_in, &d_xn, dx);
    }
}

/// What the backward of [`wkv5_record`] needs: the WKV state before the chunk
/// ([H, N, N]), the raw WKV output and its GroupNorm (each [T, C]).
pub(crate) struct Wkv5Rec {
    s0: Vec<f32>,
    y: Vec<f32>,
    y_norm: Vec<f32>,
}

/// Head `h`'s decay: rows `[T, N]` of a per-step `w` ([T, C]), or its `[N]` slice of a
/// constant one ([C]; with T = 1 both readings are the same values).
fn head_decay(w: &[f32], h: usize, n: usize, c: usize, t: usize) -> Vec<f32> {
    if w.len() == c {
        w[h * n..(h + 1) * n].to_vec()
    } else {
        let mut out = vec![0f32; t * n];
        gather(w, h, n, c, &mut out);
        out
    }
}

/// Training forward of the v5.2/v6 WKV stage over one chunk (what [`wkv5`] computes for one
/// sequence): per head the recurrence [`crate::train::wkv5::wkv5_fwd`] from `s` (the
/// block's WKV state [H, N, N], in: before the chunk, out: after it), then the per-head
/// GroupNorm `ln_x` and the gate `inp.g`. Returns the record and the gated output [T, C].
pub(crate) fn wkv5_record(
    cfg: &HeadConfig,
    inp: &Wkv5In,
    u: &[f32],
    ln_x: &Norm,
    s: &mut [f32],
) -> (Wkv5Rec, Vec<f32>) {
    use crate::train::wkv5::{wkv5_fwd, Wkv5Inputs};
    let HeadConfig { n_embd: c, n_head: nh, head_size: n, .. } = *cfg;
    let t = inp.r.len() / c;
    let s0 = s.to_vec();
    // Heads in parallel.
    let heads = map_units(s, n * n, |h, sh| {
        let [r, k, v] = [inp.r, inp.k, inp.v].map(|src| {
            let mut b = vec![0f32; t * n];
            gather(src, h, n, c, &mut b);
            b
        });
        let w = head_decay(inp.w, h, n, c, t);
        let hi = Wkv5Inputs { r: &r, k: &k, v: &v, w: &w, u: &u[h * n..(h + 1) * n] };
        let mut yh = vec![0f32; t * n];
        wkv5_fwd(n, &hi, sh, &mut yh);
        yh
    });
    let mut y = vec![0f32; t * c];
    for (h, yh) in heads.iter().enumerate() {
        scatter_add(yh, h, n, c, &mut y);
    }
    let mut y_norm = vec![0f32; t * c];
    crate::train::norm::group_norm_fwd(&y, nh, ln_x.weight(), ln_x.bias(), WKV5_GN_EPS, &mut y_norm);
    let gated = y_norm.iter().zip(inp.g).map(|(y, g)| y * g).collect();
    (Wkv5Rec { s0, y, y_norm }, gated)
}

/// The gradients [`wkv5_backprop`] **accumulates**, each [T, C] (`dw` the shape of the
/// decay, and only when wanted: RWKV-5.2's is a frozen constant).
pub(crate) struct Wkv5Bwd<'a> {
    /// dL/dr.
    pub dr: &'a mut [f32],
    /// dL/dk.
    pub dk: &'a mut [f32],
    /// dL/dv.
    pub dv: &'a mut [f32],
    /// dL/dw.
    pub dw: Option<&'a mut [f32]>,
    /// dL/dg (the gate after its SiLU).
    pub dg: &'a mut [f32],
}

/// Backward of [`wkv5_record`]: `dy` is dL/d(gated output); `ds` ([H, N, N]) enters as
/// dL/d(WKV state after the chunk) and leaves as dL/d(state before it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn wkv5_backprop(
    cfg: &HeadConfig,
    inp: &Wkv5In,
    u: &[f32],
    ln_x: &Norm,
    rec: &Wkv5Rec,
    dy: &[f32],
    ds: &mut [f32],
    d: Wkv5Bwd,
) {
    use crate::train::wkv5::{wkv5_bwd, wkv5_scratch_len, Wkv5Grads, Wkv5Inputs};
    let HeadConfig { n_embd: c, n_head: nh, head_size: n, .. } = *cfg;
    let t = inp.r.len() / c;
    // y_gated = y_norm ⊙ g,  y_norm = GroupNorm(y).
    let mut d_norm = vec![0f32; t * c];
    crate::train::act::gate_bwd(crate::train::act::Act::Identity, &rec.y_norm, inp.g, dy, &mut d_norm, d.dg);
    let mut d_y = vec![0f32; t * c];
    crate::train::norm::group_norm_bwd(&rec.y, nh, ln_x.weight(), WKV5_GN_EPS, &d_norm, &mut d_y, None, None);
    let Wkv5Bwd { dr, dk, dv, mut dw, .. } = d;
    let want_dw = dw.is_some();
    // Heads in parallel, then their gradients added in head order.
    let heads = map_units(ds, n * n, |h, dsh| {
        let col = |src: &[f32]| {
            let mut b = vec![0f32; t * n];
            gather(src, h, n, c, &mut b);
            b
        };
        let (r, k, v, dyh) = (col(inp.r), col(inp.k), col(inp.v), col(&d_y));
        let w = head_decay(inp.w, h, n, c, t);
        let mut dwh = want_dw.then(|| vec![0f32; w.len()]);
        let hi = Wkv5Inputs { r: &r, k: &k, v: &v, w: &w, u: &u[h * n..(h + 1) * n] };
        let mut hd = [(); 3].map(|_| vec![0f32; t * n]);
        let [dr_h, dk_h, dv_h] = &mut hd;
        let mut g = Wkv5Grads { dr: dr_h, dk: dk_h, dv: dv_h, dw: dwh.as_deref_mut(), du: None };
        let mut scratch = vec![0f32; wkv5_scratch_len(n, t)];
        wkv5_bwd(n, &hi, &rec.s0[h * n * n..(h + 1) * n * n], &dyh, dsh, &mut g, &mut scratch);
        (hd, dwh)
    });
    for (h, (hd, dwh)) in heads.iter().enumerate() {
        for (src, out) in hd.iter().zip([&mut *dr, &mut *dk, &mut *dv]) {
            scatter_add(src, h, n, c, out);
        }
        if let (Some(dw), Some(dwh)) = (dw.as_deref_mut(), dwh) {
            if dw.len() == c {
                dw[h * n..(h + 1) * n].iter_mut().zip(dwh).for_each(|(a, b)| *a += b);
            } else {
                scatter_add(dwh, h, n, c, dw);
            }
        }
    }
}
