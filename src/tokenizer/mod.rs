//! Tokenizers: Hugging Face `tokenizer.json` files (BPE, WordPiece, Unigram) and the RWKV
//! "world" vocabulary (`rwkv_vocab_v20230424.txt`), implemented without external tokenizer
//! crates and matching HF `tokenizers` 0.23 / the `rwkv` package's `TRIE_TOKENIZER`.
//!
//! # Streaming decode
//!
//! [`Tokenizer::decode_bytes`] returns the raw bytes the ids stand for, so a generation loop
//! can decode one id at a time and buffer until the bytes form complete UTF-8 characters:
//!
//! * byte-level BPE and world: the bytes of a single id are exactly its share of the text
//!   (concatenating per-id results equals decoding all ids at once);
//! * Metaspace (SentencePiece-style, e.g. Unigram): as in HF, the replacement character `▁`
//!   of the *first* token decodes to nothing, so a single token `▁the` decodes to `the`.
//!   Decode with the previous token as a prefix and subtract it to keep the space;
//! * WordPiece: tokens after the first get a leading space unless they start with `##`,
//!   which is removed; a single token decodes to itself (with `##` kept).
//!
//! `decode` of the whole sequence is exact in every case.

mod bpe;
mod decoder;
mod gguf;
mod hf;
mod json;
mod normalize;
mod pretokenize;
mod trie;
mod unigram;
mod wordpiece;
mod world;

use std::path::Path;

use crate::error::{Error, Result};

/// A loaded tokenizer. Immutable after loading, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Hf(Box<hf::HfTokenizer>),
    World(Box<world::WorldTokenizer>),
}

