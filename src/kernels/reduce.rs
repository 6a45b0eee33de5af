//! Reductions that vectorise while staying deterministic.

use crate::Float;
use multiversion::multiversion;

/// Lanes of the partial sums in [`sum`]: a multiple of every SIMD width used (4 to 16 floats).
const LANES: usize = 16;

/// `Σ x`, as `LANES` interleaved partial sums added in a fixed order: the adds pipeline and
/// vectorise (a plain left-to-right sum is one long dependency chain), and the result does not
/// depend on the machine or the thread count.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn sum<F: Float>(x: &[F]) -> F {
    let mut acc = [F::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().chain(tail).fold(F::zero(), |s, &v| s + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_exactly_representable_values_exactly() {
        for n in [0, 1, 15, 16, 17, 100, 1024] {
            let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let expected: i64 = (0..n).map(|i| (i % 7) as i64 - 3).sum();
            assert_eq!(sum(&x), expected as f32, "n = {n}");
        }
    }

    #[test]
    fn agrees_with_a_plain_sum_to_rounding() {
        let x: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37).sin()).collect();
        let plain: f64 = x.iter().sum();
        assert!((sum(&x) - plain).abs() < 1e-12, "{} vs {plain}", sum(&x));
    }
}
