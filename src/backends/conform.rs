//! A batch cast to exactly a given schema: what a stream announced, when
//! the rows came out of a reader with other (compatible) types, such as
//! strings read as dictionaries.

use arrow::array::{AsArray, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;

/// `batch` with each column cast to the type `schema` gives it (columns
/// matched by position); the row count is kept when there are no columns.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                return Ok(c.clone());
            }
            match c.as_any_dictionary_opt() {
                // each distinct value's view made once, then one view per
                // row picked by its key (arrow's cast builds every row's
                // view from the values: ~3x the time)
                Some(d) if matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView) => {
                    let values = arrow::compute::cast(d.values(), f.data_type())?;
                    arrow::compute::take(&values, d.keys(), None)
                }
                _ => arrow::compute::cast(c, f.data_type()),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
}
