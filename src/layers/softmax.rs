//! Row-wise softmax: `y[n,j] = exp(x[n,j] − m_n) / Σ_k exp(x[n,k] − m_n)` with
//! `m_n = max_k x[n,k]` (subtracting the maximum changes nothing mathematically and keeps
//! `exp` from overflowing).
//!
//! Gradient: `dx[n,j] = y[n,j] · (dy[n,j] − Σ_k dy[n,k] · y[n,k])`.
//!
//! ```
//! use scratchnet::layers::SoftMaxLayer;
//! use scratchnet::{Layer, ndarray::array};
//!
//! let mut softmax = SoftMaxLayer::<f64>::new();
//! let y = softmax.forward(array![[0.0, 2.0_f64.ln()], [1000.0, 1000.0]].into_dyn().view());
//! assert!((y[[0, 0]] - 1.0 / 3.0).abs() < 1e-15 && (y[[0, 1]] - 2.0 / 3.0).abs() < 1e-15);
//! assert_eq!((y[[1, 0]], y[[1, 1]]), (0.5, 0.5)); // no overflow
//! ```

use crate::layer::{expect_grad_shape, expect_shape, missing_forward};
use crate::{Float, Layer, ShapeError};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, Ix2, Zip};

/// Row-wise softmax over `(n_b, k)` scores.
#[derive(Default)]
pub struct SoftMaxLayer<F: Float> {
    output: Option<Array2<F>>,
}

impl<F: Float> SoftMaxLayer<F> {
    /// A softmax layer.
    pub fn new() -> Self {
        Self { output: None }
    }
}

impl<F: Float> Layer<F> for SoftMaxLayer<F> {
    /// # Shapes
    /// `x: (n_b, k)` → `y: (n_b, k)`, every row summing to 1.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        expect_shape(self, x.shape());
        let mut y = x.into_dimensionality::<Ix2>().expect("checked").to_owned();
        for mut row in y.rows_mut() {
            let max = row.fold(F::neg_infinity(), |m, &v| m.max(v));
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
        self.output = Some(y.clone());
        y.into_dyn()
    }

    /// # Shapes
    /// `y_grad: (n_b, k)` → `x_grad: (n_b, k)`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let Some(y) = &self.output else {
            missing_forward("SoftMaxLayer")
        };
        expect_grad_shape("SoftMaxLayer", y.shape(), y_grad.shape());
        let dy = y_grad.into_dimensionality::<Ix2>().expect("checked");
        let dot = (&dy * y).sum_axis(Axis(1)).insert_axis(Axis(1));
        let mut dx = Array2::zeros(y.raw_dim());
        Zip::from(&mut dx)
            .and(y)
            .and(&dy)
            .and_broadcast(&dot)
            .for_each(|dx, &y, &g, &d| *dx = y * (g - d));
        dx.into_dyn()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        match input {
            [_, k] if *k > 0 => Ok(input.to_vec()),
            _ => Err(ShapeError::new(self.name(), "(n_b, k) with k ≥ 1", input)),
        }
    }

    fn name(&self) -> String {
        "SoftMaxLayer".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;

    #[test]
    fn rows_sum_to_one_and_order_is_kept() {
        let x = Array2::from_shape_fn((4, 5), |(n, j)| (n as f64 - 2.0) * 3.0 + j as f64 * 0.7);
        let y = SoftMaxLayer::new().forward(x.view().into_dyn());
        for row in y.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-15);
            assert!(row.windows(2).into_iter().all(|w| w[0] < w[1]));
        }
        // softmax([1, 2, 3]) = [0.09003057, 0.24472847, 0.66524096] (scipy.special.softmax)
        let y = SoftMaxLayer::new().forward(ndarray::array![[1.0, 2.0, 3.0]].into_dyn().view());
        for (a, b) in y.iter().zip([
            0.09003057317038046f64,
            0.24472847105479767,
            0.6652409557748219,
        ]) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }

    #[test]
    fn gradients_match_numerical_differences() {
        for (seed, shape) in [(1, (1, 1)), (2, (3, 4)), (3, (6, 10))] {
            let x =
                Array2::from_shape_fn(shape, |(n, j)| ((n * 13 + j * 5 + seed) as f64).cos() * 2.0);
            let report = GradCheck::default().check_layer(
                &mut SoftMaxLayer::new(),
                x.view().into_dyn(),
                seed as u64,
            );
            assert!(report.passed(), "{report}");
        }
    }

    #[test]
    #[should_panic(
        expected = "SoftMaxLayer: expected an input of shape (n_b, k) with k ≥ 1, got [2, 3, 4]"
    )]
    fn non_matrix_input_panics() {
        SoftMaxLayer::<f32>::new().forward(ArrayD::zeros(vec![2, 3, 4]).view());
    }
}
