//! Built-in mixins declared as data: row filters, column masks, bucket
//! isolation (read side, as plan rewrites) and schema contracts (write side).
//!
//! Policies are JSON documents in each bucket's `policies` store, one per
//! dataset (named like the dataset), plus `_bucket` for bucket settings, so
//! they persist and apply to every client of the store. Before each read the
//! cache is reloaded; if that fails, the read fails (fail closed).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, BooleanArray};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DataFusionError, ScalarValue, TableReference};
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, cast, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::mixins::{Mixin, MixinContext};
use crate::backends::document::DocumentBackend;
use crate::store::error::{Result, StoreError};
use crate::store::hooks::{ReadHook, WriteHook, WriteTarget};
use crate::store::{BackendRegistry, Data, ObjectName, PutOptions, Root, Store, list_buckets};

/// The store prefix that holds policies.
pub const POLICY_STORE: &str = "policies";
/// The document with bucket-wide settings.
pub const BUCKET_DOC: &str = "_bucket";

/// A row filter: rows of the dataset that `role` may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowFilter {
    pub name: String,
    pub role: String,
    /// A SQL predicate over the dataset's columns.
    pub predicate: String,
}

/// What a column mask does to a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskAction {
    /// The column does not exist for the role.
    Hide,
    /// Every value reads as NULL.
    Null,
    /// Values read as a hex SHA-256 digest (string columns).
    Hash,
}

/// A column mask for a role (`*` for everyone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMask {
    pub name: String,
    pub role: String,
    pub column: String,
    pub action: MaskAction,
}

/// One declared column of a schema contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractColumn {
    pub name: String,
    /// A type family: `int`, `float`, `string`, `bool`, `timestamp`, `date`.
    #[serde(rename = "type", default)]
    pub data_type: Option<String>,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Allowed values (compared as SQL literals).
    #[serde(default)]
    pub allowed: Option<Vec<Value>>,
}

fn yes() -> bool {
    true
}

/// Columns every write to a dataset must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Contract {
    pub columns: Vec<ContractColumn>,
}

/// All policies of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DatasetPolicy {
    #[serde(default)]
    pub row_filters: Vec<RowFilter>,
    #[serde(default)]
    pub column_masks: Vec<ColumnMask>,
    #[serde(default)]
    pub contract: Option<Contract>,
}

impl DatasetPolicy {
    fn is_empty(&self) -> bool {
        self.row_filters.is_empty() && self.column_masks.is_empty() && self.contract.is_none()
    }
}

/// Bucket-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BucketPolicy {
    /// Sessions on this bucket cannot read other buckets.
    #[serde(default)]
    pub isolated: bool,
}

/// The policies of every bucket of a root, as last loaded. It reads the
/// policy documents with a session of its own (a plain one: documents need
/// no catalog), so it holds nothing of the sessions whose mixins use it.
pub struct PolicyCache {
    datasets: RwLock<HashMap<(String, String), DatasetPolicy>>,
    isolated: RwLock<HashSet<String>>,
    root: Root,
    session: SessionContext,
    registry: Arc<BackendRegistry>,
}

impl PolicyCache {
    pub fn new(root: Root) -> Self {
        Self {
            datasets: Default::default(),
            isolated: Default::default(),
            root,
            session: SessionContext::new(),
            registry: Arc::new(BackendRegistry::with_backends(vec![Arc::new(
                DocumentBackend,
            )])),
        }
    }

