//! The local compactor: reads its inputs from a storage, merges them, filters versions and
//! writes outputs to the same storage, cut at the target size between keys.

use crate::{CompactionJob, Compactor, GcFilter};
use async_trait::async_trait;
use cairn_common::{Entry, Error, KeyRange, Result, TableMeta, merge_sorted};
use cairn_filestore::{Storage, TableBuilder};
use futures::StreamExt;
use std::sync::Arc;

pub struct LocalCompactor {
    storage: Arc<dyn Storage>,
}

const CHUNK: usize = 256;

impl LocalCompactor {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        LocalCompactor { storage }
    }

    async fn run(&self, job: &CompactionJob, outputs: &mut Vec<TableMeta>) -> Result<()> {
        let mut sources = Vec::with_capacity(job.inputs.len());
        for meta in &job.inputs {
            let table = self.storage.open_table(meta).await?;
            sources.push(table.scan(&KeyRange::all()).await?);
        }
        let mut merged = merge_sorted(sources);
        let mut gc = GcFilter::new(job.oldest_snapshot, job.drop_tombstones);
        let mut out = Outputs {
            storage: self.storage.as_ref(),
            ids: job.output_ids.iter().copied(),
            builder: None,
            target: job.target_table_bytes,
            done: outputs,
        };
        let mut chunk: Vec<Entry> = Vec::with_capacity(CHUNK);
        let result: Result<()> = async {
            while let Some(e) = merged.next().await {
                let e = e?;
                if !gc.keep(&e) {
                    continue;
                }
                let new_key = chunk.last().is_none_or(|l| l.key != e.key);
                if new_key && chunk.len() >= CHUNK {
                    // A merge of cached blocks never waits, so it would hold its worker for
                    // the whole job; this yields once the task's budget is spent, letting
                    // the flushes and I/O that share the worker in.
                    tokio::task::consume_budget().await;
                    out.add(&chunk).await?;
                    chunk.clear();
                }
                chunk.push(e);
            }
            if !chunk.is_empty() {
                out.add(&chunk).await?;
            }
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

/// The outputs being written: chunks go to the current builder, which is sealed once it
/// reaches the target size (always between keys, since chunks end between keys).
struct Outputs<'a, I> {
    storage: &'a dyn Storage,
    ids: I,
    builder: Option<Box<dyn TableBuilder>>,
    target: u64,
    done: &'a mut Vec<TableMeta>,
}

impl<I: ExactSizeIterator<Item = u64>> Outputs<'_, I> {
    async fn add(&mut self, chunk: &[Entry]) -> Result<()> {
        let b = match self.builder.as_mut() {
            Some(b) => b,
            None => {
                let id = self.ids.next().ok_or_else(|| {
                    Error::InvalidArgument("a compaction job needs output ids".into())
                })?;
                self.builder.insert(self.storage.create_table(id).await?)
            }
        };
        b.add(chunk).await?;
        // The last id takes whatever is left, past the target: a budget of ids estimated
        // too low (inputs compressed better than the outputs are measured) must not fail
        // the job, since it would fail again on every retry. A later compaction cuts the
        // big table up.
        if b.estimated_size() >= self.target && self.ids.len() > 0 {
            self.finish().await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
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
