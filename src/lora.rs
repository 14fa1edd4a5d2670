//! LoRA adapters at run time: E. Hu et al., "LoRA: Low-Rank Adaptation of Large Language
//! Models", ICLR 2022, in the file layout of Hugging Face PEFT.
//!
//! An adapter is a set of pairs `base_model.model.<module>.lora_A.weight` `[r, in]` and
//! `…lora_B.weight` `[out, r]`, one per target matrix `<module>.weight` of the base model,
//! with `r` and `lora_alpha` from `adapter_config.json`. A session computes every targeted
//! product as `y = W x + scale·(α/r)·B(A x)` ([`Adapter`] is an [`exec::Delta`]): the base
//! weights are never modified or copied, whatever their type (f32, bf16, f16, q8, q4), and
//! attaching, rescaling or detaching an adapter between two evaluations costs nothing but
//! the bookkeeping. [`merge`] bakes adapters into a new checkpoint instead.

use crate::error::{Error, Result};
use crate::exec::{Delta, DeltaScratch};
use crate::format::{self, SafetensorsFile};
use crate::kernels;
use crate::tensor::{DType, Matrix, Tensor};
use crate::Model;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The prefix PEFT puts before every module name.
const PREFIX: &str = "base_model.model.";

/// One target's low-rank pair.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The module name (the base matrix's key without `.weight`).
    pub module: String,
    /// lora_A: [r, in].
    pub a: Matrix,
    /// lora_B: [out, r].
    pub b: Matrix,
    /// α/r (α/√r with rsLoRA).
    pub scaling: f32,
}

/// A loaded LoRA adapter, checked against the model it was loaded for. Immutable; shared by
/// any number of sessions and threads.
#[derive(Debug)]
pub struct Adapter {
    /// Pairs by the base matrix's tensor name (`<module>.weight`).
    pairs: HashMap<String, Pair>,
    /// Fingerprint of the model it was checked against.
    model_fingerprint: u64,
    /// `r` of adapter_config.json.
    pub rank: usize,
    /// `lora_alpha` of adapter_config.json.
    pub alpha: f32,
    /// Where it was loaded from.
    pub source: String,
}

/// What adapter_config.json says.
struct PeftConfig {
    r: usize,
    alpha: f32,
    rslora: bool,
    rank_pattern: Vec<(String, usize)>,
    alpha_pattern: Vec<(String, f32)>,
}

/// True if PEFT's pattern key `k` names `module` (the full name or a dotted suffix of it).
fn pattern_matches(k: &str, module: &str) -> bool {
    module == k || module.ends_with(&format!(".{k}"))
}

