//! Mamba-2: T. Dao and A. Gu, "Transformers are SSMs: Generalized Models and Efficient
//! Algorithms Through Structured State Space Duality", ICML 2024. The math of transformers'
//! `Mamba2ForCausalLM` (`torch_forward`; its cached single-token path, which the chunked SSD
//! prefill equals).
//!
//! transformers checkpoint layout: `backbone.embeddings.weight` (or the original
//! `backbone.embedding.weight`), `backbone.layers.N.norm.weight`,
//! `backbone.layers.N.mixer.{in_proj, conv1d, dt_bias, A_log, D, norm, out_proj}`,
//! `backbone.norm_f.weight`, `lm_head.weight` (tied to the embedding when absent).
//!
//! Sizes from shapes: d_inner Di from `out_proj`, conv_dim from `conv1d`, heads H from
//! `A_log [H]`, head dim P = Di/H, and G·S = (conv_dim − Di)/2. Shapes cannot split G·S into
//! groups G and state size S: that comes from `config.json` beside the file (`n_groups`, or
//! `state_size`). **Without a config, n_groups = 1** (S = G·S), the value of every published
//! Mamba-2 language model. A config must agree with the shapes; its `layer_norm_epsilon`
//! (default 1e-5) and `time_step_limit` (default (0, ∞); a bare `Infinity` or
//! `{"__float__": "Infinity"}` is accepted) are used.

use super::common::{embed, head_logits, shape2};
use super::mamba1::embedding_key;
use super::{count_layers, count_params, Architecture, Family, ModelInfo};
use crate::error::{Error, Result};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::ssm::decay_update_dot;
use crate::kernels::{add_assign, conv1d_causal_step, matmul, rms_norm, silu, softplus};
use crate::tensor::Matrix;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of a Mamba-2 model: read from tensor shapes, except the split of G·S (see the
/// module doc).
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of layers (1 + largest `backbone.layers.N`).
    pub n_layer: usize,
    /// d: residual width (embedding columns).
    pub d_model: usize,
    /// V: vocabulary (embedding rows).
    pub n_vocab: usize,
    /// Di: inner width (`out_proj` columns) = H·P.
    pub d_inner: usize,
    /// H: heads (`A_log` length).
    pub n_head: usize,
    /// P: head dim, Di / H.
    pub head_dim: usize,
    /// G: groups sharing B and C (config `n_groups`; 1 without a config).
    pub n_groups: usize,
    /// S: SSM state size per group.
    pub d_state: usize,
    /// K: causal convolution width (`conv1d.weight` last dimension).
    pub d_conv: usize,
    /// Conv channels: Di + 2·G·S (`conv1d.weight` rows).
    pub conv_dim: usize,
    /// RMSNorm epsilon of the layer norms and the gated norm (default 1e-5).
    pub eps: f32,
    /// dt is clamped into this range after softplus (default (0, ∞): no clamp).
    pub dt_limit: (f32, f32),
}

