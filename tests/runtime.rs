//! The runtime: background tasks, stored SQL jobs and cron schedules. An
//! injectable clock drives the scheduler, so no test waits for wall time.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omegastore::Omega;
use omegastore::runtime::schedules::{instants, parse_cron, parse_tz};
use omegastore::runtime::{
    ManualClock, RunStatus, RuntimeError, RuntimeOptions, Scheduler, TaskSpec, TaskStatus, Tasks,
};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn runtime(om: &Omega, clock: &Arc<ManualClock>) -> Tasks {
    om.start_runtime(RuntimeOptions {
        workers: 2,
        clock: clock.clone(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn no_params() -> BTreeMap<String, String> {
    BTreeMap::new()
}

async fn count(om: &Omega, sql: &str) -> i64 {
    common::scalar(om, sql).await
}

/// A schedule every minute over a simulated day runs 1,440 times, each
/// instant once, all visible in omega.system.job_runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_minute_runs_1440_times_a_day() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-03-01T00:00:00Z")));
    let tasks = runtime(&om, &clock).await;
    tasks
        .jobs()
        .put("tick", "SELECT 1 AS one", &no_params())
        .await
        .unwrap();
    tasks
        .schedules()
        .schedule("tick", "* * * * *", "UTC", no_params(), false)
        .await
        .unwrap();
    let scheduler = Scheduler::new(tasks.runtime().clone());
    let mut started = 0;
    for _ in 0..1440 {
        clock.advance(chrono::Duration::minutes(1));
        let report = scheduler.tick().await.unwrap();
        assert!(report.missed.is_empty());
        started += report.started.len();
    }
    tasks.runtime().idle().await;
    assert_eq!(started, 1440);
    assert_eq!(
        count(
            &om,
            "SELECT count(DISTINCT instant) FROM omega.system.job_runs WHERE job = 'tick' AND status = 'succeeded'"
        )
        .await,
        1440
    );
    assert_eq!(
        count(&om, "SELECT count(*) FROM omega.system.job_runs").await,
        1440
    );
    assert_eq!(
        count(
            &om,
            "SELECT count(*) FROM omega.system.tasks WHERE verb = 'job' AND status = 'succeeded'"
        )
        .await,
        1440
    );
}

/// Two schedulers (two processes' runtimes) on one root: exactly one run
/// per instant, on a local directory and on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_root_run_each_instant_once() {
    for root in common::roots() {
        let a = Omega::open(&root.url).await.unwrap();
        let b = Omega::open(&root.url).await.unwrap();
        let clock = Arc::new(ManualClock::new(at("2026-06-01T00:00:00Z")));
        let ta = runtime(&a, &clock).await;
        let tb = runtime(&b, &clock).await;
        assert_ne!(ta.runtime().owner(), tb.runtime().owner());
        ta.jobs()
            .put("j", "SELECT 1 AS one", &no_params())
            .await
            .unwrap();
        ta.schedules()
            .schedule("j", "*/5 * * * *", "UTC", no_params(), false)
            .await
            .unwrap();
        let (sa, sb) = (
            Scheduler::new(ta.runtime().clone()),
            Scheduler::new(tb.runtime().clone()),
        );
        let mut started = 0;
        for _ in 0..12 {
            clock.advance(chrono::Duration::minutes(5));
            // racing on a local root; one after the other on S3, because
            // moto checks If-None-Match and writes without a lock (two racing
            // creates can both succeed there, unlike on S3 itself): what S3
            // tests is that the second claim is refused, not the race
            let (ra, rb) = if root.kind == "local" {
                tokio::join!(sa.tick(), sb.tick())
            } else {
                (sa.tick().await, sb.tick().await)
            };
            let (ra, rb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(ra.started.len() + rb.started.len(), 1, "{}", root.kind);
            started += ra.started.len() + rb.started.len();
        }
        ta.runtime().idle().await;
        tb.runtime().idle().await;
        assert_eq!(started, 12);
        assert_eq!(
            count(
                &a,
                "SELECT count(*) FROM omega.system.job_runs WHERE status = 'succeeded'"
            )
            .await,
            12,
            "{}",
            root.kind
        );
    }
}

/// Europe/Zurich: a time in the spring-forward gap runs once, right after
/// the gap; a time in the fall-back overlap runs once, at its first
/// occurrence; an hourly pattern runs on the 23 and 25 hours that exist.
#[test]
fn dst_transitions_in_zurich_behave_as_documented() {
    let tz = parse_tz("Europe/Zurich").unwrap();
    let daily = parse_cron("30 2 * * *").unwrap();
    // 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist
    let spring = instants(
        &daily,
        tz,
        at("2026-03-28T12:00:00Z"),
        at("2026-03-30T12:00:00Z"),
        100,
    );
    assert_eq!(
        spring,
        vec![at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")],
        "the skipped 02:30 runs at 03:00 CEST"
    );
    // 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice
    let autumn = instants(
        &daily,
        tz,
        at("2026-10-24T12:00:00Z"),
        at("2026-10-25T12:00:00Z"),
        100,
    );
    assert_eq!(
        autumn,
        vec![at("2026-10-25T00:30:00Z")],
        "the repeated 02:30 runs once, in summer time"
    );
    let hourly = parse_cron("0 * * * *").unwrap();
    let day = |from: &str, to: &str| instants(&hourly, tz, at(from), at(to), 100).len();
    assert_eq!(day("2026-03-28T22:59:59Z", "2026-03-29T21:59:59Z"), 23);
    assert_eq!(day("2026-10-24T21:59:59Z", "2026-10-25T22:59:59Z"), 25);
}

/// A scheduler started after a gap records the instants it missed as
/// `missed` (never runs them twice, never runs them late), or with
/// catch-up runs the newest once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_restarted_after_a_gap_records_missed_instants() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let clock = Arc::new(ManualClock::new(at("2026-05-01T00:00:00Z")));
    let tasks = runtime(&om, &clock).await;
    for job in ["plain", "eager"] {
        tasks
            .jobs()
            .put(job, "SELECT 1 AS one", &no_params())
            .await
            .unwrap();
    }
    let s = tasks.schedules();
    s.schedule("plain", "0 * * * *", "UTC", no_params(), false)
        .await
        .unwrap();
    s.schedule("eager", "0 * * * *", "UTC", no_params(), true)
        .await
        .unwrap();
    clock.advance(chrono::Duration::hours(1));
    let first = Scheduler::new(tasks.runtime().clone());
    assert_eq!(first.tick().await.unwrap().started.len(), 2);
    drop(first);
    // down from 01:00 to 05:10: 02:00..05:00 passed unseen
    clock.advance(chrono::Duration::minutes(4 * 60 + 10));
    let restarted = Scheduler::new(tasks.runtime().clone());
    let report = restarted.tick().await.unwrap();
    tasks.runtime().idle().await;
    let missed = |job: &str| report.missed.iter().filter(|(j, _)| j == job).count();
    let started = |job: &str| report.started.iter().filter(|(j, _)| j == job).count();
    assert_eq!((missed("plain"), started("plain")), (4, 0));
    assert_eq!((missed("eager"), started("eager")), (3, 1));
    let history = tasks.jobs().history("eager").await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.trigger.as_str(), last.status),
        ("catch-up", RunStatus::Succeeded)
    );
    assert_eq!(last.instant, Some(at("2026-05-01T05:00:00Z")));
    // ticking again changes nothing
    assert!(restarted.tick().await.unwrap().started.is_empty());
    // the next run as the table shows it: the next full hour from now
    assert_eq!(
        count(
            &om,
            "SELECT count(*) FROM omega.system.schedules WHERE next_run > now() AND next_run <= now() + INTERVAL '1 hour' AND date_part('minute', next_run) = 0"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &om,
            "SELECT count(*) FROM omega.system.job_runs WHERE job = 'plain' AND status = 'missed'"
        )
        .await,
        4
    );
}

/// A failing statement: the ones before it stay committed (listed with
/// what they wrote), it is recorded with its error, the rest do not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_statement_is_recorded_and_earlier_ones_stay_committed() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let tasks = om.runtime().await.unwrap();
    let script = "CREATE TABLE first AS SELECT 1 AS x;\n\
                  INSERT INTO missing_table SELECT 1 AS x;\n\
                  CREATE TABLE third AS SELECT 3 AS x;";
    tasks
        .jobs()
        .put("nightly", script, &no_params())
        .await
        .unwrap();
    let done = tasks
        .run_job("nightly", no_params())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Failed);
    assert!(
        done.error.as_deref().unwrap().contains("missing_table"),
        "{:?}",
        done.error
    );
    assert_eq!(done.wrote, vec!["default/datasets/first@1".to_string()]);
    let run = tasks
        .jobs()
        .history("nightly")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let states: Vec<&str> = run.statements.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(states, ["committed", "failed", "not run"]);
    assert_eq!(run.statements[0].wrote, ["default/datasets/first@1"]);
    assert!(
        run.statements[1]
            .error
            .as_deref()
            .unwrap()
            .contains("missing_table")
    );
    assert!(om.datasets().exists("first").await.unwrap());
    assert!(!om.datasets().exists("third").await.unwrap());
    assert_eq!(
        count(
            &om,
            "SELECT count(*) FILTER (WHERE status = 'failed') FROM omega.system.job_runs GROUP BY job"
        )
        .await,
        1
    );
}

