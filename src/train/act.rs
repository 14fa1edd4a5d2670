//! Elementwise functions and their derivatives: the activations of RWKV-7 and Mamba
//! ([`Act`]), biased activations (`act(x + bias)`), gates (`x ⊙ act(z)`), linear
//! interpolation and the token shift.

use super::real::Real;

/// RWKV-7's decay scale, e^{-1/2} as the reference writes it (`w = exp(-0.606531·σ(z))`).
pub const DECAY_SCALE: f64 = 0.606531;

/// Logistic sigmoid 1/(1 + e^{−x}).
#[inline]
pub fn sigmoid<R: Real>(x: R) -> R {
    R::ONE / (R::ONE + (-x).exp())
}

/// SiLU x·σ(x).
#[inline]
pub fn silu<R: Real>(x: R) -> R {
    x * sigmoid(x)
}

/// d silu/dx = σ(x)·(1 + x·(1 − σ(x))).
#[inline]
pub fn silu_grad<R: Real>(x: R) -> R {
    let s = sigmoid(x);
    s * (R::ONE + x * (R::ONE - s))
}

/// softplus ln(1 + eˣ), with PyTorch's threshold: x itself above 20
/// (as [`crate::kernels::softplus`]).
#[inline]
pub fn softplus<R: Real>(x: R) -> R {
    if x > R::from_f64(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// An elementwise activation, with its value and derivative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// x.
    Identity,
    /// σ(x); σ' = σ(1 − σ).
    Sigmoid,
    /// tanh x; tanh' = 1 − tanh².
    Tanh,
    /// x·σ(x).
    Silu,
    /// ln(1 + eˣ), x above 20 (PyTorch's threshold); derivative σ(x), 1 above 20.
    Softplus,
    /// max(x, 0)² (RWKV channel mix); derivative 2·max(x, 0).
    ReluSq,
    /// RWKV-7's decay exp(−0.606531·σ(x)) ∈ (0.545, 1); derivative −0.606531·w·σ(1 − σ).
    Rwkv7Decay,
    /// RWKV-6's decay exp(−eˣ) ∈ (0, 1); derivative −eˣ·exp(−eˣ).
    Rwkv6Decay,
}

impl Act {
    /// f(x).
    #[inline]
    pub fn apply<R: Real>(self, x: R) -> R {
        match self {
            Act::Identity => x,
            Act::Sigmoid => sigmoid(x),
            Act::Tanh => x.tanh(),
            Act::Silu => silu(x),
            Act::Softplus => softplus(x),
            Act::ReluSq => {
                let r = x.max(R::ZERO);
                r * r
            }
            Act::Rwkv7Decay => (-R::from_f64(DECAY_SCALE) * sigmoid(x)).exp(),
            Act::Rwkv6Decay => (-x.exp()).exp(),
        }
    }

    /// f'(x).
    #[inline]
    pub fn grad<R: Real>(self, x: R) -> R {
        match self {
            Act::Identity => R::ONE,
            Act::Sigmoid => {
                let s = sigmoid(x);
                s * (R::ONE - s)
            }
            Act::Tanh => {
                let t = x.tanh();
                R::ONE - t * t
            }
            Act::Silu => silu_grad(x),
            Act::Softplus => {
                if x > R::from_f64(20.0) {
                    R::ONE
                } else {
                    sigmoid(x)
                }
            }
            Act::ReluSq => R::from_f64(2.0) * x.max(R::ZERO),
            Act::Rwkv7Decay => {
                let s = sigmoid(x);
                let k = R::from_f64(DECAY_SCALE);
                -k * (-k * s).exp() * s * (R::ONE - s)
            }
            Act::Rwkv6Decay => {
                let e = x.exp();
                -e * (-e).exp()
            }
        }
    }
}

/// `out = f(x)` elementwise (overwrites `out`; any shape).
pub fn act_fwd<R: Real>(f: Act, x: &[R], out: &mut [R]) {
    assert_eq!(x.len(), out.len(), "act_fwd: lengths");
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = f.apply(v));
}

/// Backward of [`act_fwd`] (**accumulates**): `dx += dout ⊙ f'(x)`, from the forward's input.
pub fn act_bwd<R: Real>(f: Act, x: &[R], dout: &[R], dx: &mut [R]) {
    assert!(x.len() == dout.len() && dx.len() == x.len(), "act_bwd: lengths");
    for i in 0..x.len() {
        dx[i] += dout[i] * f.grad(x[i]);
    }
}

