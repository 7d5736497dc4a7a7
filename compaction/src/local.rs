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
        let mut ids = job.output_ids.iter().copied();
        let mut builder: Option<Box<dyn TableBuilder>> = None;
        let mut chunk: Vec<Entry> = Vec::with_capacity(CHUNK);
        let mut result = Ok(());
        while let Some(e) = merged.next().await {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            };
            if !gc.keep(&e) {
                continue;
            }
            let new_key = chunk.last().is_none_or(|l| l.key != e.key);
            if new_key && chunk.len() >= CHUNK {
                let b = match builder.as_mut() {
                    Some(b) => b,
                    None => builder.insert(self.start(&mut ids).await?),
                };
                b.add(&chunk).await?;
                chunk.clear();
                if b.estimated_size() >= job.target_table_bytes
                    && let Some(b) = builder.take()
                {
                    outputs.push(b.finish().await?);
                }
            }
            chunk.push(e);
        }
        if let Err(e) = result {
            if let Some(b) = builder {
                let _ = b.abandon().await;
            }
            return Err(e);
        }
        if !chunk.is_empty() {
            let mut b = match builder {
                Some(b) => b,
                None => self.start(&mut ids).await?,
            };
            b.add(&chunk).await?;
            builder = Some(b);
        }
        if let Some(b) = builder {
            outputs.push(b.finish().await?);
        }
        Ok(())
    }

    async fn start(&self, ids: &mut impl Iterator<Item = u64>) -> Result<Box<dyn TableBuilder>> {
        let id = ids
            .next()
            .ok_or_else(|| Error::InvalidArgument("compaction job ran out of output ids".into()))?;
        self.storage.create_table(id).await
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
