//! Normalizers of `tokenizer.json`: Unicode normal forms, lowercasing, accent stripping, the
//! BERT normalizer, replacements, prepending and stripping.

use serde_json::Value;
use unicode_general_category::{get_general_category, GeneralCategory as G};
use unicode_normalization::UnicodeNormalization;

use super::json::{bool_or, field, opt_bool, str_field, string_pattern, type_of};
use crate::error::{Error, Result};

/// A text normalizer, applied to the text between added tokens before pre-tokenization.
#[derive(Debug, Clone)]
pub(crate) enum Normalizer {
    /// Unicode NFC.
    Nfc,
    /// Unicode NFD.
    Nfd,
    /// Unicode NFKC.
    Nfkc,
    /// Unicode NFKD.
    Nfkd,
    /// Per-character lowercase.
    Lowercase,
    /// Removes combining marks (Mn, Mc, Me).
    StripAccents,
    /// The BERT normalizer.
    Bert {
        /// Drop control characters and map whitespace to ' '.
        clean_text: bool,
        /// Put spaces around CJK ideographs.
        chinese: bool,
        /// NFD then drop non-spacing marks.
        strip_accents: bool,
        /// Per-character lowercase.
        lowercase: bool,
    },
    /// Replaces every occurrence of a literal string.
    Replace {
        /// The literal pattern.
        pattern: String,
        /// Its replacement.
        content: String,
    },
    /// Prepends a string to non-empty text.
    Prepend(String),
    /// Strips whitespace on either side.
    Strip {
        /// Strip on the left.
        left: bool,
        /// Strip on the right.
        right: bool,
    },
    /// Applies normalizers in order.
    Sequence(Vec<Normalizer>),
}

/// True for the code points BERT treats as CJK ideographs.
pub(crate) fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

fn bert_is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn bert_is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(get_general_category(c), G::Control | G::Format | G::Unassigned | G::PrivateUse | G::Surrogate)
}

/// HF's StripAccents: drops every combining mark (Mn, Mc, Me); the BERT normalizer only Mn.
fn strip_marks(s: &str) -> String {
    s.chars().filter(|&c| !unicode_normalization::char::is_combining_mark(c)).collect()
}

fn lowercase(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        out.extend(c.to_lowercase());
    }
    out
}

impl Normalizer {
    /// Parses a `normalizer` object.
    pub(crate) fn from_json(v: &Value) -> Result<Normalizer> {
        let ctx = "normalizer";
        Ok(match type_of(v, ctx)? {
            "NFC" => Normalizer::Nfc,
            "NFD" => Normalizer::Nfd,
            "NFKC" => Normalizer::Nfkc,
            "NFKD" => Normalizer::Nfkd,
            "Lowercase" => Normalizer::Lowercase,
            "StripAccents" => Normalizer::StripAccents,
            "BertNormalizer" => {
                let lowercase = bool_or(v, "lowercase", true, ctx)?;
                Normalizer::Bert {
                    clean_text: bool_or(v, "clean_text", true, ctx)?,
                    chinese: bool_or(v, "handle_chinese_chars", true, ctx)?,
                    strip_accents: opt_bool(v, "strip_accents", ctx)?.unwrap_or(lowercase),
                    lowercase,
                }
            }
            "Replace" => Normalizer::Replace {
                pattern: string_pattern(field(v, "pattern", ctx)?, "normalizer Replace")?,
                content: str_field(v, "content", ctx)?.to_string(),
            },
            "Prepend" => Normalizer::Prepend(str_field(v, "prepend", ctx)?.to_string()),
            "Strip" => Normalizer::Strip {
                left: bool_or(v, "strip_left", true, ctx)?,
                right: bool_or(v, "strip_right", true, ctx)?,
            },
            "Sequence" => {
                let list = field(v, "normalizers", ctx)?
                    .as_array()
                    .ok_or_else(|| Error::format("normalizer Sequence: `normalizers` is not a list"))?;
                Normalizer::Sequence(list.iter().map(Normalizer::from_json).collect::<Result<_>>()?)
            }
            other => return Err(Error::unsupported(format!("normalizer type `{other}`"))),
        })
    }

    /// Normalizes `s`.
    pub(crate) fn normalize(&self, s: &str) -> String {
        match self {
            Normalizer::Nfc => s.nfc().collect(),
            Normalizer::Nfd => s.nfd().collect(),
            Normalizer::Nfkc => s.nfkc().collect(),
            Normalizer::Nfkd => s.nfkd().collect(),
            Normalizer::Lowercase => lowercase(s),
            Normalizer::StripAccents => strip_marks(s),
            Normalizer::Bert { clean_text, chinese, strip_accents, lowercase: lower } => {
                let mut t: String = if *clean_text {
                    s.chars()
                        .filter(|&c| !(c == '\0' || c == '\u{fffd}' || bert_is_control(c)))
                        .map(|c| if bert_is_whitespace(c) { ' ' } else { c })
                        .collect()
                } else {
                    s.to_string()
                };
                if *chinese {
                    let mut u = String::with_capacity(t.len());
                    for c in t.chars() {
                        if is_chinese_char(c) {
                            u.push(' ');
                            u.push(c);
                            u.push(' ');
                        } else {
                            u.push(c);
                        }
                    }
                    t = u;
                }
                if *strip_accents {
                    t = t.nfd().filter(|&c| get_general_category(c) != G::NonspacingMark).collect();
                }
                if *lower {
                    t = lowercase(&t);
                }
                t
            }
            Normalizer::Replace { pattern, content } => {
                if pattern.is_empty() {
                    s.to_string()
                } else {
                    s.replace(pattern.as_str(), content)
                }
            }
            Normalizer::Prepend(p) => {
                if s.is_empty() {
                    String::new()
                } else {
                    format!("{p}{s}")
                }
            }
            Normalizer::Strip { left, right } => {
                let mut t = s;
                if *left {
                    t = t.trim_start();
                }
                if *right {
                    t = t.trim_end();
                }
                t.to_string()
            }
            Normalizer::Sequence(list) => {
                let mut t = s.to_string();
                for n in list {
                    t = n.normalize(&t);
                }
                t
            }
        }
    }
}
