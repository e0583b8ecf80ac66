//! A constant added to or subtracted from a decimal column, rescaled once.
//!
//! Arrow adds decimals of different scales by bringing both sides to the
//! result's scale, and does so per value, scalar side included: `1 -
//! l_discount` (a `DECIMAL(20,0)` constant and a `DECIMAL(15,2)` column)
//! costs two overflow-checked 128-bit multiplies per row (compiler-rt
//! calls). In TPC-H q01, `1 - l_discount` and `1 + l_tax` were a quarter of
//! the query's CPU. Here the constant is rescaled once; when the column
//! already has the result's scale (the usual case: a literal has scale 0)
//! each value costs one checked 128-bit add or subtract, arrow's own
//! operation, so values, NULLs, result type and overflow errors are
//! arrow's. Anything else goes to arrow's kernel as before.
//!
//! The [`super::decimal_multiply::NarrowDecimalMultiply`] rule puts the
//! [`DecimalConstantAddExpr`] in projections and aggregate arguments;
//! `SET omega_exec.decimal_constant_add = false` turns it off.

use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Decimal128Array};
use arrow::datatypes::{ArrowNativeTypeOp, DECIMAL128_MAX_PRECISION, DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr_common::datum::apply;

use super::binary_wrapper::wrap_binary_expr;

/// A `Decimal128 ± Decimal128` that rescales a constant side once (see the
/// module doc). Everything but evaluation is the wrapped [`BinaryExpr`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecimalConstantAddExpr(pub(crate) BinaryExpr);

impl DecimalConstantAddExpr {
    /// Whether `b` is an addition or subtraction this expression answers
    /// faster: decimals on both sides (types in `schema`), one side a
    /// literal (a sum of two columns stays arrow's, unwrapped).
    pub(crate) fn applies(b: &BinaryExpr, schema: &Schema) -> DfResult<bool> {
        let literal = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().is_some();
        Ok(matches!(b.op(), Operator::Plus | Operator::Minus)
            && (literal(b.left()) || literal(b.right()))
            && matches!(b.left().data_type(schema)?, DataType::Decimal128(..))
            && matches!(b.right().data_type(schema)?, DataType::Decimal128(..)))
    }
}

wrap_binary_expr!(DecimalConstantAddExpr);

impl DecimalConstantAddExpr {
    fn kernel(&self, l: &ColumnarValue, r: &ColumnarValue) -> DfResult<ColumnarValue> {
        let subtract = *self.0.op() == Operator::Minus;
        if let Some(sum) = add_constant(l, r, subtract)? {
            return Ok(ColumnarValue::Array(sum));
        }
        // the calls the wrapped BinaryExpr makes
        if subtract {
            apply(l, r, arrow::compute::kernels::numeric::sub_wrapping)
        } else {
            apply(l, r, arrow::compute::kernels::numeric::add_wrapping)
        }
    }
}

/// `l + r` (or `l - r`) where one side is a non-null constant of a smaller
/// scale than the column's, or `None` where arrow's kernel must answer.
fn add_constant(
    l: &ColumnarValue,
    r: &ColumnarValue,
    subtract: bool,
) -> DfResult<Option<ArrayRef>> {
    let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) =
        (l.data_type(), r.data_type())
    else {
        return Ok(None);
    };
    // arrow's result type for a decimal sum (Hive's rules)
    let scale = s1.max(s2);
    let precision = ((scale.saturating_add((p1 as i8 - s1).max(p2 as i8 - s2))) as u8)
        .saturating_add(1)
        .min(DECIMAL128_MAX_PRECISION);
    let (k, column, k_scale, constant_left) = match (l, r) {
        (ColumnarValue::Scalar(k), ColumnarValue::Array(a)) => (k, a, s1, true),
        (ColumnarValue::Array(a), ColumnarValue::Scalar(k)) => (k, a, s2, false),
        _ => return Ok(None),
    };
    let ScalarValue::Decimal128(Some(k), ..) = k else {
        return Ok(None);
    };
    // equal scales are arrow's fast case; a column of a smaller scale would
    // need a rescale per value
    if k_scale >= scale {
        return Ok(None);
    }
    let Some(k) = 10i128
        .pow_checked((scale - k_scale) as u32)
        .ok()
        .and_then(|m| k.mul_checked(m).ok())
    else {
        return Ok(None);
    };
    let column: &Decimal128Array = column.as_primitive();
    let sum: Decimal128Array = match (constant_left, subtract) {
        (_, false) => column.try_unary(|v| k.add_checked(v))?,
        (true, true) => column.try_unary(|v| k.sub_checked(v))?,
        (false, true) => column.try_unary(|v| v.sub_checked(k))?,
    };
    Ok(Some(Arc::new(
        sum.with_precision_and_scale(precision, scale)?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::binary_wrapper::decimals;
    use arrow::compute::kernels::numeric::{add_wrapping, sub_wrapping};

    fn arrows(l: &ColumnarValue, r: &ColumnarValue, subtract: bool) -> DfResult<ArrayRef> {
        let f = if subtract { sub_wrapping } else { add_wrapping };
        Ok(match apply(l, r, f)? {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(s) => s.to_array()?,
        })
    }

    #[test]
    fn sums_equal_arrows_with_their_type_and_nulls() {
        let column = ColumnarValue::Array(decimals(
            &[Some(4), None, Some(-99_999), Some(10_000_000_000)],
            15,
            2,
        ));
        for k in [1i128, -7, 0] {
            let k = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(k), 20, 0));
            for subtract in [false, true] {
                for (l, r) in [(&k, &column), (&column, &k)] {
                    let ours = add_constant(l, r, subtract).unwrap().expect("fast path");
                    assert_eq!(&ours, &arrows(l, r, subtract).unwrap());
                    assert_eq!(ours.data_type(), &DataType::Decimal128(23, 2));
                }
            }
        }
    }

    #[test]
    fn overflow_fails_as_arrow_fails() {
        let max = ColumnarValue::Array(decimals(&[Some(i128::MAX - 50)], 38, 2));
        let one = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(1), 10, 0));
        let ours = add_constant(&one, &max, false).unwrap_err().to_string();
        let theirs = arrows(&one, &max, false).unwrap_err().to_string();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn other_shapes_go_to_arrows_kernel() {
        let column = ColumnarValue::Array(decimals(&[Some(1)], 15, 2));
        let same_scale = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(1), 10, 2));
        assert!(add_constant(&same_scale, &column, false).unwrap().is_none());
        let finer = ColumnarValue::Scalar(ScalarValue::Decimal128(Some(1), 10, 4));
        assert!(add_constant(&finer, &column, true).unwrap().is_none());
        let null = ColumnarValue::Scalar(ScalarValue::Decimal128(None, 10, 0));
        assert!(add_constant(&column, &null, false).unwrap().is_none());
        assert!(add_constant(&column, &column, false).unwrap().is_none());
    }
}
