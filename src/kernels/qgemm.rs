//! Products of group-quantized weight rows (q8, q4) with many activation rows at once: the
//! prefill of a prompt and the batched decode of many sessions.
//!
//! The activations are quantized once per product to int8 blocks of 32, as decode does
//! ([`super::qdot::quantize_acts`]), so prefill and decode compute the same integer dots.
//! The weights are then multiplied with every token:
//! - with AVX-512 VNNI, by panels of [`R`] = 16 rows, one row per 32-bit lane: a panel is
//!   unpacked to unsigned bytes (w + 128) and transposed once, so that one `VPDPBUSD` with
//!   four activation bytes broadcast from memory advances 16 rows' dots by four columns;
//!   eight of them finish a block of 32, whose integer dots are then scaled once (the
//!   16 rows' weight scales times the token's activation scale). The +128 offset comes back
//!   out exactly as −128·Σx per token and block, precomputed with the activations. Tiles of
//!   16 rows × up to [`T`] tokens keep every accumulator in registers;
//! - elsewhere (AVX2, NEON, AVX-512 without VNNI), by the decode kernels of
//!   [`super::qdot`], one row and one token at a time.
//!
//! Both equal the portable reference (`qdot::dot_q8_i8_scalar` of every row and token) to
//! float rounding: the integer sums are exact, only the order of the float sums differs.

use super::qdot::{self, QActs};

