//! Numerical kernels shared by every architecture: matrix-vector and matrix-matrix products,
//! norms and activations. Models call these; none of them re-implements a norm or a product.
//!
//! Products run on the rayon pool that is current when they are called (each model installs
//! its own pool of `n_threads` workers), or on the calling thread alone inside [`one_thread`].
//! rayon parks idle workers instead of spinning, so a busy machine slows libsutra down
//! gracefully.

pub mod dot;
pub mod gemm;
pub mod ggml;
pub mod norm;
pub mod qdot;
pub mod qgemm;
pub mod qpanel;
pub mod ssm;

pub use dot::{dot_bf16, dot_f16, dot_f32, isa, Isa};
pub use norm::{group_norm, l2_normalize, layer_norm, rms_norm};

use crate::tensor::{self, Matrix, MatrixData};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread only.
const PAR_MIN_WORK: usize = 1 << 15;

thread_local! {
    /// Set inside [`one_thread`].
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The threads a product (or any pass that asks) may split its work over: the current rayon
/// pool's, or 1 inside [`one_thread`].
pub fn threads() -> usize {
    if ONE_THREAD.get() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Runs `f` with every product and pass that consults [`threads`] on the calling thread
/// alone: for callers that are already parallel at a coarser grain (a batch split into one
/// group of sessions per thread). Restored on the way out, also by a panic.
pub fn one_thread<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ONE_THREAD.set(self.0);
        }
    }
    let _restore = Restore(ONE_THREAD.replace(true));
    f()
}

/// Row `r` of `m` dotted with `x` (or, for quantized rows, with `qa`, the int8 activations).
#[inline]
fn row_dot(m: &Matrix, data: &MatrixData<'_>, r: usize, x: &[f32], qa: Option<&qdot::QActs>) -> f32 {
    let c = m.cols;
    let span = r * c..(r + 1) * c;
    if let Some(a) = qa {
        match data {
            MatrixData::Q8 { q, scales, group } => {
                let ng = c.div_ceil(*group);
                return qdot::dot_q8_i8(&q[span], &scales[r * ng..(r + 1) * ng], *group, a);
            }
            MatrixData::Q4 { q, scales, group } => {
                let ng = c.div_ceil(*group);
                return qdot::dot_q4_i8(&q[r * c / 2..(r + 1) * c / 2], &scales[r * ng..(r + 1) * ng], *group, a);
            }
            MatrixData::Ggml { kind, bytes } => {
                let rb = kind.size_of(c);
                return ggml::dot_i8(*kind, &bytes[r * rb..(r + 1) * rb], &a.q, &a.d, &a.s);
            }
            _ => {}
        }
    }
    match data {
        MatrixData::F32(d) => dot_f32(&d[span], x),
        MatrixData::BF16(d) => dot_bf16(&d[span], x),
        MatrixData::F16(d) => dot_f16(&d[span], x),
        MatrixData::Q8 { q, scales, group } => {
            let ng = c.div_ceil(*group);
            qdot::dot_q8_f32(&q[span], &scales[r * ng..(r + 1) * ng], *group, x)
        }
        MatrixData::Q4 { q, scales, group } => {
            let ng = c.div_ceil(*group);
            qdot::dot_q4_f32(&q[r * c / 2..(r + 1) * c / 2], &scales[r * ng..(r + 1) * ng], *group, x)
        }
        MatrixData::Ggml { kind, bytes } => {
            let rb = kind.size_of(c);
            ggml::dot_f32(*kind, &bytes[r * rb..(r + 1) * rb], x)
        }
    }
}

/// Reusable buffers of the products, owned by the caller (an execution context), so that a
/// product allocates nothing once they have grown to the largest shape seen.
#[derive(Debug, Default)]
pub struct Workspace {
    /// The input times the matrix's AWQ input scale, `[t, cols]`.
    scaled: Vec<f32>,
    /// The input quantized to int8 blocks (decode over q8/q4 weights).
    qa: qdot::QActs,
    /// The product transposed, `[rows, t]` (matrix-matrix products).
    yt: Vec<f32>,
    /// The tokens quantized for the integer products over many tokens (q8/q4 weights).
    qt: qgemm::QTokens,
}