    fn get(&self, bucket: &str, name: &str) -> Option<DatasetPolicy> {
        self.datasets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(bucket.to_string(), name.to_string()))
            .cloned()
    }

    fn is_isolated(&self, bucket: &str) -> bool {
        self.isolated
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(bucket)
    }

    /// Reloads every bucket's policies.
    pub async fn reload(&self) -> Result<()> {
        let mut datasets = HashMap::new();
        let mut isolated = HashSet::new();
        for bucket in list_buckets(&self.root).await? {
            let store = self.policy_store(&bucket);
            // one listing finds each document's newest version; no listing per name
            for (name, version) in store.catalog().head_versions().await? {
                let meta = match store.catalog().read(&name, version).await? {
                    Some(m) if !m.is_tombstone() => m,
                    _ => continue,
                };
                let doc = match store.get_version(&meta, &Default::default()).await? {
                    Data::Document(v) => v,
                    _ => continue,
                };
                let bad = |e: serde_json::Error| StoreError::CorruptMetadata {
                    name: format!("{POLICY_STORE}/{name}"),
                    path: meta.uri.clone(),
                    reason: format!("not a valid policy: {e}"),
                };
                if name.as_str() == BUCKET_DOC {
                    let b: BucketPolicy = serde_json::from_value(doc).map_err(bad)?;
                    if b.isolated {
                        isolated.insert(bucket.clone());
                    }
                } else {
                    let p: DatasetPolicy = serde_json::from_value(doc).map_err(bad)?;
                    datasets.insert((bucket.clone(), name.to_string()), p);
                }
            }
        }
        *self.datasets.write().unwrap_or_else(|e| e.into_inner()) = datasets;
        *self.isolated.write().unwrap_or_else(|e| e.into_inner()) = isolated;
        Ok(())
    }

    fn policy_store(&self, bucket: &str) -> Store {
        Store::new(
            crate::store::Catalog::new(self.root.clone(), bucket, POLICY_STORE),
            self.registry.clone(),
            self.session.clone(),
            Arc::new(crate::store::Hooks::default()),
        )
    }
}

#[async_trait]
impl ReadHook for PolicyCache {
    fn name(&self) -> &str {
        "policies"
    }
    async fn prepare(&self) -> Result<()> {
        self.reload().await
    }
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache").finish_non_exhaustive()
    }
}

/// Reads and changes the policies of one bucket.
pub struct Policies {
    store: Store,
    cache: Arc<PolicyCache>,
}

impl Policies {
    pub(crate) fn new(store: Store, cache: Arc<PolicyCache>) -> Self {
        Self { store, cache }
    }

    /// The policies of `dataset` (empty when none are declared).
    pub async fn get(&self, dataset: &str) -> Result<DatasetPolicy> {
        ObjectName::new(dataset)?;
        if !self.store.exists(dataset).await? {
            return Ok(DatasetPolicy::default());
        }
        let v = self.store.get_document(dataset).await?;
        serde_json::from_value(v).map_err(|e| StoreError::invalid_input(dataset, e))
    }

    /// Replaces the policies of `dataset` (a new version of its document).
    pub async fn set(&self, dataset: &str, policy: &DatasetPolicy) -> Result<()> {
        for f in &policy.row_filters {
            check_predicate(dataset, &f.predicate)?;
        }
        if policy.is_empty() {
            self.store.drop(dataset, true).await?;
        } else {
            let v =
                serde_json::to_value(policy).map_err(|e| StoreError::invalid_input(dataset, e))?;
            self.store.put(v, dataset, PutOptions::default()).await?;
        }
        self.cache.reload().await
    }

    /// Changes the policies of `dataset` with `f`.
    pub async fn update(
        &self,
        dataset: &str,
        f: impl FnOnce(&mut DatasetPolicy) -> Result<()>,
    ) -> Result<()> {
        let mut p = self.get(dataset).await?;
        f(&mut p)?;
        self.set(dataset, &p).await
    }

    /// Isolates (or frees) this bucket: sessions on it cannot read others.
    pub async fn set_isolated(&self, isolated: bool) -> Result<()> {
        let v = serde_json::to_value(BucketPolicy { isolated })
            .map_err(|e| StoreError::invalid_input(BUCKET_DOC, e))?;
        self.store.put(v, BUCKET_DOC, PutOptions::default()).await?;
        self.cache.reload().await
    }
}

/// Rejects a predicate that does not parse, when it is declared.
fn check_predicate(dataset: &str, predicate: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&GenericDialect {})
        .try_with_sql(predicate)
        .and_then(|mut p| p.parse_expr())
        .map(|_| ())
        .map_err(|e| {
            StoreError::invalid_input(
                dataset,
                format!("row filter '{predicate}' is not a SQL predicate: {e}"),
            )
        })
}

/// A session state used only to turn predicate text into expressions.
fn parse_state() -> Arc<SessionState> {
    Arc::new(SessionStateBuilder::new().with_default_features().build())
}

