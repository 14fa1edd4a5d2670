//! A LoRA trainer over a frozen model: batches of rows, each from the initial state, the
//! mean cross-entropy and its gradient through every row (full BPTT, checkpointed every
//! `bptt_chunk` tokens so that memory grows with the row only through the checkpoints), and
//! AdamW steps. A q8/q4 model makes it QLoRA: the base stays quantized, gradients flow
//! through the quantized products. State tuning trains the initial recurrent state, beside
//! the adapter or instead of it (as RWKV-PEFT's `state` mode); the result is a state blob
//! that [`crate::Session::load_state`] accepts.

use super::adamw::{self, AdamWParams, Moments};
use super::lora::{LoraGrads, LoraParam, LoraSet};
use crate::error::{Error, Result};
use crate::lora::Adapter;
use crate::models::TrainRow;
use crate::rng::Rng;
use crate::{Model, Session};
use std::path::Path;
use std::sync::Arc;

/// Architectures with a backward pass.
const SUPPORTED: [&str; 5] = ["rwkv5", "rwkv6", "rwkv7", "mamba1", "mamba2"];

/// How to train (the C API's `sutra_train_params`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// r of a new adapter.
    pub rank: usize,
    /// lora_alpha of a new adapter.
    pub alpha: f32,
    /// Module-name suffixes to target (`"att.key"`, …); `None`: every linear layer of every
    /// block.
    pub targets: Option<Vec<String>>,
    /// Seed of a new adapter's A ~ U(±1/√in) (B = 0, as PEFT initializes).
    pub seed: u64,
    /// AdamW.
    pub optim: AdamWParams,
    /// Max global L2 norm of the gradient; 0 = no clipping.
    pub grad_clip: f32,
    /// Tokens per BPTT chunk (the state is checkpointed between chunks and each chunk's
    /// forward recomputed on the way back); 0: the whole row at once.
    pub bptt_chunk: usize,
    /// What is trained.
    pub tune: Tune,
    /// Learning rate of the initial state; 0: `optim.lr`.
    pub state_lr: f32,
}

/// What a [`Trainer`] trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tune {
    /// The LoRA adapter.
    #[default]
    Adapter,
    /// The adapter and the initial recurrent state.
    AdapterAndState,
    /// The initial state only (an `init` adapter, if any, is applied frozen).
    State,
}

impl TryFrom<i32> for Tune {
    type Error = Error;
    /// The C API's `train_state`: 0 adapter, 1 adapter and state, 2 state only.
    fn try_from(v: i32) -> Result<Tune> {
        match v {
            0 => Ok(Tune::Adapter),
            1 => Ok(Tune::AdapterAndState),
            2 => Ok(Tune::State),
            _ => Err(Error::invalid(format!(
                "train_state {v}: 0 (adapter), 1 (adapter and initial state) or 2 (initial state only)"
            ))),
        }
    }
}

impl Tune {
    /// Whether the adapter's pairs are trained.
    pub fn adapter(self) -> bool {
        self != Tune::State
    }

    /// Whether the initial state is trained.
    pub fn state(self) -> bool {
        self != Tune::Adapter
    }
}

/// Default [`TrainParams::bptt_chunk`]: long enough that the products stay matrix-matrix and
/// that at ctx 512 only half the tokens' forward is recomputed, short enough that a q4 0.1B
/// model trains at ctx 512 in about 600 MiB (128 halves the records for a quarter more
/// forward work; 0 recomputes nothing).
pub const DEFAULT_BPTT_CHUNK: usize = 256;

impl Default for TrainParams {
    /// r 8, α 16, every block matrix, seed 0, AdamW lr 1e-3, β (0.9, 0.999), eps 1e-8, no
    /// weight decay, no clipping.
    fn default() -> Self {
        TrainParams {
            rank: 8,
            alpha: 16.0,
            targets: None,
            seed: 0,
            optim: AdamWParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            grad_clip: 0.0,
            bptt_chunk: DEFAULT_BPTT_CHUNK,
            tune: Tune::Adapter,
            state_lr: 0.0,
        }
    }
}

