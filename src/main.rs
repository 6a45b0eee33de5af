//! The `scratchnet` command line.

mod cli;

/// Training allocates large, short-lived arrays every batch; mimalloc keeps them in
/// process instead of mapping and zeroing fresh pages from the kernel each time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
