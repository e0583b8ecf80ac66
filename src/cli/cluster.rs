//! `om cluster scheduler` and `om cluster executor`: the processes of a
//! Ballista cluster that runs omegastore's queries (see `crate::cluster`).

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::CliError;
use crate::Omega;
use crate::cluster::{ExecutorOptions, run_executor, run_scheduler};
use crate::store::Root;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Run a scheduler: clients send queries here (`--cluster df://HOST:PORT`).
    Scheduler {
        /// Address to listen on (loopback unless you mean to expose it:
        /// the scheduler has no authentication).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: String,
    },
    /// Run an executor over the store root (--root / OMEGA_ROOT): it reads the
    /// store's Parquet files and models directly.
    Executor(ExecutorArgs),
}

/// Options of `om cluster executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, as HOST:PORT or df://HOST:PORT.
    #[arg(long, env = "OMEGA_CLUSTER")]
    scheduler: String,
    /// Address to bind and advertise to the scheduler and clients.
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Arrow Flight port (results and shuffle reads).
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// gRPC port for scheduler calls under Ballista's push policy; unused
    /// (omegastore's executors poll the scheduler for tasks).
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Tasks run at once (default: the cores of this machine).
    #[arg(long)]
    vcores: Option<usize>,
    /// Directory for shuffle files (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<String>,
}

impl ExecutorArgs {
    fn into_options(self) -> Result<ExecutorOptions, CliError> {
        Ok(ExecutorOptions {
            scheduler: crate::cluster::scheduler_url(&cluster_url(&self.scheduler))?,
            bind_host: self.bind_host,
            port: self.port,
            grpc_port: self.grpc_port,
            vcores: self
                .vcores
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            work_dir: self.work_dir,
        })
    }
}

/// `om` on the cluster at `url` when one is given (`--cluster`, `OMEGA_CLUSTER`).
pub async fn on_cluster(om: &Omega, url: Option<&str>) -> Result<Omega, CliError> {
    Ok(match url {
        Some(url) => om.with_cluster(url).await?,
        None => om.clone(),
    })
}

/// A cluster URL from `HOST:PORT` or `df://HOST:PORT`.
fn cluster_url(s: &str) -> String {
    if s.contains("://") {
        s.to_string()
    } else {
        format!("df://{s}")
    }
}

pub async fn run(root: &str, cmd: ClusterCommand) -> Result<(), CliError> {
    // Ballista logs through `log`; OMEGA_LOG=info shows its task events
    super::init_logs("warn");
    match cmd {
        ClusterCommand::Scheduler { bind } => {
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .map_err(|e| CliError::io(&bind, e))?;
            let addr = listener.local_addr().map_err(|e| CliError::io(&bind, e))?;
            eprintln!(
                "om cluster scheduler: listening on df://{addr} (om {}); start executors with `om cluster executor --scheduler {addr}`",
                env!("CARGO_PKG_VERSION")
            );
            Ok(run_scheduler(listener).await?)
        }
        ClusterCommand::Executor(args) => {
            let options = args.into_options()?;
            let root = Root::open(root)?;
            root.check().await?;
            let models = Omega::executor_models(root.clone())
                .map_err(|e| CliError::io("model loader runtime", e))?;
            eprintln!(
                "om cluster executor: serving {} to {} on {}:{} with {} task slots (om {})",
                root.url(),
                options.scheduler,
                options.bind_host,
                options.port,
                options.vcores,
                env!("CARGO_PKG_VERSION")
            );
            Ok(run_executor(options, root, Arc::new(models)).await?)
        }
    }
}
