//! Dot products of group-quantized weight rows (q8, q4) for decode.
//!
//! The activations are quantized once per product to int8 blocks of 32 ([`quantize_acts`]),
//! and each row's product runs on integers: a scalar reference, an AVX2 path (32 weights per
//! step), an AVX-512 BW path (64 weights per step) and on AArch64 a NEON path (32 weights per
//! step, `SDOT` where the `dotprod` extension is present, widening multiplies where not),
//! picked at run time. q4 levels are looked up as bytes (`tensor::block::LEVELS`) with one
//! byte shuffle per 16–64 weights.
//! [`dot_q8_f32`]/[`dot_q4_f32`] are the plain f32-activation products, used where no SIMD
//! is available (products over many tokens dequantize whole rows instead, see `matmul`).

#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
use super::dot::{isa, Isa};
use crate::tensor::block::{q4_at, LEVELS};
use crate::tensor::f16_to_f32;

/// Activations quantized for the integer products of decode: blocks of 32 values, each
/// `x ≈ d·q` with `d = max|x| / 127` and `q` in [-127, 127] (as llama.cpp's q8 activations).
#[derive(Debug, Clone, Default)]
pub struct QActs {
    /// Quantized values, one per activation.
    pub q: Vec<i8>,
    /// One scale per block of 32.
    pub d: Vec<f32>,
    /// Per block of 32, llama.cpp's Q8_1 sum `s = f16(d·Σq)` (with the scale before its f16
    /// rounding), which its Q4_1/Q5_1 products take the offset term from; filled by
    /// `ggml::quantize_acts_into` for those types only, empty otherwise.
    pub s: Vec<f32>,
}

/// Quantizes `x` (length a multiple of 32) per block of 32.
pub fn quantize_acts(x: &[f32]) -> QActs {
    let mut a = QActs::default();
    quantize_acts_into(x, &mut a);
    a
}

/// [`quantize_acts`] into `a`, reusing its buffers (no allocation once they are large enough).
/// On AVX2 and NEON the blocks are quantized with vector instructions, to the same bits as
/// [`quantize_acts_scalar`] for finite input.
pub fn quantize_acts_into(x: &[f32], a: &mut QActs) {
    a.q.resize(x.len(), 0);
    a.d.clear();
    a.s.clear();
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar && x.len().is_multiple_of(32) {
        // SAFETY: AVX2 was detected at run time (any Isa but Scalar on x86-64); 32 | length,
        // and `a.q` has one byte per value.
        return unsafe { x86::quantize_blocks(x, &mut a.q, &mut a.d) };
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar && x.len().is_multiple_of(32) {
        // SAFETY: NEON is baseline on this target; 32 | length, one byte per value in `a.q`.
        return unsafe { neon::quantize_blocks(x, &mut a.q, &mut a.d) };
    }
    quantize_blocks_scalar(x, &mut a.q, &mut a.d);
}

/// The portable reference of [`quantize_acts_into`].
pub fn quantize_acts_scalar(x: &[f32]) -> QActs {
    let mut a = QActs { q: vec![0; x.len()], ..Default::default() };
    quantize_blocks_scalar(x, &mut a.q, &mut a.d);
    a
}

/// Per block of 32: `d = max|x| / 127`, `q = round(x · 127/max|x|)` to the nearest integer,
/// ties to even (`(y + 1.5·2²³) − 1.5·2²³`, exact for |y| ≤ 127): llama.cpp's AVX2
/// `quantize_row_q8_0` with the scale kept in f32.
fn quantize_blocks_scalar(x: &[f32], q: &mut [i8], d: &mut Vec<f32>) {
    const ROUND: f32 = 12_582_912.0;
    for (xs, qs) in x.chunks(32).zip(q.chunks_mut(32)) {
        let amax = xs.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let db = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = ((v * inv + ROUND) - ROUND) as i32 as i8;
        }
        d.push(db);
    }
}

/// q4 row · quantized activations, portable reference of the integer product:
/// Σ_groups d_w · Σ_blocks d_x · Σ LEVELS[q]·x_q.
pub fn dot_q4_i8_scalar(q: &[u8], scales: &[u16], group: usize, a: &QActs) -> f32 {
    let mut total = 0f32;
    for (g, sc) in scales.iter().enumerate().take(a.q.len().div_ceil(group)) {
        let mut acc = 0f32;
        for b in (g * group / 32)..((g + 1) * group / 32).min(a.d.len()) {
            let s: i32 = (0..32).map(|j| LEVELS[q4_at(q, b * 32 + j) as usize] as i32 * a.q[b * 32 + j] as i32).sum();
            acc += s as f32 * a.d[b];
        }
        total += f16_to_f32(*sc) * acc;
    }
    total
}

