//! [`Sequential`]: layers applied in order, a cross-entropy loss on top, and the SGD
//! training loop (`fit`) and inference (`predict`) built from them.

use crate::layers::{ConvLayer, CrossEntropyLayer, FlattenLayer, MaxPoolLayer, ReluLayer};
use crate::{Float, Layer, ShapeError};
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2};
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;

/// Loss and accuracy of a model on a labelled set, from [`Sequential::evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy over all examples.
    pub loss: f64,
    /// Fraction of examples whose argmax output is the label.
    pub accuracy: f64,
    /// The predicted class of every example.
    pub predictions: Vec<usize>,
}

/// A feed-forward network: `layers` in order, then a cross-entropy loss.
///
/// The last layer should output probabilities (a [`crate::layers::SoftMaxLayer`]).
pub struct Sequential<F: Float> {
    layers: Vec<Box<dyn Layer<F>>>,
    loss: CrossEntropyLayer<F>,
    /// Whether `forward` fuses convolution → ReLU → 2×2 pooling.
    fusion: bool,
    /// How the last forward pass ran, for `backward` to retrace.
    plan: Vec<Stage>,
}

/// One step of a forward pass.
enum Stage {
    /// `layers[i]` on its own.
    Single(usize),
    /// `layers[first..first + 3]` (convolution, ReLU, 2×2 pooling) fused, with the gradient
    /// routing byte of every pooled output.
    ConvReluPool { first: usize, mask: Vec<u8> },
}

/// Whether `layers` starts with a convolution, a ReLU and a 2×2 pooling that can run fused on
/// an input of shape `input` (even rows and columns).
fn fusable<F: Float>(layers: &mut [Box<dyn Layer<F>>], input: &[usize]) -> bool {
    let [conv, relu, pool, ..] = layers else {
        return false;
    };
    fn is<T: 'static, F: Float>(layer: &mut Box<dyn Layer<F>>) -> Option<&mut T> {
        layer.as_any_mut()?.downcast_mut::<T>()
    }
    let shape_fits = matches!(input, [_, _, r, c] if r % 2 == 0 && c % 2 == 0)
        && conv.output_shape(input).is_ok();
    shape_fits
        && is::<ConvLayer<F>, F>(conv).is_some()
        && is::<ReluLayer<F>, F>(relu).is_some()
        && is::<MaxPoolLayer<F>, F>(pool).is_some_and(|p| p.size() == 2)
}

/// The convolution at the start of a fused stage.
fn as_conv<F: Float>(layer: &mut Box<dyn Layer<F>>) -> &mut ConvLayer<F> {
    layer
        .as_any_mut()
        .and_then(|l| l.downcast_mut::<ConvLayer<F>>())
        .expect("Sequential: the layers changed between forward and backward")
}

/// The layer as a [`FlattenLayer`], if it is one.
fn as_flatten<F: Float>(layer: &mut Box<dyn Layer<F>>) -> Option<&mut FlattenLayer<F>> {
    layer.as_any_mut()?.downcast_mut::<FlattenLayer<F>>()
}

/// Examples per pass in `predict` and `evaluate`: bounds memory on large sets.
const INFERENCE_BATCH: usize = 256;

impl<F: Float> Sequential<F> {
    /// A network from its layers and its loss.
    pub fn new(layers: Vec<Box<dyn Layer<F>>>, loss: CrossEntropyLayer<F>) -> Self {
        Self {
            layers,
            loss,
            fusion: true,
            plan: Vec::new(),
        }
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer<F>>] {
        &self.layers
    }

