//! Architectures: one file per version, all behind the one model trait, [`Architecture`].
//!
//! Each file has the same skeleton, in this order: hyper-parameters read from shapes
//! (`Config`), weights (every field with its shape), `load` (through the shape-checking
//! [`WeightReader`](crate::format::WeightReader)), the state layout, and the forward pass as
//! numbered steps. Shared pieces (norms, products, token shift) live in
//! [`kernels`](crate::kernels).
//!
//! The architecture is detected from sentinel tensor names ([`detect`]). Hyper-parameters
//! that shapes cannot tell come from the `config.json` beside the weights when there is one
//! ([`HfConfig`]); each architecture documents its defaults without one.

pub(crate) mod common;
pub mod mamba1;
pub mod mamba2;
pub mod rwkv4;
pub mod rwkv5;
pub mod rwkv6;
pub mod rwkv7;
pub mod stack;

use crate::error::{Error, Result};
use crate::exec::{Context, Seg};
use crate::format::{HfConfig, SafetensorsFile};
use crate::tensor::{DType, Matrix};

/// Model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// RWKV (receptance weighted key value), versions 4 to 7.
    Rwkv,
    /// Mamba selective state-space models, versions 1 and 2.
    Mamba,
}

/// What a loaded model is: family, version and sizes, all read from the checkpoint.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Model family.
    pub family: Family,
    /// Version within the family (RWKV 4, 5, 6, 7; Mamba 1, 2).
    pub version: u32,
    /// Short architecture name: "rwkv7", "mamba2", ...
    pub arch_name: &'static str,
    /// Number of blocks.
    pub n_layer: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Attention heads (RWKV v5+, Mamba-2), 0 where the architecture has none.
    pub n_head: usize,
    /// Head size (RWKV v5+, Mamba-2 head dim), 0 where none.
    pub head_size: usize,
    /// Elements of every tensor in the file (unused ones included).
    pub n_params: u64,
    /// Storage type of the large matrices.
    pub weight_dtype: DType,
    /// Weight bytes read to decode one token (all matrices, one embedding row).
    pub bytes_per_token: u64,
}

/// The architectures libsutra runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchKind {
    /// RWKV-4 (official and transformers layouts).
    Rwkv4,
    /// RWKV-5.2.
    Rwkv5,
    /// RWKV-6.
    Rwkv6,
    /// RWKV-7 (`x070`).
    Rwkv7,
    /// Mamba-1 (transformers layout).
    Mamba1,
    /// Mamba-2 (transformers layout).
    Mamba2,
}

impl ArchKind {
    /// Short name: "rwkv7", "mamba2", ...
    pub fn name(self) -> &'static str {
        match self {
            ArchKind::Rwkv4 => "rwkv4",
            ArchKind::Rwkv5 => "rwkv5",
            ArchKind::Rwkv6 => "rwkv6",
            ArchKind::Rwkv7 => "rwkv7",
            ArchKind::Mamba1 => "mamba1",
            ArchKind::Mamba2 => "mamba2",
        }
    }

    /// The family.
    pub fn family(self) -> Family {
        match self {
            ArchKind::Mamba1 | ArchKind::Mamba2 => Family::Mamba,
            _ => Family::Rwkv,
        }
    }

    /// The version within the family.
    pub fn version(self) -> u32 {
        match self {
            ArchKind::Rwkv4 => 4,
            ArchKind::Rwkv5 => 5,
            ArchKind::Rwkv6 => 6,
            ArchKind::Rwkv7 => 7,
            ArchKind::Mamba1 => 1,
            ArchKind::Mamba2 => 2,
        }
    }
}

