//! The `om` command line: argument parsing, dispatch, and the one-line error
//! report. Each command group lives in its own file.

pub mod bench;
pub mod cluster;
pub mod datasets;
pub mod gc;
pub mod keys;
pub mod models;
pub mod output;
pub mod progress;
pub mod quickstart;
pub mod remote;
pub mod runtime;
pub mod serve;
pub mod sql;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thiserror::Error;

use crate::Omega;
use crate::store::StoreError;

/// Errors of the command line.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sql(#[from] crate::sql::SqlError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("query failed: {0}")]
    DataFusion(datafusion::error::DataFusionError),
    #[error("cannot write the output: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("i/o error on '{path}': {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::store::keys::KeyError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}")]
    Usage(String),
}

impl From<datafusion::error::DataFusionError> for CliError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        if matches!(
            e.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        ) {
            return CliError::Sql(e.into());
        }
        // a cluster's error keeps its own (typed, one-line) message
        match e {
            datafusion::error::DataFusionError::External(inner)
                if inner.is::<crate::cluster::ClusterError>() =>
            {
                match inner.downcast::<crate::cluster::ClusterError>() {
                    Ok(c) => CliError::Cluster(*c),
                    Err(other) => {
                        CliError::DataFusion(datafusion::error::DataFusionError::External(other))
                    }
                }
            }
            e => CliError::DataFusion(e),
        }
    }
}

impl CliError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// omegastore: an Arrow-native store for datasets and models.
#[derive(Debug, Parser)]
#[command(name = "om", version, about)]
pub struct Cli {
    /// Store root: a local path, file://…, memory:// or s3://bucket/prefix.
    #[arg(long, global = true, env = "OMEGA_ROOT", default_value = crate::store::root::DEFAULT_ROOT)]
    pub root: String,
    /// Bucket (namespace) inside the root.
    #[arg(long, global = true, env = "OMEGA_BUCKET", default_value = crate::DEFAULT_BUCKET)]
    pub bucket: String,
    /// Memory all running queries may hold together, as a size (8GiB) or a
    /// share of the machine's memory (80%); past it sorts and aggregates
    /// spill to temporary files and a query that cannot spill fails. `off`
    /// for no limit.
    #[arg(long, global = true, env = "OMEGA_MEMORY_LIMIT", default_value = "80%")]
    pub memory_limit: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store, read, list and drop datasets.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Fit, predict, score and search smartcore models by name.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Run SQL over every dataset: a query, --file, stdin, or an interactive shell.
    Sql(sql::SqlArgs),
    /// Benchmarks: TPC-H queries, or the store's own operations.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Remove data no live version references (crashed writes, failed drops), older than --older-than.
    Gc(gc::GcArgs),
    /// API keys for the server: create (printed once), list, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Background tasks: submit, status, wait, list, cancel (here or on --server).
    Tasks(runtime::TasksArgs),
    /// Stored SQL jobs with parameters, and their cron schedules (here or on --server).
    Jobs(runtime::JobsArgs),
    /// Serve the store: Flight SQL and an HTTP API, with API keys.
    Serve(serve::ServeArgs),
    /// Run a Ballista cluster for `--cluster df://…`: a scheduler, executors.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create a local store with a sample dataset and show what omegastore does.
    Quickstart {
        /// Where to write the sample CSV (default: a temporary directory).
        #[arg(long)]
        sample: Option<PathBuf>,
    },
}

/// Runs `om` with `args`; returns the process exit code.
/// `--memory-limit`: a size, a share of the machine's memory, or `off`.
fn memory_limit(text: &str) -> Result<Option<usize>, CliError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bytes = match t.strip_suffix('%') {
        Some(share) => {
            let share: f64 = share
                .trim()
                .parse()
                .ok()
                .filter(|s| *s > 0.0 && *s <= 100.0)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--memory-limit '{text}': a share is between 0% and 100%, like 80%"
                    ))
                })?;
            let memory = crate::sql::query_memory::available_memory().ok_or_else(|| {
                CliError::Usage(format!(
                    "--memory-limit '{text}': this machine's memory is unknown; give a size like 8GiB"
                ))
            })?;
            (memory as f64 * share / 100.0) as u64
        }
        None => serve::parse_size("memory-limit", t)?,
    };
    Ok(Some(bytes.min(usize::MAX as u64) as usize))
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let limit = memory_limit(&cli.memory_limit)?;
    let open = async || {
        Ok::<_, CliError>(
            Omega::open(&cli.root)
                .await?
                .bucket(&cli.bucket)?
                .with_memory_limit(limit)?,
        )
    };
    // against a server, the local root is never opened
    match cli.command {
        Command::Tasks(args) => return runtime::tasks(args, open).await,
        Command::Jobs(args) => return runtime::jobs(args, open).await,
        Command::Cluster(cmd) => return cluster::run(&cli.root, cmd).await,
        _ => {}
    }
    let om = open().await?;
    match cli.command {
        Command::Datasets(cmd) => datasets::run(&om, cmd).await,
        Command::Models(cmd) => models::run(&om, cmd).await,
        Command::Bench(cmd) => bench::run(&om, cmd).await,
        Command::Sql(args) => sql::run(&om, args).await,
        Command::Gc(args) => gc::run(&om, args).await,
        Command::Keys(cmd) => keys::run(&om, cmd).await,
        Command::Tasks(_) | Command::Jobs(_) | Command::Cluster(_) => Ok(()), // handled above
        Command::Serve(args) => serve::run(&om, args).await,
        Command::Quickstart { sample } => quickstart::run(&om, sample).await,
    }
}

/// Whether this process's arguments run a server that lives long under
/// load (`om serve`, `om bench serve`): the binary tunes its allocator for
/// those before anything else starts.
pub fn runs_server() -> bool {
    matches!(
        Cli::try_parse().map(|c| c.command),
        Ok(Command::Serve(_) | Command::Bench(bench::BenchCommand::Serve { .. }))
    )
}

/// Entry point of the binary: parses arguments, runs, and turns any error
/// into one line on stderr and exit code 1.
pub fn main() -> std::process::ExitCode {
    // A bug must not print a Rust backtrace at a user: one line, exit 101.
    std::panic::set_hook(Box::new(|info| {
        if crate::models::estimator::in_guarded_call() {
            return; // reported as a typed error by the model layer
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("om: internal error{at}: {msg} (please report this)");
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("om: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string().replace('\n', " ");
            eprintln!("om: error: {text}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `OMEGA_LOG` (a `tracing` filter) or
/// `default`; colours only on a terminal (not in log files).
fn init_logs(default: &str) {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OMEGA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
