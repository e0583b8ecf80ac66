//! Session options of omegastore's Parquet scan (`SET omega_scan.…`), and
//! how the scan code reads them.

use datafusion::catalog::Session;
use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::config::ConfigOptions;

extensions_options! {
    /// Session options of omegastore's Parquet scan (`SET omega_scan.…`).
    pub struct ScanOptions {
        /// Answer `=` and `IN` filters on dictionary-encoded string columns
        /// on the dictionary's values (see `dictionary_filter.rs`).
        pub dictionary_filters: bool, default = true
        /// Read every string column the files store dictionary-encoded as
        /// a dictionary (given back as strings), so that a `GROUP BY` of it
        /// groups codes (see `dictionary_groups.rs`). Needs
        /// `dictionary_filters`. Off by default: measured on 10M rows, the
        /// group-by gained 6% and scans that only read the column lost
        /// 12–13% to giving it back as strings (BENCHMARKS.md).
        pub dictionary_reads: bool, default = false
        /// Drop the rows a join's (or a top-k's) dynamic filter rules out as
        /// they leave the scan (see `dynamic_filter.rs`).
        pub dynamic_filters: bool, default = true
    }
}

impl ConfigExtension for ScanOptions {
    const PREFIX: &'static str = "omega_scan";
}

/// Whether `state` wants string filters on dictionary codes (on when the
/// session does not carry [`ScanOptions`]).
pub(crate) fn dictionary_filters(state: &dyn Session) -> bool {
    state
        .config_options()
        .extensions
        .get::<ScanOptions>()
        .is_none_or(|o| o.dictionary_filters)
}

/// Whether `state` wants dictionary-stored string columns read as
/// dictionaries without a filter on them (off when the session does not
/// carry [`ScanOptions`], and with [`dictionary_filters`]).
pub(crate) fn dictionary_reads(state: &dyn Session) -> bool {
    state
        .config_options()
        .extensions
        .get::<ScanOptions>()
        .is_some_and(|o| o.dictionary_filters && o.dictionary_reads)
}

/// Whether `config` wants dynamic filters applied above scans (on when the
/// session does not carry [`ScanOptions`]).
pub(crate) fn dynamic_filters(config: &ConfigOptions) -> bool {
    config
        .extensions
        .get::<ScanOptions>()
        .is_none_or(|o| o.dynamic_filters)
}
