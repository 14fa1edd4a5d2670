//! Criterion benchmarks of the hot kernels: matrix-vector products (decode, GB/s of weights)
//! and matrix-matrix products (prefill over a 128-token chunk and a batch of 8 sessions,
//! GFLOP/s) at the 0.1B RWKV-7 shapes, per weight type (f32, bf16, f16, q8 and q4 g32), and
//! RWKV-7's WKV head step (state elements per second).
//!
//! Run: `cargo bench --bench kernels` (SUTRA_FORCE_SCALAR=1 for the portable path,
//! SUTRA_NO_AVX512=1 for AVX2, SUTRA_NO_VNNI=1 for the quantized products without VNNI).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use sutra::kernels::{matmul, matvec};
use sutra::tensor::block::{n_groups, pack_q4, quantize_q4_row, quantize_q8_row};
use sutra::tensor::{f32_to_bf16, f32_to_f16, DType, Matrix, QuantParts, Storage, Tensor};

fn tensor<T: bytemuck::Pod>(name: &str, dtype: DType, shape: Vec<usize>, data: &[T]) -> Tensor {
    let st = Arc::new(Storage::from_bytes(bytemuck::cast_slice(data)));
    let n = st.len();
    Tensor::new(name, dtype, shape, st, 0..n).unwrap()
}

/// A `[rows, cols]` matrix of normal weights in `dtype` (q8/q4: RTN, groups of 32).
fn matrix(dtype: DType, rows: usize, cols: usize) -> Matrix {
    let mut rng = sutra::rng::Rng::new(3);
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
    if matches!(dtype, DType::Q8 | DType::Q4) {
        let (group, ng) = (32, n_groups(cols, 32));
        let mut scales = vec![0u16; rows * ng];
        let weights = if dtype == DType::Q8 {
            let mut q = vec![0i8; rows * cols];
            for r in 0..rows {
                let (qs, ss) = (&mut q[r * cols..(r + 1) * cols], &mut scales[r * ng..(r + 1) * ng]);
                quantize_q8_row(&vals[r * cols..(r + 1) * cols], group, qs, ss);
            }
            tensor("w", DType::I8, vec![rows, cols], &q)
        } else {
            let (mut q, mut idx) = (vec![0u8; rows * cols / 2], vec![0u8; cols]);
            for r in 0..rows {
                quantize_q4_row(
                    &vals[r * cols..(r + 1) * cols],
                    group,
                    None,
                    &mut idx,
                    &mut scales[r * ng..(r + 1) * ng],
                );
                pack_q4(&idx, &mut q[r * cols / 2..(r + 1) * cols / 2]);
            }
            tensor("w", DType::U8, vec![rows, cols / 2], &q)
        };
        let scales = tensor("w.scales", DType::F16, vec![rows, ng], &scales);
        return Matrix {
            tensor: weights,
            rows,
            cols,
            quant: Some(QuantParts { kind: dtype, group, scales }),
            input_scale: None,
            panels: Default::default(),
        };
    }
    let bytes: Vec<u8> = match dtype {
        DType::BF16 => vals.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
        DType::F16 => vals.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect(),
        _ => vals.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    };
    let st = Arc::new(Storage::from_bytes(&bytes));
    let n = st.len();
    Matrix::new(Tensor::new("w", dtype, vec![rows, cols], st, 0..n).unwrap(), rows, cols)
}

fn bench_matvec(c: &mut Criterion) {
    let mut g = c.benchmark_group("matvec");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16, DType::Q8, DType::Q4] {
            // 3072 x 768: the FFN key matrix of the 0.1B model (in the L2/L3 caches when
            // repeated); 65536 x 768: its head (larger than the caches: memory bandwidth).
            for rows in [3072, 65536] {
                let m = matrix(dtype, rows, 768);
                let x = vec![0.5f32; 768];
                let mut y = vec![0f32; rows];
                g.throughput(Throughput::Bytes(m.n_bytes() as u64));
                g.bench_function(BenchmarkId::new(format!("{dtype:?} {rows}x768"), format!("{threads}t")), |b| {
                    b.iter(|| pool.install(|| matvec(&m, &x, &mut y)))
                });
            }
        }
    }
    g.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    // A 256-token prefill chunk, and one decode step of 8 batched sessions.
    for t in [256usize, 8] {
        let mut g = c.benchmark_group(format!("matmul_t{t}"));
        for dtype in [DType::F32, DType::BF16, DType::Q8, DType::Q4] {
            let m = matrix(dtype, 3072, 768);
            let x: Vec<f32> = (0..t * 768).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let mut y = vec![0f32; t * 3072];
            g.throughput(Throughput::Elements((2 * 3072 * 768 * t) as u64));
            g.bench_function(format!("{dtype:?} 2t"), |b| b.iter(|| pool.install(|| matmul(&m, &x, t, &mut y))));
        }
        g.finish();
    }
}

/// One RWKV-7 WKV head step (head size 64, one token): state elements per second.
fn bench_wkv7(c: &mut Criterion) {
    let n = 64;
    let mut g = c.benchmark_group("wkv7_update");
    g.throughput(Throughput::Elements((n * n) as u64));
    // Inputs in the model's ranges, so that repeated steps keep the state bounded and normal:
    // decays w in (0.9, 1), kk of unit length, b = kk ⊙ a with a in (0, 1).
    let vec = |k: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + k * 13) % 17) as f32 / 17.0 - 0.5).collect() };
    let w: Vec<f32> = vec(1).iter().map(|x| 0.95 + 0.1 * x).collect();
    let (k, v, r) = (vec(3), vec(4), vec(6));
    let norm = vec(5).iter().map(|x| x * x).sum::<f32>().sqrt();
    let kk: Vec<f32> = vec(5).iter().map(|x| x / norm).collect();
    let b: Vec<f32> = kk.iter().zip(vec(2)).map(|(kk, a)| kk * (a + 0.5)).collect();
    let mut s: Vec<f32> = (0..n * n).map(|i| ((i * 5) % 11) as f32 / 110.0).collect();
    let mut y = vec![0f32; n];
    let x = sutra::kernels::ssm::Wkv7 { w: &w, b: &b, k: &k, v: &v, kk: &kk, r: &r };
    g.bench_function("n64", |bch| bch.iter(|| sutra::kernels::ssm::wkv7_update(&mut s, x, &mut y)));
    g.bench_function("n64 transposed", |bch| bch.iter(|| sutra::kernels::ssm::wkv7_update_cols(&mut s, x, &mut y)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_matvec, bench_matmul, bench_wkv7
}
criterion_main!(benches);
