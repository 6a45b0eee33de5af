//! # scratchnet
//!
//! A convolutional neural network written from scratch: every layer's forward and
//! backward pass is written by hand next to its math, checked against numerical
//! gradients ([`gradcheck`]), and lowered to fast matrix products ([`kernels`]).
//!
//! Data layout is NCHW: a batch of images has shape `(n_b, channels, rows, cols)`.
//! Convolution weights have shape `(n_o, n_i, h, h)` and biases `(1, n_o)`.
//!
//! ```
//! use scratchnet::layers::{ConvLayer, CrossEntropyLayer, FlattenLayer, FullLayer, MaxPoolLayer, ReluLayer, SoftMaxLayer};
//! use scratchnet::ndarray::{Array2, Array4};
//! use scratchnet::rand::SeedableRng;
//! use scratchnet::{Layer, Sequential};
//!
//! let mut rng = scratchnet::rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let layers: Vec<Box<dyn Layer<f32>>> = vec![
//!     Box::new(ConvLayer::new(3, 4, 3, &mut rng)),
//!     Box::new(ReluLayer::new()),
//!     Box::new(MaxPoolLayer::new(2)),
//!     Box::new(FlattenLayer::new()),
//!     Box::new(FullLayer::new(4 * 4 * 4, 2, &mut rng)),
//!     Box::new(SoftMaxLayer::new()),
//! ];
//! let mut model = Sequential::new(layers, CrossEntropyLayer::new());
//!
//! // Two 8×8 RGB images: one dark, one bright; one-hot targets.
//! let mut x = Array4::<f32>::from_elem((2, 3, 8, 8), -0.5);
//! x.slice_mut(scratchnet::ndarray::s![1, .., .., ..]).fill(0.5);
//! let y = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, 0.0, 1.0]).unwrap();
//!
//! let losses = model.fit(x.view().into_dyn(), y.view(), 30, 0.1, 2, &mut rng);
//! assert!(losses[29] < losses[0]);
//! assert_eq!(model.predict(x.view().into_dyn()), vec![0, 1]);
//! ```
#![deny(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod float;
pub mod gradcheck;
pub mod init;
pub mod kernels;
pub mod layer;
pub mod layers;
pub mod models;
pub mod sequential;

pub use error::ShapeError;
pub use float::Float;
pub use layer::{Layer, Param};
pub use sequential::{Evaluation, Sequential};

/// Makes glibc's allocator reuse the large per-batch arrays instead of mapping fresh,
/// kernel-zeroed pages for each one (a fifth of a training step otherwise). Call it once
/// at program start, before other threads exist; a no-op on other platforms.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; documented to be called before
    // other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The `ndarray` version this crate's API is written against.
pub use ndarray;
/// The `rand` version this crate's API is written against.
pub use rand;
/// The seedable generator used by the examples and the command line (portable, reproducible).
pub use rand_chacha;
pub use sequential::{one_hot, select_examples};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
