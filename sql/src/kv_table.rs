//! `KvTable`: the DataFusion table `kv` over one database at one snapshot, taken when the
//! table is made, so every scan of one query (a self-join included) sees the same data.

use crate::rows::{self, Shape};
use crate::scan::KvScan;
use crate::{filters, key_range};
use async_trait::async_trait;
use cairn_engine::{Db, Snapshot};
use cairn_filestore::ValueColumns;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

pub struct KvTable {
    db: Arc<Db>,
    snapshot: Arc<Snapshot>,
    columns: ValueColumns,
    schema: SchemaRef,
}

impl std::fmt::Debug for KvTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvTable")
            .field("snapshot", &self.snapshot.seq())
            .field("columns", &self.columns)
            .finish()
    }
}

impl KvTable {
    /// The table at `snapshot` (`Db::snapshot`, or `Db::snapshot_at` for an earlier
    /// number), with the columns `columns` declares.
    pub fn new(db: Arc<Db>, snapshot: Snapshot, columns: &ValueColumns) -> KvTable {
        KvTable {
            snapshot: Arc::new(snapshot),
            db,
            schema: rows::schema(columns),
            columns: columns.clone(),
        }
    }

    /// The sequence number the table reads at.
    pub fn seq(&self) -> u64 {
        self.snapshot.seq()
    }
}

#[async_trait]
impl TableProvider for KvTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Conditions on the key alone narrow the range read, exactly.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters::pushdown(filters))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = key_range::of_all(filters);
        let conditions = filters::conditions(filters);
        let shape = Shape::new(&self.columns, projection)?;
        let partitions = state.config().target_partitions();
        let scan = KvScan::plan(
            self.db.clone(),
            self.snapshot.clone(),
            range,
            conditions,
            shape,
            limit,
            partitions,
        )
        .await?;
        Ok(Arc::new(scan))
    }
}
