//! Products over llama.cpp's block-quantized rows (`tensor::ggml`) on int8 activations.
//!
//! Each block's levels are dotted with int8 activations (`qdot::QActs`, a scale per 32):
//! integer sums of levels times activations, then the block's scales (and offsets, through
//! Σx) in f32. [`quantize_acts_into`] quantizes the activations exactly as llama.cpp's CPU
//! backend does for each block type (Q8_0 blocks with f16 scales, Q8_K blocks of 256), so the
//! integer sums are llama.cpp's and a quantized GGUF gives its logits to float rounding. The
//! blocks are read in place from the mapped file.

use super::qdot::QActs;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::{isa, Isa};
use crate::tensor::ggml::{k_scale_min, GgmlType};
use crate::tensor::{f16_to_f32, f32_to_f16};

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// A row of whole `kind` blocks · int8 activations (`q` its values, `d` a scale per 32, `s`
/// the Q8_1 sums per 32 that Q4_1/Q5_1 need, see [`QActs::s`]), with the widest integer
/// instructions the CPU has (AVX2, NEON with or without `SDOT`; the portable loop elsewhere).
/// The integer sums are exact on every path; the float sums of the SIMD paths run in another
/// order, so the paths agree to rounding. Decode and prefill call this same function, so on
/// one machine a prefill row equals its decode row exactly.
///
/// As llama.cpp's products, a Q4_1/Q5_1 row is the scaled level sums plus, added last,
/// Σ_blocks m·s (its offsets times the activation sums).
pub fn dot_i8(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32], s: &[f32]) -> f32 {
    let levels = dot_levels(kind, row, q, d);
    if !matches!(kind, GgmlType::Q4_1 | GgmlType::Q5_1) {
        return levels;
    }
    debug_assert_eq!(s.len(), row.len() / kind.block_bytes(), "dot_i8: one Q8_1 sum per block");
    let mut offsets = 0f32;
    for (b, &s) in row.chunks_exact(kind.block_bytes()).zip(s) {
        offsets += f16_at(b, 2) * s;
    }
    levels + offsets
}

/// The level part of [`dot_i8`] (without the Q4_1/Q5_1 offsets), on the best path.
fn dot_levels(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time (any Isa but Scalar on x86-64).
        return unsafe { dot_i8_avx2(kind, row, q, d) };
    }
    #[cfg(target_arch = "aarch64")]
    if isa() == Isa::NeonDotprod {
        // SAFETY: the dot-product extension was detected at run time.
        return unsafe { dot_i8_dotprod(kind, row, q, d) };
    }
    #[cfg(target_arch = "aarch64")]
    if isa() == Isa::Neon {
        // SAFETY: NEON is baseline on AArch64; lengths are checked by `neon::dot`.
        return unsafe { neon::dot::<false>(kind, row, q, d) };
    }
    dot_i8_body(kind, row, q, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_i8_avx2(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32]) -> f32 {
    // SAFETY: the caller guarantees AVX2/FMA; lengths are checked by `x86::dot`.
    unsafe { x86::dot(kind, row, q, d) }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_i8_dotprod(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32]) -> f32 {
    // SAFETY: the caller checked the CPU has `dotprod`; lengths are checked by `neon::dot`.
    unsafe { neon::dot::<true>(kind, row, q, d) }
}

