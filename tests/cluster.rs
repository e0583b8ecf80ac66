//! Queries on a Ballista cluster started in this process (a scheduler and
//! two executors on loopback, over a local store): the same answers as
//! local runs, policies applied before a plan leaves the client, predict()
//! on executors, writes committed by the client, and typed errors for a
//! wrong or dead cluster. The multi-process run over S3 (om cluster
//! scheduler/executor processes, TPC-H) is `tests/cluster_processes.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use omegastore::cluster::{
    ClusterError, ExecutorOptions, ModelRef, StoreModels, run_executor, run_scheduler,
};
use omegastore::{Omega, PutOptions};

use common::{exec, local, sample_batch};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scheduler and two executors over the store at `root`; the cluster URL.
async fn start_cluster(root: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(run_scheduler(listener));
    for _ in 0..2 {
        let r = root.to_string();
        let models = StoreModels::new(Arc::new(move |m: ModelRef| {
            let r = r.clone();
            Box::pin(async move {
                let om = Omega::open(&r).await.map_err(|e| e.to_string())?;
                om.bucket(&m.bucket)
                    .map_err(|e| e.to_string())?
                    .models()
                    .load(&format!("{}@{}", m.name, m.version))
                    .await
                    .map_err(|e| e.to_string())
            })
        }))
        .unwrap();
        let options = ExecutorOptions {
            scheduler: format!("http://127.0.0.1:{port}"),
            bind_host: "127.0.0.1".into(),
            port: free_port(),
            grpc_port: free_port(),
            vcores: 2,
            work_dir: None,
        };
        let root = omegastore::store::Root::open(root).unwrap();
        tokio::spawn(run_executor(options, root, Arc::new(models)));
    }
    format!("df://127.0.0.1:{port}")
}

async fn rows(om: &Omega, sql: &str) -> String {
    let batches: Vec<RecordBatch> = om.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

async fn explain(om: &Omega, sql: &str) -> String {
    rows(om, &format!("EXPLAIN {sql}")).await
}

/// A store with `t` (2,000 rows), `u` (50 rows) and a model fitted on `t`.
async fn store() -> (common::TestRoot, Omega) {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    for (name, n) in [("t", 2000), ("u", 50)] {
        om.datasets()
            .put(sample_batch(0, n), name, PutOptions::default())
            .await
            .unwrap();
    }
    exec(
        &om,
        "CREATE MODEL m OPTIONS (type = 'linear_regression', label = 'score') AS SELECT id, score FROM t",
    )
    .await;
    (root, om)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_on_the_cluster_answer_as_local_ones() {
    let (root, om) = store().await;
    let url = start_cluster(&root.url).await;
    let remote = om.with_cluster(&url).await.unwrap();
    let queries = [
        "SELECT count(*), sum(score), min(name), max(id) FROM t",
        "SELECT id % 7 AS k, count(*) AS n, avg(score) AS s FROM t WHERE id > 100 GROUP BY id % 7 ORDER BY k",
        "SELECT t.id, u.name FROM t JOIN u ON t.id = u.id WHERE u.score > 3 ORDER BY t.id",
        "SELECT id, score FROM t ORDER BY score DESC, id LIMIT 5",
        "SELECT name FROM t WHERE id IN (SELECT id FROM u WHERE id % 10 = 1) ORDER BY name",
        "SELECT id, predict('m', id) AS p FROM t WHERE id < 20 ORDER BY id",
    ];
    for q in queries {
        let plan = explain(&remote, q).await;
        assert!(
            plan.contains("ClusterExec"),
            "{q} did not go to the cluster:\n{plan}"
        );
        assert!(!explain(&om, q).await.contains("ClusterExec"));
        assert_eq!(rows(&remote, q).await, rows(&om, q).await, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_filters_and_masks_hold_on_the_cluster() {
    let (root, om) = store().await;
    exec(&om, "CREATE POLICY low ON t TO analyst USING (id < 4)").await;
    exec(
        &om,
        "CREATE MASK hide_name ON t (name) TO analyst USING NULL",
    )
    .await;
    exec(&om, "GRANT read ON BUCKET default TO analyst").await;
    let url = start_cluster(&root.url).await;
    let ana = om
        .with_cluster(&url)
        .await
        .unwrap()
        .with_identity("ana", &["analyst"], false)
        .unwrap();
    let q = "SELECT id, name, score FROM t ORDER BY id";
    let seen = rows(&ana, q).await;
    let local_ana = om.with_identity("ana", &["analyst"], false).unwrap();
    assert_eq!(seen, rows(&local_ana, q).await);
    // the role's rows and nothing else, the name masked
    assert_eq!(seen.lines().count(), 4 + 4, "{seen}");
    assert!(!seen.contains("name-"), "{seen}");
    // the plan sent carries the filter: nothing unfiltered leaves the client
    let plan = explain(&ana, q).await;
    assert!(
        plan.contains("ClusterExec") && plan.contains("id@0 < 4"),
        "{plan}"
    );
    let count = rows(&ana, "SELECT count(*) AS n FROM t").await;
    assert!(count.contains("| 4 "), "{count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_run_their_select_on_the_cluster_and_commit_here() {
    let (root, om) = store().await;
    let url = start_cluster(&root.url).await;
    let remote = om.with_cluster(&url).await.unwrap();
    exec(
        &remote,
        "CREATE TABLE big AS SELECT id, score FROM t WHERE id >= 1500",
    )
    .await;
    exec(
        &remote,
        "INSERT INTO big SELECT id, score FROM u WHERE id < 10",
    )
    .await;
    let n = rows(&om, "SELECT count(*) AS n FROM big").await;
    assert!(n.contains("| 510 "), "{n}");
    let meta = om.datasets().metadata("big").await.unwrap();
    assert_eq!(meta.version, 2, "CTAS then INSERT: two versions");
}

#[tokio::test]
async fn a_wrong_or_dead_cluster_is_a_typed_error_within_the_timeout() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    for bad in [
        "ftp://127.0.0.1:1",
        "df://",
        "df://127.0.0.1:50050/path",
        "not a url",
    ] {
        match om.with_cluster(bad).await {
            Err(ClusterError::BadUrl { url, .. }) => assert_eq!(url, bad),
            other => panic!("{bad}: expected BadUrl, got {:?}", other.err()),
        }
    }
    // nothing listens on a port just freed
    let started = Instant::now();
    let e = om
        .with_cluster(&format!("df://127.0.0.1:{}", free_port()))
        .await
        .expect_err("no scheduler there");
    assert!(matches!(e, ClusterError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("om cluster scheduler"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
