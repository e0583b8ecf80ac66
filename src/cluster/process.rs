//! The cluster's processes, as `om cluster scheduler` and `om cluster
//! executor` run them: Ballista's scheduler and executor (as libraries) with
//! omegastore's codecs, its session options, and on executors the store's
//! object store (so they read the snapshot's Parquet files directly) and
//! its models.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ballista_core::JobId;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::execution::SessionState;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use tokio::net::TcpListener;
use url::Url;

use super::ClusterError;
use super::codec::{OmegaPhysicalCodec, logical_codec};
use super::lost_executor::LostExecutorGuard;
use super::models::ModelSource;
use super::watch::{JobState, JobWatch, NO_EXECUTORS_GRACE, STUCK_JOB_GRACE, Verdict};
use crate::backends::scan_options::ScanOptions;
use crate::sql::OmegaOptions;
use crate::store::Root;

/// The session configuration scheduler and executors start from: Ballista's,
/// knowing omegastore's options (clients send them with every query).
fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_option_extension(OmegaOptions::default())
        .with_option_extension(ScanOptions::default())
}

/// How tasks reach executors: each executor polls the scheduler with the
/// task slots it has free. Ballista's default (the scheduler pushes tasks
/// and counts every executor's free slots itself) loses count when an
/// executor dies mid-query: a task the scheduler cancels while rolling back
/// its stage never gives its slot back, and the executors left are then full
/// for good in the scheduler's eyes, so that query and every later one wait
/// forever (seen in `tests/cluster_processes.rs`). When executors poll, the
/// count is their own and cannot drift; the cost is up to 50 ms before an
/// idle executor asks for a new stage's tasks.
const SCHEDULING: TaskSchedulingPolicy = TaskSchedulingPolicy::PullStaged;

/// The scheduler's object stores: it decodes plans that name the store's
/// files but reads none of them, so any URL gets an empty store (a read
/// there would find nothing, never another store's data).
#[derive(Debug, Default)]
struct NoDataStores {
    known: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for NoDataStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        Ok(self
            .known
            .get_store(url)
            .unwrap_or_else(|_| Arc::new(InMemory::new())))
    }
}

/// The scheduler's sessions: Ballista's, over [`NoDataStores`].
fn scheduler_session(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let state = default_session_builder(config)?;
    let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_object_store_registry(Arc::new(NoDataStores::default()))
        .build()?;
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(Arc::new(runtime))
        .build())
}

/// Fetch failures a stage may have before it fails its job: one, so a lost
/// executor's shuffle output fails the query rather than roll the stage back
/// (see `run_scheduler`); [`super::ClusterError::query`] recognises the message.
pub(crate) const STAGE_MAX_FAILURES: usize = 1;

/// Runs a scheduler on `listener` until the process ends.
pub async fn run_scheduler(listener: TcpListener) -> Result<(), ClusterError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ClusterError::start("scheduler", e))?;
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host: addr.ip().to_string(),
        override_physical_codec: Some(Arc::new(OmegaPhysicalCodec::new(None, None))),
        override_logical_codec: Some(logical_codec()),
        override_config_producer: Some(Arc::new(session_config)),
        override_session_builder: Some(Arc::new(scheduler_session)),
        // executors beat every 5 s: one silent for 20 s is dead, its tasks
        // rescheduled on the others (Ballista's defaults wait 3 minutes)
        executor_timeout_seconds: 20,
        expire_dead_executor_interval_seconds: 5,
        // executors ask for work with the slots they have free (see
        // [`SCHEDULING`])
        scheduling_policy: SCHEDULING,
        min_ready_executors: 1,
        // a task that cannot fetch its input from a lost executor fails the
        // job instead of rolling its stage back: Ballista 55 keeps the
        // outputs of the rolled-back stage's finished tasks and adds the
        // rerun's to them, so the query would answer with rows counted twice
        // (seen in tests/cluster_processes.rs). A clean error beats a wrong
        // answer; tasks lost while running are still rerun. The same
        // rollback on an executor's removal is kept from running jobs by
        // `lost_executor::LostExecutorGuard`.
        stage_max_failures: STAGE_MAX_FAILURES,
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| ClusterError::start("scheduler", e))?;
    // executors removed only after the jobs needing their results are
    // cancelled (see `lost_executor`)
    let guarded = Arc::new(OnceLock::new());
    let cluster = BallistaCluster::new(
        Arc::new(LostExecutorGuard::new(
            cluster.cluster_state(),
            guarded.clone(),
        )),
        cluster.job_state(),
    );
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(|e| ClusterError::start("scheduler", e))?;
    let _ = guarded.set(scheduler.clone());
    tokio::spawn(watch_jobs(scheduler.clone()));
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(|e| ClusterError::start("scheduler", e))
}

