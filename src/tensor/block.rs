//! Group-wise weight formats and their scalar reference (de)quantizers.
//!
//! A quantized row of `cols` weights (`cols` a multiple of 32) is split into groups of `G`
//! weights (G = 32, 64 or 128; the last group may be shorter, in steps of 32). Each group
//! has its own parameters, stored as IEEE half floats in separate arrays (row-major,
//! `[rows, n_groups]`), so that the packed weights of a row stay contiguous:
//!
//! * **q8** (symmetric, 8.0 + 16/G bits per weight): `d = max|w| / 127`,
//!   `q = round(w / d)` in [-127, 127], `w ≈ d·q`. Weights: `i8 [rows, cols]`.
//! * **q4** (symmetric, non-uniform, 4.0 + 16/G bits per weight: 4.5 at G = 32): a scale `d`
//!   per group and a 4-bit index `q` per weight into the 16 [`LEVELS`], `w ≈ d·LEVELS[q]`.
//!   Weights: `u8 [rows, cols/2]`, packed per block of 32 weights in 16 bytes: byte `j` holds
//!   weight `j` in its low nibble and weight `j + 16` in its high nibble (so a SIMD unpack
//!   yields 16 consecutive weights).
//!
//! `d` is rounded to f16 before the weights are quantized with it, so quantizing and
//! dequantizing agree exactly with what the kernels compute.

use crate::tensor::{f16_to_f32, f32_to_f16};

/// Weights per packing block of q4 (and the step of group sizes).
pub const BLOCK: usize = 32;

/// Number of groups of a row of `cols` weights.
pub fn n_groups(cols: usize, group: usize) -> usize {
    cols.div_ceil(group)
}

fn half(x: f32) -> (u16, f32) {
    let h = f32_to_f16(x);
    (h, f16_to_f32(h))
}

