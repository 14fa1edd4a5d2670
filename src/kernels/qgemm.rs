//! Products of group-quantized weight rows (q8, q4) with many activation rows at once: the
//! prefill of a prompt and the batched decode of many sessions.
//!
//! The activations are quantized once per product to int8 blocks of 32 ([`QTokens`], as
//! decode does with `qdot::quantize_acts`), so prefill and decode compute the same integer
//! dots. Where the CPU has AVX-512 VNNI the rows are multiplied as interleaved panels
//! (`kernels::qpanel`, which reads [`QTokens`] too); elsewhere (AVX2, NEON, AVX-512 without
//! VNNI) [`rows_times_tokens`] runs the decode kernels of [`super::qdot`], one row and one
//! token at a time. Both equal the portable reference (`qdot::dot_q8_i8_scalar` of every row
//! and token) to float rounding: the integer sums are exact, only the order of the float sums
//! differs.

use super::qdot::{self, QActs};

/// Whether this CPU has AVX-512 VNNI for the integer products (`SUTRA_NO_VNNI=1` turns it off).
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

/// The activations of one product, quantized for the integer products: built once per
/// product by [`QTokens::prepare`] and shared (read-only) by every thread.
#[derive(Debug, Default)]
pub struct QTokens {
    /// Tokens.
    pub(crate) t: usize,
    /// Activations per token (a multiple of 32).
    pub(crate) cols: usize,
    /// Token i's int8 blocks and their scales.
    pub(crate) acts: Vec<QActs>,
    /// VNNI only: per token and block of 32, −128·Σq, which takes the +128 offset of the
    /// unsigned weights of the panel products back out of the block's dots (`[t, cols / 32]`).
    pub(crate) corr: Vec<i32>,
    /// Whether `corr` is built (VNNI).
    pub(crate) tiled: bool,
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
        self.tiled = vnni();
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

/// `out[i·n_rows + r] = row (r0 + r) · token i` for the `n_rows = out.len() / t` rows from
/// `r0` (`out` is `[t, n_rows]`, token-major, as the product's output), `cols` weights per row.
pub fn rows_times_tokens(w: QWeights<'_>, cols: usize, r0: usize, x: &QTokens, out: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::block::*;
    use crate::tensor::panel::{Panels, ROWS};

    /// Every row × token of the generic path and of the panel products (where the CPU has
    /// them) equals the scalar integer reference, for q8 and q4, odd row and token counts
    /// (partial panels, partial token tiles), several groups and column counts.
    #[test]
    fn tiles_match_the_scalar_reference() {
        let mut r = Rng::new(5);
        for &cols in &[32usize, 64, 96, 768, 4096 + 64] {
            for &group in &[32usize, 64, 128] {
                for &(rows, t) in &[(1usize, 1usize), (7, 3), (33, 17), (4, 4), (48, 9)] {
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
                        let want: Vec<f32> = (0..t * rows)
                            .map(|ik| {
                                let (k, i) = (ik / rows, ik % rows);
                                let sc = if q4_case { &s4[i * ng..(i + 1) * ng] } else { &s8[i * ng..(i + 1) * ng] };
                                if q4_case {
                                    qdot::dot_q4_i8_scalar(&q4[i * cols / 2..(i + 1) * cols / 2], sc, group, &acts[k])
                                } else {
                                    qdot::dot_q8_i8_scalar(&q8[i * cols..(i + 1) * cols], sc, group, &acts[k])
                                }
                            })
                            .collect();
                        let check = |path: &str, split: usize, a: &[f32], b: &[f32]| {
                            for i in 0..rows {
                                for k in 0..t {
                                    let got =
                                        if i < split { a[k * split + i] } else { b[k * (rows - split) + i - split] };
                                    let want = want[k * rows + i];
                                    assert!(
                                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                        "{path}: q4 {q4_case} cols {cols} g {group} rows {rows} t {t} [{i}][{k}]: {got} vs {want}"
                                    );
                                }
                            }
                        };
                        // Rows split at an odd offset, as threads split them.
                        let split = rows / 2;
                        let (mut a, mut b) = (vec![0f32; split * t], vec![0f32; (rows - split) * t]);
                        if split > 0 {
                            rows_times_tokens(wts, cols, 0, &toks, &mut a);
                        }
                        rows_times_tokens(wts, cols, split, &toks, &mut b);
                        check("generic", split, &a, &b);
                        // The panel products (SIMD where the CPU has it), split at a panel.
                        {
                            let p = if q4_case {
                                Panels::pack_q4(&q4, &s4, group, rows, cols)
                            } else {
                                Panels::pack_q8(&q8, &s8, group, rows, cols)
                            };
                            let split = if rows > ROWS { ROWS } else { 0 };
                            let (mut a, mut b) = (vec![0f32; split * t], vec![0f32; (rows - split) * t]);
                            if split > 0 {
                                super::super::qpanel::rows_times_tokens(
                                    &p,
                                    0,
                                    super::super::qpanel::Input::Quant(&toks),
                                    &mut a,
                                );
                            }
                            super::super::qpanel::rows_times_tokens(
                                &p,
                                split / ROWS,
                                super::super::qpanel::Input::Quant(&toks),
                                &mut b,
                            );
                            check("panels", split, &a, &b);
                        }
                    }
                }
            }
        }
    }
}
