//! `sql.view`: a stored query, resolved at every read (a view over whatever
//! the tables it names hold then). Versioned like any object.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub const KIND: &str = "sql.view";

/// The definition of a view: one SQL query.
#[derive(Debug, Clone)]
pub struct SqlView {
    pub sql: String,
}

pub struct ViewBackend;

#[async_trait]
impl DataBackend for ViewBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::Any(v) if v.is::<SqlView>())
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        _opts: &PutOptions,
    ) -> Result<Written> {
        let Object::Any(v) = obj else {
            return Err(StoreError::invalid_input(cx.name, "not a view"));
        };
        let view = v
            .downcast_ref::<SqlView>()
            .ok_or_else(|| StoreError::invalid_input(cx.name, "not a view"))?;
        // Planning it now rejects a view over missing tables or bad SQL.
        let df = cx.session.sql(&view.sql).await.map_err(|e| {
            StoreError::invalid_input(
                cx.name,
                format!("the view's query does not plan: {}", e.strip_backtrace()),
            )
        })?;
        Ok(Written {
            kind: KIND.into(),
            uri: String::new(),
            kind_meta: json!({ "sql": view.sql, "schema": super::table::schema_json(df.schema().inner()) }),
        })
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        _opts: &GetOptions,
    ) -> Result<Data> {
        let sql = meta
            .kind_meta
            .get("sql")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::CorruptMetadata {
                name: meta.name.clone(),
                path: meta.uri.clone(),
                reason: "no query recorded".into(),
            })?;
        let df = cx.session.sql(sql).await.map_err(|e| {
            StoreError::table(
                &meta.name,
                format!("view query failed: {}", e.strip_backtrace()),
            )
        })?;
        Ok(Data::Table(df))
    }

    async fn drop_data(&self, _cx: &BackendContext<'_>, _versions: &[Metadata]) -> Result<()> {
        Ok(())
    }
}
