//! Models inside queries:
//!
//! ```sql
//! SELECT id, predict('churn', age, plan, spend) AS churn FROM customers;
//! SELECT predict_proba('churn@prod', age, plan, spend)['yes'] FROM customers;
//! SELECT * FROM evaluate('churn', 'customers_holdout');
//! ```
//!
//! The model name is a string literal (`name`, `name@N`, `name@tag`,
//! resolved in the session's bucket); feature arguments are positional, in
//! the order the model was trained with. Before a statement is planned,
//! [`preload`] loads every model it names, once per statement, into the
//! session's [`ModelCache`]; planning then checks argument count and types
//! (a typed error listing the mismatch) and execution predicts a batch at a
//! time. `evaluate` is computed during preload too, so its table function
//! only hands out the finished rows.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Float64Array, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, TableFactor, Value, Visit,
    Visitor,
};

use super::SqlError;
use super::session::SqlEngine;
use crate::engine::Engine;
use crate::models::{Algorithm, Input, LoadedModel, ModelError, output_array};

/// Models (and evaluations) statements use, loaded before they are planned.
///
/// A loaded model is kept under `bucket/name@version` (a version never
/// changes), least recently used evicted first beyond [`MODEL_CACHE_BYTES`];
/// what a model literal means in a bucket is what the latest statement
/// there resolved it to. A query pins its models once, at analysis (see
/// [`PinModels`]): each `predict` call then holds its model, so a query
/// never switches versions midway and an eviction never breaks it.
#[derive(Debug, Default)]
pub struct ModelCache {
    loaded: Mutex<Vec<(String, Arc<LoadedModel>, usize)>>,
    /// (bucket, literal) → key of `loaded`
    names: Mutex<HashMap<(String, String), String>>,
    /// literal → key, whatever the bucket (planning-time type checks, which
    /// do not know the statement's bucket)
    last: Mutex<HashMap<String, String>>,
    evaluations: Mutex<HashMap<(String, String), RecordBatch>>,
}

/// Bytes of model state a session keeps loaded (by their stored size).
pub const MODEL_CACHE_BYTES: usize = 256 << 20;

impl ModelCache {
    /// The model `literal` names in `bucket` (any bucket's latest when `None`).
    fn model(&self, bucket: Option<&str>, literal: &str) -> Option<Arc<LoadedModel>> {
        let key = match bucket {
            Some(b) => self
                .names
                .lock()
                .ok()?
                .get(&(b.to_string(), literal.to_string()))
                .cloned(),
            None => self.last.lock().ok()?.get(literal).cloned(),
        }?;
        let mut loaded = self.loaded.lock().ok()?;
        let i = loaded.iter().position(|(k, _, _)| k == &key)?;
        // most recently used at the back
        let entry = loaded.remove(i);
        let m = entry.1.clone();
        loaded.push(entry);
        Some(m)
    }

    fn insert(&self, bucket: &str, literal: &str, m: LoadedModel) {
        let key = format!("{bucket}/{}@{}", m.meta.name, m.meta.version);
        let size = m
            .meta
            .kind_meta
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0) as usize;
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.retain(|(k, _, _)| k != &key);
            loaded.push((key.clone(), Arc::new(m), size));
            let mut total: usize = loaded.iter().map(|(_, _, s)| s).sum();
            while total > MODEL_CACHE_BYTES && loaded.len() > 1 {
                total -= loaded.remove(0).2;
            }
        }
        if let Ok(mut names) = self.names.lock() {
            names.insert((bucket.to_string(), literal.to_string()), key.clone());
        }
        if let Ok(mut last) = self.last.lock() {
            last.insert(literal.to_string(), key);
        }
    }

    /// Bytes of model state loaded now.
    pub fn loaded_bytes(&self) -> usize {
        self.loaded
            .lock()
            .map(|l| l.iter().map(|(_, _, s)| s).sum())
            .unwrap_or(0)
    }
}

/// What a statement refers to.
#[derive(Default)]
struct Refs {
    models: Vec<String>,
    evaluations: Vec<(String, String)>,
}

