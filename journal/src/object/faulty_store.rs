//! An object store with the faults a distant one has, for the object journal's tests: lost
//! answers, held and refused puts, and puts that finish out of order.

use super::*;
use object_store::memory::InMemory;

/// A store with the faults a distant one has: a put that lands and then loses its answer,
/// as a timed-out request can (the `fail` next puts, or every put while `failing`), puts
/// held until released (a slow request), and puts refused outright.
#[derive(Debug, Default)]
pub(super) struct FaultyStore {
    pub(super) inner: InMemory,
    pub(super) fail: AtomicU64,
    /// Every put lands (if it can) and then reports an error, an existing object too.
    pub(super) failing: std::sync::atomic::AtomicBool,
    /// Reads asked of the store, whole or ranged.
    pub(super) gets: AtomicU64,
    /// Object numbers whose first put waits for a permit (and whether it came), and how
    /// many puts are waiting.
    pub(super) held: parking_lot::Mutex<BTreeMap<u64, (Arc<tokio::sync::Semaphore>, bool)>>,
    pub(super) waiting: AtomicU64,
    /// Object numbers whose puts fail without landing.
    pub(super) refused: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
    /// Each put first sleeps a drawn time below this many microseconds, so that puts
    /// finish in another order than they started.
    pub(super) jitter_us: AtomicU64,
    pub(super) dice: parking_lot::Mutex<Option<rand::rngs::StdRng>>,
}

impl FaultyStore {
    pub(super) fn hold(&self, number: u64) {
        self.held
            .lock()
            .insert(number, (Arc::new(tokio::sync::Semaphore::new(0)), false));
    }

    pub(super) fn release(&self, number: u64) {
        if let Some((gate, _)) = self.held.lock().remove(&number) {
            gate.add_permits(1);
        }
    }

    /// Waits until `n` puts are held.
    pub(super) async fn until_waiting(&self, n: u64) {
        while self.waiting.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(super) async fn has(&self, number: u64) -> bool {
        let path = Path::from("db/wal").join(object_name(number));
        self.inner.head(&path).await.is_ok()
    }
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore")
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let number: Option<u64> = location.filename().and_then(|f| f.parse().ok());
        let gate = number.and_then(|n| match self.held.lock().get_mut(&n) {
            Some((gate, taken)) if !*taken => {
                *taken = true;
                Some(gate.clone())
            }
            _ => None,
        });
        if let Some(gate) = gate {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = gate.acquire().await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        let jitter = self.jitter_us.load(Ordering::SeqCst);
        if jitter > 0 {
            let us = match self.dice.lock().as_mut() {
                Some(dice) => rand::Rng::random_range(dice, 0..jitter),
                None => 0,
            };
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        if number.is_some_and(|n| self.refused.lock().contains(&n)) {
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: "refused".into(),
            });
        }
        if self.failing.load(Ordering::SeqCst) {
            let _ = self.inner.put_opts(location, payload, opts).await;
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: "every answer is lost".into(),
            });
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: "the answer was lost".into(),
            });
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
