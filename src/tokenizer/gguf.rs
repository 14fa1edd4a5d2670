//! The tokenizer a GGUF file carries (`tokenizer.ggml.model`, `.tokens`, `.token_type`,
//! `.merges`, `.pre`), rebuilt onto libsutra's own tokenizers:
//! - `rwkv`: the world vocabulary. llama.cpp's converter writes each token as the text of
//!   Python's `repr` of its bytes without the `b'…'` (`\x00`, `\n`, `\\`, `\'`), undone here;
//!   control tokens (`<s>`, id 0) are not text and are left out of the vocabulary, as id 0 is
//!   in the vocabulary file;
//! - `gpt2`: byte-level BPE with the GPT-2 split regex, its merges in rank order, control and
//!   user-defined tokens as special added tokens; merges whose parts or result are not in the
//!   vocabulary are left out (they could never apply). Pre-tokenizers other than GPT-2's regex
//!   (`tokenizer.ggml.pre` `llama-bpe`, `qwen2`, …) are refused as unsupported, naming them.

use super::hf::HfTokenizer;
use super::world::WorldTokenizer;
use super::Inner;
use crate::error::{Error, Result};
use crate::format::gguf::{GgufFile, Value};

/// llama.cpp's token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's byte-level regex.
const GPT2_REGEX_PRE: [&str; 5] = ["default", "gpt-2", "gpt2", "mpt", "olmo"];

pub(super) fn from_gguf(g: &GgufFile) -> Result<Inner> {
    let model = g.str("tokenizer.ggml.model")?.ok_or_else(|| Error::format("GGUF without tokenizer.ggml.model"))?;
    let tokens =
        g.array("tokenizer.ggml.tokens")?.ok_or_else(|| Error::format("GGUF without tokenizer.ggml.tokens"))?;
    let types: Vec<i64> = match g.array("tokenizer.ggml.token_type")? {
        None => vec![1; tokens.len()],
        Some(t) if t.len() == tokens.len() => t
            .iter()
            .map(|v| match *v {
                Value::I32(x) => Ok(x as i64),
                _ => v
                    .as_u64()
                    .map(|x| x as i64)
                    .ok_or_else(|| Error::format("tokenizer.ggml.token_type: integers expected")),
            })
            .collect::<Result<_>>()?,
        Some(t) => {
            return Err(Error::format(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                t.len(),
                tokens.len()
            )))
        }
    };
    let bytes = |i: usize| match &tokens[i] {
        Value::Str(s) => Ok(s.as_slice()),
        _ => Err(Error::format(format!("tokenizer.ggml.tokens[{i}] is not a string"))),
    };
    match model {
        "rwkv" => {
            let mut out = Vec::with_capacity(tokens.len());
            for (i, &ty) in types.iter().enumerate() {
                let b = bytes(i)?;
                out.push(if ty == CONTROL { None } else { Some(unescape_repr(b).map_err(|m| bad_token(i, &m))?) });
            }
            Ok(Inner::World(Box::new(WorldTokenizer::from_tokens(out)?)))
        }
        "gpt2" => {
            let pre = g.str("tokenizer.ggml.pre")?.unwrap_or("default");
            if !GPT2_REGEX_PRE.contains(&pre) {
                return Err(Error::unsupported(format!(
                    "GGUF tokenizer.ggml.pre '{pre}': only GPT-2's byte-level split ({}) is supported",
                    GPT2_REGEX_PRE.join(", ")
                )));
            }
            let mut vocab = serde_json::Map::new();
            let mut added = Vec::new();
            for (i, &ty) in types.iter().enumerate() {
                let t = std::str::from_utf8(bytes(i)?).map_err(|_| bad_token(i, "not UTF-8"))?;
                if vocab.insert(t.to_string(), i.into()).is_some() {
                    return Err(bad_token(i, &format!("'{t}' appears twice")));
                }
                if ty == CONTROL || ty == USER_DEFINED {
                    added.push(serde_json::json!({
                        "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                        "normalized": false, "special": ty == CONTROL,
                    }));
                }
            }
            let merges = match g.array("tokenizer.ggml.merges")? {
                None => Vec::new(),
                Some(m) => {
                    let mut kept = Vec::with_capacity(m.len());
                    for (i, v) in m.iter().enumerate() {
                        let s = v.as_str().ok_or_else(|| {
                            Error::format(format!("tokenizer.ggml.merges[{i}] is not a UTF-8 string"))
                        })?;
                        let (a, b) = s.split_once(' ').ok_or_else(|| {
                            Error::format(format!("tokenizer.ggml.merges[{i}] '{s}' is not two tokens"))
                        })?;
                        // A merge whose parts or result the vocabulary lacks can never apply
                        // (Hugging Face refuses such a file): a vocabulary cut short keeps
                        // the merges among its own tokens.
                        if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}")) {
                            kept.push(serde_json::Value::String(s.to_string()));
                        }
                    }
                    kept
                }
            };
            let byte_level = serde_json::json!({
                "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
            });
            let json = serde_json::json!({
                "version": "1.0",
                "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": byte_level,
                "post_processor": null,
                "decoder": byte_level,
                "model": {
                    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                    "ignore_merges": false, "vocab": vocab, "merges": merges,
                },
            });
            let text = serde_json::to_vec(&json).map_err(|e| Error::Internal(format!("tokenizer JSON: {e}")))?;
            Ok(Inner::Hf(Box::new(HfTokenizer::from_json_bytes(&text)?)))
        }
        other => Err(Error::unsupported(format!(
            "GGUF tokenizer.ggml.model '{other}': libsutra reads 'rwkv' (world) and 'gpt2' (byte-level BPE)"
        ))),
    }
}

fn bad_token(i: usize, what: &str) -> Error {
    Error::format(format!("tokenizer.ggml.tokens[{i}]: {what}"))
}

/// The bytes behind the inside of a Python bytes `repr` (`\xNN`, `\t`, `\n`, `\r`, `\\`,
/// `\'`, `\"`; every other byte stands for itself).
fn unescape_repr(s: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let Some(&c) = s.get(i + 1) else { return Err("ends in a lone backslash".into()) };
        i += 2;
        out.push(match c {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'\\' | b'\'' | b'"' => c,
            b'x' => {
                let hex = s.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                let v =
                    hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a \\x escape without two hex digits")?;
                i += 2;
                v
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::unescape_repr;

    #[test]
    fn repr_escapes_are_undone() {
        assert_eq!(unescape_repr(br"a\x00\xff\n\t\r\\\'").unwrap(), b"a\x00\xff\n\t\r\\'");
        assert_eq!(unescape_repr("é".as_bytes()).unwrap(), "é".as_bytes());
        assert!(unescape_repr(br"\x4").is_err());
        assert!(unescape_repr(br"\q").is_err());
        assert!(unescape_repr(b"a\\").is_err());
    }
}
