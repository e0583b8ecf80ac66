//! Bad input from users: names that look alike, hostile quotes, duplicate
//! columns, data that changes under a query, special floating-point values.
//! Each gets a typed error or the documented result, and nothing stored is
//! lost or changed.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use omegastore::{GetOptions, ListOptions, Omega, PutMode, PutOptions, StoreError};
use serde_json::json;

use common::{sample_batch, total_rows};

#[tokio::test]
async fn names_that_look_alike_are_different_objects() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let ds = om.datasets();
    // NFC and NFD "é", case, emoji, right-to-left text, punctuation
    let names = [
        "caf\u{e9}",
        "cafe\u{301}",
        "Sales",
        "sales",
        "📈/q1",
        "مبيعات",
        "a<b>|c:d",
        "-leading-dash",
        "x'; DROP TABLE t; --",
        "y\" OR \"1\"=\"1",
    ];
    for (i, n) in names.iter().enumerate() {
        ds.put(json!({ "i": i }), n, PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(ds.get_document(n).await.unwrap(), json!({ "i": i }), "{n}");
    }
    let mut listed: Vec<String> = ds
        .list(None, &ListOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // rejected, each with the rule it broke
    for (bad, why) in [
        ("x#123", "'#' followed by digits"),
        ("nul\u{0}byte", "control characters"),
        ("a/../../b", "'..'"),
        ("/abs", "start or end with '/'"),
        ("a//b", "empty segment"),
        ("trailing/", "start or end with '/'"),
        (".", "'.'"),
    ] {
        match ds.put(json!({}), bad, PutOptions::default()).await {
            Err(StoreError::InvalidName { reason, .. }) => {
                assert!(reason.contains(why), "{bad:?}: {reason}")
            }
            other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
        }
    }
}

/// A root directory whose name holds URL characters keeps every file of
/// the store inside it, and one with a `%` is refused: deltalake wrote such
/// a root's table files to the directory the name decodes to (`p%41q` →
/// `pAq`), where the store's records did not point.
#[tokio::test]
async fn a_root_with_url_characters_keeps_its_files_inside_it_and_one_with_percent_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("p q#x~[y]^|@");
    let om = Omega::open(&dir.to_string_lossy()).await.unwrap();
    let ds = om.datasets();
    for name in ["sales", "sales%41/q1"] {
        ds.put(sample_batch(0, 10), name, PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        ds.put(
            sample_batch(10, 5),
            name,
            PutOptions {
                mode: PutMode::Append,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(common::rows(&om, name).await, 15, "{name}");
    }
    assert_eq!(common::scalar(&om, "SELECT count(*) FROM sales").await, 15);
    // nothing beside the root; a fresh process finds every version
    let siblings: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![dir.file_name().unwrap().to_owned()]);
    let reopened = Omega::open(&dir.to_string_lossy()).await.unwrap();
    assert_eq!(common::rows(&reopened, "sales%41/q1").await, 15);
    // a '%' in the root's own path is refused before anything is created
    let percent = parent.path().join("p%41q");
    match Omega::open(&percent.to_string_lossy()).await {
        Err(StoreError::InvalidUrl { url, reason }) => {
            assert!(
                url.contains("p%41q") && reason.contains("without '%'"),
                "{reason}"
            )
        }
        other => panic!("expected InvalidUrl, got {:?}", other.map(|_| ())),
    }
    assert!(!percent.exists() && !parent.path().join("pAq").exists());
    // a root reached through a symlink to such a directory is refused too, as
    // is one to be created under it, and nothing is created there
    let target = parent.path().join("x%41y");
    std::fs::create_dir(&target).unwrap();
    let link = parent.path().join("plain");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for root in [link.clone(), link.join("sub")] {
        match Omega::open(&root.to_string_lossy()).await {
            Err(StoreError::InvalidUrl { reason, .. }) => {
                // names where the '%' is: the symlink's target
                assert!(
                    reason.contains("without '%'") && reason.contains("x%41y"),
                    "{reason}"
                )
            }
            other => panic!("{root:?}: expected InvalidUrl, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    assert!(!parent.path().join("xAy").exists());
}

#[tokio::test]
async fn hostile_quotes_in_names_and_values_never_reach_sql_text() {
    let om = Omega::open("memory://").await.unwrap();
    let name = "t\"; DROP TABLE keep; --";
    om.datasets()
        .put(sample_batch(0, 3), "keep", PutOptions::default())
        .await
        .unwrap();
    om.datasets()
        .put(sample_batch(0, 4), name, PutOptions::default())
        .await
        .unwrap();
    // the name is one quoted identifier: read as a table, nothing dropped
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let n = om
        .sql(&format!("SELECT count(*) AS n FROM {quoted}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
    assert!(om.datasets().exists("keep").await.unwrap());
    // a value with quotes goes through a parameter, never the text
    let hostile = "x' OR '1'='1";
    let rows = om
        .sql_with_params(
            "SELECT count(*) AS n FROM keep WHERE name = $1",
            &[datafusion::common::ScalarValue::Utf8(Some(hostile.into()))],
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 0, "the quote did not widen the filter");
}

#[tokio::test]
async fn duplicate_column_names_and_case_variants_are_refused() {
    let om = Omega::open("memory://").await.unwrap();
    let dup = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("a", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
            Arc::new(Int64Array::from(vec![2])) as ArrayRef,
        ],
    )
    .unwrap();
    let err = om
        .datasets()
        .put(dup, "dup", PutOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dup"), "{err}");
    assert!(
        !om.datasets().exists("dup").await.unwrap(),
        "nothing stored"
    );
    // names differing only in case
    let case = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("Id", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
            Arc::new(Int64Array::from(vec![2])) as ArrayRef,
        ],
    )
    .unwrap();
    // Delta column names are case-insensitive: refused, naming the dataset
    // and the column, nothing stored
    let err = om
        .datasets()
        .put(case, "case", PutOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("'case'") && err.contains("'id'"), "{err}");
    assert!(!om.datasets().exists("case").await.unwrap());
}

#[tokio::test]
async fn a_dataset_overwritten_or_dropped_after_planning_reads_its_pinned_version_or_fails_clearly()
{
    let om = Omega::open("memory://").await.unwrap();
    om.datasets()
        .put(sample_batch(0, 5), "t", PutOptions::default())
        .await
        .unwrap();
    // planned (version 1 pinned), then overwritten, then run
    let df = om.sql("SELECT * FROM t").await.unwrap();
    let opts = PutOptions {
        mode: PutMode::Overwrite,
        ..Default::default()
    };
    om.datasets()
        .put(sample_batch(0, 2), "t", opts)
        .await
        .unwrap();
    assert_eq!(
        total_rows(&df.collect().await.unwrap()),
        5,
        "the pinned version"
    );
    // planned, then dropped (data deleted), then run: an error, not a panic
    let df = om.sql("SELECT * FROM t").await.unwrap();
    om.datasets().drop("t", false).await.unwrap();
    let r = df.collect().await;
    assert!(
        r.is_err(),
        "rows of a dropped table: {:?}",
        r.map(|b| total_rows(&b))
    );
}

#[tokio::test]
async fn special_floats_and_all_null_columns_round_trip() {
    let om = Omega::open("memory://").await.unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("f", DataType::Float64, false),
            Field::new("empty", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Float64Array::from(vec![
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                f64::MIN_POSITIVE,
            ])) as ArrayRef,
            Arc::new(StringArray::from(vec![None::<&str>; 5])) as ArrayRef,
        ],
    )
    .unwrap();
    om.datasets()
        .put(batch, "floats", PutOptions::default())
        .await
        .unwrap();
    let b = om
        .datasets()
        .get_batches("floats", GetOptions::default())
        .await
        .unwrap();
    let f = b[0]
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert!(f.value(0).is_nan());
    assert_eq!(f.value(1), f64::INFINITY);
    assert_eq!(f.value(2), f64::NEG_INFINITY);
    assert!(f.value(3) == 0.0 && f.value(3).is_sign_negative());
    assert_eq!(f.value(4), f64::MIN_POSITIVE);
    assert_eq!(b[0].column(1).null_count(), 5);
}

/// A mixin that fails in the way given ("… inline": run on the planning
/// thread instead of a thread of its own).
#[derive(Debug)]
struct Broken(&'static str);

impl omegastore::Mixin for Broken {
    fn name(&self) -> &str {
        self.0
    }
    fn inline(&self) -> bool {
        self.0.ends_with(" inline")
    }
    fn rewrite(
        &self,
        _plan: datafusion::logical_expr::LogicalPlan,
        _cx: &omegastore::MixinContext,
    ) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
        match self.0 {
            "erroring" => Err(datafusion::error::DataFusionError::Plan(
                "policy store unreachable".into(),
            )),
            "looping" => loop {
                std::thread::sleep(std::time::Duration::from_millis(50));
            },
            // a plan that returns other columns than the query asked for
            "invalid" | "invalid inline" => {
                datafusion::logical_expr::LogicalPlanBuilder::empty(true)
                    .project([datafusion::prelude::lit(1).alias("secret")])?
                    .build()
            }
            _ => panic!("bug in a mixin"),
        }
    }
}

#[tokio::test]
async fn a_mixin_that_errors_panics_loops_or_returns_an_invalid_plan_fails_the_read_closed_with_its_name()
 {
    for kind in [
        "erroring",
        "panicking",
        "looping",
        "invalid",
        "panicking inline",
        "invalid inline",
    ] {
        let om = Omega::open("memory://").await.unwrap();
        // a looping mixin is given up on after the limit
        om.sql("SET omega.mixin_time_limit_ms = 300")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        om.datasets()
            .put(sample_batch(0, 3), "t", PutOptions::default())
            .await
            .unwrap();
        om.register_mixin(Arc::new(Broken(kind)));
        let sql = om.sql("SELECT * FROM t").await;
        let err = match sql {
            Ok(df) => df.collect().await.unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("mixin '{kind}' failed")), "{err}");
        // get goes through the same rewrite: no rows, the same error
        let err = om
            .datasets()
            .get_batches("t", GetOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("mixin '{kind}' failed")), "{err}");
    }
}
