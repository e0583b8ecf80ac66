//! Dynamic filters applied to the rows a Parquet scan gives out.
//!
//! A hash join that has built its table hands the scan of its probe side a
//! *dynamic filter*: the build keys' bounds and a lookup in the built table
//! (a top-k hands its scan the current threshold the same way). With
//! `pushdown_filters` off — omegastore's default, because the Parquet
//! decoder's row selections cost more than they spare (BENCHMARKS.md,
//! 2026-12-03) — the scan uses such a filter only to skip files, row groups
//! and pages, and every other probe row still travels through
//! repartitioning to the join, which drops it there. In TPC-H q18 that is 6M
//! `lineitem` rows and 1.5M `orders` rows for 57 orders kept.
//!
//! The [`DynamicFilters`] rule (a physical optimizer rule that runs after
//! DataFusion's own) puts a [`DynamicFilterExec`] over the Parquet scans
//! whose dynamic filters reach them through costly work (see the rule for
//! which), above the scan's own filters:
//!
//! ```text
//! DynamicFilterExec   the scan's dynamic filters, on decoded batches
//!   |
//! FilterExec          the query's filters on the table, if any
//!   |
//! DataSourceExec      prunes by the dynamic filters as before
//! ```
//!
//! Dropping the rows a dynamic filter rules out is what DataFusion's own
//! scan does with `pushdown_filters` on (the filter is exact: the join or
//! top-k above would drop those rows too), so answers do not change. A
//! filter that keeps most rows (a join whose build side holds most keys)
//! costs a hash lookup per row for nothing, so the node measures: after a
//! window of rows that mostly passed it lets batches through unevaluated,
//! trying one batch again every so often and whenever a filter changes.
//!
//! `SET omega_scan.dynamic_filters = false` turns it off for a session; it
//! does nothing where the scan applies filters itself (`SET
//! datafusion.execution.parquet.pushdown_filters = true`).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::{BatchCoalescer, filter_record_batch};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Statistics, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileSource;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{
    Column, DynamicFilterPhysicalExpr, DynamicFilterTracking,
};
use datafusion::physical_expr::utils::{reassign_expr_columns, split_conjunction};
use datafusion::physical_expr::{PhysicalExpr, conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
    replace_children_if_necessary,
};
use futures::{Stream, StreamExt, ready};

use super::{one_child, scan_options};

/// Rows over which the node judges whether its filter pays.
const WINDOW_ROWS: usize = 64 * 1024;
/// A filter pays while it drops at least this share of rows: dropping a
/// row spares its repartitioning and the join's own lookup, which cost
/// about as much as evaluating the filter once (TPC-H sf1, this machine).
const KEEP_AT_MOST: f64 = 0.8;
/// Batches let through unevaluated before the filter is tried again.
const IDLE_BATCHES: usize = 32;

/// The physical optimizer rule that puts a [`DynamicFilterExec`] over the
/// Parquet scans whose dynamic filters pay for themselves. It runs after
/// DataFusion's rules (the dynamic filters are pushed in their last pass),
/// and only once per scan.
///
/// A filter pays where the rows it drops would otherwise reach work that
/// costs more than a hash lookup: a join's build side, an aggregate, a sort.
/// A row that would only pass through filters, projections, repartitioning
/// and the probe side of hash joins costs a join about 5 ns to drop, and
/// the filter's own lookup costs 10–25 ns per row (TPC-H sf1 on 2 cores: q03
/// and q04 1.5× slower, q08 1.4×, with it at every scan; q07, q17 and q18
/// 0.6–0.75× with it where it crosses a build side or an aggregate). So each
/// filter is applied only at scans it reaches through such work, and above
/// the scan's own static filters, which run on every row anyway and are
/// cheaper.
#[derive(Debug, Default)]
pub struct DynamicFilters;

impl PhysicalOptimizerRule for DynamicFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if config.execution.parquet.pushdown_filters || !scan_options::dynamic_filters(config) {
            return Ok(plan);
        }
        place(plan, &HashSet::new())
    }

    fn name(&self) -> &str {
        "omega_dynamic_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Nodes a row passes through at a cost below a hash lookup.
const PASS_THROUGH: &[&str] = &[
    "FilterExec",
    "ProjectionExec",
    "RepartitionExec",
    "CoalescePartitionsExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "DictionaryFilterExec",
];

/// Scan filters that sit right over a scan (the dynamic filter goes above
/// them: they are cheaper and see every row anyway).
const OVER_SCAN: &[&str] = &["FilterExec", "DictionaryFilterExec"];

/// `node` with a [`DynamicFilterExec`] over each of its scans that holds
/// dynamic filters not in `cheap` (the ids of the filters whose producer
/// is reached from `node` through [`PASS_THROUGH`] nodes only).
fn place(node: Arc<dyn ExecutionPlan>, cheap: &HashSet<u64>) -> DfResult<Arc<dyn ExecutionPlan>> {
    if node.downcast_ref::<DynamicFilterExec>().is_some() {
        return Ok(node);
    }
    if let Some(wrapped) = over_scan(&node, cheap)? {
        return Ok(wrapped);
    }
    let produced: HashSet<u64> = node
        .dynamic_expressions_produced()
        .iter()
        .filter_map(|e| e.expression_id())
        .collect();
    let mut passed = produced.clone();
    passed.extend(cheap);
    let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
    let placed = children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // a hash join's probe side (its second child) drops rows cheaply
            let through =
                PASS_THROUGH.contains(&node.name()) || (node.name() == "HashJoinExec" && i == 1);
            place(Arc::clone(c), if through { &passed } else { &produced })
        })
        .collect::<DfResult<Vec<_>>>()?;
    replace_children_if_necessary(node, placed)
}

