//! [`Store`]: put, get, list, history, tags and drop of named objects in one
//! `<bucket>/<prefix>` (the same code serves datasets, models and jobs).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::backend::{
    BackendContext, Data, DataBackend, GetOptions, Object, PutMode, PutOptions, TableChange,
    Written, apply_options, collect_bytes, delete_prefix,
};
use super::catalog::Catalog;
use super::error::{Result, StoreError};
use super::hooks::{Access, Hooks, WriteTarget};
use super::metadata::{Metadata, TOMBSTONE_KIND, merge_attributes};
use super::name::{NameRef, ObjectName, VersionSpec, glob_match, is_pattern};
use super::registry::BackendRegistry;
use datafusion::catalog::TableProvider;

/// How often a put retries its commit after losing a race.
const MAX_COMMIT_ATTEMPTS: usize = 100;

/// Filters of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only objects of this kind.
    pub kind: Option<String>,
    /// Include names whose last segment starts with `.` or `_`.
    pub hidden: bool,
}

/// One store (`datasets`, `models` or `jobs`) of one bucket.
#[derive(Clone)]
pub struct Store {
    catalog: Catalog,
    registry: Arc<BackendRegistry>,
    session: SessionContext,
    hooks: Arc<Hooks>,
}

impl Store {
    pub(crate) fn new(
        catalog: Catalog,
        registry: Arc<BackendRegistry>,
        session: SessionContext,
        hooks: Arc<Hooks>,
    ) -> Self {
        Self {
            catalog,
            registry,
            session,
            hooks,
        }
    }

    pub fn bucket(&self) -> &str {
        self.catalog.bucket()
    }

