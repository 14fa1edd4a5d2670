//! Tensors: element types and views over mapped or owned memory.
//!
//! A [`Tensor`] is a typed, shaped window into a [`Storage`] (a memory-mapped file or an owned,
//! 8-byte aligned buffer). Weights are used in place: an f32, bf16 or f16 matrix is never
//! copied at load time unless its bytes are misaligned for its element type.

pub mod block;
mod dtype;
pub mod ggml;
mod matrix;
pub mod panel;
mod storage;

pub use dtype::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, DType};
pub use matrix::{Matrix, MatrixData, QuantParts};
pub use storage::Storage;

use crate::error::{Error, Result};
use std::ops::Range;
use std::sync::Arc;

/// A shaped, typed view of bytes held by a shared [`Storage`].
#[derive(Clone)]
pub struct Tensor {
    /// The tensor's name in its file (for error messages).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first (row-major).
    pub shape: Vec<usize>,
    storage: Arc<Storage>,
    range: Range<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?} {:?})", self.name, self.dtype, self.shape)
    }
}

impl Tensor {
    /// A view of `range` bytes of `storage`; checks the byte length against shape and dtype.
    pub fn new(
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        storage: Arc<Storage>,
        range: Range<usize>,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let want = dtype.size_of(n);
        if range.end > storage.len() || range.start > range.end || range.len() != want {
            return Err(Error::format(format!(
                "tensor '{name}': {} bytes for shape {shape:?} {dtype:?}, expected {want}",
                range.len()
            )));
        }
        let mut t = Tensor { name: name.to_string(), dtype, shape, storage, range };
        if t.bytes().as_ptr().align_offset(dtype.align()) != 0 {
            t = t.to_owned_copy();
        }
        Ok(t)
    }

    /// An owned f32 tensor.
    pub fn from_f32(name: &str, shape: Vec<usize>, data: &[f32]) -> Tensor {
        let storage = Arc::new(Storage::from_bytes(bytemuck::cast_slice(data)));
        let len = storage.len();
        Tensor { name: name.to_string(), dtype: DType::F32, shape, storage, range: 0..len }
    }

    fn to_owned_copy(&self) -> Tensor {
        let storage = Arc::new(Storage::from_bytes(self.bytes()));
        let len = storage.len();
        Tensor { name: self.name.clone(), dtype: self.dtype, shape: self.shape.clone(), storage, range: 0..len }
    }

    /// The storage this tensor views (shared by all tensors of one file).
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// An identifier of the storage this tensor views (the same for all tensors of one file).
    pub fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.storage) as *const u8 as usize
    }

    /// Lets a mapped file's pages under this tensor go (see [`Storage::release_pages`]): for
    /// weights read from a repacked copy from now on.
    pub fn release_pages(&self) {
        self.storage.release_pages(self.range.clone());
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.range.clone()]
    }

    /// The elements as f32, if the dtype is F32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        (self.dtype == DType::F32).then(|| bytemuck::cast_slice(self.bytes()))
    }

    /// The elements as raw 16-bit words, if the dtype is BF16 or F16.
    pub fn as_u16(&self) -> Option<&[u16]> {
        matches!(self.dtype, DType::BF16 | DType::F16).then(|| bytemuck::cast_slice(self.bytes()))
    }

    /// The elements as signed bytes, if the dtype is I8.
    pub fn as_i8(&self) -> Option<&[i8]> {
        (self.dtype == DType::I8).then(|| bytemuck::cast_slice(self.bytes()))
    }

    /// All elements converted to f32 (a copy).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => Ok(self.as_f32().unwrap_or_default().to_vec()),
            DType::BF16 => Ok(self.as_u16().unwrap_or_default().iter().map(|&b| bf16_to_f32(b)).collect()),
            DType::F16 => Ok(self.as_u16().unwrap_or_default().iter().map(|&b| f16_to_f32(b)).collect()),
            DType::Ggml(k) => {
                let mut out = vec![0f32; self.numel()];
                ggml::dequantize_row(k, self.bytes(), &mut out);
                Ok(out)
            }
            other => {
                Err(Error::unsupported(format!("tensor '{}': dtype {other:?} cannot be read as floats", self.name)))
            }
        }
    }

    /// The shape with leading singleton dimensions removed (`[1, 1, C]` becomes `[C]`).
    pub fn squeezed_shape(&self) -> Vec<usize> {
        squeeze(&self.shape)
    }
}

/// `shape` without its leading singleton dimensions (`[1, 1, C]` becomes `[C]`).
pub fn squeeze(shape: &[usize]) -> Vec<usize> {
    let ones = shape.iter().take(shape.len().saturating_sub(1)).take_while(|&&d| d == 1).count();
    shape[ones..].to_vec()
}
