//! API keys: who may open a session on a store from outside (the server).
//!
//! A key is `oms_<id>_<secret>`: a 12-hex-digit id and a 256-bit random
//! secret. The store keeps, per key, only its id, the SHA-256 of the secret
//! and the identity the key grants (a bucket and a role), in
//! `_system/keys/<id>.json` under the root: `_system` is not a valid bucket
//! name, so no bucket, store or SQL catalog reaches it. A key is shown once,
//! when it is created; verification compares digests in constant time and
//! refuses revoked and expired keys. Deny by default: anything that is not a
//! valid, live key is [`KeyError::Unauthenticated`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bucket::validate_bucket;
use super::error::StoreError;
use super::fresh::Fresh;
use super::root::Root;

/// The prefix every key starts with (recognisable in logs and by scanners).
pub const KEY_PREFIX: &str = "oms_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 64;

/// Errors of the key verbs.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key is missing, malformed, unknown, revoked or expired. The
    /// message says no more (it would help a guesser).
    #[error("unauthenticated: the API key is missing, invalid, revoked or expired")]
    Unauthenticated,
    #[error("no API key with id '{0}'; list them with `om keys list`")]
    NotFound(String),
    #[error("invalid {what} '{value}': {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the store records about a key (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// The bucket a session opened with this key is bound to.
    pub bucket: String,
    /// The role the session plays there.
    pub role: String,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub revoked: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the secret part.
    pub sha256: String,
}

impl KeyRecord {
    /// Whether the key may be used at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|e| now < e)
    }
}

/// The API keys of one root. Clones share their reads: concurrent
/// verifications of one key read its record once ([`Fresh`]), never
/// trusting a read that began before they asked (a revocation applies to
/// the next request).
#[derive(Clone)]
pub struct Keys {
    root: Root,
    reads: Arc<SharedReads>,
}

/// The reads of key records concurrent verifications share, by key id.
type SharedReads = Mutex<HashMap<String, Arc<Fresh<Option<KeyRecord>>>>>;

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Keys whose reads are shared at most; the table is emptied when it would
/// grow past it (it only ever saves reads).
const SHARED_READS: usize = 4096;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal byte strings, in time independent of where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random hex digits from the OS generator, through UUID v4 (whose
/// bytes 6 and 8 carry the version and variant: those are skipped, the
/// other 14 bytes are uniformly random).
fn random_hex(n: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() * 2 < n {
        let u = uuid::Uuid::new_v4();
        bytes.extend(
            u.as_bytes()
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 6 && *i != 8)
                .map(|(_, b)| *b),
        );
    }
    let mut s = hex(&bytes);
    s.truncate(n);
    s
}

