//! A partial aggregate whose one group key is a [`GroupCodes`] code.
//!
//! After [`GroupOnCodes`] the aggregate groups 32-bit codes that are dense
//! (`0, 1, 2, …` in the order the plan met the strings). DataFusion's
//! aggregate still hashes each row's code to find its group (`perf`: 30% of
//! a 10M-row `GROUP BY category`, as much as hashing the strings cost). Here
//! the code *is* the group index: each row's index is `code + 1` (index 0 is
//! the NULL key) and the accumulators are DataFusion's own
//! [`GroupsAccumulator`]s, so values, state and errors are theirs.
//!
//! Codes are shared by every partition and given to every value of a
//! dictionary a batch carries, so some codes have no rows here; only groups
//! that saw a row are emitted. Under memory pressure the groups held so far
//! are emitted early and aggregation starts over: a partial aggregate may
//! emit a group more than once, the final aggregate merges them.
//!
//! [`GroupOnCodes`]: super::dictionary_groups::GroupOnCodes
//! [`GroupCodes`]: super::dictionary_groups::GroupCodes

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};
use arrow::datatypes::Int32Type;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_datafusion_err, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_common::utils::evaluate_expressions_to_arrays;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

use super::one_child;

/// Stands for a partial [`AggregateExec`] grouping one code column (see the
/// module doc): the same input, schema and output, without hashing.
#[derive(Debug)]
pub struct DenseAggregateExec {
    aggregate: Arc<AggregateExec>,
    /// The column of `aggregate`'s input holding the codes.
    key: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl DenseAggregateExec {
    /// `aggregate` computed on dense codes, or `None` when it is not a
    /// partial aggregate of one code column (`Int32`) whose functions all
    /// have groups accumulators and no DISTINCT, order or limit.
    pub fn try_new(aggregate: Arc<AggregateExec>) -> Option<Self> {
        let group_by = aggregate.group_expr();
        let [(key, _)] = group_by.expr() else {
            return None;
        };
        let key = key.downcast_ref::<Column>()?.index();
        let applies = *aggregate.mode() == AggregateMode::Partial
            && !group_by.has_grouping_set()
            && aggregate.limit_options().is_none()
            && aggregate.dynamic_expressions_produced().is_empty()
            && *aggregate.input().schema().field(key).data_type()
                == arrow::datatypes::DataType::Int32
            && aggregate.aggr_expr().iter().all(|a| {
                a.groups_accumulator_supported() && !a.is_distinct() && a.order_bys().is_empty()
            });
        applies.then(|| DenseAggregateExec {
            aggregate,
            key,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for DenseAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // the aggregate's own line, so EXPLAIN still names its groups and functions
        struct Inner<'a>(&'a AggregateExec, DisplayFormatType);
        impl std::fmt::Display for Inner<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                self.0.fmt_as(self.1, f)
            }
        }
        let line = Inner(&self.aggregate, t).to_string();
        let line = line.strip_prefix("AggregateExec: ").unwrap_or(&line);
        write!(f, "{}: {line}", self.name())
    }
}

