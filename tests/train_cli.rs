//! `scratchnet train`, `eval` and `predict` end to end on small synthetic data.

use scratchnet::data::synth::{write_synthetic_cifar100, SynthSpec};
use std::path::Path;
use std::process::{Command, Output};

fn scratchnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args(args)
        .output()
        .expect("run scratchnet")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A synthetic CIFAR-100 layout with all 100 classes, so the lab's seeded draw finds its classes.
fn synthetic(dir: &Path) -> String {
    write_synthetic_cifar100(
        dir,
        SynthSpec {
            num_classes: 100,
            train_per_class: 60,
            test_per_class: 20,
            seed: 3,
        },
    )
    .unwrap();
    dir.display().to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every tensor of a safetensors file, by name (metadata order may differ between files).
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn lab_command_learns_synthetic_data_and_leaves_every_output() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = synthetic(data.path());
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("results");
    let run = scratchnet(&[
        "train",
        "--data",
        &data_dir,
        "--out",
        out_dir.to_str().unwrap(),
        "--epochs",
        "8",
        "--batch-size",
        "32",
    ]);
    let log = text(&run);
    assert!(run.status.success(), "{log}");
    // before the first epoch: classes, sizes, network
    assert!(log.contains("draws [44, 47, 64]"), "{log}");
    assert!(log.contains("label 0: class  44 synthetic_44"), "{log}");
    assert!(
        log.contains("images: 162 training, 18 validation, 60 test"),
        "{log}"
    );
    assert!(log.contains("(11235 parameters)"), "{log}");
    // summary lines only, no progress-bar redraws, when stdout is not a terminal
    assert_eq!(
        log.lines().filter(|l| l.starts_with("epoch ")).count(),
        8,
        "{log}"
    );
    assert!(!log.contains('\r'));

    let metrics = json(&out_dir.join("metrics.json"));
    for key in [
        "config",
        "classes",
        "epochs",
        "test_accuracy",
        "confusion_matrix",
        "train_seconds",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json lacks {key}");
    }
    let epochs = metrics["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 8);
    for key in ["epoch", "train_loss", "val_loss", "val_accuracy", "seconds"] {
        assert!(epochs[0].get(key).is_some(), "epoch record lacks {key}");
    }
    let accuracy = metrics["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "test accuracy {accuracy} (chance is 0.33)");
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs[7]["train_loss"].as_f64().unwrap();
    assert!(last < first / 2.0, "training loss {first} → {last}");
    assert_eq!(metrics["classes"][2]["index"], 64);
    let matrix = metrics["confusion_matrix"].as_array().unwrap();
    assert_eq!(
        matrix
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        60
    );
    let csv = std::fs::read_to_string(out_dir.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().next().unwrap(),
        "epoch,train_loss,val_loss,val_accuracy,seconds"
    );
    assert_eq!(csv.lines().count(), 9);

    let plot = image::open(out_dir.join("loss_plot.png")).unwrap();
    assert_eq!((plot.width(), plot.height()), (900, 560));
    let filters = image::open(out_dir.join("filters.png")).unwrap();
    assert_eq!(
        (filters.width(), filters.height()),
        (212, 212),
        "4×4 grid of 48-pixel filters with 4-pixel gaps"
    );
    let no_tmp = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"));
    assert!(no_tmp, "temporary files left behind");

    // the checkpoint reloads and eval reproduces the reported accuracy
    let model = out_dir.join("model.safetensors");
    let eval = scratchnet(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &data_dir,
    ]);
    let eval_log = text(&eval);
    assert!(eval.status.success(), "{eval_log}");
    assert!(
        eval_log.contains(&format!("test accuracy {accuracy:.4}")),
        "metrics say {accuracy}:\n{eval_log}"
    );
    assert!(eval_log.contains("synthetic_47"), "{eval_log}");

    // predict takes a PNG and names the top 3 classes
    let d =
        scratchnet::data::locate::load(scratchnet::data::DatasetKind::Cifar100, Some(data.path()))
            .unwrap()
            .select_classes(&[44, 47, 64]);
    let i = d.test.labels.iter().position(|&l| l == 1).unwrap();
    let chw = d.test.image(i);
    let png = out.path().join("sample.png");
    image::RgbImage::from_fn(32, 32, |x, y| {
        let p = (y * 32 + x) as usize;
        image::Rgb([chw[p], chw[1024 + p], chw[2048 + p]])
    })
    .save(&png)
    .unwrap();
    let pred = scratchnet(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        png.to_str().unwrap(),
    ]);
    let pred_log = text(&pred);
    assert!(pred.status.success(), "{pred_log}");
    assert!(
        pred_log
            .trim_end()
            .split(": ")
            .nth(1)
            .unwrap()
            .starts_with("synthetic_47"),
        "{pred_log}"
    );
    assert_eq!(pred_log.matches("synthetic_").count(), 3, "{pred_log}");
}

