//! Where data sets are looked for, in order: `--data DIR`, `$SCRATCHNET_DATA`, the lab's
//! convention (`./cifar-100-python`, `../cifar-100-python`), the user's cache directory,
//! and for Fashion-MNIST Debian's `/usr/share/datasets/fashion-mnist`
//! (package `dataset-fashion-mnist`).

use super::{cifar, idx, DataError, Dataset, DatasetKind};
use std::path::{Path, PathBuf};

/// The folder a data set lives in, as its archive unpacks (or, for MNIST, as we name it).
pub fn folder_name(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Cifar100 => "cifar-100-python",
        DatasetKind::Cifar10 => "cifar-10-batches-py",
        DatasetKind::Mnist => "mnist",
        DatasetKind::FashionMnist => "fashion-mnist",
    }
}

/// The folder of the binary version, for the CIFAR sets.
fn binary_folder_name(kind: DatasetKind) -> Option<&'static str> {
    match kind {
        DatasetKind::Cifar100 => Some("cifar-100-binary"),
        DatasetKind::Cifar10 => Some("cifar-10-batches-bin"),
        _ => None,
    }
}

/// Where `scratchnet download` puts data by default: `$SCRATCHNET_DATA`, else the user's
/// cache directory (`~/.cache/scratchnet` on Linux), else `./data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SCRATCHNET_DATA").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .map(|d| d.join("scratchnet"))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// The base folders searched, in order.
pub fn search_bases(kind: DatasetKind, data: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = data {
        return vec![dir.to_path_buf()];
    }
    let mut bases = Vec::new();
    if let Some(dir) = std::env::var_os("SCRATCHNET_DATA").filter(|v| !v.is_empty()) {
        bases.push(PathBuf::from(dir));
    }
    bases.push(PathBuf::from("."));
    bases.push(PathBuf::from(".."));
    if let Some(cache) = dirs::cache_dir() {
        bases.push(cache.join("scratchnet"));
    }
    if kind == DatasetKind::FashionMnist {
        bases.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
    }
    bases
}

/// Reads a data set from a folder.
type Loader = fn(&Path) -> Result<Dataset, DataError>;

/// A loader for `dir` if it holds `kind` in a format we read.
fn detect(kind: DatasetKind, dir: &Path) -> Option<Loader> {
    let has = |f: &str| dir.join(f).is_file();
    match kind {
        DatasetKind::Cifar100 if has("train") && has("test") => Some(cifar::load_cifar100_python),
        DatasetKind::Cifar100 if has("train.bin") => Some(cifar::load_cifar100_binary),
        DatasetKind::Cifar10 if has("data_batch_1") => Some(cifar::load_cifar10_python),
        DatasetKind::Cifar10 if has("data_batch_1.bin") => Some(cifar::load_cifar10_binary),
        DatasetKind::Mnist if idx::find(dir, idx::FILES[0]).is_some() => {
            Some(|d| idx::load(d, DatasetKind::Mnist))
        }
        DatasetKind::FashionMnist if idx::find(dir, idx::FILES[0]).is_some() => {
            Some(|d| idx::load(d, DatasetKind::FashionMnist))
        }
        _ => None,
    }
}

/// Every folder that is looked at for `kind` (each base itself, then its data-set folders).
pub fn candidates(kind: DatasetKind, data: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in search_bases(kind, data) {
        out.push(base.join(folder_name(kind)));
        if let Some(bin) = binary_folder_name(kind) {
            out.push(base.join(bin));
        }
        out.push(base);
    }
    out
}

/// The first folder that holds `kind`, or every place looked at.
pub fn find(kind: DatasetKind, data: Option<&Path>) -> Result<PathBuf, DataError> {
    let looked = candidates(kind, data);
    looked
        .iter()
        .find(|dir| detect(kind, dir).is_some())
        .cloned()
        .ok_or(DataError::NotFound {
            dataset: kind,
            looked,
        })
}

/// Finds and loads `kind`. Errors in the files found are reported, not skipped.
pub fn load(kind: DatasetKind, data: Option<&Path>) -> Result<Dataset, DataError> {
    let dir = find(kind, data)?;
    let loader = detect(kind, &dir).expect("find returned a detected folder");
    loader(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_lists_every_place_and_the_download_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(DatasetKind::Cifar100, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&dir.path().join("cifar-100-python").display().to_string()),
            "{err}"
        );
        assert!(
            err.contains(&dir.path().join("cifar-100-binary").display().to_string()),
            "{err}"
        );
        assert!(
            err.ends_with("Download it with: scratchnet download --dataset cifar100"),
            "{err}"
        );
    }

    #[test]
    fn without_data_flag_the_lab_convention_and_debian_are_searched() {
        let bases = search_bases(DatasetKind::FashionMnist, None);
        assert!(bases.contains(&PathBuf::from(".")) && bases.contains(&PathBuf::from("..")));
        assert_eq!(
            bases.last().unwrap(),
            Path::new("/usr/share/datasets/fashion-mnist")
        );
        assert!(!search_bases(DatasetKind::Cifar100, None)
            .iter()
            .any(|b| b.starts_with("/usr/share")));
    }
}