/// q8 row · quantized activations, portable reference of the integer product.
pub fn dot_q8_i8_scalar(q: &[i8], scales: &[u16], group: usize, a: &QActs) -> f32 {
    let mut total = 0f32;
    for (g, sc) in scales.iter().enumerate().take(a.q.len().div_ceil(group)) {
        let mut acc = 0f32;
        for b in (g * group / 32)..((g + 1) * group / 32).min(a.d.len()) {
            let s: i32 = (0..32).map(|j| q[b * 32 + j] as i32 * a.q[b * 32 + j] as i32).sum();
            acc += s as f32 * a.d[b];
        }
        total += f16_to_f32(*sc) * acc;
    }
    total
}

/// q4 row · quantized activations with the best available instructions.
#[inline]
pub fn dot_q4_i8(q: &[u8], scales: &[u16], group: usize, a: &QActs) -> f32 {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() == Isa::NeonDotprod && group.is_multiple_of(32) {
        // SAFETY: dotprod was detected at run time; lengths are multiples of 32.
        return unsafe { neon::dot_i8_sdot::<true>(q.as_ptr(), q.len() * 2, scales, group, a) };
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() == Isa::Neon && group.is_multiple_of(32) {
        // SAFETY: NEON is baseline on this target; lengths are multiples of 32.
        return unsafe { neon::dot_i8_mull::<true>(q.as_ptr(), q.len() * 2, scales, group, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && group.is_multiple_of(32) && a.q.len().is_multiple_of(64) {
        // SAFETY: AVX-512 F/BW (and AVX2) were detected at run time; 64 | length, 32 | group.
        return unsafe { x86::dot_i8_512::<true>(q.as_ptr(), q.len() * 2, scales, group, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar && group.is_multiple_of(32) {
        // SAFETY: AVX2 was detected at run time; lengths are multiples of 32.
        return unsafe { x86::dot_i8::<true>(q.as_ptr(), q.len() * 2, scales, group, a) };
    }
    dot_q4_i8_scalar(q, scales, group, a)
}

/// q8 row · quantized activations with the best available instructions.
#[inline]
pub fn dot_q8_i8(q: &[i8], scales: &[u16], group: usize, a: &QActs) -> f32 {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() == Isa::NeonDotprod && group.is_multiple_of(32) {
        // SAFETY: dotprod was detected at run time; lengths are multiples of 32.
        return unsafe { neon::dot_i8_sdot::<false>(q.as_ptr().cast(), q.len(), scales, group, a) };
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() == Isa::Neon && group.is_multiple_of(32) {
        // SAFETY: NEON is baseline on this target; lengths are multiples of 32.
        return unsafe { neon::dot_i8_mull::<false>(q.as_ptr().cast(), q.len(), scales, group, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && group.is_multiple_of(32) && a.q.len().is_multiple_of(64) {
        // SAFETY: AVX-512 F/BW (and AVX2) were detected at run time; 64 | length, 32 | group.
        return unsafe { x86::dot_i8_512::<false>(q.as_ptr().cast(), q.len(), scales, group, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar && group.is_multiple_of(32) {
        // SAFETY: AVX2 was detected at run time; lengths are multiples of 32.
        return unsafe { x86::dot_i8::<false>(q.as_ptr().cast(), q.len(), scales, group, a) };
    }
    dot_q8_i8_scalar(q, scales, group, a)
}

/// q8 row · f32 x (portable; the decode path where no SIMD is available).
pub fn dot_q8_f32(q: &[i8], scales: &[u16], group: usize, x: &[f32]) -> f32 {
    let mut total = 0f32;
    for (g, (qs, xs)) in q.chunks(group).zip(x.chunks(group)).enumerate() {
        let s: f32 = qs.iter().zip(xs).map(|(&q, &x)| q as f32 * x).sum();
        total += f16_to_f32(scales[g]) * s;
    }
    total
}

/// q4 row · f32 x (portable; the decode path where no SIMD is available).
pub fn dot_q4_f32(q: &[u8], scales: &[u16], group: usize, x: &[f32]) -> f32 {
    let mut total = 0f32;
    for (g, xs) in x.chunks(group).enumerate() {
        let s: f32 = xs.iter().enumerate().map(|(j, &x)| LEVELS[q4_at(q, g * group + j) as usize] as f32 * x).sum();
        total += f16_to_f32(scales[g]) * s;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::tensor::block::LEVELS;
    use std::arch::x86_64::*;

    /// [`super::quantize_blocks_scalar`] on AVX2: max |x| by vector max, `x · 127/max` rounded by
    /// `cvtps2dq` (round to nearest even, the default rounding mode), packed with saturation
    /// (|q| ≤ 127 for finite input). `x.len()` is a multiple of 32 and `q` as long.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut Vec<f32>) {
        let sign = _mm256_set1_ps(-0.0);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (xs, qs) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
            let p = xs.as_ptr();
            let v =
                [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))];
            let a = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)));
            let db = amax / 127.0;
            let inv = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
            let i = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
            _mm256_storeu_si256(qs.as_mut_ptr().cast(), _mm256_permutevar8x32_epi32(packed, order));
            d.push(db);
        }
    }

    const PREFETCH: usize = 2048;

    /// An f16 scale broadcast to 8 lanes, converted by the F16C unit.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scale8(h: u16) -> __m256 {
        _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_set1_epi16(h as i16)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// Integer dot of a q4 (`Q4 = true`, `n` weights packed at `q`) or q8 row with int8
    /// activations: per block of 32, |w|·(x·sign w) with maddubs (no saturation: both ≤ 127),
    /// pairs summed with madd, scaled by the activation block scale, then by the group scale.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_i8<const Q4: bool>(
        q: *const u8,
        n: usize,
        scales: &[u16],
        group: usize,
        a: &super::QActs,
    ) -> f32 {
        let n = n.min(a.q.len());
        let px = a.q.as_ptr();
        let mask = _mm_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        // SAFETY: LEVELS is 16 bytes; the table is repeated in both lanes.
        let t = _mm_loadu_si128(LEVELS.as_ptr() as *const __m128i);
        let table = _mm256_set_m128i(t, t);
        let mut total = _mm256_setzero_ps();
        let (mut g0, mut gi) = (0, 0);
        // SAFETY: block b reads 16 (q4) or 32 (q8) weight bytes and 32 activation bytes, all
        // within [0, n); n and the group are multiples of 32.
        while g0 < n {
            let end = (g0 + group).min(n);
            let wp = if Q4 { q.add(g0 / 2) } else { q.add(g0) };
            _mm_prefetch(wp.cast::<i8>().wrapping_add(PREFETCH), _MM_HINT_T0);
            let mut acc = _mm256_setzero_ps();
            let mut i = g0;
            while i < end {
                let w = if Q4 {
                    let bytes = _mm_loadu_si128(q.add(i / 2) as *const __m128i);
                    let lo = _mm_and_si128(bytes, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                    _mm256_shuffle_epi8(table, _mm256_set_m128i(hi, lo))
                } else {
                    _mm256_loadu_si256(q.add(i) as *const __m256i)
                };
                let x = _mm256_loadu_si256(px.add(i) as *const __m256i);
                let p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                let p32 = _mm256_madd_epi16(p16, ones);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(*a.d.get_unchecked(i / 32)), acc);
                i += 32;
            }
            total = _mm256_fmadd_ps(scale8(scales[gi]), acc, total);
            g0 = end;
            gi += 1;
        }
        hsum(total)
    }

    /// [`dot_i8`] with 512-bit registers: two blocks of 32 per step (`n` a multiple of 64).
    /// AVX-512 has no byte sign instruction: x is negated under the mask of negative weights.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub unsafe fn dot_i8_512<const Q4: bool>(
        q: *const u8,
        n: usize,
        scales: &[u16],
        group: usize,
        a: &super::QActs,
    ) -> f32 {
        let n = n.min(a.q.len());
        let px = a.q.as_ptr();
        let mask = _mm256_set1_epi8(0x0f);
        let ones = _mm512_set1_epi16(1);
        let zero = _mm512_setzero_si512();
        // SAFETY: LEVELS is 16 bytes; the table is repeated in all four lanes.
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(LEVELS.as_ptr() as *const __m128i));
        // The group scale of block b, converted by F16C.
        let dw = |b: usize| _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(scales[b * 32 / group] as i16)));
        let mut total = _mm512_setzero_ps();
        let mut i = 0;
        // SAFETY: step i reads 32 (q4) or 64 (q8) weight bytes and 64 activation bytes, all
        // within [0, n); n is a multiple of 64 (checked by the caller).
        while i < n {
            _mm_prefetch(q.add(if Q4 { i / 2 } else { i }).cast::<i8>().wrapping_add(PREFETCH), _MM_HINT_T0);
            let w = if Q4 {
                // 32 bytes = blocks b and b+1, each 16 bytes of (low: j, high: j+16) nibbles.
                let bytes = _mm256_loadu_si256(q.add(i / 2) as *const __m256i);
                let lo = _mm256_and_si256(bytes, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
                let b0 = _mm256_permute2x128_si256(lo, hi, 0x20);
                let b1 = _mm256_permute2x128_si256(lo, hi, 0x31);
                _mm512_shuffle_epi8(table, _mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1))
            } else {
                _mm512_loadu_si512(q.add(i) as *const __m512i)
            };
            let x = _mm512_loadu_si512(px.add(i) as *const __m512i);
            let xs = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), zero, x);
            let p32 = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(w), xs), ones);
            // Lanes 0-7 hold block b, lanes 8-15 block b+1: one scale for each half.
            let (b, d) = (i / 32, a.d.as_ptr());
            let s0 = _mm256_set1_ps(*d.add(b) * dw(b));
            let s1 = _mm256_set1_ps(*d.add(b + 1) * dw(b + 1));
            let s = _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castps_pd(_mm512_castps256_ps512(s0)),
                _mm256_castps_pd(s1),
                1,
            ));
            total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p32), s, total);
            i += 64;
        }
        _mm512_reduce_add_ps(total)
    }
}

