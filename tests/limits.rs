//! Big and many: a 100 MB value, 10,000 columns, many small appends then a
//! compaction (cases 17 and 18 of the bad-input table). Sizes that take
//! minutes run under `OMEGA_LIMITS_LONG=1` (the README's long variant).

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
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

/// Many small appends (each its own Delta commit, a checkpoint every 100),
/// then a compaction: same rows, fewer files, and every version still reads.
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
    let (after, removed) = ds.change_table("log", TableChange::Compact).await.unwrap();
    assert_eq!(after.version, appends as u64 + 1);
    assert_eq!(removed, appends as u64, "every small file compacted");
    assert_eq!(after.kind_meta["files"], 1);
    assert_eq!(rows(&om, "log").await, 2 * appends);
    // time travel across the checkpoints
    assert_eq!(rows(&om, "log@1").await, 2);
    assert_eq!(rows(&om, &format!("log@{}", appends / 2)).await, appends);
}
