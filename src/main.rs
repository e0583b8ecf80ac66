//! The `om` binary; everything lives in `omegastore::cli`.
fn main() -> std::process::ExitCode {
    tune_malloc();
    omegastore::cli::main()
}

/// Keeps the Arrow buffers of a scan in the heap instead of fresh mappings.
///
/// glibc hands allocations above a threshold that starts at 128 KiB to
/// `mmap` and gives freed heap above 128 KiB back to the kernel, so the
/// large buffers a query decodes are new pages that fault in zeroed: 20
/// filtered counts over 10M rows took ~400,000 page faults. Serving up to
/// 8 MiB from the heap and keeping up to 16 MiB free before trimming cut
/// that to ~20,000 and the CPU time by 15-20%; a larger trim threshold
/// gained nothing more and let a loaded `om serve` grow by a third, this
/// one keeps it flat (BENCHMARKS.md, 2026-12-03). Done here, before any
/// thread starts, and not in the library: an embedding application owns
/// its allocator. A user's own `GLIBC_TUNABLES`/`MALLOC_*` settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    const MMAP_THRESHOLD: libc::c_int = 8 << 20;
    const TRIM_THRESHOLD: libc::c_int = 16 << 20;
    let user_tuned = std::env::vars_os().any(|(k, v)| {
        let k = k.to_string_lossy();
        k.starts_with("MALLOC_")
            || (k == "GLIBC_TUNABLES" && v.to_string_lossy().contains("malloc"))
    });
    if user_tuned {
        return;
    }
    // SAFETY: mallopt only sets malloc parameters; called before any other
    // thread exists, so no allocation races with the change.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
