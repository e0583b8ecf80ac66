//! Result formats of the HTTP API, streamed: each batch is encoded as it
//! arrives and sent as a chunk, so no answer is held in memory whole. A
//! client that disconnects drops the body, which stops the encoding task
//! and with it the query.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use axum::body::Body;
use bytes::Bytes;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// A response format, chosen from the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    pub const ARROW: &'static str = "application/vnd.apache.arrow.stream";
    pub const PARQUET: &'static str = "application/vnd.apache.parquet";

    /// The first supported type in `accept` (JSON when absent or `*/*`);
    /// `None` when nothing acceptable is offered (406).
    pub fn from_accept(accept: Option<&str>) -> Option<Format> {
        let Some(accept) = accept else {
            return Some(Format::Json);
        };
        for part in accept.split(',') {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let format = match media.as_str() {
                "application/json" | "*/*" | "application/*" => Format::Json,
                "text/csv" | "text/*" => Format::Csv,
                Self::ARROW => Format::Arrow,
                Self::PARQUET => Format::Parquet,
                _ => continue,
            };
            return Some(format);
        }
        None
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => Self::ARROW,
            Format::Parquet => Self::PARQUET,
        }
    }
}

/// A `Write` whose bytes are taken out between batches.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

enum Encoder {
    Json { rows: usize },
    Csv(arrow::csv::Writer<Shared>),
    Arrow(arrow::ipc::writer::StreamWriter<Shared>),
    Parquet(parquet::arrow::ArrowWriter<Shared>),
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Encoder {
    fn new(
        format: Format,
        schema: &arrow::datatypes::SchemaRef,
        out: &Shared,
    ) -> Result<Self, Error> {
        Ok(match format {
            Format::Json => {
                out.clone().write_all(b"[")?;
                Encoder::Json { rows: 0 }
            }
            Format::Csv => Encoder::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out.clone()),
            ),
            Format::Arrow => Encoder::Arrow(arrow::ipc::writer::StreamWriter::try_new(
                out.clone(),
                schema,
            )?),
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(64 * 1024))
                    .build();
                Encoder::Parquet(parquet::arrow::ArrowWriter::try_new(
                    out.clone(),
                    schema.clone(),
                    Some(props),
                )?)
            }
        })
    }

    fn write(&mut self, batch: &RecordBatch, out: &Shared) -> Result<(), Error> {
        match self {
            Encoder::Json { rows } => {
                // NULLs are written (a record has every column), not left out
                let mut lines = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
                lines.write(batch)?;
                lines.finish()?;
                let text = lines.into_inner();
                let mut w = out.clone();
                for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if *rows > 0 {
                        w.write_all(b",")?;
                    }
                    w.write_all(line)?;
                    *rows += 1;
                }
            }
            Encoder::Csv(w) => w.write(batch)?,
            Encoder::Arrow(w) => w.write(batch)?,
            Encoder::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self, out: &Shared) -> Result<(), Error> {
        match self {
            Encoder::Json { .. } => out.clone().write_all(b"]")?,
            Encoder::Csv(_) => {}
            Encoder::Arrow(mut w) => w.finish()?,
            Encoder::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(())
    }
}

/// `stream` once its first batch is computed, so that an error before any
/// row — most of a query's failures: out of memory, a bad cast, a division
/// by zero, all raised while an aggregate or a join's build side is
/// computed — can be answered with its own status and JSON error instead of
/// a `200` whose body breaks off.
pub async fn started(
    mut stream: SendableRecordBatchStream,
) -> Result<SendableRecordBatchStream, DataFusionError> {
    let schema = stream.schema();
    let first = stream.next().await.transpose()?;
    let rest = futures::stream::iter(first.map(Ok)).chain(stream);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rest)))
}

/// The body of a result: `stream` encoded as `format`, at most `row_limit`
/// rows for JSON and CSV (Arrow and Parquet are for bulk reads). An error
/// after the first bytes were sent ends the body early (the client sees a
/// truncated transfer, never a well-formed partial answer); see [`started`]
/// for errors before them.
pub fn body(
    mut stream: SendableRecordBatchStream,
    format: Format,
    row_limit: Option<usize>,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Error>>(4);
    let schema = stream.schema();
    tokio::spawn(async move {
        let out = Shared::default();
        let mut encoder = match Encoder::new(format, &schema, &out) {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let limit = match format {
            Format::Json | Format::Csv => row_limit,
            _ => None,
        };
        let mut sent = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
            let batch = match limit {
                Some(l) if sent + batch.num_rows() > l => batch.slice(0, l - sent),
                _ => batch,
            };
            sent += batch.num_rows();
            if let Err(e) = encoder.write(&batch, &out) {
                let _ = tx.send(Err(e)).await;
                return;
            }
            let chunk = out.take();
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return; // the client went away: dropping the stream stops the query
            }
            if limit.is_some_and(|l| sent >= l) {
                break;
            }
        }
        let result = encoder.finish(&out).map(|_| out.take());
        let _ = tx.send(result).await;
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_a_format() {
        assert_eq!(Format::from_accept(None), Some(Format::Json));
        assert_eq!(Format::from_accept(Some("text/csv")), Some(Format::Csv));
        assert_eq!(
            Format::from_accept(Some(
                "application/xml, application/vnd.apache.arrow.stream;q=0.9"
            )),
            Some(Format::Arrow)
        );
        assert_eq!(Format::from_accept(Some("*/*")), Some(Format::Json));
        assert_eq!(Format::from_accept(Some("image/png")), None);
    }
}
