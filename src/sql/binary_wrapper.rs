//! A physical expression that is a [`BinaryExpr`] evaluated by another
//! kernel: [`wrap_binary_expr!`] gives a newtype over the `BinaryExpr`
//! everything but evaluation (type, children, display, SQL), so a plan reads
//! the same with or without it.
//!
//! [`BinaryExpr`]: datafusion::physical_expr::expressions::BinaryExpr

/// Implements `Display` and `PhysicalExpr` for `$name(BinaryExpr)`, whose
/// inherent `fn kernel(&self, l: &ColumnarValue, r: &ColumnarValue) ->
/// DfResult<ColumnarValue>` evaluates the two sides.
macro_rules! wrap_binary_expr {
    ($name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl datafusion::physical_expr::PhysicalExpr for $name {
            fn return_field(
                &self,
                input_schema: &arrow::datatypes::Schema,
            ) -> datafusion::error::Result<arrow::datatypes::FieldRef> {
                self.0.return_field(input_schema)
            }

            fn evaluate(
                &self,
                batch: &arrow::array::RecordBatch,
            ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
                let l = self.0.left().evaluate(batch)?;
                let r = self.0.right().evaluate(batch)?;
                self.kernel(&l, &r)
            }

            fn children(
                &self,
            ) -> Vec<&std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
                vec![self.0.left(), self.0.right()]
            }

            fn with_new_children(
                self: std::sync::Arc<Self>,
                children: Vec<std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
            ) -> datafusion::error::Result<
                std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            > {
                let inner = std::sync::Arc::new(self.0.clone()).with_new_children(children)?;
                match inner.downcast_ref::<datafusion::physical_expr::expressions::BinaryExpr>() {
                    Some(b) => Ok(std::sync::Arc::new(Self(b.clone()))),
                    None => Ok(inner),
                }
            }

            fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt_sql(f)
            }
        }
    };
}

pub(crate) use wrap_binary_expr;

/// A `Decimal128(p, s)` array of `values`, for the wrapped kernels' tests.
#[cfg(test)]
pub(crate) fn decimals(values: &[Option<i128>], p: u8, s: i8) -> arrow::array::ArrayRef {
    std::sync::Arc::new(
        arrow::array::Decimal128Array::from(values.to_vec())
            .with_precision_and_scale(p, s)
            .unwrap(),
    )
}
