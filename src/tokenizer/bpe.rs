//! Byte-pair encoding: merges applied by rank (lowest first, leftmost on ties), as HF does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde_json::Value;

use super::json::{bool_or, field, opt_str, vocab_map};
use crate::error::{Error, Result};

/// A BPE model.
#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    /// Token string to id.
    pub vocab: HashMap<String, u32>,
    /// `(left, right)` to `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    unk: Option<u32>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    prefix: Option<String>,
    suffix: Option<String>,
    /// Byte-fallback ids of `<0x00>`..`<0xFF>` where present.
    byte_ids: Vec<Option<u32>>,
}

/// Per-call cache of word encodings.
pub(crate) type Cache = HashMap<String, Vec<u32>>;

impl Bpe {
    /// Parses a `model` object of type BPE.
    pub(crate) fn from_json(v: &Value) -> Result<Bpe> {
        let ctx = "model";
        let vocab = vocab_map(field(v, "vocab", ctx)?, "model.vocab")?;
        let prefix = opt_str(v, "continuing_subword_prefix", ctx)?.map(str::to_string);
        let suffix = opt_str(v, "end_of_word_suffix", ctx)?.map(str::to_string);
        let list = field(v, "merges", ctx)?.as_array().ok_or_else(|| Error::format("model.merges is not a list"))?;
        let mut merges = HashMap::with_capacity(list.len());
        let lookup = |s: &str| {
            vocab
                .get(s)
                .copied()
                .ok_or_else(|| Error::format(format!("model.merges: token `{s}` is not in the vocabulary")))
        };
        for (rank, m) in list.iter().enumerate() {
            let (a, b): (&str, &str) = match m {
                Value::String(s) => {
                    let mut parts = s.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => (a, b),
                        _ => return Err(Error::format(format!("model.merges[{rank}]: `{s}` is not two tokens"))),
                    }
                }
                Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                    (Some(a), Some(b)) => (a, b),
                    _ => return Err(Error::format(format!("model.merges[{rank}] is not a pair of strings"))),
                },
                _ => return Err(Error::format(format!("model.merges[{rank}] is not a merge"))),
            };
            let b_tail = match &prefix {
                Some(p) => b.strip_prefix(p.as_str()).unwrap_or(b),
                None => b,
            };
            let merged = lookup(&format!("{a}{b_tail}"))?;
            merges.entry((lookup(a)?, lookup(b)?)).or_insert((rank as u32, merged));
        }
        // HF fails on the first unknown character when the unk token is missing; refusing
        // the file at load says so once, instead of dropping unknown text silently.
        let unk = match opt_str(v, "unk_token", ctx)? {
            Some(u) => Some(
                vocab
                    .get(u)
                    .copied()
                    .ok_or_else(|| Error::format(format!("{ctx}: unk_token {u:?} is not in the vocabulary")))?,
            ),
            None => None,
        };
        let byte_ids: Vec<Option<u32>> = (0..=255u8).map(|b| vocab.get(&format!("<0x{b:02X}>")).copied()).collect();
        Ok(Bpe {
            merges,
            unk,
            fuse_unk: bool_or(v, "fuse_unk", false, ctx)?,
            byte_fallback: bool_or(v, "byte_fallback", false, ctx)?,
            ignore_merges: bool_or(v, "ignore_merges", false, ctx)?,
            prefix,
            suffix,
            byte_ids,
            vocab,
        })
    }

    /// Appends the ids of `word` to `out`.
    pub(crate) fn tokenize(&self, word: &str, out: &mut Vec<u32>, cache: &mut Cache) {
        if let Some(ids) = cache.get(word) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.tokenize_uncached(word);
        out.extend_from_slice(&ids);
        if cache.len() < 100_000 {
            cache.insert(word.to_string(), ids);
        }
    }

    fn tokenize_uncached(&self, word: &str) -> Vec<u32> {
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(word) {
                return vec![id];
            }
        }
        // Initial symbols: (id, alive).
        let mut syms: Vec<u32> = Vec::with_capacity(word.len());
        let mut unk: Option<u32> = None;
        let mut buf = String::new();
        let mut it = word.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            let is_last = it.peek().is_none();
            buf.clear();
            if i > 0 {
                if let Some(p) = &self.prefix {
                    buf.push_str(p);
                }
            }
            buf.push(c);
            if is_last {
                if let Some(s) = &self.suffix {
                    buf.push_str(s);
                }
            }
            if let Some(&id) = self.vocab.get(buf.as_str()) {
                if let Some(u) = unk.take() {
                    syms.push(u);
                }
                syms.push(id);
                continue;
            }
            if self.byte_fallback {
                // HF only falls back when every byte of the char has a token.
                let ids: Option<Vec<u32>> = buf.bytes().map(|b| self.byte_ids[b as usize]).collect();
                if let Some(ids) = ids {
                    if let Some(u) = unk.take() {
                        syms.push(u);
                    }
                    syms.extend(ids);
                    continue;
                }
            }
            if let Some(u) = self.unk {
                match unk {
                    Some(_) if self.fuse_unk => {}
                    Some(prev) => {
                        syms.push(prev);
                        unk = Some(u);
                    }
                    None => unk = Some(u),
                }
            }
        }
        if let Some(u) = unk {
            syms.push(u);
        }
        self.merge(syms)
    }

    fn merge(&self, ids: Vec<u32>) -> Vec<u32> {
        let n = ids.len();
        if n < 2 {
            return ids;
        }
        let mut id = ids;
        let mut next: Vec<usize> = (1..=n).collect(); // n = none
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect(); // usize::MAX = none
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, new)) = self.merges.get(&(id[i], id[i + 1])) {
                heap.push(Reverse((rank, i, new)));
            }
        }
        while let Some(Reverse((rank, i, new))) = heap.pop() {
            if !alive[i] {
                continue;
            }
            let r = next[i];
            if r >= n {
                continue;
            }
            match self.merges.get(&(id[i], id[r])) {
                Some(&(_, m)) if m == new => {}
                _ => continue,
            }
            let _ = rank;
            id[i] = new;
            alive[r] = false;
            next[i] = next[r];
            if next[r] < n {
                prev[next[r]] = i;
            }
            let p = prev[i];
            if p != usize::MAX {
                if let Some(&(rk, nw)) = self.merges.get(&(id[p], id[i])) {
                    heap.push(Reverse((rk, p, nw)));
                }
            }
            if next[i] < n {
                if let Some(&(rk, nw)) = self.merges.get(&(id[i], id[next[i]])) {
                    heap.push(Reverse((rk, i, nw)));
                }
            }
        }
        (0..n).filter(|&i| alive[i]).map(|i| id[i]).collect()
    }
}
