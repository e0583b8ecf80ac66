//! A text file of records parsed on all cores.
//!
//! One thread reads the file in blocks and cuts each block after the last
//! record that ends in it, as the format's [`RecordEnds`] finds it without
//! parsing (a newline outside quotes for CSV, outside strings and brackets
//! for JSON lines). Workers parse the chunks with the format's
//! [`ChunkParser`], and the batches come out in file order. Parsing text to
//! numbers is the cost of a put from text; the cut is one scan of the bytes.
//!
//! Memory stays bounded: besides the block being read and the chunk the
//! consumer takes, at most `workers` chunks (raw or parsed) wait, enough to
//! keep every worker busy (twice that measured no faster on 2 cores). A file that ends inside a record is an error the format words,
//! and a parse error is reported as the format's reader over the whole file
//! would report it ([`ChunkParser::locate`]).

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

/// Bytes per chunk: large enough that a worker's start-up is noise, small
/// enough that the chunks in flight and their batches stay a few MiB
/// (4 MiB chunks measured the same speed and ~50 MB more at the peak).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Finds where records end in a byte stream fed in pieces, without parsing.
pub(crate) trait RecordEnds: Send {
    /// Feeds the next bytes; returns the offset just past the last record
    /// end among them, if there is one.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize>;

    /// The error for a stream that ended here, if it ended inside a record
    /// that can never be whole (an open quote).
    fn unterminated(&self) -> Option<String>;

    /// Why no record has ended for a long way, when the state says so (a
    /// quote open across lines); `None`: the text has no record ends at all.
    fn no_end(&self) -> Option<String> {
        self.unterminated()
    }
}

/// Parses one chunk of whole records.
pub(crate) trait ChunkParser: Sync {
    /// What one worker keeps from chunk to chunk: a decoder whose buffers
    /// a fresh reader per chunk would allocate, zero and fault in again
    /// (~40% of a CSV put's CPU when each chunk had its own reader).
    type Worker;

    /// A worker's state, made on its own thread.
    fn worker(&self) -> Self::Worker;

    /// The chunk's rows; `first` is the file's first chunk (a CSV header).
    fn parse(
        &self,
        worker: &mut Self::Worker,
        chunk: Bytes,
        first: bool,
    ) -> Result<Vec<RecordBatch>, String>;

    /// A chunk's parse error as one reader over the whole file would word
    /// it, given the rows of the chunks before it.
    fn locate(&self, msg: String, _rows_before: usize, _first: bool) -> String {
        msg
    }
}

/// A format's streaming decoder (arrow's CSV and JSON decoders have this
/// shape, without a common trait).
pub(crate) trait Decode {
    /// Decodes from `buf`, returning the bytes used; 0 when a batch is full.
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError>;
    /// The rows decoded since the last flush, if any.
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl Decode for arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        arrow::csv::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        arrow::csv::reader::Decoder::flush(self)
    }
}

impl Decode for arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        arrow::json::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        arrow::json::reader::Decoder::flush(self)
    }
}

/// The rows of `chunk`, whole records ending in a newline, through a
/// decoder kept from earlier chunks. After an error the decoder holds part
/// of a record: the caller replaces it.
pub(crate) fn decode_chunk(
    decoder: &mut impl Decode,
    chunk: &[u8],
) -> Result<Vec<RecordBatch>, ArrowError> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let used = decoder.decode(&chunk[at..])?;
        at += used;
        if at == chunk.len() {
            out.extend(decoder.flush()?);
            return Ok(out);
        }
        if used == 0 {
            // a full batch, or a decoder that cannot go on
            match decoder.flush()? {
                Some(batch) => out.push(batch),
                None => {
                    return Err(ArrowError::ParseError(format!(
                        "the decoder stopped {at} bytes into a chunk"
                    )));
                }
            }
        }
    }
}

/// Every batch of a reader over one whole chunk, or its first error as
/// text (the path of chunks a kept decoder cannot take).
pub(crate) fn read_whole(
    reader: Result<impl Iterator<Item = Result<RecordBatch, ArrowError>>, ArrowError>,
) -> Result<Vec<RecordBatch>, String> {
    reader
        .and_then(|r| r.collect::<Result<Vec<_>, ArrowError>>())
        .map_err(|e| e.to_string())
}

/// Whether a chunk can go through a kept decoder: its last record ends
/// in a newline, so the decoder is between records after it (the file's
/// last chunk may end without one, which only an end of input completes).
pub(crate) fn ends_in_newline(chunk: &[u8]) -> bool {
    chunk.last() == Some(&b'\n')
}

/// The longest record read: past it, the file is refused instead of being
/// held in memory whole (a JSON document saved as `.jsonl`, a quote that is
/// never closed, line ends the format does not know).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// How a file is cut and how many threads parse it.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub chunk_bytes: usize,
    pub workers: usize,
    /// The longest record accepted ([`MAX_RECORD_BYTES`]).
    pub max_record_bytes: usize,
}

