//! C ABI: LoRA adapters (load, free, attach to a session, detach) and LoRA trainers.

use super::{
    get, get_mut, guard, hand_out, non_null, path_arg, release, slice, slice_mut, sutra_model, sutra_session, write_out,
};
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

/// A LoRA trainer over a frozen model (opaque). Used by one thread at a time. Released by
/// `sutra_trainer_free`.
pub struct sutra_trainer {
    pub(crate) trainer: crate::train::Trainer,
}

/// Hyper-parameters of `sutra_trainer_new`. Start from `sutra_train_default_params()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sutra_train_params {
    /// r of a new adapter.
    pub lora_rank: i32,
    /// lora_alpha of a new adapter.
    pub lora_alpha: f32,
    /// Comma-separated module-name suffixes ("att.key,ffn.value"); NULL: every linear layer
    /// of every block.
    pub target_modules: *const c_char,
    /// New adapter: A ~ U(±1/sqrt(in)) (PEFT's default) from this seed, B = 0.
    pub seed: u64,
    /// AdamW, as torch.optim.AdamW.
    pub learning_rate: f32,
    /// AdamW β1.
    pub beta1: f32,
    /// AdamW β2.
    pub beta2: f32,
    /// AdamW ε (added after the bias correction).
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Max global L2 norm of the gradient; 0 = none.
    pub grad_clip: f32,
    /// Tokens per BPTT chunk: the recurrent state is checkpointed every `bptt_chunk` tokens
    /// and each chunk's forward recomputed on the way back, so memory grows with the row
    /// only through the checkpoints; 0: the whole row at once. Same gradients either way.
    pub bptt_chunk: i32,
    /// State tuning: 0 trains the adapter; 1 the adapter and the initial recurrent state;
    /// 2 the initial state only (an `init` adapter is then applied frozen). Read the
    /// trained state with `sutra_trainer_get_state`.
    pub train_state: i32,
    /// Learning rate of the initial state; 0: `learning_rate`.
    pub state_learning_rate: f32,
}

/// Defaults: r 8, alpha 16, every block matrix, seed 0, lr 1e-3, betas (0.9, 0.999), eps 1e-8,
/// no weight decay, no clipping, BPTT chunks of 128 tokens, adapter only.
#[no_mangle]
pub extern "C" fn sutra_train_default_params() -> sutra_train_params {
    let d = crate::train::TrainParams::default();
    sutra_train_params {
        lora_rank: d.rank as i32,
        lora_alpha: d.alpha,
        target_modules: std::ptr::null(),
        seed: d.seed,
        learning_rate: d.optim.lr,
        beta1: d.optim.beta1,
        beta2: d.optim.beta2,
        eps: d.optim.eps,
        weight_decay: d.optim.weight_decay,
        grad_clip: d.grad_clip,
        bptt_chunk: d.bptt_chunk as i32,
        train_state: 0,
        state_learning_rate: d.state_lr,
    }
}

fn train_params(p: *const sutra_train_params) -> crate::Result<crate::train::TrainParams> {
    // SAFETY: NULL or a caller-owned struct per the C contract.
    let p = if p.is_null() { sutra_train_default_params() } else { unsafe { *p } };
    let targets = if p.target_modules.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let s = unsafe { std::ffi::CStr::from_ptr(p.target_modules) }
            .to_str()
            .map_err(|_| crate::Error::invalid("params.target_modules is not UTF-8"))?;
        Some(s.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect())
    };
    let rank = usize::try_from(p.lora_rank)
        .map_err(|_| crate::Error::invalid(format!("params.lora_rank = {}: must be >= 1", p.lora_rank)))?;
    let bptt_chunk = usize::try_from(p.bptt_chunk)
        .map_err(|_| crate::Error::invalid(format!("params.bptt_chunk = {}: must be >= 0", p.bptt_chunk)))?;
    Ok(crate::train::TrainParams {
        rank,
        alpha: p.lora_alpha,
        targets,
        seed: p.seed,
        optim: crate::train::adamw::AdamWParams {
            lr: p.learning_rate,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
        },
        grad_clip: p.grad_clip,
        bptt_chunk,
        tune: crate::train::Tune::try_from(p.train_state)?,
        state_lr: p.state_learning_rate,
    })
}

