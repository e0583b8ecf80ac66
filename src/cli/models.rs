//! `om models …`: put, fit, predict, score, transform, search, and the
//! store verbs (list, info, history, tag, drop); `algorithms` lists what can
//! be fitted and each algorithm's hyperparameters.

use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::output::{OutFormat, write_frame};
use super::{CliError, progress};
use crate::models::{
    Algorithm, CategoricalEncoding, FitOptions, Input, ModelSpec, Models, NullStrategy,
    Preprocessing, TrainingData,
};
use crate::store::{Object, PutMode, PutOptions};
use crate::{ListOptions, Metadata, Omega};

/// Where the rows come from: a dataset (NAME, NAME@N, NAME@TAG) or --sql.
#[derive(Debug, Args)]
pub struct Source {
    /// Dataset to read (NAME, NAME@VERSION or NAME@TAG).
    dataset: Option<String>,
    /// Read the rows from this query instead of a dataset.
    #[arg(long, conflicts_with = "dataset")]
    sql: Option<String>,
}

impl Source {
    fn input(&self) -> Result<Input, CliError> {
        match (&self.dataset, &self.sql) {
            (Some(d), None) => Ok(Input::Dataset(d.clone())),
            (None, Some(q)) => Ok(Input::Sql(q.clone())),
            _ => Err(CliError::Usage(
                "name a DATASET or give --sql \"SELECT …\"".into(),
            )),
        }
    }
}

/// How results are written.
#[derive(Debug, Args)]
pub struct Sink {
    /// Store the result as this dataset (a new version) instead of printing it.
    #[arg(long)]
    into: Option<String>,
    /// Output format (table on a terminal by default).
    #[arg(long, value_enum)]
    format: Option<OutFormat>,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Preprocessing flags.
#[derive(Debug, Args)]
pub struct PreprocessingArgs {
    /// How string columns become numbers: one_hot (default) or ordinal.
    #[arg(long, value_parser = parse_categorical)]
    categorical: Option<CategoricalEncoding>,
    /// Nulls in features: error (default), mean, median or zero.
    #[arg(long, value_parser = parse_nulls)]
    nulls: Option<NullStrategy>,
}

impl PreprocessingArgs {
    fn get(&self) -> Preprocessing {
        Preprocessing {
            categorical: self.categorical.unwrap_or_default(),
            nulls: self.nulls.unwrap_or_default(),
        }
    }

