//! Delta commits held back until omegastore's record commits.
//!
//! A Delta log entry is visible to every Delta reader the moment it exists,
//! so a table write must not put one into `_delta_log/` before the store's
//! record (the commit point) names it: a crash in between would leave rows
//! that no version owns, visible to DuckDB or Spark and adopted by the next
//! writer. [`StagingStore`] is the object store a write's Delta operation
//! runs on: it keeps the operation's log entry in memory, serves it back to
//! the operation (which re-reads its own commit to build the new snapshot)
//! and passes every other call through. The writer saves the entry beside
//! the table (`_omega/<version>-<write>.json`), commits its record, and only
//! then publishes the entry under `_delta_log/` (put-if-absent); a reader
//! that finds a record whose entry is not published yet publishes it from
//! the saved copy (roll forward).

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    Result,
};

/// The path of Delta version `version`'s log entry in the table at `dir`.
pub fn log_entry(dir: &Path, version: u64) -> Path {
    dir.clone()
        .join("_delta_log")
        .join(format!("{version:020}.json"))
}

/// An object store that holds back the one Delta log entry a write makes.
pub struct StagingStore {
    inner: Arc<dyn ObjectStore>,
    log: Path,
    staged: Mutex<Option<Staged>>,
}

#[derive(Clone)]
struct Staged {
    version: u64,
    location: Path,
    bytes: Bytes,
    at: chrono::DateTime<chrono::Utc>,
}

impl StagingStore {
    /// A staging store over `inner` for the Delta table at `dir`.
    pub fn new(inner: Arc<dyn ObjectStore>, dir: &Path) -> Self {
        Self {
            inner,
            log: dir.clone().join("_delta_log"),
            staged: Mutex::new(None),
        }
    }

    /// The staged entry: its Delta version and bytes.
    pub fn staged(&self) -> Option<(u64, Bytes)> {
        self.lock().as_ref().map(|s| (s.version, s.bytes.clone()))
    }

    /// Stages `bytes` as Delta version `version` (a commit re-applied on a
    /// newer base).
    pub fn stage(&self, version: u64, bytes: Bytes) {
        *self.lock() = Some(Staged {
            version,
            location: self.log.clone().join(format!("{version:020}.json")),
            bytes,
            at: chrono::Utc::now(),
        });
    }

    /// Forgets the staged entry; the store is a plain pass-through after
    /// this (the operation's session may keep it registered).
    pub fn seal(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Staged>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Delta version of a log entry path of this table, if it is one.
    fn entry_version(&self, location: &Path) -> Option<u64> {
        let rest = location.prefix_match(&self.log)?;
        let parts: Vec<_> = rest.collect();
        let [file] = parts.as_slice() else {
            return None;
        };
        let stem = file.as_ref().strip_suffix(".json")?;
        (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse().ok())
            .flatten()
    }

    fn staged_at(&self, location: &Path) -> Option<Staged> {
        self.lock().clone().filter(|s| &s.location == location)
    }

    fn meta(s: &Staged) -> ObjectMeta {
        ObjectMeta {
            location: s.location.clone(),
            last_modified: s.at,
            size: s.bytes.len() as u64,
            e_tag: None,
            version: None,
        }
    }

    /// The staged entry's listing row, when `prefix` covers it.
    fn listed(&self, prefix: Option<&Path>) -> Option<ObjectMeta> {
        let s = self.lock().clone()?;
        match prefix {
            Some(p) if !s.location.prefix_matches(p) => None,
            _ => Some(Self::meta(&s)),
        }
    }
}

impl fmt::Debug for StagingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Staging({}, {})", self.inner, self.log)
    }
}

impl fmt::Display for StagingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for StagingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let Some(version) = self.entry_version(location) else {
            if location.prefix_matches(&self.log) {
                // checkpoints and `_last_checkpoint` are written after
                // publishing, never during a staged write
                return Err(object_store::Error::NotSupported {
                    source: format!("{location}: a staged write only writes its commit").into(),
                });
            }
            return self.inner.put_opts(location, payload, opts).await;
        };
        let taken = || object_store::Error::AlreadyExists {
            path: location.to_string(),
            source: "a commit for this Delta version exists".into(),
        };
        if !matches!(opts.mode, PutMode::Create) || self.lock().is_some() {
            return Err(object_store::Error::NotSupported {
                source: format!("{location}: a staged write makes one new commit").into(),
            });
        }
        match self.inner.head(location).await {
            Ok(_) => return Err(taken()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.stage(version, Bytes::from(payload));
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let Some(s) = self.staged_at(location) else {
            return self.inner.get_opts(location, options).await;
        };
        let meta = Self::meta(&s);
        options.check_preconditions(&meta)?;
        let len = s.bytes.len() as u64;
        let range = match &options.range {
            Some(r) => r.as_range(len).map_err(|e| object_store::Error::Generic {
                store: "staging",
                source: Box::new(e),
            })?,
            None => 0..len,
        };
        let data = if options.head {
            Bytes::new()
        } else {
            s.bytes.slice(range.start as usize..range.end as usize)
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(data) }).boxed()),
            attributes: Default::default(),
            meta,
            range,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        match self.listed(prefix) {
            None => inner,
            Some(extra) => sorted_with(inner, extra, None),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list_with_offset(prefix, offset);
        match self.listed(prefix).filter(|m| &m.location > offset) {
            None => inner,
            Some(extra) => sorted_with(inner, extra, Some(offset.clone())),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        if let Some(extra) = self.listed(prefix)
            && prefix.is_some_and(|p| p == &self.log)
        {
            result.objects.push(extra);
            result.objects.sort_by(|a, b| a.location.cmp(&b.location));
        }
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// `inner`'s listing with `extra` added, in path order (the Delta kernel
/// reads log listings in order).
fn sorted_with(
    inner: BoxStream<'static, Result<ObjectMeta>>,
    extra: ObjectMeta,
    offset: Option<Path>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    futures::stream::once(async move {
        let mut all: Vec<ObjectMeta> = inner.try_collect().await?;
        all.retain(|m| m.location != extra.location);
        all.push(extra);
        if let Some(o) = offset {
            all.retain(|m| m.location > o);
        }
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok::<_, object_store::Error>(futures::stream::iter(all.into_iter().map(Ok)))
    })
    .try_flatten()
    .boxed()
}
