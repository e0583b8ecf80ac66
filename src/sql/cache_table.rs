//! `omega.system.cache`: what the memory cache of hot tables holds in this
//! process (see [`crate::backends::memory_cache`]), limited to the tables
//! the querying identity may read.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use super::system::{Columns, SystemTable, SystemTables};
use crate::backends::memory_cache;
use crate::engine::Engine;
use crate::store::{Access, StoreError};

#[derive(Debug)]
struct CacheTable;

#[async_trait]
impl SystemTable for CacheTable {
    fn name(&self) -> &str {
        "cache"
    }

    async fn rows(&self, engine: &Engine) -> Result<RecordBatch, StoreError> {
        let (entries, budget) = match memory_cache::of(engine.session()) {
            Some(c) => (c.entries(), c.budget()),
            None => (vec![], 0),
        };
        let bound = super::options_of(engine.session()).bound_bucket;
        let mut shown = Vec::new();
        for e in entries {
            if !bound.is_empty() && e.bucket != bound {
                continue;
            }
            let Ok(b) = engine.bucket(&e.bucket) else {
                continue;
            };
            match b.datasets().check_access(&e.name, Access::Read).await {
                Ok(()) => shown.push(e),
                Err(StoreError::PermissionDenied { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        let col = |f: fn(&memory_cache::CacheEntryInfo) -> String| {
            shown.iter().map(|e| Some(f(e))).collect::<Vec<_>>()
        };
        let num = |f: fn(&memory_cache::CacheEntryInfo) -> u64| {
            shown.iter().map(|e| Some(f(e))).collect::<Vec<_>>()
        };
        Columns::new()
            .text("bucket", col(|e| e.bucket.clone()))
            .text("name", col(|e| e.name.clone()))
            .int("version", num(|e| e.version))
            .text("state", col(|e| e.state.to_string()))
            .int("rows", num(|e| e.rows))
            .int("bytes", num(|e| e.bytes))
            .int("budget_bytes", shown.iter().map(|_| Some(budget)).collect())
            .int("hits", num(|e| e.hits))
            .time("loaded", shown.iter().map(|e| Some(e.loaded)).collect())
            .batch("cache")
    }
}

/// Registers `omega.system.cache`.
pub fn register(tables: &SystemTables) {
    tables.register(Arc::new(CacheTable));
}
