//! Jobs: SQL scripts stored as versioned objects of kind `sql.script` in a
//! bucket's `jobs` store, with named parameters, run by name and version
//! (`nightly@3`), and the record of each run.
//!
//! A script declares its parameters in its leading comment lines:
//!
//! ```sql
//! -- param day date
//! -- param region text = 'EU'
//! INSERT INTO daily SELECT * FROM sales WHERE day = :day AND region = :region;
//! ```
//!
//! Types: `text`, `bigint`, `double`, `boolean`, `date`, `timestamp`.
//! Values are bound as typed parameters (`:day` becomes `$1`), never spliced
//! into the SQL text.
//!
//! **What a failing statement leaves**: statements run in order, each in its
//! own commit. When one fails (or the run is cancelled or times out), the
//! statements before it stay committed, it and the ones after it write
//! nothing; the run record lists each statement as `committed` (with the
//! versions it wrote), `failed` (with the error), `cancelled` or `not run`.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::RuntimeError;
use super::records::Records;
use super::tasks::{Stop, written_versions};
use crate::backends::script::{KIND, ScriptParam, SqlScript};
use crate::engine::Engine;
use crate::sql::placeholders::{NamedError, number_named};
use crate::store::{ListOptions, Metadata, Object, PutOptions, StoreError};

/// How a run of a job went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// A scheduled instant nobody ran (the scheduler was down).
    Missed,
    /// The process running it stopped.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Missed => "missed",
            RunStatus::Abandoned => "abandoned",
        }
    }
}

/// One statement of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementRecord {
    /// From 1.
    pub index: usize,
    /// The statement (its first 200 characters).
    pub sql: String,
    /// `committed`, `failed`, `cancelled` or `not run`.
    pub status: String,
    /// `bucket/store/name@version` of each object it wrote.
    #[serde(default)]
    pub wrote: Vec<String>,
    /// Rows it returned (a query) or wrote (a write).
    #[serde(default)]
    pub rows: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The record of one run of a job: `_system/runtime/<bucket>/runs/<job>/<key>.json`.
/// A scheduled run's key is its instant (`20261201T060000Z`), claimed
/// put-if-absent before it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRun {
    pub bucket: String,
    pub job: String,
    /// The version that ran (0 for a missed instant).
    pub version: u64,
    pub key: String,
    /// `manual`, `schedule` or `catch-up`.
    pub trigger: String,
    /// The scheduled instant.
    #[serde(default)]
    pub instant: Option<DateTime<Utc>>,
    pub status: RunStatus,
    #[serde(default)]
    pub task: Option<String>,
    /// The runtime process that ran it.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub started: DateTime<Utc>,
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
    #[serde(default)]
    pub statements: Vec<StatementRecord>,
    #[serde(default)]
    pub error: Option<String>,
}

impl JobRun {
    pub(crate) async fn save(&self, records: &Records) -> Result<(), StoreError> {
        records
            .put(&run_path(&self.bucket, &self.job, &self.key), self, false)
            .await
            .map(|_| ())
    }
}

pub(crate) fn run_path<'a>(bucket: &'a str, job: &'a str, key: &'a str) -> [&'a str; 4] {
    [bucket, "runs", job, key]
}

/// The key of a scheduled instant.
pub fn instant_key(instant: DateTime<Utc>) -> String {
    format!("{}.json", instant.format("%Y%m%dT%H%M%SZ"))
}

