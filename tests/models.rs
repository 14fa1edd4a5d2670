//! RWKV v4, v5.2, v6, Mamba-1 and Mamba-2 against their references (golden random models,
//! see tests/fixtures/golden/README.md): logits step by step, by prefill, and half prefill
//! then steps; the recurrent states; RWKV-4's transformers layout against the official one.
//! Then, on synthesized shapes the golden set does not cover, step vs prefill agreement,
//! save → load → continue, clones, and errors naming the missing tensor or the bad config.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use sutra::format::synth::{synthesize_with, MambaSizes, SynthSpec};
use sutra::format::SafetensorsFile;
use sutra::tensor::DType;
use sutra::{Model, ModelParams, Session, Status};

/// Tolerance from the golden README: abs 1e-4 + rel 1e-3 (reference vs float64 <= 3e-6).
const ABS: f32 = 1e-4;
const REL: f32 = 1e-3;

fn golden(case: &str, file: &str) -> PathBuf {
    fixture(&format!("golden/{case}/{file}"))
}

/// Step by step on 1 and 2 threads; one prefill (last row and all rows); half prefill then steps.
fn check_logits(case: &str, model: &str) {
    let (toks, want, v) = expected(&golden(case, "expected.safetensors"), "logits");
    let t = toks.len();
    for threads in [1, 2] {
        let m = load(&golden(case, model), threads);
        assert_eq!(m.info().arch_name, case);
        let mut s = Session::new(&m);
        let mut got = vec![0f32; t * v];
        for (i, &tok) in toks.iter().enumerate() {
            s.eval_stepwise(&[tok], Some(&mut got[i * v..(i + 1) * v])).unwrap();
        }
        assert_close(&got, &want, ABS, REL, &format!("{case}/{model} stepwise, {threads} threads"));
    }
    let m = load(&golden(case, model), 2);
    let mut s = Session::new(&m);
    let mut last = vec![0f32; v];
    s.eval(&toks, Some(&mut last)).unwrap();
    assert_close(&last, &want[(t - 1) * v..], ABS, REL, &format!("{case}/{model} prefill last row"));
    let mut s = Session::new(&m);
    let mut all = vec![0f32; t * v];
    s.eval_all_logits(&toks, &mut all).unwrap();
    assert_close(&all, &want, ABS, REL, &format!("{case}/{model} prefill all rows"));
    let mut s = Session::new(&m);
    s.eval(&toks[..t / 2], None).unwrap();
    let mut row = vec![0f32; v];
    for (i, &tok) in toks.iter().enumerate().skip(t / 2) {
        s.eval_stepwise(&[tok], Some(&mut row)).unwrap();
        assert_close(&row, &want[i * v..(i + 1) * v], ABS, REL, &format!("{case}/{model} half prefill, row {i}"));
    }
}

/// Runs the golden tokens (by prefill, or stepwise) and splits the state into the README's
/// tensors: `parts` lists, in the per-layer order of the state layout, each part's expected
/// tensor name and length per layer.
fn check_state(case: &str, model: &str, parts: &[(&str, usize)], prefill: bool) {
    let m = load(&golden(case, model), 2);
    let (toks, _, _) = expected(&golden(case, "expected.safetensors"), "logits");
    let mut s = Session::new(&m);
    if prefill {
        s.eval(&toks, None).unwrap();
    } else {
        s.eval_stepwise(&toks, None).unwrap();
    }
    let stride: usize = parts.iter().map(|p| p.1).sum();
    assert_eq!(s.state().len(), stride * m.info().n_layer, "{case}: state length");
    let f = SafetensorsFile::open(&golden(case, "expected.safetensors"), false).unwrap();
    let mut off = 0;
    for &(name, len) in parts {
        let got: Vec<f32> = s.state().chunks(stride).flat_map(|l| l[off..off + len].to_vec()).collect();
        off += len;
        if name.is_empty() {
            continue;
        }
        let want = f.get(name).unwrap().to_f32_vec().unwrap();
        assert_close(&got, &want, ABS, REL, &format!("{case} {name} (prefill {prefill})"));
    }
}

