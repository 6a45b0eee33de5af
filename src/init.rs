//! Weight initialisation.

use crate::Float;
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Glorot (Xavier) normal initialisation: `W ~ N(0, σ²)` with `σ = sqrt(2 / (f_in + f_out))`.
///
/// Samples are drawn in `f64` and rounded to `F`, so an `f32` and an `f64` network built
/// from the same seed start from the same weights (up to rounding).
///
/// # Panics
/// If `f_in + f_out == 0`.
pub fn glorot_normal<F: Float, R: Rng + ?Sized>(
    shape: &[usize],
    f_in: usize,
    f_out: usize,
    rng: &mut R,
) -> ArrayD<F> {
    assert!(
        f_in + f_out > 0,
        "glorot_normal: f_in + f_out must be positive"
    );
    let sigma = (2.0 / (f_in + f_out) as f64).sqrt();
    let normal = Normal::new(0.0, sigma).expect("σ is finite and positive");
    ArrayD::from_shape_simple_fn(IxDyn(shape), || F::from_f64(normal.sample(rng)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn glorot_normal_has_the_requested_spread() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let w: ArrayD<f64> = glorot_normal(&[200, 100], 100, 200, &mut rng);
        let n = w.len() as f64;
        let mean = w.sum() / n;
        let std = (w.mapv(|v| (v - mean) * (v - mean)).sum() / n).sqrt();
        let sigma = (2.0f64 / 300.0).sqrt();
        assert!(mean.abs() < 0.002, "mean {mean}");
        assert!((std / sigma - 1.0).abs() < 0.02, "std {std} vs σ {sigma}");
    }

    #[test]
    fn f32_and_f64_draws_agree() {
        let a: ArrayD<f32> = glorot_normal(
            &[5, 4],
            4,
            5,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        let b: ArrayD<f64> = glorot_normal(
            &[5, 4],
            4,
            5,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(*x, *y as f32);
        }
    }
}
