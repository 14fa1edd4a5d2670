//! `sutra_system_info`: which CPU features libsutra found and which kernels it runs.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

/// One line naming the CPU features found and the kernel path chosen, e.g.
/// "x86_64 avx2 fma f16c avx512f avx512bw; kernels: avx512" or
/// "aarch64 neon dotprod; kernels: neon+dotprod". A static NUL-terminated string, never NULL;
/// the path is chosen once per process (`SUTRA_FORCE_SCALAR=1` in the environment before the
/// first call forces "kernels: scalar (SUTRA_FORCE_SCALAR)").
#[no_mangle]
pub extern "C" fn sutra_system_info() -> *const c_char {
    static INFO: OnceLock<CString> = OnceLock::new();
    super::guard_value(c"".as_ptr(), || {
        INFO.get_or_init(|| CString::new(crate::kernels::dot::system_info()).unwrap_or_default()).as_ptr()
    })
}

/// For command-line programs: restores the default action of SIGPIPE (end the process),
/// which the Rust runtime sets to "ignore", so that a program whose output pipe closes
/// (`sutra info MODEL | head`) ends quietly, as C tools do, instead of panicking on its next
/// print. Call it first thing in `main`. Does nothing off Unix.
pub fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: signal(2) with SIG_DFL installs no handler code (the kernel's default action
    // applies); it is called at program start, before the program starts other threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn system_info_is_the_kernels_line() {
        let p = sutra_system_info();
        assert!(!p.is_null());
        // SAFETY: a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
        assert_eq!(s, crate::kernels::dot::system_info());
        assert_eq!(p, sutra_system_info(), "the same static string every call");
    }
}
