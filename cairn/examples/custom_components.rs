//! Building a `Db` from your own trait objects, with no config file: here a memtable of our
//! choosing, a journal wrapped in a decorator that counts appends, SSTable storage and the
//! local compactor. Any type implementing a Cairn trait can take its component's place.
//!
//! `cargo run -p cairn --example custom_components`

use async_trait::async_trait;
use bytes::Bytes;
use cairn::{
    Components, Db, EngineOptions, FileJournal, FileJournalOptions, Journal, KeyRange,
    LocalCompactor, MemtableOptions, SstOptions, SstStorage, Storage,
};
use cairn_common::{BoxStream, Lsn, Result};
use cairn_journal::{JournalClaim, JournalRecord};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A decorator: the same trait, one added behaviour (counting), everything else delegated.
struct CountingJournal {
    inner: Arc<dyn Journal>,
    appends: AtomicU64,
}

#[async_trait]
impl Journal for CountingJournal {
    fn reach(&self) -> cairn_journal::Reach {
        self.inner.reach()
    }
    async fn claim(&self, claim: &JournalClaim) -> Result<cairn_journal::Claimed> {
        self.inner.claim(claim).await
    }
    async fn append(&self, epoch: u64, record: Bytes) -> Result<Lsn> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.inner.append(epoch, record).await
    }
    fn appends_wait(&self) -> bool {
        self.inner.appends_wait()
    }
    // `inline` is not forwarded: the inner journal's inline appends would bypass the count.
    async fn replay(&self, from: Lsn) -> Result<BoxStream<Result<JournalRecord>>> {
        self.inner.replay(from).await
    }
    async fn truncate(&self, upto: Lsn) -> Result<()> {
        self.inner.truncate(upto).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let journal = Arc::new(CountingJournal {
        inner: Arc::new(FileJournal::open(FileJournalOptions::new(
            dir.path().join("wal"),
        ))?),
        appends: AtomicU64::new(0),
    });
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.path().join("sst")))?);
    let components = Components {
        journal: journal.clone(),
        memtables: MemtableOptions::Sharded { shards: 8 }.factory(),
        compactor: Arc::new(LocalCompactor::new(storage.clone())),
        storage,
    };
    let db = Db::open(dir.path(), EngineOptions::default(), components).await?;
    for i in 0..10 {
        db.put(format!("key{i}"), format!("value{i}")).await?;
    }
    db.delete("key3").await?;
    let rows = db.scan(KeyRange::all()).await?.collect(None).await?;
    println!("{} live keys; first: {:?}", rows.len(), rows.first());
    println!(
        "journal appends seen by the decorator: {}",
        journal.appends.load(Ordering::Relaxed)
    );
    db.close().await?;
    Ok(())
}
