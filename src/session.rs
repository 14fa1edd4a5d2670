//! Recurrent state: one sequence's state over a shared model — new, reset, clone, eval,
//! save and load.
//!
//! A saved state is a versioned little-endian blob:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SUTRAST\0` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | model-shape fingerprint (FNV-1a of architecture and sizes) |
//! | 24 | 8 | number of f32 that follow (n) |
//! | 32 | 4·n | the state, f32 |
//! | 32+4n | 8 | FNV-1a 64 checksum of every byte before it |
//!
//! Loading checks all of it before touching the session, so a rejected blob leaves the
//! session as it was.

use crate::error::{Error, Result};
use crate::exec::{Attached, Context, Observer, Seg};
use crate::kernels;
use crate::models::{Batch, Logits};
use crate::Model;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SUTRAST\0";
const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 32;
/// Tokens per prefill chunk: bounds scratch memory for long prompts (RWKV-7's time mix takes
/// 17 rows of the width per token: 13 MB at 256 tokens of 768). Every weight is read once per
/// chunk; 256 prefills RWKV-7 0.1B ~7% faster than 128 on this project's Zen 4 (fewer passes
/// over the weights, fewer joins), and 512 no faster.
const PREFILL_CHUNK: usize = 256;
/// Sessions per thread from which a batch is split into one group of sessions per thread.
const BATCH_GROUP_MIN: usize = 4;
/// Rows per group up to which a batch is split (a decode-sized call; a longer one keeps its
/// products split between threads).
const BATCH_SPLIT_ROWS: usize = 64;

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// One sequence's recurrent state over a shared [`Model`], with the execution context its
/// evaluations run in (scratch reused from call to call). Used by one thread at a time.
pub struct Session {
    model: Arc<Model>,
    /// The architecture's state vector (layout documented per architecture).
    state: Vec<f32>,
    /// Scratch, products' entry point and token buffer of this session's evaluations.
    ctx: Context,
    /// Set when an evaluation failed half-way (a panic inside the engine): the state may be
    /// half-advanced, so every later evaluation is refused until [`reset`](Self::reset).
    failed: Option<String>,
}

impl Clone for Session {
    /// A session with a copy of this one's state (and failure mark); the copy gets its own
    /// scratch.
    fn clone(&self) -> Session {
        let mut ctx = Context::new();
        ctx.exec.lin.set_deltas(self.ctx.exec.lin.deltas().iter().cloned());
        Session { model: self.model.clone(), state: self.state.clone(), ctx, failed: self.failed.clone() }
    }
}

