//! Models: smartcore estimators fitted, used and versioned by name. This
//! layer uses `engine`, `backends` and `store`; rows from SQL come through
//! the engine's query runner, never from the SQL layer directly.
//!
//! | file | what |
//! | --- | --- |
//! | `spec.rs` | algorithms, their hyperparameters (validated), preprocessing |
//! | `features.rs` | Arrow columns to a column-major matrix, labels to classes |
//! | `estimator.rs` | the fitted estimators: fit, predict, predict_proba, transform |
//! | `solvers.rs` | omegastore's fast least-squares and logistic (Newton) solvers |
//! | `metrics.rs` | R², MAE, RMSE, accuracy, precision, recall, F1, log loss, inertia |
//! | `search.rs` | grid search with k-fold cross-validation |
//! | `model.rs` | the stored model (spec + fitted state) and its JSON summary |
//! | `backend.rs` | the `smartcore.<algorithm>` storage backend |
//!
//! [`Models`] is the verb API (`omega.models()`): every fit and search is a
//! new version of the model; `name@N` and `name@tag` select a version
//! wherever a model name is accepted.

pub mod backend;
pub mod error;
pub mod estimator;
pub mod features;
pub mod metrics;
pub mod model;
pub mod search;
pub mod solvers;
pub mod spec;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::Utc;
use serde_json::{Map, Value};

pub use error::{ModelError, Result};
pub use estimator::Output;
pub use metrics::Metrics;
pub use model::{LoadedModel, Model, SearchRow, TrainedOn};
pub use search::SearchReport;
pub use spec::{Algorithm, CategoricalEncoding, ModelSpec, NullStrategy, Preprocessing, Task};

use crate::engine::Engine;
use crate::store::backend::{Data, GetOptions, Object, PutMode, PutOptions};
use crate::store::{Metadata, Store};
use features::{FeatureEncoder, LabelEncoder, Matrix, Target, column_chunks};

/// Rows to fit on, to predict or to score: a stored dataset (`name`,
/// `name@N`, `name@tag`), a SQL query, or batches in memory.
#[derive(Debug, Clone)]
pub enum Input {
    Dataset(String),
    Sql(String),
    Batches(SchemaRef, Vec<RecordBatch>),
}

impl Input {
    fn describe(&self) -> String {
        match self {
            Input::Dataset(n) => format!("dataset '{n}'"),
            Input::Sql(_) => "the query".into(),
            Input::Batches(..) => "the given batches".into(),
        }
    }
}

/// What to fit on: the rows, the feature columns (default: every column
/// but the label) and the label column (supervised algorithms).
#[derive(Debug, Clone)]
pub struct TrainingData {
    pub input: Input,
    pub features: Option<Vec<String>>,
    pub label: Option<String>,
}

impl TrainingData {
    pub fn dataset(name: &str) -> Self {
        TrainingData {
            input: Input::Dataset(name.into()),
            features: None,
            label: None,
        }
    }

    pub fn sql(query: &str) -> Self {
        TrainingData {
            input: Input::Sql(query.into()),
            features: None,
            label: None,
        }
    }

    pub fn features<S: AsRef<str>>(mut self, cols: &[S]) -> Self {
        self.features = Some(cols.iter().map(|c| c.as_ref().to_string()).collect());
        self
    }

    pub fn label(mut self, col: &str) -> Self {
        self.label = Some(col.into());
        self
    }
}

/// Options of long-running verbs.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Ticks once per fit (a search: once per fold and grid point).
    pub progress: Option<indicatif::ProgressBar>,
}

/// The result of a fit.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub meta: Metadata,
    pub rows: usize,
    pub fit_seconds: f64,
    /// Scores on the training rows.
    pub metrics: Metrics,
}

/// Rows read for a verb, with where they came from.
struct Rows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
    trained_on: TrainedOn,
    source: String,
}

/// Prepared training data: encoders learned, matrix and target built.
pub(crate) struct Prepared {
    pub features: FeatureEncoder,
    pub label: Option<LabelEncoder>,
    pub x: Matrix,
    pub y: Option<Target>,
    pub n_classes: usize,
}

