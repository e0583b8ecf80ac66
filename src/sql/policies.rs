//! Built-in mixins declared as data: row filters, column masks, bucket
//! isolation (read side, as plan rewrites) and schema contracts (write side).
//!
//! Policies are JSON documents in each bucket's `policies` store, one per
//! dataset (named like the dataset); bucket settings (isolation, grants)
//! are the document `bucket` of the bucket's `settings` store, so no dataset
//! name can collide with them. They persist and apply to every client of the
//! store. Before each statement the cache is reloaded; if that fails, the
//! statement fails (fail closed).
//!
//! Access control ([`AccessControl`]): a role holds one privilege per bucket
//! (`read` ⊂ `write` ⊂ `admin`, by `GRANT`); the store asks before every
//! read and write. The owner (a session with no fixed identity and no
//! roles) is admin of every bucket. Admins are not subject to row filters
//! and masks, except those naming one of their roles explicitly.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, BooleanArray};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, DataFusionError, ScalarValue, TableReference};
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, Projection, cast, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::mixins::{Mixin, MixinContext};
use crate::backends::document::DocumentBackend;
use crate::store::access_mark;
use crate::store::error::{Result, StoreError};
use crate::store::fresh::Fresh;
use crate::store::hooks::{ReadHook, WriteHook, WriteTarget};
use crate::store::listing_index::RecordStamp;
use crate::store::{
    Access, AccessHook, BackendRegistry, Data, ObjectName, PutOptions, Root, Store, list_buckets,
};

pub use crate::store::access_mark::{POLICY_STORE, SETTINGS_STORE};
/// The document with bucket-wide settings (in [`SETTINGS_STORE`]).
pub const BUCKET_DOC: &str = "bucket";

/// A row filter: rows of the dataset that `role` may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowFilter {
    pub name: String,
    pub role: String,
    /// A SQL predicate over the dataset's columns.
    pub predicate: String,
}

/// What a column mask does to a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskAction {
    /// The column does not exist for the role.
    Hide,
    /// Every value reads as NULL.
    Null,
    /// Values read as a hex SHA-256 digest (string columns).
    Hash,
}

/// A column mask for a role (`*` for everyone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnMask {
    pub name: String,
    pub role: String,
    pub column: String,
    pub action: MaskAction,
}

/// One declared column of a schema contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractColumn {
    pub name: String,
    /// A type family: `int`, `float`, `string`, `bool`, `timestamp`, `date`.
    #[serde(rename = "type", default)]
    pub data_type: Option<String>,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Allowed values (compared as SQL literals).
    #[serde(default)]
    pub allowed: Option<Vec<Value>>,
}

fn yes() -> bool {
    true
}

/// Columns every write to a dataset must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Contract {
    pub columns: Vec<ContractColumn>,
}

/// All policies of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DatasetPolicy {
    #[serde(default)]
    pub row_filters: Vec<RowFilter>,
    #[serde(default)]
    pub column_masks: Vec<ColumnMask>,
    #[serde(default)]
    pub contract: Option<Contract>,
}

/// Bucket-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BucketPolicy {
    /// Sessions on this bucket cannot read or write other buckets.
    #[serde(default)]
    pub isolated: bool,
    /// The privilege each role holds on this bucket.
    #[serde(default)]
    pub grants: std::collections::BTreeMap<String, Access>,
}

type DocKey = (String, &'static str, String);

/// One store's listing in a reload: its bucket, prefix, whether it holds
/// bucket settings, the store and its head records.
type Listed<'a> = (
    &'a String,
    &'static str,
    bool,
    Store,
    Vec<(ObjectName, RecordStamp)>,
);

/// How long a full load of the policies stands while the access mark is
/// unchanged: what changed without touching it (files copied into the root,
/// a writer that failed to touch it) applies within this time.
pub const FULL_RELOAD_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Policy listings a reload runs at once.
const CONCURRENT_LISTINGS: usize = 16;

/// How long a bucket listing handed over by the store's open stands in for
/// the first reload's own (see [`PolicyCache::seed_buckets`]).
const SEED_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A full load of the policies, as applied.
struct Loaded {
    /// The access mark read before it began.
    mark: Option<String>,
    began: std::time::Instant,
    /// Its number: of loads running at once, an older one finishing later
    /// (a background load) is dropped.
    number: u64,
}

