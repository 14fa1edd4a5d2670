//! The RWKV-7 WKV recurrence of one head (the "generalized delta rule"), forward and BPTT.
//!
//! State S `[N(value), N(key)]` (row i = value channel, column j = key channel), per step
//! t with inputs r, w, k, v, kk, a (each `[N]`, row t of a `[T, N]` slice):
//!
//! ```text
//! S ← S·diag(w) + (S·(−kk))·(kk ⊙ a)ᵀ + v·kᵀ        y = S·r
//! ```
//!
//! exactly as `wkv_head` in `models/rwkv7.rs` (BlinkDL's `RWKV_x070`). Backward, one step,
//! with G = dL/dS_new + dy·rᵀ, sa = S·(−kk), b = kk ⊙ a:
//!
//! ```text
//! dr += S_newᵀ·dy      dv += G·k      dk += Gᵀ·v      dw += colsum(G ⊙ S)
//! db = Gᵀ·sa → dkk += db ⊙ a, da += db ⊙ kk           dsa = G·b → dkk −= Sᵀ·dsa
//! dL/dS = G·diag(w) − dsa·kkᵀ
//! ```
//!
//! Chunked BPTT (see [`crate::train`]): [`wkv_fwd`] over each chunk of K steps from its
//! start state, keeping a copy of each start state; then [`wkv_bwd`] from the last chunk
//! to the first, with `ds` carried between calls. [`wkv_bwd`] recomputes the chunk's K
//! states into `scratch` ([`wkv_scratch_len`]), so memory is K·N² per head, not T·N².

use super::real::{dot, Real};

/// One head's per-step inputs over T steps: each `[T, N]` (row t = step t).
#[derive(Debug, Clone, Copy)]
pub struct WkvInputs<'a, R> {
    /// Receptance r (the read vector): `y = S·r`.
    pub r: &'a [R],
    /// Decay w ∈ (0, 1) per key channel (after `exp(−0.606531·σ(·))`).
    pub w: &'a [R],
    /// Key k (after RWKV-7's `k ⊙ (1 + (a − 1) ⊙ k_a)`).
    pub k: &'a [R],
    /// Value v (after the value residual).
    pub v: &'a [R],
    /// Normalized removal key kk (L2-normalized per head).
    pub kk: &'a [R],
    /// In-context learning rate a ∈ (0, 1).
    pub a: &'a [R],
}

/// The gradients of [`WkvInputs`], each `[T, N]`, **accumulated** by [`wkv_bwd`].
#[derive(Debug)]
pub struct WkvGrads<'a, R> {
    /// dL/dr.
    pub dr: &'a mut [R],
    /// dL/dw.
    pub dw: &'a mut [R],
    /// dL/dk.
    pub dk: &'a mut [R],
    /// dL/dv.
    pub dv: &'a mut [R],
    /// dL/dkk.
    pub dkk: &'a mut [R],
    /// dL/da.
    pub da: &'a mut [R],
}

impl<R> WkvInputs<'_, R> {
    /// T, checking that all six inputs are `[T, n]`.
    fn steps(&self, n: usize) -> usize {
        let t = self.r.len() / n;
        for (name, x) in [("r", self.r), ("w", self.w), ("k", self.k), ("v", self.v), ("kk", self.kk), ("a", self.a)] {
            assert_eq!(x.len(), t * n, "wkv: input {name} is not [T, N]");
        }
        t
    }
}

/// Length of [`wkv_bwd`]'s scratch for T steps of head size N: T·N² (the states before
/// each step) + 3·N.
pub fn wkv_scratch_len(n: usize, t: usize) -> usize {
    t * n * n + 3 * n
}

/// Row `i` of a `[T, n]` slice.
#[inline]
fn at<R>(v: &[R], i: usize, n: usize) -> &[R] {
    &v[i * n..(i + 1) * n]
}

/// One step on `s` `[N, N]`: the state update, and `y = S_new·r` when `y` is given.
#[allow(clippy::too_many_arguments)]
#[inline]
fn step<R: Real>(s: &mut [R], r: &[R], w: &[R], k: &[R], v: &[R], kk: &[R], a: &[R], mut y: Option<&mut [R]>) {
    let n = r.len();
    for (i, row) in s.chunks_exact_mut(n).enumerate() {
        let sa = -dot(row, kk);
        let vi = v[i];
        for j in 0..n {
            row[j] = row[j] * w[j] + sa * (kk[j] * a[j]) + vi * k[j];
        }
        if let Some(y) = y.as_deref_mut() {
            y[i] = dot(row, r);
        }
    }
}

