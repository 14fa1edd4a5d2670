//! Hugging Face `tokenizer.json`: parsing, added tokens, the encode pipeline
//! (added tokens → normalizer → pre-tokenizer → model → post-processor) and decoding.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::bpe::{Bpe, Cache};
use super::decoder::Decoder;
use super::json::{bool_or, field, opt_str, str_field, type_of};
use super::normalize::Normalizer;
use super::pretokenize::{is_word_char, Piece, PreTokenizer};
use super::trie::ByteTrie;
use super::unigram::Unigram;
use super::wordpiece::WordPiece;
use crate::error::{Error, Result};

// ---------------------------------------------------------------- model

/// The model of a `tokenizer.json`.
#[derive(Debug, Clone)]
pub(crate) enum Model {
    /// Byte-pair encoding.
    Bpe(Bpe),
    /// WordPiece.
    WordPiece(WordPiece),
    /// Unigram.
    Unigram(Unigram),
}

impl Model {
    fn from_json(v: &Value) -> Result<Model> {
        if !v.is_object() {
            return Err(Error::format("model is not an object"));
        }
        let ty = match opt_str(v, "type", "model")? {
            Some(t) => t,
            // Old files without `type`: guess from the fields, as HF's untagged fallback does.
            None if v.get("vocab").is_some_and(Value::is_array) => "Unigram",
            None if v.get("merges").is_some() => "BPE",
            None if v.get("max_input_chars_per_word").is_some() => "WordPiece",
            None => return Err(Error::format("model: missing field `type`")),
        };
        Ok(match ty {
            "BPE" => Model::Bpe(Bpe::from_json(v)?),
            "WordPiece" => Model::WordPiece(WordPiece::from_json(v)?),
            "Unigram" => Model::Unigram(Unigram::from_json(v)?),
            other => return Err(Error::unsupported(format!("model type `{other}`"))),
        })
    }

    fn tokens(&self) -> Vec<(String, u32)> {
        match self {
            Model::Bpe(m) => m.vocab.iter().map(|(k, &v)| (k.clone(), v)).collect(),
            Model::WordPiece(m) => m.vocab.iter().map(|(k, &v)| (k.clone(), v)).collect(),
            Model::Unigram(m) => m.pieces.iter().enumerate().map(|(i, (k, _))| (k.clone(), i as u32)).collect(),
        }
    }

    fn token_to_id(&self, t: &str) -> Option<u32> {
        match self {
            Model::Bpe(m) => m.vocab.get(t).copied(),
            Model::WordPiece(m) => m.vocab.get(t).copied(),
            Model::Unigram(m) => m.vocab.get(t).copied(),
        }
    }

    fn tokenize(&self, word: &str, out: &mut Vec<u32>, cache: &mut Cache) -> Result<()> {
        match self {
            Model::Bpe(m) => {
                m.tokenize(word, out, cache);
                Ok(())
            }
            Model::WordPiece(m) => m.tokenize(word, out),
            Model::Unigram(m) => m.tokenize(word, out),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Model::Bpe(_) => "bpe",
            Model::WordPiece(_) => "wordpiece",
            Model::Unigram(_) => "unigram",
        }
    }
}

// ---------------------------------------------------------------- added tokens

/// One entry of `added_tokens`.
#[derive(Debug, Clone)]
struct AddedToken {
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

/// A set of added tokens matched leftmost-longest in text.
#[derive(Debug, Clone, Default)]
struct Matcher {
    trie: ByteTrie,
    /// Trie value -> index in `HfTokenizer::added`.
    index: Vec<usize>,
}

/// A segment of text after splitting on added tokens.
enum Seg {
    /// An added token.
    Token(u32),
    /// Plain text, a byte range.
    Text(usize, usize),
}

impl Matcher {
    fn build(keys: Vec<(usize, String)>) -> Matcher {
        let mut m = Matcher::default();
        for (i, key) in keys {
            if key.is_empty() {
                continue;
            }
            m.trie.insert(key.as_bytes(), m.index.len() as u32);
            m.index.push(i);
        }
        m
    }