/// The policies of every bucket of a root, as last loaded. It reads the
/// policy documents with a session of its own (a plain one: documents need
/// no catalog), so it holds nothing of the sessions whose mixins use it.
pub struct PolicyCache {
    datasets: RwLock<HashMap<(String, String), DatasetPolicy>>,
    buckets: RwLock<HashMap<String, BucketPolicy>>,
    /// Reloads, shared by concurrent statements.
    reloads: Fresh<()>,
    /// The documents read so far, by (bucket, store, name), with the head
    /// record they were read from: a reload reads only what changed.
    docs: std::sync::Mutex<HashMap<DocKey, (RecordStamp, Option<Value>)>>,
    /// A bucket listing the store's open just made, with when it was made.
    seed: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
    /// The buckets the last reload found: the next lists their stores while
    /// it lists the buckets (see [`PolicyCache::reload`]).
    known_buckets: std::sync::Mutex<Option<Vec<String>>>,
    /// The last full load applied (`None`: none yet).
    loaded: std::sync::Mutex<Option<Loaded>>,
    /// Full loads begun so far; each is numbered by this count.
    loads: std::sync::atomic::AtomicU64,
    /// Whether a background full load is under way.
    background: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// This cache, for the background load to hold.
    this: std::sync::Weak<PolicyCache>,
    root: Root,
    session: SessionContext,
    registry: Arc<BackendRegistry>,
}

