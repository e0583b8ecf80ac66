//! A Delta version read as plain Parquet: the snapshot's file list, with the
//! statistics its log already holds, scanned by DataFusion's own
//! `ParquetSource` in a `DataSourceExec`.
//!
//! Why not delta-rs's provider: its scan wraps the Parquet scan in a
//! `DeltaScanExec` that adds a file-id column to every row and replays the
//! file list with the predicate on every query; and a plan holding it cannot
//! be serialised (a cluster cannot run it). The plain scan gets DataFusion's
//! file pruning from the log's statistics, row-group and page pruning, row
//! filter pushdown where the session turns it on, the footer cache of the
//! session's runtime, and exact row counts (`count(*)` from statistics).
//!
//! The plain scan honours exactly what a reader of Delta protocol 1 must:
//! the add actions of the version. A snapshot that needs more of a reader —
//! deletion vectors, column mapping, any reader feature not listed in
//! [`PLAIN_READER_FEATURES`] — is read by delta-rs's provider instead
//! ([`provider`] decides; both give the same answers, tested).
//!
//! Equality filters on dictionary-encoded string columns are answered on
//! the dictionaries ([`super::dictionary_filter`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{FileRange, PartitionedFile};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use delta_kernel::expressions::Scalar;
use deltalake::DeltaTable;
use deltalake::kernel::LogicalFileView;
use object_store::path::Path;

use super::dictionary_filter::{self, StoredDictionaries};
use super::scan_options;
use serde_json::Value;

/// Reader features a plain Parquet scan of the add actions honours: they
/// change how the log is written or vacuumed, or name a type Arrow reads
/// as such, not what a data file means.
const PLAIN_READER_FEATURES: &[&str] = &["timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"];

/// Whose writer made a table's statistics, and so what they promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The store's own (delta-rs, from the Parquet footers): the minimum and
    /// maximum of integer, decimal and date columns are the exact values.
    Store,
    /// Anyone: Delta asks only for bounds (a writer may truncate or round).
    Other,
}

/// The provider for a loaded Delta version: the plain Parquet scan when the
/// version allows it, delta-rs's provider otherwise. `store_url` is the
/// session's URL of the object store that holds `dir` (paths of data files
/// are `dir/<add path>` in it).
pub(crate) async fn provider(
    table: &DeltaTable,
    store_url: &ObjectStoreUrl,
    dir: &Path,
    writer: Writer,
) -> deltalake::DeltaResult<Arc<dyn TableProvider>> {
    match SnapshotTable::try_new(table, store_url, dir, writer)? {
        Some(plain) => Ok(Arc::new(plain)),
        None => Ok(table.table_provider().await?),
    }
}

/// One Delta version's files, scanned as Parquet. Immutable: a Delta version
/// never changes, so the file list and statistics are computed once.
#[derive(Debug)]
pub(crate) struct SnapshotTable {
    schema: SchemaRef,
    store_url: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
    statistics: Statistics,
    /// Per column, once known: whether the files store it
    /// dictionary-encoded (decided from a sample of footers).
    dictionary: std::sync::Mutex<Vec<Option<bool>>>,
}

impl SnapshotTable {
    /// `Ok(None)` when the version needs more of a reader than a plain
    /// Parquet scan (see the module doc), or its data files are not all
    /// under `dir`.
    pub(crate) fn try_new(
        table: &DeltaTable,
        store_url: &ObjectStoreUrl,
        dir: &Path,
        writer: Writer,
    ) -> deltalake::DeltaResult<Option<Self>> {
        let state = table.snapshot()?;
        if !plain_protocol(state.protocol()) || !plain_metadata(state.metadata()) {
            return Ok(None);
        }
        let schema = view_schema(&state.snapshot().arrow_schema());
        let log = state.snapshot().try_log_data()?;
        let mut files = Vec::with_capacity(log.num_files());
        for file in log.iter() {
            if file.deletion_vector_descriptor().is_some() {
                return Ok(None);
            }
            let rel = file.object_store_path();
            if file.path().contains("://") || rel.parts().any(|p| p.as_ref() == "..") {
                return Ok(None);
            }
            let location = Path::from_iter(dir.parts().chain(rel.parts()));
            let size = u64::try_from(file.size()).unwrap_or(0);
            let mut pf = PartitionedFile::new(location.to_string(), size);
            pf.object_meta.location = location;
            files.push(pf.with_statistics(Arc::new(file_statistics(&file, &schema, writer))));
        }
        let statistics = table_statistics(&files, &schema);
        Ok(Some(Self {
            dictionary: std::sync::Mutex::new(vec![None; schema.fields().len()]),
            schema,
            store_url: store_url.clone(),
            files,
            statistics,
        }))
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics.clone())
    }

    /// Filters are used to prune files, row groups and pages, and as row
    /// filters inside the scan where the session allows; DataFusion still
    /// applies them above the scan (pruning is by statistics).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(self.projected(projection)?)));
        }
        // a limit is only pushed here without filters to apply first
        let tests = match limit {
            None if scan_options::dictionary_filters(state) => {
                dictionary_filter::string_tests(&self.schema, projection, filters)
            }
            _ => Vec::new(),
        };
        // with `omega_scan.dictionary_reads`, strings without a filter are
        // read as dictionaries too where the files store them so: a GROUP BY
        // then groups their codes (`dictionary_groups.rs`)
        let mut candidates: Vec<usize> = tests.iter().map(|(i, _)| *i).collect();
        if limit.is_none() && scan_options::dictionary_reads(state) {
            let all: Vec<usize> = (0..self.schema.fields().len()).collect();
            candidates.extend(
                projection
                    .unwrap_or(&all)
                    .iter()
                    .copied()
                    .filter(|i| matches!(self.schema.field(*i).data_type(), DataType::Utf8View)),
            );
        }
        let dictionaries = self.dictionary_columns(state, candidates).await;
        let tests: Vec<_> = tests
            .into_iter()
            .filter(|(i, _)| dictionaries.contains(i))
            .collect();
        if dictionaries.is_empty() {
            let files = self.marked_files(state, projection, limit).await;
            return self
                .parquet_scan(
                    state,
                    self.schema.clone(),
                    files,
                    self.statistics.clone(),
                    projection,
                    limit,
                )
                .await;
        }
        let statistics = dictionary_filter::read_statistics(&self.statistics, &dictionaries);
        let files = self
            .files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                if let Some(s) = &f.statistics {
                    f.statistics = Some(Arc::new(dictionary_filter::read_statistics(
                        s,
                        &dictionaries,
                    )));
                }
                f
            })
            .collect();
        let schema = dictionary_filter::read_schema(&self.schema, &dictionaries);
        let plan = self
            .parquet_scan(state, schema, files, statistics, projection, None)
            .await?;
        let output = self.projected(projection)?;
        dictionary_filter::filtered(plan, &self.schema, &dictionaries, tests, &output)
    }
}

