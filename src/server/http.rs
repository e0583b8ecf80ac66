//! The HTTP API (axum): datasets, SQL and models under `/api/v1`, plus
//! `/healthz` and `/readyz`. Every `/api` route authenticates with the
//! caller's API key ([`Caller`]); names come from the path (percent-decoded,
//! so `sales%2F2024` is `sales/2024`) and are validated by the store's own
//! rules; `where` filters are parsed as DataFusion expressions, never
//! spliced into SQL text. Results stream in the format `Accept` asks for.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNode;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::Expr;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ServerState;
use super::auth::Identity;
use super::encode::{Format, body, started};
use super::error::{ErrorKind, ServerError};
use super::runtime_api;
use crate::models::{Input, TrainingData};
use crate::store::{Data, FileFormat, GetOptions, ListOptions, Object, PutMode, PutOptions};

type AppState = Arc<ServerState>;
type HttpResult = Result<Response, ServerError>;

/// The OpenAPI document's frame; each route adds itself from its handler's
/// `#[utoipa::path]` annotation (served at `/api/v1/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "omegastore",
        description = "Datasets, SQL and models of an omegastore root. Every /api route needs `Authorization: Bearer <API key>`; the key's bucket and role decide what it may do."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail, SqlRequest, FitRequest, runtime_api::JobRequest, runtime_api::RunRequest, runtime_api::ScheduleRequest))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What every error response carries.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation of ServerError's JSON form
pub(super) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorDetail {
    /// bad_request, unauthenticated, forbidden, not_found, conflict, too_large, unprocessable, unavailable, internal
    code: String,
    /// What went wrong, naming the object, and what to do.
    message: String,
}

/// The routes and the OpenAPI document generated from the same annotations.
pub fn router(state: AppState) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(list_datasets))
        .routes(routes!(
            get_dataset,
            put_dataset,
            post_dataset,
            drop_dataset
        ))
        .routes(routes!(dataset_metadata))
        .routes(routes!(dataset_history))
        .routes(routes!(sql))
        .routes(routes!(list_models))
        .routes(routes!(model_metadata))
        .routes(routes!(predict))
        .routes(routes!(fit))
        .routes(routes!(runtime_api::submit_task, runtime_api::list_tasks))
        .routes(routes!(runtime_api::get_task, runtime_api::cancel_task))
        .routes(routes!(runtime_api::list_jobs))
        .routes(routes!(runtime_api::put_job, runtime_api::get_job))
        .routes(routes!(runtime_api::run_job))
        .routes(routes!(runtime_api::job_runs))
        .routes(routes!(runtime_api::job_run))
        .routes(routes!(runtime_api::list_schedules))
        .routes(routes!(
            runtime_api::schedule_job,
            runtime_api::unschedule_job
        ))
        .split_for_parts();
    let api = Arc::new(api);
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let api = api.clone();
                async move { Json(api.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ServerError::not_found(
                "no such route; the API lives under /api/v1 (datasets, sql, models, tasks, jobs, schedules; openapi.json)",
            )
        })
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up", content_type = "text/plain")))]
async fn health() -> &'static str {
    "ok"
}

/// The identity of the request's API key (401 without a valid one).
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ServerError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map_err(|_| ServerError::unauthenticated()))
            .transpose()?;
        // the listener puts the connection's address on every request
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Caller(state.auth.identify(header, peer).await?))
    }
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "The store's root answers", content_type = "text/plain"),
              (status = 503, description = "The root does not answer", body = ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Response {
    match state.auth.check_root().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ServerError::new(ErrorKind::Unavailable, e.message).into_response(),
    }
}

fn format_of(headers: &HeaderMap) -> Result<Format, ServerError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    Format::from_accept(accept).ok_or_else(|| {
        ServerError::new(
            ErrorKind::BadRequest,
            format!(
                "cannot answer in '{}'; accept application/json, text/csv, {} or {}",
                accept.unwrap_or(""),
                Format::ARROW,
                Format::PARQUET
            ),
        )
    })
}

