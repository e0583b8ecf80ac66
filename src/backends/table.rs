//! `table.delta`: Arrow tables stored as Delta Lake tables (Parquet files and
//! a JSON commit log), readable by any Delta engine.
//!
//! One Delta table per dataset, created under a fresh directory on first put;
//! appends and overwrites are Delta commits to it, and each omegastore version
//! records the Delta version it saw (`kind_meta.delta_version`), so `name@3`
//! is Delta time travel. The Delta log is linear, so the omegastore versions
//! of a table are kept monotonic in Delta version (see [`DeltaTableBackend::rebase`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::path::Path;
use serde_json::{Value, json};

use super::delta_scan::Writer;
use super::ingest::{describe_schema, object_to_plan};
use super::staged::StagingStore;
use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, FileFormat, GetOptions, Object, PutMode, PutOptions,
    TableChange, Written,
};
use crate::store::error::{Result, StoreError};
use crate::store::root::Root;

pub const KIND: &str = "table.delta";

/// Where a staged Delta commit is saved beside its table until published.
const STAGED_DIR: &str = "_omega";

/// Delta's default checkpoint interval: publishing version `v` writes a
/// checkpoint when `v + 1` is a multiple of it (what delta-rs does after
/// its own commits), so opening a table replays at most this many entries.
const CHECKPOINT_INTERVAL: u64 = 100;

/// A table of at most [`SMALL_TABLE_FILES`] files checkpoints every this
/// many versions instead. Opening a table (which every write does) replays
/// each log entry since the last checkpoint at ~0.5 ms apiece, whatever its
/// size, so a table taking many small appends (a server's ingest) paid
/// 15 → 60 ms per append across each run of 100 versions; a checkpoint of
/// a small table is a few KB, so writing one every 10 versions costs
/// little in time and space. Large tables keep [`CHECKPOINT_INTERVAL`]: each
/// of their checkpoints holds every file, and no log is ever cleaned up.
const SMALL_CHECKPOINT_INTERVAL: u64 = 10;

/// Files a table may have to checkpoint every [`SMALL_CHECKPOINT_INTERVAL`]
/// versions.
const SMALL_TABLE_FILES: usize = 1_000;

/// Whether publishing `version` of a table with `files` data files writes
/// a checkpoint (`None`: a record without the count).
fn checkpoint_due(version: u64, files: Option<usize>) -> bool {
    let next = version + 1;
    next.is_multiple_of(CHECKPOINT_INTERVAL)
        || (next.is_multiple_of(SMALL_CHECKPOINT_INTERVAL)
            && files.is_some_and(|n| n <= SMALL_TABLE_FILES))
}

/// The `table.delta` backend.
///
/// Contract beyond [`DataBackend`]'s: a write's Delta commit is *staged*
/// (see [`super::staged`]): its Parquet files are written, its log entry is
/// saved beside the table, and nothing enters `_delta_log/` until the
/// store's record commits. Then [`DataBackend::committed`] publishes the
/// entry (put-if-absent); a reader or writer that finds a committed record
/// whose entry is missing publishes it from the saved copy. So the rows of
/// a write whose record never committed are never visible, to omegastore
/// or to another Delta reader, and every published Delta version belongs to
/// a committed record. Concurrent writers serialise on the record: the
/// loser's staged version is taken, and it re-applies its commit on the
/// newer version if it only adds files (an append) or fails with
/// [`StoreError::Conflict`] (an overwrite, `DELETE`, `UPDATE`, compaction).
/// The store's tables are written by omegastore only; another engine may
/// read them, not write them.
#[derive(Default)]
pub struct DeltaTableBackend {
    scan: TableScan,
}

/// How a table version is read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableScan {
    /// DataFusion's Parquet scan of the version's files, unless the version
    /// needs more of a reader (see [`super::delta_scan`]); then delta-rs's.
    #[default]
    Plain,
    /// Always delta-rs's provider (to compare answers, or to rule the plain
    /// scan out): `om.register_backend(Arc::new(DeltaTableBackend::with_scan(TableScan::DeltaRs)))`.
    DeltaRs,
}

impl DeltaTableBackend {
    /// The backend reading tables with `scan`.
    pub fn with_scan(scan: TableScan) -> Self {
        Self { scan }
    }

    /// Opens the table at `dir` to write on top of the version `base`
    /// records (publishing it first if a crash left it staged), through a
    /// staging store.
    async fn open_for_write(
        &self,
        root: &Root,
        dir: &Path,
        base: &Metadata,
    ) -> Result<(DeltaTable, Arc<StagingStore>)> {
        publish(root, base).await?;
        let staging = Arc::new(StagingStore::new(root.store.clone(), dir));
        let table = open_on(root, staging.clone(), dir, None)
            .await
            .map_err(|e| StoreError::MissingData {
                name: base.name.clone(),
                version: base.version,
                path: format!("{dir} ({e})"),
            })?;
        Ok((table, staging))
    }
}

/// Opens the Delta table at `dir`, at `version` or the latest.
pub(crate) async fn open_table(
    root: &Root,
    dir: &Path,
    version: Option<u64>,
) -> deltalake::DeltaResult<DeltaTable> {
    open_on(root, root.store.clone(), dir, version).await
}

/// Opens the Delta table at `dir` through `store` (the root's store, or a
/// staging store over it).
async fn open_on(
    root: &Root,
    store: Arc<dyn object_store::ObjectStore>,
    dir: &Path,
    version: Option<u64>,
) -> deltalake::DeltaResult<DeltaTable> {
    let url = root.dir_url_of(dir);
    let mut builder = DeltaTableBuilder::from_url(url.clone())?.with_storage_backend(store, url);
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    builder.load().await
}

