//! A bounded map whose entries expire: prepared statements and query tickets
//! live here, so that clients that never close what they open cannot grow
//! the server's memory. Each entry belongs to the key that created it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{ErrorKind, ServerError};

/// Entries by handle, each with its owner (a key id) and last use.
pub struct Expiring<V> {
    what: &'static str,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry<V>>>,
}

struct Entry<V> {
    owner: String,
    used: Instant,
    value: V,
}

impl<V: Clone> Expiring<V> {
    /// `what` names the entries in errors ("prepared statement", "ticket").
    pub fn new(what: &'static str, ttl: Duration, capacity: usize) -> Self {
        Self {
            what,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Adds an entry under a fresh random handle and returns the handle.
    /// Expired entries are dropped first; a full map refuses the entry
    /// (the client should close what it no longer uses, or retry later).
    pub fn insert(&self, owner: &str, value: V) -> Result<String, ServerError> {
        let handle = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, e| now.duration_since(e.used) < self.ttl);
        }
        if entries.len() >= self.capacity {
            return Err(ServerError::new(
                ErrorKind::Unavailable,
                format!(
                    "too many open {what}s ({n}); close unused {what}s or retry later",
                    what = self.what,
                    n = entries.len()
                ),
            ));
        }
        entries.insert(
            handle.clone(),
            Entry {
                owner: owner.to_string(),
                used: now,
                value,
            },
        );
        Ok(handle)
    }

    /// The entry for `handle` if `owner` created it and it has not expired;
    /// marks it used. Another key's handle is reported as unknown.
    pub fn get(&self, owner: &str, handle: &str) -> Result<V, ServerError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get_mut(handle) {
            Some(e) if e.owner == owner && now.duration_since(e.used) < self.ttl => {
                e.used = now;
                Ok(e.value.clone())
            }
            _ => Err(self.unknown(handle)),
        }
    }

    /// Replaces the value of an entry `owner` holds.
    pub fn update(&self, owner: &str, handle: &str, value: V) -> Result<(), ServerError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get_mut(handle) {
            Some(e) if e.owner == owner => {
                e.value = value;
                e.used = Instant::now();
                Ok(())
            }
            _ => Err(self.unknown(handle)),
        }
    }

    /// Removes and returns the entry (a ticket is used once).
    pub fn take(&self, owner: &str, handle: &str) -> Result<V, ServerError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.remove(handle) {
            Some(e) if e.owner == owner && now.duration_since(e.used) < self.ttl => Ok(e.value),
            Some(e) if e.owner != owner => {
                entries.insert(handle.to_string(), e);
                Err(self.unknown(handle))
            }
            _ => Err(self.unknown(handle)),
        }
    }

    /// Removes and returns the entry and its owner when it has not expired
    /// and `accept` holds for it; otherwise leaves it where it is.
    pub fn take_if(&self, handle: &str, accept: impl FnOnce(&V) -> bool) -> Option<(String, V)> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(handle) {
            Some(e) if now.duration_since(e.used) < self.ttl && accept(&e.value) => {
                entries.remove(handle).map(|e| (e.owner, e.value))
            }
            _ => None,
        }
    }

    pub fn remove(&self, owner: &str, handle: &str) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(handle) {
            Some(e) if e.owner == owner => entries.remove(handle).is_some(),
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unknown(&self, handle: &str) -> ServerError {
        let shown: String = handle.chars().take(40).collect();
        ServerError::not_found(format!(
            "unknown or expired {} '{shown}'; prepare or run the statement again",
            self.what
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_belong_to_their_owner_expire_and_are_bounded() {
        let map = Expiring::new("ticket", Duration::from_millis(50), 2);
        let a = map.insert("k1", 1).unwrap();
        assert_eq!(map.get("k1", &a).unwrap(), 1);
        assert!(map.get("k2", &a).is_err(), "another key cannot use it");
        assert!(map.take("k2", &a).is_err());
        assert_eq!(map.get("k1", &a).unwrap(), 1, "a foreign take leaves it");
        map.insert("k1", 2).unwrap();
        let full = map.insert("k1", 3).unwrap_err();
        assert_eq!(full.kind, ErrorKind::Unavailable);
        std::thread::sleep(Duration::from_millis(60));
        assert!(map.get("k1", &a).is_err(), "expired");
        map.insert("k1", 4).expect("expired entries make room");
        assert_eq!(map.len(), 1);
    }
}
