//! A fault-injecting `ObjectStore` decorator: counts the calls that match a
//! filter and fails the k-th one, either before it reaches the store (an I/O
//! error: nothing applied) or after (the store applied it, the caller sees a
//! timeout). It can also hold a matching call until the test releases it, to
//! line up races deterministically.
#![allow(dead_code)]

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::Notify;

/// The kind of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Multipart,
    Get,
    List,
    Delete,
    Copy,
}

/// How the k-th matching call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails before the store sees it.
    Error,
    /// The store applies it, then the caller gets an error (a timeout).
    AfterApply,
    /// This call and every later matching one are refused with
    /// `PermissionDenied` (a read-only root).
    Denied,
}

type Filter = Box<dyn Fn(Op, &Path) -> bool + Send + Sync>;

struct Plan {
    filter: Filter,
    fail_at: Option<(usize, Fault)>,
    hold: Option<(Arc<Notify>, Arc<Notify>)>,
    /// Hold the call with this number (1-based) instead of the next one.
    hold_at: Option<usize>,
    /// Puts run on a task of their own, as a local write runs on a blocking
    /// thread: they land even when their caller gives up on them.
    detached: bool,
}

/// The decorator. Cloning shares the counters.
#[derive(Clone)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    calls: Arc<AtomicUsize>,
    plan: Arc<Mutex<Plan>>,
    /// Detached puts under way.
    detached: Arc<AtomicUsize>,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

