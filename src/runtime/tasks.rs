//! Background tasks: a verb (`sql`, `fit`, `predict`, `score`, `search`,
//! `job`) submitted with the submitter's identity, run by a bounded pool of
//! workers, its record (`_system/runtime/<bucket>/tasks/<id>.json`) kept
//! current: `queued` → `running` → `succeeded` | `failed` | `cancelled`, or
//! `abandoned` when the process that ran it stopped.
//!
//! Contract:
//! - A task runs as whoever submitted it (the same grants, filters, masks).
//! - Cancellation and the timeout stop the work at its next await point and
//!   write nothing partial: every store write commits whole or not at all;
//!   a job's statements before the one stopped stay committed (see `jobs`).
//!   Another process cancels through a marker the owning process polls.
//! - Each process holds a lease (`_system/runtime/owners/<id>.json`,
//!   renewed every lease/3); when a runtime starts, the `queued` and
//!   `running` tasks and runs of owners whose lease ran out are marked
//!   `abandoned`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};

use super::clock::{Clock, SystemClock};
use super::error::RuntimeError;
use super::jobs::{self, JobRun, Jobs, RunStatus};
use super::records::Records;
use crate::engine::Engine;
use crate::models::{FitOptions, Input, TrainingData};
use crate::sql::options_of;
use crate::store::{Object, PutMode, PutOptions, StoreError, WriteHook, WriteTarget};

/// Why a task stops before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    TimedOut(u64),
}

impl Stop {
    pub fn error(self) -> RuntimeError {
        match self {
            Stop::Cancelled => RuntimeError::Cancelled,
            Stop::TimedOut(s) => RuntimeError::TimedOut(s),
        }
    }
}

tokio::task_local! {
    static WRITES: Mutex<Vec<WriteTarget>>;
}

/// Runs `fut`, collecting the objects the store was asked to write meanwhile.
pub(crate) async fn recording_writes<T>(
    fut: impl std::future::Future<Output = T>,
) -> (T, Vec<WriteTarget>) {
    let log = Mutex::new(Vec::new());
    WRITES
        .scope(log, async {
            let out = fut.await;
            let wrote =
                WRITES.with(|w| std::mem::take(&mut *w.lock().unwrap_or_else(|e| e.into_inner())));
            (out, wrote)
        })
        .await
}

