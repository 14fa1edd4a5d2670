//! Mamba (Mamba-1): A. Gu and T. Dao, "Mamba: Linear-Time Sequence Modeling with Selective
//! State Spaces", 2023. The math of transformers' `MambaForCausalLM` (the sequential
//! `slow_forward` path, equal to its cached single-token path).
//!
//! transformers checkpoint layout: `backbone.embeddings.weight` (`backbone.embedding.weight`
//! in the original `state-spaces` files is accepted too), `backbone.layers.N.norm.weight`,
//! `backbone.layers.N.mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}`,
//! `backbone.norm_f.weight`, and `lm_head.weight` — absent when tied to the embedding
//! (`tie_word_embeddings`, the usual case), present otherwise.
//!
//! Every size is read from tensor shapes (d_inner from `in_proj`, d_state from `A_log`,
//! dt_rank from `dt_proj`, d_conv from `conv1d`). A `config.json` beside the file is optional:
//! when present, its sizes must agree with the shapes, and its `layer_norm_epsilon` is used
//! (default 1e-5).

use super::common::{embed, head_logits, shape2};
use super::{count_layers, count_params, Architecture, Family, ModelInfo};
use crate::error::{Error, Result};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::ssm::scan_update_dot;
use crate::kernels::{add_assign, conv1d_causal_step, matmul, rms_norm, silu, softplus};
use crate::tensor::Matrix;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of a Mamba-1 model, all read from tensor shapes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of layers (1 + largest `backbone.layers.N`).
    pub n_layer: usize,
    /// d: residual width (embedding columns).
    pub d_model: usize,
    /// V: vocabulary (embedding rows).
    pub n_vocab: usize,
    /// Di: inner width (`in_proj` rows / 2).
    pub d_inner: usize,
    /// S: SSM state size per channel (`A_log` columns).
    pub d_state: usize,
    /// R: rank of the time step projection (`dt_proj` columns).
    pub dt_rank: usize,
    /// K: causal convolution width (`conv1d.weight` last dimension).
    pub d_conv: usize,
    /// RMSNorm epsilon (`layer_norm_epsilon`, default 1e-5).
    pub eps: f32,
}

