//! The one error type of libsutra.
//!
//! Every fallible function of the safe API returns [`Result`]. Each variant maps to exactly
//! one C status code ([`Error::status`]), and its message names what was wrong: the file, the
//! tensor, the argument, the expected and the found shape or value.

use std::path::Path;

/// Stable numeric status codes shared by the Rust API and the C ABI (`sutra_status`).
///
/// The numbers never change once released; new codes are appended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Status {
    /// Success.
    SUTRA_OK = 0,
    /// An argument was NULL, out of range or otherwise unusable.
    SUTRA_ERR_INVALID_ARGUMENT = 1,
    /// The operating system refused a file operation (missing file, permissions, ...).
    SUTRA_ERR_IO = 2,
    /// A file or buffer is not what it claims to be: truncated, corrupted, inconsistent shapes.
    SUTRA_ERR_FORMAT = 3,
    /// A valid file of an architecture, version or dtype that libsutra does not support.
    SUTRA_ERR_UNSUPPORTED = 4,
    /// A caller buffer is too small; the needed size was reported.
    SUTRA_ERR_BUFFER_TOO_SMALL = 5,
    /// An allocation failed.
    SUTRA_ERR_OUT_OF_MEMORY = 6,
    /// A progress callback asked to stop.
    SUTRA_ERR_CANCELLED = 7,
    /// A bug in libsutra (a caught panic, a broken invariant).
    SUTRA_ERR_INTERNAL = 8,
}

impl TryFrom<i32> for Status {
    type Error = Error;
    /// The status with C value `v` (an integer from C is checked, never transmuted).
    fn try_from(v: i32) -> Result<Status> {
        const ALL: [Status; 9] = [
            Status::SUTRA_OK,
            Status::SUTRA_ERR_INVALID_ARGUMENT,
            Status::SUTRA_ERR_IO,
            Status::SUTRA_ERR_FORMAT,
            Status::SUTRA_ERR_UNSUPPORTED,
            Status::SUTRA_ERR_BUFFER_TOO_SMALL,
            Status::SUTRA_ERR_OUT_OF_MEMORY,
            Status::SUTRA_ERR_CANCELLED,
            Status::SUTRA_ERR_INTERNAL,
        ];
        ALL.into_iter().find(|s| *s as i32 == v).ok_or_else(|| Error::invalid(format!("{v} is not a sutra_status")))
    }
}

/// Everything that can go wrong in libsutra.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument: the message names the argument and the allowed range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An operating-system error while touching `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Malformed, truncated or inconsistent data.
    #[error("format error: {0}")]
    Format(String),
    /// Well-formed data that libsutra does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A caller buffer is too small; `needed` elements (or bytes) are required.
    #[error("buffer too small: {needed} needed, {given} given")]
    BufferTooSmall {
        /// Size required.
        needed: usize,
        /// Size provided.
        given: usize,
    },
    /// An allocation failed.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A progress callback returned false.
    #[error("cancelled by the progress callback")]
    Cancelled,
    /// A bug in libsutra.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result type of the whole crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The C status code of this error.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::SUTRA_ERR_INVALID_ARGUMENT,
            Error::Io { .. } => Status::SUTRA_ERR_IO,
            Error::Format(_) => Status::SUTRA_ERR_FORMAT,
            Error::Unsupported(_) => Status::SUTRA_ERR_UNSUPPORTED,
            Error::BufferTooSmall { .. } => Status::SUTRA_ERR_BUFFER_TOO_SMALL,
            Error::OutOfMemory(_) => Status::SUTRA_ERR_OUT_OF_MEMORY,
            Error::Cancelled => Status::SUTRA_ERR_CANCELLED,
            Error::Internal(_) => Status::SUTRA_ERR_INTERNAL,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), source }
    }

    /// An I/O error on `path` described by `msg` (a missing file, a folder without the file
    /// it needs).
    pub fn io_msg(path: &Path, msg: &str) -> Self {
        Error::Io { path: path.display().to_string(), source: std::io::Error::other(msg.to_string()) }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(msg: impl Into<String>) -> Self {
        Error::Format(msg.into())
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Prefixes the message with `context` (a file name, a tensor), keeping the status.
    pub fn context(self, context: &str) -> Self {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{context}: {m}")),
            Error::Format(m) => Error::Format(format!("{context}: {m}")),
            Error::Unsupported(m) => Error::Unsupported(format!("{context}: {m}")),
            Error::OutOfMemory(m) => Error::OutOfMemory(format!("{context}: {m}")),
            Error::Internal(m) => Error::Internal(format!("{context}: {m}")),
            other => other,
        }
    }
}

/// The message of a caught panic (its `&str` or `String` payload).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
