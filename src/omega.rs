//! [`Omega`]: the facade a user opens, and the layer that assembles the
//! parts: it registers the built-in backends and the model backend, the
//! built-in mixins and hooks, and opens one engine (a DataFusion session)
//! per identity. Buckets select namespaces; each bucket has the stores
//! `datasets`, `models` and `jobs`. It uses every layer below it.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;

pub use crate::engine::DEFAULT_BUCKET;
use crate::engine::Engine;
use crate::models::backend::ModelBackend;
use crate::runtime::{RecordWrites, Runtime, RuntimeError, RuntimeOptions, Submitter, Tasks};
use crate::sql::mixins::{Mixin, MixinRule};
use crate::sql::options::OmegaOptions;
use crate::sql::policies::{
    AccessControl, BucketIsolationMixin, ColumnMaskMixin, ContractHook, Policies, PolicyCache,
    RowFilterMixin,
};
use crate::sql::{SessionParts, SqlEngine, SqlError, open_engine};
use crate::store::error::{Result, StoreError};
use crate::store::{
    BackendRegistry, DataBackend, Hooks, Root, Store, WriteHook, list_buckets, validate_bucket,
};

/// An open omegastore: one engine (session) and the parts it shares with
/// the other sessions of the same store. Cloning is cheap; the session is
/// freed when the last clone (and every `bucket(..)` copy) is dropped.
#[derive(Clone)]
pub struct Omega {
    engine: Engine,
    parts: SessionParts,
    /// The task runtime of this store in this process, shared by every
    /// session derived from this one; started on first use.
    runtime: Arc<tokio::sync::OnceCell<Runtime>>,
}

