//! A decode step allocates nothing: after a few warm-up tokens, `sutra_session_eval` of one
//! token reuses the session's execution context (scratch, product workspaces, token buffer),
//! for every architecture, over f32 and q4 weights.
//!
//! A counting global allocator sees every allocation of the process, the thread pool's
//! included; the bound is below one allocation per step on average (rayon's job queue may
//! allocate a block now and then). This file holds a single test so that no other test's
//! allocations run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use sutra::ffi::{
    sutra_model_default_params, sutra_model_free, sutra_model_load, sutra_session_eval, sutra_session_free,
    sutra_session_new,
};
use sutra::format::synth::{synthesize, SynthSpec};
use sutra::quant::{quantize_model, Method, QuantType, QuantizeParams};
use sutra::tensor::DType;
use sutra::Status;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: usize = 4;
const STEPS: usize = 64;

/// Allocations made by `STEPS` one-token evals of the model at `path` (after `WARMUP`).
fn allocs_per_decode(path: &std::path::Path) -> (usize, usize) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut params = sutra_model_default_params();
    params.n_threads = 2;
    let (mut model, mut session) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid NUL-terminated path, params and out-pointers; handles freed below.
    unsafe {
        assert_eq!(sutra_model_load(c_path.as_ptr(), &params, &mut model), Status::SUTRA_OK);
        assert_eq!(sutra_session_new(model, &mut session), Status::SUTRA_OK);
    }
    let n_vocab = unsafe { sutra::ffi::sutra_model_n_vocab(model) } as usize;
    let mut logits = vec![0f32; n_vocab];
    let mut token = 1i32;
    let mut step = |token: &mut i32| {
        // SAFETY: live session, one readable token, n_vocab writable floats.
        let st = unsafe { sutra_session_eval(session, token, 1, logits.as_mut_ptr()) };
        assert_eq!(st, Status::SUTRA_OK);
        *token = (*token * 31 + 7) % n_vocab as i32;
    };
    for _ in 0..WARMUP {
        step(&mut token);
    }
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..STEPS {
        step(&mut token);
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    // SAFETY: handles from the calls above, freed once.
    unsafe {
        sutra_session_free(session);
        sutra_model_free(model);
    }
    (after - before, STEPS)
}

#[test]
fn decode_step_makes_no_allocation() {
    let dir = std::env::temp_dir().join(format!("sutra-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut report = Vec::new();
    for arch in ["rwkv4", "rwkv5", "rwkv6", "rwkv7", "mamba1", "mamba2"] {
        let f32_path = dir.join(format!("{arch}.safetensors"));
        let spec = SynthSpec {
            arch: arch.into(),
            n_layer: 2,
            n_embd: 128,
            n_vocab: 300,
            head_size: 32,
            dtype: DType::F32,
            seed: 3,
        };
        synthesize(&spec, &f32_path).unwrap();
        let q4_path = dir.join(format!("{arch}-q4.safetensors"));
        let qp = QuantizeParams { qtype: QuantType::Q4, group: 32, method: Method::Rtn, ..Default::default() };
        quantize_model(&f32_path, &q4_path, &qp, &mut |_| true).unwrap();
        for (kind, path) in [("f32", &f32_path), ("q4", &q4_path)] {
            let (n, steps) = allocs_per_decode(path);
            report.push(format!("{arch} {kind}: {n} allocations in {steps} steps"));
            assert!(n < steps, "{arch} {kind}: {n} allocations in {steps} decode steps (want < 1 per step)");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("{}", report.join("\n"));
}
