//! The one skeleton every architecture runs on: embed → blocks → head.
//!
//! An architecture file supplies a [`Block`] (its weights, its state layout and its block math)
//! and a loader that fills [`Parts`]; [`Stack`] does the rest once for all of them: the
//! embedding lookup (with RWKV's `ln0`), the loop over blocks with each block's slice of every
//! sequence's state, the final norm and the head for the last row of each sequence or for
//! every row, [`ModelInfo`] and the bytes read per token. The helpers below are the pieces
//! several blocks share over the rows of a call: the previous row of the same sequence
//! (token shift) and the parallel loop over independent heads or channels.

use super::{ArchKind, Architecture, Batch, Logits, ModelInfo, TrainRow};
use crate::error::{Error, Result};
use crate::exec::{Context, Exec, Seg};
use crate::format::WeightReader;
use crate::kernels::{self, layer_norm, rms_norm, token_shift};
use crate::tensor::Matrix;
use crate::train::lora::{lin_bwd, lin_fwd, LoraGrads, LoraSet};
use std::any::Any;
use std::ops::Range;

/// Tokens whose logits a training step holds at once (64 × a 65536 vocabulary: 16 MiB, and
/// as much for their gradient), enough rows for the head's products to run as a GEMM.
const HEAD_ROWS: usize = 64;

/// LayerNorm epsilon of RWKV's ln0/ln1/ln2/ln_out.
pub(crate) const LN_EPS: f32 = 1e-5;

/// A normalization over one row of `C` values.
pub enum Norm {
    /// LayerNorm with weight and bias, each [C].
    Layer {
        /// Weight: [C].
        w: Vec<f32>,
        /// Bias: [C].
        b: Vec<f32>,
        /// Epsilon.
        eps: f32,
    },
    /// RMSNorm with weight [C].
    Rms {
        /// Weight: [C].
        w: Vec<f32>,
        /// Epsilon.
        eps: f32,
    },
}

impl Norm {
    /// Backward of [`rows`](Self::rows) (**accumulates** dL/dx into `dx`; the norm's own
    /// parameters are frozen).
    pub(crate) fn rows_bwd(&self, x: &[f32], dout: &[f32], dx: &mut [f32]) {
        match self {
            Norm::Layer { w, eps, .. } => crate::train::norm::layer_norm_bwd(x, w, *eps, dout, dx, None, None),
            Norm::Rms { w, eps } => crate::train::norm::rms_norm_bwd(x, w, *eps, dout, dx, None),
        }
    }

    /// LayerNorm `{name}.weight`, `{name}.bias` (each [c]), epsilon 1e-5.
    pub(crate) fn layer(rd: &WeightReader, name: &str, c: usize) -> Result<Norm> {
        Ok(Norm::Layer {
            w: rd.vector(&format!("{name}.weight"), c)?,
            b: rd.vector(&format!("{name}.bias"), c)?,
            eps: LN_EPS,
        })
    }

    /// RMSNorm `{name}` ([c]).
    pub(crate) fn rms(rd: &WeightReader, name: &str, c: usize, eps: f32) -> Result<Norm> {
        Ok(Norm::Rms { w: rd.vector(name, c)?, eps })
    }

    /// The weight, [C].
    pub(crate) fn weight(&self) -> &[f32] {
        match self {
            Norm::Layer { w, .. } | Norm::Rms { w, .. } => w,
        }
    }

    /// The bias, [C] (RMSNorm has none: empty).
    pub(crate) fn bias(&self) -> &[f32] {
        match self {
            Norm::Layer { b, .. } => b,
            Norm::Rms { .. } => &[],
        }
    }

    /// Normalizes every row of `x` (`[t, C]`) into `out` (rows in parallel when many).
    pub(crate) fn rows(&self, x: &[f32], out: &mut [f32]) {
        let c = self.weight().len();
        par_rows(out, c, |i, oi| {
            let xi = &x[i * c..(i + 1) * c];
            match self {
                Norm::Layer { w, b, eps } => layer_norm(xi, w, b, *eps, oi),
                Norm::Rms { w, eps } => rms_norm(xi, w, *eps, oi),
            }
        });
    }
}