/// The model verbs of one bucket (see the module docs).
#[derive(Clone)]
pub struct Models {
    engine: Engine,
    store: Store,
}

impl Models {
    /// The model verbs over the `models` store of `engine`'s bucket.
    pub fn new(engine: &Engine) -> Self {
        let store = engine.store("models").expect("static prefix");
        Models {
            engine: engine.clone(),
            store,
        }
    }

    /// The underlying store: list, history, tag, drop, metadata.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores a model spec (unfitted) as a new version of `name`.
    pub async fn put(&self, name: &str, spec: ModelSpec) -> Result<Metadata> {
        spec.resolved()?;
        Ok(self.put_model(name, Model::new(spec)).await?)
    }

    async fn put_model(&self, name: &str, model: Model) -> crate::store::error::Result<Metadata> {
        self.store
            .put(
                Object::Any(Box::new(model)),
                name,
                PutOptions {
                    mode: PutMode::Overwrite,
                    ..Default::default()
                },
            )
            .await
    }

    /// Loads `name`, `name@N` or `name@tag`.
    pub async fn load(&self, name: &str) -> Result<LoadedModel> {
        let meta = self.store.metadata(name).await?;
        if !backend::is_model_kind(&meta.kind) {
            return Err(ModelError::NotAModel {
                name: name.into(),
                kind: meta.kind,
            });
        }
        match self
            .store
            .get_version(&meta, &GetOptions::default())
            .await?
        {
            Data::Any(a) => match a.downcast::<Model>() {
                Ok(model) => Ok(LoadedModel {
                    meta,
                    model: *model,
                }),
                Err(_) => Err(ModelError::NotAModel {
                    name: name.into(),
                    kind: meta.kind,
                }),
            },
            _ => Err(ModelError::NotAModel {
                name: name.into(),
                kind: meta.kind,
            }),
        }
    }

