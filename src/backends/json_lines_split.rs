//! A JSON-lines file parsed on all cores (by [`super::split`]).
//!
//! A record ends at a newline outside any string, object or array
//! (tracked by [`Nesting`]), so a file whose values span several lines,
//! which arrow's JSON reader accepts, is cut only between values. Each chunk
//! is parsed by arrow's JSON reader with the table's schema.

use std::io::{Cursor, Read};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::reader::Decoder;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use super::split::{self, ChunkParser, RecordEnds, Split};

/// Where a JSON text is, as far as cutting it between values goes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Nesting {
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// Objects and arrays open.
    depth: u32,
    line: u64,
    string_opened_on: u64,
    /// Where the first string that ran past its line's end opened. Arrow's
    /// reader accepts a raw newline inside a string, but when the file ends
    /// inside one, a missing quote there is the likely cause: quote parity
    /// alone would name a later line.
    first_spanning: Option<u64>,
}

impl Nesting {
    pub(crate) fn new() -> Self {
        Nesting {
            line: 1,
            ..Default::default()
        }
    }

    fn count_lines_in_string(&mut self, text: &[u8]) {
        let lines = text.iter().filter(|&&b| b == b'\n').count() as u64;
        if lines > 0 && self.first_spanning.is_none() {
            self.first_spanning = Some(self.string_opened_on);
        }
        self.line += lines;
    }
}

impl RecordEnds for Nesting {
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut end = None;
        let mut i = 0;
        while i < bytes.len() {
            if self.in_string {
                // skip to the string's next quote or backslash
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match bytes[i..].iter().position(|&b| b == b'"' || b == b'\\') {
                    Some(at) => {
                        let b = bytes[i + at];
                        self.count_lines_in_string(&bytes[i..i + at]);
                        i += at + 1;
                        if b == b'"' {
                            self.in_string = false;
                        } else {
                            self.escaped = true;
                        }
                        continue;
                    }
                    None => {
                        self.count_lines_in_string(&bytes[i..]);
                        break;
                    }
                }
            }
            match bytes[i] {
                b'"' => {
                    self.in_string = true;
                    self.string_opened_on = self.line;
                }
                b'{' | b'[' => self.depth += 1,
                // a stray closer is the reader's error to report
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b'\n' => {
                    self.line += 1;
                    if self.depth == 0 {
                        end = Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        end
    }

    /// Inside a string only by chance where a long value was cut, unless a
    /// string ran past its line: that is the quote that never closed.
    fn no_end(&self) -> Option<String> {
        self.first_spanning.and_then(|_| self.unterminated())
    }

    fn unterminated(&self) -> Option<String> {
        self.in_string.then(|| {
            let line = self.first_spanning.unwrap_or(self.string_opened_on);
            format!(
                "a string is never closed: the string opened on line {line} runs past the end of its line; close its quote (escape quotes inside it as \\\") and put the file again"
            )
        })
    }
}

/// Arrow's JSON reader over one chunk of whole values.
struct JsonChunks {
    schema: SchemaRef,
    batch_rows: usize,
}

impl JsonChunks {
    fn reader(&self) -> arrow::json::ReaderBuilder {
        arrow::json::ReaderBuilder::new(self.schema.clone()).with_batch_size(self.batch_rows)
    }
}

impl ChunkParser for JsonChunks {
    type Worker = Result<Decoder, ArrowError>;

    fn worker(&self) -> Self::Worker {
        self.reader().build_decoder()
    }

    /// Chunks that end in a newline go through the worker's decoder; a
    /// last one without, or one that fails, through a reader of its own.
    fn parse(
        &self,
        decoder: &mut Self::Worker,
        chunk: Bytes,
        _first: bool,
    ) -> Result<Vec<RecordBatch>, String> {
        if let (Ok(d), true) = (decoder.as_mut(), split::ends_in_newline(&chunk)) {
            match split::decode_chunk(d, &chunk) {
                Ok(batches) => return Ok(batches),
                Err(_) => *decoder = self.worker(),
            }
        }
        split::read_whole(self.reader().build(Cursor::new(chunk)))
    }

    /// Arrow's JSON errors name no position: say which rows were whole.
    fn locate(&self, msg: String, rows_before: usize, _first: bool) -> String {
        if rows_before == 0 {
            msg
        } else {
            format!("{msg} (after the first {rows_before} rows, which read well)")
        }
    }
}

/// Parses the JSON-lines `input` with `schema`, cut and spread over threads
/// as `split` says, calling `send` with each batch in file order and with an
/// error (as text) at the first failure. Stops reading when `send` returns
/// false. `on_read` sees the size of every block read.
pub fn parse<R: Read + Send>(
    input: R,
    schema: SchemaRef,
    batch_rows: usize,
    split: Split,
    on_read: &(dyn Fn(u64) + Sync),
    send: &mut dyn FnMut(Result<RecordBatch, String>) -> bool,
) {
    let parser = JsonChunks { schema, batch_rows };
    split::parse(input, Nesting::new(), &parser, split, on_read, send);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]))
    }

    fn run(text: &str, chunk_bytes: usize, workers: usize) -> Result<Vec<RecordBatch>, String> {
        let split = Split {
            chunk_bytes,
            workers,
            max_record_bytes: split::MAX_RECORD_BYTES,
        };
        let input = Cursor::new(text.as_bytes().to_vec());
        split::gather(|send| parse(input, schema(), 3, split, &|_| {}, send))
    }

    /// The rows as one table, for comparing answers cut differently.
    fn table(batches: &[RecordBatch]) -> String {
        let one = arrow::compute::concat_batches(&schema(), batches).unwrap();
        pretty_format_batches(&[one]).unwrap().to_string()
    }

    /// Values over several lines, newlines and brackets inside strings,
    /// escaped quotes, blank lines, and no newline at the end.
    const TRICKY: &str = r#"{"id": 1, "text": "plain", "tags": ["a"]}
{"id": 2, "text": "with } and ] and {\"quoted\"}", "tags": []}