/// One block of an architecture: its weights, its slice of the recurrent state, its math.
pub trait Block: Send + Sync + Sized {
    /// The architecture's sizes, shared by every block.
    type Config: Send + Sync + std::fmt::Debug;

    /// f32 elements of one block's state.
    fn state_len(cfg: &Self::Config) -> usize;

    /// Writes a block's initial (empty-context) state.
    fn init_state(_cfg: &Self::Config, st: &mut [f32]) {
        st.fill(0.0);
    }

    /// Every weight matrix of the block, the block's main products first.
    fn matrices(&self) -> Vec<&Matrix>;

    /// Runs block `li` on the residual stream `x` (`[T, C]`, the rows of `segs`), advancing
    /// each sequence's block state in `st`.
    fn forward(&self, cfg: &Self::Config, li: usize, ex: &mut Exec, segs: &[Seg], st: &mut States, x: &mut [f32]);

    /// Training forward of block `li` over one chunk `x` (`[T, C]`, in and out) of a row, with
    /// the LoRA branches of `set`: `st` (the block's state, [`state_len`](Block::state_len))
    /// enters as the state before the chunk and leaves as the state after it. Returns what
    /// [`train_backward`] needs. Architectures without a backward pass say so.
    ///
    /// [`train_backward`]: Block::train_backward
    fn train_forward(
        &self,
        _cfg: &Self::Config,
        _li: usize,
        _set: &LoraSet,
        _carry: &mut TrainCarry,
        _st: &mut [f32],
        _x: &mut [f32],
    ) -> Result<Box<dyn Any + Send>> {
        Err(Error::unsupported("training is implemented for RWKV-5.2, RWKV-6, RWKV-7, Mamba-1 and Mamba-2"))
    }

    /// Backward of [`train_forward`](Block::train_forward): `dx` enters as dL/d(block output)
    /// and leaves as dL/d(block input); `dst` enters as dL/d(state after the chunk) and leaves
    /// as dL/d(state before it); the pairs' gradients are **accumulated** into `grads`.
    #[allow(clippy::too_many_arguments)]
    fn train_backward(
        &self,
        _cfg: &Self::Config,
        _li: usize,
        _set: &LoraSet,
        _rec: &(dyn Any + Send),
        _carry: &mut TrainCarry,
        _grads: &mut LoraGrads,
        _dst: &mut [f32],
        _dx: &mut [f32],
    ) -> Result<()> {
        Err(Error::unsupported("training is implemented for RWKV-5.2, RWKV-6, RWKV-7, Mamba-1 and Mamba-2"))
    }
}

/// The two training hooks of a [`Block`] for a block type with
/// `fn record(&self, cfg, li, set, carry, st, x) -> Rec` and
/// `fn backprop(&self, cfg, li, set, &Rec, carry, grads, dst, dx)`: boxes the record on the
/// way forward and unboxes it on the way back.
macro_rules! train_hooks {
    ($rec:ty) => {
        fn train_forward(
            &self,
            cfg: &Self::Config,
            li: usize,
            set: &crate::train::lora::LoraSet,
            carry: &mut crate::models::stack::TrainCarry,
            st: &mut [f32],
            x: &mut [f32],
        ) -> crate::error::Result<Box<dyn std::any::Any + Send>> {
            Ok(Box::new(self.record(cfg, li, set, carry, st, x)))
        }

        fn train_backward(
            &self,
            cfg: &Self::Config,
            li: usize,
            set: &crate::train::lora::LoraSet,
            rec: &(dyn std::any::Any + Send),
            carry: &mut crate::models::stack::TrainCarry,
            grads: &mut crate::train::lora::LoraGrads,
            dst: &mut [f32],
            dx: &mut [f32],
        ) -> crate::error::Result<()> {
            let rec = rec.downcast_ref::<$rec>().ok_or_else(|| {
                crate::error::Error::Internal(format!("{}: a record of another block", stringify!($rec)))
            })?;
            self.backprop(cfg, li, set, rec, carry, grads, dst, dx);
            Ok(())
        }
    };
}
pub(crate) use train_hooks;

