//! Put and get of a 1,000,000-row table on a local store.
//! Run with `cargo bench --bench store` (release profile).

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omegastore::{GetOptions, Object, Omega, PutMode, PutOptions};

const ROWS: usize = 1_000_000;
const BATCH: usize = 64 * 1024;

fn table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("vendor", DataType::Utf8, true),
        Field::new("fare", DataType::Float64, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let vendors = ["A", "B", "C", "D"];
    let batches = (0..ROWS)
        .step_by(BATCH)
        .map(|start| {
            let n = BATCH.min(ROWS - start);
            let ids: Vec<i64> = (start as i64..(start + n) as i64).collect();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| vendors[(*i % 4) as usize]),
                )),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| (*i % 997) as f64 * 0.25),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        ids.iter().map(|i| 1_700_000_000_000_000 + i * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    (schema, batches)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let om = rt
        .block_on(Omega::open(dir.path().to_str().unwrap()))
        .unwrap();
    let (schema, batches) = table();
    let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();

    let mut g = c.benchmark_group("table_1m_rows");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("put", |b| {
        b.to_async(&rt).iter(|| async {
            let obj = Object::Table {
                schema: schema.clone(),
                batches: batches.clone(),
            };
            let opts = PutOptions {
                mode: PutMode::Overwrite,
                ..Default::default()
            };
            om.datasets().put(obj, "bench/put", opts).await.unwrap()
        })
    });
    rt.block_on(om.datasets().put(
        Object::Table {
            schema: schema.clone(),
            batches: batches.clone(),
        },
        "bench/get",
        PutOptions::default(),
    ))
    .unwrap();
    g.bench_function("get", |b| {
        b.to_async(&rt).iter(|| async {
            let out = om
                .datasets()
                .get_batches("bench/get", GetOptions::default())
                .await
                .unwrap();
            assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), ROWS);
            out
        })
    });
    g.bench_function("get_filtered", |b| {
        b.to_async(&rt).iter(|| async {
            let opts = GetOptions {
                columns: Some(vec!["id".into(), "fare".into()]),
                filter: Some("id >= 500000 AND id < 510000".into()),
                limit: None,
            };
            om.datasets().get_batches("bench/get", opts).await.unwrap()
        })
    });
    g.finish();
    eprintln!("in-memory size of the table: {:.1} MB", bytes as f64 / 1e6);
}

criterion_group!(benches, bench);
criterion_main!(benches);
