//! `sql.script`: a stored SQL job — its text and its declared parameters,
//! versioned like any object (`nightly@3`). The runtime checks and runs it;
//! this backend only records it (no data files).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub const KIND: &str = "sql.script";

/// A declared parameter: `:name` in the script, of an SQL type, with an
/// optional default (as text, parsed by the type when the job runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptParam {
    pub name: String,
    #[serde(rename = "type")]
    pub sql_type: String,
    #[serde(default)]
    pub default: Option<String>,
}

/// A job: SQL statements run in order, with named parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlScript {
    pub sql: String,
    pub params: Vec<ScriptParam>,
}

impl SqlScript {
    /// The script recorded in `meta`.
    pub fn from_meta(meta: &Metadata) -> Result<Self> {
        serde_json::from_value(meta.kind_meta.clone()).map_err(|e| StoreError::CorruptMetadata {
            name: meta.name.clone(),
            path: meta.uri.clone(),
            reason: format!("not a job script: {e}"),
        })
    }
}

pub struct ScriptBackend;

#[async_trait]
impl DataBackend for ScriptBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Any(v) if v.is::<SqlScript>())
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        _opts: &PutOptions,
    ) -> Result<Written> {
        let script = match obj {
            Object::Any(v) => v.downcast::<SqlScript>().ok(),
            _ => None,
        }
        .ok_or_else(|| StoreError::invalid_input(cx.name, "not a job script"))?;
        Ok(Written {
            kind: KIND.into(),
            uri: String::new(),
            kind_meta: json!(*script),
        })
    }

    async fn get(
        &self,
        _cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> Result<Data> {
        Ok(Data::Any(Box::new(SqlScript::from_meta(meta)?)))
    }
}
