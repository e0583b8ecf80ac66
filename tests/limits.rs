//! Big and many: a 100 MB value, 10,000 columns, many small appends then a
//! compaction (cases 17 and 18 of the bad-input table), queries past the
//! query memory limit. Sizes that take minutes run under
//! `OMEGA_LIMITS_LONG=1` (the README's long variant).

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use omegastore::sql::SqlError;
use omegastore::{GetOptions, Omega, PutOptions, TableChange};

use common::{local, rows, sample_batch};

fn long() -> bool {
    std::env::var("OMEGA_LIMITS_LONG").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_100_mb_round_trips_byte_identical() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let big: String = (0..100 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("body", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            Arc::new(StringArray::from(vec![big.as_str(), "small"])),
        ],
    )
    .unwrap();
    om.datasets()
        .put(batch, "big", PutOptions::default())
        .await
        .unwrap();
    let back = om
        .sql("SELECT body FROM big ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let values: Vec<String> = back
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let s = c.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..s.len())
                .map(|i| s.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(values.len(), 2);
    assert!(values[0] == big, "the 100 MB value changed");
    assert_eq!(values[1], "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_columns_store_and_query() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let n = 10_000;
    let fields: Vec<Field> = (0..n)
        .map(|i| Field::new(format!("c{i}"), DataType::Int64, false))
        .collect();
    let columns: Vec<ArrayRef> = (0..n)
        .map(|i| Arc::new(Int64Array::from(vec![i as i64, 2 * i as i64])) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    om.datasets()
        .put(batch.clone(), "wide", PutOptions::default())
        .await
        .unwrap();
    om.datasets()
        .put(batch, "wide", PutOptions::default())
        .await
        .unwrap();
    let out = om
        .sql("SELECT sum(c9999) AS s, count(*) AS n FROM wide")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let s = out[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(s, 2 * (9999 + 2 * 9999));
    let back = om
        .datasets()
        .get_batches("wide", GetOptions::default())
        .await
        .unwrap();
    assert_eq!(back[0].num_columns(), n);
}

/// Many small appends (each its own Delta commit; a small table checkpoints
/// every 10 versions, so opening it for the next append replays at most 10
/// log entries), then a compaction: same rows, fewer files, and every
/// version still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_appends_then_optimize_keep_every_row() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let appends = if long() { 10_000 } else { 250 };
    let ds = om.datasets();
    for i in 0..appends {
        ds.put(sample_batch(i as i64 * 2, 2), "log", PutOptions::default())
            .await
            .unwrap();
    }
    let before = ds.metadata("log").await.unwrap();
    assert_eq!(before.version, appends as u64);
    assert_eq!(rows(&om, "log").await, 2 * appends);
    if !long() {
        // Delta versions 0..appends: a checkpoint after every 10th
        let checkpoints = files_named(std::path::Path::new(&root.url), ".checkpoint.parquet");
        assert_eq!(checkpoints.len(), appends / 10, "{checkpoints:?}");
    }
    let (after, removed) = ds.change_table("log", TableChange::Compact).await.unwrap();
    assert_eq!(after.version, appends as u64 + 1);
    assert_eq!(removed, appends as u64, "every small file compacted");
    assert_eq!(after.kind_meta["files"], 1);
    assert_eq!(rows(&om, "log").await, 2 * appends);
    // time travel across the checkpoints
    assert_eq!(rows(&om, "log@1").await, 2);
    assert_eq!(rows(&om, &format!("log@{}", appends / 2)).await, appends);
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn files_named(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_named(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out
}

/// Rows of `SELECT id …` as one vector.
async fn ids(om: &Omega, sql: &str) -> Vec<i64> {
    let batches = om.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            col.values().to_vec()
        })
        .collect()
}

/// The `spill_count` metrics of an `EXPLAIN ANALYZE`, summed.
async fn spills(om: &Omega, sql: &str) -> usize {
    common::explain_analyze(om, sql)
        .await
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .sum()
}

/// Under a query memory limit a sort larger than the limit spills to
/// temporary files and answers exactly as without a limit; a join whose
/// build side cannot fit fails with a memory error that says how to raise
/// the limit, and the store and session go on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_memory_limit_spills_or_fails_by_name() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(
        &om,
        "CREATE TABLE big AS SELECT value AS id, random() AS r, \
         concat('name-', CAST(value % 977 AS VARCHAR)) AS name \
         FROM generate_series(1, 2000000)",
    )
    .await;
    let sort = "SELECT id, name FROM big ORDER BY r, id";
    let unlimited = ids(&om, sort).await;
    assert_eq!(unlimited.len(), 2_000_000);
    assert_eq!(spills(&om, sort).await, 0, "no limit, no spill");

    let limited = om.with_memory_limit(Some(64 << 20)).unwrap();
    assert_eq!(limited.memory_limit(), Some(64 << 20));
    assert_eq!(ids(&limited, sort).await, unlimited);
    assert!(spills(&limited, sort).await > 0, "the sort spilled");
    // sessions derived from it share the limit
    let derived = limited.bucket("other").unwrap();
    assert_eq!(derived.memory_limit(), Some(64 << 20));

    let join = "SELECT count(*) FROM big a JOIN big b ON a.id = b.id AND a.name = b.name";
    let err = match limited.sql(join).await {
        Ok(df) => df.collect().await.map(|_| ()).map_err(SqlError::from),
        Err(e) => Err(e),
    }
    .unwrap_err();
    assert!(matches!(err, SqlError::Memory(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("ran out of memory") && text.contains("--memory-limit"),
        "{text}"
    );
    // nothing held back, nothing broken
    assert_eq!(
        ids(&limited, "SELECT count(*) FROM big").await,
        vec![2_000_000]
    );
    assert_eq!(rows(&om, "big").await, 2_000_000);
}
