//! A model as stored: its spec and, once fitted, everything predict needs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{ModelError, Result};
use super::estimator::Estimator;
use super::features::{FeatureEncoder, LabelEncoder, Matrix};
use super::metrics::Metrics;
use super::spec::{Algorithm, ModelSpec};
use crate::store::Metadata;

/// Version of the stored model format; a newer one is refused with advice.
pub const FORMAT_VERSION: u32 = 1;

/// Where a fit's rows came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedOn {
    /// The dataset and its version, when fitted from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The query, when fitted from SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    pub rows: usize,
}

/// One grid point of a hyperparameter search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRow {
    pub params: Map<String, Value>,
    pub mean_score: f64,
    pub std_score: f64,
    pub fold_scores: Vec<f64>,
    pub fit_seconds: f64,
}

/// What a fit learned.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fitted {
    pub features: FeatureEncoder,
    pub label: Option<LabelEncoder>,
    pub estimator: Estimator,
    pub trained_on: TrainedOn,
    pub fitted_at: DateTime<Utc>,
    pub fit_seconds: f64,
    /// Scores on the training rows.
    pub metrics: Metrics,
    /// The grid that chose these hyperparameters, when a search did.
    #[serde(default)]
    pub search: Option<(String, Vec<SearchRow>)>,
}

/// A stored model.
#[derive(Debug, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    pub spec: ModelSpec,
    pub fitted: Option<Fitted>,
}

impl Model {
    pub fn new(spec: ModelSpec) -> Self {
        Model {
            format: FORMAT_VERSION,
            spec,
            fitted: None,
        }
    }

    pub fn algorithm(&self) -> Result<Algorithm> {
        self.spec.algorithm()
    }

    /// Serialized state (MessagePack with field names, so kernels and
    /// smartcore structs round-trip).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self)
            .map_err(|e| ModelError::Usage(format!("cannot serialize the model: {e}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let m: Model = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.format > FORMAT_VERSION {
            return Err(format!(
                "stored with model format {}, this omegastore reads up to {FORMAT_VERSION}; upgrade omegastore",
                m.format
            ));
        }
        if let Some(f) = &m.fitted {
            let classes = f
                .label
                .as_ref()
                .and_then(|l| l.classes.as_ref())
                .map_or(0, Vec::len);
            f.estimator.validate(f.features.width(), classes)?;
        }
        Ok(m)
    }

    /// The JSON summary kept in the version's metadata (what `om models info`
    /// shows without loading the state).
    pub fn summary(&self) -> Value {
        let resolved = self
            .spec
            .resolved()
            .map(|p| p.to_json())
            .unwrap_or_default();
        let mut out = json!({
            "algorithm": self.spec.algorithm,
            "params": resolved,
            "preprocessing": self.spec.preprocessing,
            "fitted": self.fitted.is_some(),
        });
        if let Some(f) = &self.fitted {
            let o = out.as_object_mut().expect("object");
            o.insert(
                "features".into(),
                Value::Array(
                    f.features
                        .columns
                        .iter()
                        .map(|c| json!({"name": c.name, "type": c.data_type}))
                        .collect(),
                ),
            );
            if let Some(l) = &f.label {
                o.insert("label".into(), json!({"name": l.name, "type": l.data_type}));
                if let Some(c) = &l.classes {
                    o.insert("classes".into(), json!(c));
                }
            }
            o.insert("trained_on".into(), json!(f.trained_on));
            o.insert("fitted_at".into(), json!(f.fitted_at));
            o.insert("fit_seconds".into(), json!(f.fit_seconds));
            o.insert(
                "metrics".into(),
                Value::Object(
                    f.metrics
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect(),
                ),
            );
            if let Some((metric, rows)) = &f.search {
                o.insert("search".into(), json!({"metric": metric, "results": rows}));
            }
            if let Some((coef, intercept)) = f.estimator.coefficients() {
                let names = f.features.output_names();
                o.insert(
                    "coefficients".into(),
                    Value::Object(
                        names
                            .into_iter()
                            .zip(coef)
                            .map(|(n, c)| (n, json!(c)))
                            .collect(),
                    ),
                );
                o.insert("intercept".into(), json!(intercept));
            }
        }
        out
    }
}

/// A model version loaded for use.
#[derive(Debug)]
pub struct LoadedModel {
    pub meta: Metadata,
    pub model: Model,
}

impl LoadedModel {
    pub fn algorithm(&self) -> Result<Algorithm> {
        self.model.algorithm()
    }

    /// The fitted state, or [`ModelError::NotFitted`].
    pub fn fitted(&self) -> Result<&Fitted> {
        self.model
            .fitted
            .as_ref()
            .ok_or_else(|| ModelError::NotFitted {
                name: self.meta.name.clone(),
                version: self.meta.version,
            })
    }

    /// `name@version`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}", self.meta.name, self.meta.version)
    }

    pub(crate) fn predict_err(&self, what: &str, reason: String) -> ModelError {
        ModelError::Predict {
            name: self.label(),
            what: what.into(),
            reason,
        }
    }

    pub(crate) fn unsupported(&self, what: &str, reason: &str) -> ModelError {
        ModelError::Unsupported {
            name: self.label(),
            algorithm: self.model.spec.algorithm.clone(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Class probabilities of an encoded matrix.
    pub fn proba(&self, x: &Matrix) -> Result<Matrix> {
        let f = self.fitted()?;
        if !self.algorithm()?.has_proba() {
            return Err(self.unsupported(
                "predict_proba",
                "it gives no class probabilities; use logistic_regression, a tree, a forest, knn_classifier or gaussian_nb",
            ));
        }
        f.estimator
            .predict_proba(x)
            .map_err(|e| self.predict_err("predict_proba", e))
    }
}
