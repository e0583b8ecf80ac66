//! The HTTP face of the runtime: background tasks (`/api/v1/tasks`), stored
//! SQL jobs (`/api/v1/jobs`) and their schedules. Every route runs as the
//! caller's key: a task runs with that identity, and the runtime shows each
//! identity only its own tasks (the store's owner sees all). Submitting
//! answers `202 Accepted` with the queued record at once; the work goes on
//! in the server's worker pool.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ServerError;
use super::http::{Caller, ErrorBody, json_rejection};
use crate::runtime::{TaskRecord, TaskSpec, Tasks};

type HttpResult = Result<Response, ServerError>;
type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Longest a `GET /api/v1/tasks/{id}?wait=` holds the request.
const MAX_WAIT: Duration = Duration::from_secs(60);

async fn tasks_of(caller: &Caller) -> Result<Tasks, ServerError> {
    Ok(caller.0.om.runtime().await?)
}

fn accepted(record: &TaskRecord) -> Response {
    (StatusCode::ACCEPTED, Json(record)).into_response()
}

#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks",
    request_body(description = "What to run, by `verb`: `{\"verb\":\"sql\",\"sql\":…}`, `{\"verb\":\"fit\",\"model\":…,\"dataset\"|\"sql\":…,\"label\":…}`, `{\"verb\":\"predict\",\"model\":…,\"dataset\":…,\"into\":…}`, `{\"verb\":\"score\",\"model\":…,\"dataset\":…}`, `{\"verb\":\"search\",\"model\":…,\"dataset\":…,\"grid\":{…},\"folds\":N}`, `{\"verb\":\"job\",\"job\":…,\"params\":{…}}`", content((Object = "application/json"))),
    responses((status = 202, description = "The task's record (queued); poll GET /api/v1/tasks/{id}", body = Object), (status = 400, description = "Invalid request", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody), (status = 422, description = "Well-formed but not applicable", body = ErrorBody)))]
