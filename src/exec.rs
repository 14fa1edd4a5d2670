//! The execution context a forward pass runs in: everything it needs besides the weights and
//! the recurrent states.
//!
//! - **Scratch** sized by the first call and reused: once a session has run a step, a decode
//!   step allocates nothing.
//! - **[`Linear`]**, the one entry point of every weight product (`lin.apply(&matrix, x, t, y)`):
//!   where attached low-rank terms ([`Delta`], LoRA adapters) add `scale·B(Ax)` to the rows
//!   of their sequence, and where an [`Observer`] (AWQ calibration, a training record) sees
//!   every product's input.
//! - **Rows**: a call's rows are the tokens of one or more sequences ([`Seg`]), each sequence
//!   with its own state, so a batch of sessions runs every weight matrix once for all of them.
//!
//! A [`Context`] belongs to one session (or one batch call) and is used by one thread at a
//! time; the model it runs stays immutable and shared.

use crate::kernels::{self, Workspace};
use crate::tensor::Matrix;
use std::ops::Range;
use std::sync::Arc;

/// The rows `start .. start + len` of a call, all of one sequence, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// First row.
    pub start: usize,
    /// Number of rows (tokens), at least 1.
    pub len: usize,
}

impl Seg {
    /// The rows as a range.
    pub fn rows(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// The last row.
    pub fn last(&self) -> usize {
        self.start + self.len - 1
    }
}

/// Sees the input of every product run through a [`Linear`]: `x` is `[t, m.cols]`.
pub trait Observer: Send {
    /// Called before the product `m · x`.
    fn observe(&mut self, m: &Matrix, x: &[f32], t: usize);
}

/// A term added to the products of the matrices it targets (a LoRA adapter adds
/// `(α/r)·B(A x)`).
pub trait Delta: Send + Sync {
    /// If this term targets `m`, adds `scale ·` its product with the `t` rows of `x`
    /// (`[t, m.cols]`) into `y` (`[t, m.rows]`), using `sc` for its intermediates.
    fn add(&self, m: &Matrix, x: &[f32], t: usize, scale: f32, y: &mut [f32], sc: &mut DeltaScratch);
}

/// Scratch of [`Delta::add`], reused from product to product.
#[derive(Debug, Default)]
pub struct DeltaScratch {
    /// The low-rank middle, `[t, r]`.
    pub low: Vec<f32>,
    /// The term's product, `[t, out]`.
    pub out: Vec<f32>,
    /// The products' workspace.
    pub ws: Workspace,
}

/// A [`Delta`] attached to one sequence of a call (or to all), with its multiplier.
#[derive(Clone)]
pub struct Attached {
    /// The term.
    pub delta: Arc<dyn Delta>,
    /// Its multiplier (1 = as trained).
    pub scale: f32,
    /// The sequence (segment index) whose rows it applies to; `None`: every row (a single
    /// session's call).
    pub seg: Option<usize>,
}

/// The one entry point of every weight product of a forward pass.
#[derive(Default)]
pub struct Linear {
    ws: Workspace,
    observer: Option<Box<dyn Observer>>,
    deltas: Vec<Attached>,
    sc: DeltaScratch,
    /// The rows of each sequence in the products being run (set by the stack: a sequence's
    /// tokens in the blocks, one row per sequence in the head of a last-row call).
    seg_rows: Vec<Range<usize>>,
}

impl Linear {
    /// `y = m · x` for the `t` rows of `x` (`[t, m.cols]` → `[t, m.rows]`), plus the attached
    /// deltas on their rows; the observer, if any, sees `x` first.
    pub fn apply(&mut self, m: &Matrix, x: &[f32], t: usize, y: &mut [f32]) {
        if let Some(o) = self.observer.as_mut() {
            o.observe(m, x, t);
        }
        kernels::matmul_ws(m, x, t, y, &mut self.ws);
        for a in &self.deltas {
            match a.seg.and_then(|s| self.seg_rows.get(s)) {
                None => a.delta.add(m, x, t, a.scale, y, &mut self.sc),
                Some(r) => {
                    let (xs, ys) = (&x[r.start * m.cols..r.end * m.cols], &mut y[r.start * m.rows..r.end * m.rows]);
                    a.delta.add(m, xs, r.len(), a.scale, ys, &mut self.sc)
                }
            }
        }
    }

    /// Sets which rows of the coming products belong to each sequence.
    pub fn set_rows(&mut self, rows: impl IntoIterator<Item = Range<usize>>) {
        self.seg_rows.clear();
        self.seg_rows.extend(rows);
    }

    /// Replaces the attached deltas.
    pub fn set_deltas(&mut self, deltas: impl IntoIterator<Item = Attached>) {
        self.deltas.clear();
        self.deltas.extend(deltas);
    }

    /// The attached deltas.
    pub fn deltas(&self) -> &[Attached] {
        &self.deltas
    }

    /// Installs (or, with `None`, removes) the observer; returns the previous one.
    pub fn set_observer(&mut self, o: Option<Box<dyn Observer>>) -> Option<Box<dyn Observer>> {
        std::mem::replace(&mut self.observer, o)
    }
}

/// Reusable f32 scratch, handed out as disjoint slices.
#[derive(Debug, Default)]
pub struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    /// `N` disjoint slices of the given sizes. Their contents are whatever the last user left:
    /// callers write before they read. Grows (allocates) only when asked for more than ever
    /// before.
    pub fn take<const N: usize>(&mut self, sizes: [usize; N]) -> [&mut [f32]; N] {
        let total: usize = sizes.iter().sum();
        if self.buf.len() < total {
            self.buf.resize(total, 0.0);
        }
        let mut rest = &mut self.buf[..];
        let mut out: [&mut [f32]; N] = std::array::from_fn(|_| Default::default());
        for (o, &n) in out.iter_mut().zip(&sizes) {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
            *o = a;
            rest = b;
        }
        out
    }
}

/// What the blocks of a forward pass share: the products' entry point, the block scratch
/// (reused by each block in turn) and values a block hands to later ones (RWKV-7's first
/// value, `[T, C]`).
#[derive(Default)]
pub struct Exec {
    /// Every product goes through here.
    pub lin: Linear,
    /// Scratch of the block being run.
    pub scratch: Scratch,
    /// Values carried from block to block within one call.
    pub carry: Vec<f32>,
}

/// A forward pass's context: owned by a session (or a batch call), reused by every call.
#[derive(Default)]
pub struct Context {
    /// The residual stream and the head's input, `[T, C]` each.
    pub resid: Scratch,
    /// What the blocks use.
    pub exec: Exec,
    /// Token ids converted from the caller's type (reused).
    pub ids: Vec<u32>,
}

impl Context {
    /// A fresh context (buffers grow on first use).
    pub fn new() -> Context {
        Context::default()
    }
}
