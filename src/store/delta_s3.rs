//! Lets deltalake commit to `s3://` tables through our own object_store
//! client, without deltalake's AWS SDK integration (DynamoDB locking etc.).
//!
//! The default Delta log store commits `_delta_log/<version>.json` with
//! put-if-absent (`PutMode::Create`), which S3 implements with
//! `If-None-Match: *`; that is all a safe concurrent commit needs.

use std::sync::{Arc, Once};

use deltalake::DeltaResult;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use url::Url;

struct ConditionalPutLogStoreFactory;

impl LogStoreFactory for ConditionalPutLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the log store for `s3://` once per process.
pub(crate) fn register_s3_log_store() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let url = Url::parse("s3://").expect("static url");
        if logstore_factories().get(&url).is_none() {
            logstore_factories().insert(url, Arc::new(ConditionalPutLogStoreFactory));
        }
    });
}
