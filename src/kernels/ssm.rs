//! Inner loops of the Mamba selective scans (one state row updated and read out per call)
//! and of RWKV-7's WKV (one head's state per call).
//!
//! Each has one portable body, compiled twice: as is, and inside an AVX2+FMA function picked
//! at run time (the body is plain Rust over fixed blocks of 8 lanes, which the compiler
//! vectorizes to the width the target allows). On AArch64 a NEON version written with
//! intrinsics (two 4-lane registers per block of 8, [`exp_fast`] as [`neon::exp4`]) does the
//! body's very arithmetic, lane for lane and unfused, so it returns the same bits.

#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::scan_update_dot(h, a, dt, dtu, b, c) };
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::decay_update_dot(h, decay, dx, b, c) };
    }
    decay_body(h, decay, dx, b, c)
}

/// RWKV-7, one head and token, over its state `s` `[N(value), N(key)]`: for each row i,
/// `s_i ← s_i ⊙ w + (s_i·(−kk))·b + v_i·k`, then `y_i = s_i·r` (all slices of N but `s`).
/// Two passes over the row (the first reduction, then the update fused with the second).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn wkv7_update(s: &mut [f32], w: &[f32], b: &[f32], k: &[f32], v: &[f32], kk: &[f32], r: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::wkv7_update(s, w, b, k, v, kk, r, y) };
    }
    wkv7_body(s, w, b, k, v, kk, r, y)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn wkv7_body(s: &mut [f32], w: &[f32], b: &[f32], k: &[f32], v: &[f32], kk: &[f32], r: &[f32], y: &mut [f32]) {
    let n = r.len();
    assert!(
        s.len() == n * n && [w.len(), b.len(), k.len(), v.len(), kk.len(), y.len()].iter().all(|&l| l == n),
        "wkv7_update: lengths"
    );
    let blocks = n / 8 * 8;
    for ((row, &vi), yi) in s.chunks_exact_mut(n).zip(v).zip(y.iter_mut()) {
        let mut acc = [0f32; 8];
        for (rs, ks) in row[..blocks].chunks_exact(8).zip(kk.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += rs[l] * ks[l];
            }
        }
        let mut dot: f32 = acc.iter().sum();
        for j in blocks..n {
            dot += row[j] * kk[j];
        }
        let sa = -dot;
        let mut acc = [0f32; 8];
        for ((((rs, ws), bs), ks), rr) in row[..blocks]
            .chunks_exact_mut(8)
            .zip(w.chunks_exact(8))
            .zip(b.chunks_exact(8))
            .zip(k.chunks_exact(8))
            .zip(r.chunks_exact(8))
        {
            for l in 0..8 {
                let x = rs[l] * ws[l] + sa * bs[l] + vi * ks[l];
                rs[l] = x;
                acc[l] += x * rr[l];
            }
        }
        let mut out: f32 = acc.iter().sum();
        for j in blocks..n {
            let x = row[j] * w[j] + sa * b[j] + vi * k[j];
            row[j] = x;
            out += x * r[j];
        }
        *yi = out;
    }
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

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn wkv7_update(
        s: &mut [f32],
        w: &[f32],
        b: &[f32],
        k: &[f32],
        v: &[f32],
        kk: &[f32],
        r: &[f32],
        y: &mut [f32],
    ) {
        super::wkv7_body(s, w, b, k, v, kk, r, y)
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    /// [`super::exp_fast`] on four lanes, the same operations in the same order (no fused
    /// multiply-adds, as Rust does not contract the scalar ones), hence the same bits.
    #[inline]
    #[target_feature(enable = "neon")]
    pub fn exp4(x: float32x4_t) -> float32x4_t {
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
        let round = vdupq_n_f32(12_582_912.0);
        let m = vaddq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)), round);
        let n = vsubq_f32(m, round);
        let r =
            vsubq_f32(vsubq_f32(x, vmulq_f32(n, vdupq_n_f32(0.693_359_4))), vmulq_f32(n, vdupq_n_f32(-2.121_944_4e-4)));
        let z = vmulq_f32(r, r);
        let step = |p: float32x4_t, c: f32| vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(c));
        let p = step(
            step(step(step(step(vdupq_n_f32(1.987_569_1e-4), 1.398_2e-3), 8.333_452e-3), 4.166_579_6e-2), 0.166_666_65),
            0.5,
        );
        let y = vaddq_f32(vaddq_f32(vmulq_f32(p, z), r), vdupq_n_f32(1.0));
        let bits = vshlq_n_u32::<23>(vsubq_u32(vreinterpretq_u32_f32(m), vdupq_n_u32(0x4B40_0000 - 127)));
        vmulq_f32(y, vreinterpretq_f32_u32(bits))
    }

    /// Sums the eight lanes of `(lo, hi)` in the order of the scalar body's `acc.iter().sum()`.
    #[inline]
    #[target_feature(enable = "neon")]
    fn sum8(lo: float32x4_t, hi: float32x4_t) -> f32 {
        let mut l = [0f32; 8];
        // SAFETY: `l` has room for the 8 floats stored.
        unsafe {
            vst1q_f32(l.as_mut_ptr(), lo);
            vst1q_f32(l.as_mut_ptr().add(4), hi);
        }
        l.iter().sum()
    }

    /// Mamba-1 scan row, blocks of 8 lanes in two registers.
    #[target_feature(enable = "neon")]
    pub fn scan_update_dot(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
        let n = h.len();
        assert!(a.len() == n && b.len() == n && c.len() == n, "scan_update_dot: lengths");
        let (vdt, vdtu) = (vdupq_n_f32(dt), vdupq_n_f32(dtu));
        let mut acc = [vdupq_n_f32(0.0); 2];
        let blocks = n / 8 * 8;
        let mut i = 0;
        while i < blocks {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 4 * k;
                // SAFETY: j + 4 <= blocks <= n, the length of all four slices.
                unsafe {
                    let e = exp4(vmulq_f32(vdt, vld1q_f32(a.as_ptr().add(j))));
                    let v = vaddq_f32(
                        vmulq_f32(e, vld1q_f32(h.as_ptr().add(j))),
                        vmulq_f32(vdtu, vld1q_f32(b.as_ptr().add(j))),
                    );
                    vst1q_f32(h.as_mut_ptr().add(j), v);
                    *acc = vaddq_f32(*acc, vmulq_f32(v, vld1q_f32(c.as_ptr().add(j))));
                }
            }
            i += 8;
        }
        let mut s = sum8(acc[0], acc[1]);
        for j in blocks..n {
            let v = super::exp_fast(dt * a[j]) * h[j] + dtu * b[j];
            h[j] = v;
            s += v * c[j];
        }
        s
    }

    /// Mamba-2 scan row, blocks of 8 lanes in two registers.
    #[target_feature(enable = "neon")]
    pub fn decay_update_dot(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
        let n = h.len();
        assert!(b.len() == n && c.len() == n, "decay_update_dot: lengths");
        let (vdecay, vdx) = (vdupq_n_f32(decay), vdupq_n_f32(dx));
        let mut acc = [vdupq_n_f32(0.0); 2];
        let blocks = n / 8 * 8;
        let mut i = 0;
        while i < blocks {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 4 * k;
                // SAFETY: j + 4 <= blocks <= n, the length of all three slices.
                unsafe {
                    let v = vaddq_f32(
                        vmulq_f32(vld1q_f32(h.as_ptr().add(j)), vdecay),
                        vmulq_f32(vdx, vld1q_f32(b.as_ptr().add(j))),
                    );
                    vst1q_f32(h.as_mut_ptr().add(j), v);
                    *acc = vaddq_f32(*acc, vmulq_f32(v, vld1q_f32(c.as_ptr().add(j))));
                }
            }
            i += 8;
        }
        let mut s = sum8(acc[0], acc[1]);
        for j in blocks..n {
            let v = h[j] * decay + dx * b[j];
            h[j] = v;
            s += v * c[j];
        }
        s
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
    /// The scan bodies' portable reference (what `SUTRA_FORCE_SCALAR=1` runs) equals every
    /// SIMD path bit for bit on odd lengths, h included.
    #[test]
    fn simd_scans_equal_the_portable_body_bitwise() {
        type Scan = fn(&mut [f32], &[f32], f32, f32, &[f32], &[f32]) -> f32;
        type Decay = fn(&mut [f32], f32, f32, &[f32], &[f32]) -> f32;
        #[allow(unused_mut)]
        let mut paths: Vec<(&str, Scan, Decay)> = vec![("dispatch", scan_update_dot, decay_update_dot)];
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        paths.push((
            "neon",
            // SAFETY (of both calls): NEON is enabled for this target at compile time.
            |h, a, dt, dtu, b, c| unsafe { neon::scan_update_dot(h, a, dt, dtu, b, c) },
            |h, decay, dx, b, c| unsafe { neon::decay_update_dot(h, decay, dx, b, c) },
        ));
        let mut seed = 41u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 33, 4097] {
            let h0: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let a: Vec<f32> = (0..n).map(|_| -8.0 * rnd().abs()).collect();
            let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let c: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let mut hw = h0.clone();
            let yw = scan_body(&mut hw, &a, 0.07, 0.03, &b, &c);
            let mut dw = h0.clone();
            let zw = decay_body(&mut dw, 0.9, 0.2, &b, &c);
            for (name, scan, decay) in &paths {
                let mut h = h0.clone();
                assert_eq!(scan(&mut h, &a, 0.07, 0.03, &b, &c).to_bits(), yw.to_bits(), "{name} scan n={n}");
                assert!(h.iter().zip(&hw).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} scan h n={n}");
                let mut h = h0.clone();
                assert_eq!(decay(&mut h, 0.9, 0.2, &b, &c).to_bits(), zw.to_bits(), "{name} decay n={n}");
                assert!(h.iter().zip(&dw).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} decay h n={n}");
            }
        }
    }

    /// The RWKV-7 head step equals an f64 evaluation of its formula (state and output), and
    /// the SIMD path the portable body bit for bit, on odd sizes.
    #[test]
    fn wkv7_update_matches_the_formula() {
        let mut seed = 43u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 33, 64] {
            let s0: Vec<f32> = (0..n * n).map(|_| rnd()).collect();
            let vecs: Vec<Vec<f32>> = (0..7).map(|_| (0..n).map(|_| rnd()).collect()).collect();
            let (w, b, k, v, kk, r) = (&vecs[0], &vecs[1], &vecs[2], &vecs[3], &vecs[4], &vecs[5]);
            let (mut s, mut y) = (s0.clone(), vec![0f32; n]);
            wkv7_update(&mut s, w, b, k, v, kk, r, &mut y);
            for i in 0..n {
                let row = &s0[i * n..(i + 1) * n];
                let sa: f64 = -(0..n).map(|j| row[j] as f64 * kk[j] as f64).sum::<f64>();
                let mut yi = 0f64;
                for j in 0..n {
                    let x = row[j] as f64 * w[j] as f64 + sa * b[j] as f64 + v[i] as f64 * k[j] as f64;
                    assert!((s[i * n + j] as f64 - x).abs() < 1e-5, "wkv7 n={n} s[{i}][{j}]");
                    yi += x * r[j] as f64;
                }
                assert!((y[i] as f64 - yi).abs() < 1e-4, "wkv7 n={n} y[{i}]: {} vs {yi}", y[i]);
            }
            let (mut s2, mut y2) = (s0.clone(), vec![0f32; n]);
            wkv7_body(&mut s2, w, b, k, v, kk, r, &mut y2);
            assert!(s.iter().chain(&y).zip(s2.iter().chain(&y2)).all(|(a, b)| a.to_bits() == b.to_bits()), "n={n}");
        }
    }

    /// The four-lane exponential returns exp_fast's bits over the whole range and beyond the
    /// clamps (and so inherits its 3e-7 bound against libm, checked in `kernels::tests`).
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    #[test]
    fn neon_exp_equals_exp_fast() {
        use std::arch::aarch64::*;
        let mut xs: Vec<f32> = (0..=200_000).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
        xs.extend([-1e30, -88.5, -87.0, 0.0, -0.0, 1e-30, 88.0, 89.0, 1e30]);
        for chunk in xs.chunks(4).filter(|c| c.len() == 4) {
            let mut out = [0f32; 4];
            // SAFETY: chunk and out hold 4 floats each; NEON is enabled for this target.
            unsafe { vst1q_f32(out.as_mut_ptr(), neon::exp4(vld1q_f32(chunk.as_ptr()))) };
            for (x, y) in chunk.iter().zip(out) {
                assert_eq!(y.to_bits(), exp_fast(*x).to_bits(), "exp4({x})");
            }
        }
    }
}
