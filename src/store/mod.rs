//! The store layer: names, metadata records and their commits, the backend
//! registry, and [`Store`], the one implementation behind `datasets`,
//! `models` and `jobs`. Nothing here knows SQL.

pub mod catalog;
pub(crate) mod delta_s3;
pub mod error;
pub mod metadata;
pub mod name;
pub mod objects;
pub mod registry;
pub mod root;

pub use catalog::Catalog;
pub use error::{Result, StoreError};
pub use metadata::Metadata;
pub use name::{NameRef, ObjectName, VersionSpec};
pub use objects::{ListOptions, Store};
pub use registry::BackendRegistry;
pub use root::Root;
