//! C ABI: models (load, free, info).

use super::{
    get, guard, guard_value, hand_out, non_null, path_arg, release, slice, sutra_progress_callback, write_out,
};
use crate::error::Status;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::models::Family;
use crate::tensor::{ggml::GgmlType, DType};
use crate::{Model, ModelParams};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// A loaded model (opaque). Immutable; may be shared by any number of threads. Released by
/// `sutra_model_free`; sessions created from it keep it alive until they are freed too.
pub struct sutra_model {
    pub(crate) model: Arc<Model>,
}

/// How to load a model. Start from `sutra_model_default_params()` and change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sutra_model_params {
    /// Worker threads for this model's products; 0 = one per available core.
    pub n_threads: i32,
    /// Map the file (true, default) or read it into memory (false).
    pub use_mmap: bool,
    /// Optional load progress; returning false cancels (SUTRA_ERR_CANCELLED). May be NULL.
    pub progress_callback: sutra_progress_callback,
    /// Passed to `progress_callback`.
    pub progress_user_data: *mut c_void,
    /// Scan every weight for NaN/Inf at load (SUTRA_ERR_FORMAT naming the tensor); default
    /// false (a full read of the file).
    pub check_finite: bool,
}

/// Model family.
/// cbindgen:prefix-with-name
/// cbindgen:rename-all=ScreamingSnakeCase
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sutra_family {
    /// RWKV v4 to v7.
    Rwkv = 0,
    /// Mamba 1 and 2.
    Mamba = 1,
}

/// The container a model was loaded from.
/// cbindgen:prefix-with-name
/// cbindgen:rename-all=ScreamingSnakeCase
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sutra_format {
    /// A safetensors file or a Hugging Face folder of safetensors shards (or a buffer).
    Safetensors = 0,
    /// A llama.cpp GGUF file.
    Gguf = 1,
    /// A PyTorch `.pth` archive (`torch.save` of a state dict).
    Pth = 2,
}

/// Storage type of a model's weights.
/// cbindgen:prefix-with-name
/// cbindgen:rename-all=ScreamingSnakeCase
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sutra_dtype {
    /// 32-bit float.
    F32 = 0,
    /// IEEE half.
    F16 = 1,
    /// bfloat16.
    Bf16 = 2,
    /// 8-bit integers.
    I8 = 3,
    /// 8-bit unsigned (packed 4-bit).
    U8 = 4,
    /// 64-bit integers.
    I64 = 5,
    /// libsutra group-wise 8-bit weights.
    Q8 = 6,
    /// libsutra group-wise 4-bit weights.
    Q4 = 7,
    /// llama.cpp Q4_0 blocks (GGUF).
    GgmlQ4_0 = 8,
    /// llama.cpp Q4_1 blocks (GGUF).
    GgmlQ4_1 = 9,
    /// llama.cpp Q5_0 blocks (GGUF).
    GgmlQ5_0 = 10,
    /// llama.cpp Q5_1 blocks (GGUF).
    GgmlQ5_1 = 11,
    /// llama.cpp Q8_0 blocks (GGUF).
    GgmlQ8_0 = 12,
    /// llama.cpp Q4_K blocks (GGUF).
    GgmlQ4K = 13,
    /// llama.cpp Q5_K blocks (GGUF).
    GgmlQ5K = 14,
    /// llama.cpp Q6_K blocks (GGUF).
    GgmlQ6K = 15,
}

/// What a model is, as read from its checkpoint.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sutra_model_info {
    /// Static NUL-terminated architecture name: "rwkv7", ...
    pub architecture: *const c_char,
    /// Family.
    pub family: sutra_family,
    /// Version within the family (RWKV 4..7, Mamba 1..2).
    pub version: i32,
    /// Number of blocks.
    pub n_layer: i32,
    /// Residual width.
    pub n_embd: i32,
    /// Vocabulary size.
    pub n_vocab: i32,
    /// Heads (0 where the architecture has none).
    pub n_head: i32,
    /// Head size (0 where none).
    pub head_size: i32,
    /// Elements of every tensor in the file.
    pub n_params: u64,
    /// Storage type of the large matrices.
    pub weight_dtype: sutra_dtype,
    /// Weight bytes read to decode one token.
    pub bytes_per_token: u64,
    /// The container the weights were read from.
    pub format: sutra_format,
}

/// Default load parameters: all cores, mmap on, no progress callback.
#[no_mangle]
pub extern "C" fn sutra_model_default_params() -> sutra_model_params {
    sutra_model_params {
        n_threads: 0,
        use_mmap: true,
        progress_callback: None,
        progress_user_data: std::ptr::null_mut(),
        check_finite: false,
    }
}

/// The safe parameters and the progress callback of a `sutra_model_params` (NULL: defaults).
fn params_of(p: *const sutra_model_params) -> Result<(ModelParams, impl FnMut(f32) -> bool)> {
    // SAFETY: `p` is NULL or points to a caller-owned params struct (sutra_model_load contract).
    let p = if p.is_null() { sutra_model_default_params() } else { unsafe { *p } };
    let n_threads = usize::try_from(p.n_threads)
        .map_err(|_| Error::invalid(format!("params.n_threads = {}: must be >= 0", p.n_threads)))?;
    let (cb, ud) = (p.progress_callback, p.progress_user_data);
    let progress = move |f: f32| match cb {
        // SAFETY: the caller supplied this callback and its user data together.
        Some(cb) => unsafe { cb(f, ud) },
        None => true,
    };
    Ok((ModelParams { n_threads, use_mmap: p.use_mmap, check_finite: p.check_finite }, progress))
}

