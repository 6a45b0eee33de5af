//! Direct convolution: the lab's first layer (3 → 16) throughout; its second (16 → 32, and
//! 32 → 16 transposed for the input gradient) in `f64` and wherever [`super::winograd`] does
//! not run.
//!
//! With `n_i·h·h` small (27 for 3 channels and 3×3 filters), im2col + GEMM spends more time
//! copying and packing than multiplying; with longer patches on wide images, a 16 × 16
//! register block still reuses each load as well as the GEMM does, without building
//! `X_col`. These kernels read a zero-padded copy of the image
//! instead, where tap `t = (i, a, b)` of output pixel `(r, c)` sits at the fixed offset
//! `off[t] = (i·rows_pad + a)·stride + b` from `r·stride + c`, and keep a block of sums in
//! registers:
//!
//! - forward, [`conv_forward`]: `y[o, r, c] = Σ_t W[o, t] · x_pad[off[t] + r·stride + c]`,
//!   for a block of filters × `COL_BLOCK` pixels of one row, every tap added in order;
//! - weight gradient, [`conv_weight_grad`]:
//!   `dWᵀ[t, o] = Σ_{r,c} x_pad[off[t] + r·stride + c] · dy[o, r, c]`, for a block of taps ×
//!   a block of filters, summed in `COL_BLOCK` lanes, then lane by lane;
//! - input gradient, [`conv_forward`] again: `dx[i] = Σ_o W'[i, o] ⋆ dy_pad[o]` with
//!   `W'[i, o, a, b] = W[o, i, h−1−a, h−1−b]` ([`flip_transpose`], [`transposed_geometry`]).
//!
//! `x_pad` has `(h−1)/2` zero rows and columns before the image and `h/2` after, as in
//! [`crate::kernels::im2col`], whose results these match up to rounding (the sums run in
//! another order). Two implementations of each: portable loops that the compiler vectorises
//! (compiled for AVX-512, AVX2 and NEON, the best picked at run time), and for `f32` on
//! processors with AVX-512 explicit kernels: 16 filters × 16 pixels in registers (forward);
//! for the weight gradient, 9 taps × 32 filters vectorised over filters (from a transposed
//! dℓ/dy, so no sum is reduced across lanes) or, for fewer than 32 filters, 3 taps × 4
//! filters vectorised over pixels. The tests check each against the portable loops.

use super::im2col::ConvGeometry;
use crate::Float;
use std::cell::RefCell;
use std::rc::Rc;

/// Pixels of one row per register block (one AVX-512 vector of `f32`).
const COL_BLOCK: usize = 16;

/// Layers whose patch (`n_i·h·h`) is at most this long run every product directly (the
/// lab's first layer): im2col's rows are too short for a GEMM to pay off.
pub const MAX_DIRECT_PATCH: usize = 32;

/// On images at least 16 columns wide (one register block), convolutions whose patch is at
/// most this long run directly too (the lab's second layer, 16 → 32, and the transposed
/// convolution of its input gradient, 32 → 16): the register blocks reuse each loaded value
/// as often as a GEMM does, without building `X_col`. Their weight gradient runs directly
/// where the filter-vectorised AVX-512 kernel does (see [`prefers_direct_weight_grad`]).
pub const MAX_DIRECT_FORWARD_PATCH: usize = 600;

/// Whether [`conv_forward`] should compute `W ⋆ x` for this geometry (see
/// [`MAX_DIRECT_PATCH`] and [`MAX_DIRECT_FORWARD_PATCH`]). The layer then keeps its input
/// padded ([`pad_image`]).
pub fn prefers_direct(g: &ConvGeometry) -> bool {
    g.patch_len() <= MAX_DIRECT_PATCH
        || (g.cols >= COL_BLOCK && g.patch_len() <= MAX_DIRECT_FORWARD_PATCH)
}

/// Whether [`conv_weight_grad`] should compute dℓ/dW for this geometry and float type: for
/// short patches always ([`MAX_DIRECT_PATCH`]), and wherever [`prefers_direct`] holds for
/// `f32` on processors with AVX-512, whose kernel runs as fast as the GEMM without building
/// `X_col`. Implies [`prefers_direct`].
pub fn prefers_direct_weight_grad<F: Float>(g: &ConvGeometry) -> bool {
    let explicit_kernel = F::as_f32_slice(&[]).is_some() && avx512_available();
    g.patch_len() <= MAX_DIRECT_PATCH || (explicit_kernel && prefers_direct(g))
}

/// Whether the explicit AVX-512 kernels run here.
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The geometry of dℓ/dx as a forward convolution of dℓ/dy, if the direct kernel should run
/// it: `dx[i] = Σ_o flip(W[o,i]) ⋆ dy_pad[o]` (see [`flip_transpose`]), with `n_o` input
/// channels. Only for odd `h`, where the transposed convolution pads as "same" does, and
/// for at least 16 input channels (its filters), a whole register block.
pub fn transposed_geometry(g: &ConvGeometry, n_o: usize) -> Option<ConvGeometry> {
    let t = ConvGeometry {
        channels: n_o,
        ..*g
    };
    (g.h % 2 == 1 && g.channels >= COL_BLOCK && prefers_direct(&t)).then_some(t)
}

/// The weights of the transposed convolution: `W'[i, o, a, b] = W[o, i, h−1−a, h−1−b]`.
///
/// # Shapes
/// `w`: `(n_o, n_i, h, h)` row-major → `(n_i, n_o, h, h)` row-major.
pub fn flip_transpose<F: Float>(w: &[F], n_o: usize, n_i: usize, h: usize) -> Vec<F> {
    assert_eq!(w.len(), n_o * n_i * h * h, "flip_transpose: weight length");
    let mut out = Vec::with_capacity(w.len());
    for i in 0..n_i {
        for o in 0..n_o {
            let filter = &w[(o * n_i + i) * h * h..][..h * h];
            out.extend(filter.iter().rev());
        }
    }
    out
}

/// Layout of the zero-padded image: `rows` rows of `stride` values per channel.
#[derive(Clone, Copy, Debug)]
struct PaddedLayout {
    rows: usize,
    stride: usize,
}

impl PaddedLayout {
    fn of(g: &ConvGeometry) -> Self {
        Self {
            rows: g.rows + g.h - 1,
            // Whole column blocks, so a block that starts inside a row never reads past the
            // padded image.
            stride: g.cols.div_ceil(COL_BLOCK) * COL_BLOCK + g.h - 1,
        }
    }

    fn len(&self, channels: usize) -> usize {
        channels * self.rows * self.stride
    }

    /// The layout of `g`, after checking that `padded` holds a padded image of it: the
    /// kernels' shared precondition, `what` naming the caller in the panic.
    fn checked(g: &ConvGeometry, padded: usize, what: &str) -> Self {
        let lay = Self::of(g);
        assert_eq!(padded, lay.len(g.channels), "{what}: padded length");
        lay
    }

