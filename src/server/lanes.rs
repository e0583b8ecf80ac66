//! Query execution by age, so that short queries do not wait behind long ones.
//!
//! Each query the server streams runs on an executor of its own: a small
//! tokio runtime whose threads (workers and blocking threads) carry only
//! that query's operators. The query starts at the process's priority and
//! loses OS priority as it ages ([`AGES`]): after 20 ms its threads are
//! `nice 10`, after 200 ms `nice 19`. The kernel's scheduler then gives a
//! young query (a point lookup, `SELECT 1`) the cores ahead of old ones,
//! while an old query still runs at full speed when nothing younger wants
//! the CPU. This is the multi-level feedback idea of OS schedulers applied
//! per query, without guessing a query's cost from its plan.
//!
//! A young query needs no worker: it starts at once. Past its first age a
//! query goes on only with one of the server's workers (`--workers`), so at
//! most that many old queries run (and hold memory) at once, while short
//! ones never queue behind them.
//!
//! Executors are reused: when a query ends, its threads get their priority
//! back and the executor waits for the next query. Giving a thread its
//! priority back needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 (`ulimit -e
//! 20`, systemd `LimitNICE=`); a process without it does not age queries
//! (an executor left at `nice 19` would slow every later query on it), and
//! [`Lanes::aging`] says so for the startup line. Elsewhere than Linux
//! queries are not aged either.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// A query's age (time since it started executing) and the OS priority
/// (`nice`) its threads get from then on.
pub const AGES: [(Duration, i32); 2] = [
    (Duration::from_millis(20), 10),
    (Duration::from_millis(200), 19),
];

/// Executors for the server's queries (see the module doc).
pub struct Lanes {
    idle: Mutex<Vec<Executor>>,
    /// Workers: what a query past its first age holds while it goes on.
    workers: Arc<Semaphore>,
    threads: usize,
    aging: bool,
    /// The process's own nice value: a young query's, and what ages add to.
    base: i32,
}

