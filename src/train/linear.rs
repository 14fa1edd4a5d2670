//! Products: `y = W x` over a base [`Matrix`] of any storage type (f32, bf16, f16, q8, q4,
//! AWQ-scaled), its input gradient `dx += dy·W`, dense `[rows, cols]` slices with their
//! weight gradient, and the LoRA branch `y += s·B(A x)`.
//!
//! Base matrices are frozen (LoRA / QLoRA): only their input gradient exists, computed from
//! rows dequantized to f32 by [`Matrix::row_to_f32`], so the base stays quantized in memory
//! and the gradient flows through exactly the weights the forward used.
//!
//! Threads: every function here walks the tokens of `x`/`dy` independently, so a caller
//! splits the T rows into disjoint ranges (`par_chunks_mut` of `dx`/`y`) and calls once
//! per range, each with its own row buffer.

use super::real::{axpy, dot, Real};
use crate::tensor::Matrix;

/// `y = W x` for T tokens (overwrites `y`): `x` `[T, cols]`, `y` `[T, rows]`, W = `m` as
/// the model sees it (dequantized, AWQ scale folded in).
///
/// A plain reference, generic over [`Real`] (the f64 tests run through it); the engine's f32
/// forward is [`crate::kernels::matmul`], which this equals to float rounding.
/// `row`: scratch of at least `m.cols` f32.
pub fn matrix_fwd<R: Real>(m: &Matrix, x: &[R], y: &mut [R], row: &mut [f32]) {
    let (rows, cols) = (m.rows, m.cols);
    assert!(x.len().is_multiple_of(cols) && y.len() == x.len() / cols * rows, "matrix_fwd: shapes");
    let row = &mut row[..cols];
    let t = x.len() / cols;
    for r in 0..rows {
        m.row_to_f32(r, row);
        for i in 0..t {
            let xi = &x[i * cols..(i + 1) * cols];
            y[i * rows + r] = xi.iter().zip(row.iter()).map(|(&a, &w)| a * R::from_f32(w)).sum();
        }
    }
}

/// Input gradient of `y = W x`: `dx += dy·W` (**accumulates**), i.e. `dx[t, :] += Σ_r
/// dy[t, r]·W[r, :]`; `dy` `[T, rows]`, `dx` `[T, cols]`.
///
/// `rows_buf` (f32, a multiple of `m.cols`, at least one row) holds the block of rows
/// dequantized at once: B = `rows_buf.len() / cols` rows are converted, then applied to
/// every token, so the matrix is read once per call and each `dx` row stays in cache while
/// B rows are added into it (B = 8..32 is a good choice).
pub fn matrix_bwd_input<R: Real>(m: &Matrix, dy: &[R], dx: &mut [R], rows_buf: &mut [f32]) {
    let (rows, cols) = (m.rows, m.cols);
    assert!(dy.len().is_multiple_of(rows) && dx.len() == dy.len() / rows * cols, "matrix_bwd_input: shapes");
    let block = (rows_buf.len() / cols).clamp(1, rows.max(1));
    assert!(rows_buf.len() >= cols, "matrix_bwd_input: rows_buf holds less than one row");
    let t = dy.len() / rows;
    let mut r0 = 0;
    while r0 < rows {
        let nb = block.min(rows - r0);
        for k in 0..nb {
            m.row_to_f32(r0 + k, &mut rows_buf[k * cols..(k + 1) * cols]);
        }
        for i in 0..t {
            let dxi = &mut dx[i * cols..(i + 1) * cols];
            for k in 0..nb {
                let g = dy[i * rows + r0 + k];
                if g == R::ZERO {
                    continue;
                }
                let w = &rows_buf[k * cols..(k + 1) * cols];
                dxi.iter_mut().zip(w).for_each(|(d, &w)| *d += g * R::from_f32(w));
            }
        }
        r0 += nb;
    }
}

