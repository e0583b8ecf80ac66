//! Nothing lost: a failed or racing write leaves the last committed version
//! readable and commits nothing partial. Faults are injected with the
//! `FaultStore` decorator (tests/common/faults.rs).

mod common;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use omegastore::backends::ingest::blocking_batches;
use omegastore::store::Root;
use omegastore::{GetOptions, ListOptions, Object, Omega, PutMode, PutOptions, StoreError};
use serde_json::json;

use common::faults::{Fault, FaultStore, Op};
use common::{local, sample_batch, total_rows};

async fn faulty(url: &str) -> (Omega, FaultStore) {
    let root = Root::open(url).unwrap();
    let faults = FaultStore::new(root.object_store());
    let om = Omega::open_root(root.with_store(Arc::new(faults.clone())))
        .await
        .unwrap();
    (om, faults)
}

async fn rows(om: &Omega, name: &str) -> usize {
    total_rows(
        &om.datasets()
            .get_batches(name, GetOptions::default())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_panicking_reader_fails_the_put_and_commits_nothing() {
    let om = Omega::open("memory://").await.unwrap();
    om.datasets()
        .put(sample_batch(0, 3), "t", PutOptions::default())
        .await
        .unwrap();
    let first = sample_batch(100, 5);
    let schema = first.schema();
    let stream = blocking_batches("t", "reading the test input", schema, move |send| {
        send(Ok(first));
        panic!("reader died half way");
    });
    let err = om
        .datasets()
        .put(Object::Stream(stream), "t", PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("reading the test input failed"),
        "{err}"
    );
    let meta = om.datasets().metadata("t").await.unwrap();
    assert_eq!(meta.version, 1, "nothing committed");
    assert_eq!(rows(&om, "t").await, 3);
}

#[tokio::test]
async fn a_drop_racing_an_append_never_leaves_a_version_without_data() {
    for kind in ["table", "document"] {
        let (om, faults) = faulty("memory://").await;
        let put = |om: Omega| async move {
            match kind {
                "table" => {
                    om.datasets()
                        .put(sample_batch(10, 4), "t", PutOptions::default())
                        .await
                }
                _ => {
                    om.datasets()
                        .put(json!({"v": 2}), "t", PutOptions::default())
                        .await
                }
            }
        };
        put(om.clone()).await.unwrap();
        // hold the append's commit of version 2 until the drop has finished
        let (reached, release) = faults.hold_next(|op, p| {
            op == Op::Put
                && p.as_ref().contains("/meta/")
                && p.as_ref().ends_with("00000000000000000002.json")
        });
        let appending = tokio::spawn(put(om.clone()));
        reached.notified().await;
        let dropped = om.datasets().drop("t", false).await.unwrap();
        assert_eq!(dropped, vec!["t"]);
        release.notify_one();
        let err = appending.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { advice, .. } if advice.contains("dropped while this write ran")),
            "{kind}: {err}"
        );
        // the name is gone for good: no record left pointing at deleted data
        assert!(matches!(
            om.datasets().metadata("t").await.unwrap_err(),
            StoreError::NotFound { .. }
        ));
        assert!(
            om.datasets()
                .list(None, &ListOptions::default())
                .await
                .unwrap()
                .is_empty()
        );
        // and it can be created again
        let m = put(om.clone()).await.unwrap();
        assert_eq!(m.version, 1, "{kind}");
    }
}

#[tokio::test]
async fn local_commits_are_synced_before_they_return() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let before = omegastore::store::durable::sync_count();
    om.datasets()
        .put(json!({"a": 1}), "doc", PutOptions::default())
        .await
        .unwrap();
    // the document file and its record, each with its directories
    let after_doc = omegastore::store::durable::sync_count();
    assert!(after_doc >= before + 2, "{before} -> {after_doc}");
    om.datasets()
        .put(sample_batch(0, 10), "t", PutOptions::default())
        .await
        .unwrap();
    // a Parquet file, the Delta log entry and the record
    let after_table = omegastore::store::durable::sync_count();
    assert!(after_table >= after_doc + 3, "{after_doc} -> {after_table}");
}

/// What a reader can see of the store: every object's latest version and
/// its content (rows, sorted, for tables).
async fn snapshot(om: &Omega) -> Vec<String> {
    let ds = om.datasets();
    let mut out = Vec::new();
    for m in ds.list(None, &ListOptions::default()).await.unwrap() {
        let content = match m.kind.as_str() {
            "table.delta" => {
                let df = om
                    .sql(&format!("SELECT * FROM \"{}\" ORDER BY id", m.name))
                    .await
                    .unwrap();
                let batches: Vec<RecordBatch> = df.collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            }
            "json.document" => ds.get_document(&m.name).await.unwrap().to_string(),
            "file.raw" => format!("{:?}", ds.get_bytes(&m.name).await.unwrap()),
            other => other.to_string(),
        };
        out.push(format!("{}@{}: {content}", m.name, m.version));
    }
    out
}

type Verb = fn(Omega) -> futures::future::BoxFuture<'static, Result<(), String>>;

async fn setup(om: &Omega) {
    let ds = om.datasets();
    ds.put(sample_batch(0, 5), "t", PutOptions::default())
        .await
        .unwrap();
    ds.put(json!({"v": 1}), "doc", PutOptions::default())
        .await
        .unwrap();
    ds.put(
        bytes::Bytes::from_static(b"raw bytes"),
        "raw",
        PutOptions::default(),
    )
    .await
    .unwrap();
}

