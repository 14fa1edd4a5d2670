//! C ABI: sampler chains and streamed generation.

use super::{get_mut, guard, hand_out, non_null, release, slice, sutra_session, sutra_tokenizer, write_out};
use crate::error::{Error, Result, Status};
use crate::generate::{generate, GenerateParams, StopReason};
use crate::sample::{Sampler, Stage};
use std::ffi::{c_char, c_void, CStr};

/// A sampler chain (opaque): stages applied in the order added, a seeded random generator
/// and the token history the penalties use. Used by one thread at a time. Released by
/// `sutra_sampler_free`.
pub struct sutra_sampler {
    pub(crate) sampler: Sampler,
}

/// Receives each generated piece of text: `len` bytes of whole UTF-8 characters (not
/// NUL-terminated). Return false to stop generation.
pub type sutra_piece_callback =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user_data: *mut c_void) -> bool>;

/// Why `sutra_generate` stopped.
/// cbindgen:prefix-with-name
/// cbindgen:rename-all=ScreamingSnakeCase
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sutra_stop_reason {
    /// `max_tokens` were generated.
    MaxTokens = 0,
    /// A stop token was sampled (not emitted, not fed).
    StopToken = 1,
    /// A stop string appeared (not emitted).
    StopString = 2,
    /// The callback returned false.
    Callback = 3,
}

/// What `sutra_generate` should do. Start from `sutra_generate_default_params()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sutra_generate_params {
    /// Most tokens to generate.
    pub max_tokens: i32,
    /// `n_stop_strings` NUL-terminated UTF-8 strings that end generation (may be NULL if 0).
    pub stop_strings: *const *const c_char,
    /// Number of stop strings.
    pub n_stop_strings: usize,
    /// `n_stop_tokens` token ids that end generation (may be NULL if 0).
    pub stop_tokens: *const i32,
    /// Number of stop tokens.
    pub n_stop_tokens: usize,
    /// Apply the tokenizer's special-token template to the prompt.
    pub add_special_tokens: bool,
}

/// What `sutra_generate` did.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sutra_generate_result {
    /// Tokens the prompt encoded to.
    pub n_prompt_tokens: i32,
    /// Tokens generated and fed to the session.
    pub n_generated: i32,
    /// Why it stopped.
    pub stop_reason: sutra_stop_reason,
}

/// Creates an empty sampler chain drawing with `seed` (same seed, same tokens). Without a
/// final `greedy` or `dist` stage the chain draws from the softmax of what is left.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_new(seed: u64, out_sampler: *mut *mut sutra_sampler) -> Status {
    guard(|| {
        // SAFETY: out-parameter per the C contract.
        unsafe { hand_out(out_sampler, sutra_sampler { sampler: Sampler::new(seed) }, "out_sampler") }
    })
}

/// Releases a sampler (NULL is a no-op).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_free(sampler: *mut sutra_sampler) {
    // SAFETY: NULL or a handle from sutra_sampler_new, freed once.
    unsafe { release(sampler) }
}

fn add(sampler: *mut sutra_sampler, stage: impl FnOnce() -> Result<Stage>) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        unsafe { get_mut(sampler, "sampler") }?.sampler.add(stage()?)?;
        Ok(())
    })
}

/// Appends greedy selection (argmax).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_greedy(sampler: *mut sutra_sampler) -> Status {
    add(sampler, || Ok(Stage::Greedy))
}

/// Appends a draw from the softmax of the remaining candidates.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_dist(sampler: *mut sutra_sampler) -> Status {
    add(sampler, || Ok(Stage::Dist))
}

/// Appends temperature scaling (t <= 0 selects greedily).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_temperature(sampler: *mut sutra_sampler, t: f32) -> Status {
    add(sampler, || Ok(Stage::Temperature(t)))
}

/// Appends top-k truncation (k = 0 is off).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_top_k(sampler: *mut sutra_sampler, k: i32) -> Status {
    add(sampler, || {
        if k < 0 {
            return Err(Error::invalid(format!("top_k {k}: must be >= 0")));
        }
        Ok(Stage::TopK(k as usize))
    })
}

