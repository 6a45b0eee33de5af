//! CIFAR-100 and CIFAR-10, in their python (pickle) and binary versions.
//!
//! - python: `data` is a numpy `uint8` array `n × 3072` (red plane, green plane, blue plane,
//!   each 32×32 row-major) and the labels are lists of ints (`fine_labels` for CIFAR-100,
//!   `labels` for CIFAR-10); names come from `meta` / `batches.meta`.
//! - binary: fixed-size records, `[coarse, fine, 3072 pixels]` (CIFAR-100) or
//!   `[label, 3072 pixels]` (CIFAR-10); names from the `.txt` files.

use super::pickle::{self, Value};
use super::{read_file, DataError, Dataset, DatasetKind, ImageSet};
use std::path::Path;

/// Pixels of one CIFAR image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

fn parse(path: &Path, bytes: &[u8]) -> Result<Value, DataError> {
    pickle::parse(bytes).map_err(|e| DataError::format(path, e.to_string()))
}

/// A list of non-negative ints from a pickled dict.
fn int_list(path: &Path, v: &Value, bytes: &[u8], key: &str) -> Result<Vec<usize>, DataError> {
    match v.get(bytes, key.as_bytes()) {
        Some(Value::List(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => Err(DataError::format(
                    path,
                    format!("{key}[{i}] is {other:?}, expected a non-negative integer"),
                )),
            })
            .collect(),
        Some(other) => Err(DataError::format(
            path,
            format!("{key} is a {}, expected a list of labels", other.kind()),
        )),
        None => Err(DataError::format(
            path,
            format!("no {key} key (is this a CIFAR batch file?)"),
        )),
    }
}

/// A list of names from a pickled dict (byte strings or strings).
fn name_list(path: &Path, v: &Value, bytes: &[u8], key: &str) -> Result<Vec<String>, DataError> {
    match v.get(bytes, key.as_bytes()) {
        Some(Value::List(items)) => items
            .iter()
            .map(|item| match item {
                Value::Bytes(r) => Ok(String::from_utf8_lossy(&bytes[r.clone()]).into_owned()),
                Value::Str(s) => Ok(s.clone()),
                other => Err(DataError::format(
                    path,
                    format!("{key} holds a {}, expected names", other.kind()),
                )),
            })
            .collect(),
        _ => Err(DataError::format(
            path,
            format!("no list of names under {key}"),
        )),
    }
}

/// Reads one python batch file: its images and the labels under `label_key`.
pub fn read_python_batch(
    path: &Path,
    label_key: &str,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let mut bytes = read_file(path)?;
    let value = parse(path, &bytes)?;
    let labels = int_list(path, &value, &bytes, label_key)?;
    let data = match value.get(&bytes, b"data") {
        Some(Value::Array { shape, data }) => {
            if shape.len() != 2 || shape[1] != IMAGE_BYTES || shape[0] != labels.len() {
                return Err(DataError::format(
                    path,
                    format!("data has shape {shape:?}, expected [{}, {IMAGE_BYTES}] to match the labels", labels.len()),
                ));
            }
            data.clone()
        }
        Some(other) => {
            return Err(DataError::format(
                path,
                format!("data is a {}, expected a uint8 array", other.kind()),
            ))
        }
        None => {
            return Err(DataError::format(
                path,
                "no data key (is this a CIFAR batch file?)",
            ))
        }
    };
    drop(value);
    // Reuse the file buffer for the pixels instead of copying 150 MB (and do not shrink
    // it: a reallocation would briefly hold the pixels twice).
    let len = data.len();
    bytes.copy_within(data, 0);
    bytes.truncate(len);
    ImageSet::new(bytes, labels, (3, 32, 32), classes, path)
}

/// Reads names from a python meta file.
pub fn read_python_names(
    path: &Path,
    key: &str,
    expected: usize,
) -> Result<Vec<String>, DataError> {
    let bytes = read_file(path)?;
    let value = parse(path, &bytes)?;
    let names = name_list(path, &value, &bytes, key)?;
    if names.len() != expected {
        return Err(DataError::format(
            path,
            format!("{key} has {} names, expected {expected}", names.len()),
        ));
    }
    Ok(names)
}

