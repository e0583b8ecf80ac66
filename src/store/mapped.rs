//! Range reads of local Parquet files through a read-only memory map: the
//! decoder reads the page cache's pages in place, instead of the kernel
//! copying them into freshly zero-filled buffers (together a quarter of
//! the CPU of a scan of cached files). Safe because a data file is never
//! changed once written: every write creates a new file under a new name
//! (a file deleted while mapped stays readable through the map). A file
//! truncated behind the store's back would make a read fault (SIGBUS):
//! `OMEGA_MMAP=off` turns maps off where other tools may do that. The
//! pages of each range asked for are mapped in one call (Linux's
//! `MADV_POPULATE_READ`) rather than faulted in page by page.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::Path;

use bytes::Bytes;

/// Reads of fewer bytes than this in one call are copied as before: a map
/// costs two system calls and a page-table teardown, more than copying a
/// few pages (a point lookup's page-index-pruned reads).
pub const MIN_BYTES: u64 = 1 << 20;

/// Whether Parquet range reads use maps: yes unless `OMEGA_MMAP=off` (for a
/// file system where files may change under a reader, such as a shared
/// NFS export written by other tools).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !std::env::var("OMEGA_MMAP").is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false"))
    })
}

/// `ranges` of the file at `path`, sharing one read-only map.
pub fn ranges(path: &Path, ranges: &[Range<u64>]) -> io::Result<Vec<Bytes>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > len) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "range {}..{} is outside {} ({len} bytes)",
                r.start,
                r.end,
                path.display()
            ),
        ));
    }
    if len == 0 || ranges.is_empty() {
        return Ok(ranges.iter().map(|_| Bytes::new()).collect());
    }
    let map = Map::new(&file, len as usize)?;
    for r in ranges {
        map.populate(r);
    }
    let whole = Bytes::from_owner(map);
    Ok(ranges
        .iter()
        .map(|r| whole.slice(r.start as usize..r.end as usize))
        .collect())
}

/// A read-only private map of a whole file, unmapped when dropped.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the map is read-only and owned; its bytes may be read from any thread.
unsafe impl Send for Map {}
unsafe impl Sync for Map {}

impl Map {
    fn new(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping of `len` > 0 bytes of an open file, read-only.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr, len })
    }
}

impl Map {
    /// Maps the pages of `range` now, in one call, instead of faulting them
    /// in one by one as the decoder reads them (best effort: an older
    /// kernel without `MADV_POPULATE_READ` leaves them to fault).
    fn populate(&self, range: &Range<u64>) {
        #[cfg(target_os = "linux")]
        {
            const MADV_POPULATE_READ: libc::c_int = 22;
            const PAGE: usize = 4096;
            let start = (range.start as usize) & !(PAGE - 1);
            let end = (range.end as usize).min(self.len);
            if end <= start {
                return;
            }
            // SAFETY: advice on pages inside this mapping; it changes no contents.
            unsafe {
                libc::madvise(
                    (self.ptr as *mut u8).add(start) as *mut libc::c_void,
                    end - start,
                    MADV_POPULATE_READ,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = range;
    }
}

impl AsRef<[u8]> for Map {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_the_files_bytes_and_bad_ranges_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let got = ranges(&path, &[0..4, 9_000..10_000, 5..5]).unwrap();
        assert_eq!(got[0], &data[0..4]);
        assert_eq!(got[1], &data[9_000..10_000]);
        assert!(got[2].is_empty());
        // the bytes outlive the file's name
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got[1], &data[9_000..10_000]);
        std::fs::write(&path, &data).unwrap();
        let e = ranges(&path, &[9_000..9_100, 9_000..10_001]).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let missing = dir.path().join("none.parquet");
        assert_eq!(
            ranges(&missing, &[0..1, 1..2]).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
