//! im2col / col2im: lowering a zero-padded "same" convolution to one matrix product.
//!
//! For one image `x` of shape `(c, rows, cols)` and an `h × h` filter, `im2col` builds the
//! matrix `X_col` of shape `(c·h·h, rows·cols)` with
//! `X_col[(i·h + di)·h + dj, r·cols + q] = x_pad[i, r + di, q + dj]`,
//! so that the convolution `y[o] = Σ_i W[o,i] ⋆ x[i]` becomes `Y = W_mat · X_col` with
//! `W_mat` the weights viewed as `(n_o, c·h·h)`. `col2im` is its adjoint: it adds every
//! column entry back onto the pixel it came from (used for dℓ/dx = col2im(W_matᵀ · dY)).

use crate::Float;

/// Sizes of one "same" convolution: input `(channels, rows, cols)`, filter `h × h`,
/// padding `(h−1)/2` before and `h/2` after (PyTorch's `padding='same'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `n_i`.
    pub channels: usize,
    /// Image rows `n_r`.
    pub rows: usize,
    /// Image columns `n_c`.
    pub cols: usize,
    /// Filter size `h`.
    pub h: usize,
}

impl ConvGeometry {
    /// Zero rows/columns added before the image: `(h−1)/2`.
    pub fn pad_before(&self) -> usize {
        (self.h - 1) / 2
    }

    /// Rows of `X_col`: `channels · h · h`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.h * self.h
    }

    /// Columns of `X_col`: `rows · cols`.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Elements of one input image: `channels · rows · cols`.
    pub fn image_len(&self) -> usize {
        self.channels * self.pixels()
    }

    /// For each filter tap `(i, di, dj)`, in `X_col` row order: the input channel, the row
    /// shift `di − pad` and column shift `dj − pad`.
    fn taps(&self) -> impl Iterator<Item = (usize, isize, isize)> + '_ {
        let pad = self.pad_before() as isize;
        let h = self.h;
        (0..self.channels).flat_map(move |i| {
            (0..h)
                .flat_map(move |di| (0..h).map(move |dj| (i, di as isize - pad, dj as isize - pad)))
        })
    }

    /// The valid output-column range `[lo, hi)` for a column shift `s`: those `q` with
    /// `0 ≤ q + s < cols`.
    fn valid_cols(&self, s: isize) -> (usize, usize) {
        let cols = self.cols as isize;
        let lo = (-s).clamp(0, cols);
        let hi = (cols - s).clamp(lo, cols);
        (lo as usize, hi as usize)
    }
}

/// Writes `X_col` (row-major `patch_len × pixels`) for one image `x` (`channels × rows × cols`).
///
/// # Panics
/// If the slices do not have the geometry's lengths.
pub fn im2col<F: Float>(x: &[F], g: &ConvGeometry, x_col: &mut [F]) {
    assert_eq!(x.len(), g.image_len(), "im2col: image length");
    assert_eq!(
        x_col.len(),
        g.patch_len() * g.pixels(),
        "im2col: column buffer length"
    );
    let (rows, cols, p) = (g.rows, g.cols, g.pixels());
    for ((channel, dr, dc), out_row) in g.taps().zip(x_col.chunks_exact_mut(p)) {
        let plane = &x[channel * p..(channel + 1) * p];
        let (lo, hi) = g.valid_cols(dc);
        for (r, dst) in out_row.chunks_exact_mut(cols).enumerate() {
            let sr = r as isize + dr;
            if sr < 0 || sr >= rows as isize {
                dst.fill(F::zero());
                continue;
            }
            let src = &plane[sr as usize * cols..(sr as usize + 1) * cols];
            dst[..lo].fill(F::zero());
            dst[hi..].fill(F::zero());
            let (s_lo, s_hi) = ((lo as isize + dc) as usize, (hi as isize + dc) as usize);
            dst[lo..hi].copy_from_slice(&src[s_lo..s_hi]);
        }
    }
}

/// The adjoint of [`im2col`]: `dx ← col2im(d_col)`, summing every entry of `d_col`
/// onto the input pixel it was copied from. `dx` is overwritten.
///
/// # Panics
/// If the slices do not have the geometry's lengths.
pub fn col2im<F: Float>(d_col: &[F], g: &ConvGeometry, dx: &mut [F]) {
    assert_eq!(dx.len(), g.image_len(), "col2im: image length");
    assert_eq!(
        d_col.len(),
        g.patch_len() * g.pixels(),
        "col2im: column buffer length"
    );
    dx.fill(F::zero());
    let (rows, cols, p) = (g.rows, g.cols, g.pixels());
    for ((channel, dr, dc), col_row) in g.taps().zip(d_col.chunks_exact(p)) {
        let plane = &mut dx[channel * p..(channel + 1) * p];
        let (lo, hi) = g.valid_cols(dc);
        for (r, src) in col_row.chunks_exact(cols).enumerate() {
            let sr = r as isize + dr;
            if sr < 0 || sr >= rows as isize {
                continue;
            }
            let dst = &mut plane[sr as usize * cols..(sr as usize + 1) * cols];
            let (d_lo, d_hi) = ((lo as isize + dc) as usize, (hi as isize + dc) as usize);
            for (d, s) in dst[d_lo..d_hi].iter_mut().zip(&src[lo..hi]) {
                *d += *s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im2col_of_a_2x2_image_with_3x3_filter() {
        // x = [1 2; 3 4], padding 1: tap (di, dj) = (0, 0) sees the pixel up-left.
        let g = ConvGeometry {
            channels: 1,
            rows: 2,
            cols: 2,
            h: 3,
        };
        let x = [1.0f64, 2.0, 3.0, 4.0];
        let mut col = vec![0.0; 9 * 4];
        im2col(&x, &g, &mut col);
        assert_eq!(&col[0..4], &[0.0, 0.0, 0.0, 1.0]); // up-left
        assert_eq!(&col[16..20], &[1.0, 2.0, 3.0, 4.0]); // centre
        assert_eq!(&col[32..36], &[4.0, 0.0, 0.0, 0.0]); // down-right
        assert_eq!(&col[20..24], &[2.0, 0.0, 4.0, 0.0]); // right
    }

    #[test]
    fn even_filter_pads_more_after() {
        // h = 2: pad 0 before, 1 after; taps see (r, q), (r, q+1), (r+1, q), (r+1, q+1).
        let g = ConvGeometry {
            channels: 1,
            rows: 2,
            cols: 2,
            h: 2,
        };
        let mut col = vec![0.0f32; 16];
        im2col(&[1.0, 2.0, 3.0, 4.0], &g, &mut col);
        assert_eq!(
            col,
            vec![1., 2., 3., 4., 2., 0., 4., 0., 3., 4., 0., 0., 4., 0., 0., 0.]
        );
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> = <x, col2im(c)> for any x, c.
        let g = ConvGeometry {
            channels: 2,
            rows: 3,
            cols: 5,
            h: 5,
        };
        let x: Vec<f64> = (0..g.image_len())
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        let c: Vec<f64> = (0..g.patch_len() * g.pixels())
            .map(|i| (i as f64 * 0.11).cos())
            .collect();
        let mut xc = vec![0.0; c.len()];
        im2col(&x, &g, &mut xc);
        let mut ct = vec![0.0; x.len()];
        col2im(&c, &g, &mut ct);
        let lhs: f64 = xc.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&ct).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-10, "{lhs} vs {rhs}");
    }
}
