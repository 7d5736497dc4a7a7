//! SQL through a router: the table `kv` spread over shards. The router plans the statement
//! over a `ShardsExec` with one partition per shard, cuts the plan where each shard can take
//! over (`fragment::cut`), and puts a `ShardsExec` in place of everything below the cut:
//! partition `i` is shard `i`'s answer to the same statement, computed on the shard up to the
//! same cut. The router runs the rest: the final aggregates, sorts, limits and joins with
//! other tables. Each shard reads at its own snapshot; there is no snapshot across shards.

use crate::fragment::{self, Fragment};
use crate::{filters, key_range, rows, scan};
use async_trait::async_trait;
use cairn_common::{BoxStream, KeyRange};
use cairn_filestore::ValueColumns;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream, displayable,
};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Arrow batches, or the error that ended them.
pub type BatchStream = BoxStream<cairn_common::Result<RecordBatch>>;

/// The shards a distributed query runs on: a router's, as the router sees them.
#[async_trait]
pub trait Shards: Send + Sync {
    /// The positions of the shards that may hold keys of `range`.
    fn overlapping(&self, range: &KeyRange) -> Vec<usize>;
    /// How errors name shard `shard`.
    fn name(&self, shard: usize) -> String;
    /// Shard `shard`'s part of `fragment` (`fragment::run`).
    async fn run(&self, shard: usize, fragment: Fragment) -> cairn_common::Result<BatchStream>;
}

/// Runs `sql` over the shards, each computing its part where it holds the data, and
/// collects the result.
pub async fn query(
    shards: Arc<dyn Shards>,
    columns: &ValueColumns,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let cut = CutAtShards {
        fragment: Fragment {
            sql: sql.to_string(),
            columns: columns.clone(),
        },
    };
    let ctx = SessionContext::new_with_state(fragment::state(Some(Arc::new(cut))));
    let table = ShardsTable {
        shards,
        schema: rows::schema(columns),
    };
    ctx.register_table("kv", Arc::new(table))?;
    ctx.sql(sql).await?.collect().await
}

/// The router's last physical optimizer rule: puts a `ShardsExec` that runs `fragment` on
/// every shard in place of the part of the plan the shards compute, so `EXPLAIN` shows the
/// cut.
#[derive(Debug)]
struct CutAtShards {
    fragment: Fragment,
}

impl PhysicalOptimizerRule for CutAtShards {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(path) = fragment::cut(&plan, &|n| n.is::<ShardsExec>())? else {
            return Ok(plan);
        };
        let top = fragment::at(&plan, &path);
        let Some(source) = source_of(&top) else {
            return Err(DataFusionError::Internal(
                "no ShardsExec below the cut".into(),
            ));
        };
        let parts = ShardsExec {
            properties: properties(&top.schema(), source.parts.len()),
            schema: top.schema(),
            fragment: Some(self.fragment.clone()),
            runs: (!top.is::<ShardsExec>()).then(|| {
                displayable(top.as_ref())
                    .one_line()
                    .to_string()
                    .trim()
                    .to_string()
            }),
            ..source
        };
        fragment::replace(plan, &path, Arc::new(parts))
    }

    fn name(&self) -> &str {
        "cut_at_shards"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The `ShardsExec` at the bottom of the run of single-child nodes from `top`.
fn source_of(top: &Arc<dyn ExecutionPlan>) -> Option<ShardsExec> {
    let mut node = top.clone();
    loop {
        if let Some(s) = node.downcast_ref::<ShardsExec>() {
            return Some(s.clone());
        }
        let next = node.children().first().map(|c| (*c).clone())?;
        node = next;
    }
}

/// `kv` on the router. It takes the same filters as the shards' `KvTable`, so both plan
/// alike.
struct ShardsTable {
    shards: Arc<dyn Shards>,
    schema: SchemaRef,
}

impl std::fmt::Debug for ShardsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardsTable").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for ShardsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters::pushdown(filters))
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let mut parts = self.shards.overlapping(&key_range::of_all(filters));
        if parts.is_empty() {
            // An empty range: one shard answers it, with nothing.
            parts.push(0);
        }
        Ok(Arc::new(ShardsExec::new(
            self.shards.clone(),
            parts,
            schema,
        )))
    }
}

/// One partition per shard. Planned as the router's stand-in for `kv`; once the plan is cut,
/// each partition streams its shard's part of the statement.
#[derive(Clone)]
struct ShardsExec {
    shards: Arc<dyn Shards>,
    /// The shards asked, by position.
    parts: Vec<usize>,
    schema: SchemaRef,
    /// What each shard runs; none while the plan is not yet cut.
    fragment: Option<Fragment>,
    /// The top of the part each shard runs, as `EXPLAIN` shows it; none for a plain scan.
    runs: Option<String>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl std::fmt::Debug for ShardsExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardsExec")
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl ShardsExec {
    /// The stand-in for `kv` over the shards at `parts`.
    fn new(shards: Arc<dyn Shards>, parts: Vec<usize>, schema: SchemaRef) -> ShardsExec {
        ShardsExec {
            properties: properties(&schema, parts.len()),
            shards,
            parts,
            schema,
            fragment: None,
            runs: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// One partition per shard, in no order.
fn properties(schema: &SchemaRef, shards: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(shards),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl DisplayAs for ShardsExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let n = self.parts.len();
        match (&self.fragment, &self.runs) {
            (None, _) => write!(f, "ShardsExec: kv on {n} shards"),
            (Some(_), None) => write!(f, "ShardsExec: {n} shards, each scanning its kv"),
            (Some(_), Some(runs)) => write!(f, "ShardsExec: {n} shards, each computing {runs}"),
        }
    }
}

impl ExecutionPlan for ShardsExec {
    fn name(&self) -> &str {
        "ShardsExec"
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(fragment) = self.fragment.clone() else {
            return Err(DataFusionError::Internal(
                "ShardsExec run before the plan was cut".into(),
            ));
        };
        let shard = *self.parts.get(partition).ok_or_else(|| {
            DataFusionError::Internal(format!("ShardsExec has no partition {partition}"))
        })?;
        let (shards, schema) = (self.shards.clone(), self.schema.clone());
        let name = shards.name(shard);
        let batches = futures::stream::once(async move { shards.run(shard, fragment).await })
            .try_flatten()
            .map_err(|e| DataFusionError::External(Box::new(e)))
            .and_then({
                let schema = schema.clone();
                move |batch| futures::future::ready(conform(&schema, batch, &name))
            });
        let batches = Box::pin(RecordBatchStreamAdapter::new(schema, batches.boxed()));
        // EXPLAIN ANALYZE shows what crossed from the shards.
        Ok(scan::counted(batches, &self.metrics, partition))
    }
}

/// `batch` as the router planned it, or an error naming the shard whose plan differed.
fn conform(schema: &SchemaRef, batch: RecordBatch, shard: &str) -> Result<RecordBatch> {
    let got = batch.schema();
    let same = got.fields().len() == schema.fields().len()
        && got
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if !same {
        let names = |s: &SchemaRef| {
            s.fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(DataFusionError::Execution(format!(
            "{shard} answered with columns ({}) where the router planned ({}): do the router and the shard servers run the same Cairn version?",
            names(&got),
            names(schema)
        )));
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        batch.columns().to_vec(),
    )?)
}