/// A store opened at `url` through a `FaultStore` over the root's own
/// object store.
pub async fn faulty(url: &str) -> (omegastore::Omega, FaultStore) {
    let root = omegastore::store::Root::open(url).unwrap();
    let faults = FaultStore::new(root.object_store());
    let om = omegastore::Omega::open_root(root.with_store(Arc::new(faults.clone())))
        .await
        .unwrap();
    (om, faults)
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultStore {
            inner,
            calls: Arc::new(AtomicUsize::new(0)),
            plan: Arc::new(Mutex::new(Plan {
                filter: Box::new(|_, _| true),
                fail_at: None,
                hold: None,
                hold_at: None,
                detached: false,
            })),
            detached: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// From now on, the `k`-th call (1-based) matching `filter` fails.
    pub fn fail_nth(
        &self,
        k: usize,
        fault: Fault,
        filter: impl Fn(Op, &Path) -> bool + Send + Sync + 'static,
    ) {
        let mut p = self.plan.lock().unwrap();
        p.filter = Box::new(filter);
        p.fail_at = Some((k, fault));
        self.calls.store(0, Ordering::SeqCst);
    }

    /// The next call matching `filter` waits: `reached` is notified when it
    /// arrives, and it goes on when `release` is notified.
    pub fn hold_next(
        &self,
        filter: impl Fn(Op, &Path) -> bool + Send + Sync + 'static,
    ) -> (Arc<Notify>, Arc<Notify>) {
        let reached = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let mut p = self.plan.lock().unwrap();
        p.filter = Box::new(filter);
        p.fail_at = None;
        p.hold = Some((reached.clone(), release.clone()));
        (reached, release)
    }

    /// The `k`-th call (1-based) matching `filter` from now on waits, as
    /// with [`Self::hold_next`]; puts are detached (they land even if their
    /// caller stops waiting, see [`Self::detached_under_way`]).
    pub fn hold_nth_detached(
        &self,
        k: usize,
        filter: impl Fn(Op, &Path) -> bool + Send + Sync + 'static,
    ) -> (Arc<Notify>, Arc<Notify>) {
        let held = self.hold_next(filter);
        let mut p = self.plan.lock().unwrap();
        p.hold_at = Some(k);
        p.detached = true;
        self.calls.store(0, Ordering::SeqCst);
        held
    }

    /// Detached puts not yet done.
    pub fn detached_under_way(&self) -> usize {
        self.detached.load(Ordering::SeqCst)
    }

    /// From now on, count the calls matching `filter` (see [`Self::calls`]),
    /// failing none.
    pub fn count(&self, filter: impl Fn(Op, &Path) -> bool + Send + Sync + 'static) {
        let mut p = self.plan.lock().unwrap();
        p.filter = Box::new(filter);
        p.fail_at = None;
        self.calls.store(0, Ordering::SeqCst);
    }

    /// No more faults.
    pub fn heal(&self) {
        let mut p = self.plan.lock().unwrap();
        p.fail_at = None;
        p.hold = None;
        p.hold_at = None;
        p.detached = false;
    }

    /// Matching calls seen since the last `fail_nth`.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// What to do with this call: `Some(fault)` to fail it.
    async fn check(&self, op: Op, path: &Path) -> Option<Fault> {
        let (fault, hold) = {
            let mut p = self.plan.lock().unwrap();
            if !(p.filter)(op, path) {
                return None;
            }
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let fault = match p.fail_at {
                Some((k, f)) if k == n => Some(f),
                Some((k, Fault::Denied)) if n >= k => Some(Fault::Denied),
                _ => None,
            };
            let hold = match p.hold_at {
                Some(k) if k != n => None,
                _ => p.hold.take(),
            };
            (fault, hold)
        };
        if let Some((reached, release)) = hold {
            reached.notify_one();
            release.notified().await;
        }
        fault
    }
}

fn injected(op: Op, path: &Path, fault: Fault) -> object_store::Error {
    if fault == Fault::Denied {
        return object_store::Error::PermissionDenied {
            path: path.to_string(),
            source: "read-only file system".into(),
        };
    }
    object_store::Error::Generic {
        store: "FaultStore",
        source: format!("injected {fault:?} on {op:?} {path}").into(),
    }
}

impl FaultStore {
    /// A put through the plan, on the caller's task.
    async fn put_attached(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match self.check(Op::Put, location).await {
            Some(f @ (Fault::Error | Fault::Denied)) => Err(injected(Op::Put, location, f)),
            Some(Fault::AfterApply) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected(Op::Put, location, Fault::AfterApply))
            }
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if self.plan.lock().unwrap().detached {
            let this = self.clone();
            let location = location.clone();
            self.detached.fetch_add(1, Ordering::SeqCst);
            let put = tokio::spawn(async move {
                let done = this.put_attached(&location, payload, opts).await;
                this.detached.fetch_sub(1, Ordering::SeqCst);
                done
            });
            return put.await.map_err(|e| object_store::Error::Generic {
                store: "FaultStore",
                source: e.into(),
            })?;
        }
        self.put_attached(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        match self.check(Op::Multipart, location).await {
            Some(f) => Err(injected(Op::Multipart, location, f)),
            None => self.inner.put_multipart_opts(location, opts).await,
        }
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.check(Op::Get, location).await {
            Some(f) => Err(injected(Op::Get, location, f)),
            None => self.inner.get_opts(location, options).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .and_then(move |p| {
                let this = this.clone();
                async move {
                    match this.check(Op::Delete, &p).await {
                        Some(f @ (Fault::Error | Fault::Denied)) => {
                            Err(injected(Op::Delete, &p, f))
                        }
                        f => {
                            let mut one = this
                                .inner
                                .delete_stream(futures::stream::iter([Ok(p.clone())]).boxed());
                            while let Some(r) = one.next().await {
                                r?;
                            }
                            match f {
                                Some(f) => Err(injected(Op::Delete, &p, f)),
                                None => Ok(p),
                            }
                        }
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        let prefix_owned = prefix.cloned();
        let inner = self.inner.list(prefix);
        futures::stream::once(async move {
            let p = prefix_owned.unwrap_or_default();
            match this.check(Op::List, &p).await {
                Some(f) => Err(injected(Op::List, &p, f)),
                None => Ok(()),
            }
        })
        .map_ok(|_| futures::stream::empty::<Result<ObjectMeta>>())
        .try_flatten()
        .chain(inner)
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let p = prefix.cloned().unwrap_or_default();
        match self.check(Op::List, &p).await {
            Some(f) => Err(injected(Op::List, &p, f)),
            None => self.inner.list_with_delimiter(prefix).await,
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        match self.check(Op::Copy, to).await {
            Some(f @ (Fault::Error | Fault::Denied)) => Err(injected(Op::Copy, to, f)),
            Some(Fault::AfterApply) => {
                self.inner.copy_opts(from, to, options).await?;
                Err(injected(Op::Copy, to, Fault::AfterApply))
            }
            None => self.inner.copy_opts(from, to, options).await,
        }
    }
}
