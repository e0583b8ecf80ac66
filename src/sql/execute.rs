//! Runs SQL against an engine: reads are DataFusion plans over the `omega`
//! catalog; writes (CREATE TABLE AS, INSERT, DELETE, UPDATE, DROP, CREATE
//! VIEW, CREATE EXTERNAL TABLE) are routed to the store, each an atomic new
//! version; policy statements change the stored policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::UInt64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ParamValues, ScalarValue, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{
    DdlStatement, DmlStatement, Expr, LogicalPlan, ResetVariable, SetVariable, Statement, WriteOp,
    dml::InsertOp,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;

use super::SqlError;
use super::catalog::OmegaCatalog;
use super::mixins::MixinContext;
use super::policies::{
    applicable_filters, describe_identity, masked_columns, parse_state, visible_rows,
};
use super::session::SqlEngine;
use super::{model_functions, model_statements, policy_sql};
use crate::backends::view::SqlView;
use crate::engine::Engine;
use crate::store::Access;
use crate::store::{
    CATALOG_NAME, ExternalFormat, Object, PutMode, PutOptions, StoreError, TableChange,
};
use datafusion::common::tree_node::TreeNodeRecursion;

/// Runs every statement of `sql` in order; returns the last one's result
/// (a lazy frame for a query, a one-row `count` for a write).
pub async fn run(
    engine: &Engine,
    sql: &str,
    params: &[ScalarValue],
) -> Result<DataFrame, SqlError> {
    prepare(engine, sql).await?;
    let statements = split_statements(sql);
    if statements.is_empty() {
        return Err(SqlError::Usage("no SQL statement given".into()));
    }
    let mut last = None;
    let n = statements.len();
    for (i, text) in statements.into_iter().enumerate() {
        let df = run_one(engine, &text, params).await?;
        if i + 1 < n {
            // earlier statements run to completion (their effects matter)
            df.collect().await?;
        } else {
            last = Some(df);
        }
    }
    last.ok_or_else(|| SqlError::Usage("no SQL statement given".into()))
}

/// Runs exactly one query (`SELECT`, `WITH …`, `VALUES`): what
/// `evaluate()` and `fit --sql` accept. A script, a write or any other
/// statement is refused before anything runs (a stored view would otherwise
/// re-run it under each reader's identity).
pub async fn run_select(engine: &Engine, sql: &str) -> Result<DataFrame, SqlError> {
    let statements = split_statements(sql);
    let [text] = statements.as_slice() else {
        return Err(SqlError::Usage(format!(
            "expected exactly one SELECT query, got {} statements: {sql}",
            statements.len()
        )));
    };
    if !is_single_query(text) {
        return Err(SqlError::Usage(format!(
            "expected one SELECT query, got: {text}"
        )));
    }
    run(engine, text, &[]).await
}

/// True when `sql` is exactly one query (`SELECT`, `WITH …`, `VALUES`),
/// which reads and writes nothing else.
pub fn is_single_query(sql: &str) -> bool {
    let statements = split_statements(sql);
    let [text] = statements.as_slice() else {
        return false;
    };
    let Ok(parsed) = DFParser::parse_sql_with_dialect(text, &GenericDialect {}) else {
        return false;
    };
    parsed.len() == 1
        && matches!(
            parsed.front(),
            Some(DFStatement::Statement(s)) if matches!(s.as_ref(), SqlStatement::Query(_))
        )
}

/// True when the last statement of `sql` only changes the session it runs
/// in (`SET`, `RESET`, `PREPARE`): run in a session that ends with the
/// request, it would change nothing.
pub fn ends_by_changing_session(sql: &str) -> bool {
    let statements = split_statements(sql);
    let Some(text) = statements.last() else {
        return false;
    };
    let Ok(parsed) = DFParser::parse_sql_with_dialect(text, &GenericDialect {}) else {
        return false;
    };
    match parsed.back() {
        Some(DFStatement::Reset(_)) => true,
        Some(DFStatement::Statement(s)) => matches!(
            s.as_ref(),
            SqlStatement::Set(_) | SqlStatement::Reset(_) | SqlStatement::Prepare { .. }
        ),
        _ => false,
    }
}

/// The latest version of table `name` in the engine's bucket exactly as a
/// query sees it: access checked, row filters and masks applied, hidden
/// columns absent. What the HTTP API reads a dataset through.
pub async fn read_table(engine: &Engine, name: &str) -> Result<DataFrame, SqlError> {
    engine.hooks().prepare_read().await?;
    let reference = TableReference::full(CATALOG_NAME, engine.bucket_name(), name);
    Ok(engine.session().table(reference).await?)
}

