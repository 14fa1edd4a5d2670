//! Products of group-quantized weight rows (q8, q4) with many activation rows at once: the
//! prefill of a prompt and the batched decode of many sessions.
//!
//! The activations are quantized once per product to int8 blocks of 32, as decode does
//! ([`super::qdot::quantize_acts`]), so prefill and decode compute the same integer dots.
//! Each block of weight rows is unpacked once (q4 levels looked up, q8 read in place) and
//! then multiplied with every token:
//! - with AVX-512 VNNI, by register tiles of [`R`] rows × [`T`] tokens on `VPDPBUSD`
//!   (unsigned × signed bytes: the activations are offset by 128, and each row's −128·Σw,
//!   itself one `VPDPBUSD` per 64 weights, starts its accumulators, so every 32-bit lane is
//!   the exact signed dot of its four bytes); a block of rows is prepared once (q4 unpacked,
//!   the corrections and the 16-lane vectors of the two block scales of each 64-byte step)
//!   for all the tokens;
//! - elsewhere (AVX2, NEON, AVX-512 without VNNI), by the decode kernels of
//!   [`super::qdot`] on the unpacked int8 row, one token at a time.
//!
//! Both equal the portable reference (`qdot::dot_q8_i8_scalar` of every row and token) to
//! float rounding: the integer sums are exact, only the order of the float sums differs.

use super::qdot::{self, QActs};
use crate::tensor::block::LEVELS;

/// Weight rows per register tile of the VNNI path.
pub(crate) const R: usize = 2;
/// Tokens per register tile of the VNNI path.
#[cfg(target_arch = "x86_64")]
pub(crate) const T: usize = 8;

/// Whether [`rows_times_tokens`] runs on AVX-512 VNNI on this CPU (`SUTRA_NO_VNNI=1` turns it off).
pub fn vnni() -> bool {
    *VNNI
}

static VNNI: once_cell::sync::Lazy<bool> = once_cell::sync::Lazy::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        let off = std::env::var_os("SUTRA_NO_VNNI").is_some_and(|v| v != "0");
        !off && super::isa() == super::Isa::Avx512 && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
});

/// The activations of one product, quantized for the integer tiles: built once per product
/// by [`QTokens::prepare`] and shared (read-only) by every thread.
#[derive(Debug, Default)]
pub struct QTokens {
    /// Tokens.
    t: usize,
    /// Activations per token (a multiple of 32).
    cols: usize,
    /// Token i's int8 blocks and their scales.
    acts: Vec<QActs>,
    /// VNNI path only: the int8 activations offset to unsigned bytes (x + 128), `[t, cols]`.
    xu: Vec<u8>,
    /// VNNI path only: per token and 64-column step, the two block scales, 8 lanes each.
    dxv: Vec<f32>,
    /// Whether `xu`/`dxv` are built (VNNI and 64 | cols).
    tiled: bool,
}

impl QTokens {
    /// Quantizes the `t` rows of `x` (`[t, cols]`, `cols` a multiple of 32), reusing buffers.
    pub fn prepare(&mut self, x: &[f32], t: usize, cols: usize) {
        assert!(x.len() == t * cols && cols.is_multiple_of(32), "QTokens::prepare: shape");
        self.t = t;
        self.cols = cols;
        if self.acts.len() < t {
            self.acts.resize_with(t, QActs::default);
        }
        for (a, xs) in self.acts.iter_mut().zip(x.chunks_exact(cols)) {
            qdot::quantize_acts_into(xs, a);
        }
        self.tiled = vnni() && cols.is_multiple_of(64);
        if !self.tiled {
            return;
        }
        let steps = cols / 64;
        self.xu.resize(t * cols, 0);
        self.dxv.resize(t * steps * 16, 0.0);
        for (i, a) in self.acts.iter().take(t).enumerate() {
            for (u, &q) in self.xu[i * cols..(i + 1) * cols].iter_mut().zip(&a.q) {
                *u = (q as u8) ^ 0x80;
            }
            let dxv = &mut self.dxv[i * steps * 16..];
            for (b, &d) in a.d.iter().enumerate() {
                dxv[b * 8..b * 8 + 8].fill(d);
            }
        }
    }
}