    /// The spec of the latest version of `name`.
    pub async fn spec(&self, name: &str) -> Result<ModelSpec> {
        let meta = self.store.metadata(name).await?;
        if !backend::is_model_kind(&meta.kind) {
            return Err(ModelError::NotAModel {
                name: name.into(),
                kind: meta.kind,
            });
        }
        // The summary holds the spec: no need to read the state.
        let k = &meta.kind_meta;
        let params = k
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let preprocessing = k
            .get("preprocessing")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ModelError::Usage(format!("stored preprocessing of '{name}': {e}")))?
            .unwrap_or_default();
        let algorithm = k
            .get("algorithm")
            .and_then(Value::as_str)
            .unwrap_or(meta.kind.trim_start_matches(spec::KIND_PREFIX));
        Ok(ModelSpec::new(algorithm, params)?.with_preprocessing(preprocessing))
    }

    /// Fits `name` on `data` and stores the result as a new version. The spec
    /// is the latest version's, or `spec` when given (which also creates the
    /// model).
    pub async fn fit(
        &self,
        name: &str,
        data: TrainingData,
        spec: Option<ModelSpec>,
        opts: FitOptions,
    ) -> Result<FitReport> {
        let spec = match spec {
            Some(s) => s,
            None => self.spec(name).await?,
        };
        let params = spec.resolved()?;
        let algo = params.algorithm;
        let rows = self.read_training(&data, algo).await?;
        let prepared = prepare(&spec, &rows, &data, algo)?;
        self.fit_prepared(name, spec, prepared, rows.trained_on, None, &opts)
            .await
    }

    /// Fits `spec` on prepared data in a blocking task, scores the training
    /// rows and stores the model as a new version of `name`.
    async fn fit_prepared(
        &self,
        name: &str,
        spec: ModelSpec,
        prepared: Prepared,
        trained_on: TrainedOn,
        search: Option<(String, Vec<SearchRow>)>,
        opts: &FitOptions,
    ) -> Result<FitReport> {
        let params = spec.resolved()?;
        let algo = params.algorithm;
        let start = Instant::now();
        let (estimator, prepared) = tokio::task::spawn_blocking(move || {
            let est = estimator::Estimator::fit(
                &params,
                &prepared.x,
                prepared.y.as_ref(),
                prepared.n_classes,
            );
            (est, prepared)
        })
        .await
        .map_err(|e| ModelError::Usage(format!("fit task failed: {e}")))?;
        let estimator = estimator.map_err(|reason| ModelError::Fit {
            name: name.to_string(),
            algorithm: algo.name().into(),
            reason,
        })?;
        let fit_seconds = start.elapsed().as_secs_f64();
        if let Some(p) = &opts.progress {
            p.inc(1);
        }
        let metrics = training_metrics(&estimator, &prepared, algo).unwrap_or_default();
        let rows = prepared.x.rows;
        let model = Model {
            format: model::FORMAT_VERSION,
            spec,
            fitted: Some(model::Fitted {
                features: prepared.features,
                label: prepared.label,
                estimator,
                trained_on,
                fitted_at: Utc::now(),
                fit_seconds,
                metrics: metrics.clone(),
                search,
            }),
        };
        let meta = self.put_model(name, model).await?;
        Ok(FitReport {
            meta,
            rows,
            fit_seconds,
            metrics,
        })
    }

    /// Predictions for every row of `input`: its columns plus `prediction`
    /// (the label's type for classifiers, float for regressors, cluster id
    /// for k-means).
    pub async fn predict(&self, name: &str, input: Input) -> Result<Vec<RecordBatch>> {
        let m = self.load(name).await?;
        let rows = self.read(&input, None).await?;
        let x = encode_rows(&m, &rows)?;
        let (m, out) = compute(m, move |m| m.fitted().map(|f| f.estimator.predict(&x))).await?;
        let out = out?.map_err(|e| m.predict_err("predict", e))?;
        let col = output_array(&m, out)?;
        append_columns(
            &rows,
            vec![(Field::new("prediction", col.data_type().clone(), true), col)],
        )
    }

    /// Class probabilities: the input's columns plus `proba_<class>` per class.
    pub async fn predict_proba(&self, name: &str, input: Input) -> Result<Vec<RecordBatch>> {
        let m = self.load(name).await?;
        let rows = self.read(&input, None).await?;
        let x = encode_rows(&m, &rows)?;
        let (m, p) = compute(m, move |m| m.proba(&x)).await?;
        let p = p?;
        let classes = m
            .fitted()?
            .label
            .as_ref()
            .and_then(|l| l.classes.clone())
            .unwrap_or_default();
        let cols = (0..p.cols)
            .map(|c| {
                let name = format!("proba_{}", classes.get(c).cloned().unwrap_or(c.to_string()));
                let a: ArrayRef = Arc::new(Float64Array::from(p.column(c).to_vec()));
                (Field::new(name, DataType::Float64, false), a)
            })
            .collect();
        append_columns(&rows, cols)
    }

    /// PCA components (`pc1…`) or k-means distances (`distance_0…`).
    pub async fn transform(&self, name: &str, input: Input) -> Result<Vec<RecordBatch>> {
        let m = self.load(name).await?;
        let rows = self.read(&input, None).await?;
        let x = encode_rows(&m, &rows)?;
        let algo = m.algorithm()?;
        if !matches!(algo, Algorithm::Pca | Algorithm::KMeans) {
            return Err(m.unsupported("transform", "only pca and kmeans transform data"));
        }
        let (m, t) = compute(m, move |m| m.fitted().map(|f| f.estimator.transform(&x))).await?;
        let t = t?.map_err(|e| m.predict_err("transform", e))?;
        let cols = (0..t.cols)
            .map(|c| {
                let name = if algo == Algorithm::Pca {
                    format!("pc{}", c + 1)
                } else {
                    format!("distance_{c}")
                };
                let a: ArrayRef = Arc::new(Float64Array::from(t.column(c).to_vec()));
                (Field::new(name, DataType::Float64, false), a)
            })
            .collect();
        append_columns(&rows, cols)
    }

    /// Scores the model on `input` (which must hold the label column for
    /// supervised models).
    pub async fn score(&self, name: &str, input: Input) -> Result<Metrics> {
        Ok(self.evaluate(name, input).await?.1)
    }

    /// As [`Models::score`], with the metadata of the version that scored.
    pub async fn evaluate(&self, name: &str, input: Input) -> Result<(Metadata, Metrics)> {
        let m = self.load(name).await?;
        let rows = self.read(&input, None).await?;
        let metrics = score_loaded(&m, &rows.schema, &rows.batches, rows.rows, &rows.source)?;
        Ok((m.meta, metrics))
    }

    /// Grid search with k-fold cross-validation (see [`search`]); stores the
    /// best model, refitted on every row, as a new version.
    pub async fn search(
        &self,
        name: &str,
        data: TrainingData,
        grid: &Map<String, Value>,
        folds: usize,
        opts: FitOptions,
    ) -> Result<SearchReport> {
        let spec = self.spec(name).await?;
        let algo = spec.algorithm()?;
        let combos = search::expand_grid(&spec, grid)?;
        if folds < 2 {
            return Err(ModelError::Usage(format!(
                "a search needs at least 2 folds, got {folds}"
            )));
        }
        let rows = self.read_training(&data, algo).await?;
        let prepared = prepare(&spec, &rows, &data, algo)?;
        if prepared.x.rows < folds {
            return Err(ModelError::Usage(format!(
                "{} rows cannot be split into {folds} folds",
                prepared.x.rows
            )));
        }
        if let Some(p) = &opts.progress {
            p.set_length((combos.len() * folds + 1) as u64);
        }
        let progress = opts.progress.clone();
        let model_name = name.to_string();
        let (result, prepared) = tokio::task::spawn_blocking(move || {
            let r = search::run(&combos, &prepared, folds, progress.as_ref());
            (r, prepared)
        })
        .await
        .map_err(|e| ModelError::Usage(format!("search task failed: {e}")))?;
        let (metric, table, best) = result.map_err(|reason| ModelError::Fit {
            name: model_name.clone(),
            algorithm: algo.name().into(),
            reason,
        })?;
        let best_params = table[best].params.clone();
        let best_spec = ModelSpec::new(algo.name(), best_params)?
            .with_preprocessing(spec.preprocessing.clone());
        let report = self
            .fit_prepared(
                name,
                best_spec,
                prepared,
                rows.trained_on,
                Some((metric.clone(), table.clone())),
                &opts,
            )
            .await?;
        Ok(SearchReport {
            meta: report.meta,
            metric,
            folds,
            rows: table,
            best,
        })
    }

    /// Reads the columns a fit needs.
    async fn read_training(&self, data: &TrainingData, algo: Algorithm) -> Result<Rows> {
        if algo.task().supervised() && data.label.is_none() {
            return Err(ModelError::Usage(format!(
                "{algo} learns from a label: name the label column (--label, or label = '…' in SQL)"
            )));
        }
        let columns = data.features.as_ref().map(|f| {
            let mut c = f.clone();
            if let Some(l) = &data.label
                && !c.contains(l)
            {
                c.push(l.clone());
            }
            c
        });
        self.read(&data.input, columns).await
    }

    /// Reads `input`, projected to `columns` when given.
    async fn read(&self, input: &Input, columns: Option<Vec<String>>) -> Result<Rows> {
        let (schema, batches, trained_on, source) = match input {
            Input::Dataset(name) => {
                let ds = self.engine.datasets();
                let meta = ds.metadata(name).await?;
                let opts = GetOptions {
                    columns,
                    ..Default::default()
                };
                let df = match ds.get_version(&meta, &opts).await? {
                    Data::Table(df) => df,
                    _ => {
                        return Err(ModelError::Usage(format!(
                            "dataset '{name}' is a {} object, not a table",
                            meta.kind
                        )));
                    }
                };
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await?;
                let source = format!("dataset '{}' version {}", meta.name, meta.version);
                let on = TrainedOn {
                    dataset: Some(meta.name),
                    version: Some(meta.version),
                    sql: None,
                    rows: 0,
                };
                (schema, batches, on, source)
            }
            Input::Sql(q) => {
                // boxed: SQL may itself use models (predict, evaluate)
                let df = Box::pin(self.engine.query(q))
                    .await
                    .map_err(ModelError::from_query)?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await?;
                let on = TrainedOn {
                    dataset: None,
                    version: None,
                    sql: Some(q.clone()),
                    rows: 0,
                };
                (schema, batches, on, "the query".to_string())
            }
            Input::Batches(schema, b) => {
                let on = TrainedOn {
                    dataset: None,
                    version: None,
                    sql: None,
                    rows: 0,
                };
                (schema.clone(), b.clone(), on, input.describe())
            }
        };
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        Ok(Rows {
            schema,
            batches,
            rows,
            trained_on: TrainedOn { rows, ..trained_on },
            source,
        })
    }
}