/// Loads what planning needs: policies, and — only for statements that
/// list tables (SHOW TABLES, information_schema) — the table names of the
/// catalog, which cost a read per object. Resolving a table by name never
/// needs the list.
async fn prepare(engine: &Engine, sql: &str) -> Result<(), SqlError> {
    engine.hooks().prepare_read().await?;
    let lower = sql.to_ascii_lowercase();
    if !(lower.contains("information_schema") || lower.contains("show ")) {
        return Ok(());
    }
    let catalog = engine.session().catalog(CATALOG_NAME);
    match catalog
        .as_ref()
        .and_then(|c| c.downcast_ref::<OmegaCatalog>())
    {
        Some(c) => Ok(c.refresh().await?),
        None => Ok(()),
    }
}

/// The statements of a script, each checked to be a statement omegastore
/// runs (parsed, not planned: the tables it names may not exist yet). What
/// a stored job is checked with before it is stored, and run with.
pub fn parse_script(sql: &str) -> Result<Vec<String>, SqlError> {
    let statements = split_statements(sql);
    if statements.is_empty() {
        return Err(SqlError::Usage("the script holds no SQL statement".into()));
    }
    for (i, text) in statements.iter().enumerate() {
        if policy_sql::parse(text)?.is_some() || model_statements::parse(text)?.is_some() {
            continue;
        }
        let parsed = DFParser::parse_sql_with_dialect(text, &GenericDialect {})
            .map_err(|e| SqlError::Usage(format!("statement {} is not SQL: {e}", i + 1)))?;
        if parsed.len() != 1 {
            return Err(SqlError::Usage(format!(
                "statement {} holds {} statements",
                i + 1,
                parsed.len()
            )));
        }
    }
    Ok(statements)
}

/// Splits a script into statements at `;` outside of string literals,
/// quoted identifiers and `--` comments.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut single, mut double, mut comment) = (false, false, false);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            if c == '\n' {
                comment = false;
                current.push(c);
            }
            continue;
        }
        match c {
            '-' if !single && !double && chars.peek() == Some(&'-') => {
                comment = true;
                continue;
            }
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            ';' if !single && !double => {
                let stmt = current.trim().to_string();
                if !stmt.is_empty() {
                    out.push(stmt);
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

fn read_only_check(engine: &Engine, what: &str) -> Result<(), SqlError> {
    if engine.options().read_only {
        return Err(SqlError::ReadOnly(what.to_string()));
    }
    Ok(())
}

/// A one-row result: `count` of rows written or changed.
pub(super) fn count_frame(engine: &Engine, count: u64) -> Result<DataFrame, SqlError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![count]))])?;
    Ok(engine.session().read_batch(batch)?)
}

/// `(bucket, name)` of a table reference in a write statement.
/// The engine and name a write statement writes to, after checking that the
/// session may write there (before anything is read of it).
pub(super) async fn write_target(
    engine: &Engine,
    table: &TableReference,
) -> Result<(Engine, String), SqlError> {
    let (om, name) = target(engine, table)?;
    om.datasets().check_access(&name, Access::Write).await?;
    // a statement run in an isolated bucket writes only there (the store's
    // check sees the session, which engines of all buckets share)
    let here = engine.bucket_name();
    if om.bucket_name() != here && engine.policy_cache().bucket_policy(here).isolated {
        let cx = MixinContext::from_session(engine.session());
        return Err(StoreError::PermissionDenied {
            who: describe_identity(&cx),
            privilege: Access::Write.to_string(),
            bucket: om.bucket_name().into(),
            action: format!(
                "this session is bound to bucket '{here}'; write '{name}' is outside it"
            ),
        }
        .into());
    }
    Ok((om, name))
}

fn target(engine: &Engine, table: &TableReference) -> Result<(Engine, String), SqlError> {
    let (catalog, schema) = match table {
        TableReference::Bare { .. } => (CATALOG_NAME, engine.bucket_name()),
        TableReference::Partial { schema, .. } => (CATALOG_NAME, schema.as_ref()),
        TableReference::Full {
            catalog, schema, ..
        } => (catalog.as_ref(), schema.as_ref()),
    };
    if catalog != CATALOG_NAME {
        return Err(SqlError::Usage(format!(
            "'{table}' is not in the omega catalog; writes go to omega.<bucket>.<name>"
        )));
    }
    Ok((engine.bucket(schema)?, table.table().to_string()))
}