/// `out = f(x + bias)` with `x`, `out` `[T, n]` and `bias` `[n]` (overwrites `out`): e.g.
/// Mamba's `dt = softplus(dt_proj(x) + dt_bias)`, RWKV-7's `w = decay(w0 + lora)` and
/// `a = σ(a0 + lora)`, RWKV-6's `w = exp(−exp(time_decay + lora))`.
pub fn bias_act_fwd<R: Real>(f: Act, x: &[R], bias: &[R], out: &mut [R]) {
    let n = bias.len();
    assert!(x.len().is_multiple_of(n) && out.len() == x.len(), "bias_act_fwd: shapes");
    for (o, x) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        for ((o, &x), &b) in o.iter_mut().zip(x).zip(bias) {
            *o = f.apply(x + b);
        }
    }
}

/// Backward of [`bias_act_fwd`] (**accumulates**): `dx += dout ⊙ f'(x + bias)` (`[T, n]`),
/// `dbias += Σ_t` of the same (`[n]`) when wanted.
pub fn bias_act_bwd<R: Real>(f: Act, x: &[R], bias: &[R], dout: &[R], dx: &mut [R], mut dbias: Option<&mut [R]>) {
    let n = bias.len();
    assert!(x.len().is_multiple_of(n) && dout.len() == x.len() && dx.len() == x.len(), "bias_act_bwd: shapes");
    for (dx, (x, d)) in dx.chunks_exact_mut(n).zip(x.chunks_exact(n).zip(dout.chunks_exact(n))) {
        for j in 0..n {
            let g = d[j] * f.grad(x[j] + bias[j]);
            dx[j] += g;
            if let Some(db) = dbias.as_deref_mut() {
                db[j] += g;
            }
        }
    }
}

/// A gate, `out = x ⊙ f(z)` elementwise (overwrites `out`): Mamba-1's `y ⊙ silu(z)`, and
/// `y ⊙ g` with [`Act::Identity`].
pub fn gate_fwd<R: Real>(f: Act, x: &[R], z: &[R], out: &mut [R]) {
    assert!(x.len() == z.len() && out.len() == x.len(), "gate_fwd: lengths");
    for i in 0..x.len() {
        out[i] = x[i] * f.apply(z[i]);
    }
}

/// Backward of [`gate_fwd`] (**accumulates**): `dx += dout ⊙ f(z)`, `dz += dout ⊙ x ⊙ f'(z)`.
pub fn gate_bwd<R: Real>(f: Act, x: &[R], z: &[R], dout: &[R], dx: &mut [R], dz: &mut [R]) {
    assert!(x.len() == z.len() && dout.len() == x.len() && dx.len() == x.len() && dz.len() == x.len(), "gate_bwd");
    for i in 0..x.len() {
        dx[i] += dout[i] * f.apply(z[i]);
        dz[i] += dout[i] * x[i] * f.grad(z[i]);
    }
}

/// Linear interpolation, `out = a + (b − a) ⊙ m`, all of one length (overwrites `out`):
/// e.g. RWKV-7's value residual `v + (v_first − v) ⊙ gate`.
pub fn lerp_fwd<R: Real>(a: &[R], b: &[R], m: &[R], out: &mut [R]) {
    assert!(a.len() == b.len() && m.len() == a.len() && out.len() == a.len(), "lerp_fwd: lengths");
    for i in 0..a.len() {
        out[i] = a[i] + (b[i] - a[i]) * m[i];
    }
}

/// Backward of [`lerp_fwd`] (**accumulates**): `da += dout ⊙ (1 − m)`, `db += dout ⊙ m`,
/// `dm += dout ⊙ (b − a)`.
pub fn lerp_bwd<R: Real>(a: &[R], b: &[R], m: &[R], dout: &[R], da: &mut [R], db: &mut [R], dm: &mut [R]) {
    let n = a.len();
    assert!(b.len() == n && m.len() == n && dout.len() == n && da.len() == n && db.len() == n && dm.len() == n);
    for i in 0..n {
        da[i] += dout[i] * (R::ONE - m[i]);
        db[i] += dout[i] * m[i];
        dm[i] += dout[i] * (b[i] - a[i]);
    }
}

/// Token shift over T rows: `out[t] = x[t] + (prev[t] − x[t]) ⊙ mix` with `prev[0] = prev0`
/// (the shift state: the last row of the previous chunk, zero at a sequence start) and
/// `prev[t] = x[t−1]`. `x`, `out` `[T, C]`; `prev0`, `mix` `[C]`. Overwrites `out`. Row by
/// row this is [`crate::kernels::token_shift`]; the new shift state is `x[T−1]`.
pub fn token_shift_fwd<R: Real>(x: &[R], prev0: &[R], mix: &[R], out: &mut [R]) {
    let c = mix.len();
    assert!(prev0.len() == c && x.len().is_multiple_of(c) && out.len() == x.len(), "token_shift_fwd: shapes");
    for (t, o) in out.chunks_exact_mut(c).enumerate() {
        let prev = if t == 0 { prev0 } else { &x[(t - 1) * c..t * c] };
        let cur = &x[t * c..(t + 1) * c];
        for j in 0..c {
            o[j] = cur[j] + (prev[j] - cur[j]) * mix[j];
        }
    }
}

