//! Turns what a user gives to `put` (batches, streams, CSV/Parquet/JSON-lines
//! files) into one DataFusion logical plan that streams the rows, so a writer
//! never needs the whole input in memory.
//!
//! Files are read with arrow's own readers on a blocking thread; the batches
//! flow through a small bounded channel, which is what keeps memory bounded.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;

use super::csv_split::{self, CsvLayout};
use super::json_lines_split;
use super::split::{self, Split};
use crate::store::backend::{FileFormat, Object};
use crate::store::error::{Result, StoreError};

/// Rows per batch read from files.
pub const BATCH_ROWS: usize = 64 * 1024;
/// Rows used to infer a CSV or JSON-lines schema.
pub const INFER_ROWS: usize = 10_000;
/// Bytes after which inference takes no further rows (it reads to the end
/// of the record there, at most [`split::MAX_RECORD_BYTES`] more), so a
/// file that is not what its name says is not read whole.
const INFER_BYTES: u64 = 16 << 20;

/// A plan producing the rows of `obj`, and their schema.
pub fn object_to_plan(
    name: &str,
    obj: Object,
    progress: Option<indicatif::ProgressBar>,
) -> Result<(LogicalPlan, SchemaRef)> {
    let (schema, provider): (SchemaRef, Arc<dyn datafusion::catalog::TableProvider>) = match obj {
        Object::Table { schema, batches } => {
            if let Some(b) = batches.iter().find(|b| b.schema() != schema) {
                return Err(StoreError::SchemaMismatch {
                    name: name.to_string(),
                    details: format!(
                        "batches have different schemas: {} vs {}",
                        describe_schema(&schema),
                        describe_schema(&b.schema())
                    ),
                });
            }
            let mem = MemTable::try_new(schema.clone(), vec![batches])
                .map_err(|e| StoreError::invalid_input(name, e))?;
            (schema, Arc::new(mem))
        }
        Object::Stream(stream) => {
            let schema = stream.schema();
            (schema.clone(), streaming_table(schema, stream)?)
        }
        Object::File {
            path,
            format,
            schema,
        } => {
            let stream = read_file(name, &path, format, schema, progress)?;
            let schema = stream.schema();
            (schema.clone(), streaming_table(schema, stream)?)
        }
        other => {
            return Err(StoreError::invalid_input(
                name,
                format!("{} is not a table", other.describe()),
            ));
        }
    };
    let plan = LogicalPlanBuilder::scan("input", provider_as_source(provider), None)
        .and_then(|b| b.build())
        .map_err(|e| StoreError::invalid_input(name, e))?;
    Ok((plan, schema))
}

fn streaming_table(
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let part = OnceStream {
        schema: schema.clone(),
        stream: Mutex::new(Some(stream)),
    };
    let table = StreamingTable::try_new(schema, vec![Arc::new(part)])
        .map_err(|e| StoreError::invalid_input("<stream>", e))?;
    Ok(Arc::new(table))
}

/// A partition that hands out its stream once; a second execution is an error
/// (a stream cannot be replayed).
struct OnceStream {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnceStream")
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(s) => s,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Execution(
                        "an input stream can be read only once".into(),
                    ))
                }),
            )),
        }
    }
}

fn open(path: &FsPath) -> Result<File> {
    File::open(path).map_err(|e| StoreError::io(path, e))
}

/// Opens a text file positioned after its UTF-8 byte-order mark, when it
/// starts with one (Windows editors write it; a reader would take it for
/// data: a JSON reader fails on it, a CSV reader makes it part of the first
/// column's name).
fn open_text(path: &FsPath) -> Result<File> {
    use std::io::{Seek, SeekFrom};
    let mut file = open(path)?;
    let mut head = Vec::with_capacity(3);
    (&mut file)
        .take(3)
        .read_to_end(&mut head)
        .map_err(|e| StoreError::io(path, e))?;
    if head != b"\xef\xbb\xbf" {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| StoreError::io(path, e))?;
    }
    Ok(file)
}