/// Learns the encoders and builds the matrix and target of a fit.
fn prepare(
    spec: &ModelSpec,
    rows: &Rows,
    data: &TrainingData,
    algo: Algorithm,
) -> Result<Prepared> {
    let label = data.label.as_deref();
    let feature_names: Vec<String> = match &data.features {
        Some(f) => f
            .iter()
            .filter(|c| Some(c.as_str()) != label)
            .cloned()
            .collect(),
        None => rows
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| Some(n.as_str()) != label)
            .collect(),
    };
    if feature_names.is_empty() {
        return Err(ModelError::Usage(format!(
            "no feature columns in {}; name them with --features",
            rows.source
        )));
    }
    let mut chunks = Vec::with_capacity(feature_names.len());
    for f in &feature_names {
        chunks.push((
            f.clone(),
            column_chunks(&rows.batches, &rows.schema, f, &rows.source)?,
        ));
    }
    let features = FeatureEncoder::fit(&chunks, &spec.preprocessing)?;
    let inputs: Vec<Vec<ArrayRef>> = chunks.into_iter().map(|(_, c)| c).collect();
    let x = features.encode(&inputs, rows.rows)?;
    let (label, y, n_classes) = match (algo.task().supervised(), label) {
        (true, Some(l)) => {
            let chunks = column_chunks(&rows.batches, &rows.schema, l, &rows.source)?;
            let (enc, y) = LabelEncoder::fit(l, &chunks, algo.task() == Task::Classification)?;
            let k = enc.classes.as_ref().map_or(0, Vec::len);
            (Some(enc), Some(y), k)
        }
        _ => (None, None, 0),
    };
    Ok(Prepared {
        features,
        label,
        x,
        y,
        n_classes,
    })
}

