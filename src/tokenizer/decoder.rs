//! Decoders of `tokenizer.json`, working on token bytes so that [`super::Tokenizer::decode_bytes`]
//! can return raw bytes (partial UTF-8 included) while `decode` reproduces HF's lossy strings.

use serde_json::Value;

use super::json::{bool_or, field, str_field, string_pattern, type_of};
use super::pretokenize::{bytes_to_chars, PrependScheme};
use crate::error::{Error, Result};

/// A decoder: turns token strings back into text.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    /// GPT-2 byte-level: printable chars back to bytes.
    ByteLevel,
    /// SentencePiece-style: the replacement char becomes ' ' (dropped in the first token).
    Metaspace {
        /// The replacement character.
        replacement: char,
        /// Drop replacement chars of the first token (prepend_scheme != never).
        strip_first: bool,
    },
    /// WordPiece: strip the continuation prefix, else prepend ' '; optional cleanup.
    WordPiece {
        /// The continuation prefix (`##`).
        prefix: String,
        /// Apply HF's cleanup of spaces before punctuation and contractions.
        cleanup: bool,
    },
    /// Replaces a literal in every token.
    Replace {
        /// The literal pattern.
        pattern: String,
        /// Its replacement.
        content: String,
    },
    /// `<0xAB>` tokens back to bytes.
    ByteFallback,
    /// Joins all tokens into one.
    Fuse,
    /// Strips `content` up to `start` times on the left and `stop` times on the right.
    Strip {
        /// The character to strip.
        content: char,
        /// Left count.
        start: usize,
        /// Right count.
        stop: usize,
    },
    /// Classic BPE suffix decoder (`</w>`).
    BpeSuffix(String),
    /// Several in order.
    Sequence(Vec<Decoder>),
}

