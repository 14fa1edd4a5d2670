//! WordPiece: greedy longest-match-first with a continuation prefix (`##`).

use std::collections::HashMap;

use serde_json::Value;

use super::json::{field, opt_str, str_field, vocab_map};
use crate::error::{Error, Result};

/// A WordPiece model.
#[derive(Debug, Clone)]
pub(crate) struct WordPiece {
    /// Token string to id.
    pub vocab: HashMap<String, u32>,
    unk: String,
    prefix: String,
    max_chars: usize,
}

impl WordPiece {
    /// Parses a `model` object of type WordPiece.
    pub(crate) fn from_json(v: &Value) -> Result<WordPiece> {
        let ctx = "model";
        let max_chars = match v.get("max_input_chars_per_word") {
            None | Some(Value::Null) => 100,
            Some(x) => {
                x.as_u64().ok_or_else(|| Error::format("model.max_input_chars_per_word is not an integer"))? as usize
            }
        };
        let wp = WordPiece {
            vocab: vocab_map(field(v, "vocab", ctx)?, "model.vocab")?,
            unk: str_field(v, "unk_token", ctx)?.to_string(),
            prefix: opt_str(v, "continuing_subword_prefix", ctx)?.unwrap_or("##").to_string(),
            max_chars,
        };
        // Refused at load: otherwise every encode of an unknown word would fail later.
        wp.unk_id()?;
        Ok(wp)
    }

    fn unk_id(&self) -> Result<u32> {
        self.vocab
            .get(&self.unk)
            .copied()
            .ok_or_else(|| Error::format(format!("WordPiece unk token `{}` is not in the vocabulary", self.unk)))
    }

    /// Appends the ids of `word` to `out`.
    pub(crate) fn tokenize(&self, word: &str, out: &mut Vec<u32>) -> Result<()> {
        if word.chars().count() > self.max_chars {
            out.push(self.unk_id()?);
            return Ok(());
        }
        let mark = out.len();
        let mut start = 0;
        let mut buf = String::new();
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                buf.clear();
                if start > 0 {
                    buf.push_str(&self.prefix);
                }
                buf.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(buf.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= word[start..end].chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => out.push(id),
                None => {
                    out.truncate(mark);
                    out.push(self.unk_id()?);
                    return Ok(());
                }
            }
            start = end;
        }
        Ok(())
    }
}
