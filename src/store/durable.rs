//! Durable local writes. `object_store`'s `LocalFileSystem` (0.13) never
//! calls fsync, so after a power loss a write that returned `Ok` (a
//! committed record, a Delta log entry) can be empty or missing. This
//! decorator syncs every file it writes, and the directories that name it,
//! before the write returns: a commit that returned is on disk.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// fsync calls made by every durable store of this process (files and
/// directories); tests check that commits make them.
static SYNCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Range reads served through a memory map (see [`super::mapped`]),
    /// counted on the thread that polled the read. Per thread, not per
    /// process, so that a test on a current-thread runtime counts its own
    /// scan's reads and not those of tests running beside it.
    static MAPPED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many range reads durable local stores served through a memory map
/// for tasks polled on this thread (on a current-thread runtime: all of the
/// runtime's reads).
pub fn mapped_reads() -> u64 {
    MAPPED.with(|m| m.get())
}

/// How many fsync calls durable local stores have made in this process.
pub fn sync_count() -> u64 {
    SYNCS.load(Ordering::Relaxed)
}

/// Directories above a written file that are synced with it: enough to
/// cover the directories a write creates (`meta/<name>/`,
/// `data/<name>/<table>/_delta_log/`).
const PARENTS: usize = 3;

/// A local file system store whose writes are durable when they return.
#[derive(Debug)]
pub struct DurableLocal {
    inner: Arc<dyn ObjectStore>,
}

impl DurableLocal {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Durable({})", self.inner)
    }
}

/// The file of `location` (the store is rooted at `/`).
fn fs_path(location: &Path) -> PathBuf {
    PathBuf::from(format!("/{location}"))
}

#[cfg(unix)]
/// The file of `location` exactly as `LocalFileSystem` maps it (percent
/// escapes of path parts decoded).
fn local_path(location: &Path) -> Option<PathBuf> {
    static LOCAL: std::sync::LazyLock<object_store::local::LocalFileSystem> =
        std::sync::LazyLock::new(object_store::local::LocalFileSystem::new);
    LOCAL.path_to_filesystem(location).ok()
}

fn sync_blocking(file: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    SYNCS.fetch_add(1, Ordering::Relaxed);
    let mut dir = file.parent();
    for _ in 0..PARENTS {
        let Some(d) = dir else { break };
        std::fs::File::open(d)?.sync_all()?;
        SYNCS.fetch_add(1, Ordering::Relaxed);
        dir = d.parent();
    }
    Ok(())
}

/// An error of this store that object_store has no variant for.
fn generic(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "DurableLocal",
        source: source.into(),
    }
}

/// Syncs the file at `location` and the directories above it.
async fn sync(location: &Path) -> Result<()> {
    let file = fs_path(location);
    tokio::task::spawn_blocking(move || sync_blocking(&file))
        .await
        .map_err(generic)?
        .map_err(|e| generic(format!("fsync of {location} failed: {e}")))
}

#[async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        sync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload {
            inner,
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        #[cfg(unix)]
        if let Some(r) = local_path(location)
            .and_then(|file| super::inline_reads::get(&file, location, &options))
        {
            return Ok(r);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>> {
        #[cfg(unix)]
        {
            let bytes: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
            if location.as_ref().ends_with(".parquet")
                && bytes >= super::mapped::MIN_BYTES
                && super::mapped::enabled()
            {
                return mapped_ranges(location, ranges).await;
            }
            if let Some(r) =
                local_path(location).and_then(|file| super::inline_reads::ranges(&file, ranges))
            {
                return Ok(r);
            }
        }
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        sync(to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        sync(to).await
    }
}

/// A multipart upload whose completion is synced.
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await?;
        sync(&self.location).await?;
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

/// Large range reads of a Parquet file through a memory map (see
/// [`super::mapped`]), off the async threads.
#[cfg(unix)]
async fn mapped_ranges(location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
    let (file, ranges, path) = (fs_path(location), ranges.to_vec(), location.clone());
    MAPPED.with(|m| m.set(m.get() + 1));
    tokio::task::spawn_blocking(move || super::mapped::ranges(&file, &ranges))
        .await
        .map_err(generic)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => object_store::Error::NotFound {
                path: path.to_string(),
                source: Box::new(e),
            },
            _ => generic(e),
        })
}
