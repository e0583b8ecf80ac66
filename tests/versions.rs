//! Versions, put modes, schema checks, tags, attributes, listing and drop,
//! on a local root and on S3 (moto).

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use omegastore::{GetOptions, ListOptions, Omega, PutMode, PutOptions, StoreError};
use serde_json::json;

use common::{roots, rows, sample_batch, total_rows};

fn mode(mode: PutMode) -> PutOptions {
    PutOptions {
        mode,
        ..Default::default()
    }
}

#[tokio::test]
async fn versions_modes_and_time_travel() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let ds = om.datasets();
        let m1 = ds
            .put(sample_batch(0, 10), "sales/2024/q1", PutOptions::default())
            .await
            .unwrap();
        let m2 = ds
            .put(sample_batch(10, 5), "sales/2024/q1", PutOptions::default())
            .await
            .unwrap();
        assert_eq!((m1.version, m2.version), (1, 2));
        assert_eq!(
            m1.created, m2.created,
            "created is the object's first commit"
        );
        assert_eq!(
            rows(&om, "sales/2024/q1").await,
            15,
            "append is the default"
        );
        let m3 = ds
            .put(
                sample_batch(100, 3),
                "sales/2024/q1",
                mode(PutMode::Overwrite),
            )
            .await
            .unwrap();
        assert_eq!(m3.version, 3);
        assert_eq!(rows(&om, "sales/2024/q1").await, 3);
        // time travel: every version stays readable
        assert_eq!(rows(&om, "sales/2024/q1@1").await, 10);
        assert_eq!(rows(&om, "sales/2024/q1@2").await, 15);
        let err = ds
            .put(sample_batch(0, 1), "sales/2024/q1", mode(PutMode::Error))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        let err = ds
            .get_batches("sales/2024/q1@9", GetOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionNotFound { .. }), "{err}");
        assert!(
            err.to_string().contains("sales/2024/q1") && err.to_string().contains("version 9"),
            "{err}"
        );
        let history = ds.history("sales/2024/q1").await.unwrap();
        assert_eq!(
            history.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // tags
        ds.tag("sales/2024/q1", "prod", Some(2)).await.unwrap();
        assert_eq!(rows(&om, "sales/2024/q1@prod").await, 15);
        ds.tag("sales/2024/q1", "prod", None).await.unwrap();
        assert_eq!(rows(&om, "sales/2024/q1@prod").await, 3);
        let err = ds
            .get_batches("sales/2024/q1@staging", GetOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("tag 'staging'"), "{err}");
        assert!(
            ds.tag("sales/2024/q1", "123", None).await.is_err(),
            "numeric tags read as versions"
        );
    }
}

