//! Group-wise weight formats and their scalar reference (de)quantizers.
//!
//! A quantized row of `cols` weights (`cols` a multiple of 32) is split into groups of `G`
//! weights (G = 32, 64 or 128; the last group may be shorter, in steps of 32). Each group
//! has its own parameters, stored as IEEE half floats in separate arrays (row-major,
//! `[rows, n_groups]`), so that the packed weights of a row stay contiguous:
//!
//! * **q8** (symmetric, 8.0 + 16/G bits per weight): `d = max|w| / 127`,
//!   `q = round(w / d)` in [-127, 127], `w ≈ d·q`. Weights: `i8 [rows, cols]`.
//! * **q4** (asymmetric, 4.0 + 32/G bits per weight): a scale `d` and a minimum `m` per
//!   group, `q = round((w − m) / d)` in [0, 15], `w ≈ d·q + m`. Weights: `u8 [rows, cols/2]`,
//!   packed per block of 32 weights in 16 bytes: byte `j` holds weight `j` in its low nibble
//!   and weight `j + 16` in its high nibble (so a SIMD unpack yields 16 consecutive weights).
//!
//! `d` and `m` are rounded to f16 before the weights are quantized with them, so quantizing
//! and dequantizing agree exactly with what the kernels compute.

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

/// Quantizes one group to 4 bits with the range [lo, hi]: returns (d, m) as f16 bits and
/// writes the 4-bit values to `q`.
fn q4_group(ws: &[f32], lo: f32, hi: f32, q: &mut [u8]) -> (u16, u16) {
    let (hm, m) = half(lo);
    let (hd, d) = half(((hi - m) / 15.0).max(0.0));
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (j, &v) in ws.iter().enumerate() {
        q[j] = ((v - m) * inv).round().clamp(0.0, 15.0) as u8;
    }
    (hd, hm)
}

/// Weighted squared error of dequantizing `q` with (d, m) against `ws`.
fn q4_error(ws: &[f32], q: &[u8], d: u16, m: u16, importance: Option<&[f32]>) -> f32 {
    let (d, m) = (f16_to_f32(d), f16_to_f32(m));
    ws.iter()
        .enumerate()
        .map(|(j, &v)| {
            let e = v - (d * q[j] as f32 + m);
            e * e * importance.map_or(1.0, |imp| imp[j])
        })
        .sum()
}

/// The (d, m) minimizing Σ imp·(w − d·q − m)² for fixed `q`, as f16 bits (None when singular).
fn q4_refit(ws: &[f32], q: &[u8], imp: &[f32]) -> Option<(u16, u16)> {
    let (mut sw, mut sq, mut sqq, mut sx, mut sqx) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (j, &x) in ws.iter().enumerate() {
        let (w, qv, x) = (imp[j].max(1e-12) as f64, q[j] as f64, x as f64);
        sw += w;
        sq += w * qv;
        sqq += w * qv * qv;
        sx += w * x;
        sqx += w * qv * x;
    }
    let det = sw * sqq - sq * sq;
    if det.abs() < 1e-20 {
        return None;
    }
    let d = (sw * sqx - sq * sx) / det;
    let m = (sqq * sx - sq * sqx) / det;
    (d > 0.0).then(|| (f32_to_f16(d as f32), f32_to_f16(m as f32)))
}

