//! Planning for a cluster: the query is planned here, where the identity is
//! known, exactly as it would be run locally (mixins applied to the logical
//! plan, table versions and models pinned, files listed); then each largest
//! subtree that reads the store's files and can travel is sent to the
//! cluster ([`ClusterExec`]). What cannot travel runs here, above it: data
//! already in this process (the memory cache, `VALUES`, `evaluate()`),
//! `information_schema` and `omega.system.*`, and every write (rows flow
//! back to this process, which commits them through the store's protocol).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::plan_err;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, displayable,
};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;

use super::codec::OmegaPhysicalCodec;
use super::exec::{ClusterExec, PlanHeaderExec};

/// A [`QueryPlanner`] that plans with `local` and sends what can travel to
/// the scheduler at `scheduler` (`http://host:port`).
#[derive(Debug)]
pub struct ClusterPlanner {
    local: Arc<dyn QueryPlanner + Send + Sync>,
    scheduler: String,
    codec: Arc<OmegaPhysicalCodec>,
}

impl ClusterPlanner {
    pub fn new(
        local: Arc<dyn QueryPlanner + Send + Sync>,
        scheduler: String,
        codec: Arc<OmegaPhysicalCodec>,
    ) -> Self {
        ClusterPlanner {
            local,
            scheduler,
            codec,
        }
    }

    /// `plan` with its largest shippable subtrees replaced by [`ClusterExec`]s.
    pub fn distribute(&self, plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !reads_files(&plan) {
            return Ok(plan);
        }
        if !writes(&plan)
            && !holds_data(&plan)
            && let Some(shipped) = self.ship(&plan)?
        {
            return Ok(shipped);
        }
        let children = plan
            .children()
            .into_iter()
            .map(|c| self.distribute(c.clone()))
            .collect::<DfResult<Vec<_>>>()?;
        replace_children_if_necessary(plan, children)
    }

    /// `plan` as a [`ClusterExec`] that keeps its partitioning (a parent
    /// relies on it), or `None` when it cannot travel.
    fn ship(&self, plan: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let partitioning = plan.output_partitioning().clone();
        let n = partitioning.partition_count();
        if n > 1 && plan.output_ordering().is_some() {
            // sorted partitions a parent merges: ship the parts below instead
            return Ok(None);
        }
        let body: Arc<dyn ExecutionPlan> = if n > 1 {
            Arc::new(CoalescePartitionsExec::new(plan.clone()))
        } else {
            plan.clone()
        };
        let sent: Arc<dyn ExecutionPlan> = Arc::new(PlanHeaderExec::new(self.codec.header(), body));
        // encoded once here to know it can travel, and again by Ballista's
        // client when it runs (`execute_physical_plan` takes a plan, not bytes)
        if PhysicalPlanNode::try_from_physical_plan(sent.clone(), self.codec.as_ref()).is_err() {
            return Ok(None);
        }
        let exec: Arc<dyn ExecutionPlan> = Arc::new(ClusterExec::new(
            self.scheduler.clone(),
            sent,
            self.codec.clone(),
        ));
        Ok(Some(match partitioning {
            _ if n == 1 => exec,
            Partitioning::Hash(exprs, n) => Arc::new(RepartitionExec::try_new(
                exec,
                Partitioning::Hash(exprs, n),
            )?),
            _ => Arc::new(RepartitionExec::try_new(
                exec,
                Partitioning::RoundRobinBatch(n),
            )?),
        }))
    }
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let LogicalPlan::Explain(e) = logical_plan {
            // EXPLAIN shows the plan as it will run: what goes to the cluster
            // under ClusterExec, the rest here.
            let plan = Box::pin(self.create_physical_plan(&e.plan, session)).await?;
            let mut plans = e.stringified_plans.clone();
            if !plans
                .iter()
                .any(|p| p.plan_type == PlanType::FinalLogicalPlan)
            {
                plans.push(e.plan.to_stringified(PlanType::FinalLogicalPlan));
            }
            plans.push(StringifiedPlan::new(
                PlanType::FinalPhysicalPlan,
                displayable(plan.as_ref()).indent(e.verbose).to_string(),
            ));
            return Ok(Arc::new(ExplainExec::new(
                Arc::new(e.schema.as_arrow().clone()),
                plans,
                e.verbose,
            )));
        }
        if let LogicalPlan::Analyze(_) = logical_plan {
            return plan_err!(
                "EXPLAIN ANALYZE is not available on a cluster (its metrics stay on the executors); run it locally (without --cluster), or use EXPLAIN to see the distributed plan"
            );
        }
        let local = self
            .local
            .create_physical_plan(logical_plan, session)
            .await?;
        self.distribute(local)
    }
}

/// Whether any scan under `plan` reads files.
fn reads_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let here = plan
        .downcast_ref::<DataSourceExec>()
        .is_some_and(|d| d.data_source().is::<FileScanConfig>());
    here || plan.children().into_iter().any(reads_files)
}

/// Whether any node under `plan` holds rows in this process.
fn holds_data(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let here = plan
        .downcast_ref::<DataSourceExec>()
        .is_some_and(|d| d.data_source().is::<MemorySourceConfig>());
    here || plan.children().into_iter().any(holds_data)
}

/// Whether `plan` or a node under it writes: writes commit here. The store's
/// own writes never appear in a physical plan (`INSERT`, `UPDATE`, CTAS run
/// their query and commit through the store); a `DataSinkExec` is
/// DataFusion's only writing node, refused here should one ever be planned.
fn writes(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let here = plan.downcast_ref::<DataSinkExec>().is_some();
    here || plan.children().into_iter().any(writes)
}
