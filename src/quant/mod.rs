//! Quantization: group-wise int8 (q8) and 4-bit (q4) weights, by plain round-to-nearest (RTN)
//! or activation-aware scaling (AWQ), written as a libsutra quantized safetensors file that
//! `Model::load` maps like any checkpoint.
//!
//! - [`block`]: the formats and their scalar reference (de)quantizers.
//! - [`awq`]: calibration statistics and the per-matrix scale search.
//! - [`quantize_model`]: file to file, with progress and cancellation.
//!
//! Which tensors are quantized: every 2-D float tensor named `*.weight` whose column count is
//! a multiple of 32 and that has at least 1024 elements — the linear layers, the embedding
//! and the head (they dominate small models). The other f32 matrices the model multiplies by
//! (RWKV's low-rank LoRA matrices `w1/w2`…, whose names are not `*.weight`; Mamba's
//! `dt_proj`, whose 48 columns make no group) are stored in bf16: they are read every token
//! (21 MB of f32 in RWKV-7 0.1B, a sixth of its q4 decode's bytes), and bf16's rounding
//! (2⁻⁹) is far below the quantization's. Everything else (norms, token-shift mixes, decay
//! vectors, Mamba's `A_log`, convolution kernels) keeps the source precision: those tensors
//! are small and numerically sensitive. With `--type q4` the
//! output head (`head.weight`, `lm_head.weight`, or a tied embedding) is stored in q8: every
//! logit depends on it directly, and on the Shakespeare model it alone causes about 40% of
//! the q4 KL divergence (llama.cpp keeps its output tensor in Q6_K for the same reason).

pub mod awq;
use crate::tensor::block;

use crate::error::{Error, Result};
use crate::format::quantized::FORMAT_VERSION;
use crate::format::SafetensorsFile;
use crate::tensor::{DType, Tensor};
use crate::{Model, ModelParams, Session, Tokenizer};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Target weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// 8-bit symmetric, one f16 scale per group.
    Q8,
    /// 4-bit symmetric over 16 non-uniform levels, f16 scale per group.
    Q4,
}

/// How scales are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest with each group's range.
    Rtn,
    /// Activation-aware scaling and clipping, calibrated on text.
    Awq,
}

/// What `quantize_model` does.
#[derive(Debug, Clone)]
pub struct QuantizeParams {
    /// q8 or q4.
    pub qtype: QuantType,
    /// Weights per group: 32, 64 or 128.
    pub group: usize,
    /// RTN or AWQ.
    pub method: Method,
    /// Calibration text (AWQ).
    pub calib_file: Option<PathBuf>,
    /// Tokens of calibration text to run (AWQ).
    pub calib_tokens: usize,
    /// Tokenizer for the calibration text; found next to the model when `None`.
    pub tokenizer: Option<PathBuf>,
    /// Worker threads (0 = all cores).
    pub n_threads: usize,
    /// Tensors whose name contains one of these stay in the source precision
    /// (e.g. `head.weight`, like llama.cpp's `--leave-output-tensor`).
    pub keep: Vec<String>,
}

impl Default for QuantizeParams {
    fn default() -> Self {
        QuantizeParams {
            qtype: QuantType::Q4,
            group: 64,
            method: Method::Rtn,
            calib_file: None,
            calib_tokens: 8192,
            tokenizer: None,
            n_threads: 0,
            keep: Vec::new(),
        }
    }
}

/// True for the tensor that projects to the logits (a tied embedding when there is no head).
pub fn is_output_head(name: &str, file: &SafetensorsFile) -> bool {
    let has_head = file.tensors.contains_key("head.weight") || file.tensors.contains_key("lm_head.weight");
    matches!(name, "head.weight" | "lm_head.weight") || (!has_head && name == "backbone.embeddings.weight")
}

