//! C ABI: LoRA adapters (load, free, attach to a session, detach).

use super::{get, get_mut, guard, hand_out, non_null, path_arg, release, sutra_model, sutra_session};
use crate::error::Status;
use crate::Adapter;
use std::ffi::c_char;
use std::sync::Arc;

/// A loaded LoRA adapter (opaque, immutable): usable by any number of sessions and threads.
/// Released by `sutra_adapter_free`; sessions it is attached to keep their own reference.
pub struct sutra_adapter {
    pub(crate) adapter: Arc<Adapter>,
}

/// Loads a Hugging Face PEFT LoRA adapter for `model`. `path`: a folder holding
/// adapter_config.json and adapter_model.safetensors (or adapter.safetensors), or a
/// .safetensors file with adapter_config.json beside it. Every pair must name a matrix of
/// `model` with matching shapes; otherwise SUTRA_ERR_FORMAT naming the module and both shapes.
#[no_mangle]
pub unsafe extern "C" fn sutra_adapter_load(
    model: *const sutra_model,
    path: *const c_char,
    out_adapter: *mut *mut sutra_adapter,
) -> Status {
    guard(|| {
        non_null(out_adapter, "out_adapter")?;
        // SAFETY: handle and NUL-terminated path per the C contract.
        let (m, path) = unsafe { (get(model, "model")?, path_arg(path, "path")?) };
        let adapter = Arc::new(Adapter::load(&m.model, &path)?);
        // SAFETY: out-parameter per the C contract (checked above).
        unsafe { hand_out(out_adapter, sutra_adapter { adapter }, "out_adapter") }
    })
}

/// Releases an adapter handle (NULL is a no-op). Sessions it is attached to keep using it.
#[no_mangle]
pub unsafe extern "C" fn sutra_adapter_free(adapter: *mut sutra_adapter) {
    // SAFETY: NULL or a handle from sutra_adapter_load, freed once.
    unsafe { release(adapter) }
}

/// From the next eval on, `session` computes with `adapter` at multiplier `scale` (1 = as
/// trained). Called again with the same adapter, it changes the scale; scale 0 detaches it.
/// Several adapters may be attached at once; their deltas add. The recurrent state is kept.
/// The session holds its own reference: the caller may free the adapter handle at any time.
/// Clones of the session carry its adapters; a saved state blob does not.
#[no_mangle]
pub unsafe extern "C" fn sutra_session_set_adapter(
    session: *mut sutra_session,
    adapter: *const sutra_adapter,
    scale: f32,
) -> Status {
    guard(|| {
        // SAFETY: handles per the C contract.
        let (s, a) = unsafe { (get_mut(session, "session")?, get(adapter, "adapter")?) };
        s.session.set_adapter(&a.adapter, scale)
    })
}

/// Detaches every adapter from `session` (the recurrent state is kept).
#[no_mangle]
pub unsafe extern "C" fn sutra_session_clear_adapters(session: *mut sutra_session) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        unsafe { get_mut(session, "session") }?.session.clear_adapters();
        Ok(())
    })
}
