//! Numerical gradient checking: compares a layer's hand-written gradients with finite
//! differences of its forward pass, in `f64`.
//!
//! For a layer `y = f(x; θ)` the check uses the scalar `L = Σ y ⊙ R` with a fixed random `R`
//! (so dL/dy = R), runs `backward(R)` for the analytic gradients and compares them with
//! central differences `(L(v + s) − L(v − s)) / 2s` for every element `v` of `x` and of each
//! parameter. The error of one tensor is `max_j |a_j − n_j| / max(|a_j| + |n_j|, floor)`:
//! relative for gradients well above `floor`, absolute below it (where finite differences
//! are all rounding noise).
//!
//! ```
//! use scratchnet::gradcheck::GradCheck;
//! use scratchnet::layers::FullLayer;
//! use scratchnet::ndarray::Array2;
//! use scratchnet::rand::SeedableRng;
//!
//! let mut fc = FullLayer::<f64>::new(4, 3, &mut scratchnet::rand_chacha::ChaCha8Rng::seed_from_u64(1));
//! let x = Array2::from_shape_fn((2, 4), |(i, j)| (i + 2 * j) as f64 * 0.1);
//! let report = GradCheck::default().check_layer(&mut fc, x.view().into_dyn(), 0);
//! assert!(report.passed(), "{report}");
//! assert_eq!(report.errors.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["x", "weight", "bias"]);
//! ```

use crate::layers::CrossEntropyLayer;
use crate::{Layer, Sequential};
use ndarray::{ArrayD, ArrayView2, ArrayViewD};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::fmt;

/// Which finite difference to compare against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// `(L(v + s) − L(v − s)) / 2s`: second-order accurate; the default.
    Central,
    /// `(L(v + s) − L(v)) / s`: the one-sided derivative, which is what max pooling's
    /// "every tied maximum gets the gradient" rule matches at ties.
    Forward,
}

/// Settings of a gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// The finite-difference step `s`.
    pub step: f64,
    /// The largest error that passes.
    pub tolerance: f64,
    /// Below this magnitude gradients are compared absolutely.
    pub floor: f64,
    /// Central or forward differences.
    pub difference: Difference,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            step: 1e-5,
            tolerance: 1e-6,
            floor: 1e-4,
            difference: Difference::Central,
        }
    }
}

/// The outcome of one check: one error per checked tensor.
#[derive(Clone, Debug)]
pub struct GradReport {
    /// What was checked, for example `ConvLayer(3→2, 3×3)`.
    pub name: String,
    /// The input's shape.
    pub input_shape: Vec<usize>,
    /// `(tensor, error)` for the input (`"x"`) and every parameter, in order.
    pub errors: Vec<(String, f64)>,
    /// The tolerance the errors were held to.
    pub tolerance: f64,
}

impl GradReport {
    /// The largest error over all tensors (0 when nothing was checked).
    pub fn max_error(&self) -> f64 {
        self.errors.iter().map(|(_, e)| *e).fold(0.0, f64::max)
    }

    /// Whether every error is within tolerance (a NaN error fails).
    pub fn passed(&self) -> bool {
        self.errors.iter().all(|(_, e)| *e <= self.tolerance)
    }
}

impl fmt::Display for GradReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {:?}:", self.name, self.input_shape)?;
        for (name, e) in &self.errors {
            write!(f, " {name} {e:.2e}")?;
        }
        let verdict = if self.passed() { "pass" } else { "FAIL" };
        write!(f, " (tolerance {:.0e}) {verdict}", self.tolerance)
    }
}

