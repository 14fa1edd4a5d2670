//! Normalizations and their backward passes: LayerNorm, RMSNorm, GroupNorm, per-group L2
//! normalization (RWKV-7's `kk`) and Mamba-2's gated RMSNorm.
//!
//! Every function works on T rows at once: `x` is `[T, n]` with n the length of the
//! weight (`w.len()`), or of the group for [`l2_normalize_fwd`]. Statistics are recomputed
//! in the backward from the saved input `x` (two cheap passes per row), so nothing but the
//! input needs saving.

use super::act::{silu, silu_grad};
use super::real::Real;

/// LayerNorm of one row with its weight/bias slices; returns nothing, writes `out`.
fn ln_row<R: Real>(x: &[R], w: &[R], b: &[R], eps: R, out: &mut [R]) {
    let n = R::from_f64(x.len() as f64);
    let mean = x.iter().copied().sum::<R>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<R>() / n;
    let rstd = R::ONE / (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/// Backward of [`ln_row`] (accumulates into `dx`, `dw`, `db`).
fn ln_row_bwd<R: Real>(x: &[R], w: &[R], eps: R, dout: &[R], dx: &mut [R], dw: Option<&mut [R]>, db: Option<&mut [R]>) {
    let n = R::from_f64(x.len() as f64);
    let mean = x.iter().copied().sum::<R>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<R>() / n;
    let rstd = R::ONE / (var + eps).sqrt();
    // dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)), ĝ = dout⊙w, x̂ = (x − mean)·rstd.
    let (mut m1, mut m2) = (R::ZERO, R::ZERO);
    for i in 0..x.len() {
        let g = dout[i] * w[i];
        m1 += g;
        m2 += g * (x[i] - mean) * rstd;
    }
    let (m1, m2) = (m1 / n, m2 / n);
    for i in 0..x.len() {
        let xh = (x[i] - mean) * rstd;
        dx[i] += rstd * (dout[i] * w[i] - m1 - xh * m2);
    }
    if let Some(dw) = dw {
        for i in 0..x.len() {
            dw[i] += dout[i] * (x[i] - mean) * rstd;
        }
    }
    if let Some(db) = db {
        for i in 0..x.len() {
            db[i] += dout[i];
        }
    }
}

/// LayerNorm (biased variance, as PyTorch): `out = (x − mean)/√(var + eps)·w + b` per row;
/// `x`, `out` `[T, n]`, `w`, `b` `[n]`. Overwrites `out`.
pub fn layer_norm_fwd<R: Real>(x: &[R], w: &[R], b: &[R], eps: R, out: &mut [R]) {
    let n = w.len();
    assert!(b.len() == n && x.len().is_multiple_of(n) && out.len() == x.len(), "layer_norm_fwd: shapes");
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        ln_row(xr, w, b, eps, or);
    }
}

/// Backward of [`layer_norm_fwd`] (**accumulates**): `dx` `[T, n]`; `dw`, `db` `[n]`
/// (summed over rows) when wanted. Needs only the forward's input `x`.
pub fn layer_norm_bwd<R: Real>(
    x: &[R],
    w: &[R],
    eps: R,
    dout: &[R],
    dx: &mut [R],
    mut dw: Option<&mut [R]>,
    mut db: Option<&mut [R]>,
) {
    let n = w.len();
    assert!(x.len().is_multiple_of(n) && dout.len() == x.len() && dx.len() == x.len(), "layer_norm_bwd: shapes");
    for ((xr, gr), dxr) in x.chunks_exact(n).zip(dout.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        ln_row_bwd(xr, w, eps, gr, dxr, dw.as_deref_mut(), db.as_deref_mut());
    }
}

/// GroupNorm: each row of `x` `[T, C]` split into `groups` contiguous groups of C/groups,
/// each layer-normalized, then `·w + b` (`[C]`). Overwrites `out` `[T, C]`. Equals
/// [`crate::kernels::group_norm`] (in place) applied to each row.
pub fn group_norm_fwd<R: Real>(x: &[R], groups: usize, w: &[R], b: &[R], eps: R, out: &mut [R]) {
    let c = w.len();
    assert!(c.is_multiple_of(groups) && x.len().is_multiple_of(c) && out.len() == x.len(), "group_norm_fwd: shapes");
    let g = c / groups;
    for (i, (xs, os)) in x.chunks_exact(g).zip(out.chunks_exact_mut(g)).enumerate() {
        let h = i % groups;
        ln_row(xs, &w[h * g..(h + 1) * g], &b[h * g..(h + 1) * g], eps, os);
    }
}

/// Backward of [`group_norm_fwd`] (**accumulates**): `dx` `[T, C]`; `dw`, `db` `[C]`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd<R: Real>(
    x: &[R],
    groups: usize,
    w: &[R],
    eps: R,
    dout: &[R],
    dx: &mut [R],
    mut dw: Option<&mut [R]>,
    mut db: Option<&mut [R]>,
) {
    let c = w.len();
    assert!(c.is_multiple_of(groups) && x.len().is_multiple_of(c), "group_norm_bwd: shapes");
    assert!(dout.len() == x.len() && dx.len() == x.len(), "group_norm_bwd: shapes");
    let g = c / groups;
    for (i, ((xs, gs), dxs)) in x.chunks_exact(g).zip(dout.chunks_exact(g)).zip(dx.chunks_exact_mut(g)).enumerate() {
        let h = i % groups;
        let span = h * g..(h + 1) * g;
        let dwh = dw.as_deref_mut().map(|d| &mut d[span.clone()]);
        let dbh = db.as_deref_mut().map(|d| &mut d[span.clone()]);
        ln_row_bwd(xs, &w[span], eps, gs, dxs, dwh, dbh);
    }
}