/// A LoRA trainer (see the module doc).
pub struct Trainer {
    model: Arc<Model>,
    params: TrainParams,
    set: LoraSet,
    grads: LoraGrads,
    have_grad: bool,
    moments: Vec<(Moments, Moments)>,
    /// The initial state every row starts from (trained when `params.tune.state()`).
    state: Vec<f32>,
    d_state: Vec<f32>,
    state_moments: Moments,
    step: u64,
    rank: usize,
    alpha: f32,
}

impl Trainer {
    /// A trainer over `model`: from a copy of `init` (its rank, alpha, targets and values),
    /// or a new adapter from `p` (none when only the state is tuned), and the model's
    /// initial state. Architectures without a backward pass are [`Error::Unsupported`]
    /// naming those that have one.
    pub fn new(model: &Arc<Model>, init: Option<&Adapter>, p: &TrainParams) -> Result<Trainer> {
        let arch = model.info().arch_name;
        if !SUPPORTED.contains(&arch) {
            return Err(Error::unsupported(format!(
                "LoRA training of {arch} models: training is implemented for {}",
                SUPPORTED.join(", ")
            )));
        }
        let o = &p.optim;
        let good = o.lr.is_finite()
            && o.lr >= 0.0
            && (0.0..1.0).contains(&o.beta1)
            && (0.0..1.0).contains(&o.beta2)
            && o.eps.is_finite()
            && o.eps > 0.0
            && o.weight_decay.is_finite()
            && p.grad_clip.is_finite()
            && p.grad_clip >= 0.0
            && p.state_lr.is_finite()
            && p.state_lr >= 0.0;
        if !good {
            return Err(Error::invalid(format!(
                "train params: learning_rate {}, beta1 {}, beta2 {}, eps {}, weight_decay {}, grad_clip {}, \
                 state_learning_rate {}: need lr >= 0, betas in [0, 1), eps > 0, finite decay, grad_clip >= 0",
                o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, p.grad_clip, p.state_lr
            )));
        }
        let (set, rank, alpha) = match init {
            Some(a) => {
                if !a.fits(model) {
                    return Err(Error::invalid(format!("init adapter {} was loaded for another model", a.source)));
                }
                (LoraSet::from_adapter(a)?, a.rank, a.alpha)
            }
            None if !p.tune.adapter() => (LoraSet::default(), p.rank, p.alpha),
            None => (Self::new_set(model, p)?, p.rank, p.alpha),
        };
        let mut state = vec![0f32; model.arch().state_len()];
        model.arch().init_state(&mut state);
        let grads = set.zero_grads();
        let moments = set.params.iter().map(|_| Default::default()).collect();
        Ok(Trainer {
            model: model.clone(),
            params: p.clone(),
            set,
            grads,
            have_grad: false,
            moments,
            d_state: vec![0f32; state.len()],
            state,
            state_moments: Moments::default(),
            step: 0,
            rank,
            alpha,
        })
    }