    /// `off[t]` for every tap `t = (i, a, b)`, in `X_col` row order; remembered per thread
    /// for the last few geometries, since every image of a batch asks again.
    fn tap_offsets(&self, g: &ConvGeometry) -> Rc<[usize]> {
        thread_local! {
            static OFFSETS: RefCell<Vec<(ConvGeometry, Rc<[usize]>)>> = const { RefCell::new(Vec::new()) };
        }
        OFFSETS.with_borrow_mut(|cache| {
            if let Some((_, off)) = cache.iter().find(|(seen, _)| seen == g) {
                return Rc::clone(off);
            }
            let off: Rc<[usize]> = (0..g.channels)
                .flat_map(|i| (0..g.h).flat_map(move |a| (0..g.h).map(move |b| (i, a, b))))
                .map(|(i, a, b)| (i * self.rows + a) * self.stride + b)
                .collect();
            if cache.len() >= 8 {
                cache.clear();
            }
            cache.push((*g, Rc::clone(&off)));
            off
        })
    }
}

/// Number of values a padded image of geometry `g` takes (see [`pad_image`]).
pub fn padded_len(g: &ConvGeometry) -> usize {
    PaddedLayout::of(g).len(g.channels)
}

/// Writes the zero-padded copy of one image `x` (`channels × rows × cols`) into `padded`
/// (`padded_len(g)` values), laid out for [`conv_forward`] and [`conv_weight_grad`].
///
/// # Panics
/// If `x` or `padded` does not have the geometry's length.
pub fn pad_image<F: Float>(x: &[F], g: &ConvGeometry, padded: &mut [F]) {
    assert_eq!(x.len(), g.image_len(), "pad_image: image length");
    let lay = PaddedLayout::checked(g, padded.len(), "pad_image");
    let pad = g.pad_before();
    padded.fill(F::zero());
    if g.cols == 0 {
        return;
    }
    for (plane, out) in x
        .chunks_exact(g.pixels())
        .zip(padded.chunks_exact_mut(lay.rows * lay.stride))
    {
        for (row, out_row) in plane
            .chunks_exact(g.cols)
            .zip(out[pad * lay.stride..].chunks_exact_mut(lay.stride))
        {
            copy_row(&mut out_row[pad..pad + g.cols], row);
        }
    }
}

/// `dst = src` for one short image row, in whole blocks of [`COL_BLOCK`] values that the
/// compiler turns into vector moves (`copy_from_slice` calls `memmove` for each row).
#[inline(always)]
fn copy_row<F: Float>(dst: &mut [F], src: &[F]) {
    let mut dst_blocks = dst.chunks_exact_mut(COL_BLOCK);
    let mut src_blocks = src.chunks_exact(COL_BLOCK);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        let d: &mut [F; COL_BLOCK] = d.try_into().expect("block");
        *d = *<&[F; COL_BLOCK]>::try_from(s).expect("block");
    }
    for (d, s) in dst_blocks
        .into_remainder()
        .iter_mut()
        .zip(src_blocks.remainder())
    {
        *d = *s;
    }
}

/// `X_col` (as [`crate::kernels::im2col::im2col`] builds it) from an image's [`pad_image`]
/// copy: each row is one tap's shifted window, copied row by row without bounds checks.
///
/// # Panics
/// If `padded` or `x_col` does not have the geometry's length.
pub fn im2col_padded<F: Float>(padded: &[F], g: &ConvGeometry, x_col: &mut [F]) {
    let lay = PaddedLayout::checked(g, padded.len(), "im2col_padded");
    assert_eq!(
        x_col.len(),
        g.patch_len() * g.pixels(),
        "im2col_padded: x_col length"
    );
    if g.pixels() == 0 {
        return;
    }
    for (&o, row) in lay
        .tap_offsets(g)
        .iter()
        .zip(x_col.chunks_exact_mut(g.pixels()))
    {
        for (r, out) in row.chunks_exact_mut(g.cols).enumerate() {
            copy_row(out, &padded[o + r * lay.stride..][..g.cols]);
        }
    }
}

/// `y = W ⋆ x` (no bias) for one image, from its [`pad_image`] copy.
///
/// # Shapes
/// `padded`: from [`pad_image`] with `g`; `w`: `(n_o, n_i·h·h)` row-major;
/// `y`: `(n_o, rows, cols)`, overwritten.
///
/// # Panics
/// If the slices do not match `g` and `n_o`.
pub fn conv_forward<F: Float>(padded: &[F], g: &ConvGeometry, w: &[F], n_o: usize, y: &mut [F]) {
    let lay = PaddedLayout::checked(g, padded.len(), "conv_forward");
    assert_eq!(w.len(), n_o * g.patch_len(), "conv_forward: weight length");
    assert_eq!(y.len(), n_o * g.pixels(), "conv_forward: output length");
    let off = lay.tap_offsets(g);
    let mut o0 = 0;
    #[cfg(target_arch = "x86_64")]
    if let (Some(padded), Some(w), Some(y)) = (
        F::as_f32_slice(padded),
        F::as_f32_slice(w),
        F::as_f32_slice_mut(&mut *y),
    ) {
        if avx512::available() {
            o0 = avx512::conv_forward(padded, g, lay, &off, w, n_o, y);
        }
    }
    portable::conv_forward(padded, g, lay, &off, w, o0..n_o, y);
}

