//! The floating-point types the layers are generic over: `f32` and `f64`.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` and `f64` only (sealed),
/// because the matrix-product kernels exist for those two.
pub trait Float:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
    + private::Sealed
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Converts from `f64`, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` (exact).
    fn as_f64(self) -> f64;
    /// The same slice as `f32` when `Self` is `f32` (for kernels with `f32`-only SIMD code).
    fn as_f32_slice(x: &[Self]) -> Option<&[f32]>;
    /// The same slice as `f32` when `Self` is `f32`, mutable.
    fn as_f32_slice_mut(x: &mut [Self]) -> Option<&mut [f32]>;
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn as_f32_slice(x: &[Self]) -> Option<&[f32]> {
        Some(x)
    }
    fn as_f32_slice_mut(x: &mut [Self]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn as_f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_slice_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}