impl SnapshotTable {
    /// The table's schema as `projection` reads it.
    fn projected(&self, projection: Option<&Vec<usize>>) -> DfResult<SchemaRef> {
        Ok(match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        })
    }

    /// The table's files, marked with the projected string columns they
    /// store dictionary-encoded ([`StoredDictionaries`]) where the session
    /// allows dictionary reads: a `GROUP BY` of one of them then reads it
    /// as a dictionary and groups its codes (`dictionary_groups.rs`), and
    /// a query that only reads it reads strings as before.
    async fn marked_files(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Vec<PartitionedFile> {
        if limit.is_some() || !scan_options::dictionary_filters(state) {
            return self.files.clone();
        }
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let strings: Vec<usize> = projection
            .unwrap_or(&all)
            .iter()
            .copied()
            .filter(|i| matches!(self.schema.field(*i).data_type(), DataType::Utf8View))
            .collect();
        if strings.is_empty() {
            return self.files.clone();
        }
        let stored = self.dictionary_columns(state, strings).await;
        if stored.is_empty() {
            return self.files.clone();
        }
        let names: Arc<[String]> = stored
            .iter()
            .map(|i| self.schema.field(*i).name().clone())
            .collect();
        self.files
            .iter()
            .map(|f| f.clone().with_extension(StoredDictionaries(names.clone())))
            .collect()
    }

    /// A Parquet scan of `files` as `schema`.
    async fn parquet_scan(
        &self,
        state: &dyn Session,
        schema: SchemaRef,
        files: Vec<PartitionedFile>,
        statistics: Statistics,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The session's current Parquet options (`default_table_options`
        // folds in `SET datafusion.execution.parquet.…`): `table_options()`
        // alone is what they were when the session was built.
        let format = ParquetFormat::default().with_options(state.default_table_options().parquet);
        let source = format.file_source(schema.into());
        let files = files
            .into_iter()
            .flat_map(|f| row_group_ranges(f, super::table::ROW_GROUP_ROWS, MIN_RANGE_BYTES))
            .collect();
        let groups = FileGroup::new(files).split_files(state.config().target_partitions().max(1));
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }

    /// The columns of `tested` that the files store dictionary-encoded
    /// (see [`dictionary_filter`]), decided once per column from a sample
    /// of footers.
    async fn dictionary_columns(&self, state: &dyn Session, mut tested: Vec<usize>) -> Vec<usize> {
        tested.sort_unstable();
        tested.dedup();
        let known = |d: &[Option<bool>]| -> Option<Vec<usize>> {
            tested
                .iter()
                .map(|i| d[*i].map(|yes| yes.then_some(*i)))
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().flatten().collect())
        };
        if let Some(columns) = self.dictionary.lock().ok().and_then(|d| known(&d)) {
            return columns;
        }
        let Some(yes) = dictionary_filter::dictionary_columns(
            state,
            &self.store_url,
            &self.files,
            &self.schema,
            &tested,
        )
        .await
        else {
            return Vec::new();
        };
        if let Ok(mut d) = self.dictionary.lock() {
            for i in &tested {
                d[*i] = Some(yes.contains(i));
            }
        }
        yes
    }
}

/// `file` cut into byte ranges that each hold the start of about one row
/// group, so the scan's cores share a table by row groups.
///
/// Why: DataFusion cuts a table's files into one contiguous byte range per
/// core, reads a row group in the range that holds its first page, and lets
/// an idle core take the next unread range. With whole files or core-sized
/// ranges as the units, the last unit decides the split: a 6M-row table of
/// three 2M-row files and a small one ran as 3.9M rows on one core and 2.1M
/// on the other. A unit of about one row group leaves at most one row
/// group's worth of imbalance.
///
/// Row group starts are estimated from the row count the log holds and the
/// store's row group size: a cut halfway between two expected starts leaves
/// each start in one range even when row groups differ in size by half.
/// The estimate decides only balance, never which rows are read: the
/// ranges cover the file exactly, and each row group is read by the one
/// range that holds its first page. `row_group_rows` is the writer's row
/// group size; a range holds enough row groups to be about `min_bytes`
/// ([`MIN_RANGE_BYTES`] in scans), so small row groups do not make many
/// tiny units.
fn row_group_ranges(
    file: PartitionedFile,
    row_group_rows: usize,
    min_bytes: u64,
) -> Vec<PartitionedFile> {
    let rows = file
        .statistics
        .as_ref()
        .and_then(|s| s.num_rows.get_value().copied())
        .unwrap_or(0) as u64;
    let size = file.object_meta.size;
    if rows == 0 || file.range.is_some() {
        return vec![file];
    }
    // bytes of a full row group; row groups a range holds
    let per_group = size as f64 * row_group_rows as f64 / rows as f64;
    let step = (min_bytes as f64 / per_group).ceil().max(1.0);
    // cut halfway before the first row group of each range but the first
    let groups = rows.div_ceil(row_group_rows as u64) as f64;
    let cuts = (1..)
        .map(|i| i as f64 * step)
        .take_while(|first| *first < groups)
        .map(|first| ((first - 0.5) * per_group) as u64)
        .filter(|cut| *cut < size);
    let bounds: Vec<u64> = std::iter::once(0)
        .chain(cuts)
        .chain(std::iter::once(size))
        .collect();
    if bounds.len() < 3 {
        return vec![file];
    }
    bounds
        .windows(2)
        .map(|w| {
            let mut range = file.clone();
            range.range = Some(FileRange {
                start: w[0] as i64,
                end: w[1] as i64,
            });
            range
        })
        .collect()
}

