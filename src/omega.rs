//! [`Omega`]: the facade a user opens. One root, one DataFusion session, one
//! backend registry, one set of hooks and mixins; buckets select namespaces
//! and each bucket has the stores `datasets`, `models` and `jobs`.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::optimizer::{Analyzer, AnalyzerRule};
use datafusion::prelude::SessionConfig;

use crate::backends::DataBackend;
use crate::sql::SqlError;
use crate::sql::catalog::OmegaCatalog;
use crate::sql::mixins::{Mixin, MixinRule};
use crate::sql::model_functions::{EvaluateFunction, ModelCache, PredictUdf};
use crate::sql::options::OmegaOptions;
use crate::sql::policies::{
    BucketIsolationMixin, ColumnMaskMixin, ContractHook, POLICY_STORE, Policies, PolicyCache,
    RowFilterMixin,
};
use crate::store::error::{Result, StoreError};
use crate::store::{BackendRegistry, CATALOG_NAME, Catalog, Hooks, Root, Store, WriteHook};
use datafusion::logical_expr::ScalarUDF;

/// The bucket used unless another is chosen.
pub const DEFAULT_BUCKET: &str = "default";

/// An open omegastore.
#[derive(Clone)]
pub struct Omega {
    root: Root,
    bucket: String,
    registry: Arc<BackendRegistry>,
    session: SessionContext,
    hooks: Arc<Hooks>,
    mixins: Arc<MixinRule>,
    policies: Arc<PolicyCache>,
    model_cache: Arc<ModelCache>,
}

impl std::fmt::Debug for Omega {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Omega")
            .field("root", &self.root.url().as_str())
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// The analyzer rule that lets the mixin set be registered once per session.
#[derive(Debug)]
struct SharedMixinRule(Arc<MixinRule>);

impl AnalyzerRule for SharedMixinRule {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        config: &datafusion::common::config::ConfigOptions,
    ) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
        self.0.analyze(plan, config)
    }
    fn name(&self) -> &str {
        self.0.name()
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
        root.check().await?;
        let hooks = Arc::new(Hooks::default());
        let policies = Arc::new(PolicyCache::default());
        let mixins = Arc::new(MixinRule::default());
        mixins.register(Arc::new(BucketIsolationMixin::new(policies.clone())));
        mixins.register(Arc::new(RowFilterMixin::new(policies.clone())));
        mixins.register(Arc::new(ColumnMaskMixin::new(policies.clone())));
        hooks.add_read(policies.clone());
        hooks.add_write(Arc::new(ContractHook::new(policies.clone())));
        Self::assemble(
            root,
            Arc::new(BackendRegistry::default()),
            hooks,
            mixins,
            policies,
            OmegaOptions::default(),
        )
    }

    /// Builds the session and catalog around shared parts.
    fn assemble(
        root: Root,
        registry: Arc<BackendRegistry>,
        hooks: Arc<Hooks>,
        mixins: Arc<MixinRule>,
        policies: Arc<PolicyCache>,
        options: OmegaOptions,
    ) -> Result<Self> {
        let model_cache = Arc::new(ModelCache::default());
        let session = new_session(&root, mixins.clone(), options, model_cache.clone());
        policies.attach(root.clone(), session.clone());
        let omega = Self {
            root,
            bucket: DEFAULT_BUCKET.to_string(),
            registry,
            session,
            hooks,
            mixins,
            policies,
            model_cache,
        };
        // The catalog reads through an Omega sharing this session (a
        // reference cycle: the session lives as long as the process uses it).
        let catalog = Arc::new(OmegaCatalog::new(omega.clone()));
        omega.session.register_catalog(CATALOG_NAME, catalog);
        Ok(omega)
    }

    /// A new session on the same store, with the identity and limits given:
    /// `SET omega.*` is then refused, so mixins see exactly this identity.
    pub fn with_identity(&self, user: &str, roles: &[&str], read_only: bool) -> Result<Self> {
        let options = OmegaOptions {
            user: user.to_string(),
            roles: roles.join(","),
            read_only,
            locked: true,
            ..Default::default()
        };
        let mut om = Self::assemble(
            self.root.clone(),
            self.registry.clone(),
            self.hooks.clone(),
            self.mixins.clone(),
            self.policies.clone(),
            options,
        )?;
        om.bucket = self.bucket.clone();
        Ok(om)
    }

    /// A read-only session on the same store (writes fail with a clear error).
    pub fn read_only(&self) -> Result<Self> {
        let o = self.options();
        let roles: Vec<&str> = o.roles.split(',').filter(|r| !r.is_empty()).collect();
        self.with_identity(&o.user, &roles, true)
    }

    /// A session that may read only `bucket` (bucket isolation).
    pub fn bound_to_bucket(&self, bucket: &str) -> Result<Self> {
        validate_bucket(bucket)?;
        let mut om = self.read_only_like(false)?;
        if let Some(o) = om
            .session
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .extensions
            .get_mut::<OmegaOptions>()
        {
            o.bound_bucket = bucket.to_string();
        }
        om.bucket = bucket.to_string();
        Ok(om)
    }

    fn read_only_like(&self, read_only: bool) -> Result<Self> {
        let o = self.options();
        let roles: Vec<&str> = o.roles.split(',').filter(|r| !r.is_empty()).collect();
        self.with_identity(&o.user, &roles, read_only || o.read_only)
    }

    /// The session's omegastore options (identity, limits).
    pub fn options(&self) -> OmegaOptions {
        self.session
            .state()
            .config()
            .options()
            .extensions
            .get::<OmegaOptions>()
            .cloned()
            .unwrap_or_default()
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
            self.hooks.clone(),
        ))
    }

    pub fn datasets(&self) -> Store {
        self.store("datasets").expect("static prefix")
    }

    /// The model verbs (fit, predict, score, search) over the `models` store.
    pub fn models(&self) -> crate::models::Models {
        crate::models::Models::new(self.clone(), self.store("models").expect("static prefix"))
    }

    pub fn jobs(&self) -> Store {
        self.store("jobs").expect("static prefix")
    }

    /// The policies (row filters, masks, contracts, isolation) of this bucket.
    pub fn policies(&self) -> Policies {
        Policies::new(
            self.store(POLICY_STORE).expect("static prefix"),
            self.policies.clone(),
        )
    }

    /// Registers a backend for every store of this `Omega`; it is asked before
    /// the built-in backends.
    pub fn register_backend(&self, backend: Arc<dyn DataBackend>) {
        self.registry.register(backend);
    }

    /// Registers a read mixin; it runs after the built-in ones, on every read.
    pub fn register_mixin(&self, mixin: Arc<dyn Mixin>) {
        self.mixins.register(mixin);
    }

    /// Registers a write hook; it sees the plan of every table write.
    pub fn register_write_hook(&self, hook: Arc<dyn WriteHook>) {
        self.hooks.add_write(hook);
    }

    pub fn registry(&self) -> &BackendRegistry {
        &self.registry
    }

    /// Runs SQL (one or more statements) and returns the last statement's
    /// result as a lazy DataFusion frame.
    pub async fn sql(&self, query: &str) -> Result<DataFrame, SqlError> {
        crate::sql::execute::run(self, query, &[]).await
    }

    /// Runs SQL with `$1, $2, …` bound to `params` (values are never spliced
    /// into the SQL text).
    pub async fn sql_with_params(
        &self,
        query: &str,
        params: &[ScalarValue],
    ) -> Result<DataFrame, SqlError> {
        crate::sql::execute::run(self, query, params).await
    }

    /// Models loaded for the statement being planned (see `sql::model_functions`).
    pub(crate) fn model_cache(&self) -> &ModelCache {
        &self.model_cache
    }

    /// Loads what planning needs: policies, and — only for statements that
    /// list tables (SHOW TABLES, information_schema) — the table names of
    /// the catalog, which cost a read per object. Resolving a table by
    /// name never needs the list.
    pub(crate) async fn prepare_sql(&self, sql: &str) -> Result<()> {
        self.hooks.prepare_read().await?;
        let lower = sql.to_ascii_lowercase();
        if !(lower.contains("information_schema") || lower.contains("show ")) {
            return Ok(());
        }
        let catalog = self.session.catalog(CATALOG_NAME);
        match catalog
            .as_ref()
            .and_then(|c| c.downcast_ref::<OmegaCatalog>())
        {
            Some(c) => c.refresh().await,
            None => Ok(()),
        }
    }
}

