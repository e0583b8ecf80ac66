//! The extension codecs of a cluster: what omegastore adds to a physical plan
//! (the plan header, pinned `predict()` calls) encoded for the wire, and
//! everything else handed to Ballista's codecs.
//!
//! Every payload this codec writes starts with a one-byte tag naming who
//! encoded it ([`TAG_OMEGA`] or [`TAG_BALLISTA`]), so a decoder never guesses
//! (the flaw the Delta codec for Ballista admits: it tries its own format
//! first and falls back on failure).

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use super::exec::PlanHeaderExec;
use super::models::{ModelRef, ModelSource, RemotePredictUdf};
use crate::sql::model_functions::PredictUdf;

/// The payload is omegastore's.
pub const TAG_OMEGA: u8 = b'O';
/// The payload is Ballista's (or DataFusion's default) codec's.
pub const TAG_BALLISTA: u8 = b'B';

/// What an omegastore payload holds.
#[derive(Debug, Serialize, Deserialize)]
enum Payload {
    Header(Header),
    Predict(ModelRef),
}

/// The header every plan sent to a cluster carries (see [`PlanHeaderExec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `CARGO_PKG_VERSION` of the omegastore that planned the query.
    pub version: String,
    /// The store root whose files the plan reads.
    pub root: String,
}

/// The physical codec of client, scheduler and executors.
///
/// `root` is the store root this process serves (executors: the files they
/// may read; clients: the root they plan over); `None` on a scheduler, which
/// reads no data. `models` loads pinned models (executors only).
#[derive(Debug)]
pub struct OmegaPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
    root: Option<String>,
    models: Option<Arc<dyn ModelSource>>,
}

impl OmegaPhysicalCodec {
    pub fn new(root: Option<String>, models: Option<Arc<dyn ModelSource>>) -> Self {
        OmegaPhysicalCodec {
            inner: BallistaPhysicalExtensionCodec::default(),
            root,
            models,
        }
    }

    /// A header for a plan planned now over this codec's root.
    pub fn header(&self) -> Header {
        Header {
            version: env!("CARGO_PKG_VERSION").to_string(),
            root: self.root.clone().unwrap_or_default(),
        }
    }

    /// A plan made elsewhere is refused unless made by the same omegastore
    /// version over the root this process serves.
    fn check(&self, h: &Header) -> DfResult<()> {
        let mine = env!("CARGO_PKG_VERSION");
        if h.version != mine {
            return Err(DataFusionError::Plan(format!(
                "cluster version mismatch: the query was planned by omegastore {} and this node runs {mine}; run the same `om` on client, scheduler and executors",
                h.version
            )));
        }
        if let Some(root) = &self.root
            && root != &h.root
        {
            return Err(DataFusionError::Plan(format!(
                "cluster root mismatch: the query reads the store {} but this executor serves {root}; start executors with the client's OMEGA_ROOT",
                h.root
            )));
        }
        Ok(())
    }
}

fn tagged(
    tag: u8,
    buf: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> DfResult<()>,
) -> DfResult<()> {
    let start = buf.len();
    buf.push(tag);
    f(buf)?;
    if tag == TAG_BALLISTA && buf.len() == start + 1 {
        // the inner codec wrote nothing: keep "nothing" (DataFusion then
        // resolves the function by name)
        buf.truncate(start);
    }
    Ok(())
}

fn omega_payload(buf: &[u8]) -> DfResult<Payload> {
    serde_json::from_slice(buf).map_err(|e| {
        DataFusionError::Plan(format!(
            "cannot decode an omegastore plan node ({e}); run the same `om` on client, scheduler and executors"
        ))
    })
}

fn omega_bytes(p: &Payload, buf: &mut Vec<u8>) -> DfResult<()> {
    serde_json::to_writer(buf, p).map_err(|e| DataFusionError::Internal(e.to_string()))
}

fn untag(buf: &[u8]) -> DfResult<(u8, &[u8])> {
    match buf.split_first() {
        Some((&t, rest)) if t == TAG_OMEGA || t == TAG_BALLISTA => Ok((t, rest)),
        _ => Err(DataFusionError::Plan(
            "a plan node without omegastore's codec tag: the plan was not made by `om`; run the same `om` on client, scheduler and executors".into(),
        )),
    }
}