impl PolicyCache {
    pub fn new(root: Root) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            datasets: Default::default(),
            buckets: Default::default(),
            reloads: Default::default(),
            docs: Default::default(),
            seed: Default::default(),
            known_buckets: Default::default(),
            loaded: Default::default(),
            loads: Default::default(),
            background: Default::default(),
            this: this.clone(),
            root,
            session: SessionContext::new(),
            registry: Arc::new(BackendRegistry::with_backends(vec![Arc::new(
                DocumentBackend,
            )])),
        })
    }

    /// Hands over the bucket listing that opening the store made (its
    /// reachability check): the first reload uses it instead of listing
    /// the buckets again, if it comes within [`SEED_FRESH`] — one request
    /// fewer per process on S3; a later reload lists for itself.
    pub fn seed_buckets(&self, names: Vec<String>) {
        *self.seed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), names));
    }

    /// The contract of `bucket.name`, if it has one.
    pub fn contract(&self, bucket: &str, name: &str) -> Option<Contract> {
        self.get(bucket, name).and_then(|p| p.contract)
    }

    fn get(&self, bucket: &str, name: &str) -> Option<DatasetPolicy> {
        self.datasets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(bucket.to_string(), name.to_string()))
            .cloned()
    }

    fn is_isolated(&self, bucket: &str) -> bool {
        self.buckets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)
            .is_some_and(|b| b.isolated)
    }

    /// The highest privilege any of `roles` holds on `bucket`.
    pub fn privilege(&self, bucket: &str, roles: &[String]) -> Option<Access> {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        let grants = &buckets.get(bucket)?.grants;
        roles.iter().filter_map(|r| grants.get(r).copied()).max()
    }

    /// Whether the session `cx` describes administers `bucket`.
    pub fn is_admin(&self, bucket: &str, cx: &MixinContext) -> bool {
        cx.owner || self.privilege(bucket, &cx.roles) == Some(Access::Admin)
    }

    /// Whether a filter or mask declared for `role` on a dataset of
    /// `bucket` applies to `cx`: to an admin only when it names one of its
    /// roles explicitly, to anyone else when it names one of its roles or
    /// `*`.
    pub fn applies(&self, bucket: &str, cx: &MixinContext, role: &str) -> bool {
        if self.is_admin(bucket, cx) {
            cx.roles.iter().any(|r| r == role)
        } else {
            cx.has_role(role)
        }
    }

    /// The settings of `bucket` as last loaded.
    pub fn bucket_policy(&self, bucket: &str) -> BucketPolicy {
        self.buckets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)
            .cloned()
            .unwrap_or_default()
    }

    /// Loads the policies if they never were (a session used directly,
    /// before any statement): reads never run on an empty cache.
    pub async fn ensure_loaded(&self) -> Result<()> {
        if self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        self.reload().await
    }

    /// Brings the policies up to date with the store: reads the root's
    /// access mark (see [`crate::store::access_mark`]) and, when it is not
    /// the one the last full load began under, loads every bucket's
    /// policies again. So a statement costs one small read while nobody
    /// changes a policy, and a change made through any omegastore client
    /// applies to the next. A load older than [`FULL_RELOAD_AFTER`] under
    /// an unchanged mark is renewed in the background (for changes made
    /// behind omegastore's back): statements do not wait for it.
    ///
    /// Concurrent callers share reloads ([`Fresh`]): a caller returns once
    /// a reload that began after it called has succeeded, so what it sees
    /// is never older than the store was when it asked.
    pub async fn reload(&self) -> Result<()> {
        self.reloads.get(|| self.refresh()).await
    }

    async fn refresh(&self) -> Result<()> {
        let mark = access_mark::read(&self.root).await?;
        let (current, old) = match &*self.loaded.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(l) if l.mark == mark => (true, l.began.elapsed() >= FULL_RELOAD_AFTER),
            _ => (false, false),
        };
        if !current {
            return self.load_all(mark).await;
        }
        if old {
            self.load_in_background(mark);
        }
        Ok(())
    }

    /// Starts a full load on a task of its own unless one is under way.
    fn load_in_background(&self, mark: Option<String>) {
        use std::sync::atomic::Ordering;
        /// Clears the flag however the task ends (its runtime may be shut
        /// down with it).
        struct Running(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let running = Running(self.background.clone());
        let Some(this) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _running = running;
            if let Err(e) = this.load_all(mark).await {
                tracing::warn!(error = %e, "a background reload of the policies failed; the next statement starts another");
            }
        });
    }

    /// The head records of each bucket's policy and settings stores (one
    /// listing per store finds each document's newest version, no listing
    /// per name); the listings run concurrently, since every statement
    /// waits for them.
    async fn list_stores<'a>(&self, names: &'a [String]) -> Result<Vec<Listed<'a>>> {
        let stores: Vec<(&String, &'static str, bool)> = names
            .iter()
            .flat_map(|b| [(b, POLICY_STORE, false), (b, SETTINGS_STORE, true)])
            .collect();
        let mut listed = Vec::with_capacity(stores.len());
        for chunk in stores.chunks(CONCURRENT_LISTINGS) {
            // boxed as `Send` futures: spelled out, the combinators' borrows
            // defeat the compiler's `Send` proof of the callers' futures
            let listings: Vec<futures::future::BoxFuture<'_, Result<Listed<'_>>>> = chunk
                .iter()
                .map(|&(bucket, prefix, settings)| {
                    let store = self.plain_store(bucket, prefix);
                    Box::pin(async move {
                        let heads = store.catalog().head_records().await?;
                        Ok((bucket, prefix, settings, store, heads))
                    }) as _
                })
                .collect();
            listed.extend(futures::future::try_join_all(listings).await?);
        }
        Ok(listed)
    }

    /// A full load: one listing of the buckets and one of each bucket's
    /// policy and settings records, all at once (the stores of the buckets
    /// the last load found; the listings are made again, after, for a
    /// bucket list that changed); a document is read again only when its
    /// head record is not the one it was read from.
    ///
    /// `mark`: the access mark read before it began. Of loads running at
    /// once, the newest begun wins: one finishing after a newer one applied
    /// is dropped.
    async fn load_all(&self, mark: Option<String>) -> Result<()> {
        let number = self.loads.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        let began = std::time::Instant::now();
        let mut datasets = HashMap::new();
        let mut buckets = HashMap::new();
        let mut seen = HashMap::new();
        let seeded = self.seed.lock().unwrap_or_else(|e| e.into_inner()).take();
        let known_buckets = self
            .known_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let names: Vec<String>;
        let mut early = None;
        match (seeded, known_buckets.as_deref()) {
            (Some((at, seeded)), _) if at.elapsed() < SEED_FRESH => names = seeded,
            (_, Some(known)) => {
                let (listed_names, listed) =
                    futures::future::try_join(list_buckets(&self.root), self.list_stores(known))
                        .await?;
                if listed_names == known {
                    early = Some(listed);
                }
                names = listed_names;
            }
            (_, None) => names = list_buckets(&self.root).await?,
        }
        let listed = match early {
            Some(listed) => listed,
            None => self.list_stores(&names).await?,
        };
        let mut known = std::mem::take(&mut *self.docs.lock().unwrap_or_else(|e| e.into_inner()));
        for (bucket, prefix, settings, store, heads) in listed {
            for (name, stamp) in heads {
                if settings && name.as_str() != BUCKET_DOC {
                    continue;
                }
                let key = (bucket.clone(), prefix, name.to_string());
                let doc = match known.remove(&key) {
                    Some((known, doc)) if known == stamp => doc,
                    _ => self.read_policy(&store, &name, stamp.version).await?,
                };
                let path = store.catalog().record_path(&name, stamp.version);
                seen.insert(key, (stamp, doc.clone()));
                let Some(doc) = doc else {
                    continue;
                };
                let bad = |e: serde_json::Error| StoreError::CorruptMetadata {
                    name: format!("{prefix}/{name}"),
                    path: path.to_string(),
                    reason: format!("not a valid policy: {e}"),
                };
                if settings {
                    let b: BucketPolicy = serde_json::from_value(doc).map_err(bad)?;
                    buckets.insert(bucket.clone(), b);
                } else {
                    let p: DatasetPolicy = serde_json::from_value(doc).map_err(bad)?;
                    datasets.insert((bucket.clone(), name.to_string()), p);
                }
            }
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.as_ref().is_some_and(|l| l.number > number) {
            return Ok(());
        }
        *self.docs.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        *self.datasets.write().unwrap_or_else(|e| e.into_inner()) = datasets;
        *self.buckets.write().unwrap_or_else(|e| e.into_inner()) = buckets;
        *self.known_buckets.lock().unwrap_or_else(|e| e.into_inner()) = Some(names);
        *loaded = Some(Loaded {
            mark,
            began,
            number,
        });
        Ok(())
    }

    /// The document a head record holds (`None`: a tombstone or not a
    /// document).
    async fn read_policy(
        &self,
        store: &Store,
        name: &ObjectName,
        version: u64,
    ) -> Result<Option<Value>> {
        let meta = match store.catalog().read(name, version).await? {
            Some(m) if !m.is_tombstone() => m,
            _ => return Ok(None),
        };
        Ok(match store.get_version(&meta, &Default::default()).await? {
            Data::Document(v) => Some(v),
            _ => None,
        })
    }

    /// A store of policy documents that asks no access hooks (the cache
    /// reads on behalf of the rules, not of a user).
    fn plain_store(&self, bucket: &str, prefix: &str) -> Store {
        Store::new(
            crate::store::Catalog::new(self.root.clone(), bucket, prefix),
            self.registry.clone(),
            self.session.clone(),
            Arc::new(crate::store::Hooks::default()),
        )
    }
}