/// Parameters are typed values bound to `$n`, never spliced into SQL text;
/// defaults come from the script header or from put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_parameters_are_typed_values() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(&om, "CREATE TABLE sales AS SELECT * FROM (VALUES (DATE '2026-11-30', 'EU', 10), (DATE '2026-12-01', 'EU', 20), (DATE '2026-12-01', 'US', 5)) AS t(day, region, amount)").await;
    let tasks = om.runtime().await.unwrap();
    let script = "-- param day date\n-- param region text = 'EU'\n\
                  CREATE OR REPLACE TABLE daily AS SELECT sum(amount) AS total, :region AS region FROM sales WHERE day = :day AND region = :region;";
    tasks
        .jobs()
        .put("daily", script, &no_params())
        .await
        .unwrap();
    let run = |params: &[(&str, &str)]| {
        let p: BTreeMap<String, String> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tasks = tasks.clone();
        async move { tasks.run_job("daily", p).await }
    };
    let done = run(&[("day", "2026-12-01")])
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert_eq!(count(&om, "SELECT total FROM daily").await, 20);
    // a hostile value is a value
    let done = run(&[("day", "2026-12-01"), ("region", "EU' OR '1'='1")])
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert_eq!(
        count(&om, "SELECT count(*) FROM daily WHERE total IS NULL").await,
        1
    );
    // bad input, refused at submission
    match run(&[]).await {
        Err(RuntimeError::MissingParam { param, .. }) => assert_eq!(param, "day"),
        other => panic!("{other:?}"),
    }
    match run(&[("day", "yesterday")]).await {
        Err(e @ RuntimeError::BadParam { .. }) => {
            assert!(
                e.to_string().contains("'day'") && e.to_string().contains("date"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    match run(&[("day", "2026-12-01"), ("dya", "1")]).await {
        Err(e @ RuntimeError::UnknownParam { .. }) => {
            assert!(e.to_string().contains("day, region"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // a default set at put time
    let mut defaults = BTreeMap::new();
    defaults.insert("day".to_string(), "2026-11-30".to_string());
    let meta = tasks.jobs().put("daily", script, &defaults).await.unwrap();
    assert_eq!(meta.version, 2);
    let done = run(&[]).await.unwrap().wait().await.unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    assert_eq!(count(&om, "SELECT total FROM daily").await, 10);
}

/// Bad input gets a typed error naming what was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runtime_input_gets_typed_errors() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let tasks = om.runtime().await.unwrap();
    tasks
        .jobs()
        .put("ok", "SELECT 1 AS one", &no_params())
        .await
        .unwrap();
    for bad in ["61 * * * *", "* * * *", "0 6 * * * *", "every day"] {
        let e = tasks
            .schedules()
            .schedule("ok", bad, "UTC", no_params(), false)
            .await
            .unwrap_err();
        assert!(
            matches!(e, RuntimeError::InvalidCron { .. }) && e.to_string().contains(bad),
            "{bad}: {e}"
        );
    }
    let e = tasks
        .schedules()
        .schedule("ok", "0 6 * * *", "Mars/Olympus", no_params(), false)
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidTimeZone(_)), "{e}");
    let e = tasks.run_job("nope", no_params()).await.unwrap_err();
    assert!(
        matches!(e, RuntimeError::UnknownJob { .. }) && e.to_string().contains("'nope'"),
        "{e}"
    );
    let e = tasks
        .schedules()
        .schedule("nope", "0 6 * * *", "UTC", no_params(), false)
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownJob { .. }), "{e}");
    for (script, needle) in [
        ("hello world", "statement 1 is not SQL"),
        (
            "SELECT :undeclared",
            "':undeclared' is not a declared parameter",
        ),
        ("-- param d when\nSELECT :d", "unknown type"),
        ("", "no SQL statement"),
    ] {
        let e = tasks
            .jobs()
            .put("bad", script, &no_params())
            .await
            .unwrap_err();
        assert!(
            matches!(e, RuntimeError::NotSql { .. }) && e.to_string().contains(needle),
            "{script}: {e}"
        );
    }
    assert!(!om.jobs().exists("bad").await.unwrap(), "nothing stored");
    let e = tasks.status("0123abcd").await.unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownTask(_)), "{e}");
    let e = tasks.status("../../etc").await.unwrap_err();
    assert!(matches!(e, RuntimeError::UnknownTask(_)), "{e}");
    let e = tasks.schedules().unschedule("ok").await.unwrap_err();
    assert!(matches!(e, RuntimeError::NotScheduled { .. }), "{e}");
}