/// A streamed result in the requested format.
async fn respond(state: &ServerState, df: DataFrame, format: Format) -> HttpResult {
    // a worker is taken by the query itself once it is past its youth
    let context = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let stream = started(state.lanes.execute(plan, context)?).await?;
    let body = body(stream, format, state.limits.result_rows);
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Glob over names: `*` within a segment, `**` across.
    pattern: Option<String>,
    kind: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets", params(ListQuery),
    responses((status = 200, description = "Metadata records of the datasets the key may read", body = Vec<Object>), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody)))]
async fn list_datasets(Caller(id): Caller, Query(q): Query<ListQuery>) -> HttpResult {
    let opts = ListOptions {
        kind: q.kind,
        ..Default::default()
    };
    let list = id.om.datasets().list(q.pattern.as_deref(), &opts).await?;
    Ok(Json(list).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// Comma-separated columns to return.
    columns: Option<String>,
    /// A DataFusion expression over the table's columns (no subqueries).
    #[serde(rename = "where")]
    #[param(rename = "where")]
    filter: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Dataset name; `/` path-encoded as %2F"), ReadQuery),
    responses((status = 200, description = "The rows (tables, streamed, in the format `Accept` names), the document (JSON) or the file (bytes)", content((Object = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.arrow.stream"), (Vec<u8> = "application/vnd.apache.parquet"))),
              (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody)))]
async fn get_dataset(
    State(state): State<AppState>,
    Caller(id): Caller,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> HttpResult {
    let store = id.om.datasets();
    let meta = store.metadata(&name).await?;
    // the built-in table kinds go straight to the SQL view of the table;
    // other kinds (documents, files, user backends) are asked what they are
    let builtin_table = [
        crate::backends::table::KIND,
        crate::backends::external::KIND,
        crate::backends::view::KIND,
    ]
    .contains(&meta.kind.as_str());
    let data = if builtin_table {
        None
    } else {
        Some(store.get_version(&meta, &GetOptions::default()).await?)
    };
    match data {
        None | Some(Data::Table(_)) => {
            let format = format_of(&headers)?;
            // the record just read (no second read of it while planning)
            let df = id.om.table_with_record(&name, meta).await?;
            let df = shape(&name, df, &q)?;
            respond(&state, df, format).await
        }
        Some(Data::Document(v)) => Ok(Json(v).into_response()),
        Some(Data::File { size, stream }) => {
            let stream = stream
                .map(|c| c.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>));
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, size.to_string()),
                ],
                Body::from_stream(stream),
            )
                .into_response())
        }
        Some(Data::Any(_)) => Err(ServerError::new(
            ErrorKind::Unprocessable,
            format!(
                "dataset '{name}' is of kind '{}', which has no HTTP representation",
                meta.kind
            ),
        )),
    }
}

/// Applies `where`, `columns`, `offset` and `limit` to a table read.
fn shape(name: &str, mut df: DataFrame, q: &ReadQuery) -> Result<DataFrame, ServerError> {
    if let Some(filter) = q.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        let expr = df.parse_sql_expr(filter).map_err(|e| {
            ServerError::bad_request(format!("invalid where '{filter}' for '{name}': {e}"))
        })?;
        let subquery = expr
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
                ))
            })
            .unwrap_or(true);
        if subquery {
            return Err(ServerError::bad_request(format!(
                "where for '{name}' may not contain subqueries; use POST /api/v1/sql"
            )));
        }
        df = df.filter(expr)?;
    }
    if let Some(columns) = q.columns.as_deref().filter(|c| !c.trim().is_empty()) {
        let cols: Vec<&str> = columns.split(',').map(str::trim).collect();
        for c in &cols {
            if df.schema().field_with_unqualified_name(c).is_err() {
                return Err(ServerError::bad_request(format!(
                    "dataset '{name}' has no column '{c}'"
                )));
            }
        }
        df = df.select_columns(&cols)?;
    }
    if q.limit.is_some() || q.offset.is_some() {
        df = df.limit(q.offset.unwrap_or(0), q.limit)?;
    }
    Ok(df)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WriteQuery {
    /// append, overwrite or error (default: PUT overwrite, POST append)
    mode: Option<String>,
    /// Tables: columns (comma-separated) to write the rows sorted by, kept as
    /// the table's sort order so that filters on them skip row groups (as
    /// `om datasets put --sort-by`); appends without one follow it
    sort_by: Option<String>,
    /// Tables: columns (comma-separated) to write Bloom filters for, so that
    /// `col = value` lookups skip row groups (as `om datasets put --bloom`)
    bloom: Option<String>,
    /// Tables: on append, add the body's new columns (nullable) instead of
    /// refusing it (as `om datasets put --merge-schema`)
    merge_schema: Option<bool>,
}

