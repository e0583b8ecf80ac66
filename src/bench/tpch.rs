//! TPC-H: the eight tables generated in process (`tpchgen-arrow`, no
//! download), put into the bucket `tpch_sf<N>` of the store, and the 22
//! queries of `sql/tpch/` (the specification's validation parameters) run
//! through omegastore's SQL.
//!
//! Tables are generated once per scale factor: a later run finds them (the
//! `sf` attribute) and goes straight to the queries.

use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use serde_json::json;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use super::{Timing, measure};
use crate::sql::SqlError;
use crate::store::{Object, PutMode, PutOptions};
use crate::{Omega, StoreError};

/// The queries, compiled in so `om bench tpch` works from an installed binary.
pub const QUERIES: [&str; 22] = [
    include_str!("../../sql/tpch/q01.sql"),
    include_str!("../../sql/tpch/q02.sql"),
    include_str!("../../sql/tpch/q03.sql"),
    include_str!("../../sql/tpch/q04.sql"),
    include_str!("../../sql/tpch/q05.sql"),
    include_str!("../../sql/tpch/q06.sql"),
    include_str!("../../sql/tpch/q07.sql"),
    include_str!("../../sql/tpch/q08.sql"),
    include_str!("../../sql/tpch/q09.sql"),
    include_str!("../../sql/tpch/q10.sql"),
    include_str!("../../sql/tpch/q11.sql"),
    include_str!("../../sql/tpch/q12.sql"),
    include_str!("../../sql/tpch/q13.sql"),
    include_str!("../../sql/tpch/q14.sql"),
    include_str!("../../sql/tpch/q15.sql"),
    include_str!("../../sql/tpch/q16.sql"),
    include_str!("../../sql/tpch/q17.sql"),
    include_str!("../../sql/tpch/q18.sql"),
    include_str!("../../sql/tpch/q19.sql"),
    include_str!("../../sql/tpch/q20.sql"),
    include_str!("../../sql/tpch/q21.sql"),
    include_str!("../../sql/tpch/q22.sql"),
];

pub const TABLES: [&str; 8] = [
    "region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem",
];

/// Options of a TPC-H run.
#[derive(Debug, Clone)]
pub struct TpchOptions {
    pub scale_factor: f64,
    pub runs: usize,
    /// Only these queries (1-based); all when empty.
    pub queries: Vec<usize>,
    /// Write each query's result as CSV here (`q01.csv`, …).
    pub answers: Option<PathBuf>,
    /// Write each table as Parquet here (for peers to read the same data).
    pub export: Option<PathBuf>,
    /// Generate the tables again even if they exist.
    pub regenerate: bool,
}

/// The bucket holding a scale factor's tables.
pub fn bucket(sf: f64) -> String {
    format!("tpch_sf{}", sf.to_string().replace('.', "_"))
}

fn generator(
    table: &str,
    sf: f64,
) -> (
    SchemaRef,
    Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>,
) {
    const BATCH: usize = 65_536;
    match table {
        "region" => (
            RegionArrow::schema_ref(),
            Box::new(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        "nation" => (
            NationArrow::schema_ref(),
            Box::new(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        "supplier" => (
            SupplierArrow::schema_ref(),
            Box::new(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        "customer" => (
            CustomerArrow::schema_ref(),
            Box::new(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        "part" => (
            PartArrow::schema_ref(),
            Box::new(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        "partsupp" => (
            PartSuppArrow::schema_ref(),
            Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        "orders" => (
            OrderArrow::schema_ref(),
            Box::new(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
        _ => (
            LineItemArrow::schema_ref(),
            Box::new(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        ),
    }
}

/// Generates and stores the tables that are missing (or all, with
/// `regenerate`); returns one timing per table put.
pub async fn load(
    om: &Omega,
    opts: &TpchOptions,
    progress: &dyn Fn(&str),
) -> Result<Vec<Timing>, StoreError> {
    let sf = opts.scale_factor;
    let mut out = Vec::new();
    for table in TABLES {
        let existing = om.datasets().metadata(table).await.ok();
        let same_sf = existing
            .as_ref()
            .and_then(|m| m.attributes.get("sf"))
            .and_then(|v| v.as_f64())
            == Some(sf);
        if same_sf && !opts.regenerate {
            continue;
        }
        progress(&format!("generating and storing {table} (sf {sf})"));
        let (schema, iter) = generator(table, sf);
        let stream = futures::stream::iter(iter.map(|r| r.map_err(DataFusionError::from)));
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream));
        let start = std::time::Instant::now();
        let meta = om
            .datasets()
            .put(
                Object::Stream(stream),
                table,
                PutOptions {
                    mode: PutMode::Overwrite,
                    attributes: json!({"sf": sf, "source": "tpchgen"}).as_object().cloned(),
                    ..Default::default()
                },
            )
            .await?;
        let rows = meta.kind_meta["rows"].as_u64().unwrap_or(0);
        out.push(Timing::new(
            &format!("put {table}"),
            rows,
            vec![start.elapsed()],
            None,
        ));
    }
    Ok(out)
}

/// Writes a table as one Parquet file (for peers).
async fn export(om: &Omega, table: &str, dir: &Path) -> Result<(), SqlError> {
    let df = om.sql(&format!("SELECT * FROM {table}")).await?;
    let path = dir.join(format!("{table}.parquet"));
    df.write_parquet(
        path.to_str().unwrap_or_default(),
        datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true),
        None,
    )
    .await?;
    Ok(())
}

/// Runs the queries; returns one timing per query (rows = result rows).
pub async fn run(
    om: &Omega,
    opts: &TpchOptions,
    progress: &dyn Fn(&str),
) -> Result<Vec<Timing>, SqlError> {
    if let Some(dir) = &opts.export {
        std::fs::create_dir_all(dir)
            .map_err(|e| SqlError::Usage(format!("{}: {e}", dir.display())))?;
        for t in TABLES {
            progress(&format!("exporting {t}"));
            export(om, t, dir).await?;
        }
    }
    if let Some(dir) = &opts.answers {
        std::fs::create_dir_all(dir)
            .map_err(|e| SqlError::Usage(format!("{}: {e}", dir.display())))?;
    }
    let mut out = Vec::new();
    for (i, q) in QUERIES.iter().enumerate() {
        let n = i + 1;
        if !opts.queries.is_empty() && !opts.queries.contains(&n) {
            continue;
        }
        progress(&format!("q{n:02}"));
        let (batches, times) = measure(opts.runs, true, || async {
            om.sql(q).await?.collect().await.map_err(SqlError::from)
        })
        .await?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if let Some(dir) = &opts.answers {
            write_csv(&dir.join(format!("q{n:02}.csv")), &batches)?;
        }
        out.push(Timing::new(&format!("q{n:02}"), rows as u64, times, None));
    }
    Ok(out)
}

fn write_csv(path: &Path, batches: &[RecordBatch]) -> Result<(), SqlError> {
    let file = std::fs::File::create(path)
        .map_err(|e| SqlError::Usage(format!("{}: {e}", path.display())))?;
    let mut w = arrow::csv::Writer::new(file);
    for b in batches {
        w.write(b)?;
    }
    Ok(())
}
