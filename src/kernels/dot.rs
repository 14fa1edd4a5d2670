//! Dot products of f32 activations with f32, bf16 or f16 weight rows.
//!
//! Each product has a portable scalar reference (`*_scalar`) and SIMD paths picked once at run
//! time: on x86-64 AVX2+FMA (F16C for half floats), on AArch64 NEON (baseline there, so always
//! taken unless `SUTRA_FORCE_SCALAR=1`). Tests compare every SIMD path with its reference on
//! odd lengths.

use once_cell::sync::Lazy;

/// Which instruction set the kernels use on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (auto-vectorized by the compiler where it can).
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// x86-64 AVX-512 (F and BW) on top of AVX2: used where the work is compute-bound (the
    /// quantized dot products, the f32 block of the prefill product); the float dot products
    /// of decode are memory-bound and keep the AVX2 code.
    Avx512,
    /// AArch64 Advanced SIMD (NEON), baseline on every AArch64 CPU.
    Neon,
    /// NEON with the Armv8.2 dot-product extension (`SDOT`): used by the quantized dot
    /// products; the float ones are the same NEON code.
    NeonDotprod,
}

impl Isa {
    /// The lower-case name reported by [`system_info`]: "scalar", "avx2", "avx512", "neon",
    /// "neon+dotprod".
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon+dotprod",
        }
    }
}

static ISA: Lazy<Isa> = Lazy::new(detect);

/// The best instruction set this CPU has (or what the environment variables of [`isa`] ask).
#[allow(unreachable_code)] // On AArch64 the NEON branch always returns.
fn detect() -> Isa {
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        let no_dotprod = std::env::var_os("SUTRA_NO_DOTPROD").is_some_and(|v| v != "0");
        if !no_dotprod && std::arch::is_aarch64_feature_detected!("dotprod") {
            return Isa::NeonDotprod;
        }
        return Isa::Neon;
    }
    Isa::Scalar
}

/// The instruction set chosen at start-up (`SUTRA_FORCE_SCALAR=1` forces the portable path,
/// `SUTRA_NO_AVX512=1` stops at AVX2, `SUTRA_NO_DOTPROD=1` at plain NEON).
pub fn isa() -> Isa {
    *ISA
}

/// One line naming the CPU features found and the kernel path chosen, e.g.
/// "x86_64 avx2 fma f16c avx512f avx512bw; kernels: avx512" or
/// "aarch64 neon dotprod; kernels: neon+dotprod" (the text of `sutra_system_info`).
pub fn system_info() -> String {
    #[allow(unused_mut)]
    let mut found: Vec<&str> = vec![std::env::consts::ARCH];
    #[cfg(target_arch = "x86_64")]
    {
        let features = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ];
        found.extend(features.iter().filter(|f| f.1).map(|f| f.0));
    }
    #[cfg(target_arch = "aarch64")]
    {
        let features = [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
            ("sve", std::arch::is_aarch64_feature_detected!("sve")),
        ];
        found.extend(features.iter().filter(|f| f.1).map(|f| f.0));
    }
    let forced = match isa() {
        Isa::Scalar if std::env::var_os("SUTRA_FORCE_SCALAR").is_some_and(|v| v != "0") => " (SUTRA_FORCE_SCALAR)",
        _ => "",
    };
    format!("{}; kernels: {}{forced}", found.join(" "), isa().name())
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::dot_f32(a, b) };
    }
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::dot_bf16(w, x) };
    }
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::dot_f16(w, x) };
    }
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
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::block3x4(w, x) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY: AVX-512 F (and AVX2, FMA) were detected at run time.
        return unsafe { x86::block3x4_512(w, x) };
    }
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

    /// [`block3x4`] on 16-lane registers (the prefill product is compute-bound: twice the
    /// multiply-adds per instruction), the rest by the 8-lane step and scalars.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn block3x4_512(w: [&[f32]; 3], x: [&[f32]; 4]) -> [[f32; 4]; 3] {
        let n = x.iter().chain(w.iter()).fold(usize::MAX, |m, v| m.min(v.len()));
        let pw = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr()];
        let px = [x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr()];
        let mut acc = [[_mm512_setzero_ps(); 4]; 3];
        let mut i = 0;
        // SAFETY: every load reads 16 floats at offsets i..i+16 <= n of each slice.
        while i + 16 <= n {
            let wv = [_mm512_loadu_ps(pw[0].add(i)), _mm512_loadu_ps(pw[1].add(i)), _mm512_loadu_ps(pw[2].add(i))];
            for t in 0..4 {
                let xv = _mm512_loadu_ps(px[t].add(i));
                for r in 0..3 {
                    acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 16;
        }
        let mut out = [[0f32; 4]; 3];
        for r in 0..3 {
            for t in 0..4 {
                let mut s = _mm512_reduce_add_ps(acc[r][t]);
                for j in i..n {
                    s += w[r][j] * x[t][j];
                }
                out[r][t] = s;
            }
        }
        out
    }
}