/// The columns of a comma-separated query parameter (none when absent).
fn column_list(param: Option<&str>) -> Vec<String> {
    param
        .into_iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[utoipa::path(put, path = "/api/v1/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Dataset name; `/` path-encoded as %2F"), WriteQuery),
    request_body(description = "CSV, Parquet, Arrow IPC stream, JSON lines or a JSON document (by Content-Type)", content((String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"), (Vec<u8> = "application/vnd.apache.arrow.stream"), (String = "application/x-ndjson"), (Object = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "Version 1 stored: its Metadata", body = Object), (status = 200, description = "A new version stored: its Metadata", body = Object),
              (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 409, description = "Exists (mode=error) or a concurrent write won", body = ErrorBody), (status = 413, description = "Body over --max-body", body = ErrorBody), (status = 422, description = "Well-formed but not applicable", body = ErrorBody)))]
async fn put_dataset(
    state: State<AppState>,
    caller: Caller,
    name: Path<String>,
    q: Query<WriteQuery>,
    request: Request,
) -> HttpResult {
    write_dataset(state, caller, name, q, request, PutMode::Overwrite).await
}

#[utoipa::path(post, path = "/api/v1/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Dataset name; `/` path-encoded as %2F"), WriteQuery),
    request_body(description = "As PUT; appends to a table (a new version) by default", content((String = "text/csv"), (Vec<u8> = "application/vnd.apache.parquet"), (Vec<u8> = "application/vnd.apache.arrow.stream"), (String = "application/x-ndjson"), (Object = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "Version 1 stored", body = Object), (status = 200, description = "A new version stored", body = Object),
              (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 409, description = "A concurrent write won", body = ErrorBody), (status = 413, description = "Body over --max-body", body = ErrorBody), (status = 422, description = "Well-formed but not applicable", body = ErrorBody)))]
async fn post_dataset(
    state: State<AppState>,
    caller: Caller,
    name: Path<String>,
    q: Query<WriteQuery>,
    request: Request,
) -> HttpResult {
    write_dataset(state, caller, name, q, request, PutMode::Auto).await
}

/// A body format to store, from `Content-Type`.
enum Upload {
    File(FileFormat),
    Arrow,
}

fn upload_of(headers: &HeaderMap) -> Result<Upload, ServerError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(match ct.as_str() {
        "text/csv" => Upload::File(FileFormat::Csv),
        Format::PARQUET => Upload::File(FileFormat::Parquet),
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
            Upload::File(FileFormat::JsonLines)
        }
        "application/json" => Upload::File(FileFormat::Json),
        "application/octet-stream" => Upload::File(FileFormat::Raw),
        Format::ARROW => Upload::Arrow,
        other => {
            return Err(ServerError::new(
                ErrorKind::Unprocessable,
                format!(
                    "cannot store a body of type '{other}'; send text/csv, application/x-ndjson, application/json, {}, {} or application/octet-stream",
                    Format::PARQUET,
                    Format::ARROW
                ),
            ));
        }
    })
}