fn literal(arg: &FunctionArg) -> Option<String> {
    let e = match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e,
        FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => e,
        _ => return None,
    };
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl Visitor for Refs {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Function(f) = expr {
            let name = f.name.to_string().to_ascii_lowercase();
            if (name == "predict" || name == "predict_proba")
                && let FunctionArguments::List(list) = &f.args
                && let Some(m) = list.args.first().and_then(literal)
            {
                self.models.push(m);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = t
            && name.to_string().eq_ignore_ascii_case("evaluate")
        {
            let lits: Vec<_> = args.args.iter().map(literal).collect();
            if let [Some(m), Some(d)] = lits.as_slice() {
                self.evaluations.push((m.clone(), d.clone()));
            }
        }
        ControlFlow::Continue(())
    }
}

/// What a parsed statement refers to.
fn refs_of(statement: &DFStatement) -> Refs {
    let mut refs = Refs::default();
    match statement {
        DFStatement::Statement(s) => {
            let _ = s.visit(&mut refs);
        }
        DFStatement::Explain(e) => {
            if let DFStatement::Statement(s) = e.statement.as_ref() {
                let _ = s.visit(&mut refs);
            }
        }
        _ => {}
    }
    refs
}

/// Loads the models (and computes the evaluations) `statement` names into
/// the cache of `omega`'s session, so every statement sees the models'
/// current versions; a query running concurrently keeps the versions it
/// pinned.
pub async fn preload(engine: &Engine, statement: &DFStatement) -> Result<(), SqlError> {
    load(engine, refs_of(statement), true).await
}

/// Adds the models a stored view's SQL uses (views are planned while the
/// outer statement is, so their models join that statement's).
pub async fn preload_view(engine: &Engine, sql: &str) -> Result<(), SqlError> {
    if !sql.to_ascii_lowercase().contains("predict")
        && !sql.to_ascii_lowercase().contains("evaluate")
    {
        return Ok(());
    }
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let Ok(statements) = datafusion::sql::parser::DFParser::parse_sql_with_dialect(sql, &dialect)
    else {
        return Ok(()); // planning the view reports the syntax error
    };
    for s in &statements {
        Box::pin(load(engine, refs_of(s), false)).await?;
    }
    Ok(())
}

/// `refresh`: reload names already cached (a new statement); otherwise only
/// load the missing ones (a view planned within the current statement).
async fn load(engine: &Engine, refs: Refs, refresh: bool) -> Result<(), SqlError> {
    if refs.models.is_empty() && refs.evaluations.is_empty() {
        return Ok(());
    }
    let cache = engine.model_cache();
    let models = engine.models();
    let bucket = engine.bucket_name();
    for name in refs.models {
        if !refresh && cache.model(Some(bucket), &name).is_some() {
            continue;
        }
        let m = models.load(&name).await.map_err(model_err)?;
        m.fitted().map_err(model_err)?;
        cache.insert(bucket, &name, m);
    }
    for (m, d) in refs.evaluations {
        let input = if looks_like_query(&d) {
            Input::Sql(d.clone())
        } else {
            Input::Dataset(d.clone())
        };
        let (meta, metrics) = models.evaluate(&m, input).await.map_err(model_err)?;
        let version = meta.version;
        let batch = evaluation_batch(&m, version, &metrics)?;
        if let Ok(mut c) = cache.evaluations.lock() {
            c.insert((m.clone(), d), batch);
        }
    }
    Ok(())
}

fn looks_like_query(s: &str) -> bool {
    let t = s.trim_start().to_ascii_lowercase();
    t.starts_with("select ") || t.starts_with("with ") || t.starts_with("(")
}

pub(crate) fn model_err(e: ModelError) -> SqlError {
    match e {
        ModelError::Store(s) => SqlError::Store(s),
        other => SqlError::Query(other.to_string()),
    }
}

fn evaluation_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn evaluation_batch(
    model: &str,
    version: u64,
    metrics: &[(String, f64)],
) -> Result<RecordBatch, SqlError> {
    let label = format!("{}@{version}", model.split('@').next().unwrap_or(model));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            metrics.iter().map(|_| label.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            metrics.iter().map(|(k, _)| k.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(
            metrics.iter().map(|(_, v)| *v),
        )),
    ];
    Ok(RecordBatch::try_new(evaluation_schema(), cols)?)
}

/// `predict(model, features…)` and `predict_proba(model, features…)`.
#[derive(Debug)]
pub struct PredictUdf {
    proba: bool,
    cache: Arc<ModelCache>,
    /// The model this call was pinned to when its query was analysed.
    pinned: Option<Arc<LoadedModel>>,
    signature: Signature,
}

impl PredictUdf {
    pub fn new(proba: bool, cache: Arc<ModelCache>) -> Self {
        PredictUdf {
            proba,
            cache,
            pinned: None,
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }

    /// The model version this call was pinned to at analysis, if any.
    pub fn pinned_model(&self) -> Option<&Arc<LoadedModel>> {
        self.pinned.as_ref()
    }

    /// `predict_proba` rather than `predict`.
    pub fn is_proba(&self) -> bool {
        self.proba
    }

    fn fname(&self) -> &'static str {
        if self.proba {
            "predict_proba"
        } else {
            "predict"
        }
    }

    fn model_of(&self, name: Option<&ScalarValue>) -> DfResult<Arc<LoadedModel>> {
        let name = match name {
            Some(ScalarValue::Utf8(Some(s)))
            | Some(ScalarValue::Utf8View(Some(s)))
            | Some(ScalarValue::LargeUtf8(Some(s))) => s,
            _ => {
                return plan_err!(
                    "the first argument of {} must be the model name as a string literal, e.g. {}('churn', age, plan)",
                    self.fname(),
                    self.fname()
                );
            }
        };
        if let Some(m) = &self.pinned {
            return Ok(m.clone());
        }
        match self.cache.model(None, name) {
            Some(m) => Ok(m),
            None => plan_err!(
                "model '{name}' is not loaded for this statement; {} works in queries run through omegastore's SQL (om sql, Engine::sql)",
                self.fname()
            ),
        }
    }

    /// The output type: the label's type (classifiers), float (regressors),
    /// cluster id (k-means); a struct of class probabilities for proba.
    fn output_field(&self, m: &LoadedModel) -> DfResult<DataType> {
        let f = m
            .fitted()
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        let algo = m
            .algorithm()
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        if self.proba {
            if !algo.has_proba() {
                return plan_err!(
                    "model '{}' ({algo}) gives no class probabilities; use predict",
                    m.label()
                );
            }
            let classes = f
                .label
                .as_ref()
                .and_then(|l| l.classes.clone())
                .unwrap_or_default();
            let fields: Fields = classes
                .iter()
                .map(|c| Field::new(c, DataType::Float64, false))
                .collect();
            return Ok(DataType::Struct(fields));
        }
        Ok(match (algo, &f.label) {
            (Algorithm::Pca, _) => {
                return plan_err!(
                    "model '{}' is a PCA; it transforms rather than predicts",
                    m.label()
                );
            }
            (Algorithm::KMeans, _) => DataType::Int32,
            (_, Some(l)) if l.classes.is_some() => l.output_type(),
            _ => DataType::Float64,
        })
    }
}

impl PartialEq for PredictUdf {
    fn eq(&self, other: &Self) -> bool {
        self.proba == other.proba
            && Arc::ptr_eq(&self.cache, &other.cache)
            && self.pinned.as_ref().map(Arc::as_ptr) == other.pinned.as_ref().map(Arc::as_ptr)
    }
}

impl Eq for PredictUdf {}

impl Hash for PredictUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.proba.hash(state);
        (Arc::as_ptr(&self.cache) as usize).hash(state);
        self.pinned
            .as_ref()
            .map(|m| Arc::as_ptr(m) as usize)
            .hash(state);
    }
}

