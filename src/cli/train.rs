//! `scratchnet train`: the lab experiment in one command.

use super::data::{fetch, parse_dataset};
use super::plots::{self, LossPoint};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use scratchnet::checkpoint;
use scratchnet::data::{
    download, locate, subset, DataError, Dataset, DatasetKind, ImageSet, Scaling,
};
use scratchnet::models::{Arch, LAB_ARCH};
use scratchnet::rand::seq::SliceRandom;
use scratchnet::rand::SeedableRng;
use scratchnet::rand_chacha::ChaCha8Rng;
use scratchnet::{one_hot, Sequential};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Options of `scratchnet train`. Defaults reproduce the lab.
#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Folder holding the data set (else $SCRATCHNET_DATA, ./, ../, the cache directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data set: cifar100, cifar10, mnist or fashion-mnist.
    #[arg(long, default_value = "cifar100", value_parser = parse_dataset)]
    pub dataset: DatasetKind,
    /// Seed: picks the classes as the lab does (np.random.seed), initialises and shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Explicit classes, by name or index (comma-separated), or `all`, instead of the seeded draw.
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// How many classes the seed draws [default: 3 for cifar100, all for the others].
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Passes over the training set.
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub lr: f32,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Fraction of each training class held out for validation (0 turns validation off).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Folder for the plots, metrics and checkpoints.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Worker threads [default: all cores]; results are identical for any count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Network, as a comma-separated layer list (see `scratchnet::models`).
    #[arg(long, default_value = LAB_ARCH)]
    pub arch: String,
    /// Never download: fail if the data set is not found.
    #[arg(long)]
    pub offline: bool,
    /// Continue the interrupted run whose outputs are in this folder (its settings are used).
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Testing aid: behave as if Ctrl-C was pressed after this many batches.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub stop_after_batches: Option<usize>,
}

impl TrainArgs {
    /// Refuses nonsense settings before any work, saying what is allowed.
    fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs 0: expected a whole number of at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size 0: expected a whole number of at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!(
                "--lr {}: expected a positive number (the lab uses 0.1)",
                self.lr
            );
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!("--val-fraction {}: expected a number from 0 (no validation) up to, not including, 1", self.val_fraction);
        }
        if self.threads == Some(0) {
            bail!("--threads 0: expected at least 1");
        }
        if self.num_classes == Some(0) {
            bail!("--num-classes 0: expected at least 1");
        }
        if self.classes.is_some() && self.num_classes.is_some() {
            bail!("--classes and --num-classes exclude each other: name the classes, or let the seed draw them");
        }
        Arch::parse(&self.arch)?;
        Ok(())
    }
}

/// One row of the per-epoch table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub train_loss: f64,
    /// Loss on the validation hold-out (null when validation is off).
    pub val_loss: Option<f64>,
    /// Accuracy on the validation hold-out.
    pub val_accuracy: Option<f64>,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
}

/// A chosen class: its index in the data set and its name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassInfo {
    /// Index in the full data set.
    pub index: usize,
    /// Name, from the data set's metadata.
    pub name: String,
}

/// Where an interrupted run stopped; stored in `checkpoint.safetensors`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainState {
    config: TrainArgs,
    /// Epoch in progress (0-based) and the next batch in it.
    epoch: usize,
    next_batch: usize,
    /// Σ batch loss · batch size so far in this epoch.
    loss_sum: f64,
    epoch_seconds: f64,
    history: Vec<EpochRecord>,
    train_seconds: f64,
}