/// Commit properties of a staged write: tagged with the omegastore write
/// that makes it, and no checkpoint or log cleanup (those run when the
/// commit is published).
fn staged_commit(write_id: &str) -> deltalake::kernel::transaction::CommitProperties {
    deltalake::kernel::transaction::CommitProperties::default()
        .with_metadata([("omegastore.write".to_string(), json!(write_id))])
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

/// Runs a Delta write of `plan` on a staging store and describes the
/// version it staged.
#[allow(clippy::too_many_arguments)]
async fn run_write(
    builder: deltalake::operations::write::WriteBuilder,
    properties: parquet::file::properties::WriterProperties,
    plan: datafusion::logical_expr::LogicalPlan,
    session: Arc<datafusion::execution::session_state::SessionState>,
    write_id: &str,
    root: &Root,
    dir: &Path,
    staging: &StagingStore,
    name: &str,
) -> Result<Written> {
    let table = builder
        .with_writer_properties(properties)
        .with_commit_properties(staged_commit(write_id))
        .with_input_plan(plan)
        .with_session_state(session)
        .await
        .map_err(|e| delta_err(name, e))?;
    finish_stage(root, dir, &table, staging, write_id).await
}

/// Saves the commit a Delta operation staged beside the table and
/// describes the version it makes; `kind_meta.commit` names the saved copy
/// (absent when the operation committed nothing).
async fn finish_stage(
    root: &Root,
    dir: &Path,
    table: &DeltaTable,
    staging: &StagingStore,
    write_id: &str,
) -> Result<Written> {
    let mut written = describe(root, dir, table)?;
    if let Some((version, bytes)) = staging.staged() {
        let saved = dir
            .clone()
            .join(STAGED_DIR)
            .join(format!("{version:020}-{write_id}.json"));
        use object_store::ObjectStoreExt;
        root.store
            .put(&saved, bytes.into())
            .await
            .map_err(|e| StoreError::object_store(&saved, e))?;
        written.kind_meta["commit"] = json!(root.relative(&saved));
    }
    staging.seal();
    crate::store::failpoint::hit("after-stage");
    Ok(written)
}

fn staged_copy(meta: &Value) -> Option<&str> {
    meta.get("commit").and_then(Value::as_str)
}

/// Publishes the Delta log entry of the version `meta` records, if it was
/// staged and is not published yet (after the record committed, or to roll
/// forward a writer that crashed in between). Idempotent.
pub(crate) async fn publish(root: &Root, meta: &Metadata) -> Result<()> {
    use object_store::ObjectStoreExt;
    let (Some(saved), Some(version), Some(rel)) = (
        staged_copy(&meta.kind_meta),
        delta_version(meta),
        location(meta),
    ) else {
        return Ok(());
    };
    let dir = root.resolve(rel)?;
    let entry = super::staged::log_entry(&dir, version);
    match root.store.head(&entry).await {
        Ok(_) => return Ok(()),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(StoreError::object_store(&entry, e)),
    }
    let saved = root.resolve(saved)?;
    let bytes = match root.store.get(&saved).await {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| StoreError::object_store(&saved, e))?,
        // published (and the copy removed) by a concurrent roll forward
        Err(object_store::Error::NotFound { .. }) if root.store.head(&entry).await.is_ok() => {
            return Ok(());
        }
        Err(object_store::Error::NotFound { .. }) => {
            return Err(StoreError::MissingData {
                name: meta.name.clone(),
                version: meta.version,
                path: saved.to_string(),
            });
        }
        Err(e) => return Err(StoreError::object_store(&saved, e)),
    };
    let create = object_store::PutOptions {
        mode: object_store::PutMode::Create,
        ..Default::default()
    };
    match root
        .store
        .put_opts(&entry, bytes.clone().into(), create)
        .await
    {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            let theirs = root
                .store
                .get(&entry)
                .await
                .map_err(|e| StoreError::object_store(&entry, e))?
                .bytes()
                .await
                .map_err(|e| StoreError::object_store(&entry, e))?;
            if theirs != bytes {
                return Err(StoreError::CorruptData {
                    name: meta.name.clone(),
                    path: entry.to_string(),
                    reason: format!(
                        "Delta version {version} was written by another writer than version {} of the store; only omegastore may write its tables",
                        meta.version
                    ),
                });
            }
        }
        Err(e) => return Err(StoreError::object_store(&entry, e)),
    }
    let _ = root.store.delete(&saved).await;
    if version == 0 {
        // the log now keeps the directory (see `put`)
        let _ = root
            .store
            .delete(&dir.clone().join(STAGED_DIR).join(".table"))
            .await;
    }
    // the record counts the version's files (see `describe`)
    let files = meta.kind_meta.get("files").and_then(Value::as_u64);
    if checkpoint_due(version, files.map(|n| n as usize))
        && let Ok(table) = open_table(root, &dir, Some(version)).await
    {
        // a missing checkpoint only slows opening; the next one covers it
        let _ = deltalake::checkpoints::create_checkpoint(&table, None).await;
    }
    Ok(())
}

/// Whether a staged Delta commit only adds data files (a blind append),
/// so that it can be re-applied unchanged on a newer version.
fn appends_only(entry: &[u8]) -> bool {
    entry
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .all(|line| {
            let Ok(Value::Object(action)) = serde_json::from_slice::<Value>(line) else {
                return false;
            };
            action.len() == 1
                && action
                    .keys()
                    .all(|k| matches!(k.as_str(), "add" | "commitInfo" | "txn"))
        })
}

