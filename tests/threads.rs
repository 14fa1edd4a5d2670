//! Thread pools are shared per thread count for the process: models held at once, models
//! loaded and freed in a loop, and quantizations start no threads beyond one pool per
//! thread count. Its own test binary, so that no other test's threads are counted.

mod common;
use common::*;

/// Threads of this process (Linux `/proc/self/status`).
fn threads() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

#[test]
fn models_share_one_pool_per_thread_count() {
    let path = fixture("golden/rwkv7/model.safetensors");
    let before = threads();
    let mut held = Vec::new();
    for round in 0..20 {
        for n in [3, 2] {
            let m = load(&path, n);
            assert_eq!(m.n_threads(), n);
            let mut s = sutra::Session::new(&m);
            s.eval(&[1, 2, 3], None).unwrap();
            // Half the models stay alive, half are freed at once.
            if round % 2 == 0 {
                held.push(m);
            }
        }
    }
    // A pool per model made 3 + 2 workers per round, 100 threads for the 20 models held;
    // shared pools are made once: 5 workers in all, and the one-worker pool that decode
    // steps may run on.
    let now = threads();
    assert!(now <= before + 6, "{before} threads before, {now} with {} models alive", held.len());
    drop(held);
    let q = std::env::temp_dir().join(format!("sutra-threads-{}.q8", std::process::id()));
    for _ in 0..5 {
        let p = sutra::quant::QuantizeParams {
            n_threads: 3,
            group: 32,
            method: sutra::quant::Method::Rtn,
            ..Default::default()
        };
        sutra::quant::quantize_model(&path, &q, &p, &mut |_| true).unwrap();
    }
    std::fs::remove_file(&q).ok();
    assert!(threads() <= before + 6, "quantizing started threads of its own");
}