/// Loads the data set, downloading it unless `--offline`.
fn load_data(args: &TrainArgs) -> Result<Dataset> {
    match locate::load(args.dataset, args.data.as_deref()) {
        Ok(d) => Ok(d),
        Err(DataError::NotFound { .. }) if !args.offline => {
            let dir = args.data.clone().unwrap_or_else(locate::default_data_dir);
            eprintln!(
                "{} not found locally: downloading it (use --offline to fail instead)",
                args.dataset
            );
            fetch(
                args.dataset,
                &dir,
                &download::official_sources(args.dataset),
            )?;
            Ok(locate::load(args.dataset, Some(&dir))?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Picks the classes: explicit, or the lab's seeded numpy draw. Prints the choice.
fn choose_classes(args: &TrainArgs, data: &Dataset) -> Result<Vec<usize>> {
    let total = data.class_names.len();
    if let Some(items) = &args.classes {
        if items.len() == 1 && items[0] == "all" {
            return Ok((0..total).collect());
        }
        return Ok(Dataset::resolve_classes(&data.class_names, items)?);
    }
    let k = args
        .num_classes
        .unwrap_or(if args.dataset == DatasetKind::Cifar100 {
            3
        } else {
            total
        });
    if k > total {
        bail!(
            "--num-classes {k}: {} has only {total} classes",
            args.dataset
        );
    }
    if k == total && args.num_classes.is_none() {
        return Ok((0..total).collect());
    }
    let choice = subset::choose_classes(args.seed, k, total)?;
    println!(
        "seed {}: np.random.choice(np.arange(0, {total}), {k}) draws {:?}",
        args.seed, choice.draw
    );
    if choice.has_repeats() {
        println!(
            "the draw repeats a class: training on the {} distinct classes",
            choice.classes.len()
        );
    }
    Ok(choice.classes)
}

/// The data after class selection and the validation split.
struct Prepared {
    classes: Vec<ClassInfo>,
    train: ImageSet,
    val: ImageSet,
    test: ImageSet,
    scaling: Scaling,
    source: PathBuf,
}

fn prepare(args: &TrainArgs) -> Result<Prepared> {
    let mut subset = load_data(args)?;
    let chosen = choose_classes(args, &subset)?;
    let classes: Vec<ClassInfo> = chosen
        .iter()
        .map(|&i| ClassInfo {
            index: i,
            name: subset.class_names[i].clone(),
        })
        .collect();
    // In place: the full CIFAR-100 training set is 150 MB; never hold two copies of it.
    subset.retain_classes(&chosen);
    let mut train = std::mem::replace(
        &mut subset.train,
        ImageSet {
            pixels: Vec::new(),
            labels: Vec::new(),
            shape: subset.test.shape,
        },
    );
    let val = train.split_off_validation(args.val_fraction, args.seed);
    if train.is_empty() {
        bail!(
            "no training images for classes {:?} in {}",
            classes.iter().map(|c| c.index).collect::<Vec<_>>(),
            subset.source.display()
        );
    }
    for (label, c) in classes.iter().enumerate() {
        if !train.labels.contains(&label) {
            bail!(
                "class {} ({}) has no training images in {}",
                c.index,
                c.name,
                subset.source.display()
            );
        }
    }
    Ok(Prepared {
        classes,
        train,
        val,
        test: subset.test,
        scaling: Scaling::Lab,
        source: subset.source,
    })
}

/// Metadata stored with every checkpoint: enough to rebuild the network and its inputs.
fn model_metadata(args: &TrainArgs, p: &Prepared) -> HashMap<String, String> {
    let arch = Arch::parse(&args.arch).expect("validated");
    HashMap::from([
        ("format".into(), "scratchnet".into()),
        (
            "scratchnet_version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
        ("arch".into(), arch.to_string()),
        ("dataset".into(), args.dataset.name().into()),
        (
            "input_shape".into(),
            serde_json::to_string(&[p.train.shape.0, p.train.shape.1, p.train.shape.2])
                .expect("json"),
        ),
        (
            "classes".into(),
            serde_json::to_string(&p.classes).expect("json"),
        ),
        (
            "scaling".into(),
            serde_json::to_string(&p.scaling).expect("json"),
        ),
        (
            "pytorch".into(),
            arch.pytorch(p.train.shape, p.classes.len()),
        ),
    ])
}

/// Confusion matrix: `m[true][predicted]`.
pub fn confusion(labels: &[usize], predictions: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; k]; k];
    for (&t, &p) in labels.iter().zip(predictions) {
        m[t][p] += 1;
    }
    m
}

/// Mean loss and accuracy of the model on a whole set, converting pixels to floats one
/// batch at a time.
pub fn evaluate(
    model: &mut Sequential<f32>,
    set: &ImageSet,
    scaling: &Scaling,
) -> scratchnet::Evaluation {
    let mut loss = 0.0;
    let mut predictions = Vec::with_capacity(set.len());
    let all: Vec<usize> = (0..set.len()).collect();
    for idx in all.chunks(256) {
        let x = set.batch::<f32>(idx, scaling);
        let labels: Vec<usize> = idx.iter().map(|&i| set.labels[i]).collect();
        let e = model.evaluate(x.view().into_dyn(), &labels);
        loss += e.loss * idx.len() as f64;
        predictions.extend(e.predictions);
    }
    let n = set.len().max(1) as f64;
    let correct = predictions
        .iter()
        .zip(&set.labels)
        .filter(|(p, l)| p == l)
        .count();
    scratchnet::Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
        predictions,
    }
}

/// Writes `metrics.json`, `metrics.csv` and `loss_plot.png` for the epochs so far.
fn write_reports(
    out: &Path,
    args: &TrainArgs,
    p: &Prepared,
    history: &[EpochRecord],
    test: Option<(&scratchnet::Evaluation, usize)>,
    train_seconds: f64,
) -> Result<()> {
    let (test_accuracy, matrix) = match test {
        Some((e, k)) => (
            Some(e.accuracy),
            Some(confusion(&p.test.labels, &e.predictions, k)),
        ),
        None => (None, None),
    };
    let metrics = serde_json::json!({
        "config": args,
        "classes": p.classes,
        "epochs": history,
        "test_accuracy": test_accuracy,
        "confusion_matrix": matrix,
        "train_seconds": train_seconds,
    });
    checkpoint::write_atomic(
        &out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?.as_bytes(),
    )?;
    let mut csv = String::from("epoch,train_loss,val_loss,val_accuracy,seconds\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    for r in history {
        csv.push_str(&format!(
            "{},{},{},{},{:.3}\n",
            r.epoch,
            r.train_loss,
            opt(r.val_loss),
            opt(r.val_accuracy),
            r.seconds
        ));
    }
    checkpoint::write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let points: Vec<LossPoint> = history
        .iter()
        .map(|r| LossPoint {
            epoch: r.epoch,
            train: r.train_loss,
            val: r.val_loss,
        })
        .collect();
    let synthetic = if p.classes.iter().all(|c| c.name.starts_with("synthetic_")) {
        " (synthetic data)"
    } else {
        ""
    };
    let title = match test_accuracy {
        Some(a) => format!(
            "{}{synthetic} — test accuracy {:.1}%",
            args.dataset,
            a * 100.0
        ),
        None => format!(
            "{}{synthetic} — training in progress ({} of {} epochs)",
            args.dataset,
            history.len(),
            args.epochs
        ),
    };
    plots::loss_plot(&out.join("loss_plot.png"), &points, &title)
}

fn print_header(args: &TrainArgs, p: &Prepared, model: &Sequential<f32>) {
    println!("data: {} from {}", args.dataset, p.source.display());
    println!("classes:");
    for (label, c) in p.classes.iter().enumerate() {
        println!("  label {label}: class {:>3} {}", c.index, c.name);
    }
    let (c, r, q) = p.train.shape;
    println!(
        "images: {} training, {} validation, {} test ({c}×{r}×{q}, scaled x/255 − 0.5)",
        p.train.len(),
        p.val.len(),
        p.test.len()
    );
    println!("network: {} ({} parameters)", args.arch, model.num_params());
    let shapes = model.shapes(&[1, c, r, q]).expect("built for this shape");
    for (layer, shape) in model.layers().iter().zip(shapes) {
        let params = layer.num_params();
        let params = if params > 0 {
            format!("{params} parameters")
        } else {
            String::new()
        };
        println!(
            "{}",
            format!(
                "  {:<24} → {:<16} {params}",
                layer.name(),
                format!("{:?}", &shape[1..])
            )
            .trim_end()
        );
    }
    println!(
        "training: {} epochs, batch {}, lr {}, {} thread(s), f32",
        args.epochs,
        args.batch_size,
        args.lr,
        rayon::current_num_threads()
    );
}

/// The seeded order of epoch `epoch`'s examples: a function of (seed, epoch) only, so a
/// resumed run shuffles exactly as an uninterrupted one.
fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Runs `scratchnet train`.
pub fn run(mut args: TrainArgs) -> Result<ExitCode> {
    let mut state = None;
    if let Some(dir) = args.resume.clone() {
        let path = dir.join("checkpoint.safetensors");
        let bytes = std::fs::read(&path).with_context(|| {
            format!("--resume {}: cannot read {}", dir.display(), path.display())
        })?;
        let meta = checkpoint::metadata(&path, &bytes)?;
        let s: TrainState = serde_json::from_str(meta.get("train_state").with_context(|| {
            format!(
                "{}: no training state (not a scratchnet training checkpoint)",
                path.display()
            )
        })?)
        .with_context(|| format!("{}: unreadable training state", path.display()))?;
        let stop = args.stop_after_batches;
        args = s.config.clone();
        args.out = dir.clone();
        args.stop_after_batches = stop;
        println!(
            "resuming {} at epoch {}, batch {}",
            dir.display(),
            s.epoch + 1,
            s.next_batch
        );
        state = Some((s, bytes, path));
    }
    args.validate()?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up the thread pool")?;
    }
    let p = prepare(&args)?;
    let arch = Arch::parse(&args.arch)?;
    let mut init_rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut model: Sequential<f32> = arch.build(p.train.shape, p.classes.len(), &mut init_rng)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    print_header(&args, &p, &model);

    let (
        mut start_epoch,
        mut start_batch,
        mut loss_sum,
        mut epoch_seconds,
        mut history,
        mut train_seconds,
    ) = (0, 0, 0.0, 0.0, Vec::new(), 0.0);
    if let Some((s, bytes, path)) = &state {
        checkpoint::load_weights(path, bytes, &mut model)?;
        (
            start_epoch,
            start_batch,
            loss_sum,
            epoch_seconds,
            history,
            train_seconds,
        ) = (
            s.epoch,
            s.next_batch,
            s.loss_sum,
            s.epoch_seconds,
            s.history.clone(),
            s.train_seconds,
        );
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let meta = model_metadata(&args, &p);
    let save_state = |model: &mut Sequential<f32>,
                      epoch,
                      next_batch,
                      loss_sum,
                      epoch_seconds,
                      history: &[EpochRecord],
                      train_seconds|
     -> Result<()> {
        let state = TrainState {
            config: args.clone(),
            epoch,
            next_batch,
            loss_sum,
            epoch_seconds,
            history: history.to_vec(),
            train_seconds,
        };
        let mut m = meta.clone();
        m.insert("train_state".into(), serde_json::to_string(&state)?);
        checkpoint::save(&args.out.join("checkpoint.safetensors"), model, m)?;
        Ok(())
    };

    let n = p.train.len();
    let k = p.classes.len();
    let batches = n.div_ceil(args.batch_size);
    let tty = std::io::stdout().is_terminal();
    let mut batches_run = 0usize;
    for epoch in start_epoch..args.epochs {
        let started = Instant::now();
        let order = epoch_order(args.seed, epoch, n);
        let bar = if tty {
            ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stdout())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, args.epochs));
        let first = if epoch == start_epoch { start_batch } else { 0 };
        if epoch != start_epoch {
            loss_sum = 0.0;
            epoch_seconds = 0.0;
        }
        bar.set_position(first as u64);
        let mut seen = 0usize;
        for (b, idx) in order.chunks(args.batch_size).enumerate().skip(first) {
            let x = p.train.batch::<f32>(idx, &p.scaling);
            let labels: Vec<usize> = idx.iter().map(|&i| p.train.labels[i]).collect();
            let y = one_hot::<f32>(&labels, k);
            let loss = model.train_batch(x.view().into_dyn(), y.view(), args.lr);
            let infinite = model.loss_layer().infinite_terms();
            if !loss.is_finite() || infinite > 0 {
                bar.abandon();
                let what = if loss.is_nan() {
                    "NaN".to_string()
                } else {
                    format!("infinite (the true class got probability 0 for {infinite} images)")
                };
                bail!(
                    "training diverged: the loss became {what} at epoch {}, batch {} of {batches}; try a smaller --lr (now {}). \
                     The last good checkpoint, if any, is {}",
                    epoch + 1,
                    b + 1,
                    args.lr,
                    args.out.join("checkpoint.safetensors").display()
                );
            }
            loss_sum += loss as f64 * idx.len() as f64;
            seen += idx.len();
            batches_run += 1;
            let elapsed = started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4}  {:.0} images/s",
                loss_sum / (b * args.batch_size + idx.len()) as f64,
                seen as f64 / elapsed.max(1e-9)
            ));
            bar.inc(1);
            let stop_now = interrupted.load(Ordering::SeqCst)
                || args.stop_after_batches.is_some_and(|s| batches_run >= s);
            if stop_now && b + 1 < batches {
                bar.abandon();
                let secs = epoch_seconds + started.elapsed().as_secs_f64();
                save_state(
                    &mut model,
                    epoch,
                    b + 1,
                    loss_sum,
                    secs,
                    &history,
                    train_seconds + started.elapsed().as_secs_f64(),
                )?;
                write_reports(&args.out, &args, &p, &history, None, train_seconds)?;
                println!("interrupted at epoch {}, batch {}: checkpoint written; continue with --resume {}", epoch + 1, b + 1, args.out.display());
                return Ok(ExitCode::from(130));
            }
        }
        bar.finish_and_clear();
        let (val_loss, val_accuracy) = if p.val.is_empty() {
            (None, None)
        } else {
            let e = evaluate(&mut model, &p.val, &p.scaling);
            (Some(e.loss), Some(e.accuracy))
        };
        let seconds = epoch_seconds + started.elapsed().as_secs_f64();
        train_seconds += started.elapsed().as_secs_f64();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / n as f64,
            val_loss,
            val_accuracy,
            seconds,
        };
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!(
            "epoch {:>2}/{}  train loss {:.4}  val loss {}  val accuracy {}  {:.1} s",
            record.epoch,
            args.epochs,
            record.train_loss,
            fmt(val_loss),
            fmt(val_accuracy),
            seconds
        );
        history.push(record);
        save_state(&mut model, epoch + 1, 0, 0.0, 0.0, &history, train_seconds)?;
        write_reports(&args.out, &args, &p, &history, None, train_seconds)?;
        let stop_now = interrupted.load(Ordering::SeqCst)
            || args.stop_after_batches.is_some_and(|s| batches_run >= s);
        if stop_now && epoch + 1 < args.epochs {
            println!(
                "interrupted after epoch {}: checkpoint written; continue with --resume {}",
                epoch + 1,
                args.out.display()
            );
            return Ok(ExitCode::from(130));
        }
    }

    let test = evaluate(&mut model, &p.test, &p.scaling);
    checkpoint::save(
        &args.out.join("model.safetensors"),
        &mut model,
        meta.clone(),
    )?;
    let first = model.layers_mut()[0]
        .params_mut()
        .into_iter()
        .next()
        .map(|w| w.value.mapv(|v| v));
    if let Some(w) = first.filter(|w| w.ndim() == 4) {
        plots::filters_png(&args.out.join("filters.png"), w.view())?;
    }
    write_reports(
        &args.out,
        &args,
        &p,
        &history,
        Some((&test, k)),
        train_seconds,
    )?;
    let correct = test
        .predictions
        .iter()
        .zip(&p.test.labels)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "test accuracy {:.4} ({correct}/{} images)",
        test.accuracy,
        p.test.len()
    );
    println!("training took {train_seconds:.1} s; outputs in {}: loss_plot.png filters.png metrics.json metrics.csv model.safetensors", args.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_depends_on_seed_and_epoch_only() {
        assert_eq!(epoch_order(3, 2, 50), epoch_order(3, 2, 50));
        assert_ne!(epoch_order(3, 2, 50), epoch_order(3, 1, 50));
        let mut o = epoch_order(3, 0, 50);
        o.sort();
        assert_eq!(o, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn confusion_matrix_counts_true_by_predicted() {
        assert_eq!(
            confusion(&[0, 0, 1, 2], &[0, 1, 1, 0], 3),
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 0]]
        );
    }
}
