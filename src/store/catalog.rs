//! The catalog of one store: committed metadata records and tags.
//!
//! # Commit contract
//!
//! * Data is written first, by the backend, under a path nobody else uses (a
//!   fresh UUID) — or, for Delta tables, through the Delta log's own atomic
//!   commit.
//! * The version is then made visible by writing its metadata record
//!   `meta/<encoded name>/<version>.json` with put-if-absent
//!   ([`PutMode::Create`]); records are never modified afterwards. The highest
//!   committed record is the current version.
//! * A reader therefore sees a whole version or the one before it; a writer
//!   that crashes before its record is committed leaves only unreferenced
//!   data (garbage), and the previous version stays readable.
//! * Two writers of the same version: put-if-absent lets exactly one win.
//!   The loser gets [`CommitConflict`] and the store decides: retry at the next
//!   version where the operation allows it (append, replace), or report a
//!   typed conflict.
//! * Drop commits a tombstone record first (the atomic drop point), then
//!   removes data, then the records.
//! * Every change to a name's records is noted in the change journal first
//!   ([`super::change_journal`]), so a listing can trust its index for the
//!   names no note marks.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::access_mark;
use super::change_journal::{self, Change, Marker};
use super::error::{Result, StoreError};
use super::listing_index::{ListingIndex, RecordStamp};
use super::metadata::Metadata;
use super::name::{ObjectName, encode_segment, validate_tag};
use super::root::Root;

/// The version a writer tried to commit already exists.
#[derive(Debug)]
pub struct CommitConflict {
    pub version: u64,
}

/// One record read by [`Catalog::read_many`].
pub type RecordRead = (ObjectName, Result<Option<Metadata>>);

/// Records and tags of one store (`<bucket>/<prefix>`).
#[derive(Debug, Clone)]
pub struct Catalog {
    root: Root,
    bucket: String,
    prefix: String,
}

/// The listing index of a store, beside its `meta/` (see [`super::listing_index`]).
const INDEX_FILE: &str = "index.json";

/// Width of the zero-padded version in record file names, so that
/// lexicographic order is numeric order.
const VERSION_WIDTH: usize = 20;

