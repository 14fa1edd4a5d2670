//! Checkpoint files: safetensors containers and the layouts inside them.
//!
//! [`safetensors`] reads containers zero-copy; [`WeightReader`] is the one place where a
//! model asks for a tensor by its checkpoint name and gets either the tensor with the shape
//! it expects or an error that names the tensor, the expected and the found shape.

pub mod config;
pub mod gguf;
pub mod gguf_map;
pub mod hf_map;
pub mod pth;
pub mod quantized;
pub mod safetensors;
pub mod synth;

use crate::error::{Error, Result};
use crate::tensor::{DType, Matrix, Tensor};
pub use config::HfConfig;
pub use safetensors::{write_file_atomic, SafetensorsFile};

/// The container a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A safetensors file (official RWKV, transformers Mamba, or a libsutra quantized file).
    Safetensors,
    /// A GGUF file (llama.cpp), its tensors renamed by [`gguf_map`].
    Gguf,
    /// A PyTorch `.pth` archive (`torch.save` of a state dict), read by [`pth`].
    Pth,
}

impl Format {
    /// The short name shown by `sutra info` and `sutra_model_get_info`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf => "gguf",
            Format::Pth => "pth",
        }
    }
}

/// Tensors being collected under libsutra's names by a layout mapping (`gguf_map`,
/// `hf_map`): two source tensors mapping onto one name is a format error naming it.
pub(crate) struct Renamed<'a> {
    /// The file read, for messages.
    pub file: &'a str,
    /// The source layout, for messages ("GGUF", "RWKV7ForCausalLM").
    pub layout: &'static str,
    /// The tensors collected so far.
    pub tensors: std::collections::BTreeMap<String, Tensor>,
}

impl<'a> Renamed<'a> {
    /// An empty collection for `file` in `layout`.
    pub fn new(file: &'a str, layout: &'static str) -> Self {
        Renamed { file, layout, tensors: Default::default() }
    }

    /// Adds `t` under `name`.
    pub fn put(&mut self, name: String, mut t: Tensor) -> Result<()> {
        t.name = name.clone();
        if self.tensors.insert(name.clone(), t).is_some() {
            return Err(Error::format(format!("{}: two {} tensors map onto '{name}'", self.file, self.layout)));
        }
        Ok(())
    }
}

/// The first four bytes of the file at `path` (fewer when it is shorter: zeros after them).
/// A missing file is left to the reader that follows, which names it.
pub(crate) fn magic(path: &std::path::Path) -> Result<[u8; 4]> {
    use std::io::Read;
    let mut m = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.metadata().is_ok_and(|m| m.is_file()) {
            let _ = f.read(&mut m).map_err(|e| Error::io(path, e))?;
        }
    }
    Ok(m)
}

/// The `__metadata__` key under which files libsutra writes (quantized, converted, merged)
/// keep their source's configuration (a `config.json`, a GGUF's hyper-parameters), so that
/// they need nothing beside them; [`Model::from_file`](crate::Model::from_file) reads it.
pub const CONFIG_KEY: &str = "sutra.hf_config";

/// Opens the checkpoint at `path`, whatever its container, as one record of tensors under
/// libsutra's names, with the configuration a GGUF carries or the `config.json` beside it.
pub fn open(path: &std::path::Path, use_mmap: bool) -> Result<(SafetensorsFile, Option<HfConfig>)> {
    if path.is_dir() {
        return hf_map::open_dir(path, use_mmap);
    }
    let m = magic(path)?;
    if m == *gguf::MAGIC {
        return gguf_map::to_checkpoint(&gguf::GgufFile::open(path, use_mmap)?);
    }
    let file = if m == *pth::MAGIC { pth::open(path, use_mmap)? } else { SafetensorsFile::open(path, use_mmap)? };
    hf_map::map(file, HfConfig::beside(path.parent().unwrap_or(std::path::Path::new(".")))?)
}

/// Parses a checkpoint held in `storage` (a buffer handed over by an application), whatever
/// its container; `name` is used in messages. A GGUF brings its configuration.
pub fn parse(
    storage: std::sync::Arc<crate::tensor::Storage>,
    name: &str,
) -> Result<(SafetensorsFile, Option<HfConfig>)> {
    let m = storage.bytes().get(..4).unwrap_or_default();
    if m == gguf::MAGIC {
        return gguf_map::to_checkpoint(&gguf::GgufFile::parse(storage, name)?);
    }
    let file = if m == pth::MAGIC { pth::parse(storage, name)? } else { SafetensorsFile::parse(storage, name)? };
    hf_map::map(file, None)
}

