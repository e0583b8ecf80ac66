//! The change journal of a store: `<bucket>/<store>/changes/<encoded name>/…`,
//! one small marker per change to a name's records, written *before* the
//! change (see [`super::Catalog::commit`]).
//!
//! Why: the listing index (`super::listing_index`) holds the head record of
//! every name, but trusting it needs proof that nothing changed since it
//! was written. Listing every record is that proof at the price of one
//! directory per object (on a local disk ~150 ms for 10,000 objects before
//! any record is read; on S3 one LIST request per 1,000). The journal is a
//! cheaper proof: every change leaves a marker first, so a listing reads
//! the index, lists the journal, and re-reads only the names it marks.
//!
//! Contract:
//! * A writer notes a commit of version `v` (`<v:020>.json`) before it
//!   writes the record; a failed note fails the commit. So every record a
//!   reader can see has a marker, until a listing has taken it into the
//!   index and the marker has aged past [`RETENTION`].
//! * Removing records (a drop's purge, withdrawing a record) notes
//!   `relist` before and after: the name's records are listed again rather
//!   than read by version.
//! * A marker is *resolved* when a listing has read what it announced: the
//!   committed record (or a later one), or, for `relist`, a listing of the
//!   name made when the marker was older than [`GRACE`] (so a removal in
//!   progress is looked at again). The index keeps the markers it resolved
//!   with their stamps; a marker written again (a new stamp) is new.
//! * Markers are deleted only when resolved and older than [`RETENTION`],
//!   after an index holding them was written. An index written by a
//!   listing that lost a race is repaired by the next one: the markers it
//!   missed are still there.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::ObjectMeta;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::name::ObjectName;

/// How long a `relist` marker is looked at again: a removal it announces
/// finishes well within it.
pub(crate) const GRACE: Duration = Duration::from_secs(60);

/// How long a resolved marker is kept: longer than any listing takes, so
/// an index written late by a slow listing cannot hide a change whose
/// marker a faster one deleted. A commit marker whose record never came
/// (a writer that died between note and record) goes after it too.
pub(crate) const RETENTION: Duration = Duration::from_secs(3600);

/// File name of a `relist` marker.
const RELIST: &str = "relist";

/// What a marker announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The record of this version is being committed.
    Commit(u64),
    /// Records of the name are being removed: list them again.
    Relist,
}

impl Change {
    pub(crate) fn file_name(self) -> String {
        match self {
            Change::Commit(v) => super::catalog::record_file_name(v),
            Change::Relist => RELIST.to_string(),
        }
    }

    fn parse(file: &str) -> Option<Self> {
        if file == RELIST {
            return Some(Change::Relist);
        }
        super::catalog::record_version(file).map(Change::Commit)
    }
}

/// A marker's identity as listed: rewriting it gives another stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MarkerStamp {
    pub e_tag: Option<String>,
    pub modified: DateTime<Utc>,
}

/// One listed marker.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub name: ObjectName,
    pub change: Change,
    /// Its path relative to the journal (the key the index keeps).
    pub key: String,
    pub path: Path,
    pub stamp: MarkerStamp,
}

impl Marker {
    /// The marker at `meta` under the journal `root`; `None` for anything
    /// the journal did not write (skipped, as the record listing skips).
    pub(crate) fn of(root: &Path, meta: &ObjectMeta) -> Option<Self> {
        let (name, file) = super::catalog::name_and_file(root, &meta.location)?;
        let change = Change::parse(&file)?;
        // the canonical encoding is the only one `name_and_file` accepts
        let key = format!("{}/{file}", name.encoded_parts().join("/"));
        Some(Self {
            name,
            change,
            key,
            path: meta.location.clone(),
            stamp: MarkerStamp {
                e_tag: meta.e_tag.clone(),
                modified: meta.last_modified,
            },
        })
    }

    /// How long ago the marker was written, as of `now` (zero for a clock
    /// behind the store's).
    pub(crate) fn age(&self, now: DateTime<Utc>) -> Duration {
        (now - self.stamp.modified).to_std().unwrap_or_default()
    }
}