/// [`matrix_bwd_input`] (`dx += dy·W`, **accumulating**) at matrix–matrix speed: W's rows
/// are streamed as stored (an f32 matrix in place; other types converted to f32 in blocks of
/// up to [`BWD_BLOCK_ROWS`] rows, in parallel) through the register-tiled
/// [`crate::kernels::gemm::gemm_acc`], the tokens split among the pool's threads. Equal to
/// the serial [`matrix_bwd_input`] to float rounding.
pub fn matrix_bwd_input_par(m: &Matrix, dy: &[f32], dx: &mut [f32]) {
    use crate::kernels::gemm::{gemm_acc, GemmDims, MR};
    use rayon::prelude::*;
    let (rows, cols) = (m.rows, m.cols);
    assert!(dy.len().is_multiple_of(rows) && dx.len() == dy.len() / rows * cols, "matrix_bwd_input_par: shapes");
    let t = dy.len() / rows;
    if t == 0 || rows == 0 || cols == 0 {
        return;
    }
    // Tokens per task: an even share, in whole register tiles.
    let per = t.div_ceil(rayon::current_num_threads().max(1)).div_ceil(MR) * MR;
    // dx[:, :] += dy[:, r0..r0+n] · w (the block's n rows of W, as f32).
    let run = |r0: usize, n: usize, w: &[f32], dx: &mut [f32]| {
        dx.par_chunks_mut(per * cols).zip(dy.par_chunks(per * rows)).for_each(|(dx, dy)| {
            let d = GemmDims { m: dx.len() / cols, k: n, n: cols, lda: rows, ldb: cols, ldc: cols };
            gemm_acc(d, &dy[r0..], w, dx);
        });
    };
    if let Some(w) = m.tensor.as_f32() {
        run(0, rows, &w[..rows * cols], dx);
        return;
    }
    let nb = rows.min(BWD_BLOCK_ROWS);
    let mut w = vec![0f32; nb * cols];
    for r0 in (0..rows).step_by(nb) {
        let n = nb.min(rows - r0);
        w[..n * cols].par_chunks_mut(cols).enumerate().for_each(|(k, row)| m.row_to_f32(r0 + k, row));
        run(r0, n, &w[..n * cols], dx);
    }
}

/// Rows of a non-f32 W converted per block of [`matrix_bwd_input_par`]: 512 rows of a
/// 768-wide matrix are 1.5 MiB of f32, small beside the head.
pub const BWD_BLOCK_ROWS: usize = 512;

/// `y = W x` for a dense `w` `[rows, cols]` (overwrites `y`): `x` `[T, cols]`, `y` `[T, rows]`.
pub fn dense_fwd<R: Real>(w: &[R], rows: usize, cols: usize, x: &[R], y: &mut [R]) {
    assert!(w.len() == rows * cols && x.len().is_multiple_of(cols), "dense_fwd: shapes");
    let t = x.len() / cols;
    assert_eq!(y.len(), t * rows, "dense_fwd: y");
    for i in 0..t {
        let xi = &x[i * cols..(i + 1) * cols];
        for r in 0..rows {
            y[i * rows + r] = dot(&w[r * cols..(r + 1) * cols], xi);
        }
    }
}

/// Backward of [`dense_fwd`] (**accumulates**): `dx += dy·W` (`[T, cols]`) and
/// `dw += dyᵀ·x` (`[rows, cols]`), each skipped when `None`.
pub fn dense_bwd<R: Real>(
    w: &[R],
    rows: usize,
    cols: usize,
    x: &[R],
    dy: &[R],
    mut dx: Option<&mut [R]>,
    mut dw: Option<&mut [R]>,
) {
    let t = x.len() / cols;
    assert!(w.len() == rows * cols && x.len() == t * cols && dy.len() == t * rows, "dense_bwd: shapes");
    for i in 0..t {
        let xi = &x[i * cols..(i + 1) * cols];
        for r in 0..rows {
            let g = dy[i * rows + r];
            if let Some(dx) = dx.as_deref_mut() {
                axpy(&mut dx[i * cols..(i + 1) * cols], g, &w[r * cols..(r + 1) * cols]);
            }
            if let Some(dw) = dw.as_deref_mut() {
                axpy(&mut dw[r * cols..(r + 1) * cols], g, xi);
            }
        }
    }
}