/// Writes the checkpoint at `input` (any format [`open`] reads) as a safetensors file at
/// `output` (atomically): every tensor under the name libsutra reads it by, in its stored
/// type (llama.cpp's blocks dequantized to f32, which safetensors has no type for), with the
/// source's metadata and configuration. Returns the number of tensors written.
pub fn convert(input: &std::path::Path, output: &std::path::Path) -> Result<usize> {
    safetensors::check_not_input(input, output)?;
    let (file, config) = open(input, true)?;
    let mut tensors = Vec::with_capacity(file.tensors.len());
    for (name, t) in &file.tensors {
        let (dtype, bytes) = match t.dtype {
            DType::Ggml(_) => (DType::F32, bytemuck::cast_slice(&t.to_f32_vec()?).to_vec()),
            d => (d, t.bytes().to_vec()),
        };
        tensors.push((name.clone(), dtype, t.shape.clone(), bytes));
    }
    let mut meta: std::collections::HashMap<String, String> = file.metadata.clone();
    if let Some(c) = config {
        meta.insert(CONFIG_KEY.to_string(), c.json.to_string());
    }
    safetensors::write_atomic(output, &tensors, Some(meta), || Ok(()))?;
    Ok(tensors.len())
}

/// Largest side file read whole (a tokenizer.json, a config, an adapter_config.json): the
/// biggest real tokenizers are tens of MiB.
pub(crate) const MAX_SIDE_FILE: u64 = 256 << 20;

/// Reads a whole side file (`what` names it in errors: "tokenizer", "calibration text", …):
/// it must be a regular file (a device, a FIFO or a folder would be read forever or not at
/// all: an I/O error) of at most `limit` bytes (a format error), checked before anything is allocated and again while
/// reading (the file may grow). Errors name the file.
pub fn read_file(path: &std::path::Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(format!("the {what} path is empty")));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io_msg(path, &format!("the {what} is not a regular file (a folder, a device or a FIFO)")));
    }
    if meta.len() > limit {
        return Err(Error::format(format!(
            "{}: the {what} is {} bytes, over the limit of {limit}",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(meta.len() as usize).map_err(|_| Error::OutOfMemory(format!("{}", path.display())))?;
    f.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::format(format!("{}: the {what} grew past the limit of {limit} bytes", path.display())));
    }
    Ok(bytes)
}

/// [`read_file`] as UTF-8 text (a format error naming the file otherwise).
pub fn read_text(path: &std::path::Path, what: &str, limit: u64) -> Result<String> {
    String::from_utf8(read_file(path, what, limit)?)
        .map_err(|e| Error::format(format!("{}: the {what} is not UTF-8 text ({e})", path.display())))
}

/// Shape-checking access to the tensors of a checkpoint by their verbatim names, scoped to a
/// prefix: `rd.pp("blocks").pp(3).matrix("att.key.weight", c, c)` reads
/// `blocks.3.att.key.weight`, and every error names the full checkpoint key.
#[derive(Clone)]
pub struct WeightReader<'a> {
    file: &'a SafetensorsFile,
    /// `""` or a dotted prefix ending in `.`.
    prefix: String,
}

impl<'a> WeightReader<'a> {
    /// A reader over `file` at its root.
    pub fn new(file: &'a SafetensorsFile) -> Self {
        WeightReader { file, prefix: String::new() }
    }

