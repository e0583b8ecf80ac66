//! Crash points for tests: `OMEGA_FAILPOINT=<name>` makes the process abort
//! (no destructors, no cleanup: what SIGKILL does) when it reaches the
//! named point, so a crash test lands exactly between two steps of a
//! commit instead of guessing with sleeps. Unset, a failpoint costs one
//! comparison.
//!
//! | point | where |
//! | --- | --- |
//! | `after-data` | a backend wrote the data, the store has not committed |
//! | `after-stage` | a table write saved its staged Delta commit, its record not yet |
//! | `after-record` | the record is committed, the call has not returned (a table: its Delta entry not yet published) |
//! | `drop-after-tombstone` | a drop committed its tombstone, data not yet deleted |
//! | `drop-after-data` | a drop deleted the data, records not yet purged |

use std::sync::OnceLock;

/// Aborts the process if `OMEGA_FAILPOINT` names `point`.
pub fn hit(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("OMEGA_FAILPOINT").ok());
    if armed.as_deref() == Some(point) {
        eprintln!("om: failpoint {point} reached; aborting");
        std::process::abort();
    }
}
