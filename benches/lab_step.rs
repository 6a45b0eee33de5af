//! The lab network at batch 128, f32: one training step (forward, backward, SGD) and one
//! forward pass. Run with `cargo bench`; `RAYON_NUM_THREADS=1 cargo bench` for one thread.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scratchnet::ndarray::Array4;
use scratchnet::rand::{Rng, SeedableRng};
use scratchnet::rand_chacha::ChaCha8Rng;
use scratchnet::{models, one_hot};

fn lab_network(c: &mut Criterion) {
    scratchnet::tune_allocator();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut model = models::lab::<f32, _>(3, 32, 32, 3, &mut rng);
    let x = Array4::<f32>::from_shape_simple_fn((128, 3, 32, 32), || rng.random_range(-0.5..0.5));
    let labels: Vec<usize> = (0..128).map(|i| i % 3).collect();
    let y = one_hot::<f32>(&labels, 3);
    let mut group = c.benchmark_group(format!("lab_b128_threads{}", rayon::current_num_threads()));
    group.throughput(Throughput::Elements(128));
    group.bench_function("train_step", |b| {
        b.iter(|| model.train_batch(x.view().into_dyn(), y.view(), 0.1))
    });
    group.bench_function("forward", |b| b.iter(|| model.forward(x.view().into_dyn())));
    group.finish();
}

criterion_group!(benches, lab_network);
criterion_main!(benches);
