//! Criterion benchmarks of the hot kernels: matrix-vector products (decode) and
//! matrix-matrix products (prefill) at the 0.1B RWKV-7 shapes, per weight dtype.
//!
//! Run: `cargo bench --bench kernels` (SUTRA_FORCE_SCALAR=1 for the portable path).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use sutra::kernels::{matmul, matvec};
use sutra::tensor::{f32_to_bf16, f32_to_f16, DType, Matrix, Storage, Tensor};

fn matrix(dtype: DType, rows: usize, cols: usize) -> Matrix {
    let mut rng = sutra::rng::Rng::new(3);
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
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
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            // 3072 x 768: the FFN key matrix of the 0.1B model (larger than the caches).
            let m = matrix(dtype, 3072, 768);
            let x = vec![0.5f32; 768];
            let mut y = vec![0f32; 3072];
            g.throughput(Throughput::Bytes(m.n_bytes() as u64));
            g.bench_function(BenchmarkId::new(format!("{dtype:?}"), format!("{threads}t")), |b| {
                b.iter(|| pool.install(|| matvec(&m, &x, &mut y)))
            });
        }
    }
    g.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_t64");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let m = matrix(dtype, 768, 768);
        let t = 64;
        let x = vec![0.5f32; t * 768];
        let mut y = vec![0f32; t * 768];
        g.throughput(Throughput::Elements((2 * 768 * 768 * t) as u64));
        g.bench_function(format!("{dtype:?}"), |b| b.iter(|| pool.install(|| matmul(&m, &x, t, &mut y))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_matvec, bench_matmul
}
criterion_main!(benches);
