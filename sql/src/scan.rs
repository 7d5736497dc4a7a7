//! `KvScan`: the physical scan of the `kv` table at one snapshot. Where the engine offers a
//! split read (`Db::split_read`), partition 0 holds the live puts of the memtables and upper
//! levels, and the others read the deepest level's tables in parallel, from their Parquet
//! columns where they have them, leaving out the rows newer sources shadow. Elsewhere one
//! partition decodes the engine's merged scan. Statistics are exact only where table
//! metadata alone gives the answer (`SplitRead::exact_count`), so DataFusion answers
//! `COUNT(*)`, `MIN(key)` and `MAX(key)` from them only then.

use crate::rows::{BATCH_ROWS, Shape};
use bytes::Bytes;
use cairn_common::{EntryKind, KeyRange};
use cairn_engine::{Db, Snapshot, SplitRead};
use cairn_filestore::ColumnCondition;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

fn external(e: cairn_common::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Where a scan's rows come from.
enum Source {
    /// The engine's merged scan, decoded: one partition.
    Merged,
    /// Partition 0 the overlay, then one per group of base tables (indexes into `base`).
    Split {
        split: Arc<SplitRead>,
        groups: Vec<Vec<usize>>,
    },
}

pub(crate) struct KvScan {
    db: Arc<Db>,
    snapshot: Arc<Snapshot>,
    range: KeyRange,
    /// Conditions on declared columns: tables read by column skip row groups by them.
    conditions: Arc<[ColumnCondition]>,
    shape: Shape,
    limit: Option<usize>,
    source: Source,
    stats: Arc<Statistics>,
    properties: Arc<PlanProperties>,
    /// `EXPLAIN ANALYZE` shows the rows each partition read.
    metrics: ExecutionPlanMetricsSet,
}

impl std::fmt::Debug for KvScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvScan")
            .field("range", &self.range)
            .field("limit", &self.limit)
            .finish()
    }
}

