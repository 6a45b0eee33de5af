//! Flattening: `(n_b, c, r, q) → (n_b, c·r·q)` in row-major order; the backward pass
//! reshapes the gradient back. Outputs never alias inputs (the `_owned` passes reshape the
//! array they are given in place instead).
//!
//! ```
//! use scratchnet::layers::FlattenLayer;
//! use scratchnet::{Layer, ndarray::Array4};
//!
//! let mut flat = FlattenLayer::<f32>::new();
//! let x = Array4::from_shape_fn((2, 2, 1, 2), |(n, c, _, q)| (n * 4 + c * 2 + q) as f32);
//! let y = flat.forward(x.view().into_dyn());
//! assert_eq!(y.shape(), &[2, 4]);
//! assert_eq!(y.slice(scratchnet::ndarray::s![1, ..]).to_vec(), vec![4.0, 5.0, 6.0, 7.0]);
//! assert_eq!(flat.backward(y.view()).shape(), &[2, 2, 1, 2]);
//! ```

use crate::layer::{expect_grad_shape, expect_shape, missing_forward};
use crate::{Float, Layer, ShapeError};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::any::Any;
use std::marker::PhantomData;

/// Flattens every dimension after the batch dimension.
#[derive(Default)]
pub struct FlattenLayer<F: Float> {
    input_shape: Option<Vec<usize>>,
    _float: PhantomData<F>,
}

impl<F: Float> FlattenLayer<F> {
    /// A flattening layer.
    pub fn new() -> Self {
        Self {
            input_shape: None,
            _float: PhantomData,
        }
    }

    /// [`Layer::forward`] on an array the caller gives up: a row-major `x` is reshaped in
    /// place, without copying ([`crate::Sequential`] passes its layers' outputs this way).
    pub fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        let out = expect_shape(self, x.shape());
        self.input_shape = Some(x.shape().to_vec());
        reshape_owned(x, &out)
    }

    /// [`Layer::backward`] on an array the caller gives up, reshaped in place if row-major.
    pub fn backward_owned(&mut self, y_grad: ArrayD<F>) -> ArrayD<F> {
        let shape = self.expected_grad(y_grad.shape()).to_vec();
        reshape_owned(y_grad, &shape)
    }

    /// The input shape of the last forward pass, after checking `y_grad` against it.
    fn expected_grad(&self, y_grad: &[usize]) -> &[usize] {
        let name = self.name();
        let Some(shape) = &self.input_shape else {
            missing_forward(&name)
        };
        expect_grad_shape(&name, &[shape[0], shape[1..].iter().product()], y_grad);
        shape
    }
}

/// `a` with shape `shape` (same length), moved if row-major, else copied.
fn reshape_owned<F: Float>(a: ArrayD<F>, shape: &[usize]) -> ArrayD<F> {
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    a.into_shape_with_order(IxDyn(shape))
        .expect("row-major, same length")
}

impl<F: Float> Layer<F> for FlattenLayer<F> {
    /// # Shapes
    /// `x: (n_b, d_1, …, d_m)` → `y: (n_b, d_1·…·d_m)`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let out = expect_shape(self, x.shape());
        self.input_shape = Some(x.shape().to_vec());
        // `to_shape` copies unless the view is already row-major; `into_owned` makes sure we own it.
        x.to_shape(IxDyn(&out))
            .expect("row-major reshape")
            .into_owned()
    }

    /// # Shapes
    /// `y_grad: (n_b, d_1·…·d_m)` → `x_grad: (n_b, d_1, …, d_m)`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let shape = self.expected_grad(y_grad.shape());
        y_grad
            .to_shape(IxDyn(shape))
            .expect("row-major reshape")
            .into_owned()
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(self)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        match input {
            [n_b, rest @ ..] if !rest.is_empty() => Ok(vec![*n_b, rest.iter().product()]),
            _ => Err(ShapeError::new(
                self.name(),
                "(n_b, d_1, …) with at least 2 dimensions",
                input,
            )),
        }
    }

    fn name(&self) -> String {
        "FlattenLayer".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    /// The owned versions give what the view versions give, also for an array that is not
    /// row-major (a permuted one, which must be copied in row-major order).
    #[test]
    fn owned_passes_match_the_view_passes() {
        let x = Array4::from_shape_fn((3, 2, 4, 5), |(n, c, r, q)| {
            (n * 1000 + c * 100 + r * 10 + q) as f32
        });
        let permuted = x.clone().permuted_axes([0, 1, 3, 2]).into_dyn();
        for x in [x.into_dyn(), permuted] {
            let mut flat = FlattenLayer::new();
            let y = flat.forward(x.view());
            let y_owned = flat.forward_owned(x.clone());
            assert_eq!(y, y_owned);
            let ptr = y_owned.as_ptr();
            let back = flat.backward_owned(y_owned);
            assert_eq!(back, x);
            assert_eq!(back.as_ptr(), ptr, "a row-major gradient is not copied");
        }
    }

    #[test]
    fn round_trip_restores_the_input_shape_and_values() {
        let x = Array4::from_shape_fn((3, 2, 4, 5), |(n, c, r, q)| {
            (n * 1000 + c * 100 + r * 10 + q) as f64
        });
        let mut flat = FlattenLayer::new();
        let y = flat.forward(x.view().into_dyn());
        assert_eq!(y.shape(), &[3, 40]);
        assert_eq!(y[[1, 21]], 1000.0 + 100.0 + 0.0 + 1.0); // c=1, r=0, q=1 → 20 + 1
        assert_eq!(flat.backward(y.view()), x.into_dyn());
    }

    #[test]
    fn non_standard_layout_flattens_in_logical_order() {
        let x = Array4::from_shape_fn((2, 3, 1, 1), |(n, c, _, _)| (n * 3 + c) as f32);
        let xt = x.view().permuted_axes([0, 1, 3, 2]); // same logical values, other strides
        let y = FlattenLayer::new().forward(xt.into_dyn());
        assert_eq!(
            y.into_raw_vec_and_offset().0,
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    #[should_panic(
        expected = "FlattenLayer: expected an input of shape (n_b, d_1, …) with at least 2 dimensions, got [4]"
    )]
    fn one_dimensional_input_panics() {
        FlattenLayer::<f32>::new().forward(ArrayD::zeros(vec![4]).view());
    }
}