/// Values a training pass hands from block to block (RWKV-7's first value and its gradient,
/// each `[T, C]`).
#[derive(Debug, Default)]
pub struct TrainCarry {
    /// Forward: the value block 0 computed.
    pub v_first: Vec<f32>,
    /// Backward: dL/d(v_first), summed over the blocks that use it.
    pub d_v_first: Vec<f32>,
}

/// What a loader reads; [`Stack::new`] derives the rest.
pub struct Parts<B: Block> {
    /// Which architecture.
    pub kind: ArchKind,
    /// Sizes.
    pub cfg: B::Config,
    /// Embedding: [V, C].
    pub emb: Matrix,
    /// Norm applied to the embedding row (RWKV's `blocks.0.ln0`), if any.
    pub emb_norm: Option<Norm>,
    /// The blocks, in order.
    pub blocks: Vec<B>,
    /// Final norm before the head.
    pub out_norm: Norm,
    /// Head [V, C]; `None`: tied to the embedding.
    pub head: Option<Matrix>,
    /// Heads and head size for [`ModelInfo`] (0 where the architecture has none).
    pub n_head: usize,
    /// See `n_head`.
    pub head_size: usize,
    /// Elements of every tensor in the file.
    pub n_params: u64,
}

/// A loaded model: embed → blocks → head over blocks of type `B`.
pub struct Stack<B: Block> {
    info: ModelInfo,
    cfg: B::Config,
    /// Embedding: [V, C].
    emb: Matrix,
    emb_norm: Option<Norm>,
    blocks: Vec<B>,
    out_norm: Norm,
    /// Head [V, C], `None` when tied to the embedding.
    head: Option<Matrix>,
    /// f32 of one block's state.
    block_state: usize,
}

impl<B: Block> Stack<B> {
    /// Assembles a model from what its loader read.
    pub fn new(p: Parts<B>) -> Result<Stack<B>> {
        let (n_vocab, c) = (p.emb.rows, p.emb.cols);
        if c == 0 || n_vocab == 0 || p.blocks.is_empty() {
            return Err(Error::format(format!(
                "embedding '{}' is [{n_vocab}, {c}] with {} blocks: an empty model",
                p.emb.tensor.name,
                p.blocks.len()
            )));
        }
        let head = p.head.as_ref().unwrap_or(&p.emb);
        let bytes_per_token = p.blocks.iter().flat_map(|b| b.matrices()).map(Matrix::n_bytes).sum::<usize>()
            + head.n_bytes()
            + p.emb.n_bytes() / n_vocab;
        let info = ModelInfo {
            family: p.kind.family(),
            version: p.kind.version(),
            arch_name: p.kind.name(),
            n_layer: p.blocks.len(),
            n_embd: c,
            n_vocab,
            n_head: p.n_head,
            head_size: p.head_size,
            n_params: p.n_params,
            weight_dtype: p.blocks[0].matrices().first().map_or(p.emb.dtype(), |m| m.dtype()),
            bytes_per_token: bytes_per_token as u64,
        };
        let block_state = B::state_len(&p.cfg);
        Ok(Stack {
            info,
            cfg: p.cfg,
            emb: p.emb,
            emb_norm: p.emb_norm,
            blocks: p.blocks,
            out_norm: p.out_norm,
            head: p.head,
            block_state,
        })
    }

    /// The sizes read from the checkpoint.
    pub fn config(&self) -> &B::Config {
        &self.cfg
    }

    /// The embedded rows of `tokens` (`[T, C]`).
    fn embed_rows(&self, tokens: &[u32]) -> Vec<f32> {
        let c = self.info.n_embd;
        let mut x = vec![0f32; tokens.len() * c];
        self.embed(tokens, &mut x, &mut vec![0f32; c]);
        x
    }

