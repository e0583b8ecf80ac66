//! Repeated subplans computed once.
//!
//! A CTE named twice (TPC-H q15's `revenue0`, once joined and once under
//! `max()`), or the same aggregate written out twice, is planned by
//! DataFusion as two identical subtrees, and each runs: two scans, two
//! aggregations. [`ShareRepeatedSubplans`] (a logical optimizer rule, last in
//! the list) finds aggregates that occur more than once in a statement, its
//! subqueries included, and puts each occurrence under a [`SharedSubplan`]
//! node with the same id. The session's [`OmegaPlanner`] plans every
//! occurrence of an id as a [`SharedSubplanExec`] over one shared result:
//! the first consumer to run computes it, the others read it.
//! `SET omega_exec.share_repeated_subplans = false` turns it off (a cluster
//! session does: a shared result lives in this process and cannot travel).
//!
//! Shared: aggregates (their results are usually small, and they hold their
//! input before giving anything out anyway) that read a table and have no
//! volatile expression (`random()` must stay different per occurrence) and
//! no reference to an outer query (a correlated subquery depends on the
//! outer row). The rule runs after DataFusion's, so occurrences are
//! compared as optimized: a CTE whose occurrences use different columns
//! has had its unused aggregates pruned apart and is computed per
//! occurrence. Not shared: plain scans and joins (their results can be as
//! large as the tables; streaming them twice costs less memory than holding
//! them), and occurrences that read a table name resolved to different
//! tables (never expected within one statement; checked, not assumed).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use deltalake::delta_datafusion::planner::DeltaExtensionPlanner;

use super::options::ExecOptions;
use super::shared_exec::{SharedResult, SharedSubplanExec};

/// Ids of shared subplans: unique in the process, so that occurrences of
/// different statements' subplans can never be mistaken for each other.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One occurrence of a subplan that the statement computes once; every
/// occurrence of the same subplan has the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct SharedSubplan {
    id: u64,
    input: LogicalPlan,
}

impl UserDefinedLogicalNodeCore for SharedSubplan {
    fn name(&self) -> &str {
        "SharedSubplan"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedSubplan: id={}", self.id)
    }

    fn with_exprs_and_inputs(
        &self,
        exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        match (exprs.is_empty(), inputs.pop(), inputs.is_empty()) {
            (true, Some(input), true) => Ok(SharedSubplan { id: self.id, input }),
            _ => internal_err!("SharedSubplan has one input and no expressions"),
        }
    }
}

/// The optimizer rule that puts repeated aggregates under [`SharedSubplan`]s
/// (see the module documentation for which are shared).
#[derive(Debug, Default)]
pub struct ShareRepeatedSubplans;

