//! Garbage collection and vacuum: removing data no live version references.
//!
//! Garbage is what a write left behind without committing (a crash, a fault,
//! a contract that refused the rows after they were written), what a failed
//! drop did not finish, and files a table no longer needs. A file is removed
//! only when no live version references it **and** it is older than the
//! retention: a write in flight writes its data before its record, so young
//! unreferenced files may be about to be committed. Anything the collector
//! cannot judge (a record it cannot read, a kind with no backend) keeps the
//! whole data directory of its object.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::error::{Result, StoreError};
use super::metadata::Metadata;
use super::name::ObjectName;
use super::objects::Store;

/// Options of [`Store::gc`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only files older than this are removed.
    pub older_than: std::time::Duration,
    /// List what would be removed, remove nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            older_than: DEFAULT_RETENTION,
            dry_run: false,
        }
    }
}

/// The default retention: a write commits within seconds of writing its
/// data, so an hour leaves a wide margin.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a collection removed (or would remove, in a dry run).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Paths relative to the root, with their sizes.
    pub files: Vec<(String, u64)>,
    pub bytes: u64,
}

impl GcReport {
    fn add(&mut self, store: &Store, path: &Path, size: u64) {
        self.files
            .push((store.catalog().root().relative(path), size));
        self.bytes += size;
    }
}

/// What a vacuum removed.
#[derive(Debug, Clone, Default)]
pub struct VacuumReport {
    pub versions: Vec<u64>,
    pub gc: GcReport,
}

fn cutoff(older_than: std::time::Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX)
}

/// Whether `path` is `dir` or inside it.
fn under(path: &Path, dir: &Path) -> bool {
    path == dir || path.prefix_matches(dir)
}

