//! The fused epilogue of a convolution followed by ReLU and 2×2 max pooling, and its backward.
//!
//! Forward, for one plane `v` of convolution output (before the bias `b`):
//! `t = v + b`, `r = max(t, 0)`, `y[i,j] = max_{a,b∈{0,1}} r[2i+a, 2j+b]`, and one mask byte per
//! output whose bit `2a + b` is `[r[2i+a,2j+b] = y[i,j]] ∧ [t[2i+a,2j+b] > 0]`.
//!
//! Backward: `dv[2i+a, 2j+b] = dy[i,j] · bit_{2a+b}`.
//!
//! This is exactly [`crate::layers::ReluLayer`] then [`crate::layers::MaxPoolLayer`] with
//! `k = 2`, value for value and bit for bit: the pooling layer sends the gradient to every
//! tied maximum and ReLU passes it only where its input was positive, which is what the bit
//! records. Running them fused keeps the convolution's largest output in cache instead of
//! writing it to memory and reading it back four times (ReLU and pooling, forward and
//! backward).

use crate::Float;
use multiversion::multiversion;

/// Bias, ReLU and 2×2 max pooling of one `rows × cols` plane `v` (`rows`, `cols` even) into
/// `y` (`rows/2 × cols/2`), with the gradient routing of every output in `mask`.
///
/// # Panics
/// If `cols` is odd or zero, or the slices do not have matching lengths.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn bias_relu_pool2<F: Float>(v: &[F], bias: F, cols: usize, y: &mut [F], mask: &mut [u8]) {
    assert!(
        cols > 0 && cols.is_multiple_of(2),
        "bias_relu_pool2: cols must be even"
    );
    assert_eq!(v.len(), 4 * y.len(), "bias_relu_pool2: plane length");
    assert_eq!(y.len(), mask.len(), "bias_relu_pool2: mask length");
    let out_c = cols / 2;
    let rows = v.chunks_exact(2 * cols);
    let outs = y.chunks_exact_mut(out_c).zip(mask.chunks_exact_mut(out_c));
    for (pair, (y_row, m_row)) in rows.zip(outs) {
        let (top, bottom) = pair.split_at(cols);
        // Two-element chunks instead of indexing: no bounds checks, so the loops vectorise.
        // Two passes (maxima, then routing bits) keep each loop's element types uniform.
        let relu = |v: F| {
            let t = v + bias;
            if t > F::zero() {
                t
            } else {
                F::zero()
            }
        };
        // `relu` gives no NaN and no −0, so a plain comparison is the pooling layer's `max`.
        let max = |a: F, b: F| if a > b { a } else { b };
        let windows = || top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for ((a, b), y_v) in windows().zip(y_row.iter_mut()) {
            *y_v = max(max(relu(a[0]), relu(a[1])), max(relu(b[0]), relu(b[1])));
        }
        for ((a, b), (&m, m_v)) in windows().zip(y_row.iter().zip(m_row.iter_mut())) {
            let routed = |v: F| {
                let t = v + bias;
                u8::from(t > F::zero()) & u8::from(t == m)
            };
            *m_v = routed(a[0]) | routed(a[1]) << 1 | routed(b[0]) << 2 | routed(b[1]) << 3;
        }
    }
}

/// The backward of [`bias_relu_pool2`]: spreads `dy` (`rows/2 × cols/2`) over `dv`
/// (`rows × cols`) through `mask`. Every element of `dv` is written.
///
/// # Panics
/// If `cols` is odd or zero, or the slices do not have matching lengths.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn relu_pool2_backward<F: Float>(dy: &[F], mask: &[u8], cols: usize, dv: &mut [F]) {
    assert!(
        cols > 0 && cols.is_multiple_of(2),
        "relu_pool2_backward: cols must be even"
    );
    assert_eq!(dv.len(), 4 * dy.len(), "relu_pool2_backward: plane length");
    assert_eq!(dy.len(), mask.len(), "relu_pool2_backward: mask length");
    let out_c = cols / 2;
    let ins = dy.chunks_exact(out_c).zip(mask.chunks_exact(out_c));
    for ((dy_row, m_row), pair) in ins.zip(dv.chunks_exact_mut(2 * cols)) {
        let (top, bottom) = pair.split_at_mut(cols);
        // One loop per row, each storing an interleaved pair: this shape vectorises.
        for (row, shift) in [(top, 0), (bottom, 2)] {
            for (d, (&g, &bits)) in row.chunks_exact_mut(2).zip(dy_row.iter().zip(m_row)) {
                // A select, not a branch: which inputs were maxima is data-dependent.
                d[0] = if (bits >> shift) & 1 != 0 {
                    g
                } else {
                    F::zero()
                };
                d[1] = if (bits >> shift) & 2 != 0 {
                    g
                } else {
                    F::zero()
                };
            }
        }
    }
}

