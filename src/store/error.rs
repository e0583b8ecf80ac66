//! The error type of the store and its backends. Every message names the
//! object (and version or path where there is one) and says what to do.

use thiserror::Error;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors of the store layer (names, metadata, commits, backends).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid name '{name}': {reason}")]
    InvalidName { name: String, reason: String },

    #[error(
        "'{name}' not found in {store} of bucket '{bucket}'; list what exists with `om {store} list`"
    )]
    NotFound {
        store: String,
        bucket: String,
        name: String,
    },

    #[error("'{name}' has no {spec}; see its versions with `om {store} history {name}`")]
    VersionNotFound {
        store: String,
        name: String,
        spec: String,
    },

    #[error("'{name}' already exists in {store}; use mode append or overwrite, or drop it first")]
    AlreadyExists { store: String, name: String },

    #[error(
        "conflict writing '{name}' version {version}: another writer committed it first; {advice}"
    )]
    Conflict {
        name: String,
        version: u64,
        advice: String,
    },

    #[error(
        "'{name}' has kind '{kind}', which no registered backend handles; register a backend for it or drop the object"
    )]
    UnknownKind { name: String, kind: String },

    #[error("no backend can store {what} as '{name}'{hint}")]
    NoBackend {
        name: String,
        what: String,
        hint: String,
    },

    #[error("schema of the data does not match dataset '{name}': {details}")]
    SchemaMismatch { name: String, details: String },

    #[error(
        "metadata of '{name}' at '{path}' is corrupt ({reason}); restore the file or drop the object"
    )]
    CorruptMetadata {
        name: String,
        path: String,
        reason: String,
    },

    #[error("data of '{name}' at '{path}' is unreadable: {reason}")]
    CorruptData {
        name: String,
        path: String,
        reason: String,
    },

    #[error(
        "data of '{name}' version {version} is missing at '{path}'; the store was modified outside omegastore — restore the data or drop the object"
    )]
    MissingData {
        name: String,
        version: u64,
        path: String,
    },

    #[error("invalid store URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid input for '{name}': {reason}")]
    InvalidInput { name: String, reason: String },

    #[error(
        "permission denied writing '{path}': the store's storage is read-only for this process (reads still work); give it write access to write"
    )]
    StorageDenied { path: String },

    #[error(
        "permission denied: {who} lacks {privilege} on bucket '{bucket}' ({action}); an admin of the bucket can run GRANT {privilege} ON BUCKET {bucket} TO <role>"
    )]
    PermissionDenied {
        /// `user 'ana' (roles analyst)`
        who: String,
        privilege: String,
        bucket: String,
        /// what was refused: `write 'sales'`
        action: String,
    },

    #[error("storage error at '{path}': {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },

    #[error("i/o error on '{path}': {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("table '{name}': {message}")]
    Table { name: String, message: String },
}

impl StoreError {
    pub(crate) fn object_store(path: impl ToString, source: object_store::Error) -> Self {
        if let object_store::Error::PermissionDenied { path, .. } = &source {
            return StoreError::StorageDenied { path: path.clone() };
        }
        StoreError::ObjectStore {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn io(path: impl std::fmt::Debug, source: std::io::Error) -> Self {
        StoreError::Io {
            path: format!("{path:?}").trim_matches('"').to_string(),
            source,
        }
    }

    pub(crate) fn table(name: impl ToString, message: impl ToString) -> Self {
        StoreError::Table {
            name: name.to_string(),
            message: one_line(&message.to_string()),
        }
    }

    pub(crate) fn invalid_input(name: impl ToString, reason: impl ToString) -> Self {
        StoreError::InvalidInput {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    /// True for "this object (or version) does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. } | StoreError::VersionNotFound { .. }
        )
    }
}

/// The message without a captured backtrace (delta's kernel attaches one
/// when RUST_BACKTRACE is set), on one line.
pub(crate) fn one_line(message: &str) -> String {
    let cut = ["\n   0: ", "\nStack backtrace", "\nstack backtrace"]
        .iter()
        .filter_map(|m| message.find(m))
        .min()
        .unwrap_or(message.len());
    message[..cut]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