/// One weight matrix's rows as [`rows_times_tokens`] reads them.
#[derive(Debug, Clone, Copy)]
pub enum QWeights<'a> {
    /// q8: `q` `[rows, cols]`, f16 `scales` `[rows, groups]`.
    Q8 {
        /// Quantized weights.
        q: &'a [i8],
        /// One f16 scale per group.
        scales: &'a [u16],
        /// Weights per group (a multiple of 32).
        group: usize,
    },
    /// q4: packed `q` `[rows, cols/2]` (see `tensor::block`), f16 `scales` `[rows, groups]`.
    Q4 {
        /// Packed level indices.
        q: &'a [u8],
        /// One f16 scale per group.
        scales: &'a [u16],
        /// Weights per group (a multiple of 32).
        group: usize,
    },
}

/// A thread's buffers for the rows of one tile.
#[derive(Debug, Default)]
pub struct RowBuf {
    /// A q4 row unpacked to int8 levels (generic path); the tile's rows as signed bytes
    /// (VNNI path, `[R, cols]`).
    w: Vec<u8>,
    /// VNNI path: per row and 64-column step, 16 lanes of −128·Σ of the lane's four weights.
    #[cfg(target_arch = "x86_64")]
    neg: Vec<i32>,
    /// VNNI path: per row and 64-column step, the two blocks' weight scales, 8 lanes each.
    #[cfg(target_arch = "x86_64")]
    dwv: Vec<f32>,
}

/// `out[r·t + i] = row (r0 + r) · token i` for the `out.len() / t` rows from `r0` (`out` is
/// `[n_rows, t]`, row-major), `cols` weights per row.
pub fn rows_times_tokens(w: QWeights<'_>, cols: usize, r0: usize, x: &QTokens, out: &mut [f32], buf: &mut RowBuf) {
    let t = x.t;
    assert!(cols == x.cols && t > 0 && out.len().is_multiple_of(t), "rows_times_tokens: shape");
    let n_rows = out.len() / t;
    let group = match w {
        QWeights::Q8 { group, .. } | QWeights::Q4 { group, .. } => group,
    };
    let ng = cols.div_ceil(group);
    let scales_of = |r: usize| match w {
        QWeights::Q8 { scales, .. } | QWeights::Q4 { scales, .. } => &scales[r * ng..(r + 1) * ng],
    };
    #[cfg(target_arch = "x86_64")]
    if x.tiled && group.is_power_of_two() {
        let steps = cols / 64;
        buf.w.resize(R * cols, 0);
        buf.neg.resize(R * steps * 16, 0);
        buf.dwv.resize(R * steps * 16, 0.0);
        let mut j = 0;
        while j < n_rows {
            let nr = (n_rows - j).min(R);
            for k in 0..nr {
                let r = r0 + j + k;
                let span = k * steps * 16..(k + 1) * steps * 16;
                let (wk, nk, dk) =
                    (&mut buf.w[k * cols..(k + 1) * cols], &mut buf.neg[span.clone()], &mut buf.dwv[span]);
                // SAFETY: VNNI (hence AVX-512 F/BW) was detected; 64 | cols; row r exists;
                // the group is a power-of-two multiple of 32 (checked above).
                unsafe { x86::prepare_row(w, r, cols, scales_of(r), group, wk, nk, dk) };
            }
            let mut i = 0;
            while i < t {
                let nt = (t - i).min(T);
                // SAFETY: VNNI was detected; `buf` holds nr prepared rows; tokens i..i + nt exist.
                let blk = unsafe { x86::tile_dispatch(nr, nt, buf, x, i, cols) };
                for (k, vals) in blk.iter().enumerate().take(nr) {
                    out[(j + k) * t + i..(j + k) * t + i + nt].copy_from_slice(&vals[..nt]);
                }
                i += nt;
            }
            j += nr;
        }
        return;
    }
    buf.w.resize(cols, 0);
    for j in 0..n_rows {
        let r = r0 + j;
        let row: &[i8] = match w {
            QWeights::Q8 { q, .. } => &q[r * cols..(r + 1) * cols],
            QWeights::Q4 { q, .. } => {
                unpack_q4_i8(&q[r * cols / 2..(r + 1) * cols / 2], &mut buf.w);
                bytemuck::cast_slice(&buf.w[..])
            }
        };
        for (i, a) in x.acts.iter().take(t).enumerate() {
            out[j * t + i] = qdot::dot_q8_i8(row, scales_of(r), group, a);
        }
    }
}

