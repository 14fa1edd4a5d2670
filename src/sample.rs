//! Sampling: a chain of stages that turn logits into the next token, in the spirit of
//! llama.cpp's sampler chain.
//!
//! A [`Sampler`] holds its stages in the order the caller added them, a seeded random
//! generator (same seed, same logits → same tokens) and the history of accepted tokens that
//! the penalties need. Stages either *modify logits* (logit bias, penalties, temperature) or
//! *truncate the candidates* (top-k, top-p, min-p); the chain ends with a *selection*: greedy
//! (argmax) or a draw from the softmax of what is left. Without an explicit selection the
//! chain draws ([`Stage::Dist`]).
//!
//! Typical chains: `penalties → top-k → top-p → temperature → dist`, or `greedy` alone.
//! BlinkDL's RWKV sampler is `rwkv_presence → top-p → temperature → dist` (its presence
//! penalty decays the counts of past tokens every step).

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::collections::HashMap;

/// The largest vocabulary a stage's token ids and `top_k` may refer to (2²⁴ ids; today's
/// largest vocabularies have about 2¹⁸). A `top_k` at or above the model's vocabulary keeps
/// every token.
pub const MAX_VOCAB: usize = 1 << 24;

/// One stage of a sampler chain.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Adds `bias` to the logit of `token` (`-inf` bans it).
    LogitBias(Vec<(u32, f32)>),
    /// llama.cpp-style penalties over the last `last_n` accepted tokens (0 = all):
    /// a seen token's logit is divided by `repeat` when positive (multiplied when negative),
    /// then reduced by `frequency · count + presence`.
    Penalties {
        /// Window of past tokens considered (0 = whole history).
        last_n: usize,
        /// Repetition penalty (1 = off).
        repeat: f32,
        /// Frequency penalty (0 = off).
        frequency: f32,
        /// Presence penalty (0 = off).
        presence: f32,
    },
    /// RWKV's decaying penalty: logit −= presence + frequency · occurrence, where each
    /// accepted token adds 1 to its occurrence and every step multiplies all occurrences by
    /// `decay` (e.g. 0.996).
    RwkvPresence {
        /// Penalty for having appeared at all.
        presence: f32,
        /// Penalty per (decayed) occurrence.
        frequency: f32,
        /// Per-step decay of occurrences.
        decay: f32,
    },
    /// Divides logits by `t` (t ≤ 0 means greedy).
    Temperature(f32),
    /// Keeps the `k` most likely candidates (0 = off).
    TopK(usize),
    /// Keeps the smallest set of most likely candidates whose probability reaches `p`, at
    /// least `min_keep` of them.
    TopP {
        /// Cumulative probability to reach.
        p: f32,
        /// Candidates kept at least.
        min_keep: usize,
    },
    /// Keeps candidates whose probability is at least `p` times the best one's.
    MinP(f32),
    /// Selects the most likely candidate.
    Greedy,
    /// Draws from the softmax of the remaining candidates.
    Dist,
}

/// A sampler chain with its random generator and token history.
#[derive(Debug, Clone)]
pub struct Sampler {
    stages: Vec<Stage>,
    seed: u64,
    rng: Rng,
    history: Vec<u32>,
    occurrence: HashMap<u32, f32>,
}

/// A candidate token and its (modified) logit.
#[derive(Debug, Clone, Copy)]
struct Cand {
    id: u32,
    logit: f32,
}

impl Sampler {
    /// An empty chain drawing with `seed`.
    pub fn new(seed: u64) -> Sampler {
        Sampler { stages: Vec::new(), seed, rng: Rng::new(seed), history: Vec::new(), occurrence: HashMap::new() }
    }

    /// The greedy chain (argmax).
    pub fn greedy() -> Sampler {
        let mut s = Sampler::new(0);
        s.stages.push(Stage::Greedy);
        s
    }

