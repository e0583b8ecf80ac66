//! `sql.view`: a stored query, resolved at every read (a view over whatever
//! the tables it names hold then). Versioned like any object.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub const KIND: &str = "sql.view";

/// The definition of a view: one SQL query.
#[derive(Debug, Clone)]
pub struct SqlView {
    pub sql: String,
}

pub struct ViewBackend;

#[async_trait]
impl DataBackend for ViewBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Any(v) if v.is::<SqlView>())
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        _opts: &PutOptions,
    ) -> Result<Written> {
        let Object::Any(v) = obj else {
            return Err(StoreError::invalid_input(cx.name, "not a view"));
        };
        let view = v
            .downcast_ref::<SqlView>()
            .ok_or_else(|| StoreError::invalid_input(cx.name, "not a view"))?;
        // Planning it now rejects a view over missing tables or bad SQL.
        let df = plan_in_bucket(cx, &view.sql).await.map_err(|e| {
            StoreError::invalid_input(
                cx.name,
                format!("the view's query does not plan: {}", e.strip_backtrace()),
            )
        })?;
        Ok(Written {
            kind: KIND.into(),
            uri: String::new(),
            kind_meta: json!({ "sql": view.sql, "schema": super::table::schema_json(df.schema().inner()) }),
        })
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> Result<Data> {
        let sql = meta
            .kind_meta
            .get("sql")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::CorruptMetadata {
                name: meta.name.clone(),
                path: meta.uri.clone(),
                reason: "no query recorded".into(),
            })?;
        let df = plan_in_bucket(cx, sql).await.map_err(|e| {
            StoreError::table(
                &meta.name,
                format!("view query failed: {}", e.strip_backtrace()),
            )
        })?;
        Ok(Data::Table(df))
    }

    async fn drop_data(&self, _cx: &BackendContext<'_>, _versions: &[Metadata]) -> Result<()> {
        Ok(())
    }
}

/// Plans a view's query as the view's bucket sees it: unqualified names
/// resolve in the bucket the view is stored in (not the reader's), and each
/// scan is renamed `omega.<bucket>.<name>` (under an alias of the name as
/// written, so the query's column references still hold), so that the read
/// rules judge it as that dataset whichever session reads the view. The
/// plan runs under the reader's identity: its policies apply.
async fn plan_in_bucket(
    cx: &BackendContext<'_>,
    sql: &str,
) -> datafusion::error::Result<datafusion::dataframe::DataFrame> {
    use datafusion::common::TableReference;
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::{LogicalPlan, SubqueryAlias, TableScanBuilder};
    let mut state = cx.session.state();
    state.config_mut().options_mut().catalog.default_schema = cx.bucket.to_string();
    let plan = state.create_logical_plan(sql).await?;
    let bucket = cx.bucket.to_string();
    let plan = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let full = match &scan.table_name {
                TableReference::Bare { table } => TableReference::full(
                    crate::store::CATALOG_NAME,
                    bucket.as_str(),
                    table.as_ref(),
                ),
                TableReference::Partial { schema, table } => TableReference::full(
                    crate::store::CATALOG_NAME,
                    schema.as_ref(),
                    table.as_ref(),
                ),
                TableReference::Full { .. } => return Ok(Transformed::no(node)),
            };
            let alias = scan.table_name.clone();
            let renamed = TableScanBuilder::new(full, scan.source.clone())
                .with_projection(scan.projection.clone())
                .with_filters(scan.filters.clone())
                .with_fetch(scan.fetch)
                .build()?;
            let aliased = SubqueryAlias::try_new(
                std::sync::Arc::new(LogicalPlan::TableScan(renamed)),
                alias,
            )?;
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(aliased)))
        })?
        .data;
    Ok(datafusion::dataframe::DataFrame::new(state, plan))
}
