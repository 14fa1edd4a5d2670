//! AdamW with the semantics of `torch.optim.AdamW` (I. Loshchilov and F. Hutter, "Decoupled
//! Weight Decay Regularization", ICLR 2019): bias-corrected moments, decay applied to the
//! parameter itself, and eps added after the bias correction of √v.

/// The optimizer's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f32,
    /// β1, β2.
    pub beta1: f32,
    /// See `beta1`.
    pub beta2: f32,
    /// ε, added to √v̂.
    pub eps: f32,
    /// Decoupled weight decay (torch's default is 0.01; LoRA usually trains with 0).
    pub weight_decay: f32,
}

/// One tensor's moments.
#[derive(Debug, Clone, Default)]
pub struct Moments {
    /// First moment m.
    pub m: Vec<f32>,
    /// Second moment v.
    pub v: Vec<f32>,
}

/// One AdamW step `t` (1-based) of parameter `p` with gradient `k·g` (`k`: the clipping
/// factor, 1 without clipping), as torch computes it:
/// `p ← p·(1 − lr·wd)`; `m ← β1 m + (1−β1) g`; `v ← β2 v + (1−β2) g²`;
/// `p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + eps)`. Moments start at zero.
pub fn step(h: &AdamWParams, t: u64, p: &mut [f32], g: &[f32], k: f32, mo: &mut Moments) {
    if mo.m.len() != p.len() {
        mo.m = vec![0.0; p.len()];
        mo.v = vec![0.0; p.len()];
    }
    let t = t.max(1) as i32;
    let bc1 = 1.0 - (h.beta1 as f64).powi(t);
    let bc2 = 1.0 - (h.beta2 as f64).powi(t);
    let step_size = (h.lr as f64 / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    for i in 0..p.len() {
        let g = k * g[i];
        p[i] *= decay;
        mo.m[i] = h.beta1 * mo.m[i] + (1.0 - h.beta1) * g;
        mo.v[i] = h.beta2 * mo.v[i] + (1.0 - h.beta2) * g * g;
        let denom = mo.v[i].sqrt() / bc2_sqrt + h.eps;
        p[i] -= step_size * mo.m[i] / denom;
    }
}

/// The factor `max_norm / (‖g‖ + 1e-6)`, at most 1, that `torch.nn.utils.clip_grad_norm_`
/// scales every gradient by, ‖g‖ being the L2 norm over all of `grads`; 1 when `max_norm`
/// is 0 (no clipping).
pub fn clip_factor<'a>(grads: impl IntoIterator<Item = &'a [f32]>, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    let sq: f64 = grads.into_iter().flat_map(|g| g.iter()).map(|&x| (x as f64) * (x as f64)).sum();
    let norm = sq.sqrt() as f32;
    (max_norm / (norm + 1e-6)).min(1.0)
}