/// NEON: per block of 32, signed levels built in two registers (nibbles split, high bits
/// spread by bit tests, offsets subtracted or carried through Σx), dotted with the
/// activations by `SDOT` (or widening multiplies without the extension), the 4 integer lanes
/// scaled and accumulated in f32. Agrees with the portable loop to rounding.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{f16_at, k_scale_min, GgmlType};
    use crate::kernels::qdot::neon::{mull, sdot};
    use std::arch::aarch64::*;

    /// 4 lanes of `acc + Σ a·b` (groups of 4 bytes).
    #[inline(always)]
    unsafe fn dot4<const SDOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        if SDOT {
            // SAFETY: SDOT is only chosen when the CPU has `dotprod`.
            unsafe { sdot(acc, a, b) }
        } else {
            // SAFETY: NEON is baseline on AArch64.
            unsafe { vaddq_s32(acc, mull(a, b)) }
        }
    }

    /// Bits `bits >> 0 .. bits >> 15` as 16 in bytes 0..15.
    #[inline(always)]
    unsafe fn bits_to_16(bits: u32) -> uint8x16_t {
        // SAFETY: register-only NEON operations.
        unsafe {
            let mask = vcombine_u8(vcreate_u8(0x8040_2010_0804_0201), vcreate_u8(0x8040_2010_0804_0201));
            let b = vcombine_u8(vdup_n_u8(bits as u8), vdup_n_u8((bits >> 8) as u8));
            vandq_u8(vtstq_u8(b, mask), vdupq_n_u8(16))
        }
    }

    #[inline(always)]
    unsafe fn load16(p: &[u8]) -> uint8x16_t {
        // SAFETY: `p` holds at least 16 bytes.
        unsafe { vld1q_u8(p[..16].as_ptr()) }
    }

    /// The row · activations (see [`super::dot_i8`]).
    ///
    /// # Safety
    /// The CPU has `dotprod` when `SDOT`.
    #[inline(always)]
    pub unsafe fn dot<const SDOT: bool>(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32]) -> f32 {
        let (be, bb) = (kind.block_elems(), kind.block_bytes());
        let n = row.len() / bb;
        assert!(q.len() >= n * be && d.len() >= n * be / 32, "ggml dot: activations too short");
        let xq: &[u8] = bytemuck::cast_slice(q);
        // SAFETY: register-only NEON operations, and loads of 16 bytes inside the slices
        // (`load16` checks them).
        unsafe {
            let ones = vdupq_n_s8(1);
            let z = vdupq_n_s32(0);
            let m4 = vdupq_n_u8(0x0f);
            let mut acc = vdupq_n_f32(0.0);
            let s8 = |v: uint8x16_t| vreinterpretq_s8_u8(v);
            for (i, b) in row.chunks_exact(bb).enumerate() {
                let x = &xq[i * be..(i + 1) * be];
                let dx = &d[i * be / 32..(i + 1) * be / 32];
                match kind {
                    GgmlType::Q8_0 => {
                        let l = dot4::<SDOT>(z, s8(load16(&b[2..])), s8(load16(x)));
                        let l = dot4::<SDOT>(l, s8(load16(&b[18..])), s8(load16(&x[16..])));
                        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(l), dx[0] * f16_at(b, 0));
                    }
                    GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                        let (qs, hb) = match kind {
                            GgmlType::Q4_0 => (&b[2..18], None),
                            GgmlType::Q4_1 => (&b[4..20], None),
                            GgmlType::Q5_0 => (&b[6..22], Some(u32::from_le_bytes([b[2], b[3], b[4], b[5]]))),
                            _ => (&b[8..24], Some(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))),
                        };
                        let v = load16(qs);
                        let (mut lo, mut hi) = (vandq_u8(v, m4), vshrq_n_u8::<4>(v));
                        if let Some(h) = hb {
                            lo = vorrq_u8(lo, bits_to_16(h));
                            hi = vorrq_u8(hi, bits_to_16(h >> 16));
                        }
                        let (x0, x1) = (s8(load16(x)), s8(load16(&x[16..])));
                        let dw = f16_at(b, 0);
                        match kind {
                            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                                let off = vdupq_n_s8(if kind == GgmlType::Q4_0 { 8 } else { 16 });
                                let l = dot4::<SDOT>(z, vsubq_s8(s8(lo), off), x0);
                                let l = dot4::<SDOT>(l, vsubq_s8(s8(hi), off), x1);
                                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(l), dx[0] * dw);
                            }
                            // Q4_1/Q5_1: unsigned levels; the offsets are added by `dot_i8`.
                            _ => {
                                let l = dot4::<SDOT>(dot4::<SDOT>(z, s8(lo), x0), s8(hi), x1);
                                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(l), dx[0] * dw);
                            }
                        }
                    }
                    GgmlType::Q4_K | GgmlType::Q5_K => {
                        let (dd, dmin) = (f16_at(b, 0), f16_at(b, 2));
                        let scales = &b[4..16];
                        let five = kind == GgmlType::Q5_K;
                        let (qh, ql) = if five { (&b[16..48], &b[48..176]) } else { (&b[..0], &b[16..144]) };
                        let one_u = vdupq_n_u8(1);
                        for j in 0..8 {
                            let c = j / 2;
                            let (v0, v1) = (load16(&ql[32 * c..]), load16(&ql[32 * c + 16..]));
                            let (mut u0, mut u1) = if j % 2 == 0 {
                                (vandq_u8(v0, m4), vandq_u8(v1, m4))
                            } else {
                                (vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1))
                            };
                            if five {
                                let sh = vdupq_n_s8(-(j as i8));
                                let h0 = vandq_u8(vshlq_u8(load16(qh), sh), one_u);
                                let h1 = vandq_u8(vshlq_u8(load16(&qh[16..]), sh), one_u);
                                u0 = vorrq_u8(u0, vshlq_n_u8::<4>(h0));
                                u1 = vorrq_u8(u1, vshlq_n_u8::<4>(h1));
                            }
                            let (x0, x1) = (s8(load16(&x[32 * j..])), s8(load16(&x[32 * j + 16..])));
                            let l = dot4::<SDOT>(dot4::<SDOT>(z, s8(u0), x0), s8(u1), x1);
                            let sx = dot4::<SDOT>(dot4::<SDOT>(z, ones, x0), ones, x1);
                            let (sc, mn) = k_scale_min(scales, j);
                            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(l), dx[j] * (dd * sc as f32));
                            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sx), -dx[j] * (dmin * mn as f32));
                        }
                    }
                    GgmlType::Q6_K => {
                        let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                        let dd = f16_at(b, 208);
                        let (m3, off) = (vdupq_n_u8(3), vdupq_n_s8(32));
                        for h in 0..2 {
                            for k in 0..4 {
                                let base = 64 * h + 32 * (k & 1);
                                let (v0, v1) = (load16(&ql[base..]), load16(&ql[base + 16..]));
                                let (lo0, lo1) = if k < 2 {
                                    (vandq_u8(v0, m4), vandq_u8(v1, m4))
                                } else {
                                    (vshrq_n_u8::<4>(v0), vshrq_n_u8::<4>(v1))
                                };
                                let sh = vdupq_n_s8(-2 * k as i8);
                                let hi0 = vandq_u8(vshlq_u8(load16(&qh[32 * h..]), sh), m3);
                                let hi1 = vandq_u8(vshlq_u8(load16(&qh[32 * h + 16..]), sh), m3);
                                let w0 = vsubq_s8(s8(vorrq_u8(lo0, vshlq_n_u8::<4>(hi0))), off);
                                let w1 = vsubq_s8(s8(vorrq_u8(lo1, vshlq_n_u8::<4>(hi1))), off);
                                let c = 4 * h + k;
                                let (x0, x1) = (s8(load16(&x[32 * c..])), s8(load16(&x[32 * c + 16..])));
                                let f = dx[c] * dd;
                                let l0 = vcvtq_f32_s32(dot4::<SDOT>(z, w0, x0));
                                let l1 = vcvtq_f32_s32(dot4::<SDOT>(z, w1, x1));
                                acc = vfmaq_n_f32(acc, l0, f * sc[2 * c] as i8 as f32);
                                acc = vfmaq_n_f32(acc, l1, f * sc[2 * c + 1] as i8 as f32);
                            }
                        }
                    }
                }
            }
            vaddvq_f32(acc)
        }
    }
}

