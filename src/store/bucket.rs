//! Buckets: the namespaces of a root, one directory each.

use super::error::{Result, StoreError};
use super::root::Root;

/// Buckets that exist under a root (directories with a valid bucket name).
pub async fn list_buckets(root: &Root) -> Result<Vec<String>> {
    list_dirs(root, &root.prefix).await
}

/// The stores (`datasets`, `models`, `policies`, …) a bucket holds.
pub async fn list_stores(root: &Root, bucket: &str) -> Result<Vec<String>> {
    validate_bucket(bucket)?;
    list_dirs(root, &root.path(&[bucket])).await
}

/// Directories directly under `dir` whose names are valid bucket (or
/// store) names, sorted.
async fn list_dirs(root: &Root, dir: &object_store::path::Path) -> Result<Vec<String>> {
    let listed = root
        .store
        .list_with_delimiter(Some(dir))
        .await
        .map_err(|e| StoreError::object_store(dir, e))?;
    let mut out: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename())
        .filter(|b| validate_bucket(b).is_ok())
        .map(str::to_string)
        .collect();
    out.sort();
    Ok(out)
}

/// Bucket names: 1-63 characters of `[a-z0-9_-]`, starting with a letter or digit.
pub fn validate_bucket(bucket: &str) -> Result<()> {
    let ok = !bucket.is_empty()
        && bucket.len() <= 63
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && bucket.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: bucket.to_string(),
            reason: "a bucket is 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit".into(),
        })
    }
}
