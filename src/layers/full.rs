//! Fully connected (affine) layer: `y = x·Wᵀ + b`.
//!
//! Gradients (dy = dℓ/dy): `dW = dyᵀ·x`, `db = Σ_n dy[n, :]`, `dx = dy·W`.
//!
//! ```
//! use scratchnet::layers::FullLayer;
//! use scratchnet::{Layer, ndarray::array};
//! use scratchnet::rand::SeedableRng;
//!
//! let mut fc = FullLayer::<f64>::new(2, 3, &mut scratchnet::rand_chacha::ChaCha8Rng::seed_from_u64(0));
//! fc.w = array![[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]];
//! fc.b = array![[0.5, 0.0, 0.0]];
//! let y = fc.forward(array![[2.0, 3.0]].into_dyn().view());
//! assert_eq!(y, array![[2.5, 3.0, -1.0]].into_dyn());
//! ```

use crate::init::glorot_normal;
use crate::kernels::gemm::{matmul, MatRef};
use crate::layer::{expect_grad_shape, expect_shape, missing_forward, weight_and_bias};
use crate::{Float, Layer, Param, ShapeError};
use ndarray::{Array2, ArrayD, ArrayViewD, Ix2};
use rand::Rng;

/// A fully connected layer: `(n_b, n_i) → (n_b, n_o)`.
pub struct FullLayer<F: Float> {
    /// Weights, shape `(n_o, n_i)`.
    pub w: Array2<F>,
    /// Biases, shape `(1, n_o)`.
    pub b: Array2<F>,
    /// dℓ/dW from the last backward, shape `(n_o, n_i)`.
    pub w_grad: Array2<F>,
    /// dℓ/db from the last backward, shape `(1, n_o)`.
    pub b_grad: Array2<F>,
    input: Option<Array2<F>>,
}

impl<F: Float> FullLayer<F> {
    /// A layer from `n_i` inputs to `n_o` outputs with Glorot-normal weights
    /// (`σ = sqrt(2/(n_i + n_o))`) and zero biases.
    ///
    /// # Panics
    /// If `n_i` or `n_o` is zero.
    pub fn new<R: Rng + ?Sized>(n_i: usize, n_o: usize, rng: &mut R) -> Self {
        assert!(
            n_i > 0 && n_o > 0,
            "FullLayer::new: n_i and n_o must be positive (got {n_i}, {n_o})"
        );
        let w = glorot_normal(&[n_o, n_i], n_i, n_o, rng)
            .into_dimensionality::<Ix2>()
            .expect("2-D by construction");
        Self {
            w_grad: Array2::zeros((n_o, n_i)),
            w,
            b: Array2::zeros((1, n_o)),
            b_grad: Array2::zeros((1, n_o)),
            input: None,
        }
    }

    fn dims(&self) -> (usize, usize) {
        let (n_o, n_i) = self.w.dim();
        assert_eq!(
            self.b.dim(),
            (1, n_o),
            "FullLayer: b must have shape (1, {n_o}) to match w, has {:?}",
            self.b.shape()
        );
        (n_o, n_i)
    }
}

