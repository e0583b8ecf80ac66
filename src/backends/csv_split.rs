//! A CSV file parsed on all cores (by [`super::split`]).
//!
//! Records end at a newline outside quotes, by the rules of RFC 4180 that
//! arrow's CSV reader follows (tracked by [`Quotes`]); each chunk is parsed
//! by arrow's reader. Parsing text to numbers is the cost of a CSV put (on
//! `om bench ops` it was ~6 s of the 7.8 s put of 10M rows on one thread);
//! the cut itself is a scan for quotes and newlines.
//!
//! Errors read as one reader over the whole file would report them (a parse
//! error's line number counts from the top of the file), and a file that
//! ends inside a quoted field is an error naming the line the quote opened
//! on.

use std::io::{Cursor, Read};

use arrow::csv::reader::{Decoder, Format};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::split::{self, ChunkParser, RecordEnds, Split};

/// Where a CSV byte stream is, as far as quoting goes (the rules of
/// RFC 4180 that the CSV reader follows: a quote opens a quoted field only
/// at the start of a field; inside one, `""` is a quote).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuoteState {
    #[default]
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: closes it, or starts `""`.
    QuoteInQuoted,
}

/// The quote state of a CSV byte stream fed in pieces.
pub(crate) struct Quotes {
    delimiter: u8,
    state: QuoteState,
    line: u64,
    opened_on: u64,
}

impl Quotes {
    pub(crate) fn new(delimiter: u8) -> Self {
        Quotes {
            delimiter,
            state: QuoteState::FieldStart,
            line: 1,
            opened_on: 0,
        }
    }

    /// Feeds the next bytes; returns the offset just past the last record
    /// end (a newline outside quotes) among them, if there is one.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        use QuoteState::*;
        // Most blocks hold no quote at all: then every newline ends a
        // record, and the scan is two vectorised passes.
        if matches!(self.state, FieldStart | Unquoted) && !bytes.contains(&b'"') {
            let &last = bytes.last()?;
            self.line += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            self.state = if last == b'\n' || last == self.delimiter {
                FieldStart
            } else {
                Unquoted
            };
            return bytes.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        }
        let mut end = None;
        for (i, &b) in bytes.iter().enumerate() {
            self.state = match (self.state, b) {
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, b'\n') => {
                    self.line += 1;
                    Quoted
                }
                (Quoted, _) => Quoted,
                (FieldStart, b'"') => {
                    self.opened_on = self.line;
                    Quoted
                }
                (QuoteInQuoted, b'"') => Quoted,
                (_, b'\n') => {
                    self.line += 1;
                    end = Some(i + 1);
                    FieldStart
                }
                (_, d) if d == self.delimiter => FieldStart,
                _ => Unquoted,
            };
        }
        end
    }

    /// The error for a stream that ended here, if it ended inside quotes.
    pub(crate) fn unterminated(&self) -> Option<String> {
        (self.state == QuoteState::Quoted).then(|| {
            format!(
                "the quoted field opened on line {} is never closed; close the quote (or double the quotes inside it) and put the file again",
                self.opened_on
            )
        })
    }
}

/// How a CSV file is read.
#[derive(Debug, Clone, Copy)]
pub struct CsvLayout {
    pub delimiter: u8,
    /// The first record names the columns.
    pub header: bool,
    pub batch_rows: usize,
}

impl CsvLayout {
    fn format(&self, first_chunk: bool) -> Format {
        Format::default()
            .with_delimiter(self.delimiter)
            .with_header(self.header && first_chunk)
    }
}

/// Arrow's CSV reader over one chunk of whole records.
struct CsvChunks {
    schema: SchemaRef,
    layout: CsvLayout,
}

impl CsvChunks {
    fn reader(&self, first: bool) -> arrow::csv::ReaderBuilder {
        arrow::csv::ReaderBuilder::new(self.schema.clone())
            .with_format(self.layout.format(first))
            .with_batch_size(self.layout.batch_rows)
    }
}

impl ChunkParser for CsvChunks {
    /// A decoder for chunks after the header.
    type Worker = Decoder;

    fn worker(&self) -> Decoder {
        self.reader(false).build_decoder()
    }

    /// Chunks after the first that end in a newline go through the
    /// worker's decoder; the first (its header) and a last one without a
    /// newline through a reader of their own, as does a chunk that fails,
    /// so that its error counts lines from the chunk's start.
    fn parse(
        &self,
        decoder: &mut Decoder,
        chunk: Bytes,
        first: bool,
    ) -> Result<Vec<RecordBatch>, String> {
        if !first && split::ends_in_newline(&chunk) {
            match split::decode_chunk(decoder, &chunk) {
                Ok(batches) => return Ok(batches),
                Err(_) => *decoder = self.worker(),
            }
        }
        split::read_whole(self.reader(first).build(Cursor::new(chunk)))
    }

