//! [`Omega`]: the facade a user opens. One root, one DataFusion session, one
//! backend registry; buckets select namespaces and each bucket has the stores
//! `datasets`, `models` and `jobs`.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;

use crate::backends::DataBackend;
use crate::store::error::{Result, StoreError};
use crate::store::{BackendRegistry, Catalog, Root, Store};

/// The bucket used unless another is chosen.
pub const DEFAULT_BUCKET: &str = "default";

/// An open omegastore.
#[derive(Clone)]
pub struct Omega {
    root: Root,
    bucket: String,
    registry: Arc<BackendRegistry>,
    session: SessionContext,
}

impl Omega {
    /// Opens the store at `url`: `file:///path` or a local path, `memory://`,
    /// or `s3://bucket/prefix` (credentials and endpoint from the usual AWS
    /// environment variables). Fails early if the location is unreachable.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_root(Root::open(url)?).await
    }

    /// Opens `$OMEGA_ROOT`, or `./.omega` when it is not set.
    pub async fn open_default() -> Result<Self> {
        Self::open_root(Root::from_env()?).await
    }

    /// Opens an already configured root (for example one whose object store
    /// is wrapped by a decorator).
    pub async fn open_root(root: Root) -> Result<Self> {
        root.check().await?;
        let session = new_session();
        // Lets DataFusion read the root's own URLs (external tables on the same store).
        session
            .runtime_env()
            .register_object_store(&root.base, root.object_store());
        Ok(Self {
            root,
            bucket: DEFAULT_BUCKET.to_string(),
            registry: Arc::new(BackendRegistry::default()),
            session,
        })
    }

    /// The same store, in another bucket (namespace).
    pub fn bucket(&self, bucket: &str) -> Result<Self> {
        validate_bucket(bucket)?;
        Ok(Self {
            bucket: bucket.to_string(),
            ..self.clone()
        })
    }

    pub fn bucket_name(&self) -> &str {
        &self.bucket
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The DataFusion session every read runs in.
    pub fn session(&self) -> &SessionContext {
        &self.session
    }

    /// The store for `prefix` (`datasets`, `models`, `jobs`, or another).
    pub fn store(&self, prefix: &str) -> Result<Store> {
        validate_bucket(prefix).map_err(|_| StoreError::InvalidName {
            name: prefix.to_string(),
            reason: "a store prefix is 1-63 lowercase letters, digits, '-' or '_'".into(),
        })?;
        Ok(Store::new(
            Catalog::new(self.root.clone(), &self.bucket, prefix),
            self.registry.clone(),
            self.session.clone(),
        ))
    }

    pub fn datasets(&self) -> Store {
        self.store("datasets").expect("static prefix")
    }

    pub fn models(&self) -> Store {
        self.store("models").expect("static prefix")
    }

    pub fn jobs(&self) -> Store {
        self.store("jobs").expect("static prefix")
    }

    /// Registers a backend for every store of this `Omega`; it is asked before
    /// the built-in backends.
    pub fn register_backend(&self, backend: Arc<dyn DataBackend>) {
        self.registry.register(backend);
    }

    pub fn registry(&self) -> &BackendRegistry {
        &self.registry
    }
}

/// The DataFusion session of an `Omega`: information_schema on, and Delta's
/// query planner, which Delta writes need to plan their own plan nodes.
fn new_session() -> SessionContext {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("omega", DEFAULT_BUCKET);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
        .build();
    SessionContext::new_with_state(state)
}

/// Bucket names: 1-63 characters of `[a-z0-9_-]`, starting with a letter or digit.
pub fn validate_bucket(bucket: &str) -> Result<()> {
    let ok = !bucket.is_empty()
        && bucket.len() <= 63
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && bucket.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: bucket.to_string(),
            reason: "a bucket is 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit".into(),
        })
    }
}
