//! `json.document`: any JSON value, stored as one immutable file per version.

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, FileFormat, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub const KIND: &str = "json.document";

pub struct DocumentBackend;

/// The data path a version recorded in `kind_meta.path`.
pub(crate) fn recorded_path(
    cx: &BackendContext<'_>,
    meta: &Metadata,
) -> Result<object_store::path::Path> {
    let rel = meta
        .kind_meta
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| StoreError::CorruptMetadata {
            name: meta.name.clone(),
            path: meta.uri.clone(),
            reason: format!("version {} records no data path", meta.version),
        })?;
    cx.root.resolve(rel)
}

/// Opens the data file a version recorded; a missing file is
/// [`StoreError::MissingData`] naming the object, version and path.
pub(crate) async fn open_recorded(
    cx: &BackendContext<'_>,
    meta: &Metadata,
) -> Result<(object_store::path::Path, object_store::GetResult)> {
    let path = recorded_path(cx, meta)?;
    match cx.root.store.get(&path).await {
        Ok(r) => Ok((path, r)),
        Err(object_store::Error::NotFound { .. }) => Err(StoreError::MissingData {
            name: meta.name.clone(),
            version: meta.version,
            path: path.to_string(),
        }),
        Err(e) => Err(StoreError::object_store(&path, e)),
    }
}

/// The whole data file a version recorded, in memory.
pub(crate) async fn read_recorded(
    cx: &BackendContext<'_>,
    meta: &Metadata,
) -> Result<(object_store::path::Path, Bytes)> {
    let (path, result) = open_recorded(cx, meta).await?;
    let bytes = result
        .bytes()
        .await
        .map_err(|e| StoreError::object_store(&path, e))?;
    Ok((path, bytes))
}

#[async_trait]
impl DataBackend for DocumentBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Document(_))
            || matches!(
                obj,
                Object::File {
                    format: FileFormat::Json,
                    ..
                }
            )
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
        let value = match obj {
            Object::Document(v) => v,
            Object::File { path, .. } => {
                let text = tokio::fs::read(&path)
                    .await
                    .map_err(|e| StoreError::io(&path, e))?;
                serde_json::from_slice(&text).map_err(|e| {
                    StoreError::invalid_input(
                        cx.name,
                        format!("{} is not valid JSON: {e}", path.display()),
                    )
                })?
            }
            other => {
                return Err(StoreError::invalid_input(
                    cx.name,
                    format!("{} cannot be stored as {KIND}", other.describe()),
                ));
            }
        };
        let body = serde_json::to_vec(&value)
            .map_err(|e| StoreError::invalid_input(cx.name, e.to_string()))?;
        let size = body.len();
        let path = crate::store::backend::write_new_file(cx, "json", body).await?;
        Ok(Written {
            kind: KIND.into(),
            uri: cx.root.url_of(&path).to_string(),
            kind_meta: json!({
                "path": cx.root.relative(&path),
                "size": size,
                "type": json_type(&value),
            }),
        })
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> Result<Data> {
        let (path, bytes) = read_recorded(cx, meta).await?;
        let value = serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptData {
            name: meta.name.clone(),
            path: path.to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Ok(Data::Document(value))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