/// Parquet settings of every data file. Columns of fixed-width values
/// (integers, floats, decimals, dates, times, booleans) are stored
/// uncompressed, the others (strings, binary, nested) with LZ4 (raw):
/// reading a number column is then a copy out of the page, where LZ4
/// cost a decompression into a fresh buffer per page. Measured on the
/// 10M-row ops table (release, alternating stores): get 0.55x, top-k
/// 0.57x, join 0.73x, group-by 0.80x of the time with every column LZ4,
/// files 23% larger (random doubles do not compress at all; ids and
/// foreign keys by half). Strings keep LZ4: they shrink most and their
/// decoding is the cost, not the copy. Page statistics stay as they are.
///
/// Row groups of at most 512Ki rows instead of 1Mi: a scan splits work
/// between cores by row group, so a table of 0.5–1M rows was read by one
/// core (TPC-H's `partsupp`, 800K rows). Measured on TPC-H sf 1: q02 0.76x,
/// q11 0.78x, q16 0.88x, the rest within noise; 10M-row scans unchanged,
/// files 0.2% larger. 128Ki-row groups (DuckDB's size) slowed the lineitem
/// scans (q06 1.21x, q19 1.19x): each group costs its dictionary pages and
/// decoder setup.
///
/// Dictionary pages are capped at 64 KiB (the default is 1 MiB): a column
/// with few distinct values still gets one, a column of mostly distinct
/// values (ids, measures) falls back to plain pages early. Every read of a
/// column chunk decodes its dictionary page whole, so a point lookup pruned
/// to one page read three 0.5–1 MiB dictionaries: measured on 1M rows over
/// HTTP, a lookup 8.6 -> 4.2 ms, files 5% smaller, scans of 10M rows
/// unchanged (BENCHMARKS.md).
///
/// Bloom filters are written for the columns in `bloom` only (they cost
/// space and write time, and help only equality lookups of values that
/// statistics cannot rule out).
fn writer_properties(
    schema: &Schema,
    bloom: &[String],
) -> parquet::file::properties::WriterProperties {
    use parquet::basic::Compression;
    let mut b = parquet::file::properties::WriterProperties::builder()
        .set_created_by(format!("omegastore {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::LZ4_RAW)
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for field in schema.fields() {
        if fixed_width(field.data_type()) {
            b = b.set_column_compression(
                parquet::schema::types::ColumnPath::from(field.name().as_str()),
                Compression::UNCOMPRESSED,
            );
        }
    }
    for column in bloom {
        b = b.set_column_bloom_filter_enabled(
            parquet::schema::types::ColumnPath::from(column.as_str()),
            true,
        );
    }
    b.build()
}

/// A column of fixed-width values: written uncompressed (see
/// [`writer_properties`]). Top-level columns only; a nested column's
/// leaves keep the file's codec.
fn fixed_width(t: &DataType) -> bool {
    t.is_primitive() || matches!(t, DataType::Boolean)
}

/// Most rows in a row group (see [`writer_properties`]); the scan sizes its
/// work items by it ([`super::delta_scan`]).
pub(crate) const ROW_GROUP_ROWS: usize = 512 * 1024;

/// Largest dictionary page of a data file (see [`writer_properties`]).
const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;

fn location(meta: &Metadata) -> Option<&str> {
    meta.kind_meta.get("location").and_then(Value::as_str)
}

fn delta_version(meta: &Metadata) -> Option<u64> {
    meta.kind_meta.get("delta_version").and_then(Value::as_u64)
}

/// What the store records about a table version.
fn describe(root: &Root, dir: &Path, table: &DeltaTable) -> Result<Written> {
    let state = table
        .snapshot()
        .map_err(|e| StoreError::table(dir, format!("cannot read the table state: {e}")))?;
    let schema = state.snapshot().arrow_schema();
    let (mut rows, mut size, mut files) = (0u64, 0u64, 0u64);
    for f in state.log_data().iter() {
        rows += f.num_records().unwrap_or(0) as u64;
        size += f.size().max(0) as u64;
        files += 1;
    }
    Ok(Written {
        kind: KIND.into(),
        uri: root.dir_url_of(dir).to_string(),
        kind_meta: json!({
            "format": "delta",
            "location": root.relative(dir),
            "delta_version": table.version(),
            "schema": schema_json(&schema),
            "rows": rows,
            "files": files,
            "size": size,
        }),
    })
}

/// The schema as `[{name, type, nullable}]`.
pub fn schema_json(schema: &SchemaRef) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
            .collect(),
    )
}

/// Type identity as Delta stores it: string, binary and dictionary encodings
/// and timestamp units collapse; nested types compare field by field.
fn storage_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Dictionary(_, v) => storage_type(v),
        DataType::Timestamp(_, tz) => {
            format!("timestamp{}", if tz.is_some() { "" } else { "_ntz" })
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("array<{}>", storage_type(f.data_type()))
        }
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}:{}", f.name(), storage_type(f.data_type())))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Numeric widening that Delta applies on append (a cast the values survive).
fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    let rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        _ => None,
    };
    matches!((rank(from), rank(to)), (Some(a), Some(b)) if a <= b)
        || matches!((from, to), (Float32, Float64))
        // integers into a float column: what a CSV of whole numbers infers
        || (rank(from).is_some() && matches!(to, Float64))
}

