//! GGUF, llama.cpp's container (versions 2 and 3, little-endian): a header, typed metadata
//! key/values, tensor infos, then the tensor data at `general.alignment` (default 32).
//!
//! Every count and offset is checked against the bytes that remain before anything is
//! allocated or read, so a file with lying counts is a format error naming what lied.
//! Tensors are views into the file's storage (mapped in place, nothing converted at load);
//! [`super::gguf_map`] renames them onto libsutra's layouts.

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Default alignment of the data section and of every tensor in it.
const DEFAULT_ALIGNMENT: u64 = 32;

/// Most dimensions a GGUF tensor has (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// Deepest nesting of arrays accepted (real files nest none).
const MAX_DEPTH: usize = 2;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`: raw bytes (GGUF strings are meant to be UTF-8; token lists may not be).
    Str(Vec<u8>),
    /// `ARRAY` of values of one type.
    Array(Vec<Value>),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as text, if it is a UTF-8 string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// A short rendering for `sutra info`: scalars as themselves, arrays by their length.
    pub fn display(&self) -> String {
        match self {
            Value::Str(s) => String::from_utf8_lossy(s).into_owned(),
            Value::Array(a) => format!("[{} values]", a.len()),
            Value::Bool(b) => b.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            v => v.as_u64().map_or_else(|| format!("{v:?}"), |u| u.to_string()),
        }
    }
}

/// One tensor's record: its name, ggml type id, dimensions (`ne`, innermost first) and the
/// view of its bytes.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    /// The tensor's name in the file (`blk.0.time_mix_key.weight`).
    pub name: String,
    /// The ggml type id (0 F32, 1 F16, 8 Q8_0, …).
    pub type_id: u32,
    /// Dimensions as GGUF stores them, innermost (contiguous) first.
    pub ne: Vec<u64>,
    /// The tensor, shape outermost first (`ne` reversed), viewing the file's bytes.
    pub tensor: Tensor,
}

/// A parsed GGUF file.
pub struct GgufFile {
    /// The file name, for messages.
    pub name: String,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor>,
    /// Bytes of the whole file.
    pub n_bytes: usize,
}

/// The libsutra element type of ggml type `id`, or `None` when libsutra has no kernels for it.
pub fn dtype_of(id: u32) -> Option<DType> {
    match id {
        0 => Some(DType::F32),
        1 => Some(DType::F16),
        30 => Some(DType::BF16),
        _ => crate::tensor::ggml::GgmlType::from_id(id).map(DType::Ggml),
    }
}

/// ggml's name of type `id` (for messages about types libsutra does not read).
pub fn type_name(id: u32) -> String {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    NAMES.get(id as usize).map_or_else(|| format!("type {id}"), |n| n.to_string())
}

/// A cursor over the header bytes; every read checks what remains.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    name: &'a str,
}

impl<'a> Reader<'a> {
    fn fail(&self, what: impl std::fmt::Display) -> Error {
        Error::format(format!("{}: GGUF {what} (at byte {})", self.name, self.pos))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.fail(format!("{what}: {n} bytes needed, {} left (truncated file)", self.remaining())));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }

    /// A count of items each at least `min_size` bytes long: more than the remaining bytes
    /// could hold is a lie, refused before anything is allocated.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_size.max(1)) as u64 {
            return Err(self.fail(format!("{what} is {n}, more than the {} bytes left can hold", self.remaining())));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<Vec<u8>> {
        let n = self.count(&format!("{what} length"), 1)?;
        Ok(self.take(n, what)?.to_vec())
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        let mut fixed = |n: usize| -> Result<&'a [u8]> { self.take(n, key) };
        Ok(match ty {
            0 => Value::U8(fixed(1)?[0]),
            1 => Value::I8(fixed(1)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(fixed(2)?.try_into().unwrap_or_default())),
            3 => Value::I16(i16::from_le_bytes(fixed(2)?.try_into().unwrap_or_default())),
            4 => Value::U32(u32::from_le_bytes(fixed(4)?.try_into().unwrap_or_default())),
            5 => Value::I32(i32::from_le_bytes(fixed(4)?.try_into().unwrap_or_default())),
            6 => Value::F32(f32::from_le_bytes(fixed(4)?.try_into().unwrap_or_default())),
            7 => match fixed(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.fail(format!("metadata '{key}': bool byte {b} (0 or 1 expected)"))),
            },
            8 => Value::Str(self.string(&format!("metadata '{key}'"))?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.fail(format!("metadata '{key}': arrays nested deeper than {MAX_DEPTH}")));
                }
                let elem = self.u32(&format!("metadata '{key}' array type"))?;
                let size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(self.fail(format!("metadata '{key}': unknown array element type {t}"))),
                };
                let n = self.count(&format!("metadata '{key}' array length"), size)?;
                let mut items = Vec::new();
                items.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("{}: '{key}'", self.name)))?;
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(fixed(8)?.try_into().unwrap_or_default())),
            11 => Value::I64(i64::from_le_bytes(fixed(8)?.try_into().unwrap_or_default())),
            12 => Value::F64(f64::from_le_bytes(fixed(8)?.try_into().unwrap_or_default())),
            t => return Err(self.fail(format!("metadata '{key}': unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Opens `path`, memory-mapped when `use_mmap`, else read into memory.
    pub fn open(path: &std::path::Path, use_mmap: bool) -> Result<GgufFile> {
        let storage = if use_mmap { Storage::map(path)? } else { Storage::read(path)? };
        Self::parse(Arc::new(storage), &path.display().to_string())
    }

    /// Parses a GGUF file held in `storage`; `name` is used in messages.
    pub fn parse(storage: Arc<Storage>, name: &str) -> Result<GgufFile> {
        let bytes = storage.bytes();
        let mut r = Reader { bytes, pos: 0, name };
        if r.take(4, "magic")? != MAGIC {
            return Err(r.fail("magic: not a GGUF file"));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::unsupported(format!("{name}: GGUF version {version}; versions 2 and 3 are supported")));
        }
        // The smallest tensor info: an empty name (8), one dimension (4 + 8), type (4), offset (8).
        let n_tensors = r.count("tensor count", 32)?;
        // The smallest key/value: an empty key (8), a type (4), one byte.
        let n_kv = r.count("metadata count", 13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut seen = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = String::from_utf8(r.string(&format!("metadata key {i}"))?)
                .map_err(|_| r.fail(format!("metadata key {i} is not UTF-8")))?;
            if !seen.insert(key.clone()) {
                return Err(r.fail(format!("metadata key '{key}' appears twice")));
            }
            let ty = r.u32(&format!("metadata '{key}' type"))?;
            let v = r.value(ty, &key, 0)?;
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => *a as u64,
            Some((_, v)) => return Err(r.fail(format!("general.alignment {v:?}: a power of two (u32) expected"))),
        };
        struct Info {
            name: String,
            ne: Vec<u64>,
            type_id: u32,
            offset: u64,
        }
        let mut infos = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let tname = String::from_utf8(r.string(&format!("tensor {i} name"))?)
                .map_err(|_| r.fail(format!("tensor {i}'s name is not UTF-8")))?;
            if !names.insert(tname.clone()) {
                return Err(r.fail(format!("tensor '{tname}' appears twice")));
            }
            let n_dims = r.u32(&format!("tensor '{tname}' dimension count"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.fail(format!("tensor '{tname}' has {n_dims} dimensions (1 to {MAX_DIMS} expected)")));
            }
            let ne = (0..n_dims).map(|_| r.u64(&format!("tensor '{tname}' dimensions"))).collect::<Result<Vec<_>>>()?;
            let type_id = r.u32(&format!("tensor '{tname}' type"))?;
            let offset = r.u64(&format!("tensor '{tname}' offset"))?;
            infos.push(Info { name: tname, ne, type_id, offset });
        }
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        if data_start > bytes.len() as u64 {
            return Err(r.fail(format!("data section starts at byte {data_start}, past the end of the file")));
        }
        let data_len = bytes.len() as u64 - data_start;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut spans = Vec::with_capacity(infos.len());
        for info in infos {
            let Info { name: tname, ne, type_id, offset } = info;
            let fail = |m: String| Error::format(format!("{name}: GGUF tensor '{tname}' {m}"));
            let dtype = dtype_of(type_id).ok_or_else(|| {
                Error::unsupported(format!(
                    "{name}: GGUF tensor '{tname}' has type {} (id {type_id}), which libsutra does not read",
                    type_name(type_id)
                ))
            })?;
            let numel = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= data_len * 8);
            let Some(numel) = numel else {
                return Err(fail(format!("dimensions {ne:?} hold more elements than the file's bytes")));
            };
            if let DType::Ggml(k) = dtype {
                if ne.first().is_none_or(|&d| d % k.block_elems() as u64 != 0) {
                    return Err(fail(format!(
                        "has rows of {} weights, not a whole number of {} blocks of {}",
                        ne.first().copied().unwrap_or(0),
                        k.name(),
                        k.block_elems()
                    )));
                }
            }
            let size = dtype.size_of(numel as usize) as u64;
            if offset % alignment != 0 {
                return Err(fail(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            if offset.checked_add(size).is_none_or(|end| end > data_len) {
                return Err(fail(format!(
                    "data [{offset}, +{size}) runs past the {data_len} data bytes (truncated file or lying offset)"
                )));
            }
            spans.push((offset, offset + size, tname.clone()));
            let start = (data_start + offset) as usize;
            let shape: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
            let tensor = Tensor::new(&tname, dtype, shape, storage.clone(), start..start + size as usize)
                .map_err(|e| e.context(name))?;
            tensors.push(GgufTensor { name: tname, type_id, ne, tensor });
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(Error::format(format!("{name}: GGUF tensors '{}' and '{}' overlap", w[0].2, w[1].2)));
            }
        }
        Ok(GgufFile { name: name.to_string(), version, metadata, tensors, n_bytes: bytes.len() })
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The metadata value of `key` as a string (a format error naming it when it is not one).
    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| Error::format(format!("{}: GGUF metadata '{key}' is not a UTF-8 string", self.name))),
        }
    }

    /// The metadata value of `key` as an unsigned integer.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::format(format!("{}: GGUF metadata '{key}' is {v:?}, an integer expected", self.name))
            }),
        }
    }

    /// The metadata value of `key` as a float.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::format(format!("{}: GGUF metadata '{key}' is {v:?}, a number expected", self.name))
            }),
        }
    }

    /// The metadata value of `key` as an array (a format error naming it otherwise).
    pub fn array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(Error::format(format!("{}: GGUF metadata '{key}' is not an array", self.name))),
        }
    }

    /// The tensors by name.
    pub fn by_name(&self) -> BTreeMap<&str, &GgufTensor> {
        self.tensors.iter().map(|t| (t.name.as_str(), t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 file: metadata key/values written by `kv`, then `tensors` (name, ne, type, data).
    pub(crate) fn build(kv: &[(&str, u32, Vec<u8>)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        for (k, ty, v) in kv {
            s(&mut b, k);
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(v);
        }
        let mut off = 0u64;
        for (name, ne, ty, data) in tensors {
            s(&mut b, name);
            b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
            ne.iter().for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
            off += (data.len() as u64).div_ceil(32) * 32;
        }
        b.resize(b.len().div_ceil(32) * 32, 0);
        for (_, _, _, data) in tensors {
            b.extend_from_slice(data);
            b.resize(b.len().div_ceil(32) * 32, 0);
        }
        b
    }

    fn parse(b: &[u8]) -> Result<GgufFile> {
        GgufFile::parse(Arc::new(Storage::from_bytes(b)), "t.gguf")
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&2u64.to_le_bytes());
        for t in ["ab", "c"] {
            arr.extend_from_slice(&(t.len() as u64).to_le_bytes());
            arr.extend_from_slice(t.as_bytes());
        }
        let mut name = 4u64.to_le_bytes().to_vec();
        name.extend_from_slice(b"test");
        let b = build(
            &[("general.name", 8, name), ("n", 4, 7u32.to_le_bytes().to_vec()), ("toks", 9, arr)],
            &[("w", vec![3, 2], 0, f32s(&[1., 2., 3., 4., 5., 6.])), ("v", vec![2], 0, f32s(&[7., 8.]))],
        );
        let g = parse(&b).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.str("general.name").unwrap(), Some("test"));
        assert_eq!(g.uint("n").unwrap(), Some(7));
        assert_eq!(g.array("toks").unwrap().unwrap().len(), 2);
        let w = &g.by_name()["w"].tensor;
        assert_eq!(w.shape, vec![2, 3]);
        assert_eq!(w.as_f32().unwrap(), &[1., 2., 3., 4., 5., 6.]);
        assert_eq!(g.by_name()["v"].tensor.as_f32().unwrap(), &[7., 8.]);
    }

    #[test]
    fn lying_counts_and_offsets_are_format_errors() {
        let good = build(&[], &[("w", vec![4], 0, f32s(&[1., 2., 3., 4.]))]);
        assert!(parse(&good).is_ok());
        let check = |b: &[u8], want: &str| match parse(b) {
            Err(Error::Format(m)) => assert!(m.contains(want), "{m}"),
            Err(e) => panic!("{want}: {e}"),
            Ok(_) => panic!("{want}: accepted"),
        };
        let mut b = good.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&b, "tensor count");
        let mut b = good.clone();
        b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        check(&b, "metadata count");
        // The tensor's offset field sits right before the data section's padding.
        let info_end = 24 + 8 + 1 + 4 + 8 + 4;
        let mut b = good.clone();
        b[info_end..info_end + 8].copy_from_slice(&64u64.to_le_bytes());
        check(&b, "runs past");
        let mut b = good.clone();
        b[info_end..info_end + 8].copy_from_slice(&4u64.to_le_bytes());
        check(&b, "alignment");
        let mut b = good.clone();
        b[24 + 8 + 1 + 4..24 + 8 + 1 + 4 + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        check(&b, "more elements");
        check(&good[..good.len() - 20], "runs past");
        check(&good[..30], "tensor count");
        check(&good[..12], "truncated");
        let mut b = good.clone();
        b[0] = b'X';
        check(&b, "magic");
    }

    #[test]
    fn unknown_types_are_unsupported_naming_them() {
        let b = build(&[], &[("w", vec![32], 20, vec![0u8; 18])]);
        match parse(&b) {
            Err(Error::Unsupported(m)) => assert!(m.contains("IQ4_NL") && m.contains("'w'"), "{m}"),
            other => panic!("{:?}", other.map(|g| g.version)),
        }
        let mut v1 = build(&[], &[]);
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(parse(&v1), Err(Error::Unsupported(_))));
    }
}
