//! The listing index of a store: `<bucket>/<store>/index.json`, the head
//! record of every name as the last listing found it, each with the stamp
//! of the record file it was read from, and the markers of the change
//! journal ([`super::change_journal`]) that listing resolved.
//!
//! A listing reads the index and lists the journal; only names with a
//! marker the index has not resolved are read again (their record by
//! version, or their records listed when records were removed), and the
//! index is rewritten when anything changed. So listing a store of 10,000
//! unchanged objects reads one file and lists one small directory instead
//! of listing 10,000 directories (on S3: one GET and one LIST).
//!
//! The index is a cache, never a source of truth: an unreadable or foreign
//! index is ignored and rebuilt from a listing of every record, a failure
//! to write it (a read-only root, a fault) fails nothing, and an index
//! older than a change (a listing that lost a race, a restored copy) still
//! sees it, since the change's marker outlives it. Losing it costs speed,
//! never answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::change_journal::{Marker, MarkerStamp};
use super::metadata::Metadata;

/// What identifies a record file as listed: its version, and what the
/// object store says of the object. Records are written once
/// (put-if-absent); one written anew under a version number a purge freed
/// has another e-tag and time, so an equal stamp is the same record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStamp {
    pub version: u64,
    pub e_tag: Option<String>,
    pub modified: DateTime<Utc>,
    pub size: u64,
}

impl RecordStamp {
    pub fn of(version: u64, listed: &ObjectMeta) -> Self {
        Self {
            version,
            e_tag: listed.e_tag.clone(),
            modified: listed.last_modified,
            size: listed.size,
        }
    }
}

/// Format tag: an index written by another format is ignored.
const FORMAT: &str = "omegastore.listing-index.v2";

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ListingIndex {
    format: String,
    entries: BTreeMap<String, IndexEntry>,
    /// Journal markers (by key) this index has taken in, with their stamps.
    #[serde(default)]
    resolved: BTreeMap<String, MarkerStamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    stamp: RecordStamp,
    record: Metadata,
}

impl ListingIndex {
    /// The index in `bytes`; `None` when they are not one (a cache only).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|i| i.format == FORMAT)
    }

    pub(crate) fn new() -> Self {
        Self {
            format: FORMAT.into(),
            entries: BTreeMap::new(),
            resolved: BTreeMap::new(),
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Holds `record` as `name`'s head; whether that changed the index.
    pub(crate) fn insert(&mut self, name: &str, stamp: RecordStamp, record: Metadata) -> bool {
        let same = self.entries.get(name).is_some_and(|e| e.stamp == stamp);
        self.entries
            .insert(name.to_string(), IndexEntry { stamp, record });
        !same
    }

    /// Forgets `name`; whether the index held it.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.entries.remove(name).is_some()
    }

    /// The version of the head record the index holds for `name`.
    pub(crate) fn version(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|e| e.stamp.version)
    }

    /// Every name with its head record, in name order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (&str, &Metadata)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), &e.record))
    }

    /// Whether this index took in `marker` as it is now.
    pub(crate) fn has_resolved(&self, marker: &Marker) -> bool {
        self.resolved.get(&marker.key) == Some(&marker.stamp)
    }

    /// Keeps exactly `markers` as the resolved ones (markers gone from
    /// the journal are forgotten); whether that changed the index.
    pub(crate) fn set_resolved<'a>(&mut self, markers: impl Iterator<Item = &'a Marker>) -> bool {
        let resolved: BTreeMap<String, MarkerStamp> =
            markers.map(|m| (m.key.clone(), m.stamp.clone())).collect();
        let changed = resolved != self.resolved;
        self.resolved = resolved;
        changed
    }
}
