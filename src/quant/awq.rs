//! Activation-aware weight quantization (AWQ; J. Lin et al., "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration", MLSys 2024).
//!
//! 1. **Calibrate**: run the unquantized model on calibration text while every product
//!    records, per input channel of each matrix, the mean |x| and mean x², plus a sample
//!    of input rows ([`Calibration`]; the hook sits in `kernels::matvec`/`matmul`, so
//!    every architecture is covered without model code).
//! 2. **Search the scale**: for each matrix, with s_c = mean|x_c|^α normalized by
//!    sqrt(max·min), quantize `W·diag(s)` and measure ‖W X − Q(W·diag(s)) (X/s)‖² on the
//!    sampled inputs, for α on a grid over [0, 1]; keep the best α ([`search_scale`]).
//! 3. **Clip**: quantize with each group's range shrunk where that lowers the error
//!    weighted by E[(x/s)²] (see `block::quantize_q4_row`).
//!
//! The runtime multiplies the input by 1/s before the product (`Matrix::input_scale`).

use crate::tensor::Matrix;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

struct Recorder {
    storage: usize,
    stats: HashMap<String, InputStats>,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);

/// Records the inputs of a product while a [`Calibration`] is active (no-op otherwise).
/// `x` is `[t, m.cols]`.
pub(crate) fn record(m: &Matrix, x: &[f32], t: usize) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let mut guard = RECORDER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(rec) = guard.as_mut() else { return };
    if m.tensor.storage_id() != rec.storage {
        return;
    }
    let c = m.cols;
    let st = rec.stats.entry(m.tensor.name.clone()).or_insert_with(|| InputStats {
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
        } else if st.n % (st.n / MAX_SAMPLES).max(1) == 0 {
            let k = (st.n / (st.n / MAX_SAMPLES).max(1)) % MAX_SAMPLES;
            st.samples[k] = row.to_vec();
        }
        st.n += 1;
    }
}

/// Records the inputs of every product over tensors of one model's file while alive.
/// One calibration runs at a time in a process.
pub struct Calibration {
    _private: (),
}

impl Calibration {
    /// Starts recording products whose weights live in the storage `storage_id`
    /// (see `Tensor::storage_id`).
    pub fn start(storage_id: usize) -> Calibration {
        let mut g = RECORDER.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(Recorder { storage: storage_id, stats: HashMap::new() });
        ACTIVE.store(true, Ordering::SeqCst);
        Calibration { _private: () }
    }

    /// Stops recording and returns the statistics per tensor name.
    pub fn finish(self) -> HashMap<String, InputStats> {
        ACTIVE.store(false, Ordering::SeqCst);
        let mut g = RECORDER.lock().unwrap_or_else(|e| e.into_inner());
        g.take().map(|r| r.stats).unwrap_or_default()
    }
}

impl Drop for Calibration {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::SeqCst);
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
