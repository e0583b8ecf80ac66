//! A request-counting `ObjectStore` decorator: `om bench catalog` wraps a
//! root in it to report how many requests opening and listing a store make
//! (on S3 each one is a billed, latency-bound round trip).
//!
//! Every call is forwarded unchanged. A listing counts one request per page
//! of up to [`LIST_PAGE`] entries it returns (at least one), as S3 pages its
//! listings; a delete counts one per path (S3 may batch up to 1,000 paths in
//! one request, so deletes are an upper bound); every other call counts one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Entries per page of an S3 listing (`ListObjectsV2`'s default and maximum).
pub const LIST_PAGE: u64 = 1000;

/// Requests by kind (`GET`, `PUT`, `LIST`, …), in name order.
pub type RequestCounts = BTreeMap<&'static str, u64>;

/// The decorator. Clones share their counts.
#[derive(Clone)]
pub struct RequestCounter {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<Mutex<RequestCounts>>,
}

impl RequestCounter {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counts: Default::default(),
        }
    }

    /// The requests made so far.
    pub fn counts(&self) -> RequestCounts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the requests made so far.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn add(&self, kind: &'static str, n: u64) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += n;
    }

    /// Counts a listing's pages once its stream ends (or is dropped).
    fn paged(
        &self,
        stream: BoxStream<'static, Result<ObjectMeta>>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let mut pages = PageCount {
            counter: self.clone(),
            entries: 0,
        };
        // a method call moves the whole counter into the closure (a field
        // access would move only the field, dropping the counter here)
        stream.inspect(move |_| pages.entry()).boxed()
    }
}

/// A listing in progress: its pages are counted when it is dropped, so a
/// listing read only in part counts the pages it fetched.
struct PageCount {
    counter: RequestCounter,
    entries: u64,
}

impl PageCount {
    fn entry(&mut self) {
        self.entries += 1;
    }
}

impl Drop for PageCount {
    fn drop(&mut self) {
        self.counter
            .add("LIST", self.entries.div_ceil(LIST_PAGE).max(1));
    }
}

impl fmt::Debug for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestCounter({})", self.inner)
    }
}

impl fmt::Display for RequestCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestCounter({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RequestCounter {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.add("PUT", 1);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.add("MULTIPART", 1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.add(if options.head { "HEAD" } else { "GET" }, 1);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        self.inner
            .delete_stream(locations)
            .inspect(move |_| this.add("DELETE", 1))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.paged(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.paged(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let listed = self.inner.list_with_delimiter(prefix).await;
        let entries = listed
            .as_ref()
            .map(|l| (l.objects.len() + l.common_prefixes.len()) as u64)
            .unwrap_or(0);
        self.add("LIST", entries.div_ceil(LIST_PAGE).max(1));
        listed
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.add("COPY", 1);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.add("RENAME", 1);
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn counts_each_call_and_each_page_of_a_listing() {
        let counter = RequestCounter::new(Arc::new(InMemory::new()));
        for i in 0..(LIST_PAGE + 1) {
            counter
                .put(&Path::from(format!("a/{i}")), "x".into())
                .await
                .unwrap();
        }
        counter.get(&Path::from("a/0")).await.unwrap();
        counter.head(&Path::from("a/1")).await.unwrap();
        let listed: Vec<_> = counter.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len() as u64, LIST_PAGE + 1);
        // an empty listing is still a request
        let _: Vec<_> = counter.list(Some(&Path::from("b"))).collect().await;
        let counts = counter.counts();
        assert_eq!(counts["PUT"], LIST_PAGE + 1);
        assert_eq!(counts["GET"], 1);
        assert_eq!(counts["HEAD"], 1);
        assert_eq!(counts["LIST"], 2 + 1, "1,001 entries are two pages");
        counter.reset();
        assert!(counter.counts().is_empty());
    }
}