#[async_trait]
impl ReadHook for PolicyCache {
    fn name(&self) -> &str {
        "policies"
    }
    async fn prepare(&self) -> Result<()> {
        self.reload().await
    }
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache").finish_non_exhaustive()
    }
}

/// Reads and changes the policies of one bucket. Every edit is a
/// read-modify-write committed only on top of the version it read
/// (`if_head`), retried on a conflict: two concurrent edits both land.
pub struct Policies {
    store: Store,
    settings: Store,
    cache: Arc<PolicyCache>,
}

/// Attempts of one policy edit under contention.
const EDIT_ATTEMPTS: usize = 50;

impl Policies {
    pub(crate) fn new(store: Store, settings: Store, cache: Arc<PolicyCache>) -> Self {
        Self {
            store,
            settings,
            cache,
        }
    }

    /// The policies of `dataset` (empty when none are declared).
    pub async fn get(&self, dataset: &str) -> Result<DatasetPolicy> {
        Ok(read_doc(&self.store, dataset).await?.1)
    }

    /// Replaces the policies of `dataset`.
    pub async fn set(&self, dataset: &str, policy: &DatasetPolicy) -> Result<()> {
        let policy = policy.clone();
        self.update(dataset, move |p| {
            *p = policy.clone();
            Ok(())
        })
        .await
    }

    /// Changes the policies of `dataset` with `f` (which may run again if
    /// another edit landed first).
    pub async fn update(
        &self,
        dataset: &str,
        f: impl Fn(&mut DatasetPolicy) -> Result<()>,
    ) -> Result<()> {
        edit(&self.store, dataset, |p: &mut DatasetPolicy| {
            f(p)?;
            for r in &p.row_filters {
                check_predicate(dataset, &r.predicate)?;
            }
            Ok(())
        })
        .await?;
        self.cache.reload().await
    }

    /// The bucket's settings (isolation, grants).
    pub async fn bucket_settings(&self) -> Result<BucketPolicy> {
        Ok(read_doc(&self.settings, BUCKET_DOC).await?.1)
    }

    /// Changes the bucket's settings with `f`.
    pub async fn update_bucket(&self, f: impl Fn(&mut BucketPolicy) -> Result<()>) -> Result<()> {
        edit(&self.settings, BUCKET_DOC, f).await?;
        self.cache.reload().await
    }

    /// Isolates (or frees) this bucket: sessions on it cannot read or
    /// write others.
    pub async fn set_isolated(&self, isolated: bool) -> Result<()> {
        self.update_bucket(|b| {
            b.isolated = isolated;
            Ok(())
        })
        .await
    }
}

/// The newest version of a policy document (0 when there is none) and its
/// content (the default when there is none).
async fn read_doc<T: serde::de::DeserializeOwned + Default>(
    store: &Store,
    name: &str,
) -> Result<(u64, T)> {
    let n = ObjectName::new(name)?;
    let Some(head) = store.catalog().head(&n).await? else {
        return Ok((0, T::default()));
    };
    if head.is_tombstone() {
        return Ok((head.version, T::default()));
    }
    let v = match store.get_version(&head, &Default::default()).await? {
        Data::Document(v) => v,
        _ => return Err(StoreError::invalid_input(name, "is not a policy document")),
    };
    let doc = serde_json::from_value(v).map_err(|e| StoreError::CorruptMetadata {
        name: format!("{}/{name}", store.prefix()),
        path: head.uri.clone(),
        reason: format!("not a valid policy: {e}"),
    })?;
    Ok((head.version, doc))
}

/// Read, change, commit on top of what was read; again on a conflict.
async fn edit<T>(store: &Store, name: &str, f: impl Fn(&mut T) -> Result<()>) -> Result<()>
where
    T: serde::de::DeserializeOwned + Serialize + Default,
{
    for _ in 0..EDIT_ATTEMPTS {
        let (version, mut doc) = read_doc::<T>(store, name).await?;
        f(&mut doc)?;
        let v = serde_json::to_value(&doc).map_err(|e| StoreError::invalid_input(name, e))?;
        let opts = PutOptions {
            if_head: Some(version),
            ..Default::default()
        };
        match store.put(v, name, opts).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(
                    1 + (uuid::Uuid::new_v4().as_u128() % 20) as u64,
                ))
                .await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        name: name.into(),
        version: 0,
        advice: "too many concurrent policy edits; try again".into(),
    })
}