    /// A reader scoped one level down: names are read as `{prefix}{part}.{name}`.
    pub fn pp(&self, part: impl std::fmt::Display) -> WeightReader<'a> {
        WeightReader { file: self.file, prefix: format!("{}{part}.", self.prefix) }
    }

    /// The full checkpoint key of `name` under this reader's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// 1 + the largest `N` among keys `{prefix}N.…` (the number of blocks under `blocks`).
    pub fn count_children(&self) -> usize {
        self.file
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(&self.prefix)?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    }

    /// True if `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.file.tensors.contains_key(&self.key(name))
    }

    /// The tensor `name`, whatever its shape.
    pub fn tensor(&self, name: &str) -> Result<&'a Tensor> {
        self.file.get(&self.key(name))
    }

    /// The squeezed logical shape of `name` (leading 1s dropped).
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(crate::tensor::squeeze(&self.logical_shape(self.tensor(name)?)))
    }

    /// All elements of `name` as f32, dequantizing a quantized matrix.
    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        match self.file.quant.as_ref().and_then(|q| q.tensors.get(&t.name)) {
            Some(e) => {
                let m = self.quantized(&t.name, e.rows, e.cols)?;
                let mut out = vec![0f32; e.rows * e.cols];
                for (r, row) in out.chunks_mut(e.cols).enumerate() {
                    m.row_to_f32(r, row);
                }
                Ok(out)
            }
            None => t.to_f32_vec().map_err(|e| e.context(&self.file.name)),
        }
    }

    /// The quantized matrix `name` with its group parameters and AWQ input scale.
    fn quantized(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let root = WeightReader::new(self.file);
        let q = self.file.quant.as_ref().ok_or_else(|| Error::Internal(format!("'{name}' is not quantized")))?;
        let e = q.tensors.get(name).ok_or_else(|| Error::Internal(format!("'{name}' is not quantized")))?;
        let input_scale = match self.file.tensors.get(&format!("{name}.input_scale")) {
            Some(t) => Some(t.to_f32_vec()?.into()),
            None => None,
        };
        Ok(Matrix {
            tensor: root.tensor(name)?.clone(),
            rows,
            cols,
            quant: Some(crate::tensor::QuantParts {
                kind: e.kind,
                group: q.group,
                scales: root.tensor(&format!("{name}.scales"))?.clone(),
            }),
            input_scale,
            panels: Default::default(),
        })
    }

    /// The logical shape of `t` (a quantized matrix's packed storage has another shape).
    fn logical_shape(&self, t: &Tensor) -> Vec<usize> {
        match self.file.quant.as_ref().and_then(|q| q.tensors.get(&t.name)) {
            Some(e) => vec![e.rows, e.cols],
            None => t.shape.clone(),
        }
    }

    fn check(&self, t: &Tensor, want: &[usize]) -> Result<()> {
        let shape = self.logical_shape(t);
        if crate::tensor::squeeze(&shape) != want && shape != want {
            return Err(Error::format(format!(
                "{}: tensor '{}' has shape {:?}, expected {:?}",
                self.file.name, t.name, shape, want
            )));
        }
        Ok(())
    }

    /// A float vector of `n` elements (any float dtype; `[1, 1, n]` accepted), as owned f32.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        self.check(t, &[n])?;
        self.to_f32(t)
    }

    /// A float tensor of exactly `shape` (after squeezing), flattened, as owned f32.
    pub fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        self.check(t, shape)?;
        self.to_f32(t)
    }

    /// A `[rows, cols]` matrix used in place (f32, bf16, f16 and llama.cpp's blocks keep their
    /// storage).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = self.tensor(name)?;
        self.check(t, &[rows, cols])?;
        if self.file.quant.as_ref().is_some_and(|q| q.tensors.contains_key(&t.name)) {
            return self.quantized(&t.name, rows, cols);
        }
        match t.dtype {
            DType::F32 | DType::BF16 | DType::F16 | DType::Ggml(_) => Ok(Matrix::new(t.clone(), rows, cols)),
            other => Err(Error::unsupported(format!(
                "{}: tensor '{}' has dtype {other:?}; float matrices expected",
                self.file.name, t.name
            ))),
        }
    }

    /// A stored `[cols, rows]` matrix used as `x @ W`, transposed into an owned `[rows, cols]`:
    /// bf16 and f16 keep their 16 bits (a product reads half the bytes of f32), every other
    /// type becomes f32.
    pub fn matrix_transposed(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = self.tensor(name)?;
        self.check(t, &[cols, rows])?;
        let quantized = self.file.quant.as_ref().is_some_and(|q| q.tensors.contains_key(&t.name));
        if matches!(t.dtype, DType::BF16 | DType::F16) && !quantized {
            let src: &[u16] = bytemuck::try_cast_slice(t.bytes())
                .map_err(|_| self.error(name, "is not aligned to its 16-bit elements"))?;
            let dst = transpose(src, cols, rows);
            let storage = std::sync::Arc::new(crate::tensor::Storage::from_bytes(bytemuck::cast_slice(&dst)));
            let n = storage.len();
            let tensor = Tensor::new(&t.name, t.dtype, vec![rows, cols], storage, 0..n)?;
            return Ok(Matrix::new(tensor, rows, cols));
        }
        let dst = transpose(&self.to_f32(t)?, cols, rows);
        Ok(Matrix::new(Tensor::from_f32(&t.name, vec![rows, cols], &dst), rows, cols))
    }

    /// A stored `[n, cols, rows]` stack of matrices used as `x @ W[i]`, each transposed into an
    /// owned f32 `[rows, cols]` (e.g. RWKV-6 `time_maa_w2`).
    pub fn stacked_transposed(&self, name: &str, n: usize, rows: usize, cols: usize) -> Result<Vec<Matrix>> {
        let src = self.floats(name, &[n, cols, rows])?;
        Ok(src
            .chunks_exact(rows * cols)
            .enumerate()
            .map(|(i, m)| {
                let dst = transpose(m, cols, rows);
                Matrix::new(Tensor::from_f32(&format!("{}[{i}]", self.key(name)), vec![rows, cols], &dst), rows, cols)
            })
            .collect())
    }

    /// The name of the file read (for error messages).
    pub fn file_name(&self) -> &str {
        &self.file.name
    }

    /// The shape of `name` as a 2-D `[rows, cols]`, or a format error naming it.
    pub fn shape2(&self, name: &str) -> Result<(usize, usize)> {
        match self.shape(name)?[..] {
            [r, c] => Ok((r, c)),
            ref s => Err(Error::format(format!(
                "{}: tensor '{}' has shape {s:?}, expected 2-D",
                self.file.name,
                self.key(name)
            ))),
        }
    }

    /// A format error about tensor `name` (its full key and the file named).
    pub fn error(&self, name: &str, what: impl std::fmt::Display) -> Error {
        Error::format(format!("{}: tensor '{}' {what}", self.file.name, self.key(name)))
    }
}

/// The row-major `[rows, cols]` `src` transposed into an owned row-major `[cols, rows]`.
pub(crate) fn transpose<T: Copy + Default>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(src.len(), rows * cols, "transpose: {rows} x {cols} from {} elements", src.len());
    let mut dst = vec![T::default(); src.len()];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    dst
}
