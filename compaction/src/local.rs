//! The local compactor: reads its inputs from a storage, merges them, filters versions and
//! writes outputs to the same storage, cut at the target size between keys.
//!
//! Which versions survive, and what merge operands, expired puts and the compaction filter
//! become, is `VersionFilter`'s rule (`versions.rs`), shared with flushes.
//!
//! Range tombstones: a version that a tombstone every reader sees covers is dropped; the
//! tombstone itself goes on into the outputs at its start key, unless the job drops
//! tombstones and every reader sees it. An output is never cut inside a tombstone it holds,
//! so the outputs of a level do not overlap (a table's key range reaches its tombstones'
//! ends).

use crate::{CompactionJob, Compactor, Rules, VersionFilter};
use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::{
    Entry, Error, Operators, RangeDeletes, RangeTombstone, Result, TableMeta, merge_sorted,
};
use cairn_filestore::{SharedTables, Storage, TableBuilder};
use futures::StreamExt;
use std::sync::Arc;

pub struct LocalCompactor {
    storage: Arc<dyn Storage>,
    /// Where the operators a job names are looked up, unless the job brings its own.
    operators: Operators,
}

const CHUNK: usize = 256;

impl LocalCompactor {
    /// A compactor with the built-in merge operators and compaction filters.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        LocalCompactor {
            storage,
            operators: Operators::default(),
        }
    }

    /// Runs jobs with the operators of `registry` (a worker serving databases that use
    /// operators of their own).
    pub fn with_operators(mut self, registry: Operators) -> Self {
        self.operators = registry;
        self
    }

    async fn run(&self, job: &CompactionJob, outputs: &mut Vec<TableMeta>) -> Result<()> {
        // Before reading anything: an unknown operator fails the job at once.
        let rules = Rules::of(job, &self.operators)?;
        let mut sources = Vec::with_capacity(job.inputs.len());
        let mut tombstones = Vec::new();
        let inputs = SharedTables::wrap(self.storage.clone(), &job.shared)?;
        let range = job.key_range();
        for meta in &job.inputs {
            let table = inputs.open_table(meta).await?;
            tombstones.extend(table.range_deletes().iter().filter_map(|t| job.clip(t)));
            sources.push(table.scan(&range).await?);
        }
        let mut merged = merge_sorted(sources);
        // What every reader sees deletes what it covers.
        let seen_by_all = RangeDeletes::new(
            tombstones
                .iter()
                .filter(|t| t.seq <= job.oldest_snapshot)
                .cloned(),
        );
        let mut versions = VersionFilter::new(rules, seen_by_all);
        let mut survivors = Vec::new();
        let mut kept: Vec<Entry> = RangeDeletes::new(
            tombstones
                .into_iter()
                .filter(|t| !(job.drop_tombstones && t.seq <= job.oldest_snapshot)),
        )
        .tombstones()
        .iter()
        .map(RangeTombstone::to_entry)
        .collect();
        kept.sort_by(|a, b| b.cmp_internal(a)); // the first to go out last
        let mut out = Outputs {
            storage: self.storage.as_ref(),
            ids: job.output_ids.iter().copied(),
            builder: None,
            reach: None,
            target: job.target_table_bytes,
            level: job.output_level,
            done: outputs,
            chunk: Vec::with_capacity(CHUNK),
            ran: std::time::Instant::now(),
        };
        let result: Result<()> = async {
            let mut more = true;
            while more {
                match merged.next().await {
                    Some(e) => versions.push(e?, &mut survivors)?,
                    None => {
                        versions.finish(&mut survivors)?;
                        more = false;
                    }
                }
                for e in survivors.drain(..) {
                    while let Some(t) = kept.pop_if(|t| t.cmp_internal(&e).is_lt()) {
                        out.push(t).await?;
                    }
                    out.push(e).await?;
                }
            }
            while let Some(t) = kept.pop() {
                out.push(t).await?;
            }
            out.flush(None).await?;
            out.finish().await
        }
        .await;
        if result.is_err()
            && let Some(b) = out.builder.take()
        {
            // An object store's multipart upload is aborted, a file removed.
            let _ = b.abandon().await;
        }
        result
    }
}

