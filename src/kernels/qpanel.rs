//! Products of rows repacked into interleaved panels of 16 rows ([`Panels`]): q8/q4 rows with
//! int8 activations and f32 rows with f32 activations, for decode (one token), batches and
//! prefill (many) alike.
//!
//! With AVX-512 VNNI, one 32-bit lane of a 512-bit register is one row of the panel: per
//! block of 32 columns, eight `VPDPBUSD`s (each with four activation bytes broadcast from
//! memory) advance all 16 rows' dots by 32 columns, q4 rows unpacked from their nibbles with
//! two byte shuffles per 64 bytes; the block's integer dots are then scaled once (the 16
//! rows' weight scales times the token's activation scale). Weights enter as unsigned bytes
//! (w + 128): the offset comes back out exactly as −128·Σx per token and block, computed with
//! the activations ([`QTokens`]). Tiles of 16 rows × up to 8 tokens keep every
//! accumulator in registers, and a panel's weights are unpacked once per block for all of
//! them. Against the row-at-a-time kernels of `qdot`, one activation load serves 16 rows and
//! no row ends in a horizontal sum.
//!
//! f32 panels hold one column of the 16 rows per 512-bit register: per column one load and
//! one multiply-add per token (its value broadcast), two accumulators per token, the columns
//! taken 256 at a time so that the panel's slice stays in the L1 cache for every token tile.
//!
//! The panels are built once per matrix ([`prepare`], at model load): q8/q4 where the CPU has
//! VNNI, f32 where it has AVX-512 (and the matrix qualifies, see [`F32_MAX_COLS`]); elsewhere
//! products take `qdot`/`qgemm` and the row kernels of `dot`. A portable loop over the same
//! layout serves panels on any CPU. Results equal the portable references
//! (`qdot::dot_q8_i8_scalar`/`dot_q4_i8_scalar` of every row and token, the f64 product) to
//! float rounding: the integer sums are exact, only the order of the float sums differs; and a
//! token's products are the same bits whatever tile it is computed in (a batch equals its
//! sessions one by one).

use super::qgemm::QTokens;
use crate::tensor::block::LEVELS;
use crate::tensor::panel::{PanelKind, Panels, ROWS};
use crate::tensor::{bf16_to_f32, f16_to_f32, Matrix, MatrixData, Storage};
use std::ops::Range;

/// Tokens per register tile.
pub(crate) const T: usize = 8;

/// Whether panel products run on this CPU (AVX-512 VNNI; `SUTRA_NO_VNNI=1` turns them off).
pub fn available() -> bool {
    super::qgemm::vnni()
}

/// The panels of `m`, built on the first call where this CPU runs panel products and `m` is
/// q8 or q4 with 32 | cols; `None` otherwise.
pub fn prepare(m: &Matrix) -> Option<&Panels> {
    m.panels.get_or_init(|| build(m)).as_ref()
}

/// Float matrices (f32, bf16, f16) are repacked where that costs no memory (their rows are mapped from a file,
/// whose pages are given back once copied), where their rows are short (at most this many
/// columns: RWKV-7's LoRA up-projections), which the row-at-a-time dot serves worst (a
/// horizontal sum per 64–256 products), or where they are small (at most [`F32_SMALL`]
/// weights: the LoRA down-projections, transposed into owned memory at load). Decode over
/// f32 panels streams the weights at the memory's speed with one thread (no row ends in a
/// reduction), and their 16-row × 8-token tiles beat the row tiles in prefill and batches.
pub const F32_MAX_COLS: usize = 256;

/// See [`F32_MAX_COLS`]: 1 MiB of f32.
pub const F32_SMALL: usize = 1 << 18;

/// Whether the float matrix `m` (f32, bf16, f16) gets panels (see [`F32_MAX_COLS`]).
fn float_panels(m: &Matrix) -> bool {
    super::isa() == super::Isa::Avx512
        && m.rows >= ROWS
        && (m.cols <= F32_MAX_COLS
            || m.rows * m.cols <= F32_SMALL
            || matches!(**m.tensor.storage(), Storage::Mapped { .. }))
}