/// Smallest byte range [`row_group_ranges`] cuts.
const MIN_RANGE_BYTES: u64 = 8 * 1024 * 1024;

/// True when the protocol asks nothing of a reader beyond protocol 1 and
/// [`PLAIN_READER_FEATURES`]. Read through the action's serialised form, the
/// one public view of its reader requirements.
fn plain_protocol(protocol: &deltalake::kernel::Protocol) -> bool {
    let Ok(p) = serde_json::to_value(protocol) else {
        return false;
    };
    match p.get("minReaderVersion").and_then(Value::as_i64) {
        Some(1) => true,
        Some(3) => p
            .get("readerFeatures")
            .and_then(Value::as_array)
            .is_some_and(|fs| {
                fs.iter().all(|f| {
                    f.as_str()
                        .is_some_and(|f| PLAIN_READER_FEATURES.contains(&f))
                })
            }),
        _ => false,
    }
}

/// True for an unpartitioned table without column mapping (partition values
/// and physical column names live in the log, not in the data files).
fn plain_metadata(metadata: &deltalake::kernel::Metadata) -> bool {
    let Ok(m) = serde_json::to_value(metadata) else {
        return false;
    };
    let unpartitioned = m
        .get("partitionColumns")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    let mapping = m
        .pointer("/configuration/delta.columnMapping.mode")
        .and_then(Value::as_str)
        .unwrap_or("none");
    unpartitioned && mapping == "none"
}

/// The table's Arrow schema as DataFusion's Parquet reader produces it by
/// default (strings and binaries as views), the schema delta-rs's provider
/// announced too, so answers and types do not depend on the scan.
fn view_schema(schema: &Schema) -> SchemaRef {
    fn field(f: &FieldRef) -> FieldRef {
        let t = match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
            DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
            DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
            DataType::List(i) => DataType::List(field(i)),
            DataType::LargeList(i) => DataType::LargeList(field(i)),
            t => t.clone(),
        };
        Arc::new(Field::clone(f).with_data_type(t))
    }
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// A file's statistics from its add action: the row count (exact: no
/// deletion vectors here), null counts (exact), and minimum and maximum
/// values (inexact: Delta truncates long strings and rounds timestamps).
fn file_statistics(file: &LogicalFileView, schema: &Schema, writer: Writer) -> Statistics {
    let mut stats = Statistics::new_unknown(schema);
    stats.total_byte_size = Precision::Inexact(usize::try_from(file.size()).unwrap_or(0));
    let Some(rows) = file.num_records() else {
        return stats;
    };
    stats.num_rows = Precision::Exact(rows);
    let mins = file.min_values();
    let maxs = file.max_values();
    let nulls = file.null_counts();
    for (i, f) in schema.fields().iter().enumerate() {
        let col = &mut stats.column_statistics[i];
        if let Some(n) = struct_field(nulls.as_ref(), f.name()).and_then(count) {
            col.null_count = Precision::Exact(n);
        }
        // DataFusion prunes files only by exact values (and answers min()
        // and max() from them): only where the writer is known to give them
        let bound = |v| match writer {
            Writer::Store if exact_type(f.data_type()) => Precision::Exact(v),
            _ => Precision::Inexact(v),
        };
        if let Some(v) = struct_field(mins.as_ref(), f.name()).and_then(|s| value(s, f)) {
            col.min_value = bound(v);
        }
        if let Some(v) = struct_field(maxs.as_ref(), f.name()).and_then(|s| value(s, f)) {
            col.max_value = bound(v);
        }
    }
    stats
}

/// Types whose minimum and maximum delta-rs records exactly: not strings
/// (truncated), timestamps (milliseconds) or floats (NaN is left out of
/// Parquet's statistics but is the largest value to `max()`).
fn exact_type(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Date32 | DataType::Decimal128(_, _))
}

/// The files' statistics merged: row and null counts summed (exact when
/// every file's are), the smallest minimum and largest maximum; unknown
/// when a file has none. No files: exactly no rows.
fn table_statistics(files: &[PartitionedFile], schema: &SchemaRef) -> Statistics {
    let mut all = files.iter().map(|f| f.statistics.as_deref());
    let Some(first) = all.next() else {
        let mut empty = Statistics::new_unknown(schema);
        empty.num_rows = Precision::Exact(0);
        return empty;
    };
    let Some(mut total) = first.cloned() else {
        return Statistics::new_unknown(schema);
    };
    for s in all {
        let Some(s) = s else {
            return Statistics::new_unknown(schema);
        };
        total.num_rows = total.num_rows.add(&s.num_rows);
        total.total_byte_size = total.total_byte_size.add(&s.total_byte_size);
        for (t, c) in total.column_statistics.iter_mut().zip(&s.column_statistics) {
            t.null_count = t.null_count.add(&c.null_count);
            t.min_value = t.min_value.min(&c.min_value);
            t.max_value = t.max_value.max(&c.max_value);
        }
    }
    total
}