/// Where a forward pass writes logits.
pub enum Logits<'a> {
    /// Nowhere.
    None,
    /// After the last row of each sequence: `[n_seqs, n_vocab]`.
    Last(&'a mut [f32]),
    /// After every row: `[n_rows, n_vocab]`.
    All(&'a mut [f32]),
}

/// One call's rows: the tokens of one or more sequences, each with its own state.
pub struct Batch<'a, 'b> {
    /// Every row's token (all `< n_vocab`, checked by the caller), sequences one after another.
    pub tokens: &'a [u32],
    /// The sequences' rows, in order, covering `tokens`.
    pub segs: &'a [Seg],
    /// Each sequence's whole state ([`Architecture::state_len`] f32), one per segment.
    pub states: &'a mut [&'b mut [f32]],
    /// Where the logits go.
    pub logits: Logits<'a>,
}

/// The one model trait: a loaded, immutable architecture that advances recurrent states.
/// Every architecture is a [`stack::Stack`] of its own [`stack::Block`]s.
///
/// A state is a flat `f32` buffer of [`state_len`](Architecture::state_len) elements whose
/// layout each architecture documents.
pub trait Architecture: Send + Sync {
    /// Sizes and identity.
    fn info(&self) -> &ModelInfo;

    /// Number of f32 in the recurrent state.
    fn state_len(&self) -> usize;

    /// Writes the initial (empty-context) state.
    fn init_state(&self, state: &mut [f32]);

    /// Every weight matrix the forward pass multiplies by (blocks, then the head).
    fn matrices(&self) -> Vec<&Matrix>;

    /// Feeds the batch's rows in order, advancing each sequence's state, in `ctx`.
    ///
    /// A sequence of one row is the single-token step (matrix-vector products); longer ones
    /// take the sequence path (matrix-matrix products, the recurrence row by row).
    fn forward(&self, ctx: &mut Context, batch: Batch<'_, '_>);

    /// One training row (see [`TrainRow`]): summed cross-entropy and counted targets;
    /// **accumulates** `scale ·` the pairs' gradients into `grads` (and dL/d(start state)
    /// into `row.d_state` when given). Memory: the records of one chunk, plus one state per
    /// chunk boundary.
    fn train_row(
        &self,
        set: &crate::train::lora::LoraSet,
        row: TrainRow<'_>,
        grads: &mut crate::train::lora::LoraGrads,
    ) -> Result<(f64, usize)>;
}

/// One row of a training batch for [`Architecture::train_row`].
pub struct TrainRow<'a> {
    /// The row's tokens.
    pub tokens: &'a [u32],
    /// Per token, the id the logits after it should predict; negative: not counted.
    pub targets: &'a [i32],
    /// Multiplier of every gradient (1 / the targets counted over the whole batch).
    pub scale: f32,
    /// Tokens per BPTT chunk: the state is checkpointed before each chunk and the chunk's
    /// forward recomputed on the way back; 0 (or ≥ the row): the whole row at once. The
    /// gradients are the same either way (to float rounding).
    pub chunk: usize,
    /// The state the row starts from ([`Architecture::state_len`] values).
    pub state: &'a [f32],
    /// Where to **accumulate** dL/d(start state), for state tuning.
    pub d_state: Option<&'a mut [f32]>,
}