    /// Appends a stage after checking its parameters.
    pub fn add(&mut self, stage: Stage) -> Result<&mut Self> {
        let bad = |m: String| Err(Error::invalid(m));
        match &stage {
            Stage::TopP { p, .. } if !(0.0..=1.0).contains(p) => return bad(format!("top_p {p}: must be in [0, 1]")),
            Stage::MinP(p) if !(0.0..=1.0).contains(p) => return bad(format!("min_p {p}: must be in [0, 1]")),
            Stage::Temperature(t) if !t.is_finite() => return bad(format!("temperature {t}: must be finite")),
            Stage::Penalties { repeat, .. } if repeat.is_nan() || *repeat <= 0.0 => {
                return bad(format!("repeat penalty {repeat}: must be > 0"))
            }
            Stage::RwkvPresence { decay, .. } if !(0.0..=1.0).contains(decay) => {
                return bad(format!("decay {decay}: must be in [0, 1]"))
            }
            Stage::Penalties { frequency: f, presence: p, .. }
            | Stage::RwkvPresence { frequency: f, presence: p, .. }
                if !f.is_finite() || !p.is_finite() =>
            {
                return bad(format!("frequency penalty {f}, presence penalty {p}: must be finite"))
            }
            Stage::LogitBias(b) => {
                if let Some((id, v)) = b.iter().find(|(_, v)| v.is_nan()) {
                    return bad(format!("logit bias for token {id} is {v}"));
                }
                if let Some((id, _)) = b.iter().find(|(id, _)| *id as usize >= MAX_VOCAB) {
                    return bad(format!("logit bias token id {id}: past any vocabulary (at most {MAX_VOCAB} ids)"));
                }
            }
            Stage::TopK(k) if *k > MAX_VOCAB => {
                return bad(format!("top_k {k}: larger than any vocabulary (at most {MAX_VOCAB}; 0 is off)"))
            }
            _ => {}
        }
        self.stages.push(stage);
        Ok(self)
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Forgets the history and restarts the random generator from the seed.
    pub fn reset(&mut self) {
        self.rng = Rng::new(self.seed);
        self.history.clear();
        self.occurrence.clear();
    }

    /// Records `token` as generated (penalties see it from the next call on).
    pub fn accept(&mut self, token: u32) {
        self.history.push(token);
        for stage in &self.stages {
            if let Stage::RwkvPresence { decay, .. } = stage {
                for v in self.occurrence.values_mut() {
                    *v *= decay;
                }
                *self.occurrence.entry(token).or_insert(0.0) += 1.0;
                break;
            }
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from `logits` (one per vocabulary entry). Does not accept it:
    /// call [`accept`](Self::accept) with the token actually used.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::invalid("logits are empty"));
        }
        // NaN or +inf logits (a model with non-finite weights) are refused whatever the
        // stages; -inf masks a token and is fine, unless every token is masked.
        if let Some(i) = logits.iter().position(|l| l.is_nan() || *l == f32::INFINITY) {
            return Err(Error::invalid(format!(
                "logit {i} is {}: the logits are not finite (does the model have NaN/Inf weights?)",
                logits[i]
            )));
        }
        if logits.iter().all(|&l| l == f32::NEG_INFINITY) {
            return Err(Error::invalid("every logit is -inf: no token can be sampled"));
        }
        // A bias on a token the model does not have is the caller's mistake: say so rather
        // than ignore it.
        for stage in &self.stages {
            if let Stage::LogitBias(b) = stage {
                if let Some((id, _)) = b.iter().find(|(id, _)| *id as usize >= logits.len()) {
                    return Err(Error::invalid(format!(
                        "logit bias token id {id} is out of range: the vocabulary has {} ids",
                        logits.len()
                    )));
                }
            }
        }
        // The stages are borrowed while the generator and history change.
        let stages = std::mem::take(&mut self.stages);
        let r = self.run(&stages, logits);
        self.stages = stages;
        r
    }

    fn run(&mut self, stages: &[Stage], logits: &[f32]) -> Result<u32> {
        let mut c: Vec<Cand> = logits.iter().enumerate().map(|(i, &l)| Cand { id: i as u32, logit: l }).collect();
        // Until a stage sorts or filters, candidate i is token i.
        let mut sorted = false;
        let mut identity = true;
        for stage in stages {
            match stage {
                Stage::LogitBias(b) => {
                    for &(id, v) in b {
                        adjust(&mut c, identity, id, |l| *l += v);
                    }
                }
                Stage::Penalties { last_n, repeat, frequency, presence } => {
                    let start = if *last_n == 0 { 0 } else { self.history.len().saturating_sub(*last_n) };
                    let mut counts: HashMap<u32, u32> = HashMap::new();
                    for &t in &self.history[start..] {
                        *counts.entry(t).or_insert(0) += 1;
                    }
                    for (&id, &n) in &counts {
                        adjust(&mut c, identity, id, |l| {
                            *l = if *l > 0.0 { *l / repeat } else { *l * repeat };
                            *l -= frequency * n as f32 + presence;
                        });
                    }
                }
                Stage::RwkvPresence { presence, frequency, .. } => {
                    for (&id, &occ) in &self.occurrence {
                        adjust(&mut c, identity, id, |l| *l -= presence + frequency * occ);
                    }
                }
                Stage::Temperature(t) => {
                    if *t <= 0.0 {
                        return Ok(argmax(&c));
                    }
                    c.iter_mut().for_each(|x| x.logit /= t);
                }
                Stage::TopK(k) => {
                    if *k > 0 && *k < c.len() {
                        sort_desc(&mut c, &mut sorted);
                        identity = false;
                        c.truncate(*k);
                    }
                }
                Stage::TopP { p, min_keep } => {
                    sort_desc(&mut c, &mut sorted);
                    identity = false;
                    let probs = softmax(&c);
                    let mut cum = 0.0;
                    let mut keep = c.len();
                    for (i, pr) in probs.iter().enumerate() {
                        cum += pr;
                        if cum >= *p as f64 && i + 1 >= (*min_keep).max(1) {
                            keep = i + 1;
                            break;
                        }
                    }
                    c.truncate(keep);
                }
                Stage::MinP(p) => {
                    let best = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
                    // p_i >= p * p_max  <=>  logit_i >= logit_max + ln p
                    let floor = best + p.ln();
                    c.retain(|x| x.logit >= floor);
                    identity = false;
                }
                Stage::Greedy => return Ok(argmax(&c)),
                Stage::Dist => return self.draw(&c),
            }
            if c.is_empty() {
                return Err(Error::invalid("the sampler chain removed every candidate"));
            }
        }
        self.draw(&c)
    }

    fn draw(&mut self, c: &[Cand]) -> Result<u32> {
        let probs = softmax(c);
        if probs.iter().any(|p| !p.is_finite()) || c.iter().all(|x| x.logit == f32::NEG_INFINITY) {
            return Err(Error::invalid("logits are not finite: cannot draw a token"));
        }
        let u = self.uniform();
        let mut cum = 0.0;
        for (x, p) in c.iter().zip(&probs) {
            cum += p;
            if u < cum {
                return Ok(x.id);
            }
        }
        Ok(c.iter().zip(&probs).rev().find(|(_, p)| **p > 0.0).map_or(c[0].id, |(x, _)| x.id))
    }
}

/// Applies `f` to the logit of token `id`: by index while candidate i is still token i,
/// else by search (ids missing after truncation are skipped).
fn adjust(c: &mut [Cand], identity: bool, id: u32, f: impl FnOnce(&mut f32)) {
    let x = if identity { c.get_mut(id as usize) } else { c.iter_mut().find(|x| x.id == id) };
    if let Some(x) = x {
        f(&mut x.logit);
    }
}

fn sort_desc(c: &mut [Cand], sorted: &mut bool) {
    if !*sorted {
        c.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
        *sorted = true;
    }
}

fn argmax(c: &[Cand]) -> u32 {
    c.iter().fold(c[0], |best, x| if x.logit > best.logit { *x } else { best }).id
}

/// Softmax of the candidates' logits, in f64.
fn softmax(c: &[Cand]) -> Vec<f64> {
    let m = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = c.iter().map(|x| (x.logit as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(stages: &[Stage], seed: u64) -> Sampler {
        let mut s = Sampler::new(seed);
        for st in stages {
            s.add(st.clone()).unwrap();
        }
        s
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::greedy();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_draws_and_reset_restarts() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let mut a = chain(&[Stage::Temperature(1.0), Stage::Dist], 7);
        let mut b = chain(&[Stage::Temperature(1.0), Stage::Dist], 7);
        let ta: Vec<u32> = (0..100).map(|_| a.sample(&logits).unwrap()).collect();
        let tb: Vec<u32> = (0..100).map(|_| b.sample(&logits).unwrap()).collect();
        assert_eq!(ta, tb);
        a.reset();
        assert_eq!((0..100).map(|_| a.sample(&logits).unwrap()).collect::<Vec<_>>(), ta);
        let mut c = chain(&[Stage::Temperature(1.0), Stage::Dist], 8);
        assert_ne!((0..100).map(|_| c.sample(&logits).unwrap()).collect::<Vec<_>>(), ta);
        assert!(ta.iter().collect::<std::collections::HashSet<_>>().len() > 5, "draws vary");
    }

    #[test]
    fn draws_follow_the_softmax() {
        // p = softmax([0, ln 3]) = [0.25, 0.75].
        let mut s = chain(&[Stage::Dist], 1);
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&[0.0, 3f32.ln()]).unwrap() == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.02, "{f}");
    }

    #[test]
    fn truncations_keep_the_right_candidates() {
        let logits = [1.0f32, 4.0, 3.0, 2.0, 0.0];
        for seed in 0..50 {
            let t = chain(&[Stage::TopK(2), Stage::Dist], seed).sample(&logits).unwrap();
            assert!(t == 1 || t == 2);
            // p(4) = 0.64, p(3) = 0.24: top-p 0.5 keeps only the best.
            let t = chain(&[Stage::TopP { p: 0.5, min_keep: 1 }, Stage::Dist], seed).sample(&logits).unwrap();
            assert_eq!(t, 1);
            let t = chain(&[Stage::TopP { p: 0.8, min_keep: 1 }, Stage::Dist], seed).sample(&logits).unwrap();
            assert!(t == 1 || t == 2);
            // min-p 0.3: keeps logits >= 4 + ln 0.3 = 2.796.
            let t = chain(&[Stage::MinP(0.3), Stage::Dist], seed).sample(&logits).unwrap();
            assert!(t == 1 || t == 2);
        }
    }

    #[test]
    fn penalties_and_bias_change_the_winner() {
        let logits = [2.0f32, 1.9, -1.0];
        let mut s =
            chain(&[Stage::Penalties { last_n: 0, repeat: 1.1, frequency: 0.0, presence: 0.0 }, Stage::Greedy], 0);
        assert_eq!(s.sample(&logits).unwrap(), 0);
        s.accept(0);
        assert_eq!(s.sample(&logits).unwrap(), 1, "2.0 / 1.1 < 1.9");
        let mut s =
            chain(&[Stage::Penalties { last_n: 1, repeat: 1.0, frequency: 0.5, presence: 0.0 }, Stage::Greedy], 0);
        s.accept(0);
        s.accept(2);
        assert_eq!(s.sample(&logits).unwrap(), 0, "token 0 fell out of the last_n window");
        let mut s = chain(&[Stage::LogitBias(vec![(2, 5.0)]), Stage::Greedy], 0);
        assert_eq!(s.sample(&logits).unwrap(), 2);
        let mut s = chain(&[Stage::LogitBias(vec![(0, f32::NEG_INFINITY)]), Stage::Greedy], 0);
        assert_eq!(s.sample(&logits).unwrap(), 1);
    }

    #[test]
    fn rwkv_presence_decays() {
        let logits = [1.0f32, 0.8];
        let mut s = chain(&[Stage::RwkvPresence { presence: 0.0, frequency: 0.3, decay: 0.5 }, Stage::Greedy], 0);
        s.accept(0);
        // occurrence(0) = 1: 1.0 - 0.3 = 0.7 < 0.8.
        assert_eq!(s.sample(&logits).unwrap(), 1);
        s.accept(1);
        s.accept(1);
        // occurrence(0) = 0.25: 1.0 - 0.075 > 0.8 - 0.3 * 1.5.
        assert_eq!(s.sample(&logits).unwrap(), 0);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let mut s = Sampler::new(0);
        assert!(s.add(Stage::TopP { p: 1.5, min_keep: 1 }).is_err());
        assert!(s.add(Stage::MinP(-0.1)).is_err());
        assert!(s.add(Stage::Temperature(f32::NAN)).is_err());
        assert!(s.add(Stage::Penalties { last_n: 0, repeat: 0.0, frequency: 0.0, presence: 0.0 }).is_err());
        assert!(Sampler::new(0).sample(&[]).is_err());
        assert!(s.sample(&[f32::NAN, f32::NAN]).is_err());
    }
}