fn replace_bytes(hay: &[u8], pat: &[u8], with: &[u8], limit: usize) -> Vec<u8> {
    if pat.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    let mut n = 0;
    while i < hay.len() {
        if n < limit && hay[i..].starts_with(pat) {
            out.extend_from_slice(with);
            i += pat.len();
            n += 1;
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn byte_fallback_value(tok: &[u8]) -> Option<u8> {
    if tok.len() == 6 && tok.starts_with(b"<0x") && tok[5] == b'>' {
        let hex = std::str::from_utf8(&tok[3..5]).ok()?;
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

impl Decoder {
    /// Parses a `decoder` object.
    pub(crate) fn from_json(v: &Value) -> Result<Decoder> {
        let ctx = "decoder";
        Ok(match type_of(v, ctx)? {
            "ByteLevel" => Decoder::ByteLevel,
            "Metaspace" => {
                let rep = str_field(v, "replacement", ctx)?;
                let mut it = rep.chars();
                let replacement = match (it.next(), it.next()) {
                    (Some(c), None) => c,
                    _ => return Err(Error::format("decoder Metaspace: `replacement` must be one character")),
                };
                Decoder::Metaspace {
                    replacement,
                    strip_first: PrependScheme::from_json(v, ctx)? != PrependScheme::Never,
                }
            }
            "WordPiece" => Decoder::WordPiece {
                prefix: match v.get("prefix") {
                    None | Some(Value::Null) => "##".to_string(),
                    Some(_) => str_field(v, "prefix", ctx)?.to_string(),
                },
                cleanup: bool_or(v, "cleanup", true, ctx)?,
            },
            "Replace" => Decoder::Replace {
                pattern: string_pattern(field(v, "pattern", ctx)?, "decoder Replace")?,
                content: str_field(v, "content", ctx)?.to_string(),
            },
            "ByteFallback" => Decoder::ByteFallback,
            "Fuse" => Decoder::Fuse,
            "Strip" => {
                let content = str_field(v, "content", ctx)?;
                let mut it = content.chars();
                let c = match (it.next(), it.next()) {
                    (Some(c), None) => c,
                    _ => return Err(Error::format("decoder Strip: `content` must be one character")),
                };
                let count = |name: &str| -> Result<usize> {
                    match v.get(name) {
                        None | Some(Value::Null) => Ok(0),
                        Some(x) => x
                            .as_u64()
                            .map(|n| n as usize)
                            .ok_or_else(|| Error::format(format!("decoder Strip: `{name}` is not an integer"))),
                    }
                };
                Decoder::Strip { content: c, start: count("start")?, stop: count("stop")? }
            }
            "BPEDecoder" => Decoder::BpeSuffix(match v.get("suffix") {
                None | Some(Value::Null) => "</w>".to_string(),
                Some(_) => str_field(v, "suffix", ctx)?.to_string(),
            }),
            "Sequence" => {
                let list = field(v, "decoders", ctx)?
                    .as_array()
                    .ok_or_else(|| Error::format("decoder Sequence: `decoders` is not a list"))?;
                Decoder::Sequence(list.iter().map(Decoder::from_json).collect::<Result<_>>()?)
            }
            other => return Err(Error::unsupported(format!("decoder type `{other}`"))),
        })
    }

    /// Decodes token byte strings. With `lossy`, invalid UTF-8 is replaced exactly where HF
    /// replaces it (so every output piece is valid UTF-8); without, raw bytes are kept.
    pub(crate) fn decode_chain(&self, tokens: Vec<Vec<u8>>, lossy: bool) -> Vec<Vec<u8>> {
        match self {
            Decoder::ByteLevel => {
                let table = bytes_to_chars();
                let mut rev = vec![None; 512];
                for (b, &c) in table.iter().enumerate() {
                    rev[c as usize] = Some(b as u8);
                }
                let mut out = Vec::new();
                for t in &tokens {
                    let mapped: Option<Vec<u8>> = match std::str::from_utf8(t) {
                        Ok(s) => s.chars().map(|c| rev.get(c as usize).copied().flatten()).collect(),
                        Err(_) => None,
                    };
                    match mapped {
                        Some(m) => out.extend(m),
                        None => out.extend_from_slice(t),
                    }
                }
                if lossy {
                    out = String::from_utf8_lossy(&out).into_owned().into_bytes();
                }
                vec![out]
            }
            Decoder::Metaspace { replacement, strip_first } => {
                let mut buf = [0u8; 4];
                let rep = replacement.encode_utf8(&mut buf).as_bytes().to_vec();
                tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let with: &[u8] = if i == 0 && *strip_first { b"" } else { b" " };
                        replace_bytes(t, &rep, with, usize::MAX)
                    })
                    .collect()
            }
            Decoder::WordPiece { prefix, cleanup } => tokens
                .into_iter()
                .enumerate()
                .map(|(i, mut t)| {
                    if i != 0 {
                        if t.starts_with(prefix.as_bytes()) {
                            t = replace_bytes(&t, prefix.as_bytes(), b"", 1);
                        } else {
                            t.insert(0, b' ');
                        }
                    }
                    if *cleanup {
                        for (a, b) in [
                            (" .", "."),
                            (" ?", "?"),
                            (" !", "!"),
                            (" ,", ","),
                            (" ' ", "'"),
                            (" n't", "n't"),
                            (" 'm", "'m"),
                            (" do not", " don't"),
                            (" 's", "'s"),
                            (" 've", "'ve"),
                            (" 're", "'re"),
                        ] {
                            t = replace_bytes(&t, a.as_bytes(), b.as_bytes(), usize::MAX);
                        }
                    }
                    t
                })
                .collect(),
            Decoder::Replace { pattern, content } => {
                tokens.iter().map(|t| replace_bytes(t, pattern.as_bytes(), content.as_bytes(), usize::MAX)).collect()
            }
            Decoder::ByteFallback => {
                let mut out = Vec::with_capacity(tokens.len());
                let mut pending: Vec<u8> = Vec::new();
                let flush = |pending: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| {
                    if pending.is_empty() {
                        return;
                    }
                    if !lossy || std::str::from_utf8(pending).is_ok() {
                        out.push(std::mem::take(pending));
                    } else {
                        for _ in 0..pending.len() {
                            out.push("\u{fffd}".as_bytes().to_vec());
                        }
                        pending.clear();
                    }
                };
                for t in tokens {
                    match byte_fallback_value(&t) {
                        Some(b) => pending.push(b),
                        None => {
                            flush(&mut pending, &mut out);
                            out.push(t);
                        }
                    }
                }
                flush(&mut pending, &mut out);
                out
            }
            Decoder::Fuse => vec![tokens.concat()],
            Decoder::Strip { content, start, stop } => {
                let mut buf = [0u8; 4];
                let c = content.encode_utf8(&mut buf).as_bytes().to_vec();
                tokens
                    .into_iter()
                    .map(|t| {
                        let mut a = 0;
                        for _ in 0..*start {
                            if t[a..].starts_with(&c) {
                                a += c.len();
                            } else {
                                break;
                            }
                        }
                        let mut b = t.len();
                        for _ in 0..*stop {
                            if b >= a + c.len() && t[..b].ends_with(&c) {
                                b -= c.len();
                            } else {
                                break;
                            }
                        }
                        t[a..b].to_vec()
                    })
                    .collect()
            }
            Decoder::BpeSuffix(suffix) => {
                let n = tokens.len();
                tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let with: &[u8] = if i + 1 == n { b"" } else { b" " };
                        replace_bytes(t, suffix.as_bytes(), with, usize::MAX)
                    })
                    .collect()
            }
            Decoder::Sequence(list) => {
                let mut cur = tokens;
                for d in list {
                    cur = d.decode_chain(cur, lossy);
                }
                cur
            }
        }
    }
}
