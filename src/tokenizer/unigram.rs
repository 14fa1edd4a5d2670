//! Unigram: Viterbi over the log-probability lattice; consecutive unknown characters fuse
//! into one unk token, as HF does.

use std::collections::HashMap;

use serde_json::Value;

use super::json::{bool_or, field};
use super::trie::ByteTrie;
use crate::error::{Error, Result};

const UNK_PENALTY: f64 = 10.0;

/// A Unigram model.
#[derive(Debug, Clone)]
pub(crate) struct Unigram {
    /// Pieces in id order with their scores.
    pub pieces: Vec<(String, f64)>,
    /// Piece to id (the last id wins for duplicates).
    pub vocab: HashMap<String, u32>,
    trie: ByteTrie,
    unk: Option<u32>,
    min_score: f64,
    byte_fallback: bool,
}

impl Unigram {
    /// Parses a `model` object of type Unigram.
    pub(crate) fn from_json(v: &Value) -> Result<Unigram> {
        let ctx = "model";
        let list = field(v, "vocab", ctx)?
            .as_array()
            .ok_or_else(|| Error::format("model.vocab is not a list of [piece, score]"))?;
        let mut pieces = Vec::with_capacity(list.len());
        let mut vocab = HashMap::with_capacity(list.len());
        let mut trie = ByteTrie::new();
        let mut min_score = f64::INFINITY;
        for (i, e) in list.iter().enumerate() {
            let pair = e.as_array().filter(|a| a.len() == 2);
            let (piece, score) = match pair.map(|a| (a[0].as_str(), a[1].as_f64())) {
                Some((Some(p), Some(s))) => (p, s),
                _ => return Err(Error::format(format!("model.vocab[{i}] is not [piece, score]"))),
            };
            vocab.insert(piece.to_string(), i as u32);
            trie.insert(piece.as_bytes(), i as u32);
            min_score = min_score.min(score);
            pieces.push((piece.to_string(), score));
        }
        let unk = match v.get("unk_id") {
            None | Some(Value::Null) => None,
            Some(x) => {
                let u = x.as_u64().ok_or_else(|| Error::format("model.unk_id is not an integer"))?;
                if u as usize >= pieces.len() {
                    return Err(Error::format(format!("model.unk_id {u} is out of the vocabulary")));
                }
                Some(u as u32)
            }
        };
        Ok(Unigram { pieces, vocab, trie, unk, min_score, byte_fallback: bool_or(v, "byte_fallback", false, ctx)? })
    }

    fn missing_unk() -> Error {
        Error::format("Unigram model has no unk_id but the input has unknown characters")
    }

    /// Appends the ids of `word` to `out`.
    pub(crate) fn tokenize(&self, word: &str, out: &mut Vec<u32>) -> Result<()> {
        if word.is_empty() {
            return Ok(());
        }
        let bytes = word.as_bytes();
        let size = bytes.len();
        let unk_score = self.min_score - UNK_PENALTY;
        // (id, score, starts_at) of the best path ending at each byte offset.
        let mut best: Vec<(u32, f64, Option<usize>)> = vec![(0, 0.0, None); size + 1];
        let mut start = 0;
        while start < size {
            let till_here = best[start].1;
            let mblen = word[start..].chars().next().map_or(1, char::len_utf8);
            let mut has_single = false;
            self.trie.prefixes(bytes, start, |len, id| {
                let score = self.pieces[id as usize].1 + till_here;
                let node = &mut best[start + len];
                if node.2.is_none() || score > node.1 {
                    *node = (id, score, Some(start));
                }
                if len == mblen {
                    has_single = true;
                }
            });
            if !has_single {
                let unk = self.unk.ok_or_else(Self::missing_unk)?;
                let score = unk_score + till_here;
                let node = &mut best[start + mblen];
                if node.2.is_none() || score > node.1 {
                    *node = (unk, score, Some(start));
                }
            }
            start += mblen;
        }
        // Back-track, fusing consecutive unk pieces.
        let mut pieces: Vec<(usize, usize, bool)> = Vec::new();
        let mut end = size;
        while end > 0 {
            let (id, _, s) = best[end];
            let s = s.ok_or_else(|| Error::Internal("Unigram lattice has no path".into()))?;
            let is_unk = Some(id) == self.unk;
            match pieces.last_mut() {
                Some(last) if is_unk && last.2 => last.0 = s,
                _ => pieces.push((s, end, is_unk)),
            }
            end = s;
        }
        for &(s, e, _) in pieces.iter().rev() {
            let piece = &word[s..e];
            match self.vocab.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    if self.byte_fallback {
                        let ids: Option<Vec<u32>> =
                            piece.bytes().map(|b| self.vocab.get(&format!("<0x{b:02X}>")).copied()).collect();
                        if let Some(ids) = ids {
                            out.extend(ids);
                            continue;
                        }
                    }
                    out.push(self.unk.ok_or_else(Self::missing_unk)?);
                }
            }
        }
        Ok(())
    }
}
