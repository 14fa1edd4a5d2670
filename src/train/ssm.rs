//! Mamba recurrences, forward and chunked BPTT: the causal depthwise conv1d (Mamba-1 and
//! -2), Mamba-1's selective scan, and Mamba-2's per-head SSD recurrence.
//!
//! The pieces around them are in the other files: SiLU after the conv and the `z` gate are
//! [`super::act::act_fwd`] / [`super::act::gate_fwd`] with [`super::act::Act::Silu`];
//! `dt = softplus(dt_proj(x) + dt_bias)` is a product ([`super::linear`]) then
//! [`super::act::bias_act_fwd`] with [`super::act::Act::Softplus`] (Mamba-2's optional
//! `time_step_limit` clamp passes no gradient where it clamps; the default (0, ∞) never
//! does); the gated RMSNorm is [`super::norm::gated_rms_norm_fwd`].
//!
//! Chunking is as everywhere in [`crate::train`]: each `*_fwd` takes its state in/out,
//! each `*_bwd` takes the chunk's start state and the state gradient in/out.

use super::real::{dot, Real};

/// Largest conv width [`conv1d_causal_bwd`] supports (Mamba uses 4).
pub const MAX_CONV_WIDTH: usize = 64;

/// Causal depthwise conv1d over T steps (PyTorch `conv1d`, groups = channels, padding K−1,
/// as [`crate::kernels::conv1d_causal_step`] step by step), **before** the SiLU.
///
/// `window` `[Ch, K]`: each channel's last K inputs, oldest first; enters as the start
/// window (zeros at a sequence start), leaves as the window after the T steps. `x`, `out`
/// `[T, Ch]`; `w` `[Ch, K]`; `bias` `[Ch]`. With ext = window ++ x per channel,
/// `out[t, c] = bias[c] + Σ_k w[c, k]·ext[t + 1 + k]`. Overwrites `out`.
pub fn conv1d_causal_fwd<R: Real>(window: &mut [R], x: &[R], w: &[R], bias: &[R], out: &mut [R]) {
    let ch = bias.len();
    let k = w.len() / ch;
    assert!(w.len() == ch * k && window.len() == ch * k && x.len().is_multiple_of(ch) && out.len() == x.len());
    for (xt, ot) in x.chunks_exact(ch).zip(out.chunks_exact_mut(ch)) {
        for c in 0..ch {
            let win = &mut window[c * k..(c + 1) * k];
            win.copy_within(1.., 0);
            win[k - 1] = xt[c];
            ot[c] = bias[c] + win.iter().zip(&w[c * k..(c + 1) * k]).map(|(&a, &b)| a * b).sum::<R>();
        }
    }
}

/// Backward of [`conv1d_causal_fwd`] over the same T steps, `ch` channels.
///
/// `window0` `[Ch, K]`: the start window of that call. `dout` `[T, Ch]`: dL/d(pre-SiLU out).
/// `dwindow` `[Ch, K]`: enters as dL/d(final window) (zeros if unused), leaves as
/// dL/d(window0) (column 0 is always zero: that input is shifted out before it is used).
/// **Accumulates** `dx` `[T, Ch]`, and `dw` `[Ch, K]`, `dbias` `[Ch]` when wanted. K ≤
/// [`MAX_CONV_WIDTH`].
#[allow(clippy::too_many_arguments)]
pub fn conv1d_causal_bwd<R: Real>(
    ch: usize,
    window0: &[R],
    x: &[R],
    w: &[R],
    dout: &[R],
    dwindow: &mut [R],
    dx: &mut [R],
    mut dw: Option<&mut [R]>,
    mut dbias: Option<&mut [R]>,
) {
    let k = w.len() / ch;
    assert!(k <= MAX_CONV_WIDTH && w.len() == ch * k && window0.len() == ch * k && dwindow.len() == ch * k);
    assert!(x.len().is_multiple_of(ch) && dout.len() == x.len() && dx.len() == x.len(), "conv1d_causal_bwd: shapes");
    let t = x.len() / ch;
    // ext[e] = window0[c, e] for e < K, x[e − K, c] after.
    let ext = |c: usize, e: usize| if e < k { window0[c * k + e] } else { x[(e - k) * ch + c] };
    for c in 0..ch {
        let mut dfinal = [R::ZERO; MAX_CONV_WIDTH];
        let dwin = &mut dwindow[c * k..(c + 1) * k];
        dfinal[..k].copy_from_slice(dwin);
        dwin.iter_mut().for_each(|d| *d = R::ZERO);
        // Slot e of ext gets gradient g.
        let mut add = |e: usize, g: R, dwin: &mut [R]| {
            if e < k {
                dwin[e] += g;
            } else {
                dx[(e - k) * ch + c] += g;
            }
        };
        // The final window is ext[T .. T + K].
        for (j, &g) in dfinal[..k].iter().enumerate() {
            add(t + j, g, dwin);
        }
        let wc = &w[c * k..(c + 1) * k];
        for i in 0..t {
            let g = dout[i * ch + c];
            for j in 0..k {
                add(i + 1 + j, g * wc[j], dwin);
                if let Some(dw) = dw.as_deref_mut() {
                    dw[c * k + j] += g * ext(c, i + 1 + j);
                }
            }
            if let Some(db) = dbias.as_deref_mut() {
                db[c] += g;
            }
        }
    }
}

/// Mamba-1 selective-scan inputs over T steps, all channels (Di) of one layer.
#[derive(Debug, Clone, Copy)]
pub struct ScanInputs<'a, R> {
    /// Time step dt (after softplus): `[T, Di]`.
    pub dt: &'a [R],
    /// Input u (after conv + SiLU): `[T, Di]`.
    pub u: &'a [R],
    /// B: `[T, S]` (shared by all channels).
    pub b: &'a [R],
    /// C: `[T, S]`.
    pub c: &'a [R],
    /// A = −exp(A_log): `[Di, S]`.
    pub a: &'a [R],
    /// D (skip): `[Di]`.
    pub d: &'a [R],
}

impl<R> ScanInputs<'_, R> {
    /// (T, Di, S), checking every shape.
    fn dims(&self) -> (usize, usize, usize) {
        let di = self.d.len();
        let s = self.a.len() / di;
        let t = self.dt.len() / di;
        assert!(self.a.len() == di * s && self.dt.len() == t * di && self.u.len() == t * di, "scan: dt/u/A shapes");
        assert!(self.b.len() == t * s && self.c.len() == t * s, "scan: B/C are not [T, S]");
        (t, di, s)
    }
}

