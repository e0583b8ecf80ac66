//! Mixins: hooks that rewrite the `LogicalPlan` of every read, wired into
//! DataFusion as one analyzer rule, so they apply to SQL, to `get`/`getl`
//! and to any other front end alike (all reads scan `omega.<bucket>.<name>`).
//!
//! A mixin that fails makes the query fail with the mixin's name; there is
//! no fallback to the unrewritten plan.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::AnalyzerRule;

use super::options::OmegaOptions;
use crate::store::{CATALOG_NAME, NameRef};

/// What a mixin knows about the query it rewrites.
#[derive(Debug, Clone, Default)]
pub struct MixinContext {
    /// The session's default bucket.
    pub bucket: String,
    pub user: String,
    pub roles: Vec<String>,
    /// Set when the session may read only this bucket.
    pub bound_bucket: Option<String>,
    /// The store's owner playing no role: admin of every bucket.
    pub owner: bool,
}

impl MixinContext {
    pub fn from_config(config: &ConfigOptions) -> Self {
        let o = config
            .extensions
            .get::<OmegaOptions>()
            .cloned()
            .unwrap_or_default();
        let roles = o.role_list();
        Self {
            bucket: config.catalog.default_schema.clone(),
            user: o.user.clone(),
            owner: o.owner && roles.is_empty(),
            roles,
            bound_bucket: (!o.bound_bucket.is_empty()).then(|| o.bound_bucket.clone()),
        }
    }

    /// The context of a session's current settings.
    pub fn from_session(session: &datafusion::prelude::SessionContext) -> Self {
        Self::from_config(session.state_ref().read().config().options())
    }

    pub fn has_role(&self, role: &str) -> bool {
        role == "*" || self.roles.iter().any(|r| r == role)
    }

    /// The `(bucket, dataset name)` a table reference scans, if it is an
    /// omegastore dataset (name modifiers such as `@3` are removed).
    pub fn dataset_of(&self, table: &TableReference) -> Option<(String, String)> {
        let (catalog, schema) = match table {
            TableReference::Bare { .. } => (CATALOG_NAME, self.bucket.as_str()),
            TableReference::Partial { schema, .. } => (CATALOG_NAME, schema.as_ref()),
            TableReference::Full {
                catalog, schema, ..
            } => (catalog.as_ref(), schema.as_ref()),
        };
        if catalog != CATALOG_NAME {
            return None;
        }
        let name = NameRef::parse(table.table()).ok()?.name.to_string();
        Some((schema.to_string(), name))
    }
}

/// A rewrite of read plans.
pub trait Mixin: Send + Sync + Debug {
    /// Shown in errors and in `EXPLAIN VERBOSE`.
    fn name(&self) -> &str;
    /// Rewrites `plan`; an error fails the query.
    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> Result<LogicalPlan>;
    /// True when the rewrite always returns promptly without blocking (a
    /// walk over the plan, as omegastore's own policy mixins do): it runs
    /// on the planning thread, a panic still failing only the query. False
    /// (the default): it runs on a thread of its own, given up on after
    /// `omega.mixin_time_limit_ms`, which costs a thread start per query.
    fn inline(&self) -> bool {
        false
    }
}

/// The analyzer rule that runs every registered mixin, in order.
#[derive(Debug, Default)]
pub struct MixinRule {
    mixins: RwLock<Vec<Arc<dyn Mixin>>>,
}

impl MixinRule {
    pub fn register(&self, mixin: Arc<dyn Mixin>) {
        self.mixins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(mixin);
    }

    pub fn names(&self) -> Vec<String> {
        self.mixins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }
}

impl AnalyzerRule for MixinRule {
    fn analyze(&self, mut plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let cx = MixinContext::from_config(config);
        let limit = std::time::Duration::from_millis(
            config
                .extensions
                .get::<OmegaOptions>()
                .map_or(30_000, |o| o.mixin_time_limit_ms),
        );
        let mixins: Vec<_> = self
            .mixins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for m in mixins {
            let schema = plan.schema().clone();
            let fail =
                |why: String| DataFusionError::Plan(format!("mixin '{}' failed: {why}", m.name()));
            let rewritten = if m.inline() {
                run_caught(m.as_ref(), plan, &cx)
            } else {
                run_limited(m.clone(), plan, cx.clone(), limit)
            }
            .map_err(|e| fail(e.strip_backtrace()))?;
            // A rewrite may filter rows, mask or hide columns; a plan that
            // breaks DataFusion's invariants or returns columns the query
            // never had is a broken mixin.
            rewritten
                .check_invariants(datafusion::logical_expr::InvariantLevel::Always)
                .map_err(|e| {
                    fail(format!(
                        "it returned an invalid plan: {}",
                        e.strip_backtrace()
                    ))
                })?;
            if !only_known_columns(rewritten.schema(), &schema) {
                return Err(fail(format!(
                    "it returned a plan with columns {:?}, the query has {:?}",
                    rewritten.schema().field_names(),
                    schema.field_names()
                )));
            }
            plan = rewritten;
        }
        Ok(plan)
    }

    fn name(&self) -> &str {
        "omega_mixins"
    }
}

/// Whether `rewritten` returns only columns the query had (a mask may
/// hide a column or change its type; it may not add one).
fn only_known_columns(
    rewritten: &datafusion::common::DFSchema,
    original: &datafusion::common::DFSchema,
) -> bool {
    rewritten
        .fields()
        .iter()
        .all(|f| original.fields().iter().any(|o| o.name() == f.name()))
}

/// Runs one mixin's rewrite; a panic becomes the query's error.
fn run_caught(mixin: &dyn Mixin, plan: LogicalPlan, cx: &MixinContext) -> Result<LogicalPlan> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mixin.rewrite(plan, cx)))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(DataFusionError::Execution(format!("panicked: {msg}")))
        })
}

/// Runs one mixin's rewrite on its own thread, so that a mixin that panics
/// or never returns fails the query (closed) instead of the process or the
/// session. A mixin still running at the limit is abandoned: its thread
/// cannot be stopped, so the error says to fix or unregister it.
fn run_limited(
    mixin: Arc<dyn Mixin>,
    plan: LogicalPlan,
    cx: MixinContext,
    limit: std::time::Duration,
) -> Result<LogicalPlan> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("mixin {}", mixin.name()))
        .spawn(move || {
            let _ = tx.send(run_caught(mixin.as_ref(), plan, &cx));
        })
        .map_err(|e| DataFusionError::Execution(format!("cannot start it: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(DataFusionError::Execution(format!(
                "it did not finish within {} ms (omega.mixin_time_limit_ms); it may loop: fix or unregister it",
                limit.as_millis()
            )))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(DataFusionError::Execution(
            "it stopped without a result".into(),
        )),
    }
}
