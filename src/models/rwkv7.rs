//! RWKV-7 "Goose" (`x070`): B. Peng et al., "RWKV-7 Goose with Expressive Dynamic State
//! Evolution", 2025. The math of BlinkDL's `rwkv.model.RWKV_x070` (pip `rwkv` 0.8.32).
//!
//! Official checkpoint layout (`emb.weight`, `blocks.N.{ln0,ln1,ln2}`, `blocks.N.att.*`,
//! `blocks.N.ffn.*`, `ln_out`, `head.weight`); every size is read from tensor shapes.

use super::{count_layers, count_params, Architecture, Family, ModelInfo};
use crate::error::{Error, Result};
use crate::format::{SafetensorsFile, WeightReader};
use crate::kernels::{self, group_norm, l2_normalize, layer_norm, matmul, sigmoid, token_shift};
use crate::tensor::Matrix;

/// LayerNorm epsilon of ln0/ln1/ln2/ln_out.
const LN_EPS: f32 = 1e-5;
/// GroupNorm epsilon of `att.ln_x`: 1e-5 × head_size_divisor² (divisor 8).
const GN_EPS: f32 = 64e-5;
/// e^{-0.5} as the reference writes it: the decay is exp(-0.606531 · sigmoid(·)) ∈ (0.545, 1).
const DECAY_SCALE: f32 = 0.606531;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of an RWKV-7 model, all read from tensor shapes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of blocks (1 + largest `blocks.N`).
    pub n_layer: usize,
    /// C: residual width (`emb.weight` columns).
    pub n_embd: usize,
    /// V: vocabulary (`emb.weight` rows).
    pub n_vocab: usize,
    /// H: heads (`att.r_k` rows).
    pub n_head: usize,
    /// N: head size (`att.r_k` columns); C = H·N.
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

/// LayerNorm / GroupNorm affine parameters, each [C].
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

/// A low-rank pair used as `(x @ W1) @ W2`, stored here as two `[out, in]` matrices.
struct Lora {
    /// [D, C] (checkpoint `*1` is [C, D], transposed at load).
    down: Matrix,
    /// [C, D] (checkpoint `*2` is [D, C], transposed at load).
    up: Matrix,
}

/// One RWKV-7 block.
struct Block {
    /// ln1, ln2: [C].
    ln1: Norm,
    ln2: Norm,
    /// Token-shift mixes x_r, x_w, x_k, x_v, x_a, x_g: each [C].
    x_r: Vec<f32>,
    x_w: Vec<f32>,
    x_k: Vec<f32>,
    x_v: Vec<f32>,
    x_a: Vec<f32>,
    x_g: Vec<f32>,
    /// Decay bias w0, in-context learning-rate bias a0: [C].
    w0: Vec<f32>,
    a0: Vec<f32>,
    /// Value-residual bias v0: [C] (unused, and possibly absent, in block 0).
    v0: Option<Vec<f32>>,
    /// k_k (key normalization mix), k_a (key/learning-rate mix): [C].
    k_k: Vec<f32>,
    k_a: Vec<f32>,
    /// r_k: per-head bonus [H, N] flattened to [C].
    r_k: Vec<f32>,
    /// Low-rank paths: decay (w1/w2), learning rate (a1/a2), value residual (v1/v2), gate (g1/g2).
    w_lora: Lora,
    a_lora: Lora,
    v_lora: Option<Lora>,
    g_lora: Lora,
    /// receptance, key, value, output: [C, C].
    receptance: Matrix,
    key: Matrix,
    value: Matrix,
    output: Matrix,
    /// ln_x GroupNorm (H groups): [C].
    ln_x: Norm,
    /// Channel mix: ffn.x_k [C], ffn.key [F, C], ffn.value [C, F].
    ffn_x_k: Vec<f32>,
    ffn_key: Matrix,
    ffn_value: Matrix,
}