#[test]
fn rwkv4_matches_reference() {
    check_logits("rwkv4", "model.safetensors");
    let c = 64;
    // aa, bb, pp are the reference's own log-space representation; we use the same one, so
    // they compare directly (the README's looser options are not needed).
    let parts = [("state_att_x", c), ("state_att_aa", c), ("state_att_bb", c), ("state_att_pp", c), ("state_ffn_x", c)];
    check_state("rwkv4", "model.safetensors", &parts, false);
    check_state("rwkv4", "model.safetensors", &parts, true);
}

/// The transformers RwkvForCausalLM file (with its config.json beside it) gives the
/// reference's logits and the same logits as the official file.
#[test]
fn rwkv4_hf_layout_equals_official() {
    check_logits("rwkv4", "model-hf.safetensors");
    let (toks, _, v) = expected(&golden("rwkv4", "expected.safetensors"), "logits");
    let mut outs = Vec::new();
    for f in ["model.safetensors", "model-hf.safetensors"] {
        let m = load(&golden("rwkv4", f), 1);
        let mut s = Session::new(&m);
        let mut l = vec![0f32; toks.len() * v];
        s.eval_all_logits(&toks, &mut l).unwrap();
        outs.push(l);
    }
    assert_close(&outs[1], &outs[0], 1e-6, 0.0, "HF layout vs official");
}

#[test]
fn rwkv5_matches_reference() {
    check_logits("rwkv5", "model.safetensors");
    let (c, h, n) = (128, 2, 64);
    let parts = [("state_att_x", c), ("state_att_kv", h * n * n), ("state_ffn_x", c)];
    check_state("rwkv5", "model.safetensors", &parts, false);
    check_state("rwkv5", "model.safetensors", &parts, true);
}

#[test]
fn rwkv6_matches_reference() {
    check_logits("rwkv6", "model.safetensors");
    let (c, h, n) = (128, 2, 64);
    let parts = [("state_att_x", c), ("state_att_kv", h * n * n), ("state_ffn_x", c)];
    check_state("rwkv6", "model.safetensors", &parts, false);
    check_state("rwkv6", "model.safetensors", &parts, true);
}

#[test]
fn mamba1_matches_reference() {
    check_logits("mamba1", "model.safetensors");
    let (di, k, s) = (192, 4, 16);
    let parts = [("state_conv", di * k), ("state_ssm", di * s)];
    check_state("mamba1", "model.safetensors", &parts, false);
    check_state("mamba1", "model.safetensors", &parts, true);
}

#[test]
fn mamba2_matches_reference() {
    check_logits("mamba2", "model.safetensors");
    let (cd, k, h, p, s) = (256, 4, 6, 32, 32);
    let parts = [("state_conv", cd * k), ("state_ssm", h * p * s)];
    check_state("mamba2", "model.safetensors", &parts, false);
    check_state("mamba2", "model.safetensors", &parts, true);
}

