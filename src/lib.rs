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
//! Layers (arrows point down): [`cli`] → [`Omega`] → [`sql`] / [`models`] → [`store`] → [`backends`].

pub mod backends;
pub mod bench;
pub mod cli;
pub mod models;
pub mod omega;
pub mod sample;
pub mod sql;
pub mod store;

pub use backends::{
    Data, DataBackend, ExternalFormat, FileFormat, GetOptions, Object, PutMode, PutOptions,
};
pub use models::{ModelError, ModelSpec, Models, TrainingData};
pub use omega::{DEFAULT_BUCKET, Omega};
pub use sql::{Mixin, MixinContext, SqlError};
pub use store::{ListOptions, Metadata, NameRef, ObjectName, Store, StoreError};

/// Result of the store layer.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
