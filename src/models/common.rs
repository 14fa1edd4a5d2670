//! Pieces shared by several architecture files, so that none of them re-implements them:
//! affine norms over rows of tokens, token shift over rows, the embedding lookup and the LM
//! head, the RWKV v4–v6 channel mix (identical in v4, v5.2 and v6 up to the mix convention)
//! and the RWKV v5.2/v6 WKV recurrence (v6 only makes the decay data dependent).

use crate::error::{Error, Result};
use crate::format::WeightReader;
use crate::kernels::{self, layer_norm, matmul, sigmoid, token_shift};
use crate::tensor::Matrix;

/// LayerNorm epsilon of RWKV ln0/ln1/ln2/ln_out.
pub(crate) const LN_EPS: f32 = 1e-5;

/// LayerNorm / GroupNorm affine parameters, each [C].
pub(crate) struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Norm {
    /// Reads `{prefix}.weight` and `{prefix}.bias`, each [c].
    pub fn load(rd: &WeightReader, prefix: &str, c: usize) -> Result<Norm> {
        Ok(Norm { w: rd.vector(&format!("{prefix}.weight"), c)?, b: rd.vector(&format!("{prefix}.bias"), c)? })
    }

    /// LayerNorm of every row of `x` ([t, C]) into `out` ([t, C]).
    pub fn layer_norm_rows(&self, x: &[f32], out: &mut [f32]) {
        let c = self.w.len();
        for (xi, oi) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            layer_norm(xi, &self.w, &self.b, LN_EPS, oi);
        }
    }
}

/// Token shift over `t` rows of `xn` ([t, C]): row i mixes with row i−1, row 0 with `last`
/// (the state); `mix` is the weight of the previous token.
pub(crate) fn shift_rows(xn: &[f32], last: &[f32], mix: &[f32], out: &mut [f32]) {
    let c = last.len();
    for (i, (cur, o)) in xn.chunks_exact(c).zip(out.chunks_exact_mut(c)).enumerate() {
        let prev = if i == 0 { last } else { &xn[(i - 1) * c..i * c] };
        token_shift(cur, prev, mix, o);
    }
}

/// `1 − v`: converts the v4/v5 `time_mix` (weight of the current token) into the weight of
/// the previous token that [`token_shift`] takes.
pub(crate) fn one_minus(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|m| 1.0 - m).collect()
}

/// The shape of `name` as a 2-D `[rows, cols]`, or a format error naming it.
pub(crate) fn shape2(rd: &WeightReader, name: &str) -> Result<(usize, usize)> {
    match rd.shape(name)?[..] {
        [r, c] => Ok((r, c)),
        ref s => Err(Error::format(format!("{}: tensor '{name}' has shape {s:?}, expected 2-D", rd.file_name()))),
    }
}

/// x[i] = norm(emb[tokens[i]]) for every token, `x` being [t, C].
pub(crate) fn embed(emb: &Matrix, tokens: &[u32], x: &mut [f32], norm: impl Fn(&[f32], &mut [f32])) {
    let c = emb.cols;
    let mut row = vec![0f32; c];
    for (&tok, xi) in tokens.iter().zip(x.chunks_exact_mut(c)) {
        emb.row_to_f32(tok as usize, &mut row);
        norm(&row, xi);
    }
}

