//! A learnable synthetic data set in exactly the CIFAR-100 python layout, for tests, CI and
//! offline demos. Every class has its own smooth colour pattern (sinusoidal gradients with
//! class-specific frequencies and phases); each image is its class pattern, shifted by a
//! few pixels, plus noise.

use super::cifar::IMAGE_BYTES;
use super::pickle::Writer;
use super::{DataError, DatasetKind};
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::Path;

/// Sizes and seed of a synthetic set.
#[derive(Clone, Copy, Debug)]
pub struct SynthSpec {
    /// Number of classes (at most 100; the names are `synthetic_00` …).
    pub num_classes: usize,
    /// Training images per class.
    pub train_per_class: usize,
    /// Test images per class.
    pub test_per_class: usize,
    /// Seed of the patterns and the noise.
    pub seed: u64,
}

/// One class's pattern: per channel, `128 + 70·sin(a·r + b·q + φ)`.
struct Pattern {
    waves: [(f32, f32, f32); 3],
}

impl Pattern {
    fn new(rng: &mut impl Rng) -> Self {
        let mut wave = || {
            (
                rng.random_range(-0.6..0.6f32),
                rng.random_range(-0.6..0.6f32),
                rng.random_range(0.0..std::f32::consts::TAU),
            )
        };
        Self {
            waves: [wave(), wave(), wave()],
        }
    }

    /// One noisy, shifted image of this pattern.
    fn render(&self, rng: &mut impl Rng, out: &mut Vec<u8>) {
        let (dr, dq) = (
            rng.random_range(-3..=3) as f32,
            rng.random_range(-3..=3) as f32,
        );
        for &(a, b, phi) in &self.waves {
            for r in 0..32 {
                for q in 0..32 {
                    let v = 128.0
                        + 70.0 * (a * (r as f32 + dr) + b * (q as f32 + dq) + phi).sin()
                        + rng.random_range(-40.0..40.0f32);
                    out.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
    }
}

fn batch(
    path: &Path,
    label: &str,
    labels: &[i32],
    pixels: &[u8],
    filenames: &[String],
) -> Result<(), DataError> {
    let mut w = Writer::new();
    w.begin_dict();
    w.bytes(b"filenames").bytes_list(filenames);
    w.bytes(b"batch_label").bytes(label.as_bytes());
    w.bytes(b"fine_labels").int_list(labels);
    w.bytes(b"coarse_labels")
        .int_list(&labels.iter().map(|l| l / 5).collect::<Vec<_>>());
    w.bytes(b"data")
        .u8_array(&[labels.len(), IMAGE_BYTES], pixels);
    w.end_dict();
    write_atomic(path, &w.finish())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| DataError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

/// Writes `out/cifar-100-python/{train,test,meta}` and returns that folder.
pub fn write_synthetic_cifar100(
    out: &Path,
    spec: SynthSpec,
) -> Result<std::path::PathBuf, DataError> {
    if spec.num_classes == 0 || spec.num_classes > 100 {
        return Err(DataError::Invalid(format!(
            "--num-classes {}: expected 1 to 100",
            spec.num_classes
        )));
    }
    let dir = out.join(super::locate::folder_name(DatasetKind::Cifar100));
    fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let patterns: Vec<Pattern> = (0..spec.num_classes)
        .map(|_| Pattern::new(&mut rng))
        .collect();
    for (name, per_class, label) in [
        ("train", spec.train_per_class, "synthetic training batch"),
        ("test", spec.test_per_class, "synthetic testing batch"),
    ] {
        let mut pixels = Vec::with_capacity(per_class * spec.num_classes * IMAGE_BYTES);
        let mut labels = Vec::new();
        let mut filenames = Vec::new();
        // Interleave classes like the originals (not sorted by class).
        for i in 0..per_class {
            for (c, p) in patterns.iter().enumerate() {
                p.render(&mut rng, &mut pixels);
                labels.push(c as i32);
                filenames.push(format!("synthetic_{c:02}_{i:05}.png"));
            }
        }
        batch(&dir.join(name), label, &labels, &pixels, &filenames)?;
    }
    let mut w = Writer::new();
    w.begin_dict();
    let fine: Vec<String> = (0..100).map(|c| format!("synthetic_{c:02}")).collect();
    let coarse: Vec<String> = (0..20).map(|c| format!("synthetic_group_{c:02}")).collect();
    w.bytes(b"fine_label_names").bytes_list(&fine);
    w.bytes(b"coarse_label_names").bytes_list(&coarse);
    w.end_dict();
    write_atomic(&dir.join("meta"), &w.finish())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar;

    #[test]
    fn synthetic_set_reads_back_through_the_cifar_loader() {
        let out = tempfile::tempdir().unwrap();
        let spec = SynthSpec {
            num_classes: 4,
            train_per_class: 3,
            test_per_class: 2,
            seed: 1,
        };
        let dir = write_synthetic_cifar100(out.path(), spec).unwrap();
        let d = cifar::load_cifar100_python(&dir).unwrap();
        assert_eq!(d.train.len(), 12);
        assert_eq!(d.test.labels, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(d.class_names[3], "synthetic_03");
        assert_eq!(d.class_names.len(), 100);
        // same seed, same bytes
        let again = tempfile::tempdir().unwrap();
        write_synthetic_cifar100(again.path(), spec).unwrap();
        assert_eq!(
            fs::read(dir.join("train")).unwrap(),
            fs::read(again.path().join("cifar-100-python/train")).unwrap()
        );
        assert!(!dir.join("train.tmp").exists());
    }

    #[test]
    fn classes_differ_more_than_images_of_one_class() {
        let out = tempfile::tempdir().unwrap();
        let dir = write_synthetic_cifar100(
            out.path(),
            SynthSpec {
                num_classes: 3,
                train_per_class: 10,
                test_per_class: 1,
                seed: 2,
            },
        )
        .unwrap();
        let d = cifar::load_cifar100_python(&dir).unwrap();
        let mean = |c: usize| -> Vec<f64> {
            let idx: Vec<usize> = (0..d.train.len())
                .filter(|&i| d.train.labels[i] == c)
                .collect();
            (0..IMAGE_BYTES)
                .map(|p| {
                    idx.iter().map(|&i| d.train.image(i)[p] as f64).sum::<f64>() / idx.len() as f64
                })
                .collect()
        };
        let dist = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let (m0, m1) = (mean(0), mean(1));
        let spread: f64 = (0..d.train.len())
            .filter(|&i| d.train.labels[i] == 0)
            .map(|i| {
                dist(
                    &d.train
                        .image(i)
                        .iter()
                        .map(|&v| v as f64)
                        .collect::<Vec<_>>(),
                    &m0,
                )
            })
            .sum::<f64>()
            / 10.0;
        assert!(
            dist(&m0, &m1) > 0.5 * spread,
            "class means {:.0} apart, spread {spread:.0}",
            dist(&m0, &m1)
        );
    }

    #[test]
    fn class_count_is_checked() {
        let out = tempfile::tempdir().unwrap();
        let err = write_synthetic_cifar100(
            out.path(),
            SynthSpec {
                num_classes: 101,
                train_per_class: 1,
                test_per_class: 1,
                seed: 0,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("expected 1 to 100"));
    }
}
