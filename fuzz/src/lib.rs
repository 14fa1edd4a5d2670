//! Shared pieces of libsutra's fuzz targets (see `README.md`):
//! - the panic policy: a panic that escapes a call into the library is a finding, one the
//!   library caught and returned as an error is not ([`init`], [`call`]);
//! - the small fixed models and tokenizers of `tests/fixtures`, embedded in the binaries
//!   ([`golden`], [`tokenizer`]);
//! - the input framing of the targets that take more than one file ([`split_prefixed`]);
//! - what a client does with whatever a parser accepted, and the promises checked on the way
//!   ([`exercise_model`], [`exercise_tokenizer`], [`check_state_blob`], [`check_text`],
//!   [`check_ids`]).

use std::backtrace::Backtrace;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use sutra::{Model, ModelParams, Session, Tokenizer};

// ---------------------------------------------------------------------------------------------
// Panic policy
// ---------------------------------------------------------------------------------------------

/// Nesting depth of [`call`] (the fuzzer runs one input at a time, on one thread; the
/// library's worker threads panic on behalf of that call, hence a global).
static IN_CALL: AtomicUsize = AtomicUsize::new(0);
/// The last panic seen inside a [`call`]: message with location, and its stack.
static LAST_PANIC: Mutex<Option<(String, Backtrace)>> = Mutex::new(None);
/// Panics the library caught: how many, and the locations already reported.
static CAUGHT: Mutex<(usize, Vec<String>)> = Mutex::new((0, Vec::new()));

/// The target's `init`: installs the panic policy.
///
/// A panic outside [`call`] (a failed check of a target) aborts where it happens, as
/// libfuzzer-sys does. A panic inside [`call`] is recorded: [`call`] decides whether it escaped
/// (a finding) or was caught by the library (fine). `SUTRA_FUZZ_STRICT_PANICS=1` keeps
/// libfuzzer-sys's hook instead, so that every panic, caught or not, stops the fuzzer where it
/// happens (to find where the library's own `catch_unwind` is relied upon).
pub fn init() {
    if std::env::var_os("SUTRA_FUZZ_STRICT_PANICS").is_some_and(|v| v == "1") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        if IN_CALL.load(Ordering::SeqCst) == 0 {
            eprintln!("{info}\n{}", Backtrace::force_capture());
            std::process::abort();
        }
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some((info.to_string(), Backtrace::force_capture()));
    }));
    extern "C" {
        fn atexit(f: extern "C" fn()) -> i32;
    }
    extern "C" fn summary() {
        let caught = CAUGHT.lock().unwrap_or_else(|e| e.into_inner());
        if caught.0 > 0 {
            eprintln!(
                "==sutra-fuzz== {} panics caught by libsutra and returned as errors ({} locations, reported above)",
                caught.0,
                caught.1.len()
            );
        }
    }
    // SAFETY: registers a plain function with no captured state, run once at exit.
    unsafe { atexit(summary) };
}

