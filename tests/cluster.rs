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
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use omegastore::cluster::{ClusterError, ExecutorOptions, run_executor, run_scheduler};
use omegastore::server::{ServeConfig, serve};
use omegastore::store::keys::Keys;
use omegastore::{Omega, PutOptions};
use std::net::SocketAddr;
use tonic::transport::Channel;

use common::{exec, free_port, local, sample_batch};

/// A scheduler and two executors over the store at `root`; the cluster URL.
async fn start_cluster(root: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(run_scheduler(listener));
    for _ in 0..2 {
        let models = Omega::executor_models(omegastore::store::Root::open(root).unwrap()).unwrap();
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

/// The physical plan of `sql` as (the lines run here, the lines sent to the
/// cluster: those under a `ClusterExec`).
async fn split_plan(om: &Omega, sql: &str) -> (String, String) {
    let batches = om
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut plan = String::new();
    for b in &batches {
        let kind = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let text = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
        let (kind, text) = (
            kind.as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap(),
            text.as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap(),
        );
        for i in 0..b.num_rows() {
            if kind.value(i) == "physical_plan" {
                plan = text.value(i).to_string();
            }
        }
    }
    let (mut here, mut shipped) = (String::new(), String::new());
    let mut under: Option<usize> = None;
    for line in plan.lines() {
        let depth = line.len() - line.trim_start().len();
        if under.is_some_and(|d| depth <= d) {
            under = None;
        }
        match under {
            Some(_) => shipped.push_str(line),
            None => here.push_str(line),
        }
        if line.trim_start().starts_with("ClusterExec") {
            under = Some(depth);
        }
        here.push('\n');
        shipped.push('\n');
    }
    (here, shipped)
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
        // an aggregate named twice: computed per use, on the cluster
        "WITH r AS (SELECT id % 5 AS k, sum(score) AS s FROM t GROUP BY id % 5) \
         SELECT k, s FROM r WHERE s = (SELECT max(s) FROM r)",
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
    // (locally the aggregate named twice is computed once)
    assert!(explain(&om, queries[6]).await.contains("SharedSubplanExec"));
    assert!(
        !explain(&remote, queries[6])
            .await
            .contains("SharedSubplanExec")
    );
    // what holds no files runs here: system tables, information_schema, VALUES
    for q in [
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'default' ORDER BY 1",
        "SELECT * FROM (VALUES (1), (2)) v(x)",
    ] {
        assert!(!explain(&remote, q).await.contains("ClusterExec"), "{q}");
        assert_eq!(rows(&remote, q).await, rows(&om, q).await, "{q}");
    }
    // EXPLAIN ANALYZE is refused by name, with the way out
    let e = remote
        .sql("EXPLAIN ANALYZE SELECT count(*) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not available on a cluster") && e.contains("without --cluster"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_held_in_memory_is_read_here_and_the_rest_on_the_cluster() {
    let (root, om) = store().await;
    om.memory_cache().set_budget(64 << 20);
    exec(&om, "ALTER TABLE u SET (cache = 'memory')").await;
    let url = start_cluster(&root.url).await;
    let remote = om.with_cluster(&url).await.unwrap();
    let q = "SELECT u.name, count(*) AS n, sum(t.score) AS s FROM t JOIN u ON t.id % 50 = u.id GROUP BY u.name ORDER BY u.name";
    // t's files are scanned on the cluster; u's cached batches never leave
    let (here, shipped) = split_plan(&remote, q).await;
    assert!(shipped.contains("file_groups"), "{shipped}");
    assert!(!shipped.contains("partition_sizes"), "{shipped}");
    assert!(here.contains("partition_sizes"), "{here}");
    assert_eq!(rows(&remote, q).await, rows(&om, q).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn om_serve_runs_its_queries_on_the_cluster_with_the_keys_identity() {
    let (root, om) = store().await;
    exec(&om, "CREATE POLICY low ON t TO analyst USING (id < 4)").await;
    exec(&om, "GRANT read ON BUCKET default TO analyst").await;
    let url = start_cluster(&root.url).await;
    let config = ServeConfig {
        flight: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        shutdown_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let running = serve(om.with_cluster(&url).await.unwrap(), config)
        .await
        .unwrap();
    let key = Keys::new(om.root().clone())
        .create("default", "analyst", None, None)
        .await
        .unwrap()
        .0;
    let channel = Channel::from_shared(format!("http://{}", running.flight.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(key);
    for (sql, expect) in [
        ("SELECT count(*) AS n FROM t", "| 4 "),
        ("EXPLAIN SELECT id FROM t WHERE score > 1", "ClusterExec"),
    ] {
        let info = client.execute(sql.to_string(), None).await.unwrap();
        let mut out = Vec::new();
        for e in info.endpoint {
            let mut s = client.do_get(e.ticket.unwrap()).await.unwrap();
            while let Some(b) = s.try_next().await.unwrap() {
                out.push(b);
            }
        }
        let text = pretty_format_batches(&out).unwrap().to_string();
        assert!(text.contains(expect), "{sql}: {text}");
    }
    running.shutdown().await;
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
    // a session derived for an identity keeps the cluster's DataFusion
    // options: a scalar subquery (planned as a join there) still runs
    let q = "SELECT id FROM t WHERE score >= (SELECT avg(score) FROM t) ORDER BY id";
    assert!(explain(&ana, q).await.contains("ClusterExec"));
    assert_eq!(rows(&ana, q).await, rows(&local_ana, q).await, "{q}");
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
