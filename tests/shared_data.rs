//! Reads the real data files provided beside the project in `../shared/data/` and Debian's
//! Fashion-MNIST. These files are not part of a fresh clone: when they are absent the
//! tests say so on stderr and pass, unless `SCRATCHNET_REQUIRE_SHARED_DATA=1` (set by
//! `.ci/run`) makes their absence a failure.

use scratchnet::data::{cifar, idx, locate, DatasetKind};
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("data")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("SCRATCHNET_REQUIRE_SHARED_DATA").is_none(),
        "{} is missing but SCRATCHNET_REQUIRE_SHARED_DATA is set",
        p.display()
    );
    eprintln!(
        "SKIPPED: {} not found (the shared data is not part of a fresh clone)",
        p.display()
    );
    None
}

#[test]
fn official_cifar100_meta_has_the_100_fine_names_in_order() {
    let Some(dir) = shared("cifar-100-fragment/cifar-100-python") else {
        return;
    };
    let names = cifar::cifar100_names(&dir).unwrap();
    assert_eq!(names.len(), 100);
    assert_eq!(
        (names[0].as_str(), names[49].as_str(), names[99].as_str()),
        ("apple", "mountain", "worm")
    );
    let coarse = cifar::read_python_names(&dir.join("meta"), "coarse_label_names", 20).unwrap();
    assert_eq!(coarse[0], "aquatic_mammals");
}

#[test]
fn real_cifar100_test_images_read_exactly() {
    let Some(dir) = shared("cifar-100-fragment/cifar-100-python") else {
        return;
    };
    let d = cifar::load_cifar100_python(&dir).unwrap();
    assert_eq!(d.test.len(), 20);
    assert_eq!(d.train.len(), 0, "the fragment's train file has no images");
    assert_eq!(d.test.labels[0], 49);
    assert_eq!(
        &d.test.image(0)[..9],
        &[199, 196, 195, 195, 196, 197, 198, 198, 199]
    );
    let coarse = cifar::read_python_batch(&dir.join("test"), "coarse_labels", 20).unwrap();
    assert_eq!(coarse.labels[0], 10);
    // the same folder is found through --data
    let found = locate::load(DatasetKind::Cifar100, dir.parent()).unwrap();
    assert_eq!(found.test.labels, d.test.labels);
}

#[test]
fn real_mnist_digits_read_from_gzip_idx() {
    let Some(dir) = shared("mnist-10k") else {
        return;
    };
    let d = idx::load(&dir, DatasetKind::Mnist).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (8500, 1500));
    assert_eq!(d.train.shape, (1, 28, 28));
    for c in 0..10 {
        assert!(
            d.train.labels.iter().filter(|&&l| l == c).count() > 600,
            "class {c}"
        );
    }
    // MNIST digits are white on black: the border is black, the centre has ink
    let mean_border = d.train.image(0)[..28]
        .iter()
        .map(|&v| v as f64)
        .sum::<f64>()
        / 28.0;
    assert_eq!(mean_border, 0.0);
    assert!(d.train.pixels.contains(&255));
}

#[test]
fn debian_fashion_mnist_is_the_complete_official_set() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.exists() {
        assert!(
            std::env::var_os("SCRATCHNET_REQUIRE_SHARED_DATA").is_none(),
            "apt-get install dataset-fashion-mnist first"
        );
        eprintln!(
            "SKIPPED: {} not found (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let d = locate::load(DatasetKind::FashionMnist, None).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (60000, 10000));
    for c in 0..10 {
        assert_eq!(d.train.labels.iter().filter(|&&l| l == c).count(), 6000);
        assert_eq!(d.test.labels.iter().filter(|&&l| l == c).count(), 1000);
    }
    assert_eq!(d.train.labels[..5], [9, 0, 0, 3, 0]);
}
