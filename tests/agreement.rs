//! f32 and f64 networks built from the same seed compute the same thing.

use scratchnet::ndarray::{Array4, ArrayD};
use scratchnet::rand::{Rng, SeedableRng};
use scratchnet::rand_chacha::ChaCha8Rng;
use scratchnet::{models, one_hot, Float, Sequential};

/// Every parameter gradient, flattened, in layer order.
fn grads<F: Float>(model: &mut Sequential<F>) -> Vec<f64> {
    let mut out = Vec::new();
    for layer in model.layers_mut() {
        for p in layer.params_mut() {
            out.extend(p.grad.iter().map(|v| v.as_f64()));
        }
    }
    out
}

fn max_rel_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    let (a, b): (Vec<f64>, Vec<f64>) = (a.into_iter().collect(), b.into_iter().collect());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f64::max)
}

#[test]
fn lab_network_forward_and_backward_agree_between_f32_and_f64() {
    let mut m32 = models::lab::<f32, _>(3, 16, 16, 3, &mut ChaCha8Rng::seed_from_u64(11));
    let mut m64 = models::lab::<f64, _>(3, 16, 16, 3, &mut ChaCha8Rng::seed_from_u64(11));
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let x64: Array4<f64> =
        Array4::from_shape_simple_fn((6, 3, 16, 16), || rng.random_range(-0.5..0.5));
    let x32 = x64.mapv(|v| v as f32);
    let labels = [0, 1, 2, 2, 1, 0];

    let loss32 = m32.forward_loss(x32.view().into_dyn(), one_hot::<f32>(&labels, 3).view());
    let loss64 = m64.forward_loss(x64.view().into_dyn(), one_hot::<f64>(&labels, 3).view());
    assert!(
        (loss32 as f64 - loss64).abs() < 1e-5 * loss64,
        "loss {loss32} vs {loss64}"
    );

    let dx32: ArrayD<f32> = m32.backward();
    let dx64: ArrayD<f64> = m64.backward();
    let dx_diff = max_rel_diff(dx32.iter().map(|&v| v as f64), dx64.iter().copied());
    assert!(dx_diff < 1e-4, "dx differs by {dx_diff}");
    let g_diff = max_rel_diff(grads(&mut m32), grads(&mut m64));
    assert!(g_diff < 1e-4, "parameter gradients differ by {g_diff}");

    let p32 = m32.predict_proba(x32.view().into_dyn());
    let p64 = m64.predict_proba(x64.view().into_dyn());
    let p_diff = max_rel_diff(p32.iter().map(|&v| v as f64), p64.iter().copied());
    assert!(p_diff < 1e-5, "probabilities differ by {p_diff}");
}

#[test]
fn training_trajectories_stay_together() {
    let mut m32 = models::lab::<f32, _>(1, 8, 8, 2, &mut ChaCha8Rng::seed_from_u64(3));
    let mut m64 = models::lab::<f64, _>(1, 8, 8, 2, &mut ChaCha8Rng::seed_from_u64(3));
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x64: Array4<f64> =
        Array4::from_shape_simple_fn((20, 1, 8, 8), || rng.random_range(-0.5..0.5));
    let labels: Vec<usize> = (0..20).map(|i| i % 2).collect();
    let l32 = m32.fit(
        x64.mapv(|v| v as f32).view().into_dyn(),
        one_hot(&labels, 2).view(),
        5,
        0.1,
        8,
        &mut ChaCha8Rng::seed_from_u64(5),
    );
    let l64 = m64.fit(
        x64.view().into_dyn(),
        one_hot(&labels, 2).view(),
        5,
        0.1,
        8,
        &mut ChaCha8Rng::seed_from_u64(5),
    );
    for (a, b) in l32.iter().zip(&l64) {
        assert!(
            (*a as f64 - b).abs() < 1e-4 * b,
            "epoch losses {l32:?} vs {l64:?}"
        );
    }
}
