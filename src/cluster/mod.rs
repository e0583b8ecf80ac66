//! Scale-out on Apache Ballista: the same SQL, mixins and `predict()` on a
//! cluster. It uses `sql` (the session it plans in) and the layers below.
//!
//! A query is planned on the client, where the identity is known, and its
//! parts that read the store's files are sent to the scheduler as a
//! DataFusion physical plan (see `planner.rs`); executors read the
//! snapshot's Parquet files from the store and load pinned models from it.
//!
//! | file | what |
//! | --- | --- |
//! | `planner.rs` | the query planner of a cluster session: what is sent, what stays |
//! | `exec.rs` | `ClusterExec` (a subtree run on the cluster) and the plan header |
//! | `codec.rs` | the extension codecs: omegastore's nodes tagged, the rest Ballista's |
//! | `models.rs` | `predict()` on executors: pinned model versions, loaded once |
//! | `process.rs` | `om cluster scheduler` / `om cluster executor` |
//! | `watch.rs` | the scheduler's watchdog: jobs nothing will move are cancelled |
//! | `lost_executor.rs` | jobs needing results a lost executor held are cancelled, not rerun twice |

pub mod codec;
pub mod exec;
mod lost_executor;
pub mod models;
pub mod planner;
pub mod process;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use thiserror::Error;

pub use codec::OmegaPhysicalCodec;
pub use exec::{ClusterExec, PlanHeaderExec};
pub use models::{ModelRef, ModelSource, StoreModels};
pub use planner::ClusterPlanner;
pub use process::{ExecutorOptions, run_executor, run_scheduler};

use crate::store::Root;
use crate::store::error::one_line;

/// The scheduler's port when a cluster URL names none (Ballista's default).
pub const DEFAULT_PORT: u16 = 50050;

/// How long a client waits for the scheduler to answer before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// DataFusion options of a session whose plans go to a cluster. Plans that
/// Ballista's stage split cannot carry: an uncorrelated scalar subquery run
/// as its own operator (its expression would land in a stage without it;
/// off, it is planned as a join), and dynamic filters (a stage boundary cuts
/// the link between a join or top-k and the scan it filters, and the
/// scheduler's join reordering refuses them).
pub const SESSION_OPTIONS: &[(&str, &str)] = &[
    (
        "datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery",
        "false",
    ),
    (
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        "false",
    ),
    // Executors open files with DataFusion's own reader (a plan carries no
    // reader factory): they would convert strings into dictionaries.
    ("omega_scan.dictionary_filters", "false"),
    // Dynamic filters are off above; the node would not serialise either.
    ("omega_scan.dynamic_filters", "false"),
    // The codec knows DataFusion's expressions, not omegastore's.
    ("omega_exec.narrow_decimal_multiply", "false"),
    ("omega_exec.decimal_constant_add", "false"),
    // A shared result is held in this process and cannot travel: each use
    // runs on the cluster, and the plan goes there whole.
    ("omega_exec.share_repeated_subplans", "false"),
];