impl PhysicalExtensionCodec for OmegaPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        conv: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let (tag, rest) = untag(buf)?;
        if tag == TAG_BALLISTA {
            return self.inner.try_decode(rest, inputs, ctx, conv);
        }
        match omega_payload(rest)? {
            Payload::Header(h) => {
                self.check(&h)?;
                let [child] = inputs else {
                    return Err(DataFusionError::Internal(
                        "plan header without its input".into(),
                    ));
                };
                Ok(Arc::new(PlanHeaderExec::new(h, child.clone())))
            }
            Payload::Predict(_) => Err(DataFusionError::Internal(
                "a predict() call where a plan node was expected".into(),
            )),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        conv: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(h) = node.downcast_ref::<PlanHeaderExec>() {
            return tagged(TAG_OMEGA, buf, |b| {
                omega_bytes(&Payload::Header(h.header().clone()), b)
            });
        }
        tagged(TAG_BALLISTA, buf, |b| self.inner.try_encode(node, b, conv))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        let (tag, rest) = untag(buf)?;
        if tag == TAG_BALLISTA {
            return self.inner.try_decode_udf(name, rest);
        }
        match omega_payload(rest)? {
            Payload::Predict(r) => Ok(Arc::new(ScalarUDF::new_from_impl(RemotePredictUdf::new(
                r,
                self.models.clone(),
            )))),
            Payload::Header(_) => Err(DataFusionError::Internal(format!(
                "a plan header where the function {name} was expected"
            ))),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        let inner = node.inner();
        if let Some(p) = inner.downcast_ref::<PredictUdf>() {
            let Some(m) = p.pinned_model() else {
                return Err(DataFusionError::Plan(format!(
                    "{}() was not pinned to a model version at planning; run it through omegastore's SQL",
                    node.name()
                )));
            };
            let r = ModelRef {
                proba: p.is_proba(),
                bucket: m.meta.bucket.clone(),
                name: m.meta.name.clone(),
                version: m.meta.version,
            };
            return tagged(TAG_OMEGA, buf, |b| omega_bytes(&Payload::Predict(r), b));
        }
        if let Some(p) = inner.downcast_ref::<RemotePredictUdf>() {
            let r = p.model_ref().clone();
            return tagged(TAG_OMEGA, buf, |b| omega_bytes(&Payload::Predict(r), b));
        }
        tagged(TAG_BALLISTA, buf, |b| self.inner.try_encode_udf(node, b))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
        let (_, rest) = untag(buf)?;
        self.inner.try_decode_udaf(name, rest)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        tagged(TAG_BALLISTA, buf, |b| self.inner.try_encode_udaf(node, b))
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
        let (_, rest) = untag(buf)?;
        self.inner.try_decode_udwf(name, rest)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DfResult<()> {
        tagged(TAG_BALLISTA, buf, |b| self.inner.try_encode_udwf(node, b))
    }
}

/// The logical codec: omegastore sends physical plans, so logical plans
/// (Ballista's own use) go to Ballista's codec unchanged.
pub fn logical_codec() -> Arc<BallistaLogicalExtensionCodec> {
    Arc::new(BallistaLogicalExtensionCodec::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::physical_plan::AsExecutionPlan;
    use datafusion_proto::protobuf::PhysicalPlanNode;

    fn sent(header: Header) -> PhysicalPlanNode {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let plan: Arc<dyn ExecutionPlan> = Arc::new(PlanHeaderExec::new(
            header,
            Arc::new(EmptyExec::new(schema)),
        ));
        let client = OmegaPhysicalCodec::new(Some("file:///store/".into()), None);
        PhysicalPlanNode::try_from_physical_plan(plan, &client).unwrap()
    }

    fn decode(node: &PhysicalPlanNode, root: Option<&str>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let executor = OmegaPhysicalCodec::new(root.map(String::from), None);
        node.try_into_physical_plan(&SessionContext::new().task_ctx(), &executor)
    }

    #[test]
    fn a_plan_from_another_version_or_root_is_refused_by_name() {
        let mine = OmegaPhysicalCodec::new(Some("file:///store/".into()), None).header();
        let ok = sent(mine.clone());
        let back = decode(&ok, Some("file:///store/")).unwrap();
        assert_eq!(
            back.downcast_ref::<PlanHeaderExec>().unwrap().header(),
            &mine
        );
        // a scheduler (no root) checks the version only
        decode(&ok, None).unwrap();

        let old = sent(Header {
            version: "0.0.1".into(),
            ..mine.clone()
        });
        let e = decode(&old, None).unwrap_err().to_string();
        assert!(e.contains("version mismatch") && e.contains("0.0.1"), "{e}");

        let e = decode(&ok, Some("s3://other/")).unwrap_err().to_string();
        assert!(
            e.contains("root mismatch") && e.contains("s3://other/"),
            "{e}"
        );
    }

    #[test]
    fn an_untagged_payload_is_refused() {
        let codec = OmegaPhysicalCodec::new(None, None);
        let e = codec
            .try_decode_udf("predict", b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tag"), "{e}");
    }
}
