//! Cross-entropy loss of probabilities against one-hot targets, averaged over the batch:
//! `ℓ = −(1/n_b) Σ_n Σ_j t[n,j] · ln(max(x[n,j], ε))`, with `ε` the type's machine epsilon
//! so that a probability of 0 gives a large but finite loss.
//!
//! Gradient: `dx[n,j] = −t[n,j] / (n_b · max(x[n,j], ε))`. After a softmax this chains to
//! the familiar `(y − t)/n_b`.
//!
//! ```
//! use scratchnet::layers::CrossEntropyLayer;
//! use scratchnet::ndarray::array;
//!
//! let mut ce = CrossEntropyLayer::<f64>::new();
//! let loss = ce.forward(array![[0.5, 0.5], [0.25, 0.75]].view(), array![[1.0, 0.0], [0.0, 1.0]].view());
//! assert!((loss - (-(0.5f64.ln() + 0.75f64.ln()) / 2.0)).abs() < 1e-15);
//! assert_eq!(ce.backward(), array![[-1.0, 0.0], [0.0, -2.0 / 3.0]]);
//! ```

use crate::layer::missing_forward;
use crate::Float;
use ndarray::{Array2, ArrayView2, Zip};

/// Mean cross-entropy over the batch; the last layer of a [`crate::Sequential`].
#[derive(Default)]
pub struct CrossEntropyLayer<F: Float> {
    cache: Option<(Array2<F>, Array2<F>)>,
    infinite_terms: usize,
}

impl<F: Float> CrossEntropyLayer<F> {
    /// A cross-entropy loss.
    pub fn new() -> Self {
        Self {
            cache: None,
            infinite_terms: 0,
        }
    }

    /// How many target probabilities of the last `forward` were exactly 0 (or below): the
    /// unclipped loss is infinite for them. A healthy network never gets there; a
    /// diverging one (too large a learning rate) does.
    pub fn infinite_terms(&self) -> usize {
        self.infinite_terms
    }

    /// The loss of probabilities `x` against targets `target`, both `(n_b, k)`.
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn forward(&mut self, x: ArrayView2<'_, F>, target: ArrayView2<'_, F>) -> F {
        assert_eq!(
            x.shape(),
            target.shape(),
            "CrossEntropyLayer: probabilities have shape {:?} but targets have shape {:?}",
            x.shape(),
            target.shape()
        );
        let n_b = x.nrows();
        // NaN stays NaN (`max` would hide it); everything else is clipped to ε.
        let clipped = x.mapv(|v| if v.is_nan() { v } else { v.max(F::epsilon()) });
        self.infinite_terms = Zip::from(&x).and(&target).fold(0, |n, &p, &t| {
            n + usize::from(t > F::zero() && p <= F::zero())
        });
        let total = Zip::from(&clipped)
            .and(&target)
            .fold(F::zero(), |acc, &p, &t| acc - t * p.ln());
        self.cache = Some((clipped, target.to_owned()));
        if n_b == 0 {
            F::zero()
        } else {
            total / F::from_f64(n_b as f64)
        }
    }

    /// dℓ/dx for the last `forward`, shape `(n_b, k)`.
    ///
    /// # Panics
    /// If called before `forward`.
    pub fn backward(&mut self) -> Array2<F> {
        let Some((p, t)) = &self.cache else {
            missing_forward("CrossEntropyLayer")
        };
        let n_b = F::from_f64(p.nrows() as f64);
        Zip::from(p).and(t).map_collect(|&p, &t| -t / (n_b * p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;
    use ndarray::array;

    #[test]
    fn zero_probability_gives_a_finite_loss() {
        let mut ce = CrossEntropyLayer::<f32>::new();
        let loss = ce.forward(array![[0.0, 1.0]].view(), array![[1.0, 0.0]].view());
        assert!(loss.is_finite());
        assert!((loss - -(f32::EPSILON.ln())).abs() < 1e-5);
        assert!(ce.backward().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn zero_target_probability_is_counted_and_nan_is_not_hidden() {
        let mut ce = CrossEntropyLayer::<f64>::new();
        ce.forward(
            array![[0.0, 1.0], [0.0, 1.0]].view(),
            array![[1.0, 0.0], [0.0, 1.0]].view(),
        );
        assert_eq!(ce.infinite_terms(), 1);
        assert!(ce
            .forward(array![[f64::NAN, 1.0]].view(), array![[1.0, 0.0]].view())
            .is_nan());
    }

    #[test]
    fn gradient_matches_numerical_differences() {
        let x = array![[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.25, 0.25, 0.5]];
        let t = array![[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]];
        let report = GradCheck::default().check_cross_entropy(x.view(), t.view());
        assert!(report.passed(), "{report}");
    }

    #[test]
    #[should_panic(
        expected = "CrossEntropyLayer: probabilities have shape [2, 3] but targets have shape [2, 2]"
    )]
    fn mismatched_targets_panic() {
        CrossEntropyLayer::<f64>::new()
            .forward(Array2::zeros((2, 3)).view(), Array2::zeros((2, 2)).view());
    }
}