impl Session {
    /// A session at the initial (empty-context) state.
    pub fn new(model: &Arc<Model>) -> Session {
        let mut state = vec![0f32; model.arch().state_len()];
        model.arch().init_state(&mut state);
        Session { model: model.clone(), state, ctx: Context::new(), failed: None }
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Back to the initial state; clears the mark of a failed evaluation.
    pub fn reset(&mut self) {
        self.model.arch().init_state(&mut self.state);
        self.failed = None;
    }

    /// The raw state vector.
    pub fn state(&self) -> &[f32] {
        &self.state
    }

    /// Installs (or removes, with `None`) an observer of every product's input (e.g. AWQ
    /// calibration); returns the previous one.
    pub fn set_observer(&mut self, o: Option<Box<dyn Observer>>) -> Option<Box<dyn Observer>> {
        self.ctx.exec.lin.set_observer(o)
    }

    /// From the next evaluation on, computes with `adapter` at multiplier `scale` (1 = as
    /// trained): set again, it changes the scale; scale 0 detaches it. Several adapters may be
    /// attached; their terms add. The recurrent state is kept. The adapter must have been
    /// loaded for a model of this session's shape; `scale` must be finite.
    pub fn set_adapter(&mut self, adapter: &Arc<crate::Adapter>, scale: f32) -> Result<()> {
        if !adapter.fits(&self.model) {
            return Err(Error::invalid(format!(
                "adapter {} was loaded for another model than this session's ({})",
                adapter.source,
                self.model.source_path()
            )));
        }
        if !scale.is_finite() {
            return Err(Error::invalid(format!("adapter scale {scale}: must be finite")));
        }
        let lin = &mut self.ctx.exec.lin;
        let same = |a: &Attached| std::ptr::addr_eq(Arc::as_ptr(&a.delta), Arc::as_ptr(adapter));
        let mut list: Vec<Attached> = lin.deltas().iter().filter(|a| !same(a)).cloned().collect();
        if scale != 0.0 {
            let at = lin.deltas().iter().position(same).unwrap_or(list.len()).min(list.len());
            list.insert(at, Attached { delta: adapter.clone(), scale, seg: None });
        }
        lin.set_deltas(list);
        Ok(())
    }

    /// Detaches every adapter (the state is kept).
    pub fn clear_adapters(&mut self) {
        self.ctx.exec.lin.set_deltas([]);
    }

    /// Number of attached adapters.
    pub fn n_adapters(&self) -> usize {
        self.ctx.exec.lin.deltas().len()
    }

    fn check(&self, tokens: &[u32], logits: Option<&[f32]>, per_token: bool) -> Result<()> {
        if let Some(why) = &self.failed {
            return Err(Error::Internal(format!(
                "this session is unusable until it is reset: an earlier evaluation failed ({why})"
            )));
        }
        if tokens.is_empty() {
            return Err(Error::invalid("n_tokens is 0: at least one token is needed"));
        }
        self.model.check_intact()?;
        let v = self.model.info().n_vocab;
        if let Some((pos, tok)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= v) {
            return Err(Error::invalid(format!(
                "token id {tok} at position {pos} is out of range: the vocabulary has {v} ids (0..{})",
                v - 1
            )));
        }
        if let Some(l) = logits {
            let want = if per_token { tokens.len() * v } else { v };
            if l.len() < want {
                return Err(Error::BufferTooSmall { needed: want, given: l.len() });
            }
        }
        Ok(())
    }

    /// Runs `f` (the forward passes of one evaluation) on the model's threads; a panic inside
    /// marks the session failed and comes back as [`Error::Internal`].
    /// `decode`: the evaluation is that many single-token steps, which run where the model's
    /// [`install_decode`](Model::install_decode) finds them faster; 0 for any other.
    fn run(&mut self, decode: usize, f: impl FnOnce(&Model, &mut Context, &mut [f32]) + Send) -> Result<()> {
        let (model, ctx, state) = (&*self.model, &mut self.ctx, &mut self.state[..]);
        let go = || {
            if decode > 0 {
                model.install_decode(decode, || f(model, ctx, state))
            } else {
                model.install(|| f(model, ctx, state))
            }
        };
        match catch_unwind(AssertUnwindSafe(go)) {
            Ok(()) => Ok(()),
            Err(panic) => {
                let msg = format!("internal error during evaluation: {}", crate::error::panic_message(&*panic));
                self.failed = Some(msg.clone());
                Err(Error::Internal(msg))
            }
        }
    }

    /// Feeds `tokens` through the sequence (prefill) path; `logits` (n_vocab) receives the
    /// logits after the last token.
    pub fn eval(&mut self, tokens: &[u32], logits: Option<&mut [f32]>) -> Result<()> {
        self.check(tokens, logits.as_deref(), false)?;
        let v = self.model.info().n_vocab;
        self.run(if tokens.len() == 1 { 1 } else { 0 }, |model, ctx, state| {
            let n_chunks = tokens.len().div_ceil(PREFILL_CHUNK);
            let mut logits = logits;
            for (ci, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
                let out = if ci + 1 == n_chunks { logits.take().map(|l| &mut l[..v]) } else { None };
                forward_one(model, ctx, state, chunk, out.map_or(Logits::None, Logits::Last));
            }
        })
    }

    /// [`eval`](Self::eval) of token ids as C passes them: each must be in `0..n_vocab`
    /// (negative ids are refused by position, as out-of-range ones are). Converts into the
    /// session's own buffer, so a decode step allocates nothing.
    pub fn eval_ids(&mut self, ids: &[i32], logits: Option<&mut [f32]>, stepwise: bool) -> Result<()> {
        if let Some(pos) = ids.iter().position(|&t| t < 0) {
            return Err(Error::invalid(format!("token id {} at position {pos} is negative", ids[pos])));
        }
        let mut buf = std::mem::take(&mut self.ctx.ids);
        buf.clear();
        buf.extend(ids.iter().map(|&t| t as u32));
        let r = if stepwise { self.eval_stepwise(&buf, logits) } else { self.eval(&buf, logits) };
        self.ctx.ids = buf;
        r
    }

    /// Feeds `tokens` one at a time through the single-token step path.
    pub fn eval_stepwise(&mut self, tokens: &[u32], logits: Option<&mut [f32]>) -> Result<()> {
        self.check(tokens, logits.as_deref(), false)?;
        let v = self.model.info().n_vocab;
        self.run(tokens.len(), |model, ctx, state| {
            let mut logits = logits;
            for (i, tok) in tokens.iter().enumerate() {
                let out = if i + 1 == tokens.len() { logits.take().map(|l| &mut l[..v]) } else { None };
                forward_one(model, ctx, state, std::slice::from_ref(tok), out.map_or(Logits::None, Logits::Last));
            }
        })
    }

    /// Feeds `tokens` through the sequence path and writes the logits after every token
    /// into `logits` (`[tokens.len(), n_vocab]`), e.g. for perplexity.
    pub fn eval_all_logits(&mut self, tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        self.check(tokens, Some(logits), true)?;
        let v = self.model.info().n_vocab;
        self.run(0, |model, ctx, state| {
            for (chunk, out) in tokens.chunks(PREFILL_CHUNK).zip(logits.chunks_mut(PREFILL_CHUNK * v)) {
                forward_one(model, ctx, state, chunk, Logits::All(&mut out[..chunk.len() * v]));
            }
        })
    }

    /// [`eval_batch`](Self::eval_batch) of token ids as C passes them (negative ids refused,
    /// naming the session and position).
    pub fn eval_batch_ids(sessions: &mut [&mut Session], ids: &[&[i32]], logits: Option<&mut [f32]>) -> Result<()> {
        let mut toks = Vec::with_capacity(ids.len());
        for (i, t) in ids.iter().enumerate() {
            if let Some(pos) = t.iter().position(|&x| x < 0) {
                return Err(Error::invalid(format!("tokens[{i}]: token id {} at position {pos} is negative", t[pos])));
            }
            toks.push(t.iter().map(|&x| x as u32).collect::<Vec<u32>>());
        }
        let views: Vec<&[u32]> = toks.iter().map(|t| &t[..]).collect();
        Self::eval_batch(sessions, &views, logits)
    }

    /// Advances several sessions of one model in one pass: session i is fed `tokens[i]`
    /// (at least one token each), every weight matrix is read once for all of them (a
    /// decode-sized batch of at least 4 sessions per thread: once per thread, for its group
    /// of sessions), and row i of `logits` (when given, `[n, n_vocab]`) receives the logits
    /// after session i's last token. The results equal separate [`eval`](Self::eval) calls
    /// (to float rounding). On error no session is changed.
    pub fn eval_batch(sessions: &mut [&mut Session], tokens: &[&[u32]], logits: Option<&mut [f32]>) -> Result<()> {
        let Some(first) = sessions.first() else { return Ok(()) };
        let model = first.model.clone();
        if tokens.len() != sessions.len() {
            return Err(Error::invalid(format!("{} sessions but {} token lists", sessions.len(), tokens.len())));
        }
        let v = model.info().n_vocab;
        for (i, (s, t)) in sessions.iter().zip(tokens).enumerate() {
            if !Arc::ptr_eq(&s.model, &model) {
                return Err(Error::invalid(format!("sessions[{i}] runs another model than sessions[0]")));
            }
            s.check(t, None, false).map_err(|e| Error::invalid(format!("sessions[{i}]: {e}")))?;
        }
        if let Some(l) = logits.as_deref() {
            if l.len() < sessions.len() * v {
                return Err(Error::BufferTooSmall { needed: sessions.len() * v, given: l.len() });
            }
        }
        let n = sessions.len();
        let threads = model.n_threads();
        let groups = (n / BATCH_GROUP_MIN).min(threads);
        let rows: usize = tokens.iter().map(|t| t.len()).sum();
        let r = if groups >= 2 && rows <= BATCH_SPLIT_ROWS * groups {
            // A decode-sized batch: one group of sessions per thread, each group's products
            // on its thread alone (kernels::one_thread), instead of every product split
            // between the threads with a join each (~15 per layer). Each group reads every
            // weight; they do so at about the same time. Every row's arithmetic is the same
            // either way. Measured (RWKV-7 0.1B q4, 2 threads): 8 sessions 615 → 760
            // tokens/s, 16 sessions 821 → 981; at 2 sessions per group no faster, at 1 slower
            // (hence BATCH_GROUP_MIN).
            use rayon::prelude::*;
            let per = n.div_ceil(groups);
            let mut logits = logits.map(|l| l[..n * v].chunks_mut(per * v));
            let parts: Vec<_> = sessions
                .chunks_mut(per)
                .zip(tokens.chunks(per))
                .map(|(s, t)| (s, t, logits.as_mut().and_then(|l| l.next())))
                .collect();
            model
                .install(|| {
                    parts
                        .into_par_iter()
                        .with_max_len(1)
                        .map(|(s, t, l)| kernels::one_thread(|| Self::forward_group(s, t, l)))
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .all(|ok| ok)
        } else {
            model.install(|| Self::forward_group(sessions, tokens, logits))
        };
        if !r {
            for s in sessions.iter_mut() {
                s.failed = Some("internal error during a batch evaluation".into());
            }
            return Err(Error::Internal("internal error during a batch evaluation (panic)".into()));
        }
        Ok(())
    }

    /// The forward pass of [`eval_batch`](Self::eval_batch) over `sessions` (checked by the
    /// caller), on the current pool; `false` if it panicked.
    fn forward_group(sessions: &mut [&mut Session], tokens: &[&[u32]], logits: Option<&mut [f32]>) -> bool {
        let model = sessions[0].model.clone();
        let v = model.info().n_vocab;
        // The rows: every session's tokens, one after another; each session's adapters apply
        // to its own rows.
        let mut all = Vec::with_capacity(tokens.iter().map(|t| t.len()).sum());
        let mut segs = Vec::with_capacity(tokens.len());
        let mut deltas = Vec::new();
        for (i, (s, t)) in sessions.iter().zip(tokens).enumerate() {
            segs.push(Seg { start: all.len(), len: t.len() });
            all.extend_from_slice(t);
            for d in s.ctx.exec.lin.deltas() {
                deltas.push(Attached { seg: Some(i), ..d.clone() });
            }
        }
        // The group runs in its first session's context, so its scratch is reused from call
        // to call; its own adapters are put back afterwards.
        let mut ctx = std::mem::take(&mut sessions[0].ctx);
        let own = ctx.exec.lin.deltas().to_vec();
        ctx.exec.lin.set_deltas(deltas);
        let mut states: Vec<&mut [f32]> = sessions.iter_mut().map(|s| &mut s.state[..]).collect();
        let n = segs.len();
        let out = logits.map_or(Logits::None, |l| Logits::Last(&mut l[..n * v]));
        let arch = model.arch();
        let r = catch_unwind(AssertUnwindSafe(|| {
            arch.forward(&mut ctx, Batch { tokens: &all, segs: &segs, states: &mut states, logits: out })
        }));
        drop(states);
        ctx.exec.lin.set_deltas(own);
        sessions[0].ctx = ctx;
        r.is_ok()
    }

    /// Overwrites the state with `state` (this model's [`Architecture::state_len`] values,
    /// in its layout; the blob format is [`load_state`](Self::load_state)). A wrong length is
    /// an invalid argument and changes nothing.
    ///
    /// [`Architecture::state_len`]: crate::models::Architecture::state_len
    pub fn set_state(&mut self, state: &[f32]) -> Result<()> {
        if state.len() != self.state.len() {
            return Err(Error::invalid(format!(
                "a state of {} values for a model whose state has {}",
                state.len(),
                self.state.len()
            )));
        }
        self.state.copy_from_slice(state);
        Ok(())
    }

    /// Size in bytes of a saved state.
    pub fn state_size(&self) -> usize {
        HEADER + 4 * self.state.len() + 8
    }

    /// Writes the state blob into `buf`, which must hold [`state_size`](Self::state_size) bytes.
    pub fn save_state(&self, buf: &mut [u8]) -> Result<usize> {
        let size = self.state_size();
        if buf.len() < size {
            return Err(Error::BufferTooSmall { needed: size, given: buf.len() });
        }
        buf[..8].copy_from_slice(MAGIC);
        buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&0u32.to_le_bytes());
        buf[16..24].copy_from_slice(&self.model.fingerprint().to_le_bytes());
        buf[24..32].copy_from_slice(&(self.state.len() as u64).to_le_bytes());
        for (dst, v) in buf[HEADER..].chunks_exact_mut(4).zip(&self.state) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        let end = HEADER + 4 * self.state.len();
        let sum = fnv1a(&buf[..end], FNV_OFFSET);
        buf[end..end + 8].copy_from_slice(&sum.to_le_bytes());
        Ok(size)
    }

    /// The state blob as a new vector.
    pub fn state_to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.state_size()];
        // Cannot fail: the buffer has exactly the needed size.
        let _ = self.save_state(&mut v);
        v
    }

