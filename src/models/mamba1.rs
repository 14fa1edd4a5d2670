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

use super::common::{columns, conv_silu, mamba_conv_bias, mamba_embedding_key, mamba_stack, set_columns};
use super::stack::{for_units, map_units, units_to_rows, Block as StackBlock, Norm, Stack, States, TrainCarry};
use super::{count_params, ArchKind};
use crate::error::{Error, Result};
use crate::exec::{Exec, Seg};
use crate::format::{HfConfig, SafetensorsFile, WeightReader};
use crate::kernels::ssm::scan_channels;
use crate::kernels::{add_assign, silu, softplus, vectorized};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};

/// Channels per parallel block of the training scan (fixed, so that dB and dC are summed in
/// the same order whatever the thread count).
const SCAN_BLOCK: usize = 64;

/// Channels stepped together by the inference scan (`kernels::ssm::scan_channels`).
const CHANNEL_BLOCK: usize = 16;

// ---------------------------------------------------------------------------------------------
// Hyper-parameters
// ---------------------------------------------------------------------------------------------

/// Sizes of a Mamba-1 model, all read from tensor shapes.
#[derive(Debug, Clone)]
pub struct Config {
    /// d: residual width (embedding columns).
    pub d_model: usize,
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

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// One Mamba-1 layer (RMSNorm + mixer).
pub struct Block {
    /// norm.weight: [d].
    norm: Norm,
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
pub type Mamba1 = Stack<Block>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads a transformers-layout Mamba-1 checkpoint; every shape is checked against the sizes
/// read from the embedding and layer 0's `in_proj`, `A_log`, `dt_proj` and `conv1d`.
/// `config` (`config.json` beside the file), when given, must agree with those sizes.
pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Mamba1> {
    let rd = WeightReader::new(file);
    let emb_key = mamba_embedding_key(&rd);
    let (n_vocab, dm) = rd.shape2(emb_key)?;
    let layers = rd.pp("backbone").pp("layers");
    let m0 = layers.pp(0).pp("mixer");
    let (two_di, _) = m0.shape2("in_proj.weight")?;
    let (d_inner, d_state) = m0.shape2("A_log")?;
    let (_, dt_rank) = m0.shape2("dt_proj.weight")?;
    let d_conv = *m0.tensor("conv1d.weight")?.shape.last().unwrap_or(&0);
    if two_di != 2 * d_inner || d_conv == 0 || d_state == 0 || dt_rank == 0 {
        return Err(Error::format(format!(
            "{}: layer 0 sizes disagree: in_proj has {two_di} rows (2·d_inner expected), A_log is [{d_inner}, \
             {d_state}], dt_proj has rank {dt_rank}, conv1d width {d_conv}",
            file.name
        )));
    }
    let n_layer = layers.count_children();
    let mut eps = 1e-5;
    if let Some(cf) = config {
        cf.expect("hidden_size", dm, &file.name, emb_key)?;
        cf.expect("intermediate_size", d_inner, &file.name, &m0.key("A_log"))?;
        cf.expect("state_size", d_state, &file.name, &m0.key("A_log"))?;
        cf.expect("time_step_rank", dt_rank, &file.name, &m0.key("dt_proj.weight"))?;
        cf.expect("conv_kernel", d_conv, &file.name, &m0.key("conv1d.weight"))?;
        cf.expect("num_hidden_layers", n_layer, &file.name, &layers.key("N"))?;
        eps = cf.f64("layer_norm_epsilon")?.unwrap_or(1e-5) as f32;
    }
    let blocks = (0..n_layer)
        .map(|i| {
            let m = layers.pp(i).pp("mixer");
            Ok(Block {
                norm: Norm::rms(&layers.pp(i), "norm.weight", dm, eps)?,
                in_proj: m.matrix("in_proj.weight", 2 * d_inner, dm)?,
                conv_w: m.floats("conv1d.weight", &[d_inner, 1, d_conv])?,
                conv_b: mamba_conv_bias(&m, d_inner)?,
                x_proj: m.matrix("x_proj.weight", dt_rank + 2 * d_state, d_inner)?,
                dt_proj: m.matrix("dt_proj.weight", d_inner, dt_rank)?,
                dt_bias: m.vector("dt_proj.bias", d_inner)?,
                a: m.floats("A_log", &[d_inner, d_state])?.into_iter().map(|v| -v.exp()).collect(),
                d: m.vector("D", d_inner)?,
                out_proj: m.matrix("out_proj.weight", dm, d_inner)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cfg = Config { d_model: dm, d_inner, d_state, dt_rank, d_conv, eps };
    mamba_stack(ArchKind::Mamba1, &rd, cfg, (n_vocab, dm, eps), blocks, (0, 0), count_params(file))
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

impl Config {
    /// One layer's state: conv [Di, K] (the last K conv inputs per channel, oldest first) |
    /// ssm [Di, S].
    fn parts(&self) -> [std::ops::Range<usize>; 2] {
        let conv = self.d_inner * self.d_conv;
        [0..conv, conv..conv + self.d_inner * self.d_state]
    }
}

// ---------------------------------------------------------------------------------------------
// Forward pass
// ---------------------------------------------------------------------------------------------

impl StackBlock for Block {
    type Config = Config;

    /// Layout: conv [Di, K] | ssm [Di, S].
    fn state_len(cfg: &Config) -> usize {
        cfg.parts()[1].end
    }

    fn matrices(&self) -> Vec<&Matrix> {
        vec![&self.in_proj, &self.x_proj, &self.dt_proj, &self.out_proj]
    }

    super::stack::train_hooks!(Rec);

    /// The layer on the rows of `x` ([T, d]): x += mixer(rms_norm(x)).
    fn forward(&self, cfg: &Config, _li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]) {
        let Config { d_model: dm, d_inner: di, d_state: ns, dt_rank: nr, .. } = *cfg;
        let [conv, ssm] = cfg.parts();
        let t = x.len() / dm;
        let nb = nr + 2 * ns;
        let Exec { lin, scratch, .. } = ex;
        let [xn, uz, u, dbc, low, dt, ych] = scratch.take([t * dm, t * 2 * di, t * di, t * nb, t * nr, t * di, t * di]);

        // 1. xn = RMSNorm(x)·norm.weight.
        self.norm.rows(x, xn);
        // 2. [u, z] = in_proj·xn: [T, 2·Di].
        lin.apply(&self.in_proj, xn, t, uz);
        // 3. u = silu(causal_conv1d(u) + bias), row by row through each sequence's conv window.
        conv_silu(segs, st, conv, uz, (2 * di, 0), &self.conv_w, &self.conv_b, u);
        // 4. [dt_low (R), B (S), C (S)] = x_proj·u.
        lin.apply(&self.x_proj, u, t, dbc);
        // 5. dt = softplus(dt_proj·dt_low + dt_bias): [T, Di].
        for (lo, row) in low.chunks_exact_mut(nr).zip(dbc.chunks_exact(nb)) {
            lo.copy_from_slice(&row[..nr]);
        }
        lin.apply(&self.dt_proj, low, t, dt);
        vectorized(|| {
            for row in dt.chunks_exact_mut(di) {
                row.iter_mut().zip(&self.dt_bias).for_each(|(v, b)| *v = softplus(*v + b));
            }
        });
        // 6. Selective scan per channel c (channels are independent: they run in parallel,
        //    each over its sequence's rows), h [S]:
        //    h ← exp(dt·A[c])⊙h + dt·u·B;  y = h·C + D[c]·u;  y ⊙= silu(z).
        //    Channels go in blocks of G (16 where Di allows), stepped together.
        let g = if di.is_multiple_of(CHANNEL_BLOCK) { CHANNEL_BLOCK } else { 1 };
        let (u_in, dt, dbc, uz) = (&*u, &*dt, &*dbc, &*uz);
        let block = |k: usize, h: &mut [f32], yc: &mut [f32], rows: std::ops::Range<usize>| {
            let c0 = k * g;
            let (a, d) = (&self.a[c0 * ns..(c0 + g) * ns], &self.d[c0..c0 + g]);
            let mut dtu = [0f32; CHANNEL_BLOCK];
            for (i, y) in rows.zip(yc.chunks_exact_mut(g)) {
                let ch = i * di + c0..i * di + c0 + g;
                let (dti, ui, z) = (&dt[ch.clone()], &u_in[ch], &uz[i * 2 * di + di + c0..][..g]);
                let (b, cm) = dbc[i * nb + nr..(i + 1) * nb].split_at(ns);
                dtu.iter_mut().zip(dti.iter().zip(ui)).for_each(|(p, (dt, u))| *p = dt * u);
                scan_channels(h, a, dti, &dtu[..g], b, cm, y);
                vectorized(|| {
                    for (j, y) in y.iter_mut().enumerate() {
                        *y = (*y + d[j] * ui[j]) * silu(z[j]);
                    }
                });
            }
        };
        for_units(segs, st, ssm, di / g, g, ych, 4 * di * ns * t, block);
        units_to_rows(segs, ych, di / g, g, u);
        // 7. x += out_proj·y.
        lin.apply(&self.out_proj, u, t, xn);
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
    /// Layer input [T, d], RMSNorm(x) [T, d].
    x_in: Vec<f32>,
    xn: Vec<f32>,
    /// in_proj's LoRA `A x`.
    ax_in: Vec<f32>,
    /// The conv input x [T, Di], conv output before SiLU, u = SiLU of it.
    u_pre: Vec<f32>,
    conv: Vec<f32>,
    u: Vec<f32>,
    /// x_proj's `A x`; dt_proj input [T, R], output before softplus [T, Di] and its `A x`;
    /// dt [T, Di].
    ax_x: Vec<f32>,
    low: Vec<f32>,
    dt_pre: Vec<f32>,
    ax_dt: Vec<f32>,
    dt: Vec<f32>,
    /// B, C [T, S]; scan output [T, Di]; z [T, Di]; gated y [T, Di] and out_proj's `A x`.
    b: Vec<f32>,
    c: Vec<f32>,
    y_scan: Vec<f32>,
    z: Vec<f32>,
    y: Vec<f32>,
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
        let Config { d_model: dm, d_inner: di, d_state: ns, dt_rank: nr, .. } = *cfg;
        let [pc, ps] = cfg.parts();
        let st0 = st.to_vec();
        let t = x.len() / dm;
        let nb = nr + 2 * ns;
        let x_in = x.to_vec();
        let mut xn = vec![0f32; t * dm];
        self.norm.rows(x, &mut xn);
        let (mut uz, mut ax_in) = (vec![0f32; t * 2 * di], Vec::new());
        lin_fwd(&self.in_proj, set, &xn, t, &mut uz, &mut ax_in);
        let (u_pre, z) = (columns(&uz, 2 * di, 0, di), columns(&uz, 2 * di, di, di));
        let mut conv = vec![0f32; t * di];
        crate::train::ssm::conv1d_causal_fwd(&mut st[pc], &u_pre, &self.conv_w, &self.conv_b, &mut conv);
        let mut u = vec![0f32; t * di];
        act::act_fwd(Act::Silu, &conv, &mut u);
        let (mut dbc, mut ax_x) = (vec![0f32; t * nb], Vec::new());
        lin_fwd(&self.x_proj, set, &u, t, &mut dbc, &mut ax_x);
        let (low, b, c) = (columns(&dbc, nb, 0, nr), columns(&dbc, nb, nr, ns), columns(&dbc, nb, nr + ns, ns));
        let (mut dt_pre, mut ax_dt) = (vec![0f32; t * di], Vec::new());
        lin_fwd(&self.dt_proj, set, &low, t, &mut dt_pre, &mut ax_dt);
        let mut dt = vec![0f32; t * di];
        act::bias_act_fwd(Act::Softplus, &dt_pre, &self.dt_bias, &mut dt);
        // The selective scan in blocks of SCAN_BLOCK channels, in parallel.
        let parts = map_units(&mut st[ps], SCAN_BLOCK * ns, |blk, h| {
            let (c0, nc) = (blk * SCAN_BLOCK, h.len() / ns);
            let (dt_b, u_b) = (columns(&dt, di, c0, nc), columns(&u, di, c0, nc));
            let (a, d) = (&self.a[c0 * ns..(c0 + nc) * ns], &self.d[c0..c0 + nc]);
            let inp = crate::train::ssm::ScanInputs { dt: &dt_b, u: &u_b, b: &b, c: &c, a, d };
            let mut y = vec![0f32; t * nc];
            crate::train::ssm::selective_scan_fwd_f32(&inp, h, &mut y);
            y
        });
        let mut y_scan = vec![0f32; t * di];
        for (blk, y) in parts.iter().enumerate() {
            set_columns(y, blk * SCAN_BLOCK, &mut y_scan, di);
        }
        let mut y = vec![0f32; t * di];
        act::gate_fwd(Act::Silu, &y_scan, &z, &mut y);
        let (mut out, mut ax_out) = (vec![0f32; t * dm], Vec::new());
        lin_fwd(&self.out_proj, set, &y, t, &mut out, &mut ax_out);
        x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        Rec { st0, x_in, xn, ax_in, u_pre, conv, u, ax_x, low, dt_pre, ax_dt, dt, b, c, y_scan, z, y, ax_out }
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
        let Config { d_model: dm, d_inner: di, d_state: ns, dt_rank: nr, .. } = *cfg;
        let [pc, ps] = cfg.parts();
        let t = dx.len() / dm;
        let nb = nr + 2 * ns;
        let zeros = |n: usize| vec![0f32; n];
        // 7. out = out_proj·y;  y = y_scan ⊙ silu(z).
        let mut d_y = zeros(t * di);
        lin_bwd(&self.out_proj, set, grads, &rec.y, &rec.ax_out, dx, t, &mut d_y);
        let (mut d_yscan, mut d_z) = (zeros(t * di), zeros(t * di));
        act::gate_bwd(Act::Silu, &rec.y_scan, &rec.z, &d_y, &mut d_yscan, &mut d_z);
        // 6. The selective scan (BPTT over the chunk; dh: dL/d(state after) in, before out).
        //    Blocks of SCAN_BLOCK channels in parallel, their dB, dC summed in block order.
        let parts = map_units(&mut dst[ps.clone()], SCAN_BLOCK * ns, |blk, dh| {
            let (c0, nc) = (blk * SCAN_BLOCK, dh.len() / ns);
            let (dt_b, u_b, dy_b) =
                (columns(&rec.dt, di, c0, nc), columns(&rec.u, di, c0, nc), columns(&d_yscan, di, c0, nc));
            let (a, d) = (&self.a[c0 * ns..(c0 + nc) * ns], &self.d[c0..c0 + nc]);
            let inp = ssm::ScanInputs { dt: &dt_b, u: &u_b, b: &rec.b, c: &rec.c, a, d };
            let (mut ddt, mut du, mut db, mut dc) = (zeros(t * nc), zeros(t * nc), zeros(t * ns), zeros(t * ns));
            let mut g = ssm::ScanGrads { ddt: &mut ddt, du: &mut du, db: &mut db, dc: &mut dc, da: None, dd: None };
            let mut scratch = zeros(ssm::selective_scan_scratch_len(t, ns));
            let h0 = &rec.st0[ps.start + c0 * ns..ps.start + (c0 + nc) * ns];
            ssm::selective_scan_bwd(&inp, h0, &dy_b, dh, &mut g, &mut scratch);
            (ddt, du, db, dc)
        });
        let (mut d_dt, mut d_u, mut d_b, mut d_c) = (zeros(t * di), zeros(t * di), zeros(t * ns), zeros(t * ns));
        for (blk, (ddt, du, db, dc)) in parts.iter().enumerate() {
            set_columns(ddt, blk * SCAN_BLOCK, &mut d_dt, di);
            set_columns(du, blk * SCAN_BLOCK, &mut d_u, di);
            d_b.iter_mut().zip(db).for_each(|(a, b)| *a += b);
            d_c.iter_mut().zip(dc).for_each(|(a, b)| *a += b);
        }
        // 5. dt = softplus(dt_proj·low + dt_bias).
        let mut d_dtpre = zeros(t * di);
        act::bias_act_bwd(Act::Softplus, &rec.dt_pre, &self.dt_bias, &d_dt, &mut d_dtpre, None);
        let mut d_low = zeros(t * nr);
        lin_bwd(&self.dt_proj, set, grads, &rec.low, &rec.ax_dt, &d_dtpre, t, &mut d_low);
        // 4. [low, B, C] = x_proj·u.
        let mut d_dbc = zeros(t * nb);
        for i in 0..t {
            let row = &mut d_dbc[i * nb..(i + 1) * nb];
            row[..nr].copy_from_slice(&d_low[i * nr..(i + 1) * nr]);
            row[nr..nr + ns].copy_from_slice(&d_b[i * ns..(i + 1) * ns]);
            row[nr + ns..].copy_from_slice(&d_c[i * ns..(i + 1) * ns]);
        }
        lin_bwd(&self.x_proj, set, grads, &rec.u, &rec.ax_x, &d_dbc, t, &mut d_u);
        // 3. u = silu(conv(u_pre) + bias).
        let mut d_conv = zeros(t * di);
        act::act_bwd(Act::Silu, &rec.conv, &d_u, &mut d_conv);
        let mut d_upre = zeros(t * di);
        let w0 = &rec.st0[pc.clone()];
        ssm::conv1d_causal_bwd(di, w0, &rec.u_pre, &self.conv_w, &d_conv, &mut dst[pc], &mut d_upre, None, None);
        // 2. [u_pre, z] = in_proj·xn;  1. xn = RMSNorm(x).
        let mut d_uz = zeros(t * 2 * di);
        for i in 0..t {
            d_uz[i * 2 * di..i * 2 * di + di].copy_from_slice(&d_upre[i * di..(i + 1) * di]);
            d_uz[i * 2 * di + di..(i + 1) * 2 * di].copy_from_slice(&d_z[i * di..(i + 1) * di]);
        }
        let mut d_xn = zeros(t * dm);
        lin_bwd(&self.in_proj, set, grads, &rec.xn, &rec.ax_in, &d_uz, t, &mut d_xn);
        self.norm.rows_bwd(&rec.x_in, &d_xn, dx);
    }
}