/// Cancelling a running fit leaves no new model version; the record says
/// `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_fit_leaves_no_new_model_version() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(
        &om,
        "CREATE TABLE pts AS SELECT value AS x, (value * 7919) % 1000 AS z, CAST(value % 3 AS DOUBLE) + random() AS y FROM generate_series(1, 20000)",
    )
    .await;
    common::exec(
        &om,
        "CREATE MODEL m OPTIONS (type = 'random_forest_regressor', label = 'y') AS SELECT x, z, y FROM pts LIMIT 50",
    )
    .await;
    let before = om.models().store().history("m").await.unwrap().len();
    let tasks = om.runtime().await.unwrap();
    let handle = tasks
        .submit(TaskSpec::Fit {
            model: "m".into(),
            dataset: Some("pts".into()),
            sql: None,
            label: Some("y".into()),
            features: None,
        })
        .await
        .unwrap();
    for _ in 0..200 {
        if handle.status().await.unwrap().status == TaskStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.cancel().await.unwrap();
    let done = handle.wait().await.unwrap();
    assert_eq!(done.status, TaskStatus::Cancelled, "{done:?}");
    assert!(done.wrote.is_empty());
    assert_eq!(
        om.models().store().history("m").await.unwrap().len(),
        before
    );
}

/// A task that runs out of time fails with "timed out" and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_timeout_fails_and_writes_nothing() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    let tasks = om
        .start_runtime(RuntimeOptions {
            timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = tasks
        .submit(TaskSpec::Sql {
            sql: "CREATE TABLE big AS SELECT a.value AS v FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b".into(),
        })
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Failed);
    assert!(
        done.error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        done.error
    );
    assert!(!om.datasets().exists("big").await.unwrap());
}