/// `node` under a [`DynamicFilterExec`] when it is a Parquet scan, or the
/// scan's own filters over one, and the scan holds dynamic filters worth
/// applying that can be expressed over `node`'s columns.
fn over_scan(
    node: &Arc<dyn ExecutionPlan>,
    cheap: &HashSet<u64>,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let mut scan = node;
    while OVER_SCAN.contains(&scan.name()) {
        match scan.children().as_slice() {
            [child] => scan = child,
            _ => return Ok(None),
        }
    }
    let filters = scan_dynamic_filters(scan, cheap)?;
    if filters.is_empty() {
        return Ok(None);
    }
    let output = node.schema();
    let mut lifted = Vec::with_capacity(filters.len());
    for f in filters {
        // the filters between name the scan's columns as the scan does
        match reassign_expr_columns(f, &output) {
            Ok(f) if refers_to(&f, &output) => lifted.push(f),
            _ => return Ok(None),
        }
    }
    Ok(Some(Arc::new(DynamicFilterExec::new(
        Arc::clone(node),
        conjunction(lifted),
    ))))
}

/// The dynamic filters not in `cheap` in `node`'s predicate when it is a
/// Parquet scan that does not apply them itself, over the scan's output
/// columns.
fn scan_dynamic_filters(
    node: &Arc<dyn ExecutionPlan>,
    cheap: &HashSet<u64>,
) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
    let mut dynamic = vec![];
    let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(dynamic);
    };
    let Some((_, parquet)) = scan.downcast_to_file_source::<ParquetSource>() else {
        return Ok(dynamic);
    };
    if parquet.table_parquet_options().global.pushdown_filters {
        return Ok(dynamic);
    }
    let Some(predicate) = parquet.filter() else {
        return Ok(dynamic);
    };
    let output = node.schema();
    for conjunct in split_conjunction(&predicate) {
        let Some(filter) = conjunct.downcast_ref::<DynamicFilterPhysicalExpr>() else {
            continue;
        };
        if filter.expression_id().is_some_and(|id| cheap.contains(&id)) {
            continue;
        }
        // The scan holds its predicate over the table's columns; the node
        // above sees the projected ones.
        let over_output = match parquet.projection() {
            Some(projection) => match projection.project_expr(conjunct) {
                Ok(e) => e,
                Err(_) => continue,
            },
            None => Arc::clone(conjunct),
        };
        if refers_to(&over_output, &output) {
            dynamic.push(over_output);
        }
    }
    Ok(dynamic)
}