impl ScalarUDFImpl for PredictUdf {
    fn name(&self) -> &str {
        self.fname()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        // return_field_from_args is what planning uses (it sees the model name)
        Ok(DataType::Float64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let m = self.model_of(args.scalar_arguments.first().copied().flatten())?;
        let f = m
            .fitted()
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        let given: Vec<(String, Option<DataType>)> = args.arg_fields[1..]
            .iter()
            .map(|a| (a.name().clone(), Some(a.data_type().clone())))
            .collect();
        let mismatches = f.features.mismatches(&given);
        if !mismatches.is_empty() {
            return plan_err!(
                "{}('{}', …) does not match the model's features ({}): {}",
                self.fname(),
                m.label(),
                f.features.names().join(", "),
                mismatches.join("; ")
            );
        }
        Ok(Arc::new(Field::new(
            self.fname(),
            self.output_field(&m)?,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => Some(s.clone()),
            _ => None,
        };
        let m = self.model_of(name.as_ref())?;
        predict_batch(&m, self.proba, args)
    }
}

/// One batch of `predict(model, features…)` (or `predict_proba`): the
/// features encoded as the model was trained, then its predictions. Shared by
/// the session's UDF and the one a cluster executor decodes.
pub fn predict_batch(
    m: &LoadedModel,
    proba: bool,
    args: ScalarFunctionArgs,
) -> DfResult<ColumnarValue> {
    let fname = if proba { "predict_proba" } else { "predict" };
    let f = m
        .fitted()
        .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
    let n = args.number_rows;
    let inputs = args.args[1..]
        .iter()
        .map(|a| a.to_array(n).map(|a| vec![a]))
        .collect::<DfResult<Vec<_>>>()?;
    let x = match f.features.encode(&inputs, n) {
        Ok(x) => x,
        Err(e) => return exec_err!("{fname}('{}'): {e}", m.label()),
    };
    if proba {
        let p = match m.proba(&x) {
            Ok(p) => p,
            Err(e) => return exec_err!("{e}"),
        };
        let DataType::Struct(fields) = args.return_field.data_type().clone() else {
            return exec_err!("predict_proba planned with a non-struct type");
        };
        let cols: Vec<ArrayRef> = (0..p.cols)
            .map(|c| Arc::new(Float64Array::from(p.column(c).to_vec())) as ArrayRef)
            .collect();
        return Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            fields, cols, None,
        )?)));
    }
    let out = match f.estimator.predict(&x) {
        Ok(o) => o,
        Err(e) => return exec_err!("predict('{}'): {e}", m.label()),
    };
    match output_array(m, out) {
        Ok(a) => Ok(ColumnarValue::Array(a)),
        Err(e) => exec_err!("predict('{}'): {e}", m.label()),
    }
}