impl Store {
    /// The live versions of `name` (after its last tombstone), oldest first;
    /// `None` when a record cannot be read (the caller must keep its data).
    async fn live_versions(&self, name: &ObjectName) -> Result<Option<Vec<Metadata>>> {
        let mut live = Vec::new();
        for v in self.catalog().versions(name).await? {
            match self.catalog().read(name, v).await {
                Ok(Some(m)) if m.is_tombstone() => live.clear(),
                Ok(Some(m)) => live.push(m),
                Ok(None) => {}
                Err(StoreError::CorruptMetadata { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(live))
    }

    /// Removes files under this store's `data/` that no live version
    /// references and that are older than the retention (see the module
    /// docs); inside tables, files no live version's snapshot needs.
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        self.check_access("*", super::hooks::Access::Admin).await?;
        let root = self.catalog().root().clone();
        let cut = cutoff(opts.older_than);
        let mut report = GcReport::default();
        let mut keep: Vec<Path> = Vec::new();
        for (name, _) in self.catalog().head_versions().await? {
            let Some(live) = self.live_versions(&name).await? else {
                keep.push(self.catalog().data_dir(&name));
                continue;
            };
            let cx = self.context(&name);
            let mut by_kind: BTreeMap<&str, Vec<Metadata>> = BTreeMap::new();
            for m in &live {
                by_kind.entry(m.kind.as_str()).or_default().push(m.clone());
            }
            for (kind, versions) in by_kind {
                let Some(backend) = self.registry().by_kind(kind) else {
                    keep.push(self.catalog().data_dir(&name));
                    continue;
                };
                for m in &versions {
                    match backend.referenced(m) {
                        Some(paths) => {
                            keep.extend(paths.iter().filter_map(|r| root.resolve(r).ok()))
                        }
                        None => keep.push(self.catalog().data_dir(&name)),
                    }
                }
                for (path, size) in backend.prune(&cx, &versions, cut, opts.dry_run).await? {
                    report.add(self, &path, size);
                }
            }
        }
        let data = root.path(&[self.bucket(), self.prefix(), "data"]);
        let listed: Vec<_> = root
            .store
            .list(Some(&data))
            .try_collect()
            .await
            .map_err(|e| StoreError::object_store(&data, e))?;
        for m in listed {
            if m.last_modified >= cut || keep.iter().any(|k| under(&m.location, k)) {
                continue;
            }
            if !opts.dry_run {
                match root.store.delete(&m.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(StoreError::object_store(&m.location, e)),
                }
            }
            report.add(self, &m.location, m.size);
        }
        Ok(report)
    }

    /// Removes the oldest versions of `name`, keeping the newest `keep`:
    /// their records first (from then on they cannot be read), then the data
    /// only they referenced (files older than `older_than`; inside a table,
    /// files no kept version needs). A tagged version is kept unless
    /// `force`, which also removes its tags.
    pub async fn vacuum(
        &self,
        name: &str,
        keep: usize,
        force: bool,
        older_than: std::time::Duration,
    ) -> Result<VacuumReport> {
        let n = ObjectName::new(name)?;
        self.check_access(n.as_str(), super::hooks::Access::Write)
            .await?;
        if keep == 0 {
            return Err(StoreError::invalid_input(
                name,
                "keep at least one version; drop the object to remove them all",
            ));
        }
        let live = self.live_versions(&n).await?.ok_or_else(|| {
            StoreError::invalid_input(
                name,
                "a version record is unreadable; restore it or drop the object with --force",
            )
        })?;
        if live.is_empty() {
            return Err(StoreError::NotFound {
                store: self.prefix().to_string(),
                bucket: self.bucket().to_string(),
                name: name.to_string(),
            });
        }
        let split = live.len().saturating_sub(keep);
        let (removed, kept) = live.split_at(split);
        let tags = self.catalog().tags(&n).await?;
        let removed_versions: BTreeSet<u64> = removed.iter().map(|m| m.version).collect();
        let tagged: Vec<&(String, u64)> = tags
            .iter()
            .filter(|(_, v)| removed_versions.contains(v))
            .collect();
        if let Some((tag, v)) = tagged.first()
            && !force
        {
            return Err(StoreError::invalid_input(
                name,
                format!(
                    "version {v} is tagged '{tag}'; move the tag, keep more versions, or pass --force"
                ),
            ));
        }
        for (tag, _) in &tagged {
            self.catalog().delete_tag(&n, tag).await?;
        }
        let versions: Vec<u64> = removed.iter().map(|m| m.version).collect();
        self.catalog().retract_versions(&n, &versions).await?;
        let mut report = VacuumReport {
            versions: removed_versions.into_iter().collect(),
            gc: GcReport::default(),
        };
        // data only the removed versions referenced, then inside tables
        let root = self.catalog().root().clone();
        let cut = cutoff(older_than);
        let cx = self.context(&n);
        let mut kept_paths = Vec::new();
        for m in kept {
            if let Some(b) = self.registry().by_kind(&m.kind) {
                match b.referenced(m) {
                    Some(paths) => {
                        kept_paths.extend(paths.iter().filter_map(|r| root.resolve(r).ok()))
                    }
                    None => kept_paths.push(self.catalog().data_dir(&n)),
                }
            }
        }
        for m in removed {
            let Some(b) = self.registry().by_kind(&m.kind) else {
                continue;
            };
            // a backend that cannot say what a version uses keeps its data
            for rel in b.referenced(m).unwrap_or_default() {
                let Ok(p) = root.resolve(&rel) else { continue };
                if kept_paths.iter().any(|k| under(&p, k) || under(k, &p)) {
                    continue;
                }
                let listed: Vec<_> = root
                    .store
                    .list(Some(&p))
                    .try_collect()
                    .await
                    .map_err(|e| StoreError::object_store(&p, e))?;
                let files = if listed.is_empty() {
                    match root.store.head(&p).await {
                        Ok(meta) => vec![meta],
                        Err(object_store::Error::NotFound { .. }) => vec![],
                        Err(e) => return Err(StoreError::object_store(&p, e)),
                    }
                } else {
                    listed
                };
                for f in files {
                    match root.store.delete(&f.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(StoreError::object_store(&f.location, e)),
                    }
                    report.gc.add(self, &f.location, f.size);
                }
            }
        }
        let mut by_kind: BTreeMap<&str, Vec<Metadata>> = BTreeMap::new();
        for m in kept {
            by_kind.entry(m.kind.as_str()).or_default().push(m.clone());
        }
        for (kind, versions) in by_kind {
            if let Some(b) = self.registry().by_kind(kind) {
                for (path, size) in b.prune(&cx, &versions, cut, false).await? {
                    report.gc.add(self, &path, size);
                }
            }
        }
        Ok(report)
    }
}