async fn run_one(
    engine: &Engine,
    text: &str,
    params: &[ScalarValue],
) -> Result<DataFrame, SqlError> {
    if let Some(stmt) = policy_sql::parse(text)? {
        if !matches!(stmt, policy_sql::PolicyStatement::ShowGrants { .. }) {
            read_only_check(engine, "changing policies or grants")?;
        }
        return match policy_sql::apply(engine, stmt).await? {
            Some(rows) => Ok(engine.session().read_batch(rows)?),
            None => count_frame(engine, 1),
        };
    }
    if let Some(stmt) = model_statements::parse(text)? {
        read_only_check(engine, "training or dropping models")?;
        return model_statements::apply(engine, stmt).await;
    }
    let mut parsed = DFParser::parse_sql_with_dialect(text, &GenericDialect {})?;
    if parsed.len() != 1 {
        return Err(SqlError::Usage(format!(
            "expected one statement, got {}",
            parsed.len()
        )));
    }
    let statement = parsed
        .pop_front()
        .ok_or_else(|| SqlError::Usage("empty statement".into()))?;
    if let Some(settings) = super::table_settings::parse(&statement)? {
        read_only_check(engine, "changing table settings")?;
        return super::table_settings::apply(engine, settings).await;
    }
    // The query text of CREATE VIEW, kept as the view's definition.
    let view_sql = match &statement {
        DFStatement::Statement(s) => match s.as_ref() {
            SqlStatement::CreateView(v) => Some(v.query.to_string()),
            _ => None,
        },
        _ => None,
    };
    model_functions::preload(engine, &statement).await?;
    // Unqualified names resolve in this Omega's bucket.
    let mut state = engine.session().state();
    state.config_mut().options_mut().catalog.default_schema = engine.bucket_name().to_string();
    let mut plan = state.statement_to_plan(statement).await?;
    // Judged on the plan, where DataFusion has normalised the name (quotes,
    // spaces, case) exactly as it will apply it.
    if let LogicalPlan::Statement(
        Statement::SetVariable(SetVariable { variable, .. })
        | Statement::ResetVariable(ResetVariable { variable }),
    ) = &plan
        && engine.options().locked
    {
        let lower = variable.to_ascii_lowercase();
        if lower.starts_with("omega") {
            return Err(SqlError::Usage(format!(
                "this session's identity was fixed by the application; '{variable}' cannot be changed"
            )));
        }
        // The memory pool, spill directory and caches are the process's: a
        // session with a fixed identity (an API key's) may not point spill
        // files at a path of its choosing or lift the memory limit.
        if lower.starts_with("datafusion.runtime.") {
            return Err(SqlError::Usage(format!(
                "'{variable}' changes the process's memory limit, spill files or caches, which the application sets; it cannot be changed from a session whose identity the application fixed"
            )));
        }
    }
    if !params.is_empty() {
        plan = plan.with_param_values(ParamValues::List(
            params.iter().cloned().map(Into::into).collect(),
        ))?;
    }
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
            read_only_check(engine, "CREATE TABLE")?;
            let (om, name) = write_target(engine, &c.name).await?;
            let exists = om.datasets().exists(&name).await?;
            if exists && c.if_not_exists {
                return count_frame(engine, 0);
            }
            let mode = if c.or_replace {
                refuse_partial(engine, &state, &om, &name, "replace")?;
                PutMode::Overwrite
            } else {
                PutMode::Error
            };
            let (input, sort_by) = stored_order(c.input.as_ref().clone());
            let df = DataFrame::new(state, input);
            let n = put_frame(&om, df, &name, mode, sort_by).await?;
            count_frame(engine, n)
        }
        LogicalPlan::Dml(DmlStatement {
            table_name,
            op: WriteOp::Insert(op),
            input,
            ..
        }) => {
            read_only_check(engine, "INSERT")?;
            let (om, name) = write_target(engine, &table_name).await?;
            let mode = match op {
                InsertOp::Append => PutMode::Append,
                InsertOp::Overwrite => {
                    refuse_partial(engine, &state, &om, &name, "overwrite")?;
                    PutMode::Overwrite
                }
                InsertOp::Replace => {
                    return Err(SqlError::Usage(
                        "REPLACE INTO is not supported; use INSERT OVERWRITE to replace the rows, or INSERT INTO to add them".into(),
                    ));
                }
            };
            let df = DataFrame::new(state, input.as_ref().clone());
            let n = put_frame(&om, df, &name, mode, Vec::new()).await?;
            count_frame(engine, n)
        }
        LogicalPlan::Dml(DmlStatement {
            table_name,
            op: WriteOp::Delete,
            input,
            ..
        }) => {
            read_only_check(engine, "DELETE")?;
            let (om, name) = write_target(engine, &table_name).await?;
            let predicate = filter_of(&input)?;
            let predicate = scoped(engine, &state, &om, &name, &input, predicate, &[])?;
            let (_, n) = om
                .datasets()
                .change_table(&name, TableChange::Delete { predicate })
                .await?;
            count_frame(engine, n)
        }
        LogicalPlan::Dml(DmlStatement {
            table_name,
            op: WriteOp::Update,
            input,
            ..
        }) => {
            read_only_check(engine, "UPDATE")?;
            let (om, name) = write_target(engine, &table_name).await?;
            let (predicate, assignments) = update_of(&input)?;
            let set: Vec<&Expr> = assignments.iter().map(|(_, e)| e).collect();
            let targets: Vec<String> = assignments.iter().map(|(c, _)| c.clone()).collect();
            let predicate = scoped(engine, &state, &om, &name, &input, predicate, &set)?;
            refuse_masked(engine, &state, &om, &name, &targets)?;
            check_update_contract(engine, &om, &name, &predicate, &assignments).await?;
            let (_, n) = om
                .datasets()
                .change_table(
                    &name,
                    TableChange::Update {
                        predicate,
                        assignments,
                    },
                )
                .await?;
            count_frame(engine, n)
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(d)) => {
            read_only_check(engine, "DROP TABLE")?;
            let (om, name) = write_target(engine, &d.name).await?;
            refuse_partial(engine, &state, &om, &name, "drop")?;
            let dropped = om.datasets().drop(&name, d.if_exists).await?;
            count_frame(engine, dropped.len() as u64)
        }
        LogicalPlan::Ddl(DdlStatement::DropView(d)) => {
            read_only_check(engine, "DROP VIEW")?;
            let (om, name) = write_target(engine, &d.name).await?;
            let dropped = om.datasets().drop(&name, d.if_exists).await?;
            count_frame(engine, dropped.len() as u64)
        }
        LogicalPlan::Ddl(DdlStatement::CreateView(v)) => {
            read_only_check(engine, "CREATE VIEW")?;
            let (om, name) = write_target(engine, &v.name).await?;
            let sql =
                view_sql.ok_or_else(|| SqlError::Usage("CREATE VIEW without a query".into()))?;
            let mode = if v.or_replace {
                PutMode::Overwrite
            } else {
                PutMode::Error
            };
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            om.datasets()
                .put(Object::Any(Box::new(SqlView { sql })), &name, opts)
                .await?;
            count_frame(engine, 0)
        }
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(e)) => {
            read_only_check(engine, "CREATE EXTERNAL TABLE")?;
            let (om, name) = write_target(engine, &e.name).await?;
            // reading arbitrary locations is an administrator's decision
            om.datasets().check_access(&name, Access::Admin).await?;
            let format = match e.file_type.to_ascii_lowercase().as_str() {
                "parquet" => ExternalFormat::Parquet,
                "csv" => ExternalFormat::Csv,
                "json" | "ndjson" => ExternalFormat::Json,
                "delta" | "deltatable" => ExternalFormat::Delta,
                other => {
                    return Err(SqlError::Usage(format!(
                        "STORED AS {other} is not supported; use PARQUET, CSV, JSON or DELTA"
                    )));
                }
            };
            if e.if_not_exists && om.datasets().exists(&name).await? {
                return count_frame(engine, 0);
            }
            let [location] = e.locations.as_slice() else {
                return Err(SqlError::Usage(
                    "an external table has exactly one LOCATION".into(),
                ));
            };
            let opts = PutOptions {
                mode: PutMode::Error,
                ..Default::default()
            };
            om.datasets()
                .put(
                    Object::External {
                        url: location.clone(),
                        format,
                    },
                    &name,
                    opts,
                )
                .await?;
            count_frame(engine, 0)
        }
        LogicalPlan::Copy(_) => {
            read_only_check(engine, "COPY")?;
            // COPY writes files anywhere the process may: an admin's decision
            engine.datasets().check_access("*", Access::Admin).await?;
            Ok(DataFrame::new(state, plan))
        }
        LogicalPlan::Ddl(other) => Err(SqlError::Usage(format!(
            "{} is not supported by omegastore",
            other.name()
        ))),
        LogicalPlan::Dml(d) => Err(SqlError::Usage(format!(
            "{} is not supported by omegastore",
            d.op
        ))),
        LogicalPlan::Statement(_) => {
            // SET and friends: DataFusion applies them to the session.
            Ok(engine.session().execute_logical_plan(plan).await?)
        }
        plan => Ok(DataFrame::new(state, plan)),
    }
}

