//! The `omega` DataFusion catalog: one schema per bucket, one table per
//! dataset of kind `table.delta`, `table.external` or `sql.view`, resolved
//! from the store at each query (no registration, no restart to see new
//! data; a query pins the version it resolved). `omega.system.objects`
//! lists every object of every store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::engine::{Engine, WeakEngine};
use crate::sql::session::SqlEngine;
use crate::store::{ListOptions, StoreError, list_buckets};

/// Kinds that are tables in SQL.
pub const TABLE_KINDS: [&str; 3] = ["table.delta", "table.external", "sql.view"];
/// The schema of catalog-wide system tables.
pub const SYSTEM_SCHEMA: &str = "system";

/// The `omega` catalog. It holds its engine weakly: the engine owns the
/// session that owns this catalog.
#[derive(Debug)]
pub struct OmegaCatalog {
    engine: WeakEngine,
    /// Dataset names per bucket as of the last refresh (for `SHOW TABLES` and
    /// information_schema; resolution itself always asks the store).
    names: Arc<RwLock<HashMap<String, Vec<String>>>>,
}

impl OmegaCatalog {
    pub fn new(engine: WeakEngine) -> Self {
        Self {
            engine,
            names: Default::default(),
        }
    }

    /// Re-reads bucket and table names (cheap: listings only).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let engine = self.engine.engine()?;
        let mut names = HashMap::new();
        for bucket in list_buckets(engine.root()).await? {
            let store = engine.bucket(&bucket)?.datasets();
            let mut tables = Vec::new();
            let listed = match store.list(None, &ListOptions::default()).await {
                // information_schema and SHOW TABLES show only what the
                // session may read
                Err(StoreError::PermissionDenied { .. }) => continue,
                other => other?,
            };
            for m in listed {
                if TABLE_KINDS.contains(&m.kind.as_str()) {
                    tables.push(m.name);
                }
            }
            names.insert(bucket, tables);
        }
        names.entry(engine.bucket_name().to_string()).or_default();
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names;
        Ok(())
    }
}

impl CatalogProvider for OmegaCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        n.push(SYSTEM_SCHEMA.to_string());
        n.sort();
        n
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SYSTEM_SCHEMA {
            return Some(Arc::new(SystemSchema {
                engine: self.engine.clone(),
            }));
        }
        let engine = self.engine.bucket(name).ok()?;
        Some(Arc::new(BucketSchema {
            engine,
            names: self.names.clone(),
        }))
    }
}

tokio::task_local! {
    /// A dataset's record its caller read just now, under the name it then
    /// resolves as a table (see [`with_record`]).
    static RESOLVED: (String, crate::Metadata);
}

/// Runs `f` with `meta` standing in for the record of dataset `name` when
/// `f` resolves `name` as a table in `meta`'s bucket: a caller that has
/// just read the record (to learn its kind) does not read it again. Scoped
/// to `f`: no later resolution takes it, so nothing read here goes stale.
/// A record of another name is not taken: a table's policies go by the
/// name it is resolved under, so `name` is then read as usual.
pub async fn with_record<F: Future>(name: &str, meta: crate::Metadata, f: F) -> F::Output {
    let own = crate::store::NameRef::parse(name).is_ok_and(|r| r.name.as_str() == meta.name);
    if !own {
        return f.await;
    }
    RESOLVED.scope((name.to_string(), meta), f).await
}

/// The tables of one bucket.
#[derive(Debug)]
pub struct BucketSchema {
    engine: WeakEngine,
    names: Arc<RwLock<HashMap<String, Vec<String>>>>,
}

#[async_trait]
impl SchemaProvider for BucketSchema {
    fn table_names(&self) -> Vec<String> {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(self.engine.bucket_name())
            .cloned()
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let engine = self.engine.engine().map_err(external)?;
        let ds = engine.datasets();
        // taken only in the bucket the record is of (a view resolved meanwhile
        // may name the same table in another bucket)
        let resolved = RESOLVED
            .try_with(|(n, m)| {
                (n == name && m.bucket == engine.bucket_name() && m.prefix == "datasets")
                    .then(|| m.clone())
            })
            .ok()
            .flatten();
        let meta = match resolved {
            Some(m) => m,
            None => match ds.metadata(name).await {
                Ok(m) => m,
                // a missing dataset is no table; a missing version is an error worth its message
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(DataFusionError::External(Box::new(e))),
            },
        };
        // a view may use models: load them before it is planned
        if meta.kind == crate::backends::view::KIND
            && let Some(sql) = meta.kind_meta.get("sql").and_then(|v| v.as_str())
        {
            crate::sql::model_functions::preload_view(&engine, sql)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
        }
        let provider = ds
            .table_provider_of(&meta)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if meta.kind == crate::backends::view::KIND {
            // a view's own scans are judged where they are inlined
            return Ok(Some(provider));
        }
        let cx = crate::sql::mixins::MixinContext::from_session(engine.session());
        let hidden = crate::sql::policies::hidden_columns(
            &engine.policy_cache(),
            engine.bucket_name(),
            &meta.name,
            &cx,
        );
        Ok(Some(WithoutHidden::wrap(provider, &hidden)))
    }

