//! Who is asking: every request presents an API key (`authorization: Bearer
//! oms_…`, or HTTP Basic with the key as password, which the Flight SQL
//! handshake turns into a bearer token). The key's bucket and role become
//! the session identity, fixed for the request: `SET omega.*` is refused, so
//! a client can never widen it. Deny by default; anonymous access exists only
//! when the operator started the server with `--allow-anonymous ROLE`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::Omega;
use crate::store::keys::{KeyError, KeyRecord, Keys, key_id, same};

use super::error::ServerError;
use super::failed_auth::FailedAuths;

/// The session a request runs in, and the key it came with.
#[derive(Clone)]
pub struct Identity {
    pub om: Omega,
    /// The key id (`anonymous` without a key): owner of statements and tickets.
    pub key_id: String,
    /// Name shown in request logs.
    pub who: String,
    /// The key this identity was verified from, and when (`None`: anonymous).
    pub credential: Option<Credential>,
}

/// How long a verification vouches for a ticket planned from it: a `DoGet`
/// that presents the same key within this time is not verified against the
/// store again (the query was authorised when it was planned).
pub const TICKET_TRUST: Duration = Duration::from_secs(1);

/// A verified key, kept only as its SHA-256.
#[derive(Clone)]
pub struct Credential {
    digest: [u8; 32],
    verified_at: Instant,
}

impl Credential {
    fn new(key: &str) -> Self {
        Self {
            digest: Sha256::digest(key.as_bytes()).into(),
            verified_at: Instant::now(),
        }
    }

    /// Whether `key` is the key verified, less than [`TICKET_TRUST`] ago.
    pub fn vouches_for(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        same(&digest, &self.digest) && self.verified_at.elapsed() < TICKET_TRUST
    }
}

/// Verifies keys and keeps one session per key (a session is cheap to share
/// and costly to build). The key is verified against the store's record
/// for every request (concurrent requests share a read that began after
/// they arrived), so a revoked or expired key stops working at once; only
/// the `DoGet` of a ticket the same key planned less than [`TICKET_TRUST`]
/// before relies on that planning's verification.
pub struct Authenticator {
    base: Omega,
    keys: Keys,
    anonymous: Option<Identity>,
    sessions: Mutex<HashMap<String, (KeyRecord, Omega)>>,
    failures: FailedAuths,
}

/// Sessions kept at most; the cache is cleared when it would grow past it.
const MAX_SESSIONS: usize = 4096;

impl Authenticator {
    /// `anonymous`: the role requests without any credentials get, in the
    /// base `Omega`'s bucket (for local use only). `failed_auths`: failed
    /// authentications an address may have per minute (see [`FailedAuths`]).
    pub fn new(
        base: Omega,
        anonymous: Option<&str>,
        failed_auths: u32,
    ) -> Result<Self, ServerError> {
        let anonymous = match anonymous {
            Some(role) => {
                let bucket = base.bucket_name().to_string();
                let om = base
                    .with_identity("anonymous", &[role], false)?
                    .bound_to_bucket(&bucket)?;
                Some(Identity {
                    om,
                    key_id: "anonymous".into(),
                    who: format!("anonymous ({role})"),
                    credential: None,
                })
            }
            None => None,
        };
        Ok(Self {
            keys: Keys::new(base.root().clone()),
            base,
            anonymous,
            sessions: Mutex::new(HashMap::new()),
            failures: FailedAuths::new(failed_auths),
        })
    }

    /// The identity for an `authorization` header value (or none), sent
    /// from `peer` (when known).
    pub async fn identify(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Identity, ServerError> {
        let Some(header) = authorization else {
            return self
                .anonymous
                .clone()
                .ok_or_else(ServerError::unauthenticated);
        };
        let key = key_of(header).ok_or_else(ServerError::unauthenticated)?;
        self.for_key(&key, peer).await
    }

    /// The identity of a key sent from `peer`: verified, then its cached
    /// session. An address past its budget of failures gets only the keys
    /// this server verified before.
    pub async fn for_key(&self, key: &str, peer: Option<IpAddr>) -> Result<Identity, ServerError> {
        if let Some(ip) = peer
            && let Some(wait) = self.failures.exhausted(ip)
            && !self.knows(key)
        {
            return Err(ServerError::rate_limited(format!(
                "too many failed authentications from {ip}; try again in {} s with a valid API key (om keys list shows the live ones)",
                wait.as_secs().max(1)
            )));
        }
        let credential = Credential::new(key);
        let record = match self.keys.verify(key).await {
            Ok(record) => record,
            Err(e) => {
                if let (KeyError::Unauthenticated, Some(ip)) = (&e, peer) {
                    self.failures.record(ip);
                }
                return Err(e.into());
            }
        };
        let cached = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions
                .get(&record.id)
                .filter(|(r, _)| r.role == record.role && r.bucket == record.bucket)
                .map(|(_, om)| om.clone())
        };
        let om = match cached {
            Some(om) => om,
            None => {
                let om = self.base.for_key_record(&record)?;
                let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                if sessions.len() >= MAX_SESSIONS {
                    sessions.clear();
                }
                sessions.insert(record.id.clone(), (record.clone(), om.clone()));
                om
            }
        };
        Ok(Identity {
            om,
            key_id: record.id.clone(),
            who: format!("{} ({})", record.name, record.id),
            credential: Some(credential),
        })
    }

    /// Whether a key with `key`'s id was verified by this server before.
    fn knows(&self, key: &str) -> bool {
        key_id(key).is_some_and(|id| {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(id)
        })
    }

    /// Whether the store's root answers (what `/readyz` reports).
    pub async fn check_root(&self) -> Result<(), ServerError> {
        Ok(self.base.root().check().await?)
    }

    /// True when requests without credentials are let in.
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }
}

/// The key in `Bearer <key>` or `Basic base64(user:key)` (any user name).
pub fn key_of(header: &str) -> Option<String> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(rest))
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_bearer_or_basic_headers() {
        assert_eq!(key_of("Bearer oms_a_b").as_deref(), Some("oms_a_b"));
        assert_eq!(key_of("bearer  oms_a_b ").as_deref(), Some("oms_a_b"));
        // "user:oms_x" in base64
        assert_eq!(key_of("Basic dXNlcjpvbXNfeA==").as_deref(), Some("oms_x"));
        assert_eq!(key_of("Basic dXNlcjpvbXNfeA").as_deref(), Some("oms_x"));
        assert_eq!(key_of("Basic !!!"), None);
        assert_eq!(key_of("Digest x"), None);
        assert_eq!(key_of("oms_a_b"), None);
    }

    #[test]
    fn a_credential_vouches_only_for_its_own_key_and_only_for_a_while() {
        let key = "oms_0123456789ab_secret";
        let fresh = Credential::new(key);
        assert!(fresh.vouches_for(key));
        assert!(!fresh.vouches_for("oms_0123456789ab_secreT"));
        assert!(!fresh.vouches_for(""));
        let old = Credential {
            verified_at: Instant::now() - TICKET_TRUST,
            ..fresh
        };
        assert!(!old.vouches_for(key));
    }
}
