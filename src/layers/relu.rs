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

use crate::layer::{expect_grad_shape, missing_forward, zeros_par};
use crate::{Float, Layer, ShapeError};
use multiversion::multiversion;
use ndarray::{ArrayD, ArrayViewD};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 1 << 15;

/// Elementwise ReLU.
pub struct ReluLayer<F: Float> {
    /// From the last forward: the input shape and `[x > 0]` per element.
    mask: Option<(Vec<usize>, Vec<bool>)>,
    _float: std::marker::PhantomData<F>,
}

impl<F: Float> Default for ReluLayer<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> ReluLayer<F> {
    /// A ReLU layer.
    pub fn new() -> Self {
        Self {
            mask: None,
            _float: std::marker::PhantomData,
        }
    }
}

/// `y = max(x, 0)` and `m = [x > 0]`, elementwise.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn relu_forward<F: Float>(x: &[F], y: &mut [F], m: &mut [bool]) {
    for ((y, &x), m) in y.iter_mut().zip(x).zip(m) {
        *m = x > F::zero();
        // a select, not a branch: the sign pattern is data-dependent
        *y = if *m { x } else { F::zero() };
    }
}

/// `dx = dy ⊙ m`, elementwise.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn relu_backward<F: Float>(dy: &[F], m: &[bool], dx: &mut [F]) {
    for ((dx, &g), &m) in dx.iter_mut().zip(dy).zip(m) {
        *dx = if m { g } else { F::zero() };
    }
}

impl<F: Float> Layer<F> for ReluLayer<F> {
    /// # Shapes
    /// Any shape; `y` has the shape of `x`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let x = x.as_standard_layout();
        let mut y = zeros_par(x.shape());
        let mut mask = self.mask.take().map(|(_, m)| m).unwrap_or_default();
        mask.resize(x.len(), false);
        y.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(CHUNK)
            .zip(x.as_slice().expect("standard layout").par_chunks(CHUNK))
            .zip(mask.par_chunks_mut(CHUNK))
            .for_each(|((y, x), m)| relu_forward(x, y, m));
        self.mask = Some((x.shape().to_vec(), mask));
        y
    }

    /// # Shapes
    /// `y_grad` has the shape of the last input; so does `x_grad`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let Some((shape, mask)) = &self.mask else {
            missing_forward("ReluLayer")
        };
        expect_grad_shape("ReluLayer", shape, y_grad.shape());
        let dy = y_grad.as_standard_layout();
        let mut dx = zeros_par(shape);
        dx.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(CHUNK)
            .zip(dy.as_slice().expect("standard layout").par_chunks(CHUNK))
            .zip(mask.par_chunks(CHUNK))
            .for_each(|((dx, dy), m)| relu_backward(dy, m, dx));
        dx
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
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
            if i.is_multiple_of(2) {
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
