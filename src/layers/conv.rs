//! 2-D convolution with "same" zero padding and a tied bias.
//!
//! `y[n,o] = Σ_i W[o,i] ⋆ x[n,i] + b[o]`, where `⋆` is cross-correlation (no filter flip,
//! as in PyTorch) over the input zero-padded by `(h−1)/2` before and `h/2` after, so the
//! output keeps the input's rows and columns.
//!
//! Gradients (dy = dℓ/dy):
//! - `db[o] = Σ_{n,r,c} dy[n,o,r,c]`
//! - `dW[o,i] = Σ_n x_pad[n,i] ⋆ dy[n,o]`
//! - `dx[n,i] = Σ_o dy[n,o] ∗ W[o,i]` (full convolution, cropped to the input)
//!
//! The fast path works image by image, in parallel over images. Products run either as one
//! GEMM per image on [`im2col`]'s matrix (`Y = W·X_col`, `dWᵀ += X_col·dYᵀ`,
//! `dX_col = Wᵀ·dY`) or, where [`crate::kernels::direct`] says it pays (short patches, wide
//! images), as a direct convolution; dℓ/dx is then itself a forward convolution of dℓ/dy
//! with the flipped, transposed filters. 3×3 `f32` layers with channels and filters in
//! multiples of 16 run all three products with [`crate::kernels::winograd`] instead.
//! [`crate::kernels::reference`] holds the plain loops they are all tested against.
//! [`ConvLayer::forward_relu_pool2`] runs the layer with ReLU and 2×2 max pooling applied to
//! each image's output while it is still in cache; [`crate::Sequential`] uses it.
//!
//! ```
//! use scratchnet::layers::ConvLayer;
//! use scratchnet::{Layer, ndarray::{array, Array4}};
//! use scratchnet::rand::SeedableRng;
//!
//! let mut conv = ConvLayer::<f32>::new(1, 1, 3, &mut scratchnet::rand_chacha::ChaCha8Rng::seed_from_u64(0));
//! conv.w = Array4::ones((1, 1, 3, 3)); // each output = sum of its 3×3 neighbourhood
//! let x = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]].into_shape_with_order((1, 1, 3, 3)).unwrap();
//! let y = conv.forward(x.view().into_dyn());
//! assert_eq!(y.into_raw_vec_and_offset().0, vec![12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0]);
//! ```

use crate::init::glorot_normal;
use crate::kernels::direct::{
    conv_bias_relu_pool2, conv_forward, conv_weight_grad, flip_transpose, im2col_padded, pad_image,
    padded_len, prefers_direct, prefers_direct_weight_grad, transposed_geometry,
};
use crate::kernels::gemm::{matmul, MatRef};
use crate::kernels::im2col::{col2im, im2col, ConvGeometry};
use crate::kernels::reduce::sum;
use crate::kernels::relu_pool::{bias_relu_pool2, relu_pool2_backward};
use crate::kernels::winograd::{self, Epilogue};
use crate::layer::{expect_grad_shape, expect_shape, missing_forward, weight_and_bias, zeros_par};
use crate::{Float, Layer, Param, ShapeError};
use ndarray::{Array2, Array4, ArrayD, ArrayView4, ArrayViewD, Ix4};
use rand::Rng;
use rayon::prelude::*;
use std::any::Any;
use std::sync::{Mutex, MutexGuard};

/// Images handled by one parallel task. Fixed (not derived from the thread count) so
/// that per-task weight-gradient partial sums, added in task order, give bit-identical
/// results with any number of threads.
const IMAGES_PER_TASK: usize = 4;

/// A 2-D "same" convolution layer: `(n_b, n_i, n_r, n_c) → (n_b, n_o, n_r, n_c)`.
pub struct ConvLayer<F: Float> {
    /// Filters, shape `(n_o, n_i, h, h)`. May be replaced or edited between passes.
    pub w: Array4<F>,
    /// Biases, shape `(1, n_o)`.
    pub b: Array2<F>,
    /// dℓ/dW from the last backward, shape `(n_o, n_i, h, h)`.
    pub w_grad: Array4<F>,
    /// dℓ/db from the last backward, shape `(1, n_o)`.
    pub b_grad: Array2<F>,
    /// What the last forward pass kept of its input for the backward pass.
    kept: Option<KeptInput<F>>,
    /// The partial parameter gradients of every parallel task, reused across batches.
    scratch: Vec<TaskScratch<F>>,
    /// Working buffers, one set per worker thread so that they stay in that core's cache.
    workers: Vec<Mutex<WorkerScratch<F>>>,
}

/// Which kernels compute a layer's products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernels {
    /// One GEMM per image on [`im2col`]'s matrix.
    Im2col,
    /// [`crate::kernels::direct`] (the weight gradient possibly by GEMM, see
    /// [`prefers_direct_weight_grad`]).
    Direct,
    /// [`crate::kernels::winograd`], for all three products.
    Winograd,
}

impl Kernels {
    /// The kernels for geometry `g` with `n_o` filters in float type `F`: Winograd for `f32`
    /// where it applies and its explicit kernels run (in `f64` the direct and GEMM paths
    /// stay the more accurate reference).
    fn choose<F: Float>(g: &ConvGeometry, n_o: usize) -> Self {
        if F::as_f32_slice(&[]).is_some() && winograd::runs_fast() && winograd::applies(g, n_o) {
            Self::Winograd
        } else if prefers_direct(g) {
            Self::Direct
        } else {
            Self::Im2col
        }
    }

    /// Values per kept image: zero-padded for the direct kernels ([`pad_image`]), padded
    /// channels-last for Winograd ([`winograd::pad_channels_last`]).
    fn kept_len(self, g: &ConvGeometry) -> usize {
        match self {
            Self::Im2col => g.image_len(),
            Self::Direct => padded_len(g),
            Self::Winograd => winograd::padded_len(g),
        }
    }
}