/// True when `t` is quantized by the rule in the module documentation.
pub fn is_quantizable(t: &Tensor) -> bool {
    t.name.ends_with(".weight")
        && t.shape.len() == 2
        && t.shape[1].is_multiple_of(block::BLOCK)
        && t.numel() >= 1024
        && matches!(t.dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// A quantized matrix ready to write.
struct Quantized {
    weights: Vec<u8>,
    scales: Vec<u16>,
    input_scale: Option<Vec<f32>>,
    alpha: Option<f32>,
}

/// Quantizes `w` [rows, cols]; `scale` (AWQ s) multiplies the columns first and `importance`
/// (E[(x/s)²] per column) drives the q4 clipping search.
fn quantize_matrix(
    w: &[f32],
    rows: usize,
    cols: usize,
    p: &QuantizeParams,
    scale: Option<&[f32]>,
    importance: Option<&[f32]>,
) -> Quantized {
    let g = p.group;
    let ng = block::n_groups(cols, g);
    let mut scales = vec![0u16; rows * ng];
    let per_row = if p.qtype == QuantType::Q8 { cols } else { cols / 2 };
    let mut weights = vec![0u8; rows * per_row];
    let scaled_row = |r: usize| -> Vec<f32> {
        let row = &w[r * cols..(r + 1) * cols];
        match scale {
            Some(s) => row.iter().zip(s).map(|(v, s)| v * s).collect(),
            None => row.to_vec(),
        }
    };
    match p.qtype {
        QuantType::Q8 => {
            weights.par_chunks_mut(per_row).zip(scales.par_chunks_mut(ng)).enumerate().for_each(|(r, (wq, sc))| {
                let q: &mut [i8] = bytemuck::cast_slice_mut(wq);
                block::quantize_q8_row(&scaled_row(r), g, q, sc);
            });
        }
        QuantType::Q4 => {
            weights.par_chunks_mut(per_row).zip(scales.par_chunks_mut(ng)).enumerate().for_each(|(r, (wq, sc))| {
                let mut q = vec![0u8; cols];
                block::quantize_q4_row(&scaled_row(r), g, importance, &mut q, sc);
                block::pack_q4(&q, wq);
            });
        }
    }
    Quantized { weights, scales, input_scale: scale.map(|s| s.iter().map(|v| 1.0 / v).collect()), alpha: None }
}

/// Runs the model on `calib_tokens` tokens of the calibration text and returns the input
/// statistics of every product.
fn calibrate(model: &Arc<Model>, in_path: &Path, p: &QuantizeParams) -> Result<HashMap<String, awq::InputStats>> {
    let calib = p.calib_file.as_ref().ok_or_else(|| {
        Error::invalid(
            "AWQ needs a calibration text (calib_path in sutra_quantize_params, --calib FILE on the command line)",
        )
    })?;
    // The calibration text: at most 1 GiB (calib_tokens of it are used).
    let text = crate::format::read_text(calib, "calibration text", 1 << 30)?;
    let tok = match &p.tokenizer {
        Some(t) => Tokenizer::from_file(t)?,
        None => {
            let dir = in_path.parent().unwrap_or(Path::new("."));
            let found = ["tokenizer.json", "rwkv_vocab_v20230424.txt"].iter().map(|n| dir.join(n)).find(|p| p.exists());
            match found {
                Some(t) => Tokenizer::from_file(&t)?,
                None => {
                    return Err(Error::invalid(format!(
                        "AWQ calibration needs a tokenizer: none given and none next to {}",
                        in_path.display()
                    )))
                }
            }
        }
    };
    let mut ids = tok.encode(&text, false)?;
    let v = model.info().n_vocab as u32;
    ids.retain(|&t| t < v);
    ids.truncate(p.calib_tokens.max(1));
    if ids.is_empty() {
        return Err(Error::invalid(format!("calibration text {} has no usable tokens", calib.display())));
    }
    let cal = awq::Calibration::new();
    let stats = cal.stats();
    let mut s = Session::new(model);
    s.set_observer(Some(Box::new(cal)));
    // Independent windows of 512 tokens from the zero state, like a prompt would be.
    for w in ids.chunks(512) {
        s.reset();
        s.eval(w, None)?;
    }
    drop(s);
    let stats = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(stats)
}

impl TryFrom<i32> for QuantType {
    type Error = Error;
    /// The C value of a `sutra_quant_type`: 0 = q8, 1 = q4.
    fn try_from(v: i32) -> Result<QuantType> {
        match v {
            0 => Ok(QuantType::Q8),
            1 => Ok(QuantType::Q4),
            v => Err(Error::invalid(format!("qtype {v}: SUTRA_QUANT_TYPE_Q8 (0) or SUTRA_QUANT_TYPE_Q4 (1) expected"))),
        }
    }
}

impl TryFrom<i32> for Method {
    type Error = Error;
    /// The C value of a `sutra_quant_method`: 0 = RTN, 1 = AWQ.
    fn try_from(v: i32) -> Result<Method> {
        match v {
            0 => Ok(Method::Rtn),
            1 => Ok(Method::Awq),
            v => Err(Error::invalid(format!(
                "method {v}: SUTRA_QUANT_METHOD_RTN (0) or SUTRA_QUANT_METHOD_AWQ (1) expected"
            ))),
        }
    }
}

/// Quantizes the checkpoint at `in_path` into a libsutra quantized file at `out_path`.
/// `progress(fraction)` returning false cancels: the call returns [`Error::Cancelled`] and no
/// file is left behind. The output is written to a temporary name and renamed at the end.
pub fn quantize_model(
    in_path: &Path,
    out_path: &Path,
    p: &QuantizeParams,
    progress: &mut dyn FnMut(f32) -> bool,
) -> Result<()> {
    crate::format::safetensors::check_not_input(in_path, out_path)?;
    if ![32, 64, 128].contains(&p.group) {
        return Err(Error::invalid(format!("group size {}: must be 32, 64 or 128", p.group)));
    }
    if p.method == Method::Awq && p.calib_file.is_none() {
        return Err(Error::invalid(
            "AWQ needs a calibration text (calib_path in sutra_quantize_params, --calib FILE on the command line)",
        ));
    }
    if let Some(c) = &p.calib_file {
        if !c.exists() {
            return Err(Error::io(c, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
    }
    let cancelled =
        |f: f32, progress: &mut dyn FnMut(f32) -> bool| if progress(f) { Ok(()) } else { Err(Error::Cancelled) };
    cancelled(0.0, progress)?;
    let file = SafetensorsFile::open(in_path, true)?;
    if file.quant.is_some() {
        return Err(Error::unsupported(format!("{}: already a quantized file", in_path.display())));
    }
    let pool = crate::model::shared_pool(p.n_threads, "n_threads")?;
    let n_threads = pool.current_num_threads();
    // Loading checks that the file is a supported model before anything is written.
    let model = Arc::new(Model::load(in_path, &ModelParams { n_threads, use_mmap: true, ..Default::default() })?);
    let stats = match p.method {
        Method::Awq => {
            let mut st = calibrate(&model, in_path, p)?;
            st.retain(|k, _| file.tensors.get(k).is_some_and(is_quantizable));
            st
        }
        Method::Rtn => HashMap::new(),
    };
    cancelled(0.1, progress)?;

    // The matrices the model multiplies by whose shape or name the groups do not take
    // (RWKV's low-rank LoRA matrices, Mamba's dt_proj): stored in bf16, see the module docs.
    let to_bf16: std::collections::HashSet<String> = model
        .arch()
        .matrices()
        .iter()
        .map(|m| m.tensor.name.clone())
        .filter(|n| file.tensors.get(n).is_some_and(|t| t.dtype == DType::F32 && !is_quantizable(t)))
        .collect();
    let names: Vec<&String> = file.tensors.keys().collect();
    let mut out: Vec<(String, DType, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut listed = serde_json::Map::new();
    let mut alphas = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let t = &file.tensors[*name];
        let keep = p.keep.iter().any(|k| name.contains(k.as_str()));
        if to_bf16.contains(*name) && !keep {
            let bf: Vec<u16> = t.to_f32_vec()?.iter().map(|&v| crate::tensor::f32_to_bf16(v)).collect();
            out.push(((*name).clone(), DType::BF16, t.shape.clone(), bytemuck::cast_slice(&bf).to_vec()));
            continue;
        }
        if !is_quantizable(t) || keep {
            out.push(((*name).clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()));
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let w = t.to_f32_vec()?;
        let mut pt = p.clone();
        if p.qtype == QuantType::Q4 && is_output_head(name, &file) {
            pt.qtype = QuantType::Q8;
        }
        let p = &pt;
        let q = pool.install(|| match (stats.get(*name), p.method) {
            (Some(st), Method::Awq) => {
                let qrow = |row: &[f32], deq: &mut [f32]| roundtrip_row(row, p, deq);
                let (alpha, s) = awq::search_scale(&w, rows, cols, st, &qrow);
                let imp: Vec<f32> = st.mean_sq().iter().zip(&s).map(|(x2, s)| x2 / (s * s)).collect();
                let mut q = quantize_matrix(&w, rows, cols, p, Some(&s), Some(&imp));
                q.alpha = Some(alpha);
                q
            }
            // No activations (an embedding looked up by row): least squared error.
            (None, Method::Awq) => quantize_matrix(&w, rows, cols, p, None, Some(&vec![1.0; cols])),
            _ => quantize_matrix(&w, rows, cols, p, None, None),
        });
        let (ty, stored) = match p.qtype {
            QuantType::Q8 => ("q8", (DType::I8, vec![rows, cols])),
            QuantType::Q4 => ("q4", (DType::U8, vec![rows, cols / 2])),
        };
        let ng = block::n_groups(cols, p.group);
        out.push(((*name).clone(), stored.0, stored.1, q.weights));
        out.push((format!("{name}.scales"), DType::F16, vec![rows, ng], bytemuck::cast_slice(&q.scales).to_vec()));
        if let Some(s) = &q.input_scale {
            out.push((format!("{name}.input_scale"), DType::F32, vec![cols], bytemuck::cast_slice(s).to_vec()));
        }
        if let Some(a) = q.alpha {
            alphas.insert((*name).clone(), serde_json::json!(a));
        }
        listed.insert((*name).clone(), serde_json::json!({"type": ty, "shape": [rows, cols]}));
        cancelled(0.1 + 0.85 * (i + 1) as f32 / names.len() as f32, progress)?;
    }
    let mut meta = HashMap::new();
    meta.insert("sutra.format".to_string(), "quantized".to_string());
    meta.insert("sutra.format_version".to_string(), FORMAT_VERSION.to_string());
    meta.insert("sutra.method".to_string(), if p.method == Method::Awq { "awq" } else { "rtn" }.to_string());
    meta.insert("sutra.type".to_string(), if p.qtype == QuantType::Q8 { "q8" } else { "q4" }.to_string());
    meta.insert("sutra.group_size".to_string(), p.group.to_string());
    meta.insert("sutra.tensors".to_string(), serde_json::Value::Object(listed).to_string());
    meta.insert("sutra.source".to_string(), in_path.file_name().map_or(String::new(), |n| n.to_string_lossy().into()));
    let calib = match (&p.method, &p.calib_file) {
        (Method::Awq, Some(f)) => serde_json::json!({
            "file": f.file_name().map(|n| n.to_string_lossy().to_string()),
            "tokens": p.calib_tokens,
            "alpha": serde_json::Value::Object(alphas),
        }),
        _ => serde_json::Value::Null,
    };
    meta.insert("sutra.calibration".to_string(), calib.to_string());
    // The source's config.json (what shapes cannot tell, e.g. Mamba-2 n_groups) travels along.
    let config_path = in_path.parent().unwrap_or(Path::new(".")).join("config.json");
    if config_path.is_file() {
        let text = crate::format::read_text(&config_path, "config.json", crate::format::MAX_SIDE_FILE)?;
        meta.insert(crate::format::CONFIG_KEY.to_string(), text);
    } else if let Some(text) = file.metadata.get(crate::format::CONFIG_KEY) {
        meta.insert(crate::format::CONFIG_KEY.to_string(), text.clone());
    }
    crate::format::safetensors::write_atomic(out_path, &out, Some(meta), || cancelled(1.0, progress))
}

/// Quantizes and dequantizes one row with plain RTN, as stored (for the AWQ scale search).
fn roundtrip_row(row: &[f32], p: &QuantizeParams, deq: &mut [f32]) {
    let g = p.group;
    let ng = block::n_groups(row.len(), g);
    match p.qtype {
        QuantType::Q8 => {
            let (mut q, mut s) = (vec![0i8; row.len()], vec![0u16; ng]);
            block::quantize_q8_row(row, g, &mut q, &mut s);
            block::dequantize_q8_row(&q, &s, g, deq);
        }
        QuantType::Q4 => {
            let (mut q, mut s) = (vec![0u8; row.len()], vec![0u16; ng]);
            block::quantize_q4_row(row, g, None, &mut q, &mut s);
            let mut packed = vec![0u8; row.len() / 2];
            block::pack_q4(&q, &mut packed);
            block::dequantize_q4_row(&packed, &s, g, deq);
        }
    }
}