/// The input as the stored weights expect it: multiplied by the matrix's AWQ input scale
/// (into `buf`), or `x` itself.
fn scaled_input<'a>(m: &Matrix, x: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    match &m.input_scale {
        None => x,
        Some(s) => {
            buf.clear();
            buf.extend(x.iter().enumerate().map(|(i, v)| v * s[i % m.cols]));
            buf
        }
    }
}

fn chunk_rows(rows: usize) -> usize {
    (rows / (threads().max(1) * 8)).clamp(4, 256)
}

/// y = W x, with `W` `[rows, cols]`, `x` of `cols`, `y` of `rows` (a fresh workspace; see
/// [`matvec_ws`]).
pub fn matvec(m: &Matrix, x: &[f32], y: &mut [f32]) {
    matvec_ws(m, x, y, &mut Workspace::default())
}

/// [`matvec`] with the caller's workspace: allocates nothing once `ws` has grown.
pub fn matvec_ws(m: &Matrix, x: &[f32], y: &mut [f32], ws: &mut Workspace) {
    assert!(x.len() == m.cols && y.len() == m.rows, "matvec: shape mismatch");
    if m.rows == 0 || m.cols == 0 {
        return y.fill(0.0);
    }
    if let Some(p) = qpanel::prepare(m) {
        return panel_product(m, p, x, 1, y, ws);
    }
    let data = m.data();
    let Workspace { scaled, qa, .. } = ws;
    let x = scaled_input(m, x, scaled);
    // Decode with quantized weights is compute-bound: the activations are quantized to int8
    // once, and every row's product runs on integers. llama.cpp's blocks always take int8
    // activations (whole blocks of 32 or 256, as llama.cpp computes them).
    let qa = match data {
        MatrixData::Q8 { .. } | MatrixData::Q4 { .. } if isa() != Isa::Scalar && m.cols.is_multiple_of(32) => {
            qdot::quantize_acts_into(x, qa);
            Some(&*qa)
        }
        MatrixData::Ggml { kind, .. } => {
            ggml::quantize_acts_into(kind, x, qa);
            Some(&*qa)
        }
        _ => None,
    };
    if m.rows * m.cols < PAR_MIN_WORK || threads() == 1 {
        for (r, yr) in y.iter_mut().enumerate() {
            *yr = row_dot(m, &data, r, x, qa);
        }
        return;
    }
    let chunk = chunk_rows(m.rows);
    y.par_chunks_mut(chunk).enumerate().for_each(|(c, ys)| {
        for (j, yr) in ys.iter_mut().enumerate() {
            *yr = row_dot(m, &data, c * chunk + j, x, qa);
        }
    });
}

/// Y = X Wᵀ for `t` tokens: `x` is `[t, cols]`, `y` is `[t, rows]` (row-major); a fresh
/// workspace (see [`matmul_ws`]).
pub fn matmul(m: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
    matmul_ws(m, x, t, y, &mut Workspace::default())
}

