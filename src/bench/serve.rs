//! `om bench serve`: a loopback load test of `om serve`, bounded in clients
//! and time. The server runs in this process on a fresh local root; clients
//! run on a tokio runtime of their own and speak real protocols (Flight SQL
//! through arrow-flight's client, HTTP/1.1 with keep-alive through hyper).
//! Three measurements:
//!
//! 1. `SELECT 1` round trips over Flight SQL (GetFlightInfo + DoGet), one at a time;
//! 2. N concurrent clients for a fixed time mixing HTTP point lookups (50%),
//!    Flight aggregates (20%), Flight point lookups (20%) and HTTP appends
//!    (10%), after a warm-up of the same load: throughput, p50/p99 per
//!    operation, errors, resident memory idle, at the start of the measured
//!    phase and at its end (this process: server and clients);
//! 3. a large result streamed through Flight, against the same query written
//!    to an Arrow IPC file in process (what `om sql … --format arrow` does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use serde::Serialize;
use tonic::transport::Channel;

use crate::Omega;
use crate::server::{Limits, ServeConfig};
use crate::store::keys::Keys;
use crate::store::{Object, PutOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct ServeBench {
    pub clients: usize,
    pub duration: Duration,
    /// Rows of the table the lookups and aggregates read.
    pub rows: usize,
    /// Rows of the streamed result.
    pub stream_rows: u64,
}

/// Latencies of one operation under load.
#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    pub count: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The measurements.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub select1_p50_ms: f64,
    pub select1_p99_ms: f64,
    /// Of the round trip: GetFlightInfo (authenticate, plan, ticket).
    pub select1_info_p50_ms: f64,
    pub clients: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub errors: usize,
    pub ops: BTreeMap<String, OpStats>,
    /// Before any load.
    pub rss_idle_mib: f64,
    /// After the warm-up, when the measured load starts.
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    /// The anonymous part of the resident memory (heap, stacks) at the start
    /// and end: a leak shows here; the rest is file pages (the binary, and
    /// data files mapped while scans read them) that come and go.
    pub anon_start_mib: f64,
    pub anon_end_mib: f64,
    /// The anonymous memory sampled every second of the measured phase.
    /// Single samples swing with the allocator's trims (the server gives
    /// freed memory back every 10 s), so growth is judged on the medians of
    /// the first and last quarter of the run, not on its two ends.
    pub anon_samples_mib: Vec<f64>,
    pub anon_max_mib: f64,
    pub anon_first_quarter_mib: f64,
    pub anon_last_quarter_mib: f64,
    pub stream_rows: u64,
    pub flight_rows_per_second: f64,
    pub local_arrow_rows_per_second: f64,
}

type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    super::ops::proc_status_bytes(field)
        .map(|b| b as f64 / (1u64 << 20) as f64)
        .unwrap_or(f64::NAN)
}

/// Samples the anonymous memory of this process every `every` until the
/// returned sender is dropped or fired; the task returns the samples.
fn sample_anon(
    every: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<f64>>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => samples.push(status_mib("RssAnon:")),
                _ = &mut stopped => return samples,
            }
        }
    });
    (stop, task)
}

/// The median of `samples`.
fn median_of(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

/// Medians of the first and the last quarter of `samples` (at least one
/// sample each).
fn quarter_medians(samples: &[f64]) -> (f64, f64) {
    let q = (samples.len() / 4).max(1).min(samples.len());
    (
        median_of(&samples[..q]),
        median_of(&samples[samples.len() - q..]),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn points(start: i64, n: usize) -> Result<RecordBatch, BenchError> {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 100))),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64 * 0.5),
            )),
        ],
    )?)
}

async fn flight_client(
    addr: SocketAddr,
    key: &str,
) -> Result<FlightSqlServiceClient<Channel>, BenchError> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(key.to_string());
    Ok(client)
}

/// Runs `sql` through Flight SQL; the rows received.
async fn flight_query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<u64, BenchError> {
    let info = client.execute(sql.to_string(), None).await?;
    fetch(client, info).await
}

/// Fetches every endpoint of a FlightInfo; the rows received.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Result<u64, BenchError> {
    let mut rows = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("no ticket")?;
        let mut stream = client.do_get(ticket).await?;
        while let Some(batch) = stream.try_next().await? {
            rows += batch.num_rows() as u64;
        }
    }
    Ok(rows)
}

/// One keep-alive HTTP/1.1 connection.
struct HttpClient {
    sender: hyper::client::conn::http1::SendRequest<axum::body::Body>,
    host: String,
    auth: String,
}

impl HttpClient {
    async fn connect(addr: SocketAddr, key: &str) -> Result<Self, BenchError> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Self {
            sender,
            host: addr.to_string(),
            auth: format!("Bearer {key}"),
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<u16, BenchError> {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.auth);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(axum::body::Body::from(body))?)
            .await?;
        let status = response.status().as_u16();
        axum::body::to_bytes(axum::body::Body::new(response.into_body()), usize::MAX).await?;
        Ok(status)
    }
}