/// Checks an append against the table's schema; lists every difference.
fn check_append_schema(
    name: &str,
    table: &SchemaRef,
    incoming: &SchemaRef,
    merge_schema: bool,
) -> Result<()> {
    let mut problems = Vec::new();
    for f in incoming.fields() {
        match table.field_with_name(f.name()) {
            Err(_) if merge_schema => {}
            Err(_) => problems.push(format!("new column '{}' ({})", f.name(), f.data_type())),
            Ok(t) => {
                let (a, b) = (storage_type(f.data_type()), storage_type(t.data_type()));
                if a != b && !widens(f.data_type(), t.data_type()) {
                    problems.push(format!(
                        "column '{}' is {} in the data but {} in the table",
                        f.name(),
                        f.data_type(),
                        t.data_type()
                    ));
                }
            }
        }
    }
    for t in table.fields() {
        if incoming.field_with_name(t.name()).is_err() && !merge_schema {
            problems.push(format!("missing column '{}' ({})", t.name(), t.data_type()));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(StoreError::SchemaMismatch {
        name: name.to_string(),
        details: format!(
            "{}. Table columns: [{}]; use mode overwrite to replace the table, or merge_schema to add new columns",
            problems.join("; "),
            describe_schema(table)
        ),
    })
}

/// Delta has no unsigned integers or nanosecond timestamps in its protocol:
/// such columns are refused with a clear message rather than silently altered.
fn check_storable(name: &str, schema: &SchemaRef) -> Result<()> {
    fn bad(t: &DataType) -> bool {
        match t {
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => true,
            DataType::Dictionary(_, v) => bad(v),
            DataType::List(f) | DataType::LargeList(f) => bad(f.data_type()),
            DataType::Struct(fs) => fs.iter().any(|f| bad(f.data_type())),
            _ => false,
        }
    }
    let unsupported: Vec<&Arc<Field>> = schema
        .fields()
        .iter()
        .filter(|f| bad(f.data_type()))
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    Err(StoreError::invalid_input(
        name,
        format!(
            "Delta tables have no unsigned integer types; cast these columns to a signed type first: {}",
            unsupported
                .iter()
                .map(|f| format!("{} ({})", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

fn delta_err(name: &str, e: deltalake::DeltaTableError) -> StoreError {
    use std::error::Error;
    // a read-only root, however deep delta-rs wrapped it
    let mut cause: Option<&(dyn Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(object_store::Error::PermissionDenied { path, .. }) =
            c.downcast_ref::<object_store::Error>()
        {
            return StoreError::StorageDenied { path: path.clone() };
        }
        cause = c.source();
    }
    // delta-rs's Parquet writer keeps only the text of the storage error
    const DENIED: &str = "lacked the necessary privileges to complete for path ";
    let text = e.to_string();
    if let Some(i) = text.find(DENIED) {
        let rest = &text[i + DENIED.len()..];
        let path = rest.split(": ").next().unwrap_or(rest);
        return StoreError::StorageDenied {
            path: path.to_string(),
        };
    }
    StoreError::table(name, e)
}

#[async_trait]
impl DataBackend for DeltaTableBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn lays_out_rows(&self) -> bool {
        true
    }

    fn supports(&self, obj: &Object) -> bool {
        match obj {
            Object::Table { .. } | Object::Stream(_) => true,
            Object::File { format, .. } => matches!(
                format,
                FileFormat::Csv | FileFormat::Parquet | FileFormat::JsonLines
            ),
            _ => false,
        }
    }

    fn referenced(&self, meta: &Metadata) -> Option<Vec<String>> {
        Some(crate::store::backend::recorded_paths(meta, &["location"]))
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        previous: Option<&Metadata>,
        opts: &PutOptions,
    ) -> Result<Written> {
        let name = cx.name.as_str();
        let appends = matches!(opts.mode, PutMode::Append | PutMode::Auto);
        let obj = match previous.filter(|p| p.kind == KIND && appends) {
            Some(table) => with_table_types(cx.root, table, obj).await?,
            None => obj,
        };
        let (plan, schema) = object_to_plan(name, obj, opts.progress.clone())?;
        check_storable(name, &schema)?;
        let (plan, zones) = normalize_timestamps(name, plan, &schema)?;
        let plan = cx
            .hooks
            .rewrite_write(&cx.write_target(), plan, cx.session)
            .await?;
        let schema = plan.schema().inner().clone();
        let appending = previous.filter(|p| p.kind == KIND && opts.mode != PutMode::Overwrite);
        let sort_by = match (&opts.sort_by[..], appending) {
            ([], Some(p)) => stored_sort_order(p),
            (cols, _) => cols.to_vec(),
        };
        let bloom = match (&opts.bloom_filters[..], appending) {
            ([], Some(p)) => recorded_columns(p, "bloom_filters"),
            (cols, _) => cols.to_vec(),
        };
        check_columns(name, &schema, &bloom, "a Bloom filter column")?;
        let properties = writer_properties(&schema, &bloom);
        let plan = sorted(name, cx.session, plan, &sort_by).await?;
        let session = write_session(cx.session, !sort_by.is_empty());
        let existing = previous
            .filter(|p| p.kind == KIND)
            .and_then(location)
            .map(|l| cx.root.resolve(l))
            .transpose()?;
        if previous.is_some_and(|p| p.kind != KIND) && opts.mode == PutMode::Append {
            return Err(StoreError::invalid_input(
                name,
                format!(
                    "cannot append a table to an object of kind '{}'; use mode overwrite",
                    previous.map(|p| p.kind.as_str()).unwrap_or_default()
                ),
            ));
        }
        let write_id = uuid::Uuid::new_v4().to_string();
        let (dir, mut written) = match existing {
            Some(dir) => {
                let base = previous.ok_or_else(|| {
                    StoreError::invalid_input(name, "an existing table without a version")
                })?;
                let (table, staging) = self.open_for_write(cx.root, &dir, base).await?;
                let builder = if opts.mode == PutMode::Overwrite {
                    table
                        .write(vec![])
                        .with_save_mode(SaveMode::Overwrite)
                        .with_schema_mode(SchemaMode::Overwrite)
                } else {
                    let current = table_schema(name, &table)?;
                    check_append_schema(name, &current, &schema, opts.merge_schema)?;
                    let b = table.write(vec![]).with_save_mode(SaveMode::Append);
                    if opts.merge_schema {
                        b.with_schema_mode(SchemaMode::Merge)
                    } else {
                        b
                    }
                };
                // a failed staged write left nothing visible (its files are
                // garbage for `om gc`)
                let w = run_write(
                    builder, properties, plan, session, &write_id, cx.root, &dir, &staging, name,
                )
                .await?;
                (dir, w)
            }
            None => {
                let dir = cx.data_dir.clone().join(uuid::Uuid::new_v4().to_string());
                let url = cx.root.dir_url_of(&dir);
                let staging = Arc::new(StagingStore::new(cx.root.store.clone(), &dir));
                // The Delta kernel refuses a local table directory that does
                // not exist, and a staged write of no rows creates nothing.
                let marker = dir.clone().join(STAGED_DIR).join(".table");
                use object_store::ObjectStoreExt;
                cx.root
                    .store
                    .put(&marker, bytes::Bytes::new().into())
                    .await
                    .map_err(|e| StoreError::object_store(&marker, e))?;
                let table = DeltaTableBuilder::from_url(url.clone())
                    .and_then(|b| b.with_storage_backend(staging.clone(), url).build())
                    .map_err(|e| delta_err(name, e))?;
                let builder = table
                    .write(vec![])
                    .with_save_mode(SaveMode::ErrorIfExists)
                    .with_table_name(name);
                let result = run_write(
                    builder, properties, plan, session, &write_id, cx.root, &dir, &staging, name,
                )
                .await;
                match result {
                    Ok(w) => (dir, w),
                    Err(e) => {
                        // Nothing references the new directory: remove what was written.
                        let _ = crate::store::backend::delete_prefix(cx.root, &dir).await;
                        return Err(e);
                    }
                }
            }
        };
        let _ = dir;
        // Zones of earlier versions still apply to the columns they named.
        let mut all_zones = previous
            .filter(|p| p.kind == KIND && opts.mode != PutMode::Overwrite)
            .and_then(|p| p.kind_meta.get("timezones"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        all_zones.extend(zones);
        if !all_zones.is_empty() {
            written.kind_meta["timezones"] = Value::Object(all_zones);
        }
        if !sort_by.is_empty() {
            written.kind_meta["sort_by"] = json!(sort_by);
        }
        if !bloom.is_empty() {
            written.kind_meta["bloom_filters"] = json!(bloom);
        }
        Ok(written)
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        opts: &GetOptions,
    ) -> Result<Data> {
        let provider = table_provider(cx.root, cx.session, meta, self.scan).await?;
        let provider = through_cache(cx.root, cx.session, meta, provider).await?;
        let df = cx.named_scan(provider)?;
        // Options are applied by the store, above the named scan.
        let _ = opts;
        Ok(Data::Table(restore_timezones(&meta.name, df, meta)?))
    }

    async fn rebase(
        &self,
        cx: &BackendContext<'_>,
        written: Written,
        latest: &Metadata,
    ) -> Result<Option<Written>> {
        let ours = written.kind_meta.get("location").and_then(Value::as_str);
        if latest.kind != KIND || location(latest) != ours {
            // Another writer created the table first; ours is unreferenced.
            self.discard(cx, &written).await;
            return Ok(None);
        }
        let mine = written
            .kind_meta
            .get("delta_version")
            .and_then(Value::as_u64);
        if delta_version(latest) < mine {
            // we built on their commit: our staged version is still next
            return Ok(Some(written));
        }
        let Some(saved) = staged_copy(&written.kind_meta) else {
            // a change that committed nothing: the newer version stands
            return Ok(Some(Written {
                kind: latest.kind.clone(),
                uri: latest.uri.clone(),
                kind_meta: latest.kind_meta.clone(),
            }));
        };
        let saved = cx.root.resolve(saved)?;
        use object_store::ObjectStoreExt;
        let entry = match cx.root.store.get(&saved).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        }
        .map_err(|e| StoreError::object_store(&saved, e))?;
        if !appends_only(&entry) {
            self.discard(cx, &written).await;
            return Err(StoreError::Conflict {
                name: latest.name.clone(),
                version: latest.version,
                advice: format!(
                    "version {} changed the table while this write ran; run it again",
                    latest.version
                ),
            });
        }
        // Re-apply the append on the newer version: the same files, the
        // next Delta version.
        let dir = cx.root.resolve(ours.unwrap_or_default())?;
        use object_store::ObjectStore;
        let mut attempts = 0;
        let (table, staging) = loop {
            let (table, staging) = self.open_for_write(cx.root, &dir, latest).await?;
            let next = table.version().map_or(0, |v| v + 1);
            let create = object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            match staging
                .put_opts(
                    &super::staged::log_entry(&dir, next),
                    entry.clone().into(),
                    create,
                )
                .await
            {
                Ok(_) => break (table, staging),
                // a newer version was published meanwhile (its record is
                // newer than `latest`: the store rebases us again)
                Err(object_store::Error::AlreadyExists { .. }) if attempts < 20 => attempts += 1,
                Err(e) => {
                    self.discard(cx, &written).await;
                    return Err(StoreError::object_store(&dir, e));
                }
            }
        };
        let _ = table;
        let table = open_on(cx.root, staging.clone(), &dir, None)
            .await
            .map_err(|e| delta_err(&latest.name, e))?;
        let mut rebased = finish_stage(
            cx.root,
            &dir,
            &table,
            &staging,
            &uuid::Uuid::new_v4().to_string(),
        )
        .await?;
        carry_table_meta(&written.kind_meta, &mut rebased.kind_meta, true);
        let _ = cx.root.store.delete(&saved).await;
        Ok(Some(rebased))
    }

    async fn committed(&self, cx: &BackendContext<'_>, meta: &Metadata) {
        // best effort: a reader or the next writer rolls it forward
        let _ = publish(cx.root, meta).await;
        // A cached table's new version is loaded now, not by its next reader.
        if super::memory_cache::of(cx.session).is_some_and(|c| c.wants(meta)) {
            let (root, session, meta) = (cx.root.clone(), cx.session.clone(), meta.clone());
            let how = self.scan;
            tokio::spawn(async move {
                if let Ok(scan) = table_provider(&root, &session, &meta, how).await {
                    let _ = through_cache(&root, &session, &meta, scan).await;
                }
            });
        }
    }

    async fn drop_data(&self, cx: &BackendContext<'_>, versions: &[Metadata]) -> Result<()> {
        if let Some(cache) = super::memory_cache::of(cx.session) {
            for m in versions {
                if let Ok(Some(source)) = snapshot_key(cx.root, m) {
                    cache.forget_source(m, &source);
                }
            }
        }
        crate::store::backend::delete_recorded(
            cx,
            versions.iter().map(|m| &m.kind_meta),
            "location",
            crate::store::backend::Recorded::Dir,
        )
        .await
    }

    async fn discard(&self, cx: &BackendContext<'_>, written: &Written) {
        // A staged commit was never published: nothing is visible. Remove
        // the saved entry, and a table this write created; the files of an
        // abandoned write into an existing table are left to `om gc`.
        if let Some(saved) = staged_copy(&written.kind_meta).and_then(|s| cx.root.resolve(s).ok()) {
            use object_store::ObjectStoreExt;
            let _ = cx.root.store.delete(&saved).await;
        }
        if written
            .kind_meta
            .get("delta_version")
            .and_then(Value::as_u64)
            == Some(0)
        {
            let _ = crate::store::backend::delete_recorded(
                cx,
                std::iter::once(&written.kind_meta),
                "location",
                crate::store::backend::Recorded::Dir,
            )
            .await;
        }
    }

    /// Files of the Delta directories that no live version's snapshot
    /// lists (the rows of failed or overwritten writes, saved entries of
    /// abandoned staged commits), older than `cutoff`; the Delta log itself
    /// is kept. Staged commits of live versions are published first.
    async fn prune(
        &self,
        cx: &BackendContext<'_>,
        live: &[Metadata],
        cutoff: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
    ) -> Result<Vec<(Path, u64)>> {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let mut by_dir: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        for m in live {
            // roll forward what a crash left staged: the saved entries of
            // live versions are then no longer needed
            publish(cx.root, m).await?;
            match (location(m), delta_version(m)) {
                (Some(l), Some(v)) => by_dir.entry(l).or_default().push(v),
                // a version we cannot judge: prune nothing
                _ => return Ok(vec![]),
            }
        }
        let mut removed = Vec::new();
        for (rel, mut versions) in by_dir {
            versions.sort_unstable();
            versions.dedup();
            let dir = cx.root.resolve(rel)?;
            let mut needed = std::collections::HashSet::new();
            for v in versions {
                let table = open_table(cx.root, &dir, Some(v))
                    .await
                    .map_err(|e| delta_err(&live[0].name, e))?;
                for uri in table
                    .get_file_uris()
                    .map_err(|e| delta_err(&live[0].name, e))?
                {
                    // a URL, or a plain path for local tables
                    let path = match url::Url::parse(&uri) {
                        Ok(u) => Path::from_url_path(u.path()).ok(),
                        Err(_) => Path::parse(uri.trim_start_matches('/')).ok(),
                    }
                    .ok_or_else(|| {
                        StoreError::table(&live[0].name, format!("unexpected file URI {uri}"))
                    })?;
                    needed.insert(path);
                }
            }
            let listed: Vec<_> = cx
                .root
                .store
                .list(Some(&dir))
                .try_collect()
                .await
                .map_err(|e| StoreError::object_store(&dir, e))?;
            // Guard: the snapshot's paths must be the listing's paths, or
            // everything would look unreferenced.
            if !needed.is_empty() && !listed.iter().any(|f| needed.contains(&f.location)) {
                return Err(StoreError::table(
                    &live[0].name,
                    format!("the files of {dir} do not match its Delta log; nothing was pruned"),
                ));
            }
            let log = dir.clone().join("_delta_log");
            for f in listed {
                if f.location.prefix_matches(&log)
                    || needed.contains(&f.location)
                    || f.last_modified >= cutoff
                {
                    continue;
                }
                if !dry_run {
                    match cx.root.store.delete(&f.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(StoreError::object_store(&f.location, e)),
                    }
                }
                removed.push((f.location, f.size));
            }
        }
        Ok(removed)
    }

    async fn change(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        change: TableChange,
    ) -> Result<Option<(Written, u64)>> {
        self.apply_change(cx, meta, change).await.map(Some)
    }
}

/// Delta stores timestamps as microseconds, either UTC instants or without
/// a zone. Other units are cast to microseconds, and zoned columns to UTC;
/// the original zone names are returned so `get` can restore them.
fn normalize_timestamps(
    name: &str,
    plan: datafusion::logical_expr::LogicalPlan,
    schema: &SchemaRef,
) -> Result<(
    datafusion::logical_expr::LogicalPlan,
    serde_json::Map<String, Value>,
)> {
    use arrow::datatypes::TimeUnit;
    use datafusion::common::Column;
    use datafusion::logical_expr::{Expr, LogicalPlanBuilder, cast};
    let mut zones = serde_json::Map::new();
    let mut changed = false;
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            let column = Expr::Column(Column::from_name(f.name()));
            match f.data_type() {
                DataType::Timestamp(unit, tz) => {
                    let utc = tz.as_deref().is_some_and(|z| z == "UTC" || z == "+00:00");
                    if let Some(z) = tz.as_deref().filter(|_| !utc) {
                        zones.insert(f.name().clone(), Value::String(z.to_string()));
                    }
                    if *unit == TimeUnit::Microsecond && (tz.is_none() || utc) {
                        return column;
                    }
                    changed = true;
                    let target = DataType::Timestamp(
                        TimeUnit::Microsecond,
                        tz.as_ref().map(|_| "UTC".into()),
                    );
                    cast(column, target).alias(f.name())
                }
                _ => column,
            }
        })
        .collect();
    if !changed {
        return Ok((plan, zones));
    }
    let plan = LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|e| StoreError::invalid_input(name, e))?;
    Ok((plan, zones))
}

/// Casts UTC timestamp columns back to the zones recorded at put.
fn restore_timezones(
    name: &str,
    df: datafusion::dataframe::DataFrame,
    meta: &Metadata,
) -> Result<datafusion::dataframe::DataFrame> {
    use datafusion::common::Column;
    use datafusion::logical_expr::{Expr, cast};
    let Some(zones) = meta.kind_meta.get("timezones").and_then(Value::as_object) else {
        return Ok(df);
    };
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let column = Expr::Column(Column::from_name(f.name()));
            match (f.data_type(), zones.get(f.name()).and_then(Value::as_str)) {
                (DataType::Timestamp(unit, Some(_)), Some(zone)) => {
                    cast(column, DataType::Timestamp(*unit, Some(zone.into()))).alias(f.name())
                }
                _ => column,
            }
        })
        .collect();
    df.select(exprs).map_err(|e| StoreError::table(name, e))
}

impl DeltaTableBackend {
    /// Applies `change` on top of the Delta version `meta` records;
    /// returns what to record and how many rows changed.
    async fn apply_change(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        change: TableChange,
    ) -> Result<(Written, u64)> {
        let name = meta.name.as_str();
        let rel = location(meta).ok_or_else(|| StoreError::CorruptMetadata {
            name: meta.name.clone(),
            path: meta.uri.clone(),
            reason: "no table location recorded".into(),
        })?;
        let dir = cx.root.resolve(rel)?;
        let (table, staging) = self.open_for_write(cx.root, &dir, meta).await?;
        let write_id = uuid::Uuid::new_v4().to_string();
        let session = Arc::new(cx.session.state());
        let schema = table_schema(name, &table)?;
        // rewritten files are written as the version's own were
        let properties = writer_properties(&schema, &recorded_columns(meta, "bloom_filters"));
        // a compaction concatenates files: the rows are no longer in the stored order
        let keeps_order = !matches!(change, TableChange::Compact | TableChange::ZOrder(_));
        let zorder = match &change {
            TableChange::ZOrder(columns) => Some(columns.clone()),
            _ => None,
        };
        // rows the change touched; `None`: the rows written (a Z-order reports them, as a sort does)
        let (table, rows): (_, Option<u64>) = match change {
            TableChange::Delete { predicate } => {
                let mut b = table
                    .delete()
                    .with_writer_properties(properties)
                    .with_session_state(session)
                    .with_commit_properties(staged_commit(&write_id));
                if let Some(p) = predicate {
                    b = b.with_predicate(p);
                }
                let (t, m) = b.await.map_err(|e| delta_err(name, e))?;
                (t, Some(m.num_deleted_rows.unwrap_or(0) as u64))
            }
            TableChange::Update {
                predicate,
                assignments,
            } => {
                let mut b = table
                    .update()
                    .with_writer_properties(properties)
                    .with_session_state(session)
                    .with_commit_properties(staged_commit(&write_id));
                if let Some(p) = predicate {
                    b = b.with_predicate(p);
                }
                for (col, expr) in assignments {
                    b = b.with_update(col, expr);
                }
                let (t, m) = b.await.map_err(|e| delta_err(name, e))?;
                (t, Some(m.num_updated_rows as u64))
            }
            TableChange::Rewrite {
                sort_by,
                bloom_filters,
            } => {
                // (the sort's columns are checked where it is planned)
                if sort_by.as_ref().is_some_and(Vec::is_empty) {
                    return Err(StoreError::invalid_input(
                        name,
                        "a sort needs at least one column",
                    ));
                }
                let bloom_filters = bloom_filters
                    .map(|cs| cs.into_iter().filter(|c| !c.is_empty()).collect::<Vec<_>>());
                if let Some(columns) = &bloom_filters {
                    check_columns(name, &schema, columns, "a Bloom filter column")?;
                }
                // without a new order the rows keep the one they are stored in
                // (a sort order is re-applied; otherwise files are read in turn)
                let order = sort_by.clone().unwrap_or_else(|| stored_sort_order(meta));
                let properties = match &bloom_filters {
                    Some(columns) => writer_properties(&schema, columns),
                    None => properties,
                };
                let mut written = self
                    .rewrite(
                        cx, meta, table, &staging, &dir, &write_id, &order, properties,
                    )
                    .await?;
                let kind_meta = &mut written.kind_meta;
                carry_table_meta(&meta.kind_meta, kind_meta, sort_by.is_none());
                match sort_by {
                    Some(columns) => kind_meta["sort_by"] = json!(columns),
                    None => {
                        if let Some(z) = meta.kind_meta.get("zorder") {
                            kind_meta["zorder"] = z.clone();
                        }
                    }
                }
                match bloom_filters {
                    Some(columns) if columns.is_empty() => {
                        if let Some(m) = kind_meta.as_object_mut() {
                            m.remove("bloom_filters");
                        }
                    }
                    Some(columns) => kind_meta["bloom_filters"] = json!(columns),
                    None => {}
                }
                let rows = kind_meta["rows"].as_u64().unwrap_or(0);
                return Ok((written, rows));
            }
            TableChange::Compact => {
                let (t, m) = table
                    .optimize()
                    .with_writer_properties(properties)
                    .with_session_state(session)
                    .with_commit_properties(staged_commit(&write_id))
                    .await
                    .map_err(|e| delta_err(name, e))?;
                (t, Some(m.num_files_removed))
            }
            TableChange::ZOrder(columns) => {
                if columns.is_empty() {
                    return Err(StoreError::invalid_input(
                        name,
                        "Z-order needs at least one column",
                    ));
                }
                check_columns(name, &schema, &columns, "a Z-order column")?;
                let (t, _) = table
                    .optimize()
                    .with_type(deltalake::operations::optimize::OptimizeType::ZOrder(
                        columns.clone(),
                    ))
                    .with_writer_properties(properties)
                    .with_session_state(session)
                    .with_commit_properties(staged_commit(&write_id))
                    .await
                    .map_err(|e| delta_err(name, e))?;
                (t, None)
            }
        };
        let mut written = finish_stage(cx.root, &dir, &table, &staging, &write_id).await?;
        carry_table_meta(&meta.kind_meta, &mut written.kind_meta, keeps_order);
        if let Some(columns) = zorder {
            written.kind_meta["zorder"] = json!(columns);
        }
        let rows = rows.unwrap_or_else(|| written.kind_meta["rows"].as_u64().unwrap_or(0));
        Ok((written, rows))
    }

    /// Stages the rows of version `meta`, as stored, rewritten in one
    /// overwrite commit: sorted by `sort_by` (when given), written with
    /// `properties`. The caller records what the rewrite changed.
    #[allow(clippy::too_many_arguments)]
    async fn rewrite(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        table: DeltaTable,
        staging: &StagingStore,
        dir: &Path,
        write_id: &str,
        sort_by: &[String],
        properties: parquet::file::properties::WriterProperties,
    ) -> Result<Written> {
        let name = meta.name.as_str();
        let current = table_provider(cx.root, cx.session, meta, self.scan).await?;
        let plan = datafusion::logical_expr::LogicalPlanBuilder::scan(
            "current",
            datafusion::datasource::provider_as_source(current),
            None,
        )
        .and_then(|b| b.build())
        .map_err(|e| StoreError::invalid_input(name, e))?;
        let plan = sorted(name, cx.session, plan, sort_by).await?;
        // one partition: the rows reach the writer in the order planned
        let session = write_session(cx.session, true);
        let builder = table.write(vec![]).with_save_mode(SaveMode::Overwrite);
        run_write(
            builder, properties, plan, session, write_id, cx.root, dir, staging, name,
        )
        .await
    }
}

/// The Arrow schema of `table`'s loaded version (of dataset `name`).
fn table_schema(name: &str, table: &DeltaTable) -> Result<arrow::datatypes::SchemaRef> {
    Ok(table
        .snapshot()
        .map_err(|e| delta_err(name, e))?
        .snapshot()
        .arrow_schema())
}

/// What a new version of a table keeps of the one it was made from: the
/// columns' original time zones, and the sort order if its rows still
/// follow it.
fn carry_table_meta(from: &Value, to: &mut Value, keeps_order: bool) {
    if let Some(z) = from.get("timezones") {
        to["timezones"] = z.clone();
    }
    if let Some(s) = from.get("sort_by").filter(|_| keeps_order) {
        to["sort_by"] = s.clone();
    }
    if let Some(b) = from.get("bloom_filters") {
        to["bloom_filters"] = b.clone();
    }
}

/// The session a write plans in. A sorted write runs in one partition:
/// otherwise DataFusion may repartition the sorted rows for the steps above
/// the sort (nothing above it asks for the order), and the writer would
/// interleave the partitions' batches in its files.
fn write_session(
    session: &SessionContext,
    sorted: bool,
) -> Arc<datafusion::execution::session_state::SessionState> {
    let mut state = session.state();
    if sorted {
        state.config_mut().options_mut().execution.target_partitions = 1;
    }
    Arc::new(state)
}

/// The sort order a table version records (`kind_meta.sort_by`).
fn stored_sort_order(meta: &Metadata) -> Vec<String> {
    recorded_columns(meta, "sort_by")
}

/// A list of column names a table version records in `kind_meta[key]`.
fn recorded_columns(meta: &Metadata, key: &str) -> Vec<String> {
    meta.kind_meta
        .get(key)
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `plan` sorted by `columns` (ascending, nulls last); a column the rows do
/// not have is a typed error naming it and the columns there are.
///
/// The sort runs here, and the write reads its output as a stream: a
/// `Sort` node handed to the writer's plan is dropped by its optimizer
/// (nothing above it asks for the order), so the files came out unsorted.
async fn sorted(
    name: &str,
    session: &SessionContext,
    plan: datafusion::logical_expr::LogicalPlan,
    columns: &[String],
) -> Result<datafusion::logical_expr::LogicalPlan> {
    if columns.is_empty() {
        return Ok(plan);
    }
    check_columns(name, plan.schema().inner(), columns, "a sort key")?;
    let keys = columns.iter().map(|c| {
        datafusion::logical_expr::Expr::Column(datafusion::common::Column::from_name(c))
            .sort(true, false)
    });
    let plan = datafusion::logical_expr::LogicalPlanBuilder::from(plan)
        .sort(keys)
        .and_then(|b| b.build())
        .map_err(|e| StoreError::invalid_input(name, e))?;
    let stream = datafusion::dataframe::DataFrame::new(session.state(), plan)
        .execute_stream()
        .await
        .map_err(|e| StoreError::invalid_input(name, e))?;
    Ok(object_to_plan(name, Object::Stream(stream), None)?.0)
}

/// Every one of `columns` is a column of `schema`; else a typed error naming
/// it (as `what`, e.g. "a sort key") and the columns there are.
fn check_columns(
    name: &str,
    schema: &arrow::datatypes::Schema,
    columns: &[String],
    what: &str,
) -> Result<()> {
    match columns.iter().find(|c| schema.field_with_name(c).is_err()) {
        None => Ok(()),
        Some(c) => {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(StoreError::invalid_input(
                name,
                format!(
                    "'{c}' cannot be {what}: no such column (columns: {})",
                    have.join(", ")
                ),
            ))
        }
    }
}

/// A CSV or JSON-lines file appended to a table is read with the table's
/// types for the columns the table has (inference from one file guesses
/// what the file shows — an empty column is `Null`, `007` is a number — not
/// what the table holds); its other columns are inferred (new columns, for
/// `merge_schema`). A value that does not parse as the table's type is a
/// typed error naming the file and line.
async fn with_table_types(root: &Root, table: &Metadata, obj: Object) -> Result<Object> {
    let Object::File {
        path,
        format: format @ (FileFormat::Csv | FileFormat::JsonLines),
        schema: None,
    } = obj
    else {
        return Ok(obj);
    };
    let file = super::ingest::infer_file_schema(&table.name, &path, format)?;
    let current = match location(table).map(|l| root.resolve(l)).transpose()? {
        Some(dir) => match open_table(root, &dir, delta_version(table)).await {
            Ok(t) => t.snapshot().map(|s| s.snapshot().arrow_schema()).ok(),
            // the write itself reports a table it cannot open
            Err(_) => None,
        },
        None => None,
    };
    let schema = current.map(|current| {
        let fields: Vec<Field> = file
            .fields()
            .iter()
            .map(|f| match current.field_with_name(f.name()) {
                Ok(t) => Field::new(f.name(), t.data_type().clone(), true),
                Err(_) => f.as_ref().clone(),
            })
            .collect();
        Arc::new(arrow::datatypes::Schema::new(fields))
    });
    Ok(Object::File {
        path,
        format,
        schema: Some(schema.unwrap_or(file)),
    })
}

/// Registers `table`'s object store with `session`'s runtime unless it has
/// one for that URL: what `update_datafusion_session` does, without the
/// copy of the whole session state (every function registry) that calling
/// it from a `SessionContext` takes — on every read of a cached version.
pub(crate) fn register_store(
    table: &DeltaTable,
    session: &SessionContext,
) -> deltalake::DeltaResult<()> {
    use deltalake::delta_datafusion::engine::AsObjectStoreUrl;
    let url = table.log_store().root_url().as_object_store_url();
    if session.runtime_env().object_store(&url).is_ok() {
        return Ok(());
    }
    table.update_datafusion_session(&session.state())
}

/// A DataFusion provider for the Delta version a record pins.
pub(crate) async fn table_provider(
    root: &Root,
    session: &SessionContext,
    meta: &Metadata,
    scan: TableScan,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let rel = location(meta).ok_or_else(|| StoreError::CorruptMetadata {
        name: meta.name.clone(),
        path: meta.uri.clone(),
        reason: format!("version {} records no table location", meta.version),
    })?;
    let dir = root.resolve(rel)?;
    let key = snapshot_key(root, meta)?.map(|(url, version)| (url, version, scan));
    if let Some((table, provider)) = key.as_ref().and_then(|k| provider_cache::get(k)) {
        register_store(&table, session).map_err(|e| StoreError::table(&meta.name, e))?;
        return Ok(provider);
    }
    let table = match open_table(root, &dir, delta_version(meta)).await {
        // a committed version whose entry a crash left staged: roll forward
        Err(_) if staged_copy(&meta.kind_meta).is_some() => {
            publish(root, meta).await?;
            open_table(root, &dir, delta_version(meta)).await
        }
        other => other,
    }
    .map_err(|e| match e {
        deltalake::DeltaTableError::NotATable(_)
        | deltalake::DeltaTableError::InvalidVersion(_) => StoreError::MissingData {
            name: meta.name.clone(),
            version: meta.version,
            path: format!("{dir}/_delta_log"),
        },
        e => StoreError::CorruptData {
            name: meta.name.clone(),
            path: dir.to_string(),
            reason: crate::store::error::one_line(&e.to_string()),
        },
    })?;
    register_store(&table, session).map_err(|e| StoreError::table(&meta.name, e))?;
    let store_url =
        ObjectStoreUrl::parse(root.base.as_str()).map_err(|e| StoreError::table(&meta.name, e))?;
    let provider = match scan {
        TableScan::Plain => {
            super::delta_scan::provider(&table, &store_url, &dir, Writer::Store).await
        }
        TableScan::DeltaRs => table.table_provider().await.map_err(Into::into),
    }
    .map_err(|e| StoreError::table(&meta.name, e))?;
    if let Some(k) = key {
        provider_cache::put(k, table, provider.clone());
    }
    Ok(provider)
}

/// `provider` (the scan of `meta`'s version), or the memory cache's batches
/// of that version when the session's cache holds the table (loaded now if
/// needed; see [`super::memory_cache`]).
async fn through_cache(
    root: &Root,
    session: &SessionContext,
    meta: &Metadata,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    match super::memory_cache::of(session).filter(|c| c.wants(meta)) {
        Some(cache) => match snapshot_key(root, meta)? {
            Some(source) => cache.provider(meta, source, provider, session).await,
            None => Ok(provider),
        },
        None => Ok(provider),
    }
}

/// The Delta table URL and version a record pins, when it pins one: what
/// identifies the version's data for good.
fn snapshot_key(root: &Root, meta: &Metadata) -> Result<Option<(String, u64)>> {
    let Some(rel) = location(meta) else {
        return Ok(None);
    };
    let dir = root.resolve(rel)?;
    Ok(delta_version(meta).map(|v| (root.dir_url_of(&dir).to_string(), v)))
}

/// Providers of Delta versions already opened in this process. A Delta
/// version never changes, so `(table URL, version)` identifies its snapshot
/// for good; reusing it saves replaying the log on every query.
mod provider_cache {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use deltalake::DeltaTable;

    type Key = (String, u64, super::TableScan);
    type Entry = (DeltaTable, Arc<dyn datafusion::catalog::TableProvider>);

    /// Snapshots kept (a snapshot holds the table's file list in memory).
    const CAPACITY: usize = 64;

    static CACHE: Mutex<VecDeque<(Key, Entry)>> = Mutex::new(VecDeque::new());

    pub fn get(key: &Key) -> Option<Entry> {
        let mut c = CACHE.lock().ok()?;
        let i = c.iter().position(|(k, _)| k == key)?;
        // most recently used at the back
        let item = c.remove(i)?;
        let entry = item.1.clone();
        c.push_back(item);
        Some(entry)
    }

    pub fn put(key: Key, table: DeltaTable, provider: Arc<dyn datafusion::catalog::TableProvider>) {
        if let Ok(mut c) = CACHE.lock() {
            c.retain(|(k, _)| k != &key);
            if c.len() >= CAPACITY {
                c.pop_front();
            }
            c.push_back((key, (table, provider)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_checkpoint_every_ten_versions_large_ones_every_hundred() {
        // Delta version v is published as the (v + 1)-th entry
        let due = |files: usize| -> Vec<u64> {
            (0..300)
                .filter(|&v| checkpoint_due(v, Some(files)))
                .collect()
        };
        assert_eq!(due(3)[..3], [9, 19, 29]);
        assert_eq!(due(SMALL_TABLE_FILES).len(), 30);
        assert_eq!(due(SMALL_TABLE_FILES + 1), [99, 199, 299]);
        // a count that could not be read keeps Delta's default
        let unknown: Vec<u64> = (0..300).filter(|&v| checkpoint_due(v, None)).collect();
        assert_eq!(unknown, [99, 199, 299]);
    }
}
