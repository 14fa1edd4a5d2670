//! A loaded model: the architecture found in a checkpoint, its thread pool and identity.

use crate::error::{Error, Result};
use crate::format::{self, SafetensorsFile};
use crate::models::{self, Architecture, ModelInfo};
use crate::{session, tensor};
use std::path::Path;
use std::sync::Arc;

/// The most worker threads a call may ask for.
pub(crate) const MAX_THREADS: usize = 1024;

/// The worker threads of a call asking for `n` (0: one per available core); more than
/// 1024 is an [`Error::InvalidArgument`] naming the argument `what`.
pub fn thread_count(n: usize, what: &str) -> Result<usize> {
    match n {
        0 => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        n if n <= MAX_THREADS => Ok(n),
        n => Err(Error::invalid(format!("{what} = {n}: must be in 0..={MAX_THREADS}"))),
    }
}

/// The process's worker pool of `n` threads (see [`thread_count`]), shared by every model,
/// quantization and trainer asking for `n`: made on first use and kept for the life of the
/// process, so that loading and freeing models in a loop starts no threads after the first
/// (a pool per model left each freed pool's threads winding down behind it). Idle workers
/// park (rayon sleeps them), so a kept pool costs no CPU.
pub fn shared_pool(n: usize, what: &str) -> Result<Arc<rayon::ThreadPool>> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static POOLS: once_cell::sync::Lazy<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> =
        once_cell::sync::Lazy::new(Default::default);
    let n = thread_count(n, what)?;
    // A poisoned lock only means another thread panicked while inserting: the map is whole.
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&n) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(move |i| format!("sutra-{n}-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {n} threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(n, pool.clone());
    Ok(pool)
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct ModelParams {
    /// Worker threads for this model's products; 0 means one per available core.
    pub n_threads: usize,
    /// Map the file instead of reading it into memory.
    pub use_mmap: bool,
    /// Scan every float tensor for NaN/Inf at load ([`Error::Format`] naming the tensor and
    /// index); off by default (it reads the whole file).
    pub check_finite: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams { n_threads: 0, use_mmap: true, check_finite: false }
    }
}

/// A loaded model: immutable, shareable by any number of threads and sessions.
pub struct Model {
    arch: Box<dyn Architecture>,
    /// Every distinct mapped storage the weights view (one per file or shard), checked
    /// before each evaluation.
    storages: Vec<Arc<tensor::Storage>>,
    pool: Arc<rayon::ThreadPool>,
    /// One worker, for decode steps when [`ThreadGovernor`] finds one thread faster (`None`
    /// when `pool` has one thread).
    narrow: Option<Arc<rayon::ThreadPool>>,
    governor: ThreadGovernor,
    fingerprint: u64,
    storage_id: usize,
    source: String,
    checkpoint: CheckpointInfo,
}

/// What the checkpoint file held, as `sutra info` shows it.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// The container it was read from.
    pub format: format::Format,
    /// Its free-form metadata (safetensors `__metadata__`, GGUF key/values as text).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Every tensor, under the name libsutra reads it by: name, storage type, shape.
    pub tensors: Vec<(String, tensor::DType, Vec<usize>)>,
}

/// Per model: which of its pool and a single thread ran the recent decode steps faster.
///
/// A decode step is ~100 small products; each ends in a join, so when another process holds
/// one of the cores, every join waits for the worker the scheduler has parked and 2 threads
/// run slower than 1. The governor times the steps (ns per token, smoothed) and runs them on
/// the faster side, probing the other side once every [`PROBE_EVERY`] calls so that it sees
/// the machine change. Both sides compute the same bits (products split by rows).
#[derive(Debug, Default)]
struct ThreadGovernor {
    calls: std::sync::atomic::AtomicU64,
    wide_ns: std::sync::atomic::AtomicU64,
    narrow_ns: std::sync::atomic::AtomicU64,
}