/// Parses `90d`, `12h`, `30m` (days, hours, minutes).
pub fn parse_lifetime(text: &str) -> Result<chrono::Duration, KeyError> {
    let bad = |reason: &str| KeyError::Invalid {
        what: "lifetime",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .map_err(|_| bad("expected a number and a unit, e.g. 90d, 12h or 30m"))?;
    if n <= 0 {
        return Err(bad("must be positive"));
    }
    match unit {
        "d" => Ok(chrono::Duration::days(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        _ => Err(bad("the unit is d, h or m")),
    }
}

impl Keys {
    pub fn new(root: Root) -> Self {
        Self {
            root,
            reads: Default::default(),
        }
    }

    /// The record of key `id` as the store holds it now, read once for the
    /// concurrent callers that may share the read.
    async fn read_shared(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let fresh = {
            let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            if reads.len() >= SHARED_READS && !reads.contains_key(id) {
                reads.clear();
            }
            reads.entry(id.to_string()).or_default().clone()
        };
        fresh.get(|| self.read(id)).await
    }

    fn path(&self, id: &str) -> Path {
        self.root.path(&["_system", "keys", &format!("{id}.json")])
    }

    async fn write(&self, record: &KeyRecord, create: bool) -> Result<(), KeyError> {
        let path = self.path(&record.id);
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| StoreError::invalid_input(&record.id, e))?;
        let opts = object_store::PutOptions {
            mode: if create {
                object_store::PutMode::Create
            } else {
                object_store::PutMode::Overwrite
            },
            ..Default::default()
        };
        self.root
            .store
            .put_opts(&path, body.into(), opts)
            .await
            .map_err(|e| StoreError::object_store(&path, e))?;
        Ok(())
    }

    async fn read(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        let path = self.path(id);
        let bytes = match self.root.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| StoreError::object_store(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(StoreError::object_store(&path, e).into()),
        };
        let record = serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMetadata {
            name: format!("key {id}"),
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(record))
    }

    /// Creates a key for `role` on `bucket`; returns the key (shown once:
    /// the store keeps only its digest) and its record.
    pub async fn create(
        &self,
        bucket: &str,
        role: &str,
        name: Option<&str>,
        lifetime: Option<chrono::Duration>,
    ) -> Result<(String, KeyRecord), KeyError> {
        validate_bucket(bucket)?;
        if role.is_empty()
            || !role
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Err(KeyError::Invalid {
                what: "role",
                value: role.to_string(),
                reason: "a role is letters, digits, '_' or '-'".into(),
            });
        }
        let id = random_hex(ID_LEN);
        let secret = random_hex(SECRET_LEN);
        let now = Utc::now();
        let record = KeyRecord {
            id: id.clone(),
            name: name.unwrap_or(role).to_string(),
            bucket: bucket.to_string(),
            role: role.to_string(),
            created: now,
            expires: lifetime.map(|l| now + l),
            revoked: None,
            sha256: digest(&secret),
        };
        self.write(&record, true).await?;
        Ok((format!("{KEY_PREFIX}{id}_{secret}"), record))
    }

    /// Every key's record, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        use futures::TryStreamExt;
        let dir = self.root.path(&["_system", "keys"]);
        let listed: Vec<_> = self
            .root
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| StoreError::object_store(&dir, e))?;
        let mut out = Vec::new();
        for m in listed {
            let Some(id) = m.location.filename().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if let Some(r) = self.read(id).await? {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.created);
        Ok(out)
    }

    /// Revokes key `id` (it stops working at once; the record stays).
    pub async fn revoke(&self, id: &str) -> Result<KeyRecord, KeyError> {
        if !is_id(id) {
            return Err(KeyError::NotFound(id.to_string()));
        }
        let mut record = self
            .read(id)
            .await?
            .ok_or_else(|| KeyError::NotFound(id.to_string()))?;
        if record.revoked.is_none() {
            record.revoked = Some(Utc::now());
            self.write(&record, false).await?;
        }
        Ok(record)
    }

    /// The record of a live key, or [`KeyError::Unauthenticated`].
    pub async fn verify(&self, key: &str) -> Result<KeyRecord, KeyError> {
        let (id, secret) = parts_of(key).ok_or(KeyError::Unauthenticated)?;
        let record = match self.read_shared(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(KeyError::Unauthenticated),
            Err(e) => return Err(e),
        };
        if !same(digest(secret).as_bytes(), record.sha256.as_bytes()) || !record.is_live(Utc::now())
        {
            return Err(KeyError::Unauthenticated);
        }
        Ok(record)
    }
}

/// The id and secret of a well-formed key (`oms_<id>_<secret>`); `None`
/// for anything else (refused without reading the store).
fn parts_of(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    (is_id(id) && secret.len() == SECRET_LEN).then_some((id, secret))
}

/// Whether `id` has the shape of a key id (what may name a key record).
fn is_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The id of a well-formed key (what a server may know it by before
/// verifying it).
pub fn key_id(key: &str) -> Option<&str> {
    parts_of(key).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_or_explain() {
        assert_eq!(parse_lifetime("90d").unwrap(), chrono::Duration::days(90));
        assert_eq!(parse_lifetime("12h").unwrap(), chrono::Duration::hours(12));
        for bad in ["", "d", "0d", "-1d", "5w", "x1d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    /// Forged ids (each a store read that finds nothing) never grow the
    /// table of shared reads past its bound, and real keys still verify.
    #[tokio::test]
    async fn the_shared_read_table_stays_bounded() {
        let keys = Keys::new(Root::open("memory://").unwrap());
        let (key, _) = keys.create("default", "analyst", None, None).await.unwrap();
        for i in 0..SHARED_READS + 10 {
            let forged = format!("{KEY_PREFIX}{i:0ID_LEN$x}_{}", "0".repeat(SECRET_LEN));
            assert!(matches!(
                keys.verify(&forged).await,
                Err(KeyError::Unauthenticated)
            ));
            assert!(keys.reads.lock().unwrap().len() <= SHARED_READS);
        }
        assert_eq!(keys.verify(&key).await.unwrap().role, "analyst");
    }

    #[test]
    fn random_parts_are_hex_of_the_right_length_and_differ() {
        let a = random_hex(SECRET_LEN);
        let b = random_hex(SECRET_LEN);
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let (a, b) = (a.as_bytes(), b.as_bytes());
        assert!(same(a, a) && !same(a, b) && !same(a, &a[1..]));
    }
}
