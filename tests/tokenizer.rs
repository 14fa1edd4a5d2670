//! Tokenizer tests against the golden data of HF `tokenizers` 0.23.3 and the RWKV
//! `TRIE_TOKENIZER`, plus error handling and round trips.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sutra::error::Error;
use sutra::tokenizer::Tokenizer;

fn fixture(case: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers").join(case).join(file)
}

fn load(case: &str, file: &str) -> Tokenizer {
    Tokenizer::from_file(&fixture(case, file)).unwrap_or_else(|e| panic!("loading {case}/{file}: {e}"))
}

fn expected(case: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(case, "expected.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Compares two sequences; on mismatch returns a message with the first differing position.
fn diff<T: PartialEq + std::fmt::Debug>(what: &str, text: &str, got: &[T], want: &[T]) -> Option<String> {
    if got == want {
        return None;
    }
    let pos = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    Some(format!(
        "{what} mismatch for {text:?} at position {pos}: got {:?}, want {:?} (lengths {} vs {})",
        &got[pos..got.len().min(pos + 5)],
        &want[pos..want.len().min(pos + 5)],
        got.len(),
        want.len()
    ))
}

fn check_hf_case(case: &str, kind: &str) {
    let tok = load(case, "tokenizer.json");
    assert_eq!(tok.kind(), kind);
    let mut failures = Vec::new();
    let entries = expected(case);
    for e in &entries {
        let text = e["text"].as_str().unwrap();
        let ids = ids_of(&e["ids"]);
        let ids_sp = ids_of(&e["ids_with_special"]);
        let got = tok.encode(text, false).unwrap();
        failures.extend(diff("ids", text, &got, &ids));
        let got = tok.encode(text, true).unwrap();
        failures.extend(diff("ids_with_special", text, &got, &ids_sp));
        let dec = tok.decode(&ids, false).unwrap();
        let want = e["decoded"].as_str().unwrap();
        failures.extend(diff("decoded", text, &dec.chars().collect::<Vec<_>>(), &want.chars().collect::<Vec<_>>()));
        let dec = tok.decode(&ids_sp, true).unwrap();
        let want = e["decoded_skip_special"].as_str().unwrap();
        failures.extend(diff(
            "decoded_skip_special",
            text,
            &dec.chars().collect::<Vec<_>>(),
            &want.chars().collect::<Vec<_>>(),
        ));
        // Token strings (HF shows the covered text for fused unknown pieces, which are no
        // vocabulary entry).
        let want: Vec<String> =
            e["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        let toks: Vec<String> = ids
            .iter()
            .zip(&want)
            .map(|(&i, w)| match tok.token_to_id(w) {
                None => w.clone(),
                Some(_) => tok.id_to_token(i).unwrap(),
            })
            .collect();
        failures.extend(diff("tokens", text, &toks, &want));
    }
    assert!(
        failures.is_empty(),
        "{case}: {} failures of {} entries:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_gpt_neox_bpe() {
    check_hf_case("gpt_neox_bpe", "bpe");
}

#[test]
fn golden_bert_wordpiece() {
    check_hf_case("bert_wordpiece", "wordpiece");
}

#[test]
fn golden_unigram() {
    check_hf_case("unigram", "unigram");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn golden_rwkv_world() {
    let tok = load("rwkv_world", "rwkv_vocab_v20230424.txt");
    assert_eq!(tok.kind(), "rwkv-world");
    assert_eq!(tok.vocab_size(), 65530);
    let mut failures = Vec::new();
    for e in expected("rwkv_world") {
        let text = e["text"].as_str().unwrap();
        let ids = ids_of(&e["ids"]);
        let got = tok.encode(text, false).unwrap();
        failures.extend(diff("ids", text, &got, &ids));
        assert_eq!(tok.encode(text, true).unwrap(), got, "world has no special tokens");
        let dec = tok.decode(&ids, false).unwrap();
        let want = e["decoded"].as_str().unwrap();
        failures.extend(diff("decoded", text, &dec.chars().collect::<Vec<_>>(), &want.chars().collect::<Vec<_>>()));
        for (i, (&id, hex)) in ids.iter().zip(e["token_bytes_hex"].as_array().unwrap()).enumerate() {
            let b = tok.decode_bytes(&[id]).unwrap();
            if b != unhex(hex.as_str().unwrap()) {
                failures.push(format!("token bytes of {text:?} at position {i} (id {id}) differ"));
            }
        }
    }
    assert!(failures.is_empty(), "rwkv_world: {} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn malformed_json_is_format_error() {
    let e = Tokenizer::from_bytes(b"{\"model\": ", "bad.json").unwrap_err();
    assert!(matches!(e, Error::Format(_)), "{e}");
    let e = Tokenizer::from_bytes(b"{\"version\": \"1.0\"}", "nomodel.json").unwrap_err();
    assert!(matches!(&e, Error::Format(m) if m.contains("model")), "{e}");
    let e = Tokenizer::from_bytes(b"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", "nomerges.json").unwrap_err();
    assert!(matches!(&e, Error::Format(m) if m.contains("merges")), "{e}");
    let e = Tokenizer::from_bytes(b"garbage", "garbage.txt").unwrap_err();
    assert!(matches!(e, Error::Format(_)), "{e}");
    let e = Tokenizer::from_bytes(b"1 'a' 2\n", "world.txt").unwrap_err();
    assert!(matches!(e, Error::Format(_)), "{e}");
}

#[test]
fn unknown_types_are_unsupported() {
    let e = Tokenizer::from_bytes(b"{\"model\": {\"type\": \"WordLevel\", \"vocab\": {}}}", "wl.json").unwrap_err();
    assert!(matches!(&e, Error::Unsupported(m) if m.contains("WordLevel")), "{e}");
    let json = br#"{"normalizer": {"type": "Precompiled"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}}"#;
    let e = Tokenizer::from_bytes(json, "pc.json").unwrap_err();
    assert!(matches!(&e, Error::Unsupported(m) if m.contains("Precompiled")), "{e}");
}

#[test]
fn invalid_utf8_is_invalid_argument() {
    for (case, file) in [("gpt_neox_bpe", "tokenizer.json"), ("rwkv_world", "rwkv_vocab_v20230424.txt")] {
        let tok = load(case, file);
        let e = tok.encode_bytes(b"abc\xff\xfe", false).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(m) if m.contains('3')), "{e}");
        assert_eq!(tok.encode_bytes("héllo".as_bytes(), false).unwrap(), tok.encode("héllo", false).unwrap());
    }
}

#[test]
fn out_of_range_id_is_invalid_argument() {
    for (case, file) in [
        ("gpt_neox_bpe", "tokenizer.json"),
        ("bert_wordpiece", "tokenizer.json"),
        ("unigram", "tokenizer.json"),
        ("rwkv_world", "rwkv_vocab_v20230424.txt"),
    ] {
        let tok = load(case, file);
        let bad = tok.vocab_size() as u32;
        assert!(matches!(tok.decode_bytes(&[bad]), Err(Error::InvalidArgument(_))), "{case}");
        assert!(matches!(tok.decode(&[1, bad], false), Err(Error::InvalidArgument(_))), "{case}");
        assert!(matches!(tok.decode(&[u32::MAX], true), Err(Error::InvalidArgument(_))), "{case}");
        assert!(tok.id_to_token(bad).is_none());
    }
}

#[test]
fn partial_tokens_decode_to_replacement_char() {
    let bpe = load("gpt_neox_bpe", "tokenizer.json");
    let world = load("rwkv_world", "rwkv_vocab_v20230424.txt");
    for tok in [&bpe, &world] {
        let ids = tok.encode("😀", false).unwrap();
        assert!(ids.len() > 1, "emoji should span several tokens");
        let first = tok.decode_bytes(&ids[..1]).unwrap();
        assert!(std::str::from_utf8(&first).is_err(), "a lone partial token is partial UTF-8");
        let s = tok.decode(&ids[..1], false).unwrap();
        assert!(s.contains('\u{fffd}'), "{s:?}");
        // Streaming: per-id bytes concatenate to the whole.
        let mut all = Vec::new();
        for &id in &ids {
            all.extend(tok.decode_bytes(&[id]).unwrap());
        }
        assert_eq!(all, "😀".as_bytes());
    }
    // Every single id of the byte-level BPE decodes to valid UTF-8 strings.
    for id in 0..bpe.vocab_size() as u32 {
        if let Ok(s) = bpe.decode(&[id], false) {
            assert!(std::str::from_utf8(s.as_bytes()).is_ok());
        }
    }
}

const MIXED: &str = "Héllo wörld! café naïve 😀👍🏽 👨‍👩‍👧 中文分词 日本語 한국어 Ελληνικά  \t\n spaces   and\r\nnewlines ∑∫ <|endoftext|> done";

#[test]
fn round_trip_byte_level_and_world() {
    for (case, file) in [("gpt_neox_bpe", "tokenizer.json"), ("rwkv_world", "rwkv_vocab_v20230424.txt")] {
        let tok = load(case, file);
        let ids = tok.encode(MIXED, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), MIXED, "{case}");
        assert_eq!(tok.decode_bytes(&ids).unwrap(), MIXED.as_bytes(), "{case}");
    }
}

#[test]
fn token_lookups() {
    let bpe = load("gpt_neox_bpe", "tokenizer.json");
    assert_eq!(bpe.vocab_size(), 50277);
    assert_eq!(bpe.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(bpe.id_to_token(0).as_deref(), Some("<|endoftext|>"));
    let bert = load("bert_wordpiece", "tokenizer.json");
    assert_eq!(bert.vocab_size(), 30522);
    assert_eq!(bert.token_to_id("[CLS]"), Some(101));
    assert_eq!(bert.encode("", true).unwrap(), [101, 102]);
    let world = load("rwkv_world", "rwkv_vocab_v20230424.txt");
    let id = world.token_to_id(" the").unwrap();
    assert_eq!(world.id_to_token(id).as_deref(), Some(" the"));
    assert_eq!(world.decode_bytes(&[0]).unwrap(), b"");
}

#[test]
fn shakespeare_model_tokenizer_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rel = "models/rwkv7-shakespeare-6x256/tokenizer.json";
    let Some(tok_path) = [root.join(rel), root.join("../shared").join(rel)].into_iter().find(|p| p.exists()) else {
        eprintln!("skipping: {rel} not found");
        return;
    };
    let tok = Tokenizer::from_file(&tok_path).unwrap();
    assert_eq!(tok.kind(), "bpe");
    // The first 20 KB of shared/corpus/shakespeare/valid.txt.
    let text = std::fs::read_to_string(fixture("", "shakespeare_valid_20k.txt")).unwrap();
    let ids = tok.encode(&text, false).unwrap();
    assert!(ids.len() < text.len() / 2);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(tok.decode_bytes(&ids).unwrap(), text.as_bytes());
}