/// The DataFusion session of an `Omega`: information_schema on, Delta's
/// query planner (Delta writes plan their own nodes), the omegastore options,
/// and the mixin rule ahead of DataFusion's analyzer rules (so the
/// expressions it adds are type-checked like the user's).
fn new_session(
    root: &Root,
    mixins: Arc<MixinRule>,
    options: OmegaOptions,
    models: Arc<ModelCache>,
) -> SessionContext {
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_BUCKET)
        .with_option_extension(options);
    let mut rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> =
        vec![Arc::new(SharedMixinRule(mixins))];
    rules.extend(Analyzer::new().rules);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_analyzer_rules(rules)
        .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
        .build();
    let session = SessionContext::new_with_state(state);
    session.register_udf(ScalarUDF::new_from_impl(PredictUdf::new(
        false,
        models.clone(),
    )));
    session.register_udf(ScalarUDF::new_from_impl(PredictUdf::new(
        true,
        models.clone(),
    )));
    session.register_udtf("evaluate", Arc::new(EvaluateFunction::new(models)));
    // Lets DataFusion read the root's own URLs (external tables on the same store).
    session
        .runtime_env()
        .register_object_store(&root.base, root.object_store());
    session
}

/// Buckets that exist under a root (directories with a valid bucket name).
pub(crate) async fn list_buckets(root: &Root) -> Result<Vec<String>> {
    let listed = root
        .store
        .list_with_delimiter(Some(&root.prefix))
        .await
        .map_err(|e| StoreError::object_store(&root.prefix, e))?;
    let mut out: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename())
        .filter(|b| validate_bucket(b).is_ok())
        .map(str::to_string)
        .collect();
    out.sort();
    Ok(out)
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