/// The key of a run started by hand.
pub(crate) fn manual_key(now: DateTime<Utc>) -> String {
    format!(
        "manual-{}-{}.json",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The SQL type of a parameter type name.
fn sql_type(name: &str) -> Option<DataType> {
    Some(match name.to_ascii_lowercase().as_str() {
        "text" | "string" | "varchar" => DataType::Utf8,
        "bigint" | "int" | "integer" => DataType::Int64,
        "double" | "float" => DataType::Float64,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => return None,
    })
}

/// A parameter's value of its declared type.
fn typed(job: &str, p: &ScriptParam, value: &str) -> Result<ScalarValue, RuntimeError> {
    let bad = |reason: String| RuntimeError::BadParam {
        job: job.to_string(),
        param: p.name.clone(),
        sql_type: p.sql_type.clone(),
        value: value.to_string(),
        reason,
    };
    let t = sql_type(&p.sql_type).ok_or_else(|| bad("unknown type".into()))?;
    let v = ScalarValue::try_from_string(value.to_string(), &t)
        .map_err(|e| bad(e.strip_backtrace()))?;
    if v.is_null() {
        return Err(bad("not a value of this type".into()));
    }
    Ok(v)
}

/// The `-- param NAME TYPE [= DEFAULT]` lines at the top of a script.
pub fn declared_params(job: &str, sql: &str) -> Result<Vec<ScriptParam>, RuntimeError> {
    let bad = |line: &str, reason: &str| RuntimeError::NotSql {
        job: job.to_string(),
        reason: format!(
            "parameter line '{line}': {reason}; write `-- param NAME TYPE [= DEFAULT]`"
        ),
    };
    let mut params: Vec<ScriptParam> = Vec::new();
    for line in sql.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let Some(decl) = comment.trim().strip_prefix("param ") else {
            continue;
        };
        let (head, default) = match decl.split_once('=') {
            Some((h, d)) => {
                let d = d.trim();
                let d = d
                    .strip_prefix('\'')
                    .and_then(|d| d.strip_suffix('\''))
                    .unwrap_or(d);
                (h, Some(d.to_string()))
            }
            None => (decl, None),
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let [name, ty] = words.as_slice() else {
            return Err(bad(line, "expected a name and a type"));
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(bad(line, "a name is letters, digits and '_'"));
        }
        if sql_type(ty).is_none() {
            return Err(bad(
                line,
                "unknown type (text, bigint, double, boolean, date, timestamp)",
            ));
        }
        if params.iter().any(|p| p.name == *name) {
            return Err(bad(line, "declared twice"));
        }
        let p = ScriptParam {
            name: name.to_string(),
            sql_type: ty.to_ascii_lowercase(),
            default,
        };
        if let Some(d) = &p.default {
            typed(job, &p, d)?;
        }
        params.push(p);
    }
    Ok(params)
}

/// The script's statements with `:name` numbered, each checked to be SQL.
pub fn statements(job: &str, script: &SqlScript) -> Result<Vec<String>, RuntimeError> {
    let names: Vec<String> = script.params.iter().map(|p| p.name.clone()).collect();
    let numbered = number_named(&script.sql, &names).map_err(|e| match e {
        NamedError::Unknown(param) => RuntimeError::NotSql {
            job: job.to_string(),
            reason: format!(
                "':{param}' is not a declared parameter; declare it with `-- param {param} TYPE`"
            ),
        },
        NamedError::Dollar(param) => RuntimeError::NotSql {
            job: job.to_string(),
            reason: format!("'${param}': job parameters are written ':{param}'"),
        },
        NamedError::Syntax(reason) => RuntimeError::NotSql {
            job: job.to_string(),
            reason,
        },
    })?;
    crate::sql::execute::parse_script(&numbered).map_err(|e| RuntimeError::NotSql {
        job: job.to_string(),
        reason: e.to_string(),
    })
}

/// The values of every declared parameter, in declaration order (`$1, $2, …`):
/// given ones parsed by their type, the others from their defaults.
pub fn bind(
    job: &str,
    script: &SqlScript,
    given: &BTreeMap<String, String>,
) -> Result<Vec<ScalarValue>, RuntimeError> {
    for name in given.keys() {
        if !script.params.iter().any(|p| p.name == *name) {
            let declared: Vec<&str> = script.params.iter().map(|p| p.name.as_str()).collect();
            return Err(RuntimeError::UnknownParam {
                job: job.to_string(),
                param: name.clone(),
                declared: if declared.is_empty() {
                    "no parameters".into()
                } else {
                    declared.join(", ")
                },
            });
        }
    }
    script
        .params
        .iter()
        .map(|p| match given.get(&p.name).or(p.default.as_ref()) {
            Some(v) => typed(job, p, v),
            None => Err(RuntimeError::MissingParam {
                job: job.to_string(),
                param: p.name.clone(),
                sql_type: p.sql_type.clone(),
            }),
        })
        .collect()
}

/// Parses `k=v` pairs (`--param`).
pub fn parse_params(pairs: &[String]) -> Result<BTreeMap<String, String>, RuntimeError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(RuntimeError::Invalid {
                what: "parameter",
                value: p.clone(),
                reason: "write NAME=VALUE".into(),
            }),
        })
        .collect()
}

/// The jobs of one bucket, as an identity sees them.
pub struct Jobs {
    engine: Engine,
}

