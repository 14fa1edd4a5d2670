//! LoRA training against `tests/fixtures/golden/lora/` (PyTorch autograd in float64): the
//! loss and the gradient of every adapter tensor through the whole row (full BPTT).

mod common;
use common::*;
use sutra::format::SafetensorsFile;
use sutra::models::TrainRow;
use sutra::train::lora::LoraSet;
use sutra::Adapter;

#[test]
fn loss_and_gradients_match_autograd() {
    for case in ["rwkv7", "mamba1"] {
        loss_and_gradients(case);
    }
}

fn loss_and_gradients(case: &str) {
    let m = load(&fixture(&format!("golden/{case}/model.safetensors")), 2);
    let a = Adapter::load(&m, &fixture(&format!("golden/lora/{case}"))).unwrap();
    let set = LoraSet::from_adapter(&a).unwrap();
    let f = SafetensorsFile::open(&fixture(&format!("golden/lora/{case}/expected.safetensors")), false).unwrap();
    let ints = |k: &str| -> Vec<i64> {
        f.get(k).unwrap().bytes().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let tokens: Vec<u32> = ints("tokens").iter().map(|&t| t as u32).collect();
    let targets: Vec<i32> = ints("targets").iter().map(|&t| t as i32).collect();
    let want_loss = f.get("loss").unwrap().to_f32_vec().unwrap()[0];
    let mut grads = set.zero_grads();
    let n = targets.len() as f32;
    let mut state = vec![0f32; m.arch().state_len()];
    m.arch().init_state(&mut state);
    let row = TrainRow { tokens: &tokens, targets: &targets, scale: 1.0 / n, chunk: 0, state: &state, d_state: None };
    let (sum, count) = m.arch().train_row(&set, row, &mut grads).unwrap();
    assert_eq!(count, targets.len());
    let loss = (sum / count as f64) as f32;
    assert!((loss - want_loss).abs() < 5e-5, "{case}: loss {loss} vs {want_loss}");
    for (i, p) in set.params.iter().enumerate() {
        for (half, got) in [("lora_A", &grads.da[i]), ("lora_B", &grads.db[i])] {
            let key = format!("grad.base_model.model.{}.{half}.weight", p.module);
            let want = f.get(&key).unwrap().to_f32_vec().unwrap();
            assert_close(got, &want, 1e-5, 1e-3, &format!("{case} {key}"));
        }
    }
}

fn expected(case: &str) -> SafetensorsFile {
    SafetensorsFile::open(&fixture(&format!("golden/lora/{case}/expected.safetensors")), false).unwrap()
}

/// AdamW alone: the adapter plus the file's gradients, one step, equals `after_step` (abs
/// 1e-6, the README's optimizer check), for both cases.
#[test]
fn adamw_step_matches_torch() {
    use sutra::train::adamw::{step, AdamWParams, Moments};
    let h = AdamWParams { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    for case in ["rwkv7", "mamba1"] {
        let f = expected(case);
        let a = SafetensorsFile::open(&fixture(&format!("golden/lora/{case}/adapter.safetensors")), false).unwrap();
        let mut n = 0;
        for (name, t) in &a.tensors {
            let mut p = t.to_f32_vec().unwrap();
            let g = f.get(&format!("grad.{name}")).unwrap().to_f32_vec().unwrap();
            step(&h, 1, &mut p, &g, 1.0, &mut Moments::default());
            let want = f.get(&format!("after_step.{name}")).unwrap().to_f32_vec().unwrap();
            assert_close(&p, &want, 1e-6, 0.0, &format!("{case} {name}"));
            n += 1;
        }
        assert!(n > 0);
    }
}

/// The trainer end to end on the golden rwkv7 case: loss and gradients by name, one AdamW
/// step from its own gradients (the README's propagated tolerance), the loss after the step,
/// and the saved adapter reloading to the same logits as the trainer's snapshot.
#[test]
fn trainer_step_matches_autograd_and_saves() {
    use std::sync::Arc;
    use sutra::train::{TrainParams, Trainer};
    let m = load(&fixture("golden/rwkv7/model.safetensors"), 2);
    let init = Adapter::load(&m, &fixture("golden/lora/rwkv7")).unwrap();
    let f = expected("rwkv7");
    let ints = |k: &str| -> Vec<i64> {
        f.get(k).unwrap().bytes().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let tokens: Vec<u32> = ints("tokens").iter().map(|&t| t as u32).collect();
    let targets: Vec<i32> = ints("targets").iter().map(|&t| t as i32).collect();
    let mut p = TrainParams::default();
    p.optim.lr = 1e-2;
    let mut tr = Trainer::new(&m, Some(&init), &p).unwrap();
    let loss = tr.compute(&tokens, &targets, 1, tokens.len()).unwrap();
    assert!((loss - f.get("loss").unwrap().to_f32_vec().unwrap()[0]).abs() < 5e-5, "loss {loss}");
    let names: Vec<String> = f.tensors.keys().filter_map(|k| k.strip_prefix("grad.").map(String::from)).collect();
    assert_eq!(names.len(), 24);
    let grads: Vec<(String, Vec<f32>)> = names.iter().map(|n| (n.clone(), tr.gradient(n).unwrap().to_vec())).collect();
    for (n, g) in &grads {
        assert_close(g, &f.get(&format!("grad.{n}")).unwrap().to_f32_vec().unwrap(), 1e-5, 1e-3, n);
    }
    tr.apply().unwrap();
    let snap = tr.adapter().unwrap();
    for (n, _) in &grads {
        let gfile = f.get(&format!("grad.{n}")).unwrap().to_f32_vec().unwrap();
        let want = f.get(&format!("after_step.{n}")).unwrap().to_f32_vec().unwrap();
        let module = n.strip_prefix("base_model.model.").unwrap();
        let (module, half) = module.rsplit_once('.').unwrap().0.rsplit_once('.').unwrap();
        let pair = &snap.pairs()[&format!("{module}.weight")];
        let got = if half == "lora_A" { pair.a.tensor.as_f32().unwrap() } else { pair.b.tensor.as_f32().unwrap() };
        for i in 0..want.len() {
            // The README's end-to-end rule: the gradient tolerance carried through g/(|g|+eps).
            let (g, eps, lr) = (gfile[i].abs(), 1e-8f32, 1e-2f32);
            let tol_g = 1e-5 + 1e-3 * g;
            let tol = 1e-6 + lr * (2f32).min(eps * tol_g / ((g + eps) * (g + eps)));
            assert!((got[i] - want[i]).abs() <= tol, "{n}[{i}]: {} vs {} (tol {tol})", got[i], want[i]);
        }
    }
    let after = tr.compute(&tokens, &targets, 1, tokens.len()).unwrap();
    let want_after = f.get("loss_after_step").unwrap().to_f32_vec().unwrap()[0];
    assert!((after - want_after).abs() < 1e-4, "loss after the step {after} vs {want_after}");
    // Save, reload, same logits as the snapshot.
    let dir = std::env::temp_dir().join(format!("sutra-train-save-{}", std::process::id()));
    tr.save(&dir).unwrap();
    let reloaded = Arc::new(Adapter::load(&m, &dir).unwrap());
    let snap = Arc::new(snap);
    let v = m.info().n_vocab;
    let (mut x, mut y) = (vec![0f32; v], vec![0f32; v]);
    let mut s = sutra::Session::new(&m);
    s.set_adapter(&snap, 1.0).unwrap();
    s.eval(&tokens, Some(&mut x)).unwrap();
    let mut s = sutra::Session::new(&m);
    s.set_adapter(&reloaded, 1.0).unwrap();
    s.eval(&tokens, Some(&mut y)).unwrap();
    assert_eq!(x, y, "a saved adapter reloads to other logits");
    std::fs::remove_dir_all(&dir).ok();
}

/// A bad batch: tokens, targets, n_rows, n_tokens, and what the message must name.
type Case<'a> = (&'a [u32], &'a [i32], usize, usize, &'a str);

/// Bad batches and unsupported architectures are refused, naming the argument.
#[test]
fn trainer_refuses_bad_input() {
    use sutra::train::{TrainParams, Trainer};
    use sutra::Status;
    let rwkv4 = load(&fixture("golden/rwkv4/model.safetensors"), 1);
    let e = Trainer::new(&rwkv4, None, &TrainParams::default()).err().expect("rwkv4 accepted");
    assert_eq!(e.status(), Status::SUTRA_ERR_UNSUPPORTED);
    assert!(e.to_string().contains("rwkv4") && e.to_string().contains("rwkv5, rwkv6, rwkv7, mamba1, mamba2"), "{e}");
    let m = load(&fixture("golden/rwkv7/model.safetensors"), 1);
    let p = TrainParams { targets: Some(vec!["att.nothing".into()]), ..Default::default() };
    assert_eq!(Trainer::new(&m, None, &p).err().expect("no target").status(), Status::SUTRA_ERR_INVALID_ARGUMENT);
    let mut tr = Trainer::new(&m, None, &TrainParams::default()).unwrap();
    let v = m.info().n_vocab as u32;
    let cases: [Case; 5] = [
        (&[], &[], 0, 0, "n_rows 0"),
        (&[1, 2], &[1, 2, 3], 1, 2, "targets (3)"),
        (&[1, v], &[1, 2], 1, 2, "tokens[1]"),
        (&[1, 2], &[1, v as i32], 1, 2, "targets[1]"),
        (&[1, 2], &[-1, -1], 1, 2, "every target is negative"),
    ];
    for (toks, tg, r, n, what) in cases {
        let e = tr.compute(toks, tg, r, n).expect_err(what);
        assert_eq!(e.status(), Status::SUTRA_ERR_INVALID_ARGUMENT, "{what}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
    assert!(tr.apply().is_err(), "apply without a gradient");
    assert_eq!(tr.steps(), 0);
}

/// The reference fine-tune (`golden/lora/shakespeare-finetune.json`): LoRA r 8 on every
/// att/ffn matrix of the trained Shakespeare RWKV-7, from its `adapter_init`, 100 AdamW
/// steps (lr 1e-3) of 4 rows × 128 tokens of The Tempest's first 80%. The training loss at
/// every step within 1e-3 of the float64 reference, and the held-out loss on the last 20%
/// after the 100 steps within 2e-3 of 3.321649 (the issue's acceptance).
#[test]
fn shakespeare_finetune_reproduces_the_reference_trajectory() {
    let (held, secs, worst) = shakespeare_protocol(&repo("models/rwkv7-shakespeare-6x256/model.safetensors"), true);
    eprintln!("f32: 100 steps in {secs:.1} s; worst train-loss difference {worst:.2e}; held-out {held:.6}");
    assert!((held - 3.321649).abs() < 2e-3, "held-out loss after 100 steps: {held}");
}

/// QLoRA: the same protocol on a q8 and on a q4 (AWQ, g32) file of the same model; the
/// held-out loss must fall by at least 90% of the f32 gain (3.791310 − 3.321649).
#[test]
#[ignore = "slow (two 100-step fine-tunes, several minutes): run by .ci/run after the default suite"]
fn qlora_shakespeare_finetune_keeps_most_of_the_gain() {
    use sutra::quant::{quantize_model, Method, QuantType, QuantizeParams};
    let src = repo("models/rwkv7-shakespeare-6x256/model.safetensors");
    let dir = std::env::temp_dir().join(format!("sutra-qlora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo("models/rwkv7-shakespeare-6x256/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let gain = 3.791310 - 3.321649;
    for (qt, method, name) in [(QuantType::Q8, Method::Rtn, "q8"), (QuantType::Q4, Method::Awq, "q4-awq-g32")] {
        let out = dir.join(format!("{name}.safetensors"));
        let p = QuantizeParams {
            qtype: qt,
            group: 32,
            method,
            calib_file: Some(fixture("shakespeare/train_head64k.txt")),
            tokenizer: Some(dir.join("tokenizer.json")),
            ..Default::default()
        };
        quantize_model(&src, &out, &p, &mut |_| true).unwrap();
        let base = {
            let m = load(&out, 2);
            let tok = sutra::Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
            let valid = std::fs::read_to_string(fixture("shakespeare/valid.txt")).unwrap();
            let ids = tok.encode(&valid[..valid.find("\n\nHAMLET\n").unwrap() + 1], false).unwrap();
            sutra::score::score(&m, &[], None, &ids[ids.len() * 8 / 10..], 1024, &mut |_, _| true).unwrap().mean_nll
        };
        let (held, secs, _) = shakespeare_protocol(&out, false);
        eprintln!("{name}: base held-out {base:.6}, after 100 steps {held:.6} ({secs:.1} s)");
        assert!(base - held >= 0.9 * gain, "{name}: the held-out loss fell by {} (f32: {gain})", base - held);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the reference protocol on `model` from the reference's `adapter_init`; with `exact`,
/// checks every step's training loss against the reference (1e-3). Returns the held-out loss
/// after the 100 steps, the seconds the steps took, and the worst training-loss difference.
fn shakespeare_protocol(model: &std::path::Path, exact: bool) -> (f64, f64, f64) {
    use std::sync::Arc;
    use sutra::train::{TrainParams, Trainer};
    let m = load(model, 2);
    let tok = sutra::Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
    let valid = std::fs::read_to_string(fixture("shakespeare/valid.txt")).unwrap();
    let ids = tok.encode(&valid[..valid.find("\n\nHAMLET\n").unwrap() + 1], false).unwrap();
    let n_train = ids.len() * 8 / 10;
    let (train, held) = ids.split_at(n_train);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("golden/lora/shakespeare-finetune.json")).unwrap())
            .unwrap();
    let want: Vec<f64> =
        reference["results"]["train_loss_all_steps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(want.len(), 100);
    let dir = std::env::temp_dir().join(format!(
        "sutra-train-shakespeare-{}-{}",
        std::process::id(),
        model.file_stem().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("golden/lora/shakespeare-finetune");
    std::fs::copy(src.join("adapter_init.safetensors"), dir.join("adapter_model.safetensors")).unwrap();
    std::fs::copy(src.join("adapter_config.json"), dir.join("adapter_config.json")).unwrap();
    let init = Adapter::load(&m, &dir).unwrap();
    let mut tr = Trainer::new(&m, Some(&init), &TrainParams::default()).unwrap();
    let (ctx, batch) = (128usize, 4usize);
    let n_windows = (n_train - 1) / ctx;
    let t0 = std::time::Instant::now();
    let mut worst = 0f64;
    for (s, &w) in want.iter().enumerate() {
        let (mut tokens, mut targets) = (Vec::new(), Vec::new());
        for b in 0..batch {
            let j = (batch * s + b) % n_windows;
            let win = &train[ctx * j..ctx * j + ctx + 1];
            tokens.extend_from_slice(&win[..ctx]);
            targets.extend(win[1..].iter().map(|&t| t as i32));
        }
        let loss = tr.step(&tokens, &targets, batch, ctx).unwrap() as f64;
        worst = worst.max((loss - w).abs());
        assert!(!exact || (loss - w).abs() < 1e-3, "step {}: train loss {loss} vs {w}", s + 1);
    }
    let secs = t0.elapsed().as_secs_f64();
    let tuned = Arc::new(tr.adapter().unwrap());
    let sc = sutra::score::score(&m, &[(tuned, 1.0)], None, held, 1024, &mut |_, _| true).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (sc.mean_nll, secs, worst)
}

/// Through the C API (contract part 2): the golden rwkv7 loss and every gradient by name,
/// then a step; an RWKV-4 model (no backward pass) is SUTRA_ERR_UNSUPPORTED, its message
/// naming the architectures that have one.
#[test]
fn c_api_trainer_matches_autograd() {
    use std::ffi::CString;
    use sutra::ffi::*;
    use sutra::Status;
    let cs = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    let f = expected("rwkv7");
    let ints = |k: &str| -> Vec<i32> {
        f.get(k).unwrap().bytes().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as i32).collect()
    };
    let (tokens, targets) = (ints("tokens"), ints("targets"));
    let (mut m, mut a, mut tr, mut mm) =
        (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: valid arguments; every handle is freed below.
    unsafe {
        let mp = cs(&fixture("golden/rwkv7/model.safetensors"));
        assert_eq!(sutra_model_load(mp.as_ptr(), std::ptr::null(), &mut m), Status::SUTRA_OK);
        assert_eq!(sutra_adapter_load(m, cs(&fixture("golden/lora/rwkv7")).as_ptr(), &mut a), Status::SUTRA_OK);
        let mut p = sutra_train_default_params();
        p.learning_rate = 1e-2;
        assert_eq!(sutra_trainer_new(m, a, &p, &mut tr), Status::SUTRA_OK);
        let mut loss = 0f32;
        let st = sutra_trainer_compute(tr, tokens.as_ptr(), targets.as_ptr(), 1, tokens.len(), &mut loss);
        assert_eq!(st, Status::SUTRA_OK);
        assert!((loss - f.get("loss").unwrap().to_f32_vec().unwrap()[0]).abs() < 5e-5);
        for k in f.tensors.keys().filter_map(|k| k.strip_prefix("grad.")) {
            let want = f.get(&format!("grad.{k}")).unwrap().to_f32_vec().unwrap();
            let mut got = vec![0f32; want.len()];
            let name = CString::new(k).unwrap();
            assert_eq!(sutra_trainer_get_gradient(tr, name.as_ptr(), got.as_mut_ptr(), got.len()), Status::SUTRA_OK);
            assert_close(&got, &want, 1e-5, 1e-3, k);
            assert_eq!(
                sutra_trainer_get_gradient(tr, name.as_ptr(), got.as_mut_ptr(), got.len() + 1),
                Status::SUTRA_ERR_INVALID_ARGUMENT
            );
        }
        assert_eq!(sutra_trainer_apply(tr), Status::SUTRA_OK);
        let mut snap = std::ptr::null_mut();
        assert_eq!(sutra_trainer_get_adapter(tr, &mut snap), Status::SUTRA_OK);
        sutra_adapter_free(snap);
        let bad = [-1i32, 2];
        let st = sutra_trainer_step(tr, bad.as_ptr(), targets.as_ptr(), 1, 2, &mut loss);
        assert_eq!(st, Status::SUTRA_ERR_INVALID_ARGUMENT);
        sutra_trainer_free(tr);
        sutra_adapter_free(a);
        sutra_model_free(m);
        let mp = cs(&fixture("golden/rwkv4/model.safetensors"));
        assert_eq!(sutra_model_load(mp.as_ptr(), std::ptr::null(), &mut mm), Status::SUTRA_OK);
        let mut t2 = std::ptr::null_mut();
        assert_eq!(sutra_trainer_new(mm, std::ptr::null(), std::ptr::null(), &mut t2), Status::SUTRA_ERR_UNSUPPORTED);
        assert!(t2.is_null());
        let msg = std::ffi::CStr::from_ptr(sutra_last_error()).to_str().unwrap();
        assert!(msg.contains("rwkv5, rwkv6, rwkv7, mamba1, mamba2"), "{msg}");
        sutra_model_free(mm);
    }
}

/// State tuning through the C API on the golden rwkv5, rwkv6, rwkv7, mamba1 and mamba2 models: with
/// `train_state` 2 (the state only, no adapter) and BPTT chunks of 3, 30 AdamW steps on one
/// batch lower its loss; the trained state read with `sutra_trainer_get_state` loads into a
/// session (`sutra_session_state_load`) whose loss on the batch is the trainer's; the blob
/// set back into a new trainer gives the same loss; a foreign or short blob is refused and
/// changes nothing; `train_state` 3 is an invalid argument.
#[test]
fn c_api_state_tuning_learns_a_state_that_sessions_load() {
    use std::ffi::CString;
    use sutra::ffi::*;
    use sutra::Status;
    for case in ["rwkv5", "rwkv6", "rwkv7", "mamba1", "mamba2"] {
        let cs = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: valid arguments; every handle is freed below.
        unsafe {
            let mut m = std::ptr::null_mut();
            let mp = cs(&fixture(&format!("golden/{case}/model.safetensors")));
            assert_eq!(sutra_model_load(mp.as_ptr(), std::ptr::null(), &mut m), Status::SUTRA_OK);
            let v = sutra_model_n_vocab(m) as usize;
            let tokens: Vec<i32> = (0..8).map(|i| ((i * 7 + 1) % v) as i32).collect();
            let targets: Vec<i32> = (0..8).map(|i| ((i * 5 + 2) % v) as i32).collect();
            let mut p = sutra_train_default_params();
            p.train_state = 3;
            let mut tr = std::ptr::null_mut();
            assert_eq!(sutra_trainer_new(m, std::ptr::null(), &p, &mut tr), Status::SUTRA_ERR_INVALID_ARGUMENT);
            assert!(std::ffi::CStr::from_ptr(sutra_last_error()).to_str().unwrap().contains("train_state 3"));
            p.train_state = 2;
            p.bptt_chunk = 3;
            p.state_learning_rate = 0.05;
            assert_eq!(sutra_trainer_new(m, std::ptr::null(), &p, &mut tr), Status::SUTRA_OK);
            let step = |tr: *mut sutra_trainer| {
                let mut loss = 0f32;
                let st = sutra_trainer_step(tr, tokens.as_ptr(), targets.as_ptr(), 1, 8, &mut loss);
                assert_eq!(st, Status::SUTRA_OK);
                loss
            };
            let first = step(tr);
            let mut last = first;
            for _ in 0..29 {
                last = step(tr);
            }
            let mut now = 0f32;
            assert_eq!(sutra_trainer_compute(tr, tokens.as_ptr(), targets.as_ptr(), 1, 8, &mut now), Status::SUTRA_OK);
            eprintln!("{case}: state tuning, loss {first} -> {now} in 30 steps");
            assert!(now < first - 0.05 && now <= last + 1e-3, "{case}: loss {first} -> {last} -> {now}");
            let mut size = 0usize;
            assert_eq!(sutra_trainer_state_size(tr, &mut size), Status::SUTRA_OK);
            let mut blob = vec![0u8; size];
            assert_eq!(sutra_trainer_get_state(tr, blob.as_mut_ptr(), size - 1), Status::SUTRA_ERR_BUFFER_TOO_SMALL);
            assert_eq!(sutra_trainer_get_state(tr, blob.as_mut_ptr(), size), Status::SUTRA_OK);
            // A session at the tuned state scores the batch as the trainer did.
            let mut s = std::ptr::null_mut();
            assert_eq!(sutra_session_new(m, &mut s), Status::SUTRA_OK);
            assert_eq!(sutra_session_state_load(s, blob.as_ptr(), size), Status::SUTRA_OK);
            let mut nll = 0f64;
            let mut logits = vec![0f32; v];
            let mut lp = vec![0f64; v];
            for (tok, tg) in tokens.iter().zip(&targets) {
                assert_eq!(sutra_session_eval(s, tok, 1, logits.as_mut_ptr()), Status::SUTRA_OK);
                sutra::score::log_softmax(&logits, &mut lp);
                nll -= lp[*tg as usize];
            }
            let got = (nll / 8.0) as f32;
            assert!((got - now).abs() < 1e-4, "{case}: session at the tuned state {got}, trainer {now}");
            // The blob starts a new trainer at the same state; bad blobs change nothing.
            let mut t2 = std::ptr::null_mut();
            p.train_state = 0;
            assert_eq!(sutra_trainer_new(m, std::ptr::null(), &p, &mut t2), Status::SUTRA_OK);
            assert_eq!(sutra_trainer_set_state(t2, blob.as_ptr(), size - 8), Status::SUTRA_ERR_FORMAT);
            let mut base = 0f32;
            assert_eq!(sutra_trainer_compute(t2, tokens.as_ptr(), targets.as_ptr(), 1, 8, &mut base), Status::SUTRA_OK);
            assert!((base - first).abs() < 1e-5, "{case}: a refused blob changed the trainer ({base} vs {first})");
            assert_eq!(sutra_trainer_set_state(t2, blob.as_ptr(), size), Status::SUTRA_OK);
            let mut again = 0f32;
            assert_eq!(
                sutra_trainer_compute(t2, tokens.as_ptr(), targets.as_ptr(), 1, 8, &mut again),
                Status::SUTRA_OK
            );
            assert!((again - now).abs() < 1e-5, "{case}: from the blob {again}, trained {now}");
            let name = CString::new("state").unwrap();
            let mut g = vec![0f32; 1];
            assert_eq!(
                sutra_trainer_get_gradient(t2, name.as_ptr(), g.as_mut_ptr(), 1),
                Status::SUTRA_ERR_INVALID_ARGUMENT
            );
            sutra_trainer_free(t2);
            sutra_session_free(s);
            sutra_trainer_free(tr);
            sutra_model_free(m);
        }
    }
}

/// Model-level gradient check on small synthesized models of every trainable architecture
/// (Mamba-2 with 2 groups, which the golden set does not cover): the trainer's gradient
/// projected on random directions equals the central difference of the loss computed by the
/// inference path (sessions with the adapter attached). The forward is f32, so the step is
/// 1e-2 and the loss is summed in f64: the difference's rounding error is then about
/// 1e-6 / 1e-2 = 1e-4 and its truncation error O(h²) = 1e-4 relative, hence the tolerance
/// 2e-3·(|g·d| + 0.05).
///
/// The same trainer with BPTT in chunks of 32 (checkpoints at 32 and 64 of 70 tokens) and the
/// initial state tuned too, from a random start state: the same loss and adapter gradients
/// (to f32 rounding, 1e-5 of each tensor's largest value), and its state gradient projected
/// on random directions against central differences of the loss of sessions put at the
/// moved state (state tuning's check).
#[test]
fn gradients_match_central_differences_on_synthesized_models() {
    use std::sync::Arc;
    use sutra::format::synth::{synthesize_with, MambaSizes, SynthSpec};
    use sutra::rng::Rng;
    use sutra::train::{TrainParams, Trainer, Tune};
    let dir = std::env::temp_dir().join(format!("sutra-train-fd-{}", std::process::id()));
    for (arch, sizes) in [
        ("rwkv5", MambaSizes::default()),
        ("rwkv6", MambaSizes::default()),
        ("rwkv7", MambaSizes::default()),
        ("mamba1", MambaSizes { d_state: Some(8), n_groups: None }),
        ("mamba2", MambaSizes { d_state: Some(8), n_groups: Some(2) }),
    ] {
        let d = dir.join(arch);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("model.safetensors");
        let spec = SynthSpec {
            arch: arch.into(),
            n_layer: 2,
            n_embd: 64,
            n_vocab: 61,
            head_size: 16,
            dtype: sutra::tensor::DType::F32,
            seed: 11,
        };
        synthesize_with(&spec, &sizes, &p).unwrap();
        let m = load(&p, 2);
        // An adapter on every block matrix with both halves random (so both get gradients).
        let mut rng = Rng::new(5);
        let r = 3;
        let pairs: Vec<(String, Vec<f32>, Vec<f32>, f32)> = m
            .arch()
            .matrices()
            .into_iter()
            .filter_map(|mx| {
                let module = mx.tensor.name.strip_suffix(".weight")?;
                (module.contains("blocks.") || module.contains("layers.")).then(|| module.to_string()).map(|module| {
                    let a = (0..r * mx.cols).map(|_| rng.normal() * 0.2).collect();
                    let b = (0..mx.rows * r).map(|_| rng.normal() * 0.05).collect();
                    (module, a, b, 2.0 / r as f32)
                })
            })
            .collect();
        let adapter = |pairs: &[(String, Vec<f32>, Vec<f32>, f32)]| {
            Arc::new(Adapter::from_pairs(&m, pairs.iter().cloned(), r, 2.0, "fd").unwrap())
        };
        let v = m.info().n_vocab;
        // 70 tokens: the head runs in blocks of 64 rows, so the whole row takes two.
        let tokens: Vec<u32> = (0..70).map(|i| ((i * 17 + 3) % v) as u32).collect();
        let targets: Vec<i32> = (0..70).map(|i| ((i * 23 + 5) % v) as i32).collect();
        let n_state = m.arch().state_len();
        let start: Vec<f32> = (0..n_state).map(|_| rng.normal() * 0.3).collect();
        let loss_at = |pairs: &[(String, Vec<f32>, Vec<f32>, f32)], state: Option<&[f32]>| -> f64 {
            let mut s = sutra::Session::new(&m);
            if let Some(st) = state {
                s.set_state(st).unwrap();
            }
            s.set_adapter(&adapter(pairs), 1.0).unwrap();
            mean_nll(&mut s, &tokens, &targets)
        };
        let loss_of = |pairs: &[(String, Vec<f32>, Vec<f32>, f32)]| loss_at(pairs, None);
        let init = adapter(&pairs);
        let mut tr = Trainer::new(&m, Some(&init), &TrainParams::default()).unwrap();
        let loss = tr.compute(&tokens, &targets, 1, tokens.len()).unwrap() as f64;
        assert!((loss - loss_of(&pairs)).abs() < 1e-4, "{arch}: trainer loss {loss} vs inference {}", loss_of(&pairs));
        for dirn in 0..3 {
            let mut gd = 0f64;
            let dirs: Vec<(Vec<f32>, Vec<f32>)> = pairs
                .iter()
                .map(|(_, a, b, _)| {
                    (a.iter().map(|_| rng.normal()).collect(), b.iter().map(|_| rng.normal()).collect())
                })
                .collect();
            let norm =
                dirs.iter().flat_map(|(a, b)| a.iter().chain(b)).map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            for ((module, _, _, _), (da, db)) in pairs.iter().zip(&dirs) {
                let ga = tr.gradient(&format!("base_model.model.{module}.lora_A.weight")).unwrap();
                let gb = tr.gradient(&format!("base_model.model.{module}.lora_B.weight")).unwrap();
                gd +=
                    ga.iter().zip(da).chain(gb.iter().zip(db)).map(|(g, d)| *g as f64 * *d as f64).sum::<f64>() / norm;
            }
            let h = 1e-2f32;
            let moved = |sign: f32| -> Vec<(String, Vec<f32>, Vec<f32>, f32)> {
                pairs
                    .iter()
                    .zip(&dirs)
                    .map(|((mo, a, b, s), (da, db))| {
                        let step = |x: &[f32], d: &[f32]| {
                            x.iter().zip(d).map(|(x, d)| x + sign * h * (*d as f64 / norm) as f32).collect()
                        };
                        (mo.clone(), step(a, da), step(b, db), *s)
                    })
                    .collect()
            };
            let fd = (loss_of(&moved(1.0)) - loss_of(&moved(-1.0))) / (2.0 * h as f64);
            eprintln!("{arch} direction {dirn}: g·d {gd:.6} central difference {fd:.6}");
            assert!((fd - gd).abs() <= 2e-3 * (gd.abs() + 0.05), "{arch} direction {dirn}: g·d {gd} vs {fd}");
        }
        // Chunked BPTT with the state tuned, from a random start state.
        let mut at = sutra::Session::new(&m);
        at.set_state(&start).unwrap();
        let p = TrainParams { bptt_chunk: 32, tune: Tune::AdapterAndState, ..TrainParams::default() };
        let mut tc = Trainer::new(&m, Some(&init), &p).unwrap();
        tc.set_state_blob(&at.state_to_vec()).unwrap();
        let mut tw = Trainer::new(&m, Some(&init), &TrainParams { bptt_chunk: 0, ..p.clone() }).unwrap();
        tw.set_state_blob(&at.state_to_vec()).unwrap();
        let (lc, lw) = (tc.compute(&tokens, &targets, 1, 70).unwrap(), tw.compute(&tokens, &targets, 1, 70).unwrap());
        let want = loss_at(&pairs, Some(&start));
        assert!(
            (lc as f64 - want).abs() < 1e-4 && (lw - lc).abs() < 1e-5,
            "{arch}: chunked {lc}, whole {lw}, inference {want}"
        );
        let mut names: Vec<String> = pairs
            .iter()
            .flat_map(|(mo, ..)| ["A", "B"].map(|h| format!("base_model.model.{mo}.lora_{h}.weight")))
            .collect();
        names.push("state".into());
        for name in &names {
            let (gc, gw) = (tc.gradient(name).unwrap(), tw.gradient(name).unwrap());
            let top = gw.iter().fold(0f32, |a, g| a.max(g.abs()));
            let worst = gc.iter().zip(gw).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5 * top + 1e-9, "{arch} {name}: chunked vs whole differ by {worst} (largest {top})");
        }
        let gs = tc.gradient("state").unwrap();
        assert!(gs.iter().any(|g| *g != 0.0), "{arch}: the state gets no gradient");
        for dirn in 0..3 {
            let d: Vec<f64> = (0..n_state).map(|_| rng.normal() as f64).collect();
            let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
            let gd = gs.iter().zip(&d).map(|(g, d)| *g as f64 * d / norm).sum::<f64>();
            let h = 1e-2;
            let moved = |sign: f64| -> Vec<f32> {
                start.iter().zip(&d).map(|(s, d)| (*s as f64 + sign * h * d / norm) as f32).collect()
            };
            let fd = (loss_at(&pairs, Some(&moved(1.0))) - loss_at(&pairs, Some(&moved(-1.0)))) / (2.0 * h);
            eprintln!("{arch} state direction {dirn}: g·d {gd:.6} central difference {fd:.6}");
            assert!((fd - gd).abs() <= 2e-3 * (gd.abs() + 0.05), "{arch} state direction {dirn}: g·d {gd} vs {fd}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The same model-level check as `gradients_match_central_differences_on_synthesized_models`
/// for the RWKV v5.2–v7 models, one tensor at a time, so that no wrong part hides in a sum
/// over all of them: the gradient of every LoRA pair (A and B together) and of every part
/// of every block's state (att_x, the WKV state, ffn_x), each projected on a unit direction
/// of that tensor alone (half along the gradient itself, half random, so that the projection
/// is far above the difference's noise and a wrong direction or scale shows), against the
/// central difference of the inference path's loss. Step and tolerance as there: the f32
/// forward's rounding over a 2·1e-2 step is about 1e-5 of these O(1) losses, truncation
/// O(h²) relative, hence 2e-3·(|g·d| + 0.05).
#[test]
fn rwkv_gradients_match_central_differences_tensor_by_tensor() {
    use std::sync::Arc;
    use sutra::format::synth::{synthesize_with, MambaSizes, SynthSpec};
    use sutra::rng::Rng;
    use sutra::train::{TrainParams, Trainer, Tune};
    type Pairs = Vec<(String, Vec<f32>, Vec<f32>, f32)>;
    let dir = std::env::temp_dir().join(format!("sutra-train-fd-parts-{}", std::process::id()));
    // "rwkv6-halved": RWKV-6 with a GGUF file's residual halving after every block (handed
    // over in the config beside the file), so that its backward is checked too.
    for case in ["rwkv5", "rwkv6", "rwkv6-halved", "rwkv7"] {
        let arch = case.strip_suffix("-halved").unwrap_or(case);
        let d = dir.join(case);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("model.safetensors");
        if case != arch {
            std::fs::write(d.join("config.json"), r#"{"gguf_rescale_every": 1}"#).unwrap();
        }
        let spec = SynthSpec {
            arch: arch.into(),
            n_layer: 2,
            n_embd: 32,
            n_vocab: 37,
            head_size: 8,
            dtype: sutra::tensor::DType::F32,
            seed: 13,
        };
        synthesize_with(&spec, &MambaSizes::default(), &p).unwrap();
        let m = load(&p, 2);
        let mut rng = Rng::new(9);
        let r = 2;
        let pairs: Pairs = m
            .arch()
            .matrices()
            .into_iter()
            .filter_map(|mx| {
                let module = mx.tensor.name.strip_suffix(".weight")?.to_string();
                module.contains("blocks.").then(|| {
                    let a = (0..r * mx.cols).map(|_| rng.normal() * 0.2).collect();
                    let b = (0..mx.rows * r).map(|_| rng.normal() * 0.05).collect();
                    (module, a, b, 2.0 / r as f32)
                })
            })
            .collect();
        assert_eq!(pairs.len(), 2 * if arch == "rwkv7" { 6 } else { 8 }, "{arch}: the block matrices");
        let adapter = |pairs: &Pairs| Arc::new(Adapter::from_pairs(&m, pairs.iter().cloned(), r, 2.0, "fd").unwrap());
        let v = m.info().n_vocab;
        let tokens: Vec<u32> = (0..7).map(|i| ((i * 11 + 2) % v) as u32).collect();
        let targets: Vec<i32> = (0..7).map(|i| ((i * 13 + 4) % v) as i32).collect();
        let n_state = m.arch().state_len();
        let start: Vec<f32> = (0..n_state).map(|_| rng.normal() * 0.3).collect();
        let loss_at = |pairs: &Pairs, state: &[f32]| -> f64 {
            let mut s = sutra::Session::new(&m);
            s.set_state(state).unwrap();
            s.set_adapter(&adapter(pairs), 1.0).unwrap();
            mean_nll(&mut s, &tokens, &targets)
        };
        let mut at = sutra::Session::new(&m);
        at.set_state(&start).unwrap();
        let p = TrainParams { bptt_chunk: 3, tune: Tune::AdapterAndState, ..TrainParams::default() };
        let mut tr = Trainer::new(&m, Some(&adapter(&pairs)), &p).unwrap();
        tr.set_state_blob(&at.state_to_vec()).unwrap();
        tr.compute(&tokens, &targets, 1, tokens.len()).unwrap();
        // A unit direction: half along `g`, half random.
        let mut direction = |g: &[f32]| -> Vec<f64> {
            let gn = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            assert!(gn > 0.0, "a zero gradient");
            let rnd: Vec<f64> = g.iter().map(|_| rng.normal() as f64).collect();
            let rn = rnd.iter().map(|x| x * x).sum::<f64>().sqrt();
            let d: Vec<f64> = g.iter().zip(&rnd).map(|(g, r)| *g as f64 / gn + r / rn).collect();
            let dn = d.iter().map(|x| x * x).sum::<f64>().sqrt();
            d.into_iter().map(|x| x / dn).collect()
        };
        let h = 1e-2f64;
        let check = |what: &str, gd: f64, lp: f64, lm: f64| {
            let fd = (lp - lm) / (2.0 * h);
            eprintln!("{case} {what}: g·d {gd:.6} central difference {fd:.6}");
            assert!((fd - gd).abs() <= 2e-3 * (gd.abs() + 0.05), "{case} {what}: g·d {gd} vs {fd}");
        };
        for (pi, (module, a, b, _)) in pairs.iter().enumerate() {
            let ga = tr.gradient(&format!("base_model.model.{module}.lora_A.weight")).unwrap();
            let gb = tr.gradient(&format!("base_model.model.{module}.lora_B.weight")).unwrap();
            let g: Vec<f32> = ga.iter().chain(gb).copied().collect();
            let d = direction(&g);
            let gd = g.iter().zip(&d).map(|(g, d)| *g as f64 * d).sum::<f64>();
            let moved = |sign: f64| -> Pairs {
                let mut out = pairs.clone();
                let x: Vec<f32> = a.iter().chain(b).zip(&d).map(|(x, d)| (*x as f64 + sign * h * d) as f32).collect();
                out[pi].1 = x[..a.len()].to_vec();
                out[pi].2 = x[a.len()..].to_vec();
                out
            };
            check(module, gd, loss_at(&moved(1.0), &start), loss_at(&moved(-1.0), &start));
        }
        let gs = tr.gradient("state").unwrap();
        let info = m.info();
        let (c, hnn) = (info.n_embd, info.n_head * info.head_size * info.head_size);
        let per_block = 2 * c + hnn;
        for li in 0..info.n_layer {
            let o = li * per_block;
            for (part, span) in
                [("att_x", o..o + c), ("wkv", o + c..o + c + hnn), ("ffn_x", o + c + hnn..o + per_block)]
            {
                let d = direction(&gs[span.clone()]);
                let gd = gs[span.clone()].iter().zip(&d).map(|(g, d)| *g as f64 * d).sum::<f64>();
                let moved = |sign: f64| -> Vec<f32> {
                    let mut st = start.clone();
                    for (x, d) in st[span.clone()].iter_mut().zip(&d) {
                        *x = (*x as f64 + sign * h * d) as f32;
                    }
                    st
                };
                check(
                    &format!("block {li} state {part}"),
                    gd,
                    loss_at(&pairs, &moved(1.0)),
                    loss_at(&pairs, &moved(-1.0)),
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `sutra lora train`: a live line per step (plain lines when stderr is not a terminal) and a
/// PEFT folder that loads; bad arguments are errors. With `--state`, a state blob that
/// `Session::load_state` and `sutra generate --init-state` accept.
#[test]
fn cli_lora_train_writes_an_adapter() {
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sutra"));
    let model = repo("models/rwkv7-shakespeare-6x256/model.safetensors");
    let out = std::env::temp_dir().join(format!("sutra-cli-train-{}", std::process::id()));
    let o = common::command(&bin)
        .args(["lora", "train", model.to_str().unwrap(), "--data"])
        .arg(fixture("shakespeare/train_head64k.txt"))
        .args(["--out", out.to_str().unwrap(), "--steps", "2", "--ctx", "16", "--batch", "2", "--rank", "4"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("step ") && l.contains(" loss ") && l.contains("held-out")).count(),
        2,
        "{err}"
    );
    let m = load(&model, 1);
    let a = Adapter::load(&m, &out).unwrap();
    assert_eq!(a.rank, 4);
    let bad =
        common::command(&bin).args(["lora", "train", model.to_str().unwrap(), "--out", "/tmp/x"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--data"));
    std::fs::remove_dir_all(&out).ok();
    // --state: the initial state alone, written as state.bin, which --init-state loads.
    let o = common::command(&bin)
        .args(["lora", "train", model.to_str().unwrap(), "--data"])
        .arg(fixture("shakespeare/train_head64k.txt"))
        .args([
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "2",
            "--ctx",
            "16",
            "--batch",
            "1",
            "--state",
            "--chunk",
            "5",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("initial state"), "{err}");
    let blob = std::fs::read(out.join("state.bin")).unwrap();
    assert!(!out.join("adapter_model.safetensors").exists(), "--state trains no adapter");
    let mut s = sutra::Session::new(&m);
    s.load_state(&blob).unwrap();
    assert!(s.state().iter().any(|x| *x != 0.0), "the tuned state is the empty one");
    let g = common::command(&bin)
        .args(["generate", model.to_str().unwrap(), "--prompt", "ROMEO:", "-n", "4", "--init-state"])
        .arg(out.join("state.bin"))
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let g = common::command(&bin)
        .args(["generate", model.to_str().unwrap(), "--prompt", "A", "-n", "1", "--init-state"])
        .arg(fixture("shakespeare/valid.txt"))
        .output()
        .unwrap();
    assert!(!g.status.success() && String::from_utf8_lossy(&g.stderr).contains("--init-state"));
    std::fs::remove_dir_all(&out).ok();
}