async fn write_dataset(
    State(state): State<AppState>,
    Caller(id): Caller,
    Path(name): Path<String>,
    Query(q): Query<WriteQuery>,
    request: Request,
    default_mode: PutMode,
) -> HttpResult {
    crate::store::name::validate_name(&name)?;
    let mode = match q.mode.as_deref() {
        None => default_mode,
        Some("append") => PutMode::Append,
        Some("overwrite") => PutMode::Overwrite,
        Some("error") => PutMode::Error,
        Some(other) => {
            return Err(ServerError::bad_request(format!(
                "unknown mode '{other}'; use append, overwrite or error"
            )));
        }
    };
    let upload = upload_of(request.headers())?;
    let spool = Spool::receive(request.into_body(), state.limits.body_bytes).await?;
    let object = match upload {
        Upload::File(format) => Object::File {
            path: spool.path.clone(),
            format,
            schema: None,
        },
        Upload::Arrow => arrow_object(&spool.path)?,
    };
    let opts = PutOptions {
        mode,
        sort_by: column_list(q.sort_by.as_deref()),
        bloom_filters: column_list(q.bloom.as_deref()),
        merge_schema: q.merge_schema.unwrap_or(false),
        ..Default::default()
    };
    // parsing, encoding and the commit yield the cores to queries as they age
    let om = id.om.clone();
    let meta = state
        .write(async move { om.datasets().put(object, &name, opts).await })
        .await?;
    drop(spool);
    let status = if meta.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(meta)).into_response())
}

/// A request body on local disk, removed when dropped. Bodies over the
/// limit are refused from their `Content-Length` before any byte is read,
/// or as soon as the count passes the limit.
struct Spool {
    path: PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spool {
    async fn receive(body: Body, limit: u64) -> Result<Spool, ServerError> {
        use tokio::io::AsyncWriteExt;
        let too_large = || {
            ServerError::new(
                ErrorKind::TooLarge,
                format!("the request body is over the server's limit of {limit} bytes"),
            )
        };
        if axum::body::HttpBody::size_hint(&body).lower() > limit {
            return Err(too_large());
        }
        let path =
            std::env::temp_dir().join(format!("om-upload-{}", uuid::Uuid::new_v4().simple()));
        let spool = Spool { path };
        let mut file = tokio::fs::File::create(&spool.path)
            .await
            .map_err(|e| ServerError::internal(format!("cannot spool the upload: {e}")))?;
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ServerError::bad_request(format!("reading the body failed: {e}")))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_large());
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| ServerError::internal(format!("cannot spool the upload: {e}")))?;
        }
        file.flush()
            .await
            .map_err(|e| ServerError::internal(format!("cannot spool the upload: {e}")))?;
        Ok(spool)
    }
}

/// An Arrow IPC stream file read batch by batch as the store writes.
fn arrow_object(path: &std::path::Path) -> Result<Object, ServerError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ServerError::internal(format!("cannot read the spooled upload: {e}")))?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
        .map_err(|e| {
            ServerError::new(
                ErrorKind::Unprocessable,
                format!("the body is not an Arrow IPC stream: {e}"),
            )
        })?;
    let schema = reader.schema();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        for batch in reader {
            let batch = batch
                .map_err(|e| datafusion::error::DataFusionError::ArrowError(Box::new(e), None));
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    Ok(Object::Stream(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream),
    )))
}

#[utoipa::path(delete, path = "/api/v1/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Dataset name; `/` path-encoded as %2F")),
    responses((status = 200, description = "The names dropped", body = Object), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody)))]
async fn drop_dataset(Caller(id): Caller, Path(name): Path<String>) -> HttpResult {
    let dropped = id.om.datasets().drop(&name, false).await?;
    Ok(Json(json!({"dropped": dropped})).into_response())
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}/metadata", tag = "datasets", params(("name" = String, Path, description = "Dataset name; `/` path-encoded as %2F")),
    responses((status = 200, description = "The latest version's Metadata record", body = Object), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody)))]
async fn dataset_metadata(Caller(id): Caller, Path(name): Path<String>) -> HttpResult {
    Ok(Json(id.om.datasets().metadata(&name).await?).into_response())
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}/history", tag = "datasets", params(("name" = String, Path, description = "Dataset name; `/` path-encoded as %2F")),
    responses((status = 200, description = "Every version's Metadata, oldest first", body = Vec<Object>), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody)))]
