//! Schedules: a job run at the instants of a 5-field cron expression in a
//! time zone, by the scheduler inside `om serve`.
//!
//! **Exactly one run per instant**, with any number of schedulers on one
//! root: before it runs an instant, a scheduler claims it by creating the
//! run record `runs/<job>/<instant>.json` put-if-absent; whoever fails the
//! claim skips the instant. Instants that passed while no scheduler ran
//! (more than the grace period late) are recorded as `missed`, never run
//! twice; with `catch_up`, the newest of them runs once instead.
//!
//! **Time zones and DST** (croner's rules, as Vixie cron): a time of day that
//! a spring-forward gap skips (02:30 in Europe/Zurich on the last Sunday of
//! March) runs once at the first instant after the gap (03:00); a time of
//! day repeated by a fall-back overlap runs once, at the first (summer-time)
//! occurrence; interval patterns (`*/15 * * * *`) run on the instants that
//! exist, both sides of an overlap included.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use super::error::RuntimeError;
use super::jobs::{self, JobRun, Jobs, RunStatus};
use super::tasks::{Runtime, Submitter, TaskRecord, TaskSpec, TaskStatus};
use crate::engine::Engine;

/// Late by more than this, an instant is `missed` rather than run.
pub const GRACE: chrono::Duration = chrono::Duration::minutes(5);
/// At most this many missed instants are recorded per schedule and tick.
pub const MAX_MISSED: usize = 1000;

/// A job's schedule: `_system/runtime/<bucket>/schedules/<job>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub bucket: String,
    pub job: String,
    pub cron: String,
    pub tz: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub catch_up: bool,
    pub created: DateTime<Utc>,
    /// Scheduled runs run as whoever scheduled the job.
    pub submitter: Submitter,
}

/// A 5-field cron expression (POSIX: day-of-month and day-of-week are
/// alternatives when both are restricted).
pub fn parse_cron(expr: &str) -> Result<Cron, RuntimeError> {
    let bad = |reason: String| RuntimeError::InvalidCron {
        expr: expr.to_string(),
        reason,
    };
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(bad(format!("{fields} fields")));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| bad(e.to_string()))
}

pub fn parse_tz(tz: &str) -> Result<Tz, RuntimeError> {
    Tz::from_str(tz).map_err(|_| RuntimeError::InvalidTimeZone(tz.to_string()))
}

/// The instants of `cron` in `tz` after `after` and at or before `until`
/// (at most `cap`, the newest kept).
pub fn instants(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    cap: usize,
) -> Vec<DateTime<Utc>> {
    let mut out = std::collections::VecDeque::new();
    let mut t = after.with_timezone(&tz);
    while let Ok(next) = cron.find_next_occurrence(&t, false) {
        let utc = next.with_timezone(&Utc);
        if utc > until {
            break;
        }
        out.push_back(utc);
        if out.len() > cap {
            out.pop_front();
        }
        t = next;
    }
    out.into()
}

fn schedule_path<'a>(bucket: &'a str, file: &'a str) -> [&'a str; 3] {
    [bucket, "schedules", file]
}

/// The schedules of one bucket, as an identity manages them.
pub struct Schedules {
    rt: Runtime,
    engine: Engine,
}

impl Schedules {
    pub fn new(rt: Runtime, engine: Engine) -> Self {
        Self { rt, engine }
    }

    /// Schedules job `job` (which must exist, its parameters bind).
    pub async fn schedule(
        &self,
        job: &str,
        cron: &str,
        tz: &str,
        params: BTreeMap<String, String>,
        catch_up: bool,
    ) -> Result<Schedule, RuntimeError> {
        parse_cron(cron)?;
        parse_tz(tz)?;
        let (meta, script) = Jobs::new(self.engine.clone()).get(job).await?;
        jobs::bind(&meta.name, &script, &params)?;
        // scheduling is writing: the identity needs write on the jobs store
        self.engine
            .store("jobs")?
            .check_access(&meta.name, crate::store::Access::Write)
            .await?;
        let s = Schedule {
            bucket: meta.bucket.clone(),
            job: meta.name.clone(),
            cron: cron.to_string(),
            tz: tz.to_string(),
            params,
            catch_up,
            created: self.rt.clock().now(),
            submitter: Submitter::of(&self.engine),
        };
        let file = format!("{}.json", meta.name);
        self.rt
            .records()
            .put(&schedule_path(&s.bucket, &file), &s, false)
            .await?;
        Ok(s)
    }

    pub async fn unschedule(&self, job: &str) -> Result<(), RuntimeError> {
        crate::store::name::validate_name(job)?;
        let bucket = self.engine.bucket_name().to_string();
        let file = format!("{job}.json");
        let existing: Option<Schedule> = self
            .rt
            .records()
            .get(&schedule_path(&bucket, &file))
            .await?;
        if existing.is_none() {
            return Err(RuntimeError::NotScheduled {
                job: job.to_string(),
            });
        }
        self.engine
            .store("jobs")?
            .check_access(job, crate::store::Access::Write)
            .await?;
        self.rt
            .records()
            .delete(&schedule_path(&bucket, &file))
            .await?;
        Ok(())
    }

