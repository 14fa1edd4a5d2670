//! C ABI: sessions (recurrent state: new, reset, clone, eval, save, load).

use super::{guard, guard_value, non_null, sutra_model};
use crate::error::Status;
use crate::error::{Error, Result};
use crate::Session;

/// One sequence's recurrent state (opaque). Used by one thread at a time. Released by
/// `sutra_session_free`.
pub struct sutra_session {
    pub(crate) session: Session,
}

fn session_new(s: Session, out: *mut *mut sutra_session) {
    let handle = Box::into_raw(Box::new(sutra_session { session: s }));
    // SAFETY: callers NULL-check `out`, which points to writable caller memory.
    unsafe { *out = handle };
}

/// Creates a session at the initial state of `model`.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_new(model: *const sutra_model, out_session: *mut *mut sutra_session) -> Status {
    guard(|| {
        non_null(model, "model")?;
        non_null(out_session, "out_session")?;
        // SAFETY: non-NULL model handles point to live sutra_model values.
        let m = unsafe { &*model };
        session_new(Session::new(&m.model), out_session);
        Ok(())
    })
}

/// Releases a session (NULL is a no-op).
#[no_mangle]
pub unsafe extern "C" fn sutra_session_free(session: *mut sutra_session) {
    if session.is_null() {
        return;
    }
    // SAFETY: a non-NULL session came from Box::into_raw in sutra_session_new/clone.
    guard_value((), || drop(unsafe { Box::from_raw(session) }))
}

/// Puts the session back to the initial (empty-context) state.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_reset(session: *mut sutra_session) -> Status {
    guard(|| {
        non_null(session, "session")?;
        // SAFETY: non-NULL session handles point to live sessions used by one thread.
        unsafe { &mut *session }.session.reset();
        Ok(())
    })
}

/// A new session with a copy of `session`'s state; both continue independently.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_clone(
    session: *const sutra_session,
    out_session: *mut *mut sutra_session,
) -> Status {
    guard(|| {
        non_null(session, "session")?;
        non_null(out_session, "out_session")?;
        // SAFETY: non-NULL session handles point to live sessions.
        let s = unsafe { &*session }.session.clone();
        session_new(s, out_session);
        Ok(())
    })
}

fn tokens_arg<'a>(tokens: *const i32, n: usize) -> Result<&'a [u32]> {
    if n == 0 {
        return Err(Error::invalid("n_tokens is 0: at least one token is needed"));
    }
    non_null(tokens, "tokens")?;
    // SAFETY: tokens is non-NULL and the caller guarantees n readable int32_t; i32 and u32
    // have the same layout, negative ids are rejected below.
    let ids = unsafe { std::slice::from_raw_parts(tokens.cast::<u32>(), n) };
    if let Some(pos) = ids.iter().position(|&t| (t as i32) < 0) {
        return Err(Error::invalid(format!("token id {} at position {pos} is negative", ids[pos] as i32)));
    }
    Ok(ids)
}

/// Checks the arguments of an eval call and runs it on the sequence or the step path.
fn eval_impl(
    session: *mut sutra_session,
    tokens: *const i32,
    n_tokens: usize,
    logits_out: *mut f32,
    stepwise: bool,
) -> Status {
    guard(|| {
        non_null(session, "session")?;
        let ids = tokens_arg(tokens, n_tokens)?;
        // SAFETY: non-NULL session handles point to live sessions used by one thread.
        let s = &mut unsafe { &mut *session }.session;
        let v = s.model().info().n_vocab;
        let logits = if logits_out.is_null() {
            None
        } else {
            // SAFETY: the caller provides n_vocab writable floats at logits_out.
            Some(unsafe { std::slice::from_raw_parts_mut(logits_out, v) })
        };
        if stepwise {
            s.eval_stepwise(ids, logits)
        } else {
            s.eval(ids, logits)
        }
    })
}

/// Feeds `n_tokens` tokens in order (sequence path when more than one); if `logits_out` is
/// not NULL it receives `n_vocab` floats: the logits after the last token.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_eval(
    session: *mut sutra_session,
    tokens: *const i32,
    n_tokens: usize,
    logits_out: *mut f32,
) -> Status {
    eval_impl(session, tokens, n_tokens, logits_out, false)
}

/// Like `sutra_session_eval` but steps one token at a time (the single-token path), e.g. to
/// compare paths or to bound latency per call.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_eval_stepwise(
    session: *mut sutra_session,
    tokens: *const i32,
    n_tokens: usize,
    logits_out: *mut f32,
) -> Status {
    eval_impl(session, tokens, n_tokens, logits_out, true)
}

/// Bytes needed by `sutra_session_state_save`.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_state_size(session: *const sutra_session, out_bytes: *mut usize) -> Status {
    guard(|| {
        non_null(session, "session")?;
        non_null(out_bytes, "out_bytes")?;
        // SAFETY: non-NULL handles/pointers per the checks above.
        unsafe { *out_bytes = (*session).session.state_size() };
        Ok(())
    })
}

/// Writes the state blob (versioned, fingerprinted, checksummed) into `buf`.
/// SUTRA_ERR_BUFFER_TOO_SMALL when `buf_len` is less than `sutra_session_state_size`.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_state_save(
    session: *const sutra_session,
    buf: *mut u8,
    buf_len: usize,
) -> Status {
    guard(|| {
        non_null(session, "session")?;
        non_null(buf, "buf")?;
        // SAFETY: non-NULL session handle; the caller provides buf_len writable bytes at buf.
        let (s, out) = unsafe { (&(*session).session, std::slice::from_raw_parts_mut(buf, buf_len)) };
        s.save_state(out).map(|_| ())
    })
}

/// Restores a state blob saved from a model of the same shape. A foreign, truncated or
/// corrupted blob gives SUTRA_ERR_FORMAT and leaves the session unchanged.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_state_load(
    session: *mut sutra_session,
    buf: *const u8,
    buf_len: usize,
) -> Status {
    guard(|| {
        non_null(session, "session")?;
        non_null(buf, "buf")?;
        // SAFETY: non-NULL session handle; the caller provides buf_len readable bytes at buf.
        let (s, data) = unsafe { (&mut (*session).session, std::slice::from_raw_parts(buf, buf_len)) };
        s.load_state(data)
    })
}
