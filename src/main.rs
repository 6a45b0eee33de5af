//! The `scratchnet` command line.

mod cli;

fn main() -> std::process::ExitCode {
    scratchnet::tune_allocator();
    cli::run()
}
