//! The DataFusion session of an engine, built by the SQL layer: the `omega`
//! catalog, the mixin rule, `predict()`/`evaluate()`, the omegastore options,
//! and the query runner that lets lower layers run SQL. [`SqlEngine`] adds the
//! SQL layer's views of an engine (options, policies, models).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::{QueryPlanner, SessionContext};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::optimizer::{Analyzer, AnalyzerRule};
use datafusion::prelude::SessionConfig;

use super::SqlError;
use super::catalog::OmegaCatalog;
use super::decimal_multiply::NarrowDecimalMultiply;
use super::mixins::MixinRule;
use super::model_functions::{EvaluateFunction, ModelCache, PredictUdf};
use super::options::OmegaOptions;
use super::policies::{POLICY_STORE, Policies, PolicyCache, SETTINGS_STORE};
use super::shared_subplans::{OmegaPlanner, ShareRepeatedSubplans};
use crate::backends::dictionary_groups::GroupOnCodes;
use crate::backends::dynamic_filter::DynamicFilters;
use crate::backends::memory_cache::MemoryCache;
use crate::engine::{DEFAULT_BUCKET, Engine, QueryError, QueryRunner};
use crate::models::Models;
use crate::store::{BackendRegistry, CATALOG_NAME, Hooks, Root};

/// The largest estimated size of a hash join's build side that is built
/// once and shared by every partition of the probe side (`CollectLeft`)
/// instead of both sides being hash-repartitioned (DataFusion's
/// `hash_join_single_partition_threshold`, 1 MiB by default). Estimates come
/// in two currencies: a Parquet scan's is its files' compressed size, a
/// memory-cached table's its decoded batches' size, several times larger. At
/// 1 MiB a 100,000-row dimension was collected when read from Parquet but,
/// once cached, joined by repartitioning the whole fact table, and the cached
/// join ran slower than the uncached one (BENCHMARKS.md). Sessions may `SET`
/// it back.
pub const COLLECT_BUILD_SIDE_BYTES: usize = 16 << 20;

/// What every session of one store shares.
#[derive(Clone)]
pub struct SessionParts {
    pub root: Root,
    pub registry: Arc<BackendRegistry>,
    pub hooks: Arc<Hooks>,
    pub mixins: Arc<MixinRule>,
    pub policies: Arc<PolicyCache>,
    /// `omega.system.*` tables of the layers above.
    pub system_tables: Arc<super::system::SystemTables>,
    /// Hot tables' batches, held for every session of the store.
    pub memory_cache: Arc<MemoryCache>,
    /// The query planner of the sessions (a cluster's); omegastore's
    /// ([`local_planner`]) when `None`.
    pub planner: Option<Arc<dyn QueryPlanner + Send + Sync>>,
    /// DataFusion options every session sets (`key`, `value`), after the
    /// defaults (a cluster turns off what its plans cannot carry).
    pub options: Vec<(String, String)>,
    /// The memory limit all sessions' queries share; none when `None`.
    pub query_memory: Option<super::query_memory::QueryMemory>,
}

/// The planner of a session that runs everything in this process:
/// DataFusion's with Delta's nodes (Delta writes plan their own) and shared
/// subplans.
pub fn local_planner() -> Arc<dyn QueryPlanner + Send + Sync> {
    Arc::new(OmegaPlanner)
}