/// Gradients of [`ScanInputs`], **accumulated** by [`selective_scan_bwd`].
#[derive(Debug)]
pub struct ScanGrads<'a, R> {
    /// `[T, Di]`.
    pub ddt: &'a mut [R],
    /// `[T, Di]`.
    pub du: &'a mut [R],
    /// `[T, S]`.
    pub db: &'a mut [R],
    /// `[T, S]`.
    pub dc: &'a mut [R],
    /// `[Di, S]`, when wanted (A is frozen in LoRA training).
    pub da: Option<&'a mut [R]>,
    /// `[Di]`, when wanted.
    pub dd: Option<&'a mut [R]>,
}

/// Mamba-1 selective scan over T steps, per channel c (state h `[S]`):
/// `h ← exp(dt·A[c]) ⊙ h + dt·u·B;  y = h·C + D[c]·u` (before the `silu(z)` gate).
/// `h` `[Di, S]` enters as the start state and leaves as the final one; `y` `[T, Di]` is
/// overwritten.
pub fn selective_scan_fwd<R: Real>(inp: &ScanInputs<'_, R>, h: &mut [R], y: &mut [R]) {
    let (t, di, s) = inp.dims();
    assert!(h.len() == di * s && y.len() == t * di, "selective_scan_fwd: shapes");
    for i in 0..t {
        let (b, c) = (&inp.b[i * s..(i + 1) * s], &inp.c[i * s..(i + 1) * s]);
        for ch in 0..di {
            let (dt, u) = (inp.dt[i * di + ch], inp.u[i * di + ch]);
            let (hc, a) = (&mut h[ch * s..(ch + 1) * s], &inp.a[ch * s..(ch + 1) * s]);
            let mut acc = R::ZERO;
            for j in 0..s {
                hc[j] = (dt * a[j]).exp() * hc[j] + dt * u * b[j];
                acc += hc[j] * c[j];
            }
            y[i * di + ch] = acc + inp.d[ch] * u;
        }
    }
}

/// [`selective_scan_fwd`] in f32 through the engine's vectorized scan kernel
/// ([`crate::kernels::ssm::scan_update_dot`]): the training forward. Its state update is
/// [`selective_scan_bwd`]'s recompute bit for bit (both take eˣ from
/// [`crate::kernels::exp_fast`]); `y` differs from the generic reference by summation order.
pub fn selective_scan_fwd_f32(inp: &ScanInputs<'_, f32>, h: &mut [f32], y: &mut [f32]) {
    let (t, di, s) = inp.dims();
    assert!(h.len() == di * s && y.len() == t * di, "selective_scan_fwd: shapes");
    for i in 0..t {
        let (b, c) = (&inp.b[i * s..(i + 1) * s], &inp.c[i * s..(i + 1) * s]);
        for ch in 0..di {
            let (dt, u) = (inp.dt[i * di + ch], inp.u[i * di + ch]);
            let (hc, a) = (&mut h[ch * s..(ch + 1) * s], &inp.a[ch * s..(ch + 1) * s]);
            y[i * di + ch] = crate::kernels::ssm::scan_update_dot(hc, a, dt, dt * u, b, c) + inp.d[ch] * u;
        }
    }
}

/// Length of [`selective_scan_bwd`]'s scratch: 2·T·S (one channel's states and decays at a
/// time).
pub fn selective_scan_scratch_len(t: usize, s: usize) -> usize {
    2 * t * s
}

/// Backward (BPTT) of [`selective_scan_fwd`] over the same T steps.
///
/// `h0` `[Di, S]`: the start state of that call. `dy` `[T, Di]`. `dh` `[Di, S]`: enters as
/// dL/d(final state), leaves as dL/d(h0). Input gradients are **accumulated** into `g`.
/// With e = exp(dt·A), per step and channel (G = dh + dy·C):
/// `dC += dy·h`, `dD += dy·u`, `du += dy·D + dt·G·B`, `dB += dt·u·G`,
/// `d(dt) += Σ_s G·(h_prev·e·A + u·B)`, `dA += G·h_prev·e·dt`, `dh_prev = G ⊙ e`.
/// `scratch`: [`selective_scan_scratch_len`]`(T, S)` values.
pub fn selective_scan_bwd<R: Real>(
    inp: &ScanInputs<'_, R>,
    h0: &[R],
    dy: &[R],
    dh: &mut [R],
    g: &mut ScanGrads<'_, R>,
    scratch: &mut [R],
) {
    let (t, di, s) = inp.dims();
    assert!(h0.len() == di * s && dh.len() == di * s && dy.len() == t * di, "selective_scan_bwd: shapes");
    assert!(g.ddt.len() == t * di && g.du.len() == t * di && g.db.len() == t * s && g.dc.len() == t * s);
    assert!(scratch.len() >= 2 * t * s, "selective_scan_bwd: scratch below selective_scan_scratch_len");
    let mut gbuf = vec![R::ZERO; 2 * s];
    for ch in 0..di {
        let a = &inp.a[ch * s..(ch + 1) * s];
        let h0c = &h0[ch * s..(ch + 1) * s];
        // hist[i] = h after step i; es[i] = exp(dt_i·A) (one vectorized pass).
        let (hist, es) = scratch[..2 * t * s].split_at_mut(t * s);
        for (i, ei) in es.chunks_exact_mut(s).enumerate() {
            let dt = inp.dt[i * di + ch];
            ei.iter_mut().zip(a).for_each(|(e, &a)| *e = dt * a);
        }
        R::exp_slice(es);
        for i in 0..t {
            let (dt, u) = (inp.dt[i * di + ch], inp.u[i * di + ch]);
            for j in 0..s {
                let prev = if i == 0 { h0c[j] } else { hist[(i - 1) * s + j] };
                hist[i * s + j] = es[i * s + j] * prev + dt * u * inp.b[i * s + j];
            }
        }
        let dhc = &mut dh[ch * s..(ch + 1) * s];
        let mut dd_acc = R::ZERO;
        // Per step: G and G ⊙ h_prev ⊙ e ⊙ A as vectors, the reductions as dot products (so
        // that every loop vectorizes).
        let (gv, pea) = gbuf.split_at_mut(s);
        for i in (0..t).rev() {
            let (dt, u, gy) = (inp.dt[i * di + ch], inp.u[i * di + ch], dy[i * di + ch]);
            dd_acc += gy * u;
            let prev = if i == 0 { h0c } else { &hist[(i - 1) * s..i * s] };
            let (hi, ei) = (&hist[i * s..(i + 1) * s], &es[i * s..(i + 1) * s]);
            let (bi, ci) = (&inp.b[i * s..(i + 1) * s], &inp.c[i * s..(i + 1) * s]);
            let (dci, dbi) = (&mut g.dc[i * s..(i + 1) * s], &mut g.db[i * s..(i + 1) * s]);
            for j in 0..s {
                dci[j] += gy * hi[j];
                gv[j] = dhc[j] + gy * ci[j];
                pea[j] = prev[j] * ei[j] * a[j];
                dbi[j] += gv[j] * dt * u;
                dhc[j] = gv[j] * ei[j];
            }
            if let Some(da) = g.da.as_deref_mut() {
                for j in 0..s {
                    da[ch * s + j] += gv[j] * prev[j] * ei[j] * dt;
                }
            }
            let gb = dot(gv, bi);
            g.ddt[i * di + ch] += dot(gv, pea) + u * gb;
            g.du[i * di + ch] += gy * inp.d[ch] + dt * gb;
        }
        if let Some(dd) = g.dd.as_deref_mut() {
            dd[ch] += dd_acc;
        }
    }
}