/// The input of the last forward pass, kept for the weight gradient.
struct KeptInput<F> {
    /// `(n_b, n_i, rows, cols)`.
    dim: (usize, usize, usize, usize),
    /// Geometry of one image under the current weights.
    g: ConvGeometry,
    /// The kernels of the forward pass, whose layout `images` has.
    kernels: Kernels,
    /// The images one after another, as [`Kernels::kept_len`] says, so that the backward
    /// pass need not pad them again. Reused across batches of the same shape.
    images: Vec<F>,
}

/// The partial sums of one task of [`IMAGES_PER_TASK`] images: kept per task (not per
/// thread) so that adding them up in task order gives the same bits for any thread count.
#[derive(Default)]
struct TaskScratch<F> {
    /// dWᵀ of the task, `(n_i·h·h) × n_o`.
    w_grad_t: Vec<F>,
    /// The Winograd kernels' summed products of the task, `(16, n_i, n_o)`.
    w_grad_u: Vec<F>,
    b_grad: Vec<F>,
}

/// Buffers one worker thread overwrites for each image.
#[derive(Default)]
struct WorkerScratch<F> {
    x_col: Vec<F>,
    d_col: Vec<F>,
    /// One image's dℓ/dy, zero-padded for the transposed convolution that gives dℓ/dx.
    dy_pad: Vec<F>,
    /// One image's full-size output (fused forward) or dℓ/dy (fused backward).
    out: Vec<F>,
    /// The Winograd kernels' working buffers.
    winograd: winograd::Scratch<F>,
}