    /// The layers, in order, writable (to load or inspect weights).
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer<F>>] {
        &mut self.layers
    }

    /// The loss layer (to inspect the last loss, for example [`CrossEntropyLayer::infinite_terms`]).
    pub fn loss_layer(&self) -> &CrossEntropyLayer<F> {
        &self.loss
    }

    /// Total number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|l| l.num_params()).sum()
    }

    /// The output shape of every layer for an input of shape `input`, or the first layer
    /// that does not fit.
    pub fn shapes(&self, input: &[usize]) -> Result<Vec<Vec<usize>>, ShapeError> {
        let mut shape = input.to_vec();
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            shape = layer.output_shape(&shape)?;
            out.push(shape.clone());
        }
        Ok(out)
    }

    /// Runs every layer: the network's output (class probabilities) for `x`.
    ///
    /// A convolution followed by ReLU and 2×2 max pooling runs as one fused pass (see
    /// [`crate::kernels::relu_pool`]) unless [`Self::set_fusion`] turned that off: same
    /// results, bit for bit, without writing the convolution's full-size output to memory.
    /// The fused ReLU and pooling layers then keep no state of their own; [`Self::backward`]
    /// retraces the pass.
    ///
    /// # Shapes
    /// `x: (n_b, …)` as the first layer expects → `(n_b, k)` for a classifier.
    pub fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut spare_masks: Vec<Vec<u8>> = self
            .plan
            .drain(..)
            .filter_map(|stage| match stage {
                Stage::ConvReluPool { mask, .. } => Some(mask),
                Stage::Single(_) => None,
            })
            .collect();
        let mut out: Option<ArrayD<F>> = None;
        let mut i = 0;
        while i < self.layers.len() {
            let shape = out.as_ref().map_or(x.shape(), |a| a.shape());
            let y = if self.fusion && fusable(&mut self.layers[i..], shape) {
                let input = out.as_ref().map_or(x.view(), |a| a.view());
                let mut mask = spare_masks.pop().unwrap_or_default();
                let y = as_conv(&mut self.layers[i]).forward_relu_pool2(input, &mut mask);
                self.plan.push(Stage::ConvReluPool { first: i, mask });
                i += 3;
                y
            } else {
                let y = match out.take() {
                    // Our own intermediate array: a flattening layer reshapes it in place.
                    Some(owned) if as_flatten(&mut self.layers[i]).is_some() => {
                        as_flatten(&mut self.layers[i])
                            .expect("just checked")
                            .forward_owned(owned)
                    }
                    owned => self.layers[i].forward(owned.as_ref().map_or(x.view(), |a| a.view())),
                };
                self.plan.push(Stage::Single(i));
                i += 1;
                y
            };
            out = Some(y);
        }
        out.unwrap_or_else(|| x.to_owned())
    }

    /// Turns the fused convolution → ReLU → pooling pass on (the default) or off. Both give
    /// the same numbers; off runs every layer's own `forward` and `backward`.
    pub fn set_fusion(&mut self, on: bool) {
        self.fusion = on;
    }

    /// Forward pass and loss against one-hot `target` `(n_b, k)`; call [`Self::backward`] next.
    ///
    /// # Panics
    /// If the network's output is not `(n_b, k)` with the shape of `target`.
    pub fn forward_loss(&mut self, x: ArrayViewD<'_, F>, target: ArrayView2<'_, F>) -> F {
        let out = self.forward(x);
        let out = out
            .into_dimensionality::<Ix2>()
            .unwrap_or_else(|e| panic!("Sequential: the last layer must output (n_b, k): {e}"));
        self.loss.forward(out.view(), target)
    }

    /// Back-propagates the loss of the last [`Self::forward_loss`] through every layer,
    /// storing parameter gradients; returns dℓ/dx for the network's input.
    pub fn backward(&mut self) -> ArrayD<F> {
        self.backward_through(true)
            .expect("input gradient requested")
    }

    /// Back-propagates like [`Self::backward`] but skips dℓ/dx of the first layer, which
    /// training does not need (for a first convolution that is a third of its backward work).
    pub fn backward_params(&mut self) {
        self.backward_through(false);
    }

    /// Retraces the last forward pass backwards; dℓ/dx of the input only if `input_grad`.
    fn backward_through(&mut self, input_grad: bool) -> Option<ArrayD<F>> {
        let mut grad = self.loss.backward().into_dyn();
        for (s, stage) in self.plan.iter().enumerate().rev() {
            let want_x_grad = input_grad || s > 0;
            grad = match stage {
                Stage::Single(i) if want_x_grad => match as_flatten(&mut self.layers[*i]) {
                    Some(flatten) => flatten.backward_owned(grad),
                    None => self.layers[*i].backward(grad.view()),
                },
                Stage::Single(i) => {
                    self.layers[*i].backward_params(grad.view());
                    return None;
                }
                Stage::ConvReluPool { first, mask } => as_conv(&mut self.layers[*first])
                    .backward_relu_pool2(grad.view(), mask, want_x_grad)?,
            };
        }
        Some(grad)
    }

    /// One SGD step on every layer: `θ ← θ − lr · dℓ/dθ`.
    pub fn update_param(&mut self, lr: F) {
        for layer in &mut self.layers {
            layer.update_param(lr);
        }
    }

    /// Trains on one batch (forward, backward, update) and returns its loss before the update.
    pub fn train_batch(&mut self, x: ArrayViewD<'_, F>, target: ArrayView2<'_, F>, lr: F) -> F {
        let loss = self.forward_loss(x, target);
        self.backward_params();
        self.update_param(lr);
        loss
    }

    /// Mini-batch SGD for `epochs` passes over `(x, y)`, reshuffling with `rng` every epoch;
    /// the last partial batch is used. Returns the mean training loss of each epoch
    /// (weighted by batch size, measured before each batch's update).
    ///
    /// # Shapes
    /// `x: (n, …)`, `y: (n, k)` one-hot.
    ///
    /// # Panics
    /// If `x` and `y` have different numbers of rows or `batch_size` is 0.
    pub fn fit<R: Rng + ?Sized>(
        &mut self,
        x: ArrayViewD<'_, F>,
        y: ArrayView2<'_, F>,
        epochs: usize,
        lr: F,
        batch_size: usize,
        rng: &mut R,
    ) -> Vec<F> {
        let n = x.len_of(Axis(0));
        assert_eq!(
            n,
            y.nrows(),
            "Sequential::fit: x has {n} examples but y has {} rows",
            y.nrows()
        );
        assert!(
            batch_size > 0,
            "Sequential::fit: batch_size must be positive"
        );
        let mut order: Vec<usize> = (0..n).collect();
        (0..epochs)
            .map(|_| {
                order.shuffle(rng);
                let mut total = F::zero();
                for idx in order.chunks(batch_size) {
                    let loss = self.train_batch(
                        select_examples(x.view(), idx).view(),
                        y.select(Axis(0), idx).view(),
                        lr,
                    );
                    total += loss * F::from_f64(idx.len() as f64);
                }
                if n == 0 {
                    F::zero()
                } else {
                    total / F::from_f64(n as f64)
                }
            })
            .collect()
    }

    /// Class probabilities for every example, in batches.
    pub fn predict_proba(&mut self, x: ArrayViewD<'_, F>) -> Array2<F> {
        let n = x.len_of(Axis(0));
        let mut rows = Vec::new();
        let mut width = 0;
        for start in (0..n).step_by(INFERENCE_BATCH) {
            let batch = x.slice_axis(Axis(0), (start..(start + INFERENCE_BATCH).min(n)).into());
            let out = self
                .forward(batch)
                .into_dimensionality::<Ix2>()
                .expect("classifier output is (n_b, k)");
            width = out.ncols();
            rows.extend(out.iter().copied());
        }
        Array2::from_shape_vec((n, width), rows).expect("rows × width")
    }

    /// The most probable class of every example (argmax of the output).
    pub fn predict(&mut self, x: ArrayViewD<'_, F>) -> Vec<usize> {
        self.predict_proba(x)
            .rows()
            .into_iter()
            .map(|r| argmax(r.iter().copied()))
            .collect()
    }

    /// Mean loss, accuracy and predictions against integer `labels`.
    ///
    /// # Panics
    /// If `labels` has a different length from `x` or a label is not below the output width.
    pub fn evaluate(&mut self, x: ArrayViewD<'_, F>, labels: &[usize]) -> Evaluation {
        let p = self.predict_proba(x);
        assert_eq!(
            p.nrows(),
            labels.len(),
            "Sequential::evaluate: {} examples but {} labels",
            p.nrows(),
            labels.len()
        );
        let mut loss = 0.0;
        let mut correct = 0;
        let mut predictions = Vec::with_capacity(labels.len());
        for (row, &label) in p.rows().into_iter().zip(labels) {
            assert!(
                label < row.len(),
                "Sequential::evaluate: label {label} but only {} outputs",
                row.len()
            );
            loss -= row[label].max(F::epsilon()).as_f64().ln();
            let pred = argmax(row.iter().copied());
            correct += usize::from(pred == label);
            predictions.push(pred);
        }
        let n = labels.len().max(1) as f64;
        Evaluation {
            loss: loss / n,
            accuracy: correct as f64 / n,
            predictions,
        }
    }
}

