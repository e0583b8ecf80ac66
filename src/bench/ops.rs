//! The store's own work on a generated table of N rows (bucket `bench_ops`):
//! put from CSV and from Arrow, get, a filtered count, a group-by, a join,
//! top-k, a point lookup, model fit and predict, and `predict()` in SQL.
//!
//! The generated files (`ops.csv`, `ops.parquet`, `customers.parquet`) are
//! left in the data directory so peers (`scripts/peers.py`) run the same
//! operations on the same bytes; every operation reports an answer (a count
//! or a sum) for the cross-engine check.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use serde_json::Map;

use super::{Timing, measure};
use crate::Omega;
use crate::models::{Input, ModelError, ModelSpec, TrainingData};
use crate::sample::Rng;
use crate::sql::SqlError;
use crate::store::{FileFormat, GetOptions, Object, PutMode, PutOptions};

/// Rows per generated batch.
const BATCH: usize = 131_072;
/// Above this many rows, inputs are streamed instead of held in memory.
const IN_MEMORY_ROWS: usize = 20_000_000;

/// Options of `om bench ops`.
#[derive(Debug, Clone)]
pub struct OpsOptions {
    pub rows: usize,
    pub runs: usize,
    /// Where the generated files go.
    pub data: PathBuf,
    /// Rows the linear and logistic models are fitted on.
    pub model_rows: usize,
    /// Rows the random forest is fitted on.
    pub forest_rows: usize,
    /// Trees of the forest.
    pub trees: usize,
}

/// The queries (name, SQL, the column whose sum is the answer), shared
/// with the peer script, which runs the same SQL in DuckDB.
pub const QUERIES: [(&str, &str, usize); 5] = [
    (
        "filtered_count",
        "SELECT count(*) FROM ops WHERE amount > 100 AND category = 'c07'",
        0,
    ),
    (
        "group_by",
        "SELECT category, count(*) AS n, avg(amount) AS avg_amount, sum(quantity) AS qty FROM ops GROUP BY category ORDER BY category",
        2,
    ),
    (
        "join",
        "SELECT c.segment, sum(o.amount) AS total FROM ops o JOIN customers c ON o.customer = c.customer GROUP BY c.segment ORDER BY c.segment",
        1,
    ),
    (
        "top_k",
        "SELECT id, amount FROM ops ORDER BY amount DESC, id LIMIT 10",
        1,
    ),
    ("point_lookup", "SELECT * FROM ops WHERE id = 4242", 6),
];

pub fn ops_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("x1", DataType::Float64, false),
        Field::new("x2", DataType::Float64, false),
        Field::new("quantity", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("flag", DataType::Boolean, false),
    ]))
}

fn customers(rows: usize) -> usize {
    (rows / 100).max(10)
}

/// Batch `index` of the generated table (each batch has its own seed, so
/// batches can be generated independently and in any order).
pub fn ops_batch(rows: usize, index: usize) -> RecordBatch {
    let start = index * BATCH;
    let n = BATCH.min(rows.saturating_sub(start));
    let mut r = Rng::new(0x0b5_0000 + index as u64);
    let ncust = customers(rows) as u64;
    let cats: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    let mut customer = Vec::with_capacity(n);
    let mut category = Vec::with_capacity(n);
    let (mut x1, mut x2, mut qty, mut amount, mut flag) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        customer.push(r.below(ncust) as i64);
        category.push(cats[r.below(20) as usize].as_str());
        let (a, b) = (r.uniform() * 100.0, r.normal() * 10.0);
        let q = 1 + r.below(100) as i64;
        // amount is linear in x1, x2, quantity plus noise; flag is its sign
        let y = 3.0 + 2.0 * a - 1.5 * b + 0.8 * q as f64 + 5.0 * r.normal();
        x1.push(a);
        x2.push(b);
        qty.push(q);
        amount.push(y);
        flag.push(y > 140.0);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            start as i64..(start + n) as i64,
        )),
        Arc::new(Int64Array::from(customer)),
        Arc::new(StringArray::from(category)),
        Arc::new(Float64Array::from(x1)),
        Arc::new(Float64Array::from(x2)),
        Arc::new(Int64Array::from(qty)),
        Arc::new(Float64Array::from(amount)),
        Arc::new(BooleanArray::from(flag)),
    ];
    RecordBatch::try_new(ops_schema(), cols).expect("static schema")
}

fn batch_count(rows: usize) -> usize {
    rows.div_ceil(BATCH)
}

fn customers_batch(rows: usize) -> RecordBatch {
    let n = customers(rows);
    let segments = [
        "consumer",
        "corporate",
        "home_office",
        "small_business",
        "enterprise",
    ];
    let regions = ["eu", "us", "apac", "latam"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Int64, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| segments[i % 5]),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| regions[(i / 5) % 4]),
        )),
    ];
    RecordBatch::try_new(schema, cols).expect("static schema")
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> SqlError {
    SqlError::Usage(format!("{}: {e}", path.display()))
}