    /// The schedules of this bucket.
    pub async fn list(&self) -> Result<Vec<Schedule>, RuntimeError> {
        Ok(self
            .rt
            .records()
            .list(&[self.engine.bucket_name(), "schedules"])
            .await?)
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// (job, instant) started by this scheduler.
    pub started: Vec<(String, DateTime<Utc>)>,
    /// (job, instant) recorded as missed by this scheduler.
    pub missed: Vec<(String, DateTime<Utc>)>,
}

/// Runs the schedules of a root (every bucket).
pub struct Scheduler {
    rt: Runtime,
    /// Per schedule, the instant up to which this scheduler has looked.
    seen: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Scheduler {
    pub fn new(rt: Runtime) -> Self {
        Self {
            rt,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Every schedule of the root.
    async fn all(&self) -> Result<Vec<Schedule>, RuntimeError> {
        let mut out = Vec::new();
        for loc in self.rt.records().locations_of_kind("schedules").await? {
            let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
            if let Ok(Some(s)) = self.rt.records().get::<Schedule>(&refs).await {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The newest instant already claimed for `s` (by any scheduler).
    async fn last_claimed(&self, s: &Schedule) -> Result<Option<DateTime<Utc>>, RuntimeError> {
        let locations = self
            .rt
            .records()
            .locations(&[&s.bucket, "runs", &s.job])
            .await?;
        Ok(locations
            .iter()
            .filter_map(|l| l.last())
            .filter_map(|f| f.strip_suffix(".json"))
            .filter_map(|k| chrono::NaiveDateTime::parse_from_str(k, "%Y%m%dT%H%M%SZ").ok())
            .map(|n| n.and_utc())
            .max())
    }

    /// Looks at every schedule once at the clock's now: claims and starts
    /// the instant due, records the ones passed as missed.
    pub async fn tick(&self) -> Result<TickReport, RuntimeError> {
        let now = self.rt.clock().now();
        let mut report = TickReport::default();
        for s in self.all().await? {
            let key = format!("{}/{}", s.bucket, s.job);
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .copied();
            let from = match seen {
                Some(t) => t.max(s.created),
                None => self
                    .last_claimed(&s)
                    .await?
                    .map_or(s.created, |t| t.max(s.created)),
            };
            let (Ok(cron), Ok(tz)) = (parse_cron(&s.cron), parse_tz(&s.tz)) else {
                continue;
            };
            let due = instants(&cron, tz, from, now, MAX_MISSED);
            let last = due.last().copied();
            for instant in due {
                let newest = Some(instant) == last;
                let run = newest && (now - instant <= GRACE || s.catch_up);
                let trigger = if run && now - instant > GRACE {
                    "catch-up"
                } else {
                    "schedule"
                };
                if self.claim(&s, instant, run, trigger).await? {
                    if run {
                        report.started.push((s.job.clone(), instant));
                    } else {
                        report.missed.push((s.job.clone(), instant));
                    }
                }
            }
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, now);
        }
        Ok(report)
    }

    /// Claims `instant` of `s` (false when another scheduler has); starts
    /// the run, or records it missed.
    async fn claim(
        &self,
        s: &Schedule,
        instant: DateTime<Utc>,
        run: bool,
        trigger: &str,
    ) -> Result<bool, RuntimeError> {
        let now = self.rt.clock().now();
        let key = jobs::instant_key(instant);
        let mut record = JobRun {
            bucket: s.bucket.clone(),
            job: s.job.clone(),
            version: 0,
            key: key.clone(),
            trigger: trigger.to_string(),
            instant: Some(instant),
            status: if run {
                RunStatus::Running
            } else {
                RunStatus::Missed
            },
            task: None,
            owner: self.rt.owner().to_string(),
            params: s.params.clone(),
            started: now,
            finished: (!run).then_some(now),
            statements: vec![],
            error: (!run).then(|| "no scheduler ran at this instant".to_string()),
        };
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        if run {
            record.task = Some(task_id.clone());
        }
        let claimed = self
            .rt
            .records()
            .put(&jobs::run_path(&s.bucket, &s.job, &key), &record, true)
            .await?;
        if !claimed || !run {
            return Ok(claimed);
        }
        let started = async {
            let engine = self.rt.engine_for(&s.submitter)?;
            let task = TaskRecord {
                id: task_id,
                bucket: s.bucket.clone(),
                spec: TaskSpec::Job {
                    job: s.job.clone(),
                    params: s.params.clone(),
                    run: Some(key.clone()),
                    trigger: Some(trigger.to_string()),
                    instant: Some(instant),
                },
                status: TaskStatus::Queued,
                submitter: s.submitter.clone(),
                owner: self.rt.owner().to_string(),
                submitted: now,
                started: None,
                finished: None,
                progress: None,
                wrote: vec![],
                result: serde_json::Value::Null,
                error: None,
            };
            self.rt.launch(engine, task, Some(record.clone())).await
        }
        .await;
        if let Err(e) = started {
            record.status = RunStatus::Failed;
            record.finished = Some(now);
            record.error = Some(e.to_string());
            record.save(self.rt.records()).await?;
        }
        Ok(true)
    }

    /// Ticks at every minute boundary of the runtime's clock until the
    /// future is dropped (a manual clock drives it in tests).
    pub async fn run_forever(self) {
        let clock = self.rt.clock().clone();
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("scheduler: {e}");
            }
            let now = clock.now();
            let next = now + chrono::Duration::seconds(60 - now.timestamp().rem_euclid(60))
                - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos() as i64);
            clock.sleep_until(next).await;
        }
    }
}
