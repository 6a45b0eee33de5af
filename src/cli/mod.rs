//! Command-line interface: argument parsing and one module per subcommand.

mod bench;
mod data;
mod eval;
mod gradcheck;
mod plots;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A convolutional neural network from scratch: every layer's gradient by hand.
#[derive(Parser)]
#[command(name = "scratchnet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network (default: the lab's, on the seed's 3 CIFAR-100 classes) and save plots, metrics and weights.
    Train(train::TrainArgs),
    /// Test accuracy, per-class accuracy and confusion matrix of a trained model.
    Eval(eval::EvalArgs),
    /// Classify PNG or JPEG images with a trained model.
    Predict(eval::PredictArgs),
    /// Time the lab network per layer and per step (1 and 2 threads), as a table and JSON.
    Bench(bench::BenchArgs),
    /// Check every layer's hand-written gradients against numerical differences.
    Gradcheck(gradcheck::Args),
    /// Download a data set (with checksum) into the data folder.
    Download(data::DownloadArgs),
    /// Show which CIFAR-100 classes a seed picks, exactly as the lab's numpy code does.
    Classes(data::ClassesArgs),
    /// Write a learnable synthetic data set in the CIFAR-100 python layout.
    Synth(data::SynthArgs),
}

/// Parses the arguments, runs the subcommand and maps errors to a message and exit code 1.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run_eval(args),
        Command::Predict(args) => eval::run_predict(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Download(args) => data::run_download(args),
        Command::Classes(args) => data::run_classes(args),
        Command::Synth(args) => data::run_synth(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