fn build(m: &Matrix) -> Option<Panels> {
    if m.rows == 0 || m.cols == 0 {
        // Nothing to multiply (a zero-width matrix is legal; its products are zeros).
        return None;
    }
    let p = match m.data() {
        MatrixData::Q8 { q, scales, group } if available() && m.cols.is_multiple_of(32) => {
            Panels::pack_q8(q, scales, group, m.rows, m.cols)
        }
        MatrixData::Q4 { q, scales, group } if available() && m.cols.is_multiple_of(32) => {
            Panels::pack_q4(q, scales, group, m.rows, m.cols)
        }
        MatrixData::F32(w) if float_panels(m) => Panels::pack_f32(w, m.rows, m.cols),
        MatrixData::BF16(w) if float_panels(m) => Panels::pack_half(PanelKind::BF16, w, m.rows, m.cols),
        MatrixData::F16(w) if float_panels(m) => Panels::pack_half(PanelKind::F16, w, m.rows, m.cols),
        _ => return None,
    };
    // The rows are read from the panels from now on: a mapped file's pages of them can go.
    m.tensor.release_pages();
    Some(p)
}

/// The activations of a panel product.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Tokens quantized for q8/q4 panels.
    Quant(&'a QTokens),
    /// `t` tokens of f32 (`[t, cols]`) for f32 panels.
    F32(&'a [f32], usize),
}

impl Input<'_> {
    fn tokens(&self) -> usize {
        match self {
            Input::Quant(q) => q.t,
            Input::F32(_, t) => *t,
        }
    }
}

/// `out[i·n + r] = row (16·p0 + r) · token i` for the `n = out.len() / t` rows from panel
/// `p0` (`out` is `[t, n]`, token-major): q8/q4 panels with tokens prepared by
/// [`QTokens::prepare`] for `p.cols` activations, f32 panels with f32 tokens. Runs the SIMD
/// tiles where the CPU has them, else the portable loop over the same layout.
pub fn rows_times_tokens(p: &Panels, p0: usize, x: Input<'_>, out: &mut [f32]) {
    let t = x.tokens();
    let ok = match x {
        Input::Quant(q) => !p.kind.is_float() && q.cols == p.cols,
        Input::F32(v, t) => p.kind.is_float() && v.len() == t * p.cols,
    };
    assert!(ok && t > 0 && out.len().is_multiple_of(t), "qpanel: shape");
    let n = out.len() / t;
    assert!(p0 * ROWS + n <= p.rows, "qpanel: rows");
    // f32 panels are taken KC columns at a time (a 16 KB slice of the panel, kept in the L1
    // cache for all the token tiles), the slices' sums added in order; q8/q4 panels whole.
    let kc = if p.kind.is_float() { KC } else { p.cols };
    // Each tile writes the rows of its nt tokens, and only those are read: zeroed once.
    let mut blk = [[0f32; ROWS]; T];
    let mut j = 0;
    while j < n {
        let nr = (n - j).min(ROWS);
        let pi = p0 + j / ROWS;
        for c0 in (0..p.cols).step_by(kc) {
            let cs = c0..(c0 + kc).min(p.cols);
            let mut i = 0;
            while i < t {
                let nt = (t - i).min(T);
                // (Written in place: returned by value, the 512-byte tile would be copied by
                // memcpy on its way up, once per tile.)
                tile(p, pi, x, i, nt, cs.clone(), &mut blk);
                for (k, vals) in blk.iter().enumerate().take(nt) {
                    let o = &mut out[(i + k) * n + j..(i + k) * n + j + nr];
                    match (c0 == 0, <&mut [f32; ROWS]>::try_from(&mut *o)) {
                        // (A whole panel's row of 16 as one fixed-size move: a slice copy
                        // of unknown length would be a call to memcpy per token.)
                        (true, Ok(o)) => *o = *vals,
                        (true, Err(_)) => copy_short(o, vals),
                        (false, _) => o.iter_mut().zip(vals).for_each(|(o, v)| *o += v),
                    }
                }
                i += nt;
            }
        }
        j += nr;
    }
}

