//! Command-line interface: argument parsing and one module per subcommand.

mod data;
mod gradcheck;

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
        Command::Gradcheck(args) => gradcheck::run(args),
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