#[test]
fn interrupted_run_resumes_bit_identical() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = synthetic(data.path());
    let out = tempfile::tempdir().unwrap();
    let full = out.path().join("full");
    let part = out.path().join("part");
    let common = [
        "train",
        "--data",
        &data_dir,
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--seed",
        "7",
    ];
    let run = |extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(extra);
        scratchnet(&args)
    };
    let done = run(&["--out", full.to_str().unwrap()]);
    assert!(done.status.success(), "{}", text(&done));
    // stop mid-epoch 2, as Ctrl-C would
    let stopped = run(&["--out", part.to_str().unwrap(), "--stop-after-batches", "8"]);
    assert_eq!(stopped.status.code(), Some(130), "{}", text(&stopped));
    assert!(
        text(&stopped).contains("interrupted at epoch 2, batch 2"),
        "{}",
        text(&stopped)
    );
    assert!(part.join("checkpoint.safetensors").exists());
    assert!(!part.join("model.safetensors").exists());
    let resumed = scratchnet(&["train", "--resume", part.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(
        tensors(&full.join("model.safetensors")),
        tensors(&part.join("model.safetensors"))
    );
    let (a, b) = (
        json(&full.join("metrics.json")),
        json(&part.join("metrics.json")),
    );
    let losses = |m: &serde_json::Value| {
        m["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["train_loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a["test_accuracy"], b["test_accuracy"]);
}

#[test]
fn same_seed_same_weights_with_one_and_two_threads() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = synthetic(data.path());
    let out = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for threads in ["1", "2"] {
        let dir = out.path().join(threads);
        let r = scratchnet(&[
            "train",
            "--data",
            &data_dir,
            "--epochs",
            "2",
            "--out",
            dir.to_str().unwrap(),
            "--threads",
            threads,
        ]);
        assert!(r.status.success(), "{}", text(&r));
        models.push(tensors(&dir.join("model.safetensors")));
    }
    assert_eq!(models[0], models[1]);
}

#[test]
fn nonsense_is_refused_up_front() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = synthetic(data.path());
    for (args, expected) in [
        (
            vec!["--batch-size", "0"],
            "--batch-size 0: expected a whole number of at least 1",
        ),
        (vec!["--lr", "-1"], "--lr -1: expected a positive number"),
        (
            vec!["--epochs", "0"],
            "--epochs 0: expected a whole number of at least 1",
        ),
        (
            vec!["--classes", "synthetic_01,unicorn"],
            "unknown class name \"unicorn\"",
        ),
        (
            vec!["--arch", "pool,pool,pool,pool,pool,pool,flatten,full"],
            "layer 5 (pool) does not fit",
        ),
        (
            vec!["--arch", "conv16,sigmoid,full"],
            "unknown layer \"sigmoid\"",
        ),
        (
            vec!["--val-fraction", "1"],
            "--val-fraction 1: expected a number from 0",
        ),
        (
            vec!["--dataset", "imagenet"],
            "unknown data set \"imagenet\"",
        ),
    ] {
        let mut all = vec![
            "train",
            "--data",
            &data_dir,
            "--out",
            "/nonexistent/never/written",
        ];
        all.extend(args.iter());
        let r = scratchnet(&all);
        assert!(!r.status.success(), "{args:?} was accepted");
        assert!(text(&r).contains(expected), "{args:?}: {}", text(&r));
    }
}

#[test]
fn divergence_stops_with_the_epoch_batch_and_a_hint() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = synthetic(data.path());
    let out = tempfile::tempdir().unwrap();
    let r = scratchnet(&[
        "train",
        "--data",
        &data_dir,
        "--out",
        out.path().to_str().unwrap(),
        "--lr",
        "100",
        "--epochs",
        "3",
    ]);
    assert!(!r.status.success());
    let log = text(&r);
    assert!(
        log.contains("training diverged: the loss became")
            && log.contains("at epoch 1, batch")
            && log.contains("try a smaller --lr (now 100)"),
        "{log}"
    );
}

#[test]
fn missing_data_offline_lists_places_and_the_download_command() {
    let empty = tempfile::tempdir().unwrap();
    let r = scratchnet(&[
        "train",
        "--data",
        empty.path().to_str().unwrap(),
        "--offline",
    ]);
    assert!(!r.status.success());
    assert!(
        text(&r).contains("Download it with: scratchnet download --dataset cifar100"),
        "{}",
        text(&r)
    );
}

#[test]
fn a_real_ctrl_c_checkpoints_and_resume_matches_an_uninterrupted_run() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let data_dir = synthetic(data.path());
    let out = tempfile::tempdir().unwrap();
    let (full, part) = (out.path().join("full"), out.path().join("part"));
    let args = |dir: &Path| -> Vec<String> {
        [
            "train",
            "--data",
            &data_dir,
            "--epochs",
            "40",
            "--batch-size",
            "16",
            "--seed",
            "3",
            "--out",
            dir.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let done = Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args(args(&full))
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", text(&done));

    let mut child = Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args(args(&part))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // wait until training is under way, then press Ctrl-C
    for line in lines.by_ref() {
        if line.unwrap().starts_with("epoch  2/40") {
            break;
        }
    }
    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("interrupted ") && l.contains("--resume")),
        "{rest:?}"
    );
    assert!(part.join("checkpoint.safetensors").exists() && part.join("metrics.json").exists());

    let resumed = scratchnet(&["train", "--resume", part.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(
        tensors(&full.join("model.safetensors")),
        tensors(&part.join("model.safetensors"))
    );
    assert_eq!(
        json(&full.join("metrics.json"))["test_accuracy"],
        json(&part.join("metrics.json"))["test_accuracy"]
    );
}