/// The first `o.len()` (< 16) values of a tile row into `o`: a matrix's last, partial panel.
/// (Out of line, so that the compiler does not merge it with the whole rows' fixed-size
/// copy into one memcpy call of variable length.)
#[inline(never)]
#[cold]
fn copy_short(o: &mut [f32], vals: &[f32; ROWS]) {
    o.copy_from_slice(&vals[..o.len()]);
}

/// Columns of an f32 panel per pass of [`rows_times_tokens`].
const KC: usize = 256;

/// The 16 rows of panel `pi` times tokens `i0..i0 + nt` (nt ≤ T) into `out[k][lane]`
/// (`k < nt`); f32 panels over the columns `cs` only, q8/q4 panels over all.
fn tile(p: &Panels, pi: usize, x: Input<'_>, i0: usize, nt: usize, cs: Range<usize>, out: &mut [[f32; ROWS]; T]) {
    #[cfg(target_arch = "x86_64")]
    match x {
        Input::F32(v, _) if super::isa() == super::Isa::Avx512 => {
            // SAFETY: AVX-512 F was detected; panel pi exists (checked by the caller) and v
            // holds tokens i0..i0 + nt of p.cols values.
            return unsafe { x86::tile_f32_dispatch(nt, p, pi, v, i0, cs, out) };
        }
        Input::Quant(q) if available() && q.tiled => {
            // SAFETY: VNNI was detected; panel pi exists, tokens i0..i0 + nt were prepared
            // (with their corrections) for p.cols.
            return unsafe { x86::tile_dispatch(nt, p, pi, q, i0, out) };
        }
        _ => {}
    }
    tile_scalar(p, pi, x, i0, nt, cs, out)
}

