//! Models on executors: a `predict()` call arrives as a reference to the
//! model version pinned when the client planned the query
//! ([`ModelRef`]); the executor loads that version from the store once and
//! keeps it for every task that scores with it ([`ModelSource`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::models::LoadedModel;
use crate::sql::model_functions::predict_batch;

/// A model version as a plan names it: never "latest", always the version
/// the client resolved when it planned the query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub proba: bool,
    pub bucket: String,
    pub name: String,
    pub version: u64,
}

impl ModelRef {
    fn label(&self) -> String {
        format!("{}/{}@{}", self.bucket, self.name, self.version)
    }
}

/// Loads pinned model versions on an executor. `load` blocks the calling
/// thread (it is called from inside a task, once per version and process).
pub trait ModelSource: std::fmt::Debug + Send + Sync {
    fn load(&self, model: &ModelRef) -> Result<Arc<LoadedModel>, String>;
}

/// How a [`StoreModels`] reads one version from the store.
pub type LoadFn =
    Arc<dyn Fn(ModelRef) -> BoxFuture<'static, Result<LoadedModel, String>> + Send + Sync>;

/// A [`ModelSource`] over the executor's store: loads run on a runtime of
/// their own (a task's thread may be a worker of the executor's runtime,
/// which must not wait on itself), and each version is kept once loaded.
pub struct StoreModels {
    runtime: tokio::runtime::Runtime,
    load: LoadFn,
    loaded: Mutex<HashMap<(String, String, u64), Arc<LoadedModel>>>,
}

impl std::fmt::Debug for StoreModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreModels").finish_non_exhaustive()
    }
}

impl StoreModels {
    pub fn new(load: LoadFn) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("om-model-loader")
            .enable_all()
            .build()?;
        Ok(StoreModels {
            runtime,
            load,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// Model versions loaded so far.
    pub fn loaded(&self) -> usize {
        self.loaded.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl ModelSource for StoreModels {
    fn load(&self, r: &ModelRef) -> Result<Arc<LoadedModel>, String> {
        let key = (r.bucket.clone(), r.name.clone(), r.version);
        if let Some(m) = self.loaded.lock().ok().and_then(|l| l.get(&key).cloned()) {
            return Ok(m);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = (self.load)(r.clone());
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let m = Arc::new(
            rx.recv()
                .map_err(|_| format!("loading model {} was interrupted", r.label()))??,
        );
        if let Ok(mut l) = self.loaded.lock() {
            l.insert(key, m.clone());
        }
        Ok(m)
    }
}

/// `predict`/`predict_proba` as an executor (or scheduler) decodes it: the
/// model is loaded on first use from the [`ModelSource`]; a node without one
/// (the scheduler) only passes the reference on.
pub struct RemotePredictUdf {
    model: ModelRef,
    source: Option<Arc<dyn ModelSource>>,
    loaded: OnceLock<Arc<LoadedModel>>,
    signature: Signature,
}

impl std::fmt::Debug for RemotePredictUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePredictUdf")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl RemotePredictUdf {
    pub fn new(model: ModelRef, source: Option<Arc<dyn ModelSource>>) -> Self {
        RemotePredictUdf {
            model,
            source,
            loaded: OnceLock::new(),
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }

    pub fn model_ref(&self) -> &ModelRef {
        &self.model
    }

    fn model(&self) -> DfResult<Arc<LoadedModel>> {
        if let Some(m) = self.loaded.get() {
            return Ok(m.clone());
        }
        let Some(source) = &self.source else {
            return exec_err!(
                "predict('{}') ran on a node without the store; models run on executors started with `om cluster executor`",
                self.model.label()
            );
        };
        match source.load(&self.model) {
            Ok(m) => Ok(self.loaded.get_or_init(|| m).clone()),
            Err(e) => exec_err!("predict: loading model {}: {e}", self.model.label()),
        }
    }
}

impl PartialEq for RemotePredictUdf {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
    }
}

impl Eq for RemotePredictUdf {}

impl Hash for RemotePredictUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.model.hash(state);
    }
}

impl ScalarUDFImpl for RemotePredictUdf {
    fn name(&self) -> &str {
        if self.model.proba {
            "predict_proba"
        } else {
            "predict"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        // a decoded physical expression carries its planned return field
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let m = self.model()?;
        predict_batch(&m, self.model.proba, args)
    }
}
