//! `scratchnet bench`: per-layer and per-step timings of the lab network (and a bigger one)
//! with images/s and achieved GFLOP/s, for several thread counts, as a table and JSON.
//! GFLOP/s count the direct convolution's multiply-adds, as the figures do: layers
//! that run by Winograd do 2.25× fewer in their products, so theirs is an effective rate.
//! The workloads match `../shared/bench/pytorch_reference.py`, so the two can be run side by
//! side on the same machine.

use anyhow::{Context, Result};
use scratchnet::layers::ConvLayer;
use scratchnet::models::Arch;
use scratchnet::ndarray::{Array4, ArrayD};
use scratchnet::rand::seq::SliceRandom;
use scratchnet::rand::{Rng, SeedableRng};
use scratchnet::rand_chacha::ChaCha8Rng;
use scratchnet::{one_hot, select_examples, Layer, Sequential};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Options of `scratchnet bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Workloads: layers, step, fwd, labrun, bignet (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "layers,step,fwd,labrun,bignet"
    )]
    workloads: Vec<String>,
    /// Timed repetitions per workload (the lab run uses a fifth of them, at least 3).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Also write the results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Median, min and max of repeated timings in milliseconds.
struct Timing {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn time(warmup: usize, reps: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..warmup {
        f();
    }
    let mut ms: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Timing {
        median: ms[ms.len() / 2],
        min: ms[0],
        max: ms[ms.len() - 1],
        n: ms.len(),
    }
}

/// Timings of the fused convolution → ReLU → 2×2 pooling that `Sequential` runs for layers
/// `i..i + 3` of `model` (if they are such a run), on `input`; the backward pass computes
/// dℓ/dx except for the first layer, as in training.
fn fused_rows(
    model: &mut Sequential<f32>,
    i: usize,
    input: &ArrayD<f32>,
    threads: usize,
    reps: usize,
) -> Option<[Row; 2]> {
    let names: Vec<String> = model
        .layers()
        .iter()
        .skip(i)
        .take(3)
        .map(|l| l.name())
        .collect();
    if names.len() < 3 || names[1] != "ReluLayer" || names[2] != "MaxPoolLayer(2×2)" {
        return None;
    }
    let (f, b) = flops(model.layers()[i].as_ref(), input.shape(), i > 0);
    let conv = model.layers_mut()[i]
        .as_any_mut()?
        .downcast_mut::<ConvLayer<f32>>()?;
    let mut mask = Vec::new();
    let out = conv.forward_relu_pool2(input.view(), &mut mask);
    let name = format!("{i}-{} {} + ReLU + pool, fused", i + 2, names[0]);
    let forward = time(3, reps, || {
        conv.forward_relu_pool2(input.view(), &mut mask);
    });
    let dy = out.mapv(|v| v * 0.5 + 0.01);
    let backward = time(3, reps, || {
        conv.backward_relu_pool2(dy.view(), &mask, i > 0);
    });
    Some([
        Row {
            workload: format!("{name} forward"),
            threads,
            t: forward,
            images: 128,
            flop: f,
        },
        Row {
            workload: format!("{name} backward"),
            threads,
            t: backward,
            images: 128,
            flop: b,
        },
    ])
}

/// Floating-point operations of one layer's forward pass and backward pass (multiply-adds
/// count 2, convolutions counted as direct ones) for input shape `input`; the backward
/// includes dℓ/dx only if `input_grad`.
fn flops(layer: &dyn Layer<f32>, input: &[usize], input_grad: bool) -> (f64, f64) {
    let out = layer.output_shape(input).expect("shapes checked");
    let name = layer.name();
    if name.starts_with("ConvLayer") {
        let (n_b, n_i, pixels) = (
            input[0] as f64,
            input[1] as f64,
            (input[2] * input[3]) as f64,
        );
        let n_o = out[1] as f64;
        let h2 = (layer.num_params() as f64 - n_o) / (n_o * n_i);
        let f = 2.0 * n_b * n_o * n_i * h2 * pixels;
        (f, if input_grad { 2.0 * f } else { f })
    } else if name.starts_with("FullLayer") {
        let f = 2.0 * (input[0] * input[1] * out[1]) as f64;
        (f, 2.0 * f)
    } else {
        (0.0, 0.0)
    }
}

fn random_batch(rng: &mut ChaCha8Rng, n: usize, shape: (usize, usize, usize)) -> Array4<f32> {
    Array4::from_shape_simple_fn((n, shape.0, shape.1, shape.2), || {
        rng.random_range(-0.5..0.5)
    })
}

fn network(channels: &[usize], classes: usize, rng: &mut ChaCha8Rng) -> Sequential<f32> {
    let mut layers: Vec<String> = channels[1..]
        .iter()
        .map(|c| format!("conv{c},relu,pool"))
        .collect();
    layers.push("flatten,full".into());
    Arch::parse(&layers.join(","))
        .expect("valid")
        .build((channels[0], 32, 32), classes, rng)
        .expect("fits 32×32")
}

struct Row {
    workload: String,
    threads: usize,
    t: Timing,
    images: usize,
    flop: f64,
}

fn measure(workload: &str, threads: usize, reps: usize, rows: &mut Vec<Row>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut lab = network(&[3, 16, 32], 3, &mut rng);
    let x = random_batch(&mut rng, 128, (3, 32, 32));
    let labels: Vec<usize> = (0..128).map(|_| rng.random_range(0..3)).collect();
    let y = one_hot::<f32>(&labels, 3);
    let layer_flops = |model: &Sequential<f32>, n: usize, first_input_grad: bool| -> (f64, f64) {
        let mut shape = vec![n, 3, 32, 32];
        let (mut f, mut b) = (0.0, 0.0);
        for (i, l) in model.layers().iter().enumerate() {
            let (lf, lb) = flops(l.as_ref(), &shape, i > 0 || first_input_grad);
            f += lf;
            b += lb;
            shape = l.output_shape(&shape).expect("fits");
        }
        (f, b)
    };
    match workload {
        "step" => {
            let (f, b) = layer_flops(&lab, 128, false);
            let t = time(5, reps, || {
                lab.train_batch(x.view().into_dyn(), y.view(), 0.1);
            });
            rows.push(Row {
                workload: "step".into(),
                threads,
                t,
                images: 128,
                flop: f + b,
            });
        }
        "fwd" => {
            let (f, _) = layer_flops(&lab, 128, false);
            let t = time(5, reps, || {
                lab.predict_proba(x.view().into_dyn());
            });
            rows.push(Row {
                workload: "fwd".into(),
                threads,
                t,
                images: 128,
                flop: f,
            });
        }
        "layers" => {
            let mut input: ArrayD<f32> = x.clone().into_dyn();
            let n = lab.layers().len();
            for i in 0..n {
                let shape = input.shape().to_vec();
                let layer = &mut lab.layers_mut()[i];
                let (f, b) = flops(layer.as_ref(), &shape, i > 0);
                let out = layer.forward(input.view());
                let name = layer.name();
                let t = time(3, reps, || {
                    layer.forward(input.view());
                });
                rows.push(Row {
                    workload: format!("{i} {name} forward"),
                    threads,
                    t,
                    images: 128,
                    flop: f,
                });
                let dy = out.mapv(|v| v * 0.5 + 0.01);
                let t = time(3, reps, || {
                    layer.backward(dy.view());
                });
                rows.push(Row {
                    workload: format!("{i} {name} backward"),
                    threads,
                    t,
                    images: 128,
                    flop: b,
                });
                if let Some(row) = fused_rows(&mut lab, i, &input, threads, reps) {
                    rows.extend(row);
                }
                input = out;
            }
        }
        "labrun" => {
            let train = random_batch(&mut rng, 1500, (3, 32, 32));
            let train_labels: Vec<usize> = (0..1500).map(|_| rng.random_range(0..3)).collect();
            let test = random_batch(&mut rng, 300, (3, 32, 32));
            let (f, b) = layer_flops(&lab, 1, false);
            let flop = (f + b) * 1500.0 * 15.0 + f * 300.0;
            let t = time(1, (reps / 5).max(3), || {
                let mut rng = ChaCha8Rng::seed_from_u64(1);
                let mut model = network(&[3, 16, 32], 3, &mut rng);
                let mut order: Vec<usize> = (0..1500).collect();
                for _ in 0..15 {
                    order.shuffle(&mut rng);
                    for idx in order.chunks(128) {
                        let xb = select_examples(train.view().into_dyn(), idx);
                        let yb = one_hot::<f32>(
                            &idx.iter().map(|&i| train_labels[i]).collect::<Vec<_>>(),
                            3,
                        );
                        model.train_batch(xb.view().into_dyn(), yb.view(), 0.1);
                    }
                }
                model.predict(test.view().into_dyn());
            });
            rows.push(Row {
                workload: "labrun".into(),
                threads,
                t,
                images: 1500 * 15 + 300,
                flop,
            });
        }
        "bignet" => {
            let mut big = network(&[3, 64, 128, 256], 100, &mut rng);
            let yb = one_hot::<f32>(
                &(0..128)
                    .map(|_| rng.random_range(0..100))
                    .collect::<Vec<_>>(),
                100,
            );
            let mut shape = vec![128, 3, 32, 32];
            let mut flop = 0.0;
            for (i, l) in big.layers().iter().enumerate() {
                let (a, b) = flops(l.as_ref(), &shape, i > 0);
                flop += a + b;
                shape = l.output_shape(&shape).expect("fits");
            }
            let t = time(3, (reps / 2).max(5), || {
                big.train_batch(x.view().into_dyn(), yb.view(), 0.1);
            });
            rows.push(Row {
                workload: "bignet".into(),
                threads,
                t,
                images: 128,
                flop,
            });
        }
        other => {
            eprintln!("unknown workload {other:?} (expected layers, step, fwd, labrun, bignet)")
        }
    }
}

/// Runs the benchmark and prints the table.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for &threads in &args.threads {
        anyhow::ensure!(threads > 0, "--threads 0: expected at least 1");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("thread pool")?;
        for w in &args.workloads {
            pool.install(|| measure(w, threads, args.reps, &mut rows));
        }
    }
    println!(
        "{:<36} {:>7} {:>10} {:>21} {:>10} {:>9}",
        "workload", "threads", "median ms", "min–max ms", "images/s", "GFLOP/s"
    );
    let mut json = String::new();
    for r in &rows {
        let ips = r.images as f64 / (r.t.median / 1e3);
        let gflops = r.flop / (r.t.median / 1e3) / 1e9;
        println!(
            "{:<36} {:>7} {:>10.3} {:>21} {:>10.0} {:>9.1}",
            r.workload,
            r.threads,
            r.t.median,
            format!("{:.3}–{:.3}", r.t.min, r.t.max),
            ips,
            gflops
        );
        let line = serde_json::json!({"impl": "scratchnet", "version": env!("CARGO_PKG_VERSION"), "workload": r.workload, "threads": r.threads,
            "median_ms": r.t.median, "min_ms": r.t.min, "max_ms": r.t.max, "n": r.t.n, "images_per_s": ips, "gflop_per_s": gflops});
        json.push_str(&line.to_string());
        json.push('\n');
    }
    if let Some(path) = args.json {
        scratchnet::checkpoint::write_atomic(&path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
