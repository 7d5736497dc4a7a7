//! What the database's merge operator, compaction filter, TTL and clock make of its writes,
//! reads and jobs, and the writes that use them (`Db::merge`, `Db::put_with_ttl`). Resolved
//! from the options once, at open: an unknown name fails the open.

use crate::db::Db;
use crate::options::EngineOptions;
use bytes::Bytes;
use cairn_common::{
    EntryKind, Error, MergeOperator, Operators, Result, SeqNo, SharedClock, WriteBatch,
};
use cairn_compaction::{CompactionJob, Rules};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct DbOperators {
    merge_name: Option<String>,
    filter_name: Option<String>,
    pub merge: Option<Arc<dyn MergeOperator>>,
    registry: Operators,
    ttl_ms: u64,
    pub clock: SharedClock,
}

impl DbOperators {
    pub fn new(opts: &EngineOptions) -> Result<Self> {
        let named = |key: &str, e: Error| Error::InvalidArgument(format!("engine.{key}: {e}"));
        let merge = opts
            .merge_operator
            .as_deref()
            .map(|n| opts.operators.merge(n))
            .transpose()
            .map_err(|e| named("merge_operator", e))?;
        if let Some(f) = &opts.compaction_filter {
            opts.operators
                .filter(f)
                .map_err(|e| named("compaction_filter", e))?;
        }
        Ok(DbOperators {
            merge_name: opts.merge_operator.clone(),
            filter_name: opts.compaction_filter.clone(),
            merge,
            registry: opts.operators.clone(),
            ttl_ms: opts.ttl_ms,
            clock: opts.clock.clone(),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Checks a batch's merge operands against the operator, and gives its puts the
    /// database's TTL: both before the journal, which then holds each write as it reads.
    pub fn prepare(&self, batch: WriteBatch) -> Result<WriteBatch> {
        let merges = batch.ops().iter().filter(|op| op.kind == EntryKind::Merge);
        for op in merges {
            let Some(m) = &self.merge else {
                return Err(Error::InvalidArgument(
                    "a merge needs the database to have a merge operator (engine.merge_operator)"
                        .into(),
                ));
            };
            m.check_operand(&op.value)?;
        }
        if self.ttl_ms == 0 || !batch.ops().iter().any(|op| op.kind == EntryKind::Put) {
            return Ok(batch);
        }
        let expires = self.now_ms().saturating_add(self.ttl_ms);
        let mut out = WriteBatch::new();
        for op in batch.into_ops() {
            match op.kind {
                EntryKind::Put => out.put_expiring(op.key, &op.value, expires),
                _ => out.push(op),
            };
        }
        Ok(out)
    }

    /// The part of a compaction job these decide, with the engine's registry for a
    /// compactor in this process.
    pub fn fill_job(&self, job: &mut CompactionJob) {
        job.merge_operator = self.merge_name.clone();
        job.compaction_filter = self.filter_name.clone();
        job.now_ms = self.now_ms();
        job.operators = Some(self.registry.clone());
    }

    /// The rules a flush applies: merges fold and expired puts turn into tombstones, as in
    /// a compaction, but the filter waits for compaction, and tombstones stay (older
    /// versions lie in the tables below).
    pub fn flush_rules(&self, oldest_snapshot: u64) -> Rules {
        Rules {
            oldest_snapshot,
            drop_tombstones: false,
            now_ms: self.now_ms(),
            merge: self.merge.clone(),
            filter: None,
        }
    }

    /// What reads starting now make of merge operands and expiring puts.
    pub fn read_rules(&self) -> ReadRules {
        ReadRules {
            now_ms: self.now_ms(),
            merge: self.merge.clone(),
        }
    }
}

impl Db {
    /// Adds a merge operand to `key`: the database's merge operator (`merge_operator` in the
    /// options) folds it into the key's value on read, and flushes and compactions fold the
    /// operands for good. Refused without an operator, or with an operand it cannot fold.
    pub async fn merge(&self, key: impl Into<Bytes>, operand: impl Into<Bytes>) -> Result<SeqNo> {
        let mut b = WriteBatch::new();
        b.merge(key, operand);
        self.write(b).await
    }

    /// A put that reads as deleted once `ttl` has passed on the database's clock; compaction
    /// then drops it.
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl AsRef<[u8]>,
        ttl: std::time::Duration,
    ) -> Result<SeqNo> {
        let expires = self
            .inner
            .ops
            .now_ms()
            .saturating_add(ttl.as_millis() as u64);
        let mut b = WriteBatch::new();
        b.put_expiring(key, value.as_ref(), expires);
        self.write(b).await
    }
}

/// What one read makes of merge operands and expiring puts: the time it started at, and the
/// operator.
#[derive(Clone)]
pub(crate) struct ReadRules {
    pub now_ms: u64,
    pub merge: Option<Arc<dyn MergeOperator>>,
}

impl ReadRules {
    /// Folds operands (newest first) over `base` into the key's value.
    pub fn fold(&self, key: &[u8], base: Option<&[u8]>, newest_first: Vec<Bytes>) -> Result<Bytes> {
        let Some(m) = &self.merge else {
            return Err(Error::InvalidArgument(format!(
                "key {:?} holds merge operands but the database has no merge operator (set engine.merge_operator)",
                String::from_utf8_lossy(key)
            )));
        };
        let mut oldest_first = newest_first;
        oldest_first.reverse();
        m.full_merge(key, base, &oldest_first)
    }
}