/// The AArch64 paths: the same blocking as the x86 ones in 128-bit registers (four f32 lanes),
/// so the 32-wide step of a dot is eight accumulators and the 3×4 block twelve.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) mod neon {
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// How far ahead of the current position weight lines are prefetched, in bytes.
    const PREFETCH: usize = 4096;

    /// Asks for the cache line holding `p` (`prfm`: a hint that never faults, even on an
    /// address past the end of a slice or unmapped).
    #[inline(always)]
    pub(crate) fn prefetch(p: *const u8) {
        // SAFETY: PRFM reads nothing architecturally visible, writes nothing and cannot fault.
        unsafe { asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags)) }
    }

    /// Eight bf16 values at `p` widened to f32 (a bf16 is the high half of an f32).
    ///
    /// # Safety
    /// 8 readable u16 at `p`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load_bf16(p: *const u16) -> (float32x4_t, float32x4_t) {
        // SAFETY (caller): 8 readable u16 at p.
        let h = unsafe { vld1q_u16(p) };
        (vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))), vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)))
    }

    /// Eight IEEE half floats at `p` widened to f32 by `fcvtl`/`fcvtl2` (baseline Armv8
    /// instructions; Rust's `vcvt_f32_f16` still needs the unstable `f16` type).
    ///
    /// # Safety
    /// 8 readable u16 at `p`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load_f16(p: *const u16) -> (float32x4_t, float32x4_t) {
        // SAFETY (caller): 8 readable u16 at p.
        let h = unsafe { vld1q_u16(p) };
        let (lo, hi): (float32x4_t, float32x4_t);
        // SAFETY: register-only conversions, no memory access; FCVTL is part of base AdvSIMD.
        unsafe {
            asm!(
                "fcvtl {lo:v}.4s, {h:v}.4h",
                "fcvtl2 {hi:v}.4s, {h:v}.8h",
                lo = out(vreg) lo,
                hi = out(vreg) hi,
                h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        (lo, hi)
    }

    /// The sum of eight accumulators' lanes.
    #[inline]
    #[target_feature(enable = "neon")]
    fn hsum8(acc: &[float32x4_t; 8]) -> f32 {
        let a = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let b = vaddq_f32(vaddq_f32(acc[4], acc[5]), vaddq_f32(acc[6], acc[7]));
        vaddvq_f32(vaddq_f32(a, b))
    }

    /// Σ a[i]·b[i]: 32 products per step in eight accumulators (the AVX2 step of 4×8 lanes).
    #[target_feature(enable = "neon")]
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 8];
        let mut i = 0;
        while i + 32 <= n {
            prefetch(pa.wrapping_add(i).cast::<u8>().wrapping_add(PREFETCH));
            prefetch(pa.wrapping_add(i).cast::<u8>().wrapping_add(PREFETCH + 64));
            for (l, acc) in acc.iter_mut().enumerate() {
                // SAFETY: reads 4 floats at i+4l..i+4l+4 <= i+32 <= n of both slices.
                let (va, vb) = unsafe { (vld1q_f32(pa.add(i + 4 * l)), vld1q_f32(pb.add(i + 4 * l))) };
                *acc = vfmaq_f32(*acc, va, vb);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: reads 8 floats at i..i+8 <= n of both slices.
            unsafe {
                acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                acc[1] = vfmaq_f32(acc[1], vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
            }
            i += 8;
        }
        let mut s = hsum8(&acc);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// Σ bf16(w[i])·x[i], blocked as [`dot_f32`].
    #[target_feature(enable = "neon")]
    pub fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 8];
        let mut i = 0;
        while i + 32 <= n {
            prefetch(pw.wrapping_add(i).cast::<u8>().wrapping_add(PREFETCH));
            for l in 0..4 {
                // SAFETY: reads 8 elements at i+8l..i+8l+8 <= i+32 <= n of both slices.
                let ((w0, w1), x0, x1) = unsafe {
                    (load_bf16(pw.add(i + 8 * l)), vld1q_f32(px.add(i + 8 * l)), vld1q_f32(px.add(i + 8 * l + 4)))
                };
                acc[2 * l] = vfmaq_f32(acc[2 * l], w0, x0);
                acc[2 * l + 1] = vfmaq_f32(acc[2 * l + 1], w1, x1);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: reads 8 elements at i..i+8 <= n of both slices.
            let ((w0, w1), x0, x1) = unsafe { (load_bf16(pw.add(i)), vld1q_f32(px.add(i)), vld1q_f32(px.add(i + 4))) };
            acc[0] = vfmaq_f32(acc[0], w0, x0);
            acc[1] = vfmaq_f32(acc[1], w1, x1);
            i += 8;
        }
        let mut s = hsum8(&acc);
        while i < n {
            s += crate::tensor::bf16_to_f32(w[i]) * x[i];
            i += 1;
        }
        s
    }

    /// Σ f16(w[i])·x[i], blocked as [`dot_f32`].
    #[target_feature(enable = "neon")]
    pub fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 8];
        let mut i = 0;
        while i + 32 <= n {
            prefetch(pw.wrapping_add(i).cast::<u8>().wrapping_add(PREFETCH));
            for l in 0..4 {
                // SAFETY: reads 8 elements at i+8l..i+8l+8 <= i+32 <= n of both slices.
                let ((w0, w1), x0, x1) = unsafe {
                    (load_f16(pw.add(i + 8 * l)), vld1q_f32(px.add(i + 8 * l)), vld1q_f32(px.add(i + 8 * l + 4)))
                };
                acc[2 * l] = vfmaq_f32(acc[2 * l], w0, x0);
                acc[2 * l + 1] = vfmaq_f32(acc[2 * l + 1], w1, x1);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: reads 8 elements at i..i+8 <= n of both slices.
            let ((w0, w1), x0, x1) = unsafe { (load_f16(pw.add(i)), vld1q_f32(px.add(i)), vld1q_f32(px.add(i + 4))) };
            acc[0] = vfmaq_f32(acc[0], w0, x0);
            acc[1] = vfmaq_f32(acc[1], w1, x1);
            i += 8;
        }
        let mut s = hsum8(&acc);
        while i < n {
            s += crate::tensor::f16_to_f32(w[i]) * x[i];
            i += 1;
        }
        s
    }

    /// The 3×4 block: twelve accumulators, each weight load used four times and each
    /// activation load three times (32 vector registers hold them with room to spare).
    #[target_feature(enable = "neon")]
    pub fn block3x4(w: [&[f32]; 3], x: [&[f32]; 4]) -> [[f32; 4]; 3] {
        let n = x.iter().chain(w.iter()).fold(usize::MAX, |m, v| m.min(v.len()));
        let pw = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr()];
        let px = [x[0].as_ptr(), x[1].as_ptr(), x[2].as_ptr(), x[3].as_ptr()];
        let mut acc = [[vdupq_n_f32(0.0); 4]; 3];
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: every load reads 4 floats at offsets i..i+4 <= n of a slice of length >= n.
            let wv = unsafe { [vld1q_f32(pw[0].add(i)), vld1q_f32(pw[1].add(i)), vld1q_f32(pw[2].add(i))] };
            for t in 0..4 {
                // SAFETY: as above.
                let xv = unsafe { vld1q_f32(px[t].add(i)) };
                for r in 0..3 {
                    acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
                }
            }
            i += 4;
        }
        let mut out = [[0f32; 4]; 3];
        for r in 0..3 {
            for t in 0..4 {
                let mut s = vaddvq_f32(acc[r][t]);
                for j in i..n {
                    s += w[r][j] * x[t][j];
                }
                out[r][t] = s;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{f32_to_bf16, f32_to_f16};

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Every path this CPU has (scalar always; AVX2 on x86-64 when detected; NEON on AArch64,
    /// which the NEON+dotprod choice shares for floats) equals the scalar reference on odd
    /// lengths, to the float rounding of a different summation order (1e-5·n, as in
    /// `kernels::tests`), and the exact f64 sum to the same bound.
    #[test]
    fn every_float_path_matches_the_reference_on_odd_sizes() {
        type Dots = (fn(&[f32], &[f32]) -> f32, fn(&[u16], &[f32]) -> f32, fn(&[u16], &[f32]) -> f32);
        type Block = fn([&[f32]; 3], [&[f32]; 4]) -> [[f32; 4]; 3];
        #[allow(unused_mut)]
        let mut paths: Vec<(&str, Dots, Block)> =
            vec![("scalar", (dot_f32_scalar, dot_bf16_scalar, dot_f16_scalar), block3x4_scalar)];
        #[cfg(target_arch = "x86_64")]
        if isa() != Isa::Scalar {
            // SAFETY (of the calls below): AVX2, FMA and F16C were detected at run time.
            paths.push((
                "avx2",
                (
                    |a, b| unsafe { x86::dot_f32(a, b) },
                    |w, x| unsafe { x86::dot_bf16(w, x) },
                    |w, x| unsafe { x86::dot_f16(w, x) },
                ),
                |w, x| unsafe { x86::block3x4(w, x) },
            ));
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        paths.push((
            "neon",
            // SAFETY (of the calls below): NEON is enabled for this target at compile time.
            (
                |a, b| unsafe { neon::dot_f32(a, b) },
                |w, x| unsafe { neon::dot_bf16(w, x) },
                |w, x| unsafe { neon::dot_f16(w, x) },
            ),
            |w, x| unsafe { neon::block3x4(w, x) },
        ));
        let mut seed = 17;
        for &n in &[1usize, 7, 8, 33, 100, 4097] {
            let a: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let c: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let wb: Vec<u16> = a.iter().map(|&v| f32_to_bf16(v)).collect();
            let wh: Vec<u16> = a.iter().map(|&v| f32_to_f16(v)).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let tol = 1e-5 * n as f32;
            let (ws, xs) = ([&a[..], &b[..], &c[..]], [&b[..], &a[..], &c[..], &b[..]]);
            let want_blk = block3x4_scalar(ws, xs);
            for (name, (f32d, bf16d, f16d), blk) in &paths {
                let got = f32d(&a, &b);
                assert!((got - dot_f32_scalar(&a, &b)).abs() <= tol, "{name} f32 n={n}");
                assert!((got as f64 - exact).abs() <= tol as f64, "{name} f32 vs f64 n={n}");
                assert!((bf16d(&wb, &b) - dot_bf16_scalar(&wb, &b)).abs() <= tol, "{name} bf16 n={n}");
                assert!((f16d(&wh, &b) - dot_f16_scalar(&wh, &b)).abs() <= tol, "{name} f16 n={n}");
                let got = blk(ws, xs);
                for r in 0..3 {
                    for t in 0..4 {
                        assert!((got[r][t] - want_blk[r][t]).abs() <= tol, "{name} block3x4 n={n} [{r}][{t}]");
                    }
                }
            }
        }
    }

    /// Half floats convert exactly: every finite f16 and bf16 bit pattern (subnormals, ±0,
    /// the largest values) times 1.0 gives the scalar conversion, through each SIMD path.
    #[test]
    fn half_float_loads_convert_every_bit_pattern() {
        let bits: Vec<u16> = (0..=u16::MAX).filter(|&h| (h & 0x7c00) != 0x7c00 && (h & 0x7f80) != 0x7f80).collect();
        // One product per element: dot of a length-32 block with a one-hot x.
        for chunk in bits.chunks(32).filter(|c| c.len() == 32) {
            for j in [0usize, 5, 13, 31] {
                let mut x = vec![0f32; 32];
                x[j] = 1.0;
                let want_f16 = crate::tensor::f16_to_f32(chunk[j]);
                let want_bf16 = crate::tensor::bf16_to_f32(chunk[j]);
                assert_eq!(dot_f16(chunk, &x).to_bits(), (want_f16 + 0.0).to_bits(), "f16 {:#06x}", chunk[j]);
                assert_eq!(dot_bf16(chunk, &x).to_bits(), (want_bf16 + 0.0).to_bits(), "bf16 {:#06x}", chunk[j]);
            }
        }
    }

    /// The reported line names the architecture and the chosen path.
    #[test]
    fn system_info_names_the_path() {
        let s = system_info();
        assert!(s.starts_with(std::env::consts::ARCH), "{s}");
        assert!(s.contains(&format!("; kernels: {}", isa().name())), "{s}");
        #[cfg(target_arch = "aarch64")]
        if isa() != Isa::Scalar {
            assert!(s.contains(" neon"), "{s}");
            assert_eq!(
                isa() == Isa::NeonDotprod,
                std::arch::is_aarch64_feature_detected!("dotprod")
                    && std::env::var_os("SUTRA_NO_DOTPROD").is_none_or(|v| v == "0")
            );
        }
    }
}