/// The AArch64 integer products, shaped like [`x86::dot_i8`]: per block of 32, the weights as
/// two int8x16 (q4 levels looked up with one `tbl` per 16), four lanes of exact int32 partial
/// sums, converted and scaled by the activation block scale, then by the group scale.
///
/// The two entry points differ only in how the int32 lanes are formed: `SDOT` sums the products
/// of bytes 4k..4k+3 into lane k, and the widening path (`smull`, pairwise adds) forms the very
/// same lane sums, so both return bit-identical results.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) mod neon {
    use crate::kernels::dot::neon::prefetch;
    use crate::tensor::block::LEVELS;
    use crate::tensor::f16_to_f32;

    /// [`super::quantize_blocks_scalar`] on NEON: max |x| by `fmaxnm` (NaN-ignoring, as
    /// `f32::max`), `x · 127/max` rounded by `fcvtns` (to nearest, ties to even), narrowed with
    /// saturation. `x.len()` is a multiple of 32 and `q` as long.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut Vec<f32>) {
        use std::arch::aarch64::*;
        for (xs, qs) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)) {
            let p = xs.as_ptr();
            let v: [float32x4_t; 8] = std::array::from_fn(|k| vld1q_f32(p.add(4 * k)));
            let mut m = vabsq_f32(v[0]);
            for vk in &v[1..] {
                m = vmaxnmq_f32(m, vabsq_f32(*vk));
            }
            let amax = vmaxnmvq_f32(m);
            let db = amax / 127.0;
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let i: [int32x4_t; 8] = std::array::from_fn(|k| vcvtnq_s32_f32(vmulq_n_f32(v[k], inv)));
            for h in 0..2 {
                let lo = vcombine_s16(vqmovn_s32(i[4 * h]), vqmovn_s32(i[4 * h + 1]));
                let hi = vcombine_s16(vqmovn_s32(i[4 * h + 2]), vqmovn_s32(i[4 * h + 3]));
                vst1q_s8(qs.as_mut_ptr().add(16 * h), vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
            }
            d.push(db);
        }
    }
    use std::arch::aarch64::*;
    use std::arch::asm;

    const PREFETCH: usize = 2048;

    /// `acc + Σ` of the four byte products of each lane: `SDOT acc.4s, a.16b, b.16b`
    /// (inline assembly: `vdotq_s32` is still an unstable intrinsic in Rust).
    ///
    /// # Safety
    /// The CPU has the `dotprod` extension.
    #[inline]
    #[target_feature(enable = "neon,dotprod")]
    pub(crate) unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: a register-only instruction the caller checked the CPU has.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }

    /// The lanes of [`sdot`] without the extension: 16 widening products, summed pairwise
    /// twice so that lane k holds bytes 4k..4k+3 (no overflow: |i8·i8| ≤ 2¹⁴).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) fn mull(a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        let hi = vpaddlq_s16(vmull_high_s8(a, b));
        vpaddq_s32(lo, hi)
    }

    /// The shared loop; `SDOT` picks the lane product. `n` weights at `q` (packed q4 when
    /// `Q4`), a multiple of 32, as is `group`.
    ///
    /// # Safety
    /// `q` holds `n` weights (n/2 bytes for q4); `a.q` and `a.d` cover min(n, a.q.len())
    /// activations; the CPU has `dotprod` when `SDOT`.
    #[inline(always)]
    unsafe fn dot_i8<const Q4: bool, const SDOT: bool>(
        q: *const u8,
        n: usize,
        scales: &[u16],
        group: usize,
        a: &super::QActs,
    ) -> f32 {
        let n = n.min(a.q.len());
        let px = a.q.as_ptr();
        let mask = vdupq_n_u8(0x0f);
        // SAFETY: LEVELS is 16 bytes.
        let table = unsafe { vld1q_s8(LEVELS.as_ptr()) };
        let mut total = vdupq_n_f32(0.0);
        let (mut g0, mut gi) = (0, 0);
        while g0 < n {
            let end = (g0 + group).min(n);
            prefetch(q.wrapping_add(if Q4 { g0 / 2 } else { g0 }).wrapping_add(PREFETCH));
            let mut acc = vdupq_n_f32(0.0);
            let mut i = g0;
            while i < end {
                // SAFETY: block i..i+32 lies in [0, n): it reads 16 (q4) or 32 (q8) weight
                // bytes, 32 activation bytes and the block's scale a.d[i / 32].
                let (w0, w1, x0, x1, d) = unsafe {
                    let (w0, w1) = if Q4 {
                        // Byte j holds weight j (low nibble) and weight j + 16 (high nibble).
                        let bytes = vld1q_u8(q.add(i / 2));
                        (vqtbl1q_s8(table, vandq_u8(bytes, mask)), vqtbl1q_s8(table, vshrq_n_u8::<4>(bytes)))
                    } else {
                        (vld1q_s8(q.add(i).cast()), vld1q_s8(q.add(i + 16).cast()))
                    };
                    (w0, w1, vld1q_s8(px.add(i)), vld1q_s8(px.add(i + 16)), *a.d.get_unchecked(i / 32))
                };
                let p = if SDOT {
                    // SAFETY: SDOT is only set by `dot_i8_sdot`, whose caller checked dotprod.
                    unsafe { sdot(sdot(vdupq_n_s32(0), w0, x0), w1, x1) }
                } else {
                    // SAFETY: NEON is enabled for this target at compile time.
                    unsafe { vaddq_s32(mull(w0, x0), mull(w1, x1)) }
                };
                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(p), d);
                i += 32;
            }
            total = vfmaq_n_f32(total, acc, f16_to_f32(scales[gi]));
            g0 = end;
            gi += 1;
        }
        vaddvq_f32(total)
    }

    /// The integer product with `SDOT`.
    ///
    /// # Safety
    /// As [`dot_i8`]; the CPU has the `dotprod` extension.
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn dot_i8_sdot<const Q4: bool>(
        q: *const u8,
        n: usize,
        scales: &[u16],
        group: usize,
        a: &super::QActs,
    ) -> f32 {
        // SAFETY: forwarded from the caller.
        unsafe { dot_i8::<Q4, true>(q, n, scales, group, a) }
    }

    /// The integer product with widening multiplies (any AArch64 CPU).
    ///
    /// # Safety
    /// As [`dot_i8`].
    #[target_feature(enable = "neon")]
    pub unsafe fn dot_i8_mull<const Q4: bool>(
        q: *const u8,
        n: usize,
        scales: &[u16],
        group: usize,
        a: &super::QActs,
    ) -> f32 {
        // SAFETY: forwarded from the caller.
        unsafe { dot_i8::<Q4, false>(q, n, scales, group, a) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::block::*;

    /// The vector quantizers give the scalar reference's bits: values and scales, on blocks
    /// of every magnitude, an all-zero block, exact half levels and the extremes.
    #[test]
    fn vector_quantization_equals_the_scalar_reference() {
        let mut r = Rng::new(3);
        let mut x: Vec<f32> = (0..32 * 40).map(|i| r.normal() * (1 + i / 64) as f32 * 0.37).collect();
        x[64..96].fill(0.0);
        // A block whose values sit on half levels: 127 · k/254 for k odd.
        for (j, v) in x[96..128].iter_mut().enumerate() {
            *v = if j == 0 { 127.0 } else { (2 * j + 1) as f32 * 0.5 * if j % 2 == 0 { 1.0 } else { -1.0 } };
        }
        x[128] = f32::MAX / 2.0;
        x[160] = -1e-30;
        let want = quantize_acts_scalar(&x);
        let got = quantize_acts(&x);
        assert_eq!(got.d, want.d);
        assert_eq!(got.q, want.q);
    }

    /// The integer (int8-activation) products equal their scalar references, and stay within
    /// the activation rounding of the float product.
    #[test]
    fn integer_dots_match_reference() {
        let mut r = Rng::new(23);
        for &cols in &[32usize, 64, 96, 128, 160, 192, 768 + 64, 4096 + 64] {
            for group in [32, 64, 128] {
                let w: Vec<f32> = (0..cols).map(|_| r.normal()).collect();
                let x: Vec<f32> = (0..cols).map(|_| r.normal()).collect();
                let a = quantize_acts(&x);
                let ng = n_groups(cols, group);
                let (mut q8, mut s8) = (vec![0i8; cols], vec![0u16; ng]);
                quantize_q8_row(&w, group, &mut q8, &mut s8);
                let (i8d, i8s) = (dot_q8_i8(&q8, &s8, group, &a), dot_q8_i8_scalar(&q8, &s8, group, &a));
                assert!((i8d - i8s).abs() <= 1e-4 * (1.0 + i8s.abs()), "q8 int cols {cols} g {group}: {i8d} vs {i8s}");
                #[cfg(target_arch = "x86_64")]
                if isa() == Isa::Avx512 {
                    // The AVX2 path too, on a machine that would otherwise take AVX-512.
                    // SAFETY: AVX-512 implies AVX2/FMA/F16C were detected.
                    let c = unsafe { x86::dot_i8::<false>(q8.as_ptr().cast(), cols, &s8, group, &a) };
                    assert!((c - i8s).abs() <= 1e-4 * (1.0 + i8s.abs()), "q8 int avx2");
                }
                let f = dot_q8_f32(&q8, &s8, group, &x);
                let bound = 0.01 * (cols as f32).sqrt() * 3.0;
                assert!((i8s - f).abs() <= bound, "q8 int vs float: {i8s} vs {f}");
                let (mut q4, mut s4) = (vec![0u8; cols], vec![0u16; ng]);
                quantize_q4_row(&w, group, None, &mut q4, &mut s4);
                let mut packed = vec![0u8; cols / 2];
                pack_q4(&q4, &mut packed);
                let (a4, b4) = (dot_q4_i8(&packed, &s4, group, &a), dot_q4_i8_scalar(&packed, &s4, group, &a));
                assert!((a4 - b4).abs() <= 1e-4 * (1.0 + b4.abs()), "q4 int cols {cols} g {group}: {a4} vs {b4}");
                #[cfg(target_arch = "x86_64")]
                if isa() == Isa::Avx512 {
                    // SAFETY: AVX-512 implies AVX2/FMA/F16C were detected.
                    let c = unsafe { x86::dot_i8::<true>(packed.as_ptr(), cols, &s4, group, &a) };
                    assert!((c - b4).abs() <= 1e-4 * (1.0 + b4.abs()), "q4 int avx2");
                }
                let f4 = dot_q4_f32(&packed, &s4, group, &x);
                assert!((b4 - f4).abs() <= bound, "q4 int vs float: {b4} vs {f4}");
                // The float product equals the dot with the dequantized row.
                let mut deq = vec![0f32; cols];
                dequantize_q4_row(&packed, &s4, group, &mut deq);
                let want: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
                assert!((f4 - want).abs() <= 1e-5 * cols as f32, "q4 float vs dequantized");
            }
        }
    }
    /// The AArch64 paths on odd numbers of blocks (1, 7, 33, 129 blocks of 32: the integer
    /// products take whole blocks, so 4097 becomes 4128): the widening and the `SDOT` paths
    /// are bit-identical (they form the same int32 lanes), and both equal the scalar reference
    /// to the float rounding of another summation order (the tolerance of the test above).
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    #[test]
    fn neon_paths_agree_with_each_other_and_the_reference() {
        let mut r = Rng::new(29);
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        for blocks in [1usize, 7, 33, 129] {
            let cols = 32 * blocks;
            for group in [32, 64, 128] {
                let w: Vec<f32> = (0..cols).map(|_| r.normal()).collect();
                let x: Vec<f32> = (0..cols).map(|_| r.normal()).collect();
                let a = quantize_acts(&x);
                let ng = n_groups(cols, group);
                let (mut q8, mut s8) = (vec![0i8; cols], vec![0u16; ng]);
                quantize_q8_row(&w, group, &mut q8, &mut s8);
                let (mut q4, mut s4) = (vec![0u8; cols], vec![0u16; ng]);
                quantize_q4_row(&w, group, None, &mut q4, &mut s4);
                let mut packed = vec![0u8; cols / 2];
                pack_q4(&q4, &mut packed);
                let want8 = dot_q8_i8_scalar(&q8, &s8, group, &a);
                let want4 = dot_q4_i8_scalar(&packed, &s4, group, &a);
                // SAFETY: NEON is baseline; the lengths are whole blocks and 32 | group.
                let (m8, m4) = unsafe {
                    (
                        neon::dot_i8_mull::<false>(q8.as_ptr().cast(), cols, &s8, group, &a),
                        neon::dot_i8_mull::<true>(packed.as_ptr(), cols, &s4, group, &a),
                    )
                };
                assert!((m8 - want8).abs() <= 1e-4 * (1.0 + want8.abs()), "q8 mull {cols} g{group}: {m8} vs {want8}");
                assert!((m4 - want4).abs() <= 1e-4 * (1.0 + want4.abs()), "q4 mull {cols} g{group}: {m4} vs {want4}");
                if dotprod {
                    // SAFETY: as above, and dotprod was detected.
                    let (d8, d4) = unsafe {
                        (
                            neon::dot_i8_sdot::<false>(q8.as_ptr().cast(), cols, &s8, group, &a),
                            neon::dot_i8_sdot::<true>(packed.as_ptr(), cols, &s4, group, &a),
                        )
                    };
                    assert_eq!(d8.to_bits(), m8.to_bits(), "q8 sdot vs mull {cols} g{group}");
                    assert_eq!(d4.to_bits(), m4.to_bits(), "q4 sdot vs mull {cols} g{group}");
                }
                // The dispatching entry points take one of these paths.
                assert_eq!(
                    dot_q8_i8(&q8, &s8, group, &a).to_bits(),
                    if isa() == Isa::Scalar { want8 } else { m8 }.to_bits()
                );
                assert_eq!(
                    dot_q4_i8(&packed, &s4, group, &a).to_bits(),
                    if isa() == Isa::Scalar { want4 } else { m4 }.to_bits()
                );
            }
        }
    }

    /// Extreme values: weights of ±127 (and -128, which a q8 file may hold) against
    /// activations of ±127 sum without overflow on both AArch64 paths.
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    #[test]
    fn neon_integer_products_do_not_overflow() {
        let cols = 256;
        for (wv, xv) in [(127i8, 127i8), (-128, -127), (-128, 127), (127, -127)] {
            let q8 = vec![wv; cols];
            let a = QActs { q: vec![xv; cols], d: vec![1.0; cols / 32], ..Default::default() };
            let s8 = vec![crate::tensor::f32_to_f16(1.0); cols / 32];
            let want = (wv as i32 * xv as i32 * cols as i32) as f32;
            // SAFETY: NEON is baseline; whole blocks, group 32.
            let m = unsafe { neon::dot_i8_mull::<false>(q8.as_ptr().cast(), cols, &s8, 32, &a) };
            assert_eq!(m, want, "mull {wv}·{xv}");
            assert_eq!(dot_q8_i8_scalar(&q8, &s8, 32, &a), want);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                // SAFETY: as above, and dotprod was detected.
                let d = unsafe { neon::dot_i8_sdot::<false>(q8.as_ptr().cast(), cols, &s8, 32, &a) };
                assert_eq!(d, want, "sdot {wv}·{xv}");
            }
        }
    }
}