/// The portable [`tile`]: f32 panels summed column by column, q8/q4 panels per block as
/// `qdot`'s reference sums a row (integer dot, times the block's two scales).
fn tile_scalar(
    p: &Panels,
    pi: usize,
    x: Input<'_>,
    i0: usize,
    nt: usize,
    cs: Range<usize>,
    out: &mut [[f32; ROWS]; T],
) {
    *out = [[0f32; ROWS]; T];
    let bb = Panels::block_bytes(p.kind);
    match x {
        Input::F32(v, _) => {
            let weight = |c: usize, lane: usize| match p.kind {
                PanelKind::BF16 => bf16_to_f32(p.panel_half(pi)[c * ROWS + lane]),
                PanelKind::F16 => f16_to_f32(p.panel_half(pi)[c * ROWS + lane]),
                _ => p.panel_f32(pi)[c * ROWS + lane],
            };
            for (k, o) in out.iter_mut().enumerate().take(nt) {
                let xs = &v[(i0 + k) * p.cols..(i0 + k + 1) * p.cols];
                for (c, &xc) in xs.iter().enumerate().take(cs.end).skip(cs.start) {
                    for (lane, o) in o.iter_mut().enumerate() {
                        *o += weight(c, lane) * xc;
                    }
                }
            }
        }
        Input::Quant(q) => {
            let (w, sc) = (p.panel(pi), p.panel_scales(pi));
            for (k, o) in out.iter_mut().enumerate().take(nt) {
                let a = &q.acts[i0 + k];
                for (b, blk) in w.chunks_exact(bb).enumerate() {
                    for (lane, o) in o.iter_mut().enumerate() {
                        let dot: i32 = (0..32)
                            .map(|j| {
                                let wj = match p.kind {
                                    PanelKind::Q4 => {
                                        let v = blk[((j % 16) / 4) * 64 + 4 * lane + j % 4];
                                        LEVELS[(if j < 16 { v & 0x0f } else { v >> 4 }) as usize] as i32
                                    }
                                    _ => {
                                        let v = blk[(j / 4) * 64 + 4 * lane + j % 4];
                                        (v ^ 0x80) as i8 as i32
                                    }
                                };
                                wj * a.q[b * 32 + j] as i32
                            })
                            .sum();
                        *o += f16_to_f32(sc[b * ROWS + lane]) * (dot as f32 * a.d[b]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QTokens, Range, ROWS, T};
    use crate::tensor::block::LEVELS;
    use crate::tensor::panel::{PanelKind, Panels};
    use std::arch::x86_64::*;

    /// The weight type of [`tile_f32`]'s panel.
    const KIND_F32: u8 = 0;
    const KIND_BF16: u8 = 1;
    const KIND_F16: u8 = 2;

    /// Whether the CPU has AVX-512 VBMI (q4 nibbles looked up by `VPERMB`, without masking).
    static VBMI: once_cell::sync::Lazy<bool> = once_cell::sync::Lazy::new(|| is_x86_feature_detected!("avx512vbmi"));

    /// Bytes ahead of the current block that the weights are prefetched from.
    const PREFETCH: usize = 1536;

    /// Defines the tile function `$name` for the CPU features `$features` (`$vbmi`: with
    /// VBMI's byte permute).
    macro_rules! tile_fn {
        ($name:ident, $features:literal, $vbmi:literal) => {
            /// The 16-row × `NT`-token tile of panel `pi` with tokens `i0..i0 + NT`: `out[k][lane]`
            /// is row `16·pi + lane` · token `i0 + k`.
            ///
            /// # Safety
            /// VNNI must be available (and VBMI for `tile_vbmi`), panel `pi` must exist, tokens
            /// `i0..i0 + NT` must exist in `x` (prepared with `tiled` for `p.cols`).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn $name<const NT: usize, const Q4: bool>(
                p: &Panels,
                pi: usize,
                x: &QTokens,
                i0: usize,
                out: &mut [[f32; ROWS]; T],
            ) {
                let nb = p.n_blocks();
                let bb = Panels::block_bytes(if Q4 { PanelKind::Q4 } else { PanelKind::Q8 });
                let (w, sc) = (p.panel(pi), p.panel_scales(pi));
                let (pw, ps) = (w.as_ptr(), sc.as_ptr());
                let levels = LEVELS.map(|l| (l as u8) ^ 0x80);
                // SAFETY: LEVELS has 16 bytes.
                let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(levels.as_ptr().cast()) });
                let mask = _mm512_set1_epi8(0x0f);
                let mut acc = [_mm512_setzero_ps(); NT];
                let xq: [*const i8; NT] = std::array::from_fn(|k| x.acts[i0 + k].q.as_ptr());
                let dx: [*const f32; NT] = std::array::from_fn(|k| x.acts[i0 + k].d.as_ptr());
                let corr: [*const i32; NT] = std::array::from_fn(|k| x.corr[(i0 + k) * nb..].as_ptr());
                for b in 0..nb {
                    let blk = pw.wrapping_add(b * bb);
                    for line in (0..bb).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH + line).cast());
                    }
                    // wv[c]: columns 4c..4c + 4 of the 16 rows, as unsigned bytes.
                    // SAFETY: block b of the panel has bb bytes at blk, and 16 scales at ps + 16b.
                    let (wv, dw) = unsafe {
                        let wv: [__m512i; 8] = if Q4 {
                            let c: [__m512i; 4] = std::array::from_fn(|c| _mm512_load_si512(blk.add(64 * c).cast()));
                            std::array::from_fn(|k| {
                                let v = if k < 4 { c[k] } else { _mm512_srli_epi16(c[k - 4], 4) };
                                if $vbmi {
                                    // VPERMB reads the low 6 bits of each index: the table repeats
                                    // every 16 bytes, so the bits above the nibble need no mask.
                                    _mm512_permutexvar_epi8(v, table)
                                } else {
                                    _mm512_shuffle_epi8(table, _mm512_and_si512(v, mask))
                                }
                            })
                        } else {
                            std::array::from_fn(|c| _mm512_load_si512(blk.add(64 * c).cast()))
                        };
                        (wv, _mm512_cvtph_ps(_mm256_loadu_si256(ps.add(16 * b).cast())))
                    };
                    for k in 0..NT {
                        // SAFETY: token i0 + k has 32·nb quantized values, nb scales and corrections.
                        unsafe {
                            let xp = xq[k].add(32 * b);
                            let four = |c: usize| _mm512_set1_epi32(xp.add(4 * c).cast::<i32>().read_unaligned());
                            let mut a = _mm512_set1_epi32(*corr[k].add(b));
                            if NT == 1 {
                                // One token: two chains of four, so that the dependent VPDPBUSDs
                                // overlap (with more tokens, the tokens' chains do).
                                let mut a1 = _mm512_setzero_si512();
                                for c in 0..4 {
                                    a = _mm512_dpbusd_epi32(a, wv[c], four(c));
                                    a1 = _mm512_dpbusd_epi32(a1, wv[c + 4], four(c + 4));
                                }
                                a = _mm512_add_epi32(a, a1);
                            } else {
                                for (c, w) in wv.iter().enumerate() {
                                    a = _mm512_dpbusd_epi32(a, *w, four(c));
                                }
                            }
                            let d = _mm512_set1_ps(*dx[k].add(b));
                            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(dw, d), acc[k]);
                        }
                    }
                }
                for (o, a) in out.iter_mut().zip(&acc) {
                    // SAFETY: o holds 16 floats.
                    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *a) };
                }
            }
        };
    }
    tile_fn!(tile, "avx512f,avx512bw,avx512vnni", false);
    tile_fn!(tile_vbmi, "avx512f,avx512bw,avx512vnni,avx512vbmi", true);

    /// [`tile`] for `nt` ≤ T tokens of either row type.
    ///
    /// # Safety
    /// As [`tile`], for tokens `i0..i0 + nt`.
    pub(super) unsafe fn tile_dispatch(
        nt: usize,
        p: &Panels,
        pi: usize,
        x: &QTokens,
        i0: usize,
        out: &mut [[f32; ROWS]; T],
    ) {
        macro_rules! by_tokens {
            ($f:ident, $q4:literal) => {
                match nt {
                    8 => $f::<8, $q4>(p, pi, x, i0, out),
                    7 => $f::<7, $q4>(p, pi, x, i0, out),
                    6 => $f::<6, $q4>(p, pi, x, i0, out),
                    5 => $f::<5, $q4>(p, pi, x, i0, out),
                    4 => $f::<4, $q4>(p, pi, x, i0, out),
                    3 => $f::<3, $q4>(p, pi, x, i0, out),
                    2 => $f::<2, $q4>(p, pi, x, i0, out),
                    _ => $f::<1, $q4>(p, pi, x, i0, out),
                }
            };
        }
        // SAFETY: forwarded from the caller; tile_vbmi only where VBMI was detected.
        unsafe {
            match p.kind {
                PanelKind::Q4 if *VBMI => by_tokens!(tile_vbmi, true),
                PanelKind::Q4 => by_tokens!(tile, true),
                PanelKind::Q8 => by_tokens!(tile, false),
                _ => unreachable!("float panels take tile_f32"),
            }
        }
    }

    /// The 16-row × `NT`-token tile of f32 panel `pi` with tokens `i0..i0 + NT` of `x`
    /// (`[t, cols]`): per column, one load of the 16 rows' weights and a multiply-add per
    /// token with its value broadcast.
    ///
    /// # Safety
    /// AVX-512 F must be available, panel `pi` must exist, `x` must hold tokens `i0..i0 + NT`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_f32<const NT: usize, const K: u8>(
        p: &Panels,
        pi: usize,
        x: &[f32],
        i0: usize,
        cs: Range<usize>,
        out: &mut [[f32; ROWS]; T],
    ) {
        let cols = p.cols;
        let w = p.panel(pi).as_ptr();
        let xs = x[i0 * cols..(i0 + NT) * cols].as_ptr();
        // Two accumulators per token, taking the columns in turn (the FMA latency): the same
        // order for any NT, so that a token's products do not depend on its tile.
        let mut acc = [[_mm512_setzero_ps(); 2]; NT];
        assert!(cs.end <= cols);
        // SAFETY: column c < cols has 16 weights in the panel (64-byte aligned, so the 32-byte
        // columns of bf16/f16 are 32-byte aligned); x holds token k's column c.
        let step = |c: usize, u: usize, acc: &mut [[__m512; 2]; NT]| unsafe {
            let wv = match K {
                KIND_F32 => _mm512_load_ps(w.cast::<f32>().add(c * ROWS)),
                KIND_BF16 => {
                    let h = _mm256_load_si256(w.cast::<u16>().add(c * ROWS).cast());
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                }
                _ => _mm512_cvtph_ps(_mm256_load_si256(w.cast::<u16>().add(c * ROWS).cast())),
            };
            for (k, a) in acc.iter_mut().enumerate() {
                a[u] = _mm512_fmadd_ps(wv, _mm512_set1_ps(*xs.add(k * cols + c)), a[u]);
            }
        };
        let mut c = cs.start;
        while c + 2 <= cs.end {
            step(c, (c - cs.start) % 2, &mut acc);
            step(c + 1, (c + 1 - cs.start) % 2, &mut acc);
            c += 2;
        }
        if c < cs.end {
            step(c, (c - cs.start) % 2, &mut acc);
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            let s = _mm512_add_ps(a[0], a[1]);
            // SAFETY: o holds 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), s) };
        }
    }

    /// [`tile_f32`] for `nt` ≤ T tokens.
    ///
    /// # Safety
    /// As [`tile_f32`], for tokens `i0..i0 + nt`.
    pub(super) unsafe fn tile_f32_dispatch(
        nt: usize,
        p: &Panels,
        pi: usize,
        x: &[f32],
        i0: usize,
        cs: Range<usize>,
        out: &mut [[f32; ROWS]; T],
    ) {
        macro_rules! by_tokens {
            ($k:expr) => {
                match nt {
                    8 => tile_f32::<8, { $k }>(p, pi, x, i0, cs, out),
                    7 => tile_f32::<7, { $k }>(p, pi, x, i0, cs, out),
                    6 => tile_f32::<6, { $k }>(p, pi, x, i0, cs, out),
                    5 => tile_f32::<5, { $k }>(p, pi, x, i0, cs, out),
                    4 => tile_f32::<4, { $k }>(p, pi, x, i0, cs, out),
                    3 => tile_f32::<3, { $k }>(p, pi, x, i0, cs, out),
                    2 => tile_f32::<2, { $k }>(p, pi, x, i0, cs, out),
                    _ => tile_f32::<1, { $k }>(p, pi, x, i0, cs, out),
                }
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            match p.kind {
                PanelKind::BF16 => by_tokens!(KIND_BF16),
                PanelKind::F16 => by_tokens!(KIND_F16),
                _ => by_tokens!(KIND_F32),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::block::*;

    /// A token's products do not depend on the tile it is computed in: nine tokens at once
    /// (tiles of 8 and 1) give the bits of each token alone, for f32, bf16, f16, q8 and q4
    /// panels, so a
    /// batch of sessions equals the sessions one by one exactly; the SIMD tiles equal the
    /// portable loop, and the f32 panels an f64 product, to float rounding.
    #[test]
    fn tokens_alone_equal_tokens_in_tiles() {
        let mut r = Rng::new(17);
        let (rows, cols, t) = (40usize, 96usize, 9usize);
        let w: Vec<f32> = (0..rows * cols).map(|_| r.normal()).collect();
        let x: Vec<f32> = (0..t * cols).map(|_| r.normal()).collect();
        let ng = n_groups(cols, 32);
        let (mut q8, mut s8) = (vec![0i8; rows * cols], vec![0u16; rows * ng]);
        let (mut idx, mut q4, mut s4) = (vec![0u8; cols], vec![0u8; rows * cols / 2], vec![0u16; rows * ng]);
        for i in 0..rows {
            let row = &w[i * cols..(i + 1) * cols];
            quantize_q8_row(row, 32, &mut q8[i * cols..(i + 1) * cols], &mut s8[i * ng..(i + 1) * ng]);
            quantize_q4_row(row, 32, None, &mut idx, &mut s4[i * ng..(i + 1) * ng]);
            pack_q4(&idx, &mut q4[i * cols / 2..(i + 1) * cols / 2]);
        }
        let bf: Vec<u16> = w.iter().map(|&v| crate::tensor::f32_to_bf16(v)).collect();
        let hf: Vec<u16> = w.iter().map(|&v| crate::tensor::f32_to_f16(v)).collect();
        let panels = [
            Panels::pack_f32(&w, rows, cols),
            Panels::pack_half(PanelKind::BF16, &bf, rows, cols),
            Panels::pack_half(PanelKind::F16, &hf, rows, cols),
            Panels::pack_q8(&q8, &s8, 32, rows, cols),
            Panels::pack_q4(&q4, &s4, 32, rows, cols),
        ];
        for p in &panels {
            let run = |x: &[f32], t: usize, out: &mut [f32]| {
                if p.kind.is_float() {
                    rows_times_tokens(p, 0, Input::F32(x, t), out)
                } else {
                    let mut q = QTokens::default();
                    q.prepare(x, t, cols);
                    rows_times_tokens(p, 0, Input::Quant(&q), out)
                }
            };
            let mut all = vec![0f32; t * rows];
            run(&x, t, &mut all);
            // The portable loop over the same layout, to float rounding.
            let mut q = QTokens::default();
            q.prepare(&x, t, cols);
            let input = if p.kind.is_float() { Input::F32(&x, t) } else { Input::Quant(&q) };
            for pi in 0..p.n_panels() {
                for i0 in [0, 8] {
                    let nt = (t - i0).min(T);
                    let cs = 0..cols;
                    let (mut got, mut want) = ([[0f32; ROWS]; T], [[0f32; ROWS]; T]);
                    tile(p, pi, input, i0, nt, cs.clone(), &mut got);
                    tile_scalar(p, pi, input, i0, nt, cs, &mut want);
                    for k in 0..nt {
                        for lane in 0..ROWS {
                            let (g, w) = (got[k][lane], want[k][lane]);
                            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{:?} simd vs scalar: {g} vs {w}", p.kind);
                        }
                    }
                }
            }
            for k in 0..t {
                let mut one = vec![0f32; rows];
                run(&x[k * cols..(k + 1) * cols], 1, &mut one);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&one), bits(&all[k * rows..(k + 1) * rows]), "{:?} token {k}", p.kind);
                if p.kind.is_float() {
                    let wt = |i: usize| match p.kind {
                        PanelKind::BF16 => bf16_to_f32(bf[i]),
                        PanelKind::F16 => f16_to_f32(hf[i]),
                        _ => w[i],
                    };
                    for (i, &got) in one.iter().enumerate() {
                        let want: f64 = (0..cols).map(|c| wt(i * cols + c) as f64 * x[k * cols + c] as f64).sum();
                        assert!((got as f64 - want).abs() <= 1e-5 * cols as f64, "f32 [{i}][{k}]: {got} vs {want}");
                    }
                }
            }
        }
    }
}
