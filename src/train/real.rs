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
}

macro_rules! impl_real {
    ($t:ty) => {
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
        }
    };
}

impl_real!(f32);
impl_real!(f64);

/// `Σ a_i·b_i` over two equal-length slices.
#[inline]
pub fn dot<R: Real>(a: &[R], b: &[R]) -> R {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// `y += s·x` (an axpy) over two equal-length slices.
#[inline]
pub fn axpy<R: Real>(y: &mut [R], s: R, x: &[R]) {
    debug_assert_eq!(y.len(), x.len());
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += s * x);
}