/// A LoRA pair of one target module: `A` `[rank, in]`, `B` `[out, rank]` (PEFT's
/// `lora_A.weight`, `lora_B.weight`), and `scale` = multiplier·(lora_alpha / r).
#[derive(Debug, Clone, Copy)]
pub struct LoraRef<'a, R> {
    /// lora_A: `[rank, in]`.
    pub a: &'a [R],
    /// lora_B: `[out, rank]`.
    pub b: &'a [R],
    /// r.
    pub rank: usize,
    /// in (columns of the base matrix).
    pub n_in: usize,
    /// out (rows of the base matrix).
    pub n_out: usize,
    /// s in `y += s·B(A x)`.
    pub scale: R,
}

/// The LoRA branch, `y += s·B(A x)` (**adds** into `y`, normally the base product `W x`):
/// `x` `[T, in]`, `y` `[T, out]`; `ax` `[T, rank]` is overwritten with `A x`, which
/// [`lora_bwd`] needs (save it, or recompute it with [`dense_fwd`]).
pub fn lora_fwd<R: Real>(l: &LoraRef<'_, R>, x: &[R], ax: &mut [R], y: &mut [R]) {
    let t = x.len() / l.n_in;
    assert!(ax.len() == t * l.rank && y.len() == t * l.n_out, "lora_fwd: shapes");
    dense_fwd(l.a, l.rank, l.n_in, x, ax);
    for i in 0..t {
        let axi = &ax[i * l.rank..(i + 1) * l.rank];
        for o in 0..l.n_out {
            y[i * l.n_out + o] += l.scale * dot(&l.b[o * l.rank..(o + 1) * l.rank], axi);
        }
    }
}