    /// Restores a blob written by [`save_state`](Self::save_state) for a model of the same
    /// shape. Any mismatch or corruption is a format error and leaves the session unchanged.
    pub fn load_state(&mut self, buf: &[u8]) -> Result<()> {
        let fail = |m: String| Err(Error::format(format!("state blob: {m}")));
        if buf.len() < HEADER + 8 {
            return fail(format!("{} bytes is too short for a state (header alone is {})", buf.len(), HEADER + 8));
        }
        if &buf[..8] != MAGIC {
            return fail("bad magic: not a libsutra state".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or_default());
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return fail(format!("format version {version}, this build reads version {FORMAT_VERSION}"));
        }
        let fp = u64_at(16);
        if fp != self.model.fingerprint() {
            return fail(format!(
                "saved from a model of another shape (fingerprint {fp:#018x}, this model {:#018x})",
                self.model.fingerprint()
            ));
        }
        let n = u64_at(24);
        if n != self.state.len() as u64 {
            return fail(format!("holds {n} values, this model's state has {}", self.state.len()));
        }
        let end = HEADER + 4 * self.state.len();
        if buf.len() != end + 8 {
            return fail(format!("{} bytes, expected {} (truncated or padded)", buf.len(), end + 8));
        }
        let sum = u64_at(end);
        if sum != fnv1a(&buf[..end], FNV_OFFSET) {
            return fail("checksum mismatch: the blob is corrupted".into());
        }
        // Checked after the checksum, so that a corrupted blob says so.
        let reserved = u32_at(12);
        if reserved != 0 {
            return fail(format!("reserved header bytes 12..16 hold {reserved:#x}, not 0"));
        }
        for (v, src) in self.state.iter_mut().zip(buf[HEADER..end].chunks_exact(4)) {
            *v = f32::from_le_bytes(src.try_into().unwrap_or_default());
        }
        Ok(())
    }
}

/// One forward pass of one sequence's `tokens`.
fn forward_one(model: &Model, ctx: &mut Context, state: &mut [f32], tokens: &[u32], logits: Logits<'_>) {
    let segs = [Seg { start: 0, len: tokens.len() }];
    let mut states = [state];
    model.arch().forward(ctx, Batch { tokens, segs: &segs, states: &mut states, logits });
}
