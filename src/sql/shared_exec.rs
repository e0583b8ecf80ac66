//! [`SharedSubplanExec`]: one occurrence of a subplan that a statement
//! computes once (see `shared_subplans.rs` for which subplans are shared).
//!
//! Every occurrence holds the same [`SharedResult`]. The first to be run
//! computes its input, all partitions, into memory (reserved in the
//! session's memory pool, so a budget holds); every occurrence then gives out
//! those batches. A failure is kept and given to every occurrence, so that
//! nothing is computed twice. The result is held as long as the physical plan.
//!
//! The node gives out `UnknownPartitioning` with the session's target
//! partition count, partition `i` holding the computed partitions
//! `j` with `j % count == i`: the occurrences' inputs may have been
//! optimized apart (each occurrence is optimized where it stands), and
//! whichever runs first computes the result for all, so no occurrence may
//! promise its own input's hash partitioning or order. Filters from above
//! (a join's dynamic filter) are not pushed through it: they hold for one
//! occurrence only.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    execute_stream_partitioned,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

use crate::backends::one_child;

/// The result every occurrence of one shared subplan reads.
#[derive(Debug)]
pub struct SharedResult {
    /// Partitions every occurrence gives out.
    partitions: usize,
    computed: OnceCell<Result<Arc<Computed>, Arc<DataFusionError>>>,
}

#[derive(Debug)]
struct Computed {
    partitions: Vec<Vec<RecordBatch>>,
    /// Held as long as the batches.
    _reservation: Arc<MemoryReservation>,
}

impl SharedResult {
    /// A result not computed yet, given out in `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        SharedResult {
            partitions: partitions.max(1),
            computed: OnceCell::new(),
        }
    }

    /// The batches of `input` (this result's subplan), computed by the
    /// first caller, which counts it in `computations`.
    async fn get(
        &self,
        id: u64,
        input: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        computations: Count,
    ) -> DfResult<Arc<Computed>> {
        let computed = self
            .computed
            .get_or_init(|| async move {
                computations.add(1);
                compute(id, input, context).await.map_err(Arc::new)
            })
            .await;
        computed.clone().map_err(DataFusionError::Shared)
    }
}