/// `y = maxpool₂(relu(W ⋆ x + b))` of one image, from its [`pad_image`] copy, with one
/// gradient routing byte per output as [`crate::kernels::relu_pool::bias_relu_pool2`] writes
/// it, value for value and bit for bit: the explicit kernel keeps two rows of 8 filters in
/// registers and pools them there, so the full-size output never reaches memory. Returns
/// `false`, writing nothing, where it does not run (no AVX-512, not `f32`, filters not a
/// multiple of 8, odd rows or columns): the caller then convolves and pools separately.
///
/// # Shapes
/// `padded`: from [`pad_image`] with `g`; `w`: `(n_o, n_i·h·h)`; `b`: `n_o`;
/// `y`, `mask`: `(n_o, rows/2, cols/2)`.
pub fn conv_bias_relu_pool2<F: Float>(
    padded: &[F],
    g: &ConvGeometry,
    w: &[F],
    b: &[F],
    n_o: usize,
    y: &mut [F],
    mask: &mut [u8],
) -> bool {
    let lay = PaddedLayout::checked(g, padded.len(), "conv_bias_relu_pool2");
    assert_eq!(
        w.len(),
        n_o * g.patch_len(),
        "conv_bias_relu_pool2: weight length"
    );
    assert_eq!(b.len(), n_o, "conv_bias_relu_pool2: bias length");
    assert_eq!(
        y.len(),
        n_o * (g.rows / 2) * (g.cols / 2),
        "conv_bias_relu_pool2: output length"
    );
    assert_eq!(mask.len(), y.len(), "conv_bias_relu_pool2: mask length");
    let even = g.rows.is_multiple_of(2) && g.cols.is_multiple_of(2);
    #[cfg(target_arch = "x86_64")]
    if let (Some(padded), Some(w), Some(b), Some(y)) = (
        F::as_f32_slice(padded),
        F::as_f32_slice(w),
        F::as_f32_slice(b),
        F::as_f32_slice_mut(&mut *y),
    ) {
        if even && n_o.is_multiple_of(avx512::POOL_FILTERS) && avx512::pooling_available() {
            let off = lay.tap_offsets(g);
            for o0 in (0..n_o).step_by(avx512::POOL_FILTERS) {
                // SAFETY: the features were checked; reads of `padded` stay inside it as in
                // `conv_forward` (rows r and r + 1 < rows); writes are masked to each output
                // row of `cols/2` values of filters `o0..o0 + 8 ≤ n_o`.
                unsafe { avx512::conv_bias_relu_pool2(padded, g, lay, &off, w, b, o0, y, mask) };
            }
            return true;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (even, padded, w, b, y, mask); // only the explicit kernel pools in registers
    false
}

/// `dWᵀ ← [dWᵀ +] Σ_pixels x_pad·dy` for one image:
/// `dWᵀ[t, o] = Σ_{r,c} x_pad[off[t] + r·stride + c] · dy[o, r, c]`.
///
/// # Shapes
/// `padded`: from [`pad_image`] with `g`; `dy`: `(n_o, rows, cols)`;
/// `w_grad_t`: `(n_i·h·h, n_o)` row-major, overwritten or, if `accumulate`, added to.
///
/// # Panics
/// If the slices do not match `g` and `n_o`.
pub fn conv_weight_grad<F: Float>(
    padded: &[F],
    g: &ConvGeometry,
    dy: &[F],
    n_o: usize,
    w_grad_t: &mut [F],
    accumulate: bool,
) {
    let lay = PaddedLayout::checked(g, padded.len(), "conv_weight_grad");
    assert_eq!(dy.len(), n_o * g.pixels(), "conv_weight_grad: dy length");
    assert_eq!(
        w_grad_t.len(),
        g.patch_len() * n_o,
        "conv_weight_grad: gradient length"
    );
    if !accumulate {
        w_grad_t.fill(F::zero());
    }
    let off = lay.tap_offsets(g);
    let mut o0 = 0;
    #[cfg(target_arch = "x86_64")]
    if let (Some(padded), Some(dy), Some(w_grad_t)) = (
        F::as_f32_slice(padded),
        F::as_f32_slice(dy),
        F::as_f32_slice_mut(&mut *w_grad_t),
    ) {
        if avx512::available() {
            o0 = avx512::conv_weight_grad(padded, g, lay, &off, dy, n_o, w_grad_t);
        }
    }
    portable::conv_weight_grad(padded, g, lay, &off, dy, o0..n_o, n_o, w_grad_t);
}

/// The kernels in plain Rust, for any target and for `f64`.
mod portable {
    use super::{PaddedLayout, COL_BLOCK};
    use crate::kernels::im2col::ConvGeometry;
    use crate::Float;
    use multiversion::multiversion;
    use std::ops::Range;

    /// Filters per register block.
    const OUT_BLOCK: usize = 4;

    /// [`super::conv_forward`] for filters `filters` only.
    #[multiversion(targets(
        "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
        "x86_64+avx2+fma",
        "aarch64+neon"
    ))]
    pub(super) fn conv_forward<F: Float>(
        padded: &[F],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        w: &[F],
        filters: Range<usize>,
        y: &mut [F],
    ) {
        let mut o0 = filters.start;
        while o0 + OUT_BLOCK <= filters.end {
            forward_block::<F, OUT_BLOCK>(padded, g, lay, off, w, o0, y);
            o0 += OUT_BLOCK;
        }
        for o in o0..filters.end {
            forward_block::<F, 1>(padded, g, lay, off, w, o, y);
        }
    }

    /// Filters `o0..o0+OB`: `OB × COL_BLOCK` sums held in registers while every tap is added
    /// in order.
    #[inline(always)]
    fn forward_block<F: Float, const OB: usize>(
        padded: &[F],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        w: &[F],
        o0: usize,
        y: &mut [F],
    ) {
        let (k, p) = (g.patch_len(), g.pixels());
        let filters: [&[F]; OB] = std::array::from_fn(|f| &w[(o0 + f) * k..(o0 + f + 1) * k]);
        for r in 0..g.rows {
            for c0 in (0..g.cols).step_by(COL_BLOCK) {
                let window = &padded[r * lay.stride + c0..];
                let mut acc = [[F::zero(); COL_BLOCK]; OB];
                for (t, &o) in off.iter().enumerate() {
                    let xv: &[F; COL_BLOCK] = window[o..o + COL_BLOCK].try_into().expect("block");
                    for f in 0..OB {
                        axpy(&mut acc[f], filters[f][t], xv);
                    }
                }
                let n = COL_BLOCK.min(g.cols - c0);
                for (f, acc_f) in acc.iter().enumerate() {
                    let start = (o0 + f) * p + r * g.cols + c0;
                    y[start..start + n].copy_from_slice(&acc_f[..n]);
                }
            }
        }
    }

    /// [`super::conv_weight_grad`] (accumulating) for filters `filters` only.
    #[multiversion(targets(
        "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
        "x86_64+avx2+fma",
        "aarch64+neon"
    ))]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_weight_grad<F: Float>(
        padded: &[F],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        dy: &[F],
        filters: Range<usize>,
        n_o: usize,
        w_grad_t: &mut [F],
    ) {
        let mut o0 = filters.start;
        while o0 + OUT_BLOCK <= filters.end {
            weight_grad_block::<F, OUT_BLOCK>(padded, g, lay, off, dy, o0, n_o, w_grad_t);
            o0 += OUT_BLOCK;
        }
        for o in o0..filters.end {
            weight_grad_block::<F, 1>(padded, g, lay, off, dy, o, n_o, w_grad_t);
        }
    }

    /// Filters `o0..o0+OB`, one tap at a time: `OB × COL_BLOCK` partial sums over the
    /// pixels, then each filter's lanes summed in order.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn weight_grad_block<F: Float, const OB: usize>(
        padded: &[F],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        dy: &[F],
        o0: usize,
        n_o: usize,
        w_grad_t: &mut [F],
    ) {
        let (p, cols) = (g.pixels(), g.cols);
        let planes: [&[F]; OB] = std::array::from_fn(|f| &dy[(o0 + f) * p..(o0 + f + 1) * p]);
        let whole = cols / COL_BLOCK * COL_BLOCK;
        for (t, &o) in off.iter().enumerate() {
            let mut acc = [[F::zero(); COL_BLOCK]; OB];
            let mut tail = [F::zero(); OB];
            for r in 0..g.rows {
                let x_row = &padded[o + r * lay.stride..][..cols];
                for c0 in (0..whole).step_by(COL_BLOCK) {
                    let xv: &[F; COL_BLOCK] = x_row[c0..c0 + COL_BLOCK].try_into().expect("block");
                    for f in 0..OB {
                        let dv: &[F; COL_BLOCK] = planes[f][r * cols + c0..][..COL_BLOCK]
                            .try_into()
                            .expect("block");
                        mul_add(&mut acc[f], xv, dv);
                    }
                }
                for (t_f, plane) in tail.iter_mut().zip(&planes) {
                    for c in whole..cols {
                        *t_f += x_row[c] * plane[r * cols + c];
                    }
                }
            }
            for (f, (acc_f, &t_f)) in acc.iter().zip(&tail).enumerate() {
                let lanes = acc_f.iter().fold(F::zero(), |s, &v| s + v);
                w_grad_t[t * n_o + o0 + f] += lanes + t_f;
            }
        }
    }

    /// `acc += s · x`, lane by lane.
    #[inline(always)]
    fn axpy<F: Float>(acc: &mut [F; COL_BLOCK], s: F, x: &[F; COL_BLOCK]) {
        for l in 0..COL_BLOCK {
            acc[l] += s * x[l];
        }
    }

    /// `acc += x ⊙ d`, lane by lane.
    #[inline(always)]
    fn mul_add<F: Float>(acc: &mut [F; COL_BLOCK], x: &[F; COL_BLOCK], d: &[F; COL_BLOCK]) {
        for l in 0..COL_BLOCK {
            acc[l] += x[l] * d[l];
        }
    }
}

