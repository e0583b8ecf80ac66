//! The store layer: names, metadata records and their commits, the backend
//! contract and registry, buckets of a root, and [`Store`], the one
//! implementation behind `datasets`, `models` and `jobs`. This layer uses
//! only the libraries below it (object_store, arrow, DataFusion's types);
//! it never names a concrete backend or anything of SQL.

pub mod access_mark;
pub mod backend;
pub mod bucket;
pub mod catalog;
pub(crate) mod change_journal;
pub(crate) mod delta_s3;
pub mod durable;
pub mod error;
pub mod failpoint;
pub mod fresh;
pub mod gc;
pub mod hooks;
#[cfg(unix)]
mod inline_reads;
pub mod keys;
pub mod listing_index;
#[cfg(unix)]
mod mapped;
pub mod metadata;
pub mod name;
pub mod objects;
pub mod registry;
pub mod request_count;
pub mod root;

/// The DataFusion catalog name under which every table dataset is scanned:
/// `omega.<bucket>.<name>`.
pub const CATALOG_NAME: &str = "omega";

pub use backend::{
    BackendContext, Data, DataBackend, ExternalFormat, FileFormat, GetOptions, Object, PutMode,
    PutOptions, TableChange, Written,
};
pub use bucket::{list_buckets, validate_bucket};
pub use catalog::Catalog;
pub use error::{Result, StoreError};
pub use gc::{GcOptions, GcReport, VacuumReport};
pub use hooks::{Access, AccessHook, Hooks, ReadHook, WriteHook, WriteTarget};
pub use metadata::Metadata;
pub use name::{NameRef, ObjectName, VersionSpec};
pub use objects::{ListOptions, Store};
pub use registry::BackendRegistry;
pub use root::Root;
