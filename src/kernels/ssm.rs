//! Inner loops of the Mamba selective scans: one state row updated and read out per call.
//!
//! Each has one portable body, compiled twice: as is, and inside an AVX2+FMA function picked
//! at run time (the body is plain Rust over fixed blocks of 8 lanes, which the compiler
//! vectorizes to the width the target allows).

use super::dot::{isa, Isa};
use super::exp_fast;

/// Mamba-1, one channel and token: `h ← exp(dt·a) ⊙ h + dtu·b`, returns `h·c`
/// (all slices of the state size S; `dtu` = dt·u).
#[inline]
pub fn scan_update_dot(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::scan_update_dot(h, a, dt, dtu, b, c) };
    }
    scan_body(h, a, dt, dtu, b, c)
}

/// Mamba-2, one head row p and token: `h ← decay·h + dx·b`, returns `h·c`.
#[inline]
pub fn decay_update_dot(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::decay_update_dot(h, decay, dx, b, c) };
    }
    decay_body(h, decay, dx, b, c)
}

#[inline(always)]
fn scan_body(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
    let n = h.len();
    assert!(a.len() == n && b.len() == n && c.len() == n, "scan_update_dot: lengths");
    let mut acc = [0f32; 8];
    let blocks = n / 8 * 8;
    for (((h, a), b), c) in
        h[..blocks].chunks_exact_mut(8).zip(a.chunks_exact(8)).zip(b.chunks_exact(8)).zip(c.chunks_exact(8))
    {
        for l in 0..8 {
            let v = exp_fast(dt * a[l]) * h[l] + dtu * b[l];
            h[l] = v;
            acc[l] += v * c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for j in blocks..n {
        let v = exp_fast(dt * a[j]) * h[j] + dtu * b[j];
        h[j] = v;
        s += v * c[j];
    }
    s
}

#[inline(always)]
fn decay_body(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
    let n = h.len();
    assert!(b.len() == n && c.len() == n, "decay_update_dot: lengths");
    let mut acc = [0f32; 8];
    let blocks = n / 8 * 8;
    for ((h, b), c) in h[..blocks].chunks_exact_mut(8).zip(b.chunks_exact(8)).zip(c.chunks_exact(8)) {
        for l in 0..8 {
            let v = h[l] * decay + dx * b[l];
            h[l] = v;
            acc[l] += v * c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for j in blocks..n {
        let v = h[j] * decay + dx * b[j];
        h[j] = v;
        s += v * c[j];
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scan_update_dot(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
        super::scan_body(h, a, dt, dtu, b, c)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn decay_update_dot(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
        super::decay_body(h, decay, dx, b, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both scans equal a plain f64 evaluation, on lengths with and without a tail.
    #[test]
    fn scans_match_reference() {
        let mut seed = 5u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 16, 19, 128] {
            let h0: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let a: Vec<f32> = (0..n).map(|_| -8.0 * rnd().abs()).collect();
            let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let c: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let (dt, dtu) = (0.07f32, 0.03f32);
            let mut h = h0.clone();
            let y = scan_update_dot(&mut h, &a, dt, dtu, &b, &c);
            let mut want = 0f64;
            for j in 0..n {
                let v = (dt as f64 * a[j] as f64).exp() * h0[j] as f64 + dtu as f64 * b[j] as f64;
                assert!((h[j] as f64 - v).abs() < 1e-6, "scan n={n} h[{j}]");
                want += v * c[j] as f64;
            }
            assert!((y as f64 - want).abs() < 1e-5, "scan n={n}: {y} vs {want}");
            let mut h = h0.clone();
            let y = decay_update_dot(&mut h, 0.9, 0.2, &b, &c);
            let want: f64 = (0..n).map(|j| (0.9 * h0[j] as f64 + 0.2 * b[j] as f64) * c[j] as f64).sum();
            assert!((y as f64 - want).abs() < 1e-5, "decay n={n}: {y} vs {want}");
        }
    }
}
