//! The rows of a dictionary-encoded string column that a string test keeps,
//! decided on the dictionary's values once and then read off the codes.
//!
//! Arrow compares a dictionary with a scalar by comparing its values and
//! then gathering one result per row (`take` on booleans: an index lookup
//! and a bit read per row, 13% of a filtered count's CPU). Most tests a
//! [`super::dictionary_filter::DictionaryFilterExec`] applies (`c = 'x'`)
//! match one value, or none, or all: the rows are then the codes equal to
//! one code (a comparison of 32-bit integers the compiler vectorises), or
//! no row, or every row. Only a test matching several values of many looks
//! each row's code up in a table. The decision is kept for the next batch
//! while the values array is the same one (the batches of a Parquet row
//! group share their dictionary; a memory-cached column shares one).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;

/// What a test decided about a dictionary's values.
#[derive(Debug, Clone)]
enum Decided {
    /// No value passes.
    None,
    /// Every value passes.
    All,
    /// The one code whose value passes.
    One(i32),
    /// Per code, whether its value passes.
    Some(Arc<[bool]>),
}

impl Decided {
    fn of(passes: &BooleanArray) -> Decided {
        let table: Vec<bool> = (0..passes.len())
            .map(|i| passes.is_valid(i) && passes.value(i))
            .collect();
        let mut codes = table
            .iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(c, _)| c);
        match (codes.next(), codes.next()) {
            (None, _) => Decided::None,
            _ if table.iter().all(|p| *p) => Decided::All,
            (Some(code), None) if i32::try_from(code).is_ok() => Decided::One(code as i32),
            _ => Decided::Some(table.into()),
        }
    }

    /// The rows whose `codes` pass (a row without a code does not).
    fn rows(&self, codes: &arrow::array::Int32Array) -> BooleanBuffer {
        let n = codes.len();
        let keys = codes.values();
        let rows = match self {
            Decided::None => return BooleanBuffer::new_unset(n),
            Decided::All => BooleanBuffer::new_set(n),
            Decided::One(code) => bits(keys, |k| k == *code),
            // a code out of range (allowed under a NULL) passes nothing
            Decided::Some(table) => bits(keys, |k| {
                usize::try_from(k).is_ok_and(|k| table.get(k).copied().unwrap_or(false))
            }),
        };
        match codes.nulls() {
            Some(nulls) => &rows & nulls.inner(),
            None => rows,
        }
    }
}

/// Bit `i` set where `keys[i]` passes: 64 keys to a word, read as whole
/// chunks so that no bounds check stands in the way of vectorising (Arrow's
/// `collect_bool` with an indexing closure compared one key at a time:
/// a quarter of a cached filtered count's CPU).
fn bits(keys: &[i32], pass: impl Fn(i32) -> bool) -> BooleanBuffer {
    let word = |chunk: &[i32]| {
        chunk
            .iter()
            .enumerate()
            .fold(0u64, |w, (bit, &k)| w | (u64::from(pass(k)) << bit))
    };
    let chunks = keys.chunks_exact(64);
    let tail = chunks.remainder();
    let mut words: Vec<u64> = chunks.map(word).collect();
    if !tail.is_empty() {
        words.push(word(tail));
    }
    BooleanBuffer::new(Buffer::from_vec(words), 0, keys.len())
}

/// One string test of one dictionary column, decided per distinct value.
#[derive(Debug)]
pub(crate) struct DictionaryMask {
    /// The column's position in the batches tested.
    column: usize,
    /// The test over a batch of one column: the dictionary's values.
    on_values: Arc<dyn PhysicalExpr>,
    /// That batch's schema (the values are strings).
    values: SchemaRef,
}

impl DictionaryMask {
    /// The test `on_values` (an expression over column 0 of a batch of
    /// nullable `Utf8` strings) of column `column`.
    pub(crate) fn new(column: usize, on_values: Arc<dyn PhysicalExpr>) -> Self {
        DictionaryMask {
            column,
            on_values,
            values: Arc::new(Self::values_schema()),
        }
    }

    /// The schema `on_values` of [`DictionaryMask::new`] is planned over.
    pub(crate) fn values_schema() -> Schema {
        Schema::new(vec![Field::new("value", DataType::Utf8, true)])
    }

    /// The rows of `batch` the test keeps (NULL counts as not kept: this is
    /// a filter), deciding on the column's values unless `memo` already
    /// holds the decision for this very values array. `None` when the
    /// column is not a dictionary of `Int32` codes and `Utf8` values (the
    /// caller then evaluates the test the usual way).
    pub(crate) fn rows(
        &self,
        batch: &RecordBatch,
        memo: &mut Memo,
    ) -> DfResult<Option<BooleanBuffer>> {
        let Some(dictionary) = batch
            .columns()
            .get(self.column)
            .and_then(|c| c.as_dictionary_opt::<Int32Type>())
        else {
            return Ok(None);
        };
        let values = dictionary.values();
        if *values.data_type() != DataType::Utf8 {
            return Ok(None);
        }
        let decided = match memo.get(values) {
            Some(d) => d,
            None => {
                let one = RecordBatch::try_new(self.values.clone(), vec![values.clone()])?;
                let passes = self.on_values.evaluate(&one)?.into_array(values.len())?;
                let Some(passes) = passes.as_boolean_opt() else {
                    return datafusion::common::internal_err!(
                        "a dictionary filter gave no booleans"
                    );
                };
                memo.set(values, Decided::of(passes))
            }
        };
        Ok(Some(decided.rows(dictionary.keys())))
    }
}

