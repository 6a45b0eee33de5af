//! `scratchnet download` against an HTTP server on loopback that the test starts itself:
//! a real HTTP round trip, with truncated and corrupt responses.

use md5::{Digest, Md5};
use scratchnet::data::download::{self, Outcome, Source};
use scratchnet::data::{locate, synth, DatasetKind};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

/// Serves `routes` (path → (announced length, body)) for at most `requests` requests.
fn serve(routes: Vec<(&'static str, usize, Vec<u8>)>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, len, body)) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(body);
                }
                None => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `.tar.gz` holding a small synthetic `cifar-100-python/`.
fn synthetic_archive() -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    let spec = synth::SynthSpec {
        num_classes: 3,
        train_per_class: 4,
        test_per_class: 2,
        seed: 5,
    };
    synth::write_synthetic_cifar100(src.path(), spec).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    builder
        .append_dir_all("cifar-100-python", src.path().join("cifar-100-python"))
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Nothing of the data set is left in `dir`: neither the folder nor a staging folder.
fn assert_clean(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn truncated_and_corrupt_downloads_leave_nothing_and_a_retry_recovers() {
    let archive = synthetic_archive();
    let sum = md5_hex(&archive);
    let mut corrupt = archive.clone();
    corrupt[archive.len() / 2] ^= 0xff;
    let half = archive[..archive.len() / 2].to_vec();
    let base = serve(
        vec![
            ("/truncated.tar.gz", archive.len(), half),
            ("/corrupt.tar.gz", corrupt.len(), corrupt),
            ("/good.tar.gz", archive.len(), archive.clone()),
        ],
        6,
    );
    let dir = tempfile::tempdir().unwrap();
    let source = |name: &str| {
        vec![Source {
            url: format!("{base}/{name}"),
            file: "cifar-100-python.tar.gz".into(),
            md5: sum.clone(),
        }]
    };

    let err = download::download(
        DatasetKind::Cifar100,
        dir.path(),
        &source("truncated.tar.gz"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("truncated.tar.gz")
            && (err.contains("truncated") || err.contains("connection failed")),
        "{err}"
    );
    assert_clean(dir.path());

    let err = download::download(
        DatasetKind::Cifar100,
        dir.path(),
        &source("corrupt.tar.gz"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("expected {sum}")) && err.contains("checksum mismatch"),
        "{err}"
    );
    assert_clean(dir.path());

    let err = download::download(
        DatasetKind::Cifar100,
        dir.path(),
        &source("missing.tar.gz"),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("404"), "{err}");
    assert_clean(dir.path());

    // An interrupted earlier run left a staging folder: it is cleared.
    std::fs::create_dir_all(dir.path().join(".scratchnet-download-cifar100-99999/files")).unwrap();
    let out = download::download(
        DatasetKind::Cifar100,
        dir.path(),
        &source("good.tar.gz"),
        false,
    )
    .unwrap();
    let folder = dir.path().join("cifar-100-python");
    assert_eq!(out, Outcome::Downloaded(folder.clone()));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["cifar-100-python"]);
    let d = locate::load(DatasetKind::Cifar100, Some(dir.path())).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (12, 6));

    let again = download::download(
        DatasetKind::Cifar100,
        dir.path(),
        &source("good.tar.gz"),
        false,
    )
    .unwrap();
    assert_eq!(again, Outcome::AlreadyPresent(folder));
}

#[test]
fn the_command_downloads_mnist_style_files_with_overridden_sums() {
    let idx = |dims: &[u32], data: &[u8]| {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend_from_slice(data);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&b).unwrap();
        e.finish().unwrap()
    };
    let files = [
        idx(&[2, 28, 28], &[9; 2 * 784]),
        idx(&[2], &[3, 4]),
        idx(&[1, 28, 28], &[1; 784]),
        idx(&[1], &[7]),
    ];
    let sums: Vec<String> = files.iter().map(|f| md5_hex(f)).collect();
    let routes = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    .iter()
    .zip(files)
    .map(|(name, body)| {
        (
            Box::leak(format!("/fm/{name}").into_boxed_str()) as &'static str,
            body.len(),
            body,
        )
    })
    .collect();
    let base = serve(routes, 4);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args(["download", "--dataset", "fashion-mnist", "--dir"])
        .arg(dir.path())
        .args(["--url", &format!("{base}/fm"), "--md5", &sums.join(",")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "downloading fashion-mnist from {base}/fm/train-images-idx3-ubyte.gz"
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fashion-mnist is ready in"));
    let d = locate::load(DatasetKind::FashionMnist, Some(dir.path())).unwrap();
    assert_eq!(d.train.labels, vec![3, 4]);
    assert_eq!(d.test.labels, vec![7]);
}

#[test]
fn bad_checksum_flag_is_refused_before_any_request() {
    let out = Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args([
            "download",
            "--dataset",
            "cifar10",
            "--md5",
            "xyz",
            "--dir",
            "/nonexistent/never",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 1 hexadecimal MD5 sum(s)"));
}
