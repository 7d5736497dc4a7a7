//! A router's shards and which keys each holds: a fixed list with keys spread by hash
//! (`partition.rs`), or one version of a cluster map with keys in ranges.

use crate::map::ClusterMap;
use crate::partition::Partitioner;
use crate::shard::Shard;
use bytes::Bytes;
use cairn_common::KeyRange;
use std::ops::Bound;
use std::sync::Arc;

pub struct Routing {
    pub shards: Vec<Arc<dyn Shard>>,
    place: Place,
    /// The map version it follows; 0 for a fixed list.
    pub version: u64,
    /// Each shard's id in the map; empty for a fixed list.
    map_ids: Vec<u64>,
}

enum Place {
    Hash(Partitioner),
    /// Each shard's first key, in order; the first is the empty key.
    Ranges(Vec<Bytes>),
}

impl Routing {
    /// `shards` in a fixed list of `count`, keys by hash.
    pub fn hashed(count: u32, shards: Vec<Arc<dyn Shard>>) -> Routing {
        Routing {
            shards,
            place: Place::Hash(Partitioner::new(count)),
            version: 0,
            map_ids: Vec::new(),
        }
    }

    /// The shards of `map`, in its order, one per entry.
    pub fn ranged(map: &ClusterMap, shards: Vec<Arc<dyn Shard>>) -> Routing {
        Routing {
            shards,
            place: Place::Ranges(map.shards.iter().map(|s| s.start.clone()).collect()),
            version: map.version,
            map_ids: map.shards.iter().map(|s| s.id).collect(),
        }
    }

    /// Each shard's id, in routing order: its id in the map, or its position in a list.
    pub fn ids(&self) -> Vec<u64> {
        if self.map_ids.is_empty() {
            (0..self.shards.len() as u64).collect()
        } else {
            self.map_ids.clone()
        }
    }

    /// The position of the shard that holds `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        match &self.place {
            Place::Hash(p) => p.shard_of(key),
            Place::Ranges(starts) => starts
                .partition_point(|s| s.as_ref() <= key)
                .saturating_sub(1),
        }
    }

    /// The positions of the shards that may hold keys of `range`: all of them when keys are
    /// spread by hash.
    pub fn overlapping(&self, range: &KeyRange) -> impl Iterator<Item = usize> + use<> {
        let all = 0..self.shards.len();
        let Place::Ranges(starts) = &self.place else {
            return all;
        };
        let first = match &range.start {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => self.shard_of(k),
        };
        // Past the last shard that starts before the range's end.
        let end = match &range.end {
            Bound::Unbounded => starts.len(),
            Bound::Excluded(k) => starts.partition_point(|s| s < k),
            Bound::Included(k) => starts.partition_point(|s| s <= k),
        };
        first..end.max(first)
    }
}
