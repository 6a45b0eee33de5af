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
use rayon::prelude::*;

/// Examples per parallel task in the forward pass and dℓ/dx.
const ROWS_PER_TASK: usize = 16;
/// Inputs (columns of `W`) per parallel task in dℓ/dW. Both are fixed, not derived from the
/// thread count, so every value is computed the same way with any number of threads.
const INPUTS_PER_TASK: usize = 256;

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
    /// dℓ/dW in blocks of [`INPUTS_PER_TASK`] columns, each stored as `(n_o, width)`.
    w_grad_blocks: Vec<F>,
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
            w_grad_blocks: Vec::new(),
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
        let x = x.as_standard_layout();
        let w = self.w.as_standard_layout();
        let w_t = MatRef::row_major(w.as_slice().expect("standard layout"), n_o, n_i).t();
        let b = self.b.as_standard_layout();
        let b = b.as_slice().expect("standard layout");
        // Per block of examples: keep x, y = b broadcast, then y += x·Wᵀ.
        let mut y = Array2::zeros((n_b, n_o));
        y.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut((ROWS_PER_TASK * n_o).max(1))
            .zip(
                input
                    .as_slice_mut()
                    .expect("standard layout")
                    .par_chunks_mut((ROWS_PER_TASK * n_i).max(1)),
            )
            .zip(
                x.as_slice()
                    .expect("standard layout")
                    .par_chunks((ROWS_PER_TASK * n_i).max(1)),
            )
            .for_each(|((y_t, kept_t), x_t)| {
                kept_t.copy_from_slice(x_t);
                for row in y_t.chunks_exact_mut(n_o) {
                    row.copy_from_slice(b);
                }
                let rows = y_t.len() / n_o;
                matmul(MatRef::row_major(kept_t, rows, n_i), w_t, y_t, true);
            });
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
        let dy_slice = dy.as_slice().expect("standard layout");
        let dy_mat = MatRef::row_major(dy_slice, n_b, n_o);
        let x_mat = MatRef::row_major(x.as_slice().expect("standard layout"), n_b, n_i);
        // dW = dyᵀ·x, a block of inputs (columns of dW) per task, each block stored
        // contiguously as (n_o, inputs), then copied into place.
        self.w_grad_blocks.resize(n_i * n_o, F::zero());
        self.w_grad_blocks
            .par_chunks_mut((INPUTS_PER_TASK * n_o).max(1))
            .enumerate()
            .for_each(|(task, block)| {
                let start = task * INPUTS_PER_TASK;
                let inputs = start..start + block.len() / n_o;
                matmul(dy_mat.t(), x_mat.columns(inputs), block, false);
            });
        if self.w_grad.dim() != (n_o, n_i) {
            self.w_grad = Array2::zeros((n_o, n_i));
        }
        for (task, block) in self.w_grad_blocks.chunks(INPUTS_PER_TASK * n_o).enumerate() {
            let width = block.len() / n_o;
            let start = task * INPUTS_PER_TASK;
            for (o, row) in block.chunks_exact(width).enumerate() {
                self.w_grad
                    .row_mut(o)
                    .as_slice_mut()
                    .expect("standard layout")[start..start + width]
                    .copy_from_slice(row);
            }
        }
        self.b_grad = dy
            .view()
            .into_dimensionality::<Ix2>()
            .expect("checked")
            .sum_axis(ndarray::Axis(0))
            .insert_axis(ndarray::Axis(0));
        // dx = dy·W, a block of examples per task.
        let mut x_grad = Array2::zeros((n_b, n_i));
        let w = self.w.as_standard_layout();
        let w_mat = MatRef::row_major(w.as_slice().expect("standard layout"), n_o, n_i);
        x_grad
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut((ROWS_PER_TASK * n_i).max(1))
            .zip(dy_slice.par_chunks((ROWS_PER_TASK * n_o).max(1)))
            .for_each(|(dx_t, dy_t)| {
                let rows = dy_t.len() / n_o.max(1);
                matmul(MatRef::row_major(dy_t, rows, n_o), w_mat, dx_t, false);
            });
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

    /// Batches and widths spanning several parallel tasks, with partial last tasks, against
    /// ndarray's products.
    #[test]
    fn blocked_products_match_ndarray() {
        let (n_b, n_i, n_o) = (37, 600, 3);
        let mut fc = FullLayer::<f64>::new(n_i, n_o, &mut rng(3));
        fc.b = array![[0.5, -0.25, 1.0]];
        let x = Array2::from_shape_fn((n_b, n_i), |(n, i)| ((n * 13 + i * 5) as f64).cos());
        let dy = Array2::from_shape_fn((n_b, n_o), |(n, o)| ((n * 3 + o) as f64).sin());
        let y = fc.forward(x.view().into_dyn());
        let dx = fc.backward(dy.view().into_dyn());
        let close = |a: &ArrayD<f64>, b: ArrayD<f64>, what: &str| {
            assert_eq!(a.shape(), b.shape(), "{what}");
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (u - v).abs() < 1e-12 * (1.0 + v.abs()),
                    "{what}: {u} vs {v}"
                );
            }
        };
        close(&y, (x.dot(&fc.w.t()) + &fc.b).into_dyn(), "y");
        close(&dx, dy.dot(&fc.w).into_dyn(), "dx");
        close(
            &fc.w_grad.clone().into_dyn(),
            dy.t().dot(&x).into_dyn(),
            "dW",
        );
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