#[tokio::test]
async fn appends_check_the_schema_and_merge_on_request() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let ds = om.datasets();
        ds.put(sample_batch(0, 4), "t", PutOptions::default())
            .await
            .unwrap();
        let extra = {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("name", DataType::Utf8, true),
                Field::new("score", DataType::Float64, true),
                Field::new("region", DataType::Utf8, true),
            ]));
            let b = sample_batch(4, 2);
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            cols.push(Arc::new(StringArray::from(vec!["eu", "us"])));
            RecordBatch::try_new(schema, cols).unwrap()
        };
        let err = ds
            .put(extra.clone(), "t", PutOptions::default())
            .await
            .unwrap_err();
        match &err {
            StoreError::SchemaMismatch { name, details } => {
                assert_eq!(name, "t");
                assert!(details.contains("new column 'region'"), "{details}");
            }
            e => panic!("wrong error: {e}"),
        }
        let wrong_type = {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("name", DataType::Utf8, true),
            ]));
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(vec!["x"])),
                    Arc::new(StringArray::from(vec!["y"])),
                ],
            )
            .unwrap()
        };
        let err = ds
            .put(wrong_type, "t", PutOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column 'id' is Utf8 in the data but Int64"),
            "{err}"
        );
        assert!(err.contains("missing column 'score'"), "{err}");
        assert_eq!(rows(&om, "t").await, 4, "a rejected append changes nothing");
        assert_eq!(ds.metadata("t").await.unwrap().version, 1);
        // merge_schema adds the column; old rows read as null
        let opts = PutOptions {
            merge_schema: true,
            ..Default::default()
        };
        let m = ds.put(extra, "t", opts).await.unwrap();
        assert_eq!(m.version, 2);
        let b = ds
            .get_batches(
                "t",
                GetOptions {
                    filter: Some("region IS NOT NULL".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(total_rows(&b), 2);
        assert_eq!(rows(&om, "t").await, 6);
        // integer widening is accepted: Int32 ids into the Int64 column
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false)])),
            vec![Arc::new(arrow::array::Int32Array::from(vec![99]))],
        )
        .unwrap();
        let opts = PutOptions {
            merge_schema: true,
            ..Default::default()
        };
        ds.put(narrow, "t", opts).await.unwrap();
        let b = ds
            .get_batches(
                "t",
                GetOptions {
                    filter: Some("id = 99".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(total_rows(&b), 1);
    }
}

#[tokio::test]
async fn attributes_merge_and_reset() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let ds = om.datasets();
        let attrs = |v: serde_json::Value| Some(v.as_object().unwrap().clone());
        let opts = PutOptions {
            attributes: attrs(json!({"owner": "ana", "pii": false})),
            ..Default::default()
        };
        ds.put(json!({"a": 1}), "doc", opts).await.unwrap();
        let opts = PutOptions {
            attributes: attrs(json!({"pii": true})),
            ..Default::default()
        };
        let m = ds.put(json!({"a": 2}), "doc", opts).await.unwrap();
        assert_eq!(
            serde_json::Value::Object(m.attributes),
            json!({"owner": "ana", "pii": true})
        );
        let m = ds
            .put(json!({"a": 3}), "doc", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(m.attributes.len(), 2, "no attributes given keeps them");
        let m = ds
            .set_attributes("doc", serde_json::Map::new())
            .await
            .unwrap();
        assert!(m.attributes.is_empty(), "{{}} resets");
        assert_eq!(m.version, 4);
        assert_eq!(
            ds.get_document("doc").await.unwrap(),
            json!({"a": 3}),
            "attribute change keeps data"
        );
    }
}