impl ExecutionPlan for DenseAggregateExec {
    fn name(&self) -> &str {
        "DenseAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child(self.name(), &mut children)?;
        let aggregate: Arc<dyn ExecutionPlan> = self.aggregate.clone();
        let rebuilt = aggregate.replace_children(
            vec![input],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        let Some(aggregate) = rebuilt.downcast_ref::<AggregateExec>() else {
            return internal_err!("an aggregate rebuilt is no aggregate");
        };
        match DenseAggregateExec::try_new(Arc::new(aggregate.clone())) {
            Some(dense) => Ok(Arc::new(dense)),
            None => internal_err!("a dense aggregate's new input has no code column"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.aggregate.input().execute(partition, context.clone())?;
        let aggregate = &self.aggregate;
        let accumulators = new_accumulators(aggregate)?;
        let reservation = MemoryConsumer::new(format!("DenseAggregateExec[{partition}]"))
            .register(context.memory_pool());
        let dense = Dense {
            key: self.key,
            arguments: aggregate
                .aggr_expr()
                .iter()
                .map(|a| a.expressions())
                .collect(),
            filters: aggregate.filter_expr().to_vec(),
            accumulators,
            seen: Vec::new(),
            unseen: 0,
            indices: Vec::new(),
            aggregate: aggregate.clone(),
            batch_size: context.session_config().batch_size().max(1),
            reservation,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        let schema = aggregate.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            aggregated(input, dense),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

fn new_accumulators(aggregate: &AggregateExec) -> DfResult<Vec<Box<dyn GroupsAccumulator>>> {
    aggregate
        .aggr_expr()
        .iter()
        .map(|a| a.create_groups_accumulator())
        .collect()
}

/// One partition's groups: accumulators indexed by `code + 1`.
struct Dense {
    key: usize,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Per group index, whether a row had it (only those are emitted).
    seen: Vec<bool>,
    /// How many of `seen`'s code slots (all but NULL's, 0) are false.
    unseen: usize,
    indices: Vec<usize>,
    aggregate: Arc<AggregateExec>,
    batch_size: usize,
    reservation: MemoryReservation,
    metrics: BaselineMetrics,
}

impl Dense {
    /// Adds `batch`'s rows; `true` when the groups no longer fit the memory
    /// budget and should be emitted.
    fn update(&mut self, batch: &RecordBatch) -> DfResult<bool> {
        let _timer = self.metrics.elapsed_compute().timer();
        let Some(codes) = batch.column(self.key).as_primitive_opt::<Int32Type>() else {
            return internal_err!("the dense aggregate's key is not Int32 codes");
        };
        // index = code + 1, 0 for NULL; written so the common case (no
        // NULL keys) runs as plain loops over the codes
        self.indices.clear();
        let values = codes.values();
        let groups = if codes.null_count() == 0 {
            // both bounds in one pass over the 32-bit codes (a maximum of
            // the 64-bit indices is emulated with SSE2 on x86-64's baseline)
            let (lowest, highest) = values
                .iter()
                .fold((i32::MAX, i32::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
            if lowest < 0 {
                return internal_err!("negative group code {lowest}");
            }
            self.indices
                .extend(values.iter().map(|&c| c as u32 as usize + 1));
            // no rows: no groups (highest is i32::MIN then)
            usize::try_from(highest).map_or(0, |h| h + 2)
        } else {
            for code in codes {
                self.indices.push(match code {
                    None => 0,
                    Some(c) => {
                        usize::try_from(c)
                            .map_err(|_| internal_datafusion_err!("negative group code {c}"))?
                            + 1
                    }
                });
            }
            self.indices.iter().copied().max().map_or(0, |i| i + 1)
        };
        if groups > self.seen.len() {
            // slot 0 (NULL) is marked on its own below
            self.unseen += groups - self.seen.len().max(1);
            self.seen.resize(groups, false);
        }
        let groups = self.seen.len();
        if codes.null_count() > 0 {
            self.seen[0] = true;
        }
        // once every code so far has had a row, only a new code (which
        // grew `seen` above) can mark one
        if self.unseen > 0 {
            let seen = &mut self.seen[..];
            for &i in &self.indices {
                if !seen[i] {
                    seen[i] = true;
                    self.unseen -= 1;
                }
            }
        }
        for ((acc, arguments), filter) in self
            .accumulators
            .iter_mut()
            .zip(&self.arguments)
            .zip(&self.filters)
        {
            let values = evaluate_expressions_to_arrays(arguments, batch)?;
            let filter = filter
                .as_ref()
                .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                .transpose()?;
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(&values, &self.indices, filter, groups)?;
        }
        let size = self.seen.capacity()
            + self.indices.capacity() * size_of::<usize>()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
        Ok(self.reservation.try_resize(size).is_err())
    }

    /// The groups that saw rows, as batches of the aggregate's schema;
    /// starts over with no groups.
    fn emit(&mut self) -> DfResult<Vec<RecordBatch>> {
        let _timer = self.metrics.elapsed_compute().timer();
        let groups = self.seen.len();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int32Array::from_iter(
            (0..groups).map(|i| i.checked_sub(1).map(|c| c as i32)),
        ))];
        let fresh = new_accumulators(&self.aggregate)?;
        for mut acc in std::mem::replace(&mut self.accumulators, fresh) {
            let state = acc.state(EmitTo::All)?;
            if state.iter().any(|s| s.len() != groups) {
                return internal_err!("an accumulator's state has not one row per group");
            }
            columns.extend(state);
        }
        let seen = BooleanArray::from(std::mem::take(&mut self.seen));
        self.unseen = 0;
        self.reservation.free();
        if groups == 0 {
            return Ok(Vec::new());
        }
        // filtered column by column: the NULL key's slot may be unseen in a
        // column declared non-nullable
        let columns = columns
            .iter()
            .map(|c| arrow::compute::filter(c, &seen))
            .collect::<Result<Vec<_>, _>>()?;
        let held = RecordBatch::try_new(self.aggregate.schema(), columns)?;
        let rows = held.num_rows();
        self.metrics.record_output(rows);
        Ok((0..rows)
            .step_by(self.batch_size)
            .map(|start| held.slice(start, self.batch_size.min(rows - start)))
            .collect())
    }
}

/// The partial aggregate of `input`'s rows, as a stream of batches.
fn aggregated(
    input: SendableRecordBatchStream,
    dense: Dense,
) -> impl Stream<Item = DfResult<RecordBatch>> + Send {
    // `None` once the input ended or failed
    let start = Some((input, Box::new(dense)));
    futures::stream::unfold(start, |state| async move {
        let (mut input, mut dense) = state?;
        loop {
            match input.next().await {
                Some(Ok(batch)) => match dense.update(&batch) {
                    Ok(false) => {}
                    Ok(true) => {
                        let out = dense.emit();
                        let next = out.is_ok().then_some((input, dense));
                        return Some((out, next));
                    }
                    Err(e) => return Some((Err(e), None)),
                },
                Some(Err(e)) => return Some((Err(e), None)),
                None => return Some((dense.emit(), None)),
            }
        }
    })
    .flat_map(|emitted| {
        let batches: Vec<DfResult<RecordBatch>> = match emitted {
            Ok(batches) => batches.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(batches)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::MemTable;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// Two partitions of rows keyed by codes with NULLs and gaps: codes
    /// 0..40 step 3 hold rows, every third row has a NULL key but in the
    /// last batch, and codes 1000.. appear only in that batch.
    fn partitions() -> Vec<Vec<RecordBatch>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Float64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |from: i64, to: i64, offset: i32, nulls: bool| {
            let rows = from..to;
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int32Array::from_iter(rows.clone().map(|i| {
                        (!nulls || i % 3 != 0).then_some(offset + (i % 14) as i32 * 3)
                    }))),
                    Arc::new(Int64Array::from_iter(
                        rows.clone().map(|i| (i % 5 != 0).then_some(i)),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        rows.clone().map(|i| i as f64 / 4.0),
                    )),
                    Arc::new(StringArray::from_iter(
                        rows.map(|i| (i % 7 != 0).then(|| format!("s{}", i % 11))),
                    )),
                ],
            )
            .unwrap()
        };
        vec![
            vec![batch(0, 700, 0, true), batch(700, 1000, 0, true)],
            vec![batch(1000, 1500, 0, true), batch(1500, 2000, 1000, false)],
        ]
    }

    const SQL: &str = "SELECT k, count(*) AS n, count(x), sum(x), avg(y), min(s), max(x), \
                       sum(x) FILTER (WHERE y > 100) AS f FROM t GROUP BY k ORDER BY k";

    fn context(pool: Option<usize>) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(256);
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = pool {
            runtime = runtime.with_memory_pool(Arc::new(GreedyMemoryPool::new(bytes)));
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc().unwrap());
        let table = MemTable::try_new(partitions()[0][0].schema(), partitions()).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let df = ctx.sql(sql).await.unwrap();
        df.create_physical_plan().await.unwrap()
    }

    /// `plan` with its partial aggregates dense; how many were replaced.
    fn dense(plan: Arc<dyn ExecutionPlan>) -> (Arc<dyn ExecutionPlan>, usize) {
        let mut replaced = 0;
        let plan = plan
            .transform_up(|node| {
                let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                    return Ok(Transformed::no(node));
                };
                Ok(
                    match DenseAggregateExec::try_new(Arc::new(aggregate.clone())) {
                        Some(d) => {
                            replaced += 1;
                            Transformed::yes(Arc::new(d) as Arc<dyn ExecutionPlan>)
                        }
                        None => Transformed::no(node),
                    },
                )
            })
            .unwrap()
            .data;
        (plan, replaced)
    }

    /// The dense partial aggregate gives DataFusion's answers: NULL keys,
    /// codes without rows, FILTER, every accumulator kind, DISTINCT (planned
    /// as two aggregates); EXPLAIN names it with the aggregate's groups and
    /// functions.
    #[tokio::test]
    async fn answers_as_the_hash_aggregate_does() {
        let ctx = context(None);
        for (sql, groups) in [
            (SQL, 29),
            (
                "SELECT k, count(DISTINCT x % 4) AS d FROM t GROUP BY k ORDER BY k",
                29,
            ),
            (
                "SELECT k FROM t GROUP BY k HAVING sum(x) > 40000 ORDER BY k",
                29,
            ),
        ] {
            let plan = physical(&ctx, sql).await;
            let want = pretty_format_batches(&collect(plan.clone(), ctx.task_ctx()).await.unwrap())
                .unwrap()
                .to_string();
            // a plan runs once: the dense one is planned again
            let plan = physical(&ctx, sql).await;
            let (plan, replaced) = dense(plan);
            assert_eq!(replaced, 1, "one partial aggregate of k: {sql}");
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(false)
                .to_string();
            assert!(
                shown.contains("DenseAggregateExec: mode=Partial, gby=[k@0 as k], aggr=["),
                "{shown}"
            );
            let got = pretty_format_batches(&collect(plan, ctx.task_ctx()).await.unwrap())
                .unwrap()
                .to_string();
            assert_eq!(got, want, "{sql}");
            assert_eq!(got.lines().count(), groups + 4, "{got}");
        }
    }

    /// Not replaced: aggregates of two keys, of a key that is not Int32,
    /// of no key.
    #[tokio::test]
    async fn other_aggregates_are_left_alone() {
        let ctx = context(None);
        for sql in [
            "SELECT k, x, count(*) FROM t GROUP BY k, x",
            "SELECT x, count(*) FROM t GROUP BY x",
            "SELECT count(*) FROM t",
        ] {
            let plan = physical(&ctx, sql).await;
            assert_eq!(dense(plan).1, 0, "{sql}");
        }
    }

    /// Over its memory budget the partial aggregate emits what it holds and
    /// starts over: more batches, groups repeated, the same totals.
    #[tokio::test]
    async fn over_budget_it_emits_early_and_loses_nothing() {
        let ctx = context(Some(4 * 1024));
        let sql = "SELECT k, count(*) AS n, sum(x) AS s FROM t GROUP BY k";
        let plan = physical(&ctx, sql).await;
        let (plan, _) = dense(plan);
        let mut partial = None;
        plan.apply(|p| {
            if p.name() == "DenseAggregateExec" {
                partial = Some(p.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        let partial = partial.unwrap();
        let mut totals: BTreeMap<Option<i32>, (i64, i64)> = BTreeMap::new();
        let mut rows = 0;
        for p in 0..2 {
            let batches = partial
                .execute(p, ctx.task_ctx())
                .unwrap()
                .collect::<Vec<_>>()
                .await;
            for b in batches {
                let b = b.unwrap();
                rows += b.num_rows();
                let k = b.column(0).as_primitive::<Int32Type>();
                let n = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
                let s = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
                for i in 0..b.num_rows() {
                    let t = totals.entry(k.is_valid(i).then(|| k.value(i))).or_default();
                    t.0 += n.value(i);
                    t.1 += if s.is_valid(i) { s.value(i) } else { 0 };
                }
            }
        }
        // every batch overflowed the budget: groups were emitted per batch
        assert!(
            rows > totals.len(),
            "{rows} rows for {} groups",
            totals.len()
        );
        let mut want: BTreeMap<Option<i32>, (i64, i64)> = BTreeMap::new();
        for b in partitions().iter().flatten() {
            let k = b.column(0).as_primitive::<Int32Type>();
            let x = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                let t = want.entry(k.is_valid(i).then(|| k.value(i))).or_default();
                t.0 += 1;
                t.1 += if x.is_valid(i) { x.value(i) } else { 0 };
            }
        }
        assert_eq!(totals, want);
    }

    /// Dense codes as the plan gives them (0, 1, 2, … in the order met):
    /// once every code so far has had a row the partial aggregate stops
    /// marking rows, and a NULL key or a new code after that still makes its
    /// group (both are seen only after all earlier codes were).
    #[tokio::test]
    async fn groups_first_met_after_all_others_are_kept() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("x", DataType::Int64, false),
        ]));
        let batch = |codes: Vec<Option<i32>>| {
            let x = Int64Array::from_iter_values(0..codes.len() as i64);
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int32Array::from(codes)), Arc::new(x)],
            )
            .unwrap()
        };
        let all = |n: i32| (0..40).map(|i| Some(i % n)).collect::<Vec<_>>();
        let with_nulls = (0..40)
            .map(|i| (i % 4 != 0).then_some(i % 10))
            .collect::<Vec<_>>();
        let partition = vec![
            batch(all(10)),
            batch(with_nulls),
            batch(all(13)),
            batch(all(10)),
        ];
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(64);
        let ctx = SessionContext::new_with_config(config);
        let table =
            MemTable::try_new(schema.clone(), vec![partition, vec![batch(all(3))]]).unwrap();
        ctx.register_table("d", Arc::new(table)).unwrap();
        let sql = "SELECT k, count(*) AS n, sum(x) AS s FROM d GROUP BY k ORDER BY k";
        let plan = physical(&ctx, sql).await;
        let want = pretty_format_batches(&collect(plan, ctx.task_ctx()).await.unwrap())
            .unwrap()
            .to_string();
        let (plan, replaced) = dense(physical(&ctx, sql).await);
        assert_eq!(replaced, 1);
        let got = pretty_format_batches(&collect(plan, ctx.task_ctx()).await.unwrap())
            .unwrap()
            .to_string();
        assert_eq!(got, want);
        // 13 codes and NULL
        assert_eq!(got.lines().count(), 14 + 4, "{got}");
    }
}