impl Config {
    /// f32 elements of one layer's state: conv window [Di, K], SSM state [Di, S].
    pub fn layer_state_len(&self) -> usize {
        self.d_inner * (self.d_conv + self.d_state)
    }
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One Mamba-1 layer (RMSNorm + mixer).
struct Layer {
    /// norm.weight: [d].
    norm: Vec<f32>,
    /// in_proj.weight: [2·Di, d]; output [x (Di), z (Di)].
    in_proj: Matrix,
    /// conv1d.weight [Di, 1, K] squeezed to [Di, K]; conv1d.bias [Di] (zeros when absent).
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    /// x_proj.weight: [R + 2S, Di]; output [dt (R), B (S), C (S)].
    x_proj: Matrix,
    /// dt_proj.weight: [Di, R]; dt_proj.bias: [Di].
    dt_proj: Matrix,
    dt_bias: Vec<f32>,
    /// A = −exp(A_log): [Di, S].
    a: Vec<f32>,
    /// D (skip): [Di].
    d: Vec<f32>,
    /// out_proj.weight: [d, Di].
    out_proj: Matrix,
}

/// A loaded Mamba-1 model.
pub struct Mamba1 {
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

/// The embedding key: transformers' `backbone.embeddings.weight` or the original
/// `backbone.embedding.weight`.
pub(crate) fn embedding_key(rd: &WeightReader) -> &'static str {
    if rd.has("backbone.embedding.weight") && !rd.has("backbone.embeddings.weight") {
        "backbone.embedding.weight"
    } else {
        "backbone.embeddings.weight"
    }
}

impl Mamba1 {
    /// Reads a transformers-layout Mamba-1 checkpoint; every shape is checked against the
    /// sizes read from the embedding and layer 0's `in_proj`, `A_log`, `dt_proj` and `conv1d`.
    /// `config` (`config.json` beside the file), when given, must agree with those sizes.
    pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Mamba1> {
        let rd = WeightReader::new(file);
        let emb_key = embedding_key(&rd);
        let (n_vocab, dm) = shape2(&rd, emb_key)?;
        let p0 = "backbone.layers.0.mixer";
        let (two_di, _) = shape2(&rd, &format!("{p0}.in_proj.weight"))?;
        let (d_inner, d_state) = shape2(&rd, &format!("{p0}.A_log"))?;
        let (_, dt_rank) = shape2(&rd, &format!("{p0}.dt_proj.weight"))?;
        let conv_name = format!("{p0}.conv1d.weight");
        let d_conv = *rd.tensor(&conv_name)?.shape.last().unwrap_or(&0);
        if two_di != 2 * d_inner || d_conv == 0 || d_state == 0 || dt_rank == 0 {
            return Err(Error::format(format!(
                "{}: layer 0 sizes disagree: in_proj has {two_di} rows (2·d_inner expected), A_log is [{d_inner}, \
                 {d_state}], dt_proj has rank {dt_rank}, conv1d width {d_conv}",
                file.name
            )));
        }
        let n_layer = count_layers(file, "backbone.layers.");
        let mut eps = 1e-5;
        if let Some(cf) = config {
            let at = |t: &str| format!("{p0}.{t}");
            cf.expect("hidden_size", dm, &file.name, emb_key)?;
            cf.expect("intermediate_size", d_inner, &file.name, &at("A_log"))?;
            cf.expect("state_size", d_state, &file.name, &at("A_log"))?;
            cf.expect("time_step_rank", dt_rank, &file.name, &at("dt_proj.weight"))?;
            cf.expect("conv_kernel", d_conv, &file.name, &conv_name)?;
            cf.expect("num_hidden_layers", n_layer, &file.name, "backbone.layers.N")?;
            eps = cf.f64("layer_norm_epsilon")?.unwrap_or(1e-5) as f32;
        }
        let cfg = Config { n_layer, d_model: dm, n_vocab, d_inner, d_state, dt_rank, d_conv, eps };

        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let m = |n: &str| format!("backbone.layers.{i}.mixer.{n}");
            let conv_b =
                if rd.has(&m("conv1d.bias")) { rd.vector(&m("conv1d.bias"), d_inner)? } else { vec![0.0; d_inner] };
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
                in_proj: rd.matrix(&m("in_proj.weight"), 2 * d_inner, dm)?,
                conv_w: rd.floats(&m("conv1d.weight"), &[d_inner, 1, d_conv])?,
                conv_b,
                x_proj: rd.matrix(&m("x_proj.weight"), dt_rank + 2 * d_state, d_inner)?,
                dt_proj: rd.matrix(&m("dt_proj.weight"), d_inner, dt_rank)?,
                dt_bias: rd.vector(&m("dt_proj.bias"), d_inner)?,
                a: rd.floats(&m("A_log"), &[d_inner, d_state])?.into_iter().map(|v| -v.exp()).collect(),
                d: rd.vector(&m("D"), d_inner)?,
                out_proj: rd.matrix(&m("out_proj.weight"), dm, d_inner)?,
            });
        }
        let emb = rd.matrix(emb_key, n_vocab, dm)?;
        let lm_head = if rd.has("lm_head.weight") { Some(rd.matrix("lm_head.weight", n_vocab, dm)?) } else { None };
        let bytes_per_token = layers
            .iter()
            .map(|l| [&l.in_proj, &l.x_proj, &l.dt_proj, &l.out_proj].iter().map(|m| m.n_bytes()).sum::<usize>())
            .sum::<usize>()
            + lm_head.as_ref().unwrap_or(&emb).n_bytes()
            + emb.n_bytes() / n_vocab.max(1);
        let info = ModelInfo {
            family: Family::Mamba,
            version: 1,
            arch_name: "mamba1",
            n_layer,
            n_embd: dm,
            n_vocab,
            n_head: 0,
            head_size: 0,
            n_params: count_params(file),
            weight_dtype: layers.first().map_or(emb.dtype(), |l| l.in_proj.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        Ok(Mamba1 { info, norm_f: rd.vector("backbone.norm_f.weight", dm)?, cfg, emb, layers, lm_head })
    }

    /// The sizes read from the checkpoint.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl Mamba1 {
    /// The mixer of layer `l` for `t` tokens on `x` ([t, d]): x += mixer(rms_norm(x)).
    fn mixer(&self, l: &Layer, st: &mut [f32], x: &mut [f32], t: usize) {
        let Config { d_model: dm, d_inner: di, d_state: ns, dt_rank: nr, d_conv: k, eps, .. } = self.cfg;
        let (conv, ssm) = st.split_at_mut(di * k);

        // 1. xn = RMSNorm(x)·norm.weight.
        let mut xn = vec![0f32; t * dm];
        for (xi, oi) in x.chunks_exact(dm).zip(xn.chunks_exact_mut(dm)) {
            rms_norm(xi, &l.norm, eps, oi);
        }
        // 2. [u, z] = in_proj·xn: [t, 2·Di].
        let mut uz = vec![0f32; t * 2 * di];
        matmul(&l.in_proj, &xn, t, &mut uz);
        // 3. u = silu(causal_conv1d(u) + bias), token by token through the conv window.
        let mut u = vec![0f32; t * di];
        for (uzi, ui) in uz.chunks_exact(2 * di).zip(u.chunks_exact_mut(di)) {
            conv1d_causal_step(conv, &uzi[..di], &l.conv_w, &l.conv_b, ui);
            ui.iter_mut().for_each(|v| *v = silu(*v));
        }
        // 4. [dt_low (R), B (S), C (S)] = x_proj·u.
        let nb = nr + 2 * ns;
        let mut dbc = vec![0f32; t * nb];
        matmul(&l.x_proj, &u, t, &mut dbc);
        // 5. dt = softplus(dt_proj·dt_low + dt_bias): [t, Di].
        let mut low = vec![0f32; t * nr];
        for (lo, row) in low.chunks_exact_mut(nr).zip(dbc.chunks_exact(nb)) {
            lo.copy_from_slice(&row[..nr]);
        }
        let mut dt = vec![0f32; t * di];
        matmul(&l.dt_proj, &low, t, &mut dt);
        for (j, v) in dt.iter_mut().enumerate() {
            *v = softplus(*v + l.dt_bias[j % di]);
        }
        // 6. Selective scan per channel c (channels are independent: they run in parallel,
        //    each over all tokens), h [S]:
        //    h ← exp(dt·A[c])⊙h + dt·u·B;  y = h·C + D[c]·u;  y ⊙= silu(z).
        //    ych is channel-major [Di, t].
        let mut ych = vec![0f32; di * t];
        let channels = |c0: usize, h: &mut [f32], ych: &mut [f32]| {
            for (cc, (h, yc)) in h.chunks_exact_mut(ns).zip(ych.chunks_exact_mut(t)).enumerate() {
                let c = c0 + cc;
                let a = &l.a[c * ns..(c + 1) * ns];
                for (i, y) in yc.iter_mut().enumerate() {
                    let (dti, ui) = (dt[i * di + c], u[i * di + c]);
                    let (b, cm) = dbc[i * nb + nr..(i + 1) * nb].split_at(ns);
                    let scan = scan_update_dot(h, a, dti, dti * ui, b, cm);
                    *y = (scan + l.d[c] * ui) * silu(uz[i * 2 * di + di + c]);
                }
            }
        };
        let threads = rayon::current_num_threads();
        if threads > 1 && di * ns * t >= 1 << 14 {
            use rayon::prelude::*;
            let chunk = di.div_ceil(threads * 4).max(1);
            ssm[..di * ns]
                .par_chunks_mut(chunk * ns)
                .zip(ych.par_chunks_mut(chunk * t))
                .enumerate()
                .for_each(|(ci, (h, y))| channels(ci * chunk, h, y));
        } else {
            channels(0, &mut ssm[..di * ns], &mut ych);
        }
        // ych [Di, t] → u [t, Di] (reused).
        for c in 0..di {
            for i in 0..t {
                u[i * di + c] = ych[c * t + i];
            }
        }
        // 7. x += out_proj·y.
        matmul(&l.out_proj, &u, t, &mut xn);
        add_assign(x, &xn);
    }
}

impl Architecture for Mamba1 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Layout: for each layer, conv [Di, K] (the last K conv inputs per channel, oldest first)
    /// | ssm [Di, S].
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
        // 8. logits = lm_head · RMSNorm(x)·norm_f, for the last token or for all of them.
        let head = self.lm_head.as_ref().unwrap_or(&self.emb);
        head_logits(head, &x, t, logits, |r, o| rms_norm(r, &self.norm_f, self.cfg.eps, o));
    }
}