/// Backward of [`lora_fwd`] (**accumulates**): given `dy` `[T, out]`, adds
/// `dB += s·dyᵀ·(A x)` (`[out, rank]`), `dA += (s·dy·B)ᵀ·x` (`[rank, in]`) and
/// `dx += (s·dy·B)·A` (`[T, in]`; only the branch's share: add the base's with
/// [`matrix_bwd_input`]). `ax` is the forward's `A x`; `dax` `[T, rank]` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn lora_bwd<R: Real>(
    l: &LoraRef<'_, R>,
    x: &[R],
    ax: &[R],
    dy: &[R],
    dax: &mut [R],
    dx: Option<&mut [R]>,
    da: Option<&mut [R]>,
    mut db: Option<&mut [R]>,
) {
    let t = x.len() / l.n_in;
    assert!(ax.len() == t * l.rank && dy.len() == t * l.n_out && dax.len() == t * l.rank, "lora_bwd: shapes");
    dax.iter_mut().for_each(|v| *v = R::ZERO);
    for i in 0..t {
        let axi = &ax[i * l.rank..(i + 1) * l.rank];
        let daxi = &mut dax[i * l.rank..(i + 1) * l.rank];
        for o in 0..l.n_out {
            let g = l.scale * dy[i * l.n_out + o];
            let brow = &l.b[o * l.rank..(o + 1) * l.rank];
            axpy(daxi, g, brow);
            if let Some(db) = db.as_deref_mut() {
                axpy(&mut db[o * l.rank..(o + 1) * l.rank], g, axi);
            }
        }
    }
    dense_bwd(l.a, l.rank, l.n_in, x, dax, dx, da);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::block::{n_groups, pack_q4, quantize_q4_row, quantize_q8_row};
    use crate::tensor::{f32_to_bf16, f32_to_f16, DType, QuantParts, Storage, Tensor};
    use crate::train::testutil::*;
    use std::sync::Arc;

    fn f32_matrix(rows: usize, cols: usize, rng: &mut Rng) -> Matrix {
        let w: Vec<f32> = rand_vec(rng, rows * cols, -1.0, 1.0).iter().map(|&v| v as f32).collect();
        Matrix::new(Tensor::from_f32("w", vec![rows, cols], &w), rows, cols)
    }

    /// A bf16 or f16 matrix of random weights.
    fn half_matrix(dtype: DType, rows: usize, cols: usize, rng: &mut Rng) -> Matrix {
        let w = rand_vec(rng, rows * cols, -1.0, 1.0);
        let h: Vec<u16> = w
            .iter()
            .map(|&v| if dtype == DType::BF16 { f32_to_bf16(v as f32) } else { f32_to_f16(v as f32) })
            .collect();
        let st = Arc::new(Storage::from_bytes(bytemuck::cast_slice(&h)));
        let n = st.len();
        Matrix::new(Tensor::new("wh", dtype, vec![rows, cols], st, 0..n).unwrap(), rows, cols)
    }

    /// A group-quantized matrix (q8 or q4, group 32) of random weights.
    fn quant_matrix(kind: DType, rows: usize, cols: usize, rng: &mut Rng) -> Matrix {
        let group = 32;
        let ng = n_groups(cols, group);
        let w: Vec<f32> = rand_vec(rng, rows * cols, -1.0, 1.0).iter().map(|&v| v as f32).collect();
        let mut scales = vec![0u16; rows * ng];
        let (bytes, dtype) = if kind == DType::Q8 {
            let mut q = vec![0i8; rows * cols];
            for r in 0..rows {
                quantize_q8_row(
                    &w[r * cols..(r + 1) * cols],
                    group,
                    &mut q[r * cols..][..cols],
                    &mut scales[r * ng..][..ng],
                );
            }
            (bytemuck::cast_slice(&q).to_vec(), DType::I8)
        } else {
            let (mut q, mut idx) = (vec![0u8; rows * cols / 2], vec![0u8; cols]);
            for r in 0..rows {
                quantize_q4_row(&w[r * cols..(r + 1) * cols], group, None, &mut idx, &mut scales[r * ng..][..ng]);
                pack_q4(&idx, &mut q[r * cols / 2..][..cols / 2]);
            }
            (q, DType::Q4)
        };
        let st = Arc::new(Storage::from_bytes(&bytes));
        let n = st.len();
        let shape = if kind == DType::Q8 { vec![rows, cols] } else { vec![rows, cols / 2] };
        let tensor = Tensor::new("wq", if kind == DType::Q8 { dtype } else { DType::U8 }, shape, st, 0..n).unwrap();
        let sb: Vec<u8> = bytemuck::cast_slice(&scales).to_vec();
        let ss = Arc::new(Storage::from_bytes(&sb));
        let sn = ss.len();
        let scales = Tensor::new("wq.scales", DType::F16, vec![rows, ng], ss, 0..sn).unwrap();
        Matrix {
            tensor,
            rows,
            cols,
            quant: Some(QuantParts { kind, group, scales }),
            input_scale: None,
            panels: Default::default(),
        }
    }

    /// For each base type (f32, q8, q4, bf16, f16, AWQ-scaled q8): the reference forward equals the engine's `kernels::matmul` (f32
    /// rounding, ≤ 1e-5 per unit of magnitude for ≤ 64-term dots); the input gradient
    /// matches central differences of the f64 forward on every coordinate (the product is
    /// linear in x, so the differences are exact up to rounding); and the transposition
    /// identity ⟨dy, W x⟩ = ⟨dyᵀW, x⟩ holds through the engine's own product.
    #[test]
    fn matrix_input_gradient_all_base_types() {
        let mut rng = Rng::new(1);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        // An AWQ matrix: stored W·diag(s), products scale the input by 1/s first.
        let mut awq = quant_matrix(DType::Q8, 4, 64, &mut rng);
        awq.input_scale = Some(rand_vec(&mut rng, 64, 0.5, 2.0).iter().map(|&v| v as f32).collect::<Vec<f32>>().into());
        let cases = [
            (f32_matrix(7, 5, &mut rng), 3usize),
            (quant_matrix(DType::Q8, 5, 64, &mut rng), 4),
            (quant_matrix(DType::Q4, 6, 64, &mut rng), 3),
            (half_matrix(DType::BF16, 6, 9, &mut rng), 3),
            (half_matrix(DType::F16, 5, 11, &mut rng), 2),
            (awq, 3),
        ];
        for (m, t) in &cases {
            let (rows, cols, t) = (m.rows, m.cols, *t);
            let mut rowb = vec![0f32; 3 * cols];
            // Forward vs the inference kernel.
            let x32: Vec<f32> = rand_vec(&mut rng, t * cols, -1.0, 1.0).iter().map(|&v| v as f32).collect();
            let (mut y_ref, mut y_eng) = (vec![0f32; t * rows], vec![0f32; t * rows]);
            matrix_fwd(m, &x32, &mut y_ref, &mut rowb);
            crate::kernels::matmul(m, &x32, t, &mut y_eng);
            if matches!(m.dtype(), DType::Q8 | DType::Q4) {
                // The engine multiplies quantized weights with int8 activations (prefill as
                // decode does: token by token through matvec gives the same values); the
                // training forward stays on f32 activations, within their quantization error.
                let mut y_dec = vec![0f32; t * rows];
                for i in 0..t {
                    crate::kernels::matvec(m, &x32[i * cols..(i + 1) * cols], &mut y_dec[i * rows..(i + 1) * rows]);
                }
                assert_close_f32(&format!("{:?} prefill vs decode", m.dtype()), &y_dec, &y_eng, 1e-5);
                let scale = y_ref.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (a, b) in y_ref.iter().zip(&y_eng) {
                    assert!((a - b).abs() <= 0.02 * scale, "{:?} fwd vs int8 product: {a} vs {b}", m.dtype());
                }
            } else {
                assert_close_f32(&format!("{:?} fwd", m.dtype()), &y_ref, &y_eng, 1e-5);
            }
            // Gradient vs finite differences in f64.
            let x = rand_vec(&mut rng, t * cols, -1.0, 1.0);
            let c = rand_vec(&mut rng, t * rows, -1.0, 1.0);
            let mut dx = off(t * cols);
            matrix_bwd_input(m, &c, &mut dx, &mut rowb);
            let dx = unoff(&dx);
            check_grad(&format!("{:?} dx", m.dtype()), &x, &dx, 400, |x| {
                let mut y = vec![0f64; t * rows];
                matrix_fwd(m, x, &mut y, &mut vec![0f32; cols]);
                lin_loss(&c, &y)
            });
            // Accumulates: a second call doubles the result.
            let mut dx2 = dx.clone();
            matrix_bwd_input(m, &c, &mut dx2, &mut rowb[..cols]);
            assert!(dx2.iter().zip(&dx).all(|(a, b)| (a - 2.0 * b).abs() < 1e-12), "accumulates");
            // The f32 GEMM form on a pool of 3 (T = 13) equals the serial one, accumulating.
            let c13: Vec<f32> = rand_vec(&mut rng, 13 * rows, -1.0, 1.0).iter().map(|&v| v as f32).collect();
            let (mut dser, mut dpar) = (vec![0.5f32; 13 * cols], vec![0.5f32; 13 * cols]);
            matrix_bwd_input(m, &c13, &mut dser, &mut vec![0f32; 16 * cols]);
            pool.install(|| matrix_bwd_input_par(m, &c13, &mut dpar));
            assert_close_f32(&format!("{:?} parallel", m.dtype()), &dser, &dpar, 1e-5);
            // Transposition identity through the f32 forward.
            let c32: Vec<f32> = c.iter().map(|&v| v as f32).collect();
            let mut dx32 = vec![0f32; t * cols];
            matrix_bwd_input(m, &c32, &mut dx32, &mut rowb);
            let lhs: f64 = c32.iter().zip(&y_ref).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = dx32.iter().zip(&x32).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{:?} transpose: {lhs} vs {rhs}", m.dtype());
        }
    }

    /// The GEMM form of the input gradient over several row blocks (rows = 2·512 + 77, the
    /// last block short; f32 and q4, T = 1 and T = 6) equals the serial reference to f32
    /// rounding of the 1101-term sums.
    #[test]
    fn matrix_input_gradient_gemm_over_row_blocks() {
        let mut rng = Rng::new(9);
        let rows = 2 * BWD_BLOCK_ROWS + 77;
        for m in [f32_matrix(rows, 40, &mut rng), quant_matrix(DType::Q4, rows, 64, &mut rng)] {
            for t in [1, 6] {
                let dy: Vec<f32> = rand_vec(&mut rng, t * rows, -1.0, 1.0).iter().map(|&v| v as f32).collect();
                let (mut a, mut b) = (vec![0.25f32; t * m.cols], vec![0.25f32; t * m.cols]);
                matrix_bwd_input(&m, &dy, &mut a, &mut vec![0f32; 16 * m.cols]);
                matrix_bwd_input_par(&m, &dy, &mut b);
                // Sums of 1101 terms in another order: f32 rounding of about 1e-7 per term
                // of magnitude |dy|·|w| ≤ max|w|; a wrong block offset errs by O(max|w|).
                let mut row = vec![0f32; m.cols];
                let wmax = (0..rows).fold(0f32, |acc, r| {
                    m.row_to_f32(r, &mut row);
                    row.iter().fold(acc, |a, w| a.max(w.abs()))
                });
                let bound = 1e-7 * rows as f32 * wmax;
                let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst <= bound, "{:?} T {t}: GEMM form differs by {worst} (bound {bound})", m.dtype());
            }
        }
    }

    /// Dense product and LoRA branch: every gradient (x, W; x, A, B) against central
    /// differences on every coordinate; the LoRA forward equals the merged weight
    /// W + s·B·A applied to x.
    #[test]
    fn dense_and_lora_gradients() {
        let mut rng = Rng::new(2);
        let (t, n_in, n_out, rank) = (3usize, 7usize, 5usize, 3usize);
        let w = rand_vec(&mut rng, n_out * n_in, -1.0, 1.0);
        let x = rand_vec(&mut rng, t * n_in, -1.0, 1.0);
        let c = rand_vec(&mut rng, t * n_out, -1.0, 1.0);
        let (mut dx, mut dw) = (off(t * n_in), off(n_out * n_in));
        dense_bwd(&w, n_out, n_in, &x, &c, Some(&mut dx), Some(&mut dw));
        let (dx, dw) = (unoff(&dx), unoff(&dw));
        let fwd = |w: &[f64], x: &[f64]| {
            let mut y = vec![0f64; t * n_out];
            dense_fwd(w, n_out, n_in, x, &mut y);
            lin_loss(&c, &y)
        };
        check_grad("dense dx", &x, &dx, 1000, |x| fwd(&w, x));
        check_grad("dense dw", &w, &dw, 1000, |w| fwd(w, &x));

        let a = rand_vec(&mut rng, rank * n_in, -1.0, 1.0);
        let b = rand_vec(&mut rng, n_out * rank, -1.0, 1.0);
        let scale = 2.0;
        let lora_loss = |a: &[f64], b: &[f64], x: &[f64]| {
            let l = LoraRef { a, b, rank, n_in, n_out, scale };
            let (mut ax, mut y) = (vec![0f64; t * rank], vec![0f64; t * n_out]);
            lora_fwd(&l, x, &mut ax, &mut y);
            lin_loss(&c, &y)
        };
        let l = LoraRef { a: &a, b: &b, rank, n_in, n_out, scale };
        let mut ax = vec![0f64; t * rank];
        let mut y = vec![0f64; t * n_out];
        dense_fwd(&w, n_out, n_in, &x, &mut y);
        lora_fwd(&l, &x, &mut ax, &mut y);
        // Merged form: (W + s·B·A) x.
        let mut merged = w.clone();
        for o in 0..n_out {
            for j in 0..n_in {
                merged[o * n_in + j] += scale * (0..rank).map(|k| b[o * rank + k] * a[k * n_in + j]).sum::<f64>();
            }
        }
        let mut ym = vec![0f64; t * n_out];
        dense_fwd(&merged, n_out, n_in, &x, &mut ym);
        assert!(y.iter().zip(&ym).all(|(p, q)| (p - q).abs() < 1e-12), "LoRA vs merged");
        let (mut dx, mut da, mut db, mut dax) =
            (off(t * n_in), off(rank * n_in), off(n_out * rank), vec![0f64; t * rank]);
        lora_bwd(&l, &x, &ax, &c, &mut dax, Some(&mut dx), Some(&mut da), Some(&mut db));
        let (dx, da, db) = (unoff(&dx), unoff(&da), unoff(&db));
        check_grad("lora dx", &x, &dx, 1000, |x| lora_loss(&a, &b, x));
        check_grad("lora dA", &a, &da, 1000, |a| lora_loss(a, &b, &x));
        check_grad("lora dB", &b, &db, 1000, |b| lora_loss(&a, b, &x));
    }
}
