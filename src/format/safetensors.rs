//! Reading safetensors containers, zero-copy over a memory map or an owned buffer.
//!
//! The header is parsed here rather than by the `safetensors` crate so that every failure
//! names the file and the tensor at fault (the crate's errors do not); files are written with
//! the `safetensors` crate (see [`write`]).

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Largest header accepted (the safetensors reference uses the same bound).
const MAX_HEADER: usize = 100 << 20;

/// All tensors of one safetensors file, plus its `__metadata__` strings.
pub struct SafetensorsFile {
    /// The file name (or the name given to an in-memory buffer), for messages.
    pub name: String,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The free-form `__metadata__` record.
    pub metadata: HashMap<String, String>,
    /// Total bytes of the container.
    pub n_bytes: usize,
    /// The quantization record, for libsutra quantized files.
    pub quant: Option<super::quantized::QuantInfo>,
}

impl SafetensorsFile {
    /// Opens `path`, memory-mapped when `use_mmap`, else read into memory.
    pub fn open(path: &Path, use_mmap: bool) -> Result<SafetensorsFile> {
        let storage = if use_mmap { Storage::map(path)? } else { Storage::read(path)? };
        Self::parse(Arc::new(storage), &path.display().to_string())
    }

    /// Parses a container held in `storage`; `name` is used in messages.
    pub fn parse(storage: Arc<Storage>, name: &str) -> Result<SafetensorsFile> {
        let bytes = storage.bytes();
        let fail = |m: String| Error::format(format!("{name}: {m}"));
        if bytes.is_empty() {
            return Err(fail("empty file".into()));
        }
        if bytes.len() < 8 {
            return Err(fail(format!("{} bytes: too short for a safetensors header", bytes.len())));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        if n > MAX_HEADER as u64 || n + 8 > bytes.len() as u64 {
            return Err(fail(format!(
                "header length {n} does not fit in a file of {} bytes (truncated or not safetensors)",
                bytes.len()
            )));
        }
        let n = n as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n])
            .map_err(|_| fail("header is not UTF-8 (not a safetensors file)".into()))?;
        let json: serde_json::Value =
            serde_json::from_str(header.trim_end()).map_err(|e| fail(format!("header is not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| fail("header is not a JSON object".into()))?;
        let data_start = 8 + n;
        let data_len = bytes.len() - data_start;
        let mut tensors = BTreeMap::new();
        let mut metadata = HashMap::new();
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        for (key, val) in obj {
            if key == "__metadata__" {
                let m = val.as_object().ok_or_else(|| fail("__metadata__ is not an object".into()))?;
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| fail(format!("__metadata__.{k} is not a string")))?;
                    metadata.insert(k.clone(), v.to_string());
                }
                continue;
            }
            let t = val.as_object().ok_or_else(|| fail(format!("tensor '{key}': entry is not an object")))?;
            let dtype_s = t
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| fail(format!("tensor '{key}': missing dtype")))?;
            let dtype = match dtype_s {
                "F32" => DType::F32,
                "F16" => DType::F16,
                "BF16" => DType::BF16,
                "I8" => DType::I8,
                "U8" => DType::U8,
                "I64" => DType::I64,
                other => {
                    return Err(Error::unsupported(format!("{name}: tensor '{key}': dtype {other} is not supported")))
                }
            };
            let shape: Vec<usize> = t
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| fail(format!("tensor '{key}': missing shape")))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| fail(format!("tensor '{key}': shape is not a list of sizes")))?;
            let offs: Vec<usize> = t
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(|| fail(format!("tensor '{key}': missing data_offsets")))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| fail(format!("tensor '{key}': data_offsets are not sizes")))?;
            if offs.len() != 2 || offs[0] > offs[1] {
                return Err(fail(format!("tensor '{key}': bad data_offsets {offs:?}")));
            }
            let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let want = numel.and_then(|n| n.checked_mul(dtype.size_of(1)));
            if want != Some(offs[1] - offs[0]) {
                return Err(fail(format!(
                    "tensor '{key}': shape {shape:?} of {dtype_s} needs {} bytes but data_offsets {offs:?} hold {}",
                    want.map_or("too many".to_string(), |w| w.to_string()),
                    offs[1] - offs[0]
                )));
            }
            if offs[1] > data_len {
                return Err(fail(format!(
                    "tensor '{key}': data ends at byte {} but the file has {data_len} data bytes (truncated file)",
                    offs[1]
                )));
            }
            spans.push((offs[0], offs[1], key));
            let range = data_start + offs[0]..data_start + offs[1];
            tensors.insert(key.clone(), Tensor::new(key, dtype, shape, storage.clone(), range)?);
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(fail(format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2)));
            }
        }
        let quant = super::quantized::QuantInfo::parse(name, &metadata, &tensors)?;
        Ok(SafetensorsFile { name: name.to_string(), tensors, metadata, n_bytes: bytes.len(), quant })
    }

    /// The tensor called `key`, or a format error naming it and the file.
    pub fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| Error::format(format!("{}: missing tensor '{key}'", self.name)))
    }
}

/// Writes f32/bf16/f16/u8/i8/i64 tensors given as raw little-endian bytes to a safetensors file.
pub fn write(
    path: &Path,
    tensors: &[(String, DType, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    use safetensors::tensor::TensorView;
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, data) in tensors {
        let dt = match dtype {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::I8 => safetensors::Dtype::I8,
            DType::U8 => safetensors::Dtype::U8,
            DType::I64 => safetensors::Dtype::I64,
            DType::Q8 => safetensors::Dtype::I8,
            DType::Q4 => safetensors::Dtype::U8,
        };
        let view =
            TensorView::new(dt, shape.clone(), data).map_err(|e| Error::invalid(format!("tensor '{name}': {e:?}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize_to_file(views, &metadata, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(io) => Error::io(path, io),
        other => Error::Internal(format!("{}: {other:?}", path.display())),
    })
}