/// The calling worker thread's buffers (uncontended: each thread has its own).
fn worker_scratch<F>(workers: &[Mutex<WorkerScratch<F>>]) -> MutexGuard<'_, WorkerScratch<F>> {
    let slot = rayon::current_thread_index().unwrap_or(0) % workers.len();
    workers[slot]
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<F: Float> ConvLayer<F> {
    /// A layer with `n_i` input channels, `n_o` filters of size `h × h`, Glorot-normal
    /// weights (`σ = sqrt(2/(n_i·h² + n_o·h²))`) and zero biases.
    ///
    /// # Panics
    /// If `n_i`, `n_o` or `h` is zero.
    pub fn new<R: Rng + ?Sized>(n_i: usize, n_o: usize, h: usize, rng: &mut R) -> Self {
        assert!(
            n_i > 0 && n_o > 0 && h > 0,
            "ConvLayer::new: n_i, n_o and h must be positive (got {n_i}, {n_o}, {h})"
        );
        let w = glorot_normal(&[n_o, n_i, h, h], n_i * h * h, n_o * h * h, rng)
            .into_dimensionality::<Ix4>()
            .expect("4-D by construction");
        Self {
            w_grad: Array4::zeros(w.raw_dim()),
            w,
            b: Array2::zeros((1, n_o)),
            b_grad: Array2::zeros((1, n_o)),
            kept: None,
            scratch: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// `(n_o, n_i, h)` from the current weights.
    fn dims(&self) -> (usize, usize, usize) {
        let (n_o, n_i, h, h2) = self.w.dim();
        assert_eq!(
            h,
            h2,
            "ConvLayer: filters must be square, w has shape {:?}",
            self.w.shape()
        );
        assert_eq!(
            self.b.dim(),
            (1, n_o),
            "ConvLayer: b must have shape (1, {n_o}) to match w, has {:?}",
            self.b.shape()
        );
        (n_o, n_i, h)
    }
}

/// One parallel task's share of a forward pass's output.
enum TaskOut<'a, F> {
    /// `y = W ⋆ x + b`: images of `n_o · pixels` values.
    Dense(&'a mut [F]),
    /// `maxpool₂(relu(W ⋆ x + b))`: images of `n_o · pixels / 4` values, with one gradient
    /// routing byte per value (see [`crate::kernels::relu_pool`]).
    ReluPool2 { y: &'a mut [F], mask: &'a mut [u8] },
}

/// One parallel task's share of the gradient a backward pass starts from.
#[derive(Clone, Copy)]
enum TaskGrad<'a, F> {
    /// dℓ/dy for `y = W ⋆ x + b`.
    Dense(&'a [F]),
    /// dℓ/dy for `y = maxpool₂(relu(W ⋆ x + b))`, with the forward pass's routing bytes.
    ReluPool2 { dy: &'a [F], mask: &'a [u8] },
}

impl<F: Float> ConvLayer<F> {
    /// The geometry of the current weights applied to images of `rows × cols`.
    fn geometry(&self, rows: usize, cols: usize) -> ConvGeometry {
        let (_, n_i, h) = self.dims();
        ConvGeometry {
            channels: n_i,
            rows,
            cols,
            h,
        }
    }

    /// Runs the convolution on `x` (checked by the caller), keeping `x` for the backward pass
    /// and writing each task's images through its entry of `tasks_out`.
    fn forward_impl(&mut self, x: ArrayView4<'_, F>, tasks_out: Vec<TaskOut<'_, F>>) {
        let (n_o, _, _) = self.dims();
        let (_, _, rows, cols) = x.dim();
        let g = self.geometry(rows, cols);
        let kernels = Kernels::choose::<F>(&g, n_o);
        let kept = self.kept.get_or_insert_with(|| KeptInput {
            dim: x.dim(),
            g,
            kernels,
            images: Vec::new(),
        });
        kept.dim = x.dim();
        kept.g = g;
        kept.kernels = kernels;
        let kept_len = kernels.kept_len(&g);
        // Every value is overwritten below: only a change of size costs a fill.
        kept.images.resize(x.dim().0 * kept_len, F::zero());
        let (in_len, p, k) = (g.image_len(), g.pixels(), g.patch_len());
        if tasks_out.is_empty() || in_len == 0 {
            return;
        }
        let x = x.as_standard_layout();
        let x_all = x.as_slice().expect("standard layout");
        prepare_scratch(
            &mut self.scratch,
            &mut self.workers,
            tasks_out.len(),
            (&g, n_o, kernels),
        );
        let workers = &self.workers;
        let w = self.w.as_standard_layout();
        let w_mat_data = w.as_slice().expect("standard layout");
        let w_mat = MatRef::row_major(w_mat_data, n_o, k);
        let direct = kernels == Kernels::Direct;
        let u = (kernels == Kernels::Winograd)
            .then(|| winograd::transform_filters(w_mat_data, n_o, g.channels));
        let u = u.as_deref();
        let b = self.b.as_standard_layout();
        let b = b.as_slice().expect("standard layout");
        tasks_out
            .into_par_iter()
            .zip(x_all.par_chunks(IMAGES_PER_TASK * in_len))
            .zip(kept.images.par_chunks_mut(IMAGES_PER_TASK * kept_len))
            .for_each(|((mut out_task, x_task), kept_task)| {
                let mut s = worker_scratch(workers);
                let WorkerScratch {
                    x_col,
                    out,
                    winograd: wino,
                    ..
                } = &mut *s;
                // y_n = W ⋆ x_n, without the bias; keeps x_n (padded for the direct and
                // Winograd kernels) for the backward pass.
                let mut convolve =
                    |x_n: &[F],
                     kept_n: &mut [F],
                     y_n: &mut [F],
                     wino: &mut winograd::Scratch<F>| {
                        if let Some(u) = u {
                            winograd::pad_channels_last(x_n, &g, kept_n);
                            winograd::forward(kept_n, &g, u, n_o, Epilogue::Dense(y_n), wino);
                        } else if direct {
                            pad_image(x_n, &g, kept_n);
                            conv_forward(kept_n, &g, w_mat_data, n_o, y_n);
                        } else {
                            kept_n.copy_from_slice(x_n);
                            im2col(x_n, &g, x_col);
                            matmul(w_mat, MatRef::row_major(x_col, k, p), y_n, false);
                        }
                    };
                let images = x_task
                    .chunks_exact(in_len)
                    .zip(kept_task.chunks_exact_mut(kept_len));
                for (j, (x_n, kept_n)) in images.enumerate() {
                    match &mut out_task {
                        TaskOut::Dense(y) => {
                            let y_n = &mut y[j * n_o * p..(j + 1) * n_o * p];
                            convolve(x_n, kept_n, y_n, wino);
                            for (row, &bias) in y_n.chunks_exact_mut(p).zip(b) {
                                row.iter_mut().for_each(|v| *v += bias);
                            }
                        }
                        TaskOut::ReluPool2 { y, mask } => {
                            let q = p / 4;
                            let range = j * n_o * q..(j + 1) * n_o * q;
                            let (y_n, mask_n) = (&mut y[range.clone()], &mut mask[range]);
                            if let Some(u) = u {
                                winograd::pad_channels_last(x_n, &g, kept_n);
                                let out = Epilogue::ReluPool2 {
                                    b,
                                    y: y_n,
                                    mask: mask_n,
                                };
                                winograd::forward(kept_n, &g, u, n_o, out, wino);
                                continue;
                            }
                            // The full-size output, if any, stays in this scratch buffer, in cache.
                            let out = cache_aligned(out, n_o * p);
                            if direct {
                                pad_image(x_n, &g, kept_n);
                                if conv_bias_relu_pool2(kept_n, &g, w_mat_data, b, n_o, y_n, mask_n)
                                {
                                    continue;
                                }
                                conv_forward(kept_n, &g, w_mat_data, n_o, out);
                            } else {
                                convolve(x_n, kept_n, out, wino);
                            }
                            let outs = y_n.chunks_exact_mut(q).zip(mask_n.chunks_exact_mut(q));
                            for ((plane, &bias), (y_o, m_o)) in out.chunks_exact(p).zip(b).zip(outs)
                            {
                                bias_relu_pool2(plane, bias, cols, y_o, m_o);
                            }
                        }
                    }
                }
            });
    }

    /// The backward pass from `tasks_grad` (one entry per task); dℓ/dx only if `want_x_grad`
    /// (the first layer does not need it).
    fn backward_impl(
        &mut self,
        tasks_grad: Vec<TaskGrad<'_, F>>,
        want_x_grad: bool,
    ) -> Option<ArrayD<F>> {
        let (n_o, n_i_w, h) = self.dims();
        let kept = self.kept.as_ref().expect("checked by the caller");
        let (n_b, n_i, rows, cols) = kept.dim;
        let g = kept.g;
        let (k, p, in_len) = (g.patch_len(), g.pixels(), g.image_len());
        let kernels = kept.kernels;
        let kept_len = kernels.kept_len(&g);
        let mut x_grad = want_x_grad.then(|| zeros_par(&[n_b, n_i, rows, cols]));
        if self.w_grad.dim() != self.w.dim() {
            self.w_grad = Array4::zeros(self.w.raw_dim());
        }
        self.w_grad.fill(F::zero());
        self.b_grad = Array2::zeros((1, n_o));
        let tasks = tasks_grad.len();
        if tasks == 0 || in_len == 0 {
            return x_grad;
        }
        prepare_scratch(
            &mut self.scratch,
            &mut self.workers,
            tasks,
            (&g, n_o, kernels),
        );
        let workers = &self.workers;
        let w = self.w.as_standard_layout();
        let w_slice = w.as_slice().expect("standard layout");
        let w_mat = MatRef::row_major(w_slice, n_o, k);
        // Where the input was kept padded, and which products run directly.
        let padded = kernels == Kernels::Direct;
        let direct_dw = padded && prefers_direct_weight_grad::<F>(&g);
        let transposed = transposed_geometry(&g, n_o)
            .filter(|_| want_x_grad && kernels == Kernels::Direct)
            .map(|g_t| (g_t, flip_transpose(w_slice, n_o, n_i_w, h)));
        // Winograd: dℓ/dy's geometry, and the transformed filters of dℓ/dx if wanted.
        let wino = (kernels == Kernels::Winograd).then(|| {
            let g_dy = ConvGeometry { channels: n_o, ..g };
            let u_t = want_x_grad.then(|| {
                let w_t = flip_transpose(w_slice, n_o, n_i_w, h);
                winograd::transform_filters(&w_t, n_i_w, n_o)
            });
            (g_dy, u_t)
        });
        let (transposed, wino) = (transposed.as_ref(), wino.as_ref());
        let dx_tasks: Vec<Option<&mut [F]>> = match &mut x_grad {
            Some(dx) => dx
                .as_slice_mut()
                .expect("fresh array")
                .chunks_mut(IMAGES_PER_TASK * in_len)
                .map(Some)
                .collect(),
            None => (0..tasks).map(|_| None).collect(),
        };
        dx_tasks
            .into_par_iter()
            .zip(tasks_grad)
            .zip(kept.images.par_chunks(IMAGES_PER_TASK * kept_len))
            .zip(self.scratch.par_iter_mut())
            .for_each(|(((mut dx_task, grad), x_task), task)| {
                let TaskScratch {
                    w_grad_t,
                    w_grad_u,
                    b_grad,
                } = task;
                let mut worker = worker_scratch(workers);
                let WorkerScratch {
                    x_col,
                    d_col,
                    dy_pad,
                    out,
                    winograd: wino_scratch,
                } = &mut *worker;
                b_grad.fill(F::zero());
                for (j, x_n) in x_task.chunks_exact(kept_len).enumerate() {
                    if let Some((g_dy, u_t)) = wino {
                        // dℓ/dy straight into its channels-last padded copy, which gives the
                        // bias gradient, the weight gradient and (as input) dℓ/dx.
                        dy_pad.resize(winograd::padded_len(g_dy), F::zero());
                        let (dense, pooled) = (
                            j * n_o * p..(j + 1) * n_o * p,
                            j * n_o * p / 4..(j + 1) * n_o * p / 4,
                        );
                        match grad {
                            TaskGrad::Dense(dy) => {
                                winograd::pad_channels_last(&dy[dense], g_dy, dy_pad)
                            }
                            TaskGrad::ReluPool2 { dy, mask } => winograd::unpool_channels_last(
                                &dy[pooled.clone()],
                                &mask[pooled],
                                g_dy,
                                dy_pad,
                            ),
                        }
                        winograd::add_channel_sums(dy_pad, g_dy, b_grad);
                        let ws = &mut *wino_scratch;
                        winograd::weight_grad(x_n, dy_pad, &g, n_o, w_grad_u, j > 0, ws);
                        if let (Some(dx), Some(u_t)) = (dx_task.as_deref_mut(), u_t) {
                            let dx_n = Epilogue::Dense(&mut dx[j * in_len..(j + 1) * in_len]);
                            winograd::forward(dy_pad, g_dy, u_t, n_i_w, dx_n, ws);
                        }
                        continue;
                    }
                    let dy_n: &[F] = match grad {
                        TaskGrad::Dense(dy) => &dy[j * n_o * p..(j + 1) * n_o * p],
                        TaskGrad::ReluPool2 { dy, mask } => {
                            let q = p / 4;
                            let range = j * n_o * q..(j + 1) * n_o * q;
                            let ins = dy[range.clone()]
                                .chunks_exact(q)
                                .zip(mask[range].chunks_exact(q));
                            let out = cache_aligned(out, n_o * p);
                            for ((dy_o, m_o), plane) in ins.zip(out.chunks_exact_mut(p)) {
                                relu_pool2_backward(dy_o, m_o, cols, plane);
                            }
                            out
                        }
                    };
                    for (acc, row) in b_grad.iter_mut().zip(dy_n.chunks_exact(p)) {
                        *acc += sum(row);
                    }
                    let dy_mat = MatRef::row_major(dy_n, n_o, p);
                    if direct_dw {
                        // x_n was kept zero-padded.
                        conv_weight_grad(x_n, &g, dy_n, n_o, w_grad_t, j > 0);
                    } else {
                        if padded {
                            im2col_padded(x_n, &g, x_col);
                        } else {
                            im2col(x_n, &g, x_col);
                        }
                        // dWᵀ += X_col · dYᵀ (the transposed product runs faster in the GEMM
                        // kernels than dY · X_colᵀ: both operands stream along the pixels).
                        matmul(MatRef::row_major(x_col, k, p), dy_mat.t(), w_grad_t, j > 0);
                    }
                    let Some(dx) = dx_task.as_deref_mut() else {
                        continue;
                    };
                    let dx_n = &mut dx[j * in_len..(j + 1) * in_len];
                    if let Some((g_t, w_t)) = transposed {
                        // dX = flip(Wᵀ) ⋆ dY_pad, a forward convolution with n_o channels.
                        dy_pad.resize(padded_len(g_t), F::zero());
                        pad_image(dy_n, g_t, dy_pad);
                        conv_forward(dy_pad, g_t, w_t, n_i_w, dx_n);
                    } else {
                        // dX_col = Wᵀ · dY, then scatter back onto the pixels.
                        matmul(w_mat.t(), dy_mat, d_col, false);
                        col2im(d_col, &g, dx_n);
                    }
                }
            });
        // Reduce the per-task partial sums in task order (same bits for any thread count),
        // into the first task's buffers, then transpose dWᵀ once.
        let (first, rest) = self.scratch[..tasks].split_first_mut().expect("tasks > 0");
        let winograd_sums = kernels == Kernels::Winograd;
        if winograd_sums {
            reduce_in_task_order(&mut first.w_grad_u, rest, |s| &s.w_grad_u);
        } else {
            reduce_in_task_order(&mut first.w_grad_t, rest, |s| &s.w_grad_t);
        }
        for s in rest.iter() {
            add_assign(&mut first.b_grad, &s.b_grad);
        }
        let w_grad = self.w_grad.as_slice_mut().expect("standard layout");
        if winograd_sums {
            winograd::filter_grad(&first.w_grad_u, n_o, n_i_w, w_grad);
        } else {
            for (t, row) in first.w_grad_t.chunks_exact(n_o).enumerate() {
                for (o, &v) in row.iter().enumerate() {
                    w_grad[o * k + t] = v;
                }
            }
        }
        let b_grad = self.b_grad.as_slice_mut().expect("standard layout");
        b_grad.copy_from_slice(&first.b_grad);
        x_grad
    }

    /// Checks `y_grad` against the last forward pass (of output `(n_b, n_o, rows/f, cols/f)`).
    fn expect_backward(&self, y_grad: &[usize], f: usize) {
        let name = self.name();
        let Some(kept) = &self.kept else {
            missing_forward(&name)
        };
        let (n_o, _, _) = self.dims();
        let (n_b, _, rows, cols) = kept.dim;
        assert_eq!(
            kept.g,
            self.geometry(rows, cols),
            "{name}: weights changed shape between forward and backward"
        );
        expect_grad_shape(&name, &[n_b, n_o, rows / f, cols / f], y_grad);
    }

    /// This convolution followed by ReLU and 2×2 max pooling, fused (see
    /// [`crate::kernels::relu_pool`]); `mask` receives one gradient routing byte per output
    /// and must be passed back to [`Self::backward_relu_pool2`].
    ///
    /// # Shapes
    /// `x: (n_b, n_i, n_r, n_c)` with `n_r`, `n_c` even → `(n_b, n_o, n_r/2, n_c/2)`.
    ///
    /// # Panics
    /// If `x` does not fit the layer or has an odd number of rows or columns.
    pub fn forward_relu_pool2(&mut self, x: ArrayViewD<'_, F>, mask: &mut Vec<u8>) -> ArrayD<F> {
        let shape = expect_shape(self, x.shape());
        let x = x.into_dimensionality::<Ix4>().expect("checked");
        let (n_b, n_o, rows, cols) = (shape[0], shape[1], shape[2], shape[3]);
        assert!(
            rows % 2 == 0 && cols % 2 == 0,
            "{}: fused 2×2 pooling needs even rows and columns, got {rows}×{cols}",
            self.name()
        );
        let mut y = zeros_par(&[n_b, n_o, rows / 2, cols / 2]);
        mask.resize(y.len(), 0);
        let task_len = IMAGES_PER_TASK * n_o * (rows / 2) * (cols / 2);
        let tasks = y
            .as_slice_mut()
            .expect("fresh array")
            .chunks_mut(task_len.max(1))
            .zip(mask.chunks_mut(task_len.max(1)))
            .map(|(y, mask)| TaskOut::ReluPool2 { y, mask })
            .collect();
        self.forward_impl(x, tasks);
        y
    }

    /// The backward of [`Self::forward_relu_pool2`] from `y_grad: (n_b, n_o, n_r/2, n_c/2)`:
    /// sets the parameter gradients and returns dℓ/dx if `want_x_grad`.
    ///
    /// # Panics
    /// If called before [`Self::forward_relu_pool2`], or if `y_grad` or `mask` does not match
    /// its output.
    pub fn backward_relu_pool2(
        &mut self,
        y_grad: ArrayViewD<'_, F>,
        mask: &[u8],
        want_x_grad: bool,
    ) -> Option<ArrayD<F>> {
        self.expect_backward(y_grad.shape(), 2);
        assert_eq!(mask.len(), y_grad.len(), "{}: mask length", self.name());
        let dy = y_grad.as_standard_layout();
        let task_len = (IMAGES_PER_TASK * y_grad.len() / y_grad.shape()[0].max(1)).max(1);
        let tasks = dy
            .as_slice()
            .expect("standard layout")
            .chunks(task_len)
            .zip(mask.chunks(task_len))
            .map(|(dy, mask)| TaskGrad::ReluPool2 { dy, mask })
            .collect();
        self.backward_impl(tasks, want_x_grad)
    }

    /// The backward pass of a plain forward: dℓ/dx only if `want_x_grad`.
    fn backward_dense(
        &mut self,
        y_grad: ArrayViewD<'_, F>,
        want_x_grad: bool,
    ) -> Option<ArrayD<F>> {
        self.expect_backward(y_grad.shape(), 1);
        let dy = y_grad.as_standard_layout();
        let task_len = (IMAGES_PER_TASK * y_grad.len() / y_grad.shape()[0].max(1)).max(1);
        let tasks = dy
            .as_slice()
            .expect("standard layout")
            .chunks(task_len)
            .map(TaskGrad::Dense)
            .collect();
        self.backward_impl(tasks, want_x_grad)
    }
}

/// Extra elements in working buffers, so that a slice of them can start on a cache line.
const CACHE_LINE_SLACK: usize = 16;

/// The first `len` elements of `buf` from its first 64-byte boundary: whole-vector loads then
/// never straddle two cache lines. `buf` needs [`CACHE_LINE_SLACK`] spare elements.
fn cache_aligned<F>(buf: &mut [F], len: usize) -> &mut [F] {
    let skip = buf.as_ptr().align_offset(64).min(CACHE_LINE_SLACK);
    &mut buf[skip..skip + len]
}

/// `acc += v`, element by element.
fn add_assign<F: Float>(acc: &mut [F], v: &[F]) {
    acc.iter_mut().zip(v).for_each(|(a, &b)| *a += b);
}

/// `first += Σ_tasks part(task)`, element by element in task order (the same bits for any
/// thread count), in parallel over blocks of elements.
fn reduce_in_task_order<F: Float>(
    first: &mut [F],
    rest: &[TaskScratch<F>],
    part: impl Fn(&TaskScratch<F>) -> &Vec<F> + Sync,
) {
    const BLOCK: usize = 1024;
    first
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(i, acc)| {
            for s in rest {
                add_assign(acc, &part(s)[i * BLOCK..]);
            }
        });
}

/// Grows `scratch` to `tasks` entries and `workers` to one per thread of the current pool,
/// each sized for geometry `g`, `n_o` filters and the layer's `kernels`.
fn prepare_scratch<F: Float>(
    scratch: &mut Vec<TaskScratch<F>>,
    workers: &mut Vec<Mutex<WorkerScratch<F>>>,
    tasks: usize,
    (g, n_o, kernels): (&ConvGeometry, usize, Kernels),
) {
    if scratch.len() < tasks {
        scratch.resize_with(tasks, TaskScratch::default);
    }
    for s in scratch.iter_mut().take(tasks) {
        if kernels == Kernels::Winograd {
            s.w_grad_u
                .resize(winograd::filters_len(g.channels, n_o), F::zero());
        } else {
            s.w_grad_t.resize(n_o * g.patch_len(), F::zero());
        }
        s.b_grad.resize(n_o, F::zero());
    }
    workers.resize_with(rayon::current_num_threads().max(1), Default::default);
    let col_len = g.patch_len() * g.pixels();
    for w in workers.iter_mut() {
        let w = w.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        w.x_col.resize(col_len, F::zero());
        w.d_col.resize(col_len, F::zero());
        w.out.resize(n_o * g.pixels() + CACHE_LINE_SLACK, F::zero());
    }
}

impl<F: Float> Layer<F> for ConvLayer<F> {
    /// # Shapes
    /// `x: (n_b, n_i, n_r, n_c)` → `y: (n_b, n_o, n_r, n_c)`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let out_shape = expect_shape(self, x.shape());
        let x = x
            .into_dimensionality::<Ix4>()
            .expect("checked by output_shape");
        let mut y = zeros_par(&out_shape);
        let task_len = (IMAGES_PER_TASK * y.len() / x.dim().0.max(1)).max(1);
        let tasks = y
            .as_slice_mut()
            .expect("fresh array")
            .chunks_mut(task_len)
            .map(TaskOut::Dense)
            .collect();
        self.forward_impl(x, tasks);
        y
    }

    /// # Shapes
    /// `y_grad: (n_b, n_o, n_r, n_c)` → `x_grad: (n_b, n_i, n_r, n_c)`; sets
    /// `w_grad: (n_o, n_i, h, h)` and `b_grad: (1, n_o)`.
    fn backward(&mut self, y_grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.backward_dense(y_grad, true).expect("x_grad requested")
    }

    fn backward_params(&mut self, y_grad: ArrayViewD<'_, F>) {
        self.backward_dense(y_grad, false);
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(self)
    }

    fn params_mut(&mut self) -> Vec<Param<'_, F>> {
        weight_and_bias(
            (self.w.view_mut().into_dyn(), self.w_grad.view().into_dyn()),
            (self.b.view_mut().into_dyn(), self.b_grad.view().into_dyn()),
        )
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
        let (n_o, n_i, _, _) = self.w.dim();
        match *input {
            [n_b, c, r, q] if c == n_i => Ok(vec![n_b, n_o, r, q]),
            _ => Err(ShapeError::new(
                self.name(),
                format!("(n_b, {n_i}, rows, cols)"),
                input,
            )),
        }
    }

    fn name(&self) -> String {
        let (n_o, n_i, h, _) = self.w.dim();
        format!("ConvLayer({n_i}→{n_o}, {h}×{h})")
    }

    fn num_params(&self) -> usize {
        self.w.len() + self.b.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;
    use crate::kernels::reference;
    use ndarray::{array, Array, ArrayView4};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn random4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
        let mut r = rng(seed);
        Array4::from_shape_simple_fn(shape, || r.random_range(-1.0..1.0))
    }

    /// The lab handout's worked example (two channels in, two filters of 3×3).
    fn worked_example<F: Float>() -> (ConvLayer<F>, Array4<F>, Array4<F>) {
        let f = |v: Vec<f64>, shape| {
            Array::from_shape_vec(shape, v.into_iter().map(F::from_f64).collect()).unwrap()
        };
        let x = f(
            vec![
                0., 0., 0., 0., 1., -1., 1., -1., 2., -2., 2., -2., 3., -3., 3., -3., //
                0., 1., 2., 3., 0., -1., -2., -3., 0., 1., 2., 3., 0., -1., -2., -3.,
            ],
            (1, 2, 4, 4),
        );
        let w = f(
            vec![
                3., 2., 1., 3., 2., 1., 3., 2., 1., /* W[0,0] */ 1., 2., 3., 1., 2., 3., 1.,
                2., 3., /* W[0,1] */
                3., 3., 3., 2., 2., 2., 1., 1., 1., /* W[1,0] */ 1., 1., 1., 2., 2., 2., 3.,
                3., 3., /* W[1,1] */
            ],
            (2, 2, 3, 3),
        );
        let y = f(
            vec![
                1., 2., -2., 1., 6., 14., 8., 11., 3., 4., -26., -2., 5., 10., -10., 5., //
                -1., -2., -7., -5., 2., 10., 8., 10., -2., 4., -22., -10., -1., 9., -18., -5.,
            ],
            (1, 2, 4, 4),
        );
        let mut conv = ConvLayer::<F>::new(2, 2, 3, &mut rng(0));
        conv.w = w.into_dimensionality().unwrap();
        conv.b = Array2::zeros((1, 2));
        (
            conv,
            x.into_dimensionality().unwrap(),
            y.into_dimensionality().unwrap(),
        )
    }

    #[test]
    fn reproduces_the_lab_worked_example_f64_and_f32() {
        let (mut conv, x, y) = worked_example::<f64>();
        assert_eq!(conv.forward(x.view().into_dyn()), y.into_dyn());
        let (mut conv, x, y) = worked_example::<f32>();
        assert_eq!(conv.forward(x.view().into_dyn()), y.into_dyn());
        let (_, x, y) = worked_example::<f64>();
        let (conv, _, _) = worked_example::<f64>();
        assert_eq!(
            reference::conv2d_forward(x.view(), conv.w.view(), conv.b.view()),
            y
        );
    }

    #[test]
    fn bias_is_added_per_output_channel() {
        let (mut conv, x, y) = worked_example::<f64>();
        conv.b = array![[10.0, -1.0]];
        let out = conv.forward(x.view().into_dyn());
        assert_eq!(out[[0, 0, 1, 1]], y[[0, 0, 1, 1]] + 10.0);
        assert_eq!(out[[0, 1, 3, 0]], y[[0, 1, 3, 0]] - 1.0);
    }

    fn assert_close(a: ArrayView4<'_, f64>, b: ArrayView4<'_, f64>, what: &str) {
        assert_eq!(a.shape(), b.shape(), "{what}: shapes");
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                "{what}[{i}]: fast {x} vs reference {y}"
            );
        }
    }

    #[test]
    fn fast_path_matches_reference_loops() {
        // batch sizes cross the task boundary; h covers odd, even and 1; non-square images.
        for (case, &(n_b, n_i, n_o, rows, cols, h)) in [
            (1, 1, 1, 1, 1, 1),
            (3, 2, 5, 4, 7, 1),
            (5, 3, 4, 6, 5, 2),
            (9, 2, 3, 5, 8, 3),
            (2, 4, 2, 7, 6, 5),
            (6, 1, 2, 3, 3, 5),
            (4, 3, 2, 2, 9, 4),
            // Wide enough for the direct forward and transposed input-gradient kernels with
            // long patches: a column tail, a filter count off the register block, even h.
            (3, 16, 5, 4, 17, 3),
            (2, 17, 3, 3, 16, 3),
            (2, 8, 3, 3, 20, 4),
        ]
        .iter()
        .enumerate()
        {
            let seed = case as u64;
            let mut conv = ConvLayer::<f64>::new(n_i, n_o, h, &mut rng(seed));
            conv.b = Array2::from_shape_fn((1, n_o), |(_, o)| o as f64 * 0.3 - 0.2);
            let x = random4((n_b, n_i, rows, cols), seed + 100);
            let dy = random4((n_b, n_o, rows, cols), seed + 200);
            let y = conv
                .forward(x.view().into_dyn())
                .into_dimensionality::<Ix4>()
                .unwrap();
            let dx = conv
                .backward(dy.view().into_dyn())
                .into_dimensionality::<Ix4>()
                .unwrap();
            let y_ref = reference::conv2d_forward(x.view(), conv.w.view(), conv.b.view());
            let (dx_ref, dw_ref, db_ref) =
                reference::conv2d_backward(x.view(), conv.w.view(), dy.view());
            assert_close(y.view(), y_ref.view(), "y");
            assert_close(dx.view(), dx_ref.view(), "dx");
            assert_close(conv.w_grad.view(), dw_ref.view(), "dW");
            for (a, b) in conv.b_grad.iter().zip(db_ref.iter()) {
                assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "db {a} vs {b}");
            }
        }
    }

    /// `f32` layers on the Winograd path (the lab's second layer, narrower images than one
    /// register block, more filters than inputs and the reverse) against the `f64` loops:
    /// y, dx, dW and db.
    #[test]
    fn winograd_layers_in_f32_match_the_f64_reference() {
        for (k, &(n_b, n_i, n_o, rows, cols)) in [
            (5, 16, 32, 16, 16),
            (3, 16, 16, 8, 8),
            (2, 32, 16, 6, 10),
            (9, 16, 48, 4, 4),
        ]
        .iter()
        .enumerate()
        {
            let mut conv = ConvLayer::<f32>::new(n_i, n_o, 3, &mut rng(7 + k as u64));
            conv.b = Array2::from_shape_fn((1, n_o), |(_, o)| o as f32 * 0.01);
            let x = random4((n_b, n_i, rows, cols), 8 + k as u64);
            let dy = random4((n_b, n_o, rows, cols), 9 + k as u64);
            let to32 = |a: &Array4<f64>| a.mapv(|v| v as f32);
            let y = conv.forward(to32(&x).view().into_dyn());
            let dx = conv.backward(to32(&dy).view().into_dyn());
            let w = conv.w.mapv(f64::from);
            let y_ref =
                reference::conv2d_forward(x.view(), w.view(), conv.b.mapv(f64::from).view());
            let (dx_ref, dw_ref, db_ref) =
                reference::conv2d_backward(x.view(), w.view(), dy.view());
            for (got, want, what) in [
                (y.mapv(f64::from), y_ref.into_dyn(), "y"),
                (dx.mapv(f64::from), dx_ref.into_dyn(), "dx"),
                (
                    conv.w_grad.mapv(f64::from).into_dyn(),
                    dw_ref.into_dyn(),
                    "dW",
                ),
                (
                    conv.b_grad.mapv(f64::from).into_dyn(),
                    db_ref.into_dyn(),
                    "db",
                ),
            ] {
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(scale > 0.0, "{what}");
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "shape {k}, {what}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn gradients_match_numerical_differences() {
        let check = GradCheck::default();
        for (seed, &(n_b, n_i, n_o, rows, cols, h)) in [
            (2, 3, 2, 4, 5, 3),
            (3, 2, 3, 3, 3, 1),
            (2, 1, 2, 4, 3, 2),
            (2, 2, 1, 5, 6, 5),
            (1, 2, 4, 3, 4, 3),
        ]
        .iter()
        .enumerate()
        {
            let mut conv = ConvLayer::<f64>::new(n_i, n_o, h, &mut rng(seed as u64));
            conv.b = Array2::from_shape_fn((1, n_o), |(_, o)| 0.1 * o as f64);
            let x = random4((n_b, n_i, rows, cols), 50 + seed as u64);
            let report = check.check_layer(&mut conv, x.view().into_dyn(), seed as u64);
            assert!(report.passed(), "{report}");
            assert_eq!(report.errors.len(), 3, "x, weight and bias are all checked");
        }
    }

    #[test]
    fn backward_recomputes_instead_of_accumulating() {
        let mut conv = ConvLayer::<f64>::new(2, 3, 3, &mut rng(1));
        let x = random4((3, 2, 4, 4), 2);
        let dy = random4((3, 3, 4, 4), 3);
        conv.forward(x.view().into_dyn());
        conv.backward(dy.view().into_dyn());
        let (w1, b1) = (conv.w_grad.clone(), conv.b_grad.clone());
        conv.backward(dy.view().into_dyn());
        assert_eq!(conv.w_grad, w1);
        assert_eq!(conv.b_grad, b1);
        assert!(w1.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn backward_params_gives_the_same_parameter_gradients() {
        let mut conv = ConvLayer::<f64>::new(3, 4, 3, &mut rng(4));
        let x = random4((6, 3, 5, 4), 5);
        let dy = random4((6, 4, 5, 4), 6);
        conv.forward(x.view().into_dyn());
        conv.backward(dy.view().into_dyn());
        let (w, b) = (conv.w_grad.clone(), conv.b_grad.clone());
        conv.w_grad.fill(7.0);
        conv.backward_params(dy.view().into_dyn());
        assert_eq!((conv.w_grad.clone(), conv.b_grad.clone()), (w, b));
    }

    #[test]
    fn new_weights_take_effect_at_next_forward() {
        let mut conv = ConvLayer::<f64>::new(1, 1, 1, &mut rng(1));
        let x = Array4::from_elem((1, 1, 2, 2), 2.0);
        conv.w = Array4::from_elem((1, 1, 1, 1), 3.0);
        conv.b = array![[1.0]];
        assert_eq!(conv.forward(x.view().into_dyn()).sum(), 4.0 * 7.0);
        conv.w[[0, 0, 0, 0]] = -1.0;
        assert_eq!(conv.forward(x.view().into_dyn()).sum(), -4.0);
    }

    #[test]
    fn glorot_initialisation_is_shaped_and_zero_biased() {
        let conv = ConvLayer::<f32>::new(3, 16, 3, &mut rng(0));
        assert_eq!(conv.w.shape(), &[16, 3, 3, 3]);
        assert_eq!(conv.b, Array2::<f32>::zeros((1, 16)));
        let sigma = (2.0f32 / (27.0 + 144.0)).sqrt();
        let std = (conv.w.mapv(|v| v * v).sum() / conv.w.len() as f32).sqrt();
        assert!((std / sigma - 1.0).abs() < 0.15, "std {std} vs σ {sigma}");
        assert_eq!(conv.num_params(), 16 * 27 + 16);
    }

    #[test]
    #[should_panic(
        expected = "ConvLayer(3→4, 3×3): expected an input of shape (n_b, 3, rows, cols), got [2, 2, 5, 5]"
    )]
    fn wrong_channel_count_panics_with_shapes() {
        let mut conv = ConvLayer::<f32>::new(3, 4, 3, &mut rng(0));
        conv.forward(ArrayD::zeros(vec![2, 2, 5, 5]).view());
    }

    #[test]
    #[should_panic(expected = "got [3, 5, 5]")]
    fn three_dimensional_input_panics() {
        let mut conv = ConvLayer::<f32>::new(3, 4, 3, &mut rng(0));
        conv.forward(ArrayD::zeros(vec![3, 5, 5]).view());
    }

    #[test]
    #[should_panic(expected = "backward called before forward")]
    fn backward_before_forward_panics() {
        let mut conv = ConvLayer::<f32>::new(3, 4, 3, &mut rng(0));
        conv.backward(ArrayD::zeros(vec![1, 4, 5, 5]).view());
    }

    #[test]
    #[should_panic(expected = "backward expected y_grad of shape [1, 4, 5, 5]")]
    fn wrong_gradient_shape_panics() {
        let mut conv = ConvLayer::<f32>::new(3, 4, 3, &mut rng(0));
        conv.forward(ArrayD::zeros(vec![1, 3, 5, 5]).view());
        conv.backward(ArrayD::zeros(vec![1, 4, 5, 4]).view());
    }
}