    /// Splits `s` at matches of the added tokens, honoring single_word/lstrip/rstrip.
    fn split(&self, s: &str, tokens: &[AddedToken]) -> Vec<Seg> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut offset = 0; // end of the last emitted segment
        let mut pos = 0;
        if !self.trie.is_empty() {
            while pos < bytes.len() {
                if !self.trie.has_first_byte(bytes[pos]) || !s.is_char_boundary(pos) {
                    pos += 1;
                    continue;
                }
                let Some((len, v)) = self.trie.longest_match(bytes, pos) else {
                    pos += 1;
                    continue;
                };
                let tok = &tokens[self.index[v as usize]];
                let (mut start, mut stop) = (pos, pos + len);
                if tok.single_word {
                    let before = s[..start].chars().next_back().is_some_and(is_word_char);
                    let after = s[stop..].chars().next().is_some_and(is_word_char);
                    if before || after {
                        // HF's match iterator resumes after the rejected match.
                        pos += len;
                        continue;
                    }
                }
                if tok.lstrip {
                    let trimmed = s[..start].trim_end_matches(char::is_whitespace).len();
                    start = trimmed.max(offset);
                }
                if tok.rstrip {
                    stop = s.len() - s[stop..].trim_start_matches(char::is_whitespace).len();
                }
                if offset < start {
                    out.push(Seg::Text(offset, start));
                }
                out.push(Seg::Token(tok.id));
                offset = stop;
                pos = stop;
            }
        }
        if offset < s.len() {
            out.push(Seg::Text(offset, s.len()));
        }
        out
    }
}

// ---------------------------------------------------------------- post-processor

/// One item of a template.
#[derive(Debug, Clone)]
enum TemplateItem {
    /// Fixed ids.
    Special(Vec<u32>),
    /// The encoded sequence.
    Sequence,
}

#[derive(Debug, Clone)]
struct PostProcessor {
    /// Templates applied in order (a `Sequence` of processors).
    templates: Vec<Vec<TemplateItem>>,
}

fn parse_post(v: &Value, out: &mut Vec<Vec<TemplateItem>>) -> Result<()> {
    let ctx = "post_processor";
    match type_of(v, ctx)? {
        "ByteLevel" => {}
        "TemplateProcessing" => {
            let specials = field(v, "special_tokens", ctx)?;
            let single = field(v, "single", ctx)?
                .as_array()
                .ok_or_else(|| Error::format("post_processor: `single` is not a list"))?;
            let mut t = Vec::new();
            for item in single {
                if let Some(sp) = item.get("SpecialToken") {
                    let name = str_field(sp, "id", "post_processor.single.SpecialToken")?;
                    let entry = specials.get(name).ok_or_else(|| {
                        Error::format(format!("post_processor: special token `{name}` not in special_tokens"))
                    })?;
                    let ids = field(entry, "ids", "post_processor.special_tokens")?
                        .as_array()
                        .ok_or_else(|| Error::format("post_processor.special_tokens: `ids` is not a list"))?
                        .iter()
                        .map(|x| {
                            x.as_u64()
                                .map(|n| n as u32)
                                .ok_or_else(|| Error::format("post_processor.special_tokens: id is not an integer"))
                        })
                        .collect::<Result<Vec<u32>>>()?;
                    t.push(TemplateItem::Special(ids));
                } else if item.get("Sequence").is_some() {
                    t.push(TemplateItem::Sequence);
                } else {
                    return Err(Error::format("post_processor.single: item is neither SpecialToken nor Sequence"));
                }
            }
            out.push(t);
        }
        ty @ ("BertProcessing" | "RobertaProcessing") => {
            let id = |name: &str| -> Result<u32> {
                field(v, name, ctx)?
                    .as_array()
                    .and_then(|a| a.get(1))
                    .and_then(Value::as_u64)
                    .map(|n| n as u32)
                    .ok_or_else(|| Error::format(format!("post_processor {ty}: `{name}` is not [token, id]")))
            };
            out.push(vec![
                TemplateItem::Special(vec![id("cls")?]),
                TemplateItem::Sequence,
                TemplateItem::Special(vec![id("sep")?]),
            ]);
        }
        "Sequence" => {
            let list = field(v, "processors", ctx)?
                .as_array()
                .ok_or_else(|| Error::format("post_processor Sequence: `processors` is not a list"))?;
            for p in list {
                parse_post(p, out)?;
            }
        }
        other => return Err(Error::unsupported(format!("post_processor type `{other}`"))),
    }
    Ok(())
}

