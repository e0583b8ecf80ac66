//! The backend contract: what a put stores ([`Object`]), what a get returns
//! ([`Data`]), the options of both, and the [`DataBackend`] trait every
//! kind-specific backend implements. The store calls backends only through
//! this trait; the implementations live in the `backends` module (and in any
//! layer above that registers its own kinds, as `models` does).

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::stream::BoxStream;
use object_store::path::Path;
use serde_json::{Map, Value};

use super::error::{Result, StoreError};
use super::{Metadata, ObjectName, Root};

/// The format of a file given to `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Parquet,
    /// Newline-delimited JSON records: a table.
    JsonLines,
    /// One JSON value: a document.
    Json,
    /// Opaque bytes.
    Raw,
}

impl FileFormat {
    /// Guesses the format from a file extension.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" | "tsv" => FileFormat::Csv,
            "parquet" | "pq" => FileFormat::Parquet,
            "jsonl" | "ndjson" => FileFormat::JsonLines,
            "json" => FileFormat::Json,
            _ => FileFormat::Raw,
        })
    }
}

impl std::str::FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "csv" => FileFormat::Csv,
            "parquet" => FileFormat::Parquet,
            "jsonl" | "ndjson" => FileFormat::JsonLines,
            "json" => FileFormat::Json,
            "raw" => FileFormat::Raw,
            other => {
                return Err(format!(
                    "unknown format '{other}': use csv, parquet, json, jsonl or raw"
                ));
            }
        })
    }
}

/// The format of an external table location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalFormat {
    Parquet,
    Csv,
    Json,
    Delta,
}

/// Something to store.
pub enum Object {
    /// Arrow batches with their schema (the schema survives when there are no rows).
    Table {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A stream of batches, written without being collected first.
    Stream(SendableRecordBatchStream),
    /// A local file; CSV, Parquet and JSON lines become tables, JSON a
    /// document, raw bytes a file. `schema` overrides inference (CSV, JSON lines).
    File {
        path: PathBuf,
        format: FileFormat,
        schema: Option<SchemaRef>,
    },
    /// Bytes in memory, stored as a raw file.
    Bytes(Bytes),
    /// A JSON document.
    Document(Value),
    /// A location read in place.
    External { url: String, format: ExternalFormat },
    /// Anything else, for user backends (matched with `supports`).
    Any(Box<dyn Any + Send + Sync>),
}

impl Object {
    /// A table from batches; all batches must share the schema of the first.
    pub fn from_batches(batches: Vec<RecordBatch>) -> Result<Self> {
        let schema = batches.first().map(|b| b.schema()).ok_or_else(|| {
            StoreError::invalid_input(
                "<batches>",
                "no batches given; use Object::Table with a schema to store an empty table",
            )
        })?;
        Ok(Object::Table { schema, batches })
    }

    /// A short description for error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Object::Table { .. } => "a table",
            Object::Stream(_) => "a batch stream",
            Object::File { .. } => "a file",
            Object::Bytes(_) => "bytes",
            Object::Document(_) => "a document",
            Object::External { .. } => "an external location",
            Object::Any(_) => "a custom object",
        }
    }
}

impl From<RecordBatch> for Object {
    fn from(b: RecordBatch) -> Self {
        Object::Table {
            schema: b.schema(),
            batches: vec![b],
        }
    }
}

impl From<Bytes> for Object {
    fn from(b: Bytes) -> Self {
        Object::Bytes(b)
    }
}

impl From<Value> for Object {
    fn from(v: Value) -> Self {
        Object::Document(v)
    }
}

/// What `get` returns.
pub enum Data {
    /// A lazy DataFusion frame (projection, filter and limit already applied).
    Table(DataFrame),
    Document(Value),
    /// A byte stream and its length.
    File {
        size: u64,
        stream: BoxStream<'static, Result<Bytes>>,
    },
    Any(Box<dyn Any + Send + Sync>),
}

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutMode {
    /// Append to an existing table; replace other kinds (a new version).
    #[default]
    Auto,
    /// Append rows (tables only).
    Append,
    /// Replace the contents.
    Overwrite,
    /// Fail if the name exists.
    Error,
}

impl std::str::FromStr for PutMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => PutMode::Auto,
            "append" => PutMode::Append,
            "overwrite" => PutMode::Overwrite,
            "error" => PutMode::Error,
            other => {
                return Err(format!(
                    "unknown mode '{other}': use append, overwrite or error"
                ));
            }
        })
    }
}

