//! Datasets: the original file formats, where data is found, download, class subsets.
//!
//! Pixels stay `u8` in memory (`(n, c, rows, cols)` row-major, like NCHW); batches are
//! converted to float with the lab's scaling only when they are used.

pub mod cifar;
pub mod download;
pub mod idx;
pub mod locate;
pub mod pickle;
pub mod subset;
pub mod synth;

use crate::Float;
use ndarray::Array4;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading data. Messages name the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's contents are not what the format promises.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong, with the value found and what was expected.
        message: String,
    },
    /// No data set in any of the places looked at.
    #[error("no {dataset} data found; looked in:\n{}\nDownload it with: scratchnet download --dataset {dataset}", looked.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n"))]
    NotFound {
        /// The data set's command-line name.
        dataset: DatasetKind,
        /// Every place looked at, in order.
        looked: Vec<PathBuf>,
    },
    /// A download failed; nothing was left behind.
    #[error("download of {url} failed: {message}")]
    Download {
        /// What was being fetched.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A request that does not fit the data (an unknown class name, say).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// A format error for `path`.
    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// An I/O error for `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The data sets scratchnet reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// CIFAR-100: 50,000 + 10,000 colour images 32×32, 100 classes (the lab's).
    Cifar100,
    /// CIFAR-10: 50,000 + 10,000 colour images 32×32, 10 classes.
    Cifar10,
    /// MNIST handwritten digits: 60,000 + 10,000 grey images 28×28.
    Mnist,
    /// Fashion-MNIST: 60,000 + 10,000 grey images 28×28 of clothes.
    FashionMnist,
}

impl DatasetKind {
    /// All kinds, in the order the command line lists them.
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::Cifar100,
        DatasetKind::Cifar10,
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
    ];

    /// The command-line name: `cifar100`, `cifar10`, `mnist`, `fashion-mnist`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `(channels, rows, cols)` of one image.
    pub fn image_shape(self) -> (usize, usize, usize) {
        match self {
            DatasetKind::Cifar100 | DatasetKind::Cifar10 => (3, 32, 32),
            DatasetKind::Mnist | DatasetKind::FashionMnist => (1, 28, 28),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Labelled `u8` images of one shape: image `i` is `pixels[i·c·r·q .. (i+1)·c·r·q]` in
/// `(channel, row, col)` order.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// All pixels, image after image.
    pub pixels: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<usize>,
    /// `(channels, rows, cols)`.
    pub shape: (usize, usize, usize),
}

/// How `u8` pixels become network inputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Scaling {
    /// The lab's `x/255 − 0.5`.
    Lab,
    /// Per-channel standardisation `(x/255 − mean[c]) / std[c]`.
    Standardize {
        /// Mean of `x/255` per channel.
        mean: Vec<f32>,
        /// Standard deviation of `x/255` per channel.
        std: Vec<f32>,
    },
}

