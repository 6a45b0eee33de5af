//! Agreement with the Python side of the lab, checked against real Python and numpy when
//! they are installed (`.ci/run` installs numpy; elsewhere these tests say they skipped).

use scratchnet::data::subset::choose_classes;
use scratchnet::data::synth::{write_synthetic_cifar100, SynthSpec};
use std::process::Command;

/// Runs a Python snippet; `None` (after saying so) when python3 with numpy is missing.
fn python(code: &str) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import numpy"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        assert!(
            std::env::var_os("SCRATCHNET_REQUIRE_PYTHON").is_none(),
            "python3 with numpy is required (SCRATCHNET_REQUIRE_PYTHON is set)"
        );
        eprintln!("SKIPPED: python3 with numpy not found");
        return None;
    }
    let out = Command::new("python3").args(["-c", code]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn seeded_class_choice_matches_numpy_for_many_seeds() {
    let seeds: Vec<u64> = (0..150u64)
        .map(|i| i * 28_629_151 % 4_294_967_296)
        .chain([4_294_967_295, 1_213_346_041])
        .collect();
    let code = format!(
        "import numpy as np\nfor s in {seeds:?}:\n    np.random.seed(s); a = np.random.choice(np.arange(0, 100), 3); np.random.seed(s); b = np.unique(np.random.choice(np.arange(0, 10), 7)); print(' '.join(map(str, a)) + '|' + ' '.join(map(str, b)))"
    );
    let Some(out) = python(&code) else { return };
    for (seed, line) in seeds.iter().zip(out.lines()) {
        let parse = |s: &str| {
            s.split(' ')
                .map(|v| v.parse().unwrap())
                .collect::<Vec<usize>>()
        };
        let (draw, unique) = line.split_once('|').unwrap();
        assert_eq!(
            parse(draw),
            choose_classes(*seed, 3, 100).unwrap().draw,
            "seed {seed}"
        );
        assert_eq!(
            parse(unique),
            choose_classes(*seed, 7, 10).unwrap().classes,
            "seed {seed}, 7 of 10"
        );
    }
}

#[test]
fn python_unpickles_the_synthetic_set_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let folder = write_synthetic_cifar100(
        dir.path(),
        SynthSpec {
            num_classes: 5,
            train_per_class: 2,
            test_per_class: 1,
            seed: 4,
        },
    )
    .unwrap();
    let code = format!(
        "import pickle\nd = pickle.load(open({:?}, 'rb'), encoding='bytes')\nm = pickle.load(open({:?}, 'rb'), encoding='bytes')\nprint(sorted(d.keys()), d[b'data'].shape, d[b'data'].dtype, d[b'fine_labels'], int(d[b'data'][3, 5]), m[b'fine_label_names'][4])",
        folder.join("train").display().to_string(),
        folder.join("meta").display().to_string()
    );
    let Some(out) = python(&code) else { return };
    let d = scratchnet::data::cifar::load_cifar100_python(&folder).unwrap();
    let expected = format!(
        "[b'batch_label', b'coarse_labels', b'data', b'filenames', b'fine_labels'] (10, 3072) uint8 {:?} {} b'synthetic_04'",
        d.train.labels,
        d.train.image(3)[5]
    );
    assert_eq!(out.trim(), expected);
}

/// PyTorch loads `model.safetensors` into the `nn.Sequential` named in its metadata and
/// predicts exactly what scratchnet predicts. Runs where torch and safetensors are
/// installed (never required: torch is a large download).
#[test]
fn pytorch_loads_the_checkpoint_and_agrees() {
    let probe = Command::new("python3")
        .args(["-c", "import torch, safetensors, numpy"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: python3 with torch, safetensors and numpy not found");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    write_synthetic_cifar100(
        data.path(),
        SynthSpec {
            num_classes: 100,
            train_per_class: 30,
            test_per_class: 10,
            seed: 8,
        },
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_scratchnet"))
        .args([
            "train",
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--epochs",
            "1",
            "--lr",
            "0.2",
            "--batch-size",
            "32",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let model = out.path().join("model.safetensors");
    let test = data.path().join("cifar-100-python/test");
    let code = format!(
        r#"
import json, pickle, numpy as np, torch, torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file
with safe_open({model:?}, "pt") as f:
    meta = f.metadata()
net = eval(meta["pytorch"])
net.load_state_dict(load_file({model:?}))
classes = [c["index"] for c in json.loads(meta["classes"])]
d = pickle.load(open({test:?}, "rb"), encoding="bytes")
keep = [i for i, l in enumerate(d[b"fine_labels"]) if l in classes]
x = torch.tensor(d[b"data"][keep].reshape(-1, 3, 32, 32) / 255.0 - 0.5, dtype=torch.float32)
labels = [classes.index(d[b"fine_labels"][i]) for i in keep]
with torch.no_grad():
    preds = net(x).argmax(1).tolist()
k = len(classes)
m = [[0] * k for _ in range(k)]
for t, p in zip(labels, preds):
    m[t][p] += 1
print(json.dumps(m))
"#,
        model = model.display().to_string(),
        test = test.display().to_string()
    );
    let py = Command::new("python3")
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let torch_matrix: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["confusion_matrix"], torch_matrix,
        "PyTorch's confusion matrix differs from scratchnet's"
    );
    // Half-trained on purpose, so that the matrix has mistakes to agree on.
    assert_ne!(
        torch_matrix,
        serde_json::json!([[10, 0, 0], [0, 10, 0], [0, 0, 10]])
    );
}
