//! Dot products of f32 activations with f32, bf16 or f16 weight rows.
//!
//! Each product has a portable scalar reference (`*_scalar`) and, on x86-64, an AVX2+FMA path
//! (F16C for half floats) picked once at run time. Tests compare every SIMD path with its
//! reference on odd lengths.

use once_cell::sync::Lazy;

/// Which instruction set the kernels use on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (auto-vectorized by the compiler where it can).
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// x86-64 AVX-512 (F and BW) on top of AVX2: used by the quantized dot products, which
    /// are compute-bound; the float ones are memory-bound and keep the AVX2 code.
    Avx512,
}

static ISA: Lazy<Isa> = Lazy::new(|| {
    if std::env::var_os("SUTRA_FORCE_SCALAR").is_some_and(|v| v != "0") {
        return Isa::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            let no512 = std::env::var_os("SUTRA_NO_AVX512").is_some_and(|v| v != "0");
            if !no512 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                return Isa::Avx512;
            }
            return Isa::Avx2;
        }
    }
    Isa::Scalar
});

/// The instruction set chosen at start-up (`SUTRA_FORCE_SCALAR=1` forces the portable path,
/// `SUTRA_NO_AVX512=1` stops at AVX2).
pub fn isa() -> Isa {
    *ISA
}

/// Σ a[i]·b[i], portable reference.
pub fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    s
}

/// Σ bf16(w[i])·x[i], portable reference.
pub fn dot_bf16_scalar(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += crate::tensor::bf16_to_f32(w[c * 8 + l]) * x[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..n {
        s += crate::tensor::bf16_to_f32(w[i]) * x[i];
    }
    s
}

/// Σ f16(w[i])·x[i], portable reference.
pub fn dot_f16_scalar(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut s = 0f32;
    for i in 0..n {
        s += crate::tensor::f16_to_f32(w[i]) * x[i];
    }
    s
}

/// Σ a[i]·b[i] with the best available instructions.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { x86::dot_f32(a, b) };
    }
    dot_f32_scalar(a, b)
}

/// Σ bf16(w[i])·x[i] with the best available instructions.
#[inline]
pub fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { x86::dot_bf16(w, x) };
    }
    dot_bf16_scalar(w, x)
}

/// Σ f16(w[i])·x[i] with the best available instructions.
#[inline]
pub fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { x86::dot_f16(w, x) };
    }
    dot_f16_scalar(w, x)
}

/// The 3×4 block of dot products of three rows `w` with four vectors `x`:
/// `out[r][t] = w[r]·x[t]`. The register-blocked core of the prefill product.
#[inline]
pub fn block3x4(w: [&[f32]; 3], x: [&[f32]; 4]) -> [[f32; 4]; 3] {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { x86::block3x4(w, x) };
    }
    block3x4_scalar(w, x)
}

/// Portable reference of [`block3x4`].
pub fn block3x4_scalar(w: [&[f32]; 3], x: [&[f32]; 4]) -> [[f32; 4]; 3] {
    let mut out = [[0f32; 4]; 3];
    for r in 0..3 {
        for t in 0..4 {
            out[r][t] = dot_f32_scalar(w[r], x[t]);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// How far ahead of the current position weight lines are prefetched, in bytes.
    const PREFETCH: usize = 4096;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Eight bf16 values at `p` widened to f32.
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m256 {
        // SAFETY (caller): 8 readable u16 at p.
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at offsets i..i+8 <= n of both slices.
        while i + 32 <= n {
            _mm_prefetch(pa.add(i).cast::<i8>().wrapping_add(PREFETCH), _MM_HINT_T0);
            _mm_prefetch(pa.add(i).cast::<i8>().wrapping_add(PREFETCH + 64), _MM_HINT_T0);
            for (l, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * l)), _mm256_loadu_ps(pb.add(i + 8 * l)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 elements at offsets i..i+8 <= n of both slices.
        while i + 32 <= n {
            // Weights stream from memory: ask for the lines PREFETCH bytes ahead (a hint; it
            // never faults, even past the end of the slice).
            _mm_prefetch(pw.add(i).cast::<i8>().wrapping_add(PREFETCH), _MM_HINT_T0);
            for (l, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(load_bf16(pw.add(i + 8 * l)), _mm256_loadu_ps(px.add(i + 8 * l)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(load_bf16(pw.add(i)), _mm256_loadu_ps(px.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            s += crate::tensor::bf16_to_f32(w[i]) * x[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 elements at offsets i..i+8 <= n of both slices.
        while i + 32 <= n {
            _mm_prefetch(pw.add(i).cast::<i8>().wrapping_add(PREFETCH), _MM_HINT_T0);
            for (l, acc) in acc.iter_mut().enumerate() {
                let h = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i + 8 * l) as *const __m128i));
                *acc = _mm256_fmadd_ps(h, _mm256_loadu_ps(px.add(i + 8 * l)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let h = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i) as *const __m128i));
            acc[0] = _mm256_fmadd_ps(h, _mm256_loadu_ps(px.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        while i < n {
            s += crate::tensor::f16_to_f32(w[i]) * x[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block3x4(w: [&[f32]; 3], x: [&[f32]; 4]) -> [[f32; 4]; 3] {
        let n = x.iter().chain(w.iter()).fold(usize::MAX, |m, v| m.min(v.len()));
        let pw = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr()];
        let px = [x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr()];
        let mut acc = [[_mm256_setzero_ps(); 4]; 3];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at offsets i..i+8 <= n of each slice.
        while i + 8 <= n {
            let wv = [_mm256_loadu_ps(pw[0].add(i)), _mm256_loadu_ps(pw[1].add(i)), _mm256_loadu_ps(pw[2].add(i))];
            for t in 0..4 {
                let xv = _mm256_loadu_ps(px[t].add(i));
                for r in 0..3 {
                    acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 8;
        }
        let mut out = [[0f32; 4]; 3];
        for r in 0..3 {
            for t in 0..4 {
                let mut s = hsum(acc[r][t]);
                for j in i..n {
                    s += w[r][j] * x[t][j];
                }
                out[r][t] = s;
            }
        }
        out
    }
}
