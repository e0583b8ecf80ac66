//! Query execution by age, so that short queries do not wait behind long ones.
//!
//! Each query the server streams runs on an executor of its own: a small
//! tokio runtime whose threads (workers and blocking threads) carry only
//! that query's operators. The query starts young and moves to older age
//! classes as it computes ([`AGES`]): its age is the CPU
//! time its executor's threads have used since it started (2 ms, 100 ms), or
//! its time since it started (1 s, 10 s), whichever comes first. While a
//! younger query runs, an older one's threads are `nice 19`, so
//! the kernel's scheduler gives a young query (a point lookup, `SELECT 1`)
//! the cores ahead of old ones. The youngest queries running always have the
//! young priority: an old query alone runs at full speed, also against
//! other processes on the machine (a client on the same host). This is the
//! multi-level feedback queue of OS schedulers applied per query, without
//! guessing a query's cost from its plan.
//!
//! Why CPU time rather than time since start: under load a point lookup
//! waits for a core, and a lookup that had waited 20 ms used to be demoted
//! behind every newer query and wait longer still (HTTP lookups under 32
//! clients: p50 21 ms, p99 65 ms). Waiting uses no CPU, so now it keeps its
//! youth; a query that computes (an aggregate over a table) loses it after
//! a few milliseconds of work whatever the load. The time since start still
//! ages a query that mostly waits (on a remote store), so that it takes a
//! worker (below) before it has held its memory for long.
//!
//! A young query needs no worker: it starts at once. Past its first age a
//! query goes on only with one of the server's workers (`--workers`), so at
//! most that many old queries run (and hold memory) at once, while short
//! ones never queue behind them.
//!
//! Every query runs [`YOUNG_NICE`] levels below the server's own threads
//! (the work of handling requests), and ages from there.
//!
//! Executors are reused: when a query ends, its threads get their priority
//! back and the executor waits for the next query ([`IDLE_KEEP_ALIVE`] at
//! most; then it is shut down). Giving a thread its priority back needs
//! `CAP_SYS_NICE` or an `RLIMIT_NICE` of 15 (`ulimit -e 15`, systemd
//! `LimitNICE=15`); a process without it does not renice queries by age (an
//! executor left at `nice 19` would slow every later query on it) but still
//! runs them below its own threads, and [`Lanes::aging`] says so for the
//! startup line; queries still take a worker by age. Elsewhere than Linux
//! ages count time since start only and queries are not reniced.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::{AbortHandle, JoinHandle};

/// How many nice levels below the server's own threads (requests read,
/// keys checked, store records and policies read, plans made, answers
/// encoded) a young query runs. Under load, that work for a new request
/// (a few short steps, each a hand-off between threads) otherwise waits
/// behind the execution of every query running: HTTP point lookups under
/// 32 clients spent 20 of their 24 ms there (p50), and 7 of 11 with this.
pub const YOUNG_NICE: i32 = 5;

/// An age class: a query enters it once its executor's threads have used
/// `cpu` of CPU time since it started, or `wall` has passed since then;
/// from then on its threads are `nice` above the process's while a younger
/// query runs.
#[derive(Debug, Clone, Copy)]
pub struct Age {
    pub cpu: Duration,
    pub wall: Duration,
    pub nice: i32,
}

/// The age classes past youth, youngest first (see the module doc). A point
/// lookup computes for about 1 ms; an aggregate over a million rows for
/// tens of milliseconds. Past 2 ms a query is at the bottom at once: with a
/// middle class at `nice 10` (past 5 ms), running aggregates took a lookup's
/// cores (the kernel shares a core by weight, and eight `nice 10` threads
/// outweigh one `nice 5` thread 880 to 335): HTTP lookups under 32 clients
/// had p50 7.1 ms, 4.4 ms with this. The second class renices nothing
/// further; the ager stops polling once every running query is in it.
pub const AGES: [Age; 2] = [
    Age {
        cpu: Duration::from_millis(2),
        wall: Duration::from_secs(1),
        nice: 19,
    },
    Age {
        cpu: Duration::from_millis(100),
        wall: Duration::from_secs(10),
        nice: 19,
    },
];

/// How often the running queries' CPU time is read. A query's class may
/// lag its CPU time by this much.
pub const AGE_POLL: Duration = Duration::from_millis(2);

