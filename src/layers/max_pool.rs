//! Max pooling over non-overlapping `k × k` windows with stride `k`.
//!
//! `y[n,c,r,q] = max_{0≤a,b<k} x[n, c, k·r + a, k·q + b]`. Rows and columns left over at the
//! bottom and right (when `k` does not divide the size) are ignored and get zero gradient.
//!
//! Gradient: `dx[n,c,k·r+a,k·q+b] = dy[n,c,r,q]` if that input equals its window's maximum,
//! else 0. Every tied maximum receives the full gradient — what a forward-difference
//! numerical gradient gives (PyTorch instead picks one).
//!
//! ```
//! use scratchnet::layers::MaxPoolLayer;
//! use scratchnet::{Layer, ndarray::{array, Array4}};
//!
//! let mut pool = MaxPoolLayer::<f64>::new(2);
//! let x = array![[1.0, 5.0, 2.0], [3.0, 4.0, 8.0], [9.0, 9.0, 9.0]].into_shape_with_order((1, 1, 3, 3)).unwrap();
//! let y = pool.forward(x.view().into_dyn());
//! assert_eq!(y.shape(), &[1, 1, 1, 1]);
//! assert_eq!(y[[0, 0, 0, 0]], 5.0);
//! let dx = pool.backward(Array4::from_elem((1, 1, 1, 1), 2.0).view().into_dyn());
//! assert_eq!(dx.into_raw_vec_and_offset().0, vec![0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
//! ```

use crate::layer::{expect_grad_shape, expect_shape, missing_forward, zeros_par};
use crate::{Float, Layer, ShapeError};
use multiversion::multiversion;
use ndarray::{ArrayD, ArrayViewD};
use rayon::prelude::*;

/// Max pooling: `(n_b, c, n_r, n_c) → (n_b, c, ⌊n_r/k⌋, ⌊n_c/k⌋)`.
pub struct MaxPoolLayer<F: Float> {
    size: usize,
    /// From the last forward: the input shape, and for every input element whether it
    /// equals its window's maximum (1) or not (0). One byte per input instead of a copy.
    cache: Option<(Vec<usize>, Vec<u8>)>,
    _float: std::marker::PhantomData<F>,
}

impl<F: Float> MaxPoolLayer<F> {
    /// A pooling layer with `size × size` windows (the lab uses 2).
    ///
    /// # Panics
    /// If `size` is zero.
    pub fn new(size: usize) -> Self {
        assert!(size > 0, "MaxPoolLayer::new: size must be positive");
        Self {
            size,
            cache: None,
            _float: std::marker::PhantomData,
        }
    }

    /// The window size `k`.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Pools one `rows × cols` plane into `y` (`⌊rows/k⌋ × ⌊cols/k⌋`) and marks the maxima in
/// `mask` (1 where an input equals its window's maximum, else 0).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn pool_plane<F: Float>(x: &[F], cols: usize, k: usize, y: &mut [F], mask: &mut [u8]) {
    if k == 2 {
        return pool_plane_2x2(x, cols, y, mask);
    }
    let out_c = cols / k;
    mask.fill(0);
    for (r, y_row) in y.chunks_exact_mut(out_c).enumerate() {
        for (q, y_v) in y_row.iter_mut().enumerate() {
            let window = |a: usize| (r * k + a) * cols + q * k..(r * k + a) * cols + q * k + k;
            let mut m = F::neg_infinity();
            for a in 0..k {
                for &v in &x[window(a)] {
                    m = if v > m { v } else { m };
                }
            }
            *y_v = m;
            for a in 0..k {
                for j in window(a) {
                    mask[j] = u8::from(x[j] == m);
                }
            }
        }
    }
}

