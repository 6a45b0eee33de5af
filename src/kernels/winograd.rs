//! Winograd's minimal filtering F(2×2, 3×3) for 3×3 "same" convolutions with many channels
//! (the lab's second layer, 16 → 32, its transposed convolution 32 → 16, and the big net's
//! 64 → 128 and 128 → 256).
//!
//! Every 2 × 2 block ("tile") of outputs `Y` comes from the 4 × 4 padded input block `d`
//! around it (Lavin & Gray 2016, eq. 8):
//!
//! `Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A`
//!
//! ```text
//!      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤        ⎡1  1  1  0⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢1/2  1/2  1/2⎥   Aᵀ = ⎣0  1 −1 −1⎦
//!      ⎢0 −1  1  0⎥        ⎢1/2 −1/2  1/2⎥
//!      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! so each tile costs 16 multiplications per channel pair instead of 36: the sum over
//! channels is, for each of the 16 positions `ξ` of the 4 × 4 transformed tile, one matrix
//! product `M[ξ] = V[ξ] · U[ξ]` (tiles × channels times channels × filters), 2.25 times
//! fewer multiply-adds than the direct convolution.
//!
//! The weight gradient is the adjoint of the same algorithm: with `L = Σ ⟨dY, Y⟩`,
//!
//! `dℓ/dg_{o,c} = Gᵀ [ Σ_tiles (A dY_o Aᵀ) ⊙ (Bᵀ d_c B) ] G`,
//!
//! again one product per position (channels × tiles times tiles × filters), and the input
//! gradient is the forward algorithm applied to `dY` with the flipped, transposed filters
//! ([`crate::kernels::direct::flip_transpose`]).
//!
//! Images are kept channels-last (`(rows + 2) × (cols + 2) × channels`, zero border,
//! [`pad_channels_last`]) so that every transform is a few additions of whole vectors of
//! channels. Each 2 × 2 output tile is also exactly one 2 × 2 pooling window, so the fused
//! bias + ReLU + max-pool epilogue reads a tile's four outputs from registers.
//!
//! The results match the direct convolution up to rounding (the transforms add and
//! subtract inputs before multiplying: relative errors near 1e-6 in `f32`), and are the
//! same bits with any number of threads: every sum runs in a fixed order.

use super::im2col::ConvGeometry;
use crate::Float;
use multiversion::multiversion;

/// Positions `ξ = 4k + l` of a transformed 4 × 4 tile.
pub const POSITIONS: usize = 16;
/// Channels per vector of work: one AVX-512 register of `f32`.
const LANES: usize = 16;
/// Tiles per block of the forward pass: 8 tiles × 2 vectors of filters = 16 sums in
/// registers, and a block's transformed inputs and outputs stay in the L1 cache.
const FORWARD_TILES: usize = 8;
/// Tiles per block of the weight gradient.
const GRAD_TILES: usize = 16;
/// Input channels per register block of the weight gradient (× 2 vectors of filters).
const GRAD_CHANNELS: usize = 8;

/// One vector of channels.
type Lanes<F> = [F; LANES];

/// Whether these kernels compute a convolution of geometry `g` with `n_o` filters: 3 × 3
/// filters, even rows and columns, channels and filters in whole vectors of 16.
pub fn applies(g: &ConvGeometry, n_o: usize) -> bool {
    g.h == 3
        && g.rows >= 2
        && g.cols >= 2
        && g.rows.is_multiple_of(2)
        && g.cols.is_multiple_of(2)
        && g.channels.is_multiple_of(LANES)
        && n_o.is_multiple_of(LANES)
        && n_o > 0
}

/// Whether the explicit `f32` kernels run on this processor (AVX-512 F, BW and VL). The
/// portable loops compute the same for any float type, but slower than the direct kernels.
pub fn runs_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Values of one channels-last padded image of geometry `g`.
pub fn padded_len(g: &ConvGeometry) -> usize {
    (g.rows + 2) * (g.cols + 2) * g.channels
}

/// Values of the transformed filters of `n_i → n_o`: `16 · n_i · n_o`.
pub fn filters_len(n_i: usize, n_o: usize) -> usize {
    POSITIONS * n_i * n_o
}

/// Writes one image `x` (`channels × rows × cols`) as its zero-padded channels-last copy:
/// `padded[((r + 1)·(cols + 2) + q + 1)·channels + c] = x[c, r, q]`, zero on the border.
///
/// # Panics
/// If `x` or `padded` does not have the geometry's length.
pub fn pad_channels_last<F: Float>(x: &[F], g: &ConvGeometry, padded: &mut [F]) {
    assert_eq!(x.len(), g.image_len(), "pad_channels_last: image length");
    assert_eq!(
        padded.len(),
        padded_len(g),
        "pad_channels_last: padded length"
    );
    zero_border(padded, g);
    let c_n = g.channels;
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(padded)) = (F::as_f32_slice(x), F::as_f32_slice_mut(&mut *padded)) {
        if avx512::available() && c_n.is_multiple_of(LANES) {
            // SAFETY: the features were just checked.
            unsafe { avx512::transpose_interior(x, g, padded) };
            return;
        }
    }
    pad_channels_last_portable(x, g, padded);
}

/// The interior of [`pad_channels_last`] in plain loops.
fn pad_channels_last_portable<F: Float>(x: &[F], g: &ConvGeometry, padded: &mut [F]) {
    let (c_n, pc, p) = (g.channels, g.cols + 2, g.pixels());
    let row_len = pc * c_n;
    for r in 0..g.rows {
        let row = &mut padded[(r + 1) * row_len..(r + 2) * row_len];
        // Sixteen channels of a few pixels at a time: short strided reads, whole-vector writes.
        for c0 in (0..c_n).step_by(LANES) {
            let width = LANES.min(c_n - c0);
            for q in 0..g.cols {
                let out = &mut row[(q + 1) * c_n + c0..][..width];
                for (l, v) in out.iter_mut().enumerate() {
                    *v = x[(c0 + l) * p + r * g.cols + q];
                }
            }
        }
    }
}

/// The backward of a fused bias + ReLU + 2×2 max pool, written as the zero-padded
/// channels-last dℓ/dv that [`weight_grad`] and the input gradient read:
/// `dv[o, 2i + a, 2j + b] = dy[o, i, j] · bit_{2a+b}(mask[o, i, j])`, exactly as
/// [`crate::kernels::relu_pool::relu_pool2_backward`] spreads it, then laid out as
/// [`pad_channels_last`] does.
///
/// # Shapes
/// `dy`, `mask`: `(channels, rows/2, cols/2)` for `g` (`g.channels` = the layer's filters);
/// `padded`: [`padded_len`]`(g)`.
///
/// # Panics
/// If the lengths do not match `g`, or its rows or columns are odd.
pub fn unpool_channels_last<F: Float>(dy: &[F], mask: &[u8], g: &ConvGeometry, padded: &mut [F]) {
    assert!(
        g.rows.is_multiple_of(2) && g.cols.is_multiple_of(2),
        "unpool_channels_last: odd image {g:?}"
    );
    let (c_n, pc, q, half) = (g.channels, g.cols + 2, g.pixels() / 4, g.cols / 2);
    assert_eq!(dy.len(), c_n * q, "unpool_channels_last: dy length");
    assert_eq!(mask.len(), c_n * q, "unpool_channels_last: mask length");
    assert_eq!(
        padded.len(),
        padded_len(g),
        "unpool_channels_last: padded length"
    );
    zero_border(padded, g);
    #[cfg(target_arch = "x86_64")]
    if let (Some(dy), Some(padded)) = (F::as_f32_slice(dy), F::as_f32_slice_mut(&mut *padded)) {
        if avx512::available() && c_n.is_multiple_of(LANES) {
            // SAFETY: the features were just checked.
            unsafe { avx512::unpool_interior(dy, mask, g, padded) };
            return;
        }
    }
    for c in 0..c_n {
        for i in 0..g.rows / 2 {
            for j in 0..half {
                let (v, bits) = (
                    dy[(c * g.rows / 2 + i) * half + j],
                    mask[(c * g.rows / 2 + i) * half + j],
                );
                for (ab, (a, b)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let routed = if (bits >> ab) & 1 != 0 { v } else { F::zero() };
                    padded[((2 * i + a + 1) * pc + 2 * j + b + 1) * c_n + c] = routed;
                }
            }
        }
    }
}