/// Reads a binary batch: records of `label_bytes` label bytes then 3072 pixels; the label
/// used is byte `label_index` of each record.
pub fn read_binary_batch(
    path: &Path,
    label_bytes: usize,
    label_index: usize,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let bytes = read_file(path)?;
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(DataError::format(
            path,
            format!(
                "size {} is not a positive multiple of the {record}-byte record",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for r in bytes.chunks_exact(record) {
        labels.push(r[label_index] as usize);
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    ImageSet::new(pixels, labels, (3, 32, 32), classes, path)
}

/// Reads one name per line, checking the count.
pub fn read_text_names(path: &Path, expected: usize) -> Result<Vec<String>, DataError> {
    let text = String::from_utf8(read_file(path)?)
        .map_err(|_| DataError::format(path, "not UTF-8 text"))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(DataError::format(
            path,
            format!("{} names, expected {expected}", names.len()),
        ));
    }
    Ok(names)
}

/// Concatenates image sets of one shape.
fn concat(sets: Vec<ImageSet>) -> ImageSet {
    let shape = sets[0].shape;
    let mut out = ImageSet {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape,
    };
    for s in sets {
        out.pixels.extend_from_slice(&s.pixels);
        out.labels.extend_from_slice(&s.labels);
    }
    out
}

/// The 100 fine class names from a `cifar-100-python` folder's `meta`.
pub fn cifar100_names(dir: &Path) -> Result<Vec<String>, DataError> {
    read_python_names(&dir.join("meta"), "fine_label_names", 100)
}

/// Loads `cifar-100-python/` (`train`, `test`, `meta`), fine labels.
pub fn load_cifar100_python(dir: &Path) -> Result<Dataset, DataError> {
    Ok(Dataset {
        kind: DatasetKind::Cifar100,
        class_names: cifar100_names(dir)?,
        train: read_python_batch(&dir.join("train"), "fine_labels", 100)?,
        test: read_python_batch(&dir.join("test"), "fine_labels", 100)?,
        source: dir.to_path_buf(),
    })
}

/// Loads `cifar-100-binary/` (`train.bin`, `test.bin`, `fine_label_names.txt`), fine labels.
pub fn load_cifar100_binary(dir: &Path) -> Result<Dataset, DataError> {
    Ok(Dataset {
        kind: DatasetKind::Cifar100,
        class_names: read_text_names(&dir.join("fine_label_names.txt"), 100)?,
        train: read_binary_batch(&dir.join("train.bin"), 2, 1, 100)?,
        test: read_binary_batch(&dir.join("test.bin"), 2, 1, 100)?,
        source: dir.to_path_buf(),
    })
}

/// Loads `cifar-10-batches-py/` (`data_batch_1..5`, `test_batch`, `batches.meta`).
pub fn load_cifar10_python(dir: &Path) -> Result<Dataset, DataError> {
    let train = (1..=5)
        .map(|i| read_python_batch(&dir.join(format!("data_batch_{i}")), "labels", 10))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dataset {
        kind: DatasetKind::Cifar10,
        class_names: read_python_names(&dir.join("batches.meta"), "label_names", 10)?,
        train: concat(train),
        test: read_python_batch(&dir.join("test_batch"), "labels", 10)?,
        source: dir.to_path_buf(),
    })
}

/// Loads `cifar-10-batches-bin/` (`data_batch_1..5.bin`, `test_batch.bin`, `batches.meta.txt`).
pub fn load_cifar10_binary(dir: &Path) -> Result<Dataset, DataError> {
    let train = (1..=5)
        .map(|i| read_binary_batch(&dir.join(format!("data_batch_{i}.bin")), 1, 0, 10))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Dataset {
        kind: DatasetKind::Cifar10,
        class_names: read_text_names(&dir.join("batches.meta.txt"), 10)?,
        train: concat(train),
        test: read_binary_batch(&dir.join("test_batch.bin"), 1, 0, 10)?,
        source: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pickle::Writer;

    fn batch_bytes(n: usize, label_key: &str, labels: &[i32]) -> Vec<u8> {
        let mut w = Writer::new();
        w.begin_dict();
        w.bytes(b"batch_label").bytes(b"test batch");
        w.bytes(label_key.as_bytes()).int_list(labels);
        let pixels: Vec<u8> = (0..n * IMAGE_BYTES).map(|i| (i % 251) as u8).collect();
        w.bytes(b"data").u8_array(&[n, IMAGE_BYTES], &pixels);
        w.end_dict();
        w.finish()
    }

    #[test]
    fn python_batch_reads_pixels_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train");
        std::fs::write(&path, batch_bytes(3, "fine_labels", &[5, 99, 0])).unwrap();
        let set = read_python_batch(&path, "fine_labels", 100).unwrap();
        assert_eq!(set.labels, vec![5, 99, 0]);
        assert_eq!(set.image(1)[0], (IMAGE_BYTES % 251) as u8);
        assert_eq!(set.pixels.len(), 3 * IMAGE_BYTES);
    }

    #[test]
    fn python_batch_errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test");
        std::fs::write(&path, batch_bytes(2, "fine_labels", &[5, 100])).unwrap();
        let err = read_python_batch(&path, "fine_labels", 100)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&path.display().to_string())
                && err.contains("label 100 of image 1 is out of range"),
            "{err}"
        );
        std::fs::write(&path, batch_bytes(2, "fine_labels", &[5])).unwrap();
        let err = read_python_batch(&path, "fine_labels", 100)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data has shape [2, 3072], expected [1, 3072]"),
            "{err}"
        );
        std::fs::write(&path, batch_bytes(2, "labels", &[5, 1])).unwrap();
        let err = read_python_batch(&path, "fine_labels", 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no fine_labels key"), "{err}");
        let bytes = batch_bytes(2, "fine_labels", &[5, 1]);
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = read_python_batch(&path, "fine_labels", 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = read_python_batch(&dir.path().join("nope"), "fine_labels", 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn binary_records_cifar100_and_cifar10() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.bin");
        let mut bytes = Vec::new();
        for (coarse, fine) in [(1u8, 42u8), (19, 99)] {
            bytes.extend([coarse, fine]);
            bytes.extend(std::iter::repeat_n(fine, IMAGE_BYTES));
        }
        std::fs::write(&path, &bytes).unwrap();
        let set = read_binary_batch(&path, 2, 1, 100).unwrap();
        assert_eq!(set.labels, vec![42, 99]);
        assert!(set.image(1).iter().all(|&p| p == 99));
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = read_binary_batch(&path, 2, 1, 100).unwrap_err().to_string();
        assert!(
            err.contains("is not a positive multiple of the 3074-byte record"),
            "{err}"
        );
        // CIFAR-10: one label byte, labels below 10
        std::fs::write(&path, [&[10u8][..], &[0; IMAGE_BYTES]].concat()).unwrap();
        assert!(read_binary_batch(&path, 1, 0, 10)
            .unwrap_err()
            .to_string()
            .contains("label 10 of image 0 is out of range (expected 0..10)"));
    }

    fn names_pickle(key: &str, names: &[&str]) -> Vec<u8> {
        let mut w = Writer::new();
        w.begin_dict();
        w.bytes(key.as_bytes()).bytes_list(names);
        w.end_dict();
        w.finish()
    }

    #[test]
    fn cifar10_python_folder_loads_all_five_batches() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5 {
            std::fs::write(
                dir.path().join(format!("data_batch_{i}")),
                batch_bytes(2, "labels", &[i - 1, 9]),
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("test_batch"),
            batch_bytes(1, "labels", &[3]),
        )
        .unwrap();
        let names = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ];
        std::fs::write(
            dir.path().join("batches.meta"),
            names_pickle("label_names", &names),
        )
        .unwrap();
        let found = crate::data::locate::load(DatasetKind::Cifar10, Some(dir.path())).unwrap();
        assert_eq!(found.train.labels, vec![0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(found.test.labels, vec![3]);
        assert_eq!(found.class_names[3], "cat");
    }

    #[test]
    fn cifar100_binary_folder_loads_fine_labels_and_names() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar-100-binary");
        std::fs::create_dir(&dir).unwrap();
        let record = |coarse: u8, fine: u8| [&[coarse, fine][..], &[fine; IMAGE_BYTES]].concat();
        std::fs::write(
            dir.join("train.bin"),
            [record(3, 17), record(4, 0)].concat(),
        )
        .unwrap();
        std::fs::write(dir.join("test.bin"), record(19, 99)).unwrap();
        let names: String = (0..100).map(|i| format!("class_{i}\n")).collect();
        std::fs::write(dir.join("fine_label_names.txt"), names).unwrap();
        let found = crate::data::locate::load(DatasetKind::Cifar100, Some(root.path())).unwrap();
        assert_eq!(found.train.labels, vec![17, 0]);
        assert_eq!(found.test.labels, vec![99]);
        assert_eq!(found.class_names[17], "class_17");
        assert!(found.test.image(0).iter().all(|&p| p == 99));
    }
}