/// [`bias_relu_pool2`] of every plane of one image's dense output `v` (`n_o` planes of
/// `rows × cols`, one bias each): the pooled `(n_o, rows/2, cols/2)` values and routing bytes,
/// the reference the fused kernels are tested against.
#[cfg(test)]
pub(crate) fn pool_planes<F: Float>(v: &[F], b: &[F], cols: usize) -> (Vec<F>, Vec<u8>) {
    let q = v.len() / b.len() / 4;
    let (mut y, mut mask) = (vec![F::zero(); b.len() * q], vec![0u8; b.len() * q]);
    let outs = y.chunks_exact_mut(q).zip(mask.chunks_exact_mut(q));
    for ((plane, &bias), (y_o, m_o)) in v.chunks_exact(4 * q).zip(b).zip(outs) {
        bias_relu_pool2(plane, bias, cols, y_o, m_o);
    }
    (y, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{MaxPoolLayer, ReluLayer};
    use crate::Layer;
    use ndarray::Array4;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn worked_example() {
        // One 2×4 plane, bias 1: windows [[-3, 0], [-2, -1]] (all ≤ 0 after the bias)
        // and [[2, 2], [-5, 1]] (a tie between two positive maxima).
        let v = [-3.0f64, 0.0, 2.0, 2.0, -2.0, -1.0, -5.0, 1.0];
        let (mut y, mut mask) = ([0.0; 2], [0u8; 2]);
        bias_relu_pool2(&v, 1.0, 4, &mut y, &mut mask);
        assert_eq!(y, [1.0, 3.0]);
        assert_eq!(mask, [0b0010, 0b0011]);
        let mut dv = [9.0; 8];
        relu_pool2_backward(&[10.0, 20.0], &mask, 4, &mut dv);
        assert_eq!(dv, [0.0, 10.0, 20.0, 20.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// The fused kernels against `ReluLayer` then `MaxPoolLayer(2)`, exactly, on values with
    /// many ties, zeros and negatives.
    #[test]
    fn matches_relu_then_max_pool_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, c, rows, cols) = (3, 2, 6, 8);
        let bias = [0.5f32, -1.0];
        let v = Array4::from_shape_simple_fn((n, c, rows, cols), || {
            f32::from(rng.random_range(-3i8..=3)) / 2.0
        });
        let mut t = v.clone();
        for (ch, &b) in bias.iter().enumerate() {
            t.slice_mut(ndarray::s![.., ch, .., ..])
                .mapv_inplace(|x| x + b);
        }
        let mut relu = ReluLayer::<f32>::new();
        let mut pool = MaxPoolLayer::<f32>::new(2);
        let y_ref = pool.forward(relu.forward(t.view().into_dyn()).view());
        let dy = y_ref.mapv(|_| rng.random_range(-1.0f32..1.0));
        let dv_ref = relu.backward(pool.backward(dy.view()).view());

        let plane = rows * cols;
        let (mut y, mut mask) = (vec![0.0; v.len() / 4], vec![0u8; v.len() / 4]);
        let mut dv = vec![0.0; v.len()];
        let dy = dy.as_slice().unwrap();
        for (i, v_p) in v.as_slice().unwrap().chunks(plane).enumerate() {
            let out = i * plane / 4..(i + 1) * plane / 4;
            bias_relu_pool2(
                v_p,
                bias[i % c],
                cols,
                &mut y[out.clone()],
                &mut mask[out.clone()],
            );
            relu_pool2_backward(
                &dy[out.clone()],
                &mask[out],
                cols,
                &mut dv[i * plane..(i + 1) * plane],
            );
        }
        assert_eq!(y, y_ref.as_slice().unwrap());
        assert_eq!(dv, dv_ref.as_slice().unwrap());
        assert!(mask.contains(&0) && mask.iter().any(|&m| m.count_ones() > 1));
    }
}
