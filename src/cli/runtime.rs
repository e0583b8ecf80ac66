//! `om tasks` and `om jobs`: background tasks, stored SQL jobs and their
//! schedules, in this process or against `om serve` (`--server URL --key
//! K`, through its HTTP API). Without a server a task runs in this process
//! (its record is kept in the store like any other); schedules run inside
//! `om serve`. While a task runs, a spinner on stderr shows its status and
//! progress.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::CliError;
use super::remote::Remote;
use crate::Omega;
use crate::runtime::jobs::parse_params;
use crate::runtime::{JobRun, RuntimeError, Schedule, TaskRecord, TaskSpec, TaskStatus, Tasks};
use crate::store::Metadata;

impl From<RuntimeError> for CliError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Store(s) => CliError::Store(s),
            RuntimeError::Sql(s) => CliError::Sql(s),
            RuntimeError::Model(m) => CliError::Model(m),
            other => CliError::Usage(other.to_string()),
        }
    }
}

/// Where the commands run: here, or on a server.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Run against `om serve` at this URL (e.g. http://127.0.0.1:8080)
    /// instead of in this process; the key's bucket is used.
    #[arg(long, global = true, env = "OMEGA_SERVER", value_name = "URL")]
    server: Option<String>,
    /// API key for --server.
    #[arg(
        long,
        global = true,
        env = "OMEGA_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    key: Option<String>,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    cmd: TasksCommand,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    cmd: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Run a verb as a task (here, or on --server) and wait for it; prints its record.
    Submit {
        #[command(subcommand)]
        verb: SubmitCommand,
        /// With --server: print the task id and return at once.
        #[arg(long, global = true)]
        detach: bool,
    },
    /// A task's record (JSON).
    Status { id: String },
    /// Wait until a task is final; exits 1 unless it succeeded.
    Wait { id: String },
    /// Tasks this identity may see, newest first.
    List,
    /// Ask a task to stop (its process stops it at the next await point).
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SubmitCommand {
    /// One SQL statement or a script.
    Sql { sql: String },
    /// Fit MODEL (its stored spec) on a dataset.
    Fit {
        model: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        label: Option<String>,
        /// Comma-separated feature columns (default: every column but the label).
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
    },
    /// Predictions of MODEL for every row of a dataset, stored as --into.
    Predict {
        model: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        into: String,
    },
    /// Score MODEL on a dataset (the metrics are the task's result).
    Score {
        model: String,
        #[arg(long)]
        dataset: String,
    },
    /// Run job NAME[@VERSION].
    Job {
        name: String,
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Store FILE (SQL statements; `-- param NAME TYPE [= DEFAULT]` lines at the top) as job NAME.
    Put {
        name: String,
        file: PathBuf,
        /// Default of a declared parameter.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Run job NAME[@VERSION] now (here, or on --server); prints the run record.
    Run {
        name: String,
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// The jobs of the bucket.
    List,
    /// The runs of a job, oldest first.
    History { name: String },
    /// Run job NAME at the instants of a 5-field cron expression (inside `om serve`).
    Schedule {
        name: String,
        /// minute hour day-of-month month day-of-week, e.g. "0 6 * * *".
        cron: String,
        /// IANA time zone of the expression.
        #[arg(long, default_value = "UTC")]
        tz: String,
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// After downtime, run the newest missed instant once (others stay `missed`).
        #[arg(long)]
        catch_up: bool,
    },
    /// Remove the schedule of job NAME.
    Unschedule { name: String },
    /// The schedules of the bucket.
    Schedules,
}

/// The runtime as the CLI reaches it.
pub enum Runner {
    Local(Tasks),
    Remote(Remote),
}

impl Runner {
    /// The server of `args` if one is given, else this process's runtime
    /// over the store `open` opens (only then is the local root touched).
    pub async fn new(
        args: &ServerArgs,
        open: impl AsyncFnOnce() -> Result<Omega, CliError>,
    ) -> Result<Self, CliError> {
        match &args.server {
            Some(server) => Ok(Runner::Remote(Remote::new(
                server,
                args.key.as_deref().unwrap_or(""),
            )?)),
            None => Ok(Runner::Local(open().await?.runtime().await?)),
        }
    }

    fn is_local(&self) -> bool {
        matches!(self, Runner::Local(_))
    }

    async fn submit(&self, spec: TaskSpec) -> Result<TaskRecord, CliError> {
        match self {
            Runner::Local(t) => Ok(t.submit(spec).await?.status().await?),
            Runner::Remote(r) => r.post(&["tasks"], &spec).await,
        }
    }

    async fn status(&self, id: &str) -> Result<TaskRecord, CliError> {
        match self {
            Runner::Local(t) => Ok(t.status(id).await?),
            Runner::Remote(r) => r.get(&["tasks", id]).await,
        }
    }

    /// The record once final, or after about a second.
    async fn poll(&self, id: &str) -> Result<TaskRecord, CliError> {
        match self {
            Runner::Local(t) => {
                match tokio::time::timeout(Duration::from_secs(1), t.wait(id)).await {
                    Ok(r) => Ok(r?),
                    Err(_) => Ok(t.status(id).await?),
                }
            }
            Runner::Remote(r) => r.get_query(&["tasks", id], &[("wait", "1")]).await,
        }
    }

    async fn list(&self) -> Result<Vec<TaskRecord>, CliError> {
        match self {
            Runner::Local(t) => Ok(t.list().await?),
            Runner::Remote(r) => r.get(&["tasks"]).await,
        }
    }

    async fn cancel(&self, id: &str) -> Result<TaskRecord, CliError> {
        match self {
            Runner::Local(t) => Ok(t.cancel(id).await?),
            Runner::Remote(r) => r.delete(&["tasks", id]).await,
        }
    }

    async fn put_job(
        &self,
        name: &str,
        sql: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Metadata, CliError> {
        match self {
            Runner::Local(t) => Ok(t.jobs().put(name, sql, params).await?),
            Runner::Remote(r) => {
                r.put(&["jobs", name], &json!({"sql": sql, "params": params}))
                    .await
            }
        }
    }

    async fn run_job(
        &self,
        name: &str,
        params: BTreeMap<String, String>,
    ) -> Result<TaskRecord, CliError> {
        match self {
            Runner::Local(t) => Ok(t.run_job(name, params).await?.status().await?),
            Runner::Remote(r) => {
                r.post(&["jobs", name, "run"], &json!({"params": params}))
                    .await
            }
        }
    }

    async fn jobs(&self) -> Result<Vec<Metadata>, CliError> {
        match self {
            Runner::Local(t) => Ok(t.jobs().list().await?),
            Runner::Remote(r) => r.get(&["jobs"]).await,
        }
    }

    async fn run_record(&self, name: &str, key: &str) -> Result<JobRun, CliError> {
        match self {
            Runner::Local(t) => Ok(t.jobs().run(name, key).await?),
            Runner::Remote(r) => r.get(&["jobs", name, "runs", key]).await,
        }
    }

    async fn history(&self, name: &str) -> Result<Vec<JobRun>, CliError> {
        match self {
            Runner::Local(t) => Ok(t.jobs().history(name).await?),
            Runner::Remote(r) => r.get(&["jobs", name, "runs"]).await,
        }
    }

    async fn schedule(
        &self,
        name: &str,
        cron: &str,
        tz: &str,
        params: BTreeMap<String, String>,
        catch_up: bool,
    ) -> Result<Schedule, CliError> {
        match self {
            Runner::Local(t) => Ok(t
                .schedules()
                .schedule(name, cron, tz, params, catch_up)
                .await?),
            Runner::Remote(r) => {
                let body = json!({"cron": cron, "tz": tz, "params": params, "catch_up": catch_up});
                r.put(&["jobs", name, "schedule"], &body).await
            }
        }
    }

    async fn unschedule(&self, name: &str) -> Result<(), CliError> {
        match self {
            Runner::Local(t) => Ok(t.schedules().unschedule(name).await?),
            Runner::Remote(r) => r.delete(&["jobs", name, "schedule"]).await,
        }
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, CliError> {
        match self {
            Runner::Local(t) => Ok(t.schedules().list().await?),
            Runner::Remote(r) => r.get(&["schedules"]).await,
        }
    }

    /// Waits until task `id` is final, with a spinner on stderr (on a
    /// terminal) showing its status and progress.
    async fn wait(&self, id: &str) -> Result<TaskRecord, CliError> {
        let bar = super::progress::bar(None, &format!("task {id}"));
        let record = loop {
            let r = self.poll(id).await?;
            if r.status.is_final() {
                break r;
            }
            bar.set_message(format!(
                "task {id} {}{}",
                r.status.as_str(),
                r.progress
                    .as_deref()
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default()
            ));
        };
        bar.finish_and_clear();
        Ok(record)
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| CliError::Usage(e.to_string()))?
    );
    Ok(())
}

/// Prints the record; a task that did not succeed is an error (exit 1).
fn finish(record: &TaskRecord) -> Result<(), CliError> {
    print_json(record)?;
    succeeded(&format!("task {}", record.id), record)
}

/// An error (exit 1) naming `what` unless `record` succeeded.
fn succeeded(what: &str, record: &TaskRecord) -> Result<(), CliError> {
    match record.status {
        TaskStatus::Succeeded => Ok(()),
        s => Err(CliError::Usage(format!(
            "{what} {}: {}",
            s.as_str(),
            record.error.as_deref().unwrap_or("-")
        ))),
    }
}

pub async fn tasks(
    args: TasksArgs,
    open: impl AsyncFnOnce() -> Result<Omega, CliError>,
) -> Result<(), CliError> {
    let tasks = Runner::new(&args.server, open).await?;
    match args.cmd {
        TasksCommand::Submit { verb, detach } => {
            if detach && tasks.is_local() {
                return Err(CliError::Usage(
                    "--detach needs --server: a task without a server runs in this process".into(),
                ));
            }
            let spec = match verb {
                SubmitCommand::Sql { sql } => TaskSpec::Sql { sql },
                SubmitCommand::Fit {
                    model,
                    dataset,
                    label,
                    features,
                } => TaskSpec::Fit {
                    model,
                    dataset: Some(dataset),
                    sql: None,
                    label,
                    features,
                },
                SubmitCommand::Predict {
                    model,
                    dataset,
                    into,
                } => TaskSpec::Predict {
                    model,
                    dataset,
                    into,
                },
                SubmitCommand::Score { model, dataset } => TaskSpec::Score { model, dataset },
                SubmitCommand::Job { name, params } => TaskSpec::Job {
                    job: name,
                    params: parse_params(&params)?,
                    run: None,
                    trigger: None,
                    instant: None,
                },
            };
            let record = tasks.submit(spec).await?;
            if detach {
                println!("{}", record.id);
                return Ok(());
            }
            let place = if tasks.is_local() {
                "in this process"
            } else {
                "on the server"
            };
            eprintln!("task {} submitted; running {place}", record.id);
            finish(&tasks.wait(&record.id).await?)
        }
        TasksCommand::Status { id } => print_json(&tasks.status(&id).await?),
        TasksCommand::Wait { id } => finish(&tasks.wait(&id).await?),
        TasksCommand::List => {
            println!("id\tverb\tstatus\tuser\tsubmitted\tdescription");
            for r in tasks.list().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.spec.verb(),
                    r.status.as_str(),
                    r.submitter.user,
                    r.submitted.to_rfc3339(),
                    r.spec.describe().replace(['\t', '\n'], " ")
                );
            }
            Ok(())
        }
        TasksCommand::Cancel { id } => {
            let r = tasks.cancel(&id).await?;
            eprintln!("asked task {} ({}) to stop", r.id, r.status.as_str());
            Ok(())
        }
    }
}

fn print_run(run: &JobRun) {
    println!(
        "{}\t{}@{}\t{}\t{}\t{}",
        run.key.trim_end_matches(".json"),
        run.job,
        run.version,
        run.trigger,
        run.status.as_str(),
        run.error.as_deref().unwrap_or("-")
    );
}

pub async fn jobs(
    args: JobsArgs,
    open: impl AsyncFnOnce() -> Result<Omega, CliError>,
) -> Result<(), CliError> {
    let tasks = Runner::new(&args.server, open).await?;
    match args.cmd {
        JobsCommand::Put { name, file, params } => {
            let sql = std::fs::read_to_string(&file).map_err(|e| CliError::io(&file, e))?;
            let meta = tasks.put_job(&name, &sql, &parse_params(&params)?).await?;
            println!("stored job {}@{}", meta.name, meta.version);
            Ok(())
        }
        JobsCommand::Run { name, params } => {
            let submitted = tasks.run_job(&name, parse_params(&params)?).await?;
            let record = tasks.wait(&submitted.id).await?;
            if let Some(run) = record.result.get("run").and_then(|r| r.as_str()) {
                print_json(&tasks.run_record(&name, run).await?)?;
            }
            succeeded(&format!("job {name}"), &record)
        }
        JobsCommand::List => {
            println!("name\tversion\tparams\tmodified");
            for m in tasks.jobs().await? {
                let params = m
                    .kind_meta
                    .get("params")
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{params}\t{}",
                    m.name,
                    m.version,
                    m.modified.to_rfc3339()
                );
            }
            Ok(())
        }
        JobsCommand::History { name } => {
            println!("run\tjob\ttrigger\tstatus\terror");
            for run in tasks.history(&name).await? {
                print_run(&run);
            }
            Ok(())
        }
        JobsCommand::Schedule {
            name,
            cron,
            tz,
            params,
            catch_up,
        } => {
            let s = tasks
                .schedule(&name, &cron, &tz, parse_params(&params)?, catch_up)
                .await?;
            println!(
                "scheduled job {} at '{}' ({}); `om serve` runs it",
                s.job, s.cron, s.tz
            );
            Ok(())
        }
        JobsCommand::Unschedule { name } => {
            tasks.unschedule(&name).await?;
            println!("unscheduled job {name}");
            Ok(())
        }
        JobsCommand::Schedules => {
            println!("job\tcron\ttz\tcatch_up\tparams");
            for s in tasks.schedules().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    s.job,
                    s.cron,
                    s.tz,
                    s.catch_up,
                    serde_json::to_string(&s.params).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}
