//! Local commits are on disk when they return: every file and record is
//! synced with its directories. The sync counter is process-wide, so this
//! binary holds only this test (no other test's syncs can be counted).

mod common;

use omegastore::{Omega, PutOptions};
use serde_json::json;

use common::{local, sample_batch};

#[tokio::test]
async fn local_commits_are_synced_before_they_return() {
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    let before = omegastore::store::durable::sync_count();
    om.datasets()
        .put(json!({"a": 1}), "doc", PutOptions::default())
        .await
        .unwrap();
    // the document file and its record, each with its directories
    let after_doc = omegastore::store::durable::sync_count();
    assert!(after_doc >= before + 2, "{before} -> {after_doc}");
    om.datasets()
        .put(sample_batch(0, 10), "t", PutOptions::default())
        .await
        .unwrap();
    // a Parquet file, the Delta log entry and the record
    let after_table = omegastore::store::durable::sync_count();
    assert!(after_table >= after_doc + 3, "{after_doc} -> {after_table}");
}