/// Weight rows per panel of the VNNI path (one per 32-bit lane of a 512-bit register).
pub(crate) const R: usize = 16;
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
    /// VNNI path only: per token and block of 32, −128·Σq, which takes the +128 offset of the
    /// unsigned weights back out of the block's dots (`[t, cols / 32]`).
    corr: Vec<i32>,
    /// Whether `corr` is built (VNNI and 64 | cols).
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
        let nb = cols / 32;
        self.corr.resize(t * nb, 0);
        for (c, a) in self.corr.chunks_exact_mut(nb).zip(&self.acts[..t]) {
            for (c, blk) in c.iter_mut().zip(a.q.chunks_exact(32)) {
                *c = -128 * blk.iter().map(|&q| q as i32).sum::<i32>();
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

/// A thread's buffers for the rows of one panel.
#[derive(Debug, Default)]
pub struct RowBuf {
    /// VNNI path: the panel's 16 rows as unsigned bytes w + 128, transposed: per block of
    /// 32, eight 64-byte chunks, chunk c holding columns 4c..4c + 4 of the 16 rows
    /// (`16·cols` bytes).
    #[cfg(target_arch = "x86_64")]
    w: Vec<u8>,
    /// VNNI path: per block of 32, the 16 rows' weight scales (`[cols / 32, 16]`, rounded up to 16 blocks).
    #[cfg(target_arch = "x86_64")]
    dwv: Vec<f32>,
    /// VNNI path: the panel's rows' scales per block (`[16, cols / 32]` rounded up to 16 blocks).
    #[cfg(target_arch = "x86_64")]
    row_d: Vec<f32>,
}

/// `out[i·n_rows + r] = row (r0 + r) · token i` for the `n_rows = out.len() / t` rows from
/// `r0` (`out` is `[t, n_rows]`, token-major, as the product's output), `cols` weights per row.
pub fn rows_times_tokens(w: QWeights<'_>, cols: usize, r0: usize, x: &QTokens, out: &mut [f32], buf: &mut RowBuf) {
    let t = x.t;
    assert!(cols == x.cols && t > 0 && out.len().is_multiple_of(t), "rows_times_tokens: shape");
    // The panel buffers serve the VNNI path only.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = buf;
    let n_rows = out.len() / t;
    let group = match w {
        QWeights::Q8 { group, .. } | QWeights::Q4 { group, .. } => group,
    };
    let ng = cols.div_ceil(group);
    let scales_of = |r: usize| match w {
        QWeights::Q8 { scales, .. } | QWeights::Q4 { scales, .. } => &scales[r * ng..(r + 1) * ng],
    };
    #[cfg(target_arch = "x86_64")]
    if x.tiled && group.is_multiple_of(32) {
        let nb = cols / 32;
        let nb16 = nb.div_ceil(16) * 16;
        buf.w.resize(R * cols, 0);
        buf.dwv.resize(nb16 * R, 0.0);
        buf.row_d.resize(R * nb16, 0.0);
        let mut j = 0;
        while j < n_rows {
            let nr = (n_rows - j).min(R);
            // SAFETY: VNNI (hence AVX-512 F/BW, F16C) was detected; 64 | cols; rows r0 + j ..
            // r0 + j + nr exist; `buf` holds a panel's room.
            unsafe { x86::prepare_panel(w, r0 + j, nr, cols, buf) };
            // The next panel's bytes, asked for while this one is computed.
            let next = if j + R < n_rows { panel_bytes(w, r0 + j + R, (n_rows - j - R).min(R), cols) } else { &[] };
            let mut i = 0;
            while i < t {
                let nt = (t - i).min(T);
                // SAFETY: VNNI was detected; `buf` holds a prepared panel; tokens i..i + nt exist.
                let blk = unsafe { x86::tile_dispatch(nt, buf, x, i, cols, if i == 0 { next } else { &[] }) };
                for (k, vals) in blk.iter().enumerate().take(nt) {
                    let o = &mut out[(i + k) * n_rows + j..];
                    if nr == R {
                        o[..R].copy_from_slice(vals);
                    } else {
                        for (o, &v) in o.iter_mut().zip(&vals[..nr]) {
                            *o = v;
                        }
                    }
                }
                i += nt;
            }
            j += nr;
        }
        return;
    }
    // One row and one token at a time on the decode kernels (q4 rows straight from their
    // packed bytes: re-reading the nibbles per token on SIMD beats unpacking the row once in
    // scalar code, measured at 1.1× for 256-token prefill and 1.4× for a batch of 8 on
    // AVX-512 without VNNI).
    for j in 0..n_rows {
        let r = r0 + j;
        for (i, a) in x.acts.iter().take(t).enumerate() {
            out[i * n_rows + j] = match w {
                QWeights::Q8 { q, .. } => qdot::dot_q8_i8(&q[r * cols..(r + 1) * cols], scales_of(r), group, a),
                QWeights::Q4 { q, .. } => qdot::dot_q4_i8(&q[r * cols / 2..(r + 1) * cols / 2], scales_of(r), group, a),
            };
        }
    }
}

/// The stored bytes of rows `r0..r0 + nr`.
#[cfg(target_arch = "x86_64")]
fn panel_bytes<'a>(w: QWeights<'a>, r0: usize, nr: usize, cols: usize) -> &'a [u8] {
    match w {
        QWeights::Q8 { q, .. } => bytemuck::cast_slice(&q[r0 * cols..(r0 + nr) * cols]),
        QWeights::Q4 { q, .. } => &q[r0 * cols / 2..(r0 + nr) * cols / 2],
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QTokens, QWeights, RowBuf, R, T};
    use crate::tensor::block::LEVELS;
    use std::arch::x86_64::*;

    /// Transposes a 16×16 matrix of 32-bit elements held one row per register.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4i + m], 128-bit lane L: rows 4i..4i + 4 at column 4L + m.
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // Column 4L + m gathers lane L of u[m], u[4 + m], u[8 + m], u[12 + m].
        for m in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x44>(u[m], u[4 + m]);
            let v1 = _mm512_shuffle_i32x4::<0xEE>(u[m], u[4 + m]);
            let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + m], u[12 + m]);
            let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + m], u[12 + m]);
            r[m] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
            r[4 + m] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
            r[8 + m] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
            r[12 + m] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
        }
    }

    /// Rows `r0..r0 + nr` (nr ≤ 16; the rest of the panel is zero weights) as unsigned bytes
    /// w + 128 into `w`, transposed per 64 columns: chunk j of step s (64 bytes at
    /// `(16·s + j)·64`) holds columns 64s + 4j .. 64s + 4j + 4 of the 16 rows, so a block of
    /// 32 is eight consecutive chunks.
    ///
    /// The 16 rows' scales go into `buf.dwv`, per block of 32 (padding rows get 0).
    ///
    /// # Safety
    /// AVX-512 F/BW and F16C must be available, 64 | cols, rows `r0..r0 + nr` must exist in
    /// `wts`, and `buf` must hold 16·cols bytes in `w` and 16 rows' block scales (rounded up
    /// to 16 blocks) in `dwv` and `row_d`.
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    pub(super) unsafe fn prepare_panel(wts: QWeights<'_>, r0: usize, nr: usize, cols: usize, buf: &mut RowBuf) {
        let (scales, group) = match wts {
            QWeights::Q8 { scales, group, .. } | QWeights::Q4 { scales, group, .. } => (scales, group),
        };
        let (nb, ng) = (cols / 32, cols.div_ceil(group));
        let nb16 = nb.div_ceil(16) * 16;
        assert!(nr <= R && buf.w.len() >= R * cols && buf.dwv.len() >= nb16 * R && buf.row_d.len() >= R * nb16);
        // The rows' scales per block, one row after another ([16, nb16], padding 0) ...
        buf.row_d[..R * nb16].fill(0.0);
        for k in 0..nr {
            let sc = &scales[(r0 + k) * ng..(r0 + k + 1) * ng];
            let d = &mut buf.row_d[k * nb16..k * nb16 + nb];
            if group == 32 {
                let mut g = 0;
                while g + 16 <= nb {
                    // SAFETY: 16 scales from g exist, and d holds nb ≥ g + 16 floats.
                    unsafe {
                        let h = _mm256_loadu_si256(sc.as_ptr().add(g).cast());
                        _mm512_storeu_ps(d.as_mut_ptr().add(g), _mm512_cvtph_ps(h));
                    }
                    g += 16;
                }
                for (d, &h) in d[g..].iter_mut().zip(&sc[g..]) {
                    *d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h as i16)));
                }
            } else {
                for (b, d) in d.iter_mut().enumerate() {
                    *d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(sc[b * 32 / group] as i16)));
                }
            }
        }
        // ... transposed to one block after another, a row per lane.
        for bb in (0..nb16).step_by(16) {
            // SAFETY: row_d holds 16 rows of nb16 floats, dwv nb16 blocks of 16.
            let mut m: [__m512i; 16] =
                std::array::from_fn(|k| unsafe { _mm512_loadu_si512(buf.row_d.as_ptr().add(k * nb16 + bb).cast()) });
            transpose16(&mut m);
            for (j, v) in m.iter().enumerate() {
                // SAFETY: as above.
                unsafe { _mm512_storeu_si512(buf.dwv.as_mut_ptr().add((bb + j) * R).cast(), *v) };
            }
        }
        let w = &mut buf.w;
        match wts {
            QWeights::Q8 { q, .. } => {
                let flip = _mm512_set1_epi8(-128);
                for s in 0..cols / 64 {
                    let mut rows = [flip; 16];
                    for (k, v) in rows.iter_mut().enumerate().take(nr) {
                        // SAFETY: row r0 + k exists, so its 64 bytes at step s do.
                        let x = unsafe { _mm512_loadu_si512(q.as_ptr().add((r0 + k) * cols + s * 64).cast()) };
                        *v = _mm512_xor_si512(x, flip);
                    }
                    transpose16(&mut rows);
                    for (j, v) in rows.iter().enumerate() {
                        // SAFETY: w holds 16·cols bytes, and (16s + j + 1)·64 ≤ 16·cols.
                        unsafe { _mm512_storeu_si512(w.as_mut_ptr().add((16 * s + j) * 64).cast(), *v) };
                    }
                }
            }
            QWeights::Q4 { q, .. } => {
                let levels = LEVELS.map(|l| (l as u8) ^ 0x80);
                // SAFETY: LEVELS has 16 bytes.
                let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(levels.as_ptr().cast()) });
                let mask = _mm512_set1_epi8(0x0f);
                // Level 7 is 0: the padding rows.
                let pad = [0x77u8; 32];
                let half = cols / 2;
                // vpermt2d indices: from four rows' packed dwords (two per register), 128-bit
                // lane j of the result holds dword j (+4 for the second) of the four rows.
                let lo4 = _mm512_set_epi32(27, 19, 11, 3, 26, 18, 10, 2, 25, 17, 9, 1, 24, 16, 8, 0);
                let hi4 = _mm512_set_epi32(31, 23, 15, 7, 30, 22, 14, 6, 29, 21, 13, 5, 28, 20, 12, 4);
                for s in 0..cols / 64 {
                    // Packed bytes of 64 columns (two blocks): 8 dwords per row, two rows per
                    // register.
                    let row = |k: usize| -> *const u8 {
                        // SAFETY: row r0 + k exists (k < nr), so its 32 bytes at step s do.
                        if k < nr {
                            unsafe { q.as_ptr().add((r0 + k) * half + s * 32) }
                        } else {
                            pad.as_ptr()
                        }
                    };
                    // SAFETY: each pointer addresses 32 readable bytes.
                    let z: [__m512i; 8] = std::array::from_fn(|i| unsafe {
                        let a = _mm256_loadu_si256(row(2 * i).cast());
                        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), _mm256_loadu_si256(row(2 * i + 1).cast()))
                    });
                    // y[2g] (rows 4g..4g + 4): lane 4j + q = row 4g + q's dword j (j < 4);
                    // y[2g + 1]: its dwords 4..8.
                    let mut y = [_mm512_setzero_si512(); 8];
                    for g in 0..4 {
                        y[2 * g] = _mm512_permutex2var_epi32(z[2 * g], lo4, z[2 * g + 1]);
                        y[2 * g + 1] = _mm512_permutex2var_epi32(z[2 * g], hi4, z[2 * g + 1]);
                    }
                    // o[j]: dword j of the 16 rows, 128-bit lane g from y[2g + j / 4].
                    let mut o = [_mm512_setzero_si512(); 8];
                    for h in 0..2 {
                        let (a, b, c, d) = (y[h], y[2 + h], y[4 + h], y[6 + h]);
                        let v0 = _mm512_shuffle_i32x4::<0x44>(a, b);
                        let v1 = _mm512_shuffle_i32x4::<0xEE>(a, b);
                        let v2 = _mm512_shuffle_i32x4::<0x44>(c, d);
                        let v3 = _mm512_shuffle_i32x4::<0xEE>(c, d);
                        o[4 * h] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
                        o[4 * h + 1] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
                        o[4 * h + 2] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
                        o[4 * h + 3] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
                    }
                    // Packed dword j of a block holds columns 4j.. (low nibbles) and 16 + 4j..
                    // (high nibbles): chunks j and j + 4 of block j / 4 of this step.
                    for (j, v) in o.iter().enumerate() {
                        let lo = _mm512_shuffle_epi8(table, _mm512_and_si512(*v, mask));
                        let hi = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(*v, 4), mask));
                        let base = (16 * s + 8 * (j / 4) + j % 4) * 64;
                        // SAFETY: w holds 16·cols bytes; base + 4·64 + 64 ≤ (16s + 16)·64 ≤ 16·cols.
                        unsafe {
                            _mm512_storeu_si512(w.as_mut_ptr().add(base).cast(), lo);
                            _mm512_storeu_si512(w.as_mut_ptr().add(base + 4 * 64).cast(), hi);
                        }
                    }
                }
            }
        }
    }

    /// The 16-row × `NT`-token tile of dots of the panel in `buf` with tokens `i0..i0 + NT`:
    /// `out[k][lane]` is row `lane` · token `i0 + k`. The lines of `pf` are prefetched on the way.
    ///
    /// # Safety
    /// VNNI must be available, `buf` must hold a panel prepared for `cols`, and tokens
    /// `i0..i0 + NT` must exist in `x` (prepared with `tiled`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile<const NT: usize>(buf: &RowBuf, x: &QTokens, i0: usize, cols: usize, pf: &[u8]) -> [[f32; R]; T] {
        let nb = cols / 32;
        let pf_per = pf.len().div_ceil(64 * nb);
        let mut acc = [_mm512_setzero_ps(); NT];
        let xq: [*const i8; NT] = std::array::from_fn(|k| x.acts[i0 + k].q.as_ptr());
        let dx: [*const f32; NT] = std::array::from_fn(|k| x.acts[i0 + k].d.as_ptr());
        let corr = &x.corr[i0 * nb..(i0 + NT) * nb];
        let (pw, pd) = (buf.w.as_ptr(), buf.dwv.as_ptr());
        for b in 0..nb {
            // SAFETY: the panel holds nb blocks of 512 bytes and nb·16 scales.
            let wv: [__m512i; 8] =
                std::array::from_fn(|c| unsafe { _mm512_loadu_si512(pw.add(b * 512 + c * 64).cast()) });
            let dw = unsafe { _mm512_loadu_ps(pd.add(b * 16)) };
            // Every token's chain advances one chunk at a time: NT independent VPDPBUSDs in a row.
            let mut a: [__m512i; NT] = std::array::from_fn(|k| _mm512_set1_epi32(corr[k * nb + b]));
            for (c, wc) in wv.iter().enumerate() {
                for (k, a) in a.iter_mut().enumerate() {
                    // SAFETY: token i0 + k has cols = 32·nb quantized values.
                    let four = unsafe { xq[k].add(b * 32 + c * 4).cast::<i32>().read_unaligned() };
                    *a = _mm512_dpbusd_epi32(*a, *wc, _mm512_set1_epi32(four));
                }
            }
            for k in 0..NT {
                // SAFETY: token i0 + k has nb block scales.
                let d = _mm512_set1_ps(unsafe { *dx[k].add(b) });
                acc[k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a[k]), dw), d, acc[k]);
            }
            // The next panel's lines, spread over the blocks.
            for line in pf.chunks(64).skip(b * pf_per).take(pf_per) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
        let mut out = [[0f32; R]; T];
        for (o, a) in out.iter_mut().zip(&acc) {
            // SAFETY: o holds 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *a) };
        }
        out
    }

    /// [`tile`] for `nt` ≤ T tokens.
    ///
    /// # Safety
    /// As [`tile`], for tokens `i0..i0 + nt`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_dispatch(
        nt: usize,
        buf: &RowBuf,
        x: &QTokens,
        i0: usize,
        cols: usize,
        pf: &[u8],
    ) -> [[f32; R]; T] {
        // SAFETY: forwarded from the caller.
        unsafe {
            match nt {
                8 => tile::<8>(buf, x, i0, cols, pf),
                7 => tile::<7>(buf, x, i0, cols, pf),
                6 => tile::<6>(buf, x, i0, cols, pf),
                5 => tile::<5>(buf, x, i0, cols, pf),
                4 => tile::<4>(buf, x, i0, cols, pf),
                3 => tile::<3>(buf, x, i0, cols, pf),
                2 => tile::<2>(buf, x, i0, cols, pf),
                _ => tile::<1>(buf, x, i0, cols, pf),
            }
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
                        let (mut a, mut b) = (vec![0f32; split * t], vec![0f32; (rows - split) * t]);
                        let mut buf = RowBuf::default();
                        if split > 0 {
                            rows_times_tokens(wts, cols, 0, &toks, &mut a, &mut buf);
                        }
                        rows_times_tokens(wts, cols, split, &toks, &mut b, &mut buf);
                        let got_at = |i: usize, k: usize| {
                            if i < split {
                                a[k * split + i]
                            } else {
                                b[k * (rows - split) + i - split]
                            }
                        };
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
                                let got = got_at(i, k);
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