/// Blocking threads (file reads and syncs, through `spawn_blocking`) a
/// query's executor may have; more blocking calls wait for one. Tokio's
/// default is 512 per runtime, and every executor is a runtime: under a
/// 32-client load the server grew to 800 threads and their stacks and
/// malloc caches to hundreds of MiB of resident memory (BENCHMARKS.md). A
/// query's scan keeps a few reads in flight per partition; 8 is plenty on
/// any core count a query executor gets. Only for queries: a query's
/// execution reads files and does not wait in a blocking thread for other
/// blocking work (the Delta log was read when it was planned). The one
/// exception: delta-rs's own scan (tables with deletion vectors) loads the
/// vectors in blocking threads, whose reads of a local file up to 256 KiB
/// are made in place (`store::inline_reads`), without a second thread.
pub const BLOCKING_THREADS: usize = 8;
/// Blocking threads of an executor that runs a write ([`Lanes::run`]):
/// tokio's default. Writes drive deltalake's kernel, which reads the Delta
/// log in a blocking thread that waits for reads needing blocking threads
/// of their own (a local store's listings and large reads): with a small
/// pool, a few such reads at once took every thread and waited for each
/// other forever (24 tables appended at once with 8 threads: a deadlock).
/// Threads are started only as they are needed.
pub const WRITE_BLOCKING_THREADS: usize = 512;
/// How long an idle blocking thread of an executor waits for work (tokio's
/// default: 10 s); executors are many and mostly idle.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How long an executor may wait unused before it is shut down. A burst of
/// concurrent queries leaves as many executors behind (32 clients: about
/// 33, each with its worker threads and their memory); a steady load keeps
/// reusing the ones it needs.
pub const IDLE_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Executors for the server's queries (see the module doc).
pub struct Lanes {
    idle: Mutex<Vec<Executor>>,
    /// The queries running now, with their age classes.
    running: Mutex<Vec<Arc<Aging>>>,
    /// Workers: what a query past its first age holds while it goes on.
    workers: Arc<Semaphore>,
    threads: usize,
    /// How long an executor may wait unused ([`IDLE_KEEP_ALIVE`]).
    keep_alive: Duration,
    /// The age classes ([`AGES`]).
    ages: [Age; 2],
    /// Whether old queries are reniced (see the module doc).
    aging: bool,
    /// Wakes the ager when a query starts.
    wake: Arc<Notify>,
    /// The task that reads the running queries' CPU time and ages them.
    ager: Mutex<Option<JoinHandle<()>>>,
    /// A young query's nice value: the process's plus [`YOUNG_NICE`].
    young: i32,
    /// The process's own nice value, which ages add to.
    base: i32,
}

impl Lanes {
    /// Executors of `threads` worker threads each, made as queries need
    /// them (as many as run at once, which the server's workers bound) and
    /// kept for the next ones.
    pub fn new(threads: usize, workers: Arc<Semaphore>) -> Self {
        let base = priority::current_nice();
        let young = (base + YOUNG_NICE).min(19);
        Lanes {
            idle: Mutex::new(Vec::new()),
            running: Mutex::new(Vec::new()),
            workers,
            threads: threads.max(1),
            keep_alive: IDLE_KEEP_ALIVE,
            ages: AGES,
            aging: priority::can_restore(young),
            wake: Arc::new(Notify::new()),
            ager: Mutex::new(None),
            young,
            base,
        }
    }

    /// Executors unused for `keep_alive` are shut down (instead of
    /// [`IDLE_KEEP_ALIVE`]).
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Age classes `ages` instead of [`AGES`].
    #[cfg(test)]
    fn with_ages(mut self, ages: [Age; 2]) -> Self {
        self.ages = ages;
        self
    }

    /// Whether queries lose priority as they age (see the module doc).
    pub fn aging(&self) -> bool {
        self.aging
    }