// ---------------------------------------------------------------- tokenizer

/// A loaded `tokenizer.json`.
#[derive(Debug, Clone)]
pub(crate) struct HfTokenizer {
    normalizer: Option<Normalizer>,
    pre_tokenizer: Option<PreTokenizer>,
    model: Model,
    post: Option<PostProcessor>,
    decoder: Option<Decoder>,
    added: Vec<AddedToken>,
    raw_matcher: Matcher,
    norm_matcher: Matcher,
    /// id -> token string (added tokens override the model).
    id_to_tok: Vec<Option<String>>,
    /// id -> is a special added token.
    special: Vec<bool>,
    added_map: HashMap<String, u32>,
}

fn optional<'a>(root: &'a Value, name: &str) -> Option<&'a Value> {
    root.get(name).filter(|v| !v.is_null())
}

impl HfTokenizer {
    /// Parses `tokenizer.json` bytes.
    pub(crate) fn from_json_bytes(bytes: &[u8]) -> Result<HfTokenizer> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| Error::format(format!("invalid JSON: {e}")))?;
        if !root.is_object() {
            return Err(Error::format("tokenizer.json is not a JSON object"));
        }
        let model = Model::from_json(field(&root, "model", "tokenizer.json")?)?;
        let normalizer = optional(&root, "normalizer").map(Normalizer::from_json).transpose()?;
        let pre_tokenizer = optional(&root, "pre_tokenizer").map(PreTokenizer::from_json).transpose()?;
        let decoder = optional(&root, "decoder").map(Decoder::from_json).transpose()?;
        let post = match optional(&root, "post_processor") {
            Some(v) => {
                let mut templates = Vec::new();
                parse_post(v, &mut templates)?;
                Some(PostProcessor { templates })
            }
            None => None,
        };
        let mut added = Vec::new();
        if let Some(list) = optional(&root, "added_tokens") {
            let list = list.as_array().ok_or_else(|| Error::format("added_tokens is not a list"))?;
            for (i, t) in list.iter().enumerate() {
                let ctx = format!("added_tokens[{i}]");
                let id = field(t, "id", &ctx)?
                    .as_u64()
                    .filter(|&n| n <= u32::MAX as u64)
                    .ok_or_else(|| Error::format(format!("{ctx}: `id` is not a u32")))?;
                added.push(AddedToken {
                    id: id as u32,
                    content: str_field(t, "content", &ctx)?.to_string(),
                    single_word: bool_or(t, "single_word", false, &ctx)?,
                    lstrip: bool_or(t, "lstrip", false, &ctx)?,
                    rstrip: bool_or(t, "rstrip", false, &ctx)?,
                    normalized: bool_or(t, "normalized", true, &ctx)?,
                    special: bool_or(t, "special", false, &ctx)?,
                });
            }
        }
        // Id tables.
        let model_tokens = model.tokens();
        let max_id = model_tokens.iter().map(|t| t.1).chain(added.iter().map(|t| t.id)).max();
        let size = max_id.map_or(0, |m| m as usize + 1);
        let mut id_to_tok: Vec<Option<String>> =
            super::id_table(size, model_tokens.len() + added.len(), "tokenizer.json")?;
        for (t, id) in model_tokens {
            id_to_tok[id as usize] = Some(t);
        }
        let mut added_map = HashMap::new();
        for t in &added {
            // HF reports (and decodes) normalized added tokens by their normalized content.
            let shown = match (&normalizer, t.normalized) {
                (Some(n), true) => n.normalize(&t.content),
                _ => t.content.clone(),
            };
            id_to_tok[t.id as usize] = Some(shown);
            added_map.insert(t.content.clone(), t.id);
        }
        let special_set: HashSet<&str> = added.iter().filter(|t| t.special).map(|t| t.content.as_str()).collect();
        let special = id_to_tok.iter().map(|t| t.as_deref().is_some_and(|t| special_set.contains(t))).collect();
        // Matchers: non-normalized tokens on raw text, normalized ones on normalized text.
        let raw_keys =
            added.iter().enumerate().filter(|(_, t)| !t.normalized).map(|(i, t)| (i, t.content.clone())).collect();
        let norm_keys = added
            .iter()
            .enumerate()
            .filter(|(_, t)| t.normalized)
            .map(|(i, t)| (i, normalizer.as_ref().map_or_else(|| t.content.clone(), |n| n.normalize(&t.content))))
            .collect();
        let raw_matcher = Matcher::build(raw_keys);
        let norm_matcher = Matcher::build(norm_keys);
        Ok(HfTokenizer {
            normalizer,
            pre_tokenizer,
            model,
            post,
            decoder,
            added,
            raw_matcher,
            norm_matcher,
            id_to_tok,
            special,
            added_map,
        })
    }

    /// "bpe", "wordpiece" or "unigram".
    pub(crate) fn kind(&self) -> &'static str {
        self.model.kind()
    }

    /// Max id + 1.
    pub(crate) fn vocab_size(&self) -> usize {
        self.id_to_tok.len()
    }

    /// Added tokens first, then the model vocabulary.
    pub(crate) fn token_to_id(&self, t: &str) -> Option<u32> {
        self.added_map.get(t).copied().or_else(|| self.model.token_to_id(t))
    }

    /// The token string of `id`.
    pub(crate) fn id_to_token(&self, id: u32) -> Option<&str> {
        self.id_to_tok.get(id as usize).and_then(|t| t.as_deref())
    }

    /// Encodes `text`.
    pub(crate) fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        let mut cache = Cache::new();
        for seg in self.raw_matcher.split(text, &self.added) {
            let (start, end) = match seg {
                Seg::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Seg::Text(s, e) => (s, e),
            };
            let normalized = match &self.normalizer {
                Some(n) => n.normalize(&text[start..end]),
                None => text[start..end].to_string(),
            };
            for seg in self.norm_matcher.split(&normalized, &self.added) {
                let (s, e) = match seg {
                    Seg::Token(id) => {
                        ids.push(id);
                        continue;
                    }
                    Seg::Text(s, e) => (s, e),
                };
                let piece = Piece { text: normalized[s..e].to_string(), first: start == 0 && s == 0 };
                match &self.pre_tokenizer {
                    Some(p) => {
                        for w in p.apply(vec![piece]) {
                            self.model.tokenize(&w.text, &mut ids, &mut cache)?;
                        }
                    }
                    None => self.model.tokenize(&piece.text, &mut ids, &mut cache)?,
                }
            }
        }
        if add_special_tokens {
            if let Some(post) = &self.post {
                for t in &post.templates {
                    let mut out = Vec::with_capacity(ids.len() + 4);
                    for item in t {
                        match item {
                            TemplateItem::Special(s) => out.extend_from_slice(s),
                            TemplateItem::Sequence => out.extend_from_slice(&ids),
                        }
                    }
                    ids = out;
                }
            }
        }
        Ok(ids)
    }

    /// Decodes `ids` through the decoder; `lossy` gives HF's string semantics.
    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool, lossy: bool) -> Result<Vec<u8>> {
        let mut tokens = Vec::with_capacity(ids.len());
        for &id in ids {
            let t = self.id_to_token(id).ok_or_else(|| {
                Error::invalid(format!("token id {id} is not in the vocabulary (size {})", self.vocab_size()))
            })?;
            if skip_special && self.special[id as usize] {
                continue;
            }
            tokens.push(t.as_bytes().to_vec());
        }
        Ok(match &self.decoder {
            Some(d) => d.decode_chain(tokens, lossy).concat(),
            None => tokens.join(&b' '),
        })
    }
}
