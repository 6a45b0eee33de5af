//! Command-line interface: argument parsing and one module per subcommand.

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
}

/// Parses the arguments, runs the subcommand and maps errors to a message and exit code 1.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gradcheck(args) => gradcheck::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
