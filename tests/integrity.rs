//! Nothing lost: a failed or racing write leaves the last committed version
//! readable and commits nothing partial. Faults are injected with the
//! `FaultStore` decorator (tests/common/faults.rs).

mod common;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use omegastore::backends::ingest::blocking_batches;
use omegastore::{ListOptions, Object, Omega, PutMode, PutOptions, StoreError};
use serde_json::json;

use common::faults::{Fault, Op, faulty};
use common::{local, rows, sample_batch};

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
async fn sweep(place: Place, fault: Fault) {
    let fresh = || async move {
        let root = match place {
            Place::S3 => common::s3().expect("moto"),
            _ => local(),
        };
        let url = match place {
            Place::Memory => "memory://".to_string(),
            _ => root.url.clone(),
        };
        let (om, faults) = faulty(&url).await;
        (om, faults, root)
    };
    // On S3 (moto, ~10 ms a call) every fourth call is failed: k = offset,
    // offset + 4, … with the offset varying by verb.
    let stride = if place == Place::S3 { 4 } else { 1 };
    for (i, (what, verb)) in verbs().into_iter().enumerate() {
        // the state the verb leads to when nothing fails
        let (om, _, _keep) = fresh().await;
        setup(&om).await;
        let before = snapshot(&om).await;
        verb(om.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let after = snapshot(&om).await;
        let mut k = 1 + i % stride;
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
            k += stride;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Memory,
    Local,
    S3,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_an_error_at_every_call_in_memory() {
    sweep(Place::Memory, Fault::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_an_error_at_every_call_on_local_disk() {
    sweep(Place::Local, Fault::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_a_timeout_after_every_call() {
    sweep(Place::Memory, Fault::AfterApply).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_survives_an_error_at_every_call_on_s3() {
    if common::s3().is_none() {
        return; // no moto server here (.ci/run requires it)
    }
    sweep(Place::S3, Fault::Error).await;
}

/// Case 14: a root this process may read but not write. Every write verb
/// fails with the typed storage error naming a path, nothing changes, and
/// reads keep working. (Tests run as root in CI, where `chmod` cannot make
/// a directory read-only, so the fault store refuses writes the way a
/// read-only mount does: `PermissionDenied`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_root_refuses_every_write_with_a_typed_error_and_reads_work() {
    for local_root in [false, true] {
        let root = local();
        let url = if local_root {
            root.url.clone()
        } else {
            "memory://".to_string()
        };
        let (om, faults) = faulty(&url).await;
        setup(&om).await;
        let before = snapshot(&om).await;
        faults.fail_nth(1, Fault::Denied, |op, _| !matches!(op, Op::Get | Op::List));
        for (what, verb) in verbs() {
            let err = verb(om.clone())
                .await
                .expect_err(&format!("{what} on a read-only root"));
            assert!(
                err.contains("permission denied writing '")
                    && err.contains("read-only for this process"),
                "{what}: {err}"
            );
            assert_eq!(
                snapshot(&om).await,
                before,
                "{what} changed a read-only store"
            );
        }
    }
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

/// Every file under `dir`, relative to it.
fn files(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Makes every file under `dir` look two hours old.
fn age(dir: &std::path::Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for f in files(dir) {
        let file = std::fs::File::options()
            .write(true)
            .open(dir.join(f))
            .unwrap();
        file.set_modified(old).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_unreferenced_old_files_and_spares_a_put_in_flight() {
    use omegastore::store::GcOptions;
    let root = local();
    let dir = std::path::PathBuf::from(&root.url);
    let (om, faults) = faulty(&root.url).await;
    setup(&om).await;
    om.datasets()
        .put(sample_batch(5, 5), "t", PutOptions::default())
        .await
        .unwrap();
    let before = snapshot(&om).await;
    // garbage: a crashed first put, a stray document file, a Parquet file
    // in a table's directory that no Delta version lists
    let data = dir.join("default/datasets/data");
    std::fs::create_dir_all(data.join("ghost")).unwrap();
    std::fs::write(data.join("ghost/0b1c.json"), b"{}").unwrap();
    std::fs::write(data.join("doc/stray.json"), b"{}").unwrap();
    let table_dir = std::fs::read_dir(data.join("t"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let parquet = files(&table_dir)
        .into_iter()
        .find(|f| f.ends_with(".parquet"))
        .unwrap();
    std::fs::copy(table_dir.join(&parquet), table_dir.join("orphan.parquet")).unwrap();
    age(&dir);
    let all_before = files(&dir);

    // a dry run lists exactly the garbage
    let opts = GcOptions {
        dry_run: true,
        ..Default::default()
    };
    let report = om.datasets().gc(&opts).await.unwrap();
    let mut listed: Vec<String> = report.files.iter().map(|(p, _)| p.clone()).collect();
    listed.sort();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().any(|p| p.ends_with("ghost/0b1c.json")));
    assert!(listed.iter().any(|p| p.ends_with("doc/stray.json")));
    assert!(listed.iter().any(|p| p.ends_with("orphan.parquet")));
    assert_eq!(files(&dir), all_before, "a dry run removes nothing");

    // a put in flight (data written, record not yet) during a real gc
    let (reached, release) =
        faults.hold_next(|op, p| op == Op::Put && p.as_ref().contains("/meta/t/"));
    let put = tokio::spawn({
        let om = om.clone();
        async move {
            om.datasets()
                .put(sample_batch(100, 3), "t", PutOptions::default())
                .await
        }
    });
    reached.notified().await;
    let report = om.datasets().gc(&GcOptions::default()).await.unwrap();
    assert_eq!(report.files.len(), 3, "{:?}", report.files);
    release.notify_one();
    let meta = put.await.unwrap().unwrap();
    assert_eq!(meta.version, 3);
    assert_eq!(rows(&om, "t").await, 13, "the put's files survived the gc");
    assert_eq!(rows(&om, "t@2").await, 10);
    // everything referenced reads back as before
    let mut after = snapshot(&om).await;
    after.retain(|s| !s.starts_with("t@"));
    let mut expected = before.clone();
    expected.retain(|s| !s.starts_with("t@"));
    assert_eq!(after, expected);
    // nothing left to collect
    let report = om.datasets().gc(&GcOptions::default()).await.unwrap();
    assert!(report.files.is_empty(), "{:?}", report.files);
}

#[tokio::test]
async fn vacuum_keeps_the_newest_versions_and_refuses_tagged_ones() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let ds = om.datasets();
    let overwrite = PutOptions {
        mode: PutMode::Overwrite,
        ..Default::default()
    };
    ds.put(sample_batch(0, 4), "t", PutOptions::default())
        .await
        .unwrap();
    ds.put(sample_batch(10, 2), "t", overwrite).await.unwrap();
    ds.put(sample_batch(20, 3), "t", PutOptions::default())
        .await
        .unwrap();
    ds.put(sample_batch(30, 1), "t", PutOptions::default())
        .await
        .unwrap();
    ds.tag("t", "first", Some(1)).await.unwrap();
    let zero = std::time::Duration::ZERO;
    let err = ds.vacuum("t", 2, false, zero).await.unwrap_err();
    assert!(
        err.to_string().contains("version 1 is tagged 'first'"),
        "{err}"
    );
    assert_eq!(
        rows(&om, "t@1").await,
        4,
        "a refused vacuum removes nothing"
    );
    let parquet = |d: &std::path::Path| files(d).iter().filter(|f| f.ends_with(".parquet")).count();
    let data = std::path::PathBuf::from(&root.url).join("default/datasets/data/t");
    let files_before = parquet(&data);
    let report = ds.vacuum("t", 2, true, zero).await.unwrap();
    assert_eq!(report.versions, vec![1, 2]);
    // version 1's file (overwritten by version 2) is gone; 3 and 4 intact
    assert_eq!(parquet(&data), files_before - 1, "{:?}", report.gc.files);
    assert!(matches!(
        ds.metadata("t@1").await.unwrap_err(),
        StoreError::VersionNotFound { .. }
    ));
    assert!(
        ds.metadata("t@first").await.is_err(),
        "the tag went with its version"
    );
    assert_eq!(rows(&om, "t@3").await, 5);
    assert_eq!(rows(&om, "t").await, 6);
    assert_eq!(ds.history("t").await.unwrap().len(), 2);
    // documents: each removed version's file goes
    for v in 1..=3 {
        ds.put(json!({ "v": v }), "doc", PutOptions::default())
            .await
            .unwrap();
    }
    let doc_dir = std::path::PathBuf::from(&root.url).join("default/datasets/data/doc");
    assert_eq!(files(&doc_dir).len(), 3);
    ds.vacuum("doc", 1, false, zero).await.unwrap();
    assert_eq!(files(&doc_dir).len(), 1);
    assert_eq!(ds.get_document("doc").await.unwrap(), json!({"v": 3}));
    assert!(ds.vacuum("doc", 0, false, zero).await.is_err());
}

/// A user backend that writes one file per version but records it under a
/// key of its own: gc cannot know what it references.
struct BlobBackend;

#[async_trait::async_trait]
impl omegastore::DataBackend for BlobBackend {
    fn kinds(&self) -> Vec<String> {
        vec!["blob.custom".into()]
    }
    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Any(v) if v.is::<Vec<u8>>())
    }
    async fn put(
        &self,
        cx: &omegastore::BackendContext<'_>,
        obj: Object,
        _previous: Option<&omegastore::Metadata>,
        _opts: &PutOptions,
    ) -> omegastore::Result<omegastore::Written> {
        let Object::Any(v) = obj else {
            unreachable!("supports() checked it")
        };
        let body = *v.downcast::<Vec<u8>>().unwrap();
        let path = omegastore::store::backend::write_new_file(cx, "blob", body).await?;
        Ok(omegastore::Written {
            kind: "blob.custom".into(),
            uri: String::new(),
            kind_meta: json!({ "blob": path.to_string() }),
        })
    }
    async fn get(
        &self,
        _cx: &omegastore::BackendContext<'_>,
        _meta: &omegastore::Metadata,
        _opts: &omegastore::GetOptions,
    ) -> omegastore::Result<omegastore::Data> {
        Ok(omegastore::Data::Any(Box::new(())))
    }
}

#[tokio::test]
async fn gc_keeps_the_data_of_a_backend_that_cannot_say_what_it_references() {
    use omegastore::store::GcOptions;
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.register_backend(Arc::new(BlobBackend));
    om.datasets()
        .put(
            Object::Any(Box::new(b"payload".to_vec())),
            "b",
            PutOptions::default(),
        )
        .await
        .unwrap();
    let dir = std::path::PathBuf::from(&root.url).join("default/datasets/data/b");
    assert_eq!(files(&dir).len(), 1);
    age(&dir);
    let opts = GcOptions {
        older_than: std::time::Duration::ZERO,
        ..Default::default()
    };
    let report = om.datasets().gc(&opts).await.unwrap();
    assert!(report.files.is_empty(), "{:?}", report.files);
    assert_eq!(files(&dir).len(), 1, "the backend's file survived");
}