/// The datasets a plan scans, with the scans' qualifiers.
fn for_each_dataset_scan(
    plan: LogicalPlan,
    cx: &MixinContext,
    mut f: impl FnMut(&str, &str, &TableReference, LogicalPlan) -> DfResult<Transformed<LogicalPlan>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up(|node| match &node {
        LogicalPlan::TableScan(scan) => match cx.dataset_of(&scan.table_name) {
            Some((bucket, name)) => {
                let q = scan.table_name.clone();
                f(&bucket, &name, &q, node)
            }
            None => Ok(Transformed::no(node)),
        },
        _ => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

/// Row-level security: each scan of a dataset with row filters gets a filter
/// that keeps the rows any of the user's roles may see, and none when the
/// user has no such role.
#[derive(Debug)]
pub struct RowFilterMixin {
    cache: Arc<PolicyCache>,
    parser: Arc<SessionState>,
}

impl RowFilterMixin {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self {
            cache,
            parser: parse_state(),
        }
    }
}

impl Mixin for RowFilterMixin {
    fn name(&self) -> &str {
        "row_filter"
    }

    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> DfResult<LogicalPlan> {
        for_each_dataset_scan(plan, cx, |bucket, name, _q, scan| {
            let Some(policy) = self
                .cache
                .get(bucket, name)
                .filter(|p| !p.row_filters.is_empty())
            else {
                return Ok(Transformed::no(scan));
            };
            let schema: &DFSchema = scan.schema();
            let mut predicate: Option<Expr> = None;
            for f in policy.row_filters.iter().filter(|f| cx.has_role(&f.role)) {
                let e = self
                    .parser
                    .create_logical_expr(&f.predicate, schema)
                    .map_err(|e| {
                        DataFusionError::Plan(format!(
                            "row filter '{}' of '{name}' ({}) is invalid: {}",
                            f.name,
                            f.predicate,
                            e.strip_backtrace()
                        ))
                    })?;
                predicate = Some(match predicate {
                    None => e,
                    Some(p) => p.or(e),
                });
            }
            let predicate = predicate.unwrap_or_else(|| lit(false));
            let filter = Filter::try_new(predicate, Arc::new(scan))?;
            Ok(Transformed::yes(LogicalPlan::Filter(filter)))
        })
    }
}

/// Column masks: the masked columns of a scan read as NULL or as a digest,
/// or are hidden (removed from the scan and from `SELECT *`).
#[derive(Debug)]
pub struct ColumnMaskMixin {
    cache: Arc<PolicyCache>,
}

impl ColumnMaskMixin {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

impl Mixin for ColumnMaskMixin {
    fn name(&self) -> &str {
        "column_mask"
    }

    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> DfResult<LogicalPlan> {
        let mut hidden: Vec<Column> = Vec::new();
        let plan = for_each_dataset_scan(plan, cx, |bucket, name, q, scan| {
            let Some(policy) = self.cache.get(bucket, name) else {
                return Ok(Transformed::no(scan));
            };
            let masks: Vec<&ColumnMask> = policy
                .column_masks
                .iter()
                .filter(|m| cx.has_role(&m.role))
                .collect();
            if masks.is_empty() {
                return Ok(Transformed::no(scan));
            }
            let schema = scan.schema().clone();
            let mut exprs = Vec::new();
            for (qualifier, field) in schema.iter() {
                let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
                let mask = masks.iter().find(|m| &m.column == field.name());
                let expr = match mask.map(|m| m.action) {
                    None => column,
                    Some(MaskAction::Hide) => {
                        hidden.push(Column::new(Some(q.clone()), field.name()));
                        continue;
                    }
                    Some(MaskAction::Null) => {
                        cast(lit(ScalarValue::Null), field.data_type().clone())
                            .alias_qualified(qualifier.cloned(), field.name())
                    }
                    Some(MaskAction::Hash) => {
                        let digest = datafusion::functions::expr_fn::encode(
                            datafusion::functions::expr_fn::sha256(cast(
                                column,
                                arrow::datatypes::DataType::Utf8,
                            )),
                            lit("hex"),
                        );
                        cast(digest, field.data_type().clone())
                            .alias_qualified(qualifier.cloned(), field.name())
                    }
                };
                exprs.push(expr);
            }
            if exprs.is_empty() {
                return Err(DataFusionError::Plan(format!(
                    "every column of '{name}' is hidden for your roles"
                )));
            }
            let projection = Projection::try_new(exprs, Arc::new(scan))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        })?;
        if hidden.is_empty() {
            return Ok(plan);
        }
        remove_hidden(plan, &hidden)
    }
}

/// Removes plain references to hidden columns from projections (`SELECT *`)
/// and refuses any other use of them. Aliases (`FROM t AS x`) are followed.
fn remove_hidden(plan: LogicalPlan, hidden: &[Column]) -> DfResult<LogicalPlan> {
    let mut hidden: Vec<Column> = hidden.to_vec();
    plan.transform_up(|node| {
        if let LogicalPlan::SubqueryAlias(a) = &node {
            // columns of the aliased input are now qualified by the alias
            let names: Vec<String> = hidden.iter().map(|h| h.name.clone()).collect();
            for n in names {
                hidden.push(Column::new(Some(a.alias.clone()), n));
            }
        }
        let is_hidden = |c: &Column| {
            hidden
                .iter()
                .any(|h| h.name == c.name && (c.relation.is_none() || c.relation == h.relation))
        };
        let node = match node {
            LogicalPlan::Projection(p)
                if p.expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(c) if is_hidden(c))) =>
            {
                let kept: Vec<Expr> = p
                    .expr
                    .iter()
                    .filter(|e| !matches!(e, Expr::Column(c) if is_hidden(c)))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    return Err(DataFusionError::Plan(
                        "the query selects only hidden columns".into(),
                    ));
                }
                LogicalPlan::Projection(Projection::try_new(kept, p.input.clone())?)
            }
            other => {
                for e in other.expressions() {
                    if let Some(c) = e.column_refs().into_iter().find(|c| is_hidden(c)) {
                        return Err(DataFusionError::Plan(format!(
                            "column '{}' is hidden for your roles",
                            c.name
                        )));
                    }
                }
                other.recompute_schema()?
            }
        };
        Ok(Transformed::yes(node))
    })
    .map(|t| t.data)
}