    /// A new adapter: A ~ U(±1/√in) drawn in module order from the seed, B = 0.
    fn new_set(model: &Model, p: &TrainParams) -> Result<LoraSet> {
        if p.rank == 0 || !p.alpha.is_finite() {
            return Err(Error::invalid(format!(
                "lora_rank {} and lora_alpha {}: need r >= 1, finite alpha",
                p.rank, p.alpha
            )));
        }
        let mut modules: Vec<(String, usize, usize)> = model
            .arch()
            .matrices()
            .into_iter()
            .filter_map(|m| {
                let module = m.tensor.name.strip_suffix(".weight")?;
                let block = module.contains("blocks.") || module.contains("layers.");
                let wanted = match &p.targets {
                    None => block,
                    Some(t) => t.iter().any(|s| module == s || module.ends_with(&format!(".{s}"))),
                };
                wanted.then(|| (module.to_string(), m.rows, m.cols))
            })
            .collect();
        modules.sort();
        modules.dedup();
        if modules.is_empty() {
            return Err(Error::invalid(format!(
                "target_modules {:?} names no linear layer of this {} model",
                p.targets,
                model.info().arch_name
            )));
        }
        // A rank past every target's smaller side adds nothing a smaller one cannot express,
        // and a huge one would only allocate (INT32_MAX aborted the process): refuse it.
        let useful = modules.iter().map(|(_, r, c)| *r.min(c)).max().unwrap_or(0);
        if p.rank > useful {
            return Err(Error::invalid(format!(
                "lora_rank {}: larger than any target matrix can use (at most {useful}, the largest smaller side)",
                p.rank
            )));
        }
        let mut rng = Rng::new(p.seed);
        let params = modules
            .into_iter()
            .map(|(module, rows, cols)| {
                let bound = 1.0 / (cols as f32).sqrt();
                let a = (0..p.rank * cols).map(|_| (2.0 * rng.uniform() - 1.0) * bound).collect();
                (module, a, vec![0f32; rows * p.rank], p.alpha / p.rank as f32)
            })
            .collect::<Vec<_>>();
        let adapter = Adapter::from_pairs(model, params, p.rank, p.alpha, "<new adapter>")?;
        LoraSet::from_adapter(&adapter)
    }

