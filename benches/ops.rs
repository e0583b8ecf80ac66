//! The operations of `om bench ops` at a size that runs in minutes, so
//! regressions show: the five queries, model fit and predict, and
//! `predict()` inside SQL, on 1,000,000 generated rows.
//! Run with `cargo bench --bench ops` (release profile).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omegastore::bench::ops::{QUERIES, ops_batch, ops_schema};
use omegastore::models::{Input, TrainingData};
use omegastore::{ModelSpec, Object, Omega, PutMode, PutOptions};

const ROWS: usize = 1_000_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let om = rt
        .block_on(Omega::open(dir.path().to_str().unwrap()))
        .unwrap();
    let batches: Vec<_> = (0..ROWS.div_ceil(131_072))
        .map(|i| ops_batch(ROWS, i))
        .collect();
    let opts = || PutOptions {
        mode: PutMode::Overwrite,
        ..Default::default()
    };
    rt.block_on(om.datasets().put(
        Object::Table {
            schema: ops_schema(),
            batches,
        },
        "ops",
        opts(),
    ))
    .unwrap();
    rt.block_on(om.sql("CREATE TABLE customers AS SELECT v AS customer, CASE WHEN v % 2 = 0 THEN 'a' ELSE 'b' END AS segment FROM generate_series(0, 9999) t(v)"))
        .unwrap();

    let mut g = c.benchmark_group("sql");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    for (name, q, _) in QUERIES {
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { om.sql(q).await.unwrap().collect().await.unwrap() })
        });
    }
    g.finish();

    let models = om.models();
    let spec = ModelSpec::new("linear_regression", Default::default()).unwrap();
    let data = || {
        TrainingData::dataset("ops")
            .features(&["x1", "x2", "quantity"])
            .label("amount")
    };
    let mut g = c.benchmark_group("models");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("fit_linear", |b| {
        b.to_async(&rt).iter(|| async {
            models
                .fit("lr", data(), Some(spec.clone()), Default::default())
                .await
                .unwrap()
        })
    });
    g.bench_function("predict_linear", |b| {
        b.to_async(&rt).iter(|| async {
            models
                .predict("lr", Input::Dataset("ops".into()))
                .await
                .unwrap()
        })
    });
    g.bench_function("predict_sql", |b| {
        b.to_async(&rt).iter(|| async {
            om.sql("SELECT sum(predict('lr', x1, x2, quantity)) FROM ops")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
