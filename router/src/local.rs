//! A shard in this process: calls go straight to its `Db`, with nothing serialised. The shard
//! server wraps one of these too.

use crate::cluster::{IdentitySlot, ShardIdentity};
use crate::gate::WriteGate;
use crate::shard::{CheckpointOp, ImportStream, PairStream, Shard};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{AggregateState, KeyRange, Result, SeqNo, ValueType, WriteBatch};
use cairn_engine::{CheckpointInfo, Db, DbStats};
use cairn_sql::{BatchStream, Fragment};
use futures::StreamExt;
use std::sync::Arc;

/// Bytes of entries an import gathers into one table: one `Import::add`.
pub const IMPORT_TABLE_BYTES: usize = 64 << 20;

pub struct LocalShard {
    /// Shared with the SQL scans of `query`.
    db: Arc<Db>,
    name: String,
    slot: IdentitySlot,
    /// The identity the router expects, checked by `check`; none for a served shard, which
    /// checks the identity every call carries instead.
    want: Option<ShardIdentity>,
    import_table_bytes: usize,
    /// A placed shard's: sealed by its node before a split or merge.
    gate: Option<WriteGate>,
}

impl LocalShard {
    /// Shard `want` of a router, over an open `db`.
    pub fn new(db: Db, want: ShardIdentity) -> Result<LocalShard> {
        Self::build(db, Some(want), |_| format!("shard {} (local)", want.index))
    }

    /// The database a shard server serves; its identity comes with the calls.
    pub fn served(db: Db) -> Result<LocalShard> {
        Self::build(db, None, |slot| match slot.get() {
            Some(id) => format!("shard {}", id.index),
            None => "shard".to_string(),
        })
    }

    /// Shard `id` of a cluster placed by a map, held by a node that checks every call's
    /// identity itself (`node.rs`).
    pub fn placed(db: Db, id: u64) -> Result<LocalShard> {
        let mut shard = Self::build(db, None, |_| format!("shard {id}"))?;
        shard.gate = Some(WriteGate::default());
        Ok(shard)
    }

    /// The whole database, when not sharded: a router of one shard that needs no identity.
    pub fn unsharded(db: Db) -> Result<LocalShard> {
        Self::build(db, None, |_| "database".to_string())
    }

    fn build(
        db: Db,
        want: Option<ShardIdentity>,
        name: impl FnOnce(&IdentitySlot) -> String,
    ) -> Result<LocalShard> {
        let slot = IdentitySlot::open(db.dir())?;
        Ok(LocalShard {
            name: name(&slot),
            db: Arc::new(db),
            slot,
            want,
            import_table_bytes: IMPORT_TABLE_BYTES,
            gate: None,
        })
    }

    pub fn with_import_table_bytes(mut self, bytes: usize) -> Self {
        self.import_table_bytes = bytes.max(1);
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Refuses unless this shard is `want` (taking it if it is no shard yet).
    pub fn claim(&self, want: ShardIdentity) -> Result<()> {
        self.slot.claim(want)
    }

    pub fn identity(&self) -> Option<ShardIdentity> {
        self.slot.get()
    }

    /// Refuses every write from now on (as not applied, saying `why`) and waits until
    /// none is running. Only a placed shard has a gate; for any other this does nothing.
    pub async fn seal(&self, why: String) {
        if let Some(g) = &self.gate {
            g.seal(why).await;
        }
    }

    fn enter(&self) -> Result<Option<crate::gate::Entered<'_>>> {
        self.gate.as_ref().map(WriteGate::enter).transpose()
    }
}

#[async_trait]
impl Shard for LocalShard {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_remote(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<()> {
        match self.want {
            Some(want) => self.slot.claim(want),
            None => Ok(()),
        }
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.db.get(key).await
    }

    async fn multi_get(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>> {
        self.db.multi_get(&keys).await
    }

    async fn write(&self, batch: WriteBatch) -> Result<SeqNo> {
        let _running = self.enter()?;
        self.db.write(batch).await
    }

    async fn scan(&self, range: KeyRange, limit: Option<usize>) -> Result<PairStream> {
        let pairs = self.db.scan(range).await?;
        Ok(match limit {
            Some(l) => Box::pin(pairs.take(l)),
            None => Box::pin(pairs),
        })
    }

    async fn aggregate(&self, range: KeyRange, value_type: ValueType) -> Result<AggregateState> {
        self.db.aggregate(range, value_type).await
    }

    async fn query(&self, fragment: Fragment) -> Result<BatchStream> {
        let batches = cairn_sql::fragment::run(self.db.clone(), &fragment)
            .await
            .map_err(cairn_sql::into_error)?;
        Ok(Box::pin(batches.map(|b| b.map_err(cairn_sql::into_error))))
    }

    async fn import(&self, mut batches: ImportStream) -> Result<u64> {
        // One engine import of many tables: installed together at the end, or, if the input
        // fails or the caller goes away, dropped with nothing installed.
        let _running = self.enter()?;
        let mut import = self.db.begin_import().await?;
        let mut table = Vec::new();
        let mut bytes = 0;
        let mut loaded = 0u64;
        while let Some(batch) = batches.next().await {
            for (k, v) in batch? {
                bytes += k.len() + v.len() + 16;
                table.push((k, v));
            }
            if bytes >= self.import_table_bytes {
                loaded += table.len() as u64;
                import.add(std::mem::take(&mut table)).await?;
                bytes = 0;
            }
        }
        loaded += table.len() as u64;
        import.add(table).await?;
        import.finish().await?;
        Ok(loaded)
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush().await
    }

    async fn compact(&self) -> Result<()> {
        self.db.compact().await
    }

    async fn stats(&self) -> Result<DbStats> {
        Ok(self.db.stats())
    }

    async fn checkpoint(&self, op: CheckpointOp) -> Result<Vec<CheckpointInfo>> {
        match op {
            CheckpointOp::Create(name) => {
                self.db.create_checkpoint(&name).await?;
            }
            CheckpointOp::Delete(name) => self.db.delete_checkpoint(&name).await?,
            CheckpointOp::Clone { name, into } => {
                self.db.create_clone(&name, &into).await?;
            }
            CheckpointOp::List => {}
        }
        self.db.checkpoints().await
    }

    async fn close(&self) -> Result<()> {
        self.db.close().await
    }
}