/// Runs `f`, a call into libsutra's Rust API (named `what` in reports) on fuzzed input.
///
/// A panic escaping `f` is a finding: the Rust API must return errors. It is printed with its
/// stack and the process aborts, so that libFuzzer keeps the input. A panic that the library
/// caught itself and turned into an error (`Session::eval` does) is fine: the first one of
/// each location is printed, with its stack, as a note.
pub fn call<R>(what: &str, f: impl FnOnce() -> R) -> R {
    IN_CALL.fetch_add(1, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(f));
    IN_CALL.fetch_sub(1, Ordering::SeqCst);
    let panic = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
    match r {
        Ok(r) => {
            if let Some((msg, stack)) = panic {
                let mut caught = CAUGHT.lock().unwrap_or_else(|e| e.into_inner());
                caught.0 += 1;
                let at = msg.lines().next().unwrap_or_default().to_string();
                if !caught.1.contains(&at) {
                    eprintln!("==sutra-fuzz== note: {what} caught a panic and returned an error:\n{msg}\n{stack}");
                    caught.1.push(at);
                }
            }
            r
        }
        Err(_) => {
            let (msg, stack) = panic.unwrap_or_else(|| ("(no message)".into(), Backtrace::disabled()));
            eprintln!(
                "==sutra-fuzz== FINDING: a panic escaped {what} (the Rust API must return an error):\n{msg}\n{stack}"
            );
            std::process::abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed models and tokenizers
// ---------------------------------------------------------------------------------------------

/// One of the golden models of `tests/fixtures/golden` (2 layers, widths 64–128; see its
/// README for how they were made).
pub struct Golden {
    /// The directory name under `tests/fixtures/golden`.
    pub name: &'static str,
    /// `model.safetensors`.
    pub bytes: &'static [u8],
    /// `config.json`, where the fixture has one.
    pub config: Option<&'static str>,
}

macro_rules! golden {
    ($name:literal, config) => {
        Golden {
            name: $name,
            bytes: include_bytes!(concat!("../../tests/fixtures/golden/", $name, "/model.safetensors")),
            config: Some(include_str!(concat!("../../tests/fixtures/golden/", $name, "/config.json"))),
        }
    };
    ($name:literal) => {
        Golden {
            name: $name,
            bytes: include_bytes!(concat!("../../tests/fixtures/golden/", $name, "/model.safetensors")),
            config: None,
        }
    };
}

/// Indices into [`GOLDEN`].
pub const RWKV4: usize = 0;
/// RWKV-7 (the LoRA fixture `tests/fixtures/golden/lora/rwkv7` was trained on it).
pub const RWKV7: usize = 3;
/// Mamba-1 (the LoRA fixture `tests/fixtures/golden/lora/mamba1` was trained on it).
pub const MAMBA1: usize = 4;

/// Every golden model, one per architecture version.
pub const GOLDEN: [Golden; 6] = [
    golden!("rwkv4", config),
    golden!("rwkv5"),
    golden!("rwkv6"),
    golden!("rwkv7"),
    golden!("mamba1", config),
    golden!("mamba2", config),
];

/// How the targets load models: one worker thread (a pool per fuzzed model), from memory.
pub fn params() -> ModelParams {
    ModelParams { n_threads: 1, use_mmap: false, check_finite: false }
}

/// Golden model `i` of [`GOLDEN`], loaded on first use.
pub fn golden(i: usize) -> &'static Arc<Model> {
    static MODELS: [OnceLock<Arc<Model>>; 6] = [const { OnceLock::new() }; 6];
    MODELS[i].get_or_init(|| {
        let g = &GOLDEN[i];
        let m = Model::load_from_memory_with_config(g.bytes, g.config, &params());
        Arc::new(m.unwrap_or_else(|e| panic!("golden model {}: {e}", g.name)))
    })
}

/// What decoding promises for a tokenizer (see `src/tokenizer/mod.rs` and `tests/tokenizer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// Byte-level BPE or world: `decode(encode(text)) == text`, and the bytes of single ids
    /// concatenate to the bytes of the whole sequence (streaming decode).
    Exact,
    /// Byte-level BPE behind an NFC normalizer: as [`Exact`](Self::Exact) for text already in NFC.
    ExactIfNfc,
    /// WordPiece, Unigram: normalizers and pre-tokenizers lose information; nothing beyond
    /// "no panic, valid ids decode".
    Lossy,
}

/// A tokenizer of the fixtures.
pub struct TokenizerFixture {
    /// Name in reports.
    pub name: &'static str,
    /// The file.
    pub bytes: &'static [u8],
    /// What its round trip promises.
    pub promise: Promise,
}

/// Every kind of tokenizer the fixtures hold: world, byte-level BPE (with and without a
/// normalizer), WordPiece, Unigram.
pub const TOKENIZERS: [TokenizerFixture; 5] = [
    TokenizerFixture {
        name: "rwkv_world",
        bytes: include_bytes!("../../tests/fixtures/tokenizers/rwkv_world/rwkv_vocab_v20230424.txt"),
        promise: Promise::Exact,
    },
    TokenizerFixture {
        name: "gpt_neox_bpe",
        bytes: include_bytes!("../../tests/fixtures/tokenizers/gpt_neox_bpe/tokenizer.json"),
        promise: Promise::ExactIfNfc,
    },
    TokenizerFixture {
        name: "bert_wordpiece",
        bytes: include_bytes!("../../tests/fixtures/tokenizers/bert_wordpiece/tokenizer.json"),
        promise: Promise::Lossy,
    },
    TokenizerFixture {
        name: "unigram",
        bytes: include_bytes!("../../tests/fixtures/tokenizers/unigram/tokenizer.json"),
        promise: Promise::Lossy,
    },
    TokenizerFixture {
        name: "shakespeare_bpe",
        bytes: include_bytes!("../../models/rwkv7-shakespeare-6x256/tokenizer.json"),
        promise: Promise::Exact,
    },
];

/// Tokenizer `i` of [`TOKENIZERS`], loaded on first use.
pub fn tokenizer(i: usize) -> &'static Tokenizer {
    static LOADED: [OnceLock<Tokenizer>; 5] = [const { OnceLock::new() }; 5];
    LOADED[i].get_or_init(|| {
        let t = &TOKENIZERS[i];
        Tokenizer::from_bytes(t.bytes, t.name).unwrap_or_else(|e| panic!("tokenizer {}: {e}", t.name))
    })
}