impl Scaling {
    /// Per-channel standardisation with the mean and deviation of `set`.
    pub fn standardize(set: &ImageSet) -> Self {
        let (c, r, q) = set.shape;
        let plane = r * q;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for image in set.pixels.chunks_exact(c * plane) {
            for (ch, values) in image.chunks_exact(plane).enumerate() {
                for &v in values {
                    let x = v as f64 / 255.0;
                    sum[ch] += x;
                    sq[ch] += x * x;
                }
            }
        }
        let n = (set.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt().max(1e-6)) as f32)
            .collect();
        Scaling::Standardize {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// The float input for pixel value `v` of channel `c`.
    pub fn apply(&self, v: u8, c: usize) -> f32 {
        let x = v as f32 / 255.0;
        match self {
            Scaling::Lab => x - 0.5,
            Scaling::Standardize { mean, std } => (x - mean[c]) / std[c],
        }
    }
}

impl ImageSet {
    /// Checks that pixels, labels and shape agree and every label is below `classes`.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<usize>,
        shape: (usize, usize, usize),
        classes: usize,
        path: &Path,
    ) -> Result<Self, DataError> {
        let len = shape.0 * shape.1 * shape.2;
        if len == 0 || pixels.len() != labels.len() * len {
            return Err(DataError::format(
                path,
                format!(
                    "{} pixels for {} labels of {len}-pixel images",
                    pixels.len(),
                    labels.len()
                ),
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(DataError::format(
                path,
                format!("label {l} of image {i} is out of range (expected 0..{classes})"),
            ));
        }
        Ok(Self {
            pixels,
            labels,
            shape,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: `c · rows · cols`.
    pub fn image_len(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images `indices`, converted to an NCHW float batch with `scaling`.
    ///
    /// # Shapes
    /// `(indices.len(), c, rows, cols)`.
    pub fn batch<F: Float>(&self, indices: &[usize], scaling: &Scaling) -> Array4<F> {
        let (c, r, q) = self.shape;
        let mut out = Array4::<F>::zeros((indices.len(), c, r, q));
        let plane = r * q;
        if self.image_len() == 0 {
            return out;
        }
        // One image per task: the conversion runs on every core.
        out.as_slice_mut()
            .expect("fresh array")
            .par_chunks_exact_mut(self.image_len())
            .zip(indices.par_iter())
            .for_each(|(slot, &i)| {
                for (ch, (d, s)) in slot
                    .chunks_exact_mut(plane)
                    .zip(self.image(i).chunks_exact(plane))
                    .enumerate()
                {
                    for (d, &s) in d.iter_mut().zip(s) {
                        *d = F::from_f64(scaling.apply(s, ch) as f64);
                    }
                }
            });
        out
    }

    /// Only the images whose label is in `classes`, relabelled to their position there.
    pub fn select_classes(&self, classes: &[usize]) -> ImageSet {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(new) = classes.iter().position(|&c| c == l) {
                pixels.extend_from_slice(self.image(i));
                labels.push(new);
            }
        }
        ImageSet {
            pixels,
            labels,
            shape: self.shape,
        }
    }

    /// Keeps only the images whose label is in `classes`, relabelled to their position
    /// there, in place (no second copy of the pixels).
    pub fn retain_classes(&mut self, classes: &[usize]) {
        let n = self.image_len();
        let mut kept = 0;
        for i in 0..self.len() {
            if let Some(new) = classes.iter().position(|&c| c == self.labels[i]) {
                self.pixels.copy_within(i * n..(i + 1) * n, kept * n);
                self.labels[kept] = new;
                kept += 1;
            }
        }
        self.pixels.truncate(kept * n);
        self.pixels.shrink_to_fit();
        self.labels.truncate(kept);
    }

    /// Moves a stratified, seeded validation hold-out out of this set, in place: the same
    /// split as [`ImageSet::split_validation`], without copying the images that stay.
    pub fn split_off_validation(&mut self, fraction: f64, seed: u64) -> ImageSet {
        let held = self.held_out(fraction, seed);
        let n = self.image_len();
        let hold: Vec<usize> = (0..self.len()).filter(|&i| held[i]).collect();
        let val = self.take(&hold);
        let mut kept = 0;
        for (i, &is_held) in held.iter().enumerate() {
            if !is_held {
                self.pixels.copy_within(i * n..(i + 1) * n, kept * n);
                self.labels[kept] = self.labels[i];
                kept += 1;
            }
        }
        self.pixels.truncate(kept * n);
        self.pixels.shrink_to_fit();
        self.labels.truncate(kept);
        val
    }

    /// Which images a stratified, seeded hold-out of `fraction` takes.
    fn held_out(&self, fraction: f64, seed: u64) -> Vec<bool> {
        let classes = self.labels.iter().copied().max().map_or(0, |m| m + 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut held = vec![false; self.len()];
        for c in 0..classes {
            let mut members: Vec<usize> =
                (0..self.len()).filter(|&i| self.labels[i] == c).collect();
            members.shuffle(&mut rng);
            let k = (fraction * members.len() as f64).round() as usize;
            for &i in &members[..k.min(members.len())] {
                held[i] = true;
            }
        }
        held
    }

    /// The images `indices`, in that order.
    pub fn take(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
        }
    }

    /// A stratified, seeded hold-out: `round(fraction · n_c)` images of every class `c`
    /// go to the second set, the rest (in their original order) to the first.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> (ImageSet, ImageSet) {
        let held = self.held_out(fraction, seed);
        let keep: Vec<usize> = (0..self.len()).filter(|&i| !held[i]).collect();
        let hold: Vec<usize> = (0..self.len()).filter(|&i| held[i]).collect();
        (self.take(&keep), self.take(&hold))
    }
}

/// A data set: training and test images and the class names.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Which data set.
    pub kind: DatasetKind,
    /// Training images.
    pub train: ImageSet,
    /// Test images.
    pub test: ImageSet,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// The folder it was read from.
    pub source: PathBuf,
}

impl Dataset {
    /// Keeps only `classes` (indices into `class_names`), relabelled 0..k in that order.
    pub fn select_classes(&self, classes: &[usize]) -> Dataset {
        Dataset {
            kind: self.kind,
            train: self.train.select_classes(classes),
            test: self.test.select_classes(classes),
            class_names: classes
                .iter()
                .map(|&c| self.class_names[c].clone())
                .collect(),
            source: self.source.clone(),
        }
    }

    /// Keeps only `classes`, relabelled 0..k in that order, in place.
    pub fn retain_classes(&mut self, classes: &[usize]) {
        self.train.retain_classes(classes);
        self.test.retain_classes(classes);
        self.class_names = classes
            .iter()
            .map(|&c| self.class_names[c].clone())
            .collect();
    }

    /// Resolves `--classes` items (names or indices) to class indices.
    pub fn resolve_classes(names: &[String], items: &[String]) -> Result<Vec<usize>, DataError> {
        let mut out = Vec::new();
        for item in items {
            let idx = match item.parse::<usize>() {
                Ok(i) if i < names.len() => i,
                Ok(i) => return Err(DataError::Invalid(format!("class index {i} is out of range (expected 0..{})", names.len()))),
                Err(_) => names.iter().position(|n| n == item).ok_or_else(|| {
                    let close: Vec<&str> = names.iter().filter(|n| n.contains(item.as_str()) || item.contains(n.as_str())).map(String::as_str).take(5).collect();
                    let hint = if close.is_empty() { String::new() } else { format!(" (did you mean {}?)", close.join(", ")) };
                    DataError::Invalid(format!("unknown class name {item:?}{hint}; expected one of the {} class names or an index", names.len()))
                })?,
            };
            if out.contains(&idx) {
                return Err(DataError::Invalid(format!(
                    "class {item:?} is listed twice"
                )));
            }
            out.push(idx);
        }
        Ok(out)
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageSet {
        // 6 images of 1×1×2: image i has pixels [i, 255 − i], label i % 3
        let pixels = (0..6u8).flat_map(|i| [i, 255 - i]).collect();
        ImageSet::new(
            pixels,
            (0..6).map(|i| i % 3).collect(),
            (1, 1, 2),
            3,
            Path::new("tiny"),
        )
        .unwrap()
    }

    #[test]
    fn batch_scales_like_the_lab() {
        let b = tiny().batch::<f32>(&[5, 0], &Scaling::Lab);
        assert_eq!(b.shape(), &[2, 1, 1, 2]);
        assert_eq!(
            b.into_raw_vec_and_offset().0,
            vec![5.0 / 255.0 - 0.5, 250.0 / 255.0 - 0.5, -0.5, 0.5]
        );
    }

    #[test]
    fn select_classes_relabels_in_the_given_order() {
        let mut in_place = tiny();
        in_place.retain_classes(&[2, 0]);
        assert_eq!(in_place, tiny().select_classes(&[2, 0]));
        let s = tiny().select_classes(&[2, 0]);
        assert_eq!(s.labels, vec![1, 0, 1, 0]);
        assert_eq!(s.image(0), &[0, 255]);
        assert_eq!(s.image(1), &[2, 253]);
    }

    #[test]
    fn validation_split_is_stratified_and_seeded() {
        let set = ImageSet::new(
            vec![0; 40],
            (0..40).map(|i| i % 4).collect(),
            (1, 1, 1),
            4,
            Path::new("x"),
        )
        .unwrap();
        let (train, val) = set.split_validation(0.2, 1);
        assert_eq!(train.len(), 32);
        assert_eq!(val.len(), 8);
        for c in 0..4 {
            assert_eq!(val.labels.iter().filter(|&&l| l == c).count(), 2);
        }
        assert_eq!(set.split_validation(0.2, 1), (train.clone(), val.clone()));
        let mut in_place = set.clone();
        assert_eq!(in_place.split_off_validation(0.2, 1), val);
        assert_eq!(in_place, train);
        assert_eq!(set.split_validation(0.0, 1).1.len(), 0);
    }

    #[test]
    fn bad_labels_and_sizes_name_the_file() {
        let err = ImageSet::new(
            vec![0; 4],
            vec![0, 5],
            (1, 1, 2),
            3,
            Path::new("data/x.bin"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "data/x.bin: label 5 of image 1 is out of range (expected 0..3)"
        );
        let err = ImageSet::new(vec![0; 5], vec![0, 1], (1, 1, 2), 3, Path::new("y")).unwrap_err();
        assert!(err.to_string().contains("5 pixels for 2 labels"));
    }

    #[test]
    fn classes_resolve_by_name_or_index() {
        let names: Vec<String> = ["apple", "bear", "cattle"].map(String::from).to_vec();
        let items: Vec<String> = ["bear", "0"].map(String::from).to_vec();
        assert_eq!(
            Dataset::resolve_classes(&names, &items).unwrap(),
            vec![1, 0]
        );
        let err = Dataset::resolve_classes(&names, &["bears".to_string()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown class name \"bears\" (did you mean bear?)"),
            "{err}"
        );
        assert!(Dataset::resolve_classes(&names, &["7".to_string()]).is_err());
        assert!(
            Dataset::resolve_classes(&names, &["1".to_string(), "bear".to_string()])
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn standardize_gives_zero_mean_unit_variance() {
        let s = Scaling::standardize(&tiny());
        let b = tiny().batch::<f64>(&[0, 1, 2, 3, 4, 5], &s);
        let mean = b.mean().unwrap();
        assert!(mean.abs() < 1e-6, "{mean}");
    }
}
