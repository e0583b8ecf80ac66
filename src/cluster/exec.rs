//! The two plan nodes of a distributed query:
//!
//! - [`ClusterExec`] runs on the client: it stands for a subtree planned
//!   here and sends it to the scheduler as a physical plan, then streams
//!   the result back from the executors.
//! - [`PlanHeaderExec`] is the root of every subtree sent: it carries the
//!   version of omegastore that planned it and the store root it reads, and
//!   every node that decodes it checks both (see the codec).

use std::fmt;
use std::sync::Arc;

use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::{StreamExt, TryStreamExt};

use super::ClusterError;
use super::codec::Header;
use crate::backends::one_child;

/// A pass-through node at the root of a plan sent to a cluster.
#[derive(Debug)]
pub struct PlanHeaderExec {
    header: Header,
    input: Arc<dyn ExecutionPlan>,
}

impl PlanHeaderExec {
    pub fn new(header: Header, input: Arc<dyn ExecutionPlan>) -> Self {
        PlanHeaderExec { header, input }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }
}

impl DisplayAs for PlanHeaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "OmegaPlanHeader: om {}", self.header.version)
    }
}

impl ExecutionPlan for PlanHeaderExec {
    fn name(&self) -> &str {
        "OmegaPlanHeader"
    }

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
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child(self.name(), &mut children)?;
        Ok(Arc::new(PlanHeaderExec::new(self.header.clone(), input)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// A subtree run on the cluster at `scheduler`. Its child is shown by
/// `EXPLAIN` (the distributed part of the plan) but never run here.
#[derive(Debug)]
pub struct ClusterExec {
    scheduler: String,
    plan: Arc<dyn ExecutionPlan>,
    codec: Arc<dyn PhysicalExtensionCodec>,
    properties: Arc<PlanProperties>,
}

impl ClusterExec {
    /// `plan` is sent as it is (it should start with a [`PlanHeaderExec`]).
    pub fn new(
        scheduler: String,
        plan: Arc<dyn ExecutionPlan>,
        codec: Arc<dyn PhysicalExtensionCodec>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(plan.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ClusterExec {
            scheduler,
            plan,
            codec,
            properties,
        }
    }

    pub fn scheduler(&self) -> &str {
        &self.scheduler
    }
}

impl DisplayAs for ClusterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClusterExec: scheduler={}", self.scheduler)
    }
}

impl ExecutionPlan for ClusterExec {
    fn name(&self) -> &str {
        "ClusterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.plan]
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
        let plan = one_child(self.name(), &mut children)?;
        Ok(Arc::new(ClusterExec::new(
            self.scheduler.clone(),
            plan,
            self.codec.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClusterExec has one partition, not {partition}"
            )));
        }
        let scheduler = self.scheduler.clone();
        let plan = self.plan.clone();
        let codec = self.codec.clone();
        let config = context.session_config().clone().upgrade_for_ballista();
        let session_id = context.session_id();
        let fut = async move {
            let ballista = config.ballista_config();
            execute_physical_plan::<PhysicalPlanNode>(
                scheduler.clone(),
                &ballista,
                plan,
                codec.as_ref(),
                session_id,
                config,
            )
            .await
            .map_err(|e| ClusterError::query(&scheduler, e).into_df())
        };
        let scheduler = self.scheduler.clone();
        let stream = futures::stream::once(fut)
            .try_flatten()
            .map(move |r| r.map_err(|e| ClusterError::query(&scheduler, e).into_df()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.plan.schema(),
            stream,
        )))
    }
}
