//! The execution context: batches of sessions equal the sessions one by one, a failed
//! evaluation marks its session until reset, and validation lives in the safe API (thread
//! counts, stop tokens, in-memory load progress).

mod common;
use common::*;
use sutra::exec::Observer;
use sutra::tensor::Matrix;
use sutra::{Error, Model, ModelParams, Session, Status};

/// Every golden architecture (f32 checkpoints in their real layouts).
const GOLDEN: [&str; 7] = [
    "rwkv4/model.safetensors",
    "rwkv4/model-hf.safetensors",
    "rwkv5/model.safetensors",
    "rwkv6/model.safetensors",
    "rwkv7/model.safetensors",
    "mamba1/model.safetensors",
    "mamba2/model.safetensors",
];

fn toks(n: usize, seed: usize, v: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729 + 13) % v) as u32).collect()
}

/// Sessions at different points, fed in one batch (see [`BATCHES`]), give the logits (and
/// afterwards the states) of separate evaluations; on every golden model and on the
/// Shakespeare model (large enough that the batch's heads run as parallel tasks).
#[test]
fn batch_equals_sessions_one_by_one() {
    let paths = GOLDEN.iter().map(|g| fixture(&format!("golden/{g}")));
    batch_vs_sessions(paths.chain([repo("models/rwkv7-shakespeare-6x256/model.safetensors")]));
}

/// The same with quantized weights: libsutra's q8 and q4 (groups of 32 and 64) of the
/// Shakespeare model, and llama.cpp's Q8_0, Q4_0, Q4_1, Q4_K and Q5_K GGUF blocks.
///
/// A GGUF batch dots every row with each token by the decode kernel itself, so it gives the
/// sessions' logits to the f32 tolerance (measured: identical). libsutra's q8/q4 batch runs
/// the many-row integer tiles, a single token the decode kernels: the activations are
/// quantized alike and the integer sums are exact, but the float sums run in other orders
/// (1e-7 apart), so an activation on a rounding boundary can land one int8 level apart, which
/// moves the logits after it by ~1e-2 (measured: 2e-2 on q4 g32, 2e-6 on the others), where
/// mixing up rows, sessions or states moves them by O(1). Those are held to 5e-2.
#[test]
fn quantized_batch_equals_sessions_one_by_one() {
    use sutra::quant::{quantize_model, QuantType, QuantizeParams};
    let src = repo("models/rwkv7-shakespeare-6x256/model.safetensors");
    let mut paths = Vec::new();
    for (ty, group) in [(QuantType::Q8, 32), (QuantType::Q4, 32), (QuantType::Q4, 64)] {
        let out = tmp_path("exec", &format!("shakespeare-{ty:?}-g{group}.safetensors"));
        let p = QuantizeParams { qtype: ty, group, ..Default::default() };
        quantize_model(&src, &out, &p, &mut |_| true).unwrap();
        paths.push(out);
    }
    for f in ["rwkv7-Q8_0", "rwkv7-Q4_0", "mamba1-Q4_0", "rwkv6-w256-Q4_1", "rwkv6-w256-Q4_K_M", "rwkv6-w256-Q5_K_M"] {
        paths.push(fixture(&format!("formats/{f}.gguf")));
    }
    batch_vs_sessions_quantized(&paths);
    for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")) {
        std::fs::remove_file(p).ok();
    }
}

/// The batches of [`batch_and_solo_logits`]: three sessions fed 1, 3 and 17 tokens (one group,
/// its products split between the threads), and nine decode-sized feeds, which a 2-thread
/// model splits into one group of sessions per thread (5 and 4).
const BATCHES: [&[usize]; 2] = [&[1, 3, 17], &[1, 1, 2, 1, 1, 3, 1, 1, 1]];

/// Sessions at different points fed `lens` tokens: in one batch (`got`) and one by one
/// (`want`). Rows 0..n are the logits after the feeds, rows n..2n after one more token each
/// (the states advanced alike); `[2n, n_vocab]` each.
fn batch_and_solo_logits(m: &std::sync::Arc<Model>, lens: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let v = m.info().n_vocab;
    let mut solo: Vec<Session> = Vec::new();
    for (i, _) in lens.iter().enumerate() {
        let mut s = Session::new(m);
        s.eval(&toks(2 + 5 * i, i, v), None).unwrap();
        solo.push(s);
    }
    let mut batch: Vec<Session> = solo.to_vec();
    let feeds: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &n)| toks(n, 10 + i, v)).collect();
    let n = lens.len();
    let (mut want, mut got) = (vec![0f32; 2 * n * v], vec![0f32; 2 * n * v]);
    let (w1, w2) = want.split_at_mut(n * v);
    for (((s, f), w), w2) in solo.iter_mut().zip(&feeds).zip(w1.chunks_mut(v)).zip(w2.chunks_mut(v)) {
        s.eval(f, Some(w)).unwrap();
        s.eval(&[7], Some(w2)).unwrap();
    }
    let (g1, g2) = got.split_at_mut(n * v);
    let views: Vec<&[u32]> = feeds.iter().map(|f| &f[..]).collect();
    let mut refs: Vec<&mut Session> = batch.iter_mut().collect();
    Session::eval_batch(&mut refs, &views, Some(g1)).unwrap();
    for (b, out) in batch.iter_mut().zip(g2.chunks_mut(v)) {
        b.eval(&[7], Some(out)).unwrap();
    }
    (got, want)
}