/// Runs the benchmark; `say` reports progress.
pub async fn run(bench: ServeBench, say: impl Fn(&str)) -> Result<ServeReport, BenchError> {
    let dir =
        std::env::temp_dir().join(format!("om-bench-serve-{}", uuid::Uuid::new_v4().simple()));
    let result = run_in(&dir, bench, say).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &std::path::Path,
    bench: ServeBench,
    say: impl Fn(&str),
) -> Result<ServeReport, BenchError> {
    say("storing the table");
    let om = Omega::open(&dir.to_string_lossy()).await?;
    let mut batches = Vec::new();
    let chunk = 1_000_000;
    let mut start = 0;
    while start < bench.rows {
        let n = chunk.min(bench.rows - start);
        batches.push(points(start as i64, n)?);
        start += n;
    }
    om.datasets()
        .put(
            Object::from_batches(batches)?,
            "points",
            PutOptions::default(),
        )
        .await?;
    om.sql("GRANT write ON BUCKET default TO loader")
        .await?
        .collect()
        .await?;
    let key = Keys::new(om.root().clone())
        .create("default", "loader", Some("bench"), None)
        .await?
        .0;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = crate::server::serve(
        om.clone(),
        ServeConfig {
            flight: Some(loopback),
            http: Some(loopback),
            limits: Limits::default(),
            ..Default::default()
        },
    )
    .await?;
    let (flight, http) = (
        running.flight.ok_or("no flight")?,
        running.http.ok_or("no http")?,
    );

    say("SELECT 1 round trips");
    let mut client = flight_client(flight, &key).await?;
    for _ in 0..50 {
        flight_query(&mut client, "SELECT 1").await?;
    }
    let (mut select1, mut planned) = (Vec::with_capacity(500), Vec::with_capacity(500));
    for _ in 0..500 {
        let t = Instant::now();
        let info = client.execute("SELECT 1".to_string(), None).await?;
        planned.push(t.elapsed().as_secs_f64() * 1e3);
        fetch(&mut client, info).await?;
        select1.push(t.elapsed().as_secs_f64() * 1e3);
    }
    planned.sort_by(f64::total_cmp);
    select1.sort_by(f64::total_cmp);

    // The same load first as a warm-up (caches filled, executors and
    // connections made), so that start and end memory compare steady states;
    // the memory before it is reported too.
    let rss_idle = rss_mib();
    let warm_up = (bench.duration / 2).min(Duration::from_secs(10));
    say(&format!(
        "{} clients warming up for {warm_up:?}",
        bench.clients
    ));
    let clients = ClientRuntime::new()?;
    let run_for = |duration| {
        load(
            clients.handle(),
            bench.clients,
            flight,
            http,
            &key,
            bench.rows,
            duration,
        )
    };
    run_for(warm_up).await?;
    say(&format!(
        "{} clients for {:?}",
        bench.clients, bench.duration
    ));
    let rss_start = rss_mib();
    let anon_start = status_mib("RssAnon:");
    let began = Instant::now();
    let (stop_sampling, sampling) = sample_anon(Duration::from_secs(1));
    let samples = run_for(bench.duration).await?;
    let mut by_op: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    let total = samples.len();
    for (op, ms, ok) in samples {
        let e = by_op.entry(op.to_string()).or_default();
        e.0.push(ms);
        if !ok {
            e.1 += 1;
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let rss_end = rss_mib();
    let anon_end = status_mib("RssAnon:");
    let _ = stop_sampling.send(());
    let anon_samples = sampling.await?;
    let (anon_first_quarter, anon_last_quarter) = quarter_medians(&anon_samples);
    let anon_max = anon_samples.iter().copied().fold(f64::NAN, f64::max);
    let mut ops = BTreeMap::new();
    let mut errors = 0;
    for (op, (mut ms, errs)) in by_op {
        ms.sort_by(f64::total_cmp);
        errors += errs;
        ops.insert(
            op,
            OpStats {
                count: ms.len(),
                errors: errs,
                p50_ms: percentile(&ms, 0.5),
                p90_ms: percentile(&ms, 0.9),
                p99_ms: percentile(&ms, 0.99),
                max_ms: ms.last().copied().unwrap_or(f64::NAN),
            },
        );
    }

    say("streaming a large result");
    let sql = format!(
        "SELECT value, value * 2 AS twice FROM generate_series(1, {})",
        bench.stream_rows
    );
    let t = Instant::now();
    let streamed = flight_query(&mut client, &sql).await?;
    let flight_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let local_rows = local_arrow(&om, &sql, &dir.join("result.arrow")).await?;
    let local_secs = t.elapsed().as_secs_f64();
    if local_rows != streamed {
        return Err(format!("the stream gave {streamed} rows, the local run {local_rows}").into());
    }
    running.shutdown().await;
    Ok(ServeReport {
        select1_p50_ms: percentile(&select1, 0.5),
        select1_p99_ms: percentile(&select1, 0.99),
        select1_info_p50_ms: percentile(&planned, 0.5),
        clients: bench.clients,
        seconds,
        requests_per_second: total as f64 / seconds,
        errors,
        ops,
        rss_idle_mib: rss_idle,
        rss_start_mib: rss_start,
        rss_end_mib: rss_end,
        anon_start_mib: anon_start,
        anon_end_mib: anon_end,
        anon_samples_mib: anon_samples,
        anon_max_mib: anon_max,
        anon_first_quarter_mib: anon_first_quarter,
        anon_last_quarter_mib: anon_last_quarter,
        stream_rows: streamed,
        flight_rows_per_second: streamed as f64 / flight_secs,
        local_arrow_rows_per_second: local_rows as f64 / local_secs,
    })
}

/// One sample: operation, milliseconds, answered correctly.
type Sample = (&'static str, f64, bool);

/// The clients' own runtime. Clients of a real server run elsewhere; on
/// the server's runtime their tasks and the server's would queue behind
/// each other on the same worker threads, and the latencies measured would
/// be partly the bench's own. The OS still shares the cores between both.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn new() -> Result<Self, BenchError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(ClientRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("bench-client")
                .enable_all()
                .build()?,
        )))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle()
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        // dropped inside the server's runtime: a blocking shutdown would panic
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// `clients` concurrent clients mixing the operations for `duration`, on
/// the runtime `on`.
async fn load(
    on: &tokio::runtime::Handle,
    clients: usize,
    flight: SocketAddr,
    http: SocketAddr,
    key: &str,
    rows: usize,
    duration: Duration,
) -> Result<Vec<Sample>, BenchError> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let key = key.to_string();
        let rows = rows as u64;
        tasks.push(on.spawn(async move {
            let mut samples: Vec<Sample> = Vec::new();
            let mut flight = flight_client(flight, &key).await?;
            let mut http = HttpClient::connect(http, &key).await?;
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
            let mut i = c;
            while Instant::now() < deadline {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let id = state % rows.max(1);
                let t = Instant::now();
                let (op, ok) = match i % 10 {
                    0..=4 => {
                        let path = format!("/api/v1/datasets/points?where=id%20%3D%20{id}");
                        (
                            "http point lookup",
                            http.send("GET", &path, None, Vec::new())
                                .await
                                .is_ok_and(|s| s == 200),
                        )
                    }
                    5 | 6 => (
                        "flight aggregate",
                        flight_query(
                            &mut flight,
                            "SELECT k, sum(v), count(*) FROM points GROUP BY k",
                        )
                        .await
                        .is_ok_and(|n| n == 100),
                    ),
                    7 | 8 => (
                        "flight point lookup",
                        flight_query(
                            &mut flight,
                            &format!("SELECT * FROM points WHERE id = {id}"),
                        )
                        .await
                        .is_ok_and(|n| n == 1),
                    ),
                    _ => {
                        let mut csv = String::from("id,k,v\n");
                        for r in 0..100 {
                            csv.push_str(&format!("{r},{},{}.5\n", r % 100, r));
                        }
                        let path = format!("/api/v1/datasets/ingest_{c}?mode=append");
                        let status = http
                            .send("POST", &path, Some("text/csv"), csv.into_bytes())
                            .await;
                        (
                            "http append (100 rows)",
                            status.is_ok_and(|s| s == 200 || s == 201),
                        )
                    }
                };
                samples.push((op, t.elapsed().as_secs_f64() * 1e3, ok));
                i += 1;
            }
            Ok::<_, BenchError>(samples)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// The query written to an Arrow IPC stream file in process.
async fn local_arrow(om: &Omega, sql: &str, path: &std::path::Path) -> Result<u64, BenchError> {
    use futures::StreamExt;
    let mut stream = om.sql(sql).await?.execute_stream().await?;
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(file, &stream.schema())?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_judged_on_quarters_not_on_the_ends() {
        // a saw-tooth (trims every few samples) that does not grow
        let flat = [100.0, 140.0, 90.0, 100.0, 150.0, 95.0, 100.0, 145.0];
        let (first, last) = quarter_medians(&flat);
        assert!((last / first - 1.0).abs() < 0.1, "{first} → {last}");
        // a steady climb
        let rising: Vec<f64> = (0..12).map(|i| 100.0 + 10.0 * i as f64).collect();
        let (first, last) = quarter_medians(&rising);
        assert!(last > first * 1.5, "{first} → {last}");
        // too few samples for quarters: the one there is
        assert_eq!(quarter_medians(&[7.0]), (7.0, 7.0));
    }

    #[tokio::test]
    async fn the_sampler_samples_until_stopped() {
        let (stop, task) = sample_anon(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(());
        let samples = task.await.unwrap();
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples.iter().all(|m| *m > 0.0), "{samples:?}");
    }
}
