//! Numeric kernels, kept apart from the layers' math so they can be optimised alone.
//!
//! - [`direct`]: the direct convolution (short patches, wide images);
//! - [`gemm`]: the matrix product (a safe wrapper over the `gemm` crate, which picks
//!   AVX2/AVX-512/NEON kernels at run time);
//! - [`im2col`]: lowering a padded convolution to a matrix product and back;
//! - [`reduce`]: deterministic, vectorised sums;
//! - [`relu_pool`]: the fused ReLU + 2×2 max-pooling epilogue of a convolution;
//! - [`winograd`]: Winograd's F(2×2, 3×3) for 3×3 convolutions with many channels;
//! - [`reference`](mod@reference): plain loops straight from the formulas, the ground truth the fast
//!   kernels are tested against.

pub mod direct;
pub mod gemm;
pub mod im2col;
pub mod reduce;
pub mod reference;
pub mod relu_pool;
pub mod winograd;
