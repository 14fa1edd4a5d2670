//! The RWKV "world" tokenizer: `rwkv_vocab_v20230424.txt` (lines `<id> <python literal>
//! <byte length>`) and greedy longest match over UTF-8 bytes, like the reference
//! `TRIE_TOKENIZER` of the `rwkv` package.

use std::collections::HashMap;

use super::trie::ByteTrie;
use crate::error::{Error, Result};

/// A loaded world vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct WorldTokenizer {
    /// id -> token bytes (`None` for ids not in the file, such as 0).
    tokens: Vec<Option<Vec<u8>>>,
    map: HashMap<Vec<u8>, u32>,
    trie: ByteTrie,
}

fn hex_value(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Parses a Python `str` or `bytes` literal into the bytes it stands for (UTF-8 for `str`).
pub(crate) fn parse_py_literal(lit: &str) -> std::result::Result<Vec<u8>, String> {
    let (is_bytes, rest) = match lit.as_bytes().first() {
        Some(b'b' | b'B') => (true, &lit[1..]),
        _ => (false, lit),
    };
    let quote = match rest.chars().next() {
        Some(q @ ('\'' | '"')) => q,
        _ => return Err(format!("`{lit}` is not a quoted Python literal")),
    };
    if rest.len() < 2 || !rest.ends_with(quote) {
        return Err(format!("`{lit}` is not closed by {quote}"));
    }
    let body = &rest[1..rest.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let push_char = |out: &mut Vec<u8>, c: char| {
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Err(format!("`{lit}` has an unescaped quote inside"));
        }
        if c != '\\' {
            if is_bytes && !c.is_ascii() {
                return Err(format!("`{lit}`: non-ASCII character in a bytes literal"));
            }
            push_char(&mut out, c);
            continue;
        }
        let Some((j, e)) = chars.next() else {
            return Err(format!("`{lit}` ends with a backslash"));
        };
        let simple = match e {
            '\\' => Some(b'\\'),
            '\'' => Some(b'\''),
            '"' => Some(b'"'),
            'n' => Some(b'\n'),
            't' => Some(b'\t'),
            'r' => Some(b'\r'),
            'a' => Some(7),
            'b' => Some(8),
            'f' => Some(12),
            'v' => Some(11),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let take_hex = |n: usize, chars: &mut std::iter::Peekable<std::str::CharIndices>| {
            let start = j + 1;
            let end = start + n;
            let digits = body.get(start..end).and_then(hex_value);
            if digits.is_some() {
                for _ in 0..n {
                    chars.next();
                }
            }
            digits
        };
        match e {
            'x' => {
                let v = take_hex(2, &mut chars).ok_or_else(|| format!("`{lit}`: bad \\x escape at {i}"))?;
                if is_bytes {
                    out.push(v as u8);
                } else {
                    push_char(&mut out, char::from_u32(v).unwrap_or('\u{fffd}'));
                }
            }
            'u' | 'U' if !is_bytes => {
                let n = if e == 'u' { 4 } else { 8 };
                let v = take_hex(n, &mut chars).ok_or_else(|| format!("`{lit}`: bad \\{e} escape at {i}"))?;
                let c = char::from_u32(v).ok_or_else(|| format!("`{lit}`: \\{e} escape is not a valid character"))?;
                push_char(&mut out, c);
            }
            '0'..='7' => {
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    match chars.peek() {
                        Some(&(_, d @ '0'..='7')) => {
                            v = v * 8 + (d as u32 - '0' as u32);
                            chars.next();
                        }
                        _ => break,
                    }
                }
                if is_bytes {
                    out.push((v & 0xff) as u8);
                } else {
                    push_char(&mut out, char::from_u32(v).unwrap_or('\u{fffd}'));
                }
            }
            '\n' => {}
            other => {
                // Python keeps unknown escapes as they are.
                out.push(b'\\');
                push_char(&mut out, other);
            }
        }
    }
    Ok(out)
}

impl WorldTokenizer {
    /// Parses the vocabulary file.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<WorldTokenizer> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::format(format!("world vocabulary is not UTF-8 (byte {})", e.valid_up_to())))?;
        // Every id must be below a bound set by the number of lines (see `id_table`); the
        // table grows as ids are read, but never past that bound.
        let n_lines = text.lines().count();
        let limit = 2 * n_lines + 1024;
        let mut tokens: Vec<Option<Vec<u8>>> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let lineno = n + 1;
            let bad = |what: &str| Error::format(format!("world vocabulary line {lineno}: {what}"));
            let (Some(a), Some(b)) = (line.find(' '), line.rfind(' ')) else {
                return Err(bad("expected `<id> <literal> <length>`"));
            };
            if a >= b {
                return Err(bad("expected `<id> <literal> <length>`"));
            }
            let id: u32 = line[..a].parse().map_err(|_| bad("bad id"))?;
            let len: usize = line[b + 1..].trim().parse().map_err(|_| bad("bad byte length"))?;
            let tok = parse_py_literal(line[a + 1..b].trim()).map_err(|e| bad(&e))?;
            if tok.len() != len {
                return Err(bad(&format!("token is {} bytes, the line says {len}", tok.len())));
            }
            if tok.is_empty() {
                return Err(bad("empty token"));
            }
            if id as usize >= limit {
                return Err(bad(&format!(
                    "id {id} is far beyond the file's {n_lines} lines (ids must stay below {limit})"
                )));
            }
            if tokens.len() <= id as usize {
                tokens
                    .try_reserve(id as usize + 1 - tokens.len())
                    .map_err(|_| Error::OutOfMemory(format!("world vocabulary: an id table of {} entries", id + 1)))?;
                tokens.resize(id as usize + 1, None);
            }
            if tokens[id as usize].is_some() {
                return Err(bad(&format!("duplicate id {id}")));
            }
            tokens[id as usize] = Some(tok);
        }
        Self::from_tokens(tokens)
    }

    /// A vocabulary from its tokens by id (`None`: an id with no text, such as 0 or a
    /// control token); a format error when a token is empty or appears twice.
    pub(crate) fn from_tokens(tokens: Vec<Option<Vec<u8>>>) -> Result<WorldTokenizer> {
        let mut map = HashMap::new();
        let mut trie = ByteTrie::new();
        for (id, tok) in tokens.iter().enumerate() {
            let Some(tok) = tok else { continue };
            if tok.is_empty() {
                return Err(Error::format(format!("world vocabulary: token {id} is empty")));
            }
            if let Some(first) = map.insert(tok.clone(), id as u32) {
                return Err(Error::format(format!("world vocabulary: tokens {first} and {id} are the same bytes")));
            }
            trie.insert(tok, id as u32);
        }
        if map.is_empty() {
            return Err(Error::format("world vocabulary is empty"));
        }
        Ok(WorldTokenizer { tokens, map, trie })
    }

    /// Max id + 1.
    pub(crate) fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Greedy longest match over the bytes of `text`.
    pub(crate) fn encode(&self, text: &[u8]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut pos = 0;
        while pos < text.len() {
            let (len, id) = self.trie.longest_match(text, pos).ok_or_else(|| {
                Error::invalid(format!("byte 0x{:02x} at offset {pos} has no token in the world vocabulary", text[pos]))
            })?;
            out.push(id);
            pos += len;
        }
        Ok(out)
    }

    /// The bytes of `id`; id 0 (end of text, not in the file) gives no bytes.
    pub(crate) fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        match self.tokens.get(id as usize) {
            Some(Some(t)) => Ok(t),
            _ if id == 0 => Ok(&[]),
            _ => Err(Error::invalid(format!(
                "token id {id} is not in the world vocabulary (size {})",
                self.vocab_size()
            ))),
        }
    }

    /// The id of the token whose bytes are `t`.
    pub(crate) fn token_to_id(&self, t: &[u8]) -> Option<u32> {
        self.map.get(t).copied()
    }

    /// The bytes of `id`, if it is in the file.
    pub(crate) fn id_to_token(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).and_then(|t| t.as_deref())
    }
}