/// Writes `ops.csv`, `ops.parquet` and `customers.parquet` unless a manifest
/// says they already hold `rows` rows.
pub fn write_files(opts: &OpsOptions) -> Result<(), SqlError> {
    let dir = &opts.data;
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let manifest = dir.join("manifest.json");
    let want = serde_json::json!({"rows": opts.rows, "generator": 1}).to_string();
    if std::fs::read_to_string(&manifest).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let csv_path = dir.join("ops.csv");
    let pq_path = dir.join("ops.parquet");
    let csv = std::fs::File::create(&csv_path).map_err(|e| io_err(&csv_path, e))?;
    let mut csv = arrow::csv::Writer::new(std::io::BufWriter::new(csv));
    let pq = std::fs::File::create(&pq_path).map_err(|e| io_err(&pq_path, e))?;
    let mut pq = parquet::arrow::ArrowWriter::try_new(pq, ops_schema(), None)
        .map_err(|e| io_err(&pq_path, e))?;
    for i in 0..batch_count(opts.rows) {
        let b = ops_batch(opts.rows, i);
        csv.write(&b)?;
        pq.write(&b).map_err(|e| io_err(&pq_path, e))?;
    }
    pq.close().map_err(|e| io_err(&pq_path, e))?;
    drop(csv);
    let cpath = dir.join("customers.parquet");
    let c = customers_batch(opts.rows);
    let file = std::fs::File::create(&cpath).map_err(|e| io_err(&cpath, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, c.schema(), None)
        .map_err(|e| io_err(&cpath, e))?;
    w.write(&c).map_err(|e| io_err(&cpath, e))?;
    w.close().map_err(|e| io_err(&cpath, e))?;
    std::fs::write(&manifest, want).map_err(|e| io_err(&manifest, e))?;
    Ok(())
}

fn overwrite() -> PutOptions {
    PutOptions {
        mode: PutMode::Overwrite,
        ..Default::default()
    }
}

fn model(e: ModelError) -> SqlError {
    crate::sql::model_functions::model_err(e)
}

fn sum_f64(batches: &[RecordBatch], col: usize) -> f64 {
    batches
        .iter()
        .filter_map(|b| {
            arrow::compute::cast(b.column(col), &DataType::Float64)
                .ok()
                .map(|a| {
                    arrow::compute::sum(
                        a.as_any()
                            .downcast_ref::<Float64Array>()
                            .expect("cast to f64"),
                    )
                    .unwrap_or(0.0)
                })
        })
        .sum()
}

/// A result's answer: the sum of column `col` over its rows.
fn answer_of(batches: &[RecordBatch], col: usize) -> String {
    format!("{}", sum_f64(batches, col))
}

/// Runs every operation; `progress` reports which.
pub async fn run(
    om: &Omega,
    opts: &OpsOptions,
    progress: &dyn Fn(&str),
) -> Result<Vec<Timing>, SqlError> {
    progress("writing the generated files");
    write_files(opts)?;
    let ds = om.datasets();
    let mut out = Vec::new();
    let rows = opts.rows as u64;

    // put from CSV (timed once: a put is a new version each time)
    progress("put from CSV");
    let start = Instant::now();
    ds.put(
        Object::File {
            path: opts.data.join("ops.csv"),
            format: FileFormat::Csv,
            schema: Some(ops_schema()),
        },
        "ops_csv",
        overwrite(),
    )
    .await?;
    out.push(Timing::new("put_csv", rows, vec![start.elapsed()], None));

    // put from Arrow: batches in memory (streamed from the generator above
    // IN_MEMORY_ROWS, which then counts generation too)
    progress("put from Arrow");
    let in_memory = opts.rows <= IN_MEMORY_ROWS;
    let batches: Vec<RecordBatch> = if in_memory {
        (0..batch_count(opts.rows))
            .map(|i| ops_batch(opts.rows, i))
            .collect()
    } else {
        vec![]
    };
    let obj = if in_memory {
        Object::Table {
            schema: ops_schema(),
            batches,
        }
    } else {
        let n = opts.rows;
        let s = futures::stream::iter(
            (0..batch_count(n)).map(move |i| Ok::<_, DataFusionError>(ops_batch(n, i))),
        );
        Object::Stream(Box::pin(RecordBatchStreamAdapter::new(ops_schema(), s)))
    };
    let start = Instant::now();
    ds.put(obj, "ops", overwrite()).await?;
    out.push(Timing::new("put_arrow", rows, vec![start.elapsed()], None));
    ds.put(customers_batch(opts.rows), "customers", overwrite())
        .await?;

    // get: every row and column back as Arrow
    progress("get");
    let (n, times) = measure(opts.runs, true, || async {
        if in_memory {
            let b = ds.get_batches("ops", GetOptions::default()).await?;
            Ok::<_, SqlError>(b.iter().map(RecordBatch::num_rows).sum::<usize>())
        } else {
            let mut s = ds
                .get_frame("ops", GetOptions::default())
                .await?
                .execute_stream()
                .await?;
            let mut n = 0;
            while let Some(b) = s.next().await {
                n += b?.num_rows();
            }
            Ok(n)
        }
    })
    .await?;
    out.push(Timing::new("get", n as u64, times, Some(n.to_string())));

    for (name, q, col) in QUERIES {
        progress(name);
        let (b, times) = measure(opts.runs, true, || async {
            om.sql(q).await?.collect().await.map_err(SqlError::from)
        })
        .await?;
        let n: usize = b.iter().map(RecordBatch::num_rows).sum();
        out.push(Timing::new(name, n as u64, times, Some(answer_of(&b, col))));
    }

    // the same queries on tables held in the memory cache (as `om serve` holds them)
    progress("memory cache");
    let budget = om.memory_cache().budget();
    om.memory_cache()
        .set_budget(proc_meminfo_bytes("MemAvailable").map_or(4 << 30, |b| b / 2));
    for table in ["ops", "customers"] {
        crate::sql::table_settings::set_cache(om.engine(), table, true).await?;
    }
    for (name, q, col) in QUERIES {
        progress(&format!("{name} (memory cache)"));
        let (b, times) = measure(opts.runs, true, || async {
            om.sql(q).await?.collect().await.map_err(SqlError::from)
        })
        .await?;
        let n: usize = b.iter().map(RecordBatch::num_rows).sum();
        let cached = format!("{name}_cached");
        out.push(Timing::new(
            &cached,
            n as u64,
            times,
            Some(answer_of(&b, col)),
        ));
    }
    for table in ["ops", "customers"] {
        crate::sql::table_settings::set_cache(om.engine(), table, false).await?;
    }
    om.memory_cache().set_budget(budget);

    // models: fitted on the first model_rows / forest_rows rows
    let models = om.models();
    let train = |n: usize| format!("SELECT * FROM ops WHERE id < {n}");
    let put_rows = |name: &'static str, n: usize| {
        let q = train(n);
        async move {
            let b = om.sql(&q).await?.collect().await?;
            om.datasets()
                .put(Object::from_batches(b)?, name, overwrite())
                .await?;
            Ok::<_, SqlError>(())
        }
    };
    put_rows("ops_model", opts.model_rows).await?;
    put_rows("ops_forest", opts.forest_rows).await?;
    let features = ["x1", "x2", "quantity"];
    for (name, algo, label, data, n, params) in [
        (
            "fit_linear",
            "linear_regression",
            "amount",
            "ops_model",
            opts.model_rows,
            serde_json::json!({"solver": "cholesky"}),
        ),
        (
            "fit_logistic",
            "logistic_regression",
            "flag",
            "ops_model",
            opts.model_rows,
            serde_json::json!({"solver": "newton"}),
        ),
        (
            "fit_forest",
            "random_forest_classifier",
            "flag",
            "ops_forest",
            opts.forest_rows,
            serde_json::json!({"n_trees": opts.trees, "max_depth": 10, "seed": 1}),
        ),
    ] {
        progress(name);
        let spec = ModelSpec::new(algo, params.as_object().cloned().unwrap_or_else(Map::new))
            .map_err(model)?;
        let model_name = format!("ops_{algo}");
        let (report, times) = measure(1, false, || async {
            models
                .fit(
                    &model_name,
                    TrainingData::dataset(data).features(&features).label(label),
                    Some(spec.clone()),
                    Default::default(),
                )
                .await
                .map_err(model)
        })
        .await?;
        let score = report
            .metrics
            .first()
            .map(|(k, v)| format!("train {k} {v:.4}"));
        out.push(Timing::new(name, n as u64, times, score));
    }
    progress("predict");
    let (b, times) = measure(opts.runs, false, || async {
        models
            .predict("ops_linear_regression", Input::Dataset("ops_model".into()))
            .await
            .map_err(model)
    })
    .await?;
    let n: usize = b.iter().map(RecordBatch::num_rows).sum();
    let col = b.first().map_or(0, |b| b.num_columns() - 1);
    out.push(Timing::new(
        "predict_linear",
        n as u64,
        times,
        Some(format!("{}", sum_f64(&b, col))),
    ));

    progress("predict() in SQL");
    let q = "SELECT sum(predict('ops_linear_regression', x1, x2, quantity)) FROM ops";
    let (b, times) = measure(opts.runs, true, || async {
        om.sql(q).await?.collect().await.map_err(SqlError::from)
    })
    .await?;
    out.push(Timing::new(
        "predict_sql",
        rows,
        times,
        Some(answer_of(&b, 0)),
    ));
    Ok(out)
}

/// Peak resident memory of this process (Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// A memory figure of this process from /proc/self/status (`VmRSS:`,
/// `VmHWM:`, …), in bytes (Linux).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    proc_kb_field("/proc/self/status", field)
}

/// A figure of the machine's memory from /proc/meminfo (`MemAvailable`, …), in bytes.
fn proc_meminfo_bytes(field: &str) -> Option<u64> {
    proc_kb_field("/proc/meminfo", &format!("{field}:"))
}

/// The `<field> <n> kB` line of a /proc file, in bytes.
fn proc_kb_field(file: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(file).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