    /// One chunk `span` of a training row from the state `st` before it: the forward with
    /// records, the head and the loss of its targets, and the backward, with `dst` dL/d(state
    /// after the chunk) in and dL/d(`st`) out. Returns the chunk's summed loss and targets.
    fn train_chunk(
        &self,
        set: &LoraSet,
        row: &TrainRow<'_>,
        span: Range<usize>,
        st: &mut [f32],
        dst: &mut [f32],
        grads: &mut LoraGrads,
    ) -> Result<(f64, usize)> {
        let (t, c, v, sl) = (span.len(), self.info.n_embd, self.info.n_vocab, self.block_state);
        let mut x = self.embed_rows(&row.tokens[span.clone()]);
        let mut carry = TrainCarry::default();
        let mut recs = Vec::with_capacity(self.blocks.len());
        for (li, blk) in self.blocks.iter().enumerate() {
            recs.push(blk.train_forward(&self.cfg, li, set, &mut carry, &mut st[li * sl..(li + 1) * sl], &mut x)?);
        }
        // The head, the loss and the head's backward, HEAD_ROWS tokens at a time: the
        // logits and their gradient ([rows, V] each) are the largest buffers of a step.
        let head = self.head.as_ref().unwrap_or(&self.emb);
        let mut xl = vec![0f32; t * c];
        self.out_norm.rows(&x, &mut xl);
        let hr = t.min(HEAD_ROWS);
        let (mut logits, mut dlogits, mut ax) = (vec![0f32; hr * v], vec![0f32; hr * v], Vec::new());
        let mut dxl = vec![0f32; t * c];
        let (mut sum, mut count) = (0f64, 0usize);
        for (i0, tgt) in
            (span.start..span.end).step_by(hr).map(|a| (a - span.start, &row.targets[a..(a + hr).min(span.end)]))
        {
            let n = tgt.len();
            let (xs, lg, dl) = (&xl[i0 * c..(i0 + n) * c], &mut logits[..n * v], &mut dlogits[..n * v]);
            lin_fwd(head, set, xs, n, lg, &mut ax);
            dl.fill(0.0);
            let (s, k) = crate::train::loss::cross_entropy_sum(lg, v, tgt, row.scale, dl);
            sum += s as f64;
            count += k;
            lin_bwd(head, set, grads, xs, &ax, dl, n, &mut dxl[i0 * c..(i0 + n) * c]);
        }
        drop((logits, dlogits));
        let mut dx = vec![0f32; t * c];
        self.out_norm.rows_bwd(&x, &dxl, &mut dx);
        carry.d_v_first = vec![0f32; t * c];
        for (li, (blk, rec)) in self.blocks.iter().zip(&recs).enumerate().rev() {
            let d = &mut dst[li * sl..(li + 1) * sl];
            blk.train_backward(&self.cfg, li, set, rec.as_ref(), &mut carry, grads, d, &mut dx)?;
        }
        Ok((sum, count))
    }

    /// `x[i] = emb[tokens[i]]` (`[T, C]`), through `ln0` where the architecture has it; `row`
    /// is scratch of C.
    fn embed(&self, tokens: &[u32], x: &mut [f32], row: &mut [f32]) {
        for (&tok, xi) in tokens.iter().zip(x.chunks_exact_mut(row.len())) {
            match &self.emb_norm {
                Some(n) => {
                    self.emb.row_to_f32(tok as usize, row);
                    n.rows(row, xi);
                }
                None => self.emb.row_to_f32(tok as usize, xi),
            }
        }
    }
}