    /// The trainable pairs.
    pub fn params(&self) -> &[LoraParam] {
        &self.set.params
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One batch: `n_rows` rows of `n_tokens` tokens (`tokens`, `targets` row-major), every
    /// row from the initial state. Returns the mean cross-entropy over every target >= 0 of
    /// the logits after the token at the same position, and keeps its gradient for
    /// [`apply`](Self::apply). The adapter is unchanged.
    pub fn compute(&mut self, tokens: &[u32], targets: &[i32], n_rows: usize, n_tokens: usize) -> Result<f32> {
        let v = self.model.info().n_vocab;
        if n_rows == 0 || n_tokens == 0 {
            return Err(Error::invalid(format!(
                "n_rows {n_rows}, n_tokens {n_tokens}: a batch needs at least one token"
            )));
        }
        let n = n_rows.checked_mul(n_tokens).ok_or_else(|| Error::invalid("n_rows · n_tokens overflows"))?;
        if tokens.len() != n || targets.len() != n {
            return Err(Error::invalid(format!(
                "tokens ({}) and targets ({}) must both hold n_rows · n_tokens = {n} ids",
                tokens.len(),
                targets.len()
            )));
        }
        if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= v) {
            return Err(Error::invalid(format!("tokens[{i}] = {t} is out of range: the vocabulary has {v} ids")));
        }
        if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t >= 0 && t as usize >= v) {
            return Err(Error::invalid(format!("targets[{i}] = {t} is out of range: the vocabulary has {v} ids")));
        }
        let count = targets.iter().filter(|&&t| t >= 0).count();
        if count == 0 {
            return Err(Error::invalid("every target is negative: the batch has nothing to learn from"));
        }
        self.model.check_intact()?;
        let mut grads = self.set.zero_grads();
        let mut d_state = vec![0f32; self.state.len()];
        let scale = 1.0 / count as f32;
        let (set, arch, state, chunk) = (&self.set, self.model.arch(), &self.state[..], self.params.bptt_chunk);
        let want_state = self.params.tune.state();
        let mut sum = 0f64;
        self.model.install(|| -> Result<()> {
            for (tokens, targets) in tokens.chunks(n_tokens).zip(targets.chunks(n_tokens)) {
                let d_state = want_state.then_some(&mut d_state[..]);
                let row = TrainRow { tokens, targets, scale, chunk, state, d_state };
                sum += arch.train_row(set, row, &mut grads)?.0;
            }
            Ok(())
        })?;
        self.grads = grads;
        self.d_state = d_state;
        self.have_grad = true;
        Ok((sum / count as f64) as f32)
    }

    /// One AdamW step with the gradient of the last [`compute`](Self::compute) (clipped to
    /// the global norm `grad_clip` first, when set).
    pub fn apply(&mut self) -> Result<()> {
        if !self.have_grad {
            return Err(Error::invalid("no gradient to apply: call compute first"));
        }
        let tune = self.params.tune;
        let pairs = self.grads.da.iter().chain(&self.grads.db).filter(|_| tune.adapter());
        let all = pairs.chain(tune.state().then_some(&self.d_state)).map(|g| &g[..]);
        let k = adamw::clip_factor(all, self.params.grad_clip);
        self.step += 1;
        let h = self.params.optim;
        if tune.adapter() {
            for (i, p) in self.set.params.iter_mut().enumerate() {
                let (ma, mb) = &mut self.moments[i];
                adamw::step(&h, self.step, &mut p.a, &self.grads.da[i], k, ma);
                adamw::step(&h, self.step, &mut p.b, &self.grads.db[i], k, mb);
            }
        }
        if tune.state() {
            let lr = if self.params.state_lr > 0.0 { self.params.state_lr } else { h.lr };
            let hs = AdamWParams { lr, weight_decay: 0.0, ..h };
            adamw::step(&hs, self.step, &mut self.state, &self.d_state, k, &mut self.state_moments);
        }
        self.have_grad = false;
        Ok(())
    }

    /// [`compute`](Self::compute), then [`apply`](Self::apply).
    pub fn step(&mut self, tokens: &[u32], targets: &[i32], n_rows: usize, n_tokens: usize) -> Result<f32> {
        let loss = self.compute(tokens, targets, n_rows, n_tokens)?;
        self.apply()?;
        Ok(loss)
    }

    /// The last computed gradient of the adapter tensor `name` (PEFT's, e.g.
    /// `base_model.model.blocks.0.att.key.lora_A.weight`), or of the initial state
    /// (`"state"`, in the state's layout, when the state is tuned).
    pub fn gradient(&self, name: &str) -> Result<&[f32]> {
        if name == "state" {
            if !self.params.tune.state() {
                return Err(Error::invalid("'state': this trainer does not tune the initial state (train_state 0)"));
            }
            return Ok(&self.d_state);
        }
        let rest = name.strip_prefix("base_model.model.").unwrap_or(name);
        let found = self.set.params.iter().enumerate().find_map(|(i, p)| {
            if rest == format!("{}.lora_A.weight", p.module) {
                Some(&self.grads.da[i][..])
            } else if rest == format!("{}.lora_B.weight", p.module) {
                Some(&self.grads.db[i][..])
            } else {
                None
            }
        });
        found.ok_or_else(|| Error::invalid(format!("'{name}' is not a tensor of this trainer's adapter")))
    }

    /// The initial state rows start from (the trained one when the state is tuned).
    pub fn initial_state(&self) -> &[f32] {
        &self.state
    }

    /// The initial state as a state blob, as [`Session::save_state`] writes it.
    pub fn state_blob(&self) -> Vec<u8> {
        let mut s = Session::new(&self.model);
        // Cannot fail: the trainer's state has the model's length.
        let _ = s.set_state(&self.state);
        s.state_to_vec()
    }

    /// Starts rows from the state in `blob` (written by [`Session::save_state`] for this
    /// model, or by [`state_blob`](Self::state_blob)); the state's optimizer moments restart.
    /// On error nothing changes.
    pub fn set_state_blob(&mut self, blob: &[u8]) -> Result<()> {
        let mut s = Session::new(&self.model);
        s.load_state(blob)?;
        self.state.copy_from_slice(s.state());
        self.state_moments = Moments::default();
        Ok(())
    }

    /// A snapshot of the current adapter, for sessions.
    pub fn adapter(&self) -> Result<Adapter> {
        let pairs = self.set.params.iter().map(|p| (p.module.clone(), p.a.clone(), p.b.clone(), p.scaling));
        Adapter::from_pairs(&self.model, pairs, self.rank, self.alpha, "<trainer>")
    }

    /// Writes the current adapter as a PEFT folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.adapter()?.save(dir)
    }
}