/// `sums[c] += Σ_pixels x[c, pixel]` over a channels-last padded image (its zero border adds
/// nothing): the bias gradient, summed pixel by pixel in raster order.
///
/// # Panics
/// If `padded` or `sums` does not match `g`.
pub fn add_channel_sums<F: Float>(padded: &[F], g: &ConvGeometry, sums: &mut [F]) {
    assert_eq!(
        padded.len(),
        padded_len(g),
        "add_channel_sums: padded length"
    );
    assert_eq!(sums.len(), g.channels, "add_channel_sums: sums length");
    add_channel_sums_image(padded, g.channels, sums);
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn add_channel_sums_image<F: Float>(padded: &[F], c_n: usize, sums: &mut [F]) {
    // Whole vectors of 16 channels held in registers, even and odd pixels summed apart (two
    // independent chains of additions), then added: a fixed order.
    let pixels = padded.len() / c_n;
    let whole = c_n / LANES * LANES;
    for c0 in (0..whole).step_by(LANES) {
        let (mut even, mut odd) = ([F::zero(); LANES], [F::zero(); LANES]);
        for pair in padded.chunks_exact(2 * c_n) {
            let (a, b) = (lanes(pair, c0), lanes(pair, c_n + c0));
            for l in 0..LANES {
                even[l] += a[l];
                odd[l] += b[l];
            }
        }
        if pixels % 2 == 1 {
            let last = lanes(padded, (pixels - 1) * c_n + c0);
            for l in 0..LANES {
                even[l] += last[l];
            }
        }
        for l in 0..LANES {
            sums[c0 + l] += even[l] + odd[l];
        }
    }
    for (c, sum) in sums.iter_mut().enumerate().skip(whole) {
        *sum += padded
            .iter()
            .skip(c)
            .step_by(c_n)
            .fold(F::zero(), |s, &v| s + v);
    }
}

/// Zeroes the one-pixel border of a channels-last padded image: the top row with the first
/// left border, then each right border with the next row's left border (they touch), then
/// the last right border with the bottom row.
fn zero_border<F: Float>(padded: &mut [F], g: &ConvGeometry) {
    let (c_n, row_len) = (g.channels, (g.cols + 2) * g.channels);
    zero(&mut padded[..row_len + c_n]);
    for r in 2..=g.rows {
        zero(&mut padded[r * row_len - c_n..r * row_len + c_n]);
    }
    zero(&mut padded[(g.rows + 1) * row_len - c_n..]);
}

/// `x = 0`, in whole vectors where it can (short fills otherwise become `memset` calls).
fn zero<F: Float>(x: &mut [F]) {
    let mut blocks = x.chunks_exact_mut(LANES);
    for block in &mut blocks {
        let block: &mut Lanes<F> = block.try_into().expect("lanes");
        *block = [F::zero(); LANES];
    }
    blocks.into_remainder().fill(F::zero());
}

/// The transformed filters `U[ξ, c, o] = (G g_{o,c} Gᵀ)[ξ]`.
///
/// # Shapes
/// `w`: `(n_o, n_i, 3, 3)` row-major → `(16, n_i, n_o)` row-major.
pub fn transform_filters<F: Float>(w: &[F], n_o: usize, n_i: usize) -> Vec<F> {
    assert_eq!(w.len(), n_o * n_i * 9, "transform_filters: weight length");
    let half = F::from_f64(0.5);
    // G v for one column v of the filter.
    let g_col = |v: [F; 3]| {
        [
            v[0],
            (v[0] + v[1] + v[2]) * half,
            (v[0] - v[1] + v[2]) * half,
            v[2],
        ]
    };
    let mut u = vec![F::zero(); filters_len(n_i, n_o)];
    for o in 0..n_o {
        for c in 0..n_i {
            let f = &w[(o * n_i + c) * 9..][..9];
            // Rows of G·g (4 × 3), then each row times Gᵀ.
            let cols: [[F; 4]; 3] = std::array::from_fn(|b| g_col([f[b], f[3 + b], f[6 + b]]));
            for k in 0..4 {
                let row = g_col([cols[0][k], cols[1][k], cols[2][k]]);
                for (l, &v) in row.iter().enumerate() {
                    u[((4 * k + l) * n_i + c) * n_o + o] = v;
                }
            }
        }
    }
    u
}

/// dℓ/dg from the summed products of the weight gradient:
/// `dW[o, c] = Gᵀ dU[·, c, o] G`.
///
/// # Shapes
/// `du`: `(16, n_i, n_o)` → `w_grad`: `(n_o, n_i, 3, 3)`, overwritten.
pub fn filter_grad<F: Float>(du: &[F], n_o: usize, n_i: usize, w_grad: &mut [F]) {
    assert_eq!(du.len(), filters_len(n_i, n_o), "filter_grad: du length");
    assert_eq!(w_grad.len(), n_o * n_i * 9, "filter_grad: gradient length");
    let half = F::from_f64(0.5);
    // Gᵀ v for one column v of dU (4 → 3).
    let gt = |v: [F; 4]| {
        [
            v[0] + (v[1] + v[2]) * half,
            (v[1] - v[2]) * half,
            (v[1] + v[2]) * half + v[3],
        ]
    };
    for o in 0..n_o {
        for c in 0..n_i {
            let at = |k: usize, l: usize| du[((4 * k + l) * n_i + c) * n_o + o];
            let cols: [[F; 3]; 4] =
                std::array::from_fn(|l| gt([at(0, l), at(1, l), at(2, l), at(3, l)]));
            let out = &mut w_grad[(o * n_i + c) * 9..][..9];
            for a in 0..3 {
                let row = gt([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
                out[3 * a..3 * a + 3].copy_from_slice(&row);
            }
        }
    }
}

/// Where the output of [`forward`] goes.
pub enum Epilogue<'a, F> {
    /// `y = W ⋆ x` (no bias), `(n_o, rows, cols)`.
    Dense(&'a mut [F]),
    /// `y = maxpool₂(relu(W ⋆ x + b))`, `(n_o, rows/2, cols/2)`, with one gradient routing
    /// byte per output, exactly as [`crate::kernels::relu_pool::bias_relu_pool2`] writes
    /// them from the dense output.
    ReluPool2 {
        /// The biases, `n_o`.
        b: &'a [F],
        /// The pooled output.
        y: &'a mut [F],
        /// The routing bytes.
        mask: &'a mut [u8],
    },
}

/// Working buffers of one thread, reused across images.
#[derive(Default)]
pub struct Scratch<F> {
    /// Transformed inputs of one block of tiles, `(16, tiles, channels)`.
    v: Vec<F>,
    /// Products of one block (`(16, tiles, n_o)`) or transformed `dY` (weight gradient).
    m: Vec<F>,
}

impl<F: Float> Scratch<F> {
    /// Makes `v` and `m` at least this long. They only grow: the forward pass and the weight
    /// gradient need different sizes, and each image of a backward pass calls both.
    fn reserve(&mut self, v_len: usize, m_len: usize) {
        for (buf, len) in [(&mut self.v, v_len), (&mut self.m, m_len)] {
            if buf.len() < len {
                buf.resize(len, F::zero());
            }
        }
    }
}

/// `W ⋆ x` for one image, from its [`pad_channels_last`] copy and [`transform_filters`].
///
/// # Shapes
/// `padded`: from [`pad_channels_last`] with `g`; `u`: `(16, channels, n_o)`.
///
/// # Panics
/// If the slices do not match `g` and `n_o`, or [`applies`] does not hold.
pub fn forward<F: Float>(
    padded: &[F],
    g: &ConvGeometry,
    u: &[F],
    n_o: usize,
    out: Epilogue<'_, F>,
    scratch: &mut Scratch<F>,
) {
    assert!(
        applies(g, n_o),
        "winograd::forward: unsupported geometry {g:?}"
    );
    assert_eq!(
        padded.len(),
        padded_len(g),
        "winograd::forward: padded length"
    );
    assert_eq!(
        u.len(),
        filters_len(g.channels, n_o),
        "winograd::forward: filter length"
    );
    let (q, p) = (g.pixels() / 4, g.pixels());
    match &out {
        Epilogue::Dense(y) => assert_eq!(y.len(), n_o * p, "winograd::forward: output length"),
        Epilogue::ReluPool2 { b, y, mask } => {
            assert_eq!(b.len(), n_o, "winograd::forward: bias length");
            assert_eq!(y.len(), n_o * q, "winograd::forward: output length");
            assert_eq!(mask.len(), n_o * q, "winograd::forward: mask length");
        }
    }
    scratch.reserve(
        POSITIONS * FORWARD_TILES * g.channels,
        POSITIONS * FORWARD_TILES * n_o,
    );
    #[cfg(target_arch = "x86_64")]
    if let (Some(padded), Some(u), Some(v), Some(m)) = (
        F::as_f32_slice(padded),
        F::as_f32_slice(u),
        F::as_f32_slice_mut(&mut scratch.v),
        F::as_f32_slice_mut(&mut scratch.m),
    ) {
        if avx512::available() {
            let mut out = match out {
                Epilogue::Dense(y) => Epilogue::Dense(F::as_f32_slice_mut(y).expect("f32")),
                Epilogue::ReluPool2 { b, y, mask } => Epilogue::ReluPool2 {
                    b: F::as_f32_slice(b).expect("f32"),
                    y: F::as_f32_slice_mut(y).expect("f32"),
                    mask,
                },
            };
            // SAFETY: the features were just checked.
            unsafe { avx512::forward_image(padded, g, u, n_o, &mut out, v, m) };
            return;
        }
    }
    forward_image(padded, g, u, n_o, out, scratch);
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
/// [`forward`] (checked by it) in portable loops: blocks of [`FORWARD_TILES`] tiles, each
/// transformed, multiplied position by position and transformed back.
fn forward_image<F: Float>(
    padded: &[F],
    g: &ConvGeometry,
    u: &[F],
    n_o: usize,
    mut out: Epilogue<'_, F>,
    scratch: &mut Scratch<F>,
) {
    let tiles = g.pixels() / 4;
    let Scratch { v, m } = scratch;
    for t0 in (0..tiles).step_by(FORWARD_TILES) {
        let block = t0..(t0 + FORWARD_TILES).min(tiles);
        input_transform::<F, FORWARD_TILES>(padded, g, block.clone(), v);
        for xi in 0..POSITIONS {
            let v_xi = &v[xi * FORWARD_TILES * g.channels..][..FORWARD_TILES * g.channels];
            let u_xi = &u[xi * g.channels * n_o..][..g.channels * n_o];
            let m_xi = &mut m[xi * FORWARD_TILES * n_o..][..FORWARD_TILES * n_o];
            product(v_xi, u_xi, g.channels, n_o, m_xi);
        }
        output_transform(m, g, n_o, block, &mut out);
    }
}

/// `v[ξ, t, c] = (Bᵀ d_{t,c} B)[ξ]` for the tiles `block` (zero for the block's unused slots).
#[inline(always)]
fn input_transform<F: Float, const TILES: usize>(
    padded: &[F],
    g: &ConvGeometry,
    block: std::ops::Range<usize>,
    v: &mut [F],
) {
    let (c_n, pc, tw) = (g.channels, g.cols + 2, g.cols / 2);
    let slot_len = TILES * c_n;
    for (slot, t) in block.clone().enumerate() {
        let corner = (2 * (t / tw) * pc + 2 * (t % tw)) * c_n;
        for c0 in (0..c_n).step_by(LANES) {
            let d = |i: usize, j: usize| lanes(padded, corner + (i * pc + j) * c_n + c0);
            // Bᵀ along each row of the 4 × 4 block, then along each column.
            let rows: [[Lanes<F>; 4]; 4] =
                std::array::from_fn(|i| bt([d(i, 0), d(i, 1), d(i, 2), d(i, 3)]));
            #[allow(clippy::needless_range_loop)] // `l` indexes a column across the rows
            for l in 0..4 {
                let col = bt([&rows[0][l], &rows[1][l], &rows[2][l], &rows[3][l]]);
                for (k, vk) in col.iter().enumerate() {
                    lanes_mut(v, (4 * k + l) * slot_len + slot * c_n + c0).copy_from_slice(vk);
                }
            }
        }
    }
    for slot in block.len()..TILES {
        for xi in 0..POSITIONS {
            v[xi * slot_len + slot * c_n..][..c_n].fill(F::zero());
        }
    }
}

/// `Bᵀ d` for four vectors.
#[inline(always)]
fn bt<F: Float>(d: [&Lanes<F>; 4]) -> [Lanes<F>; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `m[t, o] = Σ_c v[t, c] · u[c, o]` for one position of one block of [`FORWARD_TILES`].
#[inline(always)]
fn product<F: Float>(v: &[F], u: &[F], c_n: usize, n_o: usize, m: &mut [F]) {
    let mut o0 = 0;
    while o0 + 2 * LANES <= n_o {
        product_block::<F, 2>(v, u, c_n, n_o, o0, m);
        o0 += 2 * LANES;
    }
    if o0 < n_o {
        product_block::<F, 1>(v, u, c_n, n_o, o0, m);
    }
}

/// [`product`] for filters `o0..o0 + OV·16`: `FORWARD_TILES × OV` vectors of sums in registers.
#[inline(always)]
fn product_block<F: Float, const OV: usize>(
    v: &[F],
    u: &[F],
    c_n: usize,
    n_o: usize,
    o0: usize,
    m: &mut [F],
) {
    let mut acc = [[[F::zero(); LANES]; OV]; FORWARD_TILES];
    for c in 0..c_n {
        let u_c: [&Lanes<F>; OV] = std::array::from_fn(|j| lanes(u, c * n_o + o0 + j * LANES));
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let s = v[t * c_n + c];
            for (a, u_j) in acc_t.iter_mut().zip(&u_c) {
                for l in 0..LANES {
                    a[l] += s * u_j[l];
                }
            }
        }
    }
    for (t, acc_t) in acc.iter().enumerate() {
        for (j, a) in acc_t.iter().enumerate() {
            lanes_mut(m, t * n_o + o0 + j * LANES).copy_from_slice(a);
        }
    }
}

/// `Y = Aᵀ m A` for every tile of `block`, written through `out`.
#[inline(always)]
fn output_transform<F: Float>(
    m: &[F],
    g: &ConvGeometry,
    n_o: usize,
    block: std::ops::Range<usize>,
    out: &mut Epilogue<'_, F>,
) {
    let (tw, cols, p) = (g.cols / 2, g.cols, g.pixels());
    let q = p / 4;
    let slot_len = FORWARD_TILES * n_o;
    for (slot, t) in block.enumerate() {
        let (ty, tx) = (t / tw, t % tw);
        for o0 in (0..n_o).step_by(LANES) {
            let at = |k: usize, l: usize| lanes(m, (4 * k + l) * slot_len + slot * n_o + o0);
            // M A along each row (4 × 4 → 4 × 2), then Aᵀ down each column.
            let s: [[Lanes<F>; 2]; 4] =
                std::array::from_fn(|k| at_row([at(k, 0), at(k, 1), at(k, 2), at(k, 3)]));
            let c0 = at_row([&s[0][0], &s[1][0], &s[2][0], &s[3][0]]);
            let c1 = at_row([&s[0][1], &s[1][1], &s[2][1], &s[3][1]]);
            // y[a][b]: row a, column b of the tile.
            let y = [[c0[0], c1[0]], [c0[1], c1[1]]];
            match out {
                Epilogue::Dense(dense) => {
                    for (a, y_a) in y.iter().enumerate() {
                        for (b, y_ab) in y_a.iter().enumerate() {
                            let at = (2 * ty + a) * cols + 2 * tx + b;
                            for (l, &v) in y_ab.iter().enumerate() {
                                dense[(o0 + l) * p + at] = v;
                            }
                        }
                    }
                }
                Epilogue::ReluPool2 { b, y: pooled, mask } => {
                    let bias = lanes(b, o0);
                    let (top, bottom) = (&y[0], &y[1]);
                    for l in 0..LANES {
                        // The same operations, in the same order, as `bias_relu_pool2`.
                        let t =
                            [top[0][l], top[1][l], bottom[0][l], bottom[1][l]].map(|v| v + bias[l]);
                        let relu = |t: F| if t > F::zero() { t } else { F::zero() };
                        let max = |a: F, b: F| if a > b { a } else { b };
                        let top_max = max(relu(t[0]), relu(t[1]));
                        let mx = max(top_max, max(relu(t[2]), relu(t[3])));
                        let routed = |t: F| u8::from(t > F::zero()) & u8::from(t == mx);
                        let at = (o0 + l) * q + ty * tw + tx;
                        pooled[at] = mx;
                        mask[at] = routed(t[0])
                            | routed(t[1]) << 1
                            | routed(t[2]) << 2
                            | routed(t[3]) << 3;
                    }
                }
            }
        }
    }
}

/// `(m₀ + m₁ + m₂, m₁ − m₂ − m₃)`: `Aᵀ` applied to four vectors.
#[inline(always)]
fn at_row<F: Float>(m: [&Lanes<F>; 4]) -> [Lanes<F>; 2] {
    [add(&add(m[0], m[1]), m[2]), sub(&sub(m[1], m[2]), m[3])]
}

/// Adds one image's share to the weight gradient's summed products:
/// `du[ξ, c, o] += Σ_tiles (Bᵀ d_c B)[ξ] · (A dY_o Aᵀ)[ξ]`.
///
/// # Shapes
/// `padded`: the image from [`pad_channels_last`] with `g`; `dy_padded`: dℓ/dy from
/// [`pad_channels_last`] with `g` of `n_o` channels; `du`: `(16, channels, n_o)`
/// (see [`filter_grad`]), overwritten or, if `accumulate`, added to.
///
/// # Panics
/// If the slices do not match `g` and `n_o`, or [`applies`] does not hold.
pub fn weight_grad<F: Float>(
    padded: &[F],
    dy_padded: &[F],
    g: &ConvGeometry,
    n_o: usize,
    du: &mut [F],
    accumulate: bool,
    scratch: &mut Scratch<F>,
) {
    assert!(
        applies(g, n_o),
        "winograd::weight_grad: unsupported geometry {g:?}"
    );
    let g_dy = ConvGeometry {
        channels: n_o,
        ..*g
    };
    assert_eq!(
        padded.len(),
        padded_len(g),
        "winograd::weight_grad: padded length"
    );
    assert_eq!(
        dy_padded.len(),
        padded_len(&g_dy),
        "winograd::weight_grad: dy length"
    );
    assert_eq!(
        du.len(),
        filters_len(g.channels, n_o),
        "winograd::weight_grad: du length"
    );
    if !accumulate {
        du.fill(F::zero());
    }
    scratch.reserve(
        POSITIONS * GRAD_TILES * g.channels,
        POSITIONS * GRAD_TILES * n_o,
    );
    #[cfg(target_arch = "x86_64")]
    if let (Some(padded), Some(dy_padded), Some(du), Some(v), Some(e)) = (
        F::as_f32_slice(padded),
        F::as_f32_slice(dy_padded),
        F::as_f32_slice_mut(&mut *du),
        F::as_f32_slice_mut(&mut scratch.v),
        F::as_f32_slice_mut(&mut scratch.m),
    ) {
        if avx512::available() {
            // SAFETY: the features were just checked.
            unsafe { avx512::weight_grad_image(padded, dy_padded, g, n_o, du, v, e) };
            return;
        }
    }
    weight_grad_image(padded, dy_padded, g, n_o, du, scratch);
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
/// [`weight_grad`] (checked by it) in portable loops, [`GRAD_TILES`] tiles at a time.
fn weight_grad_image<F: Float>(
    padded: &[F],
    dy_padded: &[F],
    g: &ConvGeometry,
    n_o: usize,
    du: &mut [F],
    scratch: &mut Scratch<F>,
) {
    let tiles = g.pixels() / 4;
    let c_n = g.channels;
    let Scratch { v, m: e } = scratch;
    for t0 in (0..tiles).step_by(GRAD_TILES) {
        let block = t0..(t0 + GRAD_TILES).min(tiles);
        input_transform::<F, GRAD_TILES>(padded, g, block.clone(), v);
        grad_transform(dy_padded, g, n_o, block.clone(), e);
        for xi in 0..POSITIONS {
            let v_xi = &v[xi * GRAD_TILES * c_n..][..GRAD_TILES * c_n];
            let e_xi = &e[xi * GRAD_TILES * n_o..][..GRAD_TILES * n_o];
            let du_xi = &mut du[xi * c_n * n_o..][..c_n * n_o];
            grad_product(v_xi, e_xi, c_n, n_o, block.len(), du_xi);
        }
    }
}

/// `e[ξ, t, o] = (A dY_{t,o} Aᵀ)[ξ]` for the tiles of `block` (the tile's 2 × 2 block of
/// dℓ/dy, read from its channels-last padded copy).
#[inline(always)]
fn grad_transform<F: Float>(
    dy_padded: &[F],
    g: &ConvGeometry,
    n_o: usize,
    block: std::ops::Range<usize>,
    e: &mut [F],
) {
    let (pc, tw) = (g.cols + 2, g.cols / 2);
    let slot_len = GRAD_TILES * n_o;
    for (slot, t) in block.enumerate() {
        let corner = ((2 * (t / tw) + 1) * pc + 2 * (t % tw) + 1) * n_o;
        for o0 in (0..n_o).step_by(LANES) {
            let dy = |a: usize, b: usize| lanes(dy_padded, corner + (a * pc + b) * n_o + o0);
            // A along each row of the 2 × 2 block (2 → 4), then down each column.
            let rows = [
                a_expand([dy(0, 0), dy(0, 1)]),
                a_expand([dy(1, 0), dy(1, 1)]),
            ];
            #[allow(clippy::needless_range_loop)] // `l` indexes a column across the rows
            for l in 0..4 {
                let col = a_expand([&rows[0][l], &rows[1][l]]);
                for (k, ek) in col.iter().enumerate() {
                    lanes_mut(e, (4 * k + l) * slot_len + slot * n_o + o0).copy_from_slice(ek);
                }
            }
        }
    }
}

/// `A v = (v₀, v₀ + v₁, v₀ − v₁, −v₁)` for two vectors.
#[inline(always)]
fn a_expand<F: Float>(v: [&Lanes<F>; 2]) -> [Lanes<F>; 4] {
    [*v[0], add(v[0], v[1]), sub(v[0], v[1]), v[1].map(|x| -x)]
}

/// `du[c, o] += Σ_{t < tiles} v[t, c] · e[t, o]` for one position.
#[inline(always)]
fn grad_product<F: Float>(v: &[F], e: &[F], c_n: usize, n_o: usize, tiles: usize, du: &mut [F]) {
    for c0 in (0..c_n).step_by(GRAD_CHANNELS) {
        let mut o0 = 0;
        while o0 + 2 * LANES <= n_o {
            grad_block::<F, 2>(v, e, c_n, n_o, tiles, c0, o0, du);
            o0 += 2 * LANES;
        }
        if o0 < n_o {
            grad_block::<F, 1>(v, e, c_n, n_o, tiles, c0, o0, du);
        }
    }
}

/// [`grad_product`] for channels `c0..c0 + GRAD_CHANNELS` and filters `o0..o0 + OV·16`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_block<F: Float, const OV: usize>(
    v: &[F],
    e: &[F],
    c_n: usize,
    n_o: usize,
    tiles: usize,
    c0: usize,
    o0: usize,
    du: &mut [F],
) {
    let mut acc: [[Lanes<F>; OV]; GRAD_CHANNELS] = std::array::from_fn(|c| {
        std::array::from_fn(|j| *lanes(du, (c0 + c) * n_o + o0 + j * LANES))
    });
    for t in 0..tiles {
        let e_t: [&Lanes<F>; OV] = std::array::from_fn(|j| lanes(e, t * n_o + o0 + j * LANES));
        for (c, acc_c) in acc.iter_mut().enumerate() {
            let s = v[t * c_n + c0 + c];
            for (a, e_j) in acc_c.iter_mut().zip(&e_t) {
                for l in 0..LANES {
                    a[l] += s * e_j[l];
                }
            }
        }
    }
    for (c, acc_c) in acc.iter().enumerate() {
        for (j, a) in acc_c.iter().enumerate() {
            lanes_mut(du, (c0 + c) * n_o + o0 + j * LANES).copy_from_slice(a);
        }
    }
}

#[inline(always)]
fn lanes<F>(x: &[F], at: usize) -> &Lanes<F> {
    x[at..at + LANES].try_into().expect("lanes")
}

#[inline(always)]
fn lanes_mut<F>(x: &mut [F], at: usize) -> &mut Lanes<F> {
    (&mut x[at..at + LANES]).try_into().expect("lanes")
}

#[inline(always)]
fn add<F: Float>(a: &Lanes<F>, b: &Lanes<F>) -> Lanes<F> {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub<F: Float>(a: &Lanes<F>, b: &Lanes<F>) -> Lanes<F> {
    std::array::from_fn(|l| a[l] - b[l])
}

/// The `f32` kernels for AVX-512, in explicit intrinsics (the compiler does not vectorise the
/// portable loops' register blocks): the same transforms and products, vector for vector.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{
        ConvGeometry, Epilogue, FORWARD_TILES, GRAD_CHANNELS, GRAD_TILES, LANES, POSITIONS,
    };
    use crate::kernels::direct::avx512::transpose16;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Whether this processor runs these kernels (checked once, then cached by std).
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }

    /// Sixteen values from `x[at..]`.
    ///
    /// # Safety
    /// `at + 16 <= x.len()`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(x: &[f32], at: usize) -> __m512 {
        debug_assert!(at + LANES <= x.len());
        // SAFETY: in bounds by the caller's contract.
        unsafe { _mm512_loadu_ps(x.as_ptr().add(at)) }
    }

    /// Sixteen values to `x[at..]`.
    ///
    /// # Safety
    /// `at + 16 <= x.len()`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(x: &mut [f32], at: usize, v: __m512) {
        debug_assert!(at + LANES <= x.len());
        // SAFETY: in bounds by the caller's contract.
        unsafe { _mm512_storeu_ps(x.as_mut_ptr().add(at), v) }
    }

    /// The interior of [`super::pad_channels_last`] (checked by it, channels in whole
    /// vectors): 16 channels × 16 columns of a row at a time, transposed in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose_interior(x: &[f32], g: &ConvGeometry, padded: &mut [f32]) {
        let (c_n, cols, pc, p) = (g.channels, g.cols, g.cols + 2, g.pixels());
        assert!(c_n.is_multiple_of(LANES) && x.len() == c_n * p);
        assert_eq!(padded.len(), (g.rows + 2) * pc * c_n);
        for r in 0..g.rows {
            for c0 in (0..c_n).step_by(LANES) {
                for q0 in (0..cols).step_by(LANES) {
                    let n = LANES.min(cols - q0);
                    let k = ((1u32 << n) - 1) as __mmask16;
                    // SAFETY: lanes j < n read x[(c0 + l)·p + r·cols + q0 + j] < c_n·p.
                    let mut block: [__m512; 16] = std::array::from_fn(|l| unsafe {
                        _mm512_maskz_loadu_ps(k, x.as_ptr().add((c0 + l) * p + r * cols + q0))
                    });
                    // SAFETY: the features are enabled here.
                    unsafe { transpose16(&mut block) };
                    for (j, &pixel) in block.iter().enumerate().take(n) {
                        // SAFETY: pixel (r + 1, q0 + j + 1) of the padded image, channels c0..c0 + 16.
                        unsafe { store(padded, ((r + 1) * pc + q0 + j + 1) * c_n + c0, pixel) };
                    }
                }
            }
        }
    }

    /// The interior of [`super::unpool_channels_last`] (checked by it, channels in whole
    /// vectors): 16 channels × 16 pooled columns at a time, transposed in registers, each
    /// pooled value then masked into its window's four pixels.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn unpool_interior(dy: &[f32], mask: &[u8], g: &ConvGeometry, padded: &mut [f32]) {
        let (c_n, pc, half, q) = (g.channels, g.cols + 2, g.cols / 2, g.pixels() / 4);
        assert!(c_n.is_multiple_of(LANES) && dy.len() == c_n * q && mask.len() == c_n * q);
        assert_eq!(padded.len(), (g.rows + 2) * pc * c_n);
        for i in 0..g.rows / 2 {
            for c0 in (0..c_n).step_by(LANES) {
                for j0 in (0..half).step_by(LANES) {
                    let n = LANES.min(half - j0);
                    let k = ((1u32 << n) - 1) as __mmask16;
                    let at = |l: usize| (c0 + l) * q + i * half + j0;
                    // SAFETY: lanes j < n read index at(l) + j < c_n·q, for dy and mask.
                    let mut values: [__m512; 16] = std::array::from_fn(|l| unsafe {
                        _mm512_maskz_loadu_ps(k, dy.as_ptr().add(at(l)))
                    });
                    let mut bits: [__m512; 16] = std::array::from_fn(|l| unsafe {
                        let bytes = _mm_maskz_loadu_epi8(k, mask.as_ptr().add(at(l)).cast());
                        _mm512_castsi512_ps(_mm512_cvtepu8_epi32(bytes))
                    });
                    // SAFETY: the features are enabled here.
                    unsafe {
                        transpose16(&mut values);
                        transpose16(&mut bits);
                    }
                    for j in 0..n {
                        let bits_j = _mm512_castps_si512(bits[j]);
                        for (ab, (a, b)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate()
                        {
                            let routed = _mm512_test_epi32_mask(bits_j, _mm512_set1_epi32(1 << ab));
                            let pixel = (2 * i + a + 1) * pc + 2 * (j0 + j) + b + 1;
                            // SAFETY: an interior pixel of the padded image, channels c0..c0 + 16.
                            unsafe {
                                store(
                                    padded,
                                    pixel * c_n + c0,
                                    _mm512_maskz_mov_ps(routed, values[j]),
                                )
                            };
                        }
                    }
                }
            }
        }
    }

    /// [`super::forward`] (checked by it): blocks of [`FORWARD_TILES`] tiles, each
    /// transformed, multiplied position by position and transformed back while in cache.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn forward_image(
        padded: &[f32],
        g: &ConvGeometry,
        u: &[f32],
        n_o: usize,
        out: &mut Epilogue<'_, f32>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        let (tiles, c_n) = (g.pixels() / 4, g.channels);
        assert!(
            v.len() >= POSITIONS * FORWARD_TILES * c_n
                && m.len() >= POSITIONS * FORWARD_TILES * n_o
        );
        for t0 in (0..tiles).step_by(FORWARD_TILES) {
            let block = t0..(t0 + FORWARD_TILES).min(tiles);
            input_transform::<FORWARD_TILES>(padded, g, block.clone(), v);
            for xi in 0..POSITIONS {
                let v_xi = &v[xi * FORWARD_TILES * c_n..][..FORWARD_TILES * c_n];
                let u_xi = &u[xi * c_n * n_o..][..c_n * n_o];
                let m_xi = &mut m[xi * FORWARD_TILES * n_o..][..FORWARD_TILES * n_o];
                // The lab's channel counts get their own copies, with constant strides.
                match c_n {
                    16 => product::<16>(v_xi, u_xi, c_n, n_o, m_xi),
                    32 => product::<32>(v_xi, u_xi, c_n, n_o, m_xi),
                    _ => product::<0>(v_xi, u_xi, c_n, n_o, m_xi),
                }
            }
            output_transform(m, g, n_o, block, out);
        }
    }

    /// `Bᵀ d` for four vectors.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn bt(d: [__m512; 4]) -> [__m512; 4] {
        [
            _mm512_sub_ps(d[0], d[2]),
            _mm512_add_ps(d[1], d[2]),
            _mm512_sub_ps(d[2], d[1]),
            _mm512_sub_ps(d[1], d[3]),
        ]
    }

    /// [`super::input_transform`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn input_transform<const TILES: usize>(
        padded: &[f32],
        g: &ConvGeometry,
        block: Range<usize>,
        v: &mut [f32],
    ) {
        let (c_n, pc, tw) = (g.channels, g.cols + 2, g.cols / 2);
        let slot_len = TILES * c_n;
        // Every read below is at most `corner + (3·pc + 3)·c_n + c_n ≤ padded.len()`.
        assert_eq!(padded.len(), (g.rows + 2) * pc * c_n);
        assert!(v.len() >= POSITIONS * slot_len && block.end <= g.pixels() / 4);
        for (slot, t) in block.clone().enumerate() {
            let corner = (2 * (t / tw) * pc + 2 * (t % tw)) * c_n;
            for c0 in (0..c_n).step_by(LANES) {
                // SAFETY: tile t's 4 × 4 block lies inside the padded image (asserted above).
                let d =
                    |i: usize, j: usize| unsafe { load(padded, corner + (i * pc + j) * c_n + c0) };
                let rows: [[__m512; 4]; 4] = [
                    bt([d(0, 0), d(0, 1), d(0, 2), d(0, 3)]),
                    bt([d(1, 0), d(1, 1), d(1, 2), d(1, 3)]),
                    bt([d(2, 0), d(2, 1), d(2, 2), d(2, 3)]),
                    bt([d(3, 0), d(3, 1), d(3, 2), d(3, 3)]),
                ];
                #[allow(clippy::needless_range_loop)] // `l` indexes a column across the rows
                for l in 0..4 {
                    let col = bt([rows[0][l], rows[1][l], rows[2][l], rows[3][l]]);
                    for (k, &vk) in col.iter().enumerate() {
                        // SAFETY: (4k + l)·slot_len + slot·c_n + c0 + 16 ≤ 16·slot_len.
                        unsafe { store(v, (4 * k + l) * slot_len + slot * c_n + c0, vk) };
                    }
                }
            }
        }
        for slot in block.len()..TILES {
            for xi in 0..POSITIONS {
                v[xi * slot_len + slot * c_n..][..c_n].fill(0.0);
            }
        }
    }

    /// [`super::product`] for `c_n` channels (`C`, if not 0).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn product<const C: usize>(v: &[f32], u: &[f32], c_n: usize, n_o: usize, m: &mut [f32]) {
        let mut o0 = 0;
        while o0 + 2 * LANES <= n_o {
            product_block::<2, C>(v, u, c_n, n_o, o0, m);
            o0 += 2 * LANES;
        }
        if o0 < n_o {
            product_block::<1, C>(v, u, c_n, n_o, o0, m);
        }
    }

    /// [`super::product_block`]: `FORWARD_TILES × OV` vectors of sums in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn product_block<const OV: usize, const C: usize>(
        v: &[f32],
        u: &[f32],
        c_n: usize,
        n_o: usize,
        o0: usize,
        m: &mut [f32],
    ) {
        let c_n = if C > 0 { C } else { c_n };
        assert!(
            v.len() >= FORWARD_TILES * c_n
                && u.len() >= c_n * n_o
                && m.len() >= FORWARD_TILES * n_o
        );
        assert!(o0 + OV * LANES <= n_o);
        let mut acc = [[_mm512_setzero_ps(); OV]; FORWARD_TILES];
        for c in 0..c_n {
            // SAFETY: c·n_o + o0 + OV·16 ≤ c_n·n_o (asserted above).
            let u_c: [__m512; OV] =
                std::array::from_fn(|j| unsafe { load(u, c * n_o + o0 + j * LANES) });
            for (t, acc_t) in acc.iter_mut().enumerate() {
                // SAFETY: t·c_n + c < FORWARD_TILES·c_n (asserted above).
                let s = _mm512_set1_ps(unsafe { *v.get_unchecked(t * c_n + c) });
                for (a, &u_j) in acc_t.iter_mut().zip(&u_c) {
                    *a = _mm512_fmadd_ps(s, u_j, *a);
                }
            }
        }
        for (t, acc_t) in acc.iter().enumerate() {
            for (j, &a) in acc_t.iter().enumerate() {
                // SAFETY: t·n_o + o0 + (j + 1)·16 ≤ FORWARD_TILES·n_o.
                unsafe { store(m, t * n_o + o0 + j * LANES, a) };
            }
        }
    }

    /// `(m₀ + m₁ + m₂, m₁ − m₂ − m₃)`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn at_row(m: [__m512; 4]) -> [__m512; 2] {
        [
            _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]),
            _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]),
        ]
    }

    /// [`super::output_transform`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    fn output_transform(
        m: &[f32],
        g: &ConvGeometry,
        n_o: usize,
        block: Range<usize>,
        out: &mut Epilogue<'_, f32>,
    ) {
        let (tw, cols, p) = (g.cols / 2, g.cols, g.pixels());
        let q = p / 4;
        let slot_len = FORWARD_TILES * n_o;
        assert!(m.len() >= POSITIONS * slot_len && block.end <= q);
        match out {
            Epilogue::Dense(y) => assert_eq!(y.len(), n_o * p),
            Epilogue::ReluPool2 { b, y, mask } => {
                assert!(b.len() == n_o && y.len() == n_o * q && mask.len() == n_o * q)
            }
        }
        // A block is one whole row of tiles when images are 16 columns wide: its outputs
        // are then two whole rows of each plane, written by transposing in registers.
        let row_block = cols == 2 * FORWARD_TILES && block.len() == FORWARD_TILES;
        let (t0, len) = (block.start, block.len());
        for o0 in (0..n_o).step_by(LANES) {
            // y[2a + b][slot]: row a, column b of each tile, 16 filters per vector.
            let mut y_tiles = [[_mm512_setzero_ps(); FORWARD_TILES]; 4];
            for slot in 0..len {
                // SAFETY: (4k + l)·slot_len + slot·n_o + o0 + 16 ≤ 16·slot_len.
                let at = |k: usize, l: usize| unsafe {
                    load(m, (4 * k + l) * slot_len + slot * n_o + o0)
                };
                let s: [[__m512; 2]; 4] = [
                    at_row([at(0, 0), at(0, 1), at(0, 2), at(0, 3)]),
                    at_row([at(1, 0), at(1, 1), at(1, 2), at(1, 3)]),
                    at_row([at(2, 0), at(2, 1), at(2, 2), at(2, 3)]),
                    at_row([at(3, 0), at(3, 1), at(3, 2), at(3, 3)]),
                ];
                let c0 = at_row([s[0][0], s[1][0], s[2][0], s[3][0]]);
                let c1 = at_row([s[0][1], s[1][1], s[2][1], s[3][1]]);
                [c0[0], c1[0], c0[1], c1[1]]
                    .iter()
                    .zip(y_tiles.iter_mut())
                    .for_each(|(&v, row)| row[slot] = v);
            }
            match out {
                Epilogue::Dense(y) if row_block => {
                    let ty = t0 / tw;
                    for a in 0..2 {
                        // Row i = column i of the image row: tile i/2, column i%2.
                        let mut rows: [__m512; 16] =
                            std::array::from_fn(|i| y_tiles[2 * a + i % 2][i / 2]);
                        // SAFETY: the features are enabled here.
                        unsafe { transpose16(&mut rows) };
                        for (l, &row) in rows.iter().enumerate() {
                            // SAFETY: row 2ty + a of plane o0 + l, 16 = cols values.
                            unsafe { store(y, (o0 + l) * p + (2 * ty + a) * cols, row) };
                        }
                    }
                }
                Epilogue::Dense(y) => {
                    // Filter o0 + l's plane starts at (o0 + l)·p.
                    let planes = _mm512_mullo_epi32(
                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                        _mm512_set1_epi32(p as i32),
                    );
                    for (slot, t) in block.clone().enumerate() {
                        let (ty, tx) = (t / tw, t % tw);
                        for (ab, y_ab) in y_tiles.iter().enumerate() {
                            let at = o0 * p + (2 * ty + ab / 2) * cols + 2 * tx + ab % 2;
                            // SAFETY: the largest index, (o0 + 15)·p + pixel < n_o·p = y.len().
                            unsafe {
                                _mm512_i32scatter_ps::<4>(
                                    y.as_mut_ptr().add(at).cast(),
                                    planes,
                                    y_ab[slot],
                                )
                            };
                        }
                    }
                }
                Epilogue::ReluPool2 { b, y, mask } => {
                    let zero = _mm512_setzero_ps();
                    // SAFETY: o0 + 16 ≤ n_o = b.len().
                    let bias = unsafe { load(b, o0) };
                    // Per slot: the pooled value and the routing bits, 16 filters each.
                    let (mut pooled, mut routes) = ([zero; 16], [zero; 16]);
                    for slot in 0..len {
                        let t_ab = [0, 1, 2, 3].map(|ab| _mm512_add_ps(y_tiles[ab][slot], bias));
                        // max_ps(a, b) is `if a > b { a } else { b }`: the same bits as
                        // `bias_relu_pool2`, ties and zeros included.
                        let r = t_ab.map(|t| _mm512_max_ps(t, zero));
                        let mx =
                            _mm512_max_ps(_mm512_max_ps(r[0], r[1]), _mm512_max_ps(r[2], r[3]));
                        let mut bits = _mm512_setzero_si512();
                        for (i, &t) in t_ab.iter().enumerate() {
                            let routed = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, zero)
                                & _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(t, mx);
                            bits = _mm512_or_si512(bits, _mm512_maskz_set1_epi32(routed, 1 << i));
                        }
                        pooled[slot] = mx;
                        routes[slot] = _mm512_castsi512_ps(bits);
                    }
                    // Rows become filters: the block's tiles are consecutive pooled outputs.
                    // SAFETY: the features are enabled here.
                    unsafe {
                        transpose16(&mut pooled);
                        transpose16(&mut routes);
                    }
                    let k = ((1u32 << len) - 1) as __mmask16;
                    for l in 0..LANES {
                        let at = (o0 + l) * q + t0;
                        // SAFETY: lanes 0..len of plane o0 + l, at + len ≤ n_o·q = y.len().
                        unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add(at), k, pooled[l]) };
                        let packed = _mm512_cvtepi32_epi8(_mm512_castps_si512(routes[l]));
                        // SAFETY: bytes 0..len at `at`, at + len ≤ n_o·q = mask.len().
                        unsafe {
                            _mm_mask_storeu_epi8(mask.as_mut_ptr().add(at).cast(), k, packed)
                        };
                    }
                }
            }
        }
    }

    /// [`super::weight_grad_image`] (checked by [`super::weight_grad`]).
    #[target_feature(enable = "avx512f")]
    pub(super) fn weight_grad_image(
        padded: &[f32],
        dy_padded: &[f32],
        g: &ConvGeometry,
        n_o: usize,
        du: &mut [f32],
        v: &mut [f32],
        e: &mut [f32],
    ) {
        let (tiles, c_n) = (g.pixels() / 4, g.channels);
        for t0 in (0..tiles).step_by(GRAD_TILES) {
            let block = t0..(t0 + GRAD_TILES).min(tiles);
            input_transform::<GRAD_TILES>(padded, g, block.clone(), v);
            grad_transform(dy_padded, g, n_o, block.clone(), e);
            for xi in 0..POSITIONS {
                let v_xi = &v[xi * GRAD_TILES * c_n..][..GRAD_TILES * c_n];
                let e_xi = &e[xi * GRAD_TILES * n_o..][..GRAD_TILES * n_o];
                let du_xi = &mut du[xi * c_n * n_o..][..c_n * n_o];
                for c0 in (0..c_n).step_by(GRAD_CHANNELS) {
                    let mut o0 = 0;
                    while o0 + 2 * LANES <= n_o {
                        grad_block::<2>(v_xi, e_xi, c_n, n_o, block.len(), c0, o0, du_xi);
                        o0 += 2 * LANES;
                    }
                    if o0 < n_o {
                        grad_block::<1>(v_xi, e_xi, c_n, n_o, block.len(), c0, o0, du_xi);
                    }
                }
            }
        }
    }

    /// `A v = (v₀, v₀ + v₁, v₀ − v₁, −v₁)`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn a_expand(v: [__m512; 2]) -> [__m512; 4] {
        [
            v[0],
            _mm512_add_ps(v[0], v[1]),
            _mm512_sub_ps(v[0], v[1]),
            _mm512_sub_ps(_mm512_setzero_ps(), v[1]),
        ]
    }

    /// [`super::grad_transform`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn grad_transform(
        dy_padded: &[f32],
        g: &ConvGeometry,
        n_o: usize,
        block: Range<usize>,
        e: &mut [f32],
    ) {
        let (pc, tw) = (g.cols + 2, g.cols / 2);
        let slot_len = GRAD_TILES * n_o;
        assert_eq!(dy_padded.len(), (g.rows + 2) * pc * n_o);
        assert!(e.len() >= POSITIONS * slot_len && block.end <= g.pixels() / 4);
        for (slot, t) in block.enumerate() {
            let corner = ((2 * (t / tw) + 1) * pc + 2 * (t % tw) + 1) * n_o;
            for o0 in (0..n_o).step_by(LANES) {
                // SAFETY: the tile's 2 × 2 block lies inside the padded image.
                let dy = |a: usize, b: usize| unsafe {
                    load(dy_padded, corner + (a * pc + b) * n_o + o0)
                };
                let rows = [
                    a_expand([dy(0, 0), dy(0, 1)]),
                    a_expand([dy(1, 0), dy(1, 1)]),
                ];
                #[allow(clippy::needless_range_loop)] // `l` indexes a column across the rows
                for l in 0..4 {
                    let col = a_expand([rows[0][l], rows[1][l]]);
                    for (k, &ek) in col.iter().enumerate() {
                        // SAFETY: (4k + l)·slot_len + slot·n_o + o0 + 16 ≤ 16·slot_len.
                        unsafe { store(e, (4 * k + l) * slot_len + slot * n_o + o0, ek) };
                    }
                }
            }
        }
    }

    /// [`super::grad_block`]: `GRAD_CHANNELS × OV` vectors of sums in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn grad_block<const OV: usize>(
        v: &[f32],
        e: &[f32],
        c_n: usize,
        n_o: usize,
        tiles: usize,
        c0: usize,
        o0: usize,
        du: &mut [f32],
    ) {
        assert!(tiles <= GRAD_TILES && v.len() >= GRAD_TILES * c_n && e.len() >= GRAD_TILES * n_o);
        assert!(c0 + GRAD_CHANNELS <= c_n && o0 + OV * LANES <= n_o && du.len() >= c_n * n_o);
        // SAFETY (all loads and stores of `du`): (c0 + c)·n_o + o0 + OV·16 ≤ c_n·n_o.
        let mut acc: [[__m512; OV]; GRAD_CHANNELS] = std::array::from_fn(|c| {
            std::array::from_fn(|j| unsafe { load(du, (c0 + c) * n_o + o0 + j * LANES) })
        });
        for t in 0..tiles {
            // SAFETY: t·n_o + o0 + OV·16 ≤ GRAD_TILES·n_o.
            let e_t: [__m512; OV] =
                std::array::from_fn(|j| unsafe { load(e, t * n_o + o0 + j * LANES) });
            for (c, acc_c) in acc.iter_mut().enumerate() {
                // SAFETY: t·c_n + c0 + c < GRAD_TILES·c_n.
                let s = _mm512_set1_ps(unsafe { *v.get_unchecked(t * c_n + c0 + c) });
                for (a, &e_j) in acc_c.iter_mut().zip(&e_t) {
                    *a = _mm512_fmadd_ps(s, e_j, *a);
                }
            }
        }
        for (c, acc_c) in acc.iter().enumerate() {
            for (j, &a) in acc_c.iter().enumerate() {
                unsafe { store(du, (c0 + c) * n_o + o0 + j * LANES, a) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::direct::flip_transpose;
    use crate::kernels::reference::{conv2d_backward, conv2d_forward};
    use crate::kernels::relu_pool::{pool_planes, relu_pool2_backward};
    use ndarray::{Array2, Array4};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array4::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
    }

    fn geometry(channels: usize, rows: usize, cols: usize) -> ConvGeometry {
        ConvGeometry {
            channels,
            rows,
            cols,
            h: 3,
        }
    }

    /// `W ⋆ x` of every image through the Winograd kernels (no bias).
    fn convolve<F: Float>(x: &Array4<F>, w: &Array4<F>) -> Array4<F> {
        let (n_b, n_i, rows, cols) = x.dim();
        let n_o = w.dim().0;
        let g = geometry(n_i, rows, cols);
        let u = transform_filters(w.as_slice().unwrap(), n_o, n_i);
        let mut y = Array4::zeros((n_b, n_o, rows, cols));
        let (mut padded, mut scratch) = (vec![F::zero(); padded_len(&g)], Scratch::default());
        let ys = y
            .as_slice_mut()
            .unwrap()
            .chunks_exact_mut(n_o * rows * cols);
        for (x_n, y_n) in x.as_slice().unwrap().chunks_exact(g.image_len()).zip(ys) {
            pad_channels_last(x_n, &g, &mut padded);
            forward(&padded, &g, &u, n_o, Epilogue::Dense(y_n), &mut scratch);
        }
        y
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn all_ones_counts_the_taps_inside_the_image() {
        // 16 channels of ones, one filter of ones: each output counts its in-image taps × 16.
        let x = Array4::<f32>::ones((1, 16, 4, 6));
        let w = Array4::<f32>::ones((16, 16, 3, 3));
        let y = convolve(&x, &w);
        let row_ends = [
            4.0 * 16.0,
            6.0 * 16.0,
            6.0 * 16.0,
            6.0 * 16.0,
            6.0 * 16.0,
            4.0 * 16.0,
        ];
        let row_mid = [
            6.0 * 16.0,
            9.0 * 16.0,
            9.0 * 16.0,
            9.0 * 16.0,
            9.0 * 16.0,
            6.0 * 16.0,
        ];
        for o in 0..16 {
            for r in 0..4 {
                let want = if r == 0 || r == 3 { row_ends } else { row_mid };
                assert_eq!(
                    y.slice(ndarray::s![0, o, r, ..]).to_vec(),
                    want,
                    "filter {o}, row {r}"
                );
            }
        }
    }

    #[test]
    fn pad_channels_last_moves_every_value_and_zeroes_the_border() {
        let g = geometry(16, 2, 4);
        let x: Vec<f64> = (0..g.image_len()).map(|i| i as f64 + 1.0).collect();
        let mut padded = vec![f64::NAN; padded_len(&g)];
        pad_channels_last(&x, &g, &mut padded);
        for r in 0..4 {
            for q in 0..6 {
                for c in 0..16 {
                    let inside = (1..3).contains(&r) && (1..5).contains(&q);
                    let want = if inside {
                        x[(c * 2 + r - 1) * 4 + q - 1]
                    } else {
                        0.0
                    };
                    assert_eq!(padded[(r * 6 + q) * 16 + c], want, "({r}, {q}, {c})");
                }
            }
        }
    }

    /// The forward pass against the reference loops, over shapes that cross tile blocks,
    /// with more filters than one register block, fewer, and non-square images.
    #[test]
    fn forward_matches_the_reference_loops() {
        for (k, &(n_b, n_i, n_o, rows, cols)) in [
            (2, 16, 32, 16, 16),
            (1, 32, 16, 6, 8),
            (1, 16, 48, 10, 4),
            (1, 48, 16, 2, 2),
        ]
        .iter()
        .enumerate()
        {
            let x = random4((n_b, n_i, rows, cols), 10 + k as u64);
            let w = random4((n_o, n_i, 3, 3), 20 + k as u64);
            let want = conv2d_forward(x.view(), w.view(), Array2::zeros((1, n_o)).view());
            let got = convolve(&x, &w);
            let err = max_abs_diff(got.as_slice().unwrap(), want.as_slice().unwrap());
            assert!(err < 1e-12, "shape {k}: max error {err}");
        }
    }

    /// In `f32`, the transforms' extra rounding stays near `f32` precision.
    #[test]
    fn f32_agrees_with_f64() {
        let x = random4((2, 16, 16, 16), 3);
        let w = random4((32, 16, 3, 3), 4);
        let want = convolve(&x, &w);
        let got = convolve(&x.mapv(|v| v as f32), &w.mapv(|v| v as f32));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = max_abs_diff(
            &got.mapv(f64::from).into_raw_vec_and_offset().0,
            want.as_slice().unwrap(),
        );
        assert!(err < 2e-6 * scale, "max error {err} at scale {scale}");
    }

    /// The fused epilogue writes what the dense output then `bias_relu_pool2` would, bit for
    /// bit, including ties (integer-valued data give many).
    #[test]
    fn pooled_epilogue_matches_dense_output_then_pooling_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n_i, n_o, rows, cols) = (16, 32, 8, 12);
        let g = geometry(n_i, rows, cols);
        let x: Vec<f32> = (0..g.image_len())
            .map(|_| f32::from(rng.random_range(-2i8..=2)))
            .collect();
        let w: Vec<f32> = (0..n_o * n_i * 9)
            .map(|_| f32::from(rng.random_range(-1i8..=1)))
            .collect();
        let b: Vec<f32> = (0..n_o)
            .map(|_| f32::from(rng.random_range(-3i8..=3)))
            .collect();
        let u = transform_filters(&w, n_o, n_i);
        let (mut padded, mut scratch) = (vec![0.0; padded_len(&g)], Scratch::default());
        pad_channels_last(&x, &g, &mut padded);
        let mut dense = vec![0.0; n_o * g.pixels()];
        forward(
            &padded,
            &g,
            &u,
            n_o,
            Epilogue::Dense(&mut dense),
            &mut scratch,
        );
        let q = g.pixels() / 4;
        let (y_ref, mask_ref) = pool_planes(&dense, &b, cols);
        let (mut y, mut mask) = (vec![f32::NAN; n_o * q], vec![0xffu8; n_o * q]);
        let out = Epilogue::ReluPool2 {
            b: &b,
            y: &mut y,
            mask: &mut mask,
        };
        forward(&padded, &g, &u, n_o, out, &mut scratch);
        assert_eq!(y, y_ref);
        assert_eq!(mask, mask_ref);
        assert!(
            mask.iter().any(|&m| m.count_ones() > 1),
            "the data should hold ties"
        );
    }

    /// dℓ/dW (summed over a batch) and dℓ/dx (the forward pass of dℓ/dy with flipped,
    /// transposed filters) against the reference loops.
    #[test]
    fn gradients_match_the_reference_loops() {
        for (k, &(n_b, n_i, n_o, rows, cols)) in
            [(3, 16, 32, 16, 16), (2, 32, 16, 6, 4), (1, 16, 16, 2, 8)]
                .iter()
                .enumerate()
        {
            let x = random4((n_b, n_i, rows, cols), 30 + k as u64);
            let w = random4((n_o, n_i, 3, 3), 40 + k as u64);
            let dy = random4((n_b, n_o, rows, cols), 50 + k as u64);
            let (dx_ref, dw_ref, _) = conv2d_backward(x.view(), w.view(), dy.view());

            let (g, g_dy) = (geometry(n_i, rows, cols), geometry(n_o, rows, cols));
            let mut scratch = Scratch::default();
            let mut du = vec![f64::NAN; filters_len(n_i, n_o)];
            let (mut x_pad, mut dy_pad) = (vec![0.0; padded_len(&g)], vec![0.0; padded_len(&g_dy)]);
            let u_t = transform_filters(
                &flip_transpose(w.as_slice().unwrap(), n_o, n_i, 3),
                n_i,
                n_o,
            );
            let mut dx = vec![0.0; x.len()];
            let images = x.as_slice().unwrap().chunks_exact(g.image_len());
            let grads = dy.as_slice().unwrap().chunks_exact(g_dy.image_len());
            for (j, ((x_n, dy_n), dx_n)) in images
                .zip(grads)
                .zip(dx.chunks_exact_mut(g.image_len()))
                .enumerate()
            {
                pad_channels_last(x_n, &g, &mut x_pad);
                pad_channels_last(dy_n, &g_dy, &mut dy_pad);
                weight_grad(&x_pad, &dy_pad, &g, n_o, &mut du, j > 0, &mut scratch);
                forward(
                    &dy_pad,
                    &g_dy,
                    &u_t,
                    n_i,
                    Epilogue::Dense(dx_n),
                    &mut scratch,
                );
            }
            let mut dw = vec![0.0; w.len()];
            filter_grad(&du, n_o, n_i, &mut dw);
            let err = max_abs_diff(&dw, dw_ref.as_slice().unwrap());
            assert!(err < 1e-11, "shape {k}: dW max error {err}");
            let err = max_abs_diff(&dx, dx_ref.as_slice().unwrap());
            assert!(err < 1e-12, "shape {k}: dx max error {err}");
        }
    }

    /// The explicit AVX-512 kernels against the portable loops in `f32` (the same sums;
    /// only fused multiply-adds round differently), dense and pooled, with a partial last
    /// block of tiles and rows that are not one block long.
    #[test]
    fn explicit_kernels_match_the_portable_loops() {
        if !runs_fast() {
            eprintln!("skipped: no AVX-512 here");
            return;
        }
        for (k, &(n_i, n_o, rows, cols)) in [(16, 32, 16, 16), (32, 16, 6, 10), (16, 48, 4, 4)]
            .iter()
            .enumerate()
        {
            let (g, g_dy) = (geometry(n_i, rows, cols), geometry(n_o, rows, cols));
            let to32 = |a: Array4<f64>| a.mapv(|v| v as f32).into_raw_vec_and_offset().0;
            let x = to32(random4((1, n_i, rows, cols), 60 + k as u64));
            let w = to32(random4((n_o, n_i, 3, 3), 70 + k as u64));
            let dy = to32(random4((1, n_o, rows, cols), 80 + k as u64));
            let b: Vec<f32> = (0..n_o).map(|o| o as f32 * 0.01 - 0.1).collect();
            let u = transform_filters(&w, n_o, n_i);
            let (mut x_pad, mut dy_pad) = (vec![0.0; padded_len(&g)], vec![0.0; padded_len(&g_dy)]);
            let mut portable_pad = x_pad.clone();
            pad_channels_last(&x, &g, &mut x_pad);
            pad_channels_last(&dy, &g_dy, &mut dy_pad);
            let mut s = Scratch::default();
            // The portable loops, called directly (the public functions dispatch).
            pad_channels_last_portable(&x, &g, &mut portable_pad);
            assert_eq!(portable_pad, x_pad, "shape {k}: padded copy");

            let (mut fast, mut slow) = (vec![0.0; n_o * g.pixels()], vec![0.0; n_o * g.pixels()]);
            forward(&x_pad, &g, &u, n_o, Epilogue::Dense(&mut fast), &mut s);
            forward_image(&x_pad, &g, &u, n_o, Epilogue::Dense(&mut slow), &mut s);
            let close = |a: &[f32], b: &[f32], what: &str| {
                let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-6 * scale,
                        "shape {k}, {what}: {x} vs {y}"
                    );
                }
            };
            close(&fast, &slow, "dense");

            let q = g.pixels() / 4;
            let (mut y_fast, mut m_fast) = (vec![0.0; n_o * q], vec![0u8; n_o * q]);
            let (mut y_slow, mut m_slow) = (vec![0.0; n_o * q], vec![0u8; n_o * q]);
            let pooled = |y, mask| Epilogue::ReluPool2 { b: &b, y, mask };
            forward(
                &x_pad,
                &g,
                &u,
                n_o,
                pooled(&mut y_fast, &mut m_fast),
                &mut s,
            );
            forward_image(
                &x_pad,
                &g,
                &u,
                n_o,
                pooled(&mut y_slow, &mut m_slow),
                &mut s,
            );
            close(&y_fast, &y_slow, "pooled");
            let same = m_fast.iter().zip(&m_slow).filter(|(a, b)| a == b).count();
            assert!(
                same * 100 >= 99 * m_fast.len(),
                "shape {k}: routing bytes {same} of {}",
                m_fast.len()
            );

            let (mut du_fast, mut du_slow) = (
                vec![0.0; filters_len(n_i, n_o)],
                vec![0.0; filters_len(n_i, n_o)],
            );
            weight_grad(&x_pad, &dy_pad, &g, n_o, &mut du_fast, false, &mut s);
            weight_grad_image(&x_pad, &dy_pad, &g, n_o, &mut du_slow, &mut s);
            close(&du_fast, &du_slow, "dU");
        }
    }

    /// Un-pooling into the channels-last copy writes what `relu_pool2_backward` then
    /// `pad_channels_last` would, bit for bit, in `f32` (explicit kernel where it runs) and
    /// `f64`, for pooled rows shorter and longer than one vector.
    #[test]
    fn unpooling_matches_relu_pool2_backward_then_padding() {
        fn check<F: Float>(rows: usize, cols: usize, seed: u64) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let g = geometry(32, rows, cols);
            let q = g.pixels() / 4;
            let dy: Vec<F> = (0..32 * q)
                .map(|_| F::from_f64(rng.random_range(-1.0..1.0)))
                .collect();
            let mask: Vec<u8> = (0..32 * q).map(|_| rng.random_range(0..16)).collect();
            let mut dense = vec![F::zero(); 32 * g.pixels()];
            for ((dy_c, m_c), plane) in dy
                .chunks_exact(q)
                .zip(mask.chunks_exact(q))
                .zip(dense.chunks_exact_mut(g.pixels()))
            {
                relu_pool2_backward(dy_c, m_c, cols, plane);
            }
            let mut want = vec![F::zero(); padded_len(&g)];
            pad_channels_last(&dense, &g, &mut want);
            let mut got = vec![F::nan(); padded_len(&g)];
            unpool_channels_last(&dy, &mask, &g, &mut got);
            let bits = |v: &[F]| v.iter().map(|x| x.as_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{rows}×{cols}");
        }
        for (rows, cols, seed) in [(4, 6, 1), (16, 16, 2), (2, 36, 3)] {
            check::<f32>(rows, cols, seed);
            check::<f64>(rows, cols, seed);
        }
    }

    #[test]
    fn channel_sums_add_every_pixel_of_each_channel() {
        // A 2 × 2 image whose channel c holds c, c + 1, c + 2, c + 3: its sum is 4c + 6. With
        // 16 channels (one vector) and 20 (a vector and 4 more).
        for channels in [16, 20] {
            let g = geometry(channels, 2, 2);
            let x: Vec<f32> = (0..channels)
                .flat_map(|c| (0..4).map(move |k| (c + k) as f32))
                .collect();
            let mut padded = vec![0.0; padded_len(&g)];
            pad_channels_last(&x, &g, &mut padded);
            let mut sums = vec![1.0; channels];
            add_channel_sums(&padded, &g, &mut sums);
            let want: Vec<f32> = (0..channels).map(|c| 1.0 + 4.0 * c as f32 + 6.0).collect();
            assert_eq!(sums, want, "{channels} channels");
        }
    }

    #[test]
    fn applies_only_to_3x3_filters_on_even_images_in_whole_vectors() {
        assert!(applies(&geometry(16, 16, 16), 32));
        assert!(applies(&geometry(128, 8, 8), 256));
        assert!(!applies(&geometry(3, 32, 32), 16), "3 channels");
        assert!(!applies(&geometry(16, 15, 16), 32), "odd rows");
        assert!(!applies(&geometry(16, 16, 16), 10), "10 filters");
        assert!(
            !applies(
                &ConvGeometry {
                    h: 5,
                    ..geometry(16, 16, 16)
                },
                32
            ),
            "5×5"
        );
    }
}