/// Mamba-2 SSD inputs of one head h over T steps (gather the head's columns first).
#[derive(Debug, Clone, Copy)]
pub struct SsdInputs<'a, R> {
    /// Time step dt_h (after softplus): `[T]`.
    pub dt: &'a [R],
    /// The head's slice of x: `[T, P]`.
    pub x: &'a [R],
    /// B of the head's group: `[T, S]`.
    pub b: &'a [R],
    /// C of the head's group: `[T, S]`.
    pub c: &'a [R],
    /// `A_h = −exp(A_log[h])`.
    pub a: R,
    /// D_h (skip).
    pub d: R,
}

impl<R> SsdInputs<'_, R> {
    /// T, checking every shape against head dim `p` and state size `s`.
    fn steps(&self, p: usize, s: usize) -> usize {
        let t = self.dt.len();
        assert!(self.x.len() == t * p && self.b.len() == t * s && self.c.len() == t * s, "ssd: x/B/C shapes");
        t
    }
}

/// Gradients of [`SsdInputs`], **accumulated** by [`ssd_bwd`].
#[derive(Debug)]
pub struct SsdGrads<'a, R> {
    /// `[T]`.
    pub ddt: &'a mut [R],
    /// `[T, P]`.
    pub dx: &'a mut [R],
    /// `[T, S]` (add the heads of one group together: they share B).
    pub db: &'a mut [R],
    /// `[T, S]`.
    pub dc: &'a mut [R],
    /// dL/dA_h.
    pub da: &'a mut R,
    /// dL/dD_h.
    pub dd: &'a mut R,
}

/// Mamba-2 SSD recurrence of one head over T steps, state h `[P, S]`:
/// `h ← exp(dt·A)·h + dt·x·Bᵀ;  y = h·C + D·x`. `h` enters as the start state and leaves as
/// the final one (`s` the state size); `y` `[T, P]` is overwritten.
pub fn ssd_fwd<R: Real>(inp: &SsdInputs<'_, R>, s: usize, h: &mut [R], y: &mut [R]) {
    let p = h.len() / s;
    let t = inp.steps(p, s);
    assert!(h.len() == p * s && y.len() == t * p, "ssd_fwd: shapes");
    for i in 0..t {
        let dt = inp.dt[i];
        let decay = (dt * inp.a).exp();
        let (b, c) = (&inp.b[i * s..(i + 1) * s], &inp.c[i * s..(i + 1) * s]);
        for q in 0..p {
            let xq = inp.x[i * p + q];
            let hq = &mut h[q * s..(q + 1) * s];
            let mut acc = R::ZERO;
            for j in 0..s {
                hq[j] = decay * hq[j] + dt * xq * b[j];
                acc += hq[j] * c[j];
            }
            y[i * p + q] = acc + inp.d * xq;
        }
    }
}

/// Length of [`ssd_bwd`]'s scratch: T·P·S (the head's states after each step).
pub fn ssd_scratch_len(t: usize, p: usize, s: usize) -> usize {
    t * p * s
}