/// Tasks run as their submitter; another identity neither sees nor
/// cancels them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_and_are_visible_to_their_submitter() {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(&om, "CREATE TABLE t AS SELECT 1 AS x").await;
    common::exec(&om, "GRANT read ON BUCKET default TO reader").await;
    let reader = om.with_identity("ann", &["reader"], false).unwrap();
    let other = om.with_identity("bob", &["reader"], false).unwrap();
    let tasks = reader.runtime().await.unwrap();
    let done = tasks
        .submit(TaskSpec::Sql {
            sql: "CREATE TABLE u AS SELECT 2 AS x".into(),
        })
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Failed, "a reader cannot write");
    assert!(
        done.error.as_deref().unwrap().contains("lacks write"),
        "{:?}",
        done.error
    );
    let bobs = other.runtime().await.unwrap();
    assert!(matches!(
        bobs.status(&done.id).await,
        Err(RuntimeError::UnknownTask(_))
    ));
    assert!(bobs.list().await.unwrap().is_empty());
    assert_eq!(tasks.list().await.unwrap().len(), 1);
    assert_eq!(
        common::scalar(&other, "SELECT count(*) FROM omega.system.tasks").await,
        0
    );
    assert_eq!(
        common::scalar(&om, "SELECT count(*) FROM omega.system.tasks").await,
        1
    );
}