/// [`matmul`] with the caller's workspace.
///
/// Every weight row is read once for all `t` tokens (converted to f32 once when stored as
/// bf16/f16), which is what makes prefill faster than stepping token by token.
pub fn matmul_ws(m: &Matrix, x: &[f32], t: usize, y: &mut [f32], ws: &mut Workspace) {
    assert!(x.len() == t * m.cols && y.len() == t * m.rows, "matmul: shape mismatch");
    if m.rows == 0 || m.cols == 0 {
        // An empty product (a zero-width matrix is legal): zeros, and no chunking by 0 rows.
        return y.fill(0.0);
    }
    if t == 1 {
        return matvec_ws(m, x, y, ws);
    }
    if let Some(p) = qpanel::prepare(m) {
        return panel_product(m, p, x, t, y, ws);
    }
    let Workspace { scaled, yt, qt, qa } = ws;
    let x = scaled_input(m, x, scaled);
    let (rows, cols) = (m.rows, m.cols);
    // yt is [rows, t]: rows are split between threads, then transposed into y.
    yt.resize(rows * t, 0.0);
    let yt = &mut yt[..rows * t];
    // llama.cpp's blocks: every token's activations quantized as decode (and llama.cpp) does
    // for the type, each row read once for all tokens.
    if let MatrixData::Ggml { kind, bytes } = m.data() {
        ggml::quantize_acts_into(kind, x, qa);
        let qa = &*qa;
        if rows * cols * t < PAR_MIN_WORK || threads() == 1 {
            ggml::rows_times_tokens(kind, bytes, cols, 0, qa, yt);
        } else {
            let chunk = chunk_rows(rows);
            yt.par_chunks_mut(chunk * t)
                .enumerate()
                .for_each(|(c, out)| ggml::rows_times_tokens(kind, bytes, cols, c * chunk, qa, out));
        }
        return transpose_into(yt, rows, t, y);
    }
    // Quantized weights: integer products on int8 activations, as decode computes them.
    let qw = match m.data() {
        MatrixData::Q8 { q, scales, group } => Some(qgemm::QWeights::Q8 { q, scales, group }),
        MatrixData::Q4 { q, scales, group } => Some(qgemm::QWeights::Q4 { q, scales, group }),
        _ => None,
    };
    if let Some(qw) = qw.filter(|_| isa() != Isa::Scalar && cols.is_multiple_of(32)) {
        qt.prepare(x, t, cols);
        let qt = &*qt;
        if rows * cols * t < PAR_MIN_WORK || threads() == 1 {
            return qgemm::rows_times_tokens(qw, cols, 0, qt, y);
        }
        let chunk = chunk_rows(rows);
        yt.par_chunks_mut(chunk * t)
            .enumerate()
            .for_each(|(c, out)| qgemm::rows_times_tokens(qw, cols, c * chunk, qt, out));
        return scatter_parts(yt, chunk, t, rows, y);
    }
    // Computes rows r0.. of yt into `out` ([n_rows, t]): blocks of 3 rows x 4 tokens in
    // registers, rows stored as bf16/f16 converted once into `buf`.
    let work = |r0: usize, out: &mut [f32], buf: &mut Vec<f32>| {
        let data = m.data();
        let n_rows = out.len() / t;
        buf.resize(3 * cols, 0.0);
        let mut j = 0;
        while j < n_rows {
            let nr = (n_rows - j).min(3);
            let rows_f32: [&[f32]; 3] = match &data {
                MatrixData::F32(d) => {
                    let row = |k: usize| &d[(r0 + j + k.min(nr - 1)) * cols..][..cols];
                    [row(0), row(1), row(2)]
                }
                _ => {
                    for k in 0..nr {
                        m.stored_row_to_f32(r0 + j + k, &mut buf[k * cols..(k + 1) * cols]);
                    }
                    let b = &buf[..];
                    let row = |k: usize| &b[k.min(nr - 1) * cols..][..cols];
                    [row(0), row(1), row(2)]
                }
            };
            let mut i = 0;
            while i + 4 <= t {
                let xs = [
                    &x[i * cols..(i + 1) * cols],
                    &x[(i + 1) * cols..(i + 2) * cols],
                    &x[(i + 2) * cols..(i + 3) * cols],
                    &x[(i + 3) * cols..(i + 4) * cols],
                ];
                let blk = dot::block3x4(rows_f32, xs);
                for (k, vals) in blk.iter().enumerate().take(nr) {
                    out[(j + k) * t + i..(j + k) * t + i + 4].copy_from_slice(vals);
                }
                i += 4;
            }
            for i in i..t {
                let xi = &x[i * cols..(i + 1) * cols];
                for (k, row) in rows_f32.iter().enumerate().take(nr) {
                    out[(j + k) * t + i] = dot_f32(row, xi);
                }
            }
            j += nr;
        }
    };
    if rows * cols * t < PAR_MIN_WORK || threads() == 1 {
        work(0, yt, &mut Vec::new());
    } else {
        let chunk = chunk_rows(rows).div_ceil(3) * 3;
        yt.par_chunks_mut(chunk * t).enumerate().for_each_init(Vec::new, |buf, (c, out)| work(c * chunk, out, buf));
    }
    transpose_into(yt, rows, t, y)
}