/// The `f32` kernels for AVX-512, in explicit intrinsics: the compiler does not find these
/// register blocks by itself (it vectorises across filters with gathers instead).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{PaddedLayout, COL_BLOCK};
    use crate::kernels::im2col::ConvGeometry;
    use std::arch::x86_64::*;

    /// Filters per forward block: 16 sums of 16 pixels in 16 of the 32 registers.
    const FORWARD_FILTERS: usize = 16;
    /// Taps per [`by_filters`] block: 9 taps × 2 vectors of 16 filters = 18 sums in
    /// registers, a whole 3×3 filter per block.
    const GRAD_TAPS: usize = 9;
    /// Taps × filters per [`by_pixels`] block: 12 sums (more spill to the stack).
    const PIXEL_GRAD_TAPS: usize = 3;
    const PIXEL_GRAD_FILTERS: usize = 4;

    /// Whether this processor runs these kernels (checked once, then cached by std).
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// The lanes `0..n` of a 16-lane vector.
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// [`super::conv_forward`] for the leading whole blocks of [`FORWARD_FILTERS`] filters;
    /// returns the first filter it did not do. Requires [`available`].
    pub(super) fn conv_forward(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        w: &[f32],
        n_o: usize,
        y: &mut [f32],
    ) -> usize {
        let blocks = n_o / FORWARD_FILTERS;
        for block in 0..blocks {
            // SAFETY: `available()` was checked by the caller; the lengths were checked by
            // `super::conv_forward`: every read `r·stride + c0 + off[t] + 0..16` stays inside
            // `padded` because `c0 + 16 + h − 1 ≤ stride` and `r + h − 1 < rows_pad`, and every
            // write is masked to the row's `cols`.
            unsafe { forward_block(padded, g, lay, off, w, block * FORWARD_FILTERS, y) };
        }
        blocks * FORWARD_FILTERS
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn forward_block(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        w: &[f32],
        o0: usize,
        y: &mut [f32],
    ) {
        let (k, p) = (g.patch_len(), g.pixels());
        let w = &w[o0 * k..(o0 + FORWARD_FILTERS) * k];
        let y = &mut y[o0 * p..(o0 + FORWARD_FILTERS) * p];
        for r in 0..g.rows {
            for c0 in (0..g.cols).step_by(COL_BLOCK) {
                let window = padded.as_ptr().add(r * lay.stride + c0);
                let mut acc = [_mm512_setzero_ps(); FORWARD_FILTERS];
                for (t, &o) in off.iter().enumerate() {
                    let xv = _mm512_loadu_ps(window.add(o));
                    for (f, acc_f) in acc.iter_mut().enumerate() {
                        let w_ft = _mm512_set1_ps(*w.get_unchecked(f * k + t));
                        *acc_f = _mm512_fmadd_ps(w_ft, xv, *acc_f);
                    }
                }
                let keep = lanes(g.cols - c0);
                for (f, acc_f) in acc.iter().enumerate() {
                    let out = y.as_mut_ptr().add(f * p + r * g.cols + c0);
                    _mm512_mask_storeu_ps(out, keep, *acc_f);
                }
            }
        }
    }

    /// Filters per block of [`conv_bias_relu_pool2`]: 8 filters × 2 rows × 16 pixels = 16
    /// sums in registers.
    pub(super) const POOL_FILTERS: usize = 8;

    /// Whether [`conv_bias_relu_pool2`] runs here (it also needs BMI2 for the routing bytes).
    pub(super) fn pooling_available() -> bool {
        available() && is_x86_feature_detected!("bmi2")
    }

    /// [`super::conv_bias_relu_pool2`] for filters `o0..o0 + 8`, both rows of each pooling
    /// window at once. Requires [`pooling_available`], even rows and columns.
    #[target_feature(enable = "avx512f,bmi2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn conv_bias_relu_pool2(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        w: &[f32],
        b: &[f32],
        o0: usize,
        y: &mut [f32],
        mask: &mut [u8],
    ) {
        let k = g.patch_len();
        let (out_rows, out_cols) = (g.rows / 2, g.cols / 2);
        let plane = out_rows * out_cols;
        let w = &w[o0 * k..(o0 + POOL_FILTERS) * k];
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
        let zero = _mm512_setzero_ps();
        // Two bits per byte: bits 2j, 2j + 1 of a lane mask go to bits 0, 1 of byte j.
        const PAIR_LSBS: u64 = 0x0303_0303_0303_0303;
        for r in (0..g.rows).step_by(2) {
            for c0 in (0..g.cols).step_by(COL_BLOCK) {
                let top = padded.as_ptr().add(r * lay.stride + c0);
                let bottom = top.add(lay.stride);
                let mut acc = [[zero; 2]; POOL_FILTERS];
                for (t, &o) in off.iter().enumerate() {
                    let (x0, x1) = (_mm512_loadu_ps(top.add(o)), _mm512_loadu_ps(bottom.add(o)));
                    for (f, acc_f) in acc.iter_mut().enumerate() {
                        let w_ft = _mm512_set1_ps(*w.get_unchecked(f * k + t));
                        acc_f[0] = _mm512_fmadd_ps(w_ft, x0, acc_f[0]);
                        acc_f[1] = _mm512_fmadd_ps(w_ft, x1, acc_f[1]);
                    }
                }
                let outs = ((g.cols - c0) / 2).min(COL_BLOCK / 2);
                let keep = lanes(outs);
                let at = (r / 2) * out_cols + c0 / 2;
                for (f, acc_f) in acc.iter().enumerate() {
                    let bias = _mm512_set1_ps(b[o0 + f]);
                    let (a, c) = (_mm512_add_ps(acc_f[0], bias), _mm512_add_ps(acc_f[1], bias));
                    // Each window's maximum in both of its lanes: ReLU, the larger row, then the
                    // larger of each lane pair (an in-lane swap of neighbours).
                    let v = _mm512_max_ps(_mm512_max_ps(a, zero), _mm512_max_ps(c, zero));
                    let m = _mm512_max_ps(v, _mm512_permute_ps::<0b10_11_00_01>(v));
                    // Routing: lane 2j / 2j + 1 of a row is bit 0 / 1 (top) or 2 / 3 (bottom)
                    // of byte j.
                    let mut bytes = 0u64;
                    for (shift, t) in [(0, a), (2, c)] {
                        let routed = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, zero)
                            & _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(t, m);
                        bytes |= _pdep_u64(u64::from(routed), PAIR_LSBS) << shift;
                    }
                    let m = _mm512_permutexvar_ps(even, m);
                    let out = (o0 + f) * plane + at;
                    _mm512_mask_storeu_ps(y.as_mut_ptr().add(out), keep, m);
                    let bytes = bytes.to_le_bytes();
                    if outs == COL_BLOCK / 2 {
                        // A whole block: one 8-byte store (a variable length calls memcpy).
                        mask[out..out + COL_BLOCK / 2].copy_from_slice(&bytes);
                    } else {
                        mask[out..out + outs].copy_from_slice(&bytes[..outs]);
                    }
                }
            }
        }
    }

    /// [`super::conv_weight_grad`] (accumulating): [`by_filters`] for 32 filters or more,
    /// else [`by_pixels`]; returns the first filter it did not do. Requires [`available`].
    pub(super) fn conv_weight_grad(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        dy: &[f32],
        n_o: usize,
        w_grad_t: &mut [f32],
    ) -> usize {
        if n_o >= 32 {
            by_filters(padded, g, lay, off, dy, n_o, w_grad_t)
        } else {
            by_pixels(padded, g, lay, off, dy, n_o, w_grad_t)
        }
    }

    /// [`super::conv_weight_grad`] (accumulating) vectorised over pixels, for the leading
    /// whole blocks of [`PIXEL_GRAD_FILTERS`] filters; returns the first filter it did not
    /// do. Requires [`available`]. Each block of taps × filters sums 16-lane partials over
    /// every pixel, then reduces them: for few filters, where [`by_filters`] would broadcast
    /// one input value per multiply.
    pub(super) fn by_pixels(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        dy: &[f32],
        n_o: usize,
        w_grad_t: &mut [f32],
    ) -> usize {
        let blocks = n_o / PIXEL_GRAD_FILTERS;
        for block in 0..blocks {
            let o0 = block * PIXEL_GRAD_FILTERS;
            let mut t0 = 0;
            while t0 < off.len() {
                let taps = (off.len() - t0).min(PIXEL_GRAD_TAPS);
                let sums = if taps == PIXEL_GRAD_TAPS {
                    // SAFETY: as for `conv_forward`: reads of `padded` stay inside it
                    // (whole-row reads are masked to `cols`), reads of `dy` are masked to
                    // each row of `cols` pixels of filters `o0..o0 + 4 ≤ n_o`.
                    unsafe {
                        pixel_block::<PIXEL_GRAD_TAPS>(padded, g, lay, &off[t0..t0 + taps], dy, o0)
                    }
                    .to_vec()
                } else {
                    off[t0..t0 + taps]
                        .iter()
                        .flat_map(|&o| {
                            // SAFETY: as above, for one tap.
                            unsafe { pixel_block::<1>(padded, g, lay, &[o], dy, o0) }
                        })
                        .collect()
                };
                for (j, row) in sums.iter().enumerate() {
                    let out = &mut w_grad_t[(t0 + j) * n_o + o0..][..PIXEL_GRAD_FILTERS];
                    out.iter_mut().zip(row).for_each(|(a, v)| *a += *v);
                }
                t0 += taps;
            }
        }
        blocks * PIXEL_GRAD_FILTERS
    }

    /// `TB` taps (offsets `off`) × filters `o0..o0+4`: the sums over every pixel, each
    /// accumulated in 16 lanes, then reduced.
    #[target_feature(enable = "avx512f")]
    unsafe fn pixel_block<const TB: usize>(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        dy: &[f32],
        o0: usize,
    ) -> [[f32; PIXEL_GRAD_FILTERS]; TB] {
        let (p, cols) = (g.pixels(), g.cols);
        let dy = &dy[o0 * p..(o0 + PIXEL_GRAD_FILTERS) * p];
        let mut acc = [[_mm512_setzero_ps(); PIXEL_GRAD_FILTERS]; TB];
        for r in 0..g.rows {
            for c0 in (0..cols).step_by(COL_BLOCK) {
                let keep = lanes(cols - c0);
                // Plain loops, not closures: a closure is compiled without this function's
                // target features unless inlined, and then every load becomes a call.
                let mut dv = [_mm512_setzero_ps(); PIXEL_GRAD_FILTERS];
                for (f, d_f) in dv.iter_mut().enumerate() {
                    *d_f = _mm512_maskz_loadu_ps(keep, dy.as_ptr().add(f * p + r * cols + c0));
                }
                for (acc_j, &o) in acc.iter_mut().zip(off) {
                    let x_j =
                        _mm512_maskz_loadu_ps(keep, padded.as_ptr().add(o + r * lay.stride + c0));
                    for (acc_jf, &d_f) in acc_j.iter_mut().zip(&dv) {
                        *acc_jf = _mm512_fmadd_ps(x_j, d_f, *acc_jf);
                    }
                }
            }
        }
        let mut sums = [[0.0; PIXEL_GRAD_FILTERS]; TB];
        for (sums_j, acc_j) in sums.iter_mut().zip(&acc) {
            for (s, &v) in sums_j.iter_mut().zip(acc_j) {
                *s = _mm512_reduce_add_ps(v);
            }
        }
        sums
    }

    /// [`super::conv_weight_grad`] (accumulating) for every filter; returns `n_o`. Requires
    /// [`available`].
    ///
    /// Vectorised over filters, so that no sum needs reducing across lanes: dℓ/dy is first
    /// transposed to `dyᵀ[q, o]` (a thread-local buffer, rows padded to whole vectors), then
    /// each block of taps × filter vectors holds its sums in registers over every pixel:
    /// `dWᵀ[t, o..o+16] += x_pad[off[t] + r·stride + c] · dyᵀ[r·cols + c, o..o+16]`.
    pub(super) fn by_filters(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        off: &[usize],
        dy: &[f32],
        n_o: usize,
        w_grad_t: &mut [f32],
    ) -> usize {
        let p = g.pixels();
        let vectors = n_o.div_ceil(16);
        let width = vectors * 16;
        DY_T.with_borrow_mut(|dy_t| {
            // Every value is overwritten by the transpose: only a change of size fills.
            dy_t.resize(p * width, 0.0);
            // SAFETY: `available()` was checked by the caller; `dy` holds n_o × p values
            // (checked by `super::conv_weight_grad`) and `dy_t` p × width.
            unsafe { transpose_filters(dy, n_o, p, width, dy_t) };
            let mut v0 = 0;
            while v0 < vectors {
                let fv = (vectors - v0).min(2);
                let mut t0 = 0;
                while t0 < off.len() {
                    let taps = if off.len() - t0 >= GRAD_TAPS {
                        GRAD_TAPS
                    } else {
                        1
                    };
                    let block = GradBlock {
                        off: &off[t0..t0 + taps],
                        v0,
                        width,
                        n_o,
                    };
                    let out = &mut w_grad_t[t0 * n_o..(t0 + taps) * n_o];
                    // SAFETY: reads of `padded` stay inside it (`off[t] + r·stride + c` is a
                    // pixel of the padded image), reads of `dy_t` inside its p × width
                    // values, and writes are masked to the filters < n_o of `out`'s rows.
                    unsafe {
                        match (taps, fv) {
                            (GRAD_TAPS, 2) => {
                                grad_block::<GRAD_TAPS, 2>(padded, g, lay, dy_t, &block, out)
                            }
                            (GRAD_TAPS, _) => {
                                grad_block::<GRAD_TAPS, 1>(padded, g, lay, dy_t, &block, out)
                            }
                            (_, 2) => grad_block::<1, 2>(padded, g, lay, dy_t, &block, out),
                            _ => grad_block::<1, 1>(padded, g, lay, dy_t, &block, out),
                        }
                    }
                    t0 += taps;
                }
                v0 += fv;
            }
        });
        n_o
    }

    thread_local! {
        /// dℓ/dy transposed to pixel-major, reused across calls on this thread.
        static DY_T: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// `dy_t[q·width + o] = dy[o·p + q]` for `o < n_o` (the rest zero), in blocks of 16 × 16
    /// transposed in registers (gathers are slow on some processors).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_filters(
        dy: &[f32],
        n_o: usize,
        p: usize,
        width: usize,
        dy_t: &mut [f32],
    ) {
        for o0 in (0..n_o).step_by(16) {
            let filters = (n_o - o0).min(16);
            for q0 in (0..p).step_by(16) {
                let pixels = (p - q0).min(16);
                let keep = lanes(pixels);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (i, row) in rows.iter_mut().enumerate().take(filters) {
                    *row = _mm512_maskz_loadu_ps(keep, dy.as_ptr().add((o0 + i) * p + q0));
                }
                transpose16(&mut rows);
                for (j, row) in rows.iter().enumerate().take(pixels) {
                    _mm512_storeu_ps(dy_t.as_mut_ptr().add((q0 + j) * width + o0), *row);
                }
            }
        }
    }

    /// Transposes a 16 × 16 block held as 16 row vectors: 32-bit, then 64-bit interleaves
    /// within 128-bit lanes, then two rounds of 128-bit lane shuffles.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn transpose16(r: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            let pd = |x: __m512| _mm512_castps_pd(x);
            r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        for half in 0..2 {
            for i in 0..4 {
                let (a, b) = (r[8 * half + i], r[8 * half + 4 + i]);
                t[8 * half + i] = _mm512_shuffle_f32x4::<0x88>(a, b);
                t[8 * half + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
            r[8 + i] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[8 + i]);
        }
    }

    /// What one weight-gradient block covers: taps `off` (their offsets) × filter vectors
    /// `v0..v0 + FV` of `dyᵀ` rows of `width` values, for `n_o` filters.
    struct GradBlock<'a> {
        off: &'a [usize],
        v0: usize,
        width: usize,
        n_o: usize,
    }

    /// `TB` taps × `FV` vectors of 16 filters: `TB·FV` sums in registers over every pixel,
    /// then added to `out` (`TB` rows of `n_o`).
    #[target_feature(enable = "avx512f")]
    unsafe fn grad_block<const TB: usize, const FV: usize>(
        padded: &[f32],
        g: &ConvGeometry,
        lay: PaddedLayout,
        dy_t: &[f32],
        block: &GradBlock<'_>,
        out: &mut [f32],
    ) {
        let mut off = [0usize; TB];
        off.copy_from_slice(block.off);
        let mut acc = [[_mm512_setzero_ps(); FV]; TB];
        let (x, d) = (padded.as_ptr(), dy_t.as_ptr().add(block.v0 * 16));
        for r in 0..g.rows {
            for c in 0..g.cols {
                let (q, at) = (r * g.cols + c, r * lay.stride + c);
                let mut dv = [_mm512_setzero_ps(); FV];
                for (v, dv_v) in dv.iter_mut().enumerate() {
                    *dv_v = _mm512_loadu_ps(d.add(q * block.width + v * 16));
                }
                for (acc_j, &o) in acc.iter_mut().zip(&off) {
                    let xv = _mm512_set1_ps(*x.add(o + at));
                    for (acc_jv, &dv_v) in acc_j.iter_mut().zip(&dv) {
                        *acc_jv = _mm512_fmadd_ps(xv, dv_v, *acc_jv);
                    }
                }
            }
        }
        for (j, acc_j) in acc.iter().enumerate() {
            for (v, &sum) in acc_j.iter().enumerate() {
                let o0 = (block.v0 + v) * 16;
                let keep = lanes(block.n_o - o0);
                let dst = out.as_mut_ptr().add(j * block.n_o + o0);
                _mm512_mask_storeu_ps(
                    dst,
                    keep,
                    _mm512_add_ps(_mm512_maskz_loadu_ps(keep, dst), sum),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{matmul, MatRef};
    use crate::kernels::im2col::im2col;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random<F: Float>(n: usize, seed: u64) -> Vec<F> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| F::from_f64(rng.random_range(-1.0..1.0)))
            .collect()
    }

    /// `(n_i, n_o, rows, cols, h)`: column tails (cols not a multiple of 16), filter counts
    /// that are and are not multiples of the register blocks (16 forward, 4 gradient), tap
    /// counts that are not multiples of 3, even and odd filters and single rows.
    const CASES: [(usize, usize, usize, usize, usize); 9] = [
        (3, 16, 32, 32, 3),
        (3, 20, 6, 17, 3),
        (1, 16, 3, 40, 5),
        (3, 5, 7, 9, 3),
        (1, 2, 1, 17, 3),
        (2, 7, 5, 33, 2),
        (1, 3, 6, 4, 5),
        (3, 4, 4, 16, 1),
        (2, 6, 3, 20, 4),
    ];

    fn geometry(&(n_i, _, rows, cols, h): &(usize, usize, usize, usize, usize)) -> ConvGeometry {
        ConvGeometry {
            channels: n_i,
            rows,
            cols,
            h,
        }
    }

    #[test]
    fn worked_example_sums_each_neighbourhood() {
        // All-ones 3×3 filter over [[1,2,3],[4,5,6],[7,8,9]]: each output is the sum of
        // its zero-padded neighbourhood.
        let g = ConvGeometry {
            channels: 1,
            rows: 3,
            cols: 3,
            h: 3,
        };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut padded = vec![0.0; padded_len(&g)];
        pad_image(&x, &g, &mut padded);
        let mut y = vec![0.0f32; 9];
        conv_forward(&padded, &g, &[1.0; 9], 1, &mut y);
        assert_eq!(y, [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]);
        // dy = 1 everywhere: the centre tap's gradient is Σx = 45, the top-left tap's is
        // the sum of the pixels it reaches (rows 0–1, columns 0–1) = 1+2+4+5 = 12.
        let mut w_grad_t = vec![0.0f32; 9];
        conv_weight_grad(&padded, &g, &[1.0; 9], 1, &mut w_grad_t, false);
        assert_eq!(w_grad_t[4], 45.0);
        assert_eq!(w_grad_t[0], 12.0);
        assert_eq!(w_grad_t[8], 5.0 + 6.0 + 8.0 + 9.0);
    }

    /// The direct forward against im2col + GEMM, for every case, to within `tol` relative
    /// to the largest output.
    fn check_forward<F: Float>(tol: f64) {
        for (seed, case) in CASES.iter().enumerate() {
            let (g, n_o) = (geometry(case), case.1);
            let x = random::<F>(g.image_len(), seed as u64);
            let w = random::<F>(n_o * g.patch_len(), 100 + seed as u64);
            let mut x_col = vec![F::zero(); g.patch_len() * g.pixels()];
            im2col(&x, &g, &mut x_col);
            let mut expected = vec![F::zero(); n_o * g.pixels()];
            matmul(
                MatRef::row_major(&w, n_o, g.patch_len()),
                MatRef::row_major(&x_col, g.patch_len(), g.pixels()),
                &mut expected,
                false,
            );
            let mut padded = vec![F::zero(); padded_len(&g)];
            pad_image(&x, &g, &mut padded);
            let mut y = vec![F::nan(); n_o * g.pixels()];
            conv_forward(&padded, &g, &w, n_o, &mut y);
            let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.as_f64().abs()));
            for (a, b) in y.iter().zip(&expected) {
                let err = (a.as_f64() - b.as_f64()).abs() / scale;
                assert!(err < tol, "{case:?}: {a} vs {b}");
            }
        }
    }

    /// The direct weight gradient against im2col + GEMM, overwriting and accumulating.
    fn check_weight_grad<F: Float>(tol: f64) {
        for (seed, case) in CASES.iter().enumerate() {
            let (g, n_o) = (geometry(case), case.1);
            let x = random::<F>(g.image_len(), seed as u64);
            let dy = random::<F>(n_o * g.pixels(), 200 + seed as u64);
            let mut x_col = vec![F::zero(); g.patch_len() * g.pixels()];
            im2col(&x, &g, &mut x_col);
            let mut expected = vec![F::zero(); g.patch_len() * n_o];
            matmul(
                MatRef::row_major(&x_col, g.patch_len(), g.pixels()),
                MatRef::row_major(&dy, n_o, g.pixels()).t(),
                &mut expected,
                false,
            );
            let mut padded = vec![F::zero(); padded_len(&g)];
            pad_image(&x, &g, &mut padded);
            let mut got = vec![F::nan(); expected.len()];
            conv_weight_grad(&padded, &g, &dy, n_o, &mut got, false);
            let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.as_f64().abs()));
            for (a, b) in got.iter().zip(&expected) {
                let err = (a.as_f64() - b.as_f64()).abs() / scale;
                assert!(err < tol, "{case:?}: {a} vs {b}");
            }
            conv_weight_grad(&padded, &g, &dy, n_o, &mut got, true);
            for (a, b) in got.iter().zip(&expected) {
                let err = (a.as_f64() - 2.0 * b.as_f64()).abs() / scale;
                assert!(err < 2.0 * tol, "{case:?}: accumulate");
            }
        }
    }

    #[test]
    fn forward_matches_im2col_gemm_f64() {
        check_forward::<f64>(1e-13);
    }

    #[test]
    fn forward_matches_im2col_gemm_f32() {
        check_forward::<f32>(1e-5);
    }

    #[test]
    fn weight_grad_matches_im2col_gemm_f64() {
        check_weight_grad::<f64>(1e-13);
    }

    #[test]
    fn weight_grad_matches_im2col_gemm_f32() {
        check_weight_grad::<f32>(1e-5);
    }

    /// On a processor with AVX-512, the explicit kernels (what `f32` runs there) against the
    /// portable loops, block by block; elsewhere the portable loops are all there is.
    #[cfg(target_arch = "x86_64")]
    type WeightGradKernel =
        fn(&[f32], &ConvGeometry, PaddedLayout, &[usize], &[f32], usize, &mut [f32]) -> usize;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernels_match_the_portable_loops() {
        if !avx512::available() {
            eprintln!("no AVX-512 here: only the portable kernels run");
            return;
        }
        for (seed, case) in CASES.iter().enumerate() {
            let (g, n_o) = (geometry(case), case.1);
            let lay = PaddedLayout::of(&g);
            let off = lay.tap_offsets(&g);
            let x = random::<f32>(g.image_len(), seed as u64);
            let w = random::<f32>(n_o * g.patch_len(), 300 + seed as u64);
            let dy = random::<f32>(n_o * g.pixels(), 400 + seed as u64);
            let mut padded = vec![0.0; padded_len(&g)];
            pad_image(&x, &g, &mut padded);

            let mut fast = vec![f32::NAN; n_o * g.pixels()];
            let done = avx512::conv_forward(&padded, &g, lay, &off, &w, n_o, &mut fast);
            assert_eq!(done, n_o / 16 * 16);
            let mut slow = vec![f32::NAN; n_o * g.pixels()];
            portable::conv_forward(&padded, &g, lay, &off, &w, 0..n_o, &mut slow);
            let covered = done * g.pixels();
            for (a, b) in fast[..covered].iter().zip(&slow[..covered]) {
                assert!((a - b).abs() < 1e-5, "{case:?} forward: {a} vs {b}");
            }

            let mut slow = vec![0.0f32; g.patch_len() * n_o];
            portable::conv_weight_grad(&padded, &g, lay, &off, &dy, 0..n_o, n_o, &mut slow);
            let kernels: [(WeightGradKernel, usize); 2] =
                [(avx512::by_filters, n_o), (avx512::by_pixels, n_o / 4 * 4)];
            for (kernel, covers) in kernels {
                let mut fast = vec![0.0f32; g.patch_len() * n_o];
                let done = kernel(&padded, &g, lay, &off, &dy, n_o, &mut fast);
                assert_eq!(done, covers);
                for (t, (fast_t, slow_t)) in fast.chunks(n_o).zip(slow.chunks(n_o)).enumerate() {
                    for (a, b) in fast_t[..done].iter().zip(&slow_t[..done]) {
                        assert!((a - b).abs() < 1e-4, "{case:?} tap {t}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_filter_transpose_matches_the_index_formula() {
        if !avx512::available() {
            return;
        }
        for (n_o, p) in [(16usize, 16usize), (32, 256), (5, 37), (20, 1), (17, 33)] {
            let dy: Vec<f32> = (0..n_o * p).map(|v| v as f32).collect();
            let width = n_o.div_ceil(16) * 16;
            let mut dy_t = vec![f32::NAN; p * width];
            // SAFETY: AVX-512 is available; the lengths are as the function requires.
            unsafe { avx512::transpose_filters(&dy, n_o, p, width, &mut dy_t) };
            for q in 0..p {
                for o in 0..width {
                    let want = if o < n_o { dy[o * p + q] } else { 0.0 };
                    assert_eq!(dy_t[q * width + o], want, "n_o {n_o}, p {p}: q {q}, o {o}");
                }
            }
        }
    }

    /// The in-register pooling kernel against `conv_forward` then `bias_relu_pool2`, bit for
    /// bit, on small integers (exact sums, so ties and zeros are common).
    #[test]
    fn pooled_forward_matches_convolution_then_pooling_bit_for_bit() {
        use crate::kernels::relu_pool::pool_planes;
        for (seed, &(n_i, n_o, rows, cols)) in [
            (3, 16, 8, 32),
            (2, 8, 6, 20),
            (16, 32, 4, 18),
            (1, 8, 2, 2),
            (3, 5, 4, 16),
        ]
        .iter()
        .enumerate()
        {
            let g = ConvGeometry {
                channels: n_i,
                rows,
                cols,
                h: 3,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
            let mut ints = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| f32::from(rng.random_range(-2i8..=2)))
                    .collect()
            };
            let (x, w, b) = (ints(g.image_len()), ints(n_o * g.patch_len()), ints(n_o));
            let mut padded = vec![0.0; padded_len(&g)];
            pad_image(&x, &g, &mut padded);
            let q = g.pixels() / 4;
            let (mut y, mut mask) = (vec![f32::NAN; n_o * q], vec![0xffu8; n_o * q]);
            if !conv_bias_relu_pool2(&padded, &g, &w, &b, n_o, &mut y, &mut mask) {
                assert!(n_o % 8 != 0 || !avx512_available(), "{n_o} filters ran");
                continue;
            }
            let mut full = vec![0.0; n_o * g.pixels()];
            conv_forward(&padded, &g, &w, n_o, &mut full);
            let (y_ref, mask_ref) = pool_planes(&full, &b, cols);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&y_ref), "{n_i}→{n_o}, {rows}×{cols}");
            assert_eq!(mask, mask_ref, "{n_i}→{n_o}, {rows}×{cols}");
            assert!(
                mask.iter().any(|&m| m.count_ones() > 1),
                "ties were exercised"
            );
        }
    }

    #[test]
    fn only_short_patches_take_the_direct_path() {
        let g = |channels, h| ConvGeometry {
            channels,
            rows: 8,
            cols: 8,
            h,
        };
        assert!(prefers_direct(&g(3, 3)));
        assert!(!prefers_direct(&g(16, 3)));
        assert!(!prefers_direct(&g(3, 5)));
        let wide = ConvGeometry {
            cols: 16,
            ..g(16, 3)
        };
        assert!(prefers_direct(&wide) && !prefers_direct_weight_grad::<f64>(&wide));
        assert_eq!(prefers_direct_weight_grad::<f32>(&wide), avx512_available());
        assert!(!prefers_direct(&ConvGeometry {
            channels: 128,
            ..wide
        }));
        assert_eq!(transposed_geometry(&wide, 32).map(|t| t.channels), Some(32));
        assert_eq!(
            transposed_geometry(&ConvGeometry { h: 2, ..wide }, 32),
            None
        );
        assert_eq!(
            transposed_geometry(
                &ConvGeometry {
                    channels: 3,
                    ..wide
                },
                32
            ),
            None
        );
    }

    /// Every value of the padded copy is written, also over a buffer full of NaN: the
    /// image at its place, zero everywhere else.
    #[test]
    fn pad_image_overwrites_every_value() {
        for (seed, case) in CASES.iter().enumerate() {
            let g = geometry(case);
            let lay = PaddedLayout::of(&g);
            let x = random::<f64>(g.image_len(), seed as u64);
            let mut padded = vec![f64::NAN; padded_len(&g)];
            pad_image(&x, &g, &mut padded);
            let pad = g.pad_before();
            for (idx, &v) in padded.iter().enumerate() {
                let (i, rem) = (idx / (lay.rows * lay.stride), idx % (lay.rows * lay.stride));
                let (r, c) = (rem / lay.stride, rem % lay.stride);
                let inside = (pad..pad + g.rows).contains(&r) && (pad..pad + g.cols).contains(&c);
                let want = if inside {
                    x[(i * g.rows + r - pad) * g.cols + c - pad]
                } else {
                    0.0
                };
                assert_eq!(v, want, "{case:?}: channel {i}, row {r}, column {c}");
            }
        }
    }

    #[test]
    fn im2col_from_the_padded_copy_matches_im2col() {
        for (seed, case) in CASES.iter().enumerate() {
            let g = geometry(case);
            let x = random::<f64>(g.image_len(), seed as u64);
            let mut expected = vec![0.0; g.patch_len() * g.pixels()];
            im2col(&x, &g, &mut expected);
            let mut padded = vec![0.0; padded_len(&g)];
            pad_image(&x, &g, &mut padded);
            let mut got = vec![f64::NAN; expected.len()];
            im2col_padded(&padded, &g, &mut got);
            assert_eq!(got, expected, "{case:?}");
        }
    }

    #[test]
    fn flip_transpose_swaps_channels_and_turns_each_filter_half_a_turn() {
        // W: 2 filters (o) × 1 channel (i) × 2×2 → W': 1 × 2 × 2×2.
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(
            flip_transpose(&w, 2, 1, 2),
            [4.0, 3.0, 2.0, 1.0, 8.0, 7.0, 6.0, 5.0]
        );
        // W: 1 filter × 2 channels × 1×1 → W': 2 filters × 1 channel.
        assert_eq!(flip_transpose(&[1.0, 2.0], 1, 2, 1), [1.0, 2.0]);
    }
}