/// The outputs being written: entries gather in chunks that end between keys, chunks go to
/// the current builder, which is sealed once it reaches the target size, between keys and
/// past the end of every range tombstone it holds.
struct Outputs<'a, I> {
    storage: &'a dyn Storage,
    ids: I,
    builder: Option<Box<dyn TableBuilder>>,
    /// The furthest end of the range tombstones in the current builder.
    reach: Option<Bytes>,
    target: u64,
    /// The level the outputs are written for, which may choose their encoding.
    level: u32,
    done: &'a mut Vec<TableMeta>,
    chunk: Vec<Entry>,
    /// When the job last yielded its thread.
    ran: std::time::Instant,
}

/// The longest a job holds its thread between yields.
const RUN_BEFORE_YIELD: std::time::Duration = std::time::Duration::from_millis(10);

impl<I: ExactSizeIterator<Item = u64>> Outputs<'_, I> {
    async fn push(&mut self, e: Entry) -> Result<()> {
        let new_key = self.chunk.last().is_none_or(|l| l.key != e.key);
        if new_key && self.chunk.len() >= CHUNK {
            // A merge of cached blocks never waits, so it would hold its worker for the
            // whole job; this yields once the task's budget is spent, or once a stretch of
            // encoding ran long (a heavy codec spends a budget's worth of chunks in
            // seconds), letting the flushes and I/O that share the worker in.
            if self.ran.elapsed() >= RUN_BEFORE_YIELD {
                tokio::task::yield_now().await;
                self.ran = std::time::Instant::now();
            } else {
                tokio::task::consume_budget().await;
            }
            self.flush(Some(&e.key)).await?;
        }
        self.chunk.push(e);
        Ok(())
    }

    /// Hands the chunk to the builder; `next` is the key that follows it, if any.
    async fn flush(&mut self, next: Option<&Bytes>) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        for e in chunk.iter().filter(|e| e.is_range_delete()) {
            if self.reach.as_ref().is_none_or(|r| *r < e.value) {
                self.reach = Some(e.value.clone());
            }
        }
        self.add(&chunk).await?;
        self.chunk = chunk;
        self.chunk.clear();
        let past_reach = match (next, &self.reach) {
            (Some(next), Some(reach)) => reach < next,
            _ => true,
        };
        if past_reach && self.builder_full() {
            self.finish().await?;
        }
        Ok(())
    }

    fn builder_full(&self) -> bool {
        // The last id takes whatever is left, past the target: a budget of ids estimated
        // too low (inputs compressed better than the outputs are measured) must not fail
        // the job, since it would fail again on every retry. A later compaction cuts the
        // big table up.
        self.builder
            .as_ref()
            .is_some_and(|b| b.estimated_size() >= self.target && self.ids.len() > 0)
    }

    async fn add(&mut self, chunk: &[Entry]) -> Result<()> {
        let b = match self.builder.as_mut() {
            Some(b) => b,
            None => {
                let id = self.ids.next().ok_or_else(|| {
                    Error::InvalidArgument("a compaction job needs output ids".into())
                })?;
                self.builder
                    .insert(self.storage.create_table(id, self.level).await?)
            }
        };
        b.add(chunk).await
    }

    async fn finish(&mut self) -> Result<()> {
        self.reach = None;
        if let Some(b) = self.builder.take() {
            self.done.push(b.finish().await?);
        }
        Ok(())
    }
}

#[async_trait]
impl Compactor for LocalCompactor {
    async fn compact(&self, job: CompactionJob) -> Result<Vec<TableMeta>> {
        let mut outputs = Vec::new();
        match self.run(&job, &mut outputs).await {
            Ok(()) => Ok(outputs),
            Err(e) => {
                for t in &outputs {
                    let _ = self.storage.delete_table(t.id).await;
                }
                Err(e)
            }
        }
    }
}