/// Rejects a predicate that does not parse, when it is declared.
fn check_predicate(dataset: &str, predicate: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&GenericDialect {})
        .try_with_sql(predicate)
        .and_then(|mut p| p.parse_expr())
        .map(|_| ())
        .map_err(|e| {
            StoreError::invalid_input(
                dataset,
                format!("row filter '{predicate}' is not a SQL predicate: {e}"),
            )
        })
}

/// The rows of `bucket.name` the session `cx` may see, as a predicate over
/// `schema`; `None` when it sees every row (no filters, or an admin whose
/// roles no filter names). Filters of the session's roles are OR'ed; a
/// session none of whose roles has one sees no rows (`false`).
pub fn visible_rows(
    cache: &PolicyCache,
    parser: &SessionState,
    bucket: &str,
    name: &str,
    cx: &MixinContext,
    schema: &DFSchema,
) -> DfResult<Option<Expr>> {
    let Some(filters) = applicable_filters(cache, bucket, name, cx) else {
        return Ok(None);
    };
    let mut predicate: Option<Expr> = None;
    for f in filters {
        let e = parser
            .create_logical_expr(&f.predicate, schema)
            .map_err(|e| {
                DataFusionError::Plan(format!(
                    "row filter '{}' of '{name}' ({}) is invalid: {}",
                    f.name,
                    f.predicate,
                    e.strip_backtrace()
                ))
            })?;
        predicate = Some(match predicate {
            None => e,
            Some(p) => p.or(e),
        });
    }
    Ok(Some(predicate.unwrap_or_else(|| lit(false))))
}

/// The row filters that apply to `cx` on `bucket.name`; `None` when it sees
/// every row, an empty list when it sees none.
pub fn applicable_filters(
    cache: &PolicyCache,
    bucket: &str,
    name: &str,
    cx: &MixinContext,
) -> Option<Vec<RowFilter>> {
    let policy = cache
        .get(bucket, name)
        .filter(|p| !p.row_filters.is_empty())?;
    let applying: Vec<RowFilter> = policy
        .row_filters
        .into_iter()
        .filter(|f| cache.applies(bucket, cx, &f.role))
        .collect();
    // an admin sees every row, unless a filter names its role
    if applying.is_empty() && cache.is_admin(bucket, cx) {
        return None;
    }
    Some(applying)
}

/// The masks of `bucket.name` that apply to `cx`.
fn applying_masks(
    cache: &PolicyCache,
    bucket: &str,
    name: &str,
    cx: &MixinContext,
) -> Vec<ColumnMask> {
    cache
        .get(bucket, name)
        .map(|p| p.column_masks)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| cache.applies(bucket, cx, &m.role))
        .collect()
}

/// The columns of `bucket.name` a `HIDE` mask removes for `cx`.
pub fn hidden_columns(
    cache: &PolicyCache,
    bucket: &str,
    name: &str,
    cx: &MixinContext,
) -> Vec<String> {
    applying_masks(cache, bucket, name, cx)
        .into_iter()
        .filter(|m| m.action == MaskAction::Hide)
        .map(|m| m.column)
        .collect()
}

/// The columns of `bucket.name` masked (hidden, nulled or hashed) for `cx`.
pub fn masked_columns(
    cache: &PolicyCache,
    bucket: &str,
    name: &str,
    cx: &MixinContext,
) -> Vec<String> {
    applying_masks(cache, bucket, name, cx)
        .into_iter()
        .map(|m| m.column)
        .collect()
}

/// A session state used only to turn predicate text into expressions.
pub fn parse_state() -> Arc<SessionState> {
    Arc::new(SessionStateBuilder::new().with_default_features().build())
}