/// `bucket/store/name@version` of each target as it stands now.
pub(crate) async fn written_versions(engine: &Engine, targets: &[WriteTarget]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        let version = match engine.bucket(&t.bucket).and_then(|e| e.store(&t.prefix)) {
            Ok(store) => store.metadata(&t.name).await.ok().map(|m| m.version),
            Err(_) => None,
        };
        let s = match version {
            Some(v) => format!("{}/{}/{}@{v}", t.bucket, t.prefix, t.name),
            None => format!("{}/{}/{}", t.bucket, t.prefix, t.name),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Notes each write a task makes (registered once per store; outside a
/// task it does nothing).
pub struct RecordWrites;

#[async_trait]
impl WriteHook for RecordWrites {
    fn name(&self) -> &str {
        "runtime.record_writes"
    }

    async fn check_put(
        &self,
        target: &WriteTarget,
        _kind: &str,
        _session: &SessionContext,
    ) -> crate::store::Result<()> {
        let _ = WRITES.try_with(|w| {
            w.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(target.clone())
        });
        Ok(())
    }

    async fn rewrite_write(
        &self,
        _target: &WriteTarget,
        plan: LogicalPlan,
        _session: &SessionContext,
    ) -> crate::store::Result<LogicalPlan> {
        Ok(plan)
    }
}

/// Who submitted a task (the identity it runs with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitter {
    pub bucket: String,
    pub user: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub owner: bool,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub bound_bucket: String,
}

impl Submitter {
    pub fn of(engine: &Engine) -> Self {
        let o = options_of(engine.session());
        Submitter {
            bucket: engine.bucket_name().to_string(),
            user: o.user.clone(),
            roles: o
                .roles
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect(),
            owner: o.owner,
            read_only: o.read_only,
            bound_bucket: o.bound_bucket.clone(),
        }
    }

    /// Whether this identity sees `record` (its own, or any as the store's owner).
    pub(crate) fn sees(&self, record: &TaskRecord) -> bool {
        self.owner
            || (record.bucket == self.bucket
                && record.submitter.user == self.user
                && record.submitter.roles == self.roles)
    }
}

/// What a task does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum TaskSpec {
    /// One statement or a script.
    Sql { sql: String },
    /// Fits model `model` (its stored spec) on a dataset or a query.
    Fit {
        model: String,
        #[serde(default)]
        dataset: Option<String>,
        #[serde(default)]
        sql: Option<String>,
        /// The label column (supervised algorithms).
        #[serde(default)]
        label: Option<String>,
        /// Feature columns (default: every column but the label).
        #[serde(default)]
        features: Option<Vec<String>>,
    },
    /// Predictions of `model` for every row of `dataset`, stored as dataset `into`.
    Predict {
        model: String,
        dataset: String,
        into: String,
    },
    /// Scores `model` on `dataset` (the metrics are the task's result).
    Score { model: String, dataset: String },
    /// Grid search over `grid` with `folds`-fold cross-validation.
    Search {
        model: String,
        dataset: String,
        grid: serde_json::Map<String, Value>,
        folds: usize,
    },
    /// Runs job `job` (`name@version`) with `params`.
    Job {
        job: String,
        #[serde(default)]
        params: BTreeMap<String, String>,
        /// The run record's key (set by the runtime).
        #[serde(default)]
        run: Option<String>,
        #[serde(default)]
        trigger: Option<String>,
        #[serde(default)]
        instant: Option<DateTime<Utc>>,
    },
}

impl TaskSpec {
    pub fn verb(&self) -> &'static str {
        match self {
            TaskSpec::Sql { .. } => "sql",
            TaskSpec::Fit { .. } => "fit",
            TaskSpec::Predict { .. } => "predict",
            TaskSpec::Score { .. } => "score",
            TaskSpec::Search { .. } => "search",
            TaskSpec::Job { .. } => "job",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TaskSpec::Sql { sql } => sql.chars().take(120).collect(),
            TaskSpec::Fit {
                model,
                dataset,
                sql,
                ..
            } => format!(
                "fit {model} on {}",
                dataset.clone().or(sql.clone()).unwrap_or_default()
            ),
            TaskSpec::Predict {
                model,
                dataset,
                into,
            } => format!("predict {model} on {dataset} into {into}"),
            TaskSpec::Score { model, dataset } => format!("score {model} on {dataset}"),
            TaskSpec::Search { model, dataset, .. } => format!("search {model} on {dataset}"),
            TaskSpec::Job { job, .. } => format!("job {job}"),
        }
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Abandoned,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Abandoned => "abandoned",
        }
    }
}

/// The record of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub bucket: String,
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub submitter: Submitter,
    /// The runtime process that runs it.
    pub owner: String,
    pub submitted: DateTime<Utc>,
    #[serde(default)]
    pub started: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
    #[serde(default)]
    pub progress: Option<String>,
    /// `bucket/store/name@version` of each object it wrote.
    #[serde(default)]
    pub wrote: Vec<String>,
    /// What the verb answered (a count, metrics, a run key).
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<String>,
}

fn task_path<'a>(bucket: &'a str, file: &'a str) -> [&'a str; 3] {
    [bucket, "tasks", file]
}

impl TaskRecord {
    async fn save(&self, records: &Records) -> Result<(), StoreError> {
        let file = format!("{}.json", self.id);
        records
            .put(&task_path(&self.bucket, &file), self, false)
            .await
            .map(|_| ())
    }
}

/// A process's lease on what it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    owner: String,
    renewed: DateTime<Utc>,
    pid: u32,
}

/// How the runtime runs tasks.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Tasks running at once (default: the number of cores).
    pub workers: usize,
    /// A task running longer is stopped (`failed`, "timed out").
    pub timeout: Option<Duration>,
    /// How long a process's lease lasts without renewal.
    pub lease: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            timeout: None,
            lease: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Makes the engine of an identity (given by the layer that owns the store's parts).
pub type EngineFor = Arc<dyn Fn(&Submitter) -> Result<Engine, StoreError> + Send + Sync>;

struct Running {
    stop: watch::Sender<Option<Stop>>,
    bucket: String,
}

pub(crate) struct Inner {
    pub(crate) records: Records,
    pub(crate) owner: String,
    pub(crate) opts: RuntimeOptions,
    engine_for: EngineFor,
    workers: Arc<Semaphore>,
    running: Mutex<HashMap<String, Running>>,
    changed: Notify,
}

/// The task runtime of one store in this process.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("owner", &self.inner.owner)
            .finish()
    }
}

