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
}

impl MixinContext {
    fn from_config(config: &ConfigOptions) -> Self {
        let o = config
            .extensions
            .get::<OmegaOptions>()
            .cloned()
            .unwrap_or_default();
        Self {
            bucket: config.catalog.default_schema.clone(),
            user: o.user.clone(),
            roles: o.role_list(),
            bound_bucket: (!o.bound_bucket.is_empty()).then(|| o.bound_bucket.clone()),
        }
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
        let mixins: Vec<_> = self
            .mixins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for m in mixins {
            // A mixin that panics fails the query like one that errors
            // (closed, with its name), instead of taking the process down.
            let rewritten =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.rewrite(plan, &cx)))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown cause".into());
                        Err(DataFusionError::Execution(format!("panicked: {msg}")))
                    });
            plan = rewritten.map_err(|e| {
                DataFusionError::Plan(format!(
                    "mixin '{}' failed: {}",
                    m.name(),
                    e.strip_backtrace()
                ))
            })?;
        }
        Ok(plan)
    }

    fn name(&self) -> &str {
        "omega_mixins"
    }
}
