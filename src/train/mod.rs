//! Training kernels: the forward and hand-written backward pass of every primitive that the
//! LoRA / state-tuning trainer needs (the llm.c way: no general autograd).
//!
//! Each primitive is a `*_fwd` function beside a `*_bwd` function, generic over [`Real`]
//! (f32 to train, f64 to test), on plain row-major slices whose shapes are written in each
//! doc comment (`[T, N]`: T rows of N). The model-level backward of each architecture
//! calls these; none of them knows a model.
//!
//! Conventions, the same in every file:
//! - **Forward** functions overwrite their outputs (`out`, `y`), unless the doc says `+=`
//!   (the LoRA branch adds into the base product's output). Recurrent forwards take their
//!   state in/out: it enters as the start state and leaves as the final state.
//! - **Backward** functions take the forward's inputs (and, where noted, saved outputs)
//!   and `d_out` = dL/d(output), and **accumulate** (`+=`) dL/d(input) and dL/d(parameter)
//!   into the caller's buffers: zero them first, or let several uses of one tensor add up.
//!   A gradient argument that is an `Option` may be `None` when it is not wanted (a frozen
//!   parameter). The one exception is the gradient of a recurrent state, passed in/out:
//!   it enters as dL/d(final state) (zero if the loss does not see it) and leaves as
//!   dL/d(start state), so that chunks chain from the last to the first.
//! - **Recurrences** (WKV, scans, convolution) run over one chunk of T steps from a given
//!   start state. BPTT with bounded memory: run the forward chunk by chunk, keeping only
//!   each chunk's start state (a copy of the state before the call); then, from the last
//!   chunk to the first, call the chunk's `*_bwd` with its start state, which recomputes the
//!   chunk's intermediate states into a caller scratch buffer sized for one chunk.
//! - Nothing allocates: scratch buffers are the caller's, their sizes in the docs.
//!
//! Files: [`real`] (the float trait), [`linear`] (products over any base matrix, LoRA
//! pairs), [`norm`] (LayerNorm, RMSNorm, GroupNorm, L2 normalize, gated RMSNorm, token
//! shift), [`act`] (elementwise activations, gates, biases), [`loss`] (cross-entropy),
//! [`wkv`] (the RWKV-7 delta-rule recurrence), [`wkv5`] (the RWKV-5.2/6 recurrence),
//! [`ssm`] (Mamba-1 conv and selective scan, Mamba-2 SSD), [`lora`] (the trainable pairs
//! and the product with its LoRA branch), [`adamw`] (torch's AdamW, gradient clipping) and
//! [`trainer`] (batches, steps, snapshots).
//!
//! Every backward is tested against central finite differences in f64, and every forward
//! in f32 against the inference kernel it mirrors.
//!
//! ## Which kernel for which step
//!
//! | forward step (file, step) | forward | backward |
//! |---|---|---|
//! | any `y = W x` on a frozen base (f32/bf16/f16/q8/q4/AWQ) | [`crate::kernels::matmul`] (or [`linear::matrix_fwd`]) | [`linear::matrix_bwd_input`], [`linear::matrix_bwd_input_par`] |
//! | LoRA branch `y += s·B(A x)` on a target | [`linear::lora_fwd`] | [`linear::lora_bwd`] |
//! | trainable dense matrix (RWKV-7 `w1/w2`… when trained) | [`linear::dense_fwd`] | [`linear::dense_bwd`] |
//! | LayerNorm (RWKV ln0/ln1/ln2/ln_out) | [`norm::layer_norm_fwd`] | [`norm::layer_norm_bwd`] |
//! | RMSNorm (Mamba norm, norm_f) | [`norm::rms_norm_fwd`] | [`norm::rms_norm_bwd`] |
//! | RWKV-5.2/6/7 `ln_x` (GroupNorm, H groups, eps 64e-5) | [`norm::group_norm_fwd`] | [`norm::group_norm_bwd`] |
//! | RWKV-7 `kk` normalize per head (eps 1e-12) | [`norm::l2_normalize_fwd`] | [`norm::l2_normalize_bwd`] |
//! | Mamba-2 gated RMSNorm | [`norm::gated_rms_norm_fwd`] | [`norm::gated_rms_norm_bwd`] |
//! | token shift (RWKV time and channel mix) | [`act::token_shift_fwd`] | [`act::token_shift_bwd`] |
//! | `tanh`, `σ`, relu², SiLU after the conv, RWKV-5.2/6 gate `silu(G·x)` | [`act::act_fwd`] | [`act::act_bwd`] |
//! | RWKV-7 `w = exp(−0.606531·σ(w0 + ·))`, `a = σ(a0 + ·)`, RWKV-6 `w = exp(−exp(time_decay + ·))`, Mamba `dt = softplus(· + dt_bias)` | [`act::bias_act_fwd`] | [`act::bias_act_bwd`] |
//! | `y ⊙ silu(z)` (Mamba-1), `y ⊙ g` (RWKV-5.2/6/7, [`act::Act::Identity`]), `σ(r) ⊙ v` (RWKV v4–v6 channel mix) | [`act::gate_fwd`] | [`act::gate_bwd`] |
//! | RWKV-7 value residual `v + (v_first − v) ⊙ gate` | [`act::lerp_fwd`] | [`act::lerp_bwd`] |
//! | RWKV-7 WKV per head | [`wkv::wkv_fwd`] | [`wkv::wkv_bwd`] |
//! | RWKV-7 bonus `(Σ r⊙k⊙r_k)·v` | [`wkv::wkv_bonus_fwd`] | [`wkv::wkv_bonus_bwd`] |
//! | RWKV-5.2/6 WKV per head (bonus `time_faaaa` inside) | [`wkv5::wkv5_fwd`] | [`wkv5::wkv5_bwd`] |
//! | Mamba causal conv1d | [`ssm::conv1d_causal_fwd`] | [`ssm::conv1d_causal_bwd`] |
//! | Mamba-1 selective scan | [`ssm::selective_scan_fwd`] | [`ssm::selective_scan_bwd`] |
//! | Mamba-2 SSD per head | [`ssm::ssd_fwd`] | [`ssm::ssd_bwd`] |
//! | next-token loss | [`loss::cross_entropy`] / [`loss::cross_entropy_sum`] | (returns dlogits) |
//!
//! Elementwise products with a parameter (RWKV-7's `k ⊙ k_k`, `k ⊙ (1 + (a − 1) ⊙ k_a)`)
//! and residual adds have one-line backward passes that the model code writes inline.
//!
//! State tuning: every recurrent backward also returns the gradient of its start state
//! (`ds` of [`wkv::wkv_bwd`] and [`wkv5::wkv5_bwd`], `dh` of the scans, `dwindow` of the conv, `dprev0` of the
//! token shift).

pub mod act;
pub mod adamw;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod norm;
pub mod real;
pub mod ssm;
pub mod trainer;
pub mod wkv;
pub mod wkv5;

pub use real::Real;
pub use trainer::{TrainParams, Trainer, Tune};

#[cfg(test)]
pub(crate) mod testutil;