impl<B: Block> Architecture for Stack<B> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn train_row(&self, set: &LoraSet, row: TrainRow<'_>, grads: &mut LoraGrads) -> Result<(f64, usize)> {
        let t = row.tokens.len();
        let (sl, n_state) = (self.block_state, self.block_state * self.blocks.len());
        if row.targets.len() != t
            || row.state.len() != n_state
            || row.d_state.as_ref().is_some_and(|d| d.len() != n_state)
        {
            return Err(Error::Internal(format!(
                "train_row: {t} tokens, {} targets, a state of {} (model: {n_state})",
                row.targets.len(),
                row.state.len()
            )));
        }
        let k = if row.chunk == 0 { t.max(1) } else { row.chunk.min(t.max(1)) };
        let spans: Vec<Range<usize>> = (0..t).step_by(k).map(|a| a..(a + k).min(t)).collect();
        // 1. Forward over every chunk but the last, keeping only the state before each one
        //    (the checkpoints): memory grows with the row only through them.
        let mut starts = Vec::with_capacity(spans.len());
        let mut st = row.state.to_vec();
        for span in &spans[..spans.len().saturating_sub(1)] {
            starts.push(st.clone());
            let mut x = self.embed_rows(&row.tokens[span.clone()]);
            let mut carry = TrainCarry::default();
            for (li, blk) in self.blocks.iter().enumerate() {
                blk.train_forward(&self.cfg, li, set, &mut carry, &mut st[li * sl..(li + 1) * sl], &mut x)?;
            }
        }
        starts.push(st);
        // 2. Backward from the last chunk: recompute its forward from its checkpoint with the
        //    records, then the head, the loss and the blocks in reverse; `dst` carries
        //    dL/d(state) from each chunk into the one before.
        let (mut sum, mut count) = (0f64, 0usize);
        let mut dst = vec![0f32; n_state];
        for span in spans.iter().rev() {
            let mut st = starts.pop().unwrap_or_default();
            let (sum_c, count_c) = self.train_chunk(set, &row, span.clone(), &mut st, &mut dst, grads)?;
            sum += sum_c;
            count += count_c;
        }
        if let Some(d) = row.d_state {
            d.iter_mut().zip(&dst).for_each(|(d, g)| *d += g);
        }
        Ok((sum, count))
    }

    fn state_len(&self) -> usize {
        self.blocks.len() * self.block_state
    }

    fn init_state(&self, state: &mut [f32]) {
        for st in state.chunks_exact_mut(self.block_state) {
            B::init_state(&self.cfg, st);
        }
    }

    fn matrices(&self) -> Vec<&Matrix> {
        let mut all: Vec<&Matrix> = self.blocks.iter().flat_map(|b| b.matrices()).collect();
        all.extend(self.head.as_ref());
        all
    }

    fn forward(&self, ctx: &mut Context, b: Batch<'_, '_>) {
        let (t, c, v) = (b.tokens.len(), self.info.n_embd, self.info.n_vocab);
        if t == 0 {
            return;
        }
        let n_out = match &b.logits {
            Logits::None => 0,
            Logits::Last(_) => b.segs.len(),
            Logits::All(_) => t,
        };
        let Context { resid, exec, .. } = ctx;
        let [x, xl] = resid.take([t * c, n_out.max(1) * c]);
        // 0. x = emb[token], through ln0 where the architecture has it.
        self.embed(b.tokens, x, &mut xl[..c]);
        // 1. The blocks, each on its slice of every sequence's state.
        exec.lin.set_rows(b.segs.iter().map(Seg::rows));
        for (li, blk) in self.blocks.iter().enumerate() {
            let mut st = States::new(&mut *b.states, li * self.block_state..(li + 1) * self.block_state);
            blk.forward(&self.cfg, li, exec, b.segs, &mut st, x);
        }
        // 2. logits = head · norm(x), for the last row of each sequence or for every row.
        let head = self.head.as_ref().unwrap_or(&self.emb);
        let out = match b.logits {
            Logits::None => return,
            Logits::Last(out) => {
                for (seg, o) in b.segs.iter().zip(xl.chunks_exact_mut(c)) {
                    self.out_norm.rows(&x[seg.last() * c..(seg.last() + 1) * c], o);
                }
                exec.lin.set_rows((0..n_out).map(|j| j..j + 1));
                out
            }
            Logits::All(out) => {
                self.out_norm.rows(x, xl);
                out
            }
        };
        exec.lin.apply(head, &xl[..n_out * c], n_out, &mut out[..n_out * v]);
    }
}

/// The states of a call's sequences as one block sees them: its own slice of each.
pub struct States<'a, 'b> {
    all: &'a mut [&'b mut [f32]],
    at: Range<usize>,
}

impl<'a, 'b> States<'a, 'b> {
    /// The `at` slice of each of the states `all` (one per sequence of the call).
    pub fn new(all: &'a mut [&'b mut [f32]], at: Range<usize>) -> States<'a, 'b> {
        States { all, at }
    }

    /// Sequence `s`'s block state.
    pub fn seg(&mut self, s: usize) -> &mut [f32] {
        &mut self.all[s][self.at.clone()]
    }

    /// Every sequence's block state, in order (disjoint borrows).
    pub fn all_segs(&mut self) -> Vec<&mut [f32]> {
        let at = self.at.clone();
        self.all.iter_mut().map(|s| &mut s[at.clone()]).collect()
    }
}

