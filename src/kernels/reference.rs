//! Plain loops straight from the formulas: slow, obviously right, and the reference the
//! fast kernels are tested against.

use crate::Float;
use ndarray::{Array2, Array4, ArrayView2, ArrayView4};

/// Zero-padded input value `x[n, i, r + dr, q + dq]`, or 0 outside the image.
fn padded<F: Float>(x: &ArrayView4<'_, F>, n: usize, i: usize, r: isize, q: isize) -> F {
    let (rows, cols) = (x.shape()[2] as isize, x.shape()[3] as isize);
    if r < 0 || q < 0 || r >= rows || q >= cols {
        F::zero()
    } else {
        x[[n, i, r as usize, q as usize]]
    }
}

/// "Same" convolution (cross-correlation) by loops:
/// `y[n,o,r,q] = b[o] + Σ_i Σ_a Σ_c W[o,i,a,c] · x_pad[n, i, r + a − p, q + c − p]`, `p = (h−1)/2`.
///
/// Shapes: `x (n_b, n_i, n_r, n_c)`, `w (n_o, n_i, h, h)`, `b (1, n_o)` → `y (n_b, n_o, n_r, n_c)`.
pub fn conv2d_forward<F: Float>(
    x: ArrayView4<'_, F>,
    w: ArrayView4<'_, F>,
    b: ArrayView2<'_, F>,
) -> Array4<F> {
    let (n_b, n_i, n_r, n_c) = x.dim();
    let (n_o, _, h, _) = w.dim();
    let p = ((h - 1) / 2) as isize;
    Array4::from_shape_fn((n_b, n_o, n_r, n_c), |(n, o, r, q)| {
        let mut acc = b[[0, o]];
        for i in 0..n_i {
            for a in 0..h {
                for c in 0..h {
                    let xv = padded(
                        &x,
                        n,
                        i,
                        r as isize + a as isize - p,
                        q as isize + c as isize - p,
                    );
                    acc += w[[o, i, a, c]] * xv;
                }
            }
        }
        acc
    })
}

/// Gradients of [`conv2d_forward`] by loops, given `dy` = dℓ/dy:
/// - `db[o] = Σ_{n,r,q} dy[n,o,r,q]`;
/// - `dW[o,i,a,c] = Σ_{n,r,q} dy[n,o,r,q] · x_pad[n, i, r + a − p, q + c − p]`;
/// - `dx[n,i,r',q'] = Σ_{o,a,c} dy[n, o, r' − a + p, q' − c + p] · W[o,i,a,c]` (a full
///   convolution of `dy` with `W`, cropped to the input).
///
/// Returns `(dx, dW, db)` with the shapes of `x`, `w` and `(1, n_o)`.
pub fn conv2d_backward<F: Float>(
    x: ArrayView4<'_, F>,
    w: ArrayView4<'_, F>,
    dy: ArrayView4<'_, F>,
) -> (Array4<F>, Array4<F>, Array2<F>) {
    let (n_b, n_i, n_r, n_c) = x.dim();
    let (n_o, _, h, _) = w.dim();
    let p = ((h - 1) / 2) as isize;
    let db = Array2::from_shape_fn((1, n_o), |(_, o)| {
        dy.index_axis(ndarray::Axis(1), o).iter().copied().sum()
    });
    let dw = Array4::from_shape_fn((n_o, n_i, h, h), |(o, i, a, c)| {
        let mut acc = F::zero();
        for n in 0..n_b {
            for r in 0..n_r {
                for q in 0..n_c {
                    let xv = padded(
                        &x,
                        n,
                        i,
                        r as isize + a as isize - p,
                        q as isize + c as isize - p,
                    );
                    acc += dy[[n, o, r, q]] * xv;
                }
            }
        }
        acc
    });
    let dx = Array4::from_shape_fn((n_b, n_i, n_r, n_c), |(n, i, r, q)| {
        let mut acc = F::zero();
        for o in 0..n_o {
            for a in 0..h {
                for c in 0..h {
                    acc += padded(
                        &dy,
                        n,
                        o,
                        r as isize - a as isize + p,
                        q as isize - c as isize + p,
                    ) * w[[o, i, a, c]];
                }
            }
        }
        acc
    });
    (dx, dw, db)
}