/// All partitions of `input`, each partition read on its own task, every
/// batch reserved in `context`'s memory pool as it comes: a result over the
/// budget stops there, with the pool's error, instead of being collected
/// first.
async fn compute(
    id: u64,
    input: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> DfResult<Arc<Computed>> {
    let reservation = Arc::new(
        MemoryConsumer::new(format!("SharedSubplanExec[{id}]")).register(context.memory_pool()),
    );
    let mut tasks = JoinSet::new();
    for (i, stream) in execute_stream_partitioned(input, context)?
        .into_iter()
        .enumerate()
    {
        let reservation = reservation.clone();
        tasks.spawn(async move {
            let batches = stream
                .and_then(|batch| {
                    let held = reservation.try_grow(batch.get_array_memory_size());
                    futures::future::ready(held.map(|()| batch))
                })
                .try_collect::<Vec<_>>()
                .await;
            (i, batches)
        });
    }
    let mut partitions = vec![Vec::new(); tasks.len()];
    while let Some(done) = tasks.join_next().await {
        match done {
            // an error drops `tasks`, which aborts the partitions left
            Ok((i, batches)) => partitions[i] = batches?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(DataFusionError::ExecutionJoin(Box::new(e))),
        }
    }
    Ok(Arc::new(Computed {
        partitions,
        _reservation: reservation,
    }))
}

/// One occurrence of a shared subplan (see the module documentation).
#[derive(Debug)]
pub struct SharedSubplanExec {
    id: u64,
    input: Arc<dyn ExecutionPlan>,
    result: Arc<SharedResult>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SharedSubplanExec {
    pub fn new(id: u64, input: Arc<dyn ExecutionPlan>, result: Arc<SharedResult>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(result.partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        SharedSubplanExec {
            id,
            input,
            result,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for SharedSubplanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "SharedSubplanExec: id={}", self.id)
    }
}

impl ExecutionPlan for SharedSubplanExec {
    fn name(&self) -> &str {
        "SharedSubplanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child(self.name(), &mut children)?;
        Ok(Arc::new(SharedSubplanExec::new(
            self.id,
            input,
            self.result.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let count = self.result.partitions;
        if partition >= count {
            return datafusion::common::internal_err!(
                "SharedSubplanExec has {count} partitions, asked for {partition}"
            );
        }
        let (id, input, result) = (self.id, self.input.clone(), self.result.clone());
        let rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        // 1 on the occurrence that computed the result, 0 on the others
        let computations = MetricBuilder::new(&self.metrics).counter("computed", partition);
        let batches = futures::stream::once(async move {
            let computed = result.get(id, input, context, computations).await?;
            let mine: Vec<RecordBatch> = computed
                .partitions
                .iter()
                .enumerate()
                .filter(|(j, _)| j % count == partition)
                .flat_map(|(_, batches)| batches.iter().cloned())
                .collect();
            rows.add(mine.iter().map(RecordBatch::num_rows).sum());
            Ok::<_, DataFusionError>(futures::stream::iter(mine.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::common::collect;

    /// Four partitions of ten 1000-row batches of one Int64 column.
    fn input() -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = |p: i64, b: i64| {
            let start = (p * 10 + b) * 1000;
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(start..start + 1000))],
            )
            .unwrap()
        };
        let partitions: Vec<Vec<RecordBatch>> = (0..4)
            .map(|p| (0..10).map(|b| batch(p, b)).collect())
            .collect();
        MemorySourceConfig::try_new_exec(&partitions, schema.clone(), None).unwrap()
    }

    fn context(pool: Arc<dyn MemoryPool>) -> Arc<TaskContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .unwrap();
        Arc::new(TaskContext::default().with_runtime(runtime))
    }

    /// Two occurrences of one shared subplan over `input`.
    fn occurrences(partitions: usize) -> [Arc<SharedSubplanExec>; 2] {
        let result = Arc::new(SharedResult::new(partitions));
        let input = input();
        [
            Arc::new(SharedSubplanExec::new(7, input.clone(), result.clone())),
            Arc::new(SharedSubplanExec::new(7, input, result)),
        ]
    }

    async fn rows(exec: Arc<SharedSubplanExec>, ctx: &Arc<TaskContext>) -> DfResult<Vec<i64>> {
        let mut values = vec![];
        for p in 0..exec.result.partitions {
            for batch in collect(exec.execute(p, ctx.clone())?).await? {
                let col = batch.column(0).as_any().downcast_ref::<Int64Array>();
                values.extend(col.unwrap().values().iter().copied());
            }
        }
        values.sort_unstable();
        Ok(values)
    }

    fn computed(exec: &SharedSubplanExec) -> usize {
        exec.metrics()
            .unwrap()
            .sum_by_name("computed")
            .map_or(0, |v| v.as_usize())
    }

    /// Both occurrences give every row once (here over 3 partitions out of
    /// 4), the first computing it, the second reading it; the result is
    /// held in the pool while the plan lives and let go with it.
    #[tokio::test]
    async fn every_occurrence_reads_the_one_result() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 20));
        let ctx = context(pool.clone());
        let [a, b] = occurrences(3);
        assert_eq!(
            rows(a.clone(), &ctx).await.unwrap(),
            (0..40_000).collect::<Vec<_>>()
        );
        assert!(pool.reserved() >= 40_000 * 8, "{}", pool.reserved());
        assert_eq!(
            rows(b.clone(), &ctx).await.unwrap(),
            (0..40_000).collect::<Vec<_>>()
        );
        assert_eq!((computed(&a), computed(&b)), (1, 0));
        drop((a, b));
        assert_eq!(pool.reserved(), 0);
    }

    /// A result over the memory budget fails with the pool's error naming
    /// the node, gives the same error to the other occurrence without
    /// computing again, and holds no memory after.
    #[tokio::test]
    async fn a_result_over_the_budget_fails_every_occurrence_once() {
        // room for a few of the forty 8 KB batches
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(50_000));
        let ctx = context(pool.clone());
        let [a, b] = occurrences(4);
        let first = rows(a.clone(), &ctx).await.unwrap_err().to_string();
        assert!(first.contains("Resources exhausted"), "{first}");
        assert!(first.contains("SharedSubplanExec[7]"), "{first}");
        let second = rows(b.clone(), &ctx).await.unwrap_err().to_string();
        assert_eq!(second, first);
        assert_eq!((computed(&a), computed(&b)), (1, 0));
        assert_eq!(pool.reserved(), 0);
    }
}
