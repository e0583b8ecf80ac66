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

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};

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
        self.meta_dir(name)
            .join(format!("{version:0width$}.json", width = VERSION_WIDTH))
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
        let path = self.record_path(name, version);
        let bytes = match self.root.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| StoreError::object_store(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::object_store(&path, e)),
        };
        parse_record(name, &path, &bytes).map(Some)
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
            Ok(_) => Ok(Ok(())),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Err(CommitConflict {
                version: meta.version,
            })),
            Err(e) => Err(StoreError::object_store(&path, e)),
        }
    }

    /// Withdraws a record this writer has just committed (see
    /// `Store::built_on_dropped`); a record already gone is fine.
    pub(crate) async fn retract(&self, name: &ObjectName, version: u64) -> Result<()> {
        self.delete_quietly(&self.record_path(name, version)).await
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
            let Some(parts) = m.location.prefix_match(&dir) else {
                continue;
            };
            let parts: Vec<_> = parts.collect();
            let Some((file, enc)) = parts.split_last() else {
                continue;
            };
            let enc: Vec<&str> = enc.iter().map(|p| p.as_ref()).collect();
            let Some(name) = ObjectName::from_encoded_parts(&enc) else {
                continue;
            };
            let Some(v) = record_version(file.as_ref()) else {
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

    /// The records `heads` (from [`Self::head_records`]) name, for the names
    /// `wanted` keeps, through the listing index (see
    /// [`super::listing_index`]): a record the index holds with the listed
    /// stamp is not read again. The index is then rewritten to hold every
    /// head it could vouch for, if that changed it. Results as
    /// [`Self::read_many`]'s, in the order of `heads`.
    pub async fn read_heads(
        &self,
        heads: Vec<(ObjectName, RecordStamp)>,
        wanted: impl Fn(&ObjectName) -> bool,
    ) -> Result<Vec<RecordRead>> {
        if self.root.local_dir {
            // Measured (`om bench catalog --objects 10000`): on a local
            // directory parsing the index costs what reading the records in
            // one blocking task does, so the index only pays where a read is
            // a request (S3).
            let wanted = heads
                .into_iter()
                .filter(|(n, _)| wanted(n))
                .map(|(n, s)| (n, s.version))
                .collect();
            return self.read_many(wanted).await;
        }
        let index_path = self.index_path();
        let old = match self.root.store.get(&index_path).await {
            Ok(r) => match r.bytes().await {
                Ok(b) => ListingIndex::parse(&b),
                Err(_) => ListingIndex::default(),
            },
            Err(_) => ListingIndex::default(),
        };
        let mut next = ListingIndex::new();
        let mut out: Vec<Option<RecordRead>> = Vec::new();
        let mut misses = Vec::new();
        for (name, stamp) in &heads {
            let hit = old.get(name.as_str(), stamp).cloned();
            if let Some(record) = &hit {
                next.insert(name.as_str(), stamp.clone(), record.clone());
            }
            if !wanted(name) {
                continue;
            }
            match hit {
                Some(record) => out.push(Some((name.clone(), Ok(Some(record))))),
                None => {
                    out.push(None);
                    misses.push((name.clone(), stamp.version));
                }
            }
        }
        let stamps: std::collections::HashMap<&ObjectName, &RecordStamp> =
            heads.iter().map(|(n, s)| (n, s)).collect();
        let mut read = self.read_many(misses).await?.into_iter();
        let mut changed = next.len() != old.len();
        for slot in &mut out {
            if slot.is_some() {
                continue;
            }
            let Some((name, result)) = read.next() else {
                break;
            };
            if let (Ok(Some(record)), Some(stamp)) = (&result, stamps.get(&name)) {
                next.insert(name.as_str(), (*stamp).clone(), record.clone());
                changed = true;
            }
            *slot = Some((name, result));
        }
        if changed {
            // a cache: a root that cannot take it (read-only, a fault) lists all the same
            let _ = self
                .root
                .store
                .put(&index_path, PutPayload::from(next.to_bytes()))
                .await;
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn index_path(&self) -> Path {
        self.root.path(&[&self.bucket, &self.prefix, INDEX_FILE])
    }

    /// Deletes the tags of `name` and its records up to `through` (its
    /// tombstone); records a later writer committed meanwhile survive.
    pub async fn purge(&self, name: &ObjectName, through: u64) -> Result<()> {
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
        Ok(())
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

/// `dir` joined with the segments of `name`'s encoding.
fn join_name(dir: Path, name: &ObjectName) -> Path {
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

/// The version a record file name (`<version:020>.json`) stands for.
fn record_version(file: &str) -> Option<u64> {
    file.strip_suffix(".json")
        .filter(|v| v.len() == VERSION_WIDTH)
        .and_then(|v| v.parse().ok())
}