/// Each thread's rows come out token-major (`[t, its rows]`) in its part of `yt` (parts of
/// `chunk` rows); they go to their columns of `y` (`[t, rows]`).
fn scatter_parts(yt: &[f32], chunk: usize, t: usize, rows: usize, y: &mut [f32]) {
    // Each token's row of y gathers its piece of every part (tokens split between threads
    // when the copy is large: in a prefill it is a pass over the whole output).
    let gather = |i: usize, yi: &mut [f32]| {
        for (c, part) in yt.chunks(chunk * t).enumerate() {
            let n = part.len() / t;
            yi[c * chunk..c * chunk + n].copy_from_slice(&part[i * n..(i + 1) * n]);
        }
    };
    if rows * t < PAR_MIN_WORK || threads() == 1 {
        y.chunks_exact_mut(rows).enumerate().for_each(|(i, yi)| gather(i, yi));
    } else {
        y.par_chunks_mut(rows).enumerate().with_min_len(8).for_each(|(i, yi)| gather(i, yi));
    }
}

/// `y` = `x` times the panels `p` of `m` for `t` tokens (`x` `[t, cols]`, `y` `[t, rows]`):
/// threads take runs of whole panels.
fn panel_product(m: &Matrix, p: &tensor::panel::Panels, x: &[f32], t: usize, y: &mut [f32], ws: &mut Workspace) {
    let Workspace { scaled, qt, yt, .. } = ws;
    let x = scaled_input(m, x, scaled);
    let rows = m.rows;
    let f32 = p.kind.is_float();
    if !f32 {
        qt.prepare(x, t, m.cols);
    }
    let qt = &*qt;
    // The rows of the panels from p0 into out ([t, its rows]).
    let run = |p0: usize, out: &mut [f32]| {
        let input = if f32 { qpanel::Input::F32(x, t) } else { qpanel::Input::Quant(qt) };
        qpanel::rows_times_tokens(p, p0, input, out)
    };
    if rows * m.cols * t < PAR_MIN_WORK || threads() == 1 {
        return run(0, y);
    }
    let chunk = chunk_rows(rows).div_ceil(tensor::panel::ROWS) * tensor::panel::ROWS;
    let first = |c: usize| c * chunk / tensor::panel::ROWS;
    if t == 1 {
        return y.par_chunks_mut(chunk).enumerate().for_each(|(c, out)| run(first(c), out));
    }
    yt.resize(rows * t, 0.0);
    let yt = &mut yt[..rows * t];
    yt.par_chunks_mut(chunk * t).enumerate().for_each(|(c, out)| run(first(c), out));
    scatter_parts(yt, chunk, t, rows, y)
}

/// `y` `[t, rows]` = `yt` `[rows, t]` transposed, tokens split between threads.
fn transpose_into(yt: &[f32], rows: usize, t: usize, y: &mut [f32]) {
    // Rows of yt are read 8 tokens (one cache line) at a time and written to 8 rows of y.
    let transpose = |i0: usize, ys: &mut [f32]| {
        for (c, block) in ys.chunks_mut(8 * rows).enumerate() {
            let (i0, n) = (i0 + 8 * c, block.len() / rows);
            for r in 0..rows {
                for (di, &v) in yt[r * t + i0..r * t + i0 + n].iter().enumerate() {
                    block[di * rows + r] = v;
                }
            }
        }
    };
    if rows * t < PAR_MIN_WORK || threads() == 1 {
        transpose(0, y);
    } else {
        y.par_chunks_mut(8 * rows).enumerate().for_each(|(c, ys)| transpose(c * 8, ys));
    }
}