impl PeftConfig {
    fn read(path: &Path) -> Result<PeftConfig> {
        let text = crate::format::read_text(path, "adapter config", crate::format::MAX_SIDE_FILE)?;
        let name = path.display();
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(format!("{name}: not valid JSON: {e}")))?;
        let field = |k: &str| v.get(k).filter(|x| !x.is_null());
        let r = field("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| Error::format(format!("{name}: 'r' must be a positive integer")))? as usize;
        let alpha = field("lora_alpha")
            .and_then(Value::as_f64)
            .filter(|a| a.is_finite())
            .ok_or_else(|| Error::format(format!("{name}: 'lora_alpha' must be a finite number")))?
            as f32;
        if let Some(t) = field("peft_type").and_then(Value::as_str) {
            if t != "LORA" {
                return Err(Error::unsupported(format!("{name}: peft_type '{t}'; only LORA adapters are supported")));
            }
        }
        for (k, what) in [("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out"), ("lora_bias", "LoRA biases")] {
            if field(k).and_then(Value::as_bool) == Some(true) {
                return Err(Error::unsupported(format!("{name}: '{k}' is true: {what} is not supported")));
            }
        }
        if let Some(b) = field("bias").and_then(Value::as_str) {
            if b != "none" {
                return Err(Error::unsupported(format!("{name}: bias '{b}'; only 'none' is supported")));
            }
        }
        let pattern = |k: &str| -> Result<Vec<(String, f64)>> {
            match field(k) {
                None => Ok(Vec::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(key, val)| {
                        val.as_f64()
                            .map(|x| (key.clone(), x))
                            .ok_or_else(|| Error::format(format!("{name}: '{k}.{key}' is not a number")))
                    })
                    .collect(),
                Some(_) => Err(Error::format(format!("{name}: '{k}' is not an object"))),
            }
        };
        Ok(PeftConfig {
            r,
            alpha,
            rslora: field("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            rank_pattern: pattern("rank_pattern")?.into_iter().map(|(k, x)| (k, x as usize)).collect(),
            alpha_pattern: pattern("alpha_pattern")?.into_iter().map(|(k, x)| (k, x as f32)).collect(),
        })
    }

    /// Rank and alpha of `module` (the patterns override the defaults).
    fn for_module(&self, module: &str) -> (usize, f32) {
        let r = self.rank_pattern.iter().find(|(k, _)| pattern_matches(k, module)).map_or(self.r, |p| p.1);
        let a = self.alpha_pattern.iter().find(|(k, _)| pattern_matches(k, module)).map_or(self.alpha, |p| p.1);
        (r, a)
    }
}

/// The adapter's weights file and config file for `path`: a folder holding
/// `adapter_config.json` and `adapter_model.safetensors` (or `adapter.safetensors`), or a
/// `.safetensors` file with `adapter_config.json` beside it.
fn locate(path: &Path) -> Result<(PathBuf, PathBuf)> {
    if path.is_dir() {
        let weights =
            ["adapter_model.safetensors", "adapter.safetensors"].iter().map(|n| path.join(n)).find(|p| p.exists());
        let weights = weights
            .ok_or_else(|| Error::io_msg(path, "holds neither adapter_model.safetensors nor adapter.safetensors"))?;
        Ok((weights, path.join("adapter_config.json")))
    } else if path.exists() {
        Ok((path.to_path_buf(), path.parent().unwrap_or(Path::new(".")).join("adapter_config.json")))
    } else {
        Err(Error::io_msg(path, "no such adapter file or folder"))
    }
}

impl Adapter {
    /// Loads the PEFT adapter at `path` (see [`locate`]) for `model`: every pair must name a
    /// matrix of the model with matching shapes, ranks must agree with the config, values
    /// must be finite; otherwise [`Error::Format`] naming the module or tensor and the shapes.
    pub fn load(model: &Model, path: &Path) -> Result<Adapter> {
        if path.as_os_str().is_empty() {
            return Err(Error::invalid("the adapter path is empty"));
        }
        let (weights, config) = locate(path)?;
        if !config.exists() {
            return Err(Error::io_msg(&config, "missing: an adapter needs its adapter_config.json (r, lora_alpha)"));
        }
        let cfg = PeftConfig::read(&config)?;
        let file = SafetensorsFile::open(&weights, false)?;
        let targets: HashMap<&str, &Matrix> =
            model.arch().matrices().into_iter().map(|m| (m.tensor.name.as_str(), m)).collect();
        let fname = weights.display().to_string();
        let mut halves: BTreeMap<String, (Option<&Tensor>, Option<&Tensor>)> = BTreeMap::new();
        for (name, t) in &file.tensors {
            let rest = name.strip_prefix(PREFIX).unwrap_or(name);
            let (module, is_a) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                (m, true)
            } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
                (m, false)
            } else {
                return Err(Error::format(format!(
                    "{fname}: tensor '{name}' is not a LoRA tensor (expected {PREFIX}<module>.lora_A.weight or .lora_B.weight)"
                )));
            };
            let e = halves.entry(module.to_string()).or_default();
            if is_a {
                e.0 = Some(t);
            } else {
                e.1 = Some(t);
            }
        }
        if halves.is_empty() {
            return Err(Error::format(format!("{fname}: no LoRA tensors")));
        }
        let mut pairs = HashMap::new();
        for (module, (a, b)) in halves {
            let (Some(a), Some(b)) = (a, b) else {
                let missing = if a.is_none() { "lora_A" } else { "lora_B" };
                return Err(Error::format(format!("{fname}: module '{module}' has no {missing}.weight")));
            };
            let key = format!("{module}.weight");
            let Some(m) = targets.get(key.as_str()) else {
                return Err(Error::format(format!(
                    "{fname}: module '{module}' is not a matrix of {} ({}): no tensor '{key}'",
                    model.source_path(),
                    model.info().arch_name
                )));
            };
            let (r, alpha) = cfg.for_module(&module);
            let (sa, sb) = (&a.shape, &b.shape);
            let ok = sa.len() == 2 && sb.len() == 2 && sa[1] == m.cols && sb[0] == m.rows && sa[0] == sb[1];
            if !ok {
                return Err(Error::format(format!(
                    "{fname}: module '{module}': lora_A is {sa:?} and lora_B is {sb:?}, but the base matrix is \
                     [{}, {}]: expected lora_A [r, {}] and lora_B [{}, r]",
                    m.rows, m.cols, m.cols, m.rows
                )));
            }
            if sa[0] != r {
                return Err(Error::format(format!(
                    "{fname}: module '{module}' has rank {} (lora_A {sa:?}), but adapter_config.json says r = {r}",
                    sa[0]
                )));
            }
            let read = |t: &Tensor| -> Result<Matrix> {
                let v = t.to_f32_vec().map_err(|e| e.context(&fname))?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::format(format!("{fname}: tensor '{}' has {} at index {i}", t.name, v[i])));
                }
                Ok(Matrix::new(Tensor::from_f32(&t.name, t.shape.clone(), &v), t.shape[0], t.shape[1]))
            };
            let scaling = if cfg.rslora { alpha / (r as f32).sqrt() } else { alpha / r as f32 };
            pairs.insert(key, Pair { module, a: read(a)?, b: read(b)?, scaling });
        }
        Ok(Adapter {
            pairs,
            model_fingerprint: model.fingerprint(),
            rank: cfg.r,
            alpha: cfg.alpha,
            source: path.display().to_string(),
        })
    }

    /// An adapter for `model` from pairs held in memory (e.g. a trainer's current values):
    /// `(module, A [r, in], B [out, r], α/r)` each, checked against the model's matrices.
    pub fn from_pairs(
        model: &Model,
        pairs: impl IntoIterator<Item = (String, Vec<f32>, Vec<f32>, f32)>,
        rank: usize,
        alpha: f32,
        source: &str,
    ) -> Result<Adapter> {
        let targets: HashMap<&str, &Matrix> =
            model.arch().matrices().into_iter().map(|m| (m.tensor.name.as_str(), m)).collect();
        let mut out = HashMap::new();
        for (module, a, b, scaling) in pairs {
            let key = format!("{module}.weight");
            let m = targets
                .get(key.as_str())
                .ok_or_else(|| Error::invalid(format!("module '{module}' is not a matrix of the model")))?;
            let r = a.len() / m.cols.max(1);
            if a.len() != r * m.cols || b.len() != m.rows * r || r == 0 {
                return Err(Error::invalid(format!(
                    "module '{module}': pair sizes do not fit [{}, {}]",
                    m.rows, m.cols
                )));
            }
            let (an, bn) = (format!("{PREFIX}{module}.lora_A.weight"), format!("{PREFIX}{module}.lora_B.weight"));
            out.insert(
                key,
                Pair {
                    a: Matrix::new(Tensor::from_f32(&an, vec![r, m.cols], &a), r, m.cols),
                    b: Matrix::new(Tensor::from_f32(&bn, vec![m.rows, r], &b), m.rows, r),
                    module,
                    scaling,
                },
            );
        }
        Ok(Adapter { pairs: out, model_fingerprint: model.fingerprint(), rank, alpha, source: source.to_string() })
    }

    /// Writes the adapter as a PEFT folder (`adapter_config.json`, `adapter_model.safetensors`),
    /// creating `dir` if needed; each file is written whole or not at all.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if dir.as_os_str().is_empty() {
            return Err(Error::invalid("the adapter folder path is empty"));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut modules: Vec<&Pair> = self.pairs.values().collect();
        modules.sort_by(|a, b| a.module.cmp(&b.module));
        let mut tensors = Vec::new();
        for p in &modules {
            for (half, m) in [("lora_A", &p.a), ("lora_B", &p.b)] {
                let v = m.tensor.as_f32().unwrap_or_default();
                let name = format!("{PREFIX}{}.{half}.weight", p.module);
                tensors.push((name, DType::F32, vec![m.rows, m.cols], bytemuck::cast_slice(v).to_vec()));
            }
        }
        format::safetensors::write_atomic(&dir.join("adapter_model.safetensors"), &tensors, None, || Ok(()))?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "r": self.rank,
            "lora_alpha": self.alpha,
            "target_modules": modules.iter().map(|p| p.module.clone()).collect::<Vec<_>>(),
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "inference_mode": true,
        });
        let path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = dir.join(format!(".adapter_config.json.{}.partial", std::process::id()));
        std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)).map_err(|e| {
            std::fs::remove_file(&tmp).ok();
            Error::io(&path, e)
        })
    }

    /// The pairs, by the base matrix's tensor name.
    pub fn pairs(&self) -> &HashMap<String, Pair> {
        &self.pairs
    }

    /// True if this adapter was checked against a model of `model`'s shape.
    pub fn fits(&self, model: &Model) -> bool {
        self.model_fingerprint == model.fingerprint()
    }
}