/// RMSNorm of one row (any contiguous segment) with its weight slice.
fn rms_row<R: Real>(x: &[R], w: &[R], eps: R, out: &mut [R]) {
    let n = R::from_f64(x.len() as f64);
    let rstd = R::ONE / (x.iter().map(|&v| v * v).sum::<R>() / n + eps).sqrt();
    for i in 0..x.len() {
        out[i] = x[i] * rstd * w[i];
    }
}

/// Backward of [`rms_row`]: dx = rstd·(ĝ − x̂·mean(ĝ⊙x̂)), ĝ = dout⊙w, x̂ = x·rstd.
fn rms_row_bwd<R: Real>(x: &[R], w: &[R], eps: R, dout: &[R], dx: &mut [R], dw: Option<&mut [R]>) {
    let n = R::from_f64(x.len() as f64);
    let rstd = R::ONE / (x.iter().map(|&v| v * v).sum::<R>() / n + eps).sqrt();
    let m = (0..x.len()).map(|i| dout[i] * w[i] * x[i] * rstd).sum::<R>() / n;
    for i in 0..x.len() {
        dx[i] += rstd * (dout[i] * w[i] - x[i] * rstd * m);
    }
    if let Some(dw) = dw {
        for i in 0..x.len() {
            dw[i] += dout[i] * x[i] * rstd;
        }
    }
}

/// RMSNorm: `out = x/√(mean(x²) + eps)·w` per row; `x`, `out` `[T, n]`, `w` `[n]`.
/// Overwrites `out`.
pub fn rms_norm_fwd<R: Real>(x: &[R], w: &[R], eps: R, out: &mut [R]) {
    let n = w.len();
    assert!(x.len().is_multiple_of(n) && out.len() == x.len(), "rms_norm_fwd: shapes");
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        rms_row(xr, w, eps, or);
    }
}

/// Backward of [`rms_norm_fwd`] (**accumulates**): `dx` `[T, n]`, `dw` `[n]`.
pub fn rms_norm_bwd<R: Real>(x: &[R], w: &[R], eps: R, dout: &[R], dx: &mut [R], mut dw: Option<&mut [R]>) {
    let n = w.len();
    assert!(x.len().is_multiple_of(n) && dout.len() == x.len() && dx.len() == x.len(), "rms_norm_bwd: shapes");
    for ((xr, gr), dxr) in x.chunks_exact(n).zip(dout.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        rms_row_bwd(xr, w, eps, gr, dxr, dw.as_deref_mut());
    }
}

/// Per-group L2 normalization: every contiguous group of `group` values of `x` becomes
/// `x / max(‖x‖, eps)` (as [`crate::kernels::l2_normalize`]; RWKV-7's kk uses eps 1e-12).
/// `x`, `out` `[M, group]`; overwrites `out`.
pub fn l2_normalize_fwd<R: Real>(x: &[R], group: usize, eps: R, out: &mut [R]) {
    assert!(x.len().is_multiple_of(group) && out.len() == x.len(), "l2_normalize_fwd: shapes");
    for (xs, os) in x.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        let norm = xs.iter().map(|&v| v * v).sum::<R>().sqrt().max(eps);
        for (o, &v) in os.iter_mut().zip(xs) {
            *o = v / norm;
        }
    }
}

