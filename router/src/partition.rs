//! Which shard holds a key: `seahash(key) % shards`, with SeaHash's fixed, specified output
//! (the same on every platform and version), over the shard list in config order. The count
//! is fixed when a cluster is created (see `cluster.rs`): changing it would move most keys, so
//! a router opened with another count is refused rather than left to misroute.

/// The partitioning scheme's name, recorded with each cluster.
pub const SCHEME: &str = "seahash-mod-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioner {
    shards: u32,
}

impl Partitioner {
    /// At least one shard.
    pub fn new(shards: u32) -> Self {
        Partitioner {
            shards: shards.max(1),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards as usize
    }

    pub fn shard_of(&self, key: &[u8]) -> usize {
        if self.shards == 1 {
            return 0;
        }
        (seahash::hash(key) % u64::from(self.shards)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping is part of the on-disk format: these must never change.
    #[test]
    fn the_mapping_is_stable() {
        let p = Partitioner::new(3);
        let got: Vec<usize> = ["", "a", "key1", "user:42", "zzzzzzzz"]
            .iter()
            .map(|k| p.shard_of(k.as_bytes()))
            .collect();
        assert_eq!(got, PINNED);
        assert_eq!(seahash::hash(b"key1"), PINNED_HASH);
    }

    const PINNED: [usize; 5] = [2, 2, 0, 1, 1];
    const PINNED_HASH: u64 = 14323614750319039368;

    #[test]
    fn keys_spread_evenly() {
        let p = Partitioner::new(3);
        let mut counts = [0u32; 3];
        for i in 0..30_000 {
            counts[p.shard_of(format!("key{i:08}").as_bytes())] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven: {counts:?}");
        }
        assert_eq!(Partitioner::new(1).shard_of(b"anything"), 0);
    }
}
