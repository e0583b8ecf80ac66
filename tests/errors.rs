//! Damaged stores give typed errors that name the object and the path:
//! corrupt Parquet, truncated metadata, missing data files.

mod common;

use std::path::{Path, PathBuf};

use omegastore::{GetOptions, ListOptions, Omega, PutOptions, StoreError};
use serde_json::json;

use common::{local, om, sample_batch};

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_with(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn corrupt_parquet_is_a_typed_error_naming_object_and_path() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 100), "t", PutOptions::default())
        .await
        .unwrap();
    let parquet = files_with(Path::new(&root.url), ".parquet");
    assert_eq!(parquet.len(), 1);
    std::fs::write(&parquet[0], b"this is not parquet at all, sorry").unwrap();
    let err = om
        .datasets()
        .get_batches("t", GetOptions::default())
        .await
        .unwrap_err();
    match &err {
        StoreError::CorruptData { name, path, .. } => {
            assert_eq!(name, "t");
            assert!(path.contains("datasets/data/t/"), "{path}");
        }
        e => panic!("expected CorruptData, got {e}"),
    }
    assert!(!err.to_string().contains('\n'), "one line: {err}");
}

#[tokio::test]
async fn a_missing_data_file_is_an_error_not_an_empty_result() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(sample_batch(0, 100), "t", PutOptions::default())
        .await
        .unwrap();
    om.datasets()
        .put(json!({"a": 1}), "d", PutOptions::default())
        .await
        .unwrap();
    for p in files_with(Path::new(&root.url), ".parquet") {
        std::fs::remove_file(p).unwrap();
    }
    let err = om
        .datasets()
        .get_batches("t", GetOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::MissingData { name, version: 1, .. } if name == "t"),
        "{err}"
    );
    let doc = files_with(&Path::new(&root.url).join("default/datasets/data"), ".json");
    std::fs::remove_file(&doc[0]).unwrap();
    let err = om.datasets().get_document("d").await.unwrap_err();
    match &err {
        StoreError::MissingData { name, path, .. } => {
            assert_eq!(name, "d");
            assert!(path.ends_with(".json"), "{path}");
        }
        e => panic!("expected MissingData, got {e}"),
    }
    // the Delta log gone entirely
    for p in files_with(Path::new(&root.url), "00000000000000000000.json")
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("_delta_log"))
    {
        std::fs::remove_file(p).unwrap();
    }
    let err = om
        .datasets()
        .get_batches("t", GetOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::MissingData { .. } | StoreError::CorruptData { .. }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_metadata_is_a_typed_error_and_does_not_break_listing() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    om.datasets()
        .put(json!({"a": 1}), "broken", PutOptions::default())
        .await
        .unwrap();
    om.datasets()
        .put(json!({"b": 2}), "fine", PutOptions::default())
        .await
        .unwrap();
    let meta_dir = Path::new(&root.url).join("default/datasets/meta/broken");
    let record = files_with(&meta_dir, ".json").pop().unwrap();
    let text = std::fs::read(&record).unwrap();
    std::fs::write(&record, &text[..text.len() / 2]).unwrap();
    let err = om.datasets().metadata("broken").await.unwrap_err();
    match &err {
        StoreError::CorruptMetadata { name, path, .. } => {
            assert_eq!(name, "broken");
            assert!(path.ends_with("00000000000000000001.json"), "{path}");
        }
        e => panic!("expected CorruptMetadata, got {e}"),
    }
    let names: Vec<String> = om
        .datasets()
        .list(None, &ListOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["fine"]);
    // the CLI reports it in one line, exit 1, no panic
    let out = common::om(&root)
        .args(["datasets", "get", "broken"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("metadata of 'broken'") && stderr.contains("corrupt"),
        "{stderr}"
    );
    // a put over it refuses rather than guess; a forced drop clears it
    let err = om
        .datasets()
        .put(json!({"c": 3}), "broken", PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CorruptMetadata { .. }), "{err}");
    assert!(om.datasets().drop("broken", false).await.is_err());
    assert_eq!(
        om.datasets().drop("broken", true).await.unwrap(),
        vec!["broken"]
    );
    let m = om
        .datasets()
        .put(json!({"c": 3}), "broken", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(m.version, 1);
    assert_eq!(
        om.datasets().get_document("broken").await.unwrap(),
        json!({"c": 3})
    );
}

#[test]
fn cli_errors_are_one_line_with_exit_code_1() {
    let root = local();
    for args in [
        vec!["datasets", "get", "missing"],
        vec!["datasets", "put", "/no/such/file.csv", "x"],
        vec!["datasets", "put", "Cargo.toml", "../escape"],
        vec!["datasets", "drop", "missing"],
        vec!["datasets", "get", "x@0"],
    ] {
        let out = om(&root).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("om: error: "), "{stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn planning_on_a_session_whose_omega_was_dropped_is_a_clear_error() {
    let om = Omega::open("memory://").await.unwrap();
    om.datasets()
        .put(sample_batch(0, 10), "t", PutOptions::default())
        .await
        .unwrap();
    let state = om.session().state();
    drop(om);
    // a copy of the session state kept by the caller resolves no table
    // once the Omega is gone (the catalog holds it weakly)
    let e = state
        .create_logical_plan("SELECT * FROM t")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("was dropped"), "{e}");
}

#[tokio::test]
async fn a_torn_newest_record_does_not_hide_earlier_versions() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let ds = om.datasets();
    ds.put(json!({"v": 1}), "cfg", PutOptions::default())
        .await
        .unwrap();
    ds.put(json!({"v": 2}), "cfg", PutOptions::default())
        .await
        .unwrap();
    ds.tag("cfg", "stable", Some(1)).await.unwrap();
    let meta_dir = Path::new(&root.url).join("default/datasets/meta/cfg");
    let newest = files_with(&meta_dir, ".json").pop().unwrap();
    assert!(newest.ends_with("00000000000000000002.json"));
    let text = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &text[..text.len() / 3]).unwrap();
    // the newest version names its torn record
    match ds.metadata("cfg").await.unwrap_err() {
        StoreError::CorruptMetadata { path, .. } => {
            assert!(path.ends_with("00000000000000000002.json"), "{path}")
        }
        e => panic!("expected CorruptMetadata, got {e}"),
    }
    // the versions before it stay readable, by number and by tag
    assert_eq!(ds.get_document("cfg@1").await.unwrap(), json!({"v": 1}));
    assert_eq!(
        ds.get_document("cfg@stable").await.unwrap(),
        json!({"v": 1})
    );
    assert!(matches!(
        ds.metadata("cfg@2").await.unwrap_err(),
        StoreError::CorruptMetadata { .. }
    ));
}