/// The last decision of a [`DictionaryMask`], by the identity of the values
/// array it was made on (one per stream: a stream's batches come in order).
#[derive(Debug, Default)]
pub(crate) struct Memo {
    last: Option<(ArrayRef, Decided)>,
}

impl Memo {
    fn get(&self, values: &ArrayRef) -> Option<Decided> {
        let (held, decided) = self.last.as_ref()?;
        // the same array (batches sharing one dictionary share its `Arc`), or
        // the same buffers (kept alive by `held`, so never reused)
        let same = Arc::ptr_eq(held, values)
            || (held.len() == values.len() && held.to_data().ptr_eq(&values.to_data()));
        same.then(|| decided.clone())
    }

    fn set(&mut self, values: &ArrayRef, decided: Decided) -> Decided {
        self.last = Some((values.clone(), decided.clone()));
        decided
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Int32Array, StringArray};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{
        BinaryExpr, Column, IsNotNullExpr, Literal, in_list,
    };
    use datafusion::scalar::ScalarValue;

    use super::*;

    fn text(s: &str) -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::Utf8(Some(s.into()))))
    }

    fn value() -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new("value", 0))
    }

    fn equals(s: &str) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(value(), Operator::Eq, text(s)))
    }

    fn among(list: &[&str]) -> Arc<dyn PhysicalExpr> {
        let list = list.iter().map(|s| text(s)).collect();
        in_list(value(), list, &false, &DictionaryMask::values_schema()).unwrap()
    }

    /// A batch of one dictionary column: `codes` (NULL where `None`, with
    /// an out-of-range code under it, as a NULL row may hold) into `values`.
    fn column(values: Vec<Option<&str>>, codes: &[Option<i32>]) -> RecordBatch {
        let raw: Vec<i32> = codes.iter().map(|c| c.unwrap_or(99)).collect();
        let valid: Vec<bool> = codes.iter().map(Option::is_some).collect();
        let keys = Int32Array::new(raw.into(), Some(valid.into()));
        let dictionary =
            DictionaryArray::<Int32Type>::new(keys, Arc::new(StringArray::from(values)));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "c",
            dictionary.data_type().clone(),
            true,
        )]));
        RecordBatch::try_new(schema, vec![Arc::new(dictionary)]).unwrap()
    }

    fn kept(test: Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<bool> {
        let mask = DictionaryMask::new(0, test);
        let rows = mask.rows(batch, &mut Memo::default()).unwrap().unwrap();
        rows.iter().collect()
    }

    /// Each shape of decision keeps exactly the rows whose string passes:
    /// one value, a repeated value, none, several, all; NULL rows and NULL
    /// values never (whatever code a NULL row holds).
    #[test]
    fn rows_kept_are_those_whose_value_passes() {
        let values = vec![Some("a"), Some("b"), None, Some("c"), Some("b")];
        let codes = [Some(0), Some(1), None, Some(2), Some(3), Some(4), Some(0)];
        let batch = column(values, &codes);
        let f = false;
        assert_eq!(kept(equals("a"), &batch), [true, f, f, f, f, f, true]);
        // "b" is two codes: the table, not the one-code comparison
        assert_eq!(kept(equals("b"), &batch), [f, true, f, f, f, true, f]);
        assert_eq!(kept(equals("z"), &batch), [f; 7]);
        assert_eq!(
            kept(among(&["a", "c"]), &batch),
            [true, f, f, f, true, f, true]
        );
        // every value passes, but a NULL row still does not
        let batch = column(vec![Some("a"), Some("b")], &[Some(0), None, Some(1)]);
        let any = Arc::new(IsNotNullExpr::new(value()));
        assert_eq!(kept(any, &batch), [true, f, true]);
    }

    /// Rows are kept by position across whole words of 64 and the part
    /// word after them, for one code and for several.
    #[test]
    fn rows_past_a_word_are_kept_where_they_are() {
        let codes: Vec<Option<i32>> = (0..200).map(|i| Some(i % 3)).collect();
        let batch = column(vec![Some("a"), Some("b"), Some("c")], &codes);
        let one: Vec<bool> = (0..200).map(|i| i % 3 == 1).collect();
        assert_eq!(kept(equals("b"), &batch), one);
        let two: Vec<bool> = (0..200).map(|i| i % 3 != 1).collect();
        assert_eq!(kept(among(&["a", "c"]), &batch), two);
    }

    /// A decision is reused only for the very values array it was made on.
    #[test]
    fn a_decision_is_kept_for_the_same_values_only() {
        let mask = DictionaryMask::new(0, equals("a"));
        let mut memo = Memo::default();
        let codes = [Some(0), Some(1)];
        let first = column(vec![Some("a"), Some("b")], &codes);
        let rows = mask.rows(&first, &mut memo).unwrap().unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [true, false]);
        // the same batch again: decided from the memo, the same rows
        let rows = mask.rows(&first, &mut memo).unwrap().unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [true, false]);
        // the same codes into other values: "a" is now code 1
        let other = column(vec![Some("b"), Some("a")], &codes);
        let rows = mask.rows(&other, &mut memo).unwrap().unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), [false, true]);
    }

    /// A column that is not a dictionary of strings is left to the caller.
    #[test]
    fn other_columns_are_not_decided_here() {
        let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Utf8, true)]));
        let strings = Arc::new(StringArray::from(vec!["a"]));
        let batch = RecordBatch::try_new(schema, vec![strings]).unwrap();
        let mask = DictionaryMask::new(0, equals("a"));
        assert!(mask.rows(&batch, &mut Memo::default()).unwrap().is_none());
    }
}
