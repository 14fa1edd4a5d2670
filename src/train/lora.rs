//! The trainable side of LoRA: an adapter's pairs as plain f32 values, found by the base
//! matrix they target, and their gradients. The model-level training passes look a
//! product's matrix up here ([`LoraSet::find`]) to add the branch and its backward.

use super::linear::LoraRef;
use crate::error::{Error, Result};
use crate::lora::Adapter;
use crate::tensor::Matrix;
use rayon::prelude::*;
use std::collections::HashMap;

/// One trainable pair for the base matrix `key` (`<module>.weight`).
#[derive(Debug, Clone)]
pub struct LoraParam {
    /// The module name (PEFT's, without `.weight`).
    pub module: String,
    /// lora_A `[rank, in]`.
    pub a: Vec<f32>,
    /// lora_B `[out, rank]`.
    pub b: Vec<f32>,
    /// r.
    pub rank: usize,
    /// in.
    pub n_in: usize,
    /// out.
    pub n_out: usize,
    /// α/r.
    pub scaling: f32,
}

impl LoraParam {
    /// The pair as the kernels take it.
    pub fn as_ref(&self) -> LoraRef<'_, f32> {
        LoraRef { a: &self.a, b: &self.b, rank: self.rank, n_in: self.n_in, n_out: self.n_out, scale: self.scaling }
    }
}

/// An adapter's pairs, trainable, indexed by the base matrix's tensor name.
#[derive(Debug, Clone, Default)]
pub struct LoraSet {
    /// The pairs, in a fixed order (sorted by module).
    pub params: Vec<LoraParam>,
    index: HashMap<String, usize>,
}

impl LoraSet {
    /// The pairs of a loaded adapter (copied: training never changes the adapter).
    pub fn from_adapter(a: &Adapter) -> Result<LoraSet> {
        let mut keys: Vec<&String> = a.pairs().keys().collect();
        keys.sort();
        let mut set = LoraSet::default();
        for k in keys {
            let p = &a.pairs()[k];
            let (va, vb) = (p.a.tensor.as_f32(), p.b.tensor.as_f32());
            let (Some(va), Some(vb)) = (va, vb) else {
                return Err(Error::Internal(format!("adapter pair '{}' is not f32", p.module)));
            };
            set.index.insert(k.clone(), set.params.len());
            set.params.push(LoraParam {
                module: p.module.clone(),
                a: va.to_vec(),
                b: vb.to_vec(),
                rank: p.a.rows,
                n_in: p.a.cols,
                n_out: p.b.rows,
                scaling: p.scaling,
            });
        }
        Ok(set)
    }

    /// The index of the pair targeting `m`, if any.
    pub fn find(&self, m: &Matrix) -> Option<usize> {
        self.index.get(m.tensor.name.as_str()).copied()
    }

    /// Zeroed gradients of the same shapes.
    pub fn zero_grads(&self) -> LoraGrads {
        LoraGrads {
            da: self.params.iter().map(|p| vec![0.0; p.a.len()]).collect(),
            db: self.params.iter().map(|p| vec![0.0; p.b.len()]).collect(),
        }
    }
}

/// Gradients of a [`LoraSet`]'s pairs, in its order.
#[derive(Debug, Clone, Default)]
pub struct LoraGrads {
    /// dL/dA per pair.
    pub da: Vec<Vec<f32>>,
    /// dL/dB per pair.
    pub db: Vec<Vec<f32>>,
}

/// `y = m x` plus the LoRA branch of `set` when it targets `m` (saving `A x` in `ax`), for the
/// `t` rows of `x`.
pub fn lin_fwd(m: &Matrix, set: &LoraSet, x: &[f32], t: usize, y: &mut [f32], ax: &mut Vec<f32>) {
    crate::kernels::matmul(m, x, t, y);
    ax.clear();
    if let Some(i) = set.find(m) {
        let p = &set.params[i];
        ax.resize(t * p.rank, 0.0);
        let l = p.as_ref();
        let b = LORA_BLOCK_ROWS;
        x.par_chunks(b * p.n_in)
            .zip(ax.par_chunks_mut(b * p.rank))
            .zip(y.par_chunks_mut(b * p.n_out))
            .for_each(|((x, ax), y)| super::linear::lora_fwd(&l, x, ax, y));
    }
}

/// Backward of [`lin_fwd`] (**accumulates**): `dx += dy·(W + s·B·A)` and the pair's dA, dB.
#[allow(clippy::too_many_arguments)]
pub fn lin_bwd(
    m: &Matrix,
    set: &LoraSet,
    grads: &mut LoraGrads,
    x: &[f32],
    ax: &[f32],
    dy: &[f32],
    t: usize,
    dx: &mut [f32],
) {
    debug_assert!(dy.len() == t * m.rows && dx.len() == t * m.cols, "lin_bwd: shapes");
    super::linear::matrix_bwd_input_par(m, dy, dx);
    if let Some(i) = set.find(m) {
        let p = &set.params[i];
        let l = p.as_ref();
        let b = LORA_BLOCK_ROWS;
        // Blocks of rows in parallel, each with its own dA, dB, summed in block order (so the
        // result does not depend on the thread count).
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .par_chunks(b * p.n_in)
            .zip(ax.par_chunks(b * p.rank))
            .zip(dy.par_chunks(b * p.n_out))
            .zip(dx.par_chunks_mut(b * p.n_in))
            .map(|(((x, ax), dy), dx)| {
                let (mut da, mut db) = (vec![0f32; p.a.len()], vec![0f32; p.b.len()]);
                let mut dax = vec![0f32; ax.len()];
                super::linear::lora_bwd(&l, x, ax, dy, &mut dax, Some(dx), Some(&mut da), Some(&mut db));
                (da, db)
            })
            .collect();
        let (da, db) = (&mut grads.da[i], &mut grads.db[i]);
        for (pa, pb) in &parts {
            da.iter_mut().zip(pa).for_each(|(g, v)| *g += v);
            db.iter_mut().zip(pb).for_each(|(g, v)| *g += v);
        }
    }
}

/// Rows per parallel block of the LoRA branch's forward and backward.
const LORA_BLOCK_ROWS: usize = 32;