/// Loads a checkpoint (safetensors; architecture detected from tensor names and shapes).
/// `path` may also name a GGUF file or a Hugging Face model folder (config.json with
/// model.safetensors or the shards listed in model.safetensors.index.json).
/// `params` may be NULL for defaults. On success `*out_model` receives a new model.
/// The file must not be modified while the model is alive when it is memory-mapped.
#[no_mangle]
pub unsafe extern "C" fn sutra_model_load(
    path: *const c_char,
    params: *const sutra_model_params,
    out_model: *mut *mut sutra_model,
) -> Status {
    guard(|| {
        non_null(out_model, "out_model")?;
        // SAFETY: path is NULL-checked inside; NUL-terminated per the C contract.
        let path = unsafe { path_arg(path, "path") }?;
        let (params, mut progress) = params_of(params)?;
        let model = Model::load_with_progress(&path, &params, &mut progress)?;
        // SAFETY: out-parameter per the C contract (checked above).
        unsafe { hand_out(out_model, sutra_model { model: Arc::new(model) }, "out_model") }
    })
}

/// Loads a checkpoint from `len` bytes at `data` (e.g. weights bundled in an app package).
/// The bytes are copied: the caller may free them once this returns. The progress callback
/// of `params`, if any, is called as for `sutra_model_load`.
#[no_mangle]
pub unsafe extern "C" fn sutra_model_load_from_memory(
    data: *const u8,
    len: usize,
    params: *const sutra_model_params,
    out_model: *mut *mut sutra_model,
) -> Status {
    guard(|| {
        non_null(out_model, "out_model")?;
        // SAFETY: the caller guarantees `len` readable bytes at data.
        let bytes = unsafe { slice(data, len, "data") }?;
        let (params, mut progress) = params_of(params)?;
        let model = Model::load_from_memory_with_progress(bytes, None, &params, &mut progress)?;
        // SAFETY: out-parameter per the C contract (checked above).
        unsafe { hand_out(out_model, sutra_model { model: Arc::new(model) }, "out_model") }
    })
}

/// Releases a model handle (NULL is a no-op). Sessions still alive keep the weights alive.
#[no_mangle]
pub unsafe extern "C" fn sutra_model_free(model: *mut sutra_model) {
    // SAFETY: NULL or a handle from a load call, freed once.
    unsafe { release(model) }
}

/// Vocabulary size, or -1 when `model` is NULL.
#[no_mangle]
pub unsafe extern "C" fn sutra_model_n_vocab(model: *const sutra_model) -> i32 {
    if model.is_null() {
        return -1;
    }
    // SAFETY: non-NULL model handles point to live sutra_model values.
    guard_value(-1, || unsafe { &*model }.model.info().n_vocab as i32)
}

/// Fills `*out_info` with the model's architecture and sizes.
#[no_mangle]
pub unsafe extern "C" fn sutra_model_get_info(model: *const sutra_model, out_info: *mut sutra_model_info) -> Status {
    guard(|| {
        non_null(out_info, "out_info")?;
        // SAFETY: handle per the C contract.
        let m = &unsafe { get(model, "model") }?.model;
        let i = m.info();
        let arch: &'static std::ffi::CStr = match i.arch_name {
            "rwkv4" => c"rwkv4",
            "rwkv5" => c"rwkv5",
            "rwkv6" => c"rwkv6",
            "rwkv7" => c"rwkv7",
            "mamba1" => c"mamba1",
            "mamba2" => c"mamba2",
            _ => c"unknown",
        };
        let info = sutra_model_info {
            architecture: arch.as_ptr(),
            family: match i.family {
                Family::Rwkv => sutra_family::Rwkv,
                Family::Mamba => sutra_family::Mamba,
            },
            version: i.version as i32,
            n_layer: i.n_layer as i32,
            n_embd: i.n_embd as i32,
            n_vocab: i.n_vocab as i32,
            n_head: i.n_head as i32,
            head_size: i.head_size as i32,
            n_params: i.n_params,
            weight_dtype: match i.weight_dtype {
                DType::F32 => sutra_dtype::F32,
                DType::F16 => sutra_dtype::F16,
                DType::BF16 => sutra_dtype::Bf16,
                DType::I8 => sutra_dtype::I8,
                DType::U8 => sutra_dtype::U8,
                DType::I64 => sutra_dtype::I64,
                DType::Q8 => sutra_dtype::Q8,
                DType::Q4 => sutra_dtype::Q4,
                DType::Ggml(k) => match k {
                    GgmlType::Q4_0 => sutra_dtype::GgmlQ4_0,
                    GgmlType::Q4_1 => sutra_dtype::GgmlQ4_1,
                    GgmlType::Q5_0 => sutra_dtype::GgmlQ5_0,
                    GgmlType::Q5_1 => sutra_dtype::GgmlQ5_1,
                    GgmlType::Q8_0 => sutra_dtype::GgmlQ8_0,
                    GgmlType::Q4_K => sutra_dtype::GgmlQ4K,
                    GgmlType::Q5_K => sutra_dtype::GgmlQ5K,
                    GgmlType::Q6_K => sutra_dtype::GgmlQ6K,
                },
            },
            bytes_per_token: i.bytes_per_token,
            format: match m.checkpoint().format {
                Format::Safetensors => sutra_format::Safetensors,
                Format::Gguf => sutra_format::Gguf,
                Format::Pth => sutra_format::Pth,
            },
        };
        // SAFETY: out-parameter per the C contract.
        unsafe { write_out(out_info, info, "out_info") }
    })
}
