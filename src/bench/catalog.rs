//! Opening a store that holds many objects and listing them: the bucket
//! `bench_catalog` is filled with N small documents once, then a fresh
//! [`Omega`] is opened and listed, `runs` times, then once more through a
//! [`RequestCounter`] to count the store requests an open and list makes.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use super::Timing;
use crate::store::PutOptions;
use crate::store::request_count::RequestCounter;
use crate::{ListOptions, Omega, StoreError};

pub async fn run(
    om: &Omega,
    objects: usize,
    runs: usize,
    progress: &dyn Fn(&str),
) -> Result<Vec<Timing>, StoreError> {
    let om = om.bucket("bench_catalog")?;
    let store = om.datasets();
    let have = store.list(None, &ListOptions::default()).await?.len();
    if have < objects {
        progress(&format!("putting {} documents", objects - have));
        // a few puts in flight at once: each is a data file and a record
        let puts = futures::stream::iter(have..objects)
            .map(|i| {
                let store = store.clone();
                async move {
                    store
                        .put(
                            serde_json::json!({"i": i}),
                            &format!("doc/{i:06}"),
                            PutOptions::default(),
                        )
                        .await
                }
            })
            .buffer_unordered(16);
        let results: Vec<_> = puts.collect().await;
        for r in results {
            r?;
        }
    }
    // the root as opened (its URL no longer carries query options such as
    // an S3 endpoint); a fresh Omega over it caches nothing of `om`
    let root = om.root().clone();
    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let fresh = Omega::open_root(root.clone())
            .await?
            .bucket("bench_catalog")?;
        listed = fresh
            .datasets()
            .list(None, &ListOptions::default())
            .await?
            .len();
        times.push(start.elapsed());
    }
    // counted apart from the timed runs: the decorator takes a local root
    // off its direct file reads, which a listing index makes rare anyway
    let counter = RequestCounter::new(root.object_store());
    Omega::open_root(root.with_store(Arc::new(counter.clone())))
        .await?
        .bucket("bench_catalog")?
        .datasets()
        .list(None, &ListOptions::default())
        .await?;
    let mut timing = Timing::new(
        "open_and_list",
        listed as u64,
        times,
        Some(listed.to_string()),
    );
    timing.requests = Some(counter.counts());
    Ok(vec![timing])
}