/// Errors of a cluster: its address, its processes, its queries.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("invalid cluster URL '{url}': {reason}; use df://HOST:PORT, the scheduler's address")]
    BadUrl { url: String, reason: String },
    #[error(
        "cannot reach the cluster scheduler at {scheduler} within {secs} s ({reason}); start one with `om cluster scheduler`, or check --cluster / OMEGA_CLUSTER"
    )]
    Unreachable {
        scheduler: String,
        secs: u64,
        reason: String,
    },
    #[error("query on the cluster at {scheduler} failed: {message}")]
    Query { scheduler: String, message: String },
    #[error("cannot start the cluster {what}: {reason}")]
    Start { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ClusterError {
    pub(crate) fn bad_url(url: &str, reason: impl std::fmt::Display) -> Self {
        ClusterError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn start(what: &str, reason: impl std::fmt::Display) -> Self {
        ClusterError::Start {
            what: what.to_string(),
            reason: one_line(&reason.to_string()),
        }
    }

    /// A query's failure on the cluster (kept as it is when it already is one).
    pub(crate) fn query(scheduler: &str, e: DataFusionError) -> Self {
        let e = match e {
            DataFusionError::External(inner) => match inner.downcast::<ClusterError>() {
                Ok(c) => return *c,
                Err(inner) => DataFusionError::External(inner),
            },
            e => e,
        };
        let mut message = one_line(&e.strip_backtrace());
        if message.ends_with("Cancelled") {
            message.push_str(&format!(
                " (a scheduler cancels a query when an executor holding part of its results stops, when it waits {} s with no executor alive, or {} s with no task ready or running: check that executors run, `om cluster executor`, and run it again)",
                watch::NO_EXECUTORS_GRACE.as_secs(),
                watch::STUCK_JOB_GRACE.as_secs()
            ));
        }
        let stage_failed = format!("has failed {} times", process::STAGE_MAX_FAILURES);
        if message.contains(&stage_failed) {
            // the scheduler fails a stage on its first fetch failure (see
            // `process::run_scheduler`): most often an executor was lost
            message.push_str(
                " (a task could not read results another executor held: if an executor stopped, run the query again on the executors left)",
            );
        }
        ClusterError::Query {
            scheduler: scheduler.to_string(),
            message,
        }
    }

    pub(crate) fn into_df(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

/// The scheduler's gRPC URL (`http://host:port`) for a cluster URL
/// `df://host[:port]` (`http://` is accepted too).
pub fn scheduler_url(url: &str) -> Result<String, ClusterError> {
    let parsed = url::Url::parse(url).map_err(|e| ClusterError::bad_url(url, e))?;
    if !matches!(parsed.scheme(), "df" | "http") {
        return Err(ClusterError::bad_url(
            url,
            format!("unknown scheme '{}'", parsed.scheme()),
        ));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ClusterError::bad_url(url, "no host"))?;
    if !parsed.path().trim_matches('/').is_empty() || parsed.query().is_some() {
        return Err(ClusterError::bad_url(
            url,
            "a cluster URL has no path or query",
        ));
    }
    Ok(format!(
        "http://{host}:{}",
        parsed.port().unwrap_or(DEFAULT_PORT)
    ))
}

/// Checks that the scheduler at `url` answers within `timeout`; returns its
/// gRPC URL.
pub async fn connect(url: &str, timeout: Duration) -> Result<String, ClusterError> {
    let scheduler = scheduler_url(url)?;
    let unreachable = |reason: String| ClusterError::Unreachable {
        scheduler: scheduler.clone(),
        secs: timeout.as_secs(),
        reason,
    };
    match tokio::time::timeout(timeout, SchedulerGrpcClient::connect(scheduler.clone())).await {
        Ok(Ok(_)) => Ok(scheduler),
        Ok(Err(e)) => Err(unreachable(one_line(&e.to_string()))),
        Err(_) => Err(unreachable("no answer".into())),
    }
}

/// The query planner of a session over `root` whose file scans run on the
/// cluster at `scheduler` (from [`connect`]); `local` plans everything else.
pub fn planner(
    local: Arc<dyn QueryPlanner + Send + Sync>,
    scheduler: String,
    root: &Root,
) -> Arc<ClusterPlanner> {
    let codec = Arc::new(OmegaPhysicalCodec::new(Some(root.url().to_string()), None));
    Arc::new(ClusterPlanner::new(local, scheduler, codec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage failed on a fetch failure says what to do, on one line.
    #[test]
    fn a_lost_executor_says_run_again() {
        let e = DataFusionError::Execution(format!(
            "Job abc failed: Stage 3 has failed {} times, most recent failure reason: \"FetchFailed(\n...)\"",
            process::STAGE_MAX_FAILURES
        ));
        let text = ClusterError::query("http://127.0.0.1:50050", e).to_string();
        assert!(text.contains("run the query again"), "{text}");
        assert!(
            text.starts_with("query on the cluster at http://127.0.0.1:50050 failed:"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