/// Backward of [`l2_normalize_fwd`] (**accumulates** into `dx`): with ν = ‖x‖,
/// `dx += (dout − y·(y·dout))/ν` where ν > eps, and `dx += dout/eps` where the clamp holds.
pub fn l2_normalize_bwd<R: Real>(x: &[R], group: usize, eps: R, dout: &[R], dx: &mut [R]) {
    assert!(x.len().is_multiple_of(group) && dout.len() == x.len() && dx.len() == x.len(), "l2_normalize_bwd: shapes");
    for ((xs, gs), dxs) in x.chunks_exact(group).zip(dout.chunks_exact(group)).zip(dx.chunks_exact_mut(group)) {
        let nu = xs.iter().map(|&v| v * v).sum::<R>().sqrt();
        if nu > eps {
            let yg = xs.iter().zip(gs).map(|(&v, &g)| v * g).sum::<R>() / nu;
            for i in 0..group {
                dxs[i] += (gs[i] - xs[i] / nu * yg) / nu;
            }
        } else {
            for i in 0..group {
                dxs[i] += gs[i] / eps;
            }
        }
    }
}

/// Mamba-2's gated RMSNorm (transformers' `MambaRMSNormGated`, n_groups groups):
/// `g = y ⊙ silu(z)`, then each of the `groups` contiguous groups of a row RMS-normalized
/// and `·w`. `y`, `z`, `out` `[T, Di]`, `w` `[Di]`; overwrites `out`.
pub fn gated_rms_norm_fwd<R: Real>(y: &[R], z: &[R], groups: usize, w: &[R], eps: R, out: &mut [R]) {
    let di = w.len();
    assert!(di.is_multiple_of(groups) && y.len().is_multiple_of(di), "gated_rms_norm_fwd: shapes");
    assert!(z.len() == y.len() && out.len() == y.len(), "gated_rms_norm_fwd: shapes");
    let gs = di / groups;
    for i in 0..y.len() {
        out[i] = y[i] * silu(z[i]);
    }
    for (k, os) in out.chunks_exact_mut(gs).enumerate() {
        let h = k % groups;
        // rms_row reads and writes the same row: normalize a copy-free way.
        let n = R::from_f64(gs as f64);
        let rstd = R::ONE / (os.iter().map(|&v| v * v).sum::<R>() / n + eps).sqrt();
        for (j, o) in os.iter_mut().enumerate() {
            *o = *o * rstd * w[h * gs + j];
        }
    }
}