{"id": 3,
 "text": "escaped \\ backslash then newline \n in the value",
 "tags": ["x",
          "y"]}
{"id": 4, "text": null, "extra": {"nested": [1, {"deep": "\"}"}]}, "tags": null}
{"id": 5, "text": "a value much longer than the small chunks of this test, with \"quotes\" and \\\\ backslashes", "tags": ["z"]}
{"id": 6, "text": "last, without a newline"}"#;

    #[test]
    fn any_chunking_gives_the_rows_of_one_reader() {
        let parser = JsonChunks {
            schema: schema(),
            batch_rows: 3,
        };
        let whole =
            split::read_whole(parser.reader().build(Cursor::new(TRICKY.as_bytes()))).unwrap();
        let expected = table(&whole);
        assert_eq!(whole.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
        for chunk in 1..=64 {
            for workers in 1..=3 {
                let got = run(TRICKY, chunk, workers).unwrap();
                assert_eq!(table(&got), expected, "chunk {chunk}, {workers} workers");
            }
        }
        assert_eq!(
            table(&run(TRICKY, split::CHUNK_BYTES, 2).unwrap()),
            expected
        );
    }

    #[test]
    fn a_record_ends_only_at_a_newline_outside_strings_and_brackets() {
        let mut n = Nesting::new();
        assert_eq!(n.feed(b"{\"a\": 1}\n{\"a\": [\n"), Some(9));
        // inside the array: no end
        assert_eq!(n.feed(b"1]\n"), None);
        assert_eq!(n.feed(b"}\n{\"s\": \"x\\\""), Some(2));
        // inside a string after an escaped quote; a backslash ends the piece
        assert_eq!(n.feed(b"}\n\\"), None);
        assert_eq!(n.feed(b"\"\"}\n"), Some(4));
        assert!(n.unterminated().is_none());
    }

    #[test]
    fn a_bad_value_fails_the_put_and_names_the_rows_before_it() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("{{\"id\": {i}, \"text\": \"t\"}}\n"));
        }
        text.push_str("{\"id\": \"not a number\"}\n{\"id\": 101}\n");
        let err = run(&text, 200, 2).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
        assert!(err.contains("after the first"), "{err}");
        // the same file in one chunk fails the same way
        assert!(
            run(&text, split::CHUNK_BYTES, 2)
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn a_file_ending_inside_a_string_names_the_line_it_opened_on() {
        let text = "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3, \"text\": \"never closed}\n{\"id\": 4}\n";
        for chunk in [5, split::CHUNK_BYTES] {
            let err = run(text, chunk, 2).unwrap_err();
            assert!(err.contains("opened on line 3 runs past"), "{err}");
            assert!(err.contains("a string is never closed"), "{err}");
        }
    }

    #[test]
    fn a_record_past_the_bound_fails_without_reading_the_rest() {
        let rest: String = (0..1000).map(|i| format!("{{\"id\": {i}}}\n")).collect();
        let cases = [
            // a quote never closed: every later line is inside the string
            (
                format!("{{\"id\": 1}}\n{{\"id\": 2, \"text\": \"open\n{rest}"),
                "opened on line 2",
            ),
            // a JSON document, not lines: no record ever ends
            (
                format!("[{}]", rest.replace('\n', ",").trim_end_matches(',')),
                "no record ends in it",
            ),
        ];
        for (text, why) in cases {
            let read = std::sync::atomic::AtomicU64::new(0);
            let split = Split {
                chunk_bytes: 64,
                workers: 2,
                max_record_bytes: 1000,
            };
            let on_read = |n: u64| {
                read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            };
            let input = Cursor::new(text.as_bytes().to_vec());
            let err =
                split::gather(|send| parse(input, schema(), 3, split, &on_read, send)).unwrap_err();
            assert!(err.contains("a record runs past 1000 bytes"), "{err}");
            assert!(err.contains(why), "{err}");
            let read = read.into_inner();
            assert!(
                read < 2000 && (read as usize) < text.len(),
                "{read} of {} bytes read",
                text.len()
            );
        }
    }

    #[test]
    fn inference_reads_whole_values_up_to_its_budget_and_no_giant_record() {
        let lines: String = (0..100).map(|i| format!("{{\"id\": {i}}}\n")).collect();
        // just past the budget, at a record's end
        let span =
            split::whole_records(Cursor::new(lines.clone()), Nesting::new(), 30, 1000).unwrap();
        assert!(
            span > 30 && lines.as_bytes()[span as usize - 1] == b'\n',
            "{span}"
        );
        // a small file: all of it
        assert_eq!(
            split::whole_records(Cursor::new("{\"a\": 1}"), Nesting::new(), 30, 1000).unwrap(),
            8
        );
        // a document, not lines: refused once past the bound
        let doc = format!("[{}]", lines.replace('\n', ","));
        let doc = doc.repeat(1 << 10);
        let err = split::whole_records(Cursor::new(doc), Nesting::new(), 30, 1 << 20).unwrap_err();
        assert!(err.contains("no record ends in it"), "{err}");
    }
}
