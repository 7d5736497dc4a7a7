//! The part of a query that a shard computes for a router: the statement goes to every shard
//! as text, each plans it over its own `kv` table exactly as the router plans it over the
//! shards, and runs the plan from its table up to the cut (`cut`): the operators that work
//! row by row (filters, projections) and the first partial aggregate above them. So a
//! `GROUP BY` through the router moves one partial state per group and shard, not rows.
//!
//! Both sides plan with `state()`, which keeps the partial aggregate in every plan. Both
//! find the cut by one rule over the same statement and schema, and the router checks that
//! what each shard sends has the columns it planned (`distributed.rs`).

use crate::kv_table::KvTable;
use cairn_engine::Db;
use cairn_filestore::ValueColumns;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a router asks of a shard: a statement over `kv`, and the columns it declares (the
/// router's `[values]`), so that both sides plan over the same schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fragment {
    pub sql: String,
    pub columns: ValueColumns,
}

/// Physical optimizer rules that would fold the partial aggregate away, on one side only:
/// a shard's exact table statistics can answer a count the router must compute, and one
/// partition merges partial and final aggregation into one step.
const FOLDING_RULES: &[&str] = &["aggregate_statistics", "CombinePartialFinalAggregate"];

/// The planner of a query that runs on shards, the same on the router and on every shard,
/// with `last` (the router's cut) run after every other rule.
pub(crate) fn state(last: Option<Arc<dyn PhysicalOptimizerRule + Send + Sync>>) -> SessionState {
    let rules = PhysicalOptimizer::new()
        .rules
        .into_iter()
        .filter(|r| !FOLDING_RULES.contains(&r.name()))
        .chain(last)
        .collect();
    SessionStateBuilder::new()
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .build()
}

/// Whether a shard may compute `node` over its own rows: the union of every shard's output
/// is then what the router's plan expects of it. Not a node with a limit (`fetch`): it limits
/// all its input, every shard's rows together, and the router may have no limit above it.
fn per_shard(node: &dyn ExecutionPlan) -> bool {
    if node.fetch().is_some() {
        return false;
    }
    if let Some(agg) = node.downcast_ref::<AggregateExec>() {
        return *agg.mode() == AggregateMode::Partial;
    }
    matches!(
        node.name(),
        "FilterExec"
            | "ProjectionExec"
            | "CoalesceBatchesExec"
            | "RepartitionExec"
            | "CoalescePartitionsExec"
    )
}

fn is_partial_aggregate(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<AggregateExec>()
        .is_some_and(|a| *a.mode() == AggregateMode::Partial)
}

/// Where to cut `plan` whose one source of rows `is_source` picks: the path of child
/// indexes from the root to the highest node a shard computes (see `per_shard`), stopping
/// at the first partial aggregate. `None` when the plan reads no source; an error when it
/// reads more than one, which the cut cannot tell apart.
pub(crate) fn cut(
    plan: &Arc<dyn ExecutionPlan>,
    is_source: &dyn Fn(&dyn ExecutionPlan) -> bool,
) -> Result<Option<Vec<usize>>> {
    let mut paths = Vec::new();
    find(plan, is_source, &mut Vec::new(), &mut paths);
    let path = match paths.len() {
        0 => return Ok(None),
        1 => paths.remove(0),
        n => {
            return Err(DataFusionError::Plan(format!(
                "a query over shards reads the table kv once; this one reads it {n} times"
            )));
        }
    };
    // Nodes from the root down to the source.
    let mut nodes = vec![plan.clone()];
    for &i in &path {
        let next = nodes[nodes.len() - 1].children()[i].clone();
        nodes.push(next);
    }
    let mut depth = path.len();
    while depth > 0 {
        let (below, above) = (&nodes[depth], &nodes[depth - 1]);
        if is_partial_aggregate(below.as_ref())
            || above.children().len() != 1
            || !per_shard(above.as_ref())
        {
            break;
        }
        depth -= 1;
    }
    Ok(Some(path[..depth].to_vec()))
}

fn find(
    node: &Arc<dyn ExecutionPlan>,
    is_source: &dyn Fn(&dyn ExecutionPlan) -> bool,
    path: &mut Vec<usize>,
    found: &mut Vec<Vec<usize>>,
) {
    if is_source(node.as_ref()) {
        found.push(path.clone());
        return;
    }
    for (i, child) in node.children().into_iter().enumerate() {
        path.push(i);
        find(child, is_source, path, found);
        path.pop();
    }
}

/// The node at `path` in `plan`.
pub(crate) fn at(plan: &Arc<dyn ExecutionPlan>, path: &[usize]) -> Arc<dyn ExecutionPlan> {
    path.iter()
        .fold(plan.clone(), |node, &i| node.children()[i].clone())
}

/// `plan` with the node at `path` replaced by `with`.
pub(crate) fn replace(
    plan: Arc<dyn ExecutionPlan>,
    path: &[usize],
    with: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some((&first, rest)) = path.split_first() else {
        return Ok(with);
    };
    let mut children: Vec<_> = plan.children().into_iter().cloned().collect();
    let child = children.remove(first);
    children.insert(first, replace(child, rest, with)?);
    replace_children_if_necessary(plan, children)
}

/// This shard's part of `fragment`, over `db` at a snapshot taken now: the rows (or partial
/// aggregates) of the plan up to its cut, all partitions in one stream.
pub async fn run(db: Arc<Db>, fragment: &Fragment) -> Result<SendableRecordBatchStream> {
    fragment
        .columns
        .check()
        .map_err(|(key, e)| DataFusionError::Plan(format!("values.{key}: {e}")))?;
    let ctx = SessionContext::new_with_state(state(None));
    let snapshot = db.snapshot();
    ctx.register_table(
        "kv",
        Arc::new(KvTable::new(db, snapshot, &fragment.columns)),
    )?;
    let plan = ctx.sql(&fragment.sql).await?.create_physical_plan().await?;
    let path = cut(&plan, &|n| n.name() == "KvScan")?.ok_or_else(|| {
        DataFusionError::Plan("the statement does not read the table kv".to_string())
    })?;
    execute_stream(at(&plan, &path), ctx.task_ctx())
}