impl Jobs {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Checks and stores `sql` as a new version of job `name`. `defaults`
    /// set (or override) the defaults of declared parameters.
    pub async fn put(
        &self,
        name: &str,
        sql: &str,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Metadata, RuntimeError> {
        let mut params = declared_params(name, sql)?;
        for (k, v) in defaults {
            let Some(p) = params.iter_mut().find(|p| p.name == *k) else {
                let declared: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                return Err(RuntimeError::UnknownParam {
                    job: name.to_string(),
                    param: k.clone(),
                    declared: if declared.is_empty() {
                        "no parameters".into()
                    } else {
                        declared.join(", ")
                    },
                });
            };
            p.default = Some(v.clone());
            typed(name, p, v)?;
        }
        let script = SqlScript {
            sql: sql.to_string(),
            params,
        };
        statements(name, &script)?;
        Ok(self
            .engine
            .store("jobs")?
            .put(Object::Any(Box::new(script)), name, PutOptions::default())
            .await?)
    }

    /// Job `name` (`name@3`, `name@tag`) and its script.
    pub async fn get(&self, name: &str) -> Result<(Metadata, SqlScript), RuntimeError> {
        let meta = match self.engine.store("jobs")?.metadata(name).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return Err(RuntimeError::UnknownJob {
                    name: name.to_string(),
                    bucket: self.engine.bucket_name().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if meta.kind != KIND {
            return Err(RuntimeError::NotAJob {
                name: name.to_string(),
                bucket: meta.bucket.clone(),
                kind: meta.kind.clone(),
            });
        }
        let script = SqlScript::from_meta(&meta)?;
        Ok((meta, script))
    }

    /// The latest version of every job.
    pub async fn list(&self) -> Result<Vec<Metadata>, RuntimeError> {
        Ok(self
            .engine
            .store("jobs")?
            .list(None, &ListOptions::default())
            .await?
            .into_iter()
            .filter(|m| m.kind == KIND)
            .collect())
    }

    /// Run `key` of job `name` (the key a job task's result names).
    pub async fn run(&self, name: &str, key: &str) -> Result<JobRun, RuntimeError> {
        let (meta, _) = self.get(name).await?;
        let records = Records::new(self.engine.root().clone());
        records
            .get(&run_path(&meta.bucket, &meta.name, key))
            .await?
            .ok_or_else(|| RuntimeError::UnknownRun {
                job: meta.name.clone(),
                run: key.to_string(),
            })
    }

    /// The runs of job `name`, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<JobRun>, RuntimeError> {
        let (meta, _) = self.get(name).await?;
        let records = Records::new(self.engine.root().clone());
        let mut runs: Vec<JobRun> = records.list(&[&meta.bucket, "runs", &meta.name]).await?;
        runs.retain(|r| r.job == meta.name);
        runs.sort_by_key(|r| r.instant.unwrap_or(r.started));
        Ok(runs)
    }
}

/// Runs the statements of a job in order as `engine`'s identity, saving
/// the run record after each; stops between (or inside) statements when
/// `stop` says so.
pub(crate) async fn run_statements(
    engine: &Engine,
    records: &Records,
    run: &mut JobRun,
    statements: Vec<String>,
    params: Vec<ScalarValue>,
    mut stop: watch::Receiver<Option<Stop>>,
    progress: impl Fn(String),
) -> Result<(), RuntimeError> {
    run.statements = statements
        .iter()
        .enumerate()
        .map(|(i, s)| StatementRecord {
            index: i + 1,
            sql: s.chars().take(200).collect(),
            status: "not run".into(),
            wrote: vec![],
            rows: None,
            error: None,
        })
        .collect();
    let n = statements.len();
    for (i, text) in statements.into_iter().enumerate() {
        progress(format!("statement {} of {n}", i + 1));
        let work = Box::pin(super::tasks::recording_writes(async {
            // boxed: a statement's future (a whole fit, for CREATE MODEL)
            // is large, and worker threads have small stacks
            let df = Box::pin(crate::sql::execute::run(engine, &text, &params)).await?;
            let batches = Box::pin(df.collect()).await?;
            let returned: usize = batches.iter().map(|b| b.num_rows()).sum();
            // a write answers with one row: the count it wrote
            let count = match batches.first().map(|b| b.schema()) {
                Some(s)
                    if returned == 1 && s.fields().len() == 1 && s.field(0).name() == "count" =>
                {
                    arrow::compute::cast(batches[0].column(0), &DataType::UInt64)
                        .ok()
                        .and_then(|a| {
                            a.as_any()
                                .downcast_ref::<arrow::array::UInt64Array>()
                                .map(|a| a.value(0))
                        })
                        .unwrap_or(1)
                }
                _ => returned as u64,
            };
            Ok::<_, RuntimeError>(count)
        }));
        let outcome = tokio::select! {
            r = work => Some(r),
            _ = stop.wait_for(|s| s.is_some()) => None,
        };
        let st = &mut run.statements[i];
        match outcome {
            Some((Ok(rows), wrote)) => {
                st.status = "committed".into();
                st.rows = Some(rows);
                st.wrote = written_versions(engine, &wrote).await;
                run.save(records).await?;
            }
            Some((Err(e), wrote)) => {
                st.status = "failed".into();
                st.error = Some(e.to_string());
                st.wrote = written_versions(engine, &wrote).await;
                return Err(e);
            }
            None => {
                st.status = "cancelled".into();
                let reason = stop.borrow().unwrap_or(Stop::Cancelled);
                return Err(reason.error());
            }
        }
    }
    Ok(())
}