/// A task whose process is killed: while its lease lasts another process
/// leaves it `running`; once the lease has run out, a runtime that starts
/// marks it `abandoned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_with_its_process_is_abandoned_after_restart() {
    let root = common::local();
    let mut child = common::om(&root)
        .args([
            "tasks",
            "submit",
            "sql",
            "SELECT count(*) FROM generate_series(1, 100000000000)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let om = Omega::open(&root.url).await.unwrap();
    let status = || async {
        om.sql("SELECT status FROM omega.system.tasks")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .first()
            .filter(|b| b.num_rows() == 1)
            .map(|b| arrow::util::display::array_value_to_string(b.column(0), 0).unwrap())
    };
    let mut running = false;
    for _ in 0..600 {
        if status().await.as_deref() == Some("running") {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running, "the child's task never ran");
    child.kill().unwrap();
    child.wait().unwrap();
    // restarted at once: the dead process's lease still holds
    let soon = Omega::open(&root.url).await.unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    runtime(&soon, &clock).await;
    assert_eq!(status().await.as_deref(), Some("running"));
    // restarted after the lease ran out
    let later = Omega::open(&root.url).await.unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now() + chrono::Duration::minutes(5)));
    let tasks = runtime(&later, &clock).await;
    assert_eq!(status().await.as_deref(), Some("abandoned"));
    let record = tasks.list().await.unwrap().pop().unwrap();
    assert!(record.error.unwrap().contains("stopped"));
}

/// A progress save still under way when its job ends (a local write runs
/// on a blocking thread, which giving up on it does not stop) lands before
/// the task's final record, never after it: the finished task never shows
/// as running again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_progress_save_never_lands_after_the_final_record() {
    use object_store::path::Path;
    let root = common::local();
    let (om, faults) = common::faults::faulty(&root.url).await;
    let tasks = om.runtime().await.unwrap();
    tasks
        .jobs()
        .put("two", "SELECT 1 AS one;\nSELECT 2 AS two;", &no_params())
        .await
        .unwrap();
    // a task's record is written queued, running, then with its progress
    let (reached, release) = faults.hold_nth_detached(3, |op, p: &Path| {
        op == common::faults::Op::Put && p.as_ref().contains("/tasks/")
    });
    let handle = tasks.run_job("two", no_params()).await.unwrap();
    reached.notified().await;
    let held = handle.status().await.unwrap();
    assert_eq!(held.status, TaskStatus::Running, "{held:?}");
    // the job's statements go on while the save waits; give them time to end
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.notify_one();
    // bounded: a stale "running" record landing last leaves the task
    // running forever, which is the failure this test is for
    let done = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("the task never became final: a stale running record landed last")
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
    for _ in 0..500 {
        if faults.detached_under_way() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(faults.detached_under_way(), 0);
    faults.heal();
    let after = handle.status().await.unwrap();
    assert_eq!(after.status, TaskStatus::Succeeded, "{after:?}");
    assert_eq!(after.progress, None, "{after:?}");
}