/// Logistic sigmoid.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// [`sigmoid`] on [`exp_fast`]: inlines, so loops over it vectorize (relative error below
/// 1e-6 against the libm form).
#[inline(always)]
pub fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// SiLU (swish): x·sigmoid(x), on [`exp_fast`] (it inlines, so loops over it vectorize;
/// relative error below 1e-6 against the libm form).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid_fast(x)
}

/// softplus(x) = ln(1 + eˣ), computed without overflow (PyTorch's threshold of 20), on
/// [`exp_fast`] and [`ln_1p_fast`]: branch-free, so loops over it vectorize (relative error
/// below 1e-6 against the libm form wherever eˣ is a normal float).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        ln_1p_fast(exp_fast(x))
    }
}

/// ln(1 + y) for y ≥ 0 without a libm call: u = 1 + y is split as 2ᵏ·m with m in [√½, √2),
/// ln m = 2·atanh(s) with s = (m − 1)/(m + 1) by its series to s⁹ (|s| < 0.172, truncation
/// below 3e-9 relative), and the rounding of 1 + y is corrected by (y − (u − 1))/u. Relative
/// error a few ulp.
#[inline(always)]
pub fn ln_1p_fast(y: f32) -> f32 {
    const SQRT_HALF_BITS: i32 = 0x3F35_04F3;
    let u = 1.0 + y;
    // k = the exponent that takes u into [√½, √2); m = u / 2ᵏ by integer arithmetic on the bits.
    let ix = (u.to_bits() as i32).wrapping_sub(SQRT_HALF_BITS);
    let k = (ix >> 23) as f32;
    let m = f32::from_bits(((ix & 0x007F_FFFF) + SQRT_HALF_BITS) as u32);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = (((s2 * (1.0 / 9.0) + 1.0 / 7.0) * s2 + 1.0 / 5.0) * s2 + 1.0 / 3.0) * s2;
    let ln_m = 2.0 * s + 2.0 * s * series;
    k * std::f32::consts::LN_2 + ln_m + (y - (u - 1.0)) / u
}