/// Whether every column `expr` names is the one column of `schema` by that
/// name, at that index.
fn refers_to(expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> bool {
    let mut ok = true;
    let _ = expr.apply(|e| {
        if let Some(c) = e.downcast_ref::<Column>() {
            ok &= schema
                .fields()
                .get(c.index())
                .is_some_and(|f| f.name() == c.name())
                && schema
                    .fields()
                    .iter()
                    .filter(|f| f.name() == c.name())
                    .count()
                    == 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok
}

/// Applies a scan's dynamic filters to its batches, as long as they drop
/// enough rows to pay for themselves (see the module's doc).
#[derive(Debug)]
pub struct DynamicFilterExec {
    input: Arc<dyn ExecutionPlan>,
    predicate: Arc<dyn PhysicalExpr>,
    metrics: ExecutionPlanMetricsSet,
}

impl DynamicFilterExec {
    fn new(input: Arc<dyn ExecutionPlan>, predicate: Arc<dyn PhysicalExpr>) -> Self {
        DynamicFilterExec {
            input,
            predicate,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for DynamicFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "DynamicFilterExec: {}", self.predicate)
    }
}

impl ExecutionPlan for DynamicFilterExec {
    fn name(&self) -> &str {
        "DynamicFilterExec"
    }

    /// The scan's: rows are only dropped, never reordered or moved.
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        f(&self.predicate)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child(self.name(), &mut children)?;
        Ok(Arc::new(DynamicFilterExec::new(
            input,
            self.predicate.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        Ok(Box::pin(DynamicFilterStream {
            input,
            tracking: DynamicFilterTracking::classify(&self.predicate),
            predicate: self.predicate.clone(),
            // batches of at least half the size go on without a copy
            coalescer: BatchCoalescer::new(schema.clone(), batch_size)
                .with_biggest_coalesce_batch_size(Some(batch_size / 2)),
            schema,
            state: State::Measuring { rows: 0, kept: 0 },
            done: false,
            unevaluated: MetricBuilder::new(&self.metrics).counter("rows_let_through", partition),
            pruned: MetricBuilder::new(&self.metrics).counter("rows_dropped", partition),
            metrics: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The scan's, as upper bounds.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(Arc::new(match input_stats.first() {
            Some(input) => input.as_ref().clone().to_inexact(),
            None => Statistics::new_unknown(&self.schema()),
        }))
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::LowerEqual
    }
}

/// Whether the filter is being evaluated, and how it has done.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Evaluated on every batch; `kept` of `rows` passed in this window.
    Measuring { rows: usize, kept: usize },
    /// Batches go on unevaluated; the filter is tried again after `left`
    /// more batches (or when it changes).
    Idle { left: usize },
}

impl State {
    /// The state after a batch of `rows` of which `kept` passed.
    fn after(self, rows: usize, kept: usize) -> State {
        match self {
            State::Measuring { rows: r, kept: k } => {
                let (rows, kept) = (r + rows, k + kept);
                if rows < WINDOW_ROWS {
                    State::Measuring { rows, kept }
                } else if kept as f64 > KEEP_AT_MOST * rows as f64 {
                    State::Idle { left: IDLE_BATCHES }
                } else {
                    State::Measuring { rows: 0, kept: 0 }
                }
            }
            // a batch tried again: measure anew if it paid
            State::Idle { .. } if (kept as f64) <= KEEP_AT_MOST * rows as f64 => {
                State::Measuring { rows, kept }
            }
            State::Idle { .. } => State::Idle { left: IDLE_BATCHES },
        }
    }
}

/// The batches of a [`DynamicFilterExec`].
struct DynamicFilterStream {
    input: SendableRecordBatchStream,
    predicate: Arc<dyn PhysicalExpr>,
    tracking: DynamicFilterTracking,
    schema: SchemaRef,
    coalescer: BatchCoalescer,
    state: State,
    done: bool,
    unevaluated: Count,
    pruned: Count,
    metrics: BaselineMetrics,
}

impl DynamicFilterStream {
    /// Filters `batch` (or not, see [`State`]) and hands the rows left to
    /// the coalescer.
    fn push(&mut self, batch: RecordBatch) -> DfResult<()> {
        let _timer = self.metrics.elapsed_compute().timer();
        let rows = batch.num_rows();
        if let State::Idle { left } = self.state {
            let changed = self.tracking.watcher().is_some_and(|w| w.changed());
            if left > 0 && !changed {
                self.state = State::Idle { left: left - 1 };
                self.unevaluated.add(rows);
                return Ok(self.coalescer.push_batch(batch)?);
            }
        }
        let mask = self.predicate.evaluate(&batch)?.into_array(rows)?;
        let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
            return internal_err!("a dynamic filter gave no booleans");
        };
        // a null is a row the filter does not keep
        let kept = mask.true_count();
        self.state = self.state.after(rows, kept);
        self.pruned.add(rows - kept);
        match kept {
            0 => Ok(()),
            n if n == rows => Ok(self.coalescer.push_batch(batch)?),
            _ => Ok(self
                .coalescer
                .push_batch(filter_record_batch(&batch, mask)?)?),
        }
    }
}

impl Stream for DynamicFilterStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.coalescer.next_completed_batch() {
                let poll = Poll::Ready(Some(Ok(batch)));
                return self.metrics.record_poll(poll);
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(self.input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    if let Err(e) = self.push(batch) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.done = true;
                    if let Err(e) = self.coalescer.finish_buffered_batch() {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
        }
    }
}

impl RecordBatchStream for DynamicFilterStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_keeps_most_rows_goes_idle_and_is_tried_again() {
        let mut s = State::Measuring { rows: 0, kept: 0 };
        s = s.after(WINDOW_ROWS, WINDOW_ROWS);
        assert_eq!(s, State::Idle { left: IDLE_BATCHES });
        // the batch tried again still keeps most: idle again
        assert_eq!(s.after(8192, 8000), State::Idle { left: IDLE_BATCHES });
        // it now drops most: measured again from that batch
        assert_eq!(
            s.after(8192, 10),
            State::Measuring {
                rows: 8192,
                kept: 10
            }
        );
    }

    #[test]
    fn a_filter_that_drops_rows_stays_evaluated() {
        let mut s = State::Measuring { rows: 0, kept: 0 };
        for _ in 0..100 {
            s = s.after(8192, 4000);
            assert!(matches!(s, State::Measuring { .. }), "{s:?}");
        }
    }
}
