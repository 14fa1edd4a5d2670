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
//! [`wkv`] (the RWKV-7 delta-rule recurrence), [`ssm`] (Mamba-1 conv and selective scan,
//! Mamba-2 SSD).
//!
//! Every backward is tested against central finite differences in f64, and every forward
//! in f32 against the inference kernel it mirrors.

pub mod act;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod real;
pub mod ssm;
pub mod wkv;

pub use real::Real;

#[cfg(test)]
pub(crate) mod testutil;