impl Runtime {
    /// A runtime over `root`: takes its lease, marks the tasks of dead
    /// processes `abandoned`, and keeps the lease renewed while it lives.
    pub async fn start(
        root: crate::store::Root,
        engine_for: EngineFor,
        opts: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let inner = Arc::new(Inner {
            records: Records::new(root),
            owner: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            workers: Arc::new(Semaphore::new(opts.workers.max(1))),
            opts,
            engine_for,
            running: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        });
        let rt = Runtime { inner };
        rt.renew().await?;
        rt.recover().await?;
        let weak = Arc::downgrade(&rt.inner);
        let every = (rt.inner.opts.lease / 3).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every.min(Duration::from_secs(1))).await;
                let Some(inner) = weak.upgrade() else { return };
                let rt = Runtime { inner };
                let _ = rt.poll_cancellations().await;
                let _ = rt.renew().await;
            }
        });
        Ok(rt)
    }

    /// This process's id in records (`owner`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.opts.clock
    }

    pub(crate) fn records(&self) -> &Records {
        &self.inner.records
    }

    async fn renew(&self) -> Result<(), StoreError> {
        let lease = Lease {
            owner: self.inner.owner.clone(),
            renewed: self.inner.opts.clock.now(),
            pid: std::process::id(),
        };
        let file = format!("{}.json", self.inner.owner);
        self.inner
            .records
            .put(&["owners", &file], &lease, false)
            .await
            .map(|_| ())
    }

    async fn lease_alive(&self, owner: &str) -> Result<bool, StoreError> {
        if owner == self.inner.owner {
            return Ok(true);
        }
        let file = format!("{owner}.json");
        let lease: Option<Lease> = self.inner.records.get(&["owners", &file]).await?;
        let now = self.inner.opts.clock.now();
        let ttl = chrono::Duration::from_std(self.inner.opts.lease).unwrap_or_default();
        Ok(lease.is_some_and(|l| now - l.renewed < ttl))
    }

    /// Marks the tasks and runs of owners whose lease ran out `abandoned`.
    pub async fn recover(&self) -> Result<usize, RuntimeError> {
        let mut n = 0;
        let now = self.inner.opts.clock.now();
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut locations = self.inner.records.locations_of_kind("tasks").await?;
        locations.extend(self.inner.records.locations_of_kind("runs").await?);
        for loc in locations {
            let kind = loc.get(1).map(String::as_str);
            let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
            if kind == Some("tasks") {
                let Ok(Some(mut t)) = self.inner.records.get::<TaskRecord>(&refs).await else {
                    continue;
                };
                if t.status.is_final() {
                    continue;
                }
                if !self.alive(&mut alive, &t.owner).await? {
                    t.status = TaskStatus::Abandoned;
                    t.finished = Some(now);
                    t.error = Some(format!(
                        "the process that ran it (runtime {}) stopped",
                        t.owner
                    ));
                    t.save(&self.inner.records).await?;
                    n += 1;
                }
            } else {
                let Ok(Some(mut r)) = self.inner.records.get::<JobRun>(&refs).await else {
                    continue;
                };
                if r.status != RunStatus::Running {
                    continue;
                }
                if !self.alive(&mut alive, &r.owner).await? {
                    r.status = RunStatus::Abandoned;
                    r.finished = Some(now);
                    r.error = Some(format!(
                        "the process that ran it (runtime {}) stopped",
                        r.owner
                    ));
                    r.save(&self.inner.records).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn alive(
        &self,
        cache: &mut HashMap<String, bool>,
        owner: &str,
    ) -> Result<bool, StoreError> {
        if let Some(a) = cache.get(owner) {
            return Ok(*a);
        }
        let a = self.lease_alive(owner).await?;
        cache.insert(owner.to_string(), a);
        Ok(a)
    }

    /// Stops tasks of this process that another process asked to cancel.
    async fn poll_cancellations(&self) -> Result<(), StoreError> {
        let buckets: Vec<String> = {
            let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
            let mut b: Vec<String> = running.values().map(|r| r.bucket.clone()).collect();
            b.sort();
            b.dedup();
            b
        };
        for bucket in buckets {
            for loc in self.inner.records.locations(&[&bucket, "cancel"]).await? {
                let Some(id) = loc.last().and_then(|f| f.strip_suffix(".json")) else {
                    continue;
                };
                self.stop_local(id, Stop::Cancelled);
            }
        }
        Ok(())
    }

    fn stop_local(&self, id: &str, why: Stop) -> bool {
        let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(id) {
            Some(r) => {
                let _ = r.stop.send(Some(why));
                true
            }
            None => false,
        }
    }

    /// Submits `spec` as `engine`'s identity. Bad input (an unknown job, a
    /// missing or mistyped parameter) is refused here, before a record exists.
    pub async fn submit(
        &self,
        engine: &Engine,
        spec: TaskSpec,
    ) -> Result<TaskHandle, RuntimeError> {
        let submitter = Submitter::of(engine);
        let spec = self.prepare(engine, spec).await?;
        let record = TaskRecord {
            id: uuid::Uuid::new_v4().simple().to_string(),
            bucket: submitter.bucket.clone(),
            spec,
            status: TaskStatus::Queued,
            submitter,
            owner: self.inner.owner.clone(),
            submitted: self.inner.opts.clock.now(),
            started: None,
            finished: None,
            progress: None,
            wrote: vec![],
            result: Value::Null,
            error: None,
        };
        self.launch(engine.clone(), record, None).await
    }

    /// Checks what can be checked before running (jobs: exists, parameters bind).
    /// A submitted job is a manual run: what only the scheduler sets (the
    /// claimed run record, its trigger and instant) is not taken from callers.
    async fn prepare(&self, engine: &Engine, spec: TaskSpec) -> Result<TaskSpec, RuntimeError> {
        match spec {
            TaskSpec::Job { job, params, .. } => {
                let (meta, script) = Jobs::new(engine.clone()).get(&job).await?;
                jobs::bind(&meta.name, &script, &params)?;
                Ok(TaskSpec::Job {
                    job,
                    params,
                    run: None,
                    trigger: None,
                    instant: None,
                })
            }
            other => Ok(other),
        }
    }

    /// Writes the queued record and starts the task; `run` is a claimed
    /// run record (a scheduled job).
    pub(crate) async fn launch(
        &self,
        engine: Engine,
        record: TaskRecord,
        run: Option<JobRun>,
    ) -> Result<TaskHandle, RuntimeError> {
        record.save(&self.inner.records).await?;
        let (stop, stop_rx) = watch::channel(None);
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                record.id.clone(),
                Running {
                    stop,
                    bucket: record.bucket.clone(),
                },
            );
        let handle = TaskHandle {
            id: record.id.clone(),
            bucket: record.bucket.clone(),
            rt: self.clone(),
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(run_task(weak, engine, record, run, stop_rx));
        Ok(handle)
    }

    /// The record of task `id` in `bucket`.
    pub async fn record(&self, bucket: &str, id: &str) -> Result<TaskRecord, RuntimeError> {
        valid_id(id)?;
        let file = format!("{id}.json");
        self.inner
            .records
            .get(&task_path(bucket, &file))
            .await?
            .ok_or_else(|| RuntimeError::UnknownTask(id.to_string()))
    }

    /// Every task record of `bucket` (all buckets when `None`), newest first.
    pub async fn records_of(&self, bucket: Option<&str>) -> Result<Vec<TaskRecord>, RuntimeError> {
        let mut out: Vec<TaskRecord> = Vec::new();
        let locations = match bucket {
            Some(b) => self.inner.records.locations(&[b, "tasks"]).await?,
            None => self.inner.records.locations_of_kind("tasks").await?,
        };
        for loc in locations {
            let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
            if let Ok(Some(t)) = self.inner.records.get::<TaskRecord>(&refs).await {
                out.push(t);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.submitted));
        Ok(out)
    }

    /// Asks task `id` to stop: directly when this process runs it, through
    /// a marker its process polls otherwise.
    pub async fn cancel(&self, bucket: &str, id: &str) -> Result<TaskRecord, RuntimeError> {
        let record = self.record(bucket, id).await?;
        if record.status.is_final() {
            return Ok(record);
        }
        if !self.stop_local(id, Stop::Cancelled) {
            let file = format!("{id}.json");
            self.inner
                .records
                .put(&[bucket, "cancel", &file], &json!({"id": id}), false)
                .await?;
        }
        Ok(record)
    }

    /// Waits until task `id` is final.
    pub async fn wait(&self, bucket: &str, id: &str) -> Result<TaskRecord, RuntimeError> {
        loop {
            let notified = self.inner.changed.notified();
            let record = self.record(bucket, id).await?;
            if record.status.is_final() {
                return Ok(record);
            }
            let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
        }
    }

    /// Waits until no task of this process runs.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.changed.notified();
            if self
                .inner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
        }
    }

    pub(crate) fn engine_for(&self, who: &Submitter) -> Result<Engine, StoreError> {
        (self.inner.engine_for)(who)
    }
}

fn valid_id(id: &str) -> Result<(), RuntimeError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(RuntimeError::UnknownTask(id.to_string()));
    }
    Ok(())
}