/// Appends top-p (nucleus) truncation keeping at least `min_keep` candidates.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_top_p(sampler: *mut sutra_sampler, p: f32, min_keep: usize) -> Status {
    add(sampler, || Ok(Stage::TopP { p, min_keep }))
}

/// Appends min-p truncation: keeps candidates with probability >= p × the best one's.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_min_p(sampler: *mut sutra_sampler, p: f32) -> Status {
    add(sampler, || Ok(Stage::MinP(p)))
}

/// Appends repetition/frequency/presence penalties over the last `last_n` tokens (0 = all).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_penalties(
    sampler: *mut sutra_sampler,
    last_n: i32,
    repeat: f32,
    frequency: f32,
    presence: f32,
) -> Status {
    add(sampler, || {
        if last_n < 0 {
            return Err(Error::invalid(format!("last_n {last_n}: must be >= 0")));
        }
        Ok(Stage::Penalties { last_n: last_n as usize, repeat, frequency, presence })
    })
}

/// Appends RWKV's decaying presence penalty: logit -= presence + frequency × occurrence,
/// occurrences decaying by `decay` each step.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_rwkv_presence(
    sampler: *mut sutra_sampler,
    presence: f32,
    frequency: f32,
    decay: f32,
) -> Status {
    add(sampler, || Ok(Stage::RwkvPresence { presence, frequency, decay }))
}

/// Appends a logit bias: `bias[i]` is added to the logit of `ids[i]` (-INFINITY bans it).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_add_logit_bias(
    sampler: *mut sutra_sampler,
    ids: *const i32,
    bias: *const f32,
    n: usize,
) -> Status {
    add(sampler, || {
        if n == 0 {
            return Ok(Stage::LogitBias(Vec::new()));
        }
        non_null(ids, "ids")?;
        non_null(bias, "bias")?;
        // SAFETY: both arrays hold n readable elements per the contract.
        let (ids, bias) = unsafe { (std::slice::from_raw_parts(ids, n), std::slice::from_raw_parts(bias, n)) };
        if let Some(&bad) = ids.iter().find(|&&i| i < 0) {
            return Err(Error::invalid(format!("logit bias token id {bad} is negative")));
        }
        Ok(Stage::LogitBias(ids.iter().map(|&i| i as u32).zip(bias.iter().copied()).collect()))
    })
}

/// Picks a token from `n_vocab` logits into `*out_token` (does not accept it).
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_sample(
    sampler: *mut sutra_sampler,
    logits: *const f32,
    n_vocab: usize,
    out_token: *mut i32,
) -> Status {
    guard(|| {
        non_null(out_token, "out_token")?;
        // SAFETY: handle, n_vocab readable floats and the out-parameter per the C contract.
        let (s, l) = unsafe { (get_mut(sampler, "sampler")?, slice(logits, n_vocab, "logits")?) };
        let t = s.sampler.sample(l)?;
        // SAFETY: as above.
        unsafe { write_out(out_token, t as i32, "out_token") }
    })
}

/// Records `token` as generated, for the penalties.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_accept(sampler: *mut sutra_sampler, token: i32) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        let s = unsafe { get_mut(sampler, "sampler") }?;
        let token = u32::try_from(token).map_err(|_| Error::invalid(format!("token {token} is negative")))?;
        s.sampler.accept(token);
        Ok(())
    })
}

/// Clears the history and restarts the random generator from the seed.
#[no_mangle]
pub unsafe extern "C" fn sutra_sampler_reset(sampler: *mut sutra_sampler) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        unsafe { get_mut(sampler, "sampler") }?.sampler.reset();
        Ok(())
    })
}

/// Default generation parameters: 128 tokens, no stop strings or tokens, no special tokens.
#[no_mangle]
pub extern "C" fn sutra_generate_default_params() -> sutra_generate_params {
    sutra_generate_params {
        max_tokens: 128,
        stop_strings: std::ptr::null(),
        n_stop_strings: 0,
        stop_tokens: std::ptr::null(),
        n_stop_tokens: 0,
        add_special_tokens: false,
    }
}

