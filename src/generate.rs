//! Generation: feed a prompt, sample up to N tokens, and stream the text as whole UTF-8
//! characters, with stop strings (also when split across tokens; never emitted), stop
//! tokens, and a callback that can stop early.

use crate::error::{Error, Result};
use crate::sample::Sampler;
use crate::tokenizer::Tokenizer;
use crate::Session;

/// What to generate.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    /// Most tokens to sample.
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these; the stop text is not emitted.
    pub stop_strings: Vec<String>,
    /// Generation stops when one of these is sampled; it is not emitted nor fed.
    pub stop_tokens: Vec<u32>,
    /// Apply the tokenizer's post-processor template to the prompt (e.g. BOS).
    pub add_special_tokens: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were sampled.
    MaxTokens,
    /// A stop token was sampled.
    StopToken,
    /// A stop string appeared in the text.
    StopString,
    /// The callback returned false.
    Callback,
}

/// The outcome of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// Tokens the prompt encoded to.
    pub n_prompt_tokens: usize,
    /// Tokens sampled and fed (a stop token excluded).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
}

/// Turns token ids into text pieces that are always whole UTF-8 characters, holding back
/// incomplete characters and any tail that could be the start of a stop string.
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    prev: Option<u32>,
    /// Bytes not yet forming complete characters.
    bytes: Vec<u8>,
    /// Text held back because it may begin a stop string.
    pending: String,
    stops: Vec<String>,
}

impl<'t> TextStream<'t> {
    /// A stream over `tok` with the given stop strings (empty ones are ignored).
    pub fn new(tok: &'t Tokenizer, stops: &[String]) -> TextStream<'t> {
        let stops = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        TextStream { tok, prev: None, bytes: Vec::new(), pending: String::new(), stops }
    }

    /// The bytes `id` adds to the text. Decoders that treat the first token specially
    /// (Metaspace, WordPiece) are given the previous token as context.
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        if let Some(prev) = self.prev {
            let before = self.tok.decode_bytes(&[prev])?;
            let both = self.tok.decode_bytes(&[prev, id])?;
            if both.starts_with(&before) {
                return Ok(both[before.len()..].to_vec());
            }
        }
        self.tok.decode_bytes(&[id])
    }

    /// Moves complete characters from `bytes` to `pending`; invalid sequences become U+FFFD.
    fn drain_utf8(&mut self, flush: bool) {
        loop {
            match std::str::from_utf8(&self.bytes) {
                Ok(s) => {
                    self.pending.push_str(s);
                    self.bytes.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.pending.push_str(std::str::from_utf8(&self.bytes[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            self.pending.push('\u{FFFD}');
                            self.bytes.drain(..valid + n);
                        }
                        None if flush => {
                            self.pending.push('\u{FFFD}');
                            self.bytes.clear();
                            return;
                        }
                        None => {
                            self.bytes.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Adds one token. Returns the text that can be shown now, and whether a stop string
    /// was completed (the text before it is returned, the rest is dropped).
    pub fn push(&mut self, id: u32) -> Result<(String, bool)> {
        let b = self.token_bytes(id)?;
        self.prev = Some(id);
        self.bytes.extend_from_slice(&b);
        self.drain_utf8(false);
        // A complete stop string: emit what precedes the earliest one.
        if let Some(pos) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            self.bytes.clear();
            return Ok((out, true));
        }
        // Hold back the longest tail that is a proper prefix of a stop string.
        let hold = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.pending[i..])))
            .unwrap_or(self.pending.len());
        let out = self.pending[..hold].to_string();
        self.pending.drain(..hold);
        Ok((out, false))
    }

    /// End of the stream: everything held back (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        self.drain_utf8(true);
        std::mem::take(&mut self.pending)
    }
}

/// Feeds `prompt` to `session`, then samples up to `params.max_tokens` tokens, feeding each
/// back and passing the text to `on_piece` as whole UTF-8 characters. `on_piece` returning
/// false stops cleanly (the token whose text it saw has been fed).
pub fn generate(
    session: &mut Session,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &str,
    params: &GenerateParams,
    on_piece: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let n_vocab = session.model().info().n_vocab;
    if let Some((i, t)) = params.stop_tokens.iter().enumerate().find(|(_, &t)| t as usize >= n_vocab) {
        return Err(Error::invalid(format!(
            "stop token {t} (stop_tokens[{i}]) is out of range: the model's vocabulary has {n_vocab} ids"
        )));
    }
    let ids = tok.encode(prompt, params.add_special_tokens)?;
    if ids.is_empty() {
        return Err(Error::invalid("the prompt encodes to no tokens: give at least one character"));
    }
    let usable = tok.vocab_size().min(n_vocab);
    let mut logits = vec![0f32; n_vocab];
    session.eval(&ids, Some(&mut logits))?;
    let mut stream = TextStream::new(tok, &params.stop_strings);
    let mut tokens = Vec::new();
    let mut stop = StopReason::MaxTokens;
    while tokens.len() < params.max_tokens {
        // Ids past the tokenizer's vocabulary (padding rows of the head) cannot be decoded.
        logits[usable..].fill(f32::NEG_INFINITY);
        let t = sampler.sample(&logits)?;
        if params.stop_tokens.contains(&t) {
            stop = StopReason::StopToken;
            break;
        }
        sampler.accept(t);
        tokens.push(t);
        let (text, hit) = stream.push(t)?;
        let more = !hit && tokens.len() < params.max_tokens;
        session.eval(&[t], if more { Some(&mut logits) } else { None })?;
        if !text.is_empty() && !on_piece(&text) {
            stop = StopReason::Callback;
            break;
        }
        if hit {
            stop = StopReason::StopString;
            break;
        }
    }
    if matches!(stop, StopReason::MaxTokens | StopReason::StopToken) {
        let rest = stream.finish();
        if !rest.is_empty() && !on_piece(&rest) {
            stop = StopReason::Callback;
        }
    }
    Ok(Generation { n_prompt_tokens: ids.len(), tokens, stop })
}
