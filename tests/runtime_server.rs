//! The runtime inside `om serve`: its HTTP routes (tasks, jobs, schedules),
//! the scheduler driven by the server's clock, and the CLI as a client
//! (`om tasks|jobs --server URL --key K`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use omegastore::Omega;
use omegastore::runtime::{Clock, ManualClock, RuntimeOptions, SystemClock};
use omegastore::server::{Running, ServeConfig, serve};
use omegastore::store::keys::Keys;
use serde_json::{Value, json};

struct Served {
    om: Omega,
    running: Running,
    base: String,
    writer: String,
    reader: String,
    root: common::TestRoot,
}

/// A served store: `writer` reads and writes bucket `default`, `reader`
/// only reads it. The runtime runs on `clock`.
async fn start(clock: Arc<dyn Clock>) -> Served {
    let root = common::local();
    let om = Omega::open(&root.url).await.unwrap();
    common::exec(
        &om,
        "CREATE TABLE t AS SELECT value AS x, value * 2.0 AS y FROM generate_series(1, 50)",
    )
    .await;
    common::exec(&om, "GRANT read ON BUCKET default TO writer").await;
    common::exec(&om, "GRANT write ON BUCKET default TO writer").await;
    common::exec(&om, "GRANT read ON BUCKET default TO reader").await;
    let keys = Keys::new(om.root().clone());
    let writer = keys
        .create("default", "writer", Some("w"), None)
        .await
        .unwrap()
        .0;
    let reader = keys
        .create("default", "reader", Some("r"), None)
        .await
        .unwrap()
        .0;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = serve(
        om.clone(),
        ServeConfig {
            flight: None,
            http: Some(loopback),
            shutdown_timeout: Duration::from_secs(5),
            runtime: RuntimeOptions {
                workers: 2,
                clock,
                lease: Duration::from_secs(3),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", running.http.unwrap());
    Served {
        om,
        running,
        base,
        writer,
        reader,
        root,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// One request: status and JSON body (`null` when empty).
async fn call(
    s: &Served,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(key);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let response = r.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

async fn get(s: &Served, key: &str, path: &str) -> (u16, Value) {
    call(s, key, reqwest::Method::GET, path, None).await
}

/// Rows of a SQL query over HTTP as the writer.
async fn query(s: &Served, sql: &str) -> Vec<Value> {
    let (status, v) = call(
        s,
        &s.writer,
        reqwest::Method::POST,
        "/api/v1/sql",
        Some(json!({ "sql": sql })),
    )
    .await;
    assert_eq!(status, 200, "{sql}: {v}");
    v.as_array().unwrap().clone()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// `om serve` runs a stored job at each instant of its schedule as the
/// server's clock passes it, and the runs show in omega.system.job_runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_schedules_as_its_clock_passes_their_instants() {
    let clock = Arc::new(ManualClock::new(at("2026-05-04T05:58:30Z")));
    let s = start(clock.clone() as Arc<dyn Clock>).await;
    let job =
        "-- param factor BIGINT = 2\nINSERT INTO hits SELECT x * :factor AS v FROM t WHERE x = 1;";
    common::exec(&s.om, "CREATE TABLE hits AS SELECT CAST(0 AS BIGINT) AS v").await;
    let (status, v) = call(
        &s,
        &s.writer,
        reqwest::Method::PUT,
        "/api/v1/jobs/team%2Fhits",
        Some(json!({ "sql": job })),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["name"], "team/hits");
    let (status, v) = call(
        &s,
        &s.writer,
        reqwest::Method::PUT,
        "/api/v1/jobs/team%2Fhits/schedule",
        Some(json!({ "cron": "* * * * *", "params": { "factor": "5" } })),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    // the scheduler sleeps on the server's clock: each minute it passes is a run
    for minute in ["05:59:01", "06:00:01"] {
        clock.set(at(&format!("2026-05-04T{minute}Z")));
        let expected = if minute == "05:59:01" { 1 } else { 2 };
        let mut rows = vec![];
        for _ in 0..300 {
            rows = query(
                &s,
                "SELECT CAST(instant AS VARCHAR) AS instant, status, trigger FROM omega.system.job_runs WHERE job = 'team/hits' AND status = 'succeeded' ORDER BY instant",
            )
            .await;
            if rows.len() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all = query(&s, "SELECT * FROM omega.system.job_runs").await;
        let tasks = query(&s, "SELECT * FROM omega.system.tasks").await;
        assert_eq!(rows.len(), expected, "{all:?} {tasks:?}");
    }
    let rows = query(&s, "SELECT v FROM hits WHERE v > 0").await;
    assert_eq!(rows, vec![json!({"v": 5}), json!({"v": 5})]);
    let (status, runs) = get(&s, &s.writer, "/api/v1/jobs/team%2Fhits/runs").await;
    assert_eq!(status, 200);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"), "{runs:?}");
    assert_eq!(runs[0]["instant"], "2026-05-04T05:59:00Z");
    assert_eq!(runs[0]["statements"][0]["status"], "committed");
    // unscheduled: the clock passes more minutes, nothing more runs
    let (status, _) = call(
        &s,
        &s.writer,
        reqwest::Method::DELETE,
        "/api/v1/jobs/team%2Fhits/schedule",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, schedules) = get(&s, &s.writer, "/api/v1/schedules").await;
    assert_eq!(schedules, json!([]));
    clock.set(at("2026-05-04T06:05:01Z"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // a run in another bucket: the owner sees it, the key bound to `default` does not
    let hr = s.om.bucket("hr").unwrap().runtime().await.unwrap();
    hr.jobs()
        .put("payroll", "SELECT 1 AS one", &Default::default())
        .await
        .unwrap();
    let done = hr
        .run_job("payroll", Default::default())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, omegastore::runtime::TaskStatus::Succeeded);
    assert_eq!(
        common::scalar(&s.om, "SELECT count(*) FROM omega.system.job_runs").await,
        3
    );
    assert_eq!(
        query(&s, "SELECT count(*) AS n FROM omega.system.job_runs").await,
        vec![json!({"n": 2})]
    );
    assert_eq!(
        query(&s, "SELECT count(*) AS n FROM omega.system.jobs").await,
        vec![json!({"n": 1})]
    );
    s.running.shutdown().await;
}

/// Tasks over HTTP: submit, wait, list and cancel as the key's identity;
/// another key sees none of them; bad input gets a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_jobs_over_http_run_as_the_key_and_refuse_bad_input() {
    let s = start(Arc::new(ManualClock::new(at("2026-05-04T00:00:00Z")))).await;
    let post = reqwest::Method::POST;
    let (status, v) = call(
        &s,
        &s.writer,
        post.clone(),
        "/api/v1/tasks",
        Some(json!({"verb": "sql", "sql": "CREATE TABLE doubled AS SELECT x, y * 2 AS y2 FROM t"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert!(
        matches!(v["status"].as_str(), Some("queued" | "running")),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    let (status, done) = get(&s, &s.writer, &format!("/api/v1/tasks/{id}?wait=30")).await;
    assert_eq!(status, 200);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["submitter"]["roles"], json!(["writer"]));
    assert_eq!(done["wrote"], json!(["default/datasets/doubled@1"]));
    // a fit, then a score of it, as tasks
    common::exec(
        &s.om,
        "CREATE MODEL lin OPTIONS (type = 'linear_regression', label = 'y') AS SELECT x, y FROM t",
    )
    .await;
    let (status, v) = call(
        &s,
        &s.writer,
        post.clone(),
        "/api/v1/tasks",
        Some(json!({"verb": "score", "model": "lin", "dataset": "t"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let id2 = v["id"].as_str().unwrap().to_string();
    let (_, scored) = get(&s, &s.writer, &format!("/api/v1/tasks/{id2}?wait=30")).await;
    assert_eq!(scored["status"], "succeeded", "{scored}");
    assert!(scored["result"].to_string().contains("r2"), "{scored}");

    // the reader sees none of the writer's tasks, and cannot cancel them
    let (_, mine) = get(&s, &s.writer, "/api/v1/tasks").await;
    assert_eq!(mine.as_array().unwrap().len(), 2);
    let (_, theirs) = get(&s, &s.reader, "/api/v1/tasks").await;
    assert_eq!(theirs, json!([]));
    let (status, v) = get(&s, &s.reader, &format!("/api/v1/tasks/{id}")).await;
    assert_eq!((status, code(&v)), (404, "not_found"));
    let (status, _) = call(
        &s,
        &s.reader,
        reqwest::Method::DELETE,
        &format!("/api/v1/tasks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // a reader's task runs as the reader: its write fails, recorded as such
    let (_, v) = call(
        &s,
        &s.reader,
        post.clone(),
        "/api/v1/tasks",
        Some(json!({"verb": "sql", "sql": "CREATE TABLE sneaky AS SELECT 1 AS x"})),
    )
    .await;
    let rid = v["id"].as_str().unwrap().to_string();
    let (_, failed) = get(&s, &s.reader, &format!("/api/v1/tasks/{rid}?wait=30")).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(!s.om.datasets().exists("sneaky").await.unwrap());
    // nor may it store jobs; bad input: unknown verb, unknown job, missing
    // and hostile parameters, an invalid cron expression, a script that is
    // not SQL, `$name` for `:name`, a hostile id. The daily job exists.
    let (status, v) = call(&s, &s.writer, reqwest::Method::PUT, "/api/v1/jobs/daily",
        Some(json!({"sql": "-- param day DATE\nCREATE OR REPLACE TABLE recent AS SELECT * FROM t WHERE :day > DATE '2026-01-01'"}))).await;
    assert_eq!(status, 201, "{v}");
    let (put, tasks, daily) = (
        reqwest::Method::PUT,
        "/api/v1/tasks",
        "/api/v1/jobs/daily/run",
    );
    let refused = [
        (
            &s.reader,
            put.clone(),
            "/api/v1/jobs/j",
            Some(json!({"sql": "SELECT 1"})),
            403,
            "forbidden",
            "",
        ),
        (
            &s.writer,
            post.clone(),
            tasks,
            Some(json!({"verb": "format_disk"})),
            422,
            "unprocessable",
            "",
        ),
        (
            &s.writer,
            post.clone(),
            "/api/v1/jobs/nope/run",
            None,
            404,
            "not_found",
            "nope",
        ),
        (
            &s.writer,
            post.clone(),
            daily,
            Some(json!({})),
            400,
            "bad_request",
            "day",
        ),
        (
            &s.writer,
            post.clone(),
            daily,
            Some(json!({"params": {"day": "'; DROP TABLE t; --"}})),
            400,
            "bad_request",
            "",
        ),
        (
            &s.writer,
            put.clone(),
            "/api/v1/jobs/daily/schedule",
            Some(json!({"cron": "61 * * * *"})),
            400,
            "bad_request",
            "61 * * * *",
        ),
        (
            &s.writer,
            put.clone(),
            "/api/v1/jobs/prose",
            Some(json!({"sql": "this is not sql at all"})),
            422,
            "unprocessable",
            "",
        ),
        (
            &s.writer,
            put.clone(),
            "/api/v1/jobs/dollar",
            Some(json!({"sql": "-- param day DATE\nSELECT $day"})),
            422,
            "unprocessable",
            "':day'",
        ),
    ];
    for (key, method, path, body, status_wanted, code_wanted, names) in refused {
        let (status, v) = call(&s, key, method, path, body).await;
        assert_eq!(
            (status, code(&v)),
            (status_wanted, code_wanted),
            "{path}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(names),
            "{path}: {v}"
        );
    }
    let (status, _) = get(&s, &s.writer, "/api/v1/tasks/..%2F..%2Fkeys").await;
    assert_eq!(status, 404);
    assert_eq!(common::scalar(&s.om, "SELECT count(*) FROM t").await, 50);

    // a job that retrains a model runs in a worker (whose stack is small)
    let (status, v) = call(&s, &s.writer, reqwest::Method::PUT, "/api/v1/jobs/retrain",
        Some(json!({"sql": "CREATE OR REPLACE MODEL lin OPTIONS (type = 'linear_regression', label = 'y') AS SELECT x, y FROM t;"}))).await;
    assert_eq!(status, 201, "{v}");
    let (_, v) = call(
        &s,
        &s.writer,
        post.clone(),
        "/api/v1/jobs/retrain/run",
        None,
    )
    .await;
    let (_, done) = get(
        &s,
        &s.writer,
        &format!("/api/v1/tasks/{}?wait=30", v["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["wrote"], json!(["default/models/lin@2"]));

    // a job run over HTTP, then its run record
    let (status, v) = call(
        &s,
        &s.writer,
        post.clone(),
        "/api/v1/jobs/daily/run",
        Some(json!({"params": {"day": "2026-01-01"}})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let jid = v["id"].as_str().unwrap().to_string();
    let (_, done) = get(&s, &s.writer, &format!("/api/v1/tasks/{jid}?wait=30")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, runs) = get(&s, &s.writer, "/api/v1/jobs/daily/runs").await;
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["statements"][0]["rows"], 0);
    // the API document lists the routes
    let (_, api) = get(&s, &s.writer, "/api/v1/openapi.json").await;
    for route in [
        "/api/v1/tasks",
        "/api/v1/tasks/{id}",
        "/api/v1/jobs/{name}/run",
        "/api/v1/jobs/{name}/schedule",
        "/api/v1/schedules",
    ] {
        assert!(api["paths"].get(route).is_some(), "{route}");
    }
    s.running.shutdown().await;
}

fn om_remote(s: &Served, dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(common::om_bin());
    c.current_dir(dir)
        .env_remove("OMEGA_ROOT")
        .env_remove("OMEGA_BUCKET")
        .env("OMEGA_SERVER", &s.base)
        .env("OMEGA_API_KEY", &s.writer);
    c
}

/// The CLI against a server: jobs stored, run and scheduled there, tasks
/// submitted, waited for and cancelled there (the cancel crosses from one
/// process to another); the client's directory holds no store afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_server_with_server_and_key() {
    // leases are compared across processes: the server and the CLI share wall time
    let s = start(Arc::new(SystemClock)).await;
    let cwd = tempfile::tempdir().unwrap();
    let script = cwd.path().join("copy.sql");
    std::fs::write(
        &script,
        "-- param below BIGINT = 10\nCREATE OR REPLACE TABLE small AS SELECT * FROM t WHERE x < :below;\n",
    )
    .unwrap();
    let out = common::run_ok(
        om_remote(&s, cwd.path())
            .args(["jobs", "put", "copy"])
            .arg(&script),
    );
    assert!(out.contains("stored job copy@1"), "{out}");
    let out = common::run_ok(
        om_remote(&s, cwd.path()).args(["jobs", "run", "copy", "--param", "below=5"]),
    );
    let run: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["statements"][0]["rows"], 4);
    assert_eq!(common::scalar(&s.om, "SELECT count(*) FROM small").await, 4);
    let out = common::run_ok(om_remote(&s, cwd.path()).args([
        "jobs",
        "schedule",
        "copy",
        "0 6 * * *",
        "--tz",
        "Europe/Zurich",
    ]));
    assert!(out.contains("scheduled job copy"), "{out}");
    let out = common::run_ok(om_remote(&s, cwd.path()).args(["jobs", "schedules"]));
    assert!(out.contains("copy\t0 6 * * *\tEurope/Zurich"), "{out}");
    let out = common::run_ok(om_remote(&s, cwd.path()).args(["jobs", "history", "copy"]));
    assert!(out.contains("copy@1\tmanual\tsucceeded"), "{out}");

    // a long task, detached; cancelled by another process through the store
    let id = common::run_ok(om_remote(&s, cwd.path()).args([
        "tasks", "submit", "--detach", "sql",
        "CREATE TABLE big AS SELECT a.value AS v FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b",
    ]));
    let id = id.trim().to_string();
    let mut running = false;
    for _ in 0..200 {
        let status: Value = serde_json::from_str(&common::run_ok(
            om_remote(&s, cwd.path()).args(["tasks", "status", &id]),
        ))
        .unwrap();
        if status["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running);
    // the local CLI on the same root writes the cancel marker; the server's
    // process polls it and stops the task
    common::run_ok(common::om(&s.root).args(["tasks", "cancel", &id]));
    let out = om_remote(&s, cwd.path())
        .args(["tasks", "wait", &id])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a cancelled task is not a success");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "cancelled", "{record}");
    assert!(!s.om.datasets().exists("big").await.unwrap());
    let out = common::run_ok(om_remote(&s, cwd.path()).args(["tasks", "list"]));
    assert!(out.contains(&format!("{id}\tsql\tcancelled\tw")), "{out}");

    // errors from the server are one line naming the object
    let out = om_remote(&s, cwd.path())
        .args(["jobs", "run", "missing"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("404") && err.contains("missing"), "{err}");
    let out = om_remote(&s, cwd.path())
        .env("OMEGA_API_KEY", "oms_not_a_key")
        .args(["tasks", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // the client never opened a store of its own
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 1);
    s.running.shutdown().await;
}