async fn dataset_history(Caller(id): Caller, Path(name): Path<String>) -> HttpResult {
    Ok(Json(id.om.datasets().history(&name).await?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
struct SqlRequest {
    /// One statement or a script; `?` or `$1` placeholders.
    sql: String,
    /// Values of the placeholders, in order.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    params: Vec<Value>,
}

#[utoipa::path(post, path = "/api/v1/sql", tag = "sql", request_body = SqlRequest,
    responses((status = 200, description = "The last statement's rows, in the format `Accept` names", content((Object = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.arrow.stream"), (Vec<u8> = "application/vnd.apache.parquet"))),
              (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 422, description = "Well-formed but not applicable", body = ErrorBody)))]
async fn sql(
    State(state): State<AppState>,
    Caller(id): Caller,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> HttpResult {
    let Json(request) = body.map_err(json_rejection)?;
    let format = format_of(&headers)?;
    let params = request
        .params
        .iter()
        .map(scalar_of)
        .collect::<Result<Vec<_>, _>>()?;
    let sql = crate::sql::number_question_marks(&request.sql)?;
    let df = state.statement(&id.om, &sql, &params).await?;
    respond(&state, df, format).await
}

pub(super) fn json_rejection(e: axum::extract::rejection::JsonRejection) -> ServerError {
    use axum::extract::rejection::JsonRejection as J;
    let kind = match &e {
        J::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::TooLarge,
        J::JsonDataError(_) => ErrorKind::Unprocessable,
        _ => ErrorKind::BadRequest,
    };
    ServerError::new(kind, format!("invalid JSON body: {}", e.body_text()))
}

/// A JSON parameter as a SQL value: integers are Int64, other numbers
/// Float64, strings Utf8, booleans Boolean, null NULL.
fn scalar_of(v: &Value) -> Result<ScalarValue, ServerError> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => {
            return Err(ServerError::bad_request(format!(
                "parameter {other} is not a number, string, boolean or null"
            )));
        }
    })
}

#[utoipa::path(get, path = "/api/v1/models", tag = "models", params(ListQuery),
    responses((status = 200, description = "Metadata records of the models", body = Vec<Object>), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody)))]
async fn list_models(Caller(id): Caller, Query(q): Query<ListQuery>) -> HttpResult {
    let opts = ListOptions {
        kind: q.kind,
        ..Default::default()
    };
    let list = id
        .om
        .models()
        .store()
        .list(q.pattern.as_deref(), &opts)
        .await?;
    Ok(Json(list).into_response())
}

#[utoipa::path(get, path = "/api/v1/models/{name}", tag = "models", params(("name" = String, Path, description = "Model name, optionally `@version` or `@tag`")),
    responses((status = 200, description = "The model version's Metadata (algorithm, features, metrics)", body = Object), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody)))]
async fn model_metadata(Caller(id): Caller, Path(name): Path<String>) -> HttpResult {
    Ok(Json(id.om.models().store().metadata(&name).await?).into_response())
}

/// Rows to predict on: a JSON array of records (or `{"rows": [...]}`), or
/// an Arrow IPC stream.
#[utoipa::path(post, path = "/api/v1/models/{name}/predict", tag = "models", params(("name" = String, Path, description = "Model name, optionally `@version` or `@tag`")),
    request_body(description = "Rows: a JSON array of records (or {\"rows\": [...]}), or an Arrow IPC stream", content((Vec<Object> = "application/json"), (Vec<u8> = "application/vnd.apache.arrow.stream"))),
    responses((status = 200, description = "The rows with a `prediction` column", content((Object = "application/json"), (String = "text/csv"), (Vec<u8> = "application/vnd.apache.arrow.stream"), (Vec<u8> = "application/vnd.apache.parquet"))), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody), (status = 422, description = "Well-formed but not applicable", body = ErrorBody)))]