impl GradCheck {
    /// `max_j |a_j − n_j| / max(|a_j| + |n_j|, floor)`; NaN if the shapes differ or any value is NaN.
    pub fn error(&self, analytic: &[f64], numeric: &[f64]) -> f64 {
        if analytic.len() != numeric.len() {
            return f64::NAN;
        }
        analytic
            .iter()
            .zip(numeric)
            .map(|(a, n)| (a - n).abs() / (a.abs() + n.abs()).max(self.floor))
            .fold(0.0, |m, e| {
                if e.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(e)
                }
            })
    }

    /// Finite differences of `eval(j, δ)` — the loss with element `j` moved by `δ` — for `n` elements.
    fn numeric(&self, n: usize, mut eval: impl FnMut(usize, f64) -> f64) -> Vec<f64> {
        let s = self.step;
        let base = if self.difference == Difference::Forward {
            eval(0, 0.0)
        } else {
            0.0
        };
        (0..n)
            .map(|j| match self.difference {
                Difference::Central => (eval(j, s) - eval(j, -s)) / (2.0 * s),
                Difference::Forward => (eval(j, s) - base) / s,
            })
            .collect()
    }

    /// Checks dℓ/dx and every parameter gradient of `layer` at input `x`, with the
    /// projection `R` drawn from `seed`.
    pub fn check_layer(
        &self,
        layer: &mut dyn Layer<f64>,
        x: ArrayViewD<'_, f64>,
        seed: u64,
    ) -> GradReport {
        let x = x.as_standard_layout().into_owned();
        let y = layer.forward(x.view());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let r =
            ArrayD::<f64>::from_shape_simple_fn(y.raw_dim(), || StandardNormal.sample(&mut rng));
        let dx = layer.backward(r.view());
        let param_grads: Vec<(String, Vec<f64>)> = layer
            .params_mut()
            .iter()
            .map(|p| (p.name.to_string(), p.grad.iter().copied().collect()))
            .collect();
        let project = |y: ArrayD<f64>| -> f64 { (&y * &r).sum() };

        let mut errors = Vec::new();
        let numeric_x = self.numeric(x.len(), |j, d| {
            let mut moved = x.clone();
            moved.as_slice_mut().expect("standard layout")[j] += d;
            project(layer.forward(moved.view()))
        });
        errors.push((
            "x".to_string(),
            self.error(&dx.iter().copied().collect::<Vec<_>>(), &numeric_x),
        ));

        for (k, (name, analytic)) in param_grads.iter().enumerate() {
            let numeric = self.numeric(analytic.len(), |j, d| {
                let old = nudge(layer, k, j, None, d);
                let loss = project(layer.forward(x.view()));
                nudge(layer, k, j, Some(old), 0.0);
                loss
            });
            errors.push((name.clone(), self.error(analytic, &numeric)));
        }
        GradReport {
            name: layer.name(),
            input_shape: x.shape().to_vec(),
            errors,
            tolerance: self.tolerance,
        }
    }

    /// Checks [`CrossEntropyLayer`]'s gradient with respect to the probabilities `x`.
    pub fn check_cross_entropy(
        &self,
        x: ArrayView2<'_, f64>,
        target: ArrayView2<'_, f64>,
    ) -> GradReport {
        let mut ce = CrossEntropyLayer::new();
        ce.forward(x, target);
        let analytic: Vec<f64> = ce.backward().iter().copied().collect();
        let x = x.as_standard_layout().into_owned();
        let numeric = self.numeric(x.len(), |j, d| {
            let mut moved = x.clone();
            moved.as_slice_mut().expect("standard layout")[j] += d;
            ce.forward(moved.view(), target)
        });
        GradReport {
            name: "CrossEntropyLayer".into(),
            input_shape: x.shape().to_vec(),
            errors: vec![("x".into(), self.error(&analytic, &numeric))],
            tolerance: self.tolerance,
        }
    }

    /// Checks a whole network end to end: dℓ/dx and every layer's parameters, where `ℓ` is
    /// the model's loss against `target`.
    pub fn check_sequential(
        &self,
        model: &mut Sequential<f64>,
        x: ArrayViewD<'_, f64>,
        target: ArrayView2<'_, f64>,
    ) -> GradReport {
        let x = x.as_standard_layout().into_owned();
        model.forward_loss(x.view(), target);
        let dx: Vec<f64> = model.backward().iter().copied().collect();
        let mut analytic = Vec::new();
        for (l, layer) in model.layers_mut().iter_mut().enumerate() {
            for (k, p) in layer.params_mut().iter().enumerate() {
                analytic.push((
                    l,
                    k,
                    format!("{l}.{}", p.name),
                    p.grad.iter().copied().collect::<Vec<f64>>(),
                ));
            }
        }
        let mut errors = Vec::new();
        let numeric_x = self.numeric(x.len(), |j, d| {
            let mut moved = x.clone();
            moved.as_slice_mut().expect("standard layout")[j] += d;
            model.forward_loss(moved.view(), target)
        });
        errors.push(("x".to_string(), self.error(&dx, &numeric_x)));
        for (l, k, name, grad) in &analytic {
            let numeric = self.numeric(grad.len(), |j, d| {
                let old = nudge(model.layers_mut()[*l].as_mut(), *k, j, None, d);
                let loss = model.forward_loss(x.view(), target);
                nudge(model.layers_mut()[*l].as_mut(), *k, j, Some(old), 0.0);
                loss
            });
            errors.push((name.clone(), self.error(grad, &numeric)));
        }
        GradReport {
            name: "Sequential".into(),
            input_shape: x.shape().to_vec(),
            errors,
            tolerance: self.tolerance,
        }
    }
}

