//! `Sequential::fit` learns, and training is bit-identical whatever the thread count.

use scratchnet::ndarray::{Array4, ArrayD};
use scratchnet::rand::{Rng, SeedableRng};
use scratchnet::rand_chacha::ChaCha8Rng;
use scratchnet::{models, one_hot, Sequential};

/// Three classes of 3×12×12 images: a bright square in the top-left, centre or
/// bottom-right corner, on noise. Linearly separable, but only through the convolutions.
fn squares(n: usize, seed: u64) -> (Array4<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let mut x = Array4::from_shape_simple_fn((n, 3, 12, 12), || rng.random_range(-0.3..0.3f32));
    for (i, &c) in labels.iter().enumerate() {
        let o = [0, 4, 8][c];
        for ch in 0..3 {
            for r in o..o + 4 {
                for q in o..o + 4 {
                    x[[i, ch, r, q]] += 1.0;
                }
            }
        }
    }
    (x, labels)
}

#[test]
fn fit_drives_the_loss_down_and_classifies_a_separable_problem_perfectly() {
    let (x, labels) = squares(90, 1);
    let mut model = models::lab::<f32, _>(3, 12, 12, 3, &mut ChaCha8Rng::seed_from_u64(2));
    let before = model.evaluate(x.view().into_dyn(), &labels);
    let losses = model.fit(
        x.view().into_dyn(),
        one_hot(&labels, 3).view(),
        15,
        0.1,
        16,
        &mut ChaCha8Rng::seed_from_u64(3),
    );
    assert_eq!(losses.len(), 15);
    assert!(losses[14] < 0.1 * losses[0], "losses {losses:?}");
    let (test_x, test_labels) = squares(60, 9);
    let after = model.evaluate(test_x.view().into_dyn(), &test_labels);
    assert_eq!(after.accuracy, 1.0, "predictions {:?}", after.predictions);
    assert_eq!(model.predict(test_x.view().into_dyn()), test_labels);
    assert!(
        after.loss < before.loss / 5.0,
        "{} → {}",
        before.loss,
        after.loss
    );
}

#[test]
fn last_partial_batch_is_used() {
    // 7 examples, batch 3: batches of 3, 3 and 1. With lr 0 the weights stay, so every
    // epoch's loss is the plain mean over all 7 examples, whatever the order.
    let (x, labels) = squares(7, 4);
    let mut model = models::lab::<f64, _>(3, 12, 12, 3, &mut ChaCha8Rng::seed_from_u64(5));
    let x = x.mapv(|v| v as f64);
    let full = model.evaluate(x.view().into_dyn(), &labels).loss;
    let losses = model.fit(
        x.view().into_dyn(),
        one_hot(&labels, 3).view(),
        2,
        0.0,
        3,
        &mut ChaCha8Rng::seed_from_u64(6),
    );
    for l in losses {
        assert!((l - full).abs() < 1e-12, "{l} vs {full}");
    }
}

/// Trains a lab network for 2 epochs inside a pool of `threads` threads; returns the
/// epoch losses and every weight.
fn train_with_threads(threads: usize) -> (Vec<f32>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (x, labels) = squares(45, 7);
        let mut model: Sequential<f32> =
            models::lab(3, 12, 12, 3, &mut ChaCha8Rng::seed_from_u64(8));
        let losses = model.fit(
            x.view().into_dyn(),
            one_hot(&labels, 3).view(),
            2,
            0.1,
            20,
            &mut ChaCha8Rng::seed_from_u64(9),
        );
        let mut weights = Vec::new();
        for layer in model.layers_mut() {
            for p in layer.params_mut() {
                weights.extend(p.value.iter().copied());
            }
        }
        (losses, weights)
    })
}

#[test]
fn results_are_bit_identical_with_one_and_two_threads() {
    let (l1, w1) = train_with_threads(1);
    let (l2, w2) = train_with_threads(2);
    let (l3, w3) = train_with_threads(3);
    assert_eq!(
        l1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        l2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(
        w1.iter().zip(&w2).all(|(a, b)| a.to_bits() == b.to_bits()),
        "weights differ between 1 and 2 threads"
    );
    assert_eq!(l1, l3);
    assert_eq!(w1, w3);
    assert!(w1.len() > 1000);
}

#[test]
fn forward_without_layers_is_the_identity() {
    let mut model =
        Sequential::<f64>::new(Vec::new(), scratchnet::layers::CrossEntropyLayer::new());
    let x = ArrayD::from_elem(vec![2, 3], 0.5);
    assert_eq!(model.forward(x.view()), x);
}

/// Trains a lab network on `rows × cols` images for 2 epochs with fusion on or off, then
/// takes one more full backward pass; returns the epoch losses, every weight and
/// parameter gradient, and dℓ/dx, all as bits.
fn train_fused_or_not<F: scratchnet::Float>(fusion: bool, rows: usize, cols: usize) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = Array4::from_shape_simple_fn((23, 3, rows, cols), || {
        F::from_f64(rng.random_range(-1.0..1.0))
    });
    let labels: Vec<usize> = (0..23).map(|i| i % 3).collect();
    let target = one_hot::<F>(&labels, 3);
    let mut model: Sequential<F> =
        models::lab(3, rows, cols, 3, &mut ChaCha8Rng::seed_from_u64(12));
    model.set_fusion(fusion);
    let losses = model.fit(
        x.view().into_dyn(),
        target.view(),
        2,
        F::from_f64(0.1),
        8,
        &mut ChaCha8Rng::seed_from_u64(13),
    );
    model.forward_loss(x.view().into_dyn(), target.view());
    let dx = model.backward();
    let mut bits: Vec<u64> = losses.iter().map(|v| v.as_f64().to_bits()).collect();
    for layer in model.layers_mut() {
        for p in layer.params_mut() {
            bits.extend(
                p.value
                    .iter()
                    .chain(p.grad.iter())
                    .map(|v| v.as_f64().to_bits()),
            );
        }
    }
    bits.extend(dx.iter().map(|v| v.as_f64().to_bits()));
    bits
}

#[test]
fn fused_conv_relu_pool_gives_the_same_bits_as_the_separate_layers() {
    // 12×12: both blocks fuse. 10×14: the second block sees 5×7 and runs unfused. 20×36
    // and 32×32: both blocks run the direct kernels (with column tails at 20×36), which pool
    // in registers on processors with AVX-512.
    for (rows, cols) in [(12, 12), (10, 14), (20, 36), (32, 32)] {
        let fused = train_fused_or_not::<f32>(true, rows, cols);
        assert_eq!(fused, train_fused_or_not::<f32>(false, rows, cols));
        assert!(fused.len() > 1000);
        let fused = train_fused_or_not::<f64>(true, rows, cols);
        assert_eq!(fused, train_fused_or_not::<f64>(false, rows, cols));
    }
}