/// Bucket isolation: a session bound to a bucket (by `omega.bound_bucket`, or
/// because its bucket is declared isolated) cannot scan another bucket.
#[derive(Debug)]
pub struct BucketIsolationMixin {
    cache: Arc<PolicyCache>,
}

impl BucketIsolationMixin {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

impl Mixin for BucketIsolationMixin {
    fn name(&self) -> &str {
        "bucket_isolation"
    }

    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> DfResult<LogicalPlan> {
        let bound = cx.bound_bucket.clone().or_else(|| {
            self.cache
                .is_isolated(&cx.bucket)
                .then(|| cx.bucket.clone())
        });
        let Some(bound) = bound else { return Ok(plan) };
        plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let schema = match &scan.table_name {
                    TableReference::Bare { .. } => Some(cx.bucket.clone()),
                    TableReference::Partial { schema, .. }
                    | TableReference::Full { schema, .. } => Some(schema.to_string()),
                };
                if let Some(s) = schema.filter(|s| s != &bound && s != "information_schema") {
                    return Err(DataFusionError::Plan(format!(
                        "this session is bound to bucket '{bound}' and cannot read '{s}' ({})",
                        scan.table_name
                    )));
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        Ok(plan)
    }
}

/// Schema contracts, checked on every table write (put, INSERT, CREATE
/// TABLE AS): declared columns must exist with the declared type family;
/// non-null and allowed-value rules are checked on every row, and a write
/// with violations fails before anything is committed, with their count and
/// first examples.
pub struct ContractHook {
    cache: Arc<PolicyCache>,
}

impl ContractHook {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

fn type_family(t: &arrow::datatypes::DataType) -> &'static str {
    use arrow::datatypes::DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => "int",
        Float16 | Float32 | Float64 | Decimal128(..) | Decimal256(..) => "float",
        Utf8 | LargeUtf8 | Utf8View => "string",
        Dictionary(_, v) => type_family(v),
        Boolean => "bool",
        Timestamp(..) => "timestamp",
        Date32 | Date64 => "date",
        _ => "other",
    }
}

#[async_trait]
impl WriteHook for ContractHook {
    fn name(&self) -> &str {
        "schema_contract"
    }

