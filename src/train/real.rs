//! [`Real`]: the float type the training kernels are generic over.
//!
//! The engine trains in f32; the tests instantiate every kernel in f64 to check its backward
//! against central finite differences, where f64 rounding (≈1e-16) leaves the difference
//! quotient good to about 1e-9.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real number type: `f32` (training) or `f64` (finite-difference tests).
///
/// Only what the kernels use: field arithmetic, conversions, and the handful of elementary
/// functions of the forward passes (each with the semantics of `std`'s method of that name).
pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Nearest value to an f64 (a constant, a test input).
    fn from_f64(x: f64) -> Self;
    /// Nearest value to an f32 (a weight read from a matrix).
    fn from_f32(x: f32) -> Self;
    /// Widened (or identical) f64.
    fn to_f64(self) -> f64;
    /// Rounded (or identical) f32.
    fn to_f32(self) -> f32;
    /// eˣ.
    fn exp(self) -> Self;
    /// ln x.
    fn ln(self) -> Self;
    /// ln(1 + x), accurate near 0.
    fn ln_1p(self) -> Self;
    /// √x.
    fn sqrt(self) -> Self;
    /// tanh x.
    fn tanh(self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// The larger of two (NaN-ignoring, as `f32::max`).
    fn max(self, other: Self) -> Self;
    /// eˣ of every element, in place: f64 by [`exp`](Real::exp); f32 by the engine's
    /// [`crate::kernels::exp_fast`], which the compiler vectorizes.
    fn exp_slice(xs: &mut [Self]);
}

macro_rules! impl_real {
    ($t:ty, $exp:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn exp_slice(xs: &mut [Self]) {
                xs.iter_mut().for_each(|x| *x = $exp(*x));
            }
        }
    };
}

impl_real!(f32, crate::kernels::exp_fast);
impl_real!(f64, f64::exp);

/// `Σ a_i·b_i` over two equal-length slices, in 8 interleaved partial sums (so that the
/// compiler can keep them in vector registers) added pairwise at the end.
#[inline]
pub fn dot<R: Real>(a: &[R], b: &[R]) -> R {
    const L: usize = 8;
    debug_assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: R = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
    let mut acc = [R::ZERO; L];
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += s·x` (an axpy) over two equal-length slices.
#[inline]
pub fn axpy<R: Real>(y: &mut [R], s: R, x: &[R]) {
    debug_assert_eq!(y.len(), x.len());
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += s * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32's exp_slice against the f64 exponential over the range the scans use, and the
    /// lane-split dot against a plain sum.
    #[test]
    fn exp_slice_and_dot() {
        let xs: Vec<f32> = (0..127_000).map(|i| -87.0 + i as f32 * 0.001_37).collect();
        let mut e = xs.clone();
        f32::exp_slice(&mut e);
        let worst = xs.iter().zip(&e).map(|(&x, &g)| ((g as f64) - (x as f64).exp()).abs() / (x as f64).exp());
        let worst = worst.fold(0f64, f64::max);
        assert!(worst < 3e-7, "exp_slice relative error {worst}");
        for n in [0usize, 1, 7, 8, 9, 33] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-12, "dot over {n}");
        }
    }
}