fn struct_field<'a>(s: Option<&'a Scalar>, name: &str) -> Option<&'a Scalar> {
    match s? {
        Scalar::Struct(data) => data
            .fields()
            .iter()
            .position(|f| f.name() == name)
            .map(|i| &data.values()[i]),
        _ => None,
    }
}

fn count(s: &Scalar) -> Option<usize> {
    match s {
        Scalar::Long(n) => usize::try_from(*n).ok(),
        Scalar::Integer(n) => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// A statistic as a value of the column's type; `None` for what has no
/// faithful counterpart (the column then has no bound, which prunes nothing).
fn value(s: &Scalar, field: &Field) -> Option<ScalarValue> {
    let v = match s {
        Scalar::Integer(v) => ScalarValue::Int32(Some(*v)),
        Scalar::Long(v) => ScalarValue::Int64(Some(*v)),
        Scalar::Short(v) => ScalarValue::Int16(Some(*v)),
        Scalar::Byte(v) => ScalarValue::Int8(Some(*v)),
        Scalar::Float(v) => ScalarValue::Float32(Some(*v)),
        Scalar::Double(v) => ScalarValue::Float64(Some(*v)),
        Scalar::Boolean(v) => ScalarValue::Boolean(Some(*v)),
        Scalar::String(v) => ScalarValue::Utf8(Some(v.clone())),
        Scalar::Date(v) => ScalarValue::Date32(Some(*v)),
        Scalar::Timestamp(v) => ScalarValue::TimestampMicrosecond(Some(*v), Some("UTC".into())),
        Scalar::TimestampNtz(v) => ScalarValue::TimestampMicrosecond(Some(*v), None),
        Scalar::Decimal(d) => {
            ScalarValue::Decimal128(Some(d.bits()), d.precision(), i8::try_from(d.scale()).ok()?)
        }
        _ => return None,
    };
    if v.data_type() == *field.data_type() {
        return Some(v);
    }
    v.cast_to(field.data_type()).ok().filter(|c| !c.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
        StringArray, TimestampMicrosecondArray,
    };
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use crate::backends::dictionary_groups::GroupOnCodes;
    use crate::backends::scan_options::ScanOptions;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use deltalake::protocol::SaveMode;

    /// Rows `from..to`: every type the store writes, nulls in each column;
    /// floats are quarters, so sums are exact in any order of addition.
    fn batch(from: i64, to: i64) -> RecordBatch {
        let ids: Vec<i64> = (from..to).collect();
        let opt = |i: &i64| (i % 7 != 3).then_some(*i);
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(Int64Array::from(ids.clone()))),
            (
                "small",
                Arc::new(Int32Array::from_iter(
                    ids.iter().map(|i| opt(i).map(|i| (i % 100) as i32)),
                )),
            ),
            (
                "x",
                Arc::new(Float64Array::from_iter(
                    ids.iter().map(|i| opt(i).map(|i| i as f64 / 4.0)),
                )),
            ),
            (
                "cat",
                Arc::new(StringArray::from_iter(
                    ids.iter()
                        .map(|i| opt(i).map(|i| format!("c{:02}", i % 13))),
                )),
            ),
            (
                "long_text",
                Arc::new(StringArray::from_iter(ids.iter().map(|i| {
                    opt(i).map(|i| format!("{}-{i}", "a fairly long prefix ".repeat(4)))
                }))),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from_iter(
                    ids.iter().map(|i| opt(i).map(|i| i % 2 == 0)),
                )),
            ),
            (
                "day",
                Arc::new(Date32Array::from_iter(
                    ids.iter()
                        .map(|i| opt(i).map(|i| 19_000 + (i % 400) as i32)),
                )),
            ),
            (
                "at",
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        ids.iter()
                            .map(|i| opt(i).map(|i| 1_700_000_000_000_000 + i * 1_234_567)),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ];
        RecordBatch::try_from_iter(cols).unwrap()
    }

    const QUERIES: &[&str] = &[
        "SELECT * FROM t ORDER BY id",
        "SELECT count(*) FROM t",
        "SELECT count(*), count(cat), count(x) FROM t WHERE cat = 'c07'",
        "SELECT cat, count(*), sum(x), min(at), max(day) FROM t GROUP BY cat ORDER BY cat",
        "SELECT id FROM t WHERE id BETWEEN 1990 AND 2010 ORDER BY id",
        "SELECT id FROM t WHERE id > 2999 OR id < 0 ORDER BY id",
        "SELECT id, x FROM t WHERE x > 500.0 AND flag ORDER BY x DESC LIMIT 7",
        "SELECT count(*) FROM t WHERE small IS NULL",
        "SELECT count(*) FROM t WHERE at >= TIMESTAMP '2023-11-14T22:50:00Z'",
        "SELECT max(at), min(at) FROM t WHERE at < TIMESTAMP '2023-11-14T23:00:00.000999Z'",
        "SELECT count(*) FROM t WHERE day = DATE '2022-01-08'",
        "SELECT long_text FROM t WHERE long_text > concat(repeat('a fairly long prefix ', 4), '-2990') ORDER BY 1",
        "SELECT min(long_text), max(cat), min(x), max(small) FROM t",
        "SELECT count(*) FROM t WHERE cat IN ('c00', 'c12') AND id % 2 = 1",
        "SELECT id FROM t ORDER BY at DESC NULLS LAST, id LIMIT 3",
        "SELECT id FROM t ORDER BY at DESC, id LIMIT 3",
        // string filters answered on dictionaries (cat is one, long_text not)
        "SELECT id, cat, long_text FROM t WHERE cat = 'c07' AND id % 5 = 0 ORDER BY id",
        "SELECT count(*), count(cat) FROM t WHERE cat <> 'c03'",
        "SELECT count(*) FROM t WHERE 'c05' = cat OR cat IS NULL",
        "SELECT cat, count(*) FROM t WHERE cat NOT IN ('c01', 'c02') GROUP BY cat ORDER BY cat",
        "SELECT count(*) FROM t WHERE cat IN ('c04', 'nope') AND cat <> 'c04x'",
        "SELECT count(*) FROM t WHERE cat = '' OR cat = 'C07'",
        "SELECT id FROM t WHERE cat = 'c11' AND long_text = concat(repeat('a fairly long prefix ', 4), '-2990') ORDER BY id",
        "SELECT count(*) FROM t WHERE NOT (cat = 'c01' OR cat IN ('c02', 'c03', 'c04')) OR cat <> cat",
        // groups of dictionary strings, on codes where the rule applies
        "SELECT cat, small % 3 AS s, count(*), sum(x) FROM t GROUP BY cat, small % 3 ORDER BY cat, s",
        "SELECT cat, count(DISTINCT cat), max(cat) FROM t GROUP BY cat ORDER BY cat",
        "SELECT cat, count(*) FROM t WHERE x > 100 GROUP BY cat HAVING count(*) > 10 ORDER BY 2 DESC, 1 LIMIT 5",
        "SELECT upper(cat) AS u, count(*) FROM t GROUP BY upper(cat) ORDER BY u",
        "SELECT cat, long_text IS NULL AS n, count(*) FROM t GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT c, n FROM (SELECT cat AS c, count(*) AS n FROM t GROUP BY cat) WHERE c > 'c05' ORDER BY c",
        "SELECT a.cat, count(*) FROM t a JOIN t b ON a.id = b.id + 1 GROUP BY a.cat ORDER BY 1",
    ];

    /// The nodes of `plan` (at any depth) that `is` picks.
    fn nodes(plan: &Arc<dyn ExecutionPlan>, is: &dyn Fn(&Arc<dyn ExecutionPlan>) -> bool) -> usize {
        usize::from(is(plan))
            + plan
                .children()
                .into_iter()
                .map(|c| nodes(c, is))
                .sum::<usize>()
    }

    /// A session reading `provider` as `t`, with string filters on
    /// dictionaries and every stored dictionary read as one, or neither.
    fn session(provider: Arc<dyn TableProvider>, dictionaries: bool) -> SessionContext {
        session_with(provider, dictionaries, dictionaries)
    }

    /// A session reading `provider` as `t` with `omega_scan.dictionary_filters`
    /// and `omega_scan.dictionary_reads` as given.
    fn session_with(
        provider: Arc<dyn TableProvider>,
        filters: bool,
        reads: bool,
    ) -> SessionContext {
        let options = ScanOptions {
            dictionary_filters: filters,
            dictionary_reads: reads,
            ..ScanOptions::default()
        };
        let config = SessionConfig::new().with_option_extension(options);
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_physical_optimizer_rule(Arc::new(GroupOnCodes))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("t", provider).unwrap();
        ctx
    }

    async fn answers(provider: Arc<dyn TableProvider>, filters: bool, reads: bool) -> Vec<String> {
        let ctx = session_with(provider, filters, reads);
        let mut out = Vec::new();
        for q in QUERIES {
            let batches = ctx.sql(q).await.unwrap().collect().await.unwrap();
            out.push(format!("{q}\n{}", pretty_format_batches(&batches).unwrap()));
        }
        out
    }

    /// A file of 10 row groups (9 of 1,000 rows differing in size by up to
    /// a half, one of 400) written to `dir`, and its row groups' first
    /// page offsets.
    fn ten_row_groups(dir: &std::path::Path) -> (PartitionedFile, Vec<i64>) {
        use parquet::arrow::ArrowWriter;
        use parquet::file::properties::WriterProperties;
        let ids: Vec<i64> = (0..9400).collect();
        // row group g's strings are 20 + 5 * (g % 3) bytes long
        let text = StringArray::from_iter_values(
            ids.iter()
                .map(|i| format!("{:0w$}", i, w = 20 + 5 * ((*i as usize / 1000) % 3))),
        );
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("text", Arc::new(text) as ArrayRef),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .set_dictionary_enabled(false)
            .build();
        let path = dir.join("ten.parquet");
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        let meta = w.close().unwrap();
        let starts: Vec<i64> = meta
            .row_groups()
            .iter()
            .map(|g| {
                let c = g.column(0);
                c.dictionary_page_offset().unwrap_or(c.data_page_offset())
            })
            .collect();
        assert_eq!(starts.len(), 10);
        let size = std::fs::metadata(&path).unwrap().len();
        let location = Path::from_filesystem_path(&path).unwrap();
        let mut stats = Statistics::new_unknown(&batch.schema());
        stats.num_rows = Precision::Exact(9400);
        let file =
            PartitionedFile::new(location.to_string(), size).with_statistics(Arc::new(stats));
        (file, starts)
    }

    /// Rows and `sum(id)` a Parquet scan of `ranges` (one per partition) reads.
    async fn read_ranges(ranges: &[PartitionedFile], schema: SchemaRef) -> (usize, i64) {
        let ctx = SessionContext::new();
        let format = ParquetFormat::default();
        let groups: Vec<FileGroup> = ranges
            .iter()
            .map(|r| FileGroup::new(vec![r.clone()]))
            .collect();
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::local_filesystem(),
            format.file_source(schema.into()),
        )
        .with_file_groups(groups)
        .build();
        let plan = format
            .create_physical_plan(&ctx.state(), config)
            .await
            .unwrap();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let ids = batches.iter().flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        });
        ids.fold((0, 0), |(n, sum), id| (n + 1, sum + id))
    }

    #[tokio::test]
    async fn a_file_is_cut_into_ranges_of_one_row_group_each_and_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let (file, starts) = ten_row_groups(dir.path());
        let size = file.object_meta.size as i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        // a row group is about size / 9.4 bytes: 2.5 of them make ranges of 3
        for (min_bytes, per_range) in [(1, 1), (size as u64 * 25 / 94, 3)] {
            let ranges = row_group_ranges(file.clone(), 1000, min_bytes);
            let bounds: Vec<(i64, i64)> = ranges
                .iter()
                .map(|r| r.range.as_ref().map(|r| (r.start, r.end)).unwrap())
                .collect();
            // the ranges cover the file once, in order
            assert_eq!(bounds.first().unwrap().0, 0);
            assert_eq!(bounds.last().unwrap().1, size);
            assert!(bounds.windows(2).all(|w| w[0].1 == w[1].0), "{bounds:?}");
            // each holds the first page of `per_range` row groups (the last
            // the rest): DataFusion reads a row group in that range only
            let held: Vec<usize> = bounds
                .iter()
                .map(|(a, b)| starts.iter().filter(|s| (*a..*b).contains(s)).count())
                .collect();
            let want: Vec<usize> = (0..10)
                .step_by(per_range)
                .map(|first| per_range.min(10 - first))
                .collect();
            assert_eq!(held, want, "{min_bytes}-byte ranges: {bounds:?}");
            // every row is read exactly once
            assert_eq!(
                read_ranges(&ranges, schema.clone()).await,
                (9400, 9400 * 9399 / 2)
            );
        }
        // a file of one row group, and a range already cut, stay whole
        let one = row_group_ranges(file.clone(), 10_000, 1);
        assert_eq!(one.len(), 1);
        assert!(one[0].range.is_none());
    }

    /// Writes three commits (two appends, the second of two files), then
    /// compares every query on every version through both providers.
    async fn check_both_scans_agree(configuration: &[(&str, &str)], expect_plain: bool) {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let store_url = ObjectStoreUrl::parse("file:///").unwrap();
        let table_dir = Path::from_url_path(url.path()).unwrap();
        let mut table = DeltaTable::try_from_url(url.clone()).await.unwrap();
        let config: std::collections::HashMap<String, Option<String>> = configuration
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect();
        for (i, (from, to)) in [(0, 1000), (1000, 2000), (2000, 3000)]
            .into_iter()
            .enumerate()
        {
            let batches = if i == 1 {
                vec![batch(from, 1500), batch(1500, to)]
            } else {
                vec![batch(from, to)]
            };
            let mut write = table
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .with_target_file_size(std::num::NonZeroU64::new(1));
            if i == 0 {
                write = write.with_configuration(config.clone());
            }
            table = write.await.unwrap();
        }
        for version in 0..=2 {
            let mut t = DeltaTable::try_from_url(url.clone()).await.unwrap();
            t.load_version(version).await.unwrap();
            let plain = SnapshotTable::try_new(&t, &store_url, &table_dir, Writer::Store).unwrap();
            assert_eq!(
                plain.is_some(),
                expect_plain,
                "plain scan chosen at v{version}"
            );
            if let Some(plain) = &plain {
                // one file per batch: 1, 3, 4 files; exact row counts
                assert_eq!(plain.files.len(), [1, 3, 4][version as usize]);
                let stats = plain.statistics().unwrap();
                let n = 1000 * (version as usize + 1);
                assert_eq!(stats.num_rows, Precision::Exact(n));
                // the id range of all files: the smallest minimum, the largest
                // maximum, exact (an integer column the store wrote)
                let id = &stats.column_statistics[0];
                assert_eq!(id.min_value, Precision::Exact(ScalarValue::Int64(Some(0))));
                let max = ScalarValue::Int64(Some(n as i64 - 1));
                assert_eq!(id.max_value, Precision::Exact(max));
                // another writer's statistics are only bounds
                let other = SnapshotTable::try_new(&t, &store_url, &table_dir, Writer::Other)
                    .unwrap()
                    .unwrap();
                let other = &other.statistics().unwrap().column_statistics[0];
                assert!(
                    matches!(other.min_value, Precision::Inexact(_)),
                    "{other:?}"
                );
                // strings, timestamps and floats only bound
                for c in [3, 7, 2] {
                    let s = &stats.column_statistics[c];
                    assert!(matches!(s.max_value, Precision::Inexact(_)), "{c}: {s:?}");
                }
            }
            let chosen = provider(&t, &store_url, &table_dir, Writer::Store)
                .await
                .unwrap();
            if expect_plain {
                // files are skipped by the log's statistics alone
                let ctx = session(chosen.clone(), true);
                let sql = "EXPLAIN ANALYZE SELECT count(*) FROM t WHERE id >= 2500";
                let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                let text = pretty_format_batches(&b).unwrap().to_string();
                let files = [1, 3, 4][version as usize];
                let matched = usize::from(version == 2);
                let want =
                    format!("files_ranges_pruned_statistics={files} total → {matched} matched");
                assert!(text.contains(&want), "v{version}: {text}");
            }
            let delta_rs = t.table_provider().await.unwrap();
            assert_eq!(chosen.schema(), delta_rs.schema(), "schemas at v{version}");
            if plain.is_some() {
                // SQL's answer (`x <> NULL` is never true); delta-rs's
                // provider answers 791 at version 0 (its own filter)
                let not_in = "SELECT count(*) FROM t WHERE cat NOT IN ('c01', NULL)";
                for dictionaries in [true, false] {
                    let ctx = session(chosen.clone(), dictionaries);
                    let b = ctx.sql(not_in).await.unwrap().collect().await.unwrap();
                    let text = pretty_format_batches(&b).unwrap().to_string();
                    assert!(text.contains("| 0 "), "{text}");
                }
            }
            // with every stored dictionary read as one, with the defaults
            // (only grouped columns), and with strings throughout
            let decoded = answers(chosen.clone(), false, false).await;
            let defaults = answers(chosen.clone(), true, false).await;
            let a = answers(chosen, true, true).await;
            let b = answers(delta_rs, true, true).await;
            for (((a, b), c), d) in a.iter().zip(&b).zip(&decoded).zip(&defaults) {
                assert_eq!(a, b, "answers differ at version {version}");
                assert_eq!(a, c, "dictionaries change answers at version {version}");
                assert_eq!(
                    d, c,
                    "grouped dictionaries change answers at version {version}"
                );
            }
        }
    }

    /// A GROUP BY of a string column the files store dictionary-encoded
    /// groups its codes (an `EncodeGroupsExec` under the aggregate) where
    /// nothing between the scan and the aggregate looks at the column, and
    /// nowhere else; the answers are those of grouping the strings. The
    /// default settings (string filters on dictionaries, other strings read
    /// as strings) group codes too: the scan reads just the grouped column
    /// as a dictionary.
    #[tokio::test]
    async fn group_by_of_dictionary_strings_groups_codes() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let store_url = ObjectStoreUrl::parse("file:///").unwrap();
        let table_dir = Path::from_url_path(url.path()).unwrap();
        // two files whose dictionaries list the categories in other orders
        let table = DeltaTable::try_from_url(url.clone())
            .await
            .unwrap()
            .write(vec![batch(0, 1500), batch(1505, 3000)])
            .with_target_file_size(std::num::NonZeroU64::new(1))
            .await
            .unwrap();
        let plain: Arc<dyn TableProvider> = Arc::new(
            SnapshotTable::try_new(&table, &store_url, &table_dir, Writer::Store)
                .unwrap()
                .unwrap(),
        );
        let encoded = |plan: &Arc<dyn ExecutionPlan>| -> usize {
            nodes(plan, &|p| p.name() == "EncodeGroupsExec")
        };
        for (sql, on_codes) in [
            (
                "SELECT cat, count(*), sum(x) FROM t GROUP BY cat ORDER BY cat",
                true,
            ),
            (
                "SELECT cat, small, count(*) FROM t GROUP BY cat, small ORDER BY 1, 2",
                true,
            ),
            (
                "SELECT cat, min(id) FROM t WHERE x > 10 GROUP BY cat ORDER BY cat",
                true,
            ),
            (
                "SELECT cat, count(*), max(long_text), min(long_text) FROM t GROUP BY cat ORDER BY cat",
                true,
            ),
            (
                "SELECT cat, count(*) FROM t WHERE cat = 'c01' OR x > 700 GROUP BY cat ORDER BY cat",
                false,
            ),
            (
                "SELECT cat, max(cat) FROM t GROUP BY cat ORDER BY cat",
                false,
            ),
            (
                "SELECT upper(cat) AS u, count(*) FROM t GROUP BY upper(cat) ORDER BY u",
                false,
            ),
            // through a hash join, from either side, outer joins' nulls included
            (
                "SELECT a.cat, count(*), sum(b.x) FROM t a JOIN t b ON a.id = b.id + 1 GROUP BY a.cat ORDER BY 1",
                true,
            ),
            (
                "SELECT b.cat, count(*), sum(a.x) FROM t a JOIN t b ON a.id = b.id + 1 AND a.x > b.x GROUP BY b.cat ORDER BY 1",
                true,
            ),
            (
                "SELECT b.cat, count(*) FROM t a LEFT JOIN t b ON a.id = b.id + 2000 GROUP BY b.cat ORDER BY 1",
                true,
            ),
            // from the build side, whose partitions are coalesced
            (
                "SELECT a.cat, count(*), sum(b.x) FROM (SELECT * FROM t WHERE id < 400) a JOIN t b ON a.id = b.id + 1 GROUP BY a.cat ORDER BY 1",
                true,
            ),
            // a column the join compares stays a string
            (
                "SELECT a.cat, count(*) FROM t a JOIN t b ON a.id = b.id + 13 AND a.cat = b.cat GROUP BY a.cat ORDER BY 1",
                false,
            ),
            (
                "SELECT a.cat, count(*) FROM t a JOIN t b ON a.id = b.id + 1 AND a.cat > b.long_text GROUP BY a.cat ORDER BY 1",
                false,
            ),
        ] {
            let mut answers = Vec::new();
            for (filters, reads) in [(true, true), (true, false), (false, false)] {
                let ctx = session_with(plain.clone(), filters, reads);
                let df = ctx.sql(sql).await.unwrap();
                let plan = df.clone().create_physical_plan().await.unwrap();
                let want = usize::from(on_codes && filters);
                let shown = displayable(plan.as_ref()).indent(false).to_string();
                assert_eq!(
                    encoded(&plan),
                    want,
                    "{sql}, filters {filters}, reads {reads}\n{shown}"
                );
                let batches = df.collect().await.unwrap();
                answers.push(pretty_format_batches(&batches).unwrap().to_string());
            }
            assert_eq!(answers[0], answers[2], "{sql}");
            assert_eq!(answers[1], answers[2], "{sql}");
            assert!(answers[0].lines().count() > 5, "{sql}: {}", answers[0]);
        }
    }

    #[tokio::test]
    async fn the_plain_scan_answers_as_delta_rs_does() {
        check_both_scans_agree(&[], true).await;
    }

    /// The scan filters `=`/`IN` on a dictionary-encoded string column as
    /// a dictionary (a `DictionaryFilterExec` right over the Parquet scan,
    /// reading the column as `Dictionary(Int32, Utf8)`), never a column stored
    /// plain (long_text); row groups are still pruned by the column's
    /// statistics; the session option turns it off.
    #[tokio::test]
    async fn string_filters_run_on_dictionaries_where_stored() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let store_url = ObjectStoreUrl::parse("file:///").unwrap();
        let table_dir = Path::from_url_path(url.path()).unwrap();
        let mut table = DeltaTable::try_from_url(url.clone()).await.unwrap();
        // two commits: categories c00..c12 in order in one file of row
        // groups of 500 rows, then only c13; long_text stored plain
        let rows = |from: i64, to: i64, cat: &dyn Fn(i64) -> String| {
            let b = batch(from, to).project(&[0, 3, 4]).unwrap();
            let cats: StringArray = (from..to).map(|i| Some(cat(i))).collect();
            let mut columns = b.columns().to_vec();
            columns[1] = Arc::new(cats);
            RecordBatch::try_new(b.schema(), columns).unwrap()
        };
        let first = rows(0, 3000, &|i| format!("c{:02}", i * 13 / 3000));
        let later = rows(3000, 3500, &|_| "c13".to_string());
        let small_groups = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(500))
            .set_column_dictionary_enabled("long_text".into(), false)
            .build();
        for b in [first, later] {
            table = table
                .write(vec![b])
                .with_save_mode(SaveMode::Append)
                .with_writer_properties(small_groups.clone())
                .await
                .unwrap();
        }
        let plain: Arc<dyn TableProvider> = Arc::new(
            SnapshotTable::try_new(&table, &store_url, &table_dir, Writer::Store)
                .unwrap()
                .unwrap(),
        );
        let dictionary_filters = |plan: &Arc<dyn ExecutionPlan>| -> usize {
            nodes(plan, &|p| {
                let over_scan = p.name() == "DictionaryFilterExec"
                    && p.children()
                        .first()
                        .is_some_and(|c| c.name() == "DataSourceExec");
                let reads_dictionary = p.children().first().is_some_and(|c| {
                    c.schema()
                        .fields()
                        .iter()
                        .any(|f| matches!(f.data_type(), DataType::Dictionary(_, _)))
                });
                // a filter of its own, not only giving dictionaries back
                let filters = !displayable(p.as_ref())
                    .one_line()
                    .to_string()
                    .contains("decode only");
                over_scan && reads_dictionary && filters
            })
        };
        for (sql, on_dictionary) in [
            ("SELECT count(*) FROM t WHERE cat = 'c07'", true),
            ("SELECT id, cat FROM t WHERE cat IN ('c01', 'c13')", true),
            ("SELECT count(*) FROM t WHERE cat > 'c07'", false),
            // most rows pass: decided on the strings (cheaper)
            ("SELECT count(*) FROM t WHERE cat <> 'c07'", false),
            (
                "SELECT count(*) FROM t WHERE cat NOT IN ('c01', 'c02')",
                false,
            ),
            (
                "SELECT count(*) FROM t WHERE cat = 'c01' OR cat <> 'c02'",
                false,
            ),
            (
                "SELECT count(*) FROM t WHERE cat IN ('c01', 'c02') AND cat <> 'c02'",
                true,
            ),
            ("SELECT count(*) FROM t WHERE long_text = 'x'", false),
            ("SELECT count(*) FROM t", false),
        ] {
            let mut answers = Vec::new();
            for enabled in [true, false] {
                let ctx = session(plain.clone(), enabled);
                let frame = ctx.sql(sql).await.unwrap();
                let plan = frame.clone().create_physical_plan().await.unwrap();
                let want = usize::from(on_dictionary && enabled);
                assert_eq!(dictionary_filters(&plan), want, "{sql}, enabled {enabled}");
                // the same rows either way (in any order)
                let rows = pretty_format_batches(&frame.collect().await.unwrap()).unwrap();
                let mut rows: Vec<String> = rows.to_string().lines().map(String::from).collect();
                rows.sort();
                answers.push(rows);
            }
            assert_eq!(answers[0], answers[1], "{sql}");
        }
        // row groups are still pruned by their statistics: c07 lies in 1
        // or 2 of the 7 (the second file's one holds only c13)
        let ctx = session(plain, true);
        let batches = ctx
            .sql("EXPLAIN ANALYZE SELECT count(*) FROM t WHERE cat = 'c07'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let at = text.find("row_groups_pruned_statistics=").unwrap();
        let metric = &text[at..at + text[at..].find(" matched").unwrap()];
        assert!(
            metric.ends_with("7 total → 1") || metric.ends_with("7 total → 2"),
            "{metric}"
        );
        let count = ctx
            .sql("SELECT count(*) FROM t WHERE cat = 'c07'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let count = pretty_format_batches(&count).unwrap().to_string();
        assert!(count.contains("| 231 "), "{count}");
    }

    #[tokio::test]
    async fn a_table_with_deletion_vectors_enabled_is_read_by_delta_rs() {
        check_both_scans_agree(&[("delta.enableDeletionVectors", "true")], false).await;
    }

    #[test]
    fn reader_features_decide_the_scan() {
        let protocol =
            |json: &str| -> deltalake::kernel::Protocol { serde_json::from_str(json).unwrap() };
        assert!(plain_protocol(&protocol(
            r#"{"minReaderVersion":1,"minWriterVersion":2}"#
        )));
        assert!(plain_protocol(&protocol(
            r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["timestampNtz"],"writerFeatures":["timestampNtz"]}"#
        )));
        for refused in ["deletionVectors", "columnMapping", "typeWidening"] {
            let json = format!(
                r#"{{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["timestampNtz","{refused}"],"writerFeatures":["timestampNtz","{refused}"]}}"#
            );
            assert!(!plain_protocol(&protocol(&json)), "{refused}");
        }
        assert!(!plain_protocol(&protocol(
            r#"{"minReaderVersion":2,"minWriterVersion":5}"#
        )));
    }

    /// A statistic whose value the column type cannot hold is no bound (it
    /// must never become a wrong one).
    #[test]
    fn statistics_convert_to_the_column_type_or_not_at_all() {
        let f = Field::new("c", DataType::Utf8View, true);
        assert_eq!(
            value(&Scalar::String("abc".into()), &f),
            Some(ScalarValue::Utf8View(Some("abc".into())))
        );
        let f = Field::new("c", DataType::Int8, true);
        assert_eq!(value(&Scalar::Long(1000), &f), None);
        assert_eq!(
            value(&Scalar::Long(7), &f),
            Some(ScalarValue::Int8(Some(7)))
        );
    }
}