impl Split {
    /// Chunks of [`CHUNK_BYTES`], one worker per core.
    pub fn all_cores() -> Self {
        Split {
            chunk_bytes: CHUNK_BYTES,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }
}

/// What a worker hands back for one chunk.
type Parsed = Result<Vec<RecordBatch>, Failure>;

/// Why a chunk gave no rows.
enum Failure {
    /// The parser refused it; about the chunk.
    Parse(String),
    /// Reading the file failed (or it ended inside a record): about the file.
    Input(String),
}

/// Parses `input` cut by `ends` and parsed by `parser` on `split.workers`
/// threads, calling `send` with each batch in file order and with an error
/// (as text, for the caller to wrap) at the first failure. Stops reading
/// when `send` returns false. `on_read` sees the size of every block read
/// (a progress bar).
pub(crate) fn parse<R: Read + Send>(
    mut input: R,
    mut ends: impl RecordEnds,
    parser: &impl ChunkParser,
    split: Split,
    on_read: &(dyn Fn(u64) + Sync),
    send: &mut dyn FnMut(Result<RecordBatch, String>) -> bool,
) {
    let workers = split.workers.max(1);
    let chunk_bytes = split.chunk_bytes.max(1);
    // Jobs to parse, and, in file order, where each one's answer will be.
    let (jobs_tx, jobs_rx) = sync_channel::<(Bytes, bool, SyncSender<Parsed>)>(workers);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let (order_tx, order_rx) = sync_channel::<Receiver<Parsed>>(workers);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let jobs = jobs_rx.clone();
            scope.spawn(move || {
                let mut worker = parser.worker();
                loop {
                    let job = match jobs.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((chunk, first, answer)) = job else {
                        return;
                    };
                    let parsed = parser
                        .parse(&mut worker, chunk, first)
                        .map_err(Failure::Parse);
                    // the reader may have stopped: nobody waits for this one
                    let _ = answer.send(parsed);
                }
            });
        }
        scope.spawn(move || {
            let enqueue = |chunk: Bytes, first: bool| {
                let (tx, rx) = sync_channel(1);
                order_tx.send(rx).is_ok() && jobs_tx.send((chunk, first, tx)).is_ok()
            };
            let mut carry: Vec<u8> = Vec::new();
            let mut first = true;
            loop {
                let mut block = std::mem::take(&mut carry);
                let start = block.len();
                block.reserve(chunk_bytes);
                let read = match (&mut input)
                    .take(chunk_bytes as u64)
                    .read_to_end(&mut block)
                {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = order_tx.send(failed(e.to_string()));
                        return;
                    }
                };
                on_read(read as u64);
                let end = ends.feed(&block[start..]).map(|e| start + e);
                if read < chunk_bytes {
                    // The end of the file: the rest is the last chunk, unless
                    // it ends inside a record that can never close (its parse
                    // would fail on a short record, or store the rest of the
                    // file as one value).
                    if let Some(msg) = ends.unterminated() {
                        let _ = order_tx.send(failed(msg));
                    } else if !block.is_empty() {
                        enqueue(Bytes::from(block), first);
                    }
                    return;
                }
                match end {
                    Some(end) => {
                        let block = Bytes::from(block);
                        carry = block[end..].to_vec();
                        if !enqueue(block.slice(..end), first) {
                            return;
                        }
                        first = false;
                    }
                    // one record longer than a chunk: read on, up to a bound
                    None if block.len() > split.max_record_bytes => {
                        let _ = order_tx.send(failed(too_long(&ends, split.max_record_bytes)));
                        return;
                    }
                    None => carry = block,
                }
            }
        });
        // Answers in file order.
        let mut rows_before = 0usize;
        let mut first = true;
        for answer in order_rx {
            let parsed = answer
                .recv()
                .unwrap_or_else(|_| Err(Failure::Input("a parsing thread failed".into())));
            match parsed {
                Ok(batches) => {
                    for b in batches {
                        rows_before += b.num_rows();
                        if !send(Ok(b)) {
                            return;
                        }
                    }
                }
                Err(Failure::Input(msg)) => {
                    send(Err(msg));
                    return;
                }
                Err(Failure::Parse(msg)) => {
                    send(Err(parser.locate(msg, rows_before, first)));
                    return;
                }
            }
            first = false;
        }
    });
}

/// The error for a record longer than `max_record` bytes, where `ends`
/// stopped.
fn too_long(ends: &impl RecordEnds, max_record: usize) -> String {
    let why = ends.no_end().unwrap_or_else(|| {
        "no record ends in it; is the file in the format its name says?".to_string()
    });
    format!("a record runs past {max_record} bytes: {why}")
}

/// How many bytes from the start of `input` hold whole records, as `ends`
/// cuts them, up to just past `budget` bytes (or the end): what schema
/// inference may read. A record longer than `max_record` bytes is an
/// error, found without parsing (a file that is not what its name says
/// would otherwise be read whole).
pub(crate) fn whole_records<R: Read>(
    mut input: R,
    mut ends: impl RecordEnds,
    budget: u64,
    max_record: usize,
) -> Result<u64, String> {
    let mut block = vec![0u8; CHUNK_BYTES];
    let (mut read, mut last_end) = (0u64, 0u64);
    loop {
        let n = input.read(&mut block).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(read);
        }
        if let Some(end) = ends.feed(&block[..n]) {
            last_end = read + end as u64;
        }
        read += n as u64;
        if last_end > budget {
            return Ok(last_end);
        }
        if read - last_end > max_record as u64 {
            return Err(too_long(&ends, max_record));
        }
    }
}

/// An answer, already there, that reading the file failed.
fn failed(msg: String) -> Receiver<Parsed> {
    let (tx, rx) = sync_channel(1);
    let _ = tx.send(Err(Failure::Input(msg)));
    rx
}

/// What a parse sent to its callback: the batches, or the first error.
#[cfg(test)]
pub(crate) fn gather(
    parse: impl FnOnce(&mut dyn FnMut(Result<RecordBatch, String>) -> bool),
) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::new();
    let mut err = None;
    parse(&mut |b| match b {
        Ok(b) => {
            out.push(b);
            true
        }
        Err(e) => {
            err = Some(e);
            false
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
