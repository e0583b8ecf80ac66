//! The runtime as tables: `omega.system.tasks`, `omega.system.jobs`,
//! `omega.system.schedules` and `omega.system.job_runs`, each filtered to
//! what the querying identity may see (tasks: its own, or all for the
//! store's owner; jobs, schedules and runs: those of buckets whose jobs it
//! may read).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::jobs::JobRun;
use super::records::Records;
use super::schedules::{Schedule, parse_cron, parse_tz};
use super::tasks::{Submitter, TaskRecord};
use crate::backends::script::{KIND, SqlScript};
use crate::engine::Engine;
use crate::sql::SystemTable;
use crate::sql::system::Columns;
use crate::store::{ListOptions, StoreError, list_buckets};

/// The buckets whose jobs `engine`'s identity may read (only its own
/// when the session is bound to a bucket, as an API key's is).
async fn readable_buckets(engine: &Engine) -> Result<Vec<String>, StoreError> {
    let bound = crate::sql::options_of(engine.session())
        .bound_bucket
        .clone();
    let mut out = Vec::new();
    for bucket in list_buckets(engine.root()).await? {
        if !bound.is_empty() && bucket != bound {
            continue;
        }
        let Ok(b) = engine.bucket(&bucket) else {
            continue;
        };
        match b.store("jobs")?.list(None, &ListOptions::default()).await {
            Ok(_) => out.push(bucket),
            Err(StoreError::PermissionDenied { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub struct TasksTable;

#[async_trait]
impl SystemTable for TasksTable {
    fn name(&self) -> &str {
        "tasks"
    }

    async fn rows(&self, engine: &Engine) -> Result<RecordBatch, StoreError> {
        let me = Submitter::of(engine);
        let records = Records::new(engine.root().clone());
        let mut tasks: Vec<TaskRecord> = Vec::new();
        let locations = if me.owner {
            records.locations_of_kind("tasks").await?
        } else {
            records.locations(&[&me.bucket, "tasks"]).await?
        };
        for loc in locations {
            let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
            if let Ok(Some(t)) = records.get::<TaskRecord>(&refs).await
                && me.sees(&t)
            {
                tasks.push(t);
            }
        }
        tasks.sort_by_key(|a| a.submitted);
        let t = &tasks;
        Columns::new()
            .text("id", t.iter().map(|r| Some(r.id.clone())).collect())
            .text("bucket", t.iter().map(|r| Some(r.bucket.clone())).collect())
            .text(
                "verb",
                t.iter().map(|r| Some(r.spec.verb().into())).collect(),
            )
            .text(
                "description",
                t.iter().map(|r| Some(r.spec.describe())).collect(),
            )
            .text(
                "status",
                t.iter().map(|r| Some(r.status.as_str().into())).collect(),
            )
            .text(
                "user",
                t.iter().map(|r| Some(r.submitter.user.clone())).collect(),
            )
            .text(
                "roles",
                t.iter()
                    .map(|r| Some(r.submitter.roles.join(",")))
                    .collect(),
            )
            .time("submitted", t.iter().map(|r| Some(r.submitted)).collect())
            .time("started", t.iter().map(|r| r.started).collect())
            .time("finished", t.iter().map(|r| r.finished).collect())
            .text("progress", t.iter().map(|r| r.progress.clone()).collect())
            .text("wrote", t.iter().map(|r| Some(r.wrote.join(","))).collect())
            .text(
                "result",
                t.iter().map(|r| Some(r.result.to_string())).collect(),
            )
            .text("error", t.iter().map(|r| r.error.clone()).collect())
            .batch("system.tasks")
    }
}

#[derive(Debug)]
pub struct JobsTable;

#[async_trait]
impl SystemTable for JobsTable {
    fn name(&self) -> &str {
        "jobs"
    }

    async fn rows(&self, engine: &Engine) -> Result<RecordBatch, StoreError> {
        let mut jobs = Vec::new();
        for bucket in readable_buckets(engine).await? {
            let store = engine.bucket(&bucket)?.store("jobs")?;
            for m in store.list(None, &ListOptions::default()).await? {
                if m.kind == KIND
                    && let Ok(s) = SqlScript::from_meta(&m)
                {
                    jobs.push((m, s));
                }
            }
        }
        let j = &jobs;
        Columns::new()
            .text(
                "bucket",
                j.iter().map(|(m, _)| Some(m.bucket.clone())).collect(),
            )
            .text(
                "name",
                j.iter().map(|(m, _)| Some(m.name.clone())).collect(),
            )
            .int("version", j.iter().map(|(m, _)| Some(m.version)).collect())
            .text(
                "params",
                j.iter()
                    .map(|(_, s)| Some(serde_json::to_string(&s.params).unwrap_or_default()))
                    .collect(),
            )
            .text("sql", j.iter().map(|(_, s)| Some(s.sql.clone())).collect())
            .time(
                "modified",
                j.iter().map(|(m, _)| Some(m.modified)).collect(),
            )
            .batch("system.jobs")
    }
}

#[derive(Debug)]
pub struct SchedulesTable;

#[async_trait]
impl SystemTable for SchedulesTable {
    fn name(&self) -> &str {
        "schedules"
    }

    async fn rows(&self, engine: &Engine) -> Result<RecordBatch, StoreError> {
        let records = Records::new(engine.root().clone());
        let mut all: Vec<Schedule> = Vec::new();
        for bucket in readable_buckets(engine).await? {
            all.extend(records.list::<Schedule>(&[&bucket, "schedules"]).await?);
        }
        let now = Utc::now();
        let next = |s: &Schedule| -> Option<DateTime<Utc>> {
            let (cron, tz) = (parse_cron(&s.cron).ok()?, parse_tz(&s.tz).ok()?);
            cron.find_next_occurrence(&now.with_timezone(&tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let s = &all;
        Columns::new()
            .text("bucket", s.iter().map(|r| Some(r.bucket.clone())).collect())
            .text("job", s.iter().map(|r| Some(r.job.clone())).collect())
            .text("cron", s.iter().map(|r| Some(r.cron.clone())).collect())
            .text("tz", s.iter().map(|r| Some(r.tz.clone())).collect())
            .text(
                "params",
                s.iter()
                    .map(|r| Some(serde_json::to_string(&r.params).unwrap_or_default()))
                    .collect(),
            )
            .flag("catch_up", s.iter().map(|r| r.catch_up).collect())
            .text(
                "user",
                s.iter().map(|r| Some(r.submitter.user.clone())).collect(),
            )
            .time("created", s.iter().map(|r| Some(r.created)).collect())
            .time("next_run", s.iter().map(next).collect())
            .batch("system.schedules")
    }
}

#[derive(Debug)]
pub struct JobRunsTable;

#[async_trait]
impl SystemTable for JobRunsTable {
    fn name(&self) -> &str {
        "job_runs"
    }

    async fn rows(&self, engine: &Engine) -> Result<RecordBatch, StoreError> {
        let records = Records::new(engine.root().clone());
        let mut runs: Vec<JobRun> = Vec::new();
        for bucket in readable_buckets(engine).await? {
            runs.extend(records.list::<JobRun>(&[&bucket, "runs"]).await?);
        }
        runs.sort_by_key(|r| r.instant.unwrap_or(r.started));
        let r = &runs;
        Columns::new()
            .text("bucket", r.iter().map(|x| Some(x.bucket.clone())).collect())
            .text("job", r.iter().map(|x| Some(x.job.clone())).collect())
            .int("version", r.iter().map(|x| Some(x.version)).collect())
            .text(
                "run",
                r.iter()
                    .map(|x| Some(x.key.trim_end_matches(".json").to_string()))
                    .collect(),
            )
            .text(
                "trigger",
                r.iter().map(|x| Some(x.trigger.clone())).collect(),
            )
            .time("instant", r.iter().map(|x| x.instant).collect())
            .text(
                "status",
                r.iter().map(|x| Some(x.status.as_str().into())).collect(),
            )
            .time("started", r.iter().map(|x| Some(x.started)).collect())
            .time("finished", r.iter().map(|x| x.finished).collect())
            .int(
                "statements",
                r.iter().map(|x| Some(x.statements.len() as u64)).collect(),
            )
            .int(
                "committed",
                r.iter()
                    .map(|x| {
                        Some(
                            x.statements
                                .iter()
                                .filter(|s| s.status == "committed")
                                .count() as u64,
                        )
                    })
                    .collect(),
            )
            .text(
                "wrote",
                r.iter()
                    .map(|x| {
                        Some(
                            x.statements
                                .iter()
                                .flat_map(|s| s.wrote.clone())
                                .collect::<Vec<_>>()
                                .join(","),
                        )
                    })
                    .collect(),
            )
            .text("task", r.iter().map(|x| x.task.clone()).collect())
            .text("error", r.iter().map(|x| x.error.clone()).collect())
            .batch("system.job_runs")
    }
}

/// Registers the four tables on a store's system tables.
pub fn register(tables: &crate::sql::SystemTables) {
    tables.register(Arc::new(TasksTable));
    tables.register(Arc::new(JobsTable));
    tables.register(Arc::new(SchedulesTable));
    tables.register(Arc::new(JobRunsTable));
}
