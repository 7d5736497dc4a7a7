//! A router's shards as SQL sees them (`cairn_sql::Shards`): each runs its part of a
//! statement through `Shard::query`, in this process or over gRPC.

use crate::routing::Routing;
use async_trait::async_trait;
use cairn_common::{Error, KeyRange, Result};
use cairn_sql::{BatchStream, Fragment, Shards};
use std::sync::Arc;

pub(crate) struct RoutedShards(pub Arc<Routing>);

#[async_trait]
impl Shards for RoutedShards {
    fn overlapping(&self, range: &KeyRange) -> Vec<usize> {
        self.0.overlapping(range).collect()
    }

    fn name(&self, shard: usize) -> String {
        self.0
            .shards
            .get(shard)
            .map_or_else(|| format!("shard {shard}"), |s| s.name().to_string())
    }

    async fn run(&self, shard: usize, fragment: Fragment) -> Result<BatchStream> {
        let s =
            self.0.shards.get(shard).ok_or_else(|| {
                Error::InvalidArgument(format!("no shard {shard} in the routing"))
            })?;
        s.query(fragment).await
    }
}