/// WKV forward of one head over T steps: `s` `[N, N]` enters as the start state S0 and
/// leaves as S_T; `y` `[T, N]` is overwritten with `y_t = S_t·r_t`. `n` is the head size N.
pub fn wkv_fwd<R: Real>(n: usize, inp: &WkvInputs<'_, R>, s: &mut [R], y: &mut [R]) {
    let t = inp.steps(n);
    assert!(s.len() == n * n && y.len() == t * n, "wkv_fwd: shapes");
    for i in 0..t {
        let (r, w, k, v, kk, a) =
            (at(inp.r, i, n), at(inp.w, i, n), at(inp.k, i, n), at(inp.v, i, n), at(inp.kk, i, n), at(inp.a, i, n));
        step(s, r, w, k, v, kk, a, Some(&mut y[i * n..(i + 1) * n]));
    }
}

/// WKV backward (BPTT) of one head over the T steps of one [`wkv_fwd`] call.
///
/// `s0` `[N, N]`: the start state that forward call got. `dy` `[T, N]`: dL/dy. `ds` `[N, N]`:
/// enters as dL/dS_T (zeros if the final state does not reach the loss; for chained chunks,
/// what the next chunk's call left), leaves as dL/dS0. The input gradients are
/// **accumulated** into `g`. `scratch`: at least [`wkv_scratch_len`]`(n, T)` values.
pub fn wkv_bwd<R: Real>(
    n: usize,
    inp: &WkvInputs<'_, R>,
    s0: &[R],
    dy: &[R],
    ds: &mut [R],
    g: &mut WkvGrads<'_, R>,
    scratch: &mut [R],
) {
    let t = inp.steps(n);
    let nn = n * n;
    assert!(s0.len() == nn && ds.len() == nn && dy.len() == t * n, "wkv_bwd: shapes");
    for (name, d) in [("dr", &*g.dr), ("dw", &*g.dw), ("dk", &*g.dk), ("dv", &*g.dv), ("dkk", &*g.dkk), ("da", &*g.da)]
    {
        assert_eq!(d.len(), t * n, "wkv_bwd: gradient {name} is not [T, N]");
    }
    assert!(scratch.len() >= wkv_scratch_len(n, t), "wkv_bwd: scratch below wkv_scratch_len");
    if t == 0 {
        return;
    }
    let (states, rest) = scratch.split_at_mut(t * nn);
    let (s_new, rest) = rest[..3 * n].split_at_mut(n);
    let (db, b) = rest.split_at_mut(n);
    // Recompute S_0 .. S_{T−1} (the state before each step).
    states[..nn].copy_from_slice(s0);
    for i in 0..t - 1 {
        let (done, next) = states.split_at_mut((i + 1) * nn);
        next[..nn].copy_from_slice(&done[i * nn..]);
        let (r, w, k, v, kk, a) =
            (at(inp.r, i, n), at(inp.w, i, n), at(inp.k, i, n), at(inp.v, i, n), at(inp.kk, i, n), at(inp.a, i, n));
        step(&mut next[..nn], r, w, k, v, kk, a, None);
    }
    for i in (0..t).rev() {
        let sl = i * n..(i + 1) * n;
        let (r, w, k, v, kk, a) =
            (at(inp.r, i, n), at(inp.w, i, n), at(inp.k, i, n), at(inp.v, i, n), at(inp.kk, i, n), at(inp.a, i, n));
        let dyt = &dy[sl.clone()];
        let s = &states[i * nn..(i + 1) * nn];
        db.iter_mut().for_each(|d| *d = R::ZERO);
        for (bj, (&kj, &aj)) in b.iter_mut().zip(kk.iter().zip(a)) {
            *bj = kj * aj;
        }
        let (gdr, gdk, gdw, gdkk) =
            (&mut g.dr[sl.clone()], &mut g.dk[sl.clone()], &mut g.dw[sl.clone()], &mut g.dkk[sl.clone()]);
        for row_i in 0..n {
            let row = &s[row_i * n..(row_i + 1) * n];
            let dsr = &mut ds[row_i * n..(row_i + 1) * n];
            let sa = -dot(row, kk);
            let (vi, dyi) = (v[row_i], dyt[row_i]);
            for j in 0..n {
                s_new[j] = row[j] * w[j] + sa * b[j] + vi * k[j];
                // G = dS_new + dy·rᵀ, kept in dsr until it becomes dS.
                let gij = dsr[j] + dyi * r[j];
                dsr[j] = gij;
                gdr[j] += s_new[j] * dyi;
                gdk[j] += gij * vi;
                gdw[j] += gij * row[j];
                db[j] += gij * sa;
            }
            g.dv[sl.start + row_i] += dot(dsr, k);
            let dsa = dot(dsr, b);
            for j in 0..n {
                gdkk[j] -= dsa * row[j];
                dsr[j] = dsr[j] * w[j] - dsa * kk[j];
            }
        }
        for j in 0..n {
            g.dkk[sl.start + j] += db[j] * a[j];
            g.da[sl.start + j] += db[j] * kk[j];
        }
    }
}

