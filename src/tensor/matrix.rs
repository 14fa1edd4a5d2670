//! A weight matrix `[rows, cols]` (row-major, `y = W x`) over f32, bf16 or f16 storage.

use super::{bf16_to_f32, f16_to_f32, DType, Tensor};

/// Element storage of a [`Matrix`], borrowed from its tensor.
pub enum MatrixData<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// bf16 rows (raw bits).
    BF16(&'a [u16]),
    /// f16 rows (raw bits).
    F16(&'a [u16]),
}

/// A `[rows, cols]` matrix: row `r` holds the weights of output `r` (PyTorch `nn.Linear` layout).
#[derive(Clone, Debug)]
pub struct Matrix {
    /// The underlying tensor (mapped or owned).
    pub tensor: Tensor,
    /// Output dimension.
    pub rows: usize,
    /// Input dimension.
    pub cols: usize,
}

impl Matrix {
    /// Wraps `tensor` (whose element count must be `rows * cols`, checked by the caller's reader).
    pub fn new(tensor: Tensor, rows: usize, cols: usize) -> Matrix {
        debug_assert_eq!(tensor.numel(), rows * cols);
        Matrix { tensor, rows, cols }
    }

    /// Element type of the weights.
    pub fn dtype(&self) -> DType {
        self.tensor.dtype
    }

    /// Typed access to all elements.
    pub fn data(&self) -> MatrixData<'_> {
        match self.tensor.dtype {
            DType::BF16 => MatrixData::BF16(self.tensor.as_u16().unwrap_or_default()),
            DType::F16 => MatrixData::F16(self.tensor.as_u16().unwrap_or_default()),
            _ => MatrixData::F32(self.tensor.as_f32().unwrap_or_default()),
        }
    }

    /// Writes row `r` as f32 into `out` (`out.len() == cols`).
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let span = r * self.cols..(r + 1) * self.cols;
        match self.data() {
            MatrixData::F32(d) => out.copy_from_slice(&d[span]),
            MatrixData::BF16(d) => out.iter_mut().zip(&d[span]).for_each(|(o, &b)| *o = bf16_to_f32(b)),
            MatrixData::F16(d) => out.iter_mut().zip(&d[span]).for_each(|(o, &b)| *o = f16_to_f32(b)),
        }
    }

    /// Bytes of weights read by one full product.
    pub fn n_bytes(&self) -> usize {
        self.tensor.bytes().len()
    }
}
