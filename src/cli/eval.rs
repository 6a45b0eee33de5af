//! `scratchnet eval` and `scratchnet predict`: use a trained `model.safetensors`.

use super::train::{confusion, evaluate, ClassInfo};
use anyhow::{bail, Context, Result};
use scratchnet::checkpoint;
use scratchnet::data::{locate, DatasetKind, ImageSet, Scaling};
use scratchnet::models::Arch;
use scratchnet::rand::SeedableRng;
use scratchnet::Sequential;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A trained model with what its metadata says about its inputs and outputs.
pub struct Loaded {
    /// The network with its trained weights.
    pub model: Sequential<f32>,
    /// The data set it was trained on.
    pub dataset: DatasetKind,
    /// Its classes, by output index.
    pub classes: Vec<ClassInfo>,
    /// `(channels, rows, cols)` of its inputs.
    pub input: (usize, usize, usize),
    /// How pixels are scaled.
    pub scaling: Scaling,
}

/// Reads a checkpoint written by `scratchnet train`.
pub fn load_model(path: &Path) -> Result<Loaded> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read the model {}", path.display()))?;
    let meta = checkpoint::metadata(path, &bytes)?;
    let field = |key: &str| {
        meta.get(key).with_context(|| {
            format!(
                "{}: metadata has no {key:?} (not a scratchnet model?)",
                path.display()
            )
        })
    };
    let arch = Arch::parse(field("arch")?)?;
    let dataset = DatasetKind::from_name(field("dataset")?)
        .with_context(|| format!("{}: unknown dataset {:?}", path.display(), meta["dataset"]))?;
    let classes: Vec<ClassInfo> = serde_json::from_str(field("classes")?)
        .with_context(|| format!("{}: unreadable classes", path.display()))?;
    let shape: [usize; 3] = serde_json::from_str(field("input_shape")?)
        .with_context(|| format!("{}: unreadable input_shape", path.display()))?;
    let scaling: Scaling = serde_json::from_str(field("scaling")?)
        .with_context(|| format!("{}: unreadable scaling", path.display()))?;
    let input = (shape[0], shape[1], shape[2]);
    let mut model = arch.build(
        input,
        classes.len(),
        &mut scratchnet::rand_chacha::ChaCha8Rng::seed_from_u64(0),
    )?;
    checkpoint::load_weights(path, &bytes, &mut model)?;
    Ok(Loaded {
        model,
        dataset,
        classes,
        input,
        scaling,
    })
}

/// Options of `scratchnet eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// The trained model.
    #[arg(long, default_value = "results/model.safetensors")]
    model: PathBuf,
    /// Folder holding the data set (else the usual places).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Test accuracy, per-class accuracy and the confusion matrix with class names.
pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    let mut m = load_model(&args.model)?;
    let data = locate::load(m.dataset, args.data.as_deref())?;
    for c in &m.classes {
        if data.class_names.get(c.index) != Some(&c.name) {
            bail!(
                "the model's class {} ({}) is not in {} as found in {}",
                c.index,
                c.name,
                m.dataset,
                data.source.display()
            );
        }
    }
    let indices: Vec<usize> = m.classes.iter().map(|c| c.index).collect();
    let test: ImageSet = data.test.select_classes(&indices);
    if test.shape != m.input {
        bail!(
            "the model expects {:?} images but {} has {:?}",
            m.input,
            data.source.display(),
            test.shape
        );
    }
    let e = evaluate(&mut m.model, &test, &m.scaling);
    let k = m.classes.len();
    let matrix = confusion(&test.labels, &e.predictions, k);
    let correct: usize = (0..k).map(|c| matrix[c][c]).sum();
    println!(
        "model {} on {} test images of {} ({})",
        args.model.display(),
        test.len(),
        m.dataset,
        data.source.display()
    );
    println!(
        "test accuracy {:.4} ({correct}/{} images), loss {:.4}",
        e.accuracy,
        test.len(),
        e.loss
    );
    println!("per class:");
    let width = m
        .classes
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    for (c, info) in m.classes.iter().enumerate() {
        let total: usize = matrix[c].iter().sum();
        let acc = if total > 0 {
            matrix[c][c] as f64 / total as f64
        } else {
            0.0
        };
        println!(
            "  {:<width$}  {:.4} ({}/{total})",
            info.name, acc, matrix[c][c]
        );
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    print!("  {:<width$}", "");
    for c in 0..k {
        print!(" {c:>5}");
    }
    println!();
    for (c, row) in matrix.iter().enumerate() {
        print!(
            "  {:<width$}",
            format!("{c} {}", m.classes[c].name)
                .chars()
                .take(width)
                .collect::<String>()
        );
        for v in row {
            print!(" {v:>5}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `scratchnet predict`.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// The trained model.
    #[arg(long, default_value = "results/model.safetensors")]
    model: PathBuf,
    /// PNG or JPEG images; each is resized to the network's input size.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Reads an image as `(c, rows, cols)` u8 pixels in CHW order.
pub fn read_image(path: &Path, (c, rows, cols): (usize, usize, usize)) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| {
            format!(
                "{}: not a PNG or JPEG image this program can decode",
                path.display()
            )
        })?;
    let img = img.resize_exact(
        cols as u32,
        rows as u32,
        image::imageops::FilterType::Triangle,
    );
    let plane = rows * cols;
    Ok(match c {
        1 => img.to_luma8().into_raw(),
        3 => {
            let rgb = img.to_rgb8().into_raw();
            let mut chw = vec![0u8; 3 * plane];
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                for ch in 0..3 {
                    chw[ch * plane + i] = px[ch];
                }
            }
            chw
        }
        _ => {
            bail!("the model expects {c}-channel images; only 1 (grey) or 3 (colour) are supported")
        }
    })
}

/// Prints the top 3 classes with probabilities for each image.
pub fn run_predict(args: PredictArgs) -> Result<ExitCode> {
    let mut m = load_model(&args.model)?;
    for path in &args.images {
        let pixels = read_image(path, m.input)?;
        let set = ImageSet {
            pixels,
            labels: vec![0],
            shape: m.input,
        };
        let x = set.batch::<f32>(&[0], &m.scaling);
        let p = m.model.predict_proba(x.view().into_dyn());
        let mut ranked: Vec<(usize, f32)> = p.row(0).iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = ranked
            .iter()
            .take(3)
            .map(|&(c, prob)| format!("{} {:.3}", m.classes[c].name, prob))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