/// The lab's case, `k = 2`, with the four window values in registers.
#[inline(always)]
fn pool_plane_2x2<F: Float>(x: &[F], cols: usize, y: &mut [F], mask: &mut [u8]) {
    let out_c = cols / 2;
    if cols % 2 == 1 {
        mask.fill(0); // the last column is in no window
    }
    for (r, y_row) in y.chunks_exact_mut(out_c).enumerate() {
        let (top, bottom) = x[2 * r * cols..(2 * r + 2) * cols].split_at(cols);
        let (m_top, m_bottom) = mask[2 * r * cols..(2 * r + 2) * cols].split_at_mut(cols);
        for (q, y_v) in y_row.iter_mut().enumerate() {
            let (a, b, c, d) = (top[2 * q], top[2 * q + 1], bottom[2 * q], bottom[2 * q + 1]);
            let m = a.max(b).max(c.max(d));
            *y_v = m;
            m_top[2 * q] = u8::from(a == m);
            m_top[2 * q + 1] = u8::from(b == m);
            m_bottom[2 * q] = u8::from(c == m);
            m_bottom[2 * q + 1] = u8::from(d == m);
        }
    }
    // rows left over at the bottom are in no window
    mask[2 * y.len() / out_c.max(1) * cols..].fill(0);
}

/// Sends each output gradient to the marked inputs of its window; `dx` starts at zero.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn unpool_plane<F: Float>(dy: &[F], mask: &[u8], cols: usize, k: usize, dx: &mut [F]) {
    let out_c = cols / k;
    if k == 2 {
        for (r, dy_row) in dy.chunks_exact(out_c).enumerate() {
            let (dx_top, dx_bottom) = dx[2 * r * cols..(2 * r + 2) * cols].split_at_mut(cols);
            let (m_top, m_bottom) = mask[2 * r * cols..(2 * r + 2) * cols].split_at(cols);
            for (q, &g) in dy_row.iter().enumerate() {
                // Table lookup instead of a branch: which inputs are maxima is data-dependent
                // and mispredicts badly.
                let choice = [F::zero(), g];
                let pick = |m: u8| choice[usize::from(m)];
                dx_top[2 * q] = pick(m_top[2 * q]);
                dx_top[2 * q + 1] = pick(m_top[2 * q + 1]);
                dx_bottom[2 * q] = pick(m_bottom[2 * q]);
                dx_bottom[2 * q + 1] = pick(m_bottom[2 * q + 1]);
            }
        }
        return;
    }
    for (r, dy_row) in dy.chunks_exact(out_c).enumerate() {
        for a in 0..k {
            let row = (r * k + a) * cols;
            let (dx_row, m_row) = (&mut dx[row..row + out_c * k], &mask[row..row + out_c * k]);
            for ((dx_w, m_w), &g) in dx_row
                .chunks_exact_mut(k)
                .zip(m_row.chunks_exact(k))
                .zip(dy_row)
            {
                for (d, &m) in dx_w.iter_mut().zip(m_w) {
                    *d = if m != 0 { g } else { F::zero() };
                }
            }
        }
    }
}