    async fn rewrite_write(
        &self,
        target: &WriteTarget,
        plan: LogicalPlan,
        session: &SessionContext,
    ) -> Result<LogicalPlan> {
        if target.prefix != "datasets" {
            return Ok(plan);
        }
        self.cache.reload().await?;
        let Some(contract) = self
            .cache
            .get(&target.bucket, &target.name)
            .and_then(|p| p.contract)
        else {
            return Ok(plan);
        };
        let fail = |details: String| StoreError::SchemaMismatch {
            name: target.name.clone(),
            details: format!("schema contract: {details}"),
        };
        let schema = plan.schema().clone();
        let mut problems = Vec::new();
        let mut checks: Vec<(String, Expr)> = Vec::new();
        for c in &contract.columns {
            let Ok(field) = schema.field_with_unqualified_name(&c.name) else {
                problems.push(format!("column '{}' is missing", c.name));
                continue;
            };
            if let Some(t) = &c.data_type
                && type_family(field.data_type()) != t.to_ascii_lowercase()
            {
                problems.push(format!(
                    "column '{}' is {} but the contract says {t}",
                    c.name,
                    field.data_type()
                ));
            }
            let col = Expr::Column(Column::from_name(&c.name));
            if !c.nullable {
                checks.push((format!("'{}' is null", c.name), col.clone().is_null()));
            }
            if let Some(allowed) = &c.allowed {
                let list: Vec<Expr> = allowed
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => lit(s.clone()),
                        Value::Bool(b) => lit(*b),
                        Value::Number(n) if n.is_i64() => lit(n.as_i64().unwrap_or_default()),
                        Value::Number(n) => lit(n.as_f64().unwrap_or_default()),
                        _ => lit(ScalarValue::Null),
                    })
                    .collect();
                checks.push((
                    format!("'{}' not in {}", c.name, Value::Array(allowed.clone())),
                    col.clone().is_not_null().and(col.in_list(list, true)),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(fail(problems.join("; ")));
        }
        if checks.is_empty() {
            return Ok(plan);
        }
        // Evaluate the rules batch by batch as the rows stream to the writer.
        let state = session.state();
        let physical: Vec<(String, Arc<dyn datafusion::physical_expr::PhysicalExpr>)> = checks
            .into_iter()
            .map(|(label, e)| {
                state
                    .create_physical_expr(e, &schema)
                    .map(|p| (label, p))
                    .map_err(|e| fail(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let df = datafusion::dataframe::DataFrame::new(state, plan);
        let stream = df.execute_stream().await.map_err(|e| fail(e.to_string()))?;
        let out_schema = stream.schema();
        let name = target.name.clone();
        let mut violations = 0u64;
        let mut examples: Vec<String> = Vec::new();
        let checked = stream
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .filter_map(move |item| {
                let result = match item {
                    Some(Ok(batch)) => match check_batch(&batch, &physical, &mut violations, &mut examples) {
                        Ok(()) => Some(Ok(batch)),
                        Err(e) => Some(Err(e)),
                    },
                    Some(Err(e)) => Some(Err(e)),
                    None if violations > 0 => Some(Err(DataFusionError::Execution(format!(
                        "schema contract of '{name}' violated by {violations} row(s); first examples: {}",
                        examples.join("; ")
                    )))),
                    None => None,
                };
                futures::future::ready(result)
            });
        let stream = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(out_schema, checked),
        );
        let (plan, _) = crate::backends::ingest::object_to_plan(
            &target.name,
            crate::store::Object::Stream(stream),
            None,
        )?;
        Ok(plan)
    }
}

fn check_batch(
    batch: &RecordBatch,
    checks: &[(String, Arc<dyn datafusion::physical_expr::PhysicalExpr>)],
    violations: &mut u64,
    examples: &mut Vec<String>,
) -> DfResult<()> {
    for (label, expr) in checks {
        let bad = expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let Some(bad) = bad.as_any().downcast_ref::<BooleanArray>() else {
            continue;
        };
        for i in 0..bad.len() {
            if bad.is_valid(i) && bad.value(i) {
                *violations += 1;
                if examples.len() < 3 {
                    let row = arrow::util::pretty::pretty_format_batches(&[batch.slice(i, 1)])
                        .map(|t| t.to_string().lines().nth(3).unwrap_or_default().to_string())
                        .unwrap_or_default();
                    examples.push(format!("{label}: {}", row.trim()));
                }
            }
        }
    }
    Ok(())
}
