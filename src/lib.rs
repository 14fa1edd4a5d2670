//! # libsutra
//!
//! A pure-Rust CPU engine for linear-time language models — RWKV and Mamba — embedded by
//! applications through a C ABI (`include/sutra.h`).
//!
//! **What it is:** a loader for safetensors checkpoints (memory mapped, zero-copy for f32,
//! bf16 and f16 weights), the forward passes of the supported architectures as a single-token
//! step and a sequence (prefill) path, and sessions that own one sequence's recurrent state
//! (reset, clone, save, load). Memory per sequence is constant, however long the context.
//! LoRA adapters apply per session at run time, and train on the device (LoRA and QLoRA,
//! hand-written backward passes, full BPTT checkpointed every chunk of tokens, and state
//! tuning of the initial recurrent state).
//!
//! **What it is not:** a trainer of full models, a GPU runtime, or a transformer engine (no
//! KV cache, no attention over the past).
//!
//! Where things live (top-down: each part uses only those listed below it):
//! - [`ffi`]: the C ABI, the only `extern "C"` code: checks pointers, converts, calls the safe API.
//! - [`generate`], [`sample`], [`score`]: streamed text generation, sampler chains, perplexity and KL scoring.
//! - [`lora`]: LoRA adapters (Hugging Face PEFT files) applied per session at run time, and merged into
//!   checkpoints; [`train::Trainer`] (in `train::trainer`, at this level) trains them.
//! - [`quant`]: RTN and activation-aware (AWQ) quantization of a model into a quantized file.
//! - [`session`]: one sequence's recurrent state (eval, batch eval, save/load/clone) and its binary blob.
//! - [`model`]: a loaded model: architecture, the process's shared thread pool for its thread count, identity.
//! - [`models`]: one file per architecture version, each a [`models::stack::Stack`] of its own blocks.
//! - [`exec`]: the execution context every forward pass runs in (scratch, the products' entry
//!   point where adapters and observers plug in, rows of several sequences).
//! - [`format`]: safetensors, GGUF (llama.cpp's names undone in `format::gguf_map`), PyTorch
//!   `.pth` (`format::pth`, a restricted pickle reader) and Hugging Face folders, sharded or not
//!   (`RWKV7ForCausalLM`, `Rwkv5/6ForCausalLM` names undone in `format::hf_map`) reading, `format::convert`, the
//!   prefix-scoped shape-checking weight reader, quantized files, `config.json`, and
//!   [`format::synth`], random checkpoints at any shape for tests and benches.
//! - [`tokenizer`]: Hugging Face tokenizer.json (BPE, WordPiece, Unigram), the RWKV world vocabulary,
//!   and the tokenizer inside a GGUF file.
//! - [`train`]: the training kernels, forward + hand-written backward (products, norms, WKV, scans,
//!   loss, AdamW) and the trainable LoRA pairs; its `trainer` module sits with [`lora`] above.
//! - [`kernels`]: products (matrix–vector, matrix–matrix, the 16-row panel tiles of
//!   [`kernels::qpanel`] for decode, batches and prefill alike, the int8-activation products of
//!   [`kernels::qgemm`] for q8/q4 rows over many tokens elsewhere, [`kernels::ggml`] over llama.cpp's blocks, and the accumulating `C += A·B` of
//!   [`kernels::gemm`] for input gradients), norms, scans and activations (scalar reference +
//!   SIMD chosen at run time); they know tensors only, nothing of models, formats or quantizers.
//! - [`tensor`]: dtypes, storage, matrices, the q8/q4 block layouts and llama.cpp's (`tensor::ggml`),
//!   and the interleaved 16-row panels weights are repacked into at load (`tensor::panel`).
//! - [`rng`], [`error`]: the deterministic generator and the one error type with the C status codes.
//! - `src/bin/sutra.rs`: the command line, over the public API.
//!
//! ```no_run
//! use std::sync::Arc;
//! let model = Arc::new(sutra::Model::load("models/rwkv7-shakespeare-6x256/model-bf16.safetensors".as_ref(),
//!                                         &sutra::ModelParams::default())?);
//! let mut session = sutra::Session::new(&model);
//! let mut logits = vec![0f32; model.info().n_vocab];
//! session.eval(&[0, 42, 7], Some(&mut logits))?;
//! # Ok::<(), sutra::Error>(())
//! ```

pub mod error;
pub mod exec;
pub mod ffi;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod models;
pub mod quant;
pub mod rng;
pub mod sample;
pub mod score;
pub mod session;
pub mod tensor;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result, Status};
pub use generate::{generate, GenerateParams, Generation, StopReason};
pub use lora::Adapter;
pub use model::{CheckpointInfo, Model, ModelParams};
pub use models::{Architecture, Family, ModelInfo};
pub use sample::{Sampler, Stage};
pub use session::Session;
pub use tokenizer::Tokenizer;
