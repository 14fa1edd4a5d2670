//! C ABI: tokenizers (load, free, tokenize, detokenize).

use super::{guard, guard_value, hand_out, non_null, path_arg, release};
use crate::error::{Error, Status};
use crate::Tokenizer;
use std::ffi::c_char;

/// A loaded tokenizer (opaque, immutable, shareable by threads). Released by
/// `sutra_tokenizer_free`.
pub struct sutra_tokenizer {
    pub(crate) tok: Tokenizer,
}

/// Loads a Hugging Face tokenizer.json (BPE, WordPiece or Unigram model) or an RWKV world
/// vocabulary file (rwkv_vocab_v20230424.txt format).
#[no_mangle]
pub unsafe extern "C" fn sutra_tokenizer_load(path: *const c_char, out_tokenizer: *mut *mut sutra_tokenizer) -> Status {
    guard(|| {
        non_null(out_tokenizer, "out_tokenizer")?;
        // SAFETY: path is NULL-checked inside; NUL-terminated per the C contract.
        let path = unsafe { path_arg(path, "path") }?;
        let tok = Tokenizer::from_file(&path)?;
        // SAFETY: out-parameter per the C contract (checked above).
        unsafe { hand_out(out_tokenizer, sutra_tokenizer { tok }, "out_tokenizer") }
    })
}

/// Releases a tokenizer (NULL is a no-op).
#[no_mangle]
pub unsafe extern "C" fn sutra_tokenizer_free(tokenizer: *mut sutra_tokenizer) {
    // SAFETY: NULL or a handle from sutra_tokenizer_load, freed once.
    unsafe { release(tokenizer) }
}

/// Number of token ids of the tokenizer (largest id + 1), or -1 when `tokenizer` is NULL.
#[no_mangle]
pub unsafe extern "C" fn sutra_tokenizer_n_vocab(tokenizer: *const sutra_tokenizer) -> i32 {
    if tokenizer.is_null() {
        return -1;
    }
    // SAFETY: non-NULL tokenizer handles point to live tokenizers.
    guard_value(-1, || unsafe { &*tokenizer }.tok.vocab_size() as i32)
}

/// The id of the token spelled `token` (NUL-terminated), or -1 when there is none or an
/// argument is NULL.
#[no_mangle]
pub unsafe extern "C" fn sutra_tokenizer_token_id(tokenizer: *const sutra_tokenizer, token: *const c_char) -> i32 {
    if tokenizer.is_null() || token.is_null() {
        return -1;
    }
    guard_value(-1, || {
        // SAFETY: non-NULL, NUL-terminated per the contract; the handle is live.
        let (t, s) = unsafe { (&(*tokenizer).tok, std::ffi::CStr::from_ptr(token)) };
        s.to_str().ok().and_then(|s| t.token_to_id(s)).map_or(-1, |id| id as i32)
    })
}

/// Encodes `text_len` bytes of UTF-8 `text` (invalid UTF-8 is SUTRA_ERR_INVALID_ARGUMENT).
/// `*n_ids` receives the number of ids, also when `ids_cap` is too small (then
/// SUTRA_ERR_BUFFER_TOO_SMALL and nothing is written to `ids_out`, which may be NULL).
#[no_mangle]
pub unsafe extern "C" fn sutra_tokenize(
    tokenizer: *const sutra_tokenizer,
    text: *const c_char,
    text_len: usize,
    add_special_tokens: bool,
    ids_out: *mut i32,
    ids_cap: usize,
    n_ids: *mut usize,
) -> Status {
    guard(|| {
        non_null(tokenizer, "tokenizer")?;
        non_null(n_ids, "n_ids")?;
        if text_len > 0 {
            non_null(text, "text")?;
        }
        // SAFETY: the handle is live; text has text_len readable bytes (or is unused when 0).
        let (t, bytes) = unsafe {
            (
                &(*tokenizer).tok,
                if text_len == 0 { &[][..] } else { std::slice::from_raw_parts(text.cast::<u8>(), text_len) },
            )
        };
        let ids = t.encode_bytes(bytes, add_special_tokens)?;
        // SAFETY: n_ids is non-NULL and writable.
        unsafe { *n_ids = ids.len() };
        if ids.len() > ids_cap {
            return Err(Error::BufferTooSmall { needed: ids.len(), given: ids_cap });
        }
        if !ids.is_empty() {
            non_null(ids_out, "ids_out")?;
            // SAFETY: ids_out holds ids_cap >= ids.len() writable int32_t.
            let out = unsafe { std::slice::from_raw_parts_mut(ids_out, ids.len()) };
            out.iter_mut().zip(&ids).for_each(|(o, &i)| *o = i as i32);
        }
        Ok(())
    })
}

/// Writes the UTF-8 text of `n_ids` ids to `text_out` (not NUL-terminated); `*n_bytes` as in
/// `sutra_tokenize`. Bytes that do not form valid UTF-8 are replaced by U+FFFD.
#[no_mangle]
pub unsafe extern "C" fn sutra_detokenize(
    tokenizer: *const sutra_tokenizer,
    ids: *const i32,
    n_ids: usize,
    text_out: *mut c_char,
    text_cap: usize,
    n_bytes: *mut usize,
) -> Status {
    guard(|| {
        non_null(tokenizer, "tokenizer")?;
        non_null(n_bytes, "n_bytes")?;
        if n_ids > 0 {
            non_null(ids, "ids")?;
        }
        // SAFETY: the handle is live; ids has n_ids readable int32_t (or is unused when 0).
        let (t, ids) =
            unsafe { (&(*tokenizer).tok, if n_ids == 0 { &[][..] } else { std::slice::from_raw_parts(ids, n_ids) }) };
        if let Some(pos) = ids.iter().position(|&i| i < 0) {
            return Err(Error::invalid(format!("token id {} at position {pos} is negative", ids[pos])));
        }
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let text = t.decode(&ids, false)?;
        // SAFETY: n_bytes is non-NULL and writable.
        unsafe { *n_bytes = text.len() };
        if text.len() > text_cap {
            return Err(Error::BufferTooSmall { needed: text.len(), given: text_cap });
        }
        if !text.is_empty() {
            non_null(text_out, "text_out")?;
            // SAFETY: text_out holds text_cap >= text.len() writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), text_out.cast::<u8>(), text.len()) };
        }
        Ok(())
    })
}