/// The datasets a plan scans, with the scans' qualifiers.
fn for_each_dataset_scan(
    plan: LogicalPlan,
    cx: &MixinContext,
    mut f: impl FnMut(&str, &str, &TableReference, LogicalPlan) -> DfResult<Transformed<LogicalPlan>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match &node {
        LogicalPlan::TableScan(scan) => match cx.dataset_of(&scan.table_name) {
            Some((bucket, name)) => {
                let q = scan.table_name.clone();
                f(&bucket, &name, &q, node)
            }
            None => Ok(Transformed::no(node)),
        },
        _ => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

/// Row-level security: each scan of a dataset with row filters gets a filter
/// that keeps the rows any of the user's roles may see, and none when the
/// user has no such role.
#[derive(Debug)]
pub struct RowFilterMixin {
    cache: Arc<PolicyCache>,
    parser: Arc<SessionState>,
}

impl RowFilterMixin {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self {
            cache,
            parser: parse_state(),
        }
    }
}

impl Mixin for RowFilterMixin {
    fn name(&self) -> &str {
        "row_filter"
    }

    /// A walk over the plan with the policies already loaded: no I/O.
    fn inline(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> DfResult<LogicalPlan> {
        for_each_dataset_scan(plan, cx, |bucket, name, _q, scan| {
            let Some(predicate) =
                visible_rows(&self.cache, &self.parser, bucket, name, cx, scan.schema())?
            else {
                return Ok(Transformed::no(scan));
            };
            let filter = Filter::try_new(predicate, Arc::new(scan))?;
            Ok(Transformed::yes(LogicalPlan::Filter(filter)))
        })
    }
}

/// Column masks: the masked columns of a scan read as NULL or as a digest,
/// or are hidden (removed from the scan and from `SELECT *`).
#[derive(Debug)]
pub struct ColumnMaskMixin {
    cache: Arc<PolicyCache>,
}

impl ColumnMaskMixin {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

impl Mixin for ColumnMaskMixin {
    fn name(&self) -> &str {
        "column_mask"
    }

    /// A walk over the plan with the policies already loaded: no I/O.
    fn inline(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> DfResult<LogicalPlan> {
        let mut hidden: Vec<Column> = Vec::new();
        let plan = for_each_dataset_scan(plan, cx, |bucket, name, q, scan| {
            let masks = applying_masks(&self.cache, bucket, name, cx);
            if masks.is_empty() {
                return Ok(Transformed::no(scan));
            }
            let schema = scan.schema().clone();
            let mut exprs = Vec::new();
            for (qualifier, field) in schema.iter() {
                let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
                let mask = masks.iter().find(|m| &m.column == field.name());
                let expr = match mask.map(|m| m.action) {
                    None => column,
                    Some(MaskAction::Hide) => {
                        hidden.push(Column::new(Some(q.clone()), field.name()));
                        continue;
                    }
                    Some(MaskAction::Null) => {
                        cast(lit(ScalarValue::Null), field.data_type().clone())
                            .alias_qualified(qualifier.cloned(), field.name())
                    }
                    Some(MaskAction::Hash) => {
                        let digest = datafusion::functions::expr_fn::encode(
                            datafusion::functions::expr_fn::sha256(cast(
                                column,
                                arrow::datatypes::DataType::Utf8,
                            )),
                            lit("hex"),
                        );
                        cast(digest, field.data_type().clone())
                            .alias_qualified(qualifier.cloned(), field.name())
                    }
                };
                exprs.push(expr);
            }
            if exprs.is_empty() {
                return Err(DataFusionError::Plan(format!(
                    "every column of '{name}' is hidden for your roles"
                )));
            }
            let projection = Projection::try_new(exprs, Arc::new(scan))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        })?;
        if hidden.is_empty() {
            return Ok(plan);
        }
        remove_hidden(plan, &hidden)
    }
}

/// Removes plain references to hidden columns from projections (`SELECT *`)
/// and refuses any other use of them. Aliases (`FROM t AS x`) are followed.
fn remove_hidden(plan: LogicalPlan, hidden: &[Column]) -> DfResult<LogicalPlan> {
    let mut hidden: Vec<Column> = hidden.to_vec();
    plan.transform_up_with_subqueries(|node| {
        if let LogicalPlan::SubqueryAlias(a) = &node {
            // columns of the aliased input are now qualified by the alias
            let names: Vec<String> = hidden.iter().map(|h| h.name.clone()).collect();
            for n in names {
                hidden.push(Column::new(Some(a.alias.clone()), n));
            }
        }
        let is_hidden = |c: &Column| {
            hidden
                .iter()
                .any(|h| h.name == c.name && (c.relation.is_none() || c.relation == h.relation))
        };
        let node = match node {
            LogicalPlan::Projection(p)
                if p.expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(c) if is_hidden(c))) =>
            {
                let kept: Vec<Expr> = p
                    .expr
                    .iter()
                    .filter(|e| !matches!(e, Expr::Column(c) if is_hidden(c)))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    return Err(DataFusionError::Plan(
                        "the query selects only hidden columns".into(),
                    ));
                }
                LogicalPlan::Projection(Projection::try_new(kept, p.input.clone())?)
            }
            other => {
                for e in other.expressions() {
                    if let Some(c) = e.column_refs().into_iter().find(|c| is_hidden(c)) {
                        return Err(DataFusionError::Plan(format!(
                            "column '{}' is hidden for your roles",
                            c.name
                        )));
                    }
                }
                other.recompute_schema()?
            }
        };
        Ok(Transformed::yes(node))
    })
    .map(|t| t.data)
}

/// Bucket isolation: a session bound to a bucket (by `omega.bound_bucket`, or
/// because its bucket is declared isolated) cannot scan another bucket.
#[derive(Debug)]
pub struct BucketIsolationMixin {
    cache: Arc<PolicyCache>,
}

impl BucketIsolationMixin {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

impl Mixin for BucketIsolationMixin {
    fn name(&self) -> &str {
        "bucket_isolation"
    }

    /// A walk over the plan with the policies already loaded: no I/O.
    fn inline(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, cx: &MixinContext) -> DfResult<LogicalPlan> {
        let bound = cx.bound_bucket.clone().or_else(|| {
            self.cache
                .is_isolated(&cx.bucket)
                .then(|| cx.bucket.clone())
        });
        let Some(bound) = bound else { return Ok(plan) };
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let schema = match &scan.table_name {
                    TableReference::Bare { .. } => Some(cx.bucket.clone()),
                    // omega.system.*: each system table shows only what the
                    // identity may see (a bound session: its own bucket)
                    TableReference::Partial { schema, .. }
                        if schema.as_ref() == super::catalog::SYSTEM_SCHEMA =>
                    {
                        None
                    }
                    TableReference::Full {
                        catalog, schema, ..
                    } if catalog.as_ref() == crate::store::CATALOG_NAME
                        && schema.as_ref() == super::catalog::SYSTEM_SCHEMA =>
                    {
                        None
                    }
                    TableReference::Partial { schema, .. }
                    | TableReference::Full { schema, .. } => Some(schema.to_string()),
                };
                if let Some(s) = schema.filter(|s| s != &bound && s != "information_schema") {
                    return Err(DataFusionError::Plan(format!(
                        "this session is bound to bucket '{bound}' and cannot read '{s}' ({})",
                        scan.table_name
                    )));
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })?;
        Ok(plan)
    }
}

/// Schema contracts, checked on every table write (put, INSERT, CREATE
/// TABLE AS): declared columns must exist with the declared type family;
/// non-null and allowed-value rules are checked on every row, and a write
/// with violations fails before anything is committed, with their count and
/// first examples.
pub struct ContractHook {
    cache: Arc<PolicyCache>,
}

impl ContractHook {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

fn type_family(t: &arrow::datatypes::DataType) -> &'static str {
    use arrow::datatypes::DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => "int",
        Float16 | Float32 | Float64 | Decimal128(..) | Decimal256(..) => "float",
        Utf8 | LargeUtf8 | Utf8View => "string",
        Dictionary(_, v) => type_family(v),
        Boolean => "bool",
        Timestamp(..) => "timestamp",
        Date32 | Date64 => "date",
        _ => "other",
    }
}

