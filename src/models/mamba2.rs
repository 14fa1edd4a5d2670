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

use super::common::{columns, conv_silu, mamba_conv_bias, mamba_embedding_key, mamba_stack};
use super::stack::{for_units, units_to_rows, Block as StackBlock, Norm, Stack, States, TrainCarry};
use super::{count_params, ArchKind};
use crate::error::{Error, Result};
use crate::exec::{Exec, Seg};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::ssm::decay_update_dot;
use crate::kernels::{add_assign, rms_norm, silu, softplus, vectorized};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of a Mamba-2 model: read from tensor shapes, except the split of G·S (see the
/// module doc).
#[derive(Debug, Clone)]
pub struct Config {
    /// d: residual width (embedding columns).
    pub d_model: usize,
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

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One Mamba-2 layer (RMSNorm + mixer).
pub struct Block {
    /// norm.weight: [d].
    norm: Norm,
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
pub type Mamba2 = Stack<Block>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads a transformers-layout Mamba-2 checkpoint; every shape is checked against the sizes
/// read from the embedding and layer 0, `config` (see the module doc) supplies n_groups and
/// must agree with the shapes.
pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Mamba2> {
    let rd = WeightReader::new(file);
    let fail = |m: String| Err(Error::format(format!("{}: {m}", file.name)));
    let emb_key = mamba_embedding_key(&rd);
    let (n_vocab, dm) = rd.shape2(emb_key)?;
    let p0 = "backbone.layers.0.mixer";
    let at = |t: &str| format!("{p0}.{t}");
    let (_, d_inner) = rd.shape2(&at("out_proj.weight"))?;
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
    let (proj_rows, _) = rd.shape2(&at("in_proj.weight"))?;
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
    let n_layer = rd.pp("backbone").pp("layers").count_children();
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
    let cfg = Config { d_model: dm, d_inner, n_head, head_dim, n_groups, d_state, d_conv, conv_dim, eps, dt_limit };

    let layers_rd = rd.pp("backbone").pp("layers");
    let blocks = (0..n_layer)
        .map(|i| {
            let m = layers_rd.pp(i).pp("mixer");
            Ok(Block {
                norm: Norm::rms(&layers_rd.pp(i), "norm.weight", dm, eps)?,
                in_proj: m.matrix("in_proj.weight", proj_rows, dm)?,
                conv_w: m.floats("conv1d.weight", &[conv_dim, 1, d_conv])?,
                conv_b: mamba_conv_bias(&m, conv_dim)?,
                dt_bias: m.vector("dt_bias", n_head)?,
                a: m.vector("A_log", n_head)?.into_iter().map(|v| -v.exp()).collect(),
                d: m.vector("D", n_head)?,
                gn: m.vector("norm.weight", d_inner)?,
                out_proj: m.matrix("out_proj.weight", dm, d_inner)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    mamba_stack(ArchKind::Mamba2, &rd, cfg, (n_vocab, dm, eps), blocks, (n_head, head_dim), count_params(file))
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

impl Config {
    /// One layer's state: conv [conv_dim, K] (the last K conv inputs per channel, oldest
    /// first; channels ordered x, B, C) | ssm [H, P, S].
    fn parts(&self) -> [std::ops::Range<usize>; 2] {
        let conv = self.conv_dim * self.d_conv;
        [0..conv, conv..conv + self.n_head * self.head_dim * self.d_state]
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl StackBlock for Block {
    type Config = Config;

    /// Layout: conv [conv_dim, K] | ssm [H, P, S].
    fn state_len(cfg: &Config) -> usize {
        cfg.parts()[1].end
    }

    fn matrices(&self) -> Vec<&Matrix> {
        vec![&self.in_proj, &self.out_proj]
    }

    super::stack::train_hooks!(Rec);

    /// The layer on the rows of `x` ([T, d]): x += mixer(rms_norm(x)).
    fn forward(&self, cfg: &Config, _li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        let Config { d_model: dm, d_inner: di, n_head: nh, head_dim: np, n_groups: ng, d_state: ns, .. } = *cfg;
        let Config { conv_dim: cd, eps, dt_limit, .. } = *cfg;
        let [conv, ssm] = cfg.parts();
        let rows = self.in_proj.rows;
        let t = x.len() / dm;
        let Exec { lin, scratch, .. } = ex;
        let gsz = di / ng;
        let [xn, proj, xbc, dt, yh, tmp] = scratch.take([t * dm, t * rows, t * cd, t * nh, t * di, gsz]);

        // 1. xn = RMSNorm(x)·norm.weight.
        self.norm.rows(x, xn);
        // 2. [z (Di), xBC (conv_dim), dt (H)] = in_proj·xn.
        lin.apply(&self.in_proj, xn, t, proj);
        // 3. xBC = silu(causal_conv1d(xBC) + bias), row by row; split [x (Di), B (G·S), C (G·S)].
        //    dt = clamp(softplus(dt + dt_bias), limit): [T, H].
        conv_silu(segs, st, conv, proj, (rows, di), &self.conv_w, &self.conv_b, xbc);
        for (pi, d) in proj.chunks_exact(rows).zip(dt.chunks_exact_mut(nh)) {
            for (h, d) in d.iter_mut().enumerate() {
                *d = softplus(pi[di + cd + h] + self.dt_bias[h]).clamp(dt_limit.0, dt_limit.1);
            }
        }
        // 4. Per head h (independent: run in parallel, each over its sequence's rows), group
        //    g = h / (H/G), state [P, S]:  h ← exp(dt·A_h)·h + dt·x_h B_gᵀ;  y_h = h·C_g + D_h·x_h.
        let heads_per_group = nh / ng;
        let (xbc_in, dt) = (&*xbc, &*dt);
        let head = |h: usize, s: &mut [f32], yh: &mut [f32], rows: std::ops::Range<usize>| {
            let g = h / heads_per_group;
            for (i, y) in rows.zip(yh.chunks_exact_mut(np)) {
                let row = &xbc_in[i * cd..(i + 1) * cd];
                let xh = &row[h * np..(h + 1) * np];
                let b = &row[di + g * ns..di + (g + 1) * ns];
                let c = &row[di + ng * ns + g * ns..di + ng * ns + (g + 1) * ns];
                let dth = dt[i * nh + h];
                let decay = (dth * self.a[h]).exp();
                for (p, (sp, yp)) in s.chunks_exact_mut(ns).zip(y.iter_mut()).enumerate() {
                    *yp = decay_update_dot(sp, decay, dth * xh[p], b, c) + self.d[h] * xh[p];
                }
            }
        };
        for_units(segs, st, ssm, nh, np, yh, 2 * t * di * ns, head);
        // 5. Gated RMSNorm: y = y ⊙ silu(z), then RMS-normalized within each of the G groups of
        //    Di/G channels, times mixer.norm.weight. y is [T, Di] (reusing xbc's first T·Di).
        let y = &mut xbc[..t * di];
        units_to_rows(segs, yh, nh, np, y);
        for (yi, pi) in y.chunks_exact_mut(di).zip(proj.chunks_exact(rows)) {
            vectorized(|| yi.iter_mut().zip(&pi[..di]).for_each(|(v, z)| *v *= silu(*z)));
            for (gi, grp) in yi.chunks_exact_mut(gsz).enumerate() {
                rms_norm(grp, &self.gn[gi * gsz..(gi + 1) * gsz], eps, tmp);
                grp.copy_from_slice(tmp);
            }
        }
        // 6. x += out_proj·y.
        lin.apply(&self.out_proj, y, t, xn);
        add_assign(x, xn);
    }
}

// ---------------------------------------------------------------------------------------------
// Training: the forward pass with a record, and its backward pass
// ---------------------------------------------------------------------------------------------

/// What the backward pass of one layer needs, for one chunk of T tokens.
struct Rec {
    /// The layer's state before the chunk.
    st0: Vec<f32>,
    /// Layer input and RMSNorm(x) [T, d]; in_proj's LoRA `A x`.
    x_in: Vec<f32>,
    xn: Vec<f32>,
    ax_in: Vec<f32>,
    /// z [T, Di]; the conv input xBC [T, conv_dim] and its output before SiLU; xBC after it.
    z: Vec<f32>,
    xbc_pre: Vec<f32>,
    conv: Vec<f32>,
    xbc: Vec<f32>,
    /// dt before softplus (without dt_bias) and dt, [T, H].
    dt_raw: Vec<f32>,
    dt: Vec<f32>,
    /// SSD output [T, Di], gated norm output [T, Di], out_proj's `A x`.
    y: Vec<f32>,
    y_norm: Vec<f32>,
    ax_out: Vec<f32>,
}

impl Block {
    /// The record of [`train_forward`](StackBlock::train_forward), computing `x` forward.
    fn record(
        &self,
        cfg: &Config,
        _li: usize,
        set: &LoraSet,
        _carry: &mut TrainCarry,
        st: &mut [f32],
        x: &mut [f32],
    ) -> Rec {
        use crate::train::act::{self, Act};
        let Config { d_model: dm, d_inner: di, n_head: nh, head_dim: np, n_groups: ng, d_state: ns, .. } = *cfg;
        let Config { conv_dim: cd, eps, dt_limit, .. } = *cfg;
        let [pc, ps] = cfg.parts();
        let st0 = st.to_vec();
        let t = x.len() / dm;
        let rows = self.in_proj.rows;
        let x_in = x.to_vec();
        let mut xn = vec![0f32; t * dm];
        self.norm.rows(x, &mut xn);
        let (mut proj, mut ax_in) = (vec![0f32; t * rows], Vec::new());
        lin_fwd(&self.in_proj, set, &xn, t, &mut proj, &mut ax_in);
        let (z, xbc_pre, dt_raw) =
            (columns(&proj, rows, 0, di), columns(&proj, rows, di, cd), columns(&proj, rows, di + cd, nh));
        let mut conv = vec![0f32; t * cd];
        crate::train::ssm::conv1d_causal_fwd(&mut st[pc], &xbc_pre, &self.conv_w, &self.conv_b, &mut conv);
        let mut xbc = vec![0f32; t * cd];
        act::act_fwd(Act::Silu, &conv, &mut xbc);
        let mut dt = vec![0f32; t * nh];
        act::bias_act_fwd(Act::Softplus, &dt_raw, &self.dt_bias, &mut dt);
        dt.iter_mut().for_each(|d| *d = d.clamp(dt_limit.0, dt_limit.1));
        let mut y = vec![0f32; t * di];
        let mut yh = vec![0f32; t * np];
        for hd in 0..nh {
            let g = hd / (nh / ng);
            let (dth, xh) = (columns(&dt, nh, hd, 1), columns(&xbc, cd, hd * np, np));
            let (b, c) = (columns(&xbc, cd, di + g * ns, ns), columns(&xbc, cd, di + ng * ns + g * ns, ns));
            let inp = crate::train::ssm::SsdInputs { dt: &dth, x: &xh, b: &b, c: &c, a: self.a[hd], d: self.d[hd] };
            let h = &mut st[ps.start + hd * np * ns..ps.start + (hd + 1) * np * ns];
            crate::train::ssm::ssd_fwd(&inp, ns, h, &mut yh);
            for (row, src) in y.chunks_exact_mut(di).zip(yh.chunks_exact(np)) {
                row[hd * np..(hd + 1) * np].copy_from_slice(src);
            }
        }
        let mut y_norm = vec![0f32; t * di];
        crate::train::norm::gated_rms_norm_fwd(&y, &z, ng, &self.gn, eps, &mut y_norm);
        let (mut out, mut ax_out) = (vec![0f32; t * dm], Vec::new());
        lin_fwd(&self.out_proj, set, &y_norm, t, &mut out, &mut ax_out);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        Rec { st0, x_in, xn, ax_in, z, xbc_pre, conv, xbc, dt_raw, dt, y, y_norm, ax_out }
    }

    /// Backward of [`record`](Self::record): `dx` is dL/d(layer output) in, dL/d(input) out.
    #[allow(clippy::too_many_arguments)]
    fn backprop(
        &self,
        cfg: &Config,
        _li: usize,
        set: &LoraSet,
        rec: &Rec,
        _carry: &mut TrainCarry,
        grads: &mut LoraGrads,
        dst: &mut [f32],
        dx: &mut [f32],
    ) {
        use crate::train::act::{self, Act};
        use crate::train::ssm;
        let Config { d_model: dm, d_inner: di, n_head: nh, head_dim: np, n_groups: ng, d_state: ns, .. } = *cfg;
        let Config { conv_dim: cd, eps, dt_limit, .. } = *cfg;
        let [pc, ps] = cfg.parts();
        let t = dx.len() / dm;
        let rows = self.in_proj.rows;
        let zeros = |n: usize| vec![0f32; n];
        // 6. out = out_proj·y_norm;  5. y_norm = gated RMSNorm(y, z).
        let mut d_ynorm = zeros(t * di);
        lin_bwd(&self.out_proj, set, grads, &rec.y_norm, &rec.ax_out, dx, t, &mut d_ynorm);
        let (mut d_y, mut d_z) = (zeros(t * di), zeros(t * di));
        let mut scratch = zeros(2 * di);
        crate::train::norm::gated_rms_norm_bwd(
            &rec.y,
            &rec.z,
            ng,
            &self.gn,
            eps,
            &d_ynorm,
            &mut d_y,
            &mut d_z,
            None,
            &mut scratch,
        );
        // 4. SSD per head (BPTT over the chunk; dh: dL/d(state after) in, before out).
        let (mut d_xbc, mut d_dt) = (zeros(t * cd), zeros(t * nh));
        let mut scratch = zeros(ssm::ssd_scratch_len(t, np, ns));
        for hd in 0..nh {
            let g = hd / (nh / ng);
            let (dth, xh) = (columns(&rec.dt, nh, hd, 1), columns(&rec.xbc, cd, hd * np, np));
            let (bo, co) = (di + g * ns, di + ng * ns + g * ns);
            let (b, c) = (columns(&rec.xbc, cd, bo, ns), columns(&rec.xbc, cd, co, ns));
            let dyh = columns(&d_y, di, hd * np, np);
            let inp = ssm::SsdInputs { dt: &dth, x: &xh, b: &b, c: &c, a: self.a[hd], d: self.d[hd] };
            let (mut ddt, mut dxh, mut db, mut dc, mut da, mut dd) =
                (zeros(t), zeros(t * np), zeros(t * ns), zeros(t * ns), 0f32, 0f32);
            let mut gr =
                ssm::SsdGrads { ddt: &mut ddt, dx: &mut dxh, db: &mut db, dc: &mut dc, da: &mut da, dd: &mut dd };
            let sh = ps.start + hd * np * ns..ps.start + (hd + 1) * np * ns;
            ssm::ssd_bwd(&inp, ns, &rec.st0[sh.clone()], &dyh, &mut dst[sh], &mut gr, &mut scratch);
            for i in 0..t {
                d_dt[i * nh + hd] += ddt[i];
                let row = &mut d_xbc[i * cd..(i + 1) * cd];
                row[hd * np..(hd + 1) * np].iter_mut().zip(&dxh[i * np..(i + 1) * np]).for_each(|(a, b)| *a += b);
                row[bo..bo + ns].iter_mut().zip(&db[i * ns..(i + 1) * ns]).for_each(|(a, b)| *a += b);
                row[co..co + ns].iter_mut().zip(&dc[i * ns..(i + 1) * ns]).for_each(|(a, b)| *a += b);
            }
        }
        // 3. dt = clamp(softplus(dt_raw + dt_bias)): no gradient where the clamp holds.
        for (d, &v) in d_dt.iter_mut().zip(&rec.dt) {
            if v <= dt_limit.0 || v >= dt_limit.1 {
                *d = 0.0;
            }
        }
        let mut d_dtraw = zeros(t * nh);
        act::bias_act_bwd(Act::Softplus, &rec.dt_raw, &self.dt_bias, &d_dt, &mut d_dtraw, None);
        //    xBC = silu(conv(xBC_pre) + bias).
        let mut d_conv = zeros(t * cd);
        act::act_bwd(Act::Silu, &rec.conv, &d_xbc, &mut d_conv);
        let mut d_xbcpre = zeros(t * cd);
        ssm::conv1d_causal_bwd(
            cd,
            &rec.st0[pc.clone()],
            &rec.xbc_pre,
            &self.conv_w,
            &d_conv,
            &mut dst[pc],
            &mut d_xbcpre,
            None,
            None,
        );
        // 2. [z, xBC, dt] = in_proj·xn;  1. xn = RMSNorm(x).
        let mut d_proj = zeros(t * rows);
        for i in 0..t {
            let row = &mut d_proj[i * rows..(i + 1) * rows];
            row[..di].copy_from_slice(&d_z[i * di..(i + 1) * di]);
            row[di..di + cd].copy_from_slice(&d_xbcpre[i * cd..(i + 1) * cd]);
            row[di + cd..].copy_from_slice(&d_dtraw[i * nh..(i + 1) * nh]);
        }
        let mut d_xn = zeros(t * dm);
        lin_bwd(&self.in_proj, set, grads, &rec.xn, &rec.ax_in, &d_proj, t, &mut d_xn);
        self.norm.rows_bwd(&rec.x_in, &d_xn, dx);
    }
}
