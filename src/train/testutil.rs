//! Helpers of the finite-difference tests: random inputs and the gradient checker.

use crate::rng::Rng;

/// `n` values uniform in [lo, hi), as f64.
pub fn rand_vec(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| lo + (hi - lo) * rng.uniform() as f64).collect()
}

/// Step of the central differences.
pub const EPS: f64 = 1e-6;

/// Tolerance of the finite-difference checks: `|fd − g| ≤ RTOL·max(|fd|, |g|) + ATOL`.
///
/// Why these: in f64 a central difference with step h = 1e-6 has truncation error
/// h²·|L'''|/6 ≈ 1e-13 on these smooth O(1) functions, and rounding error about
/// 1e-16·Σ|terms of L| / h ≈ 1e-9 for losses built from ≤ a few hundred O(1) terms. So a
/// correct gradient agrees to ~1e-9 absolute; ATOL = 1e-7 leaves a 100× margin, and RTOL =
/// 1e-6 covers large gradients. A wrong backward (a missing term, a transposed index) is
/// off by O(1) relative, six orders above this.
pub const RTOL: f64 = 1e-6;
/// See [`RTOL`].
pub const ATOL: f64 = 1e-7;

/// Checks `grad` (the analytic dL/dx at `x0`) against central differences of `loss`, on
/// every coordinate when `x0` has at most `max_coords`, else on `max_coords` random ones.
/// Panics naming the tensor and coordinate of the first mismatch; returns the largest
/// |difference − analytic| seen.
pub fn check_grad(name: &str, x0: &[f64], grad: &[f64], max_coords: usize, mut loss: impl FnMut(&[f64]) -> f64) -> f64 {
    assert_eq!(x0.len(), grad.len(), "{name}: gradient length");
    let mut rng = Rng::new(0x5eed ^ x0.len() as u64);
    let coords: Vec<usize> = if x0.len() <= max_coords {
        (0..x0.len()).collect()
    } else {
        (0..max_coords).map(|_| (rng.next_u64() % x0.len() as u64) as usize).collect()
    };
    let mut x = x0.to_vec();
    let mut worst = 0f64;
    for &i in &coords {
        x[i] = x0[i] + EPS;
        let lp = loss(&x);
        x[i] = x0[i] - EPS;
        let lm = loss(&x);
        x[i] = x0[i];
        let fd = (lp - lm) / (2.0 * EPS);
        let err = (fd - grad[i]).abs();
        worst = worst.max(err);
        let tol = RTOL * fd.abs().max(grad[i].abs()) + ATOL;
        assert!(err <= tol, "{name}[{i}]: analytic {} vs finite difference {fd} (err {err:e}, tol {tol:e})", grad[i]);
    }
    // A check that compares only zeros proves nothing: the gradients must be non-trivial.
    assert!(grad.iter().any(|g| g.abs() > 1e-6), "{name}: gradient is all zero");
    worst
}

/// `Σ c_i·y_i`: the random linear loss whose gradient wrt `y` is `c`.
pub fn lin_loss(c: &[f64], y: &[f64]) -> f64 {
    c.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// Asserts `|a − b| ≤ tol·(1 + |b|)` elementwise (forward agreement with an inference kernel).
pub fn assert_close_f32(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{name}[{i}]: {x} vs {y}");
    }
}

/// Start value of gradient buffers in the tests: the backward passes accumulate, so they
/// are called on buffers holding `OFF` and the offset is taken off before the check (a
/// backward that overwrote instead would fail).
pub const OFF: f64 = 0.25;

/// `n` values equal to [`OFF`].
pub fn off(n: usize) -> Vec<f64> {
    vec![OFF; n]
}

/// `v − OFF`.
pub fn unoff(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x - OFF).collect()
}

/// `max|a − b| / max|b|` over two tensors (`a` f32, `b` the f64 reference): the golden
/// set's per-tensor measure of a gradient's error.
pub fn rel_max_err(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs())) / scale.max(1e-300)
}