/// Quantizes one row to q4 (values unpacked, one per byte, into `q`).
///
/// Plain round-to-nearest uses each group's min and max. With `importance` (one weight per
/// column: how much an error in that column costs, e.g. the mean squared activation), each
/// group's range is also searched: both ends shrunk independently (clipping), each rounding
/// refit by weighted least squares, and the (d, m) with the least weighted error kept.
pub fn quantize_q4_row(
    w: &[f32],
    group: usize,
    importance: Option<&[f32]>,
    q: &mut [u8],
    scales: &mut [u16],
    mins: &mut [u16],
) {
    let mut trial = vec![0u8; group];
    for (g, ws) in w.chunks(group).enumerate() {
        let lo = ws.iter().fold(f32::INFINITY, |a, &v| a.min(v));
        let hi = ws.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let qg = &mut q[g * group..g * group + ws.len()];
        let (mut d, mut m) = q4_group(ws, lo, hi, qg);
        if let Some(imp) = importance {
            let imp = &imp[g * group..g * group + ws.len()];
            let mut best = q4_error(ws, qg, d, m, Some(imp));
            let t = &mut trial[..ws.len()];
            // Shrink each end of the range independently, then refit (d, m) by weighted
            // least squares for the rounding that range gave, and keep the best.
            for a in 0..6 {
                for b in 0..6 {
                    let (l, h) = (lo * (1.0 - 0.04 * a as f32), hi * (1.0 - 0.04 * b as f32));
                    let (td, tm) = q4_group(ws, l, h, t);
                    let candidates = [(td, tm), q4_refit(ws, t, imp).unwrap_or((td, tm))];
                    for (cd, cm) in candidates {
                        let (fd, fm) = (f16_to_f32(cd), f16_to_f32(cm));
                        if fd <= 0.0 {
                            continue;
                        }
                        let inv = 1.0 / fd;
                        for (j, &v) in ws.iter().enumerate() {
                            t[j] = ((v - fm) * inv).round().clamp(0.0, 15.0) as u8;
                        }
                        let e = q4_error(ws, t, cd, cm, Some(imp));
                        if e < best {
                            best = e;
                            (d, m) = (cd, cm);
                            qg.copy_from_slice(t);
                        }
                    }
                }
            }
        }
        scales[g] = d;
        mins[g] = m;
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
pub fn dequantize_q4_row(packed: &[u8], scales: &[u16], mins: &[u16], group: usize, out: &mut [f32]) {
    for (g, os) in out.chunks_mut(group).enumerate() {
        let (d, m) = (f16_to_f32(scales[g]), f16_to_f32(mins[g]));
        for (j, o) in os.iter_mut().enumerate() {
            *o = d * q4_at(packed, g * group + j) as f32 + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::synth::Rng;

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

    /// q4: within half a step of the group's range / 15, packed and unpacked consistently.
    #[test]
    fn q4_round_trip_within_half_a_step() {
        for group in [32, 64, 128] {
            let w = row(128 * 3, 100 + group as u64);
            let ng = n_groups(w.len(), group);
            let (mut q, mut s, mut m) = (vec![0u8; w.len()], vec![0u16; ng], vec![0u16; ng]);
            quantize_q4_row(&w, group, None, &mut q, &mut s, &mut m);
            let mut packed = vec![0u8; w.len() / 2];
            pack_q4(&q, &mut packed);
            for (i, &v) in q.iter().enumerate() {
                assert_eq!(q4_at(&packed, i), v);
            }
            let mut out = vec![0f32; w.len()];
            dequantize_q4_row(&packed, &s, &m, group, &mut out);
            for (g, (ws, os)) in w.chunks(group).zip(out.chunks(group)).enumerate() {
                let lo = ws.iter().fold(0f32, |a, &v| a.min(v));
                let hi = ws.iter().fold(0f32, |a, &v| a.max(v));
                let step = (hi - lo) / 15.0;
                assert!((f16_to_f32(s[g]) - step).abs() <= step * 2e-3 + 1e-6);
                for (a, b) in ws.iter().zip(os) {
                    assert!((a - b).abs() <= step * 0.5 + (hi - lo) * 2e-3, "group {group}: {a} vs {b}");
                }
            }
        }
    }

    /// The range search and refit never do worse than plain min/max on the weighted error.
    #[test]
    fn q4_clip_search_lowers_weighted_error() {
        let w = row(256, 5);
        let imp: Vec<f32> = (0..256).map(|i| 1.0 + (i % 7) as f32).collect();
        let err = |imp_opt: Option<&[f32]>| {
            let (mut q, mut s, mut m) = (vec![0u8; 256], vec![0u16; 4], vec![0u16; 4]);
            quantize_q4_row(&w, 64, imp_opt, &mut q, &mut s, &mut m);
            (0..4)
                .map(|g| q4_error(&w[g * 64..][..64], &q[g * 64..][..64], s[g], m[g], Some(&imp[g * 64..][..64])))
                .sum::<f32>()
        };
        assert!(err(Some(&imp)) <= err(None));
    }

    #[test]
    fn zero_rows_stay_zero() {
        let w = vec![0f32; 64];
        let (mut q, mut s) = (vec![0i8; 64], vec![0u16; 2]);
        quantize_q8_row(&w, 32, &mut q, &mut s);
        let mut out = vec![1f32; 64];
        dequantize_q8_row(&q, &s, 32, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        let (mut q4, mut s4, mut m4) = (vec![0u8; 64], vec![0u16; 2], vec![0u16; 2]);
        quantize_q4_row(&w, 32, None, &mut q4, &mut s4, &mut m4);
        let mut packed = vec![0u8; 32];
        pack_q4(&q4, &mut packed);
        dequantize_q4_row(&packed, &s4, &m4, 32, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