/// Runs `f` — a loop of element-wise arithmetic over slices, such as [`silu`] or [`softplus`]
/// on every element — compiled for the widest vector instructions this CPU has (AVX-512 or
/// AVX2 on x86-64; elsewhere the build's own). Rust does not contract or reorder float
/// arithmetic, so the results are the same bits at any width.
#[inline]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        // SAFETY: the features each wrapper enables were detected at run time.
        Isa::Avx512 => return unsafe { wide::avx512(f) },
        Isa::Avx2 => return unsafe { wide::avx2(f) },
        _ => {}
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod wide {
    /// `f()` with AVX-512 enabled (inlined into this body, its loops vectorize to 16 lanes).
    ///
    /// # Safety
    /// AVX-512 F and BW, AVX2 and FMA must be available.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// `f()` with AVX2 enabled.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// eˣ by a branch-free polynomial (Cephes' `expf`: range reduction by ln 2 and a degree-6
/// polynomial; relative error below 3e-7 on [−87, 88], inputs clamped to that range).
///
/// Unlike `f32::exp` (a libm call) it inlines and uses no float-to-int conversion, so loops
/// over it vectorize: used where an exponential per element sits in an inner loop (the
/// Mamba-1 scan, [`ssm::scan_update_dot`]).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding it rounds to the nearest integer n, which then sits in the low mantissa
    // bits (bits = 0x4B40_0000 + n), so 2ⁿ needs integer adds and a shift only.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let m = x * LOG2E + ROUND;
    let n = m - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = r * r;
    let p =
        ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    let y = p * z + r + 1.0;
    y * f32::from_bits(m.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

/// Token shift: `out[i] = cur[i] + (prev[i] - cur[i]) * mix[i]`.
#[inline]
pub fn token_shift(cur: &[f32], prev: &[f32], mix: &[f32], out: &mut [f32]) {
    for i in 0..out.len() {
        out[i] = cur[i] + (prev[i] - cur[i]) * mix[i];
    }
}

/// `y += x`.
#[inline]
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

/// One step of a depthwise causal 1-D convolution (Mamba's `conv1d`, groups = channels,
/// padding K−1) over `x.len()` channels of kernel width K.
///
/// `window` is `[channels, K]`: each channel's last K inputs, oldest first. It shifts left by
/// one and takes `x[c]` as its newest entry (index K−1); then
/// `out[c] = Σ_k window[c, k]·w[c, k] + bias[c]`, `w` being `[channels, K]` (PyTorch's
/// `[channels, 1, K]` weight squeezed).
pub fn conv1d_causal_step(window: &mut [f32], x: &[f32], w: &[f32], bias: &[f32], out: &mut [f32]) {
    let k = w.len() / x.len();
    if k == 4 {
        // Every Mamba checkpoint's width: fixed-size windows (no loop, no copy call), the
        // same products summed in the same order as below.
        return vectorized(|| {
            for (((win, wc), (&xc, o)), &b) in
                window.chunks_exact_mut(4).zip(w.chunks_exact(4)).zip(x.iter().zip(out.iter_mut())).zip(bias)
            {
                let (w1, w2, w3) = (win[1], win[2], win[3]);
                win.copy_from_slice(&[w1, w2, w3, xc]);
                *o = b + [w1 * wc[0], w2 * wc[1], w3 * wc[2], xc * wc[3]].iter().sum::<f32>();
            }
        });
    }
    for (ch, ((win, wc), (&xc, o))) in
        window.chunks_exact_mut(k).zip(w.chunks_exact(k)).zip(x.iter().zip(out.iter_mut())).enumerate()
    {
        win.copy_within(1.., 0);
        win[k - 1] = xc;
        *o = bias[ch] + win.iter().zip(wc).map(|(a, b)| a * b).sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{f32_to_bf16, f32_to_f16, DType, Storage, Tensor};
    use std::sync::Arc;

    /// Inside `one_thread` a 2-thread pool's products see one thread, nested scopes keep it,
    /// and the pool's count comes back afterwards, also after a panic inside.
    #[test]
    fn one_thread_scopes_the_thread_count() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            assert_eq!(threads(), 2);
            one_thread(|| {
                assert_eq!(threads(), 1);
                one_thread(|| assert_eq!(threads(), 1));
                assert_eq!(threads(), 1, "an inner scope ended the outer one");
            });
            assert_eq!(threads(), 2);
            let r = std::panic::catch_unwind(|| one_thread(|| panic!("inside")));
            assert!(r.is_err());
            assert_eq!(threads(), 2, "a panic left the scope set");
        });
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn matrix(dtype: DType, rows: usize, cols: usize, seed: &mut u64) -> (Matrix, Vec<f32>) {
        let vals: Vec<f32> = (0..rows * cols).map(|_| lcg(seed)).collect();
        let (bytes, exact): (Vec<u8>, Vec<f32>) = match dtype {
            DType::F32 => (bytemuck::cast_slice(&vals).to_vec(), vals.clone()),
            DType::BF16 => {
                let h: Vec<u16> = vals.iter().map(|&v| f32_to_bf16(v)).collect();
                (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|&b| crate::tensor::bf16_to_f32(b)).collect())
            }
            _ => {
                let h: Vec<u16> = vals.iter().map(|&v| f32_to_f16(v)).collect();
                (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|&b| crate::tensor::f16_to_f32(b)).collect())
            }
        };
        let st = Arc::new(Storage::from_bytes(&bytes));
        let n = st.len();
        let t = Tensor::new("w", dtype, vec![rows, cols], st, 0..n).unwrap();
        (Matrix::new(t, rows, cols), exact)
    }

    /// Matrices without columns (or rows) get no panels and multiply to zeros, in every
    /// float type, for one token and for many (a fuzzed model once reached the panel packer
    /// with 0 columns and panicked).
    #[test]
    fn empty_matrices_multiply_to_zeros() {
        let mut seed = 5u64;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for (rows, cols) in [(16usize, 0usize), (48, 0), (0, 32)] {
                let (m, _) = matrix(dtype, rows, cols, &mut seed);
                assert!(qpanel::prepare(&m).is_none(), "{dtype:?} {rows}x{cols}");
                let mut y = vec![1f32; rows];
                matvec(&m, &vec![0.5; cols], &mut y);
                assert!(y.iter().all(|&v| v == 0.0), "{dtype:?} {rows}x{cols} matvec");
                let mut y3 = vec![1f32; 3 * rows];
                matmul(&m, &vec![0.5; 3 * cols], 3, &mut y3);
                assert!(y3.iter().all(|&v| v == 0.0), "{dtype:?} {rows}x{cols} matmul");
            }
        }
    }

    /// exp_fast agrees with the libm exponential to a few ulp over the whole clamped range.
    #[test]
    fn exp_fast_matches_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_fast(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-1e30) > 0.0 && exp_fast(-1e30) < 1e-37, "clamped below");
    }

    #[test]
    fn ln_1p_softplus_and_silu_match_f64() {
        let rel = |got: f32, want: f64| ((got as f64 - want) / want).abs();
        let mut worst = [0f64; 3];
        // ln(1 + y) from denormal-free tiny y to the largest e^20 softplus feeds it.
        for i in 0..=100_000 {
            let y = (10f64).powf(-30.0 + 39.0 * i as f64 / 100_000.0) as f32;
            worst[0] = worst[0].max(rel(ln_1p_fast(y), (y as f64).ln_1p()));
        }
        for i in 0..=200_000 {
            let x = -80.0 + 110.0 * i as f32 / 200_000.0;
            let xd = x as f64;
            let sp = if xd > 20.0 { xd } else { xd.exp().ln_1p() };
            worst[1] = worst[1].max(rel(softplus(x), sp));
            if x != 0.0 {
                worst[2] = worst[2].max(rel(silu(x), xd / (1.0 + (-xd).exp())));
            }
        }
        assert!(worst[0] < 4e-7, "ln_1p_fast relative error {}", worst[0]);
        assert!(worst[1] < 1e-6, "softplus relative error {}", worst[1]);
        assert!(worst[2] < 1e-6, "silu relative error {}", worst[2]);
        assert_eq!(ln_1p_fast(0.0), 0.0);
        assert_eq!(softplus(30.0), 30.0);
        // Below e^-87 the exponential is clamped: softplus stays a tiny positive number.
        assert!(softplus(-200.0) >= 0.0 && softplus(-200.0) < 1e-37);
    }

    /// The vectorized wrapper returns the bits of the plain loop.
    #[test]
    fn vectorized_loops_keep_the_bits() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let plain: Vec<f32> = xs.iter().map(|&x| softplus(x) + silu(x)).collect();
        let wide = vectorized(|| xs.iter().map(|&x| softplus(x) + silu(x)).collect::<Vec<f32>>());
        assert_eq!(
            plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    /// Stepping the causal conv token by token equals the full zero-padded convolution, and
    /// the window ends holding the last K inputs, oldest first.
    #[test]
    fn conv1d_step_matches_full_convolution() {
        let mut seed = 3;
        let (ch, k, t) = (5usize, 4usize, 7usize);
        let w: Vec<f32> = (0..ch * k).map(|_| lcg(&mut seed)).collect();
        let b: Vec<f32> = (0..ch).map(|_| lcg(&mut seed)).collect();
        let xs: Vec<f32> = (0..t * ch).map(|_| lcg(&mut seed)).collect();
        let mut window = vec![0f32; ch * k];
        let mut out = vec![0f32; ch];
        for i in 0..t {
            conv1d_causal_step(&mut window, &xs[i * ch..(i + 1) * ch], &w, &b, &mut out);
            for c in 0..ch {
                let mut want = b[c];
                for j in 0..k {
                    // Tap j sees the input k−1−j steps back.
                    if let Some(src) = (i + j + 1).checked_sub(k) {
                        want += w[c * k + j] * xs[src * ch + c];
                    }
                }
                assert!((out[c] - want).abs() < 1e-5, "t={i} c={c}: {} vs {want}", out[c]);
            }
        }
        for c in 0..ch {
            for j in 0..k {
                assert_eq!(window[c * k + j], xs[(t - k + j) * ch + c]);
            }
        }
    }

    /// SIMD dot products equal the scalar references on odd lengths (float rounding only).
    #[test]
    fn dots_match_reference_on_odd_sizes() {
        let mut seed = 7;
        for &n in &[1usize, 7, 8, 33, 100, 4097] {
            let a: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let wb: Vec<u16> = a.iter().map(|&v| f32_to_bf16(v)).collect();
            let wh: Vec<u16> = a.iter().map(|&v| f32_to_f16(v)).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let tol = 1e-5 * n as f32;
            assert!((dot_f32(&a, &b) - dot::dot_f32_scalar(&a, &b)).abs() <= tol, "f32 n={n}");
            assert!((dot_f32(&a, &b) as f64 - exact).abs() <= tol as f64, "f32 vs f64 n={n}");
            assert!((dot_bf16(&wb, &b) - dot::dot_bf16_scalar(&wb, &b)).abs() <= tol, "bf16 n={n}");
            assert!((dot_f16(&wh, &b) - dot::dot_f16_scalar(&wh, &b)).abs() <= tol, "f16 n={n}");
            let c: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let (ws, xs) = ([&a[..], &b[..], &c[..]], [&b[..], &a[..], &c[..], &b[..]]);
            let (blk, want) = (dot::block3x4(ws, xs), dot::block3x4_scalar(ws, xs));
            for r in 0..3 {
                for t in 0..4 {
                    assert!((blk[r][t] - want[r][t]).abs() <= tol, "block3x4 n={n} [{r}][{t}]");
                }
            }
        }
    }

    /// matvec and matmul agree with a plain f64 triple loop for every dtype and odd shapes,
    /// on one thread and on a pool of three.
    #[test]
    fn products_match_naive() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let mut seed = 11;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for &(rows, cols, t) in &[(1usize, 1usize, 1usize), (7, 33, 3), (129, 65, 5), (17, 64, 17), (300, 257, 9)] {
                let (m, exact) = matrix(dtype, rows, cols, &mut seed);
                let x: Vec<f32> = (0..t * cols).map(|_| lcg(&mut seed)).collect();
                let mut want = vec![0f32; t * rows];
                for i in 0..t {
                    for r in 0..rows {
                        want[i * rows + r] =
                            (0..cols).map(|c| exact[r * cols + c] as f64 * x[i * cols + c] as f64).sum::<f64>() as f32;
                    }
                }
                for threads in [1, 3] {
                    let mut got = vec![0f32; t * rows];
                    if threads == 1 {
                        matmul(&m, &x, t, &mut got);
                    } else {
                        pool.install(|| matmul(&m, &x, t, &mut got));
                    }
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-5 * cols as f32, "{dtype:?} {rows}x{cols} t={t}: {g} vs {w}");
                    }
                    let mut y = vec![0f32; rows];
                    pool.install(|| matvec(&m, &x[..cols], &mut y));
                    for (g, w) in y.iter().zip(&want[..rows]) {
                        assert!((g - w).abs() <= 1e-5 * cols as f32);
                    }
                }
            }
        }
    }
}