/// Index of the largest value (the first one on ties).
fn argmax<F: Float>(values: impl Iterator<Item = F>) -> usize {
    values
        .enumerate()
        .fold((0, F::neg_infinity()), |(bi, bv), (i, v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// One-hot encoding: row `n` has a 1 in column `labels[n]`.
///
/// # Panics
/// If a label is not below `classes`.
pub fn one_hot<F: Float>(labels: &[usize], classes: usize) -> Array2<F> {
    let mut y = Array2::zeros((labels.len(), classes));
    for (n, &c) in labels.iter().enumerate() {
        assert!(c < classes, "one_hot: label {c} is not below {classes}");
        y[[n, c]] = F::one();
    }
    y
}
/// The examples `indices` of `x` (along its first axis), in that order: `x.select(Axis(0),
/// indices)`, copied in parallel, one example per task.
///
/// # Shapes
/// `x: (n, …)` → `(indices.len(), …)`.
///
/// # Panics
/// If an index is `n` or more.
pub fn select_examples<F: Float>(x: ArrayViewD<'_, F>, indices: &[usize]) -> ArrayD<F> {
    let n = x.len_of(Axis(0));
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        panic!("select_examples: index {bad} is out of range for {n} examples");
    }
    let mut shape = x.shape().to_vec();
    shape[0] = indices.len();
    let mut out = ArrayD::zeros(shape);
    let x = x.as_standard_layout();
    let src = x.as_slice().expect("standard layout");
    let len = src.len() / n.max(1);
    if len > 0 {
        out.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(len)
            .zip(indices.par_iter())
            .for_each(|(dst, &i)| dst.copy_from_slice(&src[i * len..(i + 1) * len]));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn select_examples_matches_ndarray_select() {
        let x =
            ndarray::Array3::from_shape_fn((5, 2, 3), |(n, i, j)| (n * 100 + i * 10 + j) as f64)
                .into_dyn();
        let idx = [4, 0, 0, 2];
        assert_eq!(
            super::select_examples(x.view(), &idx),
            x.select(super::Axis(0), &idx)
        );
        assert_eq!(super::select_examples(x.view(), &[]).shape(), &[0, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "index 5 is out of range for 5 examples")]
    fn select_examples_rejects_a_missing_example() {
        let x = ndarray::ArrayD::<f32>::zeros(vec![5, 2]);
        super::select_examples(x.view(), &[1, 5]);
    }
}