impl<F: Float> Layer<F> for FullLayer<F> {
    /// # Shapes
    /// `x: (n_b, n_i)` → `y: (n_b, n_o)`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        expect_shape(self, x.shape());
        let (n_o, n_i) = self.dims();
        let x = x
            .into_dimensionality::<Ix2>()
            .expect("checked by output_shape");
        let n_b = x.nrows();
        let input = match &mut self.input {
            Some(a) if a.dim() == x.dim() => a,
            slot => slot.insert(Array2::zeros(x.raw_dim())),
        };
        input.assign(&x);
        // y starts as the broadcast bias, then y += x·Wᵀ.
        let mut y = self
            .b
            .broadcast((n_b, n_o))
            .expect("b is (1, n_o)")
            .to_owned();
        let w = self.w.as_standard_layout();
        matmul(
            MatRef::row_major(input.as_slice().expect("standard layout"), n_b, n_i),
            MatRef::row_major(w.as_slice().expect("standard layout"), n_o, n_i).t(),
            y.as_slice_mut().expect("standard layout"),
            true,
        );
        y.into_dyn()
    }

    /// # Shapes
    /// `y_grad: (n_b, n_o)` → `x_grad: (n_b, n_i)`; sets `w_grad: (n_o, n_i)`, `b_grad: (1, n_o)`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let name = self.name();
        let (n_o, n_i) = self.dims();
        let Some(x) = &self.input else {
            missing_forward(&name)
        };
        let n_b = x.nrows();
        expect_grad_shape(&name, &[n_b, n_o], y_grad.shape());
        let dy = y_grad.as_standard_layout();
        let dy_mat = MatRef::row_major(dy.as_slice().expect("standard layout"), n_b, n_o);
        self.w_grad = Array2::zeros((n_o, n_i));
        matmul(
            dy_mat.t(),
            MatRef::row_major(x.as_slice().expect("standard layout"), n_b, n_i),
            self.w_grad.as_slice_mut().expect("fresh array"),
            false,
        );
        self.b_grad = dy
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked")
            .sum_axis(ndarray::Axis(0))
            .insert_axis(ndarray::Axis(0));
        let mut x_grad = Array2::zeros((n_b, n_i));
        let w = self.w.as_standard_layout();
        matmul(
            dy_mat,
            MatRef::row_major(w.as_slice().expect("standard layout"), n_o, n_i),
            x_grad.as_slice_mut().expect("fresh array"),
            false,
        );
        x_grad.into_dyn()
    }

    fn params_mut(&mut self) -> Vec<Param<'_, F>> {
        weight_and_bias(
            (self.w.view_mut().into_dyn(), self.w_grad.view().into_dyn()),
            (self.b.view_mut().into_dyn(), self.b_grad.view().into_dyn()),
        )
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let (n_o, n_i) = self.w.dim();
        match *input {
            [n_b, i] if i == n_i => Ok(vec![n_b, n_o]),
            _ => Err(ShapeError::new(self.name(), format!("(n_b, {n_i})"), input)),
        }
    }

    fn name(&self) -> String {
        let (n_o, n_i) = self.w.dim();
        format!("FullLayer({n_i}→{n_o})")
    }

    fn num_params(&self) -> usize {
        self.w.len() + self.b.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;
    use ndarray::array;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(seed)
    }

    #[test]
    fn worked_example_forward_and_backward() {
        let mut fc = FullLayer::<f64>::new(3, 2, &mut rng(0));
        fc.w = array![[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]];
        fc.b = array![[1.0, -1.0]];
        let x = array![[1.0, 1.0, 1.0], [0.0, 2.0, -1.0]];
        let y = fc.forward(x.view().into_dyn());
        assert_eq!(y, array![[7.0, -1.0], [2.0, -2.0]].into_dyn());
        let dx = fc.backward(array![[1.0, 0.0], [2.0, -1.0]].into_dyn().view());
        // dx = dy·W, dW = dyᵀ·x, db = column sums of dy
        assert_eq!(dx, array![[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]].into_dyn());
        assert_eq!(fc.w_grad, array![[1.0, 5.0, -1.0], [0.0, -2.0, 1.0]]);
        assert_eq!(fc.b_grad, array![[3.0, -1.0]]);
        fc.update_param(0.5);
        assert_eq!(fc.w, array![[0.5, -0.5, 3.5], [-1.0, 1.0, 0.5]]);
        assert_eq!(fc.b, array![[-0.5, -0.5]]);
    }

    #[test]
    fn gradients_match_numerical_differences() {
        let check = GradCheck::default();
        for (seed, &(n_b, n_i, n_o)) in [(1, 1, 1), (4, 7, 3), (5, 3, 8), (2, 20, 10)]
            .iter()
            .enumerate()
        {
            let mut fc = FullLayer::<f64>::new(n_i, n_o, &mut rng(seed as u64));
            fc.b = Array2::from_shape_fn((1, n_o), |(_, o)| o as f64 * 0.1);
            let x = Array2::from_shape_fn((n_b, n_i), |(n, i)| ((n * 31 + i * 7) as f64).sin());
            let report = check.check_layer(&mut fc, x.view().into_dyn(), seed as u64);
            assert!(report.passed(), "{report}");
        }
    }

    #[test]
    #[should_panic(
        expected = "FullLayer(2048→3): expected an input of shape (n_b, 2048), got [128, 2047]"
    )]
    fn wrong_width_panics() {
        FullLayer::<f32>::new(2048, 3, &mut rng(0)).forward(ArrayD::zeros(vec![128, 2047]).view());
    }
}