    pub fn prefix(&self) -> &str {
        self.catalog.prefix()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn session(&self) -> &SessionContext {
        &self.session
    }

    pub(crate) fn registry(&self) -> &BackendRegistry {
        &self.registry
    }

    pub(crate) fn context<'a>(&'a self, name: &'a ObjectName) -> BackendContext<'a> {
        BackendContext {
            root: self.catalog.root(),
            name,
            data_dir: self.catalog.data_dir(name),
            session: &self.session,
            bucket: self.catalog.bucket(),
            prefix: self.catalog.prefix(),
            hooks: &self.hooks,
        }
    }

    fn not_found(&self, name: &str) -> StoreError {
        StoreError::NotFound {
            store: self.prefix().to_string(),
            bucket: self.bucket().to_string(),
            name: name.to_string(),
        }
    }

    /// Asks the access hooks whether this session may do `access` to
    /// `name` (`*` for the whole store).
    pub async fn check_access(&self, name: &str, access: super::hooks::Access) -> Result<()> {
        let target = WriteTarget {
            bucket: self.bucket().to_string(),
            prefix: self.prefix().to_string(),
            name: name.to_string(),
        };
        self.hooks
            .check_access(&target, access, &self.session)
            .await
    }

    fn backend_for(&self, meta: &Metadata) -> Result<Arc<dyn DataBackend>> {
        self.registry
            .by_kind(&meta.kind)
            .ok_or_else(|| StoreError::UnknownKind {
                name: meta.name.clone(),
                kind: meta.kind.clone(),
            })
    }

    /// Stores `obj` as a new version of `name` and returns its metadata.
    ///
    /// Tables append by default when the name exists (`PutMode::Auto`); other
    /// kinds are replaced. Concurrent puts of one name all commit, at
    /// contiguous versions, except with `PutMode::Error` (exactly one wins,
    /// the others get [`StoreError::AlreadyExists`]) or when two writers
    /// create a new table at once (the loser gets [`StoreError::Conflict`]).
    pub async fn put(
        &self,
        obj: impl Into<Object>,
        name: &str,
        opts: PutOptions,
    ) -> Result<Metadata> {
        let obj = obj.into();
        let name = ObjectName::new(name)?;
        self.check_access(name.as_str(), Access::Write).await?;
        let head = self.catalog.head(&name).await?;
        let previous = head.clone().filter(|m| !m.is_tombstone());
        if opts.mode == PutMode::Error && previous.is_some() {
            return Err(StoreError::AlreadyExists {
                store: self.prefix().into(),
                name: name.to_string(),
            });
        }
        let backend = match &opts.kind {
            Some(kind) => self
                .registry
                .by_kind(kind)
                .ok_or_else(|| StoreError::NoBackend {
                    name: name.to_string(),
                    what: obj.describe().into(),
                    hint: format!(
                        ": no backend owns kind '{kind}' (known kinds: {})",
                        self.registry.kinds().join(", ")
                    ),
                })?,
            None => self
                .registry
                .supporting(&obj)
                .ok_or_else(|| StoreError::NoBackend {
                    name: name.to_string(),
                    what: obj.describe().into(),
                    hint: "; give an explicit kind or register a backend".into(),
                })?,
        };
        let cx = self.context(&name);
        let kind = opts
            .kind
            .clone()
            .or_else(|| backend.kinds().into_iter().next())
            .unwrap_or_default();
        let asks_for_layout = !opts.sort_by.is_empty() || !opts.bloom_filters.is_empty();
        if asks_for_layout && !backend.lays_out_rows() {
            return Err(StoreError::invalid_input(
                name.as_str(),
                format!(
                    "a sort order and Bloom filters apply to tables, and this would be {} stored as '{kind}'; put it without them",
                    obj.describe()
                ),
            ));
        }
        self.hooks
            .check_put(&cx.write_target(), &kind, &self.session)
            .await?;
        let written = backend.put(&cx, obj, previous.as_ref(), &opts).await?;
        super::failpoint::hit("after-data");
        self.commit_written(
            &cx,
            backend.as_ref(),
            written,
            head.as_ref(),
            previous,
            &opts,
        )
        .await
    }

    /// Commits what a backend wrote as the next version, rebasing onto any
    /// version another writer committed since `head` (see [`Store::put`]).
    async fn commit_written(
        &self,
        cx: &BackendContext<'_>,
        backend: &dyn DataBackend,
        mut written: Written,
        head: Option<&Metadata>,
        mut previous: Option<Metadata>,
        opts: &PutOptions,
    ) -> Result<Metadata> {
        let name = cx.name;
        // The version our write was based on; any commit after it must be
        // rebased onto (a table's record must never point at an older Delta
        // version than the record before it).
        let mut base = head.map(|h| h.version);
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(
                    1 + (uuid::Uuid::new_v4().as_u128() % 20) as u64,
                ))
                .await;
            }
            // Until our record is committed, a failure discards what we
            // wrote (for a table: reverts our Delta commit).
            let latest = match self.catalog.head(name).await {
                Ok(l) => l,
                Err(e) => {
                    backend.discard(cx, &written).await;
                    return Err(e);
                }
            };
            let version = latest.as_ref().map_or(1, |l| l.version + 1);
            if let Some(expected) = opts.if_head
                && version != expected + 1
            {
                backend.discard(cx, &written).await;
                return Err(StoreError::Conflict {
                    name: name.to_string(),
                    version: version - 1,
                    advice: format!(
                        "it changed since version {expected} was read; read it again and retry"
                    ),
                });
            }
            if latest.as_ref().map(|l| l.version) != base {
                match latest {
                    Some(l) if !l.is_tombstone() => {
                        if opts.mode == PutMode::Error {
                            backend.discard(cx, &written).await;
                            return Err(StoreError::AlreadyExists {
                                store: self.prefix().into(),
                                name: name.to_string(),
                            });
                        }
                        let rebased = match backend.rebase(cx, written.clone(), &l).await {
                            Ok(r) => r,
                            Err(e) => {
                                backend.discard(cx, &written).await;
                                return Err(e);
                            }
                        };
                        written = match rebased {
                            Some(w) => w,
                            None => {
                                return Err(StoreError::Conflict {
                                    name: name.to_string(),
                                    version: l.version,
                                    advice: "it was created concurrently; run the put again to append to or overwrite it".into(),
                                });
                            }
                        };
                        base = Some(l.version);
                        previous = Some(l);
                    }
                    // Dropped meanwhile. A write that built on the dropped
                    // version (an append into its Delta table, say) wrote
                    // into data the drop is deleting: it must not commit.
                    // A write from scratch becomes the first version after
                    // the tombstone.
                    other => {
                        if previous.is_some() {
                            backend.discard(cx, &written).await;
                            return Err(dropped_meanwhile(name, other.map_or(0, |l| l.version)));
                        }
                        base = other.map(|l| l.version);
                    }
                }
            }
            let now = Utc::now();
            let meta = Metadata {
                name: name.to_string(),
                bucket: self.bucket().into(),
                prefix: self.prefix().into(),
                kind: written.kind.clone(),
                kind_meta: written.kind_meta.clone(),
                attributes: merge_attributes(
                    previous.as_ref().map(|p| &p.attributes),
                    opts.attributes.as_ref(),
                ),
                uri: written.uri.clone(),
                version,
                created: previous.as_ref().map_or(now, |p| p.created),
                modified: now,
            };
            let committed = match self.catalog.commit(&meta).await {
                Ok(outcome) => outcome.is_ok(),
                // The store may have applied the write before failing (a
                // timeout): read it back before deciding.
                Err(e) => match self.catalog.read(name, meta.version).await {
                    Ok(Some(m)) if m.uri == meta.uri && m.modified == meta.modified => true,
                    Ok(_) => {
                        backend.discard(cx, &written).await;
                        return Err(e);
                    }
                    // cannot tell: keep the data (garbage at worst)
                    Err(_) => return Err(e),
                },
            };
            if committed {
                super::failpoint::hit("after-record");
                if self.built_on_dropped(&meta, previous.as_ref()).await? {
                    backend.discard(cx, &written).await;
                    return Err(dropped_meanwhile(name, meta.version));
                }
                backend.committed(cx, &meta).await;
                return Ok(meta);
            }
        }
        backend.discard(cx, &written).await;
        Err(StoreError::Conflict {
            name: name.to_string(),
            version: base.unwrap_or(0) + 1,
            advice: format!(
                "gave up after {MAX_COMMIT_ATTEMPTS} attempts under heavy contention; try again"
            ),
        })
    }

    /// Checks a record just committed on top of `base`: if a drop removed
    /// `base` (and the data `meta` built on) between our read of it and our
    /// commit, the drop's tombstone is gone too and put-if-absent could not
    /// stop us. The drop purges records oldest first, so a base that is
    /// missing or replaced (a new object of the same name) proves it; then
    /// our record is withdrawn and the write fails. True when withdrawn.
    async fn built_on_dropped(&self, meta: &Metadata, base: Option<&Metadata>) -> Result<bool> {
        let Some(base) = base else { return Ok(false) };
        let name = ObjectName::new(&meta.name)?;
        let intact = match self.catalog.read(&name, base.version).await {
            Ok(Some(m)) => m == *base,
            Ok(None) => false,
            // unreadable is no proof of a drop, and our record is committed
            Err(_) => true,
        };
        if !intact {
            self.catalog.retract(&name, meta.version).await?;
        }
        Ok(!intact)
    }

    /// Resolves `name`, `name@N` or `name@tag` to its metadata.
    pub async fn metadata(&self, name: &str) -> Result<Metadata> {
        let r = NameRef::parse(name)?;
        self.check_access(r.name.as_str(), Access::Read).await?;
        let head = match self.catalog.head(&r.name).await {
            Ok(head) => Some(head),
            // a torn newest record (a crash without fsync) must not hide
            // the versions before it: `name@1` still reads version 1
            Err(StoreError::CorruptMetadata { .. }) if r.spec != VersionSpec::Latest => None,
            Err(e) => return Err(e),
        };
        let head = match head {
            Some(h) => Some(
                h.filter(|m| !m.is_tombstone())
                    .ok_or_else(|| self.not_found(r.name.as_str()))?,
            ),
            None => None,
        };
        let version = match (&r.spec, head) {
            (VersionSpec::Latest, Some(head)) => return Ok(head),
            (VersionSpec::Version(v), _) => *v,
            (VersionSpec::Tag(t), _) => {
                self.catalog
                    .tag(&r.name, t)
                    .await?
                    .ok_or_else(|| StoreError::VersionNotFound {
                        store: self.prefix().into(),
                        name: r.name.to_string(),
                        spec: r.spec.to_string(),
                    })?
            }
            (VersionSpec::Latest, None) => return Err(self.not_found(r.name.as_str())),
        };
        match self.catalog.read(&r.name, version).await? {
            Some(m) if !m.is_tombstone() => Ok(m),
            _ => Err(StoreError::VersionNotFound {
                store: self.prefix().into(),
                name: r.name.to_string(),
                spec: VersionSpec::Version(version).to_string(),
            }),
        }
    }

    /// Whether `name` (with an optional modifier) exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        match self.metadata(name).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads an object through its kind's backend.
    pub async fn get(&self, name: &str, opts: GetOptions) -> Result<Data> {
        let meta = self.metadata(name).await?;
        self.get_version(&meta, &opts).await
    }

    /// Reads the version `meta` describes. Tables come back as a lazy frame
    /// whose scan is named `omega.<bucket>.<name>` (see
    /// [`BackendContext::named_scan`]), so the read rewrite rules (mixins)
    /// apply to it as to SQL; options are applied on top.
    pub async fn get_version(&self, meta: &Metadata, opts: &GetOptions) -> Result<Data> {
        self.check_access(&meta.name, Access::Read).await?;
        let backend = self.backend_for(meta)?;
        let name = ObjectName::new(&meta.name)?;
        match backend.get(&self.context(&name), meta, opts).await? {
            Data::Table(df) => {
                self.hooks.prepare_read().await?;
                Ok(Data::Table(apply_options(&meta.name, df, opts)?))
            }
            other => Ok(other),
        }
    }

    /// The provider a SQL scan of a table dataset reads (`name` may carry a
    /// modifier); it is pinned to the version the name resolved to.
    pub async fn table_provider(&self, name: &str) -> Result<Arc<dyn TableProvider>> {
        let meta = self.metadata(name).await?;
        self.table_provider_of(&meta).await
    }

    /// The provider of a version already resolved with [`Store::metadata`].
    pub async fn table_provider_of(&self, meta: &Metadata) -> Result<Arc<dyn TableProvider>> {
        self.check_access(&meta.name, Access::Read).await?;
        let name = meta.name.as_str();
        let backend = self.backend_for(meta)?;
        let n = ObjectName::new(&meta.name)?;
        match backend
            .get(&self.context(&n), meta, &GetOptions::default())
            .await?
        {
            Data::Table(df) => Ok(df.into_view()),
            _ => Err(StoreError::invalid_input(
                name,
                format!("is a {}, not a table", meta.kind),
            )),
        }
    }

    /// Deletes or updates rows of a table dataset as a new version (a Delta
    /// delete/update commit); returns the new metadata and the rows changed.
    pub async fn change_table(&self, name: &str, change: TableChange) -> Result<(Metadata, u64)> {
        let n = ObjectName::new(name)?;
        self.check_access(n.as_str(), Access::Write).await?;
        let meta = self
            .catalog
            .latest(&n)
            .await?
            .ok_or_else(|| self.not_found(name))?;
        let backend = self.backend_for(&meta)?;
        let cx = self.context(&n);
        let compact = matches!(change, TableChange::Compact);
        let Some((written, rows)) = backend.change(&cx, &meta, change).await? else {
            return Err(StoreError::invalid_input(
                name,
                format!(
                    "is a {}, which has no row-level changes; DELETE, UPDATE and compaction work on tables stored by put or CREATE TABLE AS (kind table.delta)",
                    meta.kind
                ),
            ));
        };
        if compact && rows == 0 {
            // nothing to compact: no new version
            return Ok((meta, 0));
        }
        let opts = PutOptions {
            mode: PutMode::Append,
            ..Default::default()
        };
        let committed = self
            .commit_written(
                &cx,
                backend.as_ref(),
                written,
                Some(&meta),
                Some(meta.clone()),
                &opts,
            )
            .await?;
        Ok((committed, rows))
    }

    /// A lazy DataFusion frame over a table (`table.delta`, `table.external`, …).
    pub async fn getl(&self, name: &str) -> Result<DataFrame> {
        self.get_frame(name, GetOptions::default()).await
    }

    /// A lazy frame with projection, filter and limit applied.
    pub async fn get_frame(&self, name: &str, opts: GetOptions) -> Result<DataFrame> {
        match self.get(name, opts).await? {
            Data::Table(df) => Ok(df),
            _ => Err(StoreError::invalid_input(name, "is not a table; use get")),
        }
    }

    /// Reads a table as Arrow batches.
    pub async fn get_batches(&self, name: &str, opts: GetOptions) -> Result<Vec<RecordBatch>> {
        let meta = self.metadata(name).await?;
        let Data::Table(df) = self.get_version(&meta, &opts).await? else {
            return Err(StoreError::invalid_input(name, "is not a table; use get"));
        };
        df.collect().await.map_err(|e| read_error(&meta, e))
    }

    /// Reads a JSON document.
    pub async fn get_document(&self, name: &str) -> Result<Value> {
        match self.get(name, GetOptions::default()).await? {
            Data::Document(v) => Ok(v),
            _ => Err(StoreError::invalid_input(name, "is not a document")),
        }
    }

    /// Reads a raw file into memory (use [`Store::get_to_file`] for large files).
    pub async fn get_bytes(&self, name: &str) -> Result<Bytes> {
        collect_bytes(self.get(name, GetOptions::default()).await?).await
    }

    /// Streams a raw file to `path`: written to a temporary file beside it and
    /// renamed into place, so `path` is never left half-written.
    pub async fn get_to_file(
        &self,
        name: &str,
        path: &std::path::Path,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<u64> {
        let Data::File { size, mut stream } = self.get(name, GetOptions::default()).await? else {
            return Err(StoreError::invalid_input(name, "is not a file"));
        };
        if let Some(p) = progress {
            p.set_length(size);
        }
        let tmp = temp_beside(path);
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| StoreError::io(&tmp, e))?;
        let result: Result<()> = async {
            while let Some(chunk) = stream.try_next().await? {
                f.write_all(&chunk)
                    .await
                    .map_err(|e| StoreError::io(&tmp, e))?;
                if let Some(p) = progress {
                    p.inc(chunk.len() as u64);
                }
            }
            f.flush().await.map_err(|e| StoreError::io(&tmp, e))?;
            f.sync_all().await.map_err(|e| StoreError::io(&tmp, e))
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| StoreError::io(path, e))?;
        Ok(size)
    }

    /// Current versions of objects matching a glob `pattern` (all when `None`).
    /// Objects whose newest record is corrupt are left out; a failure to
    /// list or read is an error, never a partial listing.
    pub async fn list(&self, pattern: Option<&str>, opts: &ListOptions) -> Result<Vec<Metadata>> {
        self.check_access("*", Access::Read).await?;
        // the listing index holds the unchanged heads; the change journal
        // names the others, which are read again
        let wanted = |n: &ObjectName| {
            pattern.is_none_or(|p| glob_match(p, n.as_str())) && (opts.hidden || !n.is_hidden())
        };
        let heads = self.catalog.list_heads(wanted).await?;
        let mut metas = Vec::with_capacity(heads.len());
        for (n, read) in heads {
            metas.push(match read {
                Ok(Some(m)) => Some(m).filter(|m| !m.is_tombstone()),
                // a record deleted since the listing (a drop): ask again
                Ok(None) => self.catalog.latest(&n).await?,
                // an unreadable record leaves its object out (`metadata`
                // and `drop --force` report and clear it); any other
                // failure fails the listing rather than make it partial
                Err(StoreError::CorruptMetadata { .. }) => None,
                Err(e) => return Err(e),
            });
        }
        Ok(metas
            .into_iter()
            .flatten()
            .filter(|m| pattern.is_none_or(|p| glob_match(p, &m.name)))
            .filter(|m| opts.kind.as_ref().is_none_or(|k| &m.kind == k))
            .filter(|m| opts.hidden || !ObjectName::new(&m.name).is_ok_and(|n| n.is_hidden()))
            .collect())
    }

    /// Every committed version of `name`, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<Metadata>> {
        let r = NameRef::parse(name)?;
        self.check_access(r.name.as_str(), Access::Read).await?;
        let mut out = Vec::new();
        for v in self.catalog.versions(&r.name).await? {
            if let Some(m) = self.catalog.read(&r.name, v).await? {
                if m.is_tombstone() {
                    out.clear();
                } else {
                    out.push(m);
                }
            }
        }
        if out.is_empty() {
            return Err(self.not_found(r.name.as_str()));
        }
        Ok(out)
    }

    /// Points `tag` at a version (the latest when `None`).
    pub async fn tag(&self, name: &str, tag: &str, version: Option<u64>) -> Result<Metadata> {
        self.check_access(name, Access::Write).await?;
        let spec = match version {
            Some(v) => format!("{name}@{v}"),
            None => name.to_string(),
        };
        let meta = self.metadata(&spec).await?;
        let n = ObjectName::new(&meta.name)?;
        self.catalog.set_tag(&n, tag, meta.version).await?;
        Ok(meta)
    }

    /// Tags of `name` and the versions they point at.
    pub async fn tags(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let n = ObjectName::new(name)?;
        self.check_access(n.as_str(), Access::Read).await?;
        self.catalog.tags(&n).await
    }

    /// Commits a new version with the same data and updated attributes
    /// (`{}` resets them, otherwise keys are merged).
    pub async fn set_attributes(
        &self,
        name: &str,
        attributes: Map<String, Value>,
    ) -> Result<Metadata> {
        let n = ObjectName::new(name)?;
        self.check_access(n.as_str(), Access::Write).await?;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let current = self
                .catalog
                .latest(&n)
                .await?
                .ok_or_else(|| self.not_found(name))?;
            let meta = Metadata {
                attributes: merge_attributes(Some(&current.attributes), Some(&attributes)),
                version: current.version + 1,
                modified: Utc::now(),
                ..current.clone()
            };
            if self.catalog.commit(&meta).await?.is_ok() {
                if self.built_on_dropped(&meta, Some(&current)).await? {
                    return Err(dropped_meanwhile(&n, meta.version));
                }
                return Ok(meta);
            }
        }
        Err(StoreError::Conflict {
            name: name.into(),
            version: 0,
            advice: "too many concurrent writers; try again".into(),
        })
    }

    /// Drops `name`, or every match of a glob pattern. A missing name is
    /// [`StoreError::NotFound`] unless `force`. Returns the names dropped.
    ///
    /// A tombstone version is committed first (from then on the object is
    /// gone for every reader), then the data of all versions, then the records.
    pub async fn drop(&self, name: &str, force: bool) -> Result<Vec<String>> {
        self.check_access(name, Access::Write).await?;
        if is_pattern(name) {
            let opts = ListOptions {
                hidden: true,
                ..Default::default()
            };
            let mut dropped = Vec::new();
            for m in self.list(Some(name), &opts).await? {
                dropped.extend(self.drop_one(&m.name, true).await?);
            }
            if dropped.is_empty() && !force {
                return Err(self.not_found(name));
            }
            return Ok(dropped);
        }
        self.drop_one(name, force).await
    }

    async fn drop_one(&self, name: &str, force: bool) -> Result<Vec<String>> {
        let n = ObjectName::new(name)?;
        let history = match self.history(name).await {
            Ok(h) => h,
            Err(e) if e.is_not_found() && force => return Ok(vec![]),
            Err(StoreError::CorruptMetadata { .. }) if force => {
                return self.drop_unreadable(&n).await;
            }
            Err(e) => return Err(e),
        };
        let last = history
            .last()
            .cloned()
            .ok_or_else(|| self.not_found(name))?;
        let mut version = last.version + 1;
        loop {
            let now = Utc::now();
            let tombstone = Metadata {
                kind: TOMBSTONE_KIND.into(),
                kind_meta: Value::Null,
                attributes: Map::new(),
                uri: String::new(),
                version,
                modified: now,
                ..last.clone()
            };
            if self.catalog.commit(&tombstone).await?.is_ok() {
                super::failpoint::hit("drop-after-tombstone");
                break;
            }
            match self.catalog.head(&n).await? {
                Some(h) if h.is_tombstone() => return Ok(vec![]),
                Some(h) => version = h.version + 1,
                None => version = 1,
            }
        }
        // Data of every version, grouped by the backend that wrote it. A kind
        // with no backend (yet) keeps its data; the records still go.
        let cx = self.context(&n);
        // Only versions below the tombstone: a writer that committed after
        // it wrote fresh data (see `commit_written`), which is not ours.
        let full_history: Vec<Metadata> = {
            let mut all = Vec::new();
            for v in self.catalog.versions(&n).await? {
                if v >= version {
                    break;
                }
                if let Ok(Some(m)) = self.catalog.read(&n, v).await
                    && !m.is_tombstone()
                {
                    all.push(m);
                }
            }
            all
        };
        let mut kinds: Vec<&str> = full_history.iter().map(|m| m.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            if let Some(b) = self.registry.by_kind(kind) {
                let versions: Vec<Metadata> = full_history
                    .iter()
                    .filter(|m| m.kind == kind)
                    .cloned()
                    .collect();
                b.drop_data(&cx, &versions).await?;
            }
        }
        super::failpoint::hit("drop-after-data");
        self.catalog.purge(&n, version).await?;
        Ok(vec![name.to_string()])
    }

    /// Forced drop of an object whose records cannot be read: the tombstone
    /// goes first as usual, then everything under its data directory.
    async fn drop_unreadable(&self, n: &ObjectName) -> Result<Vec<String>> {
        let last = self.catalog.versions(n).await?.last().copied().unwrap_or(0);
        let now = Utc::now();
        let tombstone = Metadata {
            name: n.to_string(),
            bucket: self.bucket().into(),
            prefix: self.prefix().into(),
            kind: TOMBSTONE_KIND.into(),
            kind_meta: Value::Null,
            attributes: Map::new(),
            uri: String::new(),
            version: last + 1,
            created: now,
            modified: now,
        };
        if self.catalog.commit(&tombstone).await?.is_err() {
            return Err(StoreError::Conflict {
                name: n.to_string(),
                version: last + 1,
                advice: "another writer changed it during the drop; try again".into(),
            });
        }
        delete_prefix(self.catalog.root(), &self.catalog.data_dir(n)).await?;
        self.catalog.purge(n, last + 1).await?;
        Ok(vec![n.to_string()])
    }
}

/// The error of a write whose base version was dropped while it ran.
fn dropped_meanwhile(name: &ObjectName, version: u64) -> StoreError {
    StoreError::Conflict {
        name: name.to_string(),
        version,
        advice: "it was dropped while this write ran; run it again to create it anew".into(),
    }
}

/// Maps an error met while reading a table's files to a typed error.
pub(crate) fn read_error(meta: &Metadata, e: datafusion::error::DataFusionError) -> StoreError {
    let msg = super::error::one_line(&e.to_string());
    let lower = msg.to_lowercase();
    if lower.contains("not found") || lower.contains("no such file") {
        StoreError::MissingData {
            name: meta.name.clone(),
            version: meta.version,
            path: format!("{} ({msg})", meta.uri),
        }
    } else if lower.contains("parquet") || lower.contains("arrow") || lower.contains("invalid") {
        StoreError::CorruptData {
            name: meta.name.clone(),
            path: meta.uri.clone(),
            reason: msg,
        }
    } else {
        StoreError::table(&meta.name, msg)
    }
}

/// A unique temporary path in the same directory as `path`.
pub(crate) fn temp_beside(path: &std::path::Path) -> std::path::PathBuf {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{file}.{}.tmp", uuid::Uuid::new_v4()))
}
