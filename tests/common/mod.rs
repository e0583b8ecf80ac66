//! Shared test setup: fresh store roots on the local file system and, when a
//! moto server is available, on a real S3-compatible server on loopback.
#![allow(dead_code)]

pub mod faults;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// A store root for one test; the directory (if local) lives as long as it.
pub struct TestRoot {
    pub url: String,
    pub kind: &'static str,
    /// Environment for `om` processes using this root.
    pub env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub fn local() -> TestRoot {
    let dir = tempfile::tempdir().expect("tempdir");
    TestRoot {
        url: dir.path().join("store").display().to_string(),
        kind: "local",
        env: vec![],
        _dir: Some(dir),
    }
}

const BUCKET: &str = "omega-tests";

struct Moto {
    endpoint: String,
}

fn moto_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("OMEGA_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").ok()?;
    let venv = PathBuf::from(home).join(".cache/omegastore-venv/bin/moto_server");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
    })
}

fn http(endpoint_port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", endpoint_port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out)
}

/// Starts one moto server per test process (it exits with the process).
fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = moto_binary()?;
        // A port free a moment ago can be taken by another server a parallel
        // test starts before moto binds it: then start again on another.
        for _ in 0..3 {
            if let Some(m) = start_moto(&bin) {
                return Some(m);
            }
        }
        panic!("moto_server did not start (three ports tried)");
    })
    .as_ref()
}

/// One attempt: moto on a free port, with the test bucket created.
fn start_moto(bin: &std::path::Path) -> Option<Moto> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    // A watchdog shell ends the server when this test process is gone.
    let script = format!(
        "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & M=$!; \
         while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill $M",
        bin.display(),
        std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = http(
        port,
        &format!("PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .ok()?;
    // anything but moto's answer means another server holds the port
    if !resp.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
    })
}

/// A fresh prefix on the moto S3 server, or `None` when moto is not
/// installed (CI sets OMEGA_REQUIRE_S3=1, which turns that into a failure).
pub fn s3() -> Option<TestRoot> {
    let Some(m) = moto() else {
        if std::env::var("OMEGA_REQUIRE_S3").is_ok_and(|v| v == "1") {
            panic!("OMEGA_REQUIRE_S3=1 but moto_server was not found (pip install 'moto[server]')");
        }
        eprintln!("note: moto_server not found; S3 variant skipped");
        return None;
    };
    let prefix = uuid::Uuid::new_v4();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL".to_string(), m.endpoint.clone()),
    ];
    Some(TestRoot {
        url: format!(
            "s3://{BUCKET}/{prefix}?endpoint={}&region=us-east-1&access_key_id=test&secret_access_key=test",
            m.endpoint
        ),
        kind: "s3",
        env,
        _dir: None,
    })
}

/// Every root a store test should run on.
pub fn roots() -> Vec<TestRoot> {
    let mut r = vec![local()];
    r.extend(s3());
    r
}

/// A small table: id, name (with a null), score.
pub fn sample_batch(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let names: Vec<Option<String>> = ids
        .iter()
        .map(|i| {
            if i % 5 == 0 {
                None
            } else {
                Some(format!("name-{i}"))
            }
        })
        .collect();
    let scores: Vec<f64> = ids.iter().map(|i| *i as f64 * 0.5).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(names)),
            Arc::new(Float64Array::from(scores)),
        ],
    )
    .unwrap()
}

pub fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Path of the `om` binary built for these tests.
/// Rows of a table dataset (`name` may carry a modifier), read whole.
pub async fn rows(om: &omegastore::Omega, name: &str) -> usize {
    total_rows(
        &om.datasets()
            .get_batches(name, omegastore::GetOptions::default())
            .await
            .unwrap(),
    )
}

pub fn om_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_om"))
}

/// Runs `c`, which must succeed (else its stderr is the failure); its stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An `om` command on `root`.
pub fn om(root: &TestRoot) -> Command {
    let mut c = Command::new(om_bin());
    c.arg("--root").arg(&root.url);
    for (k, v) in &root.env {
        c.env(k, v);
    }
    c.env_remove("OMEGA_BUCKET");
    c
}

/// The rows another Delta reader (not omegastore) sees at the latest
/// version of the Delta table at `uri`, reading the log through `store`;
/// `None` when the directory holds no Delta table (nothing published).
pub async fn delta_reader_rows(
    store: Arc<dyn object_store::ObjectStore>,
    uri: &str,
) -> Option<usize> {
    let url = url::Url::parse(uri).expect("a table URI");
    let table = deltalake::DeltaTableBuilder::from_url(url.clone())
        .unwrap()
        .with_storage_backend(store, url)
        .load()
        .await
        .ok()?;
    let state = table.snapshot().expect("a Delta snapshot");
    Some(
        state
            .log_data()
            .iter()
            .map(|f| f.num_records().unwrap_or(0))
            .sum(),
    )
}

/// Runs a statement to completion, failing the test with its text.
pub async fn exec(om: &omegastore::Omega, sql: &str) {
    om.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The text of `EXPLAIN ANALYZE` of `sql`.
pub async fn explain_analyze(om: &omegastore::Omega, sql: &str) -> String {
    let batches = om
        .sql(&format!("EXPLAIN ANALYZE {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

/// The first value of a one-row query, as an integer.
pub async fn scalar(om: &omegastore::Omega, sql: &str) -> i64 {
    let b = om.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::cast(b[0].column(0), &DataType::Int64)
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

/// A loopback port free a moment ago (for servers a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
