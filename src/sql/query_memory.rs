//! The memory every query of a process draws on: one DataFusion memory pool
//! and one spill directory shared by all sessions of an `Omega`, so a
//! server's concurrent queries together stay under one limit.
//!
//! Under the limit, operators that can spill (sorts, grouped aggregates)
//! write their state to temporary files and go on; an operator that cannot
//! (a hash join's build side) fails its query with [`SqlError::Memory`],
//! which names the limit. Without a limit (the library's default) queries
//! take what they need, as DataFusion does by default.
//!
//! [`SqlError::Memory`]: super::SqlError::Memory
//!
//! The sessions share one cache of Parquet metadata (footers, page
//! indexes) too, of [`METADATA_CACHE_BYTES`]: DataFusion gives each runtime
//! one of 50 MB, and a server keeps a session per API key (4,096 keys could
//! have held 200 GB of it).

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

use super::SqlError;

/// The Parquet metadata every session of a process keeps at most, together:
/// DataFusion's default for one runtime (a file's footer and page index take
/// tens to hundreds of KB; a lookup or a repeated scan reads them from here).
pub const METADATA_CACHE_BYTES: usize =
    datafusion::execution::cache::cache_manager::DEFAULT_METADATA_CACHE_LIMIT;

/// Consumers named in an out-of-memory error (the largest first).
const NAMED_CONSUMERS: usize = 3;

/// A memory limit and spill directory shared by sessions. Cloning shares them.
#[derive(Clone)]
pub struct QueryMemory {
    limit: usize,
    pool: Arc<dyn MemoryPool>,
    disk: Arc<DiskManager>,
    metadata: Arc<FileMetadataCache>,
}

impl std::fmt::Debug for QueryMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryMemory")
            .field("limit", &self.limit)
            .field("reserved", &self.pool.reserved())
            .finish()
    }
}

impl QueryMemory {
    /// A pool of `limit` bytes, shared fairly among the operators that can
    /// spill; spill files go to the system's temporary directory.
    pub fn new(limit: usize) -> Result<Self, SqlError> {
        if limit == 0 {
            return Err(SqlError::Usage(
                "a query memory limit must be more than 0 bytes (leave it unset for none)".into(),
            ));
        }
        let disk = DiskManagerBuilder::default()
            .build()
            .map_err(|e| SqlError::Usage(format!("cannot set up spill files: {e}")))?;
        Ok(Self {
            limit,
            pool: Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(limit),
                NonZeroUsize::new(NAMED_CONSUMERS).expect("non-zero"),
            )),
            disk: Arc::new(disk),
            metadata: Arc::new(
                DefaultCache::new(METADATA_CACHE_BYTES).with_name("omega Parquet metadata"),
            ),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the running queries hold now.
    pub fn reserved(&self) -> usize {
        self.pool.reserved()
    }

    /// A runtime for one session: this pool, spill directory and Parquet
    /// metadata cache (a file's metadata never changes: its key holds its
    /// size and time), the session's own listing and statistics caches
    /// (sessions never share cached listings).
    pub(crate) fn runtime_env(&self) -> datafusion::error::Result<Arc<RuntimeEnv>> {
        let caches = CacheManagerConfig::default()
            .with_file_metadata_cache(Some(self.metadata.clone()))
            .with_metadata_cache_limit(METADATA_CACHE_BYTES);
        let mut builder = RuntimeEnvBuilder::new()
            .with_memory_pool(self.pool.clone())
            .with_cache_manager(caches);
        builder.disk_manager = Some(self.disk.clone());
        builder.build_arc()
    }
}

/// The machine's memory, or the process's control group limit when that is
/// lower (a container): what a limit given as a share of memory is a share
/// of. `None` where neither can be read (not Linux).
pub fn available_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    /// However many sessions (a server keeps one per key), the Parquet
    /// metadata they cache is one cache of one bound.
    #[test]
    fn sessions_share_one_bounded_parquet_metadata_cache() {
        let memory = QueryMemory::new(1 << 20).unwrap();
        let (a, b) = (memory.runtime_env().unwrap(), memory.runtime_env().unwrap());
        let (ca, cb) = (
            a.cache_manager.get_file_metadata_cache(),
            b.cache_manager.get_file_metadata_cache(),
        );
        assert!(Arc::ptr_eq(&ca, &cb), "each session has a cache of its own");
        assert_eq!(
            a.cache_manager.get_metadata_cache_limit(),
            METADATA_CACHE_BYTES
        );
        assert_eq!(ca.cache_limit(), METADATA_CACHE_BYTES);
    }

    #[test]
    fn sessions_draw_on_one_pool_and_a_reservation_past_it_fails() {
        let memory = QueryMemory::new(1 << 20).unwrap();
        let (a, b) = (memory.runtime_env().unwrap(), memory.runtime_env().unwrap());
        let first = MemoryConsumer::new("first").register(&a.memory_pool);
        first.try_grow(600 << 10).unwrap();
        let second = MemoryConsumer::new("second").register(&b.memory_pool);
        let err = second.try_grow(600 << 10).unwrap_err();
        assert!(err.to_string().contains("first"), "{err}");
        assert_eq!(memory.reserved(), 600 << 10);
        drop(first);
        second.try_grow(600 << 10).unwrap();
        assert!(QueryMemory::new(0).is_err());
    }

    #[test]
    fn available_memory_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(available_memory().unwrap() > 1 << 20);
        }
    }
}