    fn given(&self) -> bool {
        self.categorical.is_some() || self.nulls.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Store a model spec (unfitted): an algorithm and its hyperparameters.
    Put {
        name: String,
        /// Algorithm, e.g. linear_regression, random_forest_classifier (see `om models algorithms`).
        #[arg(long = "type")]
        algorithm: String,
        /// Hyperparameters as a JSON object, e.g. '{"n_trees": 50, "seed": 1}'.
        #[arg(long)]
        params: Option<String>,
        #[command(flatten)]
        pre: PreprocessingArgs,
    },
    /// Fit a model on a dataset or query; every fit is a new version.
    Fit {
        name: String,
        #[command(flatten)]
        source: Source,
        /// Comma-separated feature columns (default: every column but the label).
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
        /// The label column (supervised algorithms).
        #[arg(long)]
        label: Option<String>,
        /// Create or replace the spec with this algorithm before fitting.
        #[arg(long = "type")]
        algorithm: Option<String>,
        /// Hyperparameters (with --type) as a JSON object.
        #[arg(long, requires = "algorithm")]
        params: Option<String>,
        #[command(flatten)]
        pre: PreprocessingArgs,
    },
    /// Predict every row: the rows with a `prediction` column (or `proba_<class>` columns).
    Predict {
        name: String,
        #[command(flatten)]
        source: Source,
        /// Class probabilities instead of labels.
        #[arg(long)]
        proba: bool,
        #[command(flatten)]
        sink: Sink,
    },
    /// PCA components or k-means distances of every row.
    Transform {
        name: String,
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        sink: Sink,
    },
    /// Score a model on rows that hold the label: R², MAE, RMSE or accuracy, precision, recall, F1, log loss.
    Score {
        name: String,
        #[command(flatten)]
        source: Source,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Grid search with k-fold cross-validation; stores the best model as a new version.
    Search {
        name: String,
        #[command(flatten)]
        source: Source,
        /// Parameter grid as JSON, e.g. '{"max_depth": [2, 4, 8], "n_trees": [20, 50]}'.
        #[arg(long)]
        grid: String,
        /// Number of folds.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
        #[arg(long)]
        label: Option<String>,
        /// Store the results table as this dataset.
        #[arg(long)]
        into: Option<String>,
    },
    /// List models matching a glob PATTERN.
    List {
        pattern: Option<String>,
        /// Show algorithm, version, fitted-on and modification time.
        #[arg(long, short)]
        long: bool,
    },
    /// A model's metadata (spec, features, label, classes, metrics) as JSON.
    Info { name: String },
    /// All versions of a model.
    History { name: String },
    /// Point a tag (prod, staging, …) at a version (default: the latest).
    Tag {
        name: String,
        tag: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Drop a model (all versions), or every match of a glob pattern.
    Drop {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// The algorithms that can be fitted, with their hyperparameters.
    Algorithms,
}

fn parse_categorical(s: &str) -> Result<CategoricalEncoding, String> {
    serde_json::from_value(Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("unknown encoding '{s}': use one_hot or ordinal"))
}

fn parse_nulls(s: &str) -> Result<NullStrategy, String> {
    serde_json::from_value(Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("unknown strategy '{s}': use error, mean, median or zero"))
}

fn parse_json_object(what: &str, s: Option<&str>) -> Result<Map<String, Value>, CliError> {
    let Some(s) = s else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(CliError::Usage(format!(
            "{what} must be a JSON object, e.g. '{{\"alpha\": 0.5}}'; got: {s}"
        ))),
    }
}

fn print_metrics(metrics: &[(String, f64)]) {
    for (k, v) in metrics {
        println!("{k:<10} {v:.6}");
    }
}

/// Writes result batches: stored as a dataset with --into, else printed.
async fn emit(om: &Omega, batches: Vec<RecordBatch>, sink: Sink) -> Result<(), CliError> {
    if let Some(into) = sink.into {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| CliError::Usage("no rows to store".into()))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let meta = om
            .datasets()
            .put(
                Object::Table { schema, batches },
                &into,
                PutOptions {
                    mode: PutMode::Overwrite,
                    ..Default::default()
                },
            )
            .await?;
        println!(
            "stored {} version {} ({rows} rows)",
            meta.name, meta.version
        );
        return Ok(());
    }
    let df = om.session().read_batches(batches)?;
    let format = sink.format.unwrap_or(match &sink.output {
        Some(p) => OutFormat::from_extension(p),
        None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => OutFormat::Table,
        None => OutFormat::Csv,
    });
    let rows = write_frame(df, format, sink.output.as_deref(), None).await?;
    if let Some(out) = &sink.output {
        eprintln!("wrote {rows} rows to {}", out.display());
    }
    Ok(())
}

fn fitted_on(m: &Metadata) -> String {
    let t = &m.kind_meta["trained_on"];
    match (
        t["dataset"].as_str(),
        t["version"].as_u64(),
        t["sql"].as_str(),
    ) {
        (Some(d), Some(v), _) => format!("{d}@{v}"),
        (_, _, Some(_)) => "query".into(),
        _ if m.kind_meta["fitted"] == Value::Bool(false) => "(not fitted)".into(),
        _ => "-".into(),
    }
}

fn algorithm_of(m: &Metadata) -> &str {
    m.kind
        .strip_prefix(crate::models::spec::KIND_PREFIX)
        .unwrap_or(&m.kind)
}

pub async fn run(om: &Omega, cmd: ModelsCommand) -> Result<(), CliError> {
    let models: Models = om.models();
    match cmd {
        ModelsCommand::Put {
            name,
            algorithm,
            params,
            pre,
        } => {
            let spec = ModelSpec::new(
                &algorithm,
                parse_json_object("--params", params.as_deref())?,
            )?
            .with_preprocessing(pre.get());
            let meta = models.put(&name, spec).await?;
            println!(
                "stored {} version {} ({})",
                meta.name, meta.version, meta.kind
            );
        }
        ModelsCommand::Fit {
            name,
            source,
            features,
            label,
            algorithm,
            params,
            pre,
        } => {
            let spec = match algorithm {
                Some(a) => Some(
                    ModelSpec::new(&a, parse_json_object("--params", params.as_deref())?)?
                        .with_preprocessing(pre.get()),
                ),
                None if pre.given() => {
                    let s = models.spec(&name).await?;
                    Some(s.with_preprocessing(pre.get()))
                }
                None => None,
            };
            let data = TrainingData {
                input: source.input()?,
                features,
                label,
            };
            let pb = progress::bar(None, &format!("fit {name}"));
            let report = models
                .fit(
                    &name,
                    data,
                    spec,
                    FitOptions {
                        progress: Some(pb.clone()),
                    },
                )
                .await;
            pb.finish_and_clear();
            let report = report?;
            println!(
                "fitted {} version {} ({}) on {} rows in {:.3}s",
                report.meta.name,
                report.meta.version,
                algorithm_of(&report.meta),
                report.rows,
                report.fit_seconds
            );
            if !report.metrics.is_empty() {
                println!("training scores:");
                print_metrics(&report.metrics);
            }
        }
        ModelsCommand::Predict {
            name,
            source,
            proba,
            sink,
        } => {
            let input = source.input()?;
            let batches = if proba {
                models.predict_proba(&name, input).await
            } else {
                models.predict(&name, input).await
            }?;
            emit(om, batches, sink).await?;
        }
        ModelsCommand::Transform { name, source, sink } => {
            let batches = models.transform(&name, source.input()?).await?;
            emit(om, batches, sink).await?;
        }
        ModelsCommand::Score { name, source, json } => {
            let metrics = models.score(&name, source.input()?).await?;
            if json {
                let obj: Map<String, Value> = metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect();
                println!("{}", Value::Object(obj));
            } else {
                print_metrics(&metrics);
            }
        }
        ModelsCommand::Search {
            name,
            source,
            grid,
            folds,
            features,
            label,
            into,
        } => {
            let grid = parse_json_object("--grid", Some(&grid))?;
            let data = TrainingData {
                input: source.input()?,
                features,
                label,
            };
            let pb = progress::bar(Some(0), &format!("search {name}"));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} fits, eta {eta}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            let report = models
                .search(
                    &name,
                    data,
                    &grid,
                    folds,
                    FitOptions {
                        progress: Some(pb.clone()),
                    },
                )
                .await;
            pb.finish_and_clear();
            let report = report?;
            let best = &report.rows[report.best];
            println!(
                "best of {} grid points ({}-fold {}): {:.6} ± {:.6} with {}",
                report.rows.len(),
                report.folds,
                report.metric,
                best.mean_score,
                best.std_score,
                Value::Object(best.params.clone())
            );
            println!(
                "stored {} version {} (refitted on all rows)",
                report.meta.name, report.meta.version
            );
            let table = report.to_batch()?;
            emit(
                om,
                vec![table],
                Sink {
                    into,
                    format: None,
                    output: None,
                },
            )
            .await?;
        }
        ModelsCommand::List { pattern, long } => {
            let metas = models
                .store()
                .list(pattern.as_deref(), &ListOptions::default())
                .await?;
            if long {
                println!(
                    "{:<28} {:<26} {:>7}  {:<20} MODIFIED",
                    "NAME", "ALGORITHM", "VERSION", "FITTED ON"
                );
            }
            for m in &metas {
                if long {
                    println!(
                        "{:<28} {:<26} {:>7}  {:<20} {}",
                        m.name,
                        algorithm_of(m),
                        m.version,
                        fitted_on(m),
                        m.modified.format("%Y-%m-%d %H:%M:%S")
                    );
                } else {
                    println!("{}", m.name);
                }
            }
        }
        ModelsCommand::Info { name } => {
            let meta = models.store().metadata(&name).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&meta)
                    .map_err(|e| CliError::Usage(format!("cannot print JSON: {e}")))?
            );
        }
        ModelsCommand::History { name } => {
            let history = models.store().history(&name).await?;
            let tags = models.store().tags(&history[0].name).await?;
            println!(
                "{:>7}  {:<20} {:<26} {:<20} {:<24} TAGS",
                "VERSION", "MODIFIED", "ALGORITHM", "FITTED ON", "SCORE"
            );
            for m in &history {
                let t: Vec<&str> = tags
                    .iter()
                    .filter(|(_, v)| *v == m.version)
                    .map(|(t, _)| t.as_str())
                    .collect();
                let metrics = &m.kind_meta["metrics"];
                let score = ["r2", "accuracy", "inertia"]
                    .iter()
                    .find_map(|k| metrics[k].as_f64().map(|v| format!("{k}={v:.4}")))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>7}  {:<20} {:<26} {:<20} {:<24} {}",
                    m.version,
                    m.modified.format("%Y-%m-%d %H:%M:%S"),
                    algorithm_of(m),
                    fitted_on(m),
                    score,
                    t.join(",")
                );
            }
        }
        ModelsCommand::Tag { name, tag, version } => {
            let meta = models.store().tag(&name, &tag, version).await?;
            println!("{}@{} -> version {}", meta.name, tag, meta.version);
        }
        ModelsCommand::Drop { name, force } => {
            let dropped = models.store().drop(&name, force).await?;
            if dropped.is_empty() {
                println!("nothing to drop");
            }
            for d in dropped {
                println!("dropped {d}");
            }
        }
        ModelsCommand::Algorithms => {
            for a in Algorithm::ALL {
                println!("{a} ({:?})", a.task());
                for p in a.params() {
                    println!("    {:<24} default {:<12} {}", p.name, p.default, p.doc);
                }
            }
        }
    }
    Ok(())
}