/// A LoRA trainer over the frozen `model` (a q8/q4 model makes it QLoRA). `init` NULL: a new
/// adapter from `params`; otherwise training starts from a copy of `init` (its rank, alpha,
/// targets and values; `init` itself never changes). `params` may be NULL for defaults.
/// SUTRA_ERR_UNSUPPORTED (naming the supported architectures) for a model without a
/// backward pass.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_new(
    model: *const sutra_model,
    init: *const sutra_adapter,
    params: *const sutra_train_params,
    out_trainer: *mut *mut sutra_trainer,
) -> Status {
    guard(|| {
        non_null(out_trainer, "out_trainer")?;
        // SAFETY: handles per the C contract (init may be NULL).
        let m = unsafe { get(model, "model") }?;
        let init = if init.is_null() { None } else { Some(&*unsafe { get(init, "init") }?.adapter) };
        let trainer = crate::train::Trainer::new(&m.model, init, &train_params(params)?)?;
        // SAFETY: out-parameter per the C contract (checked above).
        unsafe { hand_out(out_trainer, sutra_trainer { trainer }, "out_trainer") }
    })
}

/// Releases a trainer (NULL is a no-op).
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_free(trainer: *mut sutra_trainer) {
    // SAFETY: NULL or a handle from sutra_trainer_new, freed once.
    unsafe { release(trainer) }
}

/// Converts the batch arguments of compute/step.
fn batch<'a>(
    tokens: *const i32,
    targets: *const i32,
    n_rows: usize,
    n_tokens: usize,
) -> crate::Result<(Vec<u32>, &'a [i32])> {
    let n = n_rows
        .checked_mul(n_tokens)
        .ok_or_else(|| crate::Error::invalid(format!("n_rows {n_rows} · n_tokens {n_tokens} overflows")))?;
    // SAFETY: n readable ids at each per the C contract.
    let (t, g) = unsafe { (slice(tokens, n, "tokens")?, slice(targets, n, "targets")?) };
    let t = t
        .iter()
        .enumerate()
        .map(|(i, &x)| u32::try_from(x).map_err(|_| crate::Error::invalid(format!("tokens[{i}] = {x} is negative"))))
        .collect::<crate::Result<Vec<u32>>>()?;
    Ok((t, g))
}

/// The checks and conversions of compute/step, then the call (`and_apply`: a step).
fn train_batch(
    trainer: *mut sutra_trainer,
    tokens: *const i32,
    targets: *const i32,
    (n_rows, n_tokens): (usize, usize),
    loss_out: *mut f32,
    and_apply: bool,
) -> crate::Result<()> {
    non_null(loss_out, "loss_out")?;
    // SAFETY: handle per the C contract.
    let tr = unsafe { get_mut(trainer, "trainer") }?;
    let (t, g) = batch(tokens, targets, n_rows, n_tokens)?;
    let loss = if and_apply {
        tr.trainer.step(&t, g, n_rows, n_tokens)?
    } else {
        tr.trainer.compute(&t, g, n_rows, n_tokens)?
    };
    // SAFETY: out-parameter per the C contract (checked above).
    unsafe { write_out(loss_out, loss, "loss_out") }
}

/// One batch: `n_rows` rows of `n_tokens` tokens; `tokens` and `targets` are
/// `[n_rows * n_tokens]`, row-major. Every row starts from the initial state. `*loss_out`
/// receives the mean cross-entropy (natural log) over every target >= 0 (negative targets
/// are ignored) of the logits after the token at the same position; the gradient of that loss
/// with respect to every adapter tensor is computed through the whole row (full BPTT) and
/// kept for `sutra_trainer_apply`. The adapter is unchanged.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_compute(
    trainer: *mut sutra_trainer,
    tokens: *const i32,
    targets: *const i32,
    n_rows: usize,
    n_tokens: usize,
    loss_out: *mut f32,
) -> Status {
    guard(|| train_batch(trainer, tokens, targets, (n_rows, n_tokens), loss_out, false))
}

/// One optimizer step with the gradient of the last `sutra_trainer_compute`.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_apply(trainer: *mut sutra_trainer) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        unsafe { get_mut(trainer, "trainer") }?.trainer.apply()
    })
}

