//! The `scratchnet` command line.

mod cli;

/// Training allocates the same large arrays every batch. By default glibc serves each from
/// fresh `mmap` pages and returns them on free, so every batch pays for page faults and
/// kernel zeroing (a fifth of a training step). Keeping them on the heap lets freed blocks
/// be reused; the heap stays bounded by one batch's working set.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    cli::run()
}