/// Backward of [`gated_rms_norm_fwd`] (**accumulates**): `dy`, `dz` `[T, Di]`, `dw` `[Di]`.
/// `scratch`: at least 2·Di values (the gated row and its gradient).
#[allow(clippy::too_many_arguments)]
pub fn gated_rms_norm_bwd<R: Real>(
    y: &[R],
    z: &[R],
    groups: usize,
    w: &[R],
    eps: R,
    dout: &[R],
    dy: &mut [R],
    dz: &mut [R],
    mut dw: Option<&mut [R]>,
    scratch: &mut [R],
) {
    let di = w.len();
    assert!(di.is_multiple_of(groups) && y.len().is_multiple_of(di) && z.len() == y.len(), "gated_rms_norm_bwd");
    assert!(dout.len() == y.len() && dy.len() == y.len() && dz.len() == y.len(), "gated_rms_norm_bwd: shapes");
    let gs = di / groups;
    let (g, dg) = scratch[..2 * di].split_at_mut(di);
    for (row, ((yr, zr), gr)) in y.chunks_exact(di).zip(z.chunks_exact(di)).zip(dout.chunks_exact(di)).enumerate() {
        for j in 0..di {
            g[j] = yr[j] * silu(zr[j]);
            dg[j] = R::ZERO;
        }
        for h in 0..groups {
            let s = h * gs..(h + 1) * gs;
            let dwh = dw.as_deref_mut().map(|d| &mut d[s.clone()]);
            rms_row_bwd(&g[s.clone()], &w[s.clone()], eps, &gr[s.clone()], &mut dg[s.clone()], dwh);
        }
        let base = row * di;
        for j in 0..di {
            dy[base + j] += dg[j] * silu(zr[j]);
            dz[base + j] += dg[j] * yr[j] * silu_grad(zr[j]);
        }
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

    /// LayerNorm, GroupNorm, RMSNorm: every gradient (x, w, b) against central differences
    /// on every coordinate (T = 3 rows of n = 7; GroupNorm 3 groups of 5), and each f32
    /// forward equal to the inference kernel to f32 rounding (1e-5 on O(1) values).
    #[test]
    fn layer_group_rms_norm() {
        let mut rng = Rng::new(3);
        let (t, n, eps) = (3usize, 7usize, 1e-5);
        let x = rand_vec(&mut rng, t * n, -2.0, 2.0);
        let w = rand_vec(&mut rng, n, 0.5, 1.5);
        let b = rand_vec(&mut rng, n, -0.5, 0.5);
        let c = rand_vec(&mut rng, t * n, -1.0, 1.0);
        // LayerNorm.
        let ln = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut o = vec![0.0; t * n];
            layer_norm_fwd(x, w, b, eps, &mut o);
            lin_loss(&c, &o)
        };
        let (mut dx, mut dw, mut db) = (off(t * n), off(n), off(n));
        layer_norm_bwd(&x, &w, eps, &c, &mut dx, Some(&mut dw), Some(&mut db));
        let (dx, dw, db) = (unoff(&dx), unoff(&dw), unoff(&db));
        check_grad("ln dx", &x, &dx, 1000, |x| ln(x, &w, &b));
        check_grad("ln dw", &w, &dw, 1000, |w| ln(&x, w, &b));
        check_grad("ln db", &b, &db, 1000, |b| ln(&x, &w, b));
        let (x32, w32, b32) = (to32(&x), to32(&w), to32(&b));
        let mut got = vec![0f32; t * n];
        layer_norm_fwd(&x32, &w32, &b32, eps as f32, &mut got);
        for r in 0..t {
            let mut want = vec![0f32; n];
            kernels::layer_norm(&x32[r * n..(r + 1) * n], &w32, &b32, eps as f32, &mut want);
            assert_close_f32("ln fwd", &got[r * n..(r + 1) * n], &want, 1e-5);
        }
        // RMSNorm.
        let rms = |x: &[f64], w: &[f64]| {
            let mut o = vec![0.0; t * n];
            rms_norm_fwd(x, w, eps, &mut o);
            lin_loss(&c, &o)
        };
        let (mut dx, mut dw) = (off(t * n), off(n));
        rms_norm_bwd(&x, &w, eps, &c, &mut dx, Some(&mut dw));
        let (dx, dw) = (unoff(&dx), unoff(&dw));
        check_grad("rms dx", &x, &dx, 1000, |x| rms(x, &w));
        check_grad("rms dw", &w, &dw, 1000, |w| rms(&x, w));
        rms_norm_fwd(&x32, &w32, eps as f32, &mut got);
        for r in 0..t {
            let mut want = vec![0f32; n];
            kernels::rms_norm(&x32[r * n..(r + 1) * n], &w32, eps as f32, &mut want);
            assert_close_f32("rms fwd", &got[r * n..(r + 1) * n], &want, 1e-5);
        }
        // GroupNorm: C = 15 in 3 groups, RWKV's ln_x eps.
        let (cc, groups, geps) = (15usize, 3usize, 64e-5);
        let x = rand_vec(&mut rng, t * cc, -2.0, 2.0);
        let w = rand_vec(&mut rng, cc, 0.5, 1.5);
        let b = rand_vec(&mut rng, cc, -0.5, 0.5);
        let c = rand_vec(&mut rng, t * cc, -1.0, 1.0);
        let gn = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut o = vec![0.0; t * cc];
            group_norm_fwd(x, groups, w, b, geps, &mut o);
            lin_loss(&c, &o)
        };
        let (mut dx, mut dw, mut db) = (off(t * cc), off(cc), off(cc));
        group_norm_bwd(&x, groups, &w, geps, &c, &mut dx, Some(&mut dw), Some(&mut db));
        let (dx, dw, db) = (unoff(&dx), unoff(&dw), unoff(&db));
        check_grad("gn dx", &x, &dx, 1000, |x| gn(x, &w, &b));
        check_grad("gn dw", &w, &dw, 1000, |w| gn(&x, w, &b));
        check_grad("gn db", &b, &db, 1000, |b| gn(&x, &w, b));
        let (x32, w32, b32) = (to32(&x), to32(&w), to32(&b));
        let mut got = vec![0f32; t * cc];
        group_norm_fwd(&x32, groups, &w32, &b32, geps as f32, &mut got);
        let mut want = x32.clone();
        for r in want.chunks_exact_mut(cc) {
            kernels::group_norm(r, groups, &w32, &b32, geps as f32);
        }
        assert_close_f32("gn fwd", &got, &want, 1e-5);
    }

    /// L2 normalize: gradients on the normal branch (groups of 5, O(1) norms) and on the
    /// clamped branch (eps raised to 0.5 above a group of norm ≈ 0.1, so that the finite
    /// differences stay on one side of the kink); f32 forward equal to
    /// `kernels::l2_normalize` with RWKV-7's eps 1e-12.
    #[test]
    fn l2_normalize() {
        let mut rng = Rng::new(4);
        let g = 5usize;
        let mut x = rand_vec(&mut rng, 4 * g, -1.0, 1.0);
        x[3 * g..].iter_mut().for_each(|v| *v *= 0.05);
        let c = rand_vec(&mut rng, 4 * g, -1.0, 1.0);
        for eps in [1e-12, 0.5] {
            let f = |x: &[f64]| {
                let mut o = vec![0.0; 4 * g];
                l2_normalize_fwd(x, g, eps, &mut o);
                lin_loss(&c, &o)
            };
            let mut dx = off(4 * g);
            l2_normalize_bwd(&x, g, eps, &c, &mut dx);
            let dx = unoff(&dx);
            check_grad(&format!("l2 dx eps={eps}"), &x, &dx, 1000, f);
        }
        let x32 = to32(&x);
        let mut got = vec![0f32; 4 * g];
        l2_normalize_fwd(&x32, g, 1e-12, &mut got);
        let mut want = x32.clone();
        kernels::l2_normalize(&mut want, 4, 1e-12);
        assert_close_f32("l2 fwd", &got, &want, 1e-6);
    }

    /// Gated RMSNorm (T = 3, Di = 12 in 2 groups): gradients of y, z, w on every coordinate;
    /// the f32 forward equals Mamba-2's inference step 5 (y ⊙ silu(z), then
    /// `kernels::rms_norm` per group), replicated here because it is inline in mamba2.rs.
    #[test]
    fn gated_rms_norm() {
        let mut rng = Rng::new(5);
        let (t, di, groups, eps) = (3usize, 12usize, 2usize, 1e-5);
        let y = rand_vec(&mut rng, t * di, -2.0, 2.0);
        let z = rand_vec(&mut rng, t * di, -3.0, 3.0);
        let w = rand_vec(&mut rng, di, 0.5, 1.5);
        let c = rand_vec(&mut rng, t * di, -1.0, 1.0);
        let f = |y: &[f64], z: &[f64], w: &[f64]| {
            let mut o = vec![0.0; t * di];
            gated_rms_norm_fwd(y, z, groups, w, eps, &mut o);
            lin_loss(&c, &o)
        };
        let (mut dy, mut dz, mut dw, mut scratch) = (off(t * di), off(t * di), off(di), vec![0.0; 2 * di]);
        gated_rms_norm_bwd(&y, &z, groups, &w, eps, &c, &mut dy, &mut dz, Some(&mut dw), &mut scratch);
        let (dy, dz, dw) = (unoff(&dy), unoff(&dz), unoff(&dw));
        check_grad("grms dy", &y, &dy, 1000, |y| f(y, &z, &w));
        check_grad("grms dz", &z, &dz, 1000, |z| f(&y, z, &w));
        check_grad("grms dw", &w, &dw, 1000, |w| f(&y, &z, w));
        let (y32, z32, w32) = (to32(&y), to32(&z), to32(&w));
        let mut got = vec![0f32; t * di];
        gated_rms_norm_fwd(&y32, &z32, groups, &w32, eps as f32, &mut got);
        let gs = di / groups;
        let mut want = y32.clone();
        for (v, z) in want.iter_mut().zip(&z32) {
            *v *= kernels::silu(*z);
        }
        let mut tmp = vec![0f32; gs];
        for (k, grp) in want.chunks_exact_mut(gs).enumerate() {
            let h = k % groups;
            kernels::rms_norm(grp, &w32[h * gs..(h + 1) * gs], eps as f32, &mut tmp);
            grp.copy_from_slice(&tmp);
        }
        assert_close_f32("grms fwd", &got, &want, 1e-5);
    }
}