fn verbs() -> Vec<(&'static str, Verb)> {
    fn e(x: impl std::fmt::Display) -> String {
        x.to_string()
    }
    vec![
        ("put new table", |om| {
            Box::pin(async move {
                om.datasets()
                    .put(sample_batch(50, 3), "n", PutOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("append", |om| {
            Box::pin(async move {
                om.datasets()
                    .put(sample_batch(50, 3), "t", PutOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("overwrite", |om| {
            Box::pin(async move {
                let opts = PutOptions {
                    mode: PutMode::Overwrite,
                    ..Default::default()
                };
                om.datasets()
                    .put(sample_batch(50, 3), "t", opts)
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("put document", |om| {
            Box::pin(async move {
                om.datasets()
                    .put(json!({"v": 2}), "doc", PutOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("put bytes", |om| {
            Box::pin(async move {
                om.datasets()
                    .put(
                        bytes::Bytes::from_static(b"other"),
                        "raw",
                        PutOptions::default(),
                    )
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("drop", |om| {
            Box::pin(async move {
                om.datasets()
                    .drop("doc", false)
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("tag", |om| {
            Box::pin(async move {
                om.datasets()
                    .tag("t", "prod", None)
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("CTAS", |om| {
            Box::pin(async move {
                om.sql("CREATE TABLE c AS SELECT * FROM t WHERE id < 3")
                    .await
                    .map_err(e)?
                    .collect()
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("INSERT", |om| {
            Box::pin(async move {
                om.sql("INSERT INTO t SELECT * FROM t WHERE id < 2")
                    .await
                    .map_err(e)?
                    .collect()
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("DELETE", |om| {
            Box::pin(async move {
                om.sql("DELETE FROM t WHERE id < 2")
                    .await
                    .map_err(e)?
                    .collect()
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
        ("UPDATE", |om| {
            Box::pin(async move {
                om.sql("UPDATE t SET score = 0 WHERE id = 1")
                    .await
                    .map_err(e)?
                    .collect()
                    .await
                    .map(|_| ())
                    .map_err(e)
            })
        }),
    ]
}

/// Every write verb, failing its k-th object store call for k = 1, 2, …
/// until it succeeds: after each failure a reader sees exactly the state
/// before or the state after the verb (never a mix), and a retry from the
/// state before succeeds with the same result.
async fn sweep(local_root: bool, fault: Fault) {
    let fresh = || async move {
        let root = local();
        let url = if local_root {
            root.url.clone()
        } else {
            "memory://".to_string()
        };
        let (om, faults) = faulty(&url).await;
        (om, faults, root)
    };
    for (what, verb) in verbs() {
        // the state the verb leads to when nothing fails
        let (om, _, _keep) = fresh().await;
        setup(&om).await;
        let before = snapshot(&om).await;
        verb(om.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let after = snapshot(&om).await;
        let mut k = 1;
        loop {
            assert!(k < 400, "{what}: still failing after {k} faults");
            let (om, faults, _keep) = fresh().await;
            setup(&om).await;
            faults.fail_nth(k, fault, |_, _| true);
            let result = verb(om.clone()).await;
            let calls = faults.calls();
            faults.heal();
            let seen = snapshot(&om).await;
            match result {
                Ok(()) => {
                    assert_eq!(seen, after, "{what}: succeeded at k = {k}");
                    if calls < k {
                        break; // the verb made fewer than k calls: all covered
                    }
                }
                Err(err) => {
                    assert!(
                        seen == before || seen == after,
                        "{what}: {fault:?} at call {k} ({err}) left a mixed state:\n{seen:#?}\nbefore: {before:#?}\nafter: {after:#?}"
                    );
                    if seen == before {
                        verb(om.clone()).await.unwrap_or_else(|e| {
                            panic!("{what}: retry after {fault:?} at call {k}: {e}")
                        });
                        assert_eq!(snapshot(&om).await, after, "{what}: retry after fault {k}");
                    }
                }
            }
            k += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_an_error_at_every_call_in_memory() {
    sweep(false, Fault::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_an_error_at_every_call_on_local_disk() {
    sweep(true, Fault::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_a_timeout_after_every_call() {
    sweep(false, Fault::AfterApply).await;
}

#[tokio::test]
async fn long_non_ascii_names_work_on_a_local_root() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let ds = om.datasets();
    // 30 CJK characters are 90 bytes, 270 once escaped; "売上/" and 82 more are 253 bytes
    let names = ["売上".repeat(15), format!("売上/{}", "表".repeat(82))];
    for name in &names {
        ds.put(sample_batch(0, 4), name, PutOptions::default())
            .await
            .unwrap();
        ds.put(sample_batch(4, 2), name, PutOptions::default())
            .await
            .unwrap();
        ds.tag(name, "prod", Some(1)).await.unwrap();
        assert_eq!(rows(&om, name).await, 6);
        assert_eq!(rows(&om, &format!("{name}@prod")).await, 4);
    }
    let listed: Vec<String> = ds
        .list(None, &ListOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    let n = om
        .sql(&format!("SELECT count(*) AS n FROM \"{}\"", names[1]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
    for name in &names {
        ds.drop(name, false).await.unwrap();
    }
    assert!(
        ds.list(None, &ListOptions::default())
            .await
            .unwrap()
            .is_empty()
    );
}
