//! One error type for both protocols: every failure of a request is classified
//! once (what kind of failure, and a message that names the object and says
//! what to do) and rendered as an HTTP status with a JSON body
//! `{"error": {"code", "message"}}` or as a gRPC status for Flight SQL.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::models::ModelError;
use crate::runtime::RuntimeError;
use crate::sql::SqlError;
use crate::store::StoreError;
use crate::store::keys::KeyError;

/// What went wrong, as both protocols distinguish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request: bad SQL, a bad parameter, an invalid name.
    BadRequest,
    /// No valid API key.
    Unauthenticated,
    /// The key's role may not do this.
    Forbidden,
    NotFound,
    /// Already exists, or a concurrent write won.
    Conflict,
    /// The body or message is over the server's limit.
    TooLarge,
    /// Well-formed but not applicable: a schema mismatch, a wrong kind.
    Unprocessable,
    /// Too many failed authentications from the client's address.
    RateLimited,
    /// Too many open statements or tickets, or the server is shutting down.
    Unavailable,
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadRequest | ErrorKind::Unprocessable => tonic::Code::InvalidArgument,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::Forbidden => tonic::Code::PermissionDenied,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Conflict => tonic::Code::AlreadyExists,
            ErrorKind::TooLarge | ErrorKind::RateLimited => tonic::Code::ResourceExhausted,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

/// A failed request: its kind and a one-line message for the client.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for ServerError {}

impl ServerError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, message)
    }

    pub fn unauthenticated() -> Self {
        Self::from(KeyError::Unauthenticated)
    }

    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind.grpc_code(), self.message.clone())
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        e.to_status()
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.kind.code(), "message": self.message}});
        let mut response = (self.kind.http_status(), Json(body)).into_response();
        if self.kind == ErrorKind::Unauthenticated {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::InvalidName { .. } | StoreError::InvalidUrl { .. } => ErrorKind::BadRequest,
        StoreError::NotFound { .. } | StoreError::VersionNotFound { .. } => ErrorKind::NotFound,
        StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => ErrorKind::Conflict,
        StoreError::PermissionDenied { .. } => ErrorKind::Forbidden,
        StoreError::SchemaMismatch { .. }
        | StoreError::UnknownKind { .. }
        | StoreError::NoBackend { .. }
        | StoreError::InvalidInput { .. }
        | StoreError::Table { .. } => ErrorKind::Unprocessable,
        _ => ErrorKind::Internal,
    }
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        Self::new(store_kind(&e), e.to_string())
    }
}

impl From<SqlError> for ServerError {
    fn from(e: SqlError) -> Self {
        let kind = match &e {
            SqlError::Store(s) => store_kind(s),
            SqlError::ReadOnly(_) => ErrorKind::Forbidden,
            SqlError::Query(_) | SqlError::Usage(_) => ErrorKind::BadRequest,
            // the server's memory is shared: others' queries may free it
            SqlError::Memory(_) => ErrorKind::Unavailable,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<ModelError> for ServerError {
    fn from(e: ModelError) -> Self {
        let kind = match &e {
            ModelError::Store(s) => store_kind(s),
            ModelError::Query(_) | ModelError::Usage(_) => ErrorKind::BadRequest,
            ModelError::Corrupt { .. } => ErrorKind::Internal,
            _ => ErrorKind::Unprocessable,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<KeyError> for ServerError {
    fn from(e: KeyError) -> Self {
        let kind = match &e {
            KeyError::Unauthenticated => ErrorKind::Unauthenticated,
            KeyError::NotFound(_) => ErrorKind::NotFound,
            KeyError::Invalid { .. } => ErrorKind::BadRequest,
            KeyError::Store(s) => store_kind(s),
        };
        Self::new(kind, e.to_string())
    }
}

impl From<RuntimeError> for ServerError {
    fn from(e: RuntimeError) -> Self {
        let kind = match e {
            RuntimeError::Store(s) => return s.into(),
            RuntimeError::Sql(s) => return s.into(),
            RuntimeError::Model(m) => return m.into(),
            RuntimeError::UnknownJob { .. }
            | RuntimeError::UnknownTask(_)
            | RuntimeError::UnknownRun { .. }
            | RuntimeError::NotScheduled { .. } => ErrorKind::NotFound,
            RuntimeError::NotAJob { .. } | RuntimeError::NotSql { .. } => ErrorKind::Unprocessable,
            RuntimeError::Cancelled | RuntimeError::TimedOut(_) => ErrorKind::Conflict,
            _ => ErrorKind::BadRequest,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for ServerError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        SqlError::from(e).into()
    }
}

impl From<arrow::error::ArrowError> for ServerError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::bad_request(e.to_string())
    }
}