/// Backward (BPTT) of [`ssd_fwd`] over the same T steps.
///
/// `h0` `[P, S]`: the start state of that call. `dy` `[T, P]`. `dh` `[P, S]`: enters as
/// dL/d(final state), leaves as dL/d(h0). With decay = exp(dt·A), G = dh + dy·Cᵀ per step:
/// `dC += hᵀ·dy`, `dD += dy·x`, `dx += D·dy + dt·G·B`, `dB += dt·Gᵀ·x`,
/// `d(dt) += A·decay·⟨G, h_prev⟩ + ⟨G, x·Bᵀ⟩`, `dA += dt·decay·⟨G, h_prev⟩`,
/// `dh_prev = decay·G` (**accumulated** into `g`). `scratch`: [`ssd_scratch_len`] values.
pub fn ssd_bwd<R: Real>(
    inp: &SsdInputs<'_, R>,
    s: usize,
    h0: &[R],
    dy: &[R],
    dh: &mut [R],
    g: &mut SsdGrads<'_, R>,
    scratch: &mut [R],
) {
    let ps = h0.len();
    let p = ps / s;
    let t = inp.steps(p, s);
    assert!(ps == p * s && dh.len() == ps && dy.len() == t * p, "ssd_bwd: shapes");
    assert!(g.ddt.len() == t && g.dx.len() == t * p && g.db.len() == t * s && g.dc.len() == t * s, "ssd_bwd: grads");
    assert!(scratch.len() >= t * ps, "ssd_bwd: scratch below ssd_scratch_len");
    let hist = &mut scratch[..t * ps];
    for i in 0..t {
        let (dt, decay) = (inp.dt[i], (inp.dt[i] * inp.a).exp());
        for q in 0..p {
            let xq = inp.x[i * p + q];
            for j in 0..s {
                let prev = if i == 0 { h0[q * s + j] } else { hist[(i - 1) * ps + q * s + j] };
                hist[i * ps + q * s + j] = decay * prev + dt * xq * inp.b[i * s + j];
            }
        }
    }
    for i in (0..t).rev() {
        let (dt, decay) = (inp.dt[i], (inp.dt[i] * inp.a).exp());
        let (mut gh, mut ddt) = (R::ZERO, R::ZERO);
        for q in 0..p {
            let (xq, gy) = (inp.x[i * p + q], dy[i * p + q]);
            *g.dd += gy * xq;
            let mut dx = gy * inp.d;
            for j in 0..s {
                let idx = q * s + j;
                let hij = hist[i * ps + idx];
                let prev = if i == 0 { h0[idx] } else { hist[(i - 1) * ps + idx] };
                g.dc[i * s + j] += gy * hij;
                let gj = dh[idx] + gy * inp.c[i * s + j];
                gh += gj * prev;
                ddt += gj * xq * inp.b[i * s + j];
                dx += dt * gj * inp.b[i * s + j];
                g.db[i * s + j] += dt * gj * xq;
                dh[idx] = decay * gj;
            }
            g.dx[i * p + q] += dx;
        }
        g.ddt[i] += ddt + inp.a * decay * gh;
        *g.da += dt * decay * gh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;
    use crate::rng::Rng;
    use crate::train::testutil::*;

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    /// Conv1d: x, window0, w, bias against central differences of
    /// L = Σ c·out + Σ cw·(final window), Ch = 5, K = 4, for T = 6 (> K) and T = 2 (< K,
    /// where the final window still holds start-window entries); the f32 forward equals
    /// `kernels::conv1d_causal_step` step by step, window included, exactly.
    #[test]
    fn conv1d_gradients() {
        let mut rng = Rng::new(21);
        let (ch, k) = (5usize, 4usize);
        for t in [6usize, 2] {
            let x = rand_vec(&mut rng, t * ch, -1.0, 1.0);
            let win0 = rand_vec(&mut rng, ch * k, -1.0, 1.0);
            let w = rand_vec(&mut rng, ch * k, -1.0, 1.0);
            let b = rand_vec(&mut rng, ch, -1.0, 1.0);
            let c = rand_vec(&mut rng, t * ch, -1.0, 1.0);
            let cw = rand_vec(&mut rng, ch * k, -1.0, 1.0);
            let f = |x: &[f64], win0: &[f64], w: &[f64], b: &[f64]| {
                let (mut win, mut out) = (win0.to_vec(), vec![0.0; t * ch]);
                conv1d_causal_fwd(&mut win, x, w, b, &mut out);
                lin_loss(&c, &out) + lin_loss(&cw, &win)
            };
            let mut dwin = cw.clone();
            let (mut dx, mut dw, mut db) = (off(t * ch), off(ch * k), off(ch));
            conv1d_causal_bwd(ch, &win0, &x, &w, &c, &mut dwin, &mut dx, Some(&mut dw), Some(&mut db));
            let (dx, dw, db) = (unoff(&dx), unoff(&dw), unoff(&db));
            check_grad(&format!("conv dx T={t}"), &x, &dx, 1000, |v| f(v, &win0, &w, &b));
            check_grad(&format!("conv dwindow0 T={t}"), &win0, &dwin, 1000, |v| f(&x, v, &w, &b));
            check_grad(&format!("conv dw T={t}"), &w, &dw, 1000, |v| f(&x, &win0, v, &b));
            check_grad(&format!("conv dbias T={t}"), &b, &db, 1000, |v| f(&x, &win0, &w, v));
            let (x32, w32, b32) = (to32(&x), to32(&w), to32(&b));
            let (mut win, mut win_ref, mut out) = (to32(&win0), to32(&win0), vec![0f32; t * ch]);
            conv1d_causal_fwd(&mut win, &x32, &w32, &b32, &mut out);
            for i in 0..t {
                let mut o = vec![0f32; ch];
                kernels::conv1d_causal_step(&mut win_ref, &x32[i * ch..(i + 1) * ch], &w32, &b32, &mut o);
                assert_eq!(&out[i * ch..(i + 1) * ch], &o[..], "conv step {i}");
            }
            assert_eq!(win, win_ref, "conv final window");
        }
    }

    struct Scan {
        t: usize,
        di: usize,
        s: usize,
        /// dt, u, B, C, A, D.
        x: [Vec<f64>; 6],
        h0: Vec<f64>,
        cy: Vec<f64>,
        ch: Vec<f64>,
    }

    fn scan_case(t: usize, di: usize, s: usize, seed: u64) -> Scan {
        let mut rng = Rng::new(seed);
        let dt = rand_vec(&mut rng, t * di, 0.01, 0.5);
        let u = rand_vec(&mut rng, t * di, -1.0, 1.0);
        let b = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let c = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let a = rand_vec(&mut rng, di * s, -4.0, -0.2);
        let d = rand_vec(&mut rng, di, -1.0, 1.0);
        let h0 = rand_vec(&mut rng, di * s, -1.0, 1.0);
        let cy = rand_vec(&mut rng, t * di, -1.0, 1.0);
        let ch = rand_vec(&mut rng, di * s, -1.0, 1.0);
        Scan { t, di, s, x: [dt, u, b, c, a, d], h0, cy, ch }
    }

    fn scan_inputs(x: &[Vec<f64>; 6]) -> ScanInputs<'_, f64> {
        ScanInputs { dt: &x[0], u: &x[1], b: &x[2], c: &x[3], a: &x[4], d: &x[5] }
    }

    fn scan_loss(sc: &Scan, x: &[Vec<f64>; 6], h0: &[f64]) -> f64 {
        let (mut h, mut y) = (h0.to_vec(), vec![0.0; sc.t * sc.di]);
        selective_scan_fwd(&scan_inputs(x), &mut h, &mut y);
        lin_loss(&sc.cy, &y) + lin_loss(&sc.ch, &h)
    }

    /// Selective scan (T = 5, Di = 3, S = 4): dt, u, B, C, A, D and h0 against central
    /// differences of L = Σ cy·y + Σ ch·h_T on every coordinate; a two-chunk backward
    /// (steps 0..2 and 2..5) equals the one-chunk one to 1e-12.
    #[test]
    fn selective_scan_gradients() {
        let sc = scan_case(5, 3, 4, 22);
        let (t, di, s) = (sc.t, sc.di, sc.s);
        let run = |bounds: &[(usize, usize)]| {
            let mut g: [Vec<f64>; 6] = [
                vec![0.0; t * di],
                vec![0.0; t * di],
                vec![0.0; t * s],
                vec![0.0; t * s],
                vec![0.0; di * s],
                vec![0.0; di],
            ];
            let sub = |v: &[f64], (a, b): (usize, usize), w: usize| v[a * w..b * w].to_vec();
            let chunk = |bd| -> [Vec<f64>; 6] {
                [
                    sub(&sc.x[0], bd, di),
                    sub(&sc.x[1], bd, di),
                    sub(&sc.x[2], bd, s),
                    sub(&sc.x[3], bd, s),
                    sc.x[4].clone(),
                    sc.x[5].clone(),
                ]
            };
            let mut h = sc.h0.clone();
            let mut starts = vec![];
            for &bd in bounds {
                starts.push(h.clone());
                let xc = chunk(bd);
                selective_scan_fwd(&scan_inputs(&xc), &mut h, &mut vec![0.0; (bd.1 - bd.0) * di]);
            }
            let mut dh = sc.ch.clone();
            let mut scratch = vec![0.0; selective_scan_scratch_len(t, s)];
            for (ci, &bd) in bounds.iter().enumerate().rev() {
                let xc = chunk(bd);
                let n = bd.1 - bd.0;
                let (mut ddt, mut du, mut db, mut dc) = (off(n * di), off(n * di), off(n * s), off(n * s));
                let [_, _, _, _, da, dd] = &mut g;
                let mut gr =
                    ScanGrads { ddt: &mut ddt, du: &mut du, db: &mut db, dc: &mut dc, da: Some(da), dd: Some(dd) };
                selective_scan_bwd(
                    &scan_inputs(&xc),
                    &starts[ci],
                    &sub(&sc.cy, bd, di),
                    &mut dh,
                    &mut gr,
                    &mut scratch,
                );
                let (ddt, du, db, dc) = (unoff(&ddt), unoff(&du), unoff(&db), unoff(&dc));
                g[0][bd.0 * di..bd.1 * di].copy_from_slice(&ddt);
                g[1][bd.0 * di..bd.1 * di].copy_from_slice(&du);
                g[2][bd.0 * s..bd.1 * s].copy_from_slice(&db);
                g[3][bd.0 * s..bd.1 * s].copy_from_slice(&dc);
            }
            (g, dh)
        };
        let (g, dh0) = run(&[(0, t)]);
        for (idx, name) in ["dt", "u", "B", "C", "A", "D"].iter().enumerate() {
            check_grad(&format!("scan d{name}"), &sc.x[idx], &g[idx], 1000, |xi| {
                let mut x = sc.x.clone();
                x[idx] = xi.to_vec();
                scan_loss(&sc, &x, &sc.h0)
            });
        }
        check_grad("scan dh0", &sc.h0, &dh0, 1000, |h0| scan_loss(&sc, &sc.x, h0));
        let (g2, dh2) = run(&[(0, 2), (2, t)]);
        for (a, b) in g.iter().chain([&dh0]).zip(g2.iter().chain([&dh2])) {
            assert!(a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + p.abs())), "scan chunked");
        }
    }

    /// The f32 scan equals the inference inner loop (`kernels::ssm::scan_update_dot` + D·u,
    /// as mamba1.rs step 6) to 1e-5: the engine uses `exp_fast` (3e-7 relative) where this
    /// reference uses libm `exp`.
    #[test]
    fn selective_scan_forward_matches_inference() {
        let sc = scan_case(6, 5, 16, 23);
        let (t, di, s) = (sc.t, sc.di, sc.s);
        let x32: Vec<Vec<f32>> = sc.x.iter().map(|v| to32(v)).collect();
        let inp = ScanInputs { dt: &x32[0], u: &x32[1], b: &x32[2], c: &x32[3], a: &x32[4], d: &x32[5] };
        let (mut h, mut y) = (to32(&sc.h0), vec![0f32; t * di]);
        selective_scan_fwd(&inp, &mut h, &mut y);
        let mut h_ref = to32(&sc.h0);
        for i in 0..t {
            for c in 0..di {
                let (dt, u) = (x32[0][i * di + c], x32[1][i * di + c]);
                let (b, cm) = (&x32[2][i * s..(i + 1) * s], &x32[3][i * s..(i + 1) * s]);
                let hc = &mut h_ref[c * s..(c + 1) * s];
                let want =
                    kernels::ssm::scan_update_dot(hc, &x32[4][c * s..(c + 1) * s], dt, dt * u, b, cm) + x32[5][c] * u;
                assert!((y[i * di + c] - want).abs() <= 1e-5 * (1.0 + want.abs()), "scan y[{i},{c}]");
            }
        }
        assert_close_f32("scan final h", &h, &h_ref, 1e-5);
    }

    /// SSD (T = 5, P = 3, S = 4): dt, x, B, C, A, D and h0 against central differences of
    /// L = Σ cy·y + Σ ch·h_T on every coordinate; the f32 forward equals the inference
    /// inner loop (`kernels::ssm::decay_update_dot` + D·x, as mamba2.rs step 4) to 1e-5.
    #[test]
    fn ssd_gradients() {
        let mut rng = Rng::new(24);
        let (t, p, s) = (5usize, 3usize, 4usize);
        let dt = rand_vec(&mut rng, t, 0.01, 0.8);
        let x = rand_vec(&mut rng, t * p, -1.0, 1.0);
        let b = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let c = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let (a, d) = (-1.7, 0.6);
        let h0 = rand_vec(&mut rng, p * s, -1.0, 1.0);
        let cy = rand_vec(&mut rng, t * p, -1.0, 1.0);
        let ch = rand_vec(&mut rng, p * s, -1.0, 1.0);
        let f = |dt: &[f64], x: &[f64], b: &[f64], c: &[f64], a: f64, d: f64, h0: &[f64]| {
            let (mut h, mut y) = (h0.to_vec(), vec![0.0; t * p]);
            ssd_fwd(&SsdInputs { dt, x, b, c, a, d }, s, &mut h, &mut y);
            lin_loss(&cy, &y) + lin_loss(&ch, &h)
        };
        let (mut ddt, mut dx, mut db, mut dc, mut da, mut dd) = (off(t), off(t * p), off(t * s), off(t * s), OFF, OFF);
        let mut dh = ch.clone();
        let mut scratch = vec![0.0; ssd_scratch_len(t, p, s)];
        let mut g = SsdGrads { ddt: &mut ddt, dx: &mut dx, db: &mut db, dc: &mut dc, da: &mut da, dd: &mut dd };
        ssd_bwd(&SsdInputs { dt: &dt, x: &x, b: &b, c: &c, a, d }, s, &h0, &cy, &mut dh, &mut g, &mut scratch);
        let (ddt, dx, db, dc, da, dd) = (unoff(&ddt), unoff(&dx), unoff(&db), unoff(&dc), da - OFF, dd - OFF);
        check_grad("ssd ddt", &dt, &ddt, 1000, |v| f(v, &x, &b, &c, a, d, &h0));
        check_grad("ssd dx", &x, &dx, 1000, |v| f(&dt, v, &b, &c, a, d, &h0));
        check_grad("ssd dB", &b, &db, 1000, |v| f(&dt, &x, v, &c, a, d, &h0));
        check_grad("ssd dC", &c, &dc, 1000, |v| f(&dt, &x, &b, v, a, d, &h0));
        check_grad("ssd dA", &[a], &[da], 1, |v| f(&dt, &x, &b, &c, v[0], d, &h0));
        check_grad("ssd dD", &[d], &[dd], 1, |v| f(&dt, &x, &b, &c, a, v[0], &h0));
        check_grad("ssd dh0", &h0, &dh, 1000, |v| f(&dt, &x, &b, &c, a, d, v));

        let (dt32, x32, b32, c32) = (to32(&dt), to32(&x), to32(&b), to32(&c));
        let (mut h, mut y) = (to32(&h0), vec![0f32; t * p]);
        ssd_fwd(&SsdInputs { dt: &dt32, x: &x32, b: &b32, c: &c32, a: a as f32, d: d as f32 }, s, &mut h, &mut y);
        let mut h_ref = to32(&h0);
        for i in 0..t {
            let decay = (dt32[i] * a as f32).exp();
            for q in 0..p {
                let (bi, ci) = (&b32[i * s..(i + 1) * s], &c32[i * s..(i + 1) * s]);
                let want = kernels::ssm::decay_update_dot(
                    &mut h_ref[q * s..(q + 1) * s],
                    decay,
                    dt32[i] * x32[i * p + q],
                    bi,
                    ci,
                ) + d as f32 * x32[i * p + q];
                assert!((y[i * p + q] - want).abs() <= 1e-5 * (1.0 + want.abs()), "ssd y[{i},{q}]");
            }
        }
        assert_close_f32("ssd final h", &h, &h_ref, 1e-5);
    }

    /// SSD chunked BPTT (chunks 0..2, 2..3, 3..6) equals the one-chunk backward to 1e-12.
    #[test]
    fn ssd_chunked_equals_whole() {
        let mut rng = Rng::new(25);
        let (t, p, s) = (6usize, 3usize, 5usize);
        let dt = rand_vec(&mut rng, t, 0.01, 0.8);
        let x = rand_vec(&mut rng, t * p, -1.0, 1.0);
        let b = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let c = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let (a, d) = (-0.9, -0.4);
        let h0 = rand_vec(&mut rng, p * s, -1.0, 1.0);
        let cy = rand_vec(&mut rng, t * p, -1.0, 1.0);
        let ch = rand_vec(&mut rng, p * s, -1.0, 1.0);
        let run = |bounds: &[(usize, usize)]| {
            let mut h = h0.clone();
            let mut starts = vec![];
            for &(lo, hi) in bounds {
                starts.push(h.clone());
                let inp = SsdInputs {
                    dt: &dt[lo..hi],
                    x: &x[lo * p..hi * p],
                    b: &b[lo * s..hi * s],
                    c: &c[lo * s..hi * s],
                    a,
                    d,
                };
                ssd_fwd(&inp, s, &mut h, &mut vec![0.0; (hi - lo) * p]);
            }
            let (mut ddt, mut dx, mut db, mut dc, mut da, mut dd) =
                (vec![0.0; t], vec![0.0; t * p], vec![0.0; t * s], vec![0.0; t * s], 0.0, 0.0);
            let mut dh = ch.clone();
            let mut scratch = vec![0.0; ssd_scratch_len(t, p, s)];
            for (ci, &(lo, hi)) in bounds.iter().enumerate().rev() {
                let inp = SsdInputs {
                    dt: &dt[lo..hi],
                    x: &x[lo * p..hi * p],
                    b: &b[lo * s..hi * s],
                    c: &c[lo * s..hi * s],
                    a,
                    d,
                };
                let mut g = SsdGrads {
                    ddt: &mut ddt[lo..hi],
                    dx: &mut dx[lo * p..hi * p],
                    db: &mut db[lo * s..hi * s],
                    dc: &mut dc[lo * s..hi * s],
                    da: &mut da,
                    dd: &mut dd,
                };
                ssd_bwd(&inp, s, &starts[ci], &cy[lo * p..hi * p], &mut dh, &mut g, &mut scratch);
            }
            [ddt, dx, db, dc, vec![da, dd], dh]
        };
        let whole = run(&[(0, t)]);
        let chunked = run(&[(0, 2), (2, 3), (3, t)]);
        for (u, v) in whole.iter().zip(&chunked) {
            assert!(u.iter().zip(v).all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + p.abs())), "ssd chunked");
        }
    }

    /// Mamba-1's time step, `dt = softplus(dt_proj·low + dt_bias)` (step 5 of mamba1.rs),
    /// composed of [`crate::train::linear::matrix_fwd`] and `bias_act_fwd(Softplus)`: the
    /// gradients of `low` and of the bias against central differences (one channel's bias
    /// at 25 puts it above softplus's threshold of 20), and the f32 composition equal to
    /// `kernels::matmul` + `kernels::softplus`.
    #[test]
    fn mamba1_dt_path() {
        use crate::tensor::{Matrix, Tensor};
        use crate::train::act::{bias_act_bwd, bias_act_fwd, Act};
        use crate::train::linear::{matrix_bwd_input, matrix_fwd};
        let mut rng = Rng::new(26);
        let (t, di, rank) = (4usize, 6usize, 3usize);
        let w32: Vec<f32> = to32(&rand_vec(&mut rng, di * rank, -1.0, 1.0));
        let m = Matrix::new(Tensor::from_f32("dt_proj.weight", vec![di, rank], &w32), di, rank);
        let low = rand_vec(&mut rng, t * rank, -1.0, 1.0);
        let mut bias = rand_vec(&mut rng, di, -4.0, 1.0);
        bias[0] = 25.0;
        let c = rand_vec(&mut rng, t * di, -1.0, 1.0);
        let f = |low: &[f64], bias: &[f64]| {
            let (mut pre, mut dt) = (vec![0.0; t * di], vec![0.0; t * di]);
            matrix_fwd(&m, low, &mut pre, &mut vec![0f32; rank]);
            bias_act_fwd(Act::Softplus, &pre, bias, &mut dt);
            lin_loss(&c, &dt)
        };
        let mut pre = vec![0.0; t * di];
        matrix_fwd(&m, &low, &mut pre, &mut vec![0f32; rank]);
        let (mut dpre, mut dbias, mut dlow) = (vec![0.0; t * di], vec![0.0; di], vec![0.0; t * rank]);
        bias_act_bwd(Act::Softplus, &pre, &bias, &c, &mut dpre, Some(&mut dbias));
        matrix_bwd_input(&m, &dpre, &mut dlow, &mut vec![0f32; 4 * rank]);
        check_grad("dt dlow", &low, &dlow, 1000, |v| f(v, &bias));
        check_grad("dt dbias", &bias, &dbias, 1000, |v| f(&low, v));
        let (low32, bias32) = (to32(&low), to32(&bias));
        let (mut pre32, mut got) = (vec![0f32; t * di], vec![0f32; t * di]);
        matrix_fwd(&m, &low32, &mut pre32, &mut vec![0f32; rank]);
        bias_act_fwd(Act::Softplus, &pre32, &bias32, &mut got);
        let mut want = vec![0f32; t * di];
        kernels::matmul(&m, &low32, t, &mut want);
        for (j, v) in want.iter_mut().enumerate() {
            *v = kernels::softplus(*v + bias32[j % di]);
        }
        assert_close_f32("dt fwd", &got, &want, 1e-5);
    }

    /// The f32 training forward (the engine's SIMD scan kernel) against the f64 reference, at
    /// a state size past one 8-lane block with a tail (S = 19) and at Mamba's S = 16.
    #[test]
    fn f32_forward_matches_the_reference() {
        for (s, seed) in [(19, 5), (16, 6)] {
            let sc = scan_case(9, 5, s, seed);
            let (mut h64, mut y64) = (sc.h0.clone(), vec![0.0; sc.t * sc.di]);
            selective_scan_fwd(&scan_inputs(&sc.x), &mut h64, &mut y64);
            let x32: Vec<Vec<f32>> = sc.x.iter().map(|v| to32(v)).collect();
            let inp = ScanInputs { dt: &x32[0], u: &x32[1], b: &x32[2], c: &x32[3], a: &x32[4], d: &x32[5] };
            let (mut h32, mut y32) = (to32(&sc.h0), vec![0f32; sc.t * sc.di]);
            selective_scan_fwd_f32(&inp, &mut h32, &mut y32);
            assert_close_f32("scan y", &y32, &to32(&y64), 1e-5);
            assert_close_f32("scan h", &h32, &to32(&h64), 1e-5);
        }
    }

    /// f32 BPTT agrees with f64 at real state sizes: the selective scan with S = 16
    /// (Mamba-130M; Di = 8, T = 16) and SSD with P = 64, S = 128 (Mamba-2; T = 12), every
    /// gradient within 1e-4 of its tensor's largest value (the reason for 1e-4: see
    /// `wkv_f32_backward_agrees_with_f64`).
    #[test]
    fn f32_backward_agrees_with_f64() {
        let sc = scan_case(16, 8, 16, 27);
        let (t, di, s) = (sc.t, sc.di, sc.s);
        let bwd64 = {
            let mut g: [Vec<f64>; 6] = [
                vec![0.0; t * di],
                vec![0.0; t * di],
                vec![0.0; t * s],
                vec![0.0; t * s],
                vec![0.0; di * s],
                vec![0.0; di],
            ];
            let mut dh = sc.ch.clone();
            let [ddt, du, db, dc, da, dd] = &mut g;
            let mut gr = ScanGrads { ddt, du, db, dc, da: Some(da), dd: Some(dd) };
            selective_scan_bwd(
                &scan_inputs(&sc.x),
                &sc.h0,
                &sc.cy,
                &mut dh,
                &mut gr,
                &mut vec![0.0; selective_scan_scratch_len(t, s)],
            );
            (g, dh)
        };
        let x32: Vec<Vec<f32>> = sc.x.iter().map(|v| to32(v)).collect();
        let inp = ScanInputs { dt: &x32[0], u: &x32[1], b: &x32[2], c: &x32[3], a: &x32[4], d: &x32[5] };
        let mut g32: [Vec<f32>; 6] = [
            vec![0.0; t * di],
            vec![0.0; t * di],
            vec![0.0; t * s],
            vec![0.0; t * s],
            vec![0.0; di * s],
            vec![0.0; di],
        ];
        let mut dh32 = to32(&sc.ch);
        {
            let [ddt, du, db, dc, da, dd] = &mut g32;
            let mut gr = ScanGrads { ddt, du, db, dc, da: Some(da), dd: Some(dd) };
            selective_scan_bwd(
                &inp,
                &to32(&sc.h0),
                &to32(&sc.cy),
                &mut dh32,
                &mut gr,
                &mut vec![0.0; selective_scan_scratch_len(t, s)],
            );
        }
        for (i, name) in ["dt", "u", "B", "C", "A", "D"].iter().enumerate() {
            let e = rel_max_err(&g32[i], &bwd64.0[i]);
            assert!(e < 1e-4, "scan d{name}: f32 vs f64 {e:e}");
        }
        assert!(rel_max_err(&dh32, &bwd64.1) < 1e-4, "scan dh0");

        let mut rng = Rng::new(28);
        let (t, p, s) = (12usize, 64usize, 128usize);
        let dt = rand_vec(&mut rng, t, 0.01, 0.3);
        let x = rand_vec(&mut rng, t * p, -1.0, 1.0);
        let b = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let c = rand_vec(&mut rng, t * s, -1.0, 1.0);
        let (a, d) = (-2.3, 0.8);
        let h0 = rand_vec(&mut rng, p * s, -1.0, 1.0);
        let cy = rand_vec(&mut rng, t * p, -1.0, 1.0);
        let ch = rand_vec(&mut rng, p * s, -1.0, 1.0);
        let (mut g64, mut da64, mut dd64) =
            ([vec![0.0; t], vec![0.0; t * p], vec![0.0; t * s], vec![0.0; t * s]], 0.0, 0.0);
        let mut dh64 = ch.clone();
        {
            let [ddt, dx, db, dc] = &mut g64;
            let mut g = SsdGrads { ddt, dx, db, dc, da: &mut da64, dd: &mut dd64 };
            let inp = SsdInputs { dt: &dt, x: &x, b: &b, c: &c, a, d };
            ssd_bwd(&inp, s, &h0, &cy, &mut dh64, &mut g, &mut vec![0.0; ssd_scratch_len(t, p, s)]);
        }
        let (dt32, x32, b32, c32) = (to32(&dt), to32(&x), to32(&b), to32(&c));
        let (mut g32, mut da32, mut dd32) =
            ([vec![0f32; t], vec![0f32; t * p], vec![0f32; t * s], vec![0f32; t * s]], 0f32, 0f32);
        let mut dh32 = to32(&ch);
        {
            let [ddt, dx, db, dc] = &mut g32;
            let mut g = SsdGrads { ddt, dx, db, dc, da: &mut da32, dd: &mut dd32 };
            let inp = SsdInputs { dt: &dt32, x: &x32, b: &b32, c: &c32, a: a as f32, d: d as f32 };
            ssd_bwd(&inp, s, &to32(&h0), &to32(&cy), &mut dh32, &mut g, &mut vec![0f32; ssd_scratch_len(t, p, s)]);
        }
        for (i, name) in ["dt", "x", "B", "C"].iter().enumerate() {
            let e = rel_max_err(&g32[i], &g64[i]);
            assert!(e < 1e-4, "ssd d{name}: f32 vs f64 {e:e}");
        }
        assert!(rel_max_err(&[da32, dd32], &[da64, dd64]) < 1e-4, "ssd dA, dD");
        assert!(rel_max_err(&dh32, &dh64) < 1e-4, "ssd dh0");
    }

    /// One Mamba-1 mixer after its products (mamba1.rs steps 3, 5, 6), composed from the
    /// kernels as a model backward chains them, against central differences of
    /// L = Σ c·out + Σ cw·(final conv window) + Σ ch·(final ssm state):
    /// u = silu(conv(u_pre)), dt = softplus(dt_pre + dt_bias), y = scan(dt, u, B, C),
    /// out = y ⊙ silu(z). Every input and both start states (state tuning). Di = 3, S = 4,
    /// K = 4, T = 5.
    #[test]
    fn mamba1_mixer_composition() {
        use crate::train::act::{act_bwd, act_fwd, bias_act_bwd, bias_act_fwd, gate_bwd, gate_fwd, Act};
        let (t, di, s, k) = (5usize, 3usize, 4usize, 4usize);
        let mut rng = Rng::new(29);
        // Inputs: u_pre, z, dt_pre ([T, Di]), B, C ([T, S]), window0 [Di, K], h0 [Di, S].
        let mut x: Vec<Vec<f64>> = vec![
            rand_vec(&mut rng, t * di, -1.0, 1.0),
            rand_vec(&mut rng, t * di, -2.0, 2.0),
            rand_vec(&mut rng, t * di, -3.0, 0.0),
            rand_vec(&mut rng, t * s, -1.0, 1.0),
            rand_vec(&mut rng, t * s, -1.0, 1.0),
            rand_vec(&mut rng, di * k, -1.0, 1.0),
            rand_vec(&mut rng, di * s, -1.0, 1.0),
        ];
        x[2][0] = 19.0; // dt_pre + bias above 20 on one element: softplus's linear branch.
        let (cw, cb) = (rand_vec(&mut rng, di * k, -1.0, 1.0), rand_vec(&mut rng, di, -0.5, 0.5));
        let dt_bias = rand_vec(&mut rng, di, 1.0, 2.0);
        let a = rand_vec(&mut rng, di * s, -4.0, -0.2);
        let d = rand_vec(&mut rng, di, -1.0, 1.0);
        let (c_out, c_win, c_h) = (
            rand_vec(&mut rng, t * di, -1.0, 1.0),
            rand_vec(&mut rng, di * k, -1.0, 1.0),
            rand_vec(&mut rng, di * s, -1.0, 1.0),
        );
        let fwd = |x: &[Vec<f64>]| {
            let (mut win, mut h) = (x[5].clone(), x[6].clone());
            let (mut pre, mut u, mut dt, mut y, mut out) =
                (vec![0.0; t * di], vec![0.0; t * di], vec![0.0; t * di], vec![0.0; t * di], vec![0.0; t * di]);
            conv1d_causal_fwd(&mut win, &x[0], &cw, &cb, &mut pre);
            act_fwd(Act::Silu, &pre, &mut u);
            bias_act_fwd(Act::Softplus, &x[2], &dt_bias, &mut dt);
            selective_scan_fwd(&ScanInputs { dt: &dt, u: &u, b: &x[3], c: &x[4], a: &a, d: &d }, &mut h, &mut y);
            gate_fwd(Act::Silu, &y, &x[1], &mut out);
            (lin_loss(&c_out, &out) + lin_loss(&c_win, &win) + lin_loss(&c_h, &h), pre, u, dt, y)
        };
        let (_, pre, u, dt, y) = fwd(&x);
        let (mut dy, mut dz) = (vec![0.0; t * di], vec![0.0; t * di]);
        gate_bwd(Act::Silu, &y, &x[1], &c_out, &mut dy, &mut dz);
        let (mut ddt, mut du, mut db, mut dc) =
            (vec![0.0; t * di], vec![0.0; t * di], vec![0.0; t * s], vec![0.0; t * s]);
        let mut dh = c_h.clone();
        {
            let mut g = ScanGrads { ddt: &mut ddt, du: &mut du, db: &mut db, dc: &mut dc, da: None, dd: None };
            let inp = ScanInputs { dt: &dt, u: &u, b: &x[3], c: &x[4], a: &a, d: &d };
            selective_scan_bwd(&inp, &x[6], &dy, &mut dh, &mut g, &mut vec![0.0; selective_scan_scratch_len(t, s)]);
        }
        let mut dpre = vec![0.0; t * di];
        act_bwd(Act::Silu, &pre, &du, &mut dpre);
        let (mut du_pre, mut dwin) = (vec![0.0; t * di], c_win.clone());
        conv1d_causal_bwd(di, &x[5], &x[0], &cw, &dpre, &mut dwin, &mut du_pre, None, None);
        let mut ddt_pre = vec![0.0; t * di];
        bias_act_bwd(Act::Softplus, &x[2], &dt_bias, &ddt, &mut ddt_pre, None);
        let grads = [du_pre, dz, ddt_pre, db, dc, dwin, dh];
        for (idx, name) in ["u_pre", "z", "dt_pre", "B", "C", "window0", "h0"].iter().enumerate() {
            check_grad(&format!("mixer d{name}"), &x[idx], &grads[idx], 1000, |xi| {
                let mut xx = x.clone();
                xx[idx] = xi.to_vec();
                fwd(&xx).0
            });
        }
    }
}