impl KvScan {
    pub(crate) async fn plan(
        db: Arc<Db>,
        snapshot: Arc<Snapshot>,
        range: KeyRange,
        conditions: Vec<ColumnCondition>,
        shape: Shape,
        limit: Option<usize>,
        partitions: usize,
    ) -> Result<KvScan> {
        let split = db.split_read(&range, &snapshot).await.map_err(external)?;
        let mut stats = Statistics::new_unknown(&shape.projected);
        let source = match split {
            None => Source::Merged,
            Some(split) => {
                // Rows skipped by a condition would make a count from metadata wrong.
                let exact = split.exact_count(&range).filter(|_| conditions.is_empty());
                if let (Some(n), None) = (exact, limit) {
                    stats = exact_stats(&shape.projected, &split, n);
                }
                // Contiguous runs of tables, as even in count as can be.
                let per = split.base.len().div_ceil(partitions.max(1)).max(1);
                let groups = (0..split.base.len())
                    .collect::<Vec<_>>()
                    .chunks(per)
                    .map(<[usize]>::to_vec)
                    .collect();
                Source::Split {
                    split: Arc::new(split),
                    groups,
                }
            }
        };
        let count = match &source {
            Source::Merged => 1,
            Source::Split { groups, .. } => 1 + groups.len(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(shape.projected.clone()),
            Partitioning::UnknownPartitioning(count),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(KvScan {
            db,
            snapshot,
            range,
            conditions: conditions.into(),
            shape,
            limit,
            source,
            stats: Arc::new(stats),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// The row count, and the key's bounds, of a scan that table metadata answers exactly.
fn exact_stats(schema: &SchemaRef, split: &SplitRead, rows: u64) -> Statistics {
    let mut stats = Statistics::new_unknown(schema);
    stats.num_rows = Precision::Exact(rows as usize);
    let bounds = split
        .base
        .first()
        .zip(split.base.last())
        .map(|(a, b)| (a.meta().smallest.clone(), b.meta().largest.clone()));
    for (f, c) in schema
        .fields()
        .iter()
        .zip(stats.column_statistics.iter_mut())
    {
        if f.name() != "key" {
            continue;
        }
        let scalar = |k: Vec<u8>| match f.data_type() {
            DataType::Utf8 => String::from_utf8(k)
                .ok()
                .map(|s| ScalarValue::Utf8(Some(s))),
            _ => Some(ScalarValue::Binary(Some(k))),
        };
        if let Some((min, max)) = bounds.clone()
            && let (Some(min), Some(max)) = (scalar(min), scalar(max))
        {
            *c = ColumnStatistics {
                null_count: Precision::Exact(0),
                min_value: Precision::Exact(min),
                max_value: Precision::Exact(max),
                ..ColumnStatistics::new_unknown()
            };
        }
    }
    stats
}

impl DisplayAs for KvScan {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let how = match &self.source {
            Source::Merged => "merged scan".to_string(),
            Source::Split { split, .. } => format!(
                "split: {} newer live keys, {} tables",
                split.overlay.len(),
                split.base.len()
            ),
        };
        write!(f, "KvScan: {how}, limit={:?}", self.limit)?;
        if !self.conditions.is_empty() {
            let c: Vec<String> = self.conditions.iter().map(ToString::to_string).collect();
            write!(f, ", row groups by {}", c.join(" AND "))?;
        }
        Ok(())
    }
}

/// Sends `rows` as batches; false once the receiver has gone or the limit is reached.
struct Sink {
    tx: Sender<Result<RecordBatch>>,
    left: Option<usize>,
}

impl Sink {
    async fn send(&mut self, batch: RecordBatch) -> bool {
        let batch = match self.left {
            Some(left) if batch.num_rows() >= left => {
                self.left = Some(0);
                batch.slice(0, left)
            }
            Some(left) => {
                self.left = Some(left - batch.num_rows());
                batch
            }
            None => batch,
        };
        if batch.num_rows() > 0 && self.tx.send(Ok(batch)).await.is_err() {
            return false;
        }
        self.left != Some(0)
    }

    async fn send_rows(&mut self, shape: &Shape, rows: &mut Vec<(Bytes, Bytes)>) -> Result<bool> {
        let batch = shape.batch_of_entries(rows)?;
        rows.clear();
        Ok(self.send(batch).await)
    }
}

impl ExecutionPlan for KvScan {
    fn name(&self) -> &str {
        "KvScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(match args.partition() {
            None => self.stats.clone(),
            Some(_) => Arc::new(Statistics::new_unknown(&self.shape.projected)),
        })
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.shape.projected.clone(), 2);
        let mut sink = Sink {
            tx: builder.tx(),
            left: self.limit,
        };
        let (shape, range) = (self.shape.clone(), self.range.clone());
        match &self.source {
            Source::Merged => {
                let (db, snapshot) = (self.db.clone(), self.snapshot.clone());
                builder.spawn(async move {
                    let mut it = db.scan_at(range, &snapshot).await.map_err(external)?;
                    let mut rows = Vec::with_capacity(BATCH_ROWS);
                    while let Some(row) = it.next().await.map_err(external)? {
                        rows.push(row);
                        if rows.len() == BATCH_ROWS && !sink.send_rows(&shape, &mut rows).await? {
                            return Ok(());
                        }
                    }
                    if !rows.is_empty() {
                        sink.send_rows(&shape, &mut rows).await?;
                    }
                    Ok(())
                });
            }
            Source::Split { split, groups } => {
                let (split, conditions) = (split.clone(), self.conditions.clone());
                let group = match partition {
                    0 => None,
                    p => Some(groups.get(p - 1).cloned().ok_or_else(|| {
                        DataFusionError::Internal(format!("KvScan has no partition {p}"))
                    })?),
                };
                builder.spawn(async move {
                    match group {
                        None => {
                            for chunk in split.overlay.chunks(BATCH_ROWS) {
                                if !sink.send(shape.batch_of_entries(chunk)?).await {
                                    break;
                                }
                            }
                        }
                        Some(tables) => {
                            for i in tables {
                                let read =
                                    read_table(&split, i, &range, &conditions, &shape, &mut sink);
                                if !read.await? {
                                    break;
                                }
                            }
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(counted(builder.build(), &self.metrics, partition))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `stream`, its rows and batches counted in `metrics` as partition `partition`'s output, for
/// `EXPLAIN ANALYZE`.
pub(crate) fn counted(
    stream: SendableRecordBatchStream,
    metrics: &ExecutionPlanMetricsSet,
    partition: usize,
) -> SendableRecordBatchStream {
    let baseline = BaselineMetrics::new(metrics, partition);
    let schema = stream.schema();
    let counted = stream.map(move |b| b.map(|b| b.record_output(&baseline)));
    Box::pin(RecordBatchStreamAdapter::new(schema, counted))
}

/// Sends base table `i`'s live rows in `range`; false once the scan should stop.
async fn read_table(
    split: &SplitRead,
    i: usize,
    range: &KeyRange,
    conditions: &[ColumnCondition],
    shape: &Shape,
    sink: &mut Sink,
) -> Result<bool> {
    let table = &split.base[i];
    let meta = table.meta();
    let first = split
        .shadowed
        .partition_point(|k| k.as_ref() < meta.smallest.as_slice());
    let shadows = split
        .shadowed
        .get(first)
        .is_some_and(|k| k.as_ref() <= meta.largest.as_slice());
    let mut fields = shape.stored.clone();
    if shadows || shape.projects_key {
        // Read only where it is shown or needed: keys are the widest column.
        fields.push(Field::new("key", DataType::Binary, false));
    }
    let columns = table.columns(range, &fields, conditions);
    if let Some(mut batches) = columns.await.map_err(external)? {
        while let Some(batch) = batches.next().await {
            let batch = shape.batch_of_columns(batch.map_err(external)?, &split.shadowed)?;
            if !sink.send(batch).await {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    // No column data: decode the table's entries, all puts of distinct keys.
    let mut entries = table.analytic_scan(range).await.map_err(external)?;
    let mut shadowed = split.shadowed.iter().peekable();
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    while let Some(e) = entries.next().await {
        let e = e.map_err(external)?;
        while shadowed.peek().is_some_and(|s| s.as_ref() < e.key.as_ref()) {
            shadowed.next();
        }
        if e.kind != EntryKind::Put || shadowed.peek().is_some_and(|s| **s == e.key) {
            continue;
        }
        rows.push((e.key, e.value));
        if rows.len() == BATCH_ROWS && !sink.send_rows(shape, &mut rows).await? {
            return Ok(false);
        }
    }
    if !rows.is_empty() {
        return sink.send_rows(shape, &mut rows).await;
    }
    Ok(true)
}