/// Options of a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub mode: PutMode,
    /// Store with this kind's backend instead of the first that supports the object.
    pub kind: Option<String>,
    /// Add new (nullable) columns on append instead of failing.
    pub merge_schema: bool,
    /// `None` keeps the previous attributes, `{}` resets, otherwise merged.
    pub attributes: Option<Map<String, Value>>,
    /// Reports bytes read of file inputs.
    pub progress: Option<indicatif::ProgressBar>,
    /// Commit only on top of this version (0: the name does not exist or
    /// was dropped); otherwise fail with [`StoreError::Conflict`] instead of
    /// rebasing. A read-modify-write (a policy edit) retries on a conflict,
    /// so that two concurrent edits both land.
    pub if_head: Option<u64>,
    /// Tables: write the rows sorted by these columns (ascending, nulls
    /// last) and keep it as the table's sort order, which later appends
    /// without their own follow too. Row groups and files then hold narrow
    /// ranges of the leading column, so range and equality filters on it
    /// prune them. The order rows are written in, not an order of query
    /// results (use `ORDER BY`).
    pub sort_by: Vec<String>,
    /// Tables: write a Bloom filter for each of these columns in every row
    /// group, kept for later appends without their own (like `sort_by`). An
    /// equality filter (`WHERE col = v`, `IN`) then skips row groups that
    /// do not hold `v` even where min/max statistics cannot tell.
    pub bloom_filters: Vec<String>,
}

/// Options of a get (tables).
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    pub columns: Option<Vec<String>>,
    /// A SQL expression over the table's columns, e.g. `fare > 10 AND vendor = 'A'`.
    pub filter: Option<String>,
    pub limit: Option<usize>,
}

/// Everything a backend needs to know about where it works.
pub struct BackendContext<'a> {
    pub root: &'a Root,
    pub name: &'a ObjectName,
    /// Directory for this object's data; write under fresh names only.
    pub data_dir: Path,
    pub session: &'a SessionContext,
    /// Bucket and store prefix the object lives in.
    pub bucket: &'a str,
    pub prefix: &'a str,
    /// Hooks every table write must pass through.
    pub hooks: &'a super::hooks::Hooks,
}

impl BackendContext<'_> {
    /// A frame scanning `provider` under the name `omega.<bucket>.<name>`,
    /// so that read rewrites (mixins) recognise the dataset in every plan.
    pub fn named_scan(
        &self,
        provider: Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<DataFrame> {
        let reference = datafusion::common::TableReference::full(
            super::CATALOG_NAME,
            self.bucket,
            self.name.as_str(),
        );
        let plan = datafusion::logical_expr::LogicalPlanBuilder::scan(
            reference,
            datafusion::datasource::provider_as_source(provider),
            None,
        )
        .and_then(|b| b.build())
        .map_err(|e| StoreError::table(self.name, e))?;
        Ok(DataFrame::new(self.session.state(), plan))
    }

    /// The target description write hooks see.
    pub fn write_target(&self) -> super::hooks::WriteTarget {
        super::hooks::WriteTarget {
            bucket: self.bucket.to_string(),
            prefix: self.prefix.to_string(),
            name: self.name.to_string(),
        }
    }
}

/// What a backend wrote: the store records it as the new version.
#[derive(Debug, Clone)]
pub struct Written {
    pub kind: String,
    pub uri: String,
    pub kind_meta: Value,
}