/// Token shift over the rows of `x` (`[T, C]`): `out[i] = x[i] + (prev − x[i]) ⊙ mix`, `prev`
/// being row i−1 of the same sequence or, for a sequence's first row, `part` of its state
/// (the last row of the previous call).
pub(crate) fn shift(segs: &[Seg], x: &[f32], st: &mut States, part: Range<usize>, mix: &[f32], out: &mut [f32]) {
    let c = part.len();
    for (s, seg) in segs.iter().enumerate() {
        let last = &st.seg(s)[part.clone()];
        let rows = &mut out[seg.start * c..(seg.start + seg.len) * c];
        par_rows(rows, c, |r, o| {
            let i = seg.start + r;
            let prev = if r == 0 { last } else { &x[(i - 1) * c..i * c] };
            token_shift(&x[i * c..(i + 1) * c], prev, mix, o);
        });
    }
}

/// Elements below which [`par_rows`] stays on the calling thread (a fork and join costs more
/// than the pass).
const PAR_ROWS_MIN: usize = 1 << 15;

/// Runs `f(i, row)` over the rows of `out` (`[t, c]`), in parallel blocks of rows when the
/// pass is large enough to pay for it (prefill, not decode). `f` must depend on `i` alone.
pub(crate) fn par_rows<F: Fn(usize, &mut [f32]) + Sync>(out: &mut [f32], c: usize, f: F) {
    use rayon::prelude::*;
    let threads = kernels::threads();
    if out.len() < PAR_ROWS_MIN || threads == 1 || c == 0 {
        out.chunks_exact_mut(c.max(1)).enumerate().for_each(|(i, row)| f(i, row));
        return;
    }
    let per = (out.len() / c).div_ceil(4 * threads).max(1);
    out.par_chunks_mut(per * c).enumerate().for_each(|(b, rows)| {
        rows.chunks_exact_mut(c).enumerate().for_each(|(i, row)| f(b * per + i, row));
    });
}

/// [`par_rows`] over two buffers of the same shape: `f(i, row of a, row of b)`.
pub(crate) fn par_rows2<F: Fn(usize, &mut [f32], &mut [f32]) + Sync>(a: &mut [f32], b: &mut [f32], c: usize, f: F) {
    use rayon::prelude::*;
    assert_eq!(a.len(), b.len(), "par_rows2: shapes");
    let threads = kernels::threads();
    if a.len() < PAR_ROWS_MIN || threads == 1 || c == 0 {
        a.chunks_exact_mut(c.max(1)).zip(b.chunks_exact_mut(c.max(1))).enumerate().for_each(|(i, (x, y))| f(i, x, y));
        return;
    }
    let per = (a.len() / c).div_ceil(4 * threads).max(1);
    a.par_chunks_mut(per * c).zip(b.par_chunks_mut(per * c)).enumerate().for_each(|(blk, (xa, xb))| {
        xa.chunks_exact_mut(c).zip(xb.chunks_exact_mut(c)).enumerate().for_each(|(i, (x, y))| f(blk * per + i, x, y));
    });
}

/// `out[i] = prev − x[i]` over the rows of `x` (RWKV-6's `sx`), `prev` as in [`shift`].
pub(crate) fn delta_prev(segs: &[Seg], x: &[f32], st: &mut States, part: Range<usize>, out: &mut [f32]) {
    let c = part.len();
    for (s, seg) in segs.iter().enumerate() {
        let last = &st.seg(s)[part.clone()];
        for i in seg.rows() {
            let prev = if i == seg.start { last } else { &x[(i - 1) * c..i * c] };
            for ((o, p), x) in out[i * c..(i + 1) * c].iter_mut().zip(prev).zip(&x[i * c..(i + 1) * c]) {
                *o = p - x;
            }
        }
    }
}

/// Halves `x` after block `li` when the model halves its residual stream every `every` blocks
/// (`every` = 0: never): transformers' RWKV-4 `rescale_every`, llama.cpp's RWKV-6
/// `rescale_every_n_layers`. The same map backward halves dL/dx.
pub(crate) fn halve_after(every: usize, li: usize, x: &mut [f32]) {
    if every > 0 && (li + 1).is_multiple_of(every) {
        x.iter_mut().for_each(|v| *v *= 0.5);
    }
}