    /// Arrow's line numbers count from the chunk; the file's from its top.
    fn locate(&self, msg: String, rows_before: usize, first: bool) -> String {
        let offset = if first {
            0
        } else {
            rows_before + self.layout.header as usize
        };
        shift_line(&msg, offset)
    }
}

impl RecordEnds for Quotes {
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        Quotes::feed(self, bytes)
    }
    fn unterminated(&self) -> Option<String> {
        Quotes::unterminated(self)
    }
}

/// Parses the CSV `input` as `layout` says, cut and spread over threads as
/// `split` says, calling `send` with each batch in file order and with an
/// error (as text, for the caller to wrap) at the first failure; a parse
/// error's line number counts from the top of the file. Stops reading when
/// `send` returns false. `on_read` sees the size of every block read.
pub fn parse<R: Read + Send>(
    input: R,
    schema: SchemaRef,
    layout: CsvLayout,
    split: Split,
    on_read: &(dyn Fn(u64) + Sync),
    send: &mut dyn FnMut(Result<RecordBatch, String>) -> bool,
) {
    let parser = CsvChunks { schema, layout };
    split::parse(
        input,
        Quotes::new(layout.delimiter),
        &parser,
        split,
        on_read,
        send,
    );
}

/// `msg` with the number after its first "line " moved by `offset`.
fn shift_line(msg: &str, offset: usize) -> String {
    let Some(at) = msg.find("line ") else {
        return msg.to_string();
    };
    let digits_at = at + "line ".len();
    let digits: String = msg[digits_at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.parse::<usize>() {
        Ok(n) => format!(
            "{}{}{}",
            &msg[..digits_at],
            n + offset,
            &msg[digits_at + digits.len()..]
        ),
        Err(_) => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn end_state(text: &str) -> (QuoteState, u64) {
        let mut q = Quotes::new(b',');
        // fed in two pieces: state carries across reads
        let (a, b) = text.split_at(text.len() / 2);
        q.feed(a.as_bytes());
        q.feed(b.as_bytes());
        (q.state, q.opened_on)
    }

    #[test]
    fn an_unterminated_quote_is_found_and_others_are_not() {
        assert_ne!(end_state("a,b\n1,\"x\ny\"\n").0, QuoteState::Quoted);
        assert_eq!(
            end_state("a,b\n1,x\n2,\"never closed\n3,y\n"),
            (QuoteState::Quoted, 3)
        );
        // a quote inside an unquoted field is a character
        assert_ne!(end_state("h,w\n5'10\",x\n").0, QuoteState::Quoted);
        // doubled quotes inside a quoted field
        assert_ne!(
            end_state("a\n\"he said \"\"hi\"\"\"\n").0,
            QuoteState::Quoted
        );
        assert_eq!(end_state("a\n\"he said \"\"hi\n").0, QuoteState::Quoted);
    }

    #[test]
    fn a_record_ends_only_at_a_newline_outside_quotes() {
        let mut q = Quotes::new(b',');
        assert_eq!(q.feed(b"a,b\n1,\"x\ny"), Some(4));
        // still inside the quoted field: no record ends here
        assert_eq!(q.feed(b"z\nw"), None);
        assert_eq!(q.feed(b"\",2\n3,4"), Some(4));
        // the quote-free fast path keeps the state for the next piece
        assert_eq!(q.feed(b"5,6\n7,"), Some(4));
        assert_eq!(q.feed(b"\"q\nq\"\n"), Some(6));
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]))
    }

    const LAYOUT: CsvLayout = CsvLayout {
        delimiter: b',',
        header: true,
        batch_rows: 3,
    };

    fn layout(chunk_bytes: usize, workers: usize) -> Split {
        Split {
            chunk_bytes,
            workers,
            max_record_bytes: split::MAX_RECORD_BYTES,
        }
    }

    fn run(text: &str, split: Split) -> Result<Vec<RecordBatch>, String> {
        let input = Cursor::new(text.as_bytes().to_vec());
        split::gather(|send| parse(input, schema(), LAYOUT, split, &|_| {}, send))
    }

    /// What one arrow reader over the whole text gives.
    fn single(text: &str) -> Result<Vec<RecordBatch>, String> {
        let parser = CsvChunks {
            schema: schema(),
            layout: LAYOUT,
        };
        split::read_whole(parser.reader(true).build(Cursor::new(text.as_bytes())))
    }

    fn rows(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            for i in 0..b.num_rows() {
                let id = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
                let text = b.column(1).as_string::<i32>();
                let x = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
                out.push(format!(
                    "{:?}|{:?}|{:?}",
                    (!id.is_null(i)).then(|| id.value(i)),
                    (!text.is_null(i)).then(|| text.value(i)),
                    (!x.is_null(i)).then(|| x.value(i)),
                ));
            }
        }
        out
    }

    const TRICKY: &str = "id,text,x\n\
        1,plain,1.5\n\
        2,\"with, comma\",2.5\r\n\
        3,\"two\nlines\",\n\
        4,\"he said \"\"hi\"\"\",4.25\n\
        5,,5\n\
        6,\"a field much longer than any of the small chunks used in this test, with a \"\"quote\"\" and a\nnewline\",6\n\
        7,5'10\",7\n\
        8,last without newline,8";

    #[test]
    fn any_chunking_gives_the_rows_of_one_reader() {
        let expected = rows(&single(TRICKY).unwrap());
        assert_eq!(expected.len(), 8);
        for chunk in 1..=48 {
            for workers in 1..=3 {
                let got = run(TRICKY, layout(chunk, workers)).unwrap();
                assert_eq!(rows(&got), expected, "chunk {chunk}, {workers} workers");
            }
        }
        // the default size: one chunk
        let got = run(TRICKY, layout(split::CHUNK_BYTES, 2)).unwrap();
        assert_eq!(rows(&got), expected);
    }

    #[test]
    fn a_parse_error_names_the_line_one_reader_would() {
        let mut text = String::from("id,text,x\n");
        for i in 0..200 {
            text.push_str(&format!("{i},\"t\n{i}\",{i}.5\n"));
        }
        text.push_str("200,bad,not-a-number\n201,x,1\n");
        let expected = single(&text).unwrap_err();
        assert!(expected.contains("not-a-number"), "{expected}");
        for chunk in [7, 64, 1000] {
            let got = run(&text, layout(chunk, 2)).unwrap_err();
            assert_eq!(got, expected, "chunk {chunk}");
        }
        // a short record, found by the record decoder
        let short = text.replace("200,bad,not-a-number", "200,bad");
        let expected = single(&short).unwrap_err();
        assert_eq!(run(&short, layout(50, 2)).unwrap_err(), expected);
    }

    #[test]
    fn a_file_ending_inside_quotes_is_an_error_naming_its_line() {
        let text = "id,text,x\n1,a,1\n2,\"never closed,2\n3,b,3\n";
        for chunk in [5, split::CHUNK_BYTES] {
            let err = run(text, layout(chunk, 2)).unwrap_err();
            assert!(err.contains("opened on line 3 is never closed"), "{err}");
        }
    }

    #[test]
    fn a_quote_open_past_the_bound_fails_without_reading_the_rest() {
        let rest: String = (0..1000).map(|i| format!("{i},t,{i}\n")).collect();
        let text = format!("id,text,x\n1,a,1\n2,\"open,2\n{rest}");
        let read = std::sync::atomic::AtomicU64::new(0);
        let on_read = |n: u64| {
            read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let split = Split {
            chunk_bytes: 64,
            workers: 2,
            max_record_bytes: 1000,
        };
        let input = Cursor::new(text.as_bytes().to_vec());
        let err = split::gather(|send| parse(input, schema(), LAYOUT, split, &on_read, send))
            .unwrap_err();
        assert!(
            err.contains(
                "a record runs past 1000 bytes: the quoted field opened on line 3 is never closed"
            ),
            "{err}"
        );
        let read = read.into_inner();
        assert!(read < 2000 && (read as usize) < text.len(), "{read} read");
        // schema inference stops at the same bound, with the same words
        let err =
            split::whole_records(Cursor::new(text), Quotes::new(b','), 1 << 20, 1000).unwrap_err();
        assert!(err.contains("opened on line 3 is never closed"), "{err}");
    }

    #[test]
    fn a_reader_that_stops_early_stops_the_parse() {
        let mut text = String::from("id,text,x\n");
        for i in 0..10_000 {
            text.push_str(&format!("{i},t,{i}\n"));
        }
        let mut seen = 0;
        parse(
            Cursor::new(text.into_bytes()),
            schema(),
            LAYOUT,
            layout(100, 2),
            &|_| {},
            &mut |_| {
                seen += 1;
                false
            },
        );
        // returned (no thread left waiting) after the first batch
        assert_eq!(seen, 1);
    }
}
