//! # omegastore
//!
//! An embeddable, Arrow-native store for datasets and models, after omegaml:
//! named objects with a [`Metadata`] record per version, kind-specific
//! backends, and one DataFusion engine over every table.
//!
//! ```no_run
//! use omegastore::{Omega, PutOptions};
//! # async fn demo(batch: arrow::record_batch::RecordBatch) -> omegastore::Result<()> {
//! let om = Omega::open("./.omega").await?;
//! om.datasets().put(batch, "sales", PutOptions::default()).await?;
//! let rows = om.datasets().get_batches("sales@1", Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Layers, each a module that uses only the ones below it (checked by
//! `../shared/tools/layers.py src`):
//!
//! ```text
//! cli      the `om` command line                 bench    `om bench` workloads
//! server   `om serve`: Flight SQL and HTTP over an Omega, API keys
//! omega    Omega: assembles the parts, the facade
//! runtime  background tasks, stored SQL jobs, cron schedules
//! sql      catalog, statements, mixins, policies, predict()/evaluate()
//! models   smartcore kinds: specs, features, estimators, the model backend
//! engine   what sql and models share: root, registry, hooks, the session
//! backends table (Delta) · document · file · external · view
//! store    names, Metadata, commits, the backend contract, registry, Store
//! ```

pub mod backends;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod models;
pub mod omega;
pub mod runtime;
pub mod sample;
pub mod server;
pub mod sql;
pub mod store;

pub use engine::Engine;
pub use models::{ModelError, ModelSpec, Models, TrainingData};
pub use omega::{DEFAULT_BUCKET, Omega};
pub use sql::{Mixin, MixinContext, SqlError};
pub use store::{
    BackendContext, Data, DataBackend, ExternalFormat, FileFormat, GetOptions, ListOptions,
    Metadata, NameRef, Object, ObjectName, PutMode, PutOptions, Store, StoreError, TableChange,
    Written,
};

/// Result of the store layer.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
