//! The listing index of a store: `<bucket>/<store>/index.json`, the head
//! record of every name as the last listing found it, each with the stamp
//! of the record file it was read from.
//!
//! A listing lists the records (one recursive listing, as before) and takes
//! from the index every record whose file still has the stamp the index
//! holds; only the others are read, and the index is rewritten when any
//! were. So listing a store of 10,000 unchanged objects reads one file
//! besides the listing instead of 10,000 (on S3: one GET instead of 10,000).
//!
//! Used where reading a record is a request (S3, memory, a wrapped store);
//! on a plain local directory the records are read directly, which
//! measured as fast as parsing the index.
//!
//! The index is a cache, never a source of truth: every entry is checked
//! against the listing before use, an unreadable or foreign index is
//! ignored (and replaced), and a failure to write it (a read-only root, a
//! fault) fails nothing. Losing it costs speed, never answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

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
const FORMAT: &str = "omegastore.listing-index.v1";

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ListingIndex {
    format: String,
    entries: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    stamp: RecordStamp,
    record: Metadata,
}

impl ListingIndex {
    /// The index in `bytes`; empty when they are not one (a cache only).
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|i| i.format == FORMAT)
            .unwrap_or_default()
    }

    pub(crate) fn new() -> Self {
        Self {
            format: FORMAT.into(),
            entries: BTreeMap::new(),
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record of `name` if the index holds it with exactly `stamp`.
    pub(crate) fn get(&self, name: &str, stamp: &RecordStamp) -> Option<&Metadata> {
        self.entries
            .get(name)
            .filter(|e| &e.stamp == stamp)
            .map(|e| &e.record)
    }

    pub(crate) fn insert(&mut self, name: &str, stamp: RecordStamp, record: Metadata) {
        self.entries
            .insert(name.to_string(), IndexEntry { stamp, record });
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