/// AVX2: per block of 32, levels built in a register (nibbles split, high bits spread from
/// their bit masks), multiplied with the activations by `pmaddubsw` (unsigned levels × signed
/// activations; Q8_0's signed weights by the sign trick), pairs summed by `pmaddwd`, and the
/// 8 integer lanes scaled and accumulated in f32 (offsets through Σx, from the same
/// instructions with a vector of ones). Float sums are in another order than the portable
/// loop's: the two agree to rounding.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{f16_at, k_scale_min, GgmlType};
    use std::arch::x86_64::*;

    /// 8 lanes of Σ u·x over 32 unsigned levels `u` (< 128) and signed activations `x`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes_ux(u: __m256i, x: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// 16 packed bytes as 32 levels: low nibbles (weights 0..15), then high nibbles (16..31).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn nibbles16(p: &[u8]) -> __m256i {
        // SAFETY: `p` holds at least 16 bytes (a block's `qs`).
        let v = unsafe { _mm_loadu_si128(p[..16].as_ptr() as *const __m128i) };
        let m = _mm_set1_epi8(0x0f);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(v), m), _mm_and_si128(v, m))
    }

    /// Bit j of `bits` as 16 in byte j (0..32).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bits_to_16(bits: u32) -> __m256i {
        let x = _mm256_set1_epi32(bits as i32);
        let spread = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
        let bytes = _mm256_shuffle_epi8(x, spread);
        let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load32(p: &[u8]) -> __m256i {
        // SAFETY: `p` holds at least 32 bytes.
        unsafe { _mm256_loadu_si256(p[..32].as_ptr() as *const __m256i) }
    }

    /// The row · activations (see [`super::dot_i8`]).
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32]) -> f32 {
        let (be, bb) = (kind.block_elems(), kind.block_bytes());
        let n = row.len() / bb;
        assert!(q.len() >= n * be && d.len() >= n * be / 32, "ggml dot: activations too short");
        let xq: &[u8] = bytemuck::cast_slice(q);
        let ones = _mm256_set1_epi8(1);
        let mut acc = _mm256_setzero_ps();
        for (i, b) in row.chunks_exact(bb).enumerate() {
            let x = &xq[i * be..(i + 1) * be];
            let dx = &d[i * be / 32..(i + 1) * be / 32];
            match kind {
                GgmlType::Q8_0 => {
                    let w = load32(&b[2..34]);
                    let xv = load32(x);
                    let l = lanes_ux(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
                    let sc = _mm256_set1_ps(dx[0] * f16_at(b, 0));
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), sc, acc);
                }
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                    let (qs, off) = match kind {
                        GgmlType::Q4_0 => (nibbles16(&b[2..18]), 8),
                        GgmlType::Q4_1 => (nibbles16(&b[4..20]), 0),
                        GgmlType::Q5_0 => {
                            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                            (_mm256_or_si256(nibbles16(&b[6..22]), bits_to_16(qh)), 16)
                        }
                        _ => {
                            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                            (_mm256_or_si256(nibbles16(&b[8..24]), bits_to_16(qh)), 0)
                        }
                    };
                    let xv = load32(x);
                    let dw = f16_at(b, 0);
                    if off > 0 {
                        // Symmetric types: signed levels q − off, by the sign trick.
                        let w = _mm256_sub_epi8(qs, _mm256_set1_epi8(off));
                        let l = lanes_ux(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
                        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), _mm256_set1_ps(dx[0] * dw), acc);
                    } else {
                        // Q4_1/Q5_1: unsigned levels; the offsets are added by `dot_i8`.
                        let lq = lanes_ux(qs, xv);
                        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lq), _mm256_set1_ps(dx[0] * dw), acc);
                    }
                }
                GgmlType::Q4_K | GgmlType::Q5_K => {
                    let (dd, dmin) = (f16_at(b, 0), f16_at(b, 2));
                    let scales = &b[4..16];
                    let five = kind == GgmlType::Q5_K;
                    let (qh, ql) = if five { (&b[16..48], &b[48..176]) } else { (&b[..0], &b[16..144]) };
                    let m4 = _mm256_set1_epi8(0x0f);
                    let hv = if five { load32(qh) } else { _mm256_setzero_si256() };
                    for c in 0..4 {
                        let v = load32(&ql[32 * c..]);
                        for half in 0..2 {
                            let j = 2 * c + half;
                            let mut u = if half == 0 {
                                _mm256_and_si256(v, m4)
                            } else {
                                _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4)
                            };
                            if five {
                                let h = _mm256_srl_epi16(hv, _mm_cvtsi32_si128(j as i32));
                                let h = _mm256_slli_epi16::<4>(_mm256_and_si256(h, ones));
                                u = _mm256_or_si256(u, h);
                            }
                            let xv = load32(&x[32 * j..]);
                            let (sc, mn) = k_scale_min(scales, j);
                            let lq = _mm256_cvtepi32_ps(lanes_ux(u, xv));
                            let lx = _mm256_cvtepi32_ps(lanes_ux(ones, xv));
                            acc = _mm256_fmadd_ps(lq, _mm256_set1_ps(dx[j] * (dd * sc as f32)), acc);
                            acc = _mm256_fmadd_ps(lx, _mm256_set1_ps(-dx[j] * (dmin * mn as f32)), acc);
                        }
                    }
                }
                GgmlType::Q6_K => {
                    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                    let dd = f16_at(b, 208);
                    let (m4, m3) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
                    for h in 0..2 {
                        let hv = load32(&qh[32 * h..]);
                        let (l0, l1) = (load32(&ql[64 * h..]), load32(&ql[64 * h + 32..]));
                        for k in 0..4 {
                            let lo = if k & 1 == 0 { l0 } else { l1 };
                            let lo = if k < 2 { lo } else { _mm256_srli_epi16::<4>(lo) };
                            let hi = _mm256_and_si256(_mm256_srl_epi16(hv, _mm_cvtsi32_si128(2 * k as i32)), m3);
                            let u = _mm256_or_si256(_mm256_and_si256(lo, m4), _mm256_slli_epi16::<4>(hi));
                            let c = 4 * h + k;
                            let xv = load32(&x[32 * c..]);
                            // Lanes 0-3 hold weights 0..15 (scale sc[2c]), lanes 4-7 16..31.
                            let l = _mm256_sub_epi32(lanes_ux(u, xv), _mm256_slli_epi32::<5>(lanes_ux(ones, xv)));
                            let (c0, c1) = (sc[2 * c] as i8 as f32, sc[2 * c + 1] as i8 as f32);
                            let f = dx[c] * dd;
                            let s = _mm256_setr_ps(f * c0, f * c0, f * c0, f * c0, f * c1, f * c1, f * c1, f * c1);
                            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), s, acc);
                        }
                    }
                }
            }
        }
        hsum(acc)
    }
}