/// `batch_and_solo_logits` for quantized weights (see the test above): GGUF files to the f32
/// tolerance, libsutra's quantized files to 5e-2.
fn batch_vs_sessions_quantized(paths: &[std::path::PathBuf]) {
    for path in paths {
        let g = path.display().to_string();
        let m = load(path, 2);
        for lens in BATCHES {
            let (got, want) = batch_and_solo_logits(&m, lens);
            let what = format!("{g}, feeds {lens:?}: batch logits, and one token after");
            if path.extension().is_some_and(|e| e == "gguf") {
                assert_close(&got, &want, 1e-4, 1e-3, &what);
            } else {
                assert_close(&got, &want, 5e-2, 0.0, &what);
            }
        }
    }
}

fn batch_vs_sessions(paths: impl Iterator<Item = std::path::PathBuf>) {
    for path in paths {
        let g = path.display().to_string();
        let m = load(&path, 2);
        for lens in BATCHES {
            let (got, want) = batch_and_solo_logits(&m, lens);
            assert_close(&got, &want, 1e-4, 1e-3, &format!("{g}, feeds {lens:?}: batch logits, and one token after"));
        }
    }
}

/// `sutra_batch_eval` through the C API: the same logits as `sutra_session_eval` per session,
/// and a bad argument (a session twice, a negative token) changes no session.
#[test]
fn c_batch_eval() {
    use sutra::ffi::*;
    let path = std::ffi::CString::new(fixture("golden/rwkv7/model.safetensors").to_str().unwrap()).unwrap();
    let (mut model, mut a, mut b) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid arguments; every handle is freed at the end.
    unsafe {
        assert_eq!(sutra_model_load(path.as_ptr(), std::ptr::null(), &mut model), Status::SUTRA_OK);
        assert_eq!(sutra_session_new(model, &mut a), Status::SUTRA_OK);
        assert_eq!(sutra_session_new(model, &mut b), Status::SUTRA_OK);
        let v = sutra_model_n_vocab(model) as usize;
        let (ta, tb) = ([5i32, 9, 2], [11i32]);
        let (ptrs, lens) = ([ta.as_ptr(), tb.as_ptr()], [ta.len(), tb.len()]);
        let mut before = vec![0u8; 0];
        let mut n = 0usize;
        assert_eq!(sutra_session_state_size(a, &mut n), Status::SUTRA_OK);
        before.resize(n, 0);
        assert_eq!(sutra_session_state_save(a, before.as_mut_ptr(), n), Status::SUTRA_OK);
        // The same session twice: refused, nothing changed.
        let twice = [a, a];
        let mut out = vec![0f32; 2 * v];
        let st = sutra_batch_eval(twice.as_ptr(), 2, ptrs.as_ptr(), lens.as_ptr(), out.as_mut_ptr());
        assert_eq!(st, Status::SUTRA_ERR_INVALID_ARGUMENT);
        let msg = std::ffi::CStr::from_ptr(sutra_last_error()).to_str().unwrap().to_string();
        assert!(msg.contains("sessions[1]"), "{msg}");
        // A negative token in the second list: refused, nothing changed.
        let bad = [11i32, -4];
        let bad_ptrs = [ta.as_ptr(), bad.as_ptr()];
        let both = [a, b];
        let st = sutra_batch_eval(both.as_ptr(), 2, bad_ptrs.as_ptr(), [3, 2].as_ptr(), out.as_mut_ptr());
        assert_eq!(st, Status::SUTRA_ERR_INVALID_ARGUMENT);
        let mut after = vec![0u8; n];
        assert_eq!(sutra_session_state_save(a, after.as_mut_ptr(), n), Status::SUTRA_OK);
        assert_eq!(before, after, "a refused batch changed a session");
        // The real batch against separate evals on clones.
        let (mut ca, mut cb) = (std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(sutra_session_clone(a, &mut ca), Status::SUTRA_OK);
        assert_eq!(sutra_session_clone(b, &mut cb), Status::SUTRA_OK);
        let st = sutra_batch_eval(both.as_ptr(), 2, ptrs.as_ptr(), lens.as_ptr(), out.as_mut_ptr());
        assert_eq!(st, Status::SUTRA_OK);
        let mut want = vec![0f32; 2 * v];
        assert_eq!(sutra_session_eval(ca, ta.as_ptr(), 3, want.as_mut_ptr()), Status::SUTRA_OK);
        assert_eq!(sutra_session_eval(cb, tb.as_ptr(), 1, want[v..].as_mut_ptr()), Status::SUTRA_OK);
        assert_close(&out, &want, 1e-4, 1e-3, "C batch");
        for s in [a, b, ca, cb] {
            sutra_session_free(s);
        }
        sutra_model_free(model);
    }
}

/// An observer that panics on its `n`-th product.
struct PanicAfter(usize);

impl Observer for PanicAfter {
    fn observe(&mut self, m: &Matrix, _x: &[f32], _t: usize) {
        if self.0 == 0 {
            panic!("injected fault at {}", m.tensor.name);
        }
        self.0 -= 1;
    }
}

/// A panic half-way through an evaluation fails that call with an internal error, every
/// later evaluation names the cause until reset, and after reset the session is as new.
#[test]
fn failed_eval_marks_session_until_reset() {
    let m = load(&fixture("golden/rwkv7/model.safetensors"), 2);
    let v = m.info().n_vocab;
    let mut s = Session::new(&m);
    s.set_observer(Some(Box::new(PanicAfter(5))));
    let mut logits = vec![0f32; v];
    match s.eval(&[1, 2, 3], Some(&mut logits)) {
        Err(Error::Internal(msg)) => assert!(msg.contains("injected fault"), "{msg}"),
        other => panic!("expected an internal error, got {other:?}"),
    }
    s.set_observer(None);
    match s.eval(&[1], Some(&mut logits)) {
        Err(e @ Error::Internal(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("reset") && msg.contains("injected fault"), "{msg}");
            assert_eq!(e.status(), Status::SUTRA_ERR_INTERNAL);
        }
        other => panic!("expected the session to stay failed, got {other:?}"),
    }
    s.reset();
    s.eval(&[1, 2, 3], Some(&mut logits)).unwrap();
    let mut fresh = vec![0f32; v];
    Session::new(&m).eval(&[1, 2, 3], Some(&mut fresh)).unwrap();
    assert_eq!(logits, fresh, "a reset session differs from a new one");
}

/// Thread counts are bounded in the safe API, for every call that takes one.
#[test]
fn thread_count_is_validated_in_the_safe_api() {
    let p = fixture("golden/rwkv7/model.safetensors");
    let e = Model::load(&p, &ModelParams { n_threads: 100_000, use_mmap: true, ..Default::default() })
        .expect_err("refused");
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert!(e.to_string().contains("n_threads = 100000"), "{e}");
    let qp = sutra::quant::QuantizeParams { n_threads: 100_000, ..Default::default() };
    let out = std::env::temp_dir().join(format!("sutra-exec-threads-{}.st", std::process::id()));
    let e = sutra::quant::quantize_model(&p, &out, &qp, &mut |_| true).expect_err("refused");
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert!(!out.exists());
}

/// A stop token past the vocabulary is an error naming it, before anything is fed.
#[test]
fn stop_token_out_of_range_is_refused() {
    let m = load(&repo("models/rwkv7-shakespeare-6x256/model.safetensors"), 1);
    let tok = sutra::Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
    let v = m.info().n_vocab as u32;
    let mut s = Session::new(&m);
    let before = s.state().to_vec();
    let mut sampler = sutra::Sampler::new(1);
    let p = sutra::GenerateParams { max_tokens: 4, stop_tokens: vec![0, v + 3], ..Default::default() };
    let e = sutra::generate(&mut s, &tok, &mut sampler, "ROMEO:", &p, &mut |_| true).expect_err("refused");
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert!(e.to_string().contains(&format!("stop token {}", v + 3)), "{e}");
    assert_eq!(s.state(), &before[..]);
}

extern "C" fn count_progress(f: f32, ud: *mut std::ffi::c_void) -> bool {
    // SAFETY: ud is the Vec<f32> the test passes, alive for the call.
    let seen = unsafe { &mut *ud.cast::<Vec<f32>>() };
    seen.push(f);
    seen.len() < 2
}

/// `sutra_model_load_from_memory` calls the progress callback, and honours a cancel.
#[test]
fn load_from_memory_reports_progress() {
    use sutra::ffi::*;
    let bytes = std::fs::read(fixture("golden/rwkv7/model.safetensors")).unwrap();
    let mut seen: Vec<f32> = Vec::new();
    let mut p = sutra_model_default_params();
    p.progress_callback = Some(count_progress);
    p.progress_user_data = (&mut seen as *mut Vec<f32>).cast();
    let mut model = std::ptr::null_mut();
    // SAFETY: valid buffer, params and out-pointer.
    let st = unsafe { sutra_model_load_from_memory(bytes.as_ptr(), bytes.len(), &p, &mut model) };
    assert_eq!(st, Status::SUTRA_ERR_CANCELLED);
    assert!(model.is_null(), "a cancelled load handed out a model");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0] == 0.0 && seen[1] > 0.0 && seen[1] < 1.0, "{seen:?}");
}