/// A submitted task.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    pub id: String,
    pub bucket: String,
    rt: Runtime,
}

impl TaskHandle {
    pub async fn status(&self) -> Result<TaskRecord, RuntimeError> {
        self.rt.record(&self.bucket, &self.id).await
    }

    pub async fn wait(&self) -> Result<TaskRecord, RuntimeError> {
        self.rt.wait(&self.bucket, &self.id).await
    }

    pub async fn cancel(&self) -> Result<TaskRecord, RuntimeError> {
        self.rt.cancel(&self.bucket, &self.id).await
    }
}

/// The runtime as one identity uses it (what `Omega::runtime()` returns).
#[derive(Clone)]
pub struct Tasks {
    rt: Runtime,
    engine: Engine,
}

impl Tasks {
    pub fn new(rt: Runtime, engine: Engine) -> Self {
        Self { rt, engine }
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    pub async fn submit(&self, spec: TaskSpec) -> Result<TaskHandle, RuntimeError> {
        self.rt.submit(&self.engine, spec).await
    }

    fn me(&self) -> Submitter {
        Submitter::of(&self.engine)
    }

    /// Task `id`, if this identity may see it.
    pub async fn status(&self, id: &str) -> Result<TaskRecord, RuntimeError> {
        let r = self.rt.record(self.engine.bucket_name(), id).await?;
        if !self.me().sees(&r) {
            return Err(RuntimeError::UnknownTask(id.to_string()));
        }
        Ok(r)
    }

    pub async fn wait(&self, id: &str) -> Result<TaskRecord, RuntimeError> {
        self.status(id).await?;
        self.rt.wait(self.engine.bucket_name(), id).await
    }

    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, RuntimeError> {
        self.status(id).await?;
        self.rt.cancel(self.engine.bucket_name(), id).await
    }

    /// The tasks this identity may see, newest first.
    pub async fn list(&self) -> Result<Vec<TaskRecord>, RuntimeError> {
        let me = self.me();
        let bucket = (!me.owner).then(|| self.engine.bucket_name().to_string());
        Ok(self
            .rt
            .records_of(bucket.as_deref())
            .await?
            .into_iter()
            .filter(|r| me.sees(r))
            .collect())
    }

    /// The jobs of this identity's bucket.
    pub fn jobs(&self) -> Jobs {
        Jobs::new(self.engine.clone())
    }

    /// The schedules of this identity's bucket.
    pub fn schedules(&self) -> super::schedules::Schedules {
        super::schedules::Schedules::new(self.rt.clone(), self.engine.clone())
    }

    /// Runs job `name` now (as a task) with `params`.
    pub async fn run_job(
        &self,
        name: &str,
        params: BTreeMap<String, String>,
    ) -> Result<TaskHandle, RuntimeError> {
        self.submit(TaskSpec::Job {
            job: name.to_string(),
            params,
            run: None,
            trigger: None,
            instant: None,
        })
        .await
    }
}

/// The life of one task: wait for a worker, run, write the final record.
async fn run_task(
    weak: Weak<Inner>,
    engine: Engine,
    mut record: TaskRecord,
    run: Option<JobRun>,
    mut stop: watch::Receiver<Option<Stop>>,
) {
    let Some(inner) = weak.upgrade() else { return };
    let workers = inner.workers.clone();
    let timeout = inner.opts.timeout;
    drop(inner);
    let permit = tokio::select! {
        p = workers.acquire_owned() => p.ok(),
        _ = stop.wait_for(|s| s.is_some()) => None,
    };
    let Some(inner) = weak.upgrade() else { return };
    let rt = Runtime { inner };
    let records = rt.inner.records.clone();
    let clock = rt.inner.opts.clock.clone();
    if permit.is_some() {
        record.status = TaskStatus::Running;
        record.started = Some(clock.now());
        let _ = record.save(&records).await;
        // the timeout is a stop like a cancellation
        let stopper = rt
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&record.id)
            .map(|r| r.stop.clone());
        let timer = match (timeout, stopper) {
            (Some(t), Some(s)) => Some(tokio::spawn(async move {
                tokio::time::sleep(t).await;
                let _ = s.send(Some(Stop::TimedOut(t.as_secs())));
            })),
            _ => None,
        };
        // progress a verb reports is saved as it comes (the newest wins);
        // the saver ends when the verb drops its sender, and is awaited
        // before the final record is written: aborting it could leave a
        // save under way (a local write runs on a blocking thread that an
        // abort does not stop) to land after the final record and show a
        // finished task as running
        let (progress, mut reported) = watch::channel(None::<String>);
        let saver = {
            let mut current = record.clone();
            let records = records.clone();
            tokio::spawn(async move {
                while reported.changed().await.is_ok() {
                    current.progress = reported.borrow_and_update().clone();
                    let _ = current.save(&records).await;
                }
            })
        };
        let (outcome, wrote) = Box::pin(recording_writes(execute(
            &rt,
            &engine,
            &mut record,
            run,
            stop.clone(),
            progress,
        )))
        .await;
        let _ = saver.await;
        if let Some(t) = timer {
            t.abort();
        }
        match outcome {
            Ok(result) => {
                record.status = TaskStatus::Succeeded;
                record.result = result;
            }
            Err(RuntimeError::Cancelled) => {
                record.status = TaskStatus::Cancelled;
                record.error = Some("cancelled".into());
            }
            Err(e) => {
                record.status = TaskStatus::Failed;
                record.error = Some(e.to_string());
            }
        }
        // a job lists its writes per statement already
        if record.wrote.is_empty() {
            record.wrote = written_versions(&engine, &wrote).await;
        }
    } else {
        record.status = TaskStatus::Cancelled;
        record.error = Some("cancelled before it started".into());
    }
    record.finished = Some(clock.now());
    record.progress = None;
    let _ = record.save(&records).await;
    let file = format!("{}.json", record.id);
    let _ = records.delete(&[&record.bucket, "cancel", &file]).await;
    rt.inner
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&record.id);
    rt.inner.changed.notify_waiters();
    drop(permit);
}

