//! Small reads of local files on the thread that asks. object_store's
//! `LocalFileSystem` hands every read to tokio's blocking pool: a GET is two
//! hand-offs (open, then read), each a thread to wake and then the task,
//! and on a loaded server each waits for a core behind every runnable
//! thread. For what a request mostly reads — records, keys, the access
//! mark, Delta log entries, a point lookup's pages, a few KB in the page
//! cache — the read itself takes microseconds. So a read of at most
//! [`MAX_BYTES`] is made where it is asked; anything else (a larger read,
//! a directory, an error, preconditions that do not hold) is left to the
//! inner store, which answers as before (its typed errors included).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path as FsPath;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{Attributes, GetOptions, GetResult, GetResultPayload, ObjectMeta};

/// Reads of at most this many bytes (in one call) are made in place.
pub const MAX_BYTES: u64 = 256 << 10;

/// The object's metadata as `LocalFileSystem` reports it (its e-tag scheme:
/// inode, modification time in microseconds, size), so a conditional read
/// or a cache keyed on it sees the same object either way.
fn meta_of(location: &Path, metadata: &std::fs::Metadata) -> Option<ObjectMeta> {
    use std::os::unix::fs::MetadataExt;
    let modified = metadata.modified().ok()?;
    let mtime = modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let size = metadata.len();
    Some(ObjectMeta {
        location: location.clone(),
        last_modified: DateTime::<Utc>::from(modified),
        size,
        e_tag: Some(format!("{:x}-{mtime:x}-{size:x}", metadata.ino())),
        version: None,
    })
}

fn read_at(file: &File, range: &std::ops::Range<u64>) -> Option<Bytes> {
    let mut buf = vec![0; (range.end - range.start) as usize];
    file.read_exact_at(&mut buf, range.start).ok()?;
    Some(Bytes::from(buf))
}

/// A GET (or HEAD) of the file at `file`, made here when it is small;
/// `None` leaves it to the inner store.
pub fn get(file: &FsPath, location: &Path, options: &GetOptions) -> Option<GetResult> {
    let handle = File::open(file).ok()?;
    let metadata = handle.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    let meta = meta_of(location, &metadata)?;
    options.check_preconditions(&meta).ok()?;
    let range = match &options.range {
        Some(r) => r.as_range(meta.size).ok()?,
        None => 0..meta.size,
    };
    let bytes = if options.head {
        Bytes::new()
    } else {
        if range.end - range.start > MAX_BYTES {
            return None;
        }
        read_at(&handle, &range)?
    };
    Some(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
        meta,
        range,
        attributes: Attributes::default(),
    })
}

/// Several ranges of the file at `file`, read here when together they are
/// small; `None` leaves them to the inner store.
pub fn ranges(file: &FsPath, ranges: &[std::ops::Range<u64>]) -> Option<Vec<Bytes>> {
    let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
    if total > MAX_BYTES || ranges.iter().any(|r| r.start > r.end) {
        return None;
    }
    let handle = File::open(file).ok()?;
    ranges.iter().map(|r| read_at(&handle, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::{GetRange, ObjectStore, ObjectStoreExt};

    /// What a read made here answers is what `LocalFileSystem` answers:
    /// bytes, range, metadata (the e-tag a conditional read compares).
    #[tokio::test]
    async fn a_small_read_made_here_answers_as_the_local_store_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record.json");
        std::fs::write(&file, b"{\"version\": 7, \"name\": \"trips\"}").unwrap();
        let local = LocalFileSystem::new();
        let location = Path::from_filesystem_path(&file).unwrap();
        for options in [
            GetOptions::default(),
            GetOptions {
                range: Some(GetRange::Bounded(3..11)),
                ..Default::default()
            },
            GetOptions {
                range: Some(GetRange::Suffix(5)),
                ..Default::default()
            },
        ] {
            let here = get(&file, &location, &options).expect("a small file is read here");
            let there = local.get_opts(&location, options.clone()).await.unwrap();
            assert_eq!(here.meta, there.meta);
            assert_eq!(here.range, there.range);
            assert_eq!(here.bytes().await.unwrap(), there.bytes().await.unwrap());
        }
        let e_tag = local.head(&location).await.unwrap().e_tag;
        let unchanged = GetOptions {
            if_none_match: e_tag,
            ..Default::default()
        };
        assert!(
            get(&file, &location, &unchanged).is_none(),
            "a precondition that fails is left to the local store (its typed error)"
        );
        let read = ranges(&file, &[0..2, 5..9]).unwrap();
        assert_eq!(
            read,
            local.get_ranges(&location, &[0..2, 5..9]).await.unwrap()
        );
        assert!(ranges(&file, &[0..2, 10..1000]).is_none(), "past the end");
        assert!(get(dir.path(), &location, &GetOptions::default()).is_none());
        assert!(
            get(
                &dir.path().join("missing"),
                &location,
                &GetOptions::default()
            )
            .is_none()
        );

        std::fs::write(&file, vec![0u8; MAX_BYTES as usize + 1]).unwrap();
        assert!(get(&file, &location, &GetOptions::default()).is_none());
        assert!(ranges(&file, &[0..MAX_BYTES, MAX_BYTES..MAX_BYTES + 1]).is_none());
    }
}
