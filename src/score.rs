//! Scoring a model on text: perplexity (mean negative log-likelihood of every next token) and,
//! against a base model, the mean KL divergence and top-1 agreement of their next-token
//! distributions — how `sutra perplexity` and the quantization quality table are measured.

use crate::error::{Error, Result};
use crate::{Model, Session};
use ndarray::ArrayView2;
use std::sync::Arc;

/// What [`score`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Tokens predicted (every token after the first).
    pub tokens: usize,
    /// Mean negative log-likelihood (natural log) of the predicted tokens.
    pub mean_nll: f64,
    /// Mean KL(base ‖ model) per predicted token, with a base model.
    pub mean_kl: Option<f64>,
    /// Fraction of positions where both models' most likely next token agree, with a base.
    pub top1_agree: Option<f64>,
}

impl Score {
    /// exp(mean NLL).
    pub fn perplexity(&self) -> f64 {
        self.mean_nll.exp()
    }
}

/// log-softmax of `row` into `out` (f64).
pub fn log_softmax(row: &[f32], out: &mut [f64]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    out.iter_mut().zip(row).for_each(|(o, &l)| *o = l as f64 - lse);
}

fn argmax(r: &[f32]) -> usize {
    r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |x| x.0)
}

/// Scores `model` (with `adapters` attached, each at its multiplier) on `tokens` as one stream
/// from the initial state, fed in pieces of `ctx` tokens with the state carried over; every
/// token after the first is predicted. With `base`, also KL(base ‖ model) and top-1
/// agreement. `progress(done, total)` is called after each piece; returning false cancels
/// ([`Error::Cancelled`]).
pub fn score(
    model: &Arc<Model>,
    adapters: &[(Arc<crate::Adapter>, f32)],
    base: Option<&Arc<Model>>,
    tokens: &[u32],
    ctx: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Score> {
    let mut s = Session::new(model);
    for (a, sc) in adapters {
        s.set_adapter(a, *sc)?;
    }
    score_session(s, base, tokens, ctx, progress)
}

/// [`score`] from a session as the caller set it up (its adapters and its state, e.g. a
/// tuned initial state); `base` starts from its initial state.
pub fn score_session(
    mut s: Session,
    base: Option<&Arc<Model>>,
    tokens: &[u32],
    ctx: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Score> {
    if tokens.len() < 2 {
        return Err(Error::invalid(format!("{} tokens: scoring needs at least 2", tokens.len())));
    }
    if ctx == 0 {
        return Err(Error::invalid("ctx is 0: pieces of at least one token are needed"));
    }
    let v = s.model().info().n_vocab;
    if let Some(b) = base {
        if b.info().n_vocab != v {
            return Err(Error::invalid(format!("the base model has vocabulary {}, the model {v}", b.info().n_vocab)));
        }
    }
    let mut sb = base.map(Session::new);
    let mut logits = vec![0f32; ctx * v];
    let mut base_logits = vec![0f32; if base.is_some() { ctx * v } else { 0 }];
    let (mut lp, mut lq) = (vec![0f64; v], vec![0f64; v]);
    let (mut nll, mut kl, mut agree) = (0f64, 0f64, 0usize);
    let n_pred = tokens.len() - 1;
    for start in (0..n_pred).step_by(ctx) {
        let end = (start + ctx).min(n_pred);
        let piece = &tokens[start..end];
        let n = piece.len();
        s.eval_all_logits(piece, &mut logits[..n * v])?;
        if let Some(sb) = sb.as_mut() {
            sb.eval_all_logits(piece, &mut base_logits[..n * v])?;
        }
        let rows = ArrayView2::from_shape((n, v), &logits[..n * v]).map_err(|e| Error::Internal(e.to_string()))?;
        for (i, row) in rows.rows().into_iter().enumerate() {
            let row = row.as_slice().unwrap_or_default();
            log_softmax(row, &mut lq);
            nll -= lq[tokens[start + i + 1] as usize];
            if sb.is_some() {
                let brow = &base_logits[i * v..(i + 1) * v];
                log_softmax(brow, &mut lp);
                // KL(base ‖ model) = Σ p_base (log p_base − log p_model)
                kl += lp.iter().zip(&lq).map(|(&a, &b)| a.exp() * (a - b)).sum::<f64>();
                agree += (argmax(row) == argmax(brow)) as usize;
            }
        }
        if !progress(end, n_pred) {
            return Err(Error::Cancelled);
        }
    }
    let per = |x: f64| x / n_pred as f64;
    Ok(Score {
        tokens: n_pred,
        mean_nll: per(nll),
        mean_kl: base.map(|_| per(kl)),
        top1_agree: base.map(|_| per(agree as f64)),
    })
}