/// Quantizes one row to q8: `q` gets `cols` values, `scales` one f16 per group.
pub fn quantize_q8_row(w: &[f32], group: usize, q: &mut [i8], scales: &mut [u16]) {
    for (g, ws) in w.chunks(group).enumerate() {
        let amax = ws.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (h, d) = half(amax / 127.0);
        scales[g] = h;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (j, &v) in ws.iter().enumerate() {
            q[g * group + j] = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// Dequantizes a q8 row.
pub fn dequantize_q8_row(q: &[i8], scales: &[u16], group: usize, out: &mut [f32]) {
    for (g, os) in out.chunks_mut(group).enumerate() {
        let d = f16_to_f32(scales[g]);
        for (j, o) in os.iter_mut().enumerate() {
            *o = d * q[g * group + j] as f32;
        }
    }
}

/// The 16 levels of a q4 weight, in units of the group scale `d` (weight = d·LEVELS[q]).
///
/// A non-uniform grid: the quantiles of a normal distribution scaled to ±127, the "NormalFloat"
/// levels of Dettmers et al., "QLoRA" (2023), rounded to integers so that SIMD code can look
/// them up as bytes. Trained weights are close to normal within a group, so these levels sit
/// where the weights are and lose less than 16 evenly spaced ones.
pub const LEVELS: [i8; 16] = [-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127];

/// The level index nearest to `v` (in units of d).
#[inline]
fn nearest_level(v: f32) -> u8 {
    // Midpoints between consecutive levels.
    let mut best = 0u8;
    for k in 1..16 {
        let mid = (LEVELS[k - 1] as f32 + LEVELS[k] as f32) * 0.5;
        if v > mid {
            best = k as u8;
        }
    }
    best
}

/// Quantizes one group with scale `d` (f16 bits returned) into `q`.
fn q4_assign(ws: &[f32], d: f32, q: &mut [u8]) -> u16 {
    let h = f32_to_f16(d);
    let d = f16_to_f32(h);
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (j, &v) in ws.iter().enumerate() {
        q[j] = nearest_level(v * inv);
    }
    h
}

/// Weighted squared error of dequantizing `q` with scale `d` (f16 bits) against `ws`.
fn q4_error(ws: &[f32], q: &[u8], d: u16, importance: Option<&[f32]>) -> f32 {
    let d = f16_to_f32(d);
    ws.iter()
        .enumerate()
        .map(|(j, &v)| {
            let e = v - d * LEVELS[q[j] as usize] as f32;
            e * e * importance.map_or(1.0, |imp| imp[j])
        })
        .sum()
}

/// Quantizes one row to q4 (level indices, one per byte, into `q`; f16 scales per group).
///
/// Plain round-to-nearest takes `d = max|w| / 127` and the nearest level. With `importance`
/// (one weight per column: how much an error in that column costs, e.g. the mean squared
/// activation) the scale is also searched: a grid of candidates around `max|w| / 127`, each
/// rounding then refit by weighted least squares, keeping the least weighted error.
pub fn quantize_q4_row(w: &[f32], group: usize, importance: Option<&[f32]>, q: &mut [u8], scales: &mut [u16]) {
    let mut trial = vec![0u8; group];
    for (g, ws) in w.chunks(group).enumerate() {
        let amax = ws.iter().fold(0f32, |a, v| a.max(v.abs()));
        let qg = &mut q[g * group..g * group + ws.len()];
        let mut d = q4_assign(ws, amax / 127.0, qg);
        if let Some(imp) = importance {
            let imp = &imp[g * group..g * group + ws.len()];
            let mut best = q4_error(ws, qg, d, Some(imp));
            let t = &mut trial[..ws.len()];
            for step in -8..=8 {
                let cand = amax / 127.0 * (1.0 + 0.025 * step as f32);
                let td = q4_assign(ws, cand, t);
                // Least-squares scale for this rounding: d = Σ imp·w·L / Σ imp·L².
                let (num, den) = ws.iter().enumerate().fold((0f64, 0f64), |(n, dd), (j, &v)| {
                    let l = LEVELS[t[j] as usize] as f64;
                    let wgt = imp[j].max(1e-12) as f64;
                    (n + wgt * v as f64 * l, dd + wgt * l * l)
                });
                let refit = if den > 0.0 { f32_to_f16((num / den) as f32) } else { td };
                for cd in [td, refit] {
                    let e = if cd == td {
                        q4_error(ws, t, cd, Some(imp))
                    } else {
                        let tmp = q4_assign(ws, f16_to_f32(cd), t);
                        q4_error(ws, t, tmp, Some(imp))
                    };
                    if e < best {
                        best = e;
                        d = cd;
                        qg.copy_from_slice(t);
                    }
                }
            }
        }
        scales[g] = d;
    }
}

/// Packs unpacked 4-bit values (`cols`, a multiple of 32) into `cols / 2` bytes.
pub fn pack_q4(q: &[u8], packed: &mut [u8]) {
    for (b, qs) in q.chunks(BLOCK).enumerate() {
        for j in 0..BLOCK / 2 {
            packed[b * 16 + j] = (qs[j] & 0x0f) | ((qs[j + 16] & 0x0f) << 4);
        }
    }
}

/// The 4-bit value of weight `i` of a packed row.
#[inline]
pub fn q4_at(packed: &[u8], i: usize) -> u8 {
    let (b, j) = (i / BLOCK, i % BLOCK);
    let byte = packed[b * 16 + (j % 16)];
    if j < 16 {
        byte & 0x0f
    } else {
        byte >> 4
    }
}

/// Dequantizes a packed q4 row.
pub fn dequantize_q4_row(packed: &[u8], scales: &[u16], group: usize, out: &mut [f32]) {
    for (g, os) in out.chunks_mut(group).enumerate() {
        let d = f16_to_f32(scales[g]);
        for (j, o) in os.iter_mut().enumerate() {
            *o = d * LEVELS[q4_at(packed, g * group + j) as usize] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn row(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|i| r.normal() * if i % 17 == 0 { 4.0 } else { 1.0 }).collect()
    }

    /// q8: every weight is within half a step (d/2, plus the f16 rounding of d) of its value.
    #[test]
    fn q8_round_trip_within_half_a_step() {
        for group in [32, 64, 128] {
            let w = row(96 * 4, group as u64);
            let ng = n_groups(w.len(), group);
            let (mut q, mut s, mut out) = (vec![0i8; w.len()], vec![0u16; ng], vec![0f32; w.len()]);
            quantize_q8_row(&w, group, &mut q, &mut s);
            dequantize_q8_row(&q, &s, group, &mut out);
            for (g, (ws, os)) in w.chunks(group).zip(out.chunks(group)).enumerate() {
                let amax = ws.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = f16_to_f32(s[g]);
                assert!((d - amax / 127.0).abs() <= amax / 127.0 * 1e-3);
                for (a, b) in ws.iter().zip(os) {
                    assert!((a - b).abs() <= d * 0.5 + amax * 1e-3, "group {group}: {a} vs {b}");
                }
            }
        }
    }

    /// q4: each weight lands on its nearest level (error at most half the widest gap between
    /// levels, in units of d), packed and unpacked consistently.
    #[test]
    fn q4_round_trip_within_half_a_gap() {
        for group in [32, 64, 128] {
            let w = row(128 * 3, 100 + group as u64);
            let ng = n_groups(w.len(), group);
            let (mut q, mut s) = (vec![0u8; w.len()], vec![0u16; ng]);
            quantize_q4_row(&w, group, None, &mut q, &mut s);
            let mut packed = vec![0u8; w.len() / 2];
            pack_q4(&q, &mut packed);
            for (i, &v) in q.iter().enumerate() {
                assert_eq!(q4_at(&packed, i), v);
            }
            let mut out = vec![0f32; w.len()];
            dequantize_q4_row(&packed, &s, group, &mut out);
            for (g, (ws, os)) in w.chunks(group).zip(out.chunks(group)).enumerate() {
                let amax = ws.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = f16_to_f32(s[g]);
                assert!((d - amax / 127.0).abs() <= amax / 127.0 * 1e-3);
                for (a, b) in ws.iter().zip(os) {
                    let gap = LEVELS.windows(2).map(|p| (p[1] as i32 - p[0] as i32) as f32).fold(0f32, f32::max);
                    assert!((a - b).abs() <= d * gap / 2.0 + amax * 1e-3, "group {group}: {a} vs {b}");
                }
            }
        }
    }

    /// The scale search never does worse than plain RTN on the weighted error.
    #[test]
    fn q4_scale_search_lowers_weighted_error() {
        let w = row(256, 5);
        let imp: Vec<f32> = (0..256).map(|i| 1.0 + (i % 7) as f32).collect();
        let err = |imp_opt: Option<&[f32]>| {
            let (mut q, mut s) = (vec![0u8; 256], vec![0u16; 4]);
            quantize_q4_row(&w, 64, imp_opt, &mut q, &mut s);
            (0..4)
                .map(|g| q4_error(&w[g * 64..][..64], &q[g * 64..][..64], s[g], Some(&imp[g * 64..][..64])))
                .sum::<f32>()
        };
        assert!(err(Some(&imp)) < err(None));
    }

    #[test]
    fn zero_rows_stay_zero() {
        let w = vec![0f32; 64];
        let (mut q, mut s) = (vec![0i8; 64], vec![0u16; 2]);
        quantize_q8_row(&w, 32, &mut q, &mut s);
        let mut out = vec![1f32; 64];
        dequantize_q8_row(&q, &s, 32, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        let (mut q4, mut s4) = (vec![0u8; 64], vec![0u16; 2]);
        quantize_q4_row(&w, 32, None, &mut q4, &mut s4);
        let mut packed = vec![0u8; 32];
        pack_q4(&q4, &mut packed);
        dequantize_q4_row(&packed, &s4, 32, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
