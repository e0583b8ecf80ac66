//! A budget of failed authentications per client address. Verifying a
//! well-formed key whose id is unknown still reads the store (on S3, one
//! GET), so a client presenting forged keys in a loop would cost a read
//! each; once an address has failed [`Limits::failed_auths`] times within
//! [`WINDOW`], its keys are verified only if this server has verified the
//! same key id before, until the window ends. Keys in use keep working;
//! forged ones are refused without a read.
//!
//! [`Limits::failed_auths`]: super::Limits::failed_auths

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window a budget covers.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked at most; expired windows are dropped first, and the
/// table is cleared when it is still full (a flood from many addresses
/// costs memory no more than this).
const MAX_PEERS: usize = 65_536;

/// Failed authentications per address in the current window.
pub struct FailedAuths {
    budget: u32,
    peers: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    started: Instant,
    failures: u32,
}

impl FailedAuths {
    /// `budget`: failures an address may have per [`WINDOW`] (at least 1).
    pub fn new(budget: u32) -> Self {
        Self {
            budget: budget.max(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// How long `peer` must wait when it has used up its budget, else `None`.
    pub fn exhausted(&self, peer: IpAddr) -> Option<Duration> {
        self.exhausted_at(peer, Instant::now())
    }

    /// Counts one failed authentication of `peer`.
    pub fn record(&self, peer: IpAddr) {
        self.record_at(peer, Instant::now())
    }

    fn exhausted_at(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let w = peers.get(&peer)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(w.started))?;
        (w.failures >= self.budget && !left.is_zero()).then_some(left)
    }

    fn record_at(&self, peer: IpAddr, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if peers.len() >= MAX_PEERS {
                peers.clear();
            }
        }
        let w = peers.entry(peer).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.started) >= WINDOW {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_stopped_at_its_budget_until_the_window_ends() {
        let auths = FailedAuths::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(auths.exhausted_at(a, t0), None, "after {i} failures");
            auths.record_at(a, t0);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            auths.exhausted_at(a, later),
            Some(WINDOW - Duration::from_secs(20))
        );
        // another address has its own budget
        assert_eq!(auths.exhausted_at(b, later), None);
        // the window ends: a new budget, counted from the next failure
        let next = t0 + WINDOW;
        assert_eq!(auths.exhausted_at(a, next), None);
        auths.record_at(a, next);
        assert_eq!(auths.exhausted_at(a, next), None);
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let auths = FailedAuths::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 10) {
            auths.record_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        let n = auths.peers.lock().unwrap().len();
        assert!(n <= MAX_PEERS, "{n} addresses kept");
        // the latest address is still counted
        let last = IpAddr::from((MAX_PEERS as u32 + 9).to_be_bytes());
        assert!(auths.exhausted_at(last, t0).is_some());
    }
}
