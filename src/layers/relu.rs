//! Rectified linear unit: `y = max(x, 0)` elementwise, any shape.
//!
//! Gradient: `dx = dy ⊙ [x > 0]` (0 at `x = 0`).
//!
//! ```
//! use scratchnet::layers::ReluLayer;
//! use scratchnet::{Layer, ndarray::array};
//!
//! let mut relu = ReluLayer::<f32>::new();
//! let y = relu.forward(array![[-1.0, 0.0, 2.5]].into_dyn().view());
//! assert_eq!(y, array![[0.0, 0.0, 2.5]].into_dyn());
//! let dx = relu.backward(array![[7.0, 7.0, 7.0]].into_dyn().view());
//! assert_eq!(dx, array![[0.0, 0.0, 7.0]].into_dyn());
//! ```

use crate::layer::{expect_grad_shape, missing_forward};
use crate::{Float, Layer, ShapeError};
use ndarray::{ArrayD, ArrayViewD, Zip};

/// Elementwise ReLU.
#[derive(Default)]
pub struct ReluLayer<F: Float> {
    input: Option<ArrayD<F>>,
}

impl<F: Float> ReluLayer<F> {
    /// A ReLU layer.
    pub fn new() -> Self {
        Self { input: None }
    }
}

impl<F: Float> Layer<F> for ReluLayer<F> {
    /// # Shapes
    /// Any shape; `y` has the shape of `x`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let y = x.mapv(|v| if v > F::zero() { v } else { F::zero() });
        self.input = Some(x.into_owned());
        y
    }

    /// # Shapes
    /// `y_grad` has the shape of the last input; so does `x_grad`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let Some(x) = &self.input else {
            missing_forward("ReluLayer")
        };
        expect_grad_shape("ReluLayer", x.shape(), y_grad.shape());
        Zip::from(x)
            .and(&y_grad)
            .map_collect(|&x, &g| if x > F::zero() { g } else { F::zero() })
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        Ok(input.to_vec())
    }

    fn name(&self) -> String {
        "ReluLayer".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;
    use ndarray::Array;

    #[test]
    fn gradients_match_numerical_differences_for_several_ranks() {
        // values kept away from 0, where ReLU has no derivative
        let away = |i: usize| {
            if i % 2 == 0 {
                0.3 + (i % 7) as f64 * 0.1
            } else {
                -0.4 - (i % 5) as f64 * 0.1
            }
        };
        for shape in [vec![5], vec![3, 4], vec![2, 3, 4, 5]] {
            let n: usize = shape.iter().product();
            let x = Array::from_shape_vec(shape.clone(), (0..n).map(away).collect()).unwrap();
            let report = GradCheck::default().check_layer(&mut ReluLayer::new(), x.view(), 1);
            assert!(report.passed(), "{report}");
        }
    }

    #[test]
    #[should_panic(expected = "ReluLayer: backward called before forward")]
    fn backward_before_forward_panics() {
        ReluLayer::<f64>::new().backward(ArrayD::zeros(vec![2]).view());
    }
}
