//! C ABI: quantizing a checkpoint into a libsutra quantized file.

use super::{guard, path_arg, sutra_progress_callback};
use crate::error::{Error, Status};
use crate::quant::{quantize_model, Method, QuantType, QuantizeParams};
use std::ffi::{c_char, c_void};

/// Target weight format of `sutra_quantize_model`.
/// cbindgen:prefix-with-name
/// cbindgen:rename-all=ScreamingSnakeCase
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sutra_quant_type {
    /// 8-bit symmetric, f16 scale per group.
    Q8 = 0,
    /// 4-bit symmetric over 16 normal-quantile levels, f16 scale per group (head in q8).
    Q4 = 1,
}

/// How `sutra_quantize_model` chooses scales.
/// cbindgen:prefix-with-name
/// cbindgen:rename-all=ScreamingSnakeCase
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sutra_quant_method {
    /// Plain round to nearest.
    Rtn = 0,
    /// Activation-aware scaling, calibrated on `calib_path`.
    Awq = 1,
}

/// Parameters of `sutra_quantize_model`. Start from `sutra_quantize_default_params()`.
/// The enum-valued fields are plain integers, so that any value a caller passes is defined:
/// an unknown one is SUTRA_ERR_INVALID_ARGUMENT naming it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sutra_quantize_params {
    /// q8 or q4: a `sutra_quant_type` value.
    pub qtype: i32,
    /// Weights per group: 32, 64 or 128.
    pub group_size: i32,
    /// RTN or AWQ: a `sutra_quant_method` value.
    pub method: i32,
    /// Calibration text (UTF-8 file), required for AWQ; may be NULL otherwise.
    pub calib_path: *const c_char,
    /// Tokens of calibration text to run (AWQ).
    pub calib_tokens: i32,
    /// Tokenizer for the calibration text; NULL = the one next to the model.
    pub tokenizer_path: *const c_char,
    /// Worker threads; 0 = all cores.
    pub n_threads: i32,
}

/// Defaults: q4, groups of 32, RTN, 8192 calibration tokens, all cores.
#[no_mangle]
pub extern "C" fn sutra_quantize_default_params() -> sutra_quantize_params {
    sutra_quantize_params {
        qtype: sutra_quant_type::Q4 as i32,
        group_size: 32,
        method: sutra_quant_method::Rtn as i32,
        calib_path: std::ptr::null(),
        calib_tokens: 8192,
        tokenizer_path: std::ptr::null(),
        n_threads: 0,
    }
}

/// Quantizes the checkpoint at `in_path` into a libsutra quantized file at `out_path`
/// (loadable with `sutra_model_load`). `params` may be NULL for defaults. `progress` (may be
/// NULL) returning false cancels: SUTRA_ERR_CANCELLED, and no file is left behind.
#[no_mangle]
pub unsafe extern "C" fn sutra_quantize_model(
    in_path: *const c_char,
    out_path: *const c_char,
    params: *const sutra_quantize_params,
    progress: sutra_progress_callback,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        // SAFETY: NULL-checked inside; NUL-terminated per the contract.
        let (input, output) = unsafe { (path_arg(in_path, "in_path")?, path_arg(out_path, "out_path")?) };
        // SAFETY: params is NULL or points to a caller-owned struct.
        let p = if params.is_null() { sutra_quantize_default_params() } else { unsafe { *params } };
        if p.group_size <= 0 || p.calib_tokens < 0 || p.n_threads < 0 {
            return Err(Error::invalid(format!(
                "group_size {}, calib_tokens {}, n_threads {}: must be positive / non-negative",
                p.group_size, p.calib_tokens, p.n_threads
            )));
        }
        let opt_path = |ptr: *const c_char, what: &str| -> crate::Result<Option<std::path::PathBuf>> {
            if ptr.is_null() {
                Ok(None)
            } else {
                // SAFETY: non-NULL and NUL-terminated per the contract.
                unsafe { path_arg(ptr, what) }.map(Some)
            }
        };
        let qp = QuantizeParams {
            qtype: QuantType::try_from(p.qtype)?,
            group: p.group_size as usize,
            method: Method::try_from(p.method)?,
            calib_file: opt_path(p.calib_path, "calib_path")?,
            calib_tokens: p.calib_tokens as usize,
            tokenizer: opt_path(p.tokenizer_path, "tokenizer_path")?,
            n_threads: p.n_threads as usize,
            keep: Vec::new(),
        };
        let mut cb = |f: f32| match progress {
            // SAFETY: the caller supplied the callback with its user data.
            Some(cb) => unsafe { cb(f, user_data) },
            None => true,
        };
        quantize_model(&input, &output, &qp, &mut cb)
    })
}
