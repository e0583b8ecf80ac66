//! A budget of failed authentications per client address. Verifying a
//! well-formed key whose id is unknown still reads the store (on S3, one
//! GET), so a client presenting forged keys in a loop would cost a read
//! each; once an address has failed [`Limits::failed_auths`] times within
//! [`WINDOW`], its keys are verified only if this server has verified the
//! same key id before, until the window ends. Keys in use keep working;
//! forged ones are refused without a read.
//!
//! Budgets are kept per client, not per address: an IPv6 client is its
//! /64 network (a host commonly holds a whole /64 and could otherwise pick a
//! fresh address for every attempt), and an IPv4 address mapped into IPv6
//! counts as itself.
//!
//! [`Limits::failed_auths`]: super::Limits::failed_auths

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window a budget covers.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Clients tracked at most; expired windows are dropped first, then the
/// clients still within their budget, and the table is cleared only when
/// stopped clients alone fill it (a flood from many addresses costs memory
/// no more than this, and does not free the clients already stopped).
const MAX_PEERS: usize = 65_536;

/// Failed authentications per client in the current window.
pub struct FailedAuths {
    budget: u32,
    peers: Mutex<HashMap<IpAddr, Window>>,
}

/// The client an address belongs to, as budgets count them: an IPv4
/// address (mapped into IPv6 or not), or an IPv6 address's /64.
fn client_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
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
        let peer = client_of(peer);
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let w = peers.get(&peer)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(w.started))?;
        (w.failures >= self.budget && !left.is_zero()).then_some(left)
    }

    fn record_at(&self, peer: IpAddr, now: Instant) {
        let peer = client_of(peer);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if peers.len() >= MAX_PEERS {
                peers.retain(|_, w| w.failures >= self.budget);
            }
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
    fn an_ipv6_network_shares_one_budget_and_mapped_ipv4_is_itself() {
        let auths = FailedAuths::new(2);
        let t0 = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // fresh addresses inside one /64: one client
        auths.record_at(ip("2001:db8:1:2::1"), t0);
        auths.record_at(ip("2001:db8:1:2:ffff:0:0:7"), t0);
        assert!(auths.exhausted_at(ip("2001:db8:1:2::abcd"), t0).is_some());
        // the neighbouring /64 is another client
        assert_eq!(auths.exhausted_at(ip("2001:db8:1:3::1"), t0), None);
        // an IPv4 client counts the same however the socket shows it
        auths.record_at(ip("::ffff:192.0.2.7"), t0);
        auths.record_at(ip("192.0.2.7"), t0);
        assert!(auths.exhausted_at(ip("192.0.2.7"), t0).is_some());
        assert!(auths.exhausted_at(ip("::ffff:192.0.2.7"), t0).is_some());
        assert_eq!(auths.exhausted_at(ip("192.0.2.8"), t0), None);
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

    #[test]
    fn a_flood_of_new_addresses_does_not_free_a_stopped_client() {
        let auths = FailedAuths::new(2);
        let t0 = Instant::now();
        let stopped: IpAddr = "198.51.100.9".parse().unwrap();
        auths.record_at(stopped, t0);
        auths.record_at(stopped, t0);
        // many addresses failing once each (within their budget)
        for i in 0..(MAX_PEERS as u32 + 10) {
            auths.record_at(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0);
        }
        assert!(auths.exhausted_at(stopped, t0).is_some());
        assert!(auths.peers.lock().unwrap().len() <= MAX_PEERS);
    }
}