/// The predicate a DELETE or UPDATE by this session runs with: its own
/// WHERE, AND the rows its roles may see (row filters), so it touches and
/// counts only those. Masked columns may not appear in its WHERE or in the
/// values it sets (a count would reveal them).
fn scoped(
    engine: &Engine,
    state: &datafusion::execution::session_state::SessionState,
    om: &Engine,
    name: &str,
    input: &LogicalPlan,
    predicate: Option<Expr>,
    values: &[&Expr],
) -> Result<Option<Expr>, SqlError> {
    let cx = MixinContext::from_config(state.config().options());
    let cache = engine.policy_cache();
    let bucket = om.bucket_name();
    let masked = masked_columns(&cache, bucket, name, &cx);
    for e in predicate.iter().chain(values.iter().copied()) {
        if let Some(c) = e.column_refs().iter().find(|c| masked.contains(&c.name)) {
            return Err(masked_error(&cx, bucket, name, &c.name));
        }
    }
    let mut schema = None;
    input.apply(|n| {
        if let LogicalPlan::TableScan(scan) = n {
            schema = Some(scan.projected_schema.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(schema) = schema else {
        return Ok(predicate);
    };
    let visible = visible_rows(&cache, &parse_state(), bucket, name, &cx, &schema)?
        .map(unqualify)
        .transpose()?;
    Ok(match (predicate, visible) {
        (p, None) => p,
        (None, v) => v,
        (Some(p), Some(v)) => Some(p.and(v)),
    })
}

/// A session that sees only some rows of a dataset may not replace or drop
/// it (that would remove rows it cannot see).
fn refuse_partial(
    engine: &Engine,
    state: &datafusion::execution::session_state::SessionState,
    om: &Engine,
    name: &str,
    what: &str,
) -> Result<(), SqlError> {
    let cx = MixinContext::from_config(state.config().options());
    if applicable_filters(&engine.policy_cache(), om.bucket_name(), name, &cx).is_none() {
        return Ok(());
    }
    Err(StoreError::PermissionDenied {
        who: describe_identity(&cx),
        privilege: "a view of every row".into(),
        bucket: om.bucket_name().into(),
        action: format!("a row filter limits what it sees of '{name}', so it may not {what} it"),
    }
    .into())
}

/// An UPDATE of a dataset with a schema contract: the rows it would write
/// (the matching rows with the new values) go through the contract first,
/// as an INSERT's would; a violation fails it before anything changes.
async fn check_update_contract(
    engine: &Engine,
    om: &Engine,
    name: &str,
    predicate: &Option<Expr>,
    assignments: &Assignments,
) -> Result<(), SqlError> {
    if engine
        .policy_cache()
        .contract(om.bucket_name(), name)
        .is_none()
    {
        return Ok(());
    }
    let mut df = om.datasets().getl(name).await?;
    if let Some(p) = predicate {
        df = df.filter(p.clone())?;
    }
    let columns: Vec<Expr> = df
        .schema()
        .iter()
        .map(
            |(q, f)| match assignments.iter().find(|(c, _)| c == f.name()) {
                Some((c, e)) => e.clone().alias(c),
                None => Expr::Column(Column::new(q.cloned(), f.name())),
            },
        )
        .collect();
    let df = df.select(columns)?;
    let target = crate::store::WriteTarget {
        bucket: om.bucket_name().to_string(),
        prefix: "datasets".into(),
        name: name.to_string(),
    };
    let checked = engine
        .hooks()
        .rewrite_write(&target, df.logical_plan().clone(), engine.session())
        .await?;
    DataFrame::new(engine.session().state(), checked)
        .collect()
        .await?;
    Ok(())
}

/// An UPDATE may not set a column masked for the session.
fn refuse_masked(
    engine: &Engine,
    state: &datafusion::execution::session_state::SessionState,
    om: &Engine,
    name: &str,
    columns: &[String],
) -> Result<(), SqlError> {
    let cx = MixinContext::from_config(state.config().options());
    let masked = masked_columns(&engine.policy_cache(), om.bucket_name(), name, &cx);
    match columns.iter().find(|c| masked.contains(c)) {
        Some(c) => Err(masked_error(&cx, om.bucket_name(), name, c)),
        None => Ok(()),
    }
}

fn masked_error(cx: &MixinContext, bucket: &str, name: &str, column: &str) -> SqlError {
    StoreError::PermissionDenied {
        who: describe_identity(cx),
        privilege: "an unmasked view of the column".into(),
        bucket: bucket.into(),
        action: format!("column '{column}' of '{name}' is masked for these roles and may not be used in DELETE or UPDATE"),
    }
    .into()
}

/// Streams a frame into a dataset; returns the rows written.
async fn put_frame(
    om: &Engine,
    df: DataFrame,
    name: &str,
    mode: PutMode,
    sort_by: Vec<String>,
) -> Result<u64, SqlError> {
    let stream = df.execute_stream().await?;
    let schema = stream.schema();
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    let counted = stream.inspect(move |b| {
        if let Ok(b) = b {
            c.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
    });
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, counted));
    let opts = PutOptions {
        mode,
        sort_by,
        ..Default::default()
    };
    om.datasets().put(Object::Stream(stream), name, opts).await.map_err(|e| match e {
        StoreError::AlreadyExists { name, .. } => SqlError::Usage(format!(
            "table '{name}' already exists; use CREATE OR REPLACE TABLE, INSERT INTO, or DROP TABLE first"
        )),
        e => e.into(),
    })?;
    Ok(counter.load(Ordering::Relaxed))
}

/// `CREATE TABLE … AS SELECT … ORDER BY a, b`: an outermost `ORDER BY` of
/// plain columns (ascending, nulls last, no `LIMIT`) becomes the table's
/// stored sort order, which the store's write applies (so the query's own
/// sort is taken off, not run twice). Anything else is left as it is.
fn stored_order(plan: LogicalPlan) -> (LogicalPlan, Vec<String>) {
    let LogicalPlan::Sort(sort) = &plan else {
        return (plan, Vec::new());
    };
    if sort.fetch.is_some() {
        return (plan, Vec::new());
    }
    let mut columns = Vec::new();
    for key in &sort.expr {
        match &key.expr {
            Expr::Column(c) if key.asc && !key.nulls_first => columns.push(c.name.clone()),
            _ => return (plan, Vec::new()),
        }
    }
    // the names the store sorts by are the output's (unqualified) names
    if columns
        .iter()
        .any(|c| sort.input.schema().inner().field_with_name(c).is_err())
    {
        return (plan, Vec::new());
    }
    (sort.input.as_ref().clone(), columns)
}

/// Column references without table qualifiers (Delta evaluates predicates
/// against its own schema).
fn unqualify(e: Expr) -> Result<Expr, SqlError> {
    Ok(e.transform(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::from_name(c.name)))),
        e => Ok(Transformed::no(e)),
    })?
    .data)
}