/// A new engine (one DataFusion session) over `parts` with `options`.
pub fn open_engine(parts: &SessionParts, options: OmegaOptions) -> Engine {
    let session = new_session(parts, options);
    let engine = Engine::new(
        parts.root.clone(),
        parts.registry.clone(),
        parts.hooks.clone(),
        session,
        Some(Arc::new(SqlRunner)),
    );
    // The catalog lives in the session the engine owns: it holds the engine weakly.
    engine.session().register_catalog(
        CATALOG_NAME,
        Arc::new(OmegaCatalog::new(engine.downgrade())),
    );
    engine
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

/// information_schema on, Delta's query planner (Delta writes plan their
/// own nodes), the omegastore options, the policy and model caches as
/// session extensions, and the mixin rule ahead of DataFusion's analyzer
/// rules (so the expressions it adds are type-checked like the user's).
fn new_session(parts: &SessionParts, options: OmegaOptions) -> SessionContext {
    let models = Arc::new(ModelCache::default());
    // a session bound to a bucket names its tables there: bare names, also
    // of the frames the engine builds itself (a statement's count, a
    // write's input), are of that bucket, which isolation lets through
    let bucket = match options.bound_bucket.as_str() {
        "" => DEFAULT_BUCKET,
        bound => bound,
    };
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG_NAME, bucket)
        .with_option_extension(options)
        .with_option_extension(crate::backends::scan_options::ScanOptions::default())
        .with_option_extension(super::options::ExecOptions::default())
        .with_extension(parts.policies.clone())
        .with_extension(parts.system_tables.clone())
        .with_extension(parts.memory_cache.clone())
        .with_extension(models.clone());
    // Filters run over the decoded batches (a FilterExec above the scan),
    // not inside the Parquet decoder: the decoder's row selections cost more
    // than the rows they spare (TPC-H sf1 sum of medians 5.09 -> 4.06 s, q06
    // 0.27 -> 0.09 s, only q18 slower; BENCHMARKS.md, 2026-12-03). The scan
    // still prunes files, row groups and pages by statistics, page index and
    // bloom filters. Cheapest filters first where pushdown is turned on.
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.pushdown_filters = false;
    parquet.reorder_filters = true;
    config
        .options_mut()
        .optimizer
        .hash_join_single_partition_threshold = COLLECT_BUILD_SIDE_BYTES;
    for (k, v) in &parts.options {
        if let Err(e) = config.options_mut().set(k, v) {
            tracing::warn!("session option {k} = {v} ignored: {e}");
        }
    }
    let mut rules: Vec<Arc<dyn AnalyzerRule + Send + Sync>> =
        vec![Arc::new(SharedMixinRule(parts.mixins.clone()))];
    rules.extend(Analyzer::new().rules);
    rules.push(Arc::new(super::model_functions::PinModels));
    let mut builder = SessionStateBuilder::new();
    if let Some(memory) = &parts.query_memory {
        match memory.runtime_env() {
            Ok(env) => builder = builder.with_runtime_env(env),
            // building a runtime around an existing pool and spill
            // directory does no I/O; should it fail, say so loudly
            Err(e) => tracing::error!("this session runs without the query memory limit: {e}"),
        }
    }
    let state = builder
        .with_default_features()
        .with_config(config)
        .with_analyzer_rules(rules)
        .with_optimizer_rule(Arc::new(ShareRepeatedSubplans))
        .with_physical_optimizer_rule(Arc::new(DynamicFilters))
        .with_physical_optimizer_rule(Arc::new(NarrowDecimalMultiply))
        .with_physical_optimizer_rule(Arc::new(GroupOnCodes))
        .with_query_planner(parts.planner.clone().unwrap_or_else(local_planner))
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
        .register_object_store(&parts.root.base, parts.root.object_store());
    session
}

/// Runs queries for the layers below (a model fitted or evaluated on
/// `SELECT …`): exactly one query, nothing else.
struct SqlRunner;

#[async_trait]
impl QueryRunner for SqlRunner {
    async fn query(&self, engine: &Engine, sql: &str) -> Result<DataFrame, QueryError> {
        super::execute::run_select(engine, sql)
            .await
            .map_err(|e| match e {
                SqlError::Store(s) => Box::new(s) as QueryError,
                other => Box::new(other) as QueryError,
            })
    }
}

/// The SQL layer's view of an engine.
pub trait SqlEngine {
    /// The session's omegastore options (identity, limits).
    fn options(&self) -> OmegaOptions;
    /// The policies (row filters, masks, contracts, isolation) of the engine's bucket.
    fn policies(&self) -> Policies;
    /// The policies of every bucket as this session last loaded them.
    fn policy_cache(&self) -> Arc<PolicyCache>;
    /// The model verbs of the engine's bucket.
    fn models(&self) -> Models;
    /// Models loaded for the statements of this session.
    fn model_cache(&self) -> Arc<ModelCache>;
}

impl SqlEngine for Engine {
    fn options(&self) -> OmegaOptions {
        options_of(self.session())
    }

    fn policy_cache(&self) -> Arc<PolicyCache> {
        self.session()
            .state_ref()
            .read()
            .config()
            .get_extension::<PolicyCache>()
            .unwrap_or_else(|| PolicyCache::new(self.root().clone()))
    }

    fn policies(&self) -> Policies {
        let cache = self.policy_cache();
        Policies::new(
            self.store(POLICY_STORE).expect("static prefix"),
            self.store(SETTINGS_STORE).expect("static prefix"),
            cache,
        )
    }

    fn models(&self) -> Models {
        Models::new(self)
    }

    fn model_cache(&self) -> Arc<ModelCache> {
        self.session()
            .state_ref()
            .read()
            .config()
            .get_extension::<ModelCache>()
            .unwrap_or_default()
    }
}

/// The omegastore options of `session`.
pub fn options_of(session: &SessionContext) -> OmegaOptions {
    session
        .state_ref()
        .read()
        .config()
        .options()
        .extensions
        .get::<OmegaOptions>()
        .cloned()
        .unwrap_or_default()
}
