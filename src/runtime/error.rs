//! Errors of the runtime: each names the job, task, parameter or expression
//! and says what to do.

use crate::models::ModelError;
use crate::sql::SqlError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "invalid cron expression '{expr}': {reason}; a schedule is 5 fields (minute hour day-of-month month day-of-week), e.g. '0 6 * * *'"
    )]
    InvalidCron { expr: String, reason: String },
    #[error("unknown time zone '{0}'; use an IANA name such as Europe/Zurich or UTC")]
    InvalidTimeZone(String),
    #[error("no job '{name}' in bucket '{bucket}'; store one with `om jobs put {name} FILE.sql`")]
    UnknownJob { name: String, bucket: String },
    #[error("'{name}' in bucket '{bucket}' is a {kind}, not a job (sql.script)")]
    NotAJob {
        name: String,
        bucket: String,
        kind: String,
    },
    #[error("no task '{0}' visible to this identity; list tasks with `om tasks list`")]
    UnknownTask(String),
    #[error("job '{job}' has no run '{run}'; list its runs with `om jobs history {job}`")]
    UnknownRun { job: String, run: String },
    #[error("job '{job}' is not scheduled; see `om jobs schedules`")]
    NotScheduled { job: String },
    #[error(
        "job '{job}' needs parameter '{param}' ({sql_type}); pass --param {param}=VALUE or declare a default in the script"
    )]
    MissingParam {
        job: String,
        param: String,
        sql_type: String,
    },
    #[error("parameter '{param}' of job '{job}' must be {sql_type}, got '{value}': {reason}")]
    BadParam {
        job: String,
        param: String,
        sql_type: String,
        value: String,
        reason: String,
    },
    #[error("job '{job}' has no parameter '{param}'; it declares: {declared}")]
    UnknownParam {
        job: String,
        param: String,
        declared: String,
    },
    #[error("job '{job}' is not a valid SQL script: {reason}")]
    NotSql { job: String, reason: String },
    #[error("invalid {what} '{value}': {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("timed out after {0} s (the task's timeout)")]
    TimedOut(u64),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<datafusion::error::DataFusionError> for RuntimeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        RuntimeError::Sql(SqlError::from(e))
    }
}