/// A loaded RWKV-7 model.
pub struct Rwkv7 {
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

impl Rwkv7 {
    /// Reads an official-layout RWKV-7 checkpoint; every shape is checked against the sizes
    /// read from `emb.weight`, `blocks.0.att.r_k`, `blocks.0.ffn.key.weight` and the LoRAs.
    pub fn load(file: &SafetensorsFile) -> Result<Rwkv7> {
        let rd = WeightReader::new(file);
        let emb_shape = rd.shape("emb.weight")?;
        if emb_shape.len() != 2 {
            return Err(Error::format(format!(
                "{}: tensor 'emb.weight' has shape {emb_shape:?}, expected [vocab, width]",
                file.name
            )));
        }
        let (n_vocab, c) = (emb_shape[0], emb_shape[1]);
        let rk = rd.shape("blocks.0.att.r_k")?;
        let (n_head, head_size) = match rk[..] {
            [h, n] if h * n == c => (h, n),
            _ => {
                return Err(Error::format(format!(
                    "{}: tensor 'blocks.0.att.r_k' has shape {rk:?}, expected [heads, head_size] with heads*head_size = {c}",
                    file.name
                )))
            }
        };
        let n_ffn = rd.shape("blocks.0.ffn.key.weight")?[0];
        let n_layer = count_layers(file, "blocks.");
        let cfg = Config { n_layer, n_embd: c, n_vocab, n_head, head_size, n_ffn };

        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm { w: rd.vector(&format!("{p}.weight"), c)?, b: rd.vector(&format!("{p}.bias"), c)? })
        };
        // A LoRA's rank is whatever `{p}1` holds: [C, D].
        let lora = |p: &str| -> Result<Lora> {
            let s = rd.shape(&format!("{p}1"))?;
            let d = if s.len() == 2 && s[0] == c {
                s[1]
            } else {
                return Err(Error::format(format!(
                    "{}: tensor '{p}1' has shape {s:?}, expected [{c}, rank]",
                    file.name
                )));
            };
            Ok(Lora {
                down: rd.matrix_transposed(&format!("{p}1"), d, c)?,
                up: rd.matrix_transposed(&format!("{p}2"), c, d)?,
            })
        };
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let a = format!("blocks.{i}.att");
            let f = format!("blocks.{i}.ffn");
            let vec = |n: &str| rd.vector(&format!("{a}.{n}"), c);
            let mat = |n: &str, r: usize, k: usize| rd.matrix(n, r, k);
            blocks.push(Block {
                ln1: norm(&format!("blocks.{i}.ln1"))?,
                ln2: norm(&format!("blocks.{i}.ln2"))?,
                x_r: vec("x_r")?,
                x_w: vec("x_w")?,
                x_k: vec("x_k")?,
                x_v: vec("x_v")?,
                x_a: vec("x_a")?,
                x_g: vec("x_g")?,
                w0: vec("w0")?,
                a0: vec("a0")?,
                // Block 0 never uses v0/v1/v2; files may or may not carry them.
                v0: if i == 0 { None } else { Some(vec("v0")?) },
                k_k: vec("k_k")?,
                k_a: vec("k_a")?,
                r_k: rd.floats(&format!("{a}.r_k"), &[n_head, head_size])?,
                w_lora: lora(&format!("{a}.w"))?,
                a_lora: lora(&format!("{a}.a"))?,
                v_lora: if i == 0 { None } else { Some(lora(&format!("{a}.v"))?) },
                g_lora: lora(&format!("{a}.g"))?,
                receptance: mat(&format!("{a}.receptance.weight"), c, c)?,
                key: mat(&format!("{a}.key.weight"), c, c)?,
                value: mat(&format!("{a}.value.weight"), c, c)?,
                output: mat(&format!("{a}.output.weight"), c, c)?,
                ln_x: norm(&format!("{a}.ln_x"))?,
                ffn_x_k: rd.vector(&format!("{f}.x_k"), c)?,
                ffn_key: mat(&format!("{f}.key.weight"), n_ffn, c)?,
                ffn_value: mat(&format!("{f}.value.weight"), c, n_ffn)?,
            });
        }
        let emb = rd.matrix("emb.weight", n_vocab, c)?;
        let head = rd.matrix("head.weight", n_vocab, c)?;
        let bytes_per_token = blocks
            .iter()
            .map(|b| {
                [&b.receptance, &b.key, &b.value, &b.output, &b.ffn_key, &b.ffn_value]
                    .iter()
                    .map(|m| m.n_bytes())
                    .sum::<usize>()
                    + [&b.w_lora, &b.a_lora, &b.g_lora]
                        .iter()
                        .chain(b.v_lora.as_ref().iter())
                        .map(|l| l.down.n_bytes() + l.up.n_bytes())
                        .sum::<usize>()
            })
            .sum::<usize>()
            + head.n_bytes()
            + emb.n_bytes() / n_vocab.max(1);
        let info = ModelInfo {
            family: Family::Rwkv,
            version: 7,
            arch_name: "rwkv7",
            n_layer,
            n_embd: c,
            n_vocab,
            n_head,
            head_size,
            n_params: count_params(file),
            weight_dtype: blocks.first().map_or(emb.dtype(), |b| b.key.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        Ok(Rwkv7 { info, ln0: norm("blocks.0.ln0")?, ln_out: norm("ln_out")?, cfg, emb, blocks, head })
    }

    /// The sizes read from the checkpoint.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

/// Per-call activations, `[T, ·]` row-major.
struct Scratch {
    xn: Vec<f32>,
    mixed: [Vec<f32>; 6],
    r: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
    a: Vec<f32>,
    g: Vec<f32>,
    low: Vec<f32>,
    y: Vec<f32>,
    /// Normalized keys kk: [T, C].
    kk: Vec<f32>,
    /// WKV output per head: [H, T, N].
    yh: Vec<f32>,
    out: Vec<f32>,
    hidden: Vec<f32>,
    v_first: Vec<f32>,
}

impl Rwkv7 {
    /// `y = up(act(down(x)))` for `t` tokens; `act` applied to the rank-D middle.
    fn lora(l: &Lora, x: &[f32], t: usize, low: &mut Vec<f32>, y: &mut [f32], act: fn(f32) -> f32) {
        low.resize(t * l.down.rows, 0.0);
        matmul(&l.down, x, t, low);
        low.iter_mut().for_each(|v| *v = act(*v));
        matmul(&l.up, low, t, y);
    }

    /// The time mix (attention) of block `blk` for `t` tokens; adds its output to `x`.
    fn time_mix(&self, li: usize, blk: &Block, st: &mut [f32], x: &mut [f32], t: usize, s: &mut Scratch) {
        let Config { n_embd: c, n_head: nh, head_size: n, .. } = self.cfg;
        let (att_x, rest) = st.split_at_mut(c);
        let wkv = &mut rest[..nh * n * n];

        // 1. xn = ln1(x); token shift against the previous token's xn (att_x for the first).
        for i in 0..t {
            layer_norm(&x[i * c..(i + 1) * c], &blk.ln1.w, &blk.ln1.b, LN_EPS, &mut s.xn[i * c..(i + 1) * c]);
        }
        let mixes = [&blk.x_r, &blk.x_w, &blk.x_k, &blk.x_v, &blk.x_a, &blk.x_g];
        for i in 0..t {
            let cur = &s.xn[i * c..(i + 1) * c];
            let prev = if i == 0 { &att_x[..] } else { &s.xn[(i - 1) * c..i * c] };
            for (m, out) in mixes.iter().zip(s.mixed.iter_mut()) {
                token_shift(cur, prev, m, &mut out[i * c..(i + 1) * c]);
            }
        }
        att_x.copy_from_slice(&s.xn[(t - 1) * c..t * c]);
        let [xr, xw, xk, xv, xa, xg] = &s.mixed;

        // 2. r = Wr·xr, k = Wk·xk, v = Wv·xv.
        matmul(&blk.receptance, xr, t, &mut s.r);
        matmul(&blk.key, xk, t, &mut s.k);
        matmul(&blk.value, xv, t, &mut s.v);

        // 3. w = exp(-e^{-1/2} · sigmoid(w0 + tanh(xw·w1)·w2)).
        Self::lora(&blk.w_lora, xw, t, &mut s.low, &mut s.w, f32::tanh);
        for (i, w) in s.w.iter_mut().enumerate() {
            *w = (-DECAY_SCALE * sigmoid(blk.w0[i % c] + *w)).exp();
        }
        // 4. a = sigmoid(a0 + (xa·a1)·a2);  g = sigmoid(xg·g1)·g2.
        Self::lora(&blk.a_lora, xa, t, &mut s.low, &mut s.a, |v| v);
        for (i, a) in s.a.iter_mut().enumerate() {
            *a = sigmoid(blk.a0[i % c] + *a);
        }
        Self::lora(&blk.g_lora, xg, t, &mut s.low, &mut s.g, sigmoid);

        // 5. Value residual: block 0 sets v_first = v; later blocks mix towards it with
        //    gate sigmoid(v0 + (xv·v1)·v2).
        match (&blk.v_lora, &blk.v0) {
            (Some(vl), Some(v0)) if li > 0 => {
                Self::lora(vl, xv, t, &mut s.low, &mut s.y, |v| v);
                for i in 0..t * c {
                    let gate = sigmoid(v0[i % c] + s.y[i]);
                    s.v[i] += (s.v_first[i] - s.v[i]) * gate;
                }
            }
            _ => s.v_first.copy_from_slice(&s.v),
        }

        // 6. Per token: kk = normalize_per_head(k ⊙ k_k);  k ← k ⊙ (1 + (a − 1) ⊙ k_a).
        let kk = &mut s.kk;
        for i in 0..t {
            let span = i * c..(i + 1) * c;
            let (k, a, kk) = (&mut s.k[span.clone()], &s.a[span.clone()], &mut kk[span]);
            for j in 0..c {
                kk[j] = k[j] * blk.k_k[j];
                k[j] *= 1.0 + (a[j] - 1.0) * blk.k_a[j];
            }
            l2_normalize(kk, nh, 1e-12);
        }
        // 7. Per head (heads are independent, so they run in parallel, each over all tokens):
        //    S [N(value), N(key)] ← S·diag(w) + (S·(−kk))·(kk ⊙ a)ᵀ + v·kᵀ;  y = S·r;
        //    y = GroupNorm(y)·ln_x + bias (one group per head);  y += (Σ r ⊙ k ⊙ r_k)·v;  y ⊙= g.
        let (r, k, v, w, a, g, kk) = (&s.r, &s.k, &s.v, &s.w, &s.a, &s.g, &s.kk);
        s.yh.resize(t * c, 0.0);
        let head = |h: usize, state: &mut [f32], yh: &mut [f32]| {
            let hs = |i: usize| i * c + h * n..i * c + (h + 1) * n;
            let (lw, lb) = (&blk.ln_x.w[h * n..(h + 1) * n], &blk.ln_x.b[h * n..(h + 1) * n]);
            let rk = &blk.r_k[h * n..(h + 1) * n];
            for (i, y) in yh.chunks_mut(n).enumerate() {
                let (r, k, v) = (&r[hs(i)], &k[hs(i)], &v[hs(i)]);
                wkv_head(state, r, &w[hs(i)], k, v, &kk[hs(i)], &a[hs(i)], y);
                group_norm(y, 1, lw, lb, GN_EPS);
                let bonus: f32 = (0..n).map(|j| r[j] * k[j] * rk[j]).sum();
                for (j, (y, g)) in y.iter_mut().zip(&g[hs(i)]).enumerate() {
                    *y = (*y + bonus * v[j]) * g;
                }
            }
        };
        if t * nh * n * n >= 1 << 16 && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            wkv.par_chunks_mut(n * n)
                .zip(s.yh.par_chunks_mut(t * n))
                .enumerate()
                .for_each(|(h, (state, yh))| head(h, state, yh));
        } else {
            for (h, (state, yh)) in wkv.chunks_mut(n * n).zip(s.yh.chunks_mut(t * n)).enumerate() {
                head(h, state, yh);
            }
        }
        // yh is [H, T, N]; y is [T, C].
        for h in 0..nh {
            for i in 0..t {
                s.y[i * c + h * n..i * c + (h + 1) * n].copy_from_slice(&s.yh[(h * t + i) * n..(h * t + i + 1) * n]);
            }
        }

        // 8. x += Wo·y.
        matmul(&blk.output, &s.y, t, &mut s.out);
        kernels::add_assign(x, &s.out);
    }

    /// The channel mix (FFN) of block `blk`: x += Wv·relu(Wk·shift(ln2(x)))².
    fn channel_mix(&self, blk: &Block, st: &mut [f32], x: &mut [f32], t: usize, s: &mut Scratch) {
        let c = self.cfg.n_embd;
        let ffn_x = &mut st[c + self.cfg.n_head * self.cfg.head_size * self.cfg.head_size..][..c];
        for i in 0..t {
            layer_norm(&x[i * c..(i + 1) * c], &blk.ln2.w, &blk.ln2.b, LN_EPS, &mut s.xn[i * c..(i + 1) * c]);
        }
        let kx = &mut s.mixed[0];
        for i in 0..t {
            let prev = if i == 0 { &ffn_x[..] } else { &s.xn[(i - 1) * c..i * c] };
            token_shift(&s.xn[i * c..(i + 1) * c], prev, &blk.ffn_x_k, &mut kx[i * c..(i + 1) * c]);
        }
        ffn_x.copy_from_slice(&s.xn[(t - 1) * c..t * c]);
        s.hidden.resize(t * self.cfg.n_ffn, 0.0);
        matmul(&blk.ffn_key, kx, t, &mut s.hidden);
        s.hidden.iter_mut().for_each(|h| *h = h.max(0.0) * h.max(0.0));
        matmul(&blk.ffn_value, &s.hidden, t, &mut s.out);
        kernels::add_assign(x, &s.out);
    }
}

