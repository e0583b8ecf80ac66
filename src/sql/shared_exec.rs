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
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect_partitioned,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

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
    _reservation: MemoryReservation,
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

/// All partitions of `input`, held in `context`'s memory pool.
async fn compute(
    id: u64,
    input: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> DfResult<Arc<Computed>> {
    let partitions = collect_partitioned(input, context.clone()).await?;
    let bytes = partitions
        .iter()
        .flatten()
        .map(RecordBatch::get_array_memory_size)
        .sum();
    let reservation =
        MemoryConsumer::new(format!("SharedSubplanExec[{id}]")).register(context.memory_pool());
    reservation.try_grow(bytes)?;
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
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(SharedSubplanExec::new(
                self.id,
                input,
                self.result.clone(),
            ))),
            _ => datafusion::common::internal_err!("SharedSubplanExec has one child"),
        }
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