/// Decode calls between two probes of the side the governor does not prefer (1/64 of the
/// steps at the other side's speed: about 1% on a quiet machine).
const PROBE_EVERY: u64 = 64;

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("source", &self.source).field("info", self.info()).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads the checkpoint at `path`; its architecture is detected from tensor names.
    /// `path` is a safetensors or GGUF file, or a Hugging Face model folder (`config.json`
    /// with `model.safetensors` or the shards its `model.safetensors.index.json` lists).
    ///
    /// A `config.json` in the same directory, when present, supplies what shapes cannot
    /// tell (Mamba-2 `n_groups`, epsilons, RWKV-4 HF `rescale_every`); it must be valid JSON
    /// (bare `Infinity` tolerated) and agree with the shapes, or the load fails with
    /// [`Error::Format`] naming the config and the tensor.
    pub fn load(path: &Path, params: &ModelParams) -> Result<Model> {
        Self::load_with_progress(path, params, &mut |_| true)
    }

    /// [`load`](Self::load) reporting progress in [0, 1]; `progress` returning false cancels
    /// the load ([`Error::Cancelled`]).
    pub fn load_with_progress(
        path: &Path,
        params: &ModelParams,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Model> {
        Self::load_staged(params, progress, || format::open(path, params.use_mmap))
    }

    /// Opens (`open`: the file and its config) then builds a model, reporting progress 0,
    /// 0.25 and 1 and stopping with [`Error::Cancelled`] when `progress` says so.
    fn load_staged(
        params: &ModelParams,
        progress: &mut dyn FnMut(f32) -> bool,
        open: impl FnOnce() -> Result<(SafetensorsFile, Option<format::HfConfig>)>,
    ) -> Result<Model> {
        let step =
            |f: f32, progress: &mut dyn FnMut(f32) -> bool| if progress(f) { Ok(()) } else { Err(Error::Cancelled) };
        step(0.0, progress)?;
        let (file, config) = open()?;
        step(0.25, progress)?;
        let model = Self::from_file(file, config.as_ref(), params)?;
        step(1.0, progress)?;
        Ok(model)
    }

    /// Loads a checkpoint held in memory (copied, so `bytes` may be freed afterwards). No
    /// `config.json` is read: the documented defaults apply (see [`load_from_memory_with_config`](Self::load_from_memory_with_config)).
    pub fn load_from_memory(bytes: &[u8], params: &ModelParams) -> Result<Model> {
        Self::load_from_memory_with_config(bytes, None, params)
    }

    /// [`load_from_memory`](Self::load_from_memory) with the text of a `config.json`.
    pub fn load_from_memory_with_config(bytes: &[u8], config: Option<&str>, params: &ModelParams) -> Result<Model> {
        Self::load_from_memory_with_progress(bytes, config, params, &mut |_| true)
    }

    /// [`load_from_memory_with_config`](Self::load_from_memory_with_config) reporting progress
    /// in [0, 1]; `progress` returning false cancels the load ([`Error::Cancelled`]).
    pub fn load_from_memory_with_progress(
        bytes: &[u8],
        config: Option<&str>,
        params: &ModelParams,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Model> {
        Self::load_staged(params, progress, || {
            if bytes.is_empty() {
                return Err(Error::invalid("an empty buffer (0 bytes) is not a model"));
            }
            let storage = Arc::new(tensor::Storage::from_bytes(bytes));
            let (file, carried) = format::parse(storage, "<memory>")?;
            let config = config.map(|c| format::HfConfig::parse(c, "<memory config>")).transpose()?;
            Ok((file, config.or(carried)))
        })
    }

    /// Builds a model from an opened checkpoint and its optional `config.json`.
    pub fn from_file(file: SafetensorsFile, config: Option<&format::HfConfig>, params: &ModelParams) -> Result<Model> {
        let source = file.name.clone();
        // The largest tensor views the file itself (small ones may be owned rewrites: a GGUF's
        // split or transposed vectors, a misaligned copy).
        let largest = file.tensors.values().max_by_key(|t| t.bytes().len());
        let storage_id = largest.map_or(0, |t| t.storage_id());
        // A sharded folder maps one file per shard: each is checked for truncation.
        let mut seen = std::collections::HashSet::new();
        let storages: Vec<Arc<tensor::Storage>> = file
            .tensors
            .values()
            .filter(|t| matches!(**t.storage(), tensor::Storage::Mapped { .. }) && seen.insert(t.storage_id()))
            .map(|t| t.storage().clone())
            .collect();
        // A quantized file carries its source's config.json in its metadata.
        let embedded = match (config, file.metadata.get(crate::format::CONFIG_KEY)) {
            (None, Some(text)) => Some(format::HfConfig::parse(text, &format!("{source} (sutra.hf_config)"))?),
            _ => None,
        };
        if params.check_finite {
            check_finite(&file)?;
        }
        let checkpoint = CheckpointInfo {
            format: file.format,
            metadata: file.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            tensors: file.tensors.iter().map(|(n, t)| (n.clone(), t.dtype, t.shape.clone())).collect(),
        };
        let arch = models::load(&file, config.or(embedded.as_ref()))?;
        let pool = shared_pool(params.n_threads, "n_threads")?;
        // Quantized rows repacked for the panel products now, not in the first evaluation
        // (where the CPU has them; a no-op elsewhere).
        pool.install(|| {
            use rayon::prelude::*;
            arch.matrices().par_iter().for_each(|m| {
                crate::kernels::qpanel::prepare(m);
            })
        });
        let i = arch.info();
        let mut fp = session::fnv1a(i.arch_name.as_bytes(), 0xcbf2_9ce4_8422_2325);
        for v in [i.version as usize, i.n_layer, i.n_embd, i.n_vocab, i.n_head, i.head_size, arch.state_len()] {
            fp = session::fnv1a(&(v as u64).to_le_bytes(), fp);
        }
        let narrow = if pool.current_num_threads() > 1 { Some(shared_pool(1, "n_threads")?) } else { None };
        Ok(Model {
            arch,
            storages,
            pool,
            narrow,
            governor: ThreadGovernor::default(),
            fingerprint: fp,
            storage_id,
            source,
            checkpoint,
        })
    }

    /// The container, metadata and tensors of the checkpoint the model was loaded from.
    pub fn checkpoint(&self) -> &CheckpointInfo {
        &self.checkpoint
    }

    /// Architecture and sizes.
    pub fn info(&self) -> &ModelInfo {
        self.arch.info()
    }

    /// The architecture behind the model.
    pub fn arch(&self) -> &dyn Architecture {
        self.arch.as_ref()
    }

    /// Number of worker threads.
    pub fn n_threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// A hash of the architecture and every size that shapes the state.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The path the model was loaded from (`<memory>` for in-memory loads).
    pub fn source_path(&self) -> &str {
        &self.source
    }

    /// Identifies the mapped (or owned) file the weights live in.
    pub fn storage_id(&self) -> usize {
        self.storage_id
    }

    /// An I/O error if the mapped file was truncated since the load (see
    /// `tensor::Storage::check_intact`); evaluations call this first.
    pub fn check_intact(&self) -> Result<()> {
        self.storages.iter().try_for_each(|s| s.check_intact())
    }

    /// Runs `f` on this model's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// [`install`](Self::install) for a decode call of `n_tokens` single-token steps: on the
    /// model's pool or on one thread, whichever [`ThreadGovernor`] timed faster lately (with a
    /// competing process on the machine, often the one thread).
    pub fn install_decode<R: Send>(&self, n_tokens: usize, f: impl FnOnce() -> R + Send) -> R {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(narrow) = &self.narrow else { return self.pool.install(f) };
        let g = &self.governor;
        let n = g.calls.fetch_add(1, Relaxed);
        let (w, s) = (g.wide_ns.load(Relaxed), g.narrow_ns.load(Relaxed));
        let prefer_narrow = s != 0 && w != 0 && s < w;
        // The first probe comes once the first steps have faulted the weights in.
        let probe = n % PROBE_EVERY == PROBE_EVERY / 2 || (s == 0 && n >= 4);
        let use_narrow = prefer_narrow != probe;
        let t0 = std::time::Instant::now();
        let r = if use_narrow { narrow.install(f) } else { self.pool.install(f) };
        let per = (t0.elapsed().as_nanos() / n_tokens.max(1) as u128).min(u64::MAX as u128) as u64;
        let slot = if use_narrow { &g.narrow_ns } else { &g.wide_ns };
        let old = slot.load(Relaxed);
        // The side in use moves by 1/4 per step, a probe by half; in the first steps (which
        // fault the weights in) a much faster sample replaces the estimate.
        let new = if old == 0 || (n < 8 && per < old / 2) {
            per
        } else if use_narrow == prefer_narrow {
            old - old / 4 + per / 4
        } else {
            old / 2 + per / 2
        };
        slot.store(new.max(1), Relaxed);
        r
    }
}

/// [`Error::Format`] naming the first tensor of `file` holding a NaN or an infinity.
fn check_finite(file: &SafetensorsFile) -> Result<()> {
    use crate::tensor::DType;
    for (name, t) in &file.tensors {
        if matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            let v = t.to_f32_vec()?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::format(format!("{}: tensor '{name}' has {} at index {i}", file.name, v[i])));
            }
        }
    }
    Ok(())
}
