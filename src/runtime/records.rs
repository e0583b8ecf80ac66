//! The runtime's records, as JSON files under `_system/runtime/` of the
//! root: `_system` is not a valid bucket name, so no bucket, store or SQL
//! catalog reaches them; the runtime's system tables show them filtered by
//! identity. Each write replaces a whole file atomically (the object
//! store's put); a claim is a put-if-absent, so of several processes that
//! claim one name exactly one succeeds.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::name::{decode_segment, encode_segment};
use crate::store::{Root, StoreError};

/// A listed segment as the part it was written from (a segment this
/// module did not write stays as it is).
fn decoded(segment: &str) -> String {
    decode_segment(segment).unwrap_or_else(|| segment.to_string())
}

const AREA: [&str; 2] = ["_system", "runtime"];

/// The runtime's area of one root.
#[derive(Debug, Clone)]
pub struct Records {
    root: Root,
}

impl Records {
    pub fn new(root: Root) -> Self {
        Self { root }
    }

    /// Each part is one segment, encoded like the store's names (`/` in a
    /// job name is `=2F`): what [`Records::locations`] lists decodes back
    /// to the parts it was written with.
    fn path(&self, parts: &[&str]) -> Path {
        let encoded: Vec<String> = parts.iter().map(|p| encode_segment(p)).collect();
        let all: Vec<&str> = AREA
            .iter()
            .copied()
            .chain(encoded.iter().map(String::as_str))
            .collect();
        self.root.path(&all)
    }

    /// Writes `value` at `parts`; with `create`, only if nothing is there
    /// (false when something was).
    pub async fn put<T: Serialize>(
        &self,
        parts: &[&str],
        value: &T,
        create: bool,
    ) -> Result<bool, StoreError> {
        let path = self.path(parts);
        let body = serde_json::to_vec_pretty(value)
            .map_err(|e| StoreError::invalid_input(path.as_ref(), e))?;
        let opts = PutOptions {
            mode: if create {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..Default::default()
        };
        match self.root.store.put_opts(&path, body.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) if create => Ok(false),
            Err(e) => Err(StoreError::object_store(&path, e)),
        }
    }

    /// The record at `parts`, if there is one.
    pub async fn get<T: DeserializeOwned>(&self, parts: &[&str]) -> Result<Option<T>, StoreError> {
        let path = self.path(parts);
        self.read(&path).await
    }

    async fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, StoreError> {
        let bytes = match self.root.store.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| StoreError::object_store(path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::object_store(path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::CorruptMetadata {
                name: path.filename().unwrap_or_default().to_string(),
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// The locations of every record under `parts` (recursively), as their
    /// parts below the area.
    pub async fn locations(&self, parts: &[&str]) -> Result<Vec<Vec<String>>, StoreError> {
        let prefix = self.path(parts);
        let area = self.path(&[]);
        let metas: Vec<_> = self
            .root
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| StoreError::object_store(&prefix, e))?;
        let mut out: Vec<Vec<String>> = metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .prefix_match(&area)
                    .map(|p| p.map(|part| decoded(part.as_ref())).collect())
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The names of the directories directly under `parts` (the buckets,
    /// under the area's root).
    pub async fn children(&self, parts: &[&str]) -> Result<Vec<String>, StoreError> {
        let prefix = self.path(parts);
        let listed = self
            .root
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| StoreError::object_store(&prefix, e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(decoded))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The locations under `<bucket>/<kind>` of every bucket.
    pub async fn locations_of_kind(&self, kind: &str) -> Result<Vec<Vec<String>>, StoreError> {
        let mut out = Vec::new();
        for bucket in self.children(&[]).await? {
            if bucket == "owners" {
                continue;
            }
            out.extend(self.locations(&[&bucket, kind]).await?);
        }
        Ok(out)
    }

    /// Every record under `parts` (recursively) that parses as `T`; one
    /// that does not is skipped (a foreign or torn file is no record).
    pub async fn list<T: DeserializeOwned>(&self, parts: &[&str]) -> Result<Vec<T>, StoreError> {
        let locations = self.locations(parts).await?;
        let reads = futures::stream::iter(locations.into_iter().map(|loc| async move {
            let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
            self.get::<T>(&refs).await
        }))
        .buffered(16)
        .collect::<Vec<_>>()
        .await;
        let mut out = Vec::new();
        for r in reads {
            match r {
                Ok(Some(v)) => out.push(v),
                Ok(None) | Err(StoreError::CorruptMetadata { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, parts: &[&str]) -> Result<(), StoreError> {
        let path = self.path(parts);
        match self.root.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::object_store(&path, e)),
        }
    }
}