/// Every second, shows the running jobs to the watchdog ([`JobWatch`]: which
/// jobs nothing will ever move) and cancels the jobs it names, so their
/// clients get an error instead of waiting forever.
async fn watch_jobs(scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>) {
    let mut watch = JobWatch::<JobId>::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive = |executor: &str| {
            scheduler
                .state
                .executor_manager
                .get_executor_hearbeat(executor)
                .is_some()
        };
        let mut jobs = Vec::new();
        for (job, info) in scheduler.state.task_manager.get_running_job_cache().iter() {
            let graph = info.execution_graph.read().await;
            let moving = graph.available_tasks() > 0
                || graph.running_tasks().iter().any(|t| alive(&t.executor_id));
            jobs.push(JobState {
                job: job.clone(),
                moving,
            });
        }
        for (job, verdict) in watch.look(Instant::now(), scheduler.is_ready(), &jobs) {
            match verdict {
                Verdict::NoExecutors => tracing::warn!(
                    "cancelling job {job}: no executor alive for {NO_EXECUTORS_GRACE:?}"
                ),
                Verdict::Stuck => tracing::warn!(
                    "cancelling job {job}: no task ready or running on a live executor for {STUCK_JOB_GRACE:?}"
                ),
            }
            let _ = scheduler.cancel_job(job).await;
        }
    }
}

/// Where an executor listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// `http://host:port` of the scheduler (see [`super::scheduler_url`]).
    pub scheduler: String,
    /// Address the executor binds and advertises (loopback unless told).
    pub bind_host: String,
    /// Arrow Flight port (results and shuffle reads).
    pub port: u16,
    /// gRPC port (push scheduling; unused with the default pull policy).
    pub grpc_port: u16,
    /// Tasks run at once.
    pub vcores: usize,
    /// Shuffle files; a temporary directory when `None`.
    pub work_dir: Option<String>,
}

/// Runs an executor over `root` until the process ends.
pub async fn run_executor(
    options: ExecutorOptions,
    root: Root,
    models: Arc<dyn ModelSource>,
) -> Result<(), ClusterError> {
    let url = url::Url::parse(&options.scheduler)
        .map_err(|e| ClusterError::bad_url(&options.scheduler, e))?;
    let base = root.base.clone();
    let store = root.object_store();
    let runtime = Arc::new(move |_: &SessionConfig| {
        let env = RuntimeEnvBuilder::new().build()?;
        env.register_object_store(&base, store.clone());
        Ok(Arc::new(env))
    });
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: Some(options.bind_host.clone()),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: url.host_str().unwrap_or("localhost").to_string(),
        scheduler_port: url.port().unwrap_or(super::DEFAULT_PORT),
        scheduler_connect_timeout_seconds: 10,
        vcores: options.vcores.max(1),
        work_dir: options.work_dir.clone(),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: 5,
        task_scheduling_policy: SCHEDULING,
        override_physical_codec: Some(Arc::new(OmegaPhysicalCodec::new(
            Some(root.url().to_string()),
            Some(models),
        ))),
        override_logical_codec: Some(logical_codec()),
        override_runtime_producer: Some(runtime),
        override_config_producer: Some(Arc::new(session_config)),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ClusterError::start("executor", e))
}
