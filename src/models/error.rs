//! Errors of the model layer: each names the model, column or parameter at
//! fault and says what to do.

use thiserror::Error;

use crate::store::StoreError;
use crate::store::error::one_line;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown algorithm '{given}'; known algorithms: {known}")]
    UnknownAlgorithm { given: String, known: String },

    #[error("{algorithm} has no parameter '{param}'; its parameters are: {known}")]
    UnknownParameter {
        algorithm: String,
        param: String,
        known: String,
    },

    #[error("invalid value for {algorithm} parameter '{param}': {reason}")]
    InvalidParameter {
        algorithm: String,
        param: String,
        reason: String,
    },

    #[error("'{name}' is a {kind} object, not a model; models live in `om models`")]
    NotAModel { name: String, kind: String },

    #[error(
        "model '{name}' version {version} is not fitted yet; fit it with `om models fit {name} DATASET`"
    )]
    NotFitted { name: String, version: u64 },

    #[error("{what} cannot be used with model '{name}' ({algorithm}): {reason}")]
    Unsupported {
        name: String,
        algorithm: String,
        what: String,
        reason: String,
    },

    #[error("the data does not match the features model '{name}' was trained on: {}", .mismatches.join("; "))]
    SchemaMismatch {
        name: String,
        mismatches: Vec<String>,
    },

    #[error(
        "column '{column}' has {count} null value(s); remove them, or fit with preprocessing nulls = mean, median or zero"
    )]
    NullValues { column: String, count: usize },

    #[error("column '{column}' has type {data_type}, which cannot be a {role}; {hint}")]
    UnsupportedColumn {
        column: String,
        data_type: String,
        role: String,
        hint: String,
    },

    #[error("column '{column}' not found in {source_desc}; columns are: {available}")]
    MissingColumn {
        column: String,
        source_desc: String,
        available: String,
    },

    #[error("cannot fit {algorithm} model '{name}': {reason}")]
    Fit {
        name: String,
        algorithm: String,
        reason: String,
    },

    #[error("cannot {what} with model '{name}': {reason}")]
    Predict {
        name: String,
        what: String,
        reason: String,
    },

    #[error(
        "model '{name}' version {version} at '{path}' is unreadable ({reason}); refit it or drop that version's model"
    )]
    Corrupt {
        name: String,
        version: u64,
        path: String,
        reason: String,
    },

    #[error("invalid input: {0}")]
    Usage(String),

    #[error(transparent)]
    Store(#[from] StoreError),

    /// The query giving the rows failed (its message says why).
    #[error("{0}")]
    Query(String),
}

impl ModelError {
    /// An error of the query a verb read its rows from (a store error keeps its type).
    pub fn from_query(e: crate::engine::QueryError) -> Self {
        match e.downcast::<StoreError>() {
            Ok(s) => ModelError::Store(*s),
            Err(other) => ModelError::Query(one_line(&other.to_string())),
        }
    }
}

impl From<datafusion::error::DataFusionError> for ModelError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // A store error surfacing through DataFusion keeps its type.
        match e {
            datafusion::error::DataFusionError::External(inner) => ModelError::from_query(inner),
            e => ModelError::Query(one_line(&e.strip_backtrace())),
        }
    }
}

impl From<arrow::error::ArrowError> for ModelError {
    fn from(e: arrow::error::ArrowError) -> Self {
        ModelError::Query(one_line(&e.to_string()))
    }
}