impl Delta for Adapter {
    /// `y += scale·(α/r)·B(A x)` when the adapter targets `m`.
    fn add(&self, m: &Matrix, x: &[f32], t: usize, scale: f32, y: &mut [f32], sc: &mut DeltaScratch) {
        let Some(p) = self.pairs.get(m.tensor.name.as_str()) else { return };
        let DeltaScratch { low, out, ws } = sc;
        low.resize(t * p.a.rows, 0.0);
        out.resize(t * p.b.rows, 0.0);
        kernels::matmul_ws(&p.a, x, t, low, ws);
        kernels::matmul_ws(&p.b, low, t, out, ws);
        let s = scale * p.scaling;
        y.iter_mut().zip(out.iter()).for_each(|(y, d)| *y += s * d);
    }
}

/// Writes the checkpoint at `model_path` with `adapters` (path, multiplier) baked in:
/// `W_eff = W + Σ scale·(α/r)·B·A` for every targeted matrix. Float tensors keep their type;
/// a quantized base is written dequantized, in `quantized_as` (F32 or BF16), as a plain
/// checkpoint that `sutra quantize` can quantize again. Written to a temporary name and
/// renamed, so nothing half-written is left on failure.
pub fn merge(model_path: &Path, adapters: &[(PathBuf, f32)], out: &Path, quantized_as: DType) -> Result<()> {
    if !matches!(quantized_as, DType::F32 | DType::BF16) {
        return Err(Error::invalid(format!("{quantized_as:?}: a quantized base is written as F32 or BF16")));
    }
    format::safetensors::check_not_input(model_path, out)?;
    let model = Model::load(model_path, &crate::ModelParams { n_threads: 1, use_mmap: true, ..Default::default() })?;
    let loaded =
        adapters.iter().map(|(p, s)| Ok((Adapter::load(&model, p)?, *s))).collect::<Result<Vec<(Adapter, f32)>>>()?;
    let file = SafetensorsFile::open(model_path, true)?;
    let rd = format::WeightReader::new(&file);
    let quant = file.quant.as_ref();
    let is_companion = |k: &str| {
        format::quantized::COMPANIONS
            .iter()
            .any(|s| k.strip_suffix(s).is_some_and(|b| quant.is_some_and(|q| q.tensors.contains_key(b))))
    };
    let mut tensors = Vec::new();
    for (name, t) in &file.tensors {
        if is_companion(name) {
            continue;
        }
        let targeted: Vec<(&Pair, f32)> =
            loaded.iter().filter_map(|(a, s)| a.pairs.get(name).map(|p| (p, *s))).collect();
        let q = quant.and_then(|q| q.tensors.get(name));
        if targeted.is_empty() && q.is_none() {
            tensors.push((name.clone(), t.dtype, t.shape.clone(), t.bytes().to_vec()));
            continue;
        }
        // The matrix as the model sees it (dequantized, AWQ scale undone), in f32.
        let (rows, cols) = match q {
            Some(e) => (e.rows, e.cols),
            None => rd.shape2(name)?,
        };
        let m = rd.matrix(name, rows, cols)?;
        let mut w = vec![0f32; rows * cols];
        for (r, row) in w.chunks_mut(cols).enumerate() {
            m.row_to_f32(r, row);
        }
        for (p, s) in targeted {
            let (a, b) = (p.a.tensor.as_f32().unwrap_or_default(), p.b.tensor.as_f32().unwrap_or_default());
            let r = p.a.rows;
            let k = s * p.scaling;
            for (i, wrow) in w.chunks_mut(cols).enumerate() {
                for j in 0..r {
                    let bij = k * b[i * r + j];
                    if bij != 0.0 {
                        wrow.iter_mut().zip(&a[j * cols..(j + 1) * cols]).for_each(|(w, a)| *w += bij * a);
                    }
                }
            }
        }
        let dtype = if q.is_some() { quantized_as } else { t.dtype };
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(&w).to_vec(),
            DType::BF16 => w.iter().flat_map(|&v| crate::tensor::f32_to_bf16(v).to_le_bytes()).collect(),
            DType::F16 => w.iter().flat_map(|&v| crate::tensor::f32_to_f16(v).to_le_bytes()).collect(),
            other => return Err(Error::unsupported(format!("{}: tensor '{name}' is {other:?}", file.name))),
        };
        let shape = if q.is_some() { vec![rows, cols] } else { t.shape.clone() };
        tensors.push((name.clone(), dtype, shape, bytes));
    }
    // A quantized file's embedded config.json is kept; its quantization record is not.
    let metadata = file
        .metadata
        .get(crate::format::CONFIG_KEY)
        .map(|c| HashMap::from([(crate::format::CONFIG_KEY.to_string(), c.clone())]));
    format::safetensors::write_atomic(out, &tensors, metadata, || Ok(()))
}
