//! im2col / col2im: lowering a zero-padded "same" convolution to one matrix product.
//!
//! For one image `x` of shape `(c, rows, cols)` and an `h × h` filter, `im2col` builds the
//! matrix `X_col` of shape `(c·h·h, rows·cols)` with
//! `X_col[(i·h + di)·h + dj, r·cols + q] = x_pad[i, r + di, q + dj]`,
//! so that the convolution `y[o] = Σ_i W[o,i] ⋆ x[i]` becomes `Y = W_mat · X_col` with
//! `W_mat` the weights viewed as `(n_o, c·h·h)`. `col2im` is its adjoint: it adds every
//! column entry back onto the pixel it came from (used for dℓ/dx = col2im(W_matᵀ · dY)).

use crate::Float;
use multiversion::multiversion;

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
}

/// For a tap shifted by `(dr, dc)`: the flat shift `s = dr·cols + dc` and the range
/// `[lo, hi)` of output pixels `p` whose source `p + s` lies inside the plane. Within that
/// range, the pixels whose column wraps around (`q + dc` outside `0..cols`) still need
/// zeroing; see [`wrapped_cols`].
fn shifted_range(g: &ConvGeometry, dr: isize, dc: isize) -> (isize, usize, usize) {
    let p = g.pixels() as isize;
    let s = dr * g.cols as isize + dc;
    let lo = (-s).clamp(0, p);
    let hi = (p - s).clamp(lo, p);
    (s, lo as usize, hi as usize)
}

/// The columns `[start, end)` of every row whose source column `q + dc` is outside the image.
fn wrapped_cols(cols: usize, dc: isize) -> (usize, usize) {
    if dc > 0 {
        (cols.saturating_sub(dc as usize), cols)
    } else {
        (0, (-dc as usize).min(cols))
    }
}

/// Zeroes columns `[start, end)` of every `cols`-wide row of `plane`.
fn zero_cols<F: Float>(plane: &mut [F], cols: usize, (start, end): (usize, usize)) {
    if end == start + 1 {
        // The common case (3×3 filters): one element per row, stored directly; `fill`
        // would make a `memset` call for each.
        for row in plane.chunks_exact_mut(cols) {
            row[start] = F::zero();
        }
    } else {
        for row in plane.chunks_exact_mut(cols) {
            row[start..end].fill(F::zero());
        }
    }
}

/// Writes `X_col` (row-major `patch_len × pixels`) for one image `x` (`channels × rows × cols`).
///
/// Each row of `X_col` is the input plane shifted by the tap's offset, so it is built as one
/// contiguous copy followed by zeroing the padded border.
///
/// # Panics
/// If the slices do not have the geometry's lengths.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn im2col<F: Float>(x: &[F], g: &ConvGeometry, x_col: &mut [F]) {
    assert_eq!(x.len(), g.image_len(), "im2col: image length");
    assert_eq!(
        x_col.len(),
        g.patch_len() * g.pixels(),
        "im2col: column buffer length"
    );
    let (cols, p) = (g.cols, g.pixels());
    for ((channel, dr, dc), out_row) in g.taps().zip(x_col.chunks_exact_mut(p)) {
        let plane = &x[channel * p..(channel + 1) * p];
        let (s, lo, hi) = shifted_range(g, dr, dc);
        out_row[..lo].fill(F::zero());
        out_row[hi..].fill(F::zero());
        if lo < hi {
            out_row[lo..hi]
                .copy_from_slice(&plane[(lo as isize + s) as usize..(hi as isize + s) as usize]);
        }
        if dc != 0 {
            zero_cols(out_row, cols, wrapped_cols(cols, dc));
        }
    }
}

/// The adjoint of [`im2col`]: `dx ← col2im(d_col)`, summing every entry of `d_col`
/// onto the input pixel it was copied from. `dx` is overwritten. `d_col` is used as
/// scratch: its entries for padded positions are set to zero.
///
/// # Panics
/// If the slices do not have the geometry's lengths.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn col2im<F: Float>(d_col: &mut [F], g: &ConvGeometry, dx: &mut [F]) {
    assert_eq!(dx.len(), g.image_len(), "col2im: image length");
    assert_eq!(
        d_col.len(),
        g.patch_len() * g.pixels(),
        "col2im: column buffer length"
    );
    dx.fill(F::zero());
    let (cols, p) = (g.cols, g.pixels());
    for ((channel, dr, dc), col_row) in g.taps().zip(d_col.chunks_exact_mut(p)) {
        let plane = &mut dx[channel * p..(channel + 1) * p];
        let (s, lo, hi) = shifted_range(g, dr, dc);
        if dc != 0 {
            zero_cols(col_row, cols, wrapped_cols(cols, dc));
        }
        if lo < hi {
            let dst = &mut plane[(lo as isize + s) as usize..(hi as isize + s) as usize];
            for (d, v) in dst.iter_mut().zip(&col_row[lo..hi]) {
                *d += *v;
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
        col2im(&mut c.clone(), &g, &mut ct);
        let lhs: f64 = xc.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&ct).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-10, "{lhs} vs {rhs}");
    }
}
