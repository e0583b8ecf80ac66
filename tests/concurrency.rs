//! Concurrent writers and crashed writers, on a local root and on S3 (moto).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use omegastore::server::lanes::Lanes;
use omegastore::{GetOptions, Omega, PutMode, PutOptions};

use common::{om, roots, sample_batch, total_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_appending_to_one_table_lose_nothing() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        om.datasets()
            .put(sample_batch(0, 100), "shared", PutOptions::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8i64 {
            let om = om.clone();
            tasks.push(tokio::spawn(async move {
                om.datasets()
                    .put(
                        sample_batch(1000 * (t + 1), 50),
                        "shared",
                        PutOptions::default(),
                    )
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let versions: Vec<u64> = om
            .datasets()
            .history("shared")
            .await
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(
            versions,
            (1..=9).collect::<Vec<_>>(),
            "contiguous versions on {}",
            root.kind
        );
        let batches = om
            .datasets()
            .get_batches("shared", GetOptions::default())
            .await
            .unwrap();
        assert_eq!(
            total_rows(&batches),
            100 + 8 * 50,
            "no lost rows on {}",
            root.kind
        );
        let ids: BTreeSet<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids.len(), 500, "no duplicated rows");
        // every version's row count is at least the one before it (appends only)
        let mut last = 0;
        for m in om.datasets().history("shared").await.unwrap() {
            let rows = m.kind_meta["rows"].as_u64().unwrap();
            assert!(
                rows >= last,
                "version {} went back to {rows} rows",
                m.version
            );
            last = rows;
        }
        assert_eq!(last, 500);
    }
}

fn run_parallel(root: &common::TestRoot, args: &[&str], n: usize) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            om(root)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_putting_one_document() {
    for root in roots() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("doc.json");
        std::fs::write(&doc, r#"{"hello": "world"}"#).unwrap();
        let doc = doc.to_str().unwrap();

        // replace semantics: every writer commits, at contiguous versions
        let outs = run_parallel(&root, &["datasets", "put", doc, "config/shared"], 8);
        for o in &outs {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let om = Omega::open(&root.url).await.unwrap();
        let versions: Vec<u64> = om
            .datasets()
            .history("config/shared")
            .await
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>(), "on {}", root.kind);

        // create-only: exactly one winner, the others get a typed error
        let outs = run_parallel(
            &root,
            &["datasets", "put", doc, "config/once", "--mode", "error"],
            8,
        );
        let winners = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "on {}", root.kind);
        for o in outs.iter().filter(|o| !o.status.success()) {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("already exists"), "{e}");
            assert_eq!(o.status.code(), Some(1));
        }
        assert_eq!(om.datasets().history("config/once").await.unwrap().len(), 1);
    }
}

/// Writes a CSV big enough that a put of it takes a while.
fn big_csv(path: &std::path::Path, rows: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,name,score").unwrap();
    for i in 0..rows {
        writeln!(f, "{i},name-{i},{}.5", i % 1000).unwrap();
    }
}

/// Starts `om datasets put FILE NAME --mode overwrite`, lets it run until it
/// is well into the write, then kills it with SIGKILL.
fn put_and_kill(root: &common::TestRoot, file: &std::path::Path, name: &str, after: Duration) {
    let mut child = common::om(root)
        .args([
            "datasets",
            "put",
            file.to_str().unwrap(),
            name,
            "--mode",
            "overwrite",
        ])
        .args(if file.extension().is_some_and(|e| e == "fifo") {
            vec!["--format", "raw"]
        } else {
            vec![]
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    std::thread::sleep(after);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the put of {name} ended after {:?}, before it could be killed",
        start.elapsed()
    );
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_killed_mid_write_leaves_the_previous_version_readable() {
    let dir = tempfile::tempdir().unwrap();
    // a table: a CSV that takes seconds to ingest
    let csv = dir.path().join("big.csv");
    big_csv(&csv, 3_000_000);
    let small_csv = dir.path().join("small.csv");
    big_csv(&small_csv, 10);
    for root in roots() {
        let name = "crash/table";
        let first = common::om(&root)
            .args(["datasets", "put", small_csv.to_str().unwrap(), name])
            .output()
            .unwrap();
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        put_and_kill(&root, &csv, name, Duration::from_millis(1500));

        // a raw file: streamed from a pipe that a writer keeps feeding, so the
        // kill lands mid-upload whatever the machine's speed
        let blob = "crash/blob";
        let small = dir.path().join("small.bin");
        std::fs::write(&small, b"small").unwrap();
        let first = common::om(&root)
            .args(["datasets", "put", small.to_str().unwrap(), blob])
            .output()
            .unwrap();
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let fifo = dir.path().join(format!("feed-{}.fifo", root.kind));
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let feeder = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                    let chunk = vec![7u8; 1 << 20];
                    // 24 MiB (three upload parts), then keep the pipe open
                    for _ in 0..24 {
                        if f.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            })
        };
        put_and_kill(&root, &fifo, blob, Duration::from_millis(1500));
        feeder.join().unwrap();

        // the store opens and the last committed versions are intact
        let om = Omega::open(&root.url).await.unwrap();
        assert_eq!(
            om.datasets().metadata(name).await.unwrap().version,
            1,
            "on {}",
            root.kind
        );
        let rows = om
            .datasets()
            .get_batches(name, GetOptions::default())
            .await
            .unwrap();
        assert_eq!(total_rows(&rows), 10);
        assert_eq!(om.datasets().metadata(blob).await.unwrap().version, 1);
        assert_eq!(&om.datasets().get_bytes(blob).await.unwrap()[..], b"small");
        // and they still take writes
        for (file, n) in [(&small_csv, name), (&small, blob)] {
            let again = common::om(&root)
                .args(["datasets", "put", file.to_str().unwrap(), n])
                .output()
                .unwrap();
            assert!(
                again.status.success(),
                "{}",
                String::from_utf8_lossy(&again.stderr)
            );
            assert_eq!(om.datasets().metadata(n).await.unwrap().version, 2);
        }
        assert_eq!(
            total_rows(
                &om.datasets()
                    .get_batches(name, GetOptions::default())
                    .await
                    .unwrap()
            ),
            20
        );
    }
}

/// `om serve` runs each write on an executor of its own (its lanes); the
/// Delta kernel there waits in blocking threads for reads that need
/// blocking threads too. Many tables written at once on one executor must
/// not wait for each other forever (they did with 8 blocking threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tables_appended_at_once_in_one_server_write_all_complete() {
    const TABLES: usize = 24;
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let append = PutOptions {
        mode: PutMode::Append,
        ..Default::default()
    };
    for i in 0..TABLES {
        for v in 0..4 {
            om.datasets()
                .put(sample_batch(v * 10, 10), &format!("t{i}"), append.clone())
                .await
                .unwrap();
        }
    }
    let lanes = Arc::new(Lanes::new(2, Arc::new(tokio::sync::Semaphore::new(2))));
    let url = root.url.clone();
    let work = lanes.run(async move {
        // a fresh store: every table's log is read again
        let om = Omega::open(&url).await.unwrap();
        let tasks: Vec<_> = (0..TABLES)
            .map(|i| {
                let (om, append) = (om.clone(), append.clone());
                tokio::spawn(async move {
                    let name = format!("t{i}");
                    om.datasets()
                        .put(sample_batch(100, 5), &name, append)
                        .await
                        .unwrap();
                    common::rows(&om, &name).await
                })
            })
            .collect();
        let mut rows = Vec::new();
        for t in tasks {
            rows.push(t.await.unwrap());
        }
        rows
    });
    let rows = tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("the writes waited for each other on the executor")
        .unwrap();
    assert_eq!(rows, vec![45; TABLES]);
}