    /// Runs `plan` on an executor of its own; the stream's batches are
    /// computed there. Dropping the stream cancels the query.
    pub fn execute(
        self: &Arc<Self>,
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if constant(plan.as_ref()) {
            // one row of expressions (`SELECT 1`): nothing to age or to isolate
            return execute_stream(plan, context);
        }
        let executor = self.take(BLOCKING_THREADS)?;
        let schema = plan.schema();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let workers = self.workers.clone();
        let (aged, mut class) = watch::channel(0);
        let task = executor.runtime().spawn(async move {
            let mut stream = match execute_stream(plan, context) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut worker = None;
            loop {
                let next = if worker.is_some() {
                    stream.next().await
                } else {
                    tokio::select! {
                        biased;
                        // the class only grows: its first change ends youth
                        _ = class.changed() => {
                            // no longer young: go on with a worker, waiting for one
                            match workers.clone().acquire_owned().await {
                                Ok(permit) => worker = Some(permit),
                                Err(_) => {
                                    let e = DataFusionError::Execution("the server is shutting down".into());
                                    let _ = tx.send(Err(e)).await;
                                    return;
                                }
                            }
                            continue;
                        }
                        next = stream.next() => next,
                    }
                };
                let Some(batch) = next else { return };
                if tx.send(batch).await.is_err() {
                    return; // the client went away: dropping the stream cancels the query
                }
            }
        });
        let mut lease = self.lease(executor, task.abort_handle(), aged);
        let batches = futures::stream::poll_fn(move |cx| {
            // the whole lease moves into the stream (not just `ended`): it
            // holds the executor until the stream is dropped
            let lease = &mut lease;
            let next = rx.poll_recv(cx);
            if let std::task::Poll::Ready(None) = next {
                lease.ended = true;
            }
            next
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    /// Runs `work` (a write, a model fit: work that is not a query plan) on
    /// an executor of its own, aged like a query: past its first age it
    /// yields the cores to younger queries. Dropping the returned future
    /// cancels `work` at its next await point, as dropping it would
    /// in place.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl Future<Output = T> + Send + 'static,
    ) -> DfResult<T> {
        let executor = self.take(WRITE_BLOCKING_THREADS)?;
        let task = executor.runtime().spawn(work);
        let mut lease = self.lease(executor, task.abort_handle(), watch::channel(0).0);
        let out = task.await;
        lease.ended = true;
        match out {
            Ok(out) => Ok(out),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DataFusionError::Execution(format!(
                "the work was cancelled: {e}"
            ))),
        }
    }

    /// Registers the work `task` runs on `executor` among the running
    /// queries, where the ager tells `aged` its age class as it changes.
    fn lease(
        self: &Arc<Self>,
        executor: Executor,
        task: AbortHandle,
        aged: watch::Sender<usize>,
    ) -> Lease {
        let aging = Arc::new(Aging {
            class: aged,
            started: Instant::now(),
            cpu: Mutex::new(CpuUse::start(&executor.threads)),
            threads: executor.threads.clone(),
        });
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(aging.clone());
        self.rebalance();
        // the ager may be waiting: nothing ran, or nothing could age further
        self.wake.notify_one();
        self.start_ager();
        Lease {
            lanes: self.clone(),
            executor: Some(executor),
            aging,
            task,
            ended: false,
        }
    }

    /// Starts the ager on the calling runtime (the server's) unless it runs.
    fn start_ager(self: &Arc<Self>) {
        let mut ager = self.ager.lock().unwrap_or_else(|p| p.into_inner());
        if ager.as_ref().is_some_and(|a| !a.is_finished()) {
            return;
        }
        let (lanes, wake) = (Arc::downgrade(self), self.wake.clone());
        *ager = Some(tokio::spawn(async move {
            loop {
                // holds the lanes only between waits, so that they can go
                let idle = {
                    let Some(lanes) = lanes.upgrade() else { return };
                    lanes.age_running()
                };
                if idle {
                    wake.notified().await;
                } else {
                    tokio::time::sleep(AGE_POLL).await;
                }
            }
        }));
    }

    /// Moves each running query to the age class its CPU time and time
    /// since start have reached; true when none can age further (none
    /// runs, or all are in the oldest class): the ager then waits for the
    /// next query instead of polling.
    fn age_running(&self) -> bool {
        let (changed, settled) = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let (mut changed, mut settled) = (false, true);
            for aging in running.iter() {
                let class = aging.class();
                if class == self.ages.len() {
                    continue; // the oldest already
                }
                let cpu = aging.cpu_used();
                let wall = aging.started.elapsed();
                let reached = self
                    .ages
                    .iter()
                    .take_while(|a| cpu >= a.cpu || wall >= a.wall)
                    .count();
                if reached > class {
                    aging.class.send_replace(reached);
                    changed = true;
                }
                settled &= reached == self.ages.len();
            }
            (changed, settled)
        };
        if changed {
            self.rebalance();
        }
        settled
    }

    /// Gives each running query the priority of its age class when a
    /// younger query runs, the young one otherwise (see the module doc).
    fn rebalance(&self) {
        if !self.aging {
            return;
        }
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let youngest = running.iter().map(|a| a.class()).min().unwrap_or(0);
        for aging in running.iter() {
            let nice = match aging.class() {
                c if c > youngest => self.nice_of(c),
                _ => self.young,
            };
            aging.threads.set_nice(nice);
        }
    }

    /// The nice value of age class `class` (0: young) while a younger
    /// query runs.
    fn nice_of(&self, class: usize) -> i32 {
        match class {
            0 => self.young,
            c => (self.base + self.ages[c - 1].nice).clamp(self.young, 19),
        }
    }

    /// An executor with `blocking` blocking threads at most: the one of
    /// them to go idle last, or a new one.
    fn take(&self, blocking: usize) -> DfResult<Executor> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = idle.iter().rposition(|e| e.blocking == blocking) {
                // removed in place: the others stay in the order they went idle
                return Ok(idle.remove(i));
            }
        }
        Executor::new(self.threads, blocking, self.young)
            .map_err(|e| DataFusionError::Execution(format!("cannot start a query executor: {e}")))
    }

    fn give_back(&self, mut executor: Executor) {
        if !executor.threads.set_nice(self.young) {
            return; // cannot be made young again: dropped
        }
        executor.idle_since = Instant::now();
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(executor);
        self.retire_idle();
    }

    /// Shuts down the executors unused for the keep-alive or longer;
    /// returns how many. Each query's end calls it, and the server now and
    /// then, so that executors left by a burst go even when no query comes.
    pub fn retire_idle(&self) -> usize {
        let unused_for = self.keep_alive;
        let retired: Vec<Executor> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            // pushed as they go idle and taken from the end: oldest first
            let young = idle
                .iter()
                .position(|e| e.idle_since.elapsed() < unused_for)
                .unwrap_or(idle.len());
            idle.drain(..young).collect()
        };
        retired.len() // dropped here, outside the lock
    }
}