/// A storage backend for one or more kinds.
///
/// Contract: `put` never modifies data that a committed version references;
/// it writes under fresh paths in `data_dir` (or commits through a log that is
/// itself atomic, as Delta does) and returns what to record. Until the store
/// commits the record, nothing the backend wrote is visible.
#[async_trait]
pub trait DataBackend: Send + Sync + 'static {
    /// The kinds this backend owns (what `meta.kind` selects on get).
    fn kinds(&self) -> Vec<String>;

    /// Whether a put of `obj` with no explicit kind should use this backend.
    fn supports(&self, obj: &Object) -> bool;

    /// Whether `put` honours the row layout options ([`PutOptions::sort_by`],
    /// [`PutOptions::bloom_filters`]). The store refuses a put that gives
    /// them to a backend that does not, rather than let them be ignored.
    fn lays_out_rows(&self) -> bool {
        false
    }

    /// Writes `obj`; `previous` is the current version, if any.
    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        previous: Option<&Metadata>,
        opts: &PutOptions,
    ) -> Result<Written>;

    /// Reads a version.
    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        opts: &GetOptions,
    ) -> Result<Data>;

    /// Another writer committed `latest` before `written` could be committed.
    /// Return what to commit at the next version instead, or `None` when the
    /// write cannot be rebased (the store reports a conflict). The default
    /// suits replace semantics: the write simply becomes the newer version.
    async fn rebase(
        &self,
        _cx: &BackendContext<'_>,
        written: Written,
        _latest: &Metadata,
    ) -> Result<Option<Written>> {
        Ok(Some(written))
    }

    /// The store committed `meta`'s record: make what the write staged
    /// visible outside the store (the table backend publishes its Delta
    /// log entry). Best effort and idempotent: `get` and the next write
    /// must finish the job themselves if this never ran (a crash).
    async fn committed(&self, _cx: &BackendContext<'_>, _meta: &Metadata) {}

    /// Removes the data the given (no longer referenced) versions point at.
    /// The default removes the one file each records at `kind_meta.path`
    /// (what [`write_new_file`] wrote); already missing is fine.
    async fn drop_data(&self, cx: &BackendContext<'_>, versions: &[Metadata]) -> Result<()> {
        delete_recorded(
            cx,
            versions.iter().map(|m| &m.kind_meta),
            "path",
            Recorded::File,
        )
        .await
    }

    /// Removes data that was written but will never be committed (best
    /// effort). The default removes the file at `kind_meta.path`.
    async fn discard(&self, cx: &BackendContext<'_>, written: &Written) {
        let _ = delete_recorded(
            cx,
            std::iter::once(&written.kind_meta),
            "path",
            Recorded::File,
        )
        .await;
    }

    /// The data files or directories `meta` references, relative to the
    /// root (as [`Root::resolve`] takes them); garbage collection keeps
    /// everything under them. `None` (the default): this backend cannot say,
    /// so the collector keeps all of the object's data.
    fn referenced(&self, _meta: &Metadata) -> Option<Vec<String>> {
        None
    }

    /// Removes data inside the referenced locations of `live` (all the live
    /// versions of one object of this backend's kinds) that none of them
    /// needs and that is older than `cutoff` (younger files may belong to a
    /// write in flight); returns the files removed and their sizes. The
    /// default removes nothing (one file per version needs no pruning).
    async fn prune(
        &self,
        _cx: &BackendContext<'_>,
        _live: &[Metadata],
        _cutoff: chrono::DateTime<chrono::Utc>,
        _dry_run: bool,
    ) -> Result<Vec<(Path, u64)>> {
        Ok(vec![])
    }

    /// Applies a row-level `change` on top of the version `meta` and returns
    /// what to commit as the next version with the number of rows (or, for
    /// a compaction, files) changed. Like `put`, nothing it writes is
    /// visible until the store commits the record. `None` (the default):
    /// this kind has no row-level changes.
    async fn change(
        &self,
        _cx: &BackendContext<'_>,
        _meta: &Metadata,
        _change: TableChange,
    ) -> Result<Option<(Written, u64)>> {
        Ok(None)
    }
}

/// A row-level change of a table (see [`DataBackend::change`]).
#[derive(Debug, Clone)]
pub enum TableChange {
    /// Delete the rows matching the predicate (all rows when `None`).
    Delete {
        predicate: Option<datafusion::logical_expr::Expr>,
    },
    /// Set columns to expressions on the rows matching the predicate.
    Update {
        predicate: Option<datafusion::logical_expr::Expr>,
        assignments: Vec<(String, datafusion::logical_expr::Expr)>,
    },
    /// Rewrite small files (many appends) into files of about 100 MB; the
    /// rows are unchanged. Reports the files removed.
    Compact,
    /// Rewrite the rows in one new version, the rows unchanged: sorted by
    /// `sort_by` and kept as the table's sort order (see
    /// [`PutOptions::sort_by`]; appends follow it, a Z-order record is
    /// dropped), and with Bloom filters on `bloom_filters` (empty: without
    /// any), recorded so that later writes add them too (see
    /// [`PutOptions::bloom_filters`]). A field left `None` keeps what the
    /// table has: its stored sort order (otherwise files are read one after
    /// another) and Z-order record, or its Bloom filter columns. Reports the
    /// rows written. [`TableChange::sort`] and [`TableChange::bloom`] set one.
    Rewrite {
        sort_by: Option<Vec<String>>,
        bloom_filters: Option<Vec<String>>,
    },
    /// Rewrite the rows clustered along a Z-order curve of these columns
    /// (delta-rs's Z-order optimize): each file then holds narrow ranges of
    /// every one of them, so filters on any of them skip files, where a sort
    /// helps mostly its leading column. Drops a stored sort order; appends do
    /// not follow it. Reports the rows written.
    ZOrder(Vec<String>),
}