pub async fn submit_task(caller: Caller, body: JsonBody<TaskSpec>) -> HttpResult {
    let Json(spec) = body.map_err(json_rejection)?;
    let tasks = tasks_of(&caller).await?;
    let handle = tasks.submit(spec).await?;
    Ok(accepted(&handle.status().await?))
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    responses((status = 200, description = "The task records this key may see, newest first", body = Vec<Object>), (status = 401, description = "No valid API key", body = ErrorBody)))]
pub async fn list_tasks(caller: Caller) -> HttpResult {
    Ok(Json(tasks_of(&caller).await?.list().await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Hold the request up to this many seconds (at most 60) until the task is final.
    wait: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "Task id"), WaitQuery),
    responses((status = 200, description = "The task's record (`status`: queued, running, succeeded, failed, cancelled, abandoned)", body = Object), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such task visible to this key", body = ErrorBody)))]
pub async fn get_task(
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> HttpResult {
    let tasks = tasks_of(&caller).await?;
    let record = match q.wait.filter(|w| *w > 0) {
        None => tasks.status(&id).await?,
        Some(seconds) => {
            let limit = Duration::from_secs(seconds).min(MAX_WAIT);
            match tokio::time::timeout(limit, tasks.wait(&id)).await {
                Ok(record) => record?,
                Err(_) => tasks.status(&id).await?,
            }
        }
    };
    Ok(Json(record).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 202, description = "Asked to stop: the task ends `cancelled` at its next await point, writing nothing partial; a final task's record is returned as is", body = Object), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such task visible to this key", body = ErrorBody)))]
pub async fn cancel_task(caller: Caller, Path(id): Path<String>) -> HttpResult {
    let record = tasks_of(&caller).await?.cancel(&id).await?;
    Ok(accepted(&record))
}

/// A job's script and the defaults of its declared parameters.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct JobRequest {
    /// SQL statements; `-- param NAME TYPE [= DEFAULT]` lines at the top declare parameters.
    sql: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    responses((status = 200, description = "Metadata of the bucket's jobs (latest versions)", body = Vec<Object>), (status = 401, description = "No valid API key", body = ErrorBody)))]
pub async fn list_jobs(caller: Caller) -> HttpResult {
    Ok(Json(tasks_of(&caller).await?.jobs().list().await?).into_response())
}

#[utoipa::path(put, path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path, description = "Job name; `/` path-encoded as %2F")), request_body = JobRequest,
    responses((status = 201, description = "The new version's Metadata", body = Object), (status = 400, description = "Invalid name or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 422, description = "Not a SQL script", body = ErrorBody)))]
pub async fn put_job(
    caller: Caller,
    Path(name): Path<String>,
    body: JsonBody<JobRequest>,
) -> HttpResult {
    let Json(request) = body.map_err(json_rejection)?;
    let meta = tasks_of(&caller)
        .await?
        .jobs()
        .put(&name, &request.sql, &request.params)
        .await?;
    Ok((StatusCode::CREATED, Json(meta)).into_response())
}

#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path, description = "Job name, optionally `@version`")),
    responses((status = 200, description = "`{metadata, sql, params}`", body = Object), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn get_job(caller: Caller, Path(name): Path<String>) -> HttpResult {
    let (meta, script) = tasks_of(&caller).await?.jobs().get(&name).await?;
    Ok(Json(json!({"metadata": meta, "sql": script.sql, "params": script.params})).into_response())
}

/// Parameters of a run (strings, typed by the script's declarations).
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RunRequest {
    #[serde(default)]
    params: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/jobs/{name}/run", tag = "jobs", params(("name" = String, Path, description = "Job name, optionally `@version`")), request_body = RunRequest,
    responses((status = 202, description = "The run's task record (queued); its `result.run` names the run record", body = Object), (status = 400, description = "A parameter is missing, unknown or of the wrong type", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn run_job(
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Option<Json<RunRequest>>, axum::extract::rejection::JsonRejection>,
) -> HttpResult {
    // no body (or no JSON content type): the declared defaults
    let request = body
        .map_err(json_rejection)?
        .map(|b| b.0)
        .unwrap_or_default();
    let tasks = tasks_of(&caller).await?;
    let handle = tasks.run_job(&name, request.params).await?;
    Ok(accepted(&handle.status().await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{name}/runs", tag = "jobs", params(("name" = String, Path, description = "Job name")),
    responses((status = 200, description = "The job's run records, oldest first (statements, what each wrote, errors)", body = Vec<Object>), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn job_runs(caller: Caller, Path(name): Path<String>) -> HttpResult {
    Ok(Json(tasks_of(&caller).await?.jobs().history(&name).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/jobs/{name}/runs/{run}", tag = "jobs", params(("name" = String, Path, description = "Job name"), ("run" = String, Path, description = "Run key, as a job task's `result.run` names it")),
    responses((status = 200, description = "The run record", body = Object), (status = 401, description = "No valid API key", body = ErrorBody), (status = 404, description = "No such job or run", body = ErrorBody)))]
pub async fn job_run(caller: Caller, Path((name, run)): Path<(String, String)>) -> HttpResult {
    Ok(Json(tasks_of(&caller).await?.jobs().run(&name, &run).await?).into_response())
}

/// When a job runs: a 5-field cron expression in a time zone.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ScheduleRequest {
    /// minute hour day-of-month month day-of-week, e.g. "0 6 * * *".
    cron: String,
    /// IANA time zone (default UTC).
    #[serde(default)]
    tz: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    /// After downtime, run the newest missed instant once.
    #[serde(default)]
    catch_up: bool,
}

#[utoipa::path(get, path = "/api/v1/schedules", tag = "jobs",
    responses((status = 200, description = "The bucket's schedules", body = Vec<Object>), (status = 401, description = "No valid API key", body = ErrorBody)))]
pub async fn list_schedules(caller: Caller) -> HttpResult {
    Ok(Json(tasks_of(&caller).await?.schedules().list().await?).into_response())
}

#[utoipa::path(put, path = "/api/v1/jobs/{name}/schedule", tag = "jobs", params(("name" = String, Path, description = "Job name")), request_body = ScheduleRequest,
    responses((status = 201, description = "The schedule (replaces one the job had)", body = Object), (status = 400, description = "Invalid cron expression, time zone or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks write on the job", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn schedule_job(
    caller: Caller,
    Path(name): Path<String>,
    body: JsonBody<ScheduleRequest>,
) -> HttpResult {
    let Json(r) = body.map_err(json_rejection)?;
    let tz = r.tz.unwrap_or_else(|| "UTC".into());
    let s = tasks_of(&caller)
        .await?
        .schedules()
        .schedule(&name, &r.cron, &tz, r.params, r.catch_up)
        .await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/jobs/{name}/schedule", tag = "jobs", params(("name" = String, Path, description = "Job name")),
    responses((status = 204, description = "Unscheduled"), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks write on the job", body = ErrorBody), (status = 404, description = "The job is not scheduled", body = ErrorBody)))]
pub async fn unschedule_job(caller: Caller, Path(name): Path<String>) -> HttpResult {
    tasks_of(&caller)
        .await?
        .schedules()
        .unschedule(&name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