/// `sutra_trainer_compute`, then `sutra_trainer_apply`.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_step(
    trainer: *mut sutra_trainer,
    tokens: *const i32,
    targets: *const i32,
    n_rows: usize,
    n_tokens: usize,
    loss_out: *mut f32,
) -> Status {
    guard(|| train_batch(trainer, tokens, targets, (n_rows, n_tokens), loss_out, true))
}

/// The last computed gradient of one adapter tensor, by its PEFT name (e.g.
/// "base_model.model.blocks.0.att.key.lora_A.weight"); `n` must be its element count.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_get_gradient(
    trainer: *const sutra_trainer,
    name: *const c_char,
    out: *mut f32,
    n: usize,
) -> Status {
    guard(|| {
        // SAFETY: handle and NUL-terminated name per the C contract.
        let (tr, name) = unsafe { (get(trainer, "trainer")?, path_arg(name, "name")?) };
        let name = name.to_string_lossy();
        let g = tr.trainer.gradient(&name)?;
        if g.len() != n {
            return Err(crate::Error::invalid(format!("n = {n}, but '{name}' has {} elements", g.len())));
        }
        // SAFETY: the caller provides n writable floats at out.
        unsafe { slice_mut(out, n, "out") }?.copy_from_slice(g);
        Ok(())
    })
}

/// A snapshot of the current adapter, for sessions (released by `sutra_adapter_free`).
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_get_adapter(
    trainer: *const sutra_trainer,
    out_adapter: *mut *mut sutra_adapter,
) -> Status {
    guard(|| {
        non_null(out_adapter, "out_adapter")?;
        // SAFETY: handle per the C contract.
        let a = unsafe { get(trainer, "trainer") }?.trainer.adapter()?;
        // SAFETY: out-parameter per the C contract (checked above).
        unsafe { hand_out(out_adapter, sutra_adapter { adapter: Arc::new(a) }, "out_adapter") }
    })
}

/// Writes the current adapter as a PEFT folder (adapter_config.json,
/// adapter_model.safetensors), creating `dir` if needed; nothing half-written on failure.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_save_adapter(trainer: *const sutra_trainer, dir: *const c_char) -> Status {
    guard(|| {
        // SAFETY: handle and NUL-terminated path per the C contract.
        let (tr, dir) = unsafe { (get(trainer, "trainer")?, path_arg(dir, "dir")?) };
        tr.trainer.save(&dir)
    })
}

/// Bytes of the state blob `sutra_trainer_get_state` writes.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_state_size(trainer: *const sutra_trainer, out_bytes: *mut usize) -> Status {
    guard(|| {
        // SAFETY: handle and out-parameter per the C contract.
        unsafe { write_out(out_bytes, get(trainer, "trainer")?.trainer.state_blob().len(), "out_bytes") }
    })
}

/// Writes the initial state rows start from (the trained one when `train_state` is 1 or 2)
/// as a state blob, the format of `sutra_session_state_save`: `sutra_session_state_load`
/// puts a session at it. SUTRA_ERR_BUFFER_TOO_SMALL when `buf_len` is less than
/// `sutra_trainer_state_size`.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_get_state(
    trainer: *const sutra_trainer,
    buf: *mut u8,
    buf_len: usize,
) -> Status {
    guard(|| {
        // SAFETY: handle per the C contract.
        let blob = unsafe { get(trainer, "trainer") }?.trainer.state_blob();
        if buf_len < blob.len() {
            return Err(crate::Error::BufferTooSmall { needed: blob.len(), given: buf_len });
        }
        // SAFETY: buf_len writable bytes per the C contract.
        unsafe { slice_mut(buf, buf_len, "buf") }?[..blob.len()].copy_from_slice(&blob);
        Ok(())
    })
}

/// Starts every row from the state in a blob of `sutra_session_state_save` (or
/// `sutra_trainer_get_state`) for this model; the state's optimizer moments restart. A
/// foreign or corrupted blob gives SUTRA_ERR_FORMAT and changes nothing.
#[no_mangle]
pub unsafe extern "C" fn sutra_trainer_set_state(
    trainer: *mut sutra_trainer,
    buf: *const u8,
    buf_len: usize,
) -> Status {
    guard(|| {
        // SAFETY: handle and buf_len readable bytes per the C contract.
        let (tr, data) = unsafe { (get_mut(trainer, "trainer")?, slice(buf, buf_len, "buf")?) };
        tr.trainer.set_state_blob(data)
    })
}