impl Catalog {
    pub fn new(root: Root, bucket: &str, prefix: &str) -> Self {
        Self {
            root,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    pub fn root(&self) -> &Root {
        &self.root
    }
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn meta_root(&self) -> Path {
        self.root.path(&[&self.bucket, &self.prefix, "meta"])
    }

    fn meta_dir(&self, name: &ObjectName) -> Path {
        join_name(self.meta_root(), name)
    }

    fn tag_dir(&self, name: &ObjectName) -> Path {
        join_name(self.root.path(&[&self.bucket, &self.prefix, "tags"]), name)
    }

    /// Directory under which backends put the data of `name`.
    pub fn data_dir(&self, name: &ObjectName) -> Path {
        join_name(self.root.path(&[&self.bucket, &self.prefix, "data"]), name)
    }

    pub fn record_path(&self, name: &ObjectName, version: u64) -> Path {
        self.meta_dir(name).join(record_file_name(version))
    }

    fn journal_root(&self) -> Path {
        self.root.path(&[&self.bucket, &self.prefix, "changes"])
    }

    /// Writes the journal marker of `change` to `name`'s records (see
    /// [`super::change_journal`]); it comes before the change itself.
    async fn note(&self, name: &ObjectName, change: Change) -> Result<()> {
        let path = change_journal::marker_path(&self.journal_root(), name, change);
        self.root
            .store
            .put(&path, PutPayload::new())
            .await
            .map_err(|e| StoreError::object_store(&path, e))?;
        Ok(())
    }

    /// Every object under `dir`.
    async fn list_all(&self, dir: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        self.root
            .store
            .list(Some(dir))
            .try_collect()
            .await
            .map_err(|e| StoreError::object_store(dir, e))
    }

    /// Committed version numbers of `name`, ascending (tombstones included).
    pub async fn versions(&self, name: &ObjectName) -> Result<Vec<u64>> {
        let dir = self.meta_dir(name);
        let listed = self.list_all(&dir).await?;
        let mut versions: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename())
            .filter_map(record_version)
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Reads one record.
    pub async fn read(&self, name: &ObjectName, version: u64) -> Result<Option<Metadata>> {
        Ok(self.read_stamped(name, version).await?.map(|(_, m)| m))
    }

    /// Reads many records (a listing): on a plain local directory in one
    /// blocking task with the file system directly (per-file tasks of
    /// `object_store`'s local store cost more in thread wake-ups than the
    /// reads); elsewhere 64 requests at a time. Each record gets its own
    /// result (`None` for a record gone), so one bad record does not hide
    /// the others; the outer error is a failure of the listing itself.
    pub async fn read_many(&self, items: Vec<(ObjectName, u64)>) -> Result<Vec<RecordRead>> {
        if self.root.local_dir {
            let paths: Vec<(ObjectName, Path)> = items
                .into_iter()
                .map(|(n, v)| {
                    let p = self.record_path(&n, v);
                    (n, p)
                })
                .collect();
            return tokio::task::spawn_blocking(move || {
                paths
                    .into_iter()
                    .map(|(n, p)| {
                        let read = match std::fs::read(format!("/{p}")) {
                            Ok(bytes) => parse_record(&n, &p, &bytes).map(Some),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                            Err(e) => Err(StoreError::io(format!("/{p}"), e)),
                        };
                        (n, read)
                    })
                    .collect()
            })
            .await
            .map_err(|e| {
                StoreError::invalid_input("<catalog>", format!("listing task failed: {e}"))
            });
        }
        Ok(futures::stream::iter(items)
            .map(|(n, v)| async move {
                let m = self.read(&n, v).await;
                (n, m)
            })
            .buffered(64)
            .collect()
            .await)
    }

    /// The newest record and its version, whether live or a tombstone.
    pub async fn head(&self, name: &ObjectName) -> Result<Option<Metadata>> {
        let versions = self.versions(name).await?;
        match versions.last() {
            None => Ok(None),
            Some(&v) => self.read(name, v).await,
        }
    }

    /// The current version, `None` when missing or dropped.
    pub async fn latest(&self, name: &ObjectName) -> Result<Option<Metadata>> {
        Ok(self.head(name).await?.filter(|m| !m.is_tombstone()))
    }

    /// Commits `meta` as version `meta.version` with put-if-absent.
    pub async fn commit(&self, meta: &Metadata) -> Result<std::result::Result<(), CommitConflict>> {
        let name = ObjectName::new(&meta.name)?;
        let path = self.record_path(&name, meta.version);
        let body = serde_json::to_vec_pretty(meta).map_err(|e| {
            StoreError::invalid_input(&meta.name, format!("metadata is not serializable: {e}"))
        })?;
        // the journal first: a record nobody noted could hide behind the index
        self.note(&name, Change::Commit(meta.version)).await?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .root
            .store
            .put_opts(&path, PutPayload::from(Bytes::from(body)), opts)
            .await
        {
            Ok(_) => {
                self.changed().await;
                Ok(Ok(()))
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Err(CommitConflict {
                version: meta.version,
            })),
            Err(e) => Err(StoreError::object_store(&path, e)),
        }
    }

    /// Withdraws a record this writer has just committed (see
    /// `Store::built_on_dropped`); a record already gone is fine.
    pub(crate) async fn retract(&self, name: &ObjectName, version: u64) -> Result<()> {
        self.retract_versions(name, &[version]).await
    }

    /// Withdraws records of `name` (old versions a vacuum removes), noted in
    /// the journal before and after (a record gone between the two is
    /// listed again either way).
    pub(crate) async fn retract_versions(&self, name: &ObjectName, versions: &[u64]) -> Result<()> {
        if versions.is_empty() {
            return Ok(());
        }
        self.note(name, Change::Relist).await?;
        for &v in versions {
            self.delete_quietly(&self.record_path(name, v)).await?;
        }
        self.changed().await;
        self.note(name, Change::Relist).await
    }

    /// After a change to records: a store whose records decide access
    /// touches the root's access mark (see [`super::access_mark`]).
    async fn changed(&self) {
        if access_mark::marks(&self.prefix) {
            access_mark::touch(&self.root).await;
        }
    }

    /// The latest committed version number of every name, from one
    /// recursive listing of the records (instead of one listing per name).
    pub async fn head_versions(&self) -> Result<Vec<(ObjectName, u64)>> {
        Ok(self
            .head_records()
            .await?
            .into_iter()
            .map(|(name, stamp)| (name, stamp.version))
            .collect())
    }

    /// Like [`Self::head_versions`], with the stamp of each head record, so
    /// a cache can tell whether a record it read before is still the head.
    pub async fn head_records(&self) -> Result<Vec<(ObjectName, RecordStamp)>> {
        let dir = self.meta_root();
        let listed = self.list_all(&dir).await?;
        let mut heads: std::collections::BTreeMap<ObjectName, (u64, ObjectMeta)> =
            Default::default();
        for m in listed {
            let Some((name, file)) = name_and_file(&dir, &m.location) else {
                continue;
            };
            let Some(v) = record_version(&file) else {
                continue;
            };
            match heads.get(&name) {
                Some((head, _)) if *head >= v => {}
                _ => {
                    heads.insert(name, (v, m));
                }
            }
        }
        Ok(heads
            .into_iter()
            .map(|(n, (v, m))| (n, RecordStamp::of(v, &m)))
            .collect())
    }

    /// The head record of every name `wanted` keeps, in name order, through
    /// the listing index and the change journal (see
    /// [`super::listing_index`], [`super::change_journal`]): the index is
    /// read, the journal listed, and only names with a marker the index has
    /// not resolved are read again; the index is rewritten when that changed
    /// it. Without a usable index every record is listed and read (and the
    /// index written). Results as [`Self::read_many`]'s: a record that
    /// cannot be read is an error of its name only.
    pub async fn list_heads(
        &self,
        wanted: impl Fn(&ObjectName) -> bool,
    ) -> Result<Vec<RecordRead>> {
        let index_path = self.index_path();
        let old = match self.root.store.get(&index_path).await {
            Ok(r) => r.bytes().await.ok().and_then(|b| ListingIndex::parse(&b)),
            Err(_) => None,
        };
        let now = chrono::Utc::now();
        // listed before the records are read: a change noted after this is
        // left for the next listing, never taken as resolved
        let markers = self.list_markers().await?;
        let (index, failed, changed) = match old {
            Some(index) => self.apply_markers(index, &markers, now).await?,
            None => (self.rebuild(&markers, now).await?, Vec::new(), true),
        };
        if changed {
            // a cache: a root that cannot take it (read-only, a fault) lists all the same
            if self
                .root
                .store
                .put(&index_path, PutPayload::from(index.to_bytes()))
                .await
                .is_ok()
            {
                self.delete_old_markers(&index, &markers, now).await;
            }
        }
        let mut out: Vec<RecordRead> = index
            .records()
            .filter_map(|(n, m)| {
                let name = ObjectName::new(n).ok()?;
                wanted(&name).then(|| (name, Ok(Some(m.clone()))))
            })
            .collect();
        for (name, e) in failed {
            if wanted(&name) {
                out.push((name, Err(e)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every marker of the change journal.
    async fn list_markers(&self) -> Result<Vec<Marker>> {
        let root = self.journal_root();
        Ok(self
            .list_all(&root)
            .await?
            .iter()
            .filter_map(|m| Marker::of(&root, m))
            .collect())
    }

    /// A new index from a listing of every record: the whole-store path,
    /// for a store without a usable index. Markers whose change the
    /// listing saw are taken in.
    async fn rebuild(&self, markers: &[Marker], now: DateTime<Utc>) -> Result<ListingIndex> {
        let heads = self.head_records().await?;
        let stamps: HashMap<ObjectName, RecordStamp> = heads.iter().cloned().collect();
        let reads = self
            .read_many(heads.iter().map(|(n, s)| (n.clone(), s.version)).collect())
            .await?;
        let mut index = ListingIndex::new();
        for (name, read) in reads {
            match (read, stamps.get(&name)) {
                (Ok(Some(record)), Some(stamp)) => {
                    index.insert(name.as_str(), stamp.clone(), record);
                }
                // a failed read (not a damaged record) fails the listing
                // rather than leave the name out of an index taken as whole
                (Err(e), _) if !matches!(e, StoreError::CorruptMetadata { .. }) => return Err(e),
                _ => {}
            }
        }
        let resolved: Vec<&Marker> = markers
            .iter()
            .filter(|m| resolves(m, stamps.get(&m.name).map(|s| s.version), now))
            .collect();
        index.set_resolved(resolved.into_iter());
        Ok(index)
    }

    /// `index` brought up to date with the markers it has not resolved:
    /// each marked name's head read again, by the version its newest commit
    /// marker names, or from a listing of its records when records were
    /// removed or that version is not there. Returns the index, the names
    /// whose head could not be read, and whether the index changed.
    async fn apply_markers(
        &self,
        mut index: ListingIndex,
        markers: &[Marker],
        now: DateTime<Utc>,
    ) -> Result<(ListingIndex, Vec<(ObjectName, StoreError)>, bool)> {
        let mut marked: BTreeMap<&ObjectName, Vec<&Marker>> = BTreeMap::new();
        for m in markers.iter().filter(|m| !index.has_resolved(m)) {
            marked.entry(&m.name).or_default().push(m);
        }
        let mut changed = false;
        type Head<'a> = (&'a ObjectName, Result<Option<(RecordStamp, Metadata)>>);
        // boxed as `Send` futures: spelled out, the combinators' borrows
        // defeat the compiler's `Send` proof of the callers' futures
        let reads: Vec<futures::future::BoxFuture<'_, Head<'_>>> = marked
            .iter()
            .map(|(name, ms)| {
                let known = index.version(name.as_str());
                Box::pin(async move { (*name, self.marked_head(name, ms, known).await) }) as _
            })
            .collect();
        let heads: Vec<Head<'_>> = futures::stream::iter(reads).buffered(64).collect().await;
        let mut resolved: Vec<&Marker> = markers.iter().filter(|m| index.has_resolved(m)).collect();
        let mut failed = Vec::new();
        for (name, head) in heads {
            match head {
                Ok(head) => {
                    let version = head.as_ref().map(|(s, _)| s.version);
                    changed |= match head {
                        Some((stamp, record)) => index.insert(name.as_str(), stamp, record),
                        None => index.remove(name.as_str()),
                    };
                    resolved.extend(
                        marked[name]
                            .iter()
                            .copied()
                            .filter(|m| resolves(m, version, now)),
                    );
                }
                Err(e @ StoreError::CorruptMetadata { .. }) => {
                    // left out of the listing until readable; its markers stay
                    changed |= index.remove(name.as_str());
                    failed.push((name.clone(), e));
                }
                Err(e) => return Err(e),
            }
        }
        changed |= index.set_resolved(resolved.into_iter());
        Ok((index, failed, changed))
    }

    /// The head record of `name` with its stamp (`None`: no records), given
    /// its unresolved markers and the version the index holds.
    async fn marked_head(
        &self,
        name: &ObjectName,
        markers: &[&Marker],
        known: Option<u64>,
    ) -> Result<Option<(RecordStamp, Metadata)>> {
        let relist = markers.iter().any(|m| m.change == Change::Relist);
        let newest = markers
            .iter()
            .filter_map(|m| match m.change {
                Change::Commit(v) => Some(v),
                Change::Relist => None,
            })
            .max();
        if let (false, Some(v)) = (relist, newest) {
            // versions only grow while no records are removed (removals
            // note `relist`), so the newest noted commit is the head
            if known.is_none_or(|k| k <= v)
                && let Some(head) = self.read_stamped(name, v).await?
            {
                return Ok(Some(head));
            }
        }
        match self.versions(name).await?.last() {
            None => Ok(None),
            Some(&v) => self.read_stamped(name, v).await,
        }
    }

    /// Record `version` of `name` with the stamp of its file; `None` when
    /// there is none.
    async fn read_stamped(
        &self,
        name: &ObjectName,
        version: u64,
    ) -> Result<Option<(RecordStamp, Metadata)>> {
        let path = self.record_path(name, version);
        let got = match self.root.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::object_store(&path, e)),
        };
        let stamp = RecordStamp::of(version, &got.meta);
        let bytes = got
            .bytes()
            .await
            .map_err(|e| StoreError::object_store(&path, e))?;
        parse_record(name, &path, &bytes).map(|m| Some((stamp, m)))
    }

    /// Deletes markers the written `index` resolved that are older than
    /// [`change_journal::RETENTION`] (best effort: a marker left is read
    /// again, never wrong).
    async fn delete_old_markers(
        &self,
        index: &ListingIndex,
        markers: &[Marker],
        now: DateTime<Utc>,
    ) {
        let old: Vec<&Marker> = markers
            .iter()
            .filter(|m| index.has_resolved(m) && m.age(now) > change_journal::RETENTION)
            .collect();
        let deletes: Vec<futures::future::BoxFuture<'_, ()>> = old
            .into_iter()
            .map(|m| {
                Box::pin(async move {
                    let _ = self.root.store.delete(&m.path).await;
                }) as _
            })
            .collect();
        futures::stream::iter(deletes)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }

    fn index_path(&self) -> Path {
        self.root.path(&[&self.bucket, &self.prefix, INDEX_FILE])
    }

    /// Deletes the tags of `name` and its records up to `through` (its
    /// tombstone); records a later writer committed meanwhile survive.
    pub async fn purge(&self, name: &ObjectName, through: u64) -> Result<()> {
        self.note(name, Change::Relist).await?;
        let mut paths: Vec<Path> = Vec::new();
        for dir in [self.tag_dir(name), self.meta_dir(name)] {
            let listed = self.list_all(&dir).await?;
            paths.extend(listed.into_iter().map(|m| m.location));
        }
        let mut records: Vec<(u64, Path)> = Vec::new();
        for p in paths {
            let version = p.filename().and_then(record_version);
            match version {
                Some(v) if p.prefix_matches(&self.meta_dir(name)) => {
                    if v <= through {
                        records.push((v, p));
                    }
                }
                _ => self.delete_quietly(&p).await?,
            }
        }
        // Oldest first and the tombstone last: a crash part way leaves the
        // tombstone on top, so the object stays dropped.
        records.sort();
        for (_, p) in records {
            self.delete_quietly(&p).await?;
        }
        self.changed().await;
        self.note(name, Change::Relist).await
    }

    async fn delete_quietly(&self, p: &Path) -> Result<()> {
        match self.root.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::object_store(p, e)),
        }
    }

    /// Points `tag` at `version` (a tag is a pointer, replaced atomically).
    pub async fn set_tag(&self, name: &ObjectName, tag: &str, version: u64) -> Result<()> {
        validate_tag(tag).map_err(|reason| StoreError::InvalidName {
            name: format!("{name}@{tag}"),
            reason,
        })?;
        let path = self.tag_dir(name).join(encode_segment(tag) + ".json");
        let body = serde_json::json!({ "tag": tag, "version": version }).to_string();
        self.root
            .store
            .put(&path, PutPayload::from(Bytes::from(body)))
            .await
            .map_err(|e| StoreError::object_store(&path, e))?;
        Ok(())
    }

    /// Removes a tag (a missing tag is fine).
    pub async fn delete_tag(&self, name: &ObjectName, tag: &str) -> Result<()> {
        let path = self.tag_dir(name).join(encode_segment(tag) + ".json");
        self.delete_quietly(&path).await
    }

    /// The version a tag points at.
    pub async fn tag(&self, name: &ObjectName, tag: &str) -> Result<Option<u64>> {
        let path = self.tag_dir(name).join(encode_segment(tag) + ".json");
        let bytes = match self.root.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| StoreError::object_store(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::object_store(&path, e)),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMetadata {
                name: format!("{name}@{tag}"),
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        Ok(v.get("version").and_then(|v| v.as_u64()))
    }

    /// All tags of `name` with their versions.
    pub async fn tags(&self, name: &ObjectName) -> Result<Vec<(String, u64)>> {
        let dir = self.tag_dir(name);
        let listed = self.list_all(&dir).await?;
        let mut out = Vec::new();
        for m in listed {
            let Some(tag) = m
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .and_then(super::name::decode_segment)
            else {
                continue;
            };
            if let Some(v) = self.tag(name, &tag).await? {
                out.push((tag, v));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Whether a listing that found `head` (the version of `name`'s head
/// record, `None` for none) as of `now` has taken in `marker`'s change: a
/// commit once its version (or a later one) is there, or when it is older
/// than the retention (its writer died before the record); records removed
/// once the marker is past the grace (a removal in progress is looked at
/// again).
fn resolves(marker: &Marker, head: Option<u64>, now: DateTime<Utc>) -> bool {
    let age = marker.age(now);
    match marker.change {
        Change::Commit(v) => head.is_some_and(|h| h >= v) || age > change_journal::RETENTION,
        Change::Relist => age > change_journal::GRACE,
    }
}

/// The name and file of `location` under `dir` (`dir/<encoded name>/<file>`,
/// as records, tags and journal markers are laid out); `None` for anything
/// this layout did not write.
pub(crate) fn name_and_file(dir: &Path, location: &Path) -> Option<(ObjectName, String)> {
    let parts: Vec<_> = location.prefix_match(dir)?.collect();
    let (file, enc) = parts.split_last()?;
    let enc: Vec<&str> = enc.iter().map(|p| p.as_ref()).collect();
    let name = ObjectName::from_encoded_parts(&enc)?;
    Some((name, file.as_ref().to_string()))
}

/// `dir` joined with the segments of `name`'s encoding.
pub(crate) fn join_name(dir: Path, name: &ObjectName) -> Path {
    name.encoded_parts()
        .iter()
        .fold(dir, |p, part| p.join(part.as_str()))
}

/// Parses a record file.
fn parse_record(name: &ObjectName, path: &Path, bytes: &[u8]) -> Result<Metadata> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptMetadata {
        name: name.to_string(),
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// The file name of the record of `version` (`<version:020>.json`).
pub(crate) fn record_file_name(version: u64) -> String {
    format!("{version:0width$}.json", width = VERSION_WIDTH)
}

/// The version a record file name (`<version:020>.json`) stands for.
pub(crate) fn record_version(file: &str) -> Option<u64> {
    file.strip_suffix(".json")
        .filter(|v| v.len() == VERSION_WIDTH)
        .and_then(|v| v.parse().ok())
}