/// Σ w·x over 32 levels `w` (unsigned, 0..64) and activations `x`.
#[inline(always)]
fn sum_u(w: &[u8; 32], x: &[i8]) -> i32 {
    let x: &[i8; 32] = x.try_into().unwrap_or(&[0; 32]);
    let mut s = 0i32;
    for i in 0..32 {
        s += w[i] as i32 * x[i] as i32;
    }
    s
}

/// Σ x over 32 activations.
#[inline(always)]
fn sum_x(x: &[i8]) -> i32 {
    x.iter().map(|&v| v as i32).sum()
}

/// The reference loop of [`dot_i8`]: per block, integer sums of levels times activations,
/// then `d_x·(d_w·Σqx) + d_x·(m·Σx)` (offsets where the type has them).
#[inline(always)]
fn dot_i8_body(kind: GgmlType, row: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let (be, bb) = (kind.block_elems(), kind.block_bytes());
    let mut total = 0f32;
    let mut w = [0u8; 32];
    for (i, b) in row.chunks_exact(bb).enumerate() {
        let (x, dx) = (&q[i * be..(i + 1) * be], &d[i * be / 32..(i + 1) * be / 32]);
        match kind {
            GgmlType::Q8_0 => {
                let xs: &[i8; 32] = x.try_into().unwrap_or(&[0; 32]);
                let mut s = 0i32;
                for j in 0..32 {
                    s += b[2 + j] as i8 as i32 * xs[j] as i32;
                }
                total += dx[0] * (f16_at(b, 0) * s as f32);
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let qs = if kind == GgmlType::Q4_1 { &b[4..20] } else { &b[2..18] };
                for j in 0..16 {
                    w[j] = qs[j] & 0x0f;
                    w[j + 16] = qs[j] >> 4;
                }
                // Q4_1: the offsets are added by `dot_i8`.
                let s = sum_u(&w, x);
                let s = if kind == GgmlType::Q4_1 { s } else { s - 8 * sum_x(x) };
                total += dx[0] * (f16_at(b, 0) * s as f32);
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let rest = if kind == GgmlType::Q5_1 { &b[4..24] } else { &b[2..22] };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                for j in 0..16 {
                    w[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                    w[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                }
                // Q5_1: the offsets are added by `dot_i8`.
                let s = sum_u(&w, x);
                let s = if kind == GgmlType::Q5_1 { s } else { s - 16 * sum_x(x) };
                total += dx[0] * (f16_at(b, 0) * s as f32);
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (dd, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let five = kind == GgmlType::Q5_K;
                let (qh, ql) = if five { (&b[16..48], &b[48..176]) } else { (&b[..0], &b[16..144]) };
                for j in 0..8 {
                    let (sc, mn) = k_scale_min(scales, j);
                    let bytes = &ql[32 * (j / 2)..32 * (j / 2) + 32];
                    let shift = 4 * (j % 2) as u32;
                    for l in 0..32 {
                        w[l] = (bytes[l] >> shift) & 0x0f;
                    }
                    if five {
                        for l in 0..32 {
                            w[l] |= ((qh[l] >> j) & 1) << 4;
                        }
                    }
                    let xs = &x[32 * j..32 * j + 32];
                    let (s, sx) = (sum_u(&w, xs), sum_x(xs));
                    total += dx[j] * ((dd * sc as f32) * s as f32 - (dmin * mn as f32) * sx as f32);
                }
            }
            GgmlType::Q6_K => {
                let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
                let dd = f16_at(b, 208);
                for h in 0..2 {
                    for k in 0..4 {
                        let lo = &ql[64 * h + 32 * (k & 1)..64 * h + 32 * (k & 1) + 32];
                        let hi = &qh[32 * h..32 * h + 32];
                        for l in 0..32 {
                            w[l] = ((lo[l] >> (4 * (k / 2))) & 0x0f) | (((hi[l] >> (2 * k)) & 3) << 4);
                        }
                        let c = 4 * h + k;
                        let xs = &x[32 * c..32 * c + 32];
                        let (mut s0, mut s1) = (0i32, 0i32);
                        for l in 0..16 {
                            s0 += w[l] as i32 * xs[l] as i32;
                            s1 += w[l + 16] as i32 * xs[l + 16] as i32;
                        }
                        let (x0, x1) = (sum_x(&xs[..16]), sum_x(&xs[16..]));
                        let (c0, c1) = (sc[2 * c] as i8 as f32, sc[2 * c + 1] as i8 as f32);
                        total += dx[c] * (dd * (c0 * (s0 - 32 * x0) as f32 + c1 * (s1 - 32 * x1) as f32));
                    }
                }
            }
        }
    }
    total
}

/// `x` quantized as llama.cpp quantizes the activations a `kind` matrix is dotted with, into
/// `a` (one scale per 32 activations, repeated where llama.cpp's block is longer):
/// - Q8_0/Q4_0/Q5_0: blocks of 32, `q = round(x · 127/amax)` (ties to even), the scale
///   `amax/127` rounded to f16, as its AVX2 `quantize_row_q8_0` (the reference rounds ties
///   away from zero; ties are measure-zero);
/// - Q4_1/Q5_1 (Q8_1): the same, and per block `s = f16((amax/127)·Σq)` into `a.s`;
/// - K-quants (Q8_K): blocks of 256, `q = min(127, round(x · −127/m))` with `m` the value of
///   largest magnitude, the scale `1/(−127/m)` in f32.
pub fn quantize_acts_into(kind: GgmlType, x: &[f32], a: &mut QActs) {
    let f16r = |v: f32| f16_to_f32(f32_to_f16(v));
    if kind.block_elems() != 256 {
        // Q8_0/Q8_1: libsutra's own quantization is llama.cpp's with the scale kept in f32
        // (on the vector paths); the Q8_1 sums take that scale, then each is rounded to f16.
        super::qdot::quantize_acts_into(x, a);
        if matches!(kind, GgmlType::Q4_1 | GgmlType::Q5_1) {
            for (qs, &d) in a.q.chunks(32).zip(&a.d) {
                let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                a.s.push(f16r(d * sum as f32));
            }
        }
        a.d.iter_mut().for_each(|d| *d = f16r(*d));
        return;
    }
    const ROUND: f32 = 12_582_912.0;
    a.q.resize(x.len(), 0);
    a.d.clear();
    a.s.clear();
    for (xs, qs) in x.chunks(256).zip(a.q.chunks_mut(256)) {
        let (mut amax, mut m) = (0f32, 0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                m = v;
            }
        }
        let d = if amax > 0.0 {
            let iscale = -127.0 / m;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (((iscale * v + ROUND) - ROUND) as i32).min(127) as i8;
            }
            1.0 / iscale
        } else {
            qs.fill(0);
            0.0
        };
        a.d.extend(std::iter::repeat_n(d, xs.len().div_ceil(32)));
    }
}

/// A row of whole `kind` blocks · f32 activations: each block dequantized, then dotted.
pub fn dot_f32(kind: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let (be, bb) = (kind.block_elems(), kind.block_bytes());
    let mut w = [0f32; 256];
    let mut total = 0f32;
    for (blk, xs) in row.chunks_exact(bb).zip(x.chunks_exact(be)) {
        crate::tensor::ggml::dequantize_block(kind, blk, &mut w[..be]);
        total += super::dot_f32(&w[..be], xs);
    }
    total
}

/// Rows `r0..` of a `[rows, cols]` matrix of `kind` blocks times `t` tokens of int8
/// activations (`a`: `q` `[t, cols]`, `d` and `s` `[t, cols/32]`) into `out` `[n_rows, t]`: each row,
/// read once and kept in cache, is dotted with every token by [`dot_i8`], so prefill gives
/// exactly what decode gives.
pub fn rows_times_tokens(kind: GgmlType, bytes: &[u8], cols: usize, r0: usize, a: &QActs, out: &mut [f32]) {
    let row_bytes = kind.size_of(cols);
    let t = a.q.len() / cols;
    let nb = cols / 32;
    for (j, ys) in out.chunks_exact_mut(t).enumerate() {
        let row = &bytes[(r0 + j) * row_bytes..(r0 + j + 1) * row_bytes];
        for (i, y) in ys.iter_mut().enumerate() {
            let s = a.s.get(i * nb..(i + 1) * nb).unwrap_or_default();
            *y = dot_i8(kind, row, &a.q[i * cols..(i + 1) * cols], &a.d[i * nb..(i + 1) * nb], s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::ggml::dequantize_row;

    /// llama.cpp's activation blocks: Q8_0 per 32 with the scale rounded to f16 and the largest
    /// magnitude at ±127; Q8_K per 256 with one f32 scale (repeated per 32) and the value of
    /// largest magnitude at −127; every value within half a level of its quantized one.
    #[test]
    fn activations_quantize_as_llama_cpp_blocks() {
        let mut seed = 7u64;
        let x: Vec<f32> = (0..512)
            .map(|i| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * (1.0 + (i / 32) as f32)
            })
            .collect();
        for kind in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K] {
            let mut a = QActs::default();
            quantize_acts_into(kind, &x, &mut a);
            let be = if kind.block_elems() == 256 { 256 } else { 32 };
            assert_eq!(a.d.len(), x.len() / 32, "{kind:?}");
            for (b, xs) in x.chunks(be).enumerate() {
                let qs = &a.q[b * be..(b + 1) * be];
                let ds = &a.d[b * be / 32..(b + 1) * be / 32];
                assert!(ds.iter().all(|&d| d == ds[0]), "{kind:?}: one scale per block");
                let d = ds[0];
                let top = (0..be).fold(0, |m, i| if xs[i].abs() > xs[m].abs() { i } else { m });
                if be == 32 {
                    assert_eq!(d, f16_to_f32(f32_to_f16(d)), "{kind:?}: f16 scale");
                    assert_eq!(qs[top].unsigned_abs(), 127, "{kind:?}");
                } else {
                    assert_eq!(qs[top], -127, "{kind:?}");
                }
                for (&v, &q) in xs.iter().zip(qs) {
                    // Half a level, plus what rounding the scale to f16 moves the top level.
                    let f16_err = if be == 32 { 127.0 * d.abs() / 2048.0 } else { 0.0 };
                    let bound = (0.5 * d.abs() + f16_err) * 1.01;
                    assert!((v - q as f32 * d).abs() <= bound, "{kind:?}: {v} vs {q}·{d}");
                }
            }
        }
    }

    /// `x` quantized as the products of `kind` take it.
    fn acts(kind: GgmlType, x: &[f32]) -> QActs {
        let mut a = QActs::default();
        quantize_acts_into(kind, x, &mut a);
        a
    }

    /// The product of the dequantized row `w` (of the blocks `row`) with the quantized
    /// activations, in f64: Σ w·q·d, except that a Q4_1/Q5_1 block's offset m multiplies
    /// llama.cpp's Q8_1 sum `s` instead of `d·Σq`.
    fn reference(kind: GgmlType, row: &[u8], w: &[f32], a: &QActs) -> f64 {
        let plain: f64 = w.iter().enumerate().map(|(c, &w)| w as f64 * a.q[c] as f64 * a.d[c / 32] as f64).sum();
        if !matches!(kind, GgmlType::Q4_1 | GgmlType::Q5_1) {
            return plain;
        }
        let fix: f64 = row
            .chunks_exact(kind.block_bytes())
            .enumerate()
            .map(|(i, b)| {
                let m = f16_at(b, 2) as f64;
                let sq: f64 = a.q[32 * i..32 * i + 32].iter().map(|&q| q as f64).sum();
                m * (a.s[i] as f64 - a.d[i] as f64 * sq)
            })
            .sum();
        plain + fix
    }

    /// Random blocks whose f16 scales are finite and moderate.
    fn random_row(kind: GgmlType, n_blocks: usize, seed: &mut u64) -> Vec<u8> {
        let mut next = || {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) as u8
        };
        let mut row: Vec<u8> = (0..n_blocks * kind.block_bytes()).map(|_| next()).collect();
        let h = crate::tensor::f32_to_f16;
        for blk in row.chunks_exact_mut(kind.block_bytes()) {
            let at = if kind == GgmlType::Q6_K { 208 } else { 0 };
            let v = h(0.01 + blk[at] as f32 / 4096.0).to_le_bytes();
            blk[at..at + 2].copy_from_slice(&v);
            if matches!(kind, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K) {
                let v = h(blk[3] as f32 / 8192.0 - 0.01).to_le_bytes();
                blk[2..4].copy_from_slice(&v);
            }
        }
        row
    }

    /// Both products equal an f64 dot of the reference dequantizer's row with the (quantized,
    /// resp. exact) activations.
    #[test]
    fn products_match_dequantized_reference() {
        let mut seed = 5;
        for kind in GgmlType::ALL {
            let cols = 2 * kind.block_elems();
            let row = random_row(kind, 2, &mut seed);
            let mut w = vec![0f32; cols];
            dequantize_row(kind, &row, &mut w);
            let x: Vec<f32> = (0..cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let a = acts(kind, &x);
            let want_q = reference(kind, &row, &w, &a);
            let want_f: f64 = w.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
            let scale: f64 = w.iter().zip(&x).map(|(&w, &x)| (w as f64 * x as f64).abs()).sum::<f64>() + 1e-3;
            let got_q = dot_i8(kind, &row, &a.q, &a.d, &a.s) as f64;
            let got_f = dot_f32(kind, &row, &x) as f64;
            assert!((got_q - want_q).abs() <= 1e-5 * scale, "{kind:?} int8: {got_q} vs {want_q}");
            assert!((got_f - want_f).abs() <= 1e-5 * scale, "{kind:?} f32: {got_f} vs {want_f}");
            // The int8 product is the f32 one up to the activations' quantization.
            assert!((got_q - want_f).abs() <= 2e-2 * scale, "{kind:?} int8 vs f32: {got_q} vs {want_f}");
            let mut two = vec![0f32; 3];
            let x3: Vec<f32> = x.iter().chain(&x).chain(&x).copied().collect();
            let a3 = acts(kind, &x3);
            rows_times_tokens(kind, &row, cols, 0, &a3, &mut two);
            for g in two {
                assert!((g as f64 - got_q).abs() <= 1e-6 * scale, "{kind:?} tokens: {g} vs {got_q}");
            }
        }
    }

    /// The products a model calls: prefill (`matmul`, each row kept in cache for all tokens)
    /// gives exactly what decode (`matvec`, one token at a time) gives, on one thread and on
    /// three, and both equal the dequantized rows times the activations quantized as llama.cpp
    /// quantizes them for the type.
    #[test]
    fn matmul_equals_matvec_per_token() {
        use crate::kernels::{matmul, matvec};
        use crate::tensor::{DType, Matrix, Storage, Tensor};
        use std::sync::Arc;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let mut seed = 9;
        for kind in GgmlType::ALL {
            for &(rows, nb, t) in &[(1usize, 1usize, 3usize), (7, 3, 17), (33, 2, 1), (130, 1, 5)] {
                let cols = nb * kind.block_elems();
                let bytes = random_row(kind, rows * nb, &mut seed);
                let st = Arc::new(Storage::from_bytes(&bytes));
                let n = st.len();
                let m =
                    Matrix::new(Tensor::new("w", DType::Ggml(kind), vec![rows, cols], st, 0..n).unwrap(), rows, cols);
                let x: Vec<f32> = (0..t * cols).map(|i| ((i * 53 % 97) as f32 - 48.0) / 23.0).collect();
                let mut w = vec![0f32; cols];
                for threads in [1, 3] {
                    let mut got = vec![0f32; t * rows];
                    pool.install(|| {
                        if threads == 1 {
                            rayon::ThreadPoolBuilder::new()
                                .num_threads(1)
                                .build()
                                .unwrap()
                                .install(|| matmul(&m, &x, t, &mut got))
                        } else {
                            matmul(&m, &x, t, &mut got)
                        }
                    });
                    for i in 0..t {
                        let xi = &x[i * cols..(i + 1) * cols];
                        let mut y = vec![0f32; rows];
                        pool.install(|| matvec(&m, xi, &mut y));
                        let a = acts(kind, xi);
                        for r in 0..rows {
                            assert_eq!(got[i * rows + r], y[r], "{kind:?} {rows}x{cols} t={t} token {i} row {r}");
                            m.stored_row_to_f32(r, &mut w);
                            let rb = kind.size_of(cols);
                            let want = reference(kind, &bytes[r * rb..(r + 1) * rb], &w, &a);
                            let scale: f64 =
                                w.iter().zip(xi).map(|(&w, &x)| (w as f64 * x as f64).abs()).sum::<f64>() + 1e-3;
                            assert!((y[r] as f64 - want).abs() <= 1e-5 * scale, "{kind:?} row {r}: {} vs {want}", y[r]);
                        }
                    }
                }
            }
        }
    }

    /// The dispatched dot (SIMD where the CPU has it) equals the portable loop on rows of 1,
    /// 3 and 17 blocks, to float rounding.
    #[test]
    fn dispatched_dot_equals_portable_loop() {
        let mut seed = 21;
        for kind in GgmlType::ALL {
            for nb in [1usize, 3, 17] {
                let cols = nb * kind.block_elems();
                let row = random_row(kind, nb, &mut seed);
                let x: Vec<f32> = (0..cols).map(|i| ((i * 71 % 113) as f32 - 56.0) / 13.0).collect();
                let a = acts(kind, &x);
                let (got, want) = (dot_levels(kind, &row, &a.q, &a.d), dot_i8_body(kind, &row, &a.q, &a.d));
                let mut w = vec![0f32; cols];
                dequantize_row(kind, &row, &mut w);
                let scale: f32 = w.iter().zip(&x).map(|(w, x)| (w * x).abs()).sum::<f32>() + 1e-3;
                assert!((got - want).abs() <= 1e-6 * scale, "{kind:?} {nb} blocks: {got} vs {want}");
            }
        }
    }
}
