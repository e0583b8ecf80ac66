//! Writing query and get results: a pretty table for people, CSV, JSON,
//! JSON lines or Parquet for programs, to stdout or to a file (written to a
//! temporary file and renamed, so a file is never left half-written).

use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::TryStreamExt;

use super::CliError;
use crate::store::objects::temp_beside;

/// Output formats of `get` (and later `sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    Table,
    Csv,
    Json,
    Jsonl,
    Parquet,
    /// Arrow IPC file.
    Arrow,
}

impl OutFormat {
    /// The format a file name suggests (CSV when unknown).
    pub fn from_extension(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("parquet") => OutFormat::Parquet,
            Some("json") => OutFormat::Json,
            Some("jsonl") | Some("ndjson") => OutFormat::Jsonl,
            Some("arrow") | Some("ipc") | Some("feather") => OutFormat::Arrow,
            _ => OutFormat::Csv,
        }
    }
}

/// Rows shown by the `table` format (the rest is counted, not printed).
pub const TABLE_ROWS: usize = 100;

enum Sink {
    Csv(arrow::csv::Writer<Box<dyn Write + Send>>),
    Json(arrow::json::ArrayWriter<Box<dyn Write + Send>>),
    Jsonl(arrow::json::LineDelimitedWriter<Box<dyn Write + Send>>),
    Parquet(parquet::arrow::ArrowWriter<Box<dyn Write + Send>>),
    Arrow(arrow::ipc::writer::FileWriter<Box<dyn Write + Send>>),
    Table(Vec<RecordBatch>, usize),
}

/// Streams `df` in `format` to `out` (stdout when `None`); returns the row count.
pub async fn write_frame(
    df: DataFrame,
    format: OutFormat,
    out: Option<&Path>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<u64, CliError> {
    let schema = df.schema().inner().clone();
    let tmp: Option<PathBuf> = out.map(temp_beside);
    let writer: Box<dyn Write + Send> = match &tmp {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| CliError::io(p, e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut sink = match format {
        OutFormat::Csv => Sink::Csv(arrow::csv::Writer::new(writer)),
        // Nulls are written as `null`, not dropped, so every row has every key.
        OutFormat::Json => Sink::Json(
            arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build(writer),
        ),
        OutFormat::Jsonl => Sink::Jsonl(
            arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build(writer),
        ),
        OutFormat::Parquet => Sink::Parquet(parquet::arrow::ArrowWriter::try_new(
            writer,
            schema.clone(),
            None,
        )?),
        OutFormat::Arrow => Sink::Arrow(arrow::ipc::writer::FileWriter::try_new(writer, &schema)?),
        OutFormat::Table => Sink::Table(Vec::new(), 0),
    };
    let result: Result<u64, CliError> = async {
        let mut stream = df.execute_stream().await?;
        let mut rows = 0u64;
        while let Some(batch) = stream.try_next().await? {
            rows += batch.num_rows() as u64;
            if let Some(p) = progress {
                p.inc(batch.num_rows() as u64);
            }
            match &mut sink {
                Sink::Csv(w) => w.write(&batch)?,
                Sink::Json(w) => w.write(&batch)?,
                Sink::Jsonl(w) => w.write(&batch)?,
                Sink::Parquet(w) => w.write(&batch)?,
                Sink::Arrow(w) => w.write(&batch)?,
                Sink::Table(kept, n) => {
                    if *n < TABLE_ROWS {
                        let take = (TABLE_ROWS - *n).min(batch.num_rows());
                        kept.push(batch.slice(0, take));
                        *n += take;
                    }
                }
            }
        }
        match sink {
            Sink::Csv(mut w) => {
                if rows == 0 {
                    // the header, so an empty result still names its columns
                    w.write(&RecordBatch::new_empty(schema.clone()))?;
                }
                w.into_inner().flush().map_err(|e| CliError::io("<output>", e))?
            }
            Sink::Json(mut w) => {
                w.finish()?;
                w.into_inner().flush().map_err(|e| CliError::io("<output>", e))?
            }
            Sink::Jsonl(mut w) => {
                w.finish()?;
                w.into_inner().flush().map_err(|e| CliError::io("<output>", e))?
            }
            Sink::Parquet(w) => {
                w.close()?;
            }
            Sink::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()?.flush().map_err(|e| CliError::io("<output>", e))?
            }
            Sink::Table(kept, shown) => {
                let text = if kept.is_empty() {
                    arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema)])?
                } else {
                    arrow::util::pretty::pretty_format_batches(&kept)?
                };
                let mut w = writer_for_table(tmp.as_deref())?;
                writeln!(w, "{text}").map_err(|e| CliError::io("<output>", e))?;
                if rows > shown as u64 {
                    writeln!(
                        w,
                        "({shown} of {rows} rows shown; use --limit, --format csv or -o FILE for all)"
                    )
                    .map_err(|e| CliError::io("<output>", e))?;
                } else {
                    writeln!(w, "({rows} rows)").map_err(|e| CliError::io("<output>", e))?;
                }
                w.flush().map_err(|e| CliError::io("<output>", e))?;
            }
        }
        Ok(rows)
    }
    .await;
    match (result, &tmp, out) {
        (Ok(rows), Some(tmp), Some(out)) => {
            std::fs::rename(tmp, out).map_err(|e| CliError::io(out, e))?;
            Ok(rows)
        }
        (Ok(rows), _, _) => Ok(rows),
        (Err(e), Some(tmp), _) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
        (Err(e), None, _) => Err(e),
    }
}

fn writer_for_table(tmp: Option<&Path>) -> Result<Box<dyn Write>, CliError> {
    Ok(match tmp {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| CliError::io(p, e))?),
        None => Box::new(std::io::stdout().lock()),
    })
}
