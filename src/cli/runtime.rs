//! `om tasks` and `om jobs`: background tasks, stored SQL jobs and their
//! schedules. Without a server, a task runs in this process (its record is
//! kept in the store like any other); schedules run inside `om serve`.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::Omega;
use crate::runtime::jobs::parse_params;
use crate::runtime::{JobRun, RuntimeError, TaskRecord, TaskSpec, TaskStatus};

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

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Run a verb as a task in this process and wait for it; prints its record.
    #[command(subcommand)]
    Submit(SubmitCommand),
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
    },
    /// Predictions of MODEL for every row of a dataset, stored as --into.
    Predict {
        model: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        into: String,
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
    /// Run job NAME[@VERSION] now, in this process; prints the run record.
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
    match record.status {
        TaskStatus::Succeeded => Ok(()),
        s => Err(CliError::Usage(format!(
            "task {} {}: {}",
            record.id,
            s.as_str(),
            record.error.as_deref().unwrap_or("-")
        ))),
    }
}

pub async fn tasks(om: &Omega, cmd: TasksCommand) -> Result<(), CliError> {
    let tasks = om.runtime().await?;
    match cmd {
        TasksCommand::Submit(s) => {
            let spec = match s {
                SubmitCommand::Sql { sql } => TaskSpec::Sql { sql },
                SubmitCommand::Fit {
                    model,
                    dataset,
                    label,
                } => TaskSpec::Fit {
                    model,
                    dataset: Some(dataset),
                    sql: None,
                    label,
                    features: None,
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
                SubmitCommand::Job { name, params } => TaskSpec::Job {
                    job: name,
                    params: parse_params(&params)?,
                    run: None,
                    trigger: None,
                    instant: None,
                },
            };
            let handle = tasks.submit(spec).await?;
            eprintln!("task {} submitted; running in this process", handle.id);
            finish(&handle.wait().await?)
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

pub async fn jobs(om: &Omega, cmd: JobsCommand) -> Result<(), CliError> {
    let tasks = om.runtime().await?;
    match cmd {
        JobsCommand::Put { name, file, params } => {
            let sql = std::fs::read_to_string(&file).map_err(|e| CliError::io(&file, e))?;
            let meta = tasks
                .jobs()
                .put(&name, &sql, &parse_params(&params)?)
                .await?;
            println!("stored job {}@{}", meta.name, meta.version);
            Ok(())
        }
        JobsCommand::Run { name, params } => {
            let handle = tasks.run_job(&name, parse_params(&params)?).await?;
            let record = handle.wait().await?;
            if let Some(run) = record.result.get("run").and_then(|r| r.as_str()) {
                let history = tasks.jobs().history(&name).await?;
                if let Some(r) = history.iter().find(|r| r.key == run) {
                    print_json(r)?;
                }
            }
            match record.status {
                TaskStatus::Succeeded => Ok(()),
                s => Err(CliError::Usage(format!(
                    "job {name} {}: {}",
                    s.as_str(),
                    record.error.as_deref().unwrap_or("-")
                ))),
            }
        }
        JobsCommand::List => {
            println!("name\tversion\tparams\tmodified");
            for m in tasks.jobs().list().await? {
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
            for run in tasks.jobs().history(&name).await? {
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
                .schedules()
                .schedule(&name, &cron, &tz, parse_params(&params)?, catch_up)
                .await?;
            println!(
                "scheduled job {} at '{}' ({}); `om serve` runs it",
                s.job, s.cron, s.tz
            );
            Ok(())
        }
        JobsCommand::Unschedule { name } => {
            tasks.schedules().unschedule(&name).await?;
            println!("unscheduled job {name}");
            Ok(())
        }
        JobsCommand::Schedules => {
            println!("job\tcron\ttz\tcatch_up\tparams");
            for s in tasks.schedules().list().await? {
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
