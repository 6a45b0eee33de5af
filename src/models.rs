//! Ready-made networks.

use crate::layers::{
    ConvLayer, CrossEntropyLayer, FlattenLayer, FullLayer, MaxPoolLayer, ReluLayer, SoftMaxLayer,
};
use crate::{Float, Layer, Sequential};
use rand::Rng;

/// The lab's network for `(channels, rows, cols)` images and `classes` outputs:
/// conv channels→16 3×3, ReLU, max-pool 2, conv 16→32 3×3, ReLU, max-pool 2, flatten,
/// full `32·⌊rows/4⌋·⌊cols/4⌋ → classes`, softmax, cross-entropy.
/// For CIFAR's 3×32×32 that is the lab's full 2048→k.
///
/// # Panics
/// If `rows` or `cols` is below 4 or any size is zero.
pub fn lab<F: Float, R: Rng + ?Sized>(
    channels: usize,
    rows: usize,
    cols: usize,
    classes: usize,
    rng: &mut R,
) -> Sequential<F> {
    assert!(
        rows >= 4 && cols >= 4,
        "models::lab: images must be at least 4×4, got {rows}×{cols}"
    );
    let layers: Vec<Box<dyn Layer<F>>> = vec![
        Box::new(ConvLayer::new(channels, 16, 3, rng)),
        Box::new(ReluLayer::new()),
        Box::new(MaxPoolLayer::new(2)),
        Box::new(ConvLayer::new(16, 32, 3, rng)),
        Box::new(ReluLayer::new()),
        Box::new(MaxPoolLayer::new(2)),
        Box::new(FlattenLayer::new()),
        Box::new(FullLayer::new(32 * (rows / 4) * (cols / 4), classes, rng)),
        Box::new(SoftMaxLayer::new()),
    ];
    Sequential::new(layers, CrossEntropyLayer::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lab_network_on_cifar_shapes() {
        let model = lab::<f32, _>(3, 32, 32, 3, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
        let shapes = model.shapes(&[128, 3, 32, 32]).unwrap();
        assert_eq!(shapes[6], vec![128, 2048]);
        assert_eq!(shapes.last().unwrap(), &vec![128, 3]);
        assert_eq!(
            model.num_params(),
            (16 * 27 + 16) + (32 * 144 + 32) + (3 * 2048 + 3)
        );
    }
}