impl TableChange {
    /// Rewrite the rows sorted by `columns`, kept as the sort order.
    pub fn sort(columns: Vec<String>) -> Self {
        TableChange::Rewrite {
            sort_by: Some(columns),
            bloom_filters: None,
        }
    }

    /// Rewrite the rows, in their stored order, with Bloom filters on
    /// `columns` (none: without any).
    pub fn bloom(columns: Vec<String>) -> Self {
        TableChange::Rewrite {
            sort_by: None,
            bloom_filters: Some(columns),
        }
    }
}

/// The relative paths `meta` records at the `kind_meta` keys given (for
/// [`DataBackend::referenced`]).
pub fn recorded_paths(meta: &Metadata, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| meta.kind_meta.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// What a `kind_meta` key records: one file, or a directory (a table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    File,
    Dir,
}

/// Deletes the files or directories that `kind_meta.<key>` of each version
/// records (relative to the root), each once; already missing is fine (a
/// drop that crashed half way is run again).
pub async fn delete_recorded(
    cx: &BackendContext<'_>,
    kind_metas: impl Iterator<Item = &Value>,
    key: &str,
    what: Recorded,
) -> Result<()> {
    let mut rels: Vec<&str> = kind_metas
        .filter_map(|m| m.get(key).and_then(Value::as_str))
        .collect();
    rels.sort_unstable();
    rels.dedup();
    for rel in rels {
        let path = cx.root.resolve(rel)?;
        match what {
            Recorded::Dir => {
                delete_prefix(cx.root, &path).await?;
            }
            Recorded::File => {
                use object_store::ObjectStoreExt;
                match cx.root.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(StoreError::object_store(&path, e)),
                }
            }
        }
    }
    Ok(())
}

/// Writes `body` as a new file `<uuid>.<ext>` in the object's data
/// directory, put-if-absent (never over existing data); returns its path.
pub async fn write_new_file(cx: &BackendContext<'_>, ext: &str, body: Vec<u8>) -> Result<Path> {
    let path = cx
        .data_dir
        .clone()
        .join(format!("{}.{ext}", uuid::Uuid::new_v4()));
    let opts = object_store::PutOptions {
        mode: object_store::PutMode::Create,
        ..Default::default()
    };
    cx.root
        .store
        .put_opts(
            &path,
            object_store::PutPayload::from(Bytes::from(body)),
            opts,
        )
        .await
        .map_err(|e| StoreError::object_store(&path, e))?;
    Ok(path)
}

/// Deletes everything under `dir` (already-missing files are fine); returns
/// how many objects were found there.
pub async fn delete_prefix(root: &Root, dir: &Path) -> Result<usize> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let listed: Vec<_> = root
        .store
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(|e| StoreError::object_store(dir, e))?;
    let found = listed.len();
    for m in listed {
        match root.store.delete(&m.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StoreError::object_store(&m.location, e)),
        }
    }
    Ok(found)
}

/// Applies column projection, filter and limit; DataFusion pushes them into
/// the Parquet scan (row groups and pages pruned by statistics).
pub fn apply_options(
    name: &str,
    mut df: datafusion::dataframe::DataFrame,
    opts: &GetOptions,
) -> Result<datafusion::dataframe::DataFrame> {
    let bad = |e: datafusion::error::DataFusionError| StoreError::invalid_input(name, e);
    if let Some(filter) = &opts.filter {
        let expr = df.parse_sql_expr(filter).map_err(bad)?;
        df = df.filter(expr).map_err(bad)?;
    }
    if let Some(cols) = &opts.columns {
        let schema = df.schema().clone();
        let missing: Vec<&String> = cols
            .iter()
            .filter(|c| schema.field_with_unqualified_name(c).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::invalid_input(
                name,
                format!(
                    "no column {} (columns: {})",
                    missing
                        .iter()
                        .map(|c| format!("'{c}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
        df = df.select_columns(&cols).map_err(bad)?;
    }
    if let Some(limit) = opts.limit {
        df = df.limit(0, Some(limit)).map_err(bad)?;
    }
    Ok(df)
}

/// Collects a file's stream into memory (for small files and tests).
pub async fn collect_bytes(data: Data) -> Result<Bytes> {
    match data {
        Data::File { stream, .. } => {
            let parts: Vec<Bytes> = futures::TryStreamExt::try_collect(stream).await?;
            Ok(Bytes::from(parts.concat()))
        }
        _ => Err(StoreError::invalid_input("<data>", "not a file")),
    }
}
