//! SQL over a live Cairn database: DataFusion with one table, `kv`, whose columns are
//! `key`, `value` and the value columns the database declares (`[values]`). A query reads
//! one consistent snapshot: the memtables, the SSTables and the Parquet files, merged and
//! shadowed as the engine does, with the bulk of the data read from Parquet columns where
//! the hybrid or Parquet store has them (`scan.rs`).

mod key_range;
mod kv_table;
pub mod output;
mod rows;
mod scan;

pub use kv_table::KvTable;
pub use output::Format;

use cairn_engine::Db;
use cairn_filestore::ValueColumns;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::Result;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// A session whose table `kv` reads `db` at a snapshot taken now.
pub fn session(db: Arc<Db>, columns: &ValueColumns) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    ctx.register_table("kv", Arc::new(KvTable::new(db, columns)))?;
    Ok(ctx)
}

/// Runs one statement over `db` and collects its result.
pub async fn query(db: Arc<Db>, columns: &ValueColumns, sql: &str) -> Result<Vec<RecordBatch>> {
    session(db, columns)?.sql(sql).await?.collect().await
}
