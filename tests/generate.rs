//! Text in, text out: sampling reproducibility, streaming whole UTF-8 characters, stop
//! strings split across tokens, callbacks that stop, the tokenizer C API, perplexity against
//! the bundled model's reference figure, and the C demo programs.

mod common;
use common::*;
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::ptr::{null, null_mut};
use sutra::ffi::*;
use sutra::format::synth::{synthesize, SynthSpec};
use sutra::generate::TextStream;
use sutra::tensor::DType;
use sutra::{generate, GenerateParams, Sampler, Session, Stage, Status, StopReason, Tokenizer};

fn shakespeare() -> (std::sync::Arc<sutra::Model>, Tokenizer) {
    let m = load(&repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors"), 2);
    let t = Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
    (m, t)
}

fn sampler(seed: u64) -> Sampler {
    let mut s = Sampler::new(seed);
    s.add(Stage::TopP { p: 0.9, min_keep: 1 }).unwrap();
    s.add(Stage::Temperature(0.8)).unwrap();
    s.add(Stage::Dist).unwrap();
    s
}

fn run(
    m: &std::sync::Arc<sutra::Model>,
    t: &Tokenizer,
    s: &mut Sampler,
    prompt: &str,
    p: &GenerateParams,
) -> (String, sutra::Generation) {
    let mut out = String::new();
    let mut sess = Session::new(m);
    let g = generate(&mut sess, t, s, prompt, p, &mut |piece| {
        out.push_str(piece);
        true
    })
    .unwrap();
    (out, g)
}

fn params(n: usize) -> GenerateParams {
    GenerateParams { max_tokens: n, ..Default::default() }
}

#[test]
fn same_seed_same_text() {
    let (m, t) = shakespeare();
    let (a, ga) = run(&m, &t, &mut sampler(5), "ROMEO:\n", &params(60));
    let (b, _) = run(&m, &t, &mut sampler(5), "ROMEO:\n", &params(60));
    let (c, _) = run(&m, &t, &mut sampler(6), "ROMEO:\n", &params(60));
    assert_eq!(a, b);
    assert_ne!(a, c, "another seed gives another text");
    assert_eq!(ga.tokens.len(), 60);
    assert_eq!(a, t.decode(&ga.tokens, false).unwrap(), "the streamed pieces are the decoded tokens");
}

/// A stop string that straddles two tokens of the greedy continuation stops generation,
/// and neither it nor anything after it is emitted.
#[test]
fn stop_string_split_across_tokens() {
    let (m, t) = shakespeare();
    let (full, g) = run(&m, &t, &mut Sampler::greedy(), "JULIET:\n", &params(40));
    // Find two adjacent tokens whose texts are at least 2 bytes each; the stop string is the
    // last byte of the first and the first byte of the second (ASCII in this text).
    let texts: Vec<String> = g.tokens.iter().map(|&id| t.decode(&[id], false).unwrap()).collect();
    let mut offset = 0;
    let mut found = None;
    for i in 0..texts.len() - 1 {
        let (a, b) = (&texts[i], &texts[i + 1]);
        offset += a.len();
        if a.len() >= 2 && b.len() >= 2 && a.is_ascii() && b.is_ascii() {
            let stop = format!("{}{}", &a[a.len() - 1..], &b[..1]);
            // Its first occurrence must be the one straddling this boundary.
            if full.find(&stop) == Some(offset - 1) {
                found = Some((offset, stop));
                break;
            }
        }
    }
    let (end_of_first, stop) = found.expect("two multi-byte tokens in a row");
    let expected = &full[..end_of_first - 1];
    let p = GenerateParams { max_tokens: 40, stop_strings: vec![stop.clone()], ..Default::default() };
    let (out, g2) = run(&m, &t, &mut Sampler::greedy(), "JULIET:\n", &p);
    assert_eq!(g2.stop, StopReason::StopString);
    assert_eq!(out, expected, "stop {stop:?}");
    assert!(!out.contains(&stop));
}

#[test]
fn callback_returning_false_stops() {
    let (m, t) = shakespeare();
    let mut sess = Session::new(&m);
    let mut calls = 0;
    let g = generate(&mut sess, &t, &mut sampler(1), "HAMLET:\n", &params(100), &mut |_| {
        calls += 1;
        calls < 3
    })
    .unwrap();
    assert_eq!(g.stop, StopReason::Callback);
    assert_eq!(calls, 3);
    assert!(g.tokens.len() < 100);
}

#[test]
fn stop_token_ends_generation_without_emitting_it() {
    let (m, t) = shakespeare();
    let (_, g) = run(&m, &t, &mut Sampler::greedy(), "ROMEO:\n", &params(30));
    let stop_at = g.tokens[5];
    let p = GenerateParams { max_tokens: 30, stop_tokens: vec![stop_at], ..Default::default() };
    let (out, g2) = run(&m, &t, &mut Sampler::greedy(), "ROMEO:\n", &p);
    assert_eq!(g2.stop, StopReason::StopToken);
    assert_eq!(g2.tokens, g.tokens[..5].to_vec());
    assert_eq!(out, t.decode(&g.tokens[..5], false).unwrap());
}

/// Byte-level BPE and world tokens split emoji and accented letters; the stream only ever
/// yields whole characters and loses nothing.
#[test]
fn stream_yields_whole_characters() {
    let text = "Café crème 😀🎉 naïve 日本語 — Ωμέγα 👩‍👩‍👧";
    for file in ["tokenizers/gpt_neox_bpe/tokenizer.json", "tokenizers/rwkv_world/rwkv_vocab_v20230424.txt"] {
        let t = Tokenizer::from_file(&fixture(file)).unwrap();
        let ids = t.encode(text, false).unwrap();
        let split = ids.iter().any(|&id| std::str::from_utf8(&t.decode_bytes(&[id]).unwrap()).is_err());
        assert!(split, "{file}: some token must be a partial character for this test to mean anything");
        let mut st = TextStream::new(&t, &[]);
        let mut pieces = Vec::new();
        for &id in &ids {
            let (p, hit) = st.push(id).unwrap();
            assert!(!hit);
            pieces.push(p);
        }
        pieces.push(st.finish());
        assert_eq!(pieces.concat(), text, "{file}");
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }
}

/// End to end through the C API: a random model over the GPT-NeoX vocabulary samples random
/// tokens (many are partial UTF-8 bytes); every piece is valid UTF-8 and together they are
/// the lossy decoding of the generated ids.
#[test]
fn c_generate_streams_valid_utf8_from_random_tokens() {
    let tok_path = fixture("tokenizers/gpt_neox_bpe/tokenizer.json");
    let t = Tokenizer::from_file(&tok_path).unwrap();
    let model_path = std::env::temp_dir().join(format!("sutra-neox-{}.st", std::process::id()));
    let spec = SynthSpec {
        arch: "rwkv7".into(),
        n_layer: 1,
        n_embd: 32,
        n_vocab: t.vocab_size(),
        head_size: 16,
        dtype: DType::BF16,
        seed: 3,
    };
    synthesize(&spec, &model_path).unwrap();
    struct Sink {
        pieces: Vec<Vec<u8>>,
    }
    unsafe extern "C" fn cb(p: *const c_char, len: usize, ud: *mut c_void) -> bool {
        // SAFETY: the test passes a live Sink; p holds len bytes.
        let sink = unsafe { &mut *(ud as *mut Sink) };
        sink.pieces.push(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec());
        true
    }
    let mp = CString::new(model_path.display().to_string()).unwrap();
    let tp = CString::new(tok_path.display().to_string()).unwrap();
    let mut sink = Sink { pieces: Vec::new() };
    unsafe {
        let (mut m, mut tk, mut s, mut sm) = (null_mut(), null_mut(), null_mut(), null_mut());
        assert_eq!(sutra_model_load(mp.as_ptr(), null(), &mut m), Status::SUTRA_OK);
        assert_eq!(sutra_tokenizer_load(tp.as_ptr(), &mut tk), Status::SUTRA_OK);
        assert_eq!(sutra_session_new(m, &mut s), Status::SUTRA_OK);
        assert_eq!(sutra_sampler_new(11, &mut sm), Status::SUTRA_OK);
        assert_eq!(sutra_sampler_add_temperature(sm, 3.0), Status::SUTRA_OK);
        let mut p = sutra_generate_default_params();
        p.max_tokens = 300;
        let mut r = std::mem::zeroed::<sutra_generate_result>();
        let prompt = "Ünïcödé 😀";
        let st = sutra_generate(
            s,
            tk,
            sm,
            prompt.as_ptr().cast(),
            prompt.len(),
            &p,
            Some(cb),
            (&mut sink as *mut Sink).cast(),
            &mut r,
        );
        assert_eq!(st, Status::SUTRA_OK);
        assert_eq!(r.n_generated, 300);
        assert_eq!(r.stop_reason, sutra_stop_reason::MaxTokens);
        sutra_sampler_free(sm);
        sutra_session_free(s);
        sutra_tokenizer_free(tk);
        sutra_model_free(m);
    }
    std::fs::remove_file(&model_path).ok();
    for p in &sink.pieces {
        assert!(std::str::from_utf8(p).is_ok(), "piece {p:?} is not whole UTF-8");
    }
    let joined = String::from_utf8(sink.pieces.concat()).unwrap();
    assert!(joined.chars().count() > 50);
}

#[test]
fn c_tokenizer_api() {
    let tp = CString::new(repo("models/rwkv7-shakespeare-6x256/tokenizer.json").display().to_string()).unwrap();
    let t = Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
    let text = "To be, or not to be: that is the question.";
    let want = t.encode(text, false).unwrap();
    unsafe {
        let mut tk = null_mut();
        assert_eq!(sutra_tokenizer_load(null(), &mut tk), Status::SUTRA_ERR_INVALID_ARGUMENT);
        let missing = CString::new("/no/such/tokenizer.json").unwrap();
        assert_eq!(sutra_tokenizer_load(missing.as_ptr(), &mut tk), Status::SUTRA_ERR_IO);
        assert_eq!(sutra_tokenizer_load(tp.as_ptr(), &mut tk), Status::SUTRA_OK);
        assert_eq!(sutra_tokenizer_n_vocab(tk), 2048);
        assert_eq!(sutra_tokenizer_token_id(tk, c"<|endoftext|>".as_ptr()), 0);
        let mut n = 0usize;
        // Too small: the needed count is reported.
        let mut small = [0i32; 2];
        let st = sutra_tokenize(tk, text.as_ptr().cast(), text.len(), false, small.as_mut_ptr(), 2, &mut n);
        assert_eq!(st, Status::SUTRA_ERR_BUFFER_TOO_SMALL);
        assert_eq!(n, want.len());
        let mut ids = vec![0i32; n];
        let st = sutra_tokenize(tk, text.as_ptr().cast(), text.len(), false, ids.as_mut_ptr(), n, &mut n);
        assert_eq!(st, Status::SUTRA_OK);
        assert_eq!(ids.iter().map(|&i| i as u32).collect::<Vec<_>>(), want);
        // Invalid UTF-8 is an error, not a crash.
        let bad = [b'a', 0xff, b'b'];
        let st = sutra_tokenize(tk, bad.as_ptr().cast(), 3, false, ids.as_mut_ptr(), n, &mut n);
        assert_eq!(st, Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_tokenize(null(), null(), 0, false, null_mut(), 0, &mut n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_tokenize(tk, null(), 5, false, null_mut(), 0, &mut n), Status::SUTRA_ERR_INVALID_ARGUMENT);
        // Detokenize round trip, with the size query.
        let mut nb = 0usize;
        let st = sutra_detokenize(tk, ids.as_ptr(), ids.len(), null_mut(), 0, &mut nb);
        assert_eq!(st, Status::SUTRA_ERR_BUFFER_TOO_SMALL);
        assert_eq!(nb, text.len());
        let mut buf = vec![0u8; nb];
        let st = sutra_detokenize(tk, ids.as_ptr(), ids.len(), buf.as_mut_ptr().cast(), nb, &mut nb);
        assert_eq!(st, Status::SUTRA_OK);
        assert_eq!(std::str::from_utf8(&buf).unwrap(), text);
        let oob = [5000i32];
        assert_eq!(
            sutra_detokenize(tk, oob.as_ptr(), 1, buf.as_mut_ptr().cast(), nb, &mut nb),
            Status::SUTRA_ERR_INVALID_ARGUMENT
        );
        let neg = [-2i32];
        assert_eq!(
            sutra_detokenize(tk, neg.as_ptr(), 1, buf.as_mut_ptr().cast(), nb, &mut nb),
            Status::SUTRA_ERR_INVALID_ARGUMENT
        );
        sutra_tokenizer_free(tk);
        sutra_tokenizer_free(null_mut());
    }
}

#[test]
fn c_sampler_rejects_bad_parameters() {
    unsafe {
        let mut s = null_mut();
        assert_eq!(sutra_sampler_new(1, &mut s), Status::SUTRA_OK);
        assert_eq!(sutra_sampler_add_top_p(s, 2.0, 1), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_sampler_add_top_k(s, -1), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_sampler_add_penalties(s, 64, 0.0, 0.0, 0.0), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_sampler_add_greedy(null_mut()), Status::SUTRA_ERR_INVALID_ARGUMENT);
        assert_eq!(sutra_sampler_add_greedy(s), Status::SUTRA_OK);
        let logits = [0.5f32, 2.0, 1.0];
        let mut tok = -1;
        assert_eq!(sutra_sampler_sample(s, logits.as_ptr(), 3, &mut tok), Status::SUTRA_OK);
        assert_eq!(tok, 1);
        assert_eq!(sutra_sampler_sample(s, null(), 3, &mut tok), Status::SUTRA_ERR_INVALID_ARGUMENT);
        sutra_sampler_free(s);
    }
}

fn sutra_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sutra"))
}

fn perplexity(model: &str) -> f64 {
    let out = command(sutra_bin())
        .args(["perplexity", &repo(model).display().to_string(), "--file"])
        .arg(fixture("shakespeare/valid.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.lines().find(|l| l.starts_with("perplexity: ")).expect("perplexity line");
    assert!(stdout.lines().any(|l| l.starts_with("bits_per_byte: ")));
    assert!(stdout.contains("tokens: 104210"), "{stdout}");
    line["perplexity: ".len()..].trim().parse().unwrap()
}

/// The model README: the reference scores all 104,210 tokens of valid.txt, fed as one
/// stream from the zero state with <|endoftext|> prepended, at perplexity 41.464.
#[test]
fn perplexity_matches_the_reference_figure() {
    let f32_ppl = perplexity("models/rwkv7-shakespeare-6x256/model.safetensors");
    assert!((f32_ppl / 41.464 - 1.0).abs() < 1e-3, "f32 perplexity {f32_ppl}");
    let bf16_ppl = perplexity("models/rwkv7-shakespeare-6x256/model-bf16.safetensors");
    assert!((bf16_ppl / 41.464 - 1.0).abs() < 1e-2, "bf16 perplexity {bf16_ppl}");
}

#[test]
fn cli_tokenize_and_generate() {
    let out = command(sutra_bin())
        .args(["tokenize", &repo("models/rwkv7-shakespeare-6x256/tokenizer.json").display().to_string(), "ROMEO:"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
    let want: Vec<String> = t.encode("ROMEO:", false).unwrap().iter().map(|i| i.to_string()).collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), want.join(" "));
    // The tokenizer next to the model is found without --tokenizer; same seed, same text.
    let gen = || {
        let o = command(sutra_bin())
            .args(["generate", &repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors").display().to_string()])
            .args(["--prompt", "KING:", "-n", "30", "--seed", "9"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let a = gen();
    assert!(a.starts_with("KING:") && a.len() > 40, "{a}");
    assert_eq!(a, gen());
}
