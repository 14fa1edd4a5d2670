//! Sessions: stepping, prefill and save → load → continue all give the same logits; clones
//! continue exactly like their original; shapes the golden set does not cover (odd head
//! counts, widths that are not powers of two, vocabularies that are not multiples of 64).

mod common;
use common::*;
use std::sync::Arc;
use sutra::format::synth::{synthesize, SynthSpec};
use sutra::tensor::DType;
use sutra::{Model, Session};

fn synth(layers: usize, width: usize, head: usize, vocab: usize, dtype: DType) -> Arc<Model> {
    let p = std::env::temp_dir()
        .join(format!("sutra-synth-{layers}-{width}-{head}-{vocab}-{dtype:?}-{}.st", std::process::id()));
    let spec = SynthSpec {
        arch: "rwkv7".into(),
        n_layer: layers,
        n_embd: width,
        n_vocab: vocab,
        head_size: head,
        dtype,
        seed: 9,
    };
    synthesize(&spec, &p).unwrap();
    let m = load(&p, 2);
    std::fs::remove_file(&p).ok();
    m
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Step-by-step, one prefill call, and chunks of prefill give the same last logits.
fn paths_agree(m: &Arc<Model>, n: usize) {
    let v = m.info().n_vocab;
    let toks = tokens(n, v);
    let mut step = vec![0f32; v];
    let mut s = Session::new(m);
    s.eval_stepwise(&toks, Some(&mut step)).unwrap();
    let mut pre = vec![0f32; v];
    let mut s2 = Session::new(m);
    s2.eval(&toks, Some(&mut pre)).unwrap();
    assert_close(&pre, &step, 1e-4, 1e-3, "prefill vs step");
    let mut s3 = Session::new(m);
    s3.eval(&toks[..n / 3], None).unwrap();
    s3.eval(&toks[n / 3..], Some(&mut pre)).unwrap();
    assert_close(&pre, &step, 1e-4, 1e-3, "two prefills vs step");
    assert_close(s3.state(), s.state(), 1e-4, 1e-3, "state after prefill vs step");
}

#[test]
fn step_and_prefill_agree_on_odd_shapes() {
    // 3 heads of 64 (width 192, not a power of two), vocab 1000 (not a multiple of 64).
    paths_agree(&synth(3, 192, 64, 1000, DType::F32), 40);
    // 5 heads of 32, width 160, vocab 333, bf16 and f16 storage.
    paths_agree(&synth(2, 160, 32, 333, DType::BF16), 33);
    paths_agree(&synth(2, 160, 32, 333, DType::F16), 17);
    // A prompt longer than one prefill chunk (256 tokens).
    paths_agree(&synth(1, 96, 16, 77, DType::F32), 300);
}

#[test]
fn save_load_and_clone_continue_identically() {
    let m = load(&repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors"), 2);
    let v = m.info().n_vocab;
    let toks = tokens(24, v);
    let mut whole = vec![0f32; v];
    let mut s = Session::new(&m);
    s.eval(&toks, Some(&mut whole)).unwrap();

    let mut a = Session::new(&m);
    a.eval(&toks[..10], None).unwrap();
    let blob = a.state_to_vec();
    let clone = a.clone();
    // Save -> load into a fresh session -> continue.
    let mut fresh = Session::new(&m);
    fresh.load_state(&blob).unwrap();
    let mut got = vec![0f32; v];
    fresh.eval(&toks[10..], Some(&mut got)).unwrap();
    // The clone continues exactly like the original.
    let mut c = clone;
    let mut gc = vec![0f32; v];
    c.eval(&toks[10..], Some(&mut gc)).unwrap();
    let mut ga = vec![0f32; v];
    a.eval(&toks[10..], Some(&mut ga)).unwrap();
    assert!(got == ga, "restored session must continue bit-identically to the original");
    assert!(gc == ga, "a clone must continue bit-identically to its original");
    // Splitting the prompt only changes float rounding (the products group tokens differently).
    assert_close(&ga, &whole, 1e-4, 1e-3, "10 + 14 tokens vs 24 at once");
    // Reset goes back to the empty context.
    a.reset();
    let mut r = vec![0f32; v];
    a.eval(&toks, Some(&mut r)).unwrap();
    assert!(r == whole, "after reset the same prompt gives the same logits");
}

#[test]
fn a_session_outlives_its_model_handle() {
    let m = load(&fixture("golden/rwkv7/model.safetensors"), 1);
    let mut s = Session::new(&m);
    drop(m);
    let mut l = vec![0f32; 256];
    s.eval(&[1, 2, 3], Some(&mut l)).unwrap();
    assert!(l.iter().all(|x| x.is_finite()));
}

#[test]
fn threads_do_not_change_results() {
    let p = fixture("golden/rwkv7/model.safetensors");
    let toks = tokens(16, 256);
    let mut outs = Vec::new();
    for t in [1, 2, 3] {
        let m = load(&p, t);
        let mut s = Session::new(&m);
        let mut l = vec![0f32; 256];
        s.eval(&toks, Some(&mut l)).unwrap();
        outs.push(l);
    }
    assert_close(&outs[1], &outs[0], 1e-5, 0.0, "2 vs 1 threads");
    assert_close(&outs[2], &outs[0], 1e-5, 0.0, "3 vs 1 threads");
}

/// Decode steps on a 2-thread model run on its pool or on one thread, whichever the model's
/// governor timed faster (it probes both within the first steps and then every 64): either
/// way every step's logits are the very bits of a 1-thread model's.
#[test]
fn decode_steps_are_the_same_bits_whichever_side_runs_them() {
    let p = repo("models/rwkv7-shakespeare-6x256/model.safetensors");
    let (m1, m2) = (load(&p, 1), load(&p, 2));
    let v = m1.info().n_vocab;
    let (mut s1, mut s2) = (Session::new(&m1), Session::new(&m2));
    let (mut l1, mut l2) = (vec![0f32; v], vec![0f32; v]);
    for (i, tok) in tokens(100, v).into_iter().enumerate() {
        s1.eval(&[tok], Some(&mut l1)).unwrap();
        s2.eval(&[tok], Some(&mut l2)).unwrap();
        assert!(l1.iter().zip(&l2).all(|(a, b)| a.to_bits() == b.to_bits()), "step {i}: logits differ");
    }
}

#[test]
fn model_info_is_read_from_shapes() {
    let m = load(&repo("models/rwkv7-shakespeare-6x256/model.safetensors"), 1);
    let i = m.info();
    assert_eq!((i.arch_name, i.version, i.n_layer, i.n_embd, i.n_vocab), ("rwkv7", 7, 6, 256, 2048));
    assert_eq!((i.n_head, i.head_size), (4, 64));
    assert_eq!(i.n_params, 6_288_896, "the model README's parameter count");
    assert_eq!(i.weight_dtype, DType::F32);
}