/// The schema a file would be read with (inferred unless given).
pub fn infer_file_schema(name: &str, path: &FsPath, format: FileFormat) -> Result<SchemaRef> {
    let bad = |e: &dyn std::fmt::Display| {
        StoreError::invalid_input(name, format!("cannot read {}: {e}", path.display()))
    };
    let text_schema = |schema: arrow::datatypes::Schema, what: &str| {
        if schema.fields().is_empty() {
            return Err(bad(&format!(
                "it has no columns (the file is empty or blank); put a file with {what}"
            )));
        }
        check_column_names(&schema).map_err(|e| bad(&e))?;
        Ok(Arc::new(schema))
    };
    match format {
        FileFormat::Csv => {
            let ends = csv_split::Quotes::new(csv_delimiter(path));
            let span = inference_span(open_text(path)?, ends).map_err(|e| bad(&e))?;
            let (schema, _) = csv_format(path)
                .infer_schema(
                    BufReader::new(open_text(path)?).take(span),
                    Some(INFER_ROWS),
                )
                .map_err(|e| bad(&e))?;
            text_schema(schema, "a header row")
        }
        FileFormat::JsonLines => {
            // Values read as one stream, as the reader will read them (a
            // value may span lines) and with line numbers counted from the
            // top of the file; arrow's own inference parses line by line and
            // names "line 1" for an error on any line.
            let span = inference_span(open_text(path)?, json_lines_split::Nesting::new())
                .map_err(|e| bad(&e))?;
            let reader = BufReader::new(open_text(path)?).take(span);
            let values = serde_json::Deserializer::from_reader(reader)
                .into_iter::<serde_json::Value>()
                .take(INFER_ROWS)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(&format!("not valid JSON: {e}")))?;
            let schema =
                arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                    .map_err(|e| bad(&e))?;
            text_schema(schema, "at least one record")
        }
        FileFormat::Parquet => {
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open(path)?)
                    .map_err(|e| bad(&e))?;
            Ok(builder.schema().clone())
        }
        FileFormat::Json | FileFormat::Raw => Err(StoreError::invalid_input(
            name,
            "JSON documents and raw files have no table schema",
        )),
    }
}

/// The bytes of a text file that schema inference reads: whole
/// records, as `ends` cuts them, up to [`INFER_BYTES`] (see
/// [`split::whole_records`]).
fn inference_span(file: File, ends: impl split::RecordEnds) -> std::result::Result<u64, String> {
    split::whole_records(file, ends, INFER_BYTES, split::MAX_RECORD_BYTES)
}

/// Column names a table can hold: none empty, none twice when case is
/// ignored (Delta compares names so; its own error would come after the
/// file was read and name neither column).
fn check_column_names(schema: &arrow::datatypes::Schema) -> std::result::Result<(), String> {
    let mut seen = std::collections::HashMap::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if f.name().trim().is_empty() {
            return Err(format!(
                "column {} has no name; name every column and put the file again",
                i + 1
            ));
        }
        if let Some(first) = seen.insert(f.name().to_lowercase(), f.name()) {
            return Err(format!(
                "columns '{first}' and '{}' have the same name (names are compared ignoring case); rename one and put the file again",
                f.name()
            ));
        }
    }
    Ok(())
}

fn csv_delimiter(path: &FsPath) -> u8 {
    let tsv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    if tsv { b'\t' } else { b',' }
}

fn csv_format(path: &FsPath) -> arrow::csv::reader::Format {
    arrow::csv::reader::Format::default()
        .with_header(true)
        .with_delimiter(csv_delimiter(path))
}

