//! libsutra's quantized checkpoint: a safetensors file whose `__metadata__` says which
//! tensors are group-quantized and how, loaded through the same mmap path with no repacking.
//!
//! Layout. A quantized matrix `NAME` (logical shape `[rows, cols]`) is stored as
//! - `NAME`: the packed weights, `I8 [rows, cols]` (q8) or `U8 [rows, cols/2]` (q4);
//! - `NAME.scales`: `F16 [rows, groups]`;
//! - `NAME.input_scale`: `F32 [cols]`, present when AWQ scaled the matrix (products
//!   multiply their input by it).
//!
//! Every other tensor is stored as in the source checkpoint. `__metadata__`:
//! - `sutra.format` = `"quantized"`, `sutra.format_version` = `"1"`;
//! - `sutra.method` (`rtn` or `awq`), `sutra.group_size`, `sutra.type` (`q8` or `q4`);
//! - `sutra.tensors`: a JSON object `{NAME: {"type": "q4", "shape": [rows, cols]}}`;
//! - `sutra.calibration`: a JSON summary (file, tokens, α per matrix) or `null`.

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// One quantized matrix, as listed in the metadata.
#[derive(Debug, Clone)]
pub struct QuantEntry {
    /// [`DType::Q8`] or [`DType::Q4`].
    pub kind: DType,
    /// Logical rows.
    pub rows: usize,
    /// Logical columns.
    pub cols: usize,
}

/// The quantization record of a file.
#[derive(Debug, Clone)]
pub struct QuantInfo {
    /// Method: "rtn" or "awq".
    pub method: String,
    /// Weights per group.
    pub group: usize,
    /// Quantized matrices by name.
    pub tensors: BTreeMap<String, QuantEntry>,
}

/// Companion tensor suffixes (they are not model tensors).
pub const COMPANIONS: [&str; 2] = [".scales", ".input_scale"];

impl QuantInfo {
    /// Reads and checks the record of `file`'s metadata against its tensors; `None` for a
    /// plain checkpoint.
    pub fn parse(
        name: &str,
        metadata: &HashMap<String, String>,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Option<QuantInfo>> {
        let Some(kind) = metadata.get("sutra.format") else { return Ok(None) };
        let fail = |m: String| Err(Error::format(format!("{name}: quantized file: {m}")));
        if kind != "quantized" {
            return fail(format!("sutra.format is '{kind}', expected 'quantized'"));
        }
        let version = metadata.get("sutra.format_version").map(|s| s.as_str()).unwrap_or("(missing)");
        if version != FORMAT_VERSION.to_string() {
            return fail(format!("format version {version}; this build reads version {FORMAT_VERSION}"));
        }
        let method = metadata.get("sutra.method").cloned().unwrap_or_default();
        if method != "rtn" && method != "awq" {
            return fail(format!("sutra.method '{method}' is not rtn or awq"));
        }
        let group: usize = match metadata.get("sutra.group_size").and_then(|g| g.parse().ok()) {
            Some(g @ (32 | 64 | 128)) => g,
            _ => return fail(format!("sutra.group_size {:?} is not 32, 64 or 128", metadata.get("sutra.group_size"))),
        };
        let list: serde_json::Value = match metadata.get("sutra.tensors").map(|s| serde_json::from_str(s)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return fail(format!("sutra.tensors is not JSON: {e}")),
            None => return fail("sutra.tensors is missing".into()),
        };
        let Some(list) = list.as_object() else { return fail("sutra.tensors is not an object".into()) };
        let mut out = BTreeMap::new();
        for (t, spec) in list {
            let ty = spec.get("type").and_then(|v| v.as_str()).unwrap_or("");
            let shape: Vec<usize> = spec
                .get("shape")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
                .unwrap_or_default();
            let (kind, stored_dtype) = match ty {
                "q8" => (DType::Q8, DType::I8),
                "q4" => (DType::Q4, DType::U8),
                other => return fail(format!("tensor '{t}': type '{other}' is not q8 or q4")),
            };
            let [rows, cols] = shape[..] else {
                return fail(format!("tensor '{t}': shape {shape:?} is not [rows, cols]"));
            };
            if cols % crate::tensor::block::BLOCK != 0 {
                return fail(format!("tensor '{t}': {cols} columns is not a multiple of 32"));
            }
            let want = if kind == DType::Q8 { vec![rows, cols] } else { vec![rows, cols / 2] };
            let Some(w) = tensors.get(t) else { return fail(format!("tensor '{t}' is listed but missing")) };
            if w.dtype != stored_dtype || w.shape != want {
                return fail(format!(
                    "tensor '{t}' is {:?} {:?}, but the metadata ({ty} [{rows}, {cols}]) needs {stored_dtype:?} {want:?}",
                    w.dtype, w.shape
                ));
            }
            let ng = cols.div_ceil(group);
            let cn = format!("{t}.scales");
            match tensors.get(&cn) {
                Some(c) if c.dtype == DType::F16 && c.shape == [rows, ng] => {}
                Some(c) => {
                    return fail(format!("tensor '{cn}' is {:?} {:?}, expected F16 [{rows}, {ng}]", c.dtype, c.shape))
                }
                None => return fail(format!("tensor '{cn}' is missing")),
            }
            if let Some(c) = tensors.get(&format!("{t}.input_scale")) {
                if c.dtype != DType::F32 || c.shape != [cols] {
                    return fail(format!(
                        "tensor '{t}.input_scale' is {:?} {:?}, expected F32 [{cols}]",
                        c.dtype, c.shape
                    ));
                }
            }
            out.insert(t.clone(), QuantEntry { kind, rows, cols });
        }
        Ok(Some(QuantInfo { method, group, tensors: out }))
    }
}