// ---------------------------------------------------------------------------------------------
// Input framing
// ---------------------------------------------------------------------------------------------

/// Splits `data` framed as `[n: u32 LE][n bytes][the rest]` into its two parts (`n` is
/// clamped to what follows it; fewer than 4 bytes is two empty parts).
pub fn split_prefixed(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((n, rest)) = data.split_first_chunk::<4>() else { return (&[], &[]) };
    rest.split_at((u32::from_le_bytes(*n) as usize).min(rest.len()))
}

/// `[n: u32 LE][a][b]`, the inverse of [`split_prefixed`] (for seeds).
pub fn join_prefixed(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = (a.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

/// FNV-1a, 64 bits, as the state blob's checksum (`src/session.rs`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A directory of this process for files a target must write (the adapter loader reads a
/// folder): `$TMPDIR/sutra-fuzz-<pid>/<what>`, created on first use.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sutra-fuzz-{}", std::process::id())).join(what);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

// ---------------------------------------------------------------------------------------------
// What a client does with what a parser accepted
// ---------------------------------------------------------------------------------------------

/// The bit patterns of `v` (NaN-safe equality).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// What a client does with a model it loaded: a session, a prefill of two tokens, one step,
/// a batch of two sessions, a state saved and loaded back. Evaluation errors are allowed (a
/// panic the session caught comes back as one, see [`call`]); a session's own state blob must
/// load back.
pub fn exercise_model(model: &Arc<Model>) {
    let v = model.info().n_vocab;
    let mut logits = vec![0f32; v];
    let mut s = call("Session::new", || Session::new(model));
    let tokens = [0, (1 % v.max(1)) as u32];
    let _ = call("Session::eval", || s.eval(&tokens, Some(&mut logits)));
    let _ = call("Session::eval_stepwise", || s.eval_stepwise(&tokens[1..], Some(&mut logits)));
    // The batched path: two sessions, rows of different lengths.
    let mut other = call("Session::clone", || s.clone());
    let mut rows = vec![0f32; 2 * v];
    let _ = call("Session::eval_batch", || {
        Session::eval_batch(&mut [&mut other, &mut s.clone()], &[&tokens[..1], &tokens], Some(&mut rows))
    });
    let blob = call("Session::state_to_vec", || s.state_to_vec());
    let mut fresh = Session::new(model);
    if let Err(e) = call("Session::load_state", || fresh.load_state(&blob)) {
        panic!("a session's own state blob does not load back into a session of its model: {e}");
    }
    assert_eq!(bits(fresh.state()), bits(s.state()), "a state blob loaded back differs from the state saved");
}

/// A text with something for every normalizer, pre-tokenizer and added token of the fixtures.
pub const SAMPLE: &str = "Hello, World! Héllo wörld café naïve 😀👍🏽 👨‍👩‍👧 中文分词 日本語 한국어 \
    Ελληνικά  \t\n spaces   and\r\nnewlines ∑∫ don't 123 4567 <|endoftext|> [CLS] <s> ▁x ##ing";

/// What a client does with a tokenizer it loaded: encode a sample text with and without the
/// post-processor, decode it back every way, decode the first ids one by one, look tokens up.
/// Errors are allowed (a fuzzed vocabulary may lack what the text needs), panics are not.
pub fn exercise_tokenizer(tok: &Tokenizer) {
    let n = call("Tokenizer::vocab_size", || tok.vocab_size());
    let _ = call("Tokenizer::kind", || tok.kind());
    for special in [false, true] {
        if let Ok(ids) = call("Tokenizer::encode", || tok.encode(SAMPLE, special)) {
            for skip in [false, true] {
                let _ = call("Tokenizer::decode", || tok.decode(&ids, skip));
            }
            let _ = call("Tokenizer::decode_bytes", || tok.decode_bytes(&ids));
        }
    }
    let first: Vec<u32> = (0..n.min(256) as u32).collect();
    for &id in &first {
        let _ = call("Tokenizer::decode_bytes", || tok.decode_bytes(&[id]));
        if let Some(t) = call("Tokenizer::id_to_token", || tok.id_to_token(id)) {
            let _ = call("Tokenizer::token_to_id", || tok.token_to_id(&t));
        }
    }
    for skip in [false, true] {
        let _ = call("Tokenizer::decode", || tok.decode(&first, skip));
    }
    let _ = call("Tokenizer::decode", || tok.decode(&[n as u32, u32::MAX], false));
}

/// Loads `blob` into a session of `model` that is past its initial state. A rejected blob must
/// leave the session as it was (`src/session.rs`); an accepted one must set exactly the values
/// it holds, and the session then evaluates a token.
pub fn check_state_blob(model: &Arc<Model>, blob: &[u8]) {
    let mut s = Session::new(model);
    // A state other than the initial one, so that "unchanged" means something.
    let advanced: Vec<f32> = (0..s.state().len()).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
    s.set_state(&advanced).expect("a state of the model's own length");
    match call("Session::load_state", || s.load_state(blob)) {
        Err(_) => assert_eq!(bits(s.state()), bits(&advanced), "a rejected state blob changed the session"),
        Ok(()) => {
            let n = s.state().len();
            let held: Vec<u32> = blob[32..32 + 4 * n]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            assert_eq!(bits(s.state()), held, "a loaded state blob set other values than it holds");
            let v = model.info().n_vocab;
            let mut logits = vec![0f32; v];
            let _ = call("Session::eval", || s.eval(&[(v - 1) as u32], Some(&mut logits)));
        }
    }
}

/// Encodes `text` (arbitrary bytes) with fixture tokenizer `i` and decodes the ids back,
/// checking what [`Promise`] the tokenizer makes: non-UTF-8 is refused; UTF-8 always encodes
/// (every fixture covers all text: byte-level, unknown tokens) and decodes; byte-level and world
/// round trips are exact.
pub fn check_text(i: usize, text: &[u8], add_special_tokens: bool) {
    let (tok, fx) = (tokenizer(i), &TOKENIZERS[i]);
    let encoded = call("Tokenizer::encode_bytes", || tok.encode_bytes(text, add_special_tokens));
    let Ok(text) = std::str::from_utf8(text) else {
        assert!(encoded.is_err(), "{}: text that is not UTF-8 was encoded", fx.name);
        return;
    };
    let ids = encoded.unwrap_or_else(|e| panic!("{}: valid UTF-8 text does not encode: {e}", fx.name));
    let decoded = call("Tokenizer::decode", || tok.decode(&ids, false))
        .unwrap_or_else(|e| panic!("{}: the ids of an encoding do not decode: {e}", fx.name));
    let _ = call("Tokenizer::decode", || tok.decode(&ids, true))
        .unwrap_or_else(|e| panic!("{}: the ids of an encoding do not decode: {e}", fx.name));
    let exact = match fx.promise {
        Promise::Exact => true,
        Promise::ExactIfNfc => unicode_normalization::is_nfc(text),
        Promise::Lossy => false,
    };
    if exact {
        assert_eq!(decoded, text, "{}: decode(encode(text)) is not the text", fx.name);
    }
    check_streaming(i, &ids);
}

/// Decodes arbitrary ids (`raw`, u32 LE each, reduced to the vocabulary size + 2 so that most
/// are valid) with fixture tokenizer `i`: ids that all name tokens must decode, any other must
/// be refused with an error.
pub fn check_ids(i: usize, raw: &[u8]) {
    let (tok, fx) = (tokenizer(i), &TOKENIZERS[i]);
    let n = tok.vocab_size() as u32;
    let ids: Vec<u32> =
        raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) % (n + 2)).collect();
    // World id 0 (end of text) is not in the file but decodes to no bytes.
    let known = |id: u32| tok.id_to_token(id).is_some() || (fx.name == "rwkv_world" && id == 0);
    let all_known = ids.iter().all(|&id| known(id));
    for skip in [false, true] {
        let r = call("Tokenizer::decode", || tok.decode(&ids, skip));
        assert_eq!(r.is_ok(), all_known, "{}: decode of {ids:?}: {r:?}", fx.name);
    }
    let r = call("Tokenizer::decode_bytes", || tok.decode_bytes(&ids));
    assert_eq!(r.is_ok(), all_known, "{}: decode_bytes of {ids:?}: {r:?}", fx.name);
    if all_known {
        check_streaming(i, &ids);
    }
}