/// One head's WKV step on its state `s` [N(value), N(key)], writing `y = S·r`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn wkv_head(s: &mut [f32], r: &[f32], w: &[f32], k: &[f32], v: &[f32], kk: &[f32], a: &[f32], y: &mut [f32]) {
    let n = r.len();
    let mut b = [0f32; 256];
    let b = if n <= 256 { &mut b[..n] } else { return wkv_head_large(s, r, w, k, v, kk, a, y) };
    for j in 0..n {
        b[j] = kk[j] * a[j];
    }
    for (i, row) in s.chunks_mut(n).enumerate() {
        // sa = S[i,:]·(−kk)
        let sa: f32 = -row.iter().zip(kk).map(|(s, kk)| s * kk).sum::<f32>();
        let vi = v[i];
        let mut acc = 0f32;
        for j in 0..n {
            let nv = row[j] * w[j] + sa * b[j] + vi * k[j];
            row[j] = nv;
            acc += nv * r[j];
        }
        y[i] = acc;
    }
}

/// [`wkv_head`] for head sizes above 256 (heap scratch).
#[allow(clippy::too_many_arguments)]
#[cold]
fn wkv_head_large(s: &mut [f32], r: &[f32], w: &[f32], k: &[f32], v: &[f32], kk: &[f32], a: &[f32], y: &mut [f32]) {
    let n = r.len();
    let b: Vec<f32> = (0..n).map(|j| kk[j] * a[j]).collect();
    for (i, row) in s.chunks_mut(n).enumerate() {
        let sa: f32 = -row.iter().zip(kk).map(|(s, kk)| s * kk).sum::<f32>();
        let mut acc = 0f32;
        for j in 0..n {
            let nv = row[j] * w[j] + sa * b[j] + v[i] * k[j];
            row[j] = nv;
            acc += nv * r[j];
        }
        y[i] = acc;
    }
}