#[async_trait]
impl WriteHook for ContractHook {
    fn name(&self) -> &str {
        "schema_contract"
    }

    /// A name with a contract takes only table writes (which the contract
    /// then checks row by row): a document, a file, a view or an external
    /// table over it would bypass the contract.
    async fn check_put(
        &self,
        target: &WriteTarget,
        kind: &str,
        _session: &SessionContext,
    ) -> Result<()> {
        if target.prefix != "datasets" || kind == crate::backends::table::KIND {
            return Ok(());
        }
        self.cache.ensure_loaded().await?;
        if self
            .cache
            .get(&target.bucket, &target.name)
            .is_some_and(|p| p.contract.is_some())
        {
            return Err(StoreError::SchemaMismatch {
                name: target.name.clone(),
                details: format!(
                    "schema contract: '{}' takes only table writes that satisfy its contract, not a {kind}; drop the contract first to store something else",
                    target.name
                ),
            });
        }
        Ok(())
    }

    async fn rewrite_write(
        &self,
        target: &WriteTarget,
        plan: LogicalPlan,
        session: &SessionContext,
    ) -> Result<LogicalPlan> {
        if target.prefix != "datasets" {
            return Ok(plan);
        }
        self.cache.reload().await?;
        let Some(contract) = self
            .cache
            .get(&target.bucket, &target.name)
            .and_then(|p| p.contract)
        else {
            return Ok(plan);
        };
        let fail = |details: String| StoreError::SchemaMismatch {
            name: target.name.clone(),
            details: format!("schema contract: {details}"),
        };
        let schema = plan.schema().clone();
        let mut problems = Vec::new();
        let mut checks: Vec<(String, Expr)> = Vec::new();
        for c in &contract.columns {
            let Ok(field) = schema.field_with_unqualified_name(&c.name) else {
                problems.push(format!("column '{}' is missing", c.name));
                continue;
            };
            if let Some(t) = &c.data_type
                && type_family(field.data_type()) != t.to_ascii_lowercase()
            {
                problems.push(format!(
                    "column '{}' is {} but the contract says {t}",
                    c.name,
                    field.data_type()
                ));
            }
            let col = Expr::Column(Column::from_name(&c.name));
            if !c.nullable {
                checks.push((format!("'{}' is null", c.name), col.clone().is_null()));
            }
            if let Some(allowed) = &c.allowed {
                let list: Vec<Expr> = allowed
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => lit(s.clone()),
                        Value::Bool(b) => lit(*b),
                        Value::Number(n) if n.is_i64() => lit(n.as_i64().unwrap_or_default()),
                        Value::Number(n) => lit(n.as_f64().unwrap_or_default()),
                        _ => lit(ScalarValue::Null),
                    })
                    .collect();
                checks.push((
                    format!("'{}' not in {}", c.name, Value::Array(allowed.clone())),
                    col.clone().is_not_null().and(col.in_list(list, true)),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(fail(problems.join("; ")));
        }
        if checks.is_empty() {
            return Ok(plan);
        }
        // Evaluate the rules batch by batch as the rows stream to the writer.
        let state = session.state();
        let physical: Vec<(String, Arc<dyn datafusion::physical_expr::PhysicalExpr>)> = checks
            .into_iter()
            .map(|(label, e)| {
                state
                    .create_physical_expr(e, &schema)
                    .map(|p| (label, p))
                    .map_err(|e| fail(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let df = datafusion::dataframe::DataFrame::new(state, plan);
        let stream = df.execute_stream().await.map_err(|e| fail(e.to_string()))?;
        let out_schema = stream.schema();
        let name = target.name.clone();
        let mut violations = 0u64;
        let mut examples: Vec<String> = Vec::new();
        let checked = stream
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .filter_map(move |item| {
                let result = match item {
                    Some(Ok(batch)) => match check_batch(&batch, &physical, &mut violations, &mut examples) {
                        Ok(()) => Some(Ok(batch)),
                        Err(e) => Some(Err(e)),
                    },
                    Some(Err(e)) => Some(Err(e)),
                    None if violations > 0 => Some(Err(DataFusionError::Execution(format!(
                        "schema contract of '{name}' violated by {violations} row(s); first examples: {}",
                        examples.join("; ")
                    )))),
                    None => None,
                };
                futures::future::ready(result)
            });
        let stream = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(out_schema, checked),
        );
        let (plan, _) = crate::backends::ingest::object_to_plan(
            &target.name,
            crate::store::Object::Stream(stream),
            None,
        )?;
        Ok(plan)
    }
}

fn check_batch(
    batch: &RecordBatch,
    checks: &[(String, Arc<dyn datafusion::physical_expr::PhysicalExpr>)],
    violations: &mut u64,
    examples: &mut Vec<String>,
) -> DfResult<()> {
    for (label, expr) in checks {
        let bad = expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let Some(bad) = bad.as_any().downcast_ref::<BooleanArray>() else {
            continue;
        };
        for i in 0..bad.len() {
            if bad.is_valid(i) && bad.value(i) {
                *violations += 1;
                if examples.len() < 3 {
                    let row = arrow::util::pretty::pretty_format_batches(&[batch.slice(i, 1)])
                        .map(|t| t.to_string().lines().nth(3).unwrap_or_default().to_string())
                        .unwrap_or_default();
                    examples.push(format!("{label}: {}", row.trim()));
                }
            }
        }
    }
    Ok(())
}

/// Access control: the store's [`AccessHook`]. A role's privilege on the
/// target's bucket must reach what the call needs (`read` for reads,
/// `write` for writes, `admin` for policies, settings and store-wide
/// maintenance). The owner (no fixed identity, no roles) may do anything.
/// A session bound to a bucket (bucket isolation) may not touch another.
pub struct AccessControl {
    cache: Arc<PolicyCache>,
}

impl AccessControl {
    pub fn new(cache: Arc<PolicyCache>) -> Self {
        Self { cache }
    }
}

/// `user 'ana' (roles analyst, eu)` for messages.
pub fn describe_identity(cx: &MixinContext) -> String {
    let roles = if cx.roles.is_empty() {
        "no roles".to_string()
    } else {
        format!("roles {}", cx.roles.join(", "))
    };
    if cx.user.is_empty() {
        format!("a session with {roles}")
    } else {
        format!("user '{}' ({roles})", cx.user)
    }
}

#[async_trait]
impl AccessHook for AccessControl {
    fn name(&self) -> &str {
        "access_control"
    }

    async fn check(
        &self,
        target: &crate::store::WriteTarget,
        access: Access,
        session: &SessionContext,
    ) -> Result<()> {
        let cx = MixinContext::from_session(session);
        self.cache.ensure_loaded().await?;
        let bound = cx.bound_bucket.clone().or_else(|| {
            self.cache
                .is_isolated(&cx.bucket)
                .then(|| cx.bucket.clone())
        });
        if let Some(bound) = bound.filter(|b| b != &target.bucket) {
            return Err(StoreError::PermissionDenied {
                who: describe_identity(&cx),
                privilege: access.to_string(),
                bucket: target.bucket.clone(),
                action: format!(
                    "this session is bound to bucket '{bound}'; {access} '{}' is outside it",
                    target.name
                ),
            });
        }
        if cx.owner {
            return Ok(());
        }
        let needed = match target.prefix.as_str() {
            // policies and settings are read by the rules, changed by admins
            POLICY_STORE | SETTINGS_STORE if access >= Access::Write => Access::Admin,
            _ => access,
        };
        if self
            .cache
            .privilege(&target.bucket, &cx.roles)
            .is_some_and(|held| held >= needed)
        {
            return Ok(());
        }
        Err(StoreError::PermissionDenied {
            who: describe_identity(&cx),
            privilege: needed.to_string(),
            bucket: target.bucket.clone(),
            action: format!("{access} {}/'{}'", target.prefix, target.name),
        })
    }
}
