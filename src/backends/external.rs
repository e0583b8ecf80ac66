//! `table.external`: a Parquet, CSV, JSON-lines or Delta location registered
//! by URL and read in place at every get (nothing is copied). The schema seen
//! at registration is recorded; reads use the location's current contents.

use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use serde_json::{Value, json};
use url::Url;

use super::delta_scan::Writer;
use super::table::{open_table, schema_json};
use crate::store::Metadata;
use crate::store::backend::{
    BackendContext, Data, DataBackend, ExternalFormat, GetOptions, Object, PutOptions, Written,
};
use crate::store::error::{Result, StoreError};

pub const KIND: &str = "table.external";

pub struct ExternalTableBackend;

/// Normalises a location: URLs pass through (file, s3, memory), local paths
/// become absolute `file://` URLs.
pub fn normalize_location(name: &str, location: &str) -> Result<Url> {
    let bad = |reason: String| StoreError::invalid_input(name, reason);
    match Url::parse(location) {
        Ok(u) if u.scheme().len() > 1 => match u.scheme() {
            "file" | "s3" | "memory" => Ok(u),
            s => Err(bad(format!(
                "location scheme '{s}' is not supported; use file://, s3:// or a local path"
            ))),
        },
        _ => {
            let p = std::path::absolute(location)
                .map_err(|e| bad(format!("cannot resolve '{location}': {e}")))?;
            let is_dir = p.is_dir();
            let url = if is_dir {
                Url::from_directory_path(&p)
            } else {
                Url::from_file_path(&p)
            };
            url.map_err(|_| bad(format!("'{location}' is not a usable path")))
        }
    }
}

/// Whether `url` points into `root` (its data, records, anything).
fn inside_root(root: &crate::store::Root, url: &Url) -> bool {
    if url.scheme() != root.base.scheme() || url.host_str() != root.base.host_str() {
        return false;
    }
    // dot segments are already resolved by the URL parser; a local path is
    // also compared after resolving symlinks
    let canonical = |u: &Url| -> String {
        let path = u.path().trim_end_matches('/').to_string();
        if u.scheme() == "file"
            && let Ok(p) = u.to_file_path()
            && let Ok(c) = std::fs::canonicalize(&p)
        {
            return c.display().to_string();
        }
        path
    };
    let root_url = root.dir_url_of(&root.prefix);
    let (inner, outer) = (canonical(url), canonical(&root_url));
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
}

async fn read(
    session: &SessionContext,
    root: &crate::store::Root,
    name: &str,
    url: &Url,
    format: ExternalFormat,
) -> Result<DataFrame> {
    let bad = |e: &dyn std::fmt::Display| StoreError::CorruptData {
        name: name.to_string(),
        path: url.to_string(),
        reason: crate::store::error::one_line(&e.to_string()),
    };
    let u = url.as_str();
    match format {
        ExternalFormat::Parquet => session
            .read_parquet(u, ParquetReadOptions::default())
            .await
            .map_err(|e| bad(&e)),
        ExternalFormat::Csv => session
            .read_csv(u, CsvReadOptions::new().has_header(true))
            .await
            .map_err(|e| bad(&e)),
        ExternalFormat::Json => {
            let ext = std::path::Path::new(url.path())
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| format!(".{e}"))
                .unwrap_or_else(|| ".json".into());
            session
                .read_json(u, JsonReadOptions::default().file_extension(&ext))
                .await
                .map_err(|e| bad(&e))
        }
        ExternalFormat::Delta => {
            let mut dir_url = url.clone();
            if !dir_url.path().ends_with('/') {
                dir_url.set_path(&format!("{}/", dir_url.path()));
            }
            let provider = if dir_url.scheme() == root.base.scheme()
                && dir_url.host_str() == root.base.host_str()
            {
                // on the root's own store (registered in every session): the
                // plain scan; written by anyone, so its statistics are bounds
                let path =
                    object_store::path::Path::from_url_path(dir_url.path()).map_err(|e| bad(&e))?;
                let table = open_table(root, &path, None).await.map_err(|e| bad(&e))?;
                let store_url =
                    datafusion::execution::object_store::ObjectStoreUrl::parse(root.base.as_str())
                        .map_err(|e| bad(&e))?;
                super::delta_scan::provider(&table, &store_url, &path, Writer::Other)
                    .await
                    .map_err(|e| bad(&e))?
            } else {
                let table = deltalake::DeltaTableBuilder::from_url(dir_url)
                    .map_err(|e| bad(&e))?
                    .load()
                    .await
                    .map_err(|e| bad(&e))?;
                super::table::register_store(&table, session).map_err(|e| bad(&e))?;
                table.table_provider().await.map_err(|e| bad(&e))?
            };
            session.read_table(provider).map_err(|e| bad(&e))
        }
    }
}

#[async_trait]
impl DataBackend for ExternalTableBackend {
    fn kinds(&self) -> Vec<String> {
        vec![KIND.into()]
    }

    fn supports(&self, obj: &Object) -> bool {
        matches!(obj, Object::External { .. })
    }

    async fn put(
        &self,
        cx: &BackendContext<'_>,
        obj: Object,
        _previous: Option<&Metadata>,
        _opts: &PutOptions,
    ) -> Result<Written> {
        let Object::External { url, format } = obj else {
            return Err(StoreError::invalid_input(
                cx.name,
                "not an external location",
            ));
        };
        let url = normalize_location(cx.name.as_str(), &url)?;
        if inside_root(cx.root, &url) {
            // it would re-expose stored data without its policies
            return Err(StoreError::invalid_input(
                cx.name,
                format!(
                    "location '{url}' is inside the store's own root; read the dataset by name instead (an external table cannot point into the store)"
                ),
            ));
        }
        // Reading the schema now makes a wrong location fail at registration.
        let df = read(cx.session, cx.root, cx.name.as_str(), &url, format).await?;
        let schema = df.schema().inner().clone();
        Ok(Written {
            kind: KIND.into(),
            uri: url.to_string(),
            kind_meta: json!({ "url": url.to_string(), "format": format, "schema": schema_json(&schema) }),
        })
    }

    async fn get(
        &self,
        cx: &BackendContext<'_>,
        meta: &Metadata,
        opts: &GetOptions,
    ) -> Result<Data> {
        let corrupt = |reason: &str| StoreError::CorruptMetadata {
            name: meta.name.clone(),
            path: meta.uri.clone(),
            reason: reason.to_string(),
        };
        let url = meta
            .kind_meta
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt("no url recorded"))?;
        let url = Url::parse(url).map_err(|e| corrupt(&e.to_string()))?;
        let format: ExternalFormat = meta
            .kind_meta
            .get("format")
            .cloned()
            .and_then(|f| serde_json::from_value(f).ok())
            .ok_or_else(|| corrupt("no format recorded"))?;
        let _ = opts; // applied by the store, above the named scan
        let df = read(cx.session, cx.root, &meta.name, &url, format).await?;
        // Rescan the same source under the dataset's name.
        let provider = match df.logical_plan() {
            datafusion::logical_expr::LogicalPlan::TableScan(scan) => {
                datafusion::datasource::source_as_provider(&scan.source)
                    .map_err(|e| StoreError::table(&meta.name, e))?
            }
            _ => df.into_view(),
        };
        Ok(Data::Table(cx.named_scan(provider)?))
    }

    async fn drop_data(&self, _cx: &BackendContext<'_>, _versions: &[Metadata]) -> Result<()> {
        // The data belongs to whoever owns the location; only the record goes.
        Ok(())
    }
}