/// Streams a CSV, JSON-lines or Parquet file as batches.
pub fn read_file(
    name: &str,
    path: &FsPath,
    format: FileFormat,
    schema: Option<SchemaRef>,
    progress: Option<indicatif::ProgressBar>,
) -> Result<SendableRecordBatchStream> {
    let schema = match schema {
        Some(s) => s,
        None => infer_file_schema(name, path, format)?,
    };
    let object = name.to_string();
    let path: PathBuf = path.to_path_buf();
    // Opened here so that a missing file fails the put at once.
    let file = match format {
        FileFormat::Csv | FileFormat::JsonLines => open_text(&path)?,
        _ => open(&path)?,
    };
    let reader_schema = schema.clone();
    let what = format!("reading {}", path.display());
    Ok(blocking_batches(name, &what, schema, move |send| {
        let context = |e: &dyn std::fmt::Display| {
            DataFusionError::External(Box::new(StoreError::invalid_input(
                &object,
                format!("cannot read {}: {e}", path.display()),
            )))
        };
        let batches: Box<dyn Iterator<Item = datafusion::error::Result<RecordBatch>>> = match format
        {
            // text formats are parsed on all cores and send their batches themselves
            FileFormat::Csv => {
                let layout = CsvLayout {
                    delimiter: csv_delimiter(&path),
                    header: true,
                    batch_rows: BATCH_ROWS,
                };
                let (split, on_read) = (Split::all_cores(), read_progress(&progress));
                let send = &mut |b: Result<RecordBatch, String>| send(b.map_err(|m| context(&m)));
                csv_split::parse(file, reader_schema, layout, split, &on_read, send);
                return;
            }
            FileFormat::JsonLines => {
                let (split, on_read) = (Split::all_cores(), read_progress(&progress));
                let send = &mut |b: Result<RecordBatch, String>| send(b.map_err(|m| context(&m)));
                json_lines_split::parse(file, reader_schema, BATCH_ROWS, split, &on_read, send);
                return;
            }
            FileFormat::Parquet => {
                match parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
                {
                    // Parquet is read by row group, not as a byte stream: the
                    // progress bar shows elapsed time only.
                    Ok(r) => Box::new(r.map(move |b| b.map_err(|e| context(&e)))),
                    Err(e) => Box::new(std::iter::once(Err(context(&e)))),
                }
            }
            FileFormat::Json | FileFormat::Raw => Box::new(std::iter::once(Err(context(
                &"this format is not a table; store it as a document or raw file",
            )))),
        };
        for b in batches {
            let stop = b.is_err();
            if !send(b) || stop {
                break;
            }
        }
    }))
}

/// Advances `progress` (when shown) by the bytes of each block read.
fn read_progress(progress: &Option<indicatif::ProgressBar>) -> impl Fn(u64) + Sync + '_ {
    move |n| {
        if let Some(p) = progress {
            p.inc(n);
        }
    }
}

/// A stream of the batches `produce` sends from a blocking thread. The
/// stream ends only when `produce` returns: if it panics, the stream's last
/// item is an error, so a write consuming it fails instead of committing
/// the rows read so far as if they were all. `send` returns false when the
/// consumer has gone.
pub fn blocking_batches<F>(
    name: &str,
    what: &str,
    schema: SchemaRef,
    produce: F,
) -> SendableRecordBatchStream
where
    F: FnOnce(&mut dyn FnMut(datafusion::error::Result<RecordBatch>) -> bool) + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<datafusion::error::Result<RecordBatch>>(2);
    let handle = tokio::task::spawn_blocking(move || {
        let mut send = |b| tx.blocking_send(b).is_ok();
        produce(&mut send);
    });
    let (name, what) = (name.to_string(), what.to_string());
    let ended = futures::stream::once(async move {
        match handle.await {
            Ok(()) => None,
            Err(e) => Some(Err(DataFusionError::External(Box::new(
                StoreError::invalid_input(
                    name,
                    format!(
                        "{what} failed ({e}); nothing was stored, fix the input and put it again"
                    ),
                ),
            )))),
        }
    })
    .filter_map(futures::future::ready);
    let stream = tokio_stream_from(rx).chain(ended);
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// `a: Int64, b: Utf8?` — for error messages.
pub fn describe_schema(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{}: {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " NOT NULL" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
