//! The access mark of a root: `_system/marks/access`, one small object
//! rewritten with a new random token after every change to the records of
//! any bucket's policy or settings store (grants, isolation, row filters,
//! masks, contracts). A cache of those records reads the mark before it
//! loads them; afterwards one read of the mark tells whether anything it
//! loaded may have changed (on S3 one GET, instead of listing every
//! bucket's two stores).
//!
//! Contract:
//! * [`super::Catalog`] touches the mark after every change to a record of
//!   a store in [`MARKED_STORES`] (a commit, a withdrawn record, a drop's
//!   purge), whichever API made it. A change that completed before a
//!   reader read the mark left a token the reader has not seen (tokens are
//!   random, never written twice), so a reader that sees the token it
//!   loaded under has nothing newer to load.
//! * The mark is written after the change: a reader may see the new token
//!   only after the change, never before it.
//! * A failed touch does not undo or fail the change (it is committed); it
//!   is logged, and the change waits for a cache's periodic full reload.
//!   Records changed by other means (files copied into the root, a writer
//!   that predates the mark) wait for it too.

use object_store::{ObjectStoreExt, PutPayload};

use super::error::{Result, StoreError};
use super::root::Root;

/// The store prefix that holds a bucket's dataset policies.
pub const POLICY_STORE: &str = "policies";
/// The store prefix that holds a bucket's settings (grants, isolation).
pub const SETTINGS_STORE: &str = "settings";
/// Stores whose record changes touch the access mark.
pub const MARKED_STORES: [&str; 2] = [POLICY_STORE, SETTINGS_STORE];

fn path(root: &Root) -> object_store::path::Path {
    root.path(&["_system", "marks", "access"])
}

/// Whether changes to the records of store `prefix` touch the mark.
pub fn marks(prefix: &str) -> bool {
    MARKED_STORES.contains(&prefix)
}

/// Writes a new token (after a change to a marked store's records). A
/// failure is logged, not returned: the change it follows is committed.
pub async fn touch(root: &Root) {
    let path = path(root);
    let token = uuid::Uuid::new_v4().simple().to_string();
    if let Err(e) = root.store.put(&path, PutPayload::from(token)).await {
        tracing::warn!(
            path = %path,
            error = %e,
            "could not touch the access mark; policy caches pick the change up at their next full reload"
        );
    }
}

/// The current token (`None`: never touched).
pub async fn read(root: &Root) -> Result<Option<String>> {
    let path = path(root);
    match root.store.get(&path).await {
        Ok(r) => {
            let bytes = r
                .bytes()
                .await
                .map_err(|e| StoreError::object_store(&path, e))?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(StoreError::object_store(&path, e)),
    }
}