/// Checks every layer type over a few shapes (batch > 1, `n_i ≠ n_o`, `h ∈ {1, 2, 3, 5}`,
/// non-square inputs, odd sizes and ties for pooling), the loss, and a small lab-shaped
/// network end to end. Inputs are drawn from `seed`. This is what `scratchnet gradcheck` runs.
pub fn suite(seed: u64) -> Vec<GradReport> {
    use crate::layers::{
        ConvLayer, FlattenLayer, FullLayer, MaxPoolLayer, ReluLayer, SoftMaxLayer,
    };
    use ndarray::{Array2, IxDyn};
    use rand::Rng;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let central = GradCheck::default();
    let uniform = |shape: &[usize], rng: &mut rand_chacha::ChaCha8Rng| {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0..1.0))
    };
    let mut reports = Vec::new();
    for &(n_b, n_i, n_o, rows, cols, h) in &[
        (2, 3, 4, 5, 6, 3),
        (3, 2, 3, 4, 4, 1),
        (2, 2, 2, 5, 5, 2),
        (1, 1, 2, 6, 7, 5),
    ] {
        let mut conv = ConvLayer::<f64>::new(n_i, n_o, h, &mut rng);
        conv.b = Array2::from_shape_fn((1, n_o), |_| rng.random_range(-0.5..0.5));
        let x = uniform(&[n_b, n_i, rows, cols], &mut rng);
        reports.push(central.check_layer(&mut conv, x.view(), seed));
    }
    for &(shape, k) in &[([2, 3, 4, 6], 2), ([1, 2, 7, 8], 3), ([2, 1, 5, 5], 2)] {
        let x = uniform(&shape, &mut rng);
        reports.push(central.check_layer(&mut MaxPoolLayer::new(k), x.view(), seed));
    }
    // Integer inputs: many tied maxima, matched by forward differences.
    let ties = ArrayD::from_shape_simple_fn(IxDyn(&[2, 2, 4, 4]), || rng.random_range(0..3) as f64);
    let forward = GradCheck {
        difference: Difference::Forward,
        ..central
    };
    let mut report = forward.check_layer(&mut MaxPoolLayer::new(2), ties.view(), seed);
    report.name.push_str(" with ties");
    reports.push(report);
    let x = uniform(&[2, 3, 2, 4], &mut rng);
    reports.push(central.check_layer(&mut FlattenLayer::new(), x.view(), seed));
    // ReLU has no derivative at 0: keep inputs at least 0.05 away from it.
    let x = uniform(&[3, 4, 5], &mut rng).mapv(|v| if v >= 0.0 { v + 0.05 } else { v - 0.05 });
    reports.push(central.check_layer(&mut ReluLayer::new(), x.view(), seed));
    for &(n_b, n_i, n_o) in &[(4, 10, 5), (1, 3, 1)] {
        let mut full = FullLayer::<f64>::new(n_i, n_o, &mut rng);
        full.b = Array2::from_shape_fn((1, n_o), |_| rng.random_range(-0.5..0.5));
        let x = uniform(&[n_b, n_i], &mut rng);
        reports.push(central.check_layer(&mut full, x.view(), seed));
    }
    let x = uniform(&[4, 6], &mut rng).mapv(|v| 3.0 * v);
    reports.push(central.check_layer(&mut SoftMaxLayer::new(), x.view(), seed));
    let labels: Vec<usize> = (0..4).map(|_| rng.random_range(0..3)).collect();
    let target = crate::one_hot::<f64>(&labels, 3);
    let probs = Array2::from_shape_simple_fn((4, 3), || rng.random_range(0.1..1.0));
    reports.push(central.check_cross_entropy(probs.view(), target.view()));

    let layers: Vec<Box<dyn Layer<f64>>> = vec![
        Box::new(ConvLayer::new(3, 4, 3, &mut rng)),
        Box::new(ReluLayer::new()),
        Box::new(MaxPoolLayer::new(2)),
        Box::new(ConvLayer::new(4, 3, 3, &mut rng)),
        Box::new(ReluLayer::new()),
        Box::new(MaxPoolLayer::new(2)),
        Box::new(FlattenLayer::new()),
        Box::new(FullLayer::new(3 * 2 * 2, 3, &mut rng)),
        Box::new(SoftMaxLayer::new()),
    ];
    let mut model = Sequential::new(layers, CrossEntropyLayer::new());
    let x = uniform(&[2, 3, 8, 8], &mut rng);
    let mut report =
        central.check_sequential(&mut model, x.view(), target.slice(ndarray::s![..2, ..]));
    report.name = "Sequential (lab-shaped network)".into();
    reports.push(report);
    reports
}

