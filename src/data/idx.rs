//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! Header: two zero bytes, a type byte (`0x08` = unsigned byte), the number of dimensions,
//! then each dimension as a big-endian `u32`; the data follow, row-major.

use super::{read_file, DataError, Dataset, DatasetKind, ImageSet};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest decompressed IDX file accepted (the MNIST training images are 47 MB).
const MAX_DECOMPRESSED: u64 = 512 << 20;

/// Reads an IDX file of unsigned bytes: its dimensions and its data.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let raw = read_file(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("gzip data is corrupt: {e}")))?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(DataError::format(
                path,
                format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
            ));
        }
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|m| DataError::format(path, m))
}

/// Parses IDX bytes (already decompressed).
pub fn parse_idx(bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), String> {
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "magic number {:02x}{:02x}{:02x}{:02x} does not start with 0000 (not an IDX file)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "data type 0x{:02x} is not supported (expected 0x08, unsigned bytes)",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(format!(
            "header declares {ndim} dimensions but the file has {} bytes",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let actual = bytes.len() - header;
    if expected != Some(actual) {
        return Err(format!(
            "dimensions {dims:?} need {} data bytes but the file has {actual}",
            expected.map_or("too many".into(), |e| e.to_string())
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// `name` or `name.gz` in `dir`, whichever exists (raw first).
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// File names of the four IDX files: train images, train labels, test images, test labels.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Fashion-MNIST's class names.
pub const FASHION_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn read_pair(dir: &Path, images: &str, labels: &str) -> Result<ImageSet, DataError> {
    let missing = |name: &str| DataError::format(&dir.join(name), "missing (neither raw nor .gz)");
    let image_path = find(dir, images).ok_or_else(|| missing(images))?;
    let label_path = find(dir, labels).ok_or_else(|| missing(labels))?;
    let (idims, pixels) = read_idx(&image_path)?;
    let (ldims, labels) = read_idx(&label_path)?;
    let [n, rows, cols] = idims[..] else {
        return Err(DataError::format(
            &image_path,
            format!("image dimensions {idims:?}, expected [n, rows, cols]"),
        ));
    };
    if ldims != [n] {
        return Err(DataError::format(
            &label_path,
            format!(
                "label dimensions {ldims:?}, expected [{n}] to match {}",
                image_path.display()
            ),
        ));
    }
    ImageSet::new(
        pixels,
        labels.into_iter().map(usize::from).collect(),
        (1, rows, cols),
        10,
        &label_path,
    )
}

/// Loads MNIST or Fashion-MNIST from a folder holding the four IDX files.
pub fn load(dir: &Path, kind: DatasetKind) -> Result<Dataset, DataError> {
    let class_names = match kind {
        DatasetKind::FashionMnist => FASHION_NAMES.iter().map(|s| s.to_string()).collect(),
        _ => (0..10).map(|d| d.to_string()).collect(),
    };
    Ok(Dataset {
        kind,
        train: read_pair(dir, FILES[0], FILES[1])?,
        test: read_pair(dir, FILES[2], FILES[3])?,
        class_names,
        source: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn parses_headers_and_data() {
        let (dims, data) =
            parse_idx(&idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])).unwrap();
        assert_eq!(dims, vec![2, 2, 3]);
        assert_eq!(data[11], 12);
    }

    #[test]
    fn bad_headers_are_explained() {
        assert!(parse_idx(&[0, 0]).unwrap_err().contains("too short"));
        assert!(parse_idx(&[1, 2, 8, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("magic number 01020801"));
        assert!(parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0])
            .unwrap_err()
            .contains("data type 0x0d"));
        assert!(parse_idx(&[0, 0, 8, 3, 0, 0])
            .unwrap_err()
            .contains("declares 3 dimensions"));
        assert!(parse_idx(&idx(&[2, 3], &[0; 5]))
            .unwrap_err()
            .contains("need 6 data bytes but the file has 5"));
        assert!(parse_idx(&idx(&[u32::MAX, u32::MAX, u32::MAX], &[]))
            .unwrap_err()
            .contains("too many"));
    }

    #[test]
    fn loads_a_gzip_folder_and_checks_counts() {
        let dir = tempfile::tempdir().unwrap();
        let gz = |name: &str, bytes: Vec<u8>| {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(&bytes).unwrap();
            std::fs::write(dir.path().join(format!("{name}.gz")), e.finish().unwrap()).unwrap();
        };
        gz(FILES[0], idx(&[3, 2, 2], &[7; 12]));
        gz(FILES[1], idx(&[3], &[1, 2, 9]));
        gz(FILES[2], idx(&[1, 2, 2], &[0; 4]));
        std::fs::write(dir.path().join(FILES[3]), idx(&[1], &[4])).unwrap(); // raw works too
        let d = load(dir.path(), DatasetKind::FashionMnist).unwrap();
        assert_eq!(d.train.labels, vec![1, 2, 9]);
        assert_eq!(d.train.shape, (1, 2, 2));
        assert_eq!(d.test.labels, vec![4]);
        assert_eq!(d.class_names[9], "Ankle boot");
        gz(FILES[1], idx(&[2], &[1, 2]));
        let err = load(dir.path(), DatasetKind::Mnist)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label dimensions [2], expected [3]"), "{err}");
        gz(FILES[1], idx(&[3], &[1, 2, 10]));
        assert!(load(dir.path(), DatasetKind::Mnist)
            .unwrap_err()
            .to_string()
            .contains("label 10 of image 2 is out of range"));
        std::fs::write(
            dir.path().join(format!("{}.gz", FILES[0])),
            [0x1f, 0x8b, 1, 2, 3],
        )
        .unwrap();
        assert!(load(dir.path(), DatasetKind::Mnist)
            .unwrap_err()
            .to_string()
            .contains("gzip data is corrupt"));
    }
}