/// RWKV-7's per-head bonus, **added** into `y` `[T, N]`: `y_t += (Σ_j r_j·k_j·rk_j)·v_t`
/// with r, k, v `[T, N]` and the head's `r_k` slice `rk` `[N]` (step 7 of `time_mix`).
pub fn wkv_bonus_fwd<R: Real>(r: &[R], k: &[R], v: &[R], rk: &[R], y: &mut [R]) {
    let n = rk.len();
    assert!(r.len() == k.len() && v.len() == r.len() && y.len() == r.len() && r.len().is_multiple_of(n), "wkv_bonus");
    for t in 0..r.len() / n {
        let sl = t * n..(t + 1) * n;
        let s: R = (0..n).map(|j| r[sl.start + j] * k[sl.start + j] * rk[j]).sum();
        for j in sl {
            y[j] += s * v[j];
        }
    }
}

/// Backward of [`wkv_bonus_fwd`] (**accumulates**): `dr`, `dk`, `dv` `[T, N]` and `drk` `[N]`
/// when wanted, from `dy` `[T, N]`.
#[allow(clippy::too_many_arguments)]
pub fn wkv_bonus_bwd<R: Real>(
    r: &[R],
    k: &[R],
    v: &[R],
    rk: &[R],
    dy: &[R],
    dr: &mut [R],
    dk: &mut [R],
    dv: &mut [R],
    mut drk: Option<&mut [R]>,
) {
    let n = rk.len();
    assert!(
        r.len().is_multiple_of(n)
            && [k.len(), v.len(), dy.len(), dr.len(), dk.len(), dv.len()].iter().all(|&l| l == r.len())
    );
    for t in 0..r.len() / n {
        let o = t * n;
        let s: R = (0..n).map(|j| r[o + j] * k[o + j] * rk[j]).sum();
        let ds: R = (0..n).map(|j| dy[o + j] * v[o + j]).sum();
        for j in 0..n {
            dv[o + j] += s * dy[o + j];
            dr[o + j] += ds * k[o + j] * rk[j];
            dk[o + j] += ds * r[o + j] * rk[j];
            if let Some(d) = drk.as_deref_mut() {
                d[j] += ds * r[o + j] * k[o + j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::testutil::*;

    struct Case {
        n: usize,
        t: usize,
        /// r, w, k, v, kk, a: each `[T, N]`.
        x: [Vec<f64>; 6],
        s0: Vec<f64>,
        /// Loss weights of y `[T, N]` and of S_T `[N, N]`.
        cy: Vec<f64>,
        cs: Vec<f64>,
    }

    fn case(n: usize, t: usize, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let tn = t * n;
        let r = rand_vec(&mut rng, tn, -1.0, 1.0);
        let w = rand_vec(&mut rng, tn, 0.55, 1.0);
        let k = rand_vec(&mut rng, tn, -1.0, 1.0);
        let v = rand_vec(&mut rng, tn, -1.0, 1.0);
        let kk = rand_vec(&mut rng, tn, -0.6, 0.6);
        let a = rand_vec(&mut rng, tn, 0.0, 1.0);
        let s0 = rand_vec(&mut rng, n * n, -0.5, 0.5);
        let cy = rand_vec(&mut rng, tn, -1.0, 1.0);
        let cs = rand_vec(&mut rng, n * n, -1.0, 1.0);
        Case { n, t, x: [r, w, k, v, kk, a], s0, cy, cs }
    }

    fn inputs<'a>(x: &'a [Vec<f64>; 6]) -> WkvInputs<'a, f64> {
        WkvInputs { r: &x[0], w: &x[1], k: &x[2], v: &x[3], kk: &x[4], a: &x[5] }
    }

    /// L = Σ cy·y + Σ cs·S_T for the inputs `x` and start state `s0`.
    fn loss(c: &Case, x: &[Vec<f64>; 6], s0: &[f64]) -> f64 {
        let mut s = s0.to_vec();
        let mut y = vec![0.0; c.t * c.n];
        wkv_fwd(c.n, &inputs(x), &mut s, &mut y);
        lin_loss(&c.cy, &y) + lin_loss(&c.cs, &s)
    }

    /// Runs the backward in chunks of `chunk` steps (forward chunk by chunk keeping start
    /// states, backward from the last chunk), returning the six input gradients and dS0.
    fn grads(c: &Case, chunk: usize) -> ([Vec<f64>; 6], Vec<f64>) {
        let (n, t) = (c.n, c.t);
        let mut s = c.s0.clone();
        let mut starts = Vec::new();
        let mut y = vec![0.0; t * n];
        let bounds: Vec<(usize, usize)> = (0..t).step_by(chunk).map(|a| (a, (a + chunk).min(t))).collect();
        let sub = |v: &[f64], (a, b): (usize, usize)| v[a * n..b * n].to_vec();
        for &bd in &bounds {
            starts.push(s.clone());
            let xs: Vec<Vec<f64>> = c.x.iter().map(|v| sub(v, bd)).collect();
            let xs: [Vec<f64>; 6] = xs.try_into().unwrap();
            wkv_fwd(n, &inputs(&xs), &mut s, &mut y[bd.0 * n..bd.1 * n]);
        }
        let mut ds = c.cs.clone();
        let mut d: [Vec<f64>; 6] = std::array::from_fn(|_| vec![0.0; t * n]);
        let mut scratch = vec![0.0; wkv_scratch_len(n, chunk)];
        for (ci, &bd) in bounds.iter().enumerate().rev() {
            let xs: Vec<Vec<f64>> = c.x.iter().map(|v| sub(v, bd)).collect();
            let xs: [Vec<f64>; 6] = xs.try_into().unwrap();
            let mut dc: [Vec<f64>; 6] = std::array::from_fn(|_| off((bd.1 - bd.0) * n));
            {
                let [dr, dw, dk, dv, dkk, da] = &mut dc;
                let mut g = WkvGrads { dr, dw, dk, dv, dkk, da };
                wkv_bwd(n, &inputs(&xs), &starts[ci], &sub(&c.cy, bd), &mut ds, &mut g, &mut scratch);
            }
            for (full, part) in d.iter_mut().zip(&dc) {
                full[bd.0 * n..bd.1 * n].copy_from_slice(&unoff(part));
            }
        }
        (d, ds)
    }

    /// Every input coordinate of every step, and S0, against central differences of
    /// L = Σ cy·y + Σ cs·S_T (N = 5, T = 7 and N = 4, T = 3; odd sizes, a non-zero S0 and a
    /// non-zero dS_T); tolerance: see `testutil::RTOL`.
    #[test]
    fn wkv_gradients_match_finite_differences() {
        for (n, t, seed) in [(5usize, 7usize, 11u64), (4, 3, 12)] {
            let c = case(n, t, seed);
            let (d, ds0) = grads(&c, t);
            for (idx, name) in ["r", "w", "k", "v", "kk", "a"].iter().enumerate() {
                check_grad(&format!("wkv d{name} N={n} T={t}"), &c.x[idx], &d[idx], 1000, |xi| {
                    let mut x = c.x.clone();
                    x[idx] = xi.to_vec();
                    loss(&c, &x, &c.s0)
                });
            }
            check_grad(&format!("wkv dS0 N={n} T={t}"), &c.s0, &ds0, 1000, |s0| loss(&c, &c.x, s0));
        }
    }

    /// Chunked BPTT (chunks of 3 and of 2 over T = 7, the last one short) gives the
    /// single-chunk gradients to f64 rounding (1e-12: the same sums in the same order up
    /// to the recomputed states).
    #[test]
    fn wkv_chunked_equals_whole() {
        let c = case(6, 7, 13);
        let (d, ds0) = grads(&c, 7);
        for chunk in [3, 2] {
            let (dc, dsc) = grads(&c, chunk);
            for (a, b) in d.iter().chain([&ds0]).zip(dc.iter().chain([&dsc])) {
                assert!(a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-12 * (1.0 + p.abs())), "chunk {chunk}");
            }
        }
    }

    /// The f32 forward equals `wkv_head` of models/rwkv7.rs (private there, so its formula
    /// is replicated here line for line) on N = 8, T = 5: both compute the same sums in
    /// the same order, so they agree exactly (within 1e-6 to allow for fused multiply-adds).
    #[test]
    fn wkv_forward_matches_inference() {
        let c = case(8, 5, 14);
        let (n, t) = (c.n, c.t);
        let x32: Vec<Vec<f32>> = c.x.iter().map(|v| v.iter().map(|&a| a as f32).collect()).collect();
        let mut s: Vec<f32> = c.s0.iter().map(|&v| v as f32).collect();
        let mut s_ref = s.clone();
        let mut y = vec![0f32; t * n];
        let inp = WkvInputs { r: &x32[0], w: &x32[1], k: &x32[2], v: &x32[3], kk: &x32[4], a: &x32[5] };
        wkv_fwd(n, &inp, &mut s, &mut y);
        for i in 0..t {
            let x = |v: &Vec<f32>| v[i * n..(i + 1) * n].to_vec();
            let (r, w, k, v, kk, a) = (x(&x32[0]), x(&x32[1]), x(&x32[2]), x(&x32[3]), x(&x32[4]), x(&x32[5]));
            // rwkv7.rs wkv_head:
            let b: Vec<f32> = (0..n).map(|j| kk[j] * a[j]).collect();
            let mut yr = vec![0f32; n];
            for (ii, row) in s_ref.chunks_mut(n).enumerate() {
                let sa: f32 = -row.iter().zip(&kk).map(|(s, kk)| s * kk).sum::<f32>();
                let mut acc = 0f32;
                for j in 0..n {
                    let nv = row[j] * w[j] + sa * b[j] + v[ii] * k[j];
                    row[j] = nv;
                    acc += nv * r[j];
                }
                yr[ii] = acc;
            }
            assert_close_f32(&format!("wkv y step {i}"), &y[i * n..(i + 1) * n], &yr, 1e-6);
        }
        assert_close_f32("wkv final state", &s, &s_ref, 1e-6);
    }

    /// The bonus term: r, k, v, r_k gradients against central differences (T = 3, N = 5).
    #[test]
    fn wkv_bonus_gradients() {
        let mut rng = Rng::new(15);
        let (t, n) = (3usize, 5usize);
        let r = rand_vec(&mut rng, t * n, -1.0, 1.0);
        let k = rand_vec(&mut rng, t * n, -1.0, 1.0);
        let v = rand_vec(&mut rng, t * n, -1.0, 1.0);
        let rk = rand_vec(&mut rng, n, -1.0, 1.0);
        let c = rand_vec(&mut rng, t * n, -1.0, 1.0);
        let f = |r: &[f64], k: &[f64], v: &[f64], rk: &[f64]| {
            let mut y = vec![0.0; t * n];
            wkv_bonus_fwd(r, k, v, rk, &mut y);
            lin_loss(&c, &y)
        };
        let (mut dr, mut dk, mut dv, mut drk) = (off(t * n), off(t * n), off(t * n), off(n));
        wkv_bonus_bwd(&r, &k, &v, &rk, &c, &mut dr, &mut dk, &mut dv, Some(&mut drk));
        let (dr, dk, dv, drk) = (unoff(&dr), unoff(&dk), unoff(&dv), unoff(&drk));
        check_grad("bonus dr", &r, &dr, 1000, |x| f(x, &k, &v, &rk));
        check_grad("bonus dk", &k, &dk, 1000, |x| f(&r, x, &v, &rk));
        check_grad("bonus dv", &v, &dv, 1000, |x| f(&r, &k, x, &rk));
        check_grad("bonus drk", &rk, &drk, 1000, |x| f(&r, &k, &v, x));
    }

    /// f32 BPTT at RWKV-7's real head size (N = 64, T = 16, kk unit-norm as the model makes
    /// it) agrees with f64: every gradient within 1e-4 of its tensor's largest value. f32
    /// rounding of 64-term sums over 16 steps is about 1e-6 relative; 1e-4 is the golden
    /// set's gradient budget (1e-5 + 1e-3·|g|) taken per tensor, with margin.
    #[test]
    fn wkv_f32_backward_agrees_with_f64() {
        let (n, t) = (64usize, 16usize);
        let mut c = case(n, t, 16);
        let kk = c.x[4].clone();
        crate::train::norm::l2_normalize_fwd(&kk, n, 1e-12, &mut c.x[4]);
        let (d64, ds64) = grads(&c, 5);
        let x32: Vec<Vec<f32>> = c.x.iter().map(|v| v.iter().map(|&a| a as f32).collect()).collect();
        let inp = WkvInputs { r: &x32[0], w: &x32[1], k: &x32[2], v: &x32[3], kk: &x32[4], a: &x32[5] };
        let (s0, cy): (Vec<f32>, Vec<f32>) =
            (c.s0.iter().map(|&v| v as f32).collect(), c.cy.iter().map(|&v| v as f32).collect());
        let mut ds: Vec<f32> = c.cs.iter().map(|&v| v as f32).collect();
        let mut d: [Vec<f32>; 6] = std::array::from_fn(|_| vec![0f32; t * n]);
        let mut scratch = vec![0f32; wkv_scratch_len(n, t)];
        {
            let [dr, dw, dk, dv, dkk, da] = &mut d;
            let mut g = WkvGrads { dr, dw, dk, dv, dkk, da };
            wkv_bwd(n, &inp, &s0, &cy, &mut ds, &mut g, &mut scratch);
        }
        for (i, name) in ["r", "w", "k", "v", "kk", "a"].iter().enumerate() {
            let e = rel_max_err(&d[i], &d64[i]);
            assert!(e < 1e-4, "d{name}: f32 vs f64 relative max error {e:e}");
        }
        let e = rel_max_err(&ds, &ds64);
        assert!(e < 1e-4, "dS0: f32 vs f64 relative max error {e:e}");
    }

    /// One RWKV-7 head's time mix after the products (rwkv7.rs steps 3-7), composed from
    /// the kernels exactly as a model backward would chain them, against central
    /// differences of the whole composition: w = decay(w0 + zw), a = σ(a0 + za),
    /// kk = l2norm(k0 ⊙ k_k), k = k0 ⊙ (1 + (a − 1) ⊙ k_a), y = WKV, then GroupNorm
    /// (ln_x), plus the bonus, times g. Checks that the conventions (accumulation into shared gradients such
    /// as dk and da, the state in/out) compose. N = 6, T = 5.
    #[test]
    fn rwkv7_head_composition() {
        use crate::train::act::{bias_act_bwd, bias_act_fwd, gate_bwd, gate_fwd, Act};
        use crate::train::norm::{group_norm_bwd, group_norm_fwd, l2_normalize_bwd, l2_normalize_fwd};
        let (n, t) = (6usize, 5usize);
        let tn = t * n;
        let mut rng = Rng::new(17);
        // Inputs: r, zw, k0, v, za, g (each [T, N]) and S0.
        let x: [Vec<f64>; 6] = std::array::from_fn(|_| rand_vec(&mut rng, tn, -1.0, 1.0));
        let s0 = rand_vec(&mut rng, n * n, -0.5, 0.5);
        let (w0, a0) = (rand_vec(&mut rng, n, -1.0, 1.0), rand_vec(&mut rng, n, -1.0, 1.0));
        let (k_k, k_a) = (rand_vec(&mut rng, n, 0.5, 1.5), rand_vec(&mut rng, n, 0.0, 1.0));
        let (lnw, lnb, rk) =
            (rand_vec(&mut rng, n, 0.5, 1.5), rand_vec(&mut rng, n, -0.5, 0.5), rand_vec(&mut rng, n, -1.0, 1.0));
        let cy = rand_vec(&mut rng, tn, -1.0, 1.0);
        let eps = 64e-5;
        // Forward; returns L and the intermediates the backward needs.
        struct Fwd {
            w: Vec<f64>,
            a: Vec<f64>,
            kk_raw: Vec<f64>,
            kk: Vec<f64>,
            k: Vec<f64>,
            y: Vec<f64>,
            yb: Vec<f64>,
            loss: f64,
        }
        let fwd = |x: &[Vec<f64>; 6], s0: &[f64]| {
            let [r, zw, k0, v, za, g] = x;
            let (mut w, mut a, mut kk, mut y, mut yn, mut out) =
                (vec![0.0; tn], vec![0.0; tn], vec![0.0; tn], vec![0.0; tn], vec![0.0; tn], vec![0.0; tn]);
            bias_act_fwd(Act::Rwkv7Decay, zw, &w0, &mut w);
            bias_act_fwd(Act::Sigmoid, za, &a0, &mut a);
            let kk_raw: Vec<f64> = (0..tn).map(|i| k0[i] * k_k[i % n]).collect();
            l2_normalize_fwd(&kk_raw, n, 1e-12, &mut kk);
            let k: Vec<f64> = (0..tn).map(|i| k0[i] * (1.0 + (a[i] - 1.0) * k_a[i % n])).collect();
            let mut s = s0.to_vec();
            wkv_fwd(n, &WkvInputs { r, w: &w, k: &k, v, kk: &kk, a: &a }, &mut s, &mut y);
            group_norm_fwd(&y, 1, &lnw, &lnb, eps, &mut yn);
            let mut yb = yn;
            wkv_bonus_fwd(r, &k, v, &rk, &mut yb);
            gate_fwd(Act::Identity, &yb, g, &mut out);
            let loss = lin_loss(&cy, &out);
            Fwd { w, a, kk_raw, kk, k, y, yb, loss }
        };
        let f = fwd(&x, &s0);
        let [r, zw, k0, v, za, g] = &x;
        // Backward, last step first.
        let (mut dyb, mut dg) = (vec![0.0; tn], vec![0.0; tn]);
        gate_bwd(Act::Identity, &f.yb, g, &cy, &mut dyb, &mut dg);
        let (mut dr, mut dk, mut dv) = (vec![0.0; tn], vec![0.0; tn], vec![0.0; tn]);
        wkv_bonus_bwd(r, &f.k, v, &rk, &dyb, &mut dr, &mut dk, &mut dv, None);
        let mut dy = vec![0.0; tn];
        group_norm_bwd(&f.y, 1, &lnw, eps, &dyb, &mut dy, None, None);
        let (mut dw, mut dkk, mut da) = (vec![0.0; tn], vec![0.0; tn], vec![0.0; tn]);
        let mut ds = vec![0.0; n * n];
        {
            let mut gr = WkvGrads { dr: &mut dr, dw: &mut dw, dk: &mut dk, dv: &mut dv, dkk: &mut dkk, da: &mut da };
            let inp = WkvInputs { r, w: &f.w, k: &f.k, v, kk: &f.kk, a: &f.a };
            wkv_bwd(n, &inp, &s0, &dy, &mut ds, &mut gr, &mut vec![0.0; wkv_scratch_len(n, t)]);
        }
        let mut dk0 = vec![0.0; tn];
        for i in 0..tn {
            dk0[i] += dk[i] * (1.0 + (f.a[i] - 1.0) * k_a[i % n]);
            da[i] += dk[i] * k0[i] * k_a[i % n];
        }
        let mut dkk_raw = vec![0.0; tn];
        l2_normalize_bwd(&f.kk_raw, n, 1e-12, &dkk, &mut dkk_raw);
        for i in 0..tn {
            dk0[i] += dkk_raw[i] * k_k[i % n];
        }
        let (mut dza, mut dzw) = (vec![0.0; tn], vec![0.0; tn]);
        bias_act_bwd(Act::Sigmoid, za, &a0, &da, &mut dza, None);
        bias_act_bwd(Act::Rwkv7Decay, zw, &w0, &dw, &mut dzw, None);
        let grads = [dr, dzw, dk0, dv, dza, dg];
        for (idx, name) in ["r", "zw", "k0", "v", "za", "g"].iter().enumerate() {
            check_grad(&format!("head d{name}"), &x[idx], &grads[idx], 1000, |xi| {
                let mut xx = x.clone();
                xx[idx] = xi.to_vec();
                fwd(&xx, &s0).loss
            });
        }
        check_grad("head dS0", &s0, &ds, 1000, |s| fwd(&x, s).loss);
    }
}
