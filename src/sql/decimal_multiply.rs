//! Decimal multiplication on 64-bit values.
//!
//! Arrow multiplies `Decimal128` values with an overflow-checked 128-bit
//! multiply (a call into compiler-rt per value), about 8 ns per row on this
//! machine: in TPC-H q01 the two products `l_extendedprice * (1 -
//! l_discount) * (1 + l_tax)` cost a third of the query's CPU. Values of a
//! `DECIMAL(15,2)` column, and nearly every product of such values, fit in
//! 64 bits, and the product of two 64-bit values always fits in 128 bits
//! (|a·b| < 2^126), so it needs no overflow check: one widening multiply.
//!
//! The [`NarrowDecimalMultiply`] rule (a physical optimizer rule) wraps each
//! `Decimal128 * Decimal128` of a projection or of an aggregate's arguments
//! in a [`NarrowDecimalMultiplyExpr`], which checks per batch that both sides'
//! values fit in 64 bits and multiplies them so; a batch where one does not
//! goes to arrow's kernel as before. The result's type (arrow's: precision
//! `p1 + p2 + 1` up to 38, scale `s1 + s2`) and values are arrow's, and the
//! expression prints as the multiplication it wraps, so plans read the same.
//!
//! `SET omega_exec.narrow_decimal_multiply = false` turns it off.
//!
//! The same rule gives `constant ± decimal` its one-rescale evaluation
//! (`decimal_constant_add.rs`, `omega_exec.decimal_constant_add`): both
//! rewrite the decimal arithmetic of the same nodes.

use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::compute::kernels::numeric::mul_wrapping;
use arrow::datatypes::{DECIMAL128_MAX_PRECISION, DECIMAL128_MAX_SCALE, DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr_common::datum::apply;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateInputMode};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use super::binary_wrapper::wrap_binary_expr;
use super::decimal_constant_add::DecimalConstantAddExpr;
use super::options::ExecOptions;

/// The physical optimizer rule that gives `Decimal128 * Decimal128` in
/// projections and aggregate arguments the 64-bit multiply, and `constant ±
/// Decimal128` the one-rescale sum (see the module doc). Filters, join conditions and grouping keys keep arrow's kernel:
/// products there are rare, and those nodes carry more state to rebuild.
#[derive(Debug, Default)]
pub struct NarrowDecimalMultiply;

impl PhysicalOptimizerRule for NarrowDecimalMultiply {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let options = config.extensions.get::<ExecOptions>();
        let on = Rewrites {
            multiply: options.is_none_or(|o| o.narrow_decimal_multiply),
            constant_add: options.is_none_or(|o| o.decimal_constant_add),
        };
        if !on.multiply && !on.constant_add {
            return Ok(plan);
        }
        plan.transform_up(|node| rewrite_node(node, on)).data()
    }

    fn name(&self) -> &str {
        "omega_narrow_decimal_multiply"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Which decimal expressions the rule rewrites.
#[derive(Debug, Clone, Copy)]
struct Rewrites {
    /// `a * b` → [`NarrowDecimalMultiplyExpr`]
    multiply: bool,
    /// `constant ± a` → [`DecimalConstantAddExpr`]
    constant_add: bool,
}

fn rewrite_node(
    node: Arc<dyn ExecutionPlan>,
    on: Rewrites,
) -> DfResult<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let schema = p.input().schema();
        let mut changed = false;
        let mut exprs = Vec::with_capacity(p.expr().len());
        for e in p.expr() {
            let new = rewrite_expr(&e.expr, &schema, on)?;
            changed |= new.transformed;
            exprs.push(ProjectionExpr {
                expr: new.data,
                alias: e.alias.clone(),
            });
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        let rebuilt: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(exprs, Arc::clone(p.input()))?);
        return Ok(Transformed::yes(rebuilt));
    }
    if let Some(a) = node.downcast_ref::<AggregateExec>() {
        // Only stages that evaluate arguments on input rows.
        if a.mode().input_mode() != AggregateInputMode::Raw {
            return Ok(Transformed::no(node));
        }
        let schema = a.input_schema();
        let mut changed = false;
        let mut aggregates = Vec::with_capacity(a.aggr_expr().len());
        for agg in a.aggr_expr() {
            let mut args = Vec::new();
            let mut arg_changed = false;
            for arg in agg.expressions() {
                let new = rewrite_expr(&arg, &schema, on)?;
                arg_changed |= new.transformed;
                args.push(new.data);
            }
            let order_bys = agg
                .order_bys()
                .iter()
                .map(|s| Arc::clone(&s.expr))
                .collect();
            match agg.with_new_expressions(args, order_bys) {
                Some(new) if arg_changed => {
                    changed = true;
                    aggregates.push(Arc::new(new));
                }
                _ => aggregates.push(Arc::clone(agg)),
            }
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        let rebuilt: Arc<dyn ExecutionPlan> = Arc::new(a.with_new_aggr_exprs(aggregates));
        return Ok(Transformed::yes(rebuilt));
    }
    Ok(Transformed::no(node))
}

/// `expr` with each decimal multiplication (and constant sum) in it wrapped.
fn rewrite_expr(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
    on: Rewrites,
) -> DfResult<Transformed<Arc<dyn PhysicalExpr>>> {
    Arc::clone(expr).transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        if on.constant_add && DecimalConstantAddExpr::applies(b, schema)? {
            let wrapped: Arc<dyn PhysicalExpr> = Arc::new(DecimalConstantAddExpr(b.clone()));
            return Ok(Transformed::yes(wrapped));
        }
        let decimals = matches!(b.left().data_type(schema)?, DataType::Decimal128(..))
            && matches!(b.right().data_type(schema)?, DataType::Decimal128(..));
        if !on.multiply || *b.op() != Operator::Multiply || !decimals {
            return Ok(Transformed::no(e));
        }
        let wrapped: Arc<dyn PhysicalExpr> = Arc::new(NarrowDecimalMultiplyExpr(b.clone()));
        Ok(Transformed::yes(wrapped))
    })
}

