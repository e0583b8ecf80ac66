//! The `om` binary; everything lives in `omegastore::cli`.
fn main() -> std::process::ExitCode {
    omegastore::cli::main()
}