/// `evaluate('model', 'dataset' | 'SELECT …')`: the model's metrics on those
/// rows, as `(model, metric, value)`.
#[derive(Debug)]
pub struct EvaluateFunction {
    cache: Arc<ModelCache>,
}

impl EvaluateFunction {
    pub fn new(cache: Arc<ModelCache>) -> Self {
        EvaluateFunction { cache }
    }
}

impl TableFunctionImpl for EvaluateFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let lit = |e: &Expr| match e {
            Expr::Literal(ScalarValue::Utf8(Some(s)), _)
            | Expr::Literal(ScalarValue::Utf8View(Some(s)), _) => Some(s.clone()),
            _ => None,
        };
        let exprs = args.exprs();
        let (Some(m), Some(d)) = (exprs.first().and_then(lit), exprs.get(1).and_then(lit)) else {
            return plan_err!(
                "evaluate takes two string literals: evaluate('model', 'dataset') or evaluate('model', 'SELECT …')"
            );
        };
        let batch = self
            .cache
            .evaluations
            .lock()
            .ok()
            .and_then(|e| e.get(&(m.clone(), d.clone())).cloned());
        match batch {
            Some(b) => Ok(Arc::new(MemTable::try_new(b.schema(), vec![vec![b]])?)),
            None => plan_err!(
                "evaluate('{m}', '{d}') was not prepared; evaluate works in queries run through omegastore's SQL"
            ),
        }
    }
}

/// The analyzer rule that pins each `predict`/`predict_proba` call of a
/// query to the model version its statement loaded in the statement's
/// bucket (see [`ModelCache`]).
#[derive(Debug)]
pub struct PinModels;

impl datafusion::optimizer::AnalyzerRule for PinModels {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        config: &datafusion::common::config::ConfigOptions,
    ) -> DfResult<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::expr::ScalarFunction;
        let bucket = config.catalog.default_schema.clone();
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| {
                    let Expr::ScalarFunction(f) = &e else {
                        return Ok(Transformed::no(e));
                    };
                    let Some(udf) = f.func.inner().downcast_ref::<PredictUdf>() else {
                        return Ok(Transformed::no(e));
                    };
                    let literal = match f.args.first() {
                        Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _))
                        | Some(Expr::Literal(ScalarValue::Utf8View(Some(s)), _))
                        | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _)) => s.clone(),
                        _ => return Ok(Transformed::no(e)),
                    };
                    if udf.pinned.is_some() {
                        return Ok(Transformed::no(e));
                    }
                    let Some(model) = udf.cache.model(Some(&bucket), &literal) else {
                        return Ok(Transformed::no(e));
                    };
                    let pinned = PredictUdf {
                        proba: udf.proba,
                        cache: udf.cache.clone(),
                        pinned: Some(model),
                        signature: udf.signature.clone(),
                    };
                    Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(
                            Arc::new(datafusion::logical_expr::ScalarUDF::new_from_impl(pinned)),
                            f.args.clone(),
                        ),
                    )))
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "omega_pin_models"
    }
}
