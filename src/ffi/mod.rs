//! The C ABI: the only `extern "C"` code of libsutra.
//!
//! Every function here does argument checks, a panic boundary, conversion, and one call into
//! the safe API — nothing else. Ownership: each `*_new`/`*_load`/`*_clone` hands out a
//! `Box` (released by the matching `*_free`); a model is held in an `Arc`, so sessions keep
//! it alive even if the caller frees the model first. Errors set a thread-local message read
//! by [`sutra_last_error`]. The conventions are those of `docs/c-api.md`.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

mod generate;
mod lora;
mod model;
mod quant;
mod session;
mod system;
mod tokenizer;

pub use generate::*;
pub use lora::*;
pub use model::*;
pub use quant::*;
pub use session::*;
pub use system::*;
pub use tokenizer::*;

use crate::error::{Error, Result, Status};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Progress callback of long operations: `fraction` in [0, 1]; return false to cancel.
pub type sutra_progress_callback =
    Option<unsafe extern "C" fn(fraction: f32, user_data: *mut std::ffi::c_void) -> bool>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f` behind the panic boundary and turns its result into a status, recording the
/// message of a failure for [`sutra_last_error`].
pub(crate) fn guard(f: impl FnOnce() -> Result<()>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::SUTRA_OK,
        Ok(Err(e)) => {
            set_error(&e.to_string());
            e.status()
        }
        Err(panic) => {
            let what = crate::error::panic_message(&*panic);
            set_error(&format!("internal error (panic caught at the C boundary): {what}"));
            Status::SUTRA_ERR_INTERNAL
        }
    }
}

/// Like [`guard`] for functions that cannot report a status (free, getters): a panic is
/// swallowed and `fallback` returned.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// `Err(InvalidArgument)` naming `what` when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T, what: &str) -> Result<()> {
    if p.is_null() {
        Err(Error::invalid(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// The live object behind handle `p`, or `InvalidArgument` naming `what` when it is NULL.
///
/// # Safety
/// `p` is NULL or a handle this library handed out that the caller has not freed, not used
/// mutably by another thread for the duration of the borrow.
pub(crate) unsafe fn get<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    non_null(p, what)?;
    // SAFETY: non-NULL handles point to live objects (the caller's contract above).
    Ok(unsafe { &*p })
}

/// [`get`] for a handle used mutably (one thread at a time, per the contract).
///
/// # Safety
/// As [`get`], and no other reference to the object is alive during the borrow.
pub(crate) unsafe fn get_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    non_null(p, what)?;
    // SAFETY: non-NULL handles point to live objects used by this thread only.
    Ok(unsafe { &mut *p })
}

/// Writes `v` through the out-parameter `out` (`InvalidArgument` naming `what` when NULL).
///
/// # Safety
/// `out` is NULL or points to writable memory for a `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, v: T, what: &str) -> Result<()> {
    non_null(out, what)?;
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { out.write(v) };
    Ok(())
}

/// Hands `v` out as a new handle (a `Box`, released by [`release`]) through `out`.
///
/// # Safety
/// As [`write_out`]; check `out` before doing work whose result would be lost.
pub(crate) unsafe fn hand_out<T>(out: *mut *mut T, v: T, what: &str) -> Result<()> {
    non_null(out, what)?;
    // SAFETY: checked non-NULL; writable per the caller's contract.
    unsafe { out.write(Box::into_raw(Box::new(v))) };
    Ok(())
}

/// Releases a handle made by [`hand_out`]; NULL is a no-op, a panic in a destructor is
/// swallowed.
///
/// # Safety
/// `p` is NULL or a handle from [`hand_out`] not yet released.
pub(crate) unsafe fn release<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: a non-NULL handle came from Box::into_raw in hand_out, released once.
        guard_value((), || drop(unsafe { Box::from_raw(p) }))
    }
}

/// `n` readable elements at `p` (NULL is refused, even for `n` = 0).
///
/// # Safety
/// `p` is NULL or points to `n` readable, initialized `T`s that outlive the borrow.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T]> {
    non_null(p, what)?;
    // SAFETY: non-NULL with n readable elements per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// `n` writable elements at `p` (NULL is refused, even for `n` = 0).
///
/// # Safety
/// `p` is NULL or points to `n` writable `T`s not otherwise borrowed.
pub(crate) unsafe fn slice_mut<'a, T>(p: *mut T, n: usize, what: &str) -> Result<&'a mut [T]> {
    non_null(p, what)?;
    // SAFETY: non-NULL with n writable elements per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// A NUL-terminated path argument as a `PathBuf`.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub(crate) unsafe fn path_arg(p: *const c_char, what: &str) -> Result<std::path::PathBuf> {
    non_null(p, what)?;
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(format!("{what} is an empty string: no file is named")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(std::path::PathBuf::from)
            .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
    }
}

/// The library version (the crate's semver), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn sutra_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the most recent failed call on this thread; never NULL (`""` when none).
/// Valid until this thread's next `sutra_` call.
#[no_mangle]
pub extern "C" fn sutra_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), || LAST_ERROR.with(|e| e.borrow().as_ptr()))
}

/// A static, human-readable name of a status code ("SUTRA_ERR_FORMAT", ...); a value that is
/// no status gives "SUTRA_UNKNOWN_STATUS". Never NULL.
#[no_mangle]
pub extern "C" fn sutra_status_name(status: i32) -> *const c_char {
    let Ok(status) = Status::try_from(status) else { return c"SUTRA_UNKNOWN_STATUS".as_ptr() };
    let s: &'static CStr = match status {
        Status::SUTRA_OK => c"SUTRA_OK",
        Status::SUTRA_ERR_INVALID_ARGUMENT => c"SUTRA_ERR_INVALID_ARGUMENT",
        Status::SUTRA_ERR_IO => c"SUTRA_ERR_IO",
        Status::SUTRA_ERR_FORMAT => c"SUTRA_ERR_FORMAT",
        Status::SUTRA_ERR_UNSUPPORTED => c"SUTRA_ERR_UNSUPPORTED",
        Status::SUTRA_ERR_BUFFER_TOO_SMALL => c"SUTRA_ERR_BUFFER_TOO_SMALL",
        Status::SUTRA_ERR_OUT_OF_MEMORY => c"SUTRA_ERR_OUT_OF_MEMORY",
        Status::SUTRA_ERR_CANCELLED => c"SUTRA_ERR_CANCELLED",
        Status::SUTRA_ERR_INTERNAL => c"SUTRA_ERR_INTERNAL",
    };
    s.as_ptr()
}