impl Lanes {
    /// Executors of `threads` worker threads each, made as queries need
    /// them (as many as run at once, which the server's workers bound) and
    /// kept for the next ones.
    pub fn new(threads: usize, workers: Arc<Semaphore>) -> Self {
        Lanes {
            idle: Mutex::new(Vec::new()),
            workers,
            threads: threads.max(1),
            aging: priority::can_restore(),
            base: priority::current_nice(),
        }
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
        let executor = self.take()?;
        let schema = plan.schema();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let workers = self.workers.clone();
        let task = executor.runtime().spawn(async move {
            let mut stream = match execute_stream(plan, context) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let young_until = tokio::time::Instant::now() + AGES[0].0;
            let mut worker = None;
            loop {
                let next = if worker.is_some() {
                    stream.next().await
                } else {
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(young_until) => {
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
        let ager = self.aging.then(|| {
            let nice = executor.nice.clone();
            let tids = executor.tids.clone();
            let base = self.base;
            tokio::spawn(async move {
                let mut waited = Duration::ZERO;
                for (age, level) in AGES {
                    tokio::time::sleep(age - waited).await;
                    waited = age;
                    let level = level.max(base);
                    nice.store(level, Ordering::Relaxed);
                    priority::set_all(&tids.lock().unwrap_or_else(|p| p.into_inner()), level);
                }
            })
        });
        let mut lease = Lease {
            lanes: self.clone(),
            executor: Some(executor),
            task,
            ager,
            ended: false,
        };
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

    fn take(&self) -> DfResult<Executor> {
        if let Some(e) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(e);
        }
        Executor::new(self.threads, self.base)
            .map_err(|e| DataFusionError::Execution(format!("cannot start a query executor: {e}")))
    }

    fn give_back(&self, executor: Executor) {
        if executor.nice.load(Ordering::Relaxed) != self.base {
            let tids = executor.tids.lock().unwrap_or_else(|p| p.into_inner());
            if !priority::set_all(&tids, self.base) {
                return; // cannot be made young again: dropped
            }
            drop(tids);
            executor.nice.store(self.base, Ordering::Relaxed);
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(executor);
    }
}

/// One query's hold on an executor.
struct Lease {
    lanes: Arc<Lanes>,
    executor: Option<Executor>,
    task: JoinHandle<()>,
    ager: Option<JoinHandle<()>>,
    /// The query sent its last batch (its task is done with the executor).
    ended: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(ager) = &self.ager {
            ager.abort();
        }
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

/// A tokio runtime and the OS threads it runs on.
struct Executor {
    runtime: Option<tokio::runtime::Runtime>,
    tids: Arc<Mutex<Vec<i32>>>,
    nice: Arc<AtomicI32>,
}

impl Executor {
    fn new(threads: usize, nice: i32) -> std::io::Result<Self> {
        let tids = Arc::new(Mutex::new(Vec::new()));
        let nice = Arc::new(AtomicI32::new(nice));
        let (on_start, on_stop) = (tids.clone(), tids.clone());
        let start_nice = nice.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("om-query")
            .enable_all()
            .on_thread_start(move || {
                let tid = priority::this_thread();
                // a thread started late (a blocking read) takes the query's age
                priority::set_all(&[tid], start_nice.load(Ordering::Relaxed));
                on_start.lock().unwrap_or_else(|p| p.into_inner()).push(tid);
            })
            .on_thread_stop(move || {
                let tid = priority::this_thread();
                on_stop
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|t| *t != tid);
            })
            .build()?;
        Ok(Executor {
            runtime: Some(runtime),
            tids,
            nice,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("present until dropped")
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

    /// Whether a thread of this process may get its priority back after
    /// losing it: tried on a scratch thread.
    pub fn can_restore() -> bool {
        if !cfg!(target_os = "linux") {
            return false;
        }
        let base = current_nice();
        if base >= 19 {
            return false; // nothing lower to age to
        }
        std::thread::spawn(move || {
            let tid = this_thread();
            set_all(&[tid], base + 1) && set_all(&[tid], base)
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
    use tokio::sync::watch;

    /// One row naming the thread that computed it, sent once `open` is true.
    #[derive(Debug)]
    struct Gated {
        schema: SchemaRef,
        open: watch::Receiver<bool>,
    }

    impl PartitionStream for Gated {
        fn schema(&self) -> &SchemaRef {
            &self.schema
        }

        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let mut open = self.open.clone();
            let schema = self.schema.clone();
            let once = futures::stream::once(async move {
                let _ = open.wait_for(|o| *o).await;
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
        let schema = Arc::new(Schema::new(vec![
            Field::new("thread", DataType::Utf8, false),
            Field::new("nice", DataType::Int64, false),
        ]));
        let part: Arc<dyn PartitionStream> = Arc::new(Gated {
            schema: schema.clone(),
            open,
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
            let tids = e.tids.lock().unwrap();
            assert!(!tids.is_empty());
            for t in tids.iter() {
                assert_eq!(priority_of(*t), nice, "thread {t} of an idle executor");
            }
        }
        idle.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_query_yields_the_cores_to_a_young_one_and_its_executor_comes_back_young() {
        let lanes = Arc::new(Lanes::new(2, Arc::new(Semaphore::new(2))));
        let base = lanes.base;
        let ctx = SessionContext::new().task_ctx();
        let (open_long, gate) = watch::channel(false);
        let long = lanes.execute(gated(gate), ctx.clone()).unwrap();
        let past_all_ages = AGES[AGES.len() - 1].0 + Duration::from_millis(100);
        tokio::time::sleep(past_all_ages).await;

        // a query started now runs young on an executor of its own
        let (open_short, gate) = watch::channel(true);
        let (thread, nice) = answer(lanes.execute(gated(gate), ctx.clone()).unwrap()).await;
        drop(open_short);
        assert!(thread.starts_with("om-query"), "computed on {thread}");
        assert_eq!(nice, base as i64);
        assert_eq!(idle_at(&lanes, base), 1, "the young executor is kept");

        open_long.send(true).unwrap();
        let (thread, nice) = answer(long).await;
        assert!(thread.starts_with("om-query"), "computed on {thread}");
        if lanes.aging() {
            assert_eq!(
                nice,
                AGES[AGES.len() - 1].1.max(base) as i64,
                "old query not demoted"
            );
        } else {
            assert_eq!(nice, base as i64);
        }
        // both executors wait for the next queries, young again
        assert_eq!(idle_at(&lanes, base), 2);
        let (open, gate) = watch::channel(true);
        answer(lanes.execute(gated(gate), ctx.clone()).unwrap()).await;
        drop(open);
        assert_eq!(
            lanes.idle.lock().unwrap().len(),
            2,
            "an idle executor is reused"
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
        let lanes = Arc::new(Lanes::new(1, Arc::new(Semaphore::new(1))));
        let ctx = SessionContext::new().task_ctx();
        let past_youth = AGES[0].0 + Duration::from_millis(50);
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
}