/// Which architecture a checkpoint holds, from its sentinel tensor names (as rwkv.cpp and
/// the reference packages do):
///
/// | sentinel | architecture |
/// |---|---|
/// | `blocks.0.att.r_k` or `blocks.0.att.x_r` | `rwkv7` |
/// | `blocks.0.att.time_maa_x` | `rwkv6` |
/// | `blocks.0.att.ln_x.weight` with a 2-D `time_decay` `[H, N>1]` (as stored) | `rwkv5` (5.2) |
/// | `blocks.0.att.time_first` (no `ln_x`) | `rwkv4` (official layout) |
/// | `rwkv.blocks.0.attention.time_first` | `rwkv4` (transformers `RwkvForCausalLM` layout) |
/// | `backbone.layers.0.mixer.x_proj.weight` | `mamba1` (transformers `MambaForCausalLM`) |
/// | `backbone.layers.0.mixer.dt_bias` (1-D `A_log`) | `mamba2` (transformers `Mamba2ForCausalLM`) |
pub fn detect(file: &SafetensorsFile) -> Result<ArchKind> {
    let has = |k: &str| file.tensors.contains_key(k);
    if has("blocks.0.att.r_k") || has("blocks.0.att.x_r") {
        return Ok(ArchKind::Rwkv7);
    }
    if has("blocks.0.att.time_maa_x") {
        return Ok(ArchKind::Rwkv6);
    }
    if has("blocks.0.att.ln_x.weight") {
        // 5.2: [H, N] (a single head's [1, N] too); 5.0/5.1: one decay per head, [H, 1, 1].
        let td = file.get("blocks.0.att.time_decay")?.shape.clone();
        if td.len() == 2 && td[1] > 1 && has("blocks.0.att.gate.weight") {
            return Ok(ArchKind::Rwkv5);
        }
        return Err(Error::unsupported(format!(
            "{}: an RWKV-5.0/5.1 checkpoint (time_decay {td:?}); only RWKV-5.2 (time_decay [heads, head_size], \
             att.gate) is supported",
            file.name
        )));
    }
    if has("blocks.0.att.time_first") || has("rwkv.blocks.0.attention.time_first") {
        return Ok(ArchKind::Rwkv4);
    }
    if has("backbone.layers.0.mixer.A_log") {
        if has("backbone.layers.0.mixer.x_proj.weight") {
            return Ok(ArchKind::Mamba1);
        }
        if has("backbone.layers.0.mixer.dt_bias") {
            return Ok(ArchKind::Mamba2);
        }
        return Err(Error::unsupported(format!(
            "{}: a Mamba checkpoint with neither mixer.x_proj (Mamba-1) nor mixer.dt_bias (Mamba-2)",
            file.name
        )));
    }
    let mut names: Vec<&str> = file.tensors.keys().map(|s| s.as_str()).take(4).collect();
    if file.tensors.len() > 4 {
        names.push("...");
    }
    Err(Error::unsupported(format!(
        "{}: no supported architecture recognised among its {} tensors ({}); expected RWKV v4/v5.2/v6/v7 \
         (official layout: emb.weight, blocks.N.att.*; or transformers rwkv.blocks.N.attention.*) or Mamba-1/2 \
         (transformers layout: backbone.layers.N.mixer.*)",
        file.name,
        file.tensors.len(),
        names.join(", ")
    )))
}

/// Loads the architecture found in `file`; `config` is the parsed `config.json` beside it,
/// if any (used by the layouts that need one; checked against the shapes where it applies).
pub fn load(file: &SafetensorsFile, config: Option<&HfConfig>) -> Result<Box<dyn Architecture>> {
    Ok(match detect(file)? {
        ArchKind::Rwkv7 => Box::new(rwkv7::load(file)?),
        ArchKind::Rwkv6 => Box::new(rwkv6::load(file, config)?),
        ArchKind::Rwkv5 => Box::new(rwkv5::load(file)?),
        ArchKind::Rwkv4 => Box::new(rwkv4::load(file, config)?),
        ArchKind::Mamba1 => Box::new(mamba1::load(file, config)?),
        ArchKind::Mamba2 => Box::new(mamba2::load(file, config)?),
    })
}

/// Total element count of every model tensor in the file (quantized matrices by their
/// logical shape; their scale tensors not counted).
pub(crate) fn count_params(file: &SafetensorsFile) -> u64 {
    let q = file.quant.as_ref();
    file.tensors
        .iter()
        .filter(|(k, _)| {
            !crate::format::quantized::COMPANIONS.iter().any(|suffix| {
                k.strip_suffix(suffix).is_some_and(|base| q.is_some_and(|q| q.tensors.contains_key(base)))
            })
        })
        .map(|(k, t)| match q.and_then(|q| q.tensors.get(k)) {
            Some(e) => (e.rows * e.cols) as u64,
            None => t.numel() as u64,
        })
        .sum()
}