async fn predict(
    State(state): State<AppState>,
    Caller(id): Caller,
    Path(name): Path<String>,
    request: Request,
) -> HttpResult {
    let format = format_of(request.headers())?;
    let is_arrow = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(Format::ARROW));
    let bytes = axum::body::to_bytes(request.into_body(), state.limits.body_bytes as usize)
        .await
        .map_err(|e| ServerError::new(ErrorKind::TooLarge, format!("cannot read the body: {e}")))?;
    let (schema, batches) = if is_arrow {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| {
            ServerError::new(
                ErrorKind::Unprocessable,
                format!("the body is not an Arrow IPC stream: {e}"),
            )
        })?;
        let schema = reader.schema();
        (schema, reader.collect::<Result<Vec<_>, _>>()?)
    } else {
        json_rows(&bytes)?
    };
    let out = {
        let _permit = state.worker().await?;
        id.om
            .models()
            .predict(&name, Input::Batches(schema, batches))
            .await?
    };
    let df = id.om.session().read_batches(out)?;
    respond(&state, df, format).await
}

fn json_rows(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ServerError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ServerError::bad_request(format!("invalid JSON body: {e}")))?;
    let rows = match value {
        Value::Array(rows) => rows,
        Value::Object(mut o) => match o.remove("rows") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(ServerError::new(
                    ErrorKind::Unprocessable,
                    "send a JSON array of records, or {\"rows\": [...]}",
                ));
            }
        },
        _ => {
            return Err(ServerError::new(
                ErrorKind::Unprocessable,
                "send a JSON array of records, or {\"rows\": [...]}",
            ));
        }
    };
    if rows.is_empty() || !rows.iter().all(Value::is_object) {
        return Err(ServerError::new(
            ErrorKind::Unprocessable,
            "send at least one record, each a JSON object of column: value",
        ));
    }
    let schema = Arc::new(
        arrow::json::reader::infer_json_schema_from_iterator(rows.iter().map(|r| Ok(r.clone())))
            .map_err(|e| ServerError::new(ErrorKind::Unprocessable, e.to_string()))?,
    );
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(&rows)?;
    let mut batches = Vec::new();
    while let Some(b) = decoder.flush()? {
        batches.push(b);
    }
    Ok((schema, batches))
}

#[derive(Deserialize, utoipa::ToSchema)]
/// Exactly one of `dataset` or `sql`.
struct FitRequest {
    dataset: Option<String>,
    sql: Option<String>,
    features: Option<Vec<String>>,
    label: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/models/{name}/fit", tag = "models", params(("name" = String, Path, description = "Model name, optionally `@version` or `@tag`")), request_body = FitRequest,
    responses((status = 200, description = "The new model version and the rows it learnt from", body = Object), (status = 400, description = "Invalid name, filter, SQL or parameter", body = ErrorBody), (status = 401, description = "No valid API key", body = ErrorBody), (status = 403, description = "The key's role lacks the privilege", body = ErrorBody), (status = 404, description = "No such object", body = ErrorBody), (status = 422, description = "Well-formed but not applicable", body = ErrorBody)))]
async fn fit(
    State(state): State<AppState>,
    Caller(id): Caller,
    Path(name): Path<String>,
    body: Result<Json<FitRequest>, axum::extract::rejection::JsonRejection>,
) -> HttpResult {
    let Json(request) = body.map_err(json_rejection)?;
    let input = match (request.dataset, request.sql) {
        (Some(d), None) => Input::Dataset(d),
        (None, Some(s)) => Input::Sql(s),
        _ => {
            return Err(ServerError::new(
                ErrorKind::Unprocessable,
                "give exactly one of \"dataset\" or \"sql\"",
            ));
        }
    };
    let data = TrainingData {
        input,
        features: request.features,
        label: request.label,
    };
    let _permit = state.worker().await?;
    let report = id
        .om
        .models()
        .fit(&name, data, None, Default::default())
        .await?;
    Ok(
        Json(json!({"model": report.meta, "rows": report.rows, "fit_seconds": report.fit_seconds}))
            .into_response(),
    )
}
