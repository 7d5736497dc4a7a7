//! SQL over a live Cairn database: DataFusion with one table, `kv`, whose columns are
//! `key`, `value` and the value columns the database declares (`[values]`). A query reads
//! one consistent snapshot: the memtables, the SSTables and the Parquet files, merged and
//! shadowed as the engine does, with the bulk of the data read from Parquet columns where
//! the hybrid or Parquet store has them (`scan.rs`).

pub mod distributed;
pub mod export;
mod filters;
pub mod fragment;
pub mod ipc;
mod key_range;
mod kv_table;
pub mod output;
mod rows;
mod scan;

pub use datafusion;
pub use distributed::{BatchStream, Shards};
pub use export::{Exported, export};
pub use fragment::Fragment;
pub use kv_table::KvTable;
pub use output::Format;

use cairn_engine::{Db, Snapshot};
use cairn_filestore::ValueColumns;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// A session whose table `kv` reads `db` at `snapshot`.
pub fn session(db: Arc<Db>, snapshot: Snapshot, columns: &ValueColumns) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    ctx.register_table("kv", Arc::new(KvTable::new(db, snapshot, columns)))?;
    Ok(ctx)
}

/// Runs one statement over `db` at a snapshot taken now and collects its result.
pub async fn query(db: Arc<Db>, columns: &ValueColumns, sql: &str) -> Result<Vec<RecordBatch>> {
    let snapshot = db.snapshot();
    query_at(db, snapshot, columns, sql).await
}

/// Runs one statement over `db` at `snapshot` and collects its result.
pub async fn query_at(
    db: Arc<Db>,
    snapshot: Snapshot,
    columns: &ValueColumns,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    session(db, snapshot, columns)?
        .sql(sql)
        .await?
        .collect()
        .await
}

/// The Cairn error `e` carries (a shard that moved, a corrupt block), or else `e` as an
/// invalid argument: the statement could not be planned or run.
pub fn into_error(e: DataFusionError) -> cairn_common::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(ours) = c.downcast_ref::<cairn_common::Error>() {
            return ours.duplicate();
        }
        cause = c.source();
    }
    cairn_common::Error::InvalidArgument(e.to_string())
}