#[tokio::test]
async fn malformed_input_files_are_typed_errors_with_file_and_line_and_store_nothing() {
    use omegastore::{FileFormat, Object};
    let dir = tempfile::tempdir().unwrap();
    let om = Omega::open("memory://").await.unwrap();
    // past the rows that schema inference reads, JSON lines are parsed on
    // all cores; a bad value or a string never closed there still fails
    // the put, named by file and by what went wrong
    let good: String = (0..12_000).map(|i| format!("{{\"a\":{i}}}\n")).collect();
    let late_bad = format!("{good}{{\"a\":\"not a number\"}}\n{{\"a\":1}}\n");
    let late_open = format!("{good}{{\"a\":1,\"s\":\"never closed}}\n{{\"a\":2}}\n");
    let cases: [(&str, &[u8], &[&str]); 13] = [
        (
            "twice.csv",
            b"id,name,ID\n1,x,2\n",
            &["twice.csv", "'id' and 'ID' have the same name"],
        ),
        (
            "unnamed.csv",
            b"id,,name\n1,2,x\n",
            &["unnamed.csv", "column 2 has no name"],
        ),
        (
            "twice.jsonl",
            b"{\"a\":1}\n{\"A\":2}\n",
            &["twice.jsonl", "'a' and 'A' have the same name"],
        ),
        (
            "empty.csv",
            b"",
            &["empty.csv", "no columns", "a header row"],
        ),
        (
            "blank.jsonl",
            b"\n\n\n",
            &["blank.jsonl", "no columns", "at least one record"],
        ),
        (
            "unterminated.csv",
            b"a,b\n1,x\n2,\"never closed\n3,z\n",
            &["unterminated.csv", "opened on line 3 is never closed"],
        ),
        (
            "ragged.csv",
            b"a,b\n1,x\n2,y,extra\n",
            &["ragged.csv", "line 3"],
        ),
        (
            "utf8.csv",
            b"a,b\n1,x\n2,\xff\xfe\n",
            &["utf8.csv", "UTF-8", "line 3"],
        ),
        (
            "bad.jsonl",
            b"{\"a\":1}\n{\"a\":2}\n{\"a\":,}\n",
            &["bad.jsonl", "not valid JSON", "line 3 column 6"],
        ),
        (
            "cut.jsonl",
            b"{\"a\":1}\n{\"a\":2\n",
            &["cut.jsonl", "not valid JSON", "EOF while parsing an object"],
        ),
        (
            "late_bad.jsonl",
            late_bad.as_bytes(),
            &["late_bad.jsonl", "not a number"],
        ),
        (
            "late_open.jsonl",
            late_open.as_bytes(),
            &["late_open.jsonl", "a string is never closed", "line 12001"],
        ),
        (
            "fake.parquet",
            b"not parquet at all",
            &["fake.parquet", "Parquet"],
        ),
    ];
    for (file, body, wanted) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, body).unwrap();
        let format = FileFormat::from_path(&path).unwrap();
        let obj = Object::File {
            path: path.clone(),
            format,
            schema: None,
        };
        let err = om
            .datasets()
            .put(obj, "t", PutOptions::default())
            .await
            .unwrap_err()
            .to_string();
        for w in wanted {
            assert!(err.contains(w), "{file}: '{w}' not in: {err}");
        }
        assert!(!om.datasets().exists("t").await.unwrap(), "{file} stored");
    }
    // a byte-order mark is stripped, not part of a column name
    let path = dir.path().join("bom.csv");
    std::fs::write(&path, b"\xef\xbb\xbfid,name\n1,x\n").unwrap();
    let obj = Object::File {
        path,
        format: FileFormat::Csv,
        schema: None,
    };
    om.datasets()
        .put(obj, "bom", PutOptions::default())
        .await
        .unwrap();
    let b = om
        .datasets()
        .get_batches("bom", GetOptions::default())
        .await
        .unwrap();
    assert_eq!(b[0].schema().field(0).name(), "id");
    // and JSON lines with one read (a JSON reader would fail on the mark)
    let path = dir.path().join("bom.jsonl");
    std::fs::write(&path, b"\xef\xbb\xbf{\"id\":1}\n{\"id\":2}\n").unwrap();
    let obj = Object::File {
        path,
        format: FileFormat::JsonLines,
        schema: None,
    };
    let meta = om
        .datasets()
        .put(obj, "bom_lines", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.kind_meta["rows"], 2);
}

#[tokio::test]
async fn truncated_parquet_is_a_typed_error_and_earlier_versions_still_read() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let ds = om.datasets();
    ds.put(sample_batch(0, 100), "t", PutOptions::default())
        .await
        .unwrap();
    let first = files_with(Path::new(&root.url), ".parquet");
    ds.put(sample_batch(100, 100), "t", PutOptions::default())
        .await
        .unwrap();
    // cut the second version's file in half (a partial copy, a full disk)
    let second: Vec<PathBuf> = files_with(Path::new(&root.url), ".parquet")
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    assert_eq!(second.len(), 1);
    let bytes = std::fs::read(&second[0]).unwrap();
    std::fs::write(&second[0], &bytes[..bytes.len() / 2]).unwrap();
    let err = ds
        .get_batches("t", GetOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptData { name, .. } if name == "t"),
        "{err}"
    );
    // version 1 does not use that file
    let v1 = ds.get_batches("t@1", GetOptions::default()).await.unwrap();
    assert_eq!(common::total_rows(&v1), 100);
}
