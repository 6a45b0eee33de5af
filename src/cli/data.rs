//! `scratchnet download`, `scratchnet classes` and `scratchnet synth`.

use anyhow::Context;
use scratchnet::data::{cifar, download, locate, subset, synth, DatasetKind};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Parses a data-set name for clap.
pub fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    DatasetKind::from_name(s).ok_or_else(|| {
        format!(
            "unknown data set {s:?}; expected one of: {}",
            DatasetKind::ALL.map(|k| k.name()).join(", ")
        )
    })
}

/// Options of `scratchnet download`.
#[derive(clap::Args)]
pub struct DownloadArgs {
    /// Which data set: cifar100, cifar10, mnist or fashion-mnist.
    #[arg(long, default_value = "cifar100", value_parser = parse_dataset)]
    dataset: DatasetKind,
    /// Folder to put it in [default: $SCRATCHNET_DATA, else the user's cache directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Fetch from this address instead (the archive, or for MNIST-style sets the folder of the four .gz files).
    #[arg(long)]
    url: Option<String>,
    /// Expected MD5 of what --url serves (comma-separated, one per file) instead of the published sums.
    #[arg(long)]
    md5: Option<String>,
}

/// Downloads a data set (see [`download::download`]).
pub fn run_download(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(locate::default_data_dir);
    let sources = download::sources(args.dataset, args.url.as_deref(), args.md5.as_deref())?;
    fetch(args.dataset, &dir, &sources)?;
    Ok(ExitCode::SUCCESS)
}

/// Downloads `kind` into `dir`, saying what, from where and to where; returns its folder.
pub fn fetch(
    kind: DatasetKind,
    dir: &Path,
    sources: &[download::Source],
) -> anyhow::Result<PathBuf> {
    let to = dir.join(locate::folder_name(kind));
    for s in sources {
        eprintln!("downloading {kind} from {} (MD5 {})", s.url, s.md5);
    }
    eprintln!("into {}", to.display());
    match download::download(kind, dir, sources, std::io::stderr().is_terminal())? {
        download::Outcome::Downloaded(p) => {
            println!("{kind} is ready in {}", p.display());
            Ok(p)
        }
        download::Outcome::AlreadyPresent(p) => {
            println!("{kind} is already in {}; nothing downloaded", p.display());
            Ok(p)
        }
    }
}

/// Options of `scratchnet classes`.
#[derive(clap::Args)]
pub struct ClassesArgs {
    /// The seed (the lab uses the student ID), 0 to 4294967295.
    #[arg(long)]
    seed: u64,
    /// How many classes to draw.
    #[arg(long, default_value_t = 3)]
    num_classes: usize,
    /// Folder with cifar-100-python/ (for the class names).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print JSON: {"seed", "draw", "classes": [{"index", "name"}]}.
    #[arg(long)]
    json: bool,
}

/// The CIFAR-100 class names, if a `meta` file can be found.
pub fn cifar100_names(data: Option<&Path>) -> Option<Vec<String>> {
    locate::candidates(DatasetKind::Cifar100, data)
        .iter()
        .find(|d| d.join("meta").is_file())
        .and_then(|d| cifar::cifar100_names(d).ok())
}

/// Prints the lab's seeded class choice.
pub fn run_classes(args: ClassesArgs) -> anyhow::Result<ExitCode> {
    let choice = subset::choose_classes(args.seed, args.num_classes, 100)?;
    let names = cifar100_names(args.data.as_deref());
    let name = |i: usize| names.as_ref().map(|n| n[i].clone());
    if args.json {
        let classes: Vec<serde_json::Value> = choice
            .classes
            .iter()
            .map(|&i| serde_json::json!({"index": i, "name": name(i)}))
            .collect();
        let out = serde_json::json!({"seed": choice.seed, "draw": choice.draw, "classes": classes});
        println!("{}", serde_json::to_string(&out).context("encoding JSON")?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "seed {}: np.random.choice(np.arange(0, 100), {}) draws {:?}",
        choice.seed, args.num_classes, choice.draw
    );
    if choice.has_repeats() {
        println!(
            "the draw repeats a class: using the {} distinct classes",
            choice.classes.len()
        );
    }
    for (label, &i) in choice.classes.iter().enumerate() {
        println!(
            "label {label}: class {i:>2} {}",
            name(i).unwrap_or_default()
        );
    }
    if names.is_none() {
        println!(
            "(class names need CIFAR-100's meta file: pass --data DIR, or run scratchnet download)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `scratchnet synth`.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// Folder to write cifar-100-python/ into.
    #[arg(long)]
    out: PathBuf,
    /// Number of classes (1 to 100).
    #[arg(long, default_value_t = 100)]
    num_classes: usize,
    /// Training images per class.
    #[arg(long, default_value_t = 50)]
    train_per_class: usize,
    /// Test images per class.
    #[arg(long, default_value_t = 10)]
    test_per_class: usize,
    /// Seed of the patterns and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Writes a synthetic data set in the CIFAR-100 python layout.
pub fn run_synth(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let spec = synth::SynthSpec {
        num_classes: args.num_classes,
        train_per_class: args.train_per_class,
        test_per_class: args.test_per_class,
        seed: args.seed,
    };
    let dir = synth::write_synthetic_cifar100(&args.out, spec)?;
    println!(
        "wrote a SYNTHETIC data set (not real CIFAR-100: coloured wave patterns plus noise) to {}: {} classes, {} training and {} test images",
        dir.display(),
        spec.num_classes,
        spec.num_classes * spec.train_per_class,
        spec.num_classes * spec.test_per_class
    );
    println!(
        "train on it with: scratchnet train --data {}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
