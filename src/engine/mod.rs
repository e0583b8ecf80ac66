//! The engine layer: what `sql` and `models` share, held once per session:
//! the root, the backend registry, the hooks, the DataFusion session, and a
//! way to run a query. It uses `store` (and the libraries below); the SQL
//! layer builds the session and plugs itself in through [`QueryRunner`].
//!
//! Ownership: an [`Engine`] is a cheap handle (an `Arc` and a bucket name).
//! Whatever the session itself holds (the `omega` catalog, caches) refers back
//! to the engine only through a [`WeakEngine`], so dropping the last handle
//! frees the session, its catalog and its caches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::store::error::{Result, StoreError};
use crate::store::{BackendRegistry, Catalog, Hooks, Root, Store, validate_bucket};

/// The bucket used unless another is chosen.
pub const DEFAULT_BUCKET: &str = "default";

/// An error of a query run through a [`QueryRunner`]; a [`StoreError`]
/// stays downcastable so callers keep its type.
pub type QueryError = Box<dyn std::error::Error + Send + Sync>;

/// Runs SQL for layers below the SQL layer (a model fitted on a query).
/// Implemented by the SQL layer; it must hold no engine (it gets one per call).
#[async_trait]
pub trait QueryRunner: Send + Sync {
    async fn query(&self, engine: &Engine, sql: &str)
    -> std::result::Result<DataFrame, QueryError>;
}

/// Engines alive in this process (see [`Engine::live`]).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The state of one session.
struct Shared {
    root: Root,
    registry: Arc<BackendRegistry>,
    hooks: Arc<Hooks>,
    session: SessionContext,
    queries: Option<Arc<dyn QueryRunner>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One session over a root, seen from one bucket.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    bucket: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.shared.root.url().as_str())
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl Engine {
    /// An engine over `session`, in the default bucket.
    pub fn new(
        root: Root,
        registry: Arc<BackendRegistry>,
        hooks: Arc<Hooks>,
        session: SessionContext,
        queries: Option<Arc<dyn QueryRunner>>,
    ) -> Self {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Engine {
            shared: Arc::new(Shared {
                root,
                registry,
                hooks,
                session,
                queries,
            }),
            bucket: DEFAULT_BUCKET.to_string(),
        }
    }

    /// How many sessions (engines and the `Omega`s around them) are alive in
    /// this process: each `open` or `with_identity` adds one, dropping its
    /// last handle removes it.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    /// The same session, in another bucket (namespace).
    pub fn bucket(&self, bucket: &str) -> Result<Self> {
        validate_bucket(bucket)?;
        Ok(Engine {
            shared: self.shared.clone(),
            bucket: bucket.to_string(),
        })
    }

    pub fn bucket_name(&self) -> &str {
        &self.bucket
    }

    pub fn root(&self) -> &Root {
        &self.shared.root
    }

    /// The DataFusion session every read runs in.
    pub fn session(&self) -> &SessionContext {
        &self.shared.session
    }

    pub fn registry(&self) -> &Arc<BackendRegistry> {
        &self.shared.registry
    }

    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.shared.hooks
    }

    /// The store for `prefix` (`datasets`, `models`, `jobs`, or another).
    pub fn store(&self, prefix: &str) -> Result<Store> {
        validate_bucket(prefix).map_err(|_| StoreError::InvalidName {
            name: prefix.to_string(),
            reason: "a store prefix is 1-63 lowercase letters, digits, '-' or '_'".into(),
        })?;
        Ok(Store::new(
            Catalog::new(self.shared.root.clone(), &self.bucket, prefix),
            self.shared.registry.clone(),
            self.shared.session.clone(),
            self.shared.hooks.clone(),
        ))
    }

    pub fn datasets(&self) -> Store {
        self.store("datasets").expect("static prefix")
    }

    /// Runs `sql` through the SQL layer (with its mixins and statements).
    pub async fn query(&self, sql: &str) -> std::result::Result<DataFrame, QueryError> {
        match &self.shared.queries {
            Some(q) => q.query(self, sql).await,
            None => Err("this engine has no SQL layer; open the store with Omega::open".into()),
        }
    }

    /// A handle that does not keep the session alive.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            shared: Arc::downgrade(&self.shared),
            bucket: self.bucket.clone(),
        }
    }
}

/// A non-owning [`Engine`] handle, for what the session itself holds.
#[derive(Clone)]
pub struct WeakEngine {
    shared: Weak<Shared>,
    bucket: String,
}

impl std::fmt::Debug for WeakEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakEngine")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl WeakEngine {
    pub fn bucket_name(&self) -> &str {
        &self.bucket
    }

    /// The engine, unless its last handle was dropped.
    pub fn upgrade(&self) -> Option<Engine> {
        Some(Engine {
            shared: self.shared.upgrade()?,
            bucket: self.bucket.clone(),
        })
    }

    /// The engine, or an error saying its session is gone.
    pub fn engine(&self) -> Result<Engine> {
        self.upgrade().ok_or_else(|| {
            StoreError::invalid_input(
                "<session>",
                "the Omega this query belonged to was dropped; run queries while it is open",
            )
        })
    }

    /// The same session, in another bucket.
    pub fn bucket(&self, bucket: &str) -> Result<Self> {
        validate_bucket(bucket)?;
        Ok(WeakEngine {
            shared: self.shared.clone(),
            bucket: bucket.to_string(),
        })
    }
}
