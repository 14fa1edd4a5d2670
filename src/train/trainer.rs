//! A LoRA trainer over a frozen model: batches of rows, each from the initial state, the
//! mean cross-entropy and its gradient through every row (full BPTT), and AdamW steps.
//! A q8/q4 model makes it QLoRA: the base stays quantized, gradients flow through the
//! quantized products.

use super::adamw::{self, AdamWParams, Moments};
use super::lora::{LoraGrads, LoraParam, LoraSet};
use crate::error::{Error, Result};
use crate::lora::Adapter;
use crate::rng::Rng;
use crate::Model;
use std::path::Path;
use std::sync::Arc;

/// Architectures with a backward pass.
const SUPPORTED: [&str; 3] = ["rwkv7", "mamba1", "mamba2"];

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
}

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
    step: u64,
    rank: usize,
    alpha: f32,
}

impl Trainer {
    /// A trainer over `model`: from a copy of `init` (its rank, alpha, targets and values),
    /// or a new adapter from `p`. Architectures without a backward pass are
    /// [`Error::Unsupported`] naming those that have one.
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
            && p.grad_clip >= 0.0;
        if !good {
            return Err(Error::invalid(format!(
                "train params: learning_rate {}, beta1 {}, beta2 {}, eps {}, weight_decay {}, grad_clip {}: need lr >= 0, \
                 betas in [0, 1), eps > 0, finite decay, grad_clip >= 0",
                o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, p.grad_clip
            )));
        }
        let (set, rank, alpha) = match init {
            Some(a) => {
                if !a.fits(model) {
                    return Err(Error::invalid(format!("init adapter {} was loaded for another model", a.source)));
                }
                (LoraSet::from_adapter(a)?, a.rank, a.alpha)
            }
            None => (Self::new_set(model, p)?, p.rank, p.alpha),
        };
        let grads = set.zero_grads();
        let moments = set.params.iter().map(|_| Default::default()).collect();
        Ok(Trainer {
            model: model.clone(),
            params: p.clone(),
            set,
            grads,
            have_grad: false,
            moments,
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
        let scale = 1.0 / count as f32;
        let (set, arch) = (&self.set, self.model.arch());
        let mut sum = 0f64;
        self.model.install(|| -> Result<()> {
            for (row, tgt) in tokens.chunks(n_tokens).zip(targets.chunks(n_tokens)) {
                sum += arch.train_row(set, row, tgt, scale, &mut grads)?.0;
            }
            Ok(())
        })?;
        self.grads = grads;
        self.have_grad = true;
        Ok((sum / count as f64) as f32)
    }

    /// One AdamW step with the gradient of the last [`compute`](Self::compute) (clipped to
    /// the global norm `grad_clip` first, when set).
    pub fn apply(&mut self) -> Result<()> {
        if !self.have_grad {
            return Err(Error::invalid("no gradient to apply: call compute first"));
        }
        let all = self.grads.da.iter().chain(&self.grads.db).map(|g| &g[..]);
        let k = adamw::clip_factor(all, self.params.grad_clip);
        self.step += 1;
        let h = self.params.optim;
        for (i, p) in self.set.params.iter_mut().enumerate() {
            let (ma, mb) = &mut self.moments[i];
            adamw::step(&h, self.step, &mut p.a, &self.grads.da[i], k, ma);
            adamw::step(&h, self.step, &mut p.b, &self.grads.db[i], k, mb);
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
    /// `base_model.model.blocks.0.att.key.lora_A.weight`).
    pub fn gradient(&self, name: &str) -> Result<&[f32]> {
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