/// Stores each sequence's last row of `x` into `part` of its state (the next call's `prev`).
pub(crate) fn save_last(segs: &[Seg], x: &[f32], st: &mut States, part: Range<usize>) {
    let c = part.len();
    for (s, seg) in segs.iter().enumerate() {
        st.seg(s)[part.clone()].copy_from_slice(&x[seg.last() * c..(seg.last() + 1) * c]);
    }
}

/// Runs `f(unit, unit_state, unit_out, rows)` for every sequence and every one of its
/// `n_units` independent units (heads or channels): `unit_state` is that unit's slice of
/// `part` of the sequence's state (`unit_state_len` each), `unit_out` its output for the
/// sequence's rows. `out` holds, per sequence in row order, `[n_units, len, unit_out_len]`.
/// Units run in parallel when `work` (multiply-adds) makes it pay.
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_units<F>(
    segs: &[Seg],
    st: &mut States,
    part: Range<usize>,
    n_units: usize,
    unit_out_len: usize,
    out: &mut [f32],
    work: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32], Range<usize>) + Sync,
{
    use rayon::prelude::*;
    let unit_state_len = part.len() / n_units;
    let parallel = kernels::threads() > 1 && work >= 1 << 16;
    if parallel && segs.len() > 1 {
        // Several sequences (a batch): one task per (sequence, unit), all in one parallel pass.
        let mut jobs = Vec::with_capacity(segs.len() * n_units);
        let mut rest = out;
        for (seg, state) in segs.iter().zip(st.all_segs()) {
            let (o, r) = std::mem::take(&mut rest).split_at_mut(seg.len * n_units * unit_out_len);
            rest = r;
            let units = state[part.clone()].chunks_mut(unit_state_len).zip(o.chunks_mut(seg.len * unit_out_len));
            jobs.extend(units.enumerate().map(|(u, (us, uo))| (u, us, uo, seg.rows())));
        }
        jobs.into_par_iter().for_each(|(u, us, uo, rows)| f(u, us, uo, rows));
        return;
    }
    let mut rest = out;
    for (s, seg) in segs.iter().enumerate() {
        let (o, r) = std::mem::take(&mut rest).split_at_mut(seg.len * n_units * unit_out_len);
        rest = r;
        let state = &mut st.seg(s)[part.clone()];
        let per_unit = seg.len * unit_out_len;
        if parallel {
            let min = (n_units / (4 * kernels::threads())).max(1);
            state
                .par_chunks_mut(unit_state_len)
                .zip(o.par_chunks_mut(per_unit))
                .enumerate()
                .with_min_len(min)
                .for_each(|(u, (us, uo))| f(u, us, uo, seg.rows()));
        } else {
            for (u, (us, uo)) in state.chunks_mut(unit_state_len).zip(o.chunks_mut(per_unit)).enumerate() {
                f(u, us, uo, seg.rows());
            }
        }
    }
}

/// Maps `f(u, unit_state)` over the `unit_len`-long chunks of `state` (one per head or block
/// of channels), on the pool's threads when it has more than one, and returns the results in
/// unit order. The training passes run their per-head recurrences through it; the chunking is
/// fixed by the caller, so results do not depend on the thread count.
pub(crate) fn map_units<T, F>(state: &mut [f32], unit_len: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &mut [f32]) -> T + Sync + Send,
{
    use rayon::prelude::*;
    if kernels::threads() > 1 {
        state.par_chunks_mut(unit_len).enumerate().map(|(u, s)| f(u, s)).collect()
    } else {
        state.chunks_mut(unit_len).enumerate().map(|(u, s)| f(u, s)).collect()
    }
}

/// Scatters [`for_units`]' output (`[n_units, len, w]` per sequence) into rows `y`
/// (`[T, n_units·w]`).
pub(crate) fn units_to_rows(segs: &[Seg], out: &[f32], n_units: usize, w: usize, y: &mut [f32]) {
    let row = n_units * w;
    for seg in segs {
        let base = seg.start * row;
        for u in 0..n_units {
            for i in 0..seg.len {
                let src = base + (u * seg.len + i) * w;
                let dst = (seg.start + i) * row + u * w;
                y[dst..dst + w].copy_from_slice(&out[src..src + w]);
            }
        }
    }
}