/// Stops `fut` when `stop` says so.
async fn stoppable<T>(
    fut: impl std::future::Future<Output = Result<T, RuntimeError>>,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Result<T, RuntimeError> {
    tokio::select! {
        r = fut => r,
        s = stop.wait_for(|s| s.is_some()) => {
            Err(s.map(|s| s.unwrap_or(Stop::Cancelled)).unwrap_or(Stop::Cancelled).error())
        }
    }
}

/// Runs the verb; its result (what the record keeps).
async fn execute(
    rt: &Runtime,
    engine: &Engine,
    record: &mut TaskRecord,
    run: Option<JobRun>,
    mut stop: watch::Receiver<Option<Stop>>,
    progress: watch::Sender<Option<String>>,
) -> Result<Value, RuntimeError> {
    let models = crate::models::Models::new(engine);
    match record.spec.clone() {
        TaskSpec::Sql { sql } => {
            stoppable(
                async {
                    let df = Box::pin(crate::sql::execute::run(engine, &sql, &[])).await?;
                    let batches = Box::pin(df.collect()).await?;
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    Ok(json!({ "rows": rows }))
                },
                &mut stop,
            )
            .await
        }
        TaskSpec::Fit {
            model,
            dataset,
            sql,
            label,
            features,
        } => {
            let mut data = match (dataset, sql) {
                (Some(d), _) => TrainingData::dataset(&d),
                (None, Some(q)) => TrainingData::sql(&q),
                (None, None) => {
                    return Err(RuntimeError::Invalid {
                        what: "fit task",
                        value: model,
                        reason: "give a dataset or a query to fit on".into(),
                    });
                }
            };
            data.label = label;
            data.features = features;
            let report = stoppable(
                async {
                    Ok(models
                        .fit(&model, data, None, FitOptions::default())
                        .await?)
                },
                &mut stop,
            )
            .await?;
            Ok(json!({
                "model": format!("{}@{}", report.meta.name, report.meta.version),
                "rows": report.rows,
                "metrics": report.metrics.into_iter().collect::<BTreeMap<_, _>>(),
            }))
        }
        TaskSpec::Predict {
            model,
            dataset,
            into,
        } => stoppable(
            async {
                let batches = models.predict(&model, Input::Dataset(dataset)).await?;
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let obj = Object::from_batches(batches)?;
                let meta = engine
                    .datasets()
                    .put(
                        obj,
                        &into,
                        PutOptions {
                            mode: PutMode::Overwrite,
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok(json!({ "rows": rows, "dataset": format!("{}@{}", meta.name, meta.version) }))
            },
            &mut stop,
        )
        .await,
        TaskSpec::Score { model, dataset } => {
            let metrics = stoppable(
                async { Ok(models.score(&model, Input::Dataset(dataset)).await?) },
                &mut stop,
            )
            .await?;
            Ok(json!({ "metrics": metrics.into_iter().collect::<BTreeMap<_, _>>() }))
        }
        TaskSpec::Search {
            model,
            dataset,
            grid,
            folds,
        } => {
            let report = stoppable(
                async {
                    Ok(models
                        .search(
                            &model,
                            TrainingData::dataset(&dataset),
                            &grid,
                            folds,
                            FitOptions::default(),
                        )
                        .await?)
                },
                &mut stop,
            )
            .await?;
            Ok(json!({ "model": format!("{}@{}", report.meta.name, report.meta.version) }))
        }
        TaskSpec::Job {
            job,
            params,
            trigger,
            instant,
            ..
        } => {
            let jobs = Jobs::new(engine.clone());
            let (meta, script) = jobs.get(&job).await?;
            let mut run = match run {
                Some(r) => r,
                None => {
                    let now = rt.inner.opts.clock.now();
                    let r = JobRun {
                        bucket: meta.bucket.clone(),
                        job: meta.name.clone(),
                        version: meta.version,
                        key: jobs::manual_key(now),
                        trigger: trigger.unwrap_or_else(|| "manual".into()),
                        instant,
                        status: RunStatus::Running,
                        task: Some(record.id.clone()),
                        owner: rt.inner.owner.clone(),
                        params: params.clone(),
                        started: now,
                        finished: None,
                        statements: vec![],
                        error: None,
                    };
                    r.save(&rt.inner.records).await?;
                    r
                }
            };
            run.version = meta.version;
            run.task = Some(record.id.clone());
            record.result = json!({ "run": run.key });
            let records = rt.inner.records.clone();
            let outcome = async {
                let values = jobs::bind(&meta.name, &script, &params)?;
                let statements = jobs::statements(&meta.name, &script)?;
                let progress = |p: String| {
                    progress.send_replace(Some(p));
                };
                jobs::run_statements(
                    engine, &records, &mut run, statements, values, stop, progress,
                )
                .await
            }
            .await;
            run.finished = Some(rt.inner.opts.clock.now());
            match &outcome {
                Ok(()) => run.status = RunStatus::Succeeded,
                Err(RuntimeError::Cancelled) => run.status = RunStatus::Cancelled,
                Err(e) => {
                    run.status = RunStatus::Failed;
                    run.error = Some(e.to_string());
                }
            }
            run.save(&records).await?;
            record.wrote = run
                .statements
                .iter()
                .flat_map(|s| s.wrote.clone())
                .collect();
            outcome?;
            Ok(json!({ "run": run.key, "statements": run.statements.len() }))
        }
    }
}