#[tokio::test]
async fn list_drop_and_hidden_names() {
    for root in roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let ds = om.datasets();
        for n in [
            "sales/2024/q1",
            "sales/2024/q2",
            "sales/2025/q1",
            "costs",
            "_scratch",
            "sales/.tmp",
        ] {
            ds.put(sample_batch(0, 1), n, PutOptions::default())
                .await
                .unwrap();
        }
        ds.put(json!({}), "config", PutOptions::default())
            .await
            .unwrap();
        let names =
            |v: Vec<omegastore::Metadata>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
        let all = names(ds.list(None, &ListOptions::default()).await.unwrap());
        assert_eq!(
            all,
            vec![
                "config",
                "costs",
                "sales/2024/q1",
                "sales/2024/q2",
                "sales/2025/q1"
            ]
        );
        let hidden = names(
            ds.list(
                None,
                &ListOptions {
                    hidden: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        );
        assert_eq!(hidden.len(), 7);
        assert_eq!(
            names(
                ds.list(Some("sales/2024/*"), &ListOptions::default())
                    .await
                    .unwrap()
            ),
            vec!["sales/2024/q1", "sales/2024/q2"]
        );
        assert_eq!(
            names(
                ds.list(Some("sales/**"), &ListOptions::default())
                    .await
                    .unwrap()
            )
            .len(),
            3
        );
        let docs = names(
            ds.list(
                None,
                &ListOptions {
                    kind: Some("json.document".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        );
        assert_eq!(docs, vec!["config"]);
        assert!(ds.exists("costs").await.unwrap());
        assert!(!ds.exists("nope").await.unwrap());

        // drop by pattern, then each name is gone, data included
        let dropped = ds.drop("sales/2024/*", false).await.unwrap();
        assert_eq!(dropped, vec!["sales/2024/q1", "sales/2024/q2"]);
        let err = ds
            .get_batches("sales/2024/q1", GetOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        let err = ds.drop("nope", false).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));
        assert!(ds.drop("nope", true).await.unwrap().is_empty());
        // a dropped name can be used again, from version 1
        let m = ds
            .put(sample_batch(0, 2), "sales/2024/q1", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(rows(&om, "sales/2024/q1").await, 2);
        // stores and buckets are separate namespaces
        assert!(
            om.models()
                .store()
                .list(None, &ListOptions::default())
                .await
                .unwrap()
                .is_empty()
        );
        let other = om.bucket("team-b").unwrap();
        assert!(!other.datasets().exists("costs").await.unwrap());
        assert!(om.bucket("Bad/Bucket").is_err());
    }
}

#[tokio::test]
async fn dropping_removes_the_data() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 50), "big", PutOptions::default())
        .await
        .unwrap();
    om.datasets()
        .put(json!({"x": 1}), "doc", PutOptions::default())
        .await
        .unwrap();
    let count = || walk(std::path::Path::new(&root.url));
    let before = count();
    om.datasets().drop("big", false).await.unwrap();
    om.datasets().drop("doc", false).await.unwrap();
    let after = count();
    assert!(
        after.iter().all(|p| !p.contains("/data/")),
        "data left behind: {after:?}"
    );
    assert!(before.len() > after.len());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn bad_names_are_typed_errors() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let long = "x".repeat(256);
    for bad in [
        "",
        ".",
        "..",
        "a/../b",
        "a/./b",
        "/lead",
        "trail/",
        "a//b",
        "ctl\u{7}x",
        "tab\tx",
        "x#123",
        "a/b#7/c",
        &long,
        "at@sign/x",
    ] {
        let err = om
            .datasets()
            .put(json!(1), bad, PutOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { .. }),
            "{bad:?} gave {err}"
        );
        assert!(err.to_string().contains("invalid name"), "{err}");
    }
    // fine: unicode, spaces, a '#' not followed only by digits, 255 bytes
    for good in ["日本/ü ber", "c#", "x#12a", &"y".repeat(255)] {
        om.datasets()
            .put(json!(1), good, PutOptions::default())
            .await
            .unwrap();
        assert_eq!(om.datasets().get_document(good).await.unwrap(), json!(1));
    }
    // nothing escaped the root
    let tmp_parent = std::path::Path::new(&root.url).parent().unwrap();
    let entries: Vec<_> = std::fs::read_dir(tmp_parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("store")]);
}

/// Many small appends compact into one file: a new version with the same
/// rows; earlier versions still read; a second compaction changes nothing.
#[tokio::test]
async fn compaction_rewrites_small_files_as_a_new_version() {
    for root in common::roots() {
        let om = Omega::open(&root.url).await.unwrap();
        let ds = om.datasets();
        for i in 0..6 {
            ds.put(sample_batch(i * 10, 10), "events", PutOptions::default())
                .await
                .unwrap();
        }
        assert_eq!(ds.metadata("events").await.unwrap().kind_meta["files"], 6);
        let (meta, removed) = ds
            .change_table("events", omegastore::TableChange::Compact)
            .await
            .unwrap();
        assert_eq!((meta.version, removed), (7, 6), "{}", root.kind);
        assert_eq!(meta.kind_meta["files"], 1);
        assert_eq!(meta.kind_meta["rows"], 60);
        assert_eq!(rows(&om, "events").await, 60);
        assert_eq!(rows(&om, "events@3").await, 30);
        let (again, removed) = ds
            .change_table("events", omegastore::TableChange::Compact)
            .await
            .unwrap();
        assert_eq!((again.version, removed), (7, 0));
    }
}