/// Backward of [`token_shift_fwd`] (**accumulates**): `dx` `[T, C]` gets both paths (as the
/// current row, `dout[t] ⊙ (1 − mix)`, and as the previous row of t+1, `dout[t+1] ⊙ mix`);
/// `dprev0` `[C]` gets `dout[0] ⊙ mix` (the gradient of the incoming shift state: add
/// dL/d(x[T−1]) of the next chunk's state into `dx` yourself when chaining chunks);
/// `dmix` `[C]` gets `Σ_t dout[t] ⊙ (prev[t] − x[t])`.
pub fn token_shift_bwd<R: Real>(
    x: &[R],
    prev0: &[R],
    mix: &[R],
    dout: &[R],
    dx: &mut [R],
    dprev0: Option<&mut [R]>,
    mut dmix: Option<&mut [R]>,
) {
    let c = mix.len();
    assert!(prev0.len() == c && x.len().is_multiple_of(c), "token_shift_bwd: shapes");
    assert!(dout.len() == x.len() && dx.len() == x.len(), "token_shift_bwd: shapes");
    for t in 0..x.len() / c {
        let (row, d) = (t * c, &dout[t * c..(t + 1) * c]);
        for j in 0..c {
            dx[row + j] += d[j] * (R::ONE - mix[j]);
        }
        if t > 0 {
            for j in 0..c {
                dx[row - c + j] += d[j] * mix[j];
            }
        }
        if let Some(dm) = dmix.as_deref_mut() {
            let prev = if t == 0 { prev0 } else { &x[row - c..row] };
            for j in 0..c {
                dm[j] += d[j] * (prev[j] - x[row + j]);
            }
        }
    }
    if let Some(dp) = dprev0 {
        for j in 0..c.min(x.len()) {
            dp[j] += dout[j] * mix[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;
    use crate::rng::Rng;
    use crate::train::testutil::*;

    const ALL: [Act; 8] = [
        Act::Identity,
        Act::Sigmoid,
        Act::Tanh,
        Act::Silu,
        Act::Softplus,
        Act::ReluSq,
        Act::Rwkv7Decay,
        Act::Rwkv6Decay,
    ];

    /// Every activation's derivative against central differences at 40 points in [−6, 6]
    /// plus points around softplus's threshold (19.5, 21) and ReLU² (away from its kink at
    /// 0, where the derivative is 0 from both sides anyway); the f32 values equal the
    /// inference ones (`kernels::sigmoid`, `silu`, `softplus`, `f32::tanh`, rwkv7's decay
    /// and rwkv6's decay formulas, replicated as they are inline there) to 2 ulp-ish (1e-6
    /// relative).
    #[test]
    fn activations() {
        let mut rng = Rng::new(6);
        let mut xs = rand_vec(&mut rng, 40, -6.0, 6.0);
        xs.extend([19.5, 21.0, -19.5, 0.3, -0.3]);
        for f in ALL {
            let g: Vec<f64> = xs.iter().map(|&x| f.grad(x)).collect();
            // L = Σ f(x_i), whose gradient is f'(x_i).
            check_grad(&format!("{f:?}"), &xs, &g, 1000, |x| x.iter().map(|&v| f.apply(v)).sum());
            for &x in &xs {
                let x32 = x as f32;
                let got: f32 = f.apply(x32);
                let want = match f {
                    Act::Identity => x32,
                    Act::Sigmoid => kernels::sigmoid(x32),
                    Act::Tanh => x32.tanh(),
                    Act::Silu => kernels::silu(x32),
                    Act::Softplus => kernels::softplus(x32),
                    Act::ReluSq => x32.max(0.0) * x32.max(0.0),
                    Act::Rwkv7Decay => (-0.606531f32 * kernels::sigmoid(x32)).exp(),
                    // rwkv6.rs step 5, with the decay bias already added.
                    Act::Rwkv6Decay => (-x32.exp()).exp(),
                };
                assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{f:?}({x}): {got} vs {want}");
            }
        }
    }

    /// Slice forms: bias_act (x and bias), gate (x and z), lerp (a, b, m) and token shift
    /// (x, prev0, mix) against central differences on every coordinate, T = 4, C = 5; the
    /// f32 token shift equals `kernels::token_shift` row by row.
    #[test]
    fn slice_ops() {
        let mut rng = Rng::new(7);
        let (t, c) = (4usize, 5usize);
        let x = rand_vec(&mut rng, t * c, -2.0, 2.0);
        let z = rand_vec(&mut rng, t * c, -2.0, 2.0);
        let bias = rand_vec(&mut rng, c, -1.0, 1.0);
        let cc = rand_vec(&mut rng, t * c, -1.0, 1.0);
        for f in [Act::Softplus, Act::Rwkv7Decay, Act::Rwkv6Decay, Act::Sigmoid, Act::Silu] {
            let l = |x: &[f64], b: &[f64]| {
                let mut o = vec![0.0; t * c];
                bias_act_fwd(f, x, b, &mut o);
                lin_loss(&cc, &o)
            };
            let (mut dx, mut db) = (off(t * c), off(c));
            bias_act_bwd(f, &x, &bias, &cc, &mut dx, Some(&mut db));
            let (dx, db) = (unoff(&dx), unoff(&db));
            check_grad(&format!("bias_act {f:?} dx"), &x, &dx, 1000, |x| l(x, &bias));
            check_grad(&format!("bias_act {f:?} db"), &bias, &db, 1000, |b| l(&x, b));
            let l = |x: &[f64], z: &[f64]| {
                let mut o = vec![0.0; t * c];
                gate_fwd(f, x, z, &mut o);
                lin_loss(&cc, &o)
            };
            let (mut dx, mut dz) = (off(t * c), off(t * c));
            gate_bwd(f, &x, &z, &cc, &mut dx, &mut dz);
            let (dx, dz) = (unoff(&dx), unoff(&dz));
            check_grad(&format!("gate {f:?} dx"), &x, &dx, 1000, |x| l(x, &z));
            check_grad(&format!("gate {f:?} dz"), &z, &dz, 1000, |z| l(&x, z));
        }
        let m = rand_vec(&mut rng, t * c, 0.0, 1.0);
        let l = |a: &[f64], b: &[f64], m: &[f64]| {
            let mut o = vec![0.0; t * c];
            lerp_fwd(a, b, m, &mut o);
            lin_loss(&cc, &o)
        };
        let (mut da, mut db, mut dm) = (off(t * c), off(t * c), off(t * c));
        lerp_bwd(&x, &z, &m, &cc, &mut da, &mut db, &mut dm);
        let (da, db, dm) = (unoff(&da), unoff(&db), unoff(&dm));
        check_grad("lerp da", &x, &da, 1000, |a| l(a, &z, &m));
        check_grad("lerp db", &z, &db, 1000, |b| l(&x, b, &m));
        check_grad("lerp dm", &m, &dm, 1000, |m| l(&x, &z, m));

        let prev0 = rand_vec(&mut rng, c, -1.0, 1.0);
        let mix = rand_vec(&mut rng, c, 0.0, 1.0);
        let l = |x: &[f64], p: &[f64], m: &[f64]| {
            let mut o = vec![0.0; t * c];
            token_shift_fwd(x, p, m, &mut o);
            lin_loss(&cc, &o)
        };
        let (mut dx, mut dp, mut dm) = (off(t * c), off(c), off(c));
        token_shift_bwd(&x, &prev0, &mix, &cc, &mut dx, Some(&mut dp), Some(&mut dm));
        let (dx, dp, dm) = (unoff(&dx), unoff(&dp), unoff(&dm));
        check_grad("shift dx", &x, &dx, 1000, |x| l(x, &prev0, &mix));
        check_grad("shift dprev0", &prev0, &dp, 1000, |p| l(&x, p, &mix));
        check_grad("shift dmix", &mix, &dm, 1000, |m| l(&x, &prev0, m));
        let (x32, p32, m32): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            x.iter().map(|&v| v as f32).collect(),
            prev0.iter().map(|&v| v as f32).collect(),
            mix.iter().map(|&v| v as f32).collect(),
        );
        let mut got = vec![0f32; t * c];
        token_shift_fwd(&x32, &p32, &m32, &mut got);
        let mut prev = p32.clone();
        for r in 0..t {
            let mut want = vec![0f32; c];
            kernels::token_shift(&x32[r * c..(r + 1) * c], &prev, &m32, &mut want);
            assert_eq!(&got[r * c..(r + 1) * c], &want[..], "token shift row {r}");
            prev.copy_from_slice(&x32[r * c..(r + 1) * c]);
        }
    }
}
