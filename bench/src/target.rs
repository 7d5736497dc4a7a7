//! What a benchmark runs against: a Cairn profile opened as a router (one database, or its
//! shards), or the RocksDB peer. Both answer the same calls.

use async_trait::async_trait;
use bytes::Bytes;
use cairn::KeyRange;
use futures::TryStreamExt;
use std::ops::Bound;

#[async_trait]
pub trait Target: Send + Sync {
    async fn put(&self, key: Bytes, value: Bytes) -> anyhow::Result<()>;
    /// Whether the key was found.
    async fn get(&self, key: Bytes) -> anyhow::Result<bool>;
    /// How many of the keys were found.
    async fn multi_get(&self, keys: Vec<Bytes>) -> anyhow::Result<usize>;
    /// Reads up to `limit` entries from `from` on; returns how many it read.
    async fn scan(&self, from: Bytes, limit: usize) -> anyhow::Result<usize>;
    /// Sums the values of `[from, to)` read as 8-byte integers; returns the rows seen.
    async fn aggregate(&self, from: Bytes, to: Bytes) -> anyhow::Result<u64>;
    /// Bytes the engine says it wrote to its journal and to table files, since it opened.
    async fn written(&self) -> Written;
    /// A target whose calls block their thread gets one OS thread per worker instead of a
    /// task on the async runtime, so its own group commit sees every writer.
    fn blocking(&self) -> bool {
        false
    }
    /// Flushes and compacts everything into the deepest level, so reads hit tables (and a
    /// hybrid store's Parquet copy) rather than memtables.
    async fn compact(&self) -> anyhow::Result<()> {
        anyhow::bail!("this target cannot be compacted on demand")
    }
    async fn close(&self) -> anyhow::Result<()>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub journal: Option<u64>,
    pub tables: Option<u64>,
}

pub struct CairnTarget {
    pub db: std::sync::Arc<cairn::Router>,
}

#[async_trait]
impl Target for CairnTarget {
    async fn put(&self, key: Bytes, value: Bytes) -> anyhow::Result<()> {
        self.db.put(key, value).await?;
        Ok(())
    }

    async fn get(&self, key: Bytes) -> anyhow::Result<bool> {
        Ok(self.db.get(&key).await?.is_some())
    }

    async fn multi_get(&self, keys: Vec<Bytes>) -> anyhow::Result<usize> {
        Ok(self
            .db
            .multi_get(&keys)
            .await?
            .iter()
            .filter(|v| v.is_some())
            .count())
    }

    async fn scan(&self, from: Bytes, limit: usize) -> anyhow::Result<usize> {
        let range = KeyRange {
            start: Bound::Included(from),
            end: Bound::Unbounded,
        };
        let mut it = self.db.scan(range, Some(limit)).await?;
        let mut n = 0;
        while it.try_next().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn aggregate(&self, from: Bytes, to: Bytes) -> anyhow::Result<u64> {
        let state = self
            .db
            .aggregate(KeyRange::new(Some(from), Some(to)), cairn::ValueType::I64)
            .await?;
        Ok(state.rows)
    }

    async fn written(&self) -> Written {
        // Summed over the shards that answer.
        let mut w = Written {
            journal: Some(0),
            tables: Some(0),
        };
        for s in self.db.stats().await {
            if let Ok(s) = s.stats {
                w.journal = w.journal.map(|j| j + s.journal_bytes);
                w.tables = w
                    .tables
                    .map(|t| t + s.bytes_flushed + s.bytes_compacted + s.bytes_imported);
            }
        }
        w
    }

    async fn compact(&self) -> anyhow::Result<()> {
        Ok(self.db.compact().await?)
    }

    async fn close(&self) -> anyhow::Result<()> {
        self.db.close().await?;
        Ok(())
    }
}