impl Config {
    /// f32 elements of one layer's state: conv window [conv_dim, K], SSM state [H, P, S].
    pub fn layer_state_len(&self) -> usize {
        self.conv_dim * self.d_conv + self.n_head * self.head_dim * self.d_state
    }
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One Mamba-2 layer (RMSNorm + mixer).
struct Layer {
    /// norm.weight: [d].
    norm: Vec<f32>,
    /// in_proj.weight: [Di + conv_dim + H, d]; output [z (Di), xBC (conv_dim), dt (H)].
    in_proj: Matrix,
    /// conv1d.weight [conv_dim, 1, K] squeezed to [conv_dim, K]; conv1d.bias [conv_dim]
    /// (zeros when absent).
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    /// dt_bias: [H].
    dt_bias: Vec<f32>,
    /// A = −exp(A_log): [H].
    a: Vec<f32>,
    /// D (skip): [H].
    d: Vec<f32>,
    /// Gated RMSNorm weight (mixer.norm.weight): [Di].
    gn: Vec<f32>,
    /// out_proj.weight: [d, Di].
    out_proj: Matrix,
}

/// A loaded Mamba-2 model.
pub struct Mamba2 {
    info: ModelInfo,
    cfg: Config,
    /// Embedding: [V, d].
    emb: Matrix,
    layers: Vec<Layer>,
    /// norm_f.weight: [d].
    norm_f: Vec<f32>,
    /// lm_head.weight [V, d], or None when tied to the embedding.
    lm_head: Option<Matrix>,
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Mamba2 {
    /// Reads a transformers-layout Mamba-2 checkpoint; every shape is checked against the
    /// sizes read from the embedding and layer 0, `config` (see the module doc) supplies
    /// n_groups and must agree with the shapes.
    pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Mamba2> {
        let rd = WeightReader::new(file);
        let fail = |m: String| Err(Error::format(format!("{}: {m}", file.name)));
        let emb_key = embedding_key(&rd);
        let (n_vocab, dm) = shape2(&rd, emb_key)?;
        let p0 = "backbone.layers.0.mixer";
        let at = |t: &str| format!("{p0}.{t}");
        let (_, d_inner) = shape2(&rd, &at("out_proj.weight"))?;
        let n_head = match rd.shape(&at("A_log"))?[..] {
            [h] if h > 0 => h,
            [] => 1,
            ref s => return fail(format!("tensor '{}' has shape {s:?}, expected [heads]", at("A_log"))),
        };
        let conv_t = rd.tensor(&at("conv1d.weight"))?;
        let (conv_dim, d_conv) = match conv_t.shape[..] {
            [ch, 1, k] if k > 0 => (ch, k),
            ref s => {
                return fail(format!("tensor '{}' has shape {s:?}, expected [channels, 1, width]", at("conv1d.weight")))
            }
        };
        let (proj_rows, _) = shape2(&rd, &at("in_proj.weight"))?;
        if d_inner % n_head != 0 || conv_dim <= d_inner || (conv_dim - d_inner) % 2 != 0 {
            return fail(format!(
                "layer 0 sizes disagree: d_inner {d_inner} (out_proj), {n_head} heads (A_log), conv_dim {conv_dim} \
                 (conv1d); expected d_inner = heads·head_dim and conv_dim = d_inner + 2·n_groups·d_state"
            ));
        }
        if proj_rows != d_inner + conv_dim + n_head {
            return Err(Error::unsupported(format!(
                "{}: tensor '{}' has {proj_rows} rows, expected d_inner + conv_dim + heads = {} (an extra gated MLP \
                 in in_proj is not supported)",
                file.name,
                at("in_proj.weight"),
                d_inner + conv_dim + n_head
            )));
        }
        let gs = (conv_dim - d_inner) / 2;
        let n_layer = count_layers(file, "backbone.layers.");
        let (mut n_groups, mut eps, mut dt_limit) = (1, 1e-5f32, (0f32, f32::INFINITY));
        if let Some(cf) = config {
            cf.expect("hidden_size", dm, &file.name, emb_key)?;
            cf.expect("num_heads", n_head, &file.name, &at("A_log"))?;
            cf.expect("head_dim", d_inner / n_head, &file.name, &at("out_proj.weight"))?;
            cf.expect("conv_kernel", d_conv, &file.name, &at("conv1d.weight"))?;
            cf.expect("num_hidden_layers", n_layer, &file.name, "backbone.layers.N")?;
            if let Some(e) = cf.usize("expand") {
                cf.expect("hidden_size", d_inner / e.max(1), &file.name, &at("out_proj.weight"))?;
            }
            n_groups = match (cf.usize("n_groups"), cf.usize("state_size")) {
                (Some(g), _) => g,
                (None, Some(s)) if s > 0 && gs % s == 0 => gs / s,
                _ => 1,
            };
            if n_groups == 0 || gs % n_groups != 0 || n_head % n_groups != 0 {
                return Err(Error::format(format!(
                    "{}: 'n_groups' is {n_groups}, but {} has {n_head} heads (A_log) and n_groups·d_state = {gs} \
                     (conv1d): n_groups must divide both",
                    cf.name, file.name
                )));
            }
            cf.expect("state_size", gs / n_groups, &file.name, &at("conv1d.weight"))?;
            eps = cf.f64("layer_norm_epsilon")?.unwrap_or(1e-5) as f32;
            if let Some(lim) = cf.f64_list("time_step_limit")? {
                if let [lo, hi] = lim[..] {
                    dt_limit = (lo as f32, hi as f32);
                }
            }
        }
        let d_state = gs / n_groups;
        let head_dim = d_inner / n_head;
        let cfg = Config {
            n_layer,
            d_model: dm,
            n_vocab,
            d_inner,
            n_head,
            head_dim,
            n_groups,
            d_state,
            d_conv,
            conv_dim,
            eps,
            dt_limit,
        };

        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let m = |n: &str| format!("backbone.layers.{i}.mixer.{n}");
            let conv_b =
                if rd.has(&m("conv1d.bias")) { rd.vector(&m("conv1d.bias"), conv_dim)? } else { vec![0.0; conv_dim] };
            for bias in ["in_proj.bias", "out_proj.bias"] {
                if rd.has(&m(bias)) {
                    return Err(Error::unsupported(format!(
                        "{}: tensor '{}' (use_bias = true) is not supported",
                        file.name,
                        m(bias)
                    )));
                }
            }
            layers.push(Layer {
                norm: rd.vector(&format!("backbone.layers.{i}.norm.weight"), dm)?,
                in_proj: rd.matrix(&m("in_proj.weight"), proj_rows, dm)?,
                conv_w: rd.floats(&m("conv1d.weight"), &[conv_dim, 1, d_conv])?,
                conv_b,
                dt_bias: rd.vector(&m("dt_bias"), n_head)?,
                a: rd.vector(&m("A_log"), n_head)?.into_iter().map(|v| -v.exp()).collect(),
                d: rd.vector(&m("D"), n_head)?,
                gn: rd.vector(&m("norm.weight"), d_inner)?,
                out_proj: rd.matrix(&m("out_proj.weight"), dm, d_inner)?,
            });
        }
        let emb = rd.matrix(emb_key, n_vocab, dm)?;
        let lm_head = if rd.has("lm_head.weight") { Some(rd.matrix("lm_head.weight", n_vocab, dm)?) } else { None };
        let bytes_per_token = layers.iter().map(|l| l.in_proj.n_bytes() + l.out_proj.n_bytes()).sum::<usize>()
            + lm_head.as_ref().unwrap_or(&emb).n_bytes()
            + emb.n_bytes() / n_vocab.max(1);
        let info = ModelInfo {
            family: Family::Mamba,
            version: 2,
            arch_name: "mamba2",
            n_layer,
            n_embd: dm,
            n_vocab,
            n_head,
            head_size: head_dim,
            n_params: count_params(file),
            weight_dtype: layers.first().map_or(emb.dtype(), |l| l.in_proj.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        Ok(Mamba2 { info, norm_f: rd.vector("backbone.norm_f.weight", dm)?, cfg, emb, layers, lm_head })
    }

    /// The sizes read from the checkpoint (and its config).
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl Mamba2 {
    /// The mixer of layer `l` for `t` tokens on `x` ([t, d]): x += mixer(rms_norm(x)).
    fn mixer(&self, l: &Layer, st: &mut [f32], x: &mut [f32], t: usize) {
        let Config { d_model: dm, d_inner: di, n_head: nh, head_dim: np, n_groups: ng, d_state: ns, .. } = self.cfg;
        let Config { d_conv: k, conv_dim: cd, eps, dt_limit, .. } = self.cfg;
        let (conv, ssm) = st.split_at_mut(cd * k);
        let rows = l.in_proj.rows;

        // 1. xn = RMSNorm(x)·norm.weight.
        let mut xn = vec![0f32; t * dm];
        for (xi, oi) in x.chunks_exact(dm).zip(xn.chunks_exact_mut(dm)) {
            rms_norm(xi, &l.norm, eps, oi);
        }
        // 2. [z (Di), xBC (conv_dim), dt (H)] = in_proj·xn.
        let mut proj = vec![0f32; t * rows];
        matmul(&l.in_proj, &xn, t, &mut proj);
        // 3. xBC = silu(causal_conv1d(xBC) + bias), token by token; split [x (Di), B (G·S), C (G·S)].
        //    dt = clamp(softplus(dt + dt_bias), limit): [t, H].
        let mut xbc = vec![0f32; t * cd];
        let mut dt = vec![0f32; t * nh];
        for ((pi, xi), di_) in proj.chunks_exact(rows).zip(xbc.chunks_exact_mut(cd)).zip(dt.chunks_exact_mut(nh)) {
            conv1d_causal_step(conv, &pi[di..di + cd], &l.conv_w, &l.conv_b, xi);
            xi.iter_mut().for_each(|v| *v = silu(*v));
            for (h, d) in di_.iter_mut().enumerate() {
                *d = softplus(pi[di + cd + h] + l.dt_bias[h]).clamp(dt_limit.0, dt_limit.1);
            }
        }
        // 4. Per head h (independent: run in parallel, each over all tokens), group g = h / (H/G),
        //    state [P, S]:  h ← exp(dt·A_h)·h + dt·x_h B_gᵀ;  y_h = h·C_g + D_h·x_h.
        //    yh is head-major [H, t, P].
        let mut yh = vec![0f32; t * di];
        let heads_per_group = nh / ng;
        let head = |h: usize, s: &mut [f32], yh: &mut [f32]| {
            let g = h / heads_per_group;
            for (i, y) in yh.chunks_exact_mut(np).enumerate() {
                let row = &xbc[i * cd..(i + 1) * cd];
                let xh = &row[h * np..(h + 1) * np];
                let b = &row[di + g * ns..di + (g + 1) * ns];
                let c = &row[di + ng * ns + g * ns..di + ng * ns + (g + 1) * ns];
                let dth = dt[i * nh + h];
                let decay = (dth * l.a[h]).exp();
                for (p, (sp, yp)) in s.chunks_exact_mut(ns).zip(y.iter_mut()).enumerate() {
                    *yp = decay_update_dot(sp, decay, dth * xh[p], b, c) + l.d[h] * xh[p];
                }
            }
        };
        let ssm = &mut ssm[..nh * np * ns];
        if rayon::current_num_threads() > 1 && t * di * ns >= 1 << 15 {
            use rayon::prelude::*;
            ssm.par_chunks_mut(np * ns)
                .zip(yh.par_chunks_mut(t * np))
                .enumerate()
                .for_each(|(h, (s, y))| head(h, s, y));
        } else {
            for (h, (s, y)) in ssm.chunks_exact_mut(np * ns).zip(yh.chunks_exact_mut(t * np)).enumerate() {
                head(h, s, y);
            }
        }
        // 5. Gated RMSNorm: y = y ⊙ silu(z), then RMS-normalized within each of the G groups of
        //    Di/G channels, times mixer.norm.weight. y is [t, Di] (reusing xbc's first t·Di).
        let y = &mut xbc[..t * di];
        let gsz = di / ng;
        let mut tmp = vec![0f32; gsz];
        for i in 0..t {
            let yi = &mut y[i * di..(i + 1) * di];
            for h in 0..nh {
                yi[h * np..(h + 1) * np].copy_from_slice(&yh[(h * t + i) * np..(h * t + i + 1) * np]);
            }
            for (v, z) in yi.iter_mut().zip(&proj[i * rows..i * rows + di]) {
                *v *= silu(*z);
            }
            for (gi, grp) in yi.chunks_exact_mut(gsz).enumerate() {
                rms_norm(grp, &l.gn[gi * gsz..(gi + 1) * gsz], eps, &mut tmp);
                grp.copy_from_slice(&tmp);
            }
        }
        // 6. x += out_proj·y.
        matmul(&l.out_proj, y, t, &mut xn);
        add_assign(x, &xn);
    }
}

impl Architecture for Mamba2 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Layout: for each layer, conv [conv_dim, K] (the last K conv inputs per channel, oldest
    /// first; channels ordered x, B, C) | ssm [H, P, S].
    fn state_len(&self) -> usize {
        self.cfg.n_layer * self.cfg.layer_state_len()
    }

    fn forward(&self, state: &mut [f32], tokens: &[u32], logits: Option<&mut [f32]>) {
        let dm = self.cfg.d_model;
        let t = tokens.len();
        if t == 0 {
            return;
        }
        // 0. x = emb[token] (the residual stream, f32).
        let mut x = vec![0f32; t * dm];
        embed(&self.emb, tokens, &mut x, |r, o| o.copy_from_slice(r));
        let stride = self.cfg.layer_state_len();
        for (li, l) in self.layers.iter().enumerate() {
            self.mixer(l, &mut state[li * stride..(li + 1) * stride], &mut x, t);
        }
        // 7. logits = lm_head · RMSNorm(x)·norm_f, for the last token or for all of them.
        let head = self.lm_head.as_ref().unwrap_or(&self.emb);
        head_logits(head, &x, t, logits, |r, o| rms_norm(r, &self.norm_f, self.cfg.eps, o));
    }
}