/// The WHERE of a DELETE's input plan.
fn filter_of(plan: &LogicalPlan) -> Result<Option<Expr>, SqlError> {
    match plan {
        LogicalPlan::Filter(f) => Ok(Some(unqualify(f.predicate.clone())?)),
        LogicalPlan::TableScan(_) => Ok(None),
        LogicalPlan::SubqueryAlias(a) => filter_of(&a.input),
        LogicalPlan::Projection(p) => filter_of(&p.input),
        other => Err(SqlError::Usage(format!(
            "this DELETE/UPDATE form is not supported (found {})",
            other.display()
        ))),
    }
}

/// The WHERE and the SET assignments of an UPDATE's input plan.
/// `SET column = expression` pairs of an UPDATE.
type Assignments = Vec<(String, Expr)>;

fn update_of(plan: &LogicalPlan) -> Result<(Option<Expr>, Assignments), SqlError> {
    let LogicalPlan::Projection(p) = plan else {
        return Err(SqlError::Usage("unsupported UPDATE form".into()));
    };
    let predicate = filter_of(&p.input)?;
    let mut assignments = Vec::new();
    for e in &p.expr {
        match e {
            Expr::Column(_) => {} // unchanged column
            Expr::Alias(a) => {
                if matches!(a.expr.as_ref(), Expr::Column(c) if c.name == a.name) {
                    continue;
                }
                assignments.push((a.name.clone(), unqualify(a.expr.as_ref().clone())?));
            }
            other => {
                return Err(SqlError::Usage(format!(
                    "unsupported UPDATE expression {other}"
                )));
            }
        }
    }
    Ok((predicate, assignments))
}