/// A packed q4 row's levels as int8 (as bytes): `out[i] = LEVELS[q4_at(packed, i)]`.
fn unpack_q4_i8(packed: &[u8], out: &mut [u8]) {
    for (blk, o) in packed.chunks_exact(16).zip(out.chunks_exact_mut(32)) {
        for (j, &b) in blk.iter().enumerate() {
            o[j] = LEVELS[(b & 15) as usize] as u8;
            o[j + 16] = LEVELS[(b >> 4) as usize] as u8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QTokens, QWeights, RowBuf, R, T};
    use crate::tensor::block::LEVELS;
    use std::arch::x86_64::*;

    /// Row `row` as signed bytes into `w` (q8 copied, q4 unpacked), its −128·Σw lanes into
    /// `neg` and the scales of its blocks of 32 into `dwv` (16 lanes each per 64 weights).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn prepare_row(
        wts: QWeights<'_>,
        row: usize,
        cols: usize,
        scales: &[u16],
        group: usize,
        w: &mut [u8],
        neg: &mut [i32],
        dwv: &mut [f32],
    ) {
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(LEVELS.as_ptr().cast()));
        let mask = _mm256_set1_epi8(0x0f);
        let c128 = _mm512_set1_epi8(-128);
        let zero = _mm512_setzero_si512();
        // Lanes 0..8 take the first scale of a pair, lanes 8..16 the second.
        let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        // Groups of 64·2^shift weights: both blocks of a step share one scale.
        let shift = (group / 64).max(1).trailing_zeros();
        for s in 0..cols / 64 {
            let d = if group == 32 {
                let pair = _mm_cvtph_ps(_mm_cvtsi32_si128((scales.as_ptr().add(2 * s) as *const i32).read_unaligned()));
                _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(pair))
            } else {
                _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(*scales.get_unchecked(s >> shift) as i16))))
            };
            _mm512_storeu_ps(dwv.as_mut_ptr().add(s * 16), d);
            let wv = match wts {
                QWeights::Q8 { q, .. } => _mm512_loadu_si512(q.as_ptr().add(row * cols + s * 64).cast()),
                QWeights::Q4 { q, .. } => {
                    let bytes = _mm256_loadu_si256(q.as_ptr().add((row * cols + s * 64) / 2).cast());
                    let lo = _mm256_and_si256(bytes, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
                    // Block 0 is bytes 0..16 (low then high nibbles), block 1 bytes 16..32.
                    let b0 = _mm256_permute2x128_si256(lo, hi, 0x20);
                    let b1 = _mm256_permute2x128_si256(lo, hi, 0x31);
                    _mm512_shuffle_epi8(table, _mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1))
                }
            };
            _mm512_storeu_si512(w.as_mut_ptr().add(s * 64).cast(), wv);
            // Σ(x + 128)·w − 128·Σw = Σx·w, exactly, in every lane.
            let n = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, c128, wv));
            _mm512_storeu_si512(neg.as_mut_ptr().add(s * 16).cast(), n);
        }
    }

    /// The `NR`×`NT` tile of dots of the rows prepared in `buf` with tokens `i0..i0 + NT`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile<const NR: usize, const NT: usize>(
        buf: &RowBuf,
        x: &QTokens,
        i0: usize,
        cols: usize,
    ) -> [[f32; T]; R] {
        let steps = cols / 64;
        let mut acc = [[_mm512_setzero_ps(); NT]; NR];
        let (pw, pn, pdw) = (buf.w.as_ptr(), buf.neg.as_ptr(), buf.dwv.as_ptr());
        let px = x.xu.as_ptr().add(i0 * cols);
        let pdx = x.dxv.as_ptr().add(i0 * steps * 16);
        for s in 0..steps {
            let xs: [__m512i; NT] = std::array::from_fn(|k| _mm512_loadu_si512(px.add(k * cols + s * 64).cast()));
            let dx: [__m512; NT] = std::array::from_fn(|k| _mm512_loadu_ps(pdx.add((k * steps + s) * 16)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = _mm512_loadu_si512(pw.add(r * cols + s * 64).cast());
                let neg = _mm512_loadu_si512(pn.add((r * steps + s) * 16).cast());
                let dw = _mm512_loadu_ps(pdw.add((r * steps + s) * 16));
                for k in 0..NT {
                    let p = _mm512_dpbusd_epi32(neg, xs[k], wv);
                    acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, dx[k]), acc[k]);
                }
            }
        }
        let mut out = [[0f32; T]; R];
        for r in 0..NR {
            for k in 0..NT {
                out[r][k] = _mm512_reduce_add_ps(acc[r][k]);
            }
        }
        out
    }

    /// [`tile`] for `nr` ≤ R rows and `nt` ≤ T tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_dispatch(
        nr: usize,
        nt: usize,
        buf: &RowBuf,
        x: &QTokens,
        i0: usize,
        cols: usize,
    ) -> [[f32; T]; R] {
        macro_rules! by_tokens {
            ($nr:literal) => {
                match nt {
                    8 => tile::<$nr, 8>(buf, x, i0, cols),
                    7 => tile::<$nr, 7>(buf, x, i0, cols),
                    6 => tile::<$nr, 6>(buf, x, i0, cols),
                    5 => tile::<$nr, 5>(buf, x, i0, cols),
                    4 => tile::<$nr, 4>(buf, x, i0, cols),
                    3 => tile::<$nr, 3>(buf, x, i0, cols),
                    2 => tile::<$nr, 2>(buf, x, i0, cols),
                    _ => tile::<$nr, 1>(buf, x, i0, cols),
                }
            };
        }
        match nr {
            2 => by_tokens!(2),
            _ => by_tokens!(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::block::*;

    /// Every row × token of both paths equals the scalar integer reference, for q8 and q4,
    /// odd row and token counts, several groups and column counts (64-multiples take the
    /// VNNI tiles where the CPU has them, 32-multiples the generic path).
    #[test]
    fn tiles_match_the_scalar_reference() {
        let mut r = Rng::new(5);
        for &cols in &[32usize, 64, 96, 768, 4096 + 64] {
            for &group in &[32usize, 64, 128] {
                for &(rows, t) in &[(1usize, 1usize), (7, 3), (33, 17), (4, 4)] {
                    let w: Vec<f32> = (0..rows * cols).map(|_| r.normal()).collect();
                    let x: Vec<f32> = (0..t * cols).map(|_| r.normal() * 3.0).collect();
                    let ng = n_groups(cols, group);
                    let (mut q8, mut s8) = (vec![0i8; rows * cols], vec![0u16; rows * ng]);
                    let (mut q4, mut s4) = (vec![0u8; rows * cols / 2], vec![0u16; rows * ng]);
                    let mut idx = vec![0u8; cols];
                    for i in 0..rows {
                        let row = &w[i * cols..(i + 1) * cols];
                        quantize_q8_row(row, group, &mut q8[i * cols..(i + 1) * cols], &mut s8[i * ng..(i + 1) * ng]);
                        quantize_q4_row(row, group, None, &mut idx, &mut s4[i * ng..(i + 1) * ng]);
                        pack_q4(&idx, &mut q4[i * cols / 2..(i + 1) * cols / 2]);
                    }
                    let mut toks = QTokens::default();
                    toks.prepare(&x, t, cols);
                    let acts: Vec<QActs> = x.chunks(cols).map(qdot::quantize_acts).collect();
                    for q4_case in [false, true] {
                        let wts = if q4_case {
                            QWeights::Q4 { q: &q4, scales: &s4, group }
                        } else {
                            QWeights::Q8 { q: &q8, scales: &s8, group }
                        };
                        // Rows split at an odd offset, as threads split them.
                        let split = rows / 2;
                        let mut out = vec![0f32; rows * t];
                        let mut buf = RowBuf::default();
                        let (a, b) = out.split_at_mut(split * t);
                        if split > 0 {
                            rows_times_tokens(wts, cols, 0, &toks, a, &mut buf);
                        }
                        rows_times_tokens(wts, cols, split, &toks, b, &mut buf);
                        for i in 0..rows {
                            for (k, a) in acts.iter().enumerate() {
                                let sc = &s8[i * ng..(i + 1) * ng];
                                let want = if q4_case {
                                    qdot::dot_q4_i8_scalar(
                                        &q4[i * cols / 2..(i + 1) * cols / 2],
                                        &s4[i * ng..(i + 1) * ng],
                                        group,
                                        a,
                                    )
                                } else {
                                    qdot::dot_q8_i8_scalar(&q8[i * cols..(i + 1) * cols], sc, group, a)
                                };
                                let got = out[i * t + k];
                                assert!(
                                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "q4 {q4_case} cols {cols} g {group} rows {rows} t {t} [{i}][{k}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
