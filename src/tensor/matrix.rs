//! A weight matrix `[rows, cols]` (row-major, `y = W x`) over f32, bf16, f16 or
//! group-quantized (q8, q4, llama.cpp's blocks) storage.

use super::panel::Panels;
use super::{bf16_to_f32, f16_to_f32, DType, Tensor};
use std::sync::{Arc, OnceLock};

/// Element storage of a [`Matrix`], borrowed from its tensors.
pub enum MatrixData<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// bf16 rows (raw bits).
    BF16(&'a [u16]),
    /// f16 rows (raw bits).
    F16(&'a [u16]),
    /// q8 rows: `q` [rows, cols], `scales` f16 [rows, groups].
    Q8 {
        /// Quantized weights.
        q: &'a [i8],
        /// One f16 scale per group.
        scales: &'a [u16],
        /// Weights per group.
        group: usize,
    },
    /// q4 rows: `q` packed [rows, cols/2], `scales` f16 [rows, groups].
    Q4 {
        /// Packed 4-bit level indices (see `tensor::block`).
        q: &'a [u8],
        /// One f16 scale per group.
        scales: &'a [u16],
        /// Weights per group.
        group: usize,
    },
    /// llama.cpp block-quantized rows, each `kind.size_of(cols)` bytes, read in place.
    Ggml {
        /// The block type.
        kind: super::ggml::GgmlType,
        /// All rows' blocks.
        bytes: &'a [u8],
    },
}

/// The parameters of a group-quantized matrix.
#[derive(Clone, Debug)]
pub struct QuantParts {
    /// [`DType::Q8`] or [`DType::Q4`].
    pub kind: DType,
    /// Weights per group.
    pub group: usize,
    /// f16 scales [rows, groups].
    pub scales: Tensor,
}

/// A `[rows, cols]` matrix: row `r` holds the weights of output `r` (PyTorch `nn.Linear` layout).
#[derive(Clone, Debug)]
pub struct Matrix {
    /// The underlying weights (mapped or owned; packed when quantized).
    pub tensor: Tensor,
    /// Output dimension.
    pub rows: usize,
    /// Input dimension.
    pub cols: usize,
    /// Group parameters when the weights are quantized.
    pub quant: Option<QuantParts>,
    /// Activation-aware scaling (AWQ): the stored weights are `W·diag(s)`, and products
    /// multiply the input by this vector, `1/s` [cols], first.
    pub input_scale: Option<Arc<[f32]>>,
    /// The stored rows repacked into interleaved panels, built once by the products that
    /// read them (`kernels::qpanel::prepare`; `None` inside where the CPU or shape has none).
    /// Shared by clones, as the weights are.
    pub panels: Arc<OnceLock<Option<Panels>>>,
}

impl Matrix {
    /// Wraps a float `tensor` (whose element count must be `rows * cols`).
    pub fn new(tensor: Tensor, rows: usize, cols: usize) -> Matrix {
        debug_assert_eq!(tensor.numel(), rows * cols);
        Matrix { tensor, rows, cols, quant: None, input_scale: None, panels: Default::default() }
    }

    /// Storage type of the weights (Q8/Q4 when quantized).
    pub fn dtype(&self) -> DType {
        self.quant.as_ref().map_or(self.tensor.dtype, |q| q.kind)
    }

    /// Typed access to all elements.
    pub fn data(&self) -> MatrixData<'_> {
        if let Some(qp) = &self.quant {
            let scales = qp.scales.as_u16().unwrap_or_default();
            return match qp.kind {
                DType::Q8 => MatrixData::Q8 { q: self.tensor.as_i8().unwrap_or_default(), scales, group: qp.group },
                _ => MatrixData::Q4 { q: self.tensor.bytes(), scales, group: qp.group },
            };
        }
        match self.tensor.dtype {
            DType::BF16 => MatrixData::BF16(self.tensor.as_u16().unwrap_or_default()),
            DType::F16 => MatrixData::F16(self.tensor.as_u16().unwrap_or_default()),
            DType::Ggml(kind) => MatrixData::Ggml { kind, bytes: self.tensor.bytes() },
            _ => MatrixData::F32(self.tensor.as_f32().unwrap_or_default()),
        }
    }

    /// Writes stored row `r` as f32 into `out` (`out.len() == cols`): for AWQ matrices these
    /// are the scaled weights that products pair with the scaled input.
    pub fn stored_row_to_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        let span = r * c..(r + 1) * c;
        match self.data() {
            MatrixData::F32(d) => out.copy_from_slice(&d[span]),
            MatrixData::BF16(d) => out.iter_mut().zip(&d[span]).for_each(|(o, &b)| *o = bf16_to_f32(b)),
            MatrixData::F16(d) => out.iter_mut().zip(&d[span]).for_each(|(o, &b)| *o = f16_to_f32(b)),
            MatrixData::Q8 { q, scales, group } => {
                let ng = c.div_ceil(group);
                crate::tensor::block::dequantize_q8_row(&q[span], &scales[r * ng..(r + 1) * ng], group, out)
            }
            MatrixData::Q4 { q, scales, group } => {
                let ng = c.div_ceil(group);
                crate::tensor::block::dequantize_q4_row(
                    &q[r * c / 2..(r + 1) * c / 2],
                    &scales[r * ng..(r + 1) * ng],
                    group,
                    out,
                )
            }
            MatrixData::Ggml { kind, bytes } => {
                let rb = kind.size_of(c);
                super::ggml::dequantize_row(kind, &bytes[r * rb..(r + 1) * rb], out)
            }
        }
    }

    /// Writes row `r` of the matrix as the model sees it (e.g. an embedding row) into `out`.
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        self.stored_row_to_f32(r, out);
        if let Some(s) = &self.input_scale {
            out.iter_mut().zip(s.iter()).for_each(|(o, s)| *o *= s);
        }
    }

    /// Bytes of weights (and quantization parameters) read by one full product.
    pub fn n_bytes(&self) -> usize {
        let q = self.quant.as_ref().map_or(0, |q| q.scales.bytes().len());
        self.tensor.bytes().len() + q + self.input_scale.as_ref().map_or(0, |s| 4 * s.len())
    }
}