impl<F: Float> Layer<F> for MaxPoolLayer<F> {
    /// # Shapes
    /// `x: (n_b, c, n_r, n_c)` → `y: (n_b, c, ⌊n_r/k⌋, ⌊n_c/k⌋)`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let out_shape = expect_shape(self, x.shape());
        let k = self.size;
        let (rows, cols) = (x.shape()[2], x.shape()[3]);
        let x = x.as_standard_layout();
        let mut y = zeros_par(&out_shape);
        let mut mask = match self.cache.take() {
            Some((_, mut m)) => {
                m.resize(x.len(), 0);
                m
            }
            None => vec![0u8; x.len()],
        };
        let out_plane = out_shape[2] * out_shape[3];
        y.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(out_plane)
            .zip(
                x.as_slice()
                    .expect("standard layout")
                    .par_chunks(rows * cols),
            )
            .zip(mask.par_chunks_mut(rows * cols))
            .for_each(|((y_p, x_p), m_p)| pool_plane(x_p, cols, k, y_p, m_p));
        self.cache = Some((x.shape().to_vec(), mask));
        y
    }

    /// # Shapes
    /// `y_grad: (n_b, c, ⌊n_r/k⌋, ⌊n_c/k⌋)` → `x_grad: (n_b, c, n_r, n_c)`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let name = self.name();
        let Some((shape, mask)) = &self.cache else {
            missing_forward(&name)
        };
        let k = self.size;
        let (rows, cols) = (shape[2], shape[3]);
        let (out_r, out_c) = (rows / k, cols / k);
        expect_grad_shape(&name, &[shape[0], shape[1], out_r, out_c], y_grad.shape());
        let mut x_grad = zeros_par(shape);
        let dy = y_grad.as_standard_layout();
        x_grad
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(rows * cols)
            .zip(mask.par_chunks(rows * cols))
            .zip(
                dy.as_slice()
                    .expect("standard layout")
                    .par_chunks(out_r * out_c),
            )
            .for_each(|((dx_p, m_p), dy_p)| unpool_plane(dy_p, m_p, cols, k, dx_p));
        x_grad
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let k = self.size;
        match *input {
            [n_b, c, r, q] if r >= k && q >= k => Ok(vec![n_b, c, r / k, q / k]),
            _ => Err(ShapeError::new(
                self.name(),
                format!("(n_b, channels, rows ≥ {k}, cols ≥ {k})"),
                input,
            )),
        }
    }

    fn name(&self) -> String {
        format!("MaxPoolLayer({0}×{0})", self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{Difference, GradCheck};
    use ndarray::Array4;
    use rand::{Rng, SeedableRng};

    fn random4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array4::from_shape_simple_fn(shape, || r.random_range(-1.0..1.0))
    }

    #[test]
    fn pools_non_overlapping_windows_and_drops_the_remainder() {
        let x = Array4::from_shape_fn((1, 1, 5, 5), |(_, _, r, c)| (r * 5 + c) as f64);
        let y = MaxPoolLayer::new(2).forward(x.view().into_dyn());
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.into_raw_vec_and_offset().0, vec![6.0, 8.0, 16.0, 18.0]);
    }

    #[test]
    fn leftover_rows_and_columns_get_zero_gradient() {
        let mut pool = MaxPoolLayer::new(2);
        let x = random4((2, 3, 5, 7), 1);
        pool.forward(x.view().into_dyn());
        let dx = pool.backward(ArrayD::from_elem(vec![2, 3, 2, 3], 1.0).view());
        assert_eq!(dx.shape(), &[2, 3, 5, 7]);
        assert!(dx
            .slice(ndarray::s![.., .., 4, ..])
            .iter()
            .all(|&v| v == 0.0));
        assert!(dx
            .slice(ndarray::s![.., .., .., 6])
            .iter()
            .all(|&v| v == 0.0));
        // exactly one maximum per window (random data has no ties)
        assert_eq!(dx.sum(), (2 * 3 * 2 * 3) as f64);
    }

    #[test]
    fn every_tied_maximum_receives_the_full_gradient() {
        let mut pool = MaxPoolLayer::new(2);
        let x = Array4::from_shape_vec((1, 1, 2, 2), vec![3.0, 3.0, 1.0, 3.0]).unwrap();
        pool.forward(x.view().into_dyn());
        let dx = pool.backward(ArrayD::from_elem(vec![1, 1, 1, 1], 0.5).view());
        assert_eq!(dx.into_raw_vec_and_offset().0, vec![0.5, 0.5, 0.0, 0.5]);
    }

    #[test]
    fn gradients_match_numerical_differences() {
        let check = GradCheck::default();
        for (seed, &(shape, k)) in [
            ((2, 3, 4, 4), 2),
            ((1, 2, 5, 7), 2),
            ((3, 1, 6, 9), 3),
            ((2, 2, 3, 3), 1),
            ((1, 1, 7, 5), 4),
        ]
        .iter()
        .enumerate()
        {
            let report = check.check_layer(
                &mut MaxPoolLayer::new(k),
                random4(shape, seed as u64).view().into_dyn(),
                9,
            );
            assert!(report.passed(), "{report}");
        }
    }

    #[test]
    fn ties_match_forward_differences() {
        // Integer-valued inputs make many ties; forward differences see every tied maximum rise.
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x = Array4::from_shape_simple_fn((2, 2, 4, 6), || r.random_range(0..3) as f64);
        let check = GradCheck {
            difference: Difference::Forward,
            ..GradCheck::default()
        };
        let report = check.check_layer(&mut MaxPoolLayer::new(2), x.view().into_dyn(), 3);
        assert!(report.passed(), "{report}");
    }

    #[test]
    #[should_panic(
        expected = "MaxPoolLayer(2×2): expected an input of shape (n_b, channels, rows ≥ 2, cols ≥ 2), got [1, 1, 1, 4]"
    )]
    fn too_small_input_panics() {
        MaxPoolLayer::<f32>::new(2).forward(ArrayD::zeros(vec![1, 1, 1, 4]).view());
    }
}