#[test]
fn model_info_is_read_from_shapes() {
    let cases = [
        ("rwkv4", "model.safetensors", 4, 2, 64, 320, 0, 0),
        ("rwkv4", "model-hf.safetensors", 4, 2, 64, 320, 0, 0),
        ("rwkv5", "model.safetensors", 5, 2, 128, 256, 2, 64),
        ("rwkv6", "model.safetensors", 6, 2, 128, 256, 2, 64),
        ("mamba1", "model.safetensors", 1, 2, 96, 512, 0, 0),
        ("mamba2", "model.safetensors", 2, 2, 96, 384, 6, 32),
    ];
    for (case, file, version, layers, width, vocab, heads, head_size) in cases {
        let m = load(&golden(case, file), 1);
        let i = m.info();
        assert_eq!(
            (i.arch_name, i.version, i.n_layer, i.n_embd, i.n_vocab, i.n_head, i.head_size),
            (case, version, layers, width, vocab, heads, head_size),
            "{case}/{file}"
        );
        assert!(i.bytes_per_token > 0 && i.n_params > 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Synthesized shapes
// ---------------------------------------------------------------------------------------------

/// A synthesized model in its own directory (Mamba-2 with groups writes a config.json there).
fn synth(
    arch: &str,
    layers: usize,
    width: usize,
    head: usize,
    vocab: usize,
    dtype: DType,
    m: MambaSizes,
) -> Arc<Model> {
    let dir = std::env::temp_dir().join(format!(
        "sutra-models-{arch}-{layers}-{width}-{head}-{vocab}-{dtype:?}-{:?}-{:?}-{}",
        m.d_state,
        m.n_groups,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("model.safetensors");
    let spec = SynthSpec {
        arch: arch.into(),
        n_layer: layers,
        n_embd: width,
        n_vocab: vocab,
        head_size: head,
        dtype,
        seed: 5,
    };
    synthesize_with(&spec, &m, &p).unwrap();
    let model = load(&p, 2);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(model.info().arch_name, arch);
    model
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Step by step, one prefill call, and two prefill calls give the same last logits and state;
/// the logits are finite and depend on the context.
fn paths_agree(m: &Arc<Model>, n: usize, what: &str) {
    let v = m.info().n_vocab;
    let toks = tokens(n, v);
    let mut step = vec![0f32; v];
    let mut s = Session::new(m);
    s.eval_stepwise(&toks, Some(&mut step)).unwrap();
    assert!(step.iter().all(|x| x.is_finite()), "{what}: non-finite logits");
    let mut pre = vec![0f32; v];
    let mut s2 = Session::new(m);
    s2.eval(&toks, Some(&mut pre)).unwrap();
    assert_close(&pre, &step, ABS, REL, &format!("{what}: prefill vs step"));
    let mut s3 = Session::new(m);
    s3.eval(&toks[..n / 3], None).unwrap();
    s3.eval(&toks[n / 3..], Some(&mut pre)).unwrap();
    assert_close(&pre, &step, ABS, REL, &format!("{what}: two prefills vs step"));
    assert_close(s3.state(), s.state(), ABS, REL, &format!("{what}: state after prefill vs step"));
    let mut alone = vec![0f32; v];
    Session::new(m).eval(&toks[n - 1..], Some(&mut alone)).unwrap();
    assert!(alone.iter().zip(&step).any(|(a, b)| (a - b).abs() > 1e-3), "{what}: the context has no effect");
}

#[test]
fn rwkv_step_and_prefill_agree_on_odd_shapes() {
    let d = MambaSizes::default;
    // Width 192 (not a power of two), vocab 1000 (not a multiple of 64), 3 layers.
    paths_agree(&synth("rwkv4", 3, 192, 0, 1000, DType::F32, d()), 40, "rwkv4 3x192");
    paths_agree(&synth("rwkv4", 7, 96, 0, 77, DType::BF16, d()), 20, "rwkv4 7x96 bf16");
    // 3 heads of 64; 5 heads of 32 (f16); a prompt longer than one prefill chunk.
    paths_agree(&synth("rwkv5", 3, 192, 64, 1000, DType::F32, d()), 40, "rwkv5 3 heads x 64");
    paths_agree(&synth("rwkv5", 2, 160, 32, 333, DType::F16, d()), 17, "rwkv5 5 heads x 32 f16");
    paths_agree(&synth("rwkv5", 1, 96, 16, 77, DType::F32, d()), 300, "rwkv5 300 tokens");
    paths_agree(&synth("rwkv6", 3, 192, 64, 1000, DType::F32, d()), 40, "rwkv6 3 heads x 64");
    paths_agree(&synth("rwkv6", 2, 160, 32, 333, DType::BF16, d()), 33, "rwkv6 5 heads x 32 bf16");
    paths_agree(&synth("rwkv6", 1, 96, 16, 77, DType::F32, d()), 300, "rwkv6 300 tokens");
    // One head: its `[1, N]` per-head tensors squeeze to `[N]`.
    for arch in ["rwkv5", "rwkv6", "rwkv7"] {
        let m = synth(arch, 2, 64, 64, 100, DType::F32, d());
        assert_eq!((m.info().n_head, m.info().head_size), (1, 64), "{arch}");
        paths_agree(&m, 20, &format!("{arch} one head"));
    }
}

#[test]
fn mamba_step_and_prefill_agree_on_odd_shapes() {
    let d = MambaSizes::default;
    // d_model 80 (d_inner 160, dt_rank 5), vocab 1001.
    paths_agree(&synth("mamba1", 3, 80, 0, 1001, DType::F32, d()), 40, "mamba1 3x80");
    paths_agree(
        &synth("mamba1", 2, 72, 0, 333, DType::BF16, MambaSizes { d_state: Some(8), n_groups: None }),
        17,
        "mamba1 bf16 S=8",
    );
    paths_agree(&synth("mamba1", 1, 48, 0, 77, DType::F32, d()), 300, "mamba1 300 tokens");
    // Mamba-2: 5 heads of 32 (d_model 80); d_state 128 default; 2 groups (config.json needed).
    paths_agree(&synth("mamba2", 3, 80, 32, 1001, DType::F32, d()), 40, "mamba2 5 heads");
    let g2 = || MambaSizes { d_state: Some(24), n_groups: Some(2) };
    let m = synth("mamba2", 2, 96, 16, 333, DType::F32, g2());
    assert_eq!((m.info().n_head, m.info().head_size), (12, 16));
    paths_agree(&m, 33, "mamba2 2 groups");
    paths_agree(&synth("mamba2", 2, 96, 16, 333, DType::F16, g2()), 17, "mamba2 2 groups f16");
    paths_agree(
        &synth("mamba2", 1, 64, 32, 77, DType::F32, MambaSizes { d_state: Some(16), n_groups: None }),
        300,
        "mamba2 300 tokens",
    );
}

/// With 2 groups, reading the file without its config (n_groups defaults to 1) is a different
/// function: the config is what makes the result right, so it must be used.
#[test]
fn mamba2_groups_come_from_the_config() {
    let dir = std::env::temp_dir().join(format!("sutra-models-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("model.safetensors");
    let spec = SynthSpec {
        arch: "mamba2".into(),
        n_layer: 1,
        n_embd: 64,
        n_vocab: 50,
        head_size: 16,
        dtype: DType::F32,
        seed: 1,
    };
    synthesize_with(&spec, &MambaSizes { d_state: Some(8), n_groups: Some(2) }, &p).unwrap();
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let params = ModelParams { n_threads: 1, use_mmap: false, ..Default::default() };
    let with = Arc::new(Model::load_from_memory_with_config(&bytes, Some(&cfg), &params).unwrap());
    let without = Arc::new(Model::load_from_memory(&bytes, &params).unwrap());
    let from_file = load(&p, 1);
    let run = |m: &Arc<Model>| {
        let mut l = vec![0f32; 50];
        Session::new(m).eval(&tokens(9, 50), Some(&mut l)).unwrap();
        l
    };
    assert_eq!(run(&with), run(&from_file), "config.json beside the file is read");
    assert!(run(&with) != run(&without), "n_groups 2 vs the default 1 must differ");
    std::fs::remove_dir_all(&dir).ok();
}

/// Save → load into a fresh session → continue is bit-identical to continuing, and so is a clone.
fn save_load_clone(m: &Arc<Model>, what: &str) {
    let v = m.info().n_vocab;
    let toks = tokens(20, v);
    let mut a = Session::new(m);
    a.eval(&toks[..8], None).unwrap();
    let blob = a.state_to_vec();
    let mut clone = a.clone();
    let mut fresh = Session::new(m);
    fresh.load_state(&blob).unwrap();
    let (mut ga, mut gf, mut gc) = (vec![0f32; v], vec![0f32; v], vec![0f32; v]);
    a.eval(&toks[8..], Some(&mut ga)).unwrap();
    fresh.eval(&toks[8..], Some(&mut gf)).unwrap();
    clone.eval(&toks[8..], Some(&mut gc)).unwrap();
    assert!(gf == ga, "{what}: a restored session must continue bit-identically");
    assert!(gc == ga, "{what}: a clone must continue bit-identically");
    // Reset gives the initial state back (RWKV-4's pp = -1e30 included).
    let mut r = Session::new(m);
    let init = r.state().to_vec();
    r.eval(&toks, None).unwrap();
    r.reset();
    assert_eq!(r.state(), &init[..], "{what}: reset");
}

#[test]
fn save_load_and_clone_continue_identically_for_every_arch() {
    for (case, file) in [
        ("rwkv4", "model.safetensors"),
        ("rwkv4", "model-hf.safetensors"),
        ("rwkv5", "model.safetensors"),
        ("rwkv6", "model.safetensors"),
        ("mamba1", "model.safetensors"),
        ("mamba2", "model.safetensors"),
    ] {
        save_load_clone(&load(&golden(case, file), 2), &format!("{case}/{file}"));
    }
}

#[test]
fn rwkv4_initial_state_has_minus_infinity_pp() {
    let m = load(&golden("rwkv4", "model.safetensors"), 1);
    let s = Session::new(&m);
    let c = 64;
    for layer in s.state().chunks(5 * c) {
        assert!(layer[3 * c..4 * c].iter().all(|&p| p == -1e30));
        assert!(layer[..3 * c].iter().chain(&layer[4 * c..]).all(|&x| x == 0.0));
    }
}

#[test]
fn states_of_other_archs_are_rejected() {
    let a = load(&golden("mamba1", "model.safetensors"), 1);
    let b = load(&golden("mamba2", "model.safetensors"), 1);
    let mut sa = Session::new(&a);
    let e = sa.load_state(&Session::new(&b).state_to_vec()).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    let e = sa.eval(&[1, 512], None).unwrap_err();
    assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    assert!(e.to_string().contains("512"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn tmp_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("sutra-models-err-{name}-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies a golden model without `drop` into a fresh directory (with `config`, if any).
fn without(case: &str, file: &str, drop: &str, config: Option<&str>) -> PathBuf {
    let f = SafetensorsFile::open(&golden(case, file), false).unwrap();
    let ts: Vec<_> = f
        .tensors
        .values()
        .filter(|t| t.name != drop)
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()))
        .collect();
    assert!(ts.len() + 1 == f.tensors.len() || drop.is_empty(), "{drop} is not in {case}/{file}");
    let dir = tmp_dir(&format!("{case}-{}", drop.replace('.', "_")));
    let p = dir.join("model.safetensors");
    sutra::format::safetensors::write(&p, &ts, None).unwrap();
    if let Some(c) = config {
        std::fs::write(dir.join("config.json"), c).unwrap();
    }
    p
}

fn load_err(p: &Path) -> sutra::Error {
    match Model::load(p, &ModelParams::default()) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_layer_tensor_is_named_for_every_arch() {
    for (case, file, name) in [
        ("rwkv4", "model.safetensors", "blocks.1.att.time_first"),
        ("rwkv4", "model-hf.safetensors", "rwkv.blocks.1.feed_forward.value.weight"),
        ("rwkv5", "model.safetensors", "blocks.1.att.gate.weight"),
        ("rwkv6", "model.safetensors", "blocks.1.att.time_maa_w2"),
        ("mamba1", "model.safetensors", "backbone.layers.1.mixer.dt_proj.weight"),
        ("mamba2", "model.safetensors", "backbone.layers.1.mixer.dt_bias"),
    ] {
        let e = load_err(&without(case, file, name, None));
        assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT, "{case}: {e}");
        assert!(e.to_string().contains(name), "{case}: {e}");
    }
}

#[test]
fn malformed_config_is_a_format_error_naming_it() {
    let p = without("mamba2", "model.safetensors", "", Some("{\"n_groups\": 1,"));
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    assert!(e.to_string().contains("config.json"), "{e}");
}

#[test]
fn config_disagreeing_with_shapes_names_both() {
    let cfg = std::fs::read_to_string(golden("mamba2", "config.json")).unwrap();
    // 4 groups do not divide 6 heads.
    let p = without("mamba2", "model.safetensors", "", Some(&cfg.replace("\"n_groups\": 1", "\"n_groups\": 4")));
    let e = load_err(&p).to_string();
    assert!(e.contains("config.json") && e.contains("n_groups") && e.contains("model.safetensors"), "{e}");
    // A state size that is not the one in the shapes.
    let p = without("mamba2", "model.safetensors", "", Some(&cfg.replace("\"state_size\": 32", "\"state_size\": 16")));
    let e = load_err(&p);
    assert_eq!(e.status(), Status::SUTRA_ERR_FORMAT);
    let e = e.to_string();
    assert!(e.contains("config.json") && e.contains("state_size") && e.contains("conv1d.weight"), "{e}");
    let cfg1 = std::fs::read_to_string(golden("mamba1", "config.json")).unwrap();
    let p =
        without("mamba1", "model.safetensors", "", Some(&cfg1.replace("\"hidden_size\": 96", "\"hidden_size\": 97")));
    let e = load_err(&p).to_string();
    assert!(e.contains("hidden_size") && e.contains("backbone.embeddings.weight"), "{e}");
}

/// Real Mamba-2 configs carry `time_step_limit` as `[0.0, {"__float__": "Infinity"}]`
/// (transformers 5) or with a bare `Infinity` (transformers 4, not valid JSON): both load
/// and give the reference logits.
#[test]
fn mamba2_config_with_infinity_time_step_limit_loads() {
    let cfg = std::fs::read_to_string(golden("mamba2", "config.json")).unwrap();
    let (toks, want, v) = expected(&golden("mamba2", "expected.safetensors"), "logits");
    for lim in ["[0.0, {\"__float__\": \"Infinity\"}]", "[0.0, Infinity]"] {
        let text = cfg.replacen('{', &format!("{{\n  \"time_step_limit\": {lim},"), 1);
        let p = without("mamba2", "model.safetensors", "", Some(&text));
        let m = load(&p, 1);
        let mut got = vec![0f32; toks.len() * v];
        Session::new(&m).eval_all_logits(&toks, &mut got).unwrap();
        assert_close(&got, &want, ABS, REL, lim);
    }
}

/// An 8-layer RWKV-4 rewritten into the transformers layout gives the official file's logits:
/// exactly without a config, and with `rescale_every: 4` (two halvings of the residual
/// stream, blocks 4-7 scaled by 1/2) up to the LayerNorm epsilon's effect, within the
/// golden tolerance: the rescaling only moves values through LayerNorms.
#[test]
fn rwkv4_hf_rescale_every_keeps_the_function() {
    let dir = tmp_dir("rwkv4-rescale");
    let official = dir.join("official.safetensors");
    let spec = SynthSpec {
        arch: "rwkv4".into(),
        n_layer: 8,
        n_embd: 96,
        n_vocab: 123,
        head_size: 0,
        dtype: DType::F32,
        seed: 3,
    };
    synthesize_with(&spec, &MambaSizes::default(), &official).unwrap();
    let f = SafetensorsFile::open(&official, false).unwrap();
    let hf_name = |k: &str| {
        if k == "head.weight" {
            return k.to_string();
        }
        let k = k
            .replace("emb.", "embeddings.")
            .replace(".ln0", ".pre_ln")
            .replace(".att.", ".attention.")
            .replace(".ffn.", ".feed_forward.")
            .replace("time_mix_k", "time_mix_key")
            .replace("time_mix_v", "time_mix_value")
            .replace("time_mix_r", "time_mix_receptance");
        format!("rwkv.{k}")
    };
    let ts: Vec<_> =
        f.tensors.values().map(|t| (hf_name(&t.name), t.dtype, t.shape.clone(), t.bytes().to_vec())).collect();
    let hf_dir = tmp_dir("rwkv4-rescale-hf");
    let hf = hf_dir.join("model.safetensors");
    sutra::format::safetensors::write(&hf, &ts, None).unwrap();
    std::fs::write(
        hf_dir.join("config.json"),
        r#"{"model_type": "rwkv", "hidden_size": 96, "num_hidden_layers": 8, "rescale_every": 4}"#,
    )
    .unwrap();
    let toks = tokens(30, 123);
    let run = |p: &Path| {
        let m = load(p, 2);
        let mut l = vec![0f32; toks.len() * 123];
        Session::new(&m).eval_all_logits(&toks, &mut l).unwrap();
        l
    };
    let (a, b) = (run(&official), run(&hf));
    assert_close(&b, &a, ABS, REL, "HF layout with rescale_every 4 vs official");
    std::fs::remove_file(hf_dir.join("config.json")).unwrap();
    assert_close(&run(&hf), &a, 1e-6, 0.0, "HF layout without config vs official");
    // A config that disagrees with the shapes names both.
    std::fs::write(hf_dir.join("config.json"), r#"{"hidden_size": 95}"#).unwrap();
    let e = load_err(&hf).to_string();
    assert!(e.contains("hidden_size") && e.contains("config.json") && e.contains("rwkv.embeddings.weight"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&hf_dir).ok();
}
