//! The [`Layer`] trait every layer implements.

use crate::{Float, ShapeError};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;
use std::any::Any;

/// One trainable parameter of a layer with its gradient, as seen by optimisers,
/// gradient checking and checkpoints.
pub struct Param<'a, F> {
    /// Conventional name: `"weight"` or `"bias"` (as in PyTorch's state dict).
    pub name: &'static str,
    /// The parameter itself, writable.
    pub value: ArrayViewMutD<'a, F>,
    /// dℓ/d(value) from the last `backward`; same shape as `value`.
    pub grad: ArrayViewD<'a, F>,
}

/// A layer of a feed-forward network: `y = f(x; θ)` with hand-written gradients.
///
/// The calling protocol is `forward`, then `backward` with dℓ/dy of the same shape as
/// the output, then optionally `update_param`. `forward` keeps what `backward` needs.
pub trait Layer<F: Float>: Send {
    /// Computes `y = f(x)` and remembers what the backward pass needs.
    ///
    /// # Panics
    /// If `x` has a shape the layer cannot take (see [`Layer::output_shape`]).
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F>;

    /// Given `y_grad` = dℓ/dy, stores dℓ/dθ for every parameter θ and returns dℓ/dx.
    /// Each call recomputes the parameter gradients: nothing accumulates across calls.
    ///
    /// # Panics
    /// If called before `forward`, or if `y_grad` does not have the shape of the last output.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F>;

    /// Like [`Layer::backward`] for a layer whose input gradient nobody needs (the first
    /// layer of a network): stores the parameter gradients and may skip computing dℓ/dx.
    fn backward_params(&mut self, y_grad: ArrayViewD<'_, F>) {
        self.backward(y_grad);
    }

    /// Plain SGD, `θ ← θ − lr · dℓ/dθ`, for every parameter; a no-op for layers without any.
    fn update_param(&mut self, lr: F) {
        for mut p in self.params_mut() {
            p.value.scaled_add(-lr, &p.grad);
        }
    }

    /// The parameters with their gradients, in a fixed order (weight before bias).
    fn params_mut(&mut self) -> Vec<Param<'_, F>> {
        Vec::new()
    }

    /// The output shape for an input of shape `input`, or why that input does not fit.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError>;

    /// A short description, for example `ConvLayer(3→16, 3×3)`.
    fn name(&self) -> String;

    /// Number of trainable scalars.
    fn num_params(&self) -> usize {
        0
    }

    /// The layer as [`Any`], so that [`crate::Sequential`] can recognise the built-in layers
    /// and run a fused kernel for a run of them (convolution → ReLU → 2×2 pooling). `None`,
    /// the default, means "never fuse this layer".
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        None
    }
}

/// The `[weight, bias]` parameter list of a layer with those two parameters.
pub(crate) fn weight_and_bias<'a, F>(
    weight: (ArrayViewMutD<'a, F>, ArrayViewD<'a, F>),
    bias: (ArrayViewMutD<'a, F>, ArrayViewD<'a, F>),
) -> Vec<Param<'a, F>> {
    vec![
        Param {
            name: "weight",
            value: weight.0,
            grad: weight.1,
        },
        Param {
            name: "bias",
            value: bias.0,
            grad: bias.1,
        },
    ]
}

/// Panics with the layer's own message if `input` does not fit it; returns the output shape.
pub(crate) fn expect_shape<F: Float, L: Layer<F> + ?Sized>(
    layer: &L,
    input: &[usize],
) -> Vec<usize> {
    layer.output_shape(input).unwrap_or_else(|e| panic!("{e}"))
}

/// Panics unless `y_grad` has the shape of the last output.
pub(crate) fn expect_grad_shape(layer: &str, expected: &[usize], actual: &[usize]) {
    if expected != actual {
        panic!(
            "{layer}: backward expected y_grad of shape {expected:?} (the last output), got {actual:?}"
        );
    }
}

/// Panics with a clear message when backward runs before forward.
pub(crate) fn missing_forward(layer: &str) -> ! {
    panic!("{layer}: backward called before forward")
}

/// A zero-filled array of `shape`, filled by all threads: a layer's output is written
/// right after, in parallel, and a serial fill would hold up the other threads.
pub(crate) fn zeros_par<F: Float>(shape: &[usize]) -> ArrayD<F> {
    let len = shape.iter().product();
    let mut data = Vec::with_capacity(len);
    data.par_extend(rayon::iter::repeat_n(F::zero(), len));
    ArrayD::from_shape_vec(shape, data).expect("length is the product of the shape")
}
