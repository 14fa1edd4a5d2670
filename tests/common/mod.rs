//! Helpers shared by the integration tests: fixture paths and reference comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use sutra::format::SafetensorsFile;
use sutra::{Model, ModelParams};

/// Path under the repository root.
pub fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Path under tests/fixtures.
pub fn fixture(p: &str) -> PathBuf {
    repo("tests/fixtures").join(p)
}

/// Loads a model with `threads` workers.
pub fn load(path: &Path, threads: usize) -> Arc<Model> {
    Arc::new(
        Model::load(path, &ModelParams { n_threads: threads, use_mmap: true, ..Default::default() })
            .expect("load model"),
    )
}

/// Reference tokens and logits [T, V] from an expected.safetensors file.
pub fn expected(path: &Path, logits_key: &str) -> (Vec<u32>, Vec<f32>, usize) {
    let f = SafetensorsFile::open(path, false).expect("open expected");
    let tok = f.get("tokens").expect("tokens");
    let toks: Vec<u32> =
        tok.bytes().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
    let l = f.get(logits_key).expect("logits");
    let v = l.shape[1];
    (toks, l.to_f32_vec().unwrap(), v)
}

/// Asserts `|got - want| <= abs + rel*|want|` elementwise, printing the first offenders.
/// The golden README recommends abs 1e-4, rel 1e-3 for f32 (reference vs float64 <= 3e-6).
pub fn assert_close(got: &[f32], want: &[f32], abs: f32, rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    let mut bad = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst.1 || d.is_nan() {
            worst = (i, d);
        }
        let ok = d <= abs + rel * w.abs();
        if !ok && bad.len() < 5 {
            bad.push(format!("[{i}] got {g} want {w} (diff {d})"));
        }
    }
    assert!(bad.is_empty(), "{what}: max diff {} at {}; first mismatches: {}", worst.1, worst.0, bad.join("; "));
}

/// A command running the program `exe` built by this test suite: directly, or through the
/// emulator named by `SUTRA_TEST_RUNNER` (e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu`,
/// set by `.ci/arm`: a cross-built test binary runs under qemu, and so must its children).
pub fn command(exe: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let runner = std::env::var("SUTRA_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        None => std::process::Command::new(exe),
        Some(emulator) => {
            let mut c = std::process::Command::new(emulator);
            c.args(words).arg(exe);
            c
        }
    }
}

/// Whether the suite runs under an emulator (`SUTRA_TEST_RUNNER` set, as by `.ci/arm`), where
/// floating point is computed in software and a few long computations are left out.
pub fn emulated() -> bool {
    std::env::var_os("SUTRA_TEST_RUNNER").is_some_and(|v| !v.is_empty())
}

/// Mean cross-entropy (natural log) of `targets[i]` under the logits `s` gives after
/// `tokens[i]`, fed as one sequence from the session's current state and adapters.
pub fn mean_nll(s: &mut sutra::Session, tokens: &[u32], targets: &[i32]) -> f64 {
    let v = s.model().info().n_vocab;
    let mut logits = vec![0f32; tokens.len() * v];
    s.eval_all_logits(tokens, &mut logits).unwrap();
    let mut lp = vec![0f64; v];
    let mut sum = 0f64;
    for (row, &tg) in logits.chunks(v).zip(targets) {
        sutra::score::log_softmax(row, &mut lp);
        sum -= lp[tg as usize];
    }
    sum / tokens.len() as f64
}

/// Logits of every token, one `sutra_session_eval` per token from the fresh state, through the C API.
pub fn c_logits(path: &Path, tokens: &[u32], threads: i32) -> Vec<f32> {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid out-pointers and a NUL-terminated path; handles freed below.
    unsafe {
        let mut params = sutra::ffi::sutra_model_default_params();
        params.n_threads = threads;
        let mut model = std::ptr::null_mut();
        let st = sutra::ffi::sutra_model_load(c_path.as_ptr(), &params, &mut model);
        assert_eq!(
            st,
            sutra::Status::SUTRA_OK,
            "{}: {}",
            path.display(),
            std::ffi::CStr::from_ptr(sutra::ffi::sutra_last_error()).to_string_lossy()
        );
        let mut info = std::mem::zeroed();
        assert_eq!(sutra::ffi::sutra_model_get_info(model, &mut info), sutra::Status::SUTRA_OK);
        let v = info.n_vocab as usize;
        let mut session = std::ptr::null_mut();
        assert_eq!(sutra::ffi::sutra_session_new(model, &mut session), sutra::Status::SUTRA_OK);
        let mut out = vec![0f32; tokens.len() * v];
        for (i, t) in tokens.iter().enumerate() {
            let t = *t as i32;
            let st = sutra::ffi::sutra_session_eval(session, &t, 1, out[i * v..].as_mut_ptr());
            assert_eq!(st, sutra::Status::SUTRA_OK);
        }
        sutra::ffi::sutra_session_free(session);
        sutra::ffi::sutra_model_free(model);
        out
    }
}

/// `name` in a temporary folder of this test binary (`prefix` keeps binaries apart).
pub fn tmp_path(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sutra-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The error of loading `bytes` written as `path` (which must not load).
pub fn load_err_at(path: &Path, bytes: &[u8]) -> sutra::Error {
    std::fs::write(path, bytes).unwrap();
    match Model::load(path, &ModelParams::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

/// Writes the quantized file `q` as a float checkpoint at `out`: every quantized matrix
/// dequantized to f32 (its AWQ input scale folded back in), every other tensor as stored, the
/// companions (scales, input scales) left out. The same weights, multiplied on f32 activations.
pub fn write_dequantized(q: &Path, out: &Path) {
    use sutra::tensor::DType;
    let f = SafetensorsFile::open(q, false).unwrap();
    let info = f.quant.clone().expect("a quantized file");
    let rd = sutra::format::WeightReader::new(&f);
    let mut ts = Vec::new();
    for (name, t) in &f.tensors {
        if let Some(e) = info.tensors.get(name) {
            let m = rd.matrix(name, e.rows, e.cols).unwrap();
            let mut w = vec![0f32; e.rows * e.cols];
            for (r, row) in w.chunks_mut(e.cols).enumerate() {
                m.row_to_f32(r, row);
            }
            ts.push((name.clone(), DType::F32, vec![e.rows, e.cols], bytemuck::cast_slice(&w).to_vec()));
        } else if !sutra::format::quantized::COMPANIONS.iter().any(|c| name.ends_with(c)) {
            ts.push((name.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()));
        }
    }
    let meta = f
        .metadata
        .get("sutra.hf_config")
        .map(|c| std::collections::HashMap::from([("sutra.hf_config".to_string(), c.clone())]));
    sutra::format::safetensors::write(out, &ts, meta).unwrap();
}
