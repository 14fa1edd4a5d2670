//! Activation-aware weight quantization (AWQ; J. Lin et al., "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration", MLSys 2024).
//!
//! 1. **Calibrate**: run the unquantized model on calibration text while every product
//!    records, per input channel of each matrix, the mean |x| and mean x², plus a sample
//!    of input rows ([`Calibration`], an [`Observer`] installed in the session's execution
//!    context, which every product goes through: every architecture is covered without
//!    model code).
//! 2. **Search the scale**: for each matrix, with s_c = mean|x_c|^α normalized by
//!    sqrt(max·min), quantize `W·diag(s)` and measure ‖W X − Q(W·diag(s)) (X/s)‖² on the
//!    sampled inputs, for α on a grid over [0, 1]; keep the best α ([`search_scale`]).
//! 3. **Clip**: quantize with each group's range shrunk where that lowers the error
//!    weighted by E[(x/s)²] (see `tensor::block::quantize_q4_row`).
//!
//! The runtime multiplies the input by 1/s before the product (`Matrix::input_scale`).

use crate::exec::Observer;
use crate::tensor::Matrix;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Input rows kept per matrix for the scale search.
const MAX_SAMPLES: usize = 128;

/// Statistics of one matrix's inputs.
#[derive(Debug, Clone, Default)]
pub struct InputStats {
    /// Rows seen.
    pub n: usize,
    /// Σ|x_c| per input channel.
    pub abs_sum: Vec<f64>,
    /// Σx_c² per input channel.
    pub sq_sum: Vec<f64>,
    /// Sampled input rows, `cols` each.
    pub samples: Vec<Vec<f32>>,
}

impl InputStats {
    /// Mean |x_c|.
    pub fn mean_abs(&self) -> Vec<f32> {
        self.abs_sum.iter().map(|&v| (v / self.n.max(1) as f64) as f32).collect()
    }

    /// Mean x_c².
    pub fn mean_sq(&self) -> Vec<f32> {
        self.sq_sum.iter().map(|&v| (v / self.n.max(1) as f64) as f32).collect()
    }
}

/// Records the input statistics of every product it observes, per matrix (by tensor name).
/// Install it in a session with [`Session::set_observer`](crate::Session::set_observer); the
/// statistics are read back through the [`Calibration::stats`] handle.
#[derive(Default)]
pub struct Calibration {
    stats: Arc<Mutex<HashMap<String, InputStats>>>,
}

impl Calibration {
    /// A recorder with no statistics yet.
    pub fn new() -> Calibration {
        Calibration::default()
    }

    /// A handle on the statistics, valid after the recorder is dropped.
    pub fn stats(&self) -> Arc<Mutex<HashMap<String, InputStats>>> {
        self.stats.clone()
    }
}

impl Observer for Calibration {
    /// Adds the `t` rows of `x` (`[t, m.cols]`) to `m`'s statistics.
    fn observe(&mut self, m: &Matrix, x: &[f32], t: usize) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.cols;
        let st = stats.entry(m.tensor.name.clone()).or_insert_with(|| InputStats {
            abs_sum: vec![0.0; c],
            sq_sum: vec![0.0; c],
            ..Default::default()
        });
        for row in x.chunks(c).take(t) {
            for (j, &v) in row.iter().enumerate() {
                st.abs_sum[j] += v.abs() as f64;
                st.sq_sum[j] += (v as f64) * (v as f64);
            }
            // Keep an evenly spread sample: every row until full, then replace round-robin
            // with a stride that grows with the number of rows seen.
            if st.samples.len() < MAX_SAMPLES {
                st.samples.push(row.to_vec());
            } else if st.n.is_multiple_of((st.n / MAX_SAMPLES).max(1)) {
                let k = (st.n / (st.n / MAX_SAMPLES).max(1)) % MAX_SAMPLES;
                st.samples[k] = row.to_vec();
            }
            st.n += 1;
        }
    }
}

/// The AWQ scales s (one per input channel) for `w` [rows, cols] and its input statistics:
/// the α on the grid 0, 0.05, …, 1 whose quantized product is closest to the exact one on the
/// sampled inputs. `quantize_row(w, out)` quantizes and dequantizes one row as stored.
/// Returns (α, s).
pub fn search_scale(
    w: &[f32],
    rows: usize,
    cols: usize,
    stats: &InputStats,
    quantize_row: &(dyn Fn(&[f32], &mut [f32]) + Sync),
) -> (f32, Vec<f32>) {
    use rayon::prelude::*;
    let mean_abs = stats.mean_abs();
    let xs = &stats.samples;
    if xs.is_empty() {
        return (0.0, vec![1.0; cols]);
    }
    // Up to 256 evenly spread rows stand for the matrix.
    let step = rows.div_ceil(256).max(1);
    let sub: Vec<usize> = (0..rows).step_by(step).collect();
    let exact: Vec<Vec<f32>> = sub
        .par_iter()
        .map(|&r| xs.iter().map(|x| crate::kernels::dot_f32(&w[r * cols..(r + 1) * cols], x)).collect())
        .collect();
    let scales_for = |alpha: f32| -> Vec<f32> {
        let mut s: Vec<f32> = mean_abs.iter().map(|&a| a.max(1e-6).powf(alpha)).collect();
        let (mx, mn) = s.iter().fold((0f32, f32::MAX), |(a, b), &v| (a.max(v), b.min(v)));
        let norm = (mx * mn).sqrt().max(1e-12);
        s.iter_mut().for_each(|v| *v = (*v / norm).clamp(1e-4, 1e4));
        s
    };
    let loss = |s: &[f32]| -> f64 {
        let xs_scaled: Vec<Vec<f32>> = xs.iter().map(|x| x.iter().zip(s).map(|(v, s)| v / s).collect()).collect();
        sub.par_iter()
            .zip(&exact)
            .map(|(&r, ex)| {
                let scaled: Vec<f32> = w[r * cols..(r + 1) * cols].iter().zip(s).map(|(v, s)| v * s).collect();
                let mut deq = vec![0f32; cols];
                quantize_row(&scaled, &mut deq);
                xs_scaled
                    .iter()
                    .zip(ex)
                    .map(|(x, e)| {
                        let d = (crate::kernels::dot_f32(&deq, x) - e) as f64;
                        d * d
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let mut best = (0.0f32, f64::INFINITY, vec![1.0f32; cols]);
    for k in 0..=20 {
        let alpha = k as f32 * 0.05;
        let s = scales_for(alpha);
        let l = loss(&s);
        if l < best.1 {
            best = (alpha, l, s);
        }
    }
    (best.0, best.2)
}