/// Whether `plan` only computes expressions over one row or none (`SELECT
/// 1`, `SELECT now()`): projections over a placeholder or empty row.
fn constant(plan: &dyn ExecutionPlan) -> bool {
    let node = plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<PlaceholderRowExec>().is_some()
        || plan.downcast_ref::<EmptyExec>().is_some();
    node && plan.children().into_iter().all(|c| constant(c.as_ref()))
}

/// A running query's age class and the threads it runs on.
struct Aging {
    /// 0: young; `i + 1`: past `AGES[i]`. The query watches it (it takes
    /// a worker once past youth).
    class: watch::Sender<usize>,
    started: Instant,
    cpu: Mutex<CpuUse>,
    threads: Arc<Threads>,
}

impl Aging {
    fn class(&self) -> usize {
        *self.class.borrow()
    }

    /// CPU time the query's threads have used since it started.
    fn cpu_used(&self) -> Duration {
        let tids = self.threads.tids.lock().unwrap_or_else(|p| p.into_inner());
        self.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&tids)
    }
}

/// The CPU time an executor's threads used while leased: each thread's
/// clock as last read. A thread started during the lease (a blocking read)
/// counts from zero; one that ended keeps what was counted of it.
struct CpuUse {
    seen: Vec<(i32, Duration)>,
    used: Duration,
}

impl CpuUse {
    fn start(threads: &Threads) -> Self {
        let tids = threads.tids.lock().unwrap_or_else(|p| p.into_inner());
        CpuUse {
            seen: tids
                .iter()
                .filter_map(|t| priority::cpu_time(*t).map(|c| (*t, c)))
                .collect(),
            used: Duration::ZERO,
        }
    }

    fn update(&mut self, tids: &[i32]) -> Duration {
        let mut seen = Vec::with_capacity(tids.len());
        for &tid in tids {
            let Some(now) = priority::cpu_time(tid) else {
                continue;
            };
            let before = self
                .seen
                .iter()
                .find(|(t, _)| *t == tid)
                .map_or(Duration::ZERO, |(_, c)| *c);
            self.used += now.saturating_sub(before);
            seen.push((tid, now));
        }
        self.seen = seen;
        self.used
    }
}

/// One query's hold on an executor.
struct Lease {
    lanes: Arc<Lanes>,
    executor: Option<Executor>,
    /// Its entry among the running queries.
    aging: Arc<Aging>,
    task: AbortHandle,
    /// The query sent its last batch (its task is done with the executor).
    ended: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // no longer running: older queries may get their priority back
        self.lanes
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|a| !Arc::ptr_eq(a, &self.aging));
        self.lanes.rebalance();
        let Some(executor) = self.executor.take() else {
            return;
        };
        if self.ended || self.task.is_finished() {
            self.lanes.give_back(executor);
        } else {
            // still running (the client left mid-query): cancelled with its
            // executor rather than sharing the executor with the next query
            self.task.abort();
        }
    }
}

/// The OS threads of an executor and the nice value they have.
struct Threads {
    tids: Mutex<Vec<i32>>,
    nice: AtomicI32,
}

impl Threads {
    /// Gives every thread `nice` (no system call when they have it); false
    /// when a thread refused.
    fn set_nice(&self, nice: i32) -> bool {
        if self.nice.load(Ordering::Relaxed) == nice {
            return true;
        }
        let tids = self.tids.lock().unwrap_or_else(|p| p.into_inner());
        let ok = priority::set_all(&tids, nice);
        if ok {
            self.nice.store(nice, Ordering::Relaxed);
        }
        ok
    }
}

/// A tokio runtime and the OS threads it runs on.
struct Executor {
    runtime: Option<tokio::runtime::Runtime>,
    threads: Arc<Threads>,
    /// Its most blocking threads.
    blocking: usize,
    /// When it last went idle (its creation until then).
    idle_since: Instant,
}