/// Logits `head · norm(x)` for the last of the `t` rows of `x`, or for all of them when
/// `out` holds `t · V` floats (the [`Architecture::forward`](super::Architecture::forward) contract).
pub(crate) fn head_logits(
    head: &Matrix,
    x: &[f32],
    t: usize,
    out: Option<&mut [f32]>,
    norm: impl Fn(&[f32], &mut [f32]),
) {
    let Some(out) = out else { return };
    let (c, v) = (head.cols, head.rows);
    let first = if out.len() == t * v && t > 1 { 0 } else { t - 1 };
    let m = t - first;
    let mut xl = vec![0f32; m * c];
    for (xi, oi) in x[first * c..t * c].chunks_exact(c).zip(xl.chunks_exact_mut(c)) {
        norm(xi, oi);
    }
    matmul(head, &xl, m, &mut out[..m * v]);
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
    /// Reads `{p}.key/receptance/value.weight` (F from `key`'s rows) and the two mixes, given as
    /// the previous token's weight.
    pub fn load(rd: &WeightReader, p: &str, c: usize, mix_k: Vec<f32>, mix_r: Vec<f32>) -> Result<ChannelMix> {
        let (f, _) = shape2(rd, &format!("{p}.key.weight"))?;
        Ok(ChannelMix {
            mix_k,
            mix_r,
            key: rd.matrix(&format!("{p}.key.weight"), f, c)?,
            receptance: rd.matrix(&format!("{p}.receptance.weight"), c, c)?,
            value: rd.matrix(&format!("{p}.value.weight"), c, f)?,
        })
    }

    /// Bytes of weights read per token.
    pub fn n_bytes(&self) -> usize {
        self.key.n_bytes() + self.receptance.n_bytes() + self.value.n_bytes()
    }

    /// Runs the channel mix over `t` tokens of `x` ([t, C]), `ffn_x` ([C]) being the state
    /// (the previous token's ln2 output), updated to the last token's.
    pub fn forward(&self, ln2: &Norm, ffn_x: &mut [f32], x: &mut [f32], t: usize) {
        let c = ffn_x.len();
        // 1. xn = ln2(x); kx, rx = token shifts of xn.
        let mut xn = vec![0f32; t * c];
        ln2.layer_norm_rows(x, &mut xn);
        let (mut kx, mut rx) = (vec![0f32; t * c], vec![0f32; t * c]);
        shift_rows(&xn, ffn_x, &self.mix_k, &mut kx);
        shift_rows(&xn, ffn_x, &self.mix_r, &mut rx);
        ffn_x.copy_from_slice(&xn[(t - 1) * c..]);
        // 2. h = relu(K·kx)²;  r = sigmoid(R·rx);  x += r ⊙ (V·h).
        let mut h = vec![0f32; t * self.key.rows];
        matmul(&self.key, &kx, t, &mut h);
        h.iter_mut().for_each(|v| *v = v.max(0.0) * v.max(0.0));
        matmul(&self.receptance, &rx, t, &mut xn);
        matmul(&self.value, &h, t, &mut kx);
        for ((x, r), v) in x.iter_mut().zip(&xn).zip(&kx) {
            *x += sigmoid(*r) * v;
        }
    }
}

/// The RWKV v5.2/v6 WKV recurrence over `t` tokens for all heads, then the per-head
/// GroupNorm (`ln_x`, eps 64e-5) and the gate.
///
/// Per head, state S is N×N indexed [key i, value j]:
/// `y_j = Σ_i r_i (u_i k_i v_j + S_ij)`;  `S_ij ← k_i v_j + w_i S_ij`.
/// `r`, `k`, `v`, `g` (already silu'd) are [t, C]; `w` is the decay factor, [t, C] (v6) or
/// [C] (v5.2, the same every token); `u` (time_faaaa) is [C]. Writes `y` [t, C].
#[allow(clippy::too_many_arguments)]
pub(crate) fn wkv5(
    state: &mut [f32],
    n_head: usize,
    r: &[f32],
    k: &[f32],
    v: &[f32],
    w: &[f32],
    u: &[f32],
    g: &[f32],
    ln_x: &Norm,
    t: usize,
    y: &mut [f32],
) {
    const GN_EPS: f32 = 64e-5;
    let c = u.len();
    let n = c / n_head;
    let w_stride = if w.len() == c { 0 } else { c };
    let mut yh = vec![0f32; t * c];
    let head = |h: usize, s: &mut [f32], yh: &mut [f32]| {
        let at = |i: usize| i * c + h * n..i * c + (h + 1) * n;
        let (lw, lb) = (&ln_x.w[h * n..(h + 1) * n], &ln_x.b[h * n..(h + 1) * n]);
        let uh = &u[h * n..(h + 1) * n];
        for (i, y) in yh.chunks_exact_mut(n).enumerate() {
            let (r, k, v) = (&r[at(i)], &k[at(i)], &v[at(i)]);
            let w = &w[i * w_stride + h * n..i * w_stride + (h + 1) * n];
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
            kernels::group_norm(y, 1, lw, lb, GN_EPS);
            for (y, g) in y.iter_mut().zip(&g[at(i)]) {
                *y *= g;
            }
        }
    };
    if t * n_head * n * n >= 1 << 16 && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        state.par_chunks_mut(n * n).zip(yh.par_chunks_mut(t * n)).enumerate().for_each(|(h, (s, yh))| head(h, s, yh));
    } else {
        for (h, (s, yh)) in state.chunks_mut(n * n).zip(yh.chunks_mut(t * n)).enumerate() {
            head(h, s, yh);
        }
    }
    // yh is [H, t, N]; y is [t, C].
    for h in 0..n_head {
        for i in 0..t {
            y[i * c + h * n..i * c + (h + 1) * n].copy_from_slice(&yh[(h * t + i) * n..(h * t + i + 1) * n]);
        }
    }
}
