//! C ABI: sessions (recurrent state: new, reset, clone, eval, batch eval, save, load).

use super::{get, get_mut, guard, hand_out, release, slice, slice_mut, sutra_model, write_out};
use crate::error::{Result, Status};
use crate::Session;

/// One sequence's recurrent state (opaque). Used by one thread at a time. Released by
/// `sutra_session_free`.
pub struct sutra_session {
    pub(crate) session: Session,
}

/// Creates a session at the initial state of `model`.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_new(model: *const sutra_model, out_session: *mut *mut sutra_session) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        let m = unsafe { get(model, "model") }?;
        // SAFETY: out-parameter per the C contract.
        unsafe { hand_out(out_session, sutra_session { session: Session::new(&m.model) }, "out_session") }
    })
}

/// Releases a session (NULL is a no-op).
#[no_mangle]
pub unsafe extern "C" fn sutra_session_free(session: *mut sutra_session) {
    // SAFETY: NULL or a handle from sutra_session_new/clone.
    unsafe { release(session) }
}

/// Puts the session back to the initial (empty-context) state. Also clears the mark of an
/// evaluation that failed with SUTRA_ERR_INTERNAL (after which every eval is refused).
#[no_mangle]
pub unsafe extern "C" fn sutra_session_reset(session: *mut sutra_session) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        unsafe { get_mut(session, "session") }?.session.reset();
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
        // SAFETY: handle per the C contract.
        let s = unsafe { get(session, "session") }?.session.clone();
        // SAFETY: out-parameter per the C contract.
        unsafe { hand_out(out_session, sutra_session { session: s }, "out_session") }
    })
}

/// Converts the arguments of an eval call and runs it on the sequence or the step path.
fn eval_impl(
    session: *mut sutra_session,
    tokens: *const i32,
    n_tokens: usize,
    logits_out: *mut f32,
    stepwise: bool,
) -> Result<()> {
    // SAFETY: handle and buffers per the C contract (n_tokens ids, n_vocab floats).
    let s = &mut unsafe { get_mut(session, "session") }?.session;
    // SAFETY: as above.
    let ids = unsafe { slice(tokens, n_tokens, "tokens") }?;
    let v = s.model().info().n_vocab;
    let logits = if logits_out.is_null() {
        None
    } else {
        // SAFETY: the caller provides n_vocab writable floats at logits_out.
        Some(unsafe { slice_mut(logits_out, v, "logits_out") }?)
    };
    s.eval_ids(ids, logits, stepwise)
}

/// Feeds `n_tokens` tokens in order (sequence path when more than one); if `logits_out` is
/// not NULL it receives `n_vocab` floats: the logits after the last token. After a call that
/// fails with SUTRA_ERR_INTERNAL every later eval of the session fails, naming the cause,
/// until `sutra_session_reset`.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_eval(
    session: *mut sutra_session,
    tokens: *const i32,
    n_tokens: usize,
    logits_out: *mut f32,
) -> Status {
    guard(|| eval_impl(session, tokens, n_tokens, logits_out, false))
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
    guard(|| eval_impl(session, tokens, n_tokens, logits_out, true))
}

/// Advances `n_sessions` distinct sessions of one model in one pass, reading each weight once
/// for all of them: session i is fed `n_tokens[i] >= 1` tokens from `tokens[i]`. `logits_out`
/// is NULL or `n_sessions * n_vocab` floats: row i receives the logits after session i's last
/// token. Results equal `n_sessions` separate `sutra_session_eval` calls (to float rounding).
/// On error no session is changed.
#[no_mangle]
pub unsafe extern "C" fn sutra_batch_eval(
    sessions: *const *mut sutra_session,
    n_sessions: usize,
    tokens: *const *const i32,
    n_tokens: *const usize,
    logits_out: *mut f32,
) -> Status {
    guard(|| {
        // SAFETY: n_sessions handles, token pointers and counts per the C contract.
        let (hs, toks, ns) = unsafe {
            (
                slice(sessions, n_sessions, "sessions")?,
                slice(tokens, n_sessions, "tokens")?,
                slice(n_tokens, n_sessions, "n_tokens")?,
            )
        };
        for (i, h) in hs.iter().enumerate() {
            if hs[..i].contains(h) {
                return Err(crate::Error::invalid(format!(
                    "sessions[{i}] is sessions[{}] again: sessions must be distinct",
                    hs[..i].iter().position(|p| p == h).unwrap_or(0)
                )));
            }
        }
        let mut ids = Vec::with_capacity(n_sessions);
        for (i, (&t, &n)) in toks.iter().zip(ns).enumerate() {
            // SAFETY: tokens[i] holds n_tokens[i] ids per the C contract.
            ids.push(unsafe { slice(t, n, &format!("tokens[{i}]")) }?);
        }
        let mut ss = Vec::with_capacity(n_sessions);
        for (i, &h) in hs.iter().enumerate() {
            // SAFETY: distinct live handles (checked above), used by this thread only.
            ss.push(&mut unsafe { get_mut(h, &format!("sessions[{i}]")) }?.session);
        }
        let v = ss.first().map_or(0, |s| s.model().info().n_vocab);
        let logits = if logits_out.is_null() {
            None
        } else {
            // SAFETY: the caller provides n_sessions * n_vocab writable floats.
            Some(unsafe { slice_mut(logits_out, n_sessions * v, "logits_out") }?)
        };
        Session::eval_batch_ids(&mut ss, &ids, logits)
    })
}

/// Bytes needed by `sutra_session_state_save`.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_state_size(session: *const sutra_session, out_bytes: *mut usize) -> Status {
    guard(|| {
        // SAFETY: handle and out-parameter per the C contract.
        unsafe { write_out(out_bytes, get(session, "session")?.session.state_size(), "out_bytes") }
    })
}

/// Writes the state blob (versioned, fingerprinted, checksummed) into `buf`.
/// SUTRA_ERR_BUFFER_TOO_SMALL when `buf_len` is less than `sutra_session_state_size`.
/// The blob holds the recurrent state only, not the session's adapters.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_state_save(
    session: *const sutra_session,
    buf: *mut u8,
    buf_len: usize,
) -> Status {
    guard(|| {
        // SAFETY: handle and buf_len writable bytes per the C contract.
        let (s, out) = unsafe { (get(session, "session")?, slice_mut(buf, buf_len, "buf")?) };
        s.session.save_state(out).map(|_| ())
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
        // SAFETY: handle and buf_len readable bytes per the C contract.
        let (s, data) = unsafe { (get_mut(session, "session")?, slice(buf, buf_len, "buf")?) };
        s.session.load_state(data)
    })
}