/// Where the tokenizer promises it, the bytes of single ids concatenate to the bytes of the
/// whole sequence (`src/tokenizer/mod.rs`, "Streaming decode").
fn check_streaming(i: usize, ids: &[u32]) {
    let (tok, fx) = (tokenizer(i), &TOKENIZERS[i]);
    if fx.promise == Promise::Lossy {
        return;
    }
    let whole = call("Tokenizer::decode_bytes", || tok.decode_bytes(ids)).expect("known ids decode");
    let mut parts = Vec::with_capacity(whole.len());
    for &id in ids {
        parts.extend(call("Tokenizer::decode_bytes", || tok.decode_bytes(&[id])).expect("a known id decodes"));
    }
    assert_eq!(parts, whole, "{}: per-id bytes do not concatenate to the whole decode of {ids:?}", fx.name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips() {
        assert_eq!(split_prefixed(&join_prefixed(b"config", b"weights")), (&b"config"[..], &b"weights"[..]));
        assert_eq!(split_prefixed(b"\xff\0\0\0abc"), (&b"abc"[..], &b""[..]));
        assert_eq!(split_prefixed(b"ab"), (&b""[..], &b""[..]));
    }

    #[test]
    fn checksum_is_the_one_of_state_blobs() {
        let blob = Session::new(golden(RWKV4)).state_to_vec();
        let end = blob.len() - 8;
        assert_eq!(fnv1a(&blob[..end]).to_le_bytes(), blob[end..]);
    }

    #[test]
    fn a_panic_caught_by_the_library_is_a_note() {
        init();
        let caught = call("a test", || catch_unwind(|| panic!("caught inside")).is_err());
        assert!(caught);
        assert_eq!(CAUGHT.lock().unwrap().0, 1);
    }

    #[test]
    fn fixtures_keep_the_promises_checked() {
        for i in 0..TOKENIZERS.len() {
            exercise_tokenizer(tokenizer(i));
            check_text(i, SAMPLE.as_bytes(), false);
            check_text(i, SAMPLE.as_bytes(), true);
            check_ids(i, &[1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        }
        for i in 0..GOLDEN.len() {
            exercise_model(golden(i));
            check_state_blob(golden(i), &Session::new(golden(i)).state_to_vec());
        }
    }
}
