//! `smartcore.<algorithm>`: models stored as one immutable MessagePack file
//! per version, with a JSON summary (spec, features, label, classes, where
//! it was trained, metrics) in the version's metadata.

use async_trait::async_trait;
use serde_json::Value;

use super::model::Model;
use super::spec::{Algorithm, KIND_PREFIX};
use crate::backends::document::read_recorded;
use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub struct ModelBackend;

/// Whether a kind is a model kind (known algorithm or not).
pub fn is_model_kind(kind: &str) -> bool {
    kind.starts_with(KIND_PREFIX)
}

#[async_trait]
impl DataBackend for ModelBackend {
    fn kinds(&self) -> Vec<String> {
        Algorithm::ALL.iter().map(|a| a.kind()).collect()
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Any(a) if a.is::<Model>())
    }

    fn referenced(&self, meta: &Metadata) -> Option<Vec<String>> {
        Some(crate::store::backend::recorded_paths(meta, &["path"]))
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        _opts: &PutOptions,
    ) -> Result<Written> {
        let model = match obj {
            Object::Any(a) => a.downcast::<Model>().map_err(|_| {
                StoreError::invalid_input(cx.name, "only a Model can be stored as a smartcore kind")
            })?,
            other => {
                return Err(StoreError::invalid_input(
                    cx.name,
                    format!("{} cannot be stored as a model", other.describe()),
                ));
            }
        };
        let algo = model
            .algorithm()
            .map_err(|e| StoreError::invalid_input(cx.name, e.to_string()))?;
        let body = model
            .to_bytes()
            .map_err(|e| StoreError::invalid_input(cx.name, e.to_string()))?;
        let size = body.len();
        let path = crate::store::backend::write_new_file(cx, "msgpack", body).await?;
        let mut kind_meta = model.summary();
        if let Some(o) = kind_meta.as_object_mut() {
            o.insert("path".into(), Value::from(cx.root.relative(&path)));
            o.insert("size".into(), Value::from(size));
        }
        Ok(Written {
            kind: algo.kind(),
            uri: cx.root.url_of(&path).to_string(),
            kind_meta,
        })
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> Result<Data> {
        let (path, bytes) = read_recorded(cx, meta).await?;
        let model = Model::from_bytes(&bytes).map_err(|reason| StoreError::CorruptData {
            name: meta.name.clone(),
            path: path.to_string(),
            reason: format!("not a readable model (version {}): {reason}", meta.version),
        })?;
        Ok(Data::Any(Box::new(model)))
    }
}