    /// From the record alone (information_schema asks this of every table):
    /// a stored view is a VIEW, every other dataset a BASE TABLE.
    async fn table_type(&self, name: &str) -> DfResult<Option<datafusion::datasource::TableType>> {
        let engine = self.engine.engine().map_err(external)?;
        match engine.datasets().metadata(name).await {
            Ok(m) if m.kind == crate::backends::view::KIND => {
                Ok(Some(datafusion::datasource::TableType::View))
            }
            Ok(_) => Ok(Some(datafusion::datasource::TableType::Base)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|n| n == name)
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot register '{name}' directly: use CREATE TABLE … AS or put the dataset"
        )))
    }
}

/// `omega.system.*`: the catalog itself as tables.
#[derive(Debug)]
pub struct SystemSchema {
    engine: WeakEngine,
}

impl SystemSchema {
    /// The tables registered by the layers above (the runtime's).
    fn registered(&self) -> Option<Arc<crate::sql::system::SystemTables>> {
        let engine = self.engine.engine().ok()?;
        engine
            .session()
            .state_ref()
            .read()
            .config()
            .get_extension::<crate::sql::system::SystemTables>()
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = vec!["objects".to_string()];
        names.extend(self.registered().map(|r| r.names()).unwrap_or_default());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let engine = self.engine.engine().map_err(external)?;
        if name == "objects" {
            return objects_table(&engine)
                .await
                .map(|t| Some(Arc::new(t) as Arc<dyn TableProvider>))
                .map_err(|e| DataFusionError::External(Box::new(e)));
        }
        let Some(table) = self.registered().and_then(|r| r.get(name)) else {
            return Ok(None);
        };
        let batch = table.rows(&engine).await.map_err(external)?;
        let mem = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(mem)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|n| n == name)
    }
}

fn external(e: StoreError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// One row per current object of every store of every bucket.
async fn objects_table(engine: &Engine) -> Result<MemTable, StoreError> {
    let mut rows = Vec::new();
    for bucket in list_buckets(engine.root()).await? {
        let b = engine.bucket(&bucket)?;
        for prefix in ["datasets", "models", "jobs"] {
            let opts = ListOptions {
                hidden: true,
                ..Default::default()
            };
            match b.store(prefix)?.list(None, &opts).await {
                Ok(listed) => rows.extend(listed),
                Err(StoreError::PermissionDenied { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let utc = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("bucket", DataType::Utf8, false),
        Field::new("store", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, true),
        Field::new("attributes", DataType::Utf8, false),
        Field::new("uri", DataType::Utf8, false),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
    ]));
    let s = |f: &dyn Fn(&crate::Metadata) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let ts = |f: &dyn Fn(&crate::Metadata) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        s(&|m| m.bucket.clone()),
        s(&|m| m.prefix.clone()),
        s(&|m| m.name.clone()),
        s(&|m| m.kind.clone()),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|m| m.version),
        )),
        Arc::new(UInt64Array::from_iter(
            rows.iter()
                .map(|m| m.kind_meta.get("rows").and_then(|v| v.as_u64())),
        )),
        s(&|m| serde_json::Value::Object(m.attributes.clone()).to_string()),
        s(&|m| m.uri.clone()),
        ts(&|m| m.created.timestamp_micros()),
        ts(&|m| m.modified.timestamp_micros()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| StoreError::table("system.objects", e))?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| StoreError::table("system.objects", e))
}

/// A table without the columns a `HIDE` mask hides from the session: its
/// schema (`SELECT *`, `information_schema.columns`, `DESCRIBE`) does not
/// name them, and a query that does fails as for a column that does not
/// exist. The scan maps the visible columns onto the table's own.
#[derive(Debug)]
struct WithoutHidden {
    inner: Arc<dyn TableProvider>,
    visible: Vec<usize>,
    schema: arrow::datatypes::SchemaRef,
}

impl WithoutHidden {
    fn wrap(inner: Arc<dyn TableProvider>, hidden: &[String]) -> Arc<dyn TableProvider> {
        let schema = inner.schema();
        if !schema.fields().iter().any(|f| hidden.contains(f.name())) {
            return inner;
        }
        let visible: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !hidden.contains(schema.field(*i).name()))
            .collect();
        let projected = Arc::new(Schema::new_with_metadata(
            visible
                .iter()
                .map(|i| schema.field(*i).clone())
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));
        Arc::new(Self {
            inner,
            visible,
            schema: projected,
        })
    }
}

#[async_trait]
impl TableProvider for WithoutHidden {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let mapped: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| self.visible[*i]).collect(),
            None => self.visible.clone(),
        };
        self.inner.scan(state, Some(&mapped), filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::logical_expr::Expr],
    ) -> DfResult<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}