/// Scores on the training rows (not for PCA).
fn training_metrics(est: &estimator::Estimator, p: &Prepared, algo: Algorithm) -> Option<Metrics> {
    evaluate(est, &p.x, p.y.as_ref(), p.n_classes, algo).ok()
}

/// Metrics of an estimator on a matrix and known target.
pub(crate) fn evaluate(
    est: &estimator::Estimator,
    x: &Matrix,
    y: Option<&Target>,
    n_classes: usize,
    algo: Algorithm,
) -> std::result::Result<Metrics, String> {
    match (algo.task(), y) {
        (Task::Regression, Some(Target::Values(y))) => match est.predict(x)? {
            Output::Values(p) => Ok(metrics::regression(y, &p)),
            Output::Classes(_) => Err("a regressor predicted classes".into()),
        },
        (Task::Classification, Some(Target::Classes(y))) => {
            let proba = if algo.has_proba() {
                Some(est.predict_proba(x)?)
            } else {
                None
            };
            match est.predict(x)? {
                Output::Classes(p) => Ok(metrics::classification(y, &p, n_classes, proba.as_ref())),
                Output::Values(_) => Err("a classifier predicted values".into()),
            }
        }
        (Task::Clustering, _) => match est.predict(x)? {
            Output::Classes(p) => {
                // transform gives distances; inertia sums their squares
                let mut d = est.transform(x)?;
                d.data.iter_mut().for_each(|v| *v *= *v);
                Ok(metrics::inertia(&d, &p))
            }
            Output::Values(_) => Err("k-means predicted values".into()),
        },
        (Task::Decomposition, _) => Err("PCA has no score".into()),
        _ => Err("the label does not fit the algorithm".into()),
    }
}