/// Moves element `j` of parameter `k` by `d` (or sets it to `set`), returning its old value.
fn nudge(layer: &mut dyn Layer<f64>, k: usize, j: usize, set: Option<f64>, d: f64) -> f64 {
    let mut params = layer.params_mut();
    let v = params[k]
        .value
        .iter_mut()
        .nth(j)
        .expect("index within the parameter");
    let old = *v;
    *v = set.unwrap_or(old + d);
    old
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::MaxPoolLayer;
    use crate::ShapeError;
    use ndarray::Array2;

    /// `y = 2x` whose backward claims `dx = 3·dy`: a wrong gradient the check must catch.
    struct WrongDouble;

    impl Layer<f64> for WrongDouble {
        fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
            x.mapv(|v| 2.0 * v)
        }
        fn backward(&mut self, y_grad: ArrayViewD<'_, f64>) -> ArrayD<f64> {
            y_grad.mapv(|v| 3.0 * v)
        }
        fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, ShapeError> {
            Ok(input.to_vec())
        }
        fn name(&self) -> String {
            "WrongDouble".into()
        }
    }

    #[test]
    fn a_wrong_gradient_fails_with_its_relative_error() {
        let report = GradCheck::default().check_layer(
            &mut WrongDouble,
            Array2::from_elem((2, 3), 0.5).view().into_dyn(),
            1,
        );
        assert!(!report.passed());
        // |3 − 2| / (3 + 2) = 0.2 wherever the projection is well above the floor
        assert!((report.max_error() - 0.2).abs() < 1e-6, "{report}");
        assert!(report.to_string().ends_with("FAIL"), "{report}");
    }

    #[test]
    fn error_is_relative_above_the_floor_and_absolute_below() {
        let check = GradCheck::default();
        assert!((check.error(&[1.0], &[1.1]) - 0.1 / 2.1).abs() < 1e-15);
        assert!((check.error(&[0.0], &[1e-6]) - 1e-6 / 1e-4).abs() < 1e-15);
        assert!(check.error(&[1.0], &[f64::NAN]).is_nan());
        assert!(check.error(&[1.0, 2.0], &[1.0]).is_nan());
    }

    #[test]
    fn the_suite_covers_every_layer_and_passes() {
        let reports = suite(0);
        for name in [
            "ConvLayer",
            "MaxPoolLayer",
            "FlattenLayer",
            "ReluLayer",
            "FullLayer",
            "SoftMaxLayer",
            "CrossEntropyLayer",
            "Sequential",
        ] {
            assert!(
                reports.iter().any(|r| r.name.starts_with(name)),
                "{name} missing"
            );
        }
        assert!(reports.iter().any(|r| r.name.contains("with ties")));
        for report in &reports {
            assert!(report.passed(), "{report}");
        }
        let network = reports.last().unwrap();
        assert_eq!(
            network.errors.len(),
            1 + 3 * 2,
            "x plus weight and bias of 3 layers"
        );
    }

    #[test]
    fn central_differences_disagree_with_max_pool_at_ties() {
        // Documented behaviour: at a tie the central difference sees half the gradient.
        let x = ndarray::Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 1.0, 0.0, 0.0]).unwrap();
        let report =
            GradCheck::default().check_layer(&mut MaxPoolLayer::new(2), x.view().into_dyn(), 2);
        assert!((report.max_error() - 1.0 / 3.0).abs() < 1e-6, "{report}");
    }
}