impl OptimizerRule for ShareRepeatedSubplans {
    fn name(&self) -> &str {
        "share_repeated_subplans"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let on = config
            .options()
            .extensions
            .get::<ExecOptions>()
            .is_none_or(|o| o.share_repeated_subplans);
        if !on {
            return Ok(Transformed::no(plan));
        }
        let mut seen: HashMap<LogicalPlan, usize> = HashMap::new();
        plan.apply_with_subqueries(|node| {
            if as_shared(node).is_some() {
                // already shared (an earlier optimizer pass): not again
                return Ok(TreeNodeRecursion::Jump);
            }
            if shareable(node) {
                *seen.entry(node.clone()).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        seen.retain(|_, n| *n > 1);
        if seen.is_empty() {
            return Ok(Transformed::no(plan));
        }
        // each repeated subplan's id, keyed by its first occurrence
        let mut ids: HashMap<LogicalPlan, u64> = HashMap::new();
        let wrapped = plan.transform_down_with_subqueries(|node| {
            if as_shared(&node).is_some() {
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            if !seen.contains_key(&node) {
                return Ok(Transformed::no(node));
            }
            let id = match ids.get_key_value(&node) {
                Some((first, id)) if same_tables(first, &node) => *id,
                Some(_) => return Ok(Transformed::no(node)),
                None => {
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    ids.insert(node.clone(), id);
                    id
                }
            };
            let shared = LogicalPlan::Extension(Extension {
                node: Arc::new(SharedSubplan { id, input: node }),
            });
            // the occurrence is shared whole: nothing under it is looked at
            Ok(Transformed::new(shared, true, TreeNodeRecursion::Jump))
        })?;
        unwrap_lone(wrapped)
    }
}

/// Puts back the subplans wrapped only once: counted twice, a subplan may
/// still have one occurrence left to share when the others sit inside a
/// larger shared subplan (or read other tables), and buffering a result
/// nothing else reads only costs memory.
fn unwrap_lone(plan: Transformed<LogicalPlan>) -> DfResult<Transformed<LogicalPlan>> {
    let mut uses: HashMap<u64, usize> = HashMap::new();
    plan.data.apply_with_subqueries(|node| {
        if let Some(shared) = as_shared(node) {
            *uses.entry(shared.id).or_default() += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if uses.values().all(|n| *n > 1) {
        return Ok(plan);
    }
    plan.transform_parent(|plan| {
        plan.transform_up_with_subqueries(|node| match as_shared(&node) {
            Some(shared) if uses[&shared.id] == 1 => Ok(Transformed::yes(shared.input.clone())),
            _ => Ok(Transformed::no(node)),
        })
    })
}

/// The [`SharedSubplan`] `plan` is, if it is one.
fn as_shared(plan: &LogicalPlan) -> Option<&SharedSubplan> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<SharedSubplan>(),
        _ => None,
    }
}

/// Whether `plan` is an aggregate worth sharing and safe to share.
fn shareable(plan: &LogicalPlan) -> bool {
    if !matches!(plan, LogicalPlan::Aggregate(_)) {
        return false;
    }
    let mut reads_table = false;
    let mut safe = true;
    let _ = plan.apply_with_subqueries(|node| {
        reads_table |= matches!(node, LogicalPlan::TableScan(_));
        let exprs_safe = node.expressions().iter().all(|e| {
            !e.is_volatile()
                && !e
                    .exists(|e| Ok(matches!(e, Expr::OuterReferenceColumn(..))))
                    .unwrap_or(true)
        });
        safe &= exprs_safe && !matches!(node, LogicalPlan::Extension(_));
        Ok(if safe {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    reads_table && safe
}

/// Whether `a` and `b` (equal plans) read the very same tables: equal plans
/// compare table names, not the tables they were resolved to.
fn same_tables(a: &LogicalPlan, b: &LogicalPlan) -> bool {
    let sources = |plan: &LogicalPlan| {
        let mut found = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                found.push(scan.source.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    };
    let (a, b) = (sources(a), sources(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// The query planner of omegastore's sessions: DataFusion's, with Delta's
/// nodes (Delta writes plan their own) and [`SharedSubplan`]s.
#[derive(Debug, Default)]
pub struct OmegaPlanner;

#[async_trait]
impl QueryPlanner for OmegaPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // one shared-subplan planner per statement: it holds what the
        // statement's occurrences share
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![
            DeltaExtensionPlanner::new(),
            Arc::new(SharedSubplanPlanner::default()),
        ]);
        planner.create_physical_plan(logical_plan, session).await
    }
}

/// The plan of a shared subplan's first occurrence, and the result every
/// occurrence reads.
type FirstOccurrence = (Arc<dyn ExecutionPlan>, Arc<SharedResult>);

/// Plans [`SharedSubplan`]s of one statement: every occurrence of an id
/// over the plan of its first occurrence, and over one result.
#[derive(Default)]
struct SharedSubplanPlanner {
    planned: Mutex<HashMap<u64, FirstOccurrence>>,
}

#[async_trait]
impl ExtensionPlanner for SharedSubplanPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session_state: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(shared) = node.as_any().downcast_ref::<SharedSubplan>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("SharedSubplan has one input");
        };
        let mut planned = self
            .planned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (input, result) = planned
            .entry(shared.id)
            .or_insert_with(|| {
                // as many as the session runs at once: the input is planned
                // before the optimizer spreads it over partitions
                let partitions = session_state.config_options().execution.target_partitions;
                (input.clone(), Arc::new(SharedResult::new(partitions)))
            })
            .clone();
        Ok(Some(Arc::new(SharedSubplanExec::new(
            shared.id, input, result,
        ))))
    }
}
