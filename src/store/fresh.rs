//! Sharing a read among concurrent callers without serving anyone a stale
//! answer.
//!
//! A server asks the store the same question (the policies, a key's record)
//! for every request, and must see what the store holds *now*: a revoked
//! key or a new row filter applies to the next request. [`Fresh`] lets
//! concurrent requests share one read: a caller gets the answer of a read
//! that began after it asked (never of one already under way, which may
//! have read before a change the caller must see). Under load that is one
//! read in flight and one queued instead of one per request.

use std::sync::atomic::{AtomicU64, Ordering};

/// One shared answer, re-read for every caller that cannot use another's.
pub struct Fresh<T> {
    /// Reads begun so far (each is numbered by this count when it begins).
    started: AtomicU64,
    /// The number and answer of the last read that succeeded; held while a
    /// read runs, so reads run one at a time.
    last: tokio::sync::Mutex<Option<(u64, T)>>,
}

impl<T> Default for Fresh<T> {
    fn default() -> Self {
        Self {
            started: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Fresh<T> {
    /// The answer of a `read` that began after this call: another caller's
    /// when one began since and succeeded, else this caller runs `read`
    /// itself (after any read under way). A failed read is not shared: each
    /// caller waiting for it reads again.
    pub async fn get<E, F>(&self, read: impl FnOnce() -> F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let asked = self.started.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if let Some((n, answer)) = last.as_ref()
            && *n > asked
        {
            return Ok(answer.clone());
        }
        let this = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let answer = read().await?;
        *last = Some((this, answer.clone()));
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    /// A read that counts itself and answers the store's value as it is
    /// when the read begins, after `gate` opens (if any).
    async fn read(
        store: Arc<AtomicUsize>,
        reads: Arc<AtomicUsize>,
        gate: Option<(Arc<Notify>, Arc<Notify>)>,
    ) -> Result<usize, ()> {
        reads.fetch_add(1, Ordering::SeqCst);
        let value = store.load(Ordering::SeqCst);
        if let Some((reached, release)) = gate {
            reached.notify_one();
            release.notified().await;
        }
        Ok(value)
    }

    #[tokio::test]
    async fn a_caller_never_gets_a_read_that_began_before_it_asked() {
        let fresh = Arc::new(Fresh::default());
        let (store, reads) = (Arc::new(AtomicUsize::new(1)), Arc::new(AtomicUsize::new(0)));
        let (reached, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        // A's read has seen value 1 and is still under way
        let a = tokio::spawn({
            let (fresh, store, reads) = (fresh.clone(), store.clone(), reads.clone());
            let gate = Some((reached.clone(), release.clone()));
            async move { fresh.get(|| read(store, reads, gate)).await }
        });
        reached.notified().await;
        store.store(2, Ordering::SeqCst);
        // B..E ask after the change: they share one read of their own
        let later: Vec<_> = (0..4)
            .map(|_| {
                let (fresh, store, reads) = (fresh.clone(), store.clone(), reads.clone());
                tokio::spawn(async move { fresh.get(|| read(store, reads, None)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        release.notify_one();
        assert_eq!(a.await.unwrap(), Ok(1));
        for b in later {
            assert_eq!(b.await.unwrap(), Ok(2), "a later caller got an older read");
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "the later callers share one read"
        );
        // a caller alone reads again
        store.store(3, Ordering::SeqCst);
        assert_eq!(fresh.get(|| read(store, reads.clone(), None)).await, Ok(3));
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared() {
        let fresh: Fresh<usize> = Fresh::default();
        assert_eq!(
            fresh.get(|| async { Err::<usize, _>("down") }).await,
            Err("down")
        );
        assert_eq!(fresh.get(|| async { Ok::<_, &str>(7) }).await, Ok(7));
    }
}
