//! The `om` binary; everything lives in `omegastore::cli`.
fn main() -> std::process::ExitCode {
    restart_server_with_malloc_tunables();
    tune_malloc();
    omegastore::cli::main()
}

/// Allocations up to this size come from the heap (see [`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: usize = 8 << 20;
/// Free heap kept before trimming (see [`tune_malloc`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: usize = 16 << 20;
/// malloc arenas a server may have per core: half of glibc's default of 8.
/// Freed memory stays scattered among the live blocks of every arena (a
/// loaded server's arenas held ~105 MiB for 22 MiB in use, and
/// `malloc_trim` gave back 2 MiB), so fewer arenas hold less: 4 per core
/// kept ~28 MiB less resident under `om bench serve` at the same
/// throughput and latency; 2 arenas in all held half as much but cost a
/// fifth of the throughput and quadrupled the lookup tail (BENCHMARKS.md,
/// 2026-12-08).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS_PER_CORE: usize = 4;

/// Whether the user set malloc's parameters; theirs win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn user_tuned() -> bool {
    std::env::vars_os().any(|(k, v)| {
        let k = k.to_string_lossy();
        k.starts_with("MALLOC_")
            || (k == "GLIBC_TUNABLES" && v.to_string_lossy().contains("malloc"))
    })
}

/// Restarts a server (`om serve`, `om bench serve`; other commands return
/// at once) once, in place, with
/// glibc's per-thread cache of freed blocks (`tcache`) off and fewer malloc
/// arenas ([`ARENAS_PER_CORE`]).
///
/// A loaded server runs a few hundred threads (each query on an executor
/// of its own), and every thread's cache keeps freed blocks that
/// `malloc_trim` cannot return: they were most of the server's memory
/// growth under `om bench serve` (anonymous memory +20-25% over 30 s; with
/// the cache off +6-15%, throughput unchanged; BENCHMARKS.md, 2026-12-07).
/// glibc reads that setting only from `GLIBC_TUNABLES` at startup, so the
/// process executes itself again (same pid, arguments and descriptors) with
/// it and [`tune_malloc`]'s thresholds set there. A user's own malloc
/// settings win; if the restart fails the server runs as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn restart_server_with_malloc_tunables() {
    use std::os::unix::process::CommandExt;
    // set for the restarted process: never restart twice, whatever glibc
    // leaves of GLIBC_TUNABLES in the environment
    const RESTARTED: &str = "OMEGA_MALLOC_RESTARTED";
    // the environment first: a restarted or user-tuned process does not
    // parse its arguments a second time here
    if user_tuned() || std::env::var_os(RESTARTED).is_some() || !omegastore::cli::runs_server() {
        return;
    }
    let arenas = ARENAS_PER_CORE * std::thread::available_parallelism().map_or(1, |n| n.get());
    let tunables = format!(
        "glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:\
         glibc.malloc.trim_threshold={TRIM_THRESHOLD}:glibc.malloc.tcache_count=0:\
         glibc.malloc.arena_max={arenas}"
    );
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "om".into());
    // returns only when the exec failed
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(RESTARTED, "1")
        .exec();
    eprintln!("om: could not restart with malloc's thread caches off ({error}); going on");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn restart_server_with_malloc_tunables() {}

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
    if user_tuned() {
        return;
    }
    // SAFETY: mallopt only sets malloc parameters; called before any other
    // thread exists, so no allocation races with the change.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
