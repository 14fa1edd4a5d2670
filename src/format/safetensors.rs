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
    /// The container the tensors were read from (safetensors here; the other readers of
    /// [`super::open`] build the same record under libsutra's tensor names).
    pub format: super::Format,
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
        refuse_duplicate_keys(header.trim_end()).map_err(|e| fail(format!("header: {e}")))?;
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
        Ok(SafetensorsFile {
            name: name.to_string(),
            tensors,
            metadata,
            n_bytes: bytes.len(),
            quant,
            format: super::Format::Safetensors,
        })
    }

    /// The tensor called `key`, or a format error naming it and the file.
    pub fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| Error::format(format!("{}: missing tensor '{key}'", self.name)))
    }
}

/// Checks that no key appears twice in the header's top-level object or in its
/// `__metadata__` (a JSON parser would silently keep the last one).
fn refuse_duplicate_keys(header: &str) -> std::result::Result<(), String> {
    use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
    struct Keys(bool);
    impl<'de> Visitor<'de> for Keys {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(A::Error::custom(format!("key '{k}' appears twice")));
                }
                if self.0 && k == "__metadata__" {
                    m.next_value_seed(Nested)?;
                } else {
                    m.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    struct Nested;
    impl<'de> serde::de::DeserializeSeed<'de> for Nested {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_map(Keys(false))
        }
    }
    let mut d = serde_json::Deserializer::from_str(header);
    d.deserialize_map(Keys(true)).map_err(|e| e.to_string())
}

/// One tensor to write: name, dtype, shape, raw little-endian bytes.
pub type TensorBytes = (String, DType, Vec<usize>, Vec<u8>);

/// The bytes of a safetensors file holding `tensors` and `metadata`, byte-reproducible: the
/// header lists metadata and tensors in sorted order, and the data section holds tensors by
/// decreasing element size, then name (so that every tensor stays aligned to its element
/// size, as the `safetensors` crate lays them out).
pub fn serialize(tensors: &[TensorBytes], metadata: Option<&BTreeMap<String, String>>) -> Result<Vec<u8>> {
    let mut order: Vec<&TensorBytes> = tensors.iter().collect();
    order.sort_by(|a, b| b.1.align().cmp(&a.1.align()).then_with(|| a.0.cmp(&b.0)));
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let meta: serde_json::Map<String, serde_json::Value> =
            m.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    }
    let mut offset = 0usize;
    let mut entries = BTreeMap::new();
    for (name, dtype, shape, data) in &order {
        let numel: usize = shape.iter().product();
        let st_name = match dtype {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I8 | DType::Q8 => "I8",
            DType::U8 | DType::Q4 => "U8",
            DType::I64 => "I64",
            DType::Ggml(k) => {
                return Err(Error::unsupported(format!(
                    "tensor '{name}': {} blocks have no safetensors type (dequantize it first)",
                    k.name()
                )))
            }
        };
        // Stored elements: q8/q4 matrices are written as their i8/u8 storage.
        if numel * dtype.align() != data.len() {
            return Err(Error::invalid(format!(
                "tensor '{name}': {} bytes for shape {shape:?} of {dtype:?}",
                data.len()
            )));
        }
        entries.insert(
            name.clone(),
            serde_json::json!({"dtype": st_name, "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    header.extend(entries);
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for (_, _, _, data) in order {
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Writes a safetensors file (see [`serialize`]) at `path`.
pub fn write(path: &Path, tensors: &[TensorBytes], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let meta = metadata.map(|m| m.into_iter().collect::<BTreeMap<_, _>>());
    let bytes = serialize(tensors, meta.as_ref())?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Refuses an output path that is the input file itself (writing would replace the source).
pub fn check_not_input(input: &Path, output: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(Error::invalid(format!(
                "the output {} is the input file: writing it would replace the source; choose another path",
                output.display()
            )));
        }
    }
    Ok(())
}

/// Writes a safetensors file at `path` atomically (see [`write_file_atomic`]).
pub fn write_atomic(
    path: &Path,
    tensors: &[TensorBytes],
    metadata: Option<HashMap<String, String>>,
    before_rename: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let meta = metadata.map(|m| m.into_iter().collect::<BTreeMap<_, _>>());
    let bytes = serialize(tensors, meta.as_ref())?;
    write_file_atomic(path, &bytes, before_rename)
}

/// Writes `bytes` at `path` through a temporary file of its own in the same folder (a fresh
/// name, created exclusively, so that concurrent writers and a user's files are never
/// touched), calling `before_rename` (e.g. a last cancellation check) and then renaming it
/// into place. On any failure the temporary file is removed and `path` is left as it was;
/// errors name `path`.
pub fn write_file_atomic(path: &Path, bytes: &[u8], before_rename: impl FnOnce() -> Result<()>) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = path.file_name().map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let (tmp, mut f) = (0u32..)
        .map(|n| dir.join(format!(".{stem}.{}.{n}.partial", std::process::id())))
        .find_map(|p| match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => Some(Ok((p, f))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(e) => Some(Err(Error::Io { path: path.display().to_string(), source: e })),
        })
        .unwrap_or_else(|| Err(Error::Internal("no free temporary name".into())))?;
    let result = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Io { path: path.display().to_string(), source: e })
        .and_then(|_| before_rename())
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    drop(f);
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}