impl Architecture for Rwkv7 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Layout: for each layer, att_x [C] | wkv [H, N(value), N(key)] | ffn_x [C].
    fn state_len(&self) -> usize {
        self.cfg.n_layer * self.cfg.layer_state_len()
    }

    fn forward(&self, state: &mut [f32], tokens: &[u32], logits: Option<&mut [f32]>) {
        let Config { n_embd: c, n_vocab, .. } = self.cfg;
        let t = tokens.len();
        if t == 0 {
            return;
        }
        let z = || vec![0f32; t * c];
        let mut s = Scratch {
            xn: z(),
            mixed: [z(), z(), z(), z(), z(), z()],
            r: z(),
            k: z(),
            v: z(),
            w: z(),
            a: z(),
            g: z(),
            low: Vec::new(),
            y: z(),
            kk: z(),
            yh: Vec::new(),
            out: z(),
            hidden: Vec::new(),
            v_first: z(),
        };
        // 0. x = ln0(emb[token]).
        let mut x = z();
        let mut row = vec![0f32; c];
        for (i, &tok) in tokens.iter().enumerate() {
            self.emb.row_to_f32(tok as usize, &mut row);
            layer_norm(&row, &self.ln0.w, &self.ln0.b, LN_EPS, &mut x[i * c..(i + 1) * c]);
        }
        let stride = self.cfg.layer_state_len();
        for (li, blk) in self.blocks.iter().enumerate() {
            let st = &mut state[li * stride..(li + 1) * stride];
            self.time_mix(li, blk, st, &mut x, t, &mut s);
            self.channel_mix(blk, st, &mut x, t, &mut s);
        }
        // 9. logits = head · ln_out(x), for the last token or for all of them.
        if let Some(out) = logits {
            let all = out.len() == t * n_vocab && t > 1;
            let first = if all { 0 } else { t - 1 };
            let m = t - first;
            let mut xl = vec![0f32; m * c];
            for i in 0..m {
                let xi = &x[(first + i) * c..(first + i + 1) * c];
                layer_norm(xi, &self.ln_out.w, &self.ln_out.b, LN_EPS, &mut xl[i * c..(i + 1) * c]);
            }
            matmul(&self.head, &xl, m, &mut out[..m * n_vocab]);
        }
    }
}