/// Encodes the model's feature columns of `rows`, checking names and types.
fn encode_rows(m: &LoadedModel, rows: &Rows) -> Result<Matrix> {
    let f = m.fitted()?;
    let types: Vec<(String, Option<DataType>)> = f
        .features
        .columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                rows.schema
                    .field_with_name(&c.name)
                    .ok()
                    .map(|fl| fl.data_type().clone()),
            )
        })
        .collect();
    let mismatches = f.features.mismatches(&types);
    if !mismatches.is_empty() {
        return Err(ModelError::SchemaMismatch {
            name: m.label(),
            mismatches,
        });
    }
    let mut inputs = Vec::with_capacity(types.len());
    for c in &f.features.columns {
        inputs.push(column_chunks(
            &rows.batches,
            &rows.schema,
            &c.name,
            &rows.source,
        )?);
    }
    f.features.encode(&inputs, rows.rows)
}

/// Scores a loaded model on batches.
pub(crate) fn score_loaded(
    m: &LoadedModel,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    n: usize,
    source: &str,
) -> Result<Metrics> {
    let rows = Rows {
        schema: schema.clone(),
        batches: batches.to_vec(),
        rows: n,
        trained_on: TrainedOn {
            dataset: None,
            version: None,
            sql: None,
            rows: n,
        },
        source: source.to_string(),
    };
    let f = m.fitted()?;
    let algo = m.algorithm()?;
    if algo == Algorithm::Pca {
        return Err(m.unsupported("score", "PCA has no score; use transform"));
    }
    let x = encode_rows(m, &rows)?;
    let y = match &f.label {
        Some(l) => Some(l.encode(&column_chunks(batches, schema, &l.name, source)?)?),
        None => None,
    };
    let n_classes = f
        .label
        .as_ref()
        .and_then(|l| l.classes.as_ref())
        .map_or(0, Vec::len);
    evaluate(&f.estimator, &x, y.as_ref(), n_classes, algo).map_err(|e| m.predict_err("score", e))
}

/// The `prediction` array of a model's output.
pub(crate) fn output_array(m: &LoadedModel, out: Output) -> Result<ArrayRef> {
    let f = m.fitted()?;
    Ok(match out {
        Output::Values(v) => Arc::new(Float64Array::from(v)),
        Output::Classes(c) => match &f.label {
            Some(l) => l.decode_classes(&c)?,
            None => Arc::new(Int32Array::from(c)),
        },
    })
}

/// `rows`' batches with `cols` (one array over all rows) appended, sliced
/// per batch; a column of the same name is replaced.
fn append_columns(rows: &Rows, cols: Vec<(Field, ArrayRef)>) -> Result<Vec<RecordBatch>> {
    let keep: Vec<usize> = rows
        .schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !cols.iter().any(|(c, _)| c.name() == f.name()))
        .map(|(i, _)| i)
        .collect();
    let mut fields: Vec<Field> = keep.iter().map(|&i| rows.schema.field(i).clone()).collect();
    fields.extend(cols.iter().map(|(f, _)| f.clone()));
    let schema = Arc::new(Schema::new(fields));
    if rows.batches.is_empty() {
        return Ok(vec![RecordBatch::new_empty(schema)]);
    }
    let mut out = Vec::with_capacity(rows.batches.len());
    let mut offset = 0;
    for b in &rows.batches {
        let n = b.num_rows();
        let mut arrays: Vec<ArrayRef> = keep.iter().map(|&i| b.column(i).clone()).collect();
        arrays.extend(cols.iter().map(|(_, a)| a.slice(offset, n)));
        out.push(RecordBatch::try_new(schema.clone(), arrays)?);
        offset += n;
    }
    Ok(out)
}

/// Runs `f` (smartcore's arithmetic over every row) on the blocking pool:
/// a large prediction computes for seconds, which must not stall the async
/// runtime's workers. A panic inside is already an error (the estimator's
/// calls are guarded); a task that dies anyway is reported, not re-raised.
async fn compute<T: Send + 'static>(
    m: LoadedModel,
    f: impl FnOnce(&LoadedModel) -> T + Send + 'static,
) -> Result<(LoadedModel, T)> {
    let name = m.meta.name.clone();
    tokio::task::spawn_blocking(move || {
        let t = f(&m);
        (m, t)
    })
    .await
    .map_err(|e| ModelError::Usage(format!("model '{name}': the computation stopped: {e}")))
}
