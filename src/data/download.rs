//! Downloading data sets: HTTP(S) with a progress bar, the published MD5, extraction into
//! a temporary folder and an atomic rename. An interrupted, truncated or corrupt download
//! leaves no half data set behind; leftovers of an interrupted run are removed by the next.

use super::{locate, DataError, DatasetKind};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One file to fetch and its published MD5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Where it is fetched from.
    pub url: String,
    /// The name it is saved under.
    pub file: String,
    /// Its MD5, lowercase hex.
    pub md5: String,
}

/// The official sources of `kind`.
pub fn official_sources(kind: DatasetKind) -> Vec<Source> {
    let one = |url: &str, md5: &str| {
        vec![Source {
            url: url.into(),
            file: url.rsplit('/').next().expect("url has a file").into(),
            md5: md5.into(),
        }]
    };
    let idx = |base: &str, md5s: [&str; 4]| {
        super::idx::FILES
            .iter()
            .zip(md5s)
            .map(|(f, m)| Source {
                url: format!("{base}/{f}.gz"),
                file: format!("{f}.gz"),
                md5: m.into(),
            })
            .collect()
    };
    match kind {
        DatasetKind::Cifar100 => one(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
        DatasetKind::Cifar10 => one(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        ),
        DatasetKind::Mnist => idx(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            [
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ],
        ),
        DatasetKind::FashionMnist => idx(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
            [
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ],
        ),
    }
}

/// Whether `kind` comes as one `.tar.gz` archive (the CIFAR sets) or as loose IDX files.
fn is_archive(kind: DatasetKind) -> bool {
    matches!(kind, DatasetKind::Cifar100 | DatasetKind::Cifar10)
}

/// The sources after `--url` / `--md5` overrides: for an archive, `url` is the archive's
/// address; for MNIST-style sets it is the folder holding the four `.gz` files. `md5`
/// replaces the published sums (comma-separated, one per file).
pub fn sources(
    kind: DatasetKind,
    url: Option<&str>,
    md5: Option<&str>,
) -> Result<Vec<Source>, DataError> {
    let mut sources = official_sources(kind);
    if let Some(url) = url {
        let url = url.trim_end_matches('/');
        for s in &mut sources {
            s.url = if is_archive(kind) {
                url.to_string()
            } else {
                format!("{url}/{}", s.file)
            };
        }
    }
    if let Some(md5) = md5 {
        let sums: Vec<&str> = md5.split(',').map(str::trim).collect();
        if sums.len() != sources.len()
            || sums
                .iter()
                .any(|s| s.len() != 32 || !s.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(DataError::Invalid(format!(
                "--md5 {md5:?}: expected {} hexadecimal MD5 sum(s) of 32 digits, comma-separated",
                sources.len()
            )));
        }
        for (s, m) in sources.iter_mut().zip(sums) {
            s.md5 = m.to_ascii_lowercase();
        }
    }
    Ok(sources)
}

/// What a download did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The data set was fetched and is now at this folder.
    Downloaded(PathBuf),
    /// It was already there; nothing was fetched.
    AlreadyPresent(PathBuf),
}

/// Prefix of the temporary folders a download works in, inside the target directory.
const STAGING_PREFIX: &str = ".scratchnet-download-";

/// Downloads `kind` into `dir/<folder>` unless it is there already.
pub fn download(
    kind: DatasetKind,
    dir: &Path,
    sources: &[Source],
    progress: bool,
) -> Result<Outcome, DataError> {
    let target = dir.join(locate::folder_name(kind));
    if target.is_dir() {
        return Ok(Outcome::AlreadyPresent(target));
    }
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    remove_stale_staging(dir, kind);
    let staging = dir.join(format!("{STAGING_PREFIX}{kind}-{}", std::process::id()));
    let result = fetch_into(kind, &staging, &target, sources, progress);
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| Outcome::Downloaded(target))
}

/// Removes what an interrupted earlier download of `kind` left behind.
fn remove_stale_staging(dir: &Path, kind: DatasetKind) {
    let prefix = format!("{STAGING_PREFIX}{kind}-");
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn fetch_into(
    kind: DatasetKind,
    staging: &Path,
    target: &Path,
    sources: &[Source],
    progress: bool,
) -> Result<(), DataError> {
    let files = staging.join("files");
    fs::create_dir_all(&files).map_err(|e| DataError::io(&files, e))?;
    for s in sources {
        fetch_file(s, &files.join(&s.file), progress)?;
    }
    let ready = if is_archive(kind) {
        let archive = files.join(&sources[0].file);
        let out = staging.join("extracted");
        extract_tar_gz(&archive, &out)?;
        let inner = out.join(locate::folder_name(kind));
        if !inner.is_dir() {
            return Err(DataError::format(
                &archive,
                format!("archive has no {} folder", locate::folder_name(kind)),
            ));
        }
        inner
    } else {
        files
    };
    fs::rename(&ready, target).map_err(|e| DataError::io(target, e))
}

/// Streams `source.url` into `dest`, checking the length the server announced and the MD5.
pub fn fetch_file(source: &Source, dest: &Path, progress: bool) -> Result<(), DataError> {
    let fail = |message: String| DataError::Download {
        url: source.url.clone(),
        message,
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let response = agent
        .get(&source.url)
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let expected_len: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.parse().ok());
    let bar = if progress {
        ProgressBar::new(expected_len.unwrap_or(0))
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(source.file.clone());
    let file = File::create(dest).map_err(|e| DataError::io(dest, e))?;
    let mut out = BufWriter::new(file);
    let mut reader = response.into_reader();
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(fail(format!("connection failed after {got} bytes: {e}"))),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(dest, e))?;
        got += n as u64;
        bar.set_position(got);
    }
    out.flush().map_err(|e| DataError::io(dest, e))?;
    bar.finish_and_clear();
    if let Some(len) = expected_len.filter(|&l| l != got) {
        return Err(fail(format!(
            "truncated: received {got} of {len} bytes; nothing was kept, run the command again"
        )));
    }
    let md5: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if md5 != source.md5 {
        return Err(fail(format!("checksum mismatch: MD5 {md5}, expected {}; the file is corrupt and was removed, run the command again", source.md5)));
    }
    Ok(())
}

/// Unpacks a `.tar.gz` into `out` (entries that would escape `out` are refused by `tar`).
pub fn extract_tar_gz(archive: &Path, out: &Path) -> Result<(), DataError> {
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    tar.unpack(out)
        .map_err(|e| DataError::format(archive, format!("cannot extract: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar100_uses_the_published_checksum() {
        let s = official_sources(DatasetKind::Cifar100);
        assert_eq!(s[0].md5, "eb9058c3a382ffc7106e4002c42a8d85");
        assert_eq!(s[0].file, "cifar-100-python.tar.gz");
        assert_eq!(official_sources(DatasetKind::Mnist).len(), 4);
    }

    #[test]
    fn overrides_replace_urls_and_sums() {
        let s = sources(DatasetKind::Mnist, Some("http://127.0.0.1:9/m/"), None).unwrap();
        assert_eq!(s[3].url, "http://127.0.0.1:9/m/t10k-labels-idx1-ubyte.gz");
        assert!(sources(DatasetKind::Cifar10, None, Some("abc"))
            .unwrap_err()
            .to_string()
            .contains("expected 1 hexadecimal MD5"));
        let s = sources(
            DatasetKind::Cifar10,
            Some("http://h/x.tgz"),
            Some("0123456789ABCDEF0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(
            (s[0].url.as_str(), s[0].md5.as_str()),
            ("http://h/x.tgz", "0123456789abcdef0123456789abcdef")
        );
    }
}
