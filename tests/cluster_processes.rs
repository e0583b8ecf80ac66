//! A cluster of `om` processes on loopback over an S3 root (moto): one
//! `om cluster scheduler`, two `om cluster executor`s. TPC-H sf 0.1 gives the
//! same 22 answers on the cluster as locally; a role's row filter and column
//! mask hold there; predict() answers as locally; an executor killed
//! mid-query fails the query cleanly or lets it finish, and the next query
//! runs on the one left; a stopped scheduler is a typed error in seconds.
//!
//! Skipped without moto unless OMEGA_REQUIRE_S3=1 (CI sets it).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{TestRoot, free_port, om, run_ok, s3};

/// A child process killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(root: &TestRoot, dir: &Path, name: &str, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let child = om(root)
            .args(args)
            // the scheduler's job and task events, shown when a test fails
            .env("OMEGA_LOG", "warn,ballista_scheduler=info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    /// The last lines the process wrote to stderr, to show why a test failed.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!(
            "--- {} ---\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// Waits until the process has said `what` on stderr.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(what) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}): {text}", self.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} never said '{what}': {text}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn executor(root: &TestRoot, dir: &Path, name: &str, scheduler: u16) -> Proc {
    let (port, grpc) = (free_port().to_string(), free_port().to_string());
    let scheduler = format!("127.0.0.1:{scheduler}");
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    let mut p = Proc::start(
        root,
        dir,
        name,
        &[
            "cluster",
            "executor",
            "--scheduler",
            &scheduler,
            "--port",
            &port,
            "--grpc-port",
            &grpc,
            "--vcores",
            "2",
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    p.wait_for("serving");
    p
}

/// The rows of a CSV answer, sorted, numbers rounded to 6 significant
/// digits (the cluster sums in another order than a local run).
fn normalised(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows: Vec<String> = text
        .lines()
        .map(|line| {
            line.split(',')
                .map(|f| match f.parse::<f64>() {
                    Ok(x) if f.contains('.') => format!("{x:.6e}"),
                    _ => f.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    rows.sort();
    rows
}

fn sql(root: &TestRoot, args: &[&str]) -> String {
    run_ok(om(root).arg("sql").args(args).args(["--format", "csv"]))
}

#[test]
fn om_cluster_processes_answer_like_a_local_run() {
    let Some(root) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut scheduler = Proc::start(
        &root,
        dir.path(),
        "scheduler",
        &["cluster", "scheduler", "--bind", &bind],
    );
    scheduler.wait_for("listening on df://");
    let _e1 = executor(&root, dir.path(), "executor1", port);
    let mut e2 = Some(executor(&root, dir.path(), "executor2", port));
    let url = format!("df://127.0.0.1:{port}");

    // TPC-H sf 0.1: 22 answers, locally and on the cluster
    let (local, cluster) = (dir.path().join("local"), dir.path().join("cluster"));
    let tpch = |answers: &Path, on: Option<&str>| {
        let mut c = om(&root);
        c.args(["bench", "tpch", "--sf", "0.1", "--runs", "1", "--answers"])
            .arg(answers);
        if let Some(u) = on {
            c.args(["--cluster", u]);
        }
        run_ok(&mut c)
    };
    tpch(&local, None);
    let report = tpch(&cluster, Some(&url));
    assert!(report.contains("on cluster df://"), "{report}");
    for q in 1..=22 {
        let name = format!("q{q:02}.csv");
        let expected = normalised(&local.join(&name));
        assert!(!expected.is_empty(), "{name}: no answer");
        assert_eq!(normalised(&cluster.join(&name)), expected, "{name}");
    }

    // a role's row filter and column mask hold on the cluster
    let csv = dir.path().join("people.csv");
    let mut text = String::from("id,name,score\n");
    for i in 0..100 {
        text.push_str(&format!("{i},name-{i},{}\n", i as f64 * 1.5));
    }
    std::fs::write(&csv, text).unwrap();
    run_ok(om(&root).args(["datasets", "put"]).arg(&csv).arg("people"));
    for s in [
        "CREATE POLICY low ON people TO analyst USING (id < 4)",
        "CREATE MASK hide ON people (name) TO analyst USING NULL",
        "GRANT read ON BUCKET default TO analyst",
        "CREATE MODEL m OPTIONS (type = 'linear_regression', label = 'score') AS SELECT id, score FROM people",
    ] {
        sql(&root, &[s]);
    }
    let q = "SELECT id, name, score FROM people ORDER BY id";
    let ana = ["--user", "ana", "--role", "analyst"];
    let seen = sql(&root, &[&["--cluster", &url][..], &ana, &[q]].concat());
    assert_eq!(seen, "id,name,score\n0,,0.0\n1,,1.5\n2,,3.0\n3,,4.5\n");
    assert_eq!(seen, sql(&root, &[&ana[..], &[q]].concat()));

    // predict() on the executors
    let q = "SELECT id, predict('m', id) AS p FROM people WHERE id % 9 = 0 ORDER BY id";
    let remote = sql(&root, &["--cluster", &url, q]);
    assert_eq!(remote.lines().count(), 1 + 12, "{remote}");
    assert_eq!(remote, sql(&root, &[q]));

    // an executor killed mid-query: the query fails cleanly or finishes
    // (Ballista reruns a lost executor's tasks once it is declared dead),
    // and the next query runs on the executor left
    let q21 = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/tpch/q21.sql");
    let mut running = om(&root)
        .args([
            "--bucket",
            "tpch_sf0_1",
            "sql",
            "--format",
            "csv",
            "--cluster",
            &url,
            "--file",
            q21,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(e2.take());
    let started = Instant::now();
    while running.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = running.kill();
            let out = running.wait_with_output().unwrap();
            panic!(
                "the query hung after an executor died\nclient: {}\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                scheduler.tail(),
                _e1.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = running.wait_with_output().unwrap();
    eprintln!(
        "q21 with an executor killed after 0.5 s: {} after {:?}",
        if out.status.success() {
            "finished".to_string()
        } else {
            format!("failed ({})", String::from_utf8_lossy(&out.stderr).trim())
        },
        started.elapsed()
    );
    if out.status.success() {
        let got = String::from_utf8(out.stdout).unwrap();
        std::fs::write(dir.path().join("q21-after-kill.csv"), got).unwrap();
        assert_eq!(
            normalised(&dir.path().join("q21-after-kill.csv")),
            normalised(&local.join("q21.csv"))
        );
    } else {
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("om: error:") && err.trim().lines().count() == 1,
            "{err}"
        );
        assert!(err.contains("cluster"), "{err}");
    }
    let n = sql(
        &root,
        &["--cluster", &url, "SELECT count(*) AS n FROM people"],
    );
    assert_eq!(n, "n\n100\n");

    // a stopped scheduler: a typed error within the connect timeout
    drop(scheduler);
    let started = Instant::now();
    let out = om(&root)
        .args(["sql", "--cluster", &url, "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the cluster scheduler"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // and a cluster URL that is not one
    let out = om(&root)
        .args(["sql", "--cluster", "ftp://x", "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid cluster URL 'ftp://x'"), "{err}");
}