impl Tokenizer {
    /// Loads a HF tokenizer.json (BPE, WordPiece, Unigram), an RWKV world vocab
    /// (rwkv_vocab_v20230424.txt format) or the tokenizer inside a GGUF model file
    /// ([`from_gguf`](Self::from_gguf)), detected by content.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        if crate::format::magic(path)? == *crate::format::gguf::MAGIC {
            return Self::from_gguf(&crate::format::gguf::GgufFile::open(path, true)?);
        }
        let bytes = crate::format::read_file(path, "tokenizer", crate::format::MAX_SIDE_FILE)?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata: the RWKV world
    /// vocabulary (`rwkv`) or a byte-level BPE (`gpt2`, with its merges).
    pub fn from_gguf(g: &crate::format::gguf::GgufFile) -> Result<Tokenizer> {
        Ok(Tokenizer { inner: gguf::from_gguf(g).map_err(|e| e.context(&g.name))? })
    }

    /// Same from bytes already in memory (a tokenizer.json, a world vocabulary or a GGUF
    /// file); `name` is used in error messages.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Tokenizer> {
        if bytes.starts_with(crate::format::gguf::MAGIC) {
            let storage = std::sync::Arc::new(crate::tensor::Storage::from_bytes(bytes));
            return Self::from_gguf(&crate::format::gguf::GgufFile::parse(storage, name)?);
        }
        let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        let inner = match first {
            Some(b'{') => Inner::Hf(Box::new(hf::HfTokenizer::from_json_bytes(bytes).map_err(|e| e.context(name))?)),
            Some(b'0'..=b'9') => {
                Inner::World(Box::new(world::WorldTokenizer::from_bytes(bytes).map_err(|e| e.context(name))?))
            }
            _ => return Err(Error::format(format!("{name}: neither a tokenizer.json nor an RWKV world vocabulary"))),
        };
        Ok(Tokenizer { inner })
    }

    /// Encodes UTF-8 text. `add_special_tokens` applies the post-processor template
    /// (e.g. BERT `[CLS] .. [SEP]`). Added and special tokens written in the text are matched
    /// as tokens either way, as HF does; the world tokenizer has no special tokens.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Hf(t) => t.encode(text, add_special_tokens),
            Inner::World(t) => t.encode(text.as_bytes()),
        }
    }

    /// Same for raw bytes: invalid UTF-8 gives [`Error::InvalidArgument`] naming the byte offset.
    pub fn encode_bytes(&self, text: &[u8], add_special_tokens: bool) -> Result<Vec<u32>> {
        let s = std::str::from_utf8(text)
            .map_err(|e| Error::invalid(format!("text is not valid UTF-8 at byte offset {}", e.valid_up_to())))?;
        self.encode(s, add_special_tokens)
    }

    /// The raw bytes the ids stand for, concatenated (for streaming: may end in a partial
    /// UTF-8 char). Applies the decoder (byte-level, Metaspace, WordPiece `##`) as HF
    /// `decode(skip_special_tokens=false)` would, but returns bytes; see the module docs for
    /// single-token semantics. An unknown id gives [`Error::InvalidArgument`]. For the world
    /// vocabulary, id 0 (end of text, absent from the file) decodes to no bytes.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, false, false),
            Inner::World(t) => {
                let mut out = Vec::with_capacity(ids.len() * 4);
                for &id in ids {
                    out.extend_from_slice(t.token_bytes(id)?);
                }
                Ok(out)
            }
        }
    }

    /// HF-compatible decode to a `String` (never invalid UTF-8: lossy replacement like HF).
    /// `skip_special_tokens` drops special added tokens, as in HF. An unknown id gives
    /// [`Error::InvalidArgument`].
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let bytes = match &self.inner {
            Inner::Hf(t) => t.decode(ids, skip_special_tokens, true)?,
            Inner::World(_) => self.decode_bytes(ids)?,
        };
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Number of ids (max id + 1, added tokens included).
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Hf(t) => t.vocab_size(),
            Inner::World(t) => t.vocab_size(),
        }
    }

    /// The id of a token string (HF: added tokens first, then the model vocabulary, with
    /// tokens as stored, e.g. `Ġthe`; world: the token's UTF-8 bytes).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Hf(t) => t.token_to_id(token),
            Inner::World(t) => t.token_to_id(token.as_bytes()),
        }
    }

    /// The token string of an id (HF: as stored in the vocabulary; world: the token's bytes,
    /// lossily converted when they are not valid UTF-8 on their own).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Hf(t) => t.id_to_token(id).map(str::to_string),
            Inner::World(t) => t.id_to_token(id).map(|b| String::from_utf8_lossy(b).into_owned()),
        }
    }

    /// `"bpe"`, `"wordpiece"`, `"unigram"` or `"rwkv-world"`.
    pub fn kind(&self) -> &'static str {
        match &self.inner {
            Inner::Hf(t) => t.kind(),
            Inner::World(_) => "rwkv-world",
        }
    }
}

/// The id table of a vocabulary file: `size` empty slots, `size` being 1 + the largest id
/// the file names. Ids are dense in real vocabularies; a file naming ids far beyond its own
/// number of tokens (`n_tokens`) is refused before anything is allocated, so that a small file
/// cannot make the process allocate gigabytes, and the allocation itself is fallible.
pub(crate) fn id_table<T: Clone>(size: usize, n_tokens: usize, what: &str) -> Result<Vec<Option<T>>> {
    let limit = 2 * n_tokens + 1024;
    if size > limit {
        return Err(Error::format(format!(
            "{what}: token id {} is far beyond its {n_tokens} tokens (ids must stay below {limit})",
            size - 1
        )));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(size).map_err(|_| Error::OutOfMemory(format!("{what}: an id table of {size} entries")))?;
    v.resize(size, None);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
    }

    #[test]
    fn python_literals() {
        let p = |s: &str| world::parse_py_literal(s).unwrap();
        assert_eq!(p(r"'\x00'"), [0]);
        assert_eq!(p(r"'\xe0'"), "\u{e0}".as_bytes());
        assert_eq!(p(r"b'\xe0\xb8'"), [0xe0, 0xb8]);
        assert_eq!(p(r#""it's""#), b"it's");
        assert_eq!(p(r"'\'\\\n\t'"), b"'\\\n\t");
        assert_eq!(p(r"'\u4e2d'"), "中".as_bytes());
        assert_eq!(p(r"'\U0001F600'"), "😀".as_bytes());
        assert_eq!(p("' '"), b" ");
    }
}