impl std::fmt::Debug for Omega {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Omega")
            .field("root", &self.root().url().as_str())
            .field("bucket", &self.bucket_name())
            .finish()
    }
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
        // The reachability check is the bucket listing the policies need
        // first: one request does both.
        let buckets = list_buckets(&root).await.map_err(|e| match e {
            StoreError::ObjectStore { source, .. } => StoreError::object_store(root.url(), source),
            other => other,
        })?;
        let mut backends = crate::backends::builtin();
        backends.push(Arc::new(ModelBackend));
        let registry = Arc::new(BackendRegistry::with_backends(backends));
        let hooks = Arc::new(Hooks::default());
        let policies = PolicyCache::new(root.clone());
        policies.seed_buckets(buckets);
        let mixins = Arc::new(MixinRule::default());
        mixins.register(Arc::new(BucketIsolationMixin::new(policies.clone())));
        mixins.register(Arc::new(RowFilterMixin::new(policies.clone())));
        mixins.register(Arc::new(ColumnMaskMixin::new(policies.clone())));
        hooks.add_read(policies.clone());
        hooks.add_access(Arc::new(AccessControl::new(policies.clone())));
        hooks.add_write(Arc::new(ContractHook::new(policies.clone())));
        hooks.add_write(Arc::new(RecordWrites));
        let parts = SessionParts {
            root,
            registry,
            hooks,
            mixins,
            policies,
            system_tables: Default::default(),
            memory_cache: Default::default(),
            planner: None,
            options: Vec::new(),
            query_memory: None,
        };
        crate::sql::cache_table::register(&parts.system_tables);
        crate::runtime::tables::register(&parts.system_tables);
        let engine = open_engine(&parts, OmegaOptions::default());
        Ok(Self {
            engine,
            parts,
            runtime: Default::default(),
        })
    }

    /// The memory cache of hot tables, shared by every session of this
    /// store in this process (off until given a budget: see
    /// [`MemoryCache`](crate::backends::memory_cache::MemoryCache)).
    pub fn memory_cache(&self) -> &Arc<crate::backends::memory_cache::MemoryCache> {
        &self.parts.memory_cache
    }

    /// The engine this `Omega` runs on (what the SQL and model layers use).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A new session on the same store, with the identity and limits given:
    /// `SET omega.*` is then refused, so mixins see exactly this identity.
    pub fn with_identity(&self, user: &str, roles: &[&str], read_only: bool) -> Result<Self> {
        let options = OmegaOptions {
            user: user.to_string(),
            roles: roles.join(","),
            read_only,
            locked: true,
            owner: false,
            ..Default::default()
        };
        self.with_options(options, self.bucket_name())
    }

    /// The session an API key grants: its role, bound to its bucket, with
    /// a fixed identity (the key's name as user). Anything but a valid,
    /// live key is [`KeyError::Unauthenticated`](crate::store::keys::KeyError).
    pub async fn for_key(&self, key: &str) -> Result<Self, crate::store::keys::KeyError> {
        let record = crate::store::keys::Keys::new(self.root().clone())
            .verify(key)
            .await?;
        Ok(self.for_key_record(&record)?)
    }

    /// The session of a key already verified (what a server that verified
    /// the key on this request uses, instead of verifying it again).
    pub fn for_key_record(&self, record: &crate::store::keys::KeyRecord) -> Result<Self> {
        self.with_identity(&record.name, &[record.role.as_str()], false)?
            .bucket(&record.bucket)?
            .bound_to_bucket(&record.bucket)
    }

    /// A read-only session on the same store (writes fail with a clear error).
    pub fn read_only(&self) -> Result<Self> {
        self.read_only_like(true)
    }

    /// A session that may read only `bucket` (bucket isolation).
    pub fn bound_to_bucket(&self, bucket: &str) -> Result<Self> {
        validate_bucket(bucket)?;
        // same identity, fixed from now on; the session opens bound, so
        // bare names are of `bucket` (see sql::session)
        let options = OmegaOptions {
            locked: true,
            bound_bucket: bucket.to_string(),
            ..self.options()
        };
        self.with_options(options, bucket)
    }

    fn read_only_like(&self, read_only: bool) -> Result<Self> {
        // same identity (an owner stays the owner), fixed from now on
        let options = OmegaOptions {
            read_only: read_only || self.options().read_only,
            locked: true,
            ..self.options()
        };
        self.with_options(options, self.bucket_name())
    }

    /// A new session of this store with `options`, on `bucket`.
    fn with_options(&self, options: OmegaOptions, bucket: &str) -> Result<Self> {
        let engine = open_engine(&self.parts, options).bucket(bucket)?;
        Ok(Self {
            engine,
            parts: self.parts.clone(),
            runtime: self.runtime.clone(),
        })
    }

    /// A new session with this one's identity, limits and bucket, and
    /// nothing else of its state: what a statement `SET`s or `PREPARE`s in
    /// it dies with it. A server runs each request's script in one, so that
    /// one request's settings never reach the other requests of its key.
    pub fn private_session(&self) -> Result<Self> {
        self.with_options(self.options(), self.bucket_name())
    }

    /// The same session, with its queries' file scans run on the Ballista
    /// cluster at `url` (`df://HOST:PORT`, started with `om cluster`).
    /// Queries are still planned here, with this session's identity: mixins
    /// rewrite the plan before any part of it is sent, and table and model
    /// versions are pinned here. Every session derived from the returned one
    /// (`with_identity`, `bucket`, …) uses the cluster too. Fails with
    /// [`ClusterError::Unreachable`](crate::cluster::ClusterError) when the
    /// scheduler does not answer within
    /// [`CONNECT_TIMEOUT`](crate::cluster::CONNECT_TIMEOUT).
    pub async fn with_cluster(&self, url: &str) -> Result<Self, crate::cluster::ClusterError> {
        let scheduler = crate::cluster::connect(url, crate::cluster::CONNECT_TIMEOUT).await?;
        let mut parts = self.parts.clone();
        parts.planner = Some(crate::cluster::planner(
            crate::sql::session::local_planner(),
            scheduler,
            &parts.root,
        ));
        parts.options.extend(
            crate::cluster::SESSION_OPTIONS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let engine = open_engine(&parts, self.options()).bucket(self.bucket_name())?;
        Ok(Self {
            engine,
            parts,
            runtime: self.runtime.clone(),
        })
    }

    /// The same session, with every query of it and of the sessions derived
    /// from it (`with_identity`, `bucket`, a server's requests, …) drawing
    /// on one pool of `limit` bytes: past it, sorts and grouped aggregates
    /// spill to temporary files, and a query that cannot spill fails with
    /// [`SqlError::Memory`] instead of taking the process's memory. `None`
    /// lifts the limit (the default).
    pub fn with_memory_limit(&self, limit: Option<usize>) -> Result<Self, SqlError> {
        let mut parts = self.parts.clone();
        parts.query_memory = limit
            .map(crate::sql::query_memory::QueryMemory::new)
            .transpose()?;
        let engine = open_engine(&parts, self.options()).bucket(self.bucket_name())?;
        Ok(Self {
            engine,
            parts,
            runtime: self.runtime.clone(),
        })
    }

    /// The query memory limit in bytes, if one is set.
    pub fn memory_limit(&self) -> Option<usize> {
        self.parts.query_memory.as_ref().map(|m| m.limit())
    }

    /// The models of the store at `root` as a cluster executor loads them:
    /// the versions `predict()` calls were pinned to, each loaded once.
    pub fn executor_models(root: Root) -> std::io::Result<crate::cluster::StoreModels> {
        crate::cluster::StoreModels::new(Arc::new(move |r: crate::cluster::ModelRef| {
            let root = root.clone();
            Box::pin(async move {
                let om = Omega::open_root(root)
                    .await
                    .and_then(|om| om.bucket(&r.bucket))
                    .map_err(|e| e.to_string())?;
                om.models()
                    .load(&format!("{}@{}", r.name, r.version))
                    .await
                    .map_err(|e| e.to_string())
            })
        }))
    }

    /// The session's omegastore options (identity, limits).
    pub fn options(&self) -> OmegaOptions {
        self.engine.options()
    }

    /// The same store, in another bucket (namespace).
    pub fn bucket(&self, bucket: &str) -> Result<Self> {
        Ok(Self {
            engine: self.engine.bucket(bucket)?,
            parts: self.parts.clone(),
            runtime: self.runtime.clone(),
        })
    }

    pub fn bucket_name(&self) -> &str {
        self.engine.bucket_name()
    }

    pub fn root(&self) -> &Root {
        self.engine.root()
    }

    /// The DataFusion session every read runs in.
    pub fn session(&self) -> &SessionContext {
        self.engine.session()
    }

    /// The store for `prefix` (`datasets`, `models`, `jobs`, or another).
    pub fn store(&self, prefix: &str) -> Result<Store> {
        self.engine.store(prefix)
    }

    pub fn datasets(&self) -> Store {
        self.engine.datasets()
    }

    /// The model verbs (fit, predict, score, search) over the `models` store.
    pub fn models(&self) -> crate::models::Models {
        self.engine.models()
    }

    pub fn jobs(&self) -> Store {
        self.store("jobs").expect("static prefix")
    }

    /// The policies (row filters, masks, contracts, isolation) of this bucket.
    pub fn policies(&self) -> Policies {
        self.engine.policies()
    }

    /// Registers a backend for every store of this `Omega`; it is asked before
    /// the built-in backends.
    pub fn register_backend(&self, backend: Arc<dyn DataBackend>) {
        self.parts.registry.register(backend);
    }

    /// Registers a read mixin; it runs after the built-in ones, on every read.
    pub fn register_mixin(&self, mixin: Arc<dyn Mixin>) {
        self.parts.mixins.register(mixin);
    }

    /// Registers a write hook; it sees the plan of every table write.
    pub fn register_write_hook(&self, hook: Arc<dyn WriteHook>) {
        self.parts.hooks.add_write(hook);
    }

    pub fn registry(&self) -> &BackendRegistry {
        &self.parts.registry
    }

    /// The task runtime as this session's identity uses it: background
    /// tasks, jobs and schedules. Started on first use with the default
    /// options (see [`Omega::start_runtime`]).
    pub async fn runtime(&self) -> std::result::Result<Tasks, RuntimeError> {
        self.start_runtime(RuntimeOptions::default()).await
    }

    /// Starts the runtime with `opts` (workers, timeout, lease, clock), or
    /// returns the one already started (its options stay).
    pub async fn start_runtime(
        &self,
        opts: RuntimeOptions,
    ) -> std::result::Result<Tasks, RuntimeError> {
        let parts = self.parts.clone();
        let rt = self
            .runtime
            .get_or_try_init(|| async move {
                let root = parts.root.clone();
                let engine_for = Arc::new(move |s: &Submitter| {
                    let options = OmegaOptions {
                        user: s.user.clone(),
                        roles: s.roles.join(","),
                        bound_bucket: s.bound_bucket.clone(),
                        read_only: s.read_only,
                        locked: true,
                        owner: s.owner,
                        ..Default::default()
                    };
                    open_engine(&parts, options).bucket(&s.bucket)
                });
                Runtime::start(root, engine_for, opts).await
            })
            .await?;
        Ok(Tasks::new(rt.clone(), self.engine.clone()))
    }

    /// Table `name` of this bucket as a lazy frame, exactly as SQL reads it
    /// (grants, row filters, masks and hidden columns applied).
    pub async fn table(&self, name: &str) -> Result<DataFrame, SqlError> {
        crate::sql::execute::read_table(&self.engine, name).await
    }

    /// [`Omega::table`] of dataset `name` whose record `meta` the caller
    /// has just read (`datasets().metadata(name)`), without reading it
    /// again; access is checked as for `table`.
    pub async fn table_with_record(
        &self,
        name: &str,
        meta: crate::Metadata,
    ) -> Result<DataFrame, SqlError> {
        crate::sql::catalog::with_record(
            name,
            meta,
            crate::sql::execute::read_table(&self.engine, name),
        )
        .await
    }

    /// Runs SQL (one or more statements) and returns the last statement's
    /// result as a lazy DataFusion frame.
    pub async fn sql(&self, query: &str) -> Result<DataFrame, SqlError> {
        crate::sql::execute::run(&self.engine, query, &[]).await
    }

    /// Runs SQL with `$1, $2, …` bound to `params` (values are never spliced
    /// into the SQL text).
    pub async fn sql_with_params(
        &self,
        query: &str,
        params: &[ScalarValue],
    ) -> Result<DataFrame, SqlError> {
        crate::sql::execute::run(&self.engine, query, params).await
    }
}
