//! `FaultyStorage`: a storage decorator that injects failures, delays and a bandwidth limit
//! into table writes,
//! for chaos tests of the engine and of a user's deployment (the way object_store ships
//! `ThrottledStore`). Reads and deletes pass straight through; the manifest store can be
//! cut off (`set_manifest_outage`), as a partition from the storage tier would.

use crate::{ManifestStore, Storage, Table, TableBuilder};
use async_trait::async_trait;
use cairn_common::{Error, Result, TableId, TableMeta};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    /// Table creations still to fail.
    pub fail_next: AtomicUsize,
    /// Every creation takes a permit first: close it (`forget_permits`) to hold writers.
    pub hold: tokio::sync::Semaphore,
    delay_micros: AtomicU64,
    /// How long each seal holds its thread before it starts (microseconds).
    stall_micros: Arc<AtomicU64>,
    /// Bytes per second table writes may go at (0: unlimited).
    bytes_per_sec: Arc<AtomicU64>,
    manifest_outage: Arc<AtomicBool>,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(FaultyStorage {
            inner,
            fail_next: AtomicUsize::new(0),
            hold: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
            delay_micros: AtomicU64::new(0),
            stall_micros: Arc::default(),
            bytes_per_sec: Arc::new(AtomicU64::new(0)),
            manifest_outage: Arc::default(),
        })
    }

    /// While on, every call to the manifest store fails, as from a node cut off from it.
    pub fn set_manifest_outage(&self, on: bool) {
        self.manifest_outage.store(on, Ordering::SeqCst);
    }

    /// Throttles table writes to `rate` bytes per second of keys and values (0: unlimited),
    /// as a slow disk or a thin link to a bucket would.
    pub fn set_bytes_per_sec(&self, rate: u64) {
        self.bytes_per_sec.store(rate, Ordering::Relaxed);
    }

    /// Fails the next `n` table creations.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Makes every table creation and seal wait `d` first: a slow disk or bucket.
    pub fn set_delay(&self, d: Duration) {
        self.delay_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Makes every seal hold its thread for `d` without yielding, as CPU-bound work or a
    /// blocking fsync on an async worker does: whatever else that worker runs waits.
    pub fn set_stall(&self, d: Duration) {
        self.stall_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    async fn delay(&self) {
        let d = self.delay_micros.load(Ordering::Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_micros(d)).await;
        }
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    async fn create_table(&self, id: TableId, level: u32) -> Result<Box<dyn TableBuilder>> {
        drop(
            self.hold
                .acquire()
                .await
                .map_err(|_| Error::component("faulty storage", "closed"))?,
        );
        self.delay().await;
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::component("faulty storage", "injected failure"));
        }
        let inner = self.inner.create_table(id, level).await?;
        Ok(Box::new(SlowBuilder {
            inner,
            delay: Duration::from_micros(self.delay_micros.load(Ordering::Relaxed)),
            stall: self.stall_micros.clone(),
            rate: self.bytes_per_sec.clone(),
        }))
    }

    async fn open_table(&self, meta: &TableMeta) -> Result<Arc<dyn Table>> {
        self.inner.open_table(meta).await
    }

    async fn delete_table(&self, id: TableId) -> Result<()> {
        self.inner.delete_table(id).await
    }

    async fn list_tables(&self) -> Result<Vec<TableId>> {
        self.inner.list_tables().await
    }

    fn manifests(&self) -> Arc<dyn ManifestStore> {
        Arc::new(FaultyManifests {
            inner: self.inner.manifests(),
            outage: self.manifest_outage.clone(),
        })
    }

    fn reference(&self) -> Option<String> {
        self.inner.reference()
    }

    fn open_reference(&self, reference: &str) -> Result<Arc<dyn Storage>> {
        self.inner.open_reference(reference)
    }
}

/// A builder whose seal waits (or stalls) first, and whose adds go at the throttle's rate.
struct SlowBuilder {
    inner: Box<dyn TableBuilder>,
    delay: Duration,
    stall: Arc<AtomicU64>,
    rate: Arc<AtomicU64>,
}

#[async_trait]
impl TableBuilder for SlowBuilder {
    async fn add(&mut self, entries: &[cairn_common::Entry]) -> Result<()> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate > 0 {
            let bytes: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
            tokio::time::sleep(Duration::from_secs_f64(bytes as f64 / rate as f64)).await;
        }
        self.inner.add(entries).await
    }

    fn estimated_size(&self) -> u64 {
        self.inner.estimated_size()
    }

    fn keep_digest(&mut self) {
        self.inner.keep_digest();
    }

    async fn finish(self: Box<Self>) -> Result<TableMeta> {
        Ok(self.finish_with_digest().await?.0)
    }

    async fn finish_with_digest(
        self: Box<Self>,
    ) -> Result<(TableMeta, Option<crate::ContentDigest>)> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let stall = self.stall.load(Ordering::Relaxed);
        if stall > 0 {
            std::thread::sleep(Duration::from_micros(stall));
        }
        self.inner.finish_with_digest().await
    }

    async fn abandon(self: Box<Self>) -> Result<()> {
        self.inner.abandon().await
    }
}

/// The manifest store of a `FaultyStorage`, failing every call during an outage.
struct FaultyManifests {
    inner: Arc<dyn ManifestStore>,
    outage: Arc<AtomicBool>,
}

impl FaultyManifests {
    fn check(&self) -> Result<()> {
        if self.outage.load(Ordering::SeqCst) {
            return Err(Error::component(
                format!("manifest store {}", self.inner.location()),
                "injected outage",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl ManifestStore for FaultyManifests {
    async fn list(&self) -> Result<Vec<crate::ManifestVersion>> {
        self.check()?;
        self.inner.list().await
    }
    async fn read(&self, n: crate::ManifestVersion) -> Result<Option<bytes::Bytes>> {
        self.check()?;
        self.inner.read(n).await
    }
    async fn create(&self, n: crate::ManifestVersion, data: bytes::Bytes) -> Result<bool> {
        self.check()?;
        self.inner.create(n, data).await
    }
    async fn delete(&self, n: crate::ManifestVersion) -> Result<()> {
        self.check()?;
        self.inner.delete(n).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}
