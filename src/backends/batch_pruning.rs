//! Pruning in-memory batches by statistics, as Parquet prunes row groups
//! and pages: the minimum, maximum and null count of every column of every
//! batch, computed once when the batches are loaded, let a filter skip the
//! batches that cannot hold a matching row (a point lookup on a sorted key
//! reads one batch instead of all).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Accumulator, Expr};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;

/// Statistics of a list of batches, one entry per batch in order.
#[derive(Debug)]
pub struct BatchStatistics {
    schema: SchemaRef,
    /// Per column: the batches' minimums and maximums (`None`: a type
    /// without an order the accumulators know).
    min: Vec<Option<ArrayRef>>,
    max: Vec<Option<ArrayRef>>,
    nulls: Vec<ArrayRef>,
    rows: ArrayRef,
}

impl BatchStatistics {
    /// Computes the statistics of `batches` (all of `schema`).
    pub fn new(schema: SchemaRef, batches: &[&RecordBatch]) -> Self {
        let columns = schema.fields().len();
        let bound = |c: usize, min: bool| -> Option<ArrayRef> {
            let dtype = schema.field(c).data_type();
            let values = batches
                .iter()
                .map(|b| {
                    let array = [b.column(c).clone()];
                    let mut acc: Box<dyn Accumulator> = match min {
                        true => Box::new(MinAccumulator::try_new(dtype).ok()?),
                        false => Box::new(MaxAccumulator::try_new(dtype).ok()?),
                    };
                    acc.update_batch(&array).ok()?;
                    acc.evaluate().ok()
                })
                .collect::<Option<Vec<ScalarValue>>>()?;
            if values.is_empty() {
                return None;
            }
            ScalarValue::iter_to_array(values).ok()
        };
        let count = |f: &dyn Fn(&RecordBatch) -> u64| -> ArrayRef {
            Arc::new(batches.iter().map(|b| f(b)).collect::<UInt64Array>())
        };
        BatchStatistics {
            min: (0..columns).map(|c| bound(c, true)).collect(),
            max: (0..columns).map(|c| bound(c, false)).collect(),
            nulls: (0..columns)
                .map(|c| count(&|b: &RecordBatch| b.column(c).null_count() as u64))
                .collect(),
            rows: count(&|b: &RecordBatch| b.num_rows() as u64),
            schema,
        }
    }

    /// Which batches may hold rows that pass every one of `filters`; `None`
    /// when the filters prune nothing (no filter, or none the statistics
    /// can decide).
    pub fn keep(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Option<Vec<bool>>> {
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return Ok(None);
        };
        let df_schema = DFSchema::try_from(self.schema.clone())?;
        let physical = state.create_physical_expr(predicate, &df_schema)?;
        // `None`: trivially true, or nothing the statistics can decide
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .build(physical)
        else {
            return Ok(None);
        };
        Ok(Some(pruning.prune(self)?))
    }

    fn column(&self, column: &Column) -> Option<usize> {
        self.schema.index_of(column.name()).ok()
    }
}

impl PruningStatistics for BatchStatistics {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.min[self.column(column)?].clone()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.max[self.column(column)?].clone()
    }

    fn num_containers(&self) -> usize {
        self.rows.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        Some(self.nulls[self.column(column)?].clone())
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(self.rows.clone())
    }

    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{SessionContext, col, lit};

    fn batch(schema: &SchemaRef, ids: std::ops::Range<i64>, name: Option<&str>) -> RecordBatch {
        let n = (ids.end - ids.start) as usize;
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(StringArray::from(vec![name; n])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn filters_keep_only_the_batches_that_may_match() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batches = [
            batch(&schema, 0..10, Some("a")),
            batch(&schema, 10..20, Some("b")),
            batch(&schema, 20..30, None),
        ];
        let stats = BatchStatistics::new(schema, &batches.iter().collect::<Vec<_>>());
        let state = SessionContext::new().state();
        let keep = |filters: &[Expr]| stats.keep(&state, filters).unwrap();
        assert_eq!(
            keep(&[col("id").eq(lit(12i64))]),
            Some(vec![false, true, false])
        );
        assert_eq!(
            keep(&[col("id").gt_eq(lit(5i64)), col("id").lt(lit(11i64))]),
            Some(vec![true, true, false])
        );
        let by_name = keep(&[col("name").eq(lit("a"))]).unwrap();
        assert_eq!(by_name[..2], [true, false]);
        assert_eq!(
            keep(&[col("name").is_null()]),
            Some(vec![false, false, true])
        );
        assert_eq!(
            keep(&[col("id").eq(lit(99i64))]),
            Some(vec![false, false, false])
        );
        assert_eq!(keep(&[]), None, "no filter prunes nothing");
    }
}