fn params_of(p: &sutra_generate_params) -> Result<GenerateParams> {
    if p.max_tokens < 0 {
        return Err(Error::invalid(format!("max_tokens {}: must be >= 0", p.max_tokens)));
    }
    let mut stop_strings = Vec::with_capacity(p.n_stop_strings);
    if p.n_stop_strings > 0 {
        non_null(p.stop_strings, "params.stop_strings")?;
        // SAFETY: stop_strings holds n_stop_strings pointers per the contract.
        let ptrs = unsafe { std::slice::from_raw_parts(p.stop_strings, p.n_stop_strings) };
        for (i, &s) in ptrs.iter().enumerate() {
            non_null(s, &format!("params.stop_strings[{i}]"))?;
            // SAFETY: non-NULL and NUL-terminated per the contract.
            let s = unsafe { CStr::from_ptr(s) }
                .to_str()
                .map_err(|_| Error::invalid(format!("params.stop_strings[{i}] is not UTF-8")))?;
            stop_strings.push(s.to_string());
        }
    }
    let mut stop_tokens = Vec::new();
    if p.n_stop_tokens > 0 {
        non_null(p.stop_tokens, "params.stop_tokens")?;
        // SAFETY: stop_tokens holds n_stop_tokens ids per the contract.
        let ids = unsafe { std::slice::from_raw_parts(p.stop_tokens, p.n_stop_tokens) };
        stop_tokens = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                u32::try_from(id)
                    .map_err(|_| Error::invalid(format!("params.stop_tokens[{i}] = {id}: token ids are >= 0")))
            })
            .collect::<Result<Vec<u32>>>()?;
    }
    Ok(GenerateParams {
        max_tokens: p.max_tokens as usize,
        stop_strings,
        stop_tokens,
        add_special_tokens: p.add_special_tokens,
    })
}

/// Feeds `prompt_len` bytes of UTF-8 `prompt` to `session`, then samples with `sampler`
/// up to `params->max_tokens` tokens, feeding each back and passing the text to `callback`
/// in pieces of whole UTF-8 characters. Stop strings (also split across tokens) are not
/// emitted. `params` may be NULL for defaults; `out_result` may be NULL. The session keeps
/// the state after the last fed token, so a chat continues with the next prompt.
#[no_mangle]
pub unsafe extern "C" fn sutra_generate(
    session: *mut sutra_session,
    tokenizer: *const sutra_tokenizer,
    sampler: *mut sutra_sampler,
    prompt: *const c_char,
    prompt_len: usize,
    params: *const sutra_generate_params,
    callback: sutra_piece_callback,
    user_data: *mut c_void,
    out_result: *mut sutra_generate_result,
) -> Status {
    guard(|| {
        non_null(session, "session")?;
        non_null(tokenizer, "tokenizer")?;
        non_null(sampler, "sampler")?;
        non_null(prompt, "prompt")?;
        // SAFETY: params is NULL or points to a caller-owned struct.
        let p = if params.is_null() { sutra_generate_default_params() } else { unsafe { *params } };
        let gp = params_of(&p)?;
        // SAFETY: prompt holds prompt_len readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(prompt.cast::<u8>(), prompt_len) };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::invalid(format!("prompt is not valid UTF-8 at byte offset {}", e.valid_up_to())))?;
        // SAFETY: live handles, each used by this thread only for the duration of the call.
        let (s, t, sm) = unsafe { (&mut (*session).session, &(*tokenizer).tok, &mut (*sampler).sampler) };
        let mut emit = |piece: &str| match callback {
            // SAFETY: the caller supplied the callback with its user data.
            Some(cb) => unsafe { cb(piece.as_ptr().cast(), piece.len(), user_data) },
            None => true,
        };
        let g = generate(s, t, sm, text, &gp, &mut emit)?;
        if !out_result.is_null() {
            let r = sutra_generate_result {
                n_prompt_tokens: g.n_prompt_tokens as i32,
                n_generated: g.tokens.len() as i32,
                stop_reason: match g.stop {
                    StopReason::MaxTokens => sutra_stop_reason::MaxTokens,
                    StopReason::StopToken => sutra_stop_reason::StopToken,
                    StopReason::StopString => sutra_stop_reason::StopString,
                    StopReason::Callback => sutra_stop_reason::Callback,
                },
            };
            // SAFETY: out_result is non-NULL and writable.
            unsafe { *out_result = r };
        }
        Ok(())
    })
}