impl Executor {
    fn new(workers: usize, blocking: usize, nice: i32) -> std::io::Result<Self> {
        let threads = Arc::new(Threads {
            tids: Mutex::new(Vec::new()),
            nice: AtomicI32::new(nice),
        });
        let (on_start, on_stop) = (threads.clone(), threads.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(blocking)
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .thread_name("om-query")
            .enable_all()
            .on_thread_start(move || {
                let tid = priority::this_thread();
                // a thread started late (a blocking read) takes the query's age;
                // under the lock, so that a concurrent `set_nice` sees it
                let mut tids = on_start.tids.lock().unwrap_or_else(|p| p.into_inner());
                priority::set_all(&[tid], on_start.nice.load(Ordering::Relaxed));
                tids.push(tid);
            })
            .on_thread_stop(move || {
                let tid = priority::this_thread();
                on_stop
                    .tids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|t| *t != tid);
            })
            .build()?;
        Ok(Executor {
            runtime: Some(runtime),
            threads,
            blocking,
            idle_since: Instant::now(),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until dropped")
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // the ager waits for a query when none runs: let it see the end
        self.wake.notify_one();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // dropped from async code (the server's tasks): never block there
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Thread priorities (Linux `setpriority` on thread ids).
mod priority {
    #[cfg(target_os = "linux")]
    pub fn this_thread() -> i32 {
        // SAFETY: gettid has no preconditions
        unsafe { libc::gettid() }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn this_thread() -> i32 {
        0
    }

    /// The nice value of the calling thread (Linux nice is per thread; the
    /// server's starting thread has the process's, which queries start at).
    #[cfg(target_os = "linux")]
    pub fn current_nice() -> i32 {
        // SAFETY: plain syscall; -1 is also a valid answer, taken as it is
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn current_nice() -> i32 {
        0
    }

    /// Sets the nice value of the threads `tids`; false when one refused.
    #[cfg(target_os = "linux")]
    pub fn set_all(tids: &[i32], nice: i32) -> bool {
        let mut ok = true;
        for &tid in tids {
            // SAFETY: plain syscall on a thread id of this process
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
            ok &= r == 0;
        }
        ok
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set_all(_tids: &[i32], _nice: i32) -> bool {
        false
    }

    /// The CPU time thread `tid` of this process has used.
    #[cfg(target_os = "linux")]
    pub fn cpu_time(tid: i32) -> Option<std::time::Duration> {
        // the thread's CPU clock: glibc's MAKE_THREAD_CPUCLOCK(tid,
        // CPUCLOCK_SCHED), what pthread_getcpuclockid returns for it
        let clock = ((!(tid as u32)) << 3) as libc::clockid_t | 6;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: plain syscall writing into `ts`; fails for a gone thread
        let r = unsafe { libc::clock_gettime(clock, &mut ts) };
        (r == 0).then(|| std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn cpu_time(_tid: i32) -> Option<std::time::Duration> {
        None
    }

    /// Whether a thread of this process may get nice value `young` back
    /// after losing it: tried on a scratch thread.
    pub fn can_restore(young: i32) -> bool {
        if !cfg!(target_os = "linux") || young >= 19 {
            return false; // nothing lower to age to
        }
        std::thread::spawn(move || {
            let tid = this_thread();
            set_all(&[tid], young + 1) && set_all(&[tid], young)
        })
        .join()
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
    use datafusion::prelude::SessionContext;

    /// Ages by time since start at the old 20 ms and 200 ms: the tests of
    /// what age does use queries that wait (no CPU time) to reach them.
    const WALL_AGES: [Age; 2] = [
        Age {
            wall: Duration::from_millis(20),
            ..AGES[0]
        },
        Age {
            wall: Duration::from_millis(200),
            ..AGES[1]
        },
    ];

    /// One row naming the thread that computed it, sent once `open` is
    /// true; until then it waits, or computes when `spin`.
    #[derive(Debug)]
    struct Gated {
        schema: SchemaRef,
        open: watch::Receiver<bool>,
        spin: bool,
    }

    impl PartitionStream for Gated {
        fn schema(&self) -> &SchemaRef {
            &self.schema
        }

        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let mut open = self.open.clone();
            let schema = self.schema.clone();
            let spin = self.spin;
            let once = futures::stream::once(async move {
                if spin {
                    // computes in slices, yielding between them as operators
                    // do between batches
                    while !*open.borrow() {
                        let slice = Instant::now();
                        while slice.elapsed() < Duration::from_millis(1) {
                            std::hint::spin_loop();
                        }
                        tokio::task::yield_now().await;
                    }
                } else {
                    let _ = open.wait_for(|o| *o).await;
                }
                let thread = std::thread::current().name().unwrap_or("").to_string();
                let nice = priority_of(priority::this_thread());
                Ok(RecordBatch::try_new(
                    schema,
                    vec![
                        Arc::new(StringArray::from(vec![thread])),
                        Arc::new(Int64Array::from(vec![nice as i64])),
                    ],
                )?)
            });
            Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), once))
        }
    }

    fn gated(open: watch::Receiver<bool>) -> Arc<dyn ExecutionPlan> {
        gated_plan(open, false)
    }

    fn gated_plan(open: watch::Receiver<bool>, spin: bool) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("thread", DataType::Utf8, false),
            Field::new("nice", DataType::Int64, false),
        ]));
        let part: Arc<dyn PartitionStream> = Arc::new(Gated {
            schema: schema.clone(),
            open,
            spin,
        });
        Arc::new(StreamingTableExec::try_new(schema, vec![part], None, [], false, None).unwrap())
    }

    /// A thread's nice value from `/proc` (field 19 of its stat line).
    fn priority_of(tid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[16].parse().unwrap()
    }

    async fn answer(stream: SendableRecordBatchStream) -> (String, i64) {
        let batches: Vec<RecordBatch> = stream.map(|b| b.unwrap()).collect().await;
        let b = &batches[0];
        let thread = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let nice = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        (thread.value(0).to_string(), nice.value(0))
    }

    /// How many executors wait, each with threads all at `nice`.
    fn idle_at(lanes: &Lanes, nice: i32) -> usize {
        let idle = lanes.idle.lock().unwrap();
        for e in idle.iter() {
            let tids = e.threads.tids.lock().unwrap();
            assert!(!tids.is_empty());
            for t in tids.iter() {
                assert_eq!(priority_of(*t), nice, "thread {t} of an idle executor");
            }
        }
        idle.len()
    }

    /// The nice value of every thread of the running queries of age `class`.
    fn running_at(lanes: &Lanes, class: usize) -> Vec<i32> {
        let running = lanes.running.lock().unwrap();
        running
            .iter()
            .filter(|a| a.class() == class)
            .flat_map(|a| a.threads.tids.lock().unwrap().clone())
            .map(priority_of)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_query_yields_the_cores_to_a_young_one_and_its_executor_comes_back_young() {
        let lanes = Arc::new(Lanes::new(2, Arc::new(Semaphore::new(2))).with_ages(WALL_AGES));
        let young = lanes.young;
        let oldest = WALL_AGES.len();
        let ctx = SessionContext::new().task_ctx();
        let (open_long, gate) = watch::channel(false);
        let long = lanes.execute(gated(gate), ctx.clone()).unwrap();
        let past_all_ages = WALL_AGES[oldest - 1].wall + Duration::from_millis(100);
        tokio::time::sleep(past_all_ages).await;
        if lanes.aging() {
            // alone, an old query keeps the young priority
            let threads = running_at(&lanes, oldest);
            assert!(!threads.is_empty(), "the long query is not running old");
            assert!(threads.iter().all(|n| *n == young), "{threads:?}");
        }
        // nothing can age further: the ager stops polling
        assert!(lanes.age_running());

        // a query started now runs young on an executor of its own, and the
        // old one yields to it for as long as it runs
        let (open_short, gate) = watch::channel(false);
        let short = lanes.execute(gated(gate), ctx.clone()).unwrap();
        assert!(!lanes.age_running(), "a young query can still age");
        let demoted = lanes.nice_of(oldest);
        if lanes.aging() {
            let threads = running_at(&lanes, oldest);
            assert!(threads.iter().all(|n| *n == demoted), "{threads:?}");
        }
        open_long.send(true).unwrap();
        let (thread, nice) = answer(long).await;
        assert!(thread.starts_with("om-query"), "computed on {thread}");
        match lanes.aging() {
            true => assert_eq!(nice, demoted as i64, "old query not demoted"),
            false => assert_eq!(nice, young as i64),
        }
        open_short.send(true).unwrap();
        let (thread, nice) = answer(short).await;
        assert!(thread.starts_with("om-query"), "computed on {thread}");
        // a young query runs below the server's own threads (this one's)
        assert_eq!(young, (priority::current_nice() + YOUNG_NICE).min(19));
        assert_eq!(nice, young as i64);

        // both executors wait for the next queries, young again
        assert_eq!(idle_at(&lanes, young), 2);
        let (open, gate) = watch::channel(true);
        answer(lanes.execute(gated(gate), ctx.clone()).unwrap()).await;
        drop(open);
        assert_eq!(
            lanes.idle.lock().unwrap().len(),
            2,
            "an idle executor is reused"
        );
        assert!(lanes.running.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_ages_by_the_cpu_time_it_uses_not_by_the_time_it_waits() {
        let workers = Arc::new(Semaphore::new(2));
        let lanes = Arc::new(Lanes::new(1, workers.clone()));
        let young = lanes.young;
        let ctx = SessionContext::new().task_ctx();
        let class_of = |i: usize| lanes.running.lock().unwrap()[i].class();
        // a query that waits (as a lookup waits for a core under load)
        let (open_waiting, gate) = watch::channel(false);
        let waiting = lanes.execute(gated(gate), ctx.clone()).unwrap();
        // and one that computes
        let (open_busy, gate) = watch::channel(false);
        let busy = lanes.execute(gated_plan(gate, true), ctx.clone()).unwrap();
        let started = Instant::now();
        while class_of(1) == 0 {
            assert!(
                started.elapsed() < AGES[0].wall,
                "the computing query is still young after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // it aged by its CPU time, long before its time since start would
        // have aged it; the waiting one, as long in the lanes, is young
        assert!(started.elapsed() < AGES[0].wall);
        assert_eq!(class_of(0), 0, "the waiting query aged");
        // past youth it goes on with a worker; the young one holds none
        let deadline = Instant::now() + Duration::from_secs(5);
        while workers.available_permits() != 1 {
            assert!(Instant::now() < deadline, "the old query took no worker");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if lanes.aging() {
            // and yields the cores to the young one
            let threads = running_at(&lanes, 1);
            assert!(!threads.is_empty());
            assert!(
                threads.iter().all(|n| *n == lanes.nice_of(1)),
                "{threads:?}"
            );
        }
        open_busy.send(true).unwrap();
        let (_, nice) = answer(busy).await;
        match lanes.aging() {
            true => assert_eq!(nice, lanes.nice_of(1) as i64),
            false => assert_eq!(nice, young as i64),
        }
        open_waiting.send(true).unwrap();
        assert_eq!(answer(waiting).await.1, young as i64, "the young query");
        assert_eq!(workers.available_permits(), 2, "the worker came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_executors_blocking_threads_stay_bounded_under_bursts_of_reads() {
        let lanes = Arc::new(Lanes::new(2, Arc::new(Semaphore::new(2))));
        for _ in 0..3 {
            // a burst of 32 blocking reads at once, as a scan of many files makes
            let executor = lanes.take(BLOCKING_THREADS).unwrap();
            let done = executor
                .runtime()
                .spawn(async {
                    let reads: Vec<_> = (0..32)
                        .map(|_| {
                            tokio::task::spawn_blocking(|| {
                                std::thread::sleep(Duration::from_millis(20))
                            })
                        })
                        .collect();
                    futures::future::join_all(reads).await.len()
                })
                .await
                .unwrap();
            assert_eq!(done, 32, "every read ran");
            lanes.give_back(executor);
        }
        let idle = lanes.idle.lock().unwrap();
        assert_eq!(idle.len(), 1, "one executor, reused");
        let threads = idle[0].threads.tids.lock().unwrap().len();
        assert!(
            threads <= 2 + BLOCKING_THREADS,
            "an executor holds {threads} threads"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_blocking_threads_wait_for_more_blocking_work_completes() {
        // deltalake's kernel: a blocking thread waits for a task that needs a
        // blocking thread of its own (a file read), many of them at once
        let lanes = Arc::new(Lanes::new(2, Arc::new(Semaphore::new(2))));
        let work = lanes.run(async {
            let handle = tokio::runtime::Handle::current();
            let waits: Vec<_> = (0..2 * BLOCKING_THREADS)
                .map(|_| {
                    let handle = handle.clone();
                    tokio::task::spawn_blocking(move || {
                        let read = handle.spawn(async {
                            tokio::task::spawn_blocking(|| {
                                std::thread::sleep(Duration::from_millis(20))
                            })
                            .await
                        });
                        // a blocking wait, as the kernel's `block_on` makes
                        futures::executor::block_on(read).unwrap().unwrap()
                    })
                })
                .collect();
            futures::future::join_all(waits).await.len()
        });
        let done = tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .expect("the write's blocking threads waited for each other")
            .unwrap();
        assert_eq!(done, 2 * BLOCKING_THREADS);
        // a query after it gets an executor of its own kind
        let executor = lanes.take(BLOCKING_THREADS).unwrap();
        assert_eq!(executor.blocking, BLOCKING_THREADS);
        assert_eq!(lanes.idle.lock().unwrap().len(), 1, "the write's, kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn executors_left_unused_after_a_burst_are_shut_down() {
        let keep_alive = Duration::from_millis(500);
        let lanes =
            Arc::new(Lanes::new(2, Arc::new(Semaphore::new(3))).with_keep_alive(keep_alive));
        let ctx = SessionContext::new().task_ctx();
        // a burst: three queries at once, three executors
        let (open, gate) = watch::channel(false);
        let burst: Vec<_> = (0..3)
            .map(|_| lanes.execute(gated(gate.clone()), ctx.clone()).unwrap())
            .collect();
        open.send(true).unwrap();
        for stream in burst {
            answer(stream).await;
        }
        let threads: Vec<Arc<Threads>> = {
            let idle = lanes.idle.lock().unwrap();
            idle.iter().map(|e| e.threads.clone()).collect()
        };
        assert_eq!(threads.len(), 3, "all used just now: none retired");
        assert_eq!(lanes.retire_idle(), 0, "all used just now");

        // later, one query: it reuses one executor, and its end shuts down
        // the two left unused for the keep-alive (no other call needed)
        tokio::time::sleep(keep_alive + Duration::from_millis(100)).await;
        let (_open, gate) = watch::channel(true);
        answer(lanes.execute(gated(gate), ctx.clone()).unwrap()).await;
        assert_eq!(
            lanes.idle.lock().unwrap().len(),
            1,
            "the one just used stays, the other two go"
        );
        assert_eq!(lanes.retire_idle(), 0, "the one just used is kept");
        // the retired executors' threads end
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads
            .iter()
            .filter(|t| t.tids.lock().unwrap().is_empty())
            .count()
            < 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "a retired executor's threads still run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            threads.iter().any(|t| !t.tids.lock().unwrap().is_empty()),
            "the kept executor lost its threads"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_stream_cancels_its_query_and_retires_its_executor() {
        let lanes = Arc::new(Lanes::new(2, Arc::new(Semaphore::new(2))));
        let ctx = SessionContext::new().task_ctx();
        let (open, gate) = watch::channel(false);
        let stream = lanes.execute(gated(gate), ctx).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream); // the client went away mid-query
        assert!(lanes.idle.lock().unwrap().is_empty());
        // the query's task is gone: nobody waits on the gate any more
        tokio::time::timeout(Duration::from_secs(5), open.closed())
            .await
            .expect("the cancelled query still holds its gate");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_queries_go_on_one_per_worker_and_young_ones_start_at_once() {
        let lanes = Arc::new(Lanes::new(1, Arc::new(Semaphore::new(1))).with_ages(WALL_AGES));
        let ctx = SessionContext::new().task_ctx();
        let past_youth = WALL_AGES[0].wall + Duration::from_millis(50);
        let (open_a, gate) = watch::channel(false);
        let a = lanes.execute(gated(gate), ctx.clone()).unwrap();
        tokio::time::sleep(past_youth).await; // a holds the only worker
        let (open_b, gate) = watch::channel(false);
        let b = lanes.execute(gated(gate), ctx.clone()).unwrap();
        tokio::time::sleep(past_youth).await; // b waits for it
        open_b.send(true).unwrap();
        let b = tokio::spawn(answer(b));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!b.is_finished(), "an old query went on without a worker");
        // a young query needs no worker
        let (_open_c, gate) = watch::channel(true);
        let c = lanes.execute(gated(gate), ctx.clone()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), answer(c))
            .await
            .expect("a young query waited for a worker");
        // a ends, its worker goes to b
        open_a.send(true).unwrap();
        answer(a).await;
        tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .expect("b never got the worker a freed")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_on_an_executor_and_ages_like_a_query() {
        let lanes = Arc::new(Lanes::new(2, Arc::new(Semaphore::new(2))).with_ages(WALL_AGES));
        let young = lanes.young;
        let ctx = SessionContext::new().task_ctx();
        let (open, mut gate) = watch::channel(false);
        let write = tokio::spawn({
            let lanes = lanes.clone();
            async move {
                let work = async move {
                    let _ = gate.wait_for(|o| *o).await;
                    let thread = std::thread::current().name().unwrap_or("").to_string();
                    (thread, priority_of(priority::this_thread()))
                };
                lanes.run(work).await.unwrap()
            }
        });
        tokio::time::sleep(WALL_AGES[WALL_AGES.len() - 1].wall + Duration::from_millis(100)).await;
        // a young query runs: the old write yields to it while it does
        let (open_query, query_gate) = watch::channel(false);
        let query = lanes.execute(gated(query_gate), ctx).unwrap();
        open.send(true).unwrap();
        let (thread, nice) = write.await.unwrap();
        assert!(thread.starts_with("om-query"), "the write ran on {thread}");
        match lanes.aging() {
            true => assert_eq!(nice, lanes.nice_of(WALL_AGES.len()), "not demoted"),
            false => assert_eq!(nice, young),
        }
        open_query.send(true).unwrap();
        assert_eq!(answer(query).await.1, young as i64);
        assert_eq!(idle_at(&lanes, young), 2, "both executors come back young");
        assert!(lanes.running.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_run_cancels_its_work() {
        let lanes = Arc::new(Lanes::new(1, Arc::new(Semaphore::new(1))));
        let (open, mut gate) = watch::channel(false);
        let work = async move {
            let _ = gate.wait_for(|o| *o).await;
        };
        let run = lanes.run(work);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), run)
                .await
                .is_err()
        );
        // the work is gone (nobody waits on the gate) and so is its executor
        tokio::time::timeout(Duration::from_secs(5), open.closed())
            .await
            .expect("the cancelled work still runs");
        assert!(lanes.idle.lock().unwrap().is_empty());
        assert!(lanes.running.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_constant_query_runs_in_place_and_one_reading_data_does_not() {
        let lanes = Arc::new(Lanes::new(1, Arc::new(Semaphore::new(1))));
        let ctx = SessionContext::new();
        let physical = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                ctx.sql(sql)
                    .await
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap()
            }
        };
        for sql in ["SELECT 1", "SELECT 1 + 2 AS x, 'a' AS y"] {
            let plan = physical(sql).await;
            assert!(constant(plan.as_ref()), "{sql}");
            let batches: Vec<_> = lanes.execute(plan, ctx.task_ctx()).unwrap().collect().await;
            assert_eq!(batches.len(), 1);
            assert!(
                lanes.idle.lock().unwrap().is_empty(),
                "{sql} took an executor"
            );
        }
        for sql in [
            "SELECT unnest(range(1, 1000))",
            "SELECT count(*) FROM generate_series(1, 1000)",
            "VALUES (1), (2)",
        ] {
            assert!(!constant(physical(sql).await.as_ref()), "{sql}");
        }
    }
}