/// A `Decimal128 * Decimal128` that multiplies in 64 bits where both sides'
/// values allow it (see the module doc). Everything but evaluation is the
/// wrapped [`BinaryExpr`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NarrowDecimalMultiplyExpr(BinaryExpr);

wrap_binary_expr!(NarrowDecimalMultiplyExpr);

impl NarrowDecimalMultiplyExpr {
    fn kernel(&self, l: &ColumnarValue, r: &ColumnarValue) -> DfResult<ColumnarValue> {
        if let Some(product) = multiply_narrow(l, r)? {
            return Ok(ColumnarValue::Array(product));
        }
        // Decimal products are overflow-checked in arrow whatever the
        // kernel's name; this is the call the wrapped BinaryExpr makes.
        apply(l, r, mul_wrapping)
    }
}

/// `l * r` in 64 bits, or `None` where arrow's kernel must answer: a side
/// that is not `Decimal128`, a value beyond 64 bits, a scale beyond 38, a
/// null scalar, or two scalars.
fn multiply_narrow(l: &ColumnarValue, r: &ColumnarValue) -> DfResult<Option<ArrayRef>> {
    let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) =
        (l.data_type(), r.data_type())
    else {
        return Ok(None);
    };
    // arrow's result type for a decimal product
    let precision = (p1 + p2 + 1).min(DECIMAL128_MAX_PRECISION);
    let scale = s1 as i16 + s2 as i16;
    if scale > DECIMAL128_MAX_SCALE as i16 {
        return Ok(None);
    }
    let (values, nulls) = match (l, r) {
        (ColumnarValue::Array(a), ColumnarValue::Array(b)) => {
            let (a, b) = (a.as_primitive(), b.as_primitive());
            if !fits_64(a) || !fits_64(b) {
                return Ok(None);
            }
            let values: Vec<i128> = a
                .values()
                .iter()
                .zip(b.values().iter())
                .map(|(x, y)| widening(*x, *y))
                .collect();
            (values, NullBuffer::union(a.nulls(), b.nulls()))
        }
        (ColumnarValue::Array(a), ColumnarValue::Scalar(s))
        | (ColumnarValue::Scalar(s), ColumnarValue::Array(a)) => {
            let ScalarValue::Decimal128(Some(k), ..) = s else {
                return Ok(None);
            };
            let a: &Decimal128Array = a.as_primitive();
            if *k as i64 as i128 != *k || !fits_64(a) {
                return Ok(None);
            }
            let values: Vec<i128> = a.values().iter().map(|x| widening(*x, *k)).collect();
            (values, a.nulls().cloned())
        }
        _ => return Ok(None),
    };
    let product = Decimal128Array::new(ScalarBuffer::from(values), nulls)
        .with_precision_and_scale(precision, scale as i8)?;
    Ok(Some(Arc::new(product)))
}

/// Whether every value slot of `a` (nulls' slots too: they are multiplied
/// as well) holds a value that fits in 64 bits.
fn fits_64(a: &Decimal128Array) -> bool {
    a.values().iter().all(|v| *v as i64 as i128 == *v)
}

/// The product of two values that fit in 64 bits: it fits in 127 bits.
#[inline]
fn widening(x: i128, y: i128) -> i128 {
    (x as i64 as i128) * (y as i64 as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::binary_wrapper::decimals;
    use arrow::compute::kernels::numeric::mul;

    fn arrow_product(l: &ColumnarValue, r: &ColumnarValue) -> ArrayRef {
        match apply(l, r, mul).unwrap() {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array().unwrap(),
        }
    }

    #[test]
    fn products_equal_arrows_with_their_type_and_nulls() {
        let big = i64::MAX as i128;
        let a = decimals(
            &[Some(1234), None, Some(-99_999), Some(big), Some(-big)],
            15,
            2,
        );
        let b = decimals(&[Some(-7), Some(3), None, Some(big), Some(big)], 16, 4);
        let (l, r) = (ColumnarValue::Array(a), ColumnarValue::Array(b));
        let ours = multiply_narrow(&l, &r)
            .unwrap()
            .expect("all values fit 64 bits");
        assert_eq!(&ours, &arrow_product(&l, &r));
        assert_eq!(ours.data_type(), &DataType::Decimal128(32, 6));

        let k = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(-250), 3, 2));
        let ours = multiply_narrow(&k, &l)
            .unwrap()
            .expect("scalar fits 64 bits");
        assert_eq!(&ours, &arrow_product(&k, &l));
        let ours = multiply_narrow(&l, &k)
            .unwrap()
            .expect("scalar fits 64 bits");
        assert_eq!(&ours, &arrow_product(&l, &k));
    }

    #[test]
    fn values_beyond_64_bits_go_to_arrows_kernel() {
        let wide = decimals(&[Some(1), Some(i64::MAX as i128 + 1)], 38, 0);
        let small = decimals(&[Some(2), Some(3)], 10, 0);
        let (l, r) = (ColumnarValue::Array(wide), ColumnarValue::Array(small));
        assert!(multiply_narrow(&l, &r).unwrap().is_none());
        let null = ColumnarValue::Scalar(ScalarValue::Decimal128(None, 10, 0));
        assert!(multiply_narrow(&r, &null).unwrap().is_none());
        let too_fine = ColumnarValue::Array(decimals(&[Some(1)], 38, 20));
        assert!(multiply_narrow(&too_fine, &too_fine).unwrap().is_none());
    }
}
