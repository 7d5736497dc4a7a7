//! The RocksDB peer, tuned from the same config as the Cairn profile it is compared with:
//! memtable size, L0 triggers, level sizes, block size, bloom bits, block cache, and the
//! journal's sync setting (RocksDB's WAL `sync`).

use crate::target::{Target, Written};
use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, IteratorMode, Options, WriteOptions,
};
use std::path::Path;

pub struct RocksTarget {
    db: DB,
    write: WriteOptions,
}

// WriteOptions is a plain options struct that RocksDB only reads during a write.
unsafe impl Sync for RocksTarget {}

impl RocksTarget {
    pub fn open(dir: &Path, sync: bool, config: &cairn::Config) -> anyhow::Result<Self> {
        let e = &config.engine;
        let c = &config.compaction;
        let s = config.sst_options();
        let mut o = Options::default();
        o.create_if_missing(true);
        o.increase_parallelism(2);
        // The bench runs hundreds of writer threads on few cores: waiting writers should sleep,
        // not spin (RocksDB's advice when threads outnumber cores), and the WAL write of one
        // group may overlap the memtable inserts of the previous one.
        o.set_enable_write_thread_adaptive_yield(false);
        o.set_enable_pipelined_write(true);
        o.set_max_background_jobs(e.background_threads.max(1) as i32);
        o.set_write_buffer_size(e.memtable_bytes);
        o.set_max_write_buffer_number(e.max_immutable_memtables as i32 + 1);
        o.set_level_zero_file_num_compaction_trigger(c.l0_trigger as i32);
        o.set_level_zero_stop_writes_trigger(e.l0_stop_writes as i32);
        o.set_num_levels(c.levels as i32);
        o.set_max_bytes_for_level_base(c.base_level_bytes);
        o.set_max_bytes_for_level_multiplier(c.level_size_ratio as f64);
        o.set_target_file_size_base(c.target_table_bytes);
        let kind = |c: cairn::Compression| match c {
            cairn::Compression::None => DBCompressionType::None,
            cairn::Compression::Lz4 => DBCompressionType::Lz4,
            cairn::Compression::Zstd(_) => DBCompressionType::Zstd,
        };
        o.set_compression_type(kind(s.compression));
        if !s.compression_per_level.is_empty() {
            o.set_compression_per_level(
                &(0..c.levels as u32)
                    .map(|l| kind(s.compression_at(l)))
                    .collect::<Vec<_>>(),
            );
        }
        // RocksDB has one zstd level for every level: the heaviest one asked for.
        let zstd = std::iter::once(s.compression)
            .chain(s.compression_per_level.iter().copied())
            .filter_map(|c| match c {
                cairn::Compression::Zstd(l) => Some(l),
                _ => None,
            })
            .max();
        if let Some(level) = zstd {
            o.set_compression_options(-14, level, 0, 0);
        }
        let mut t = BlockBasedOptions::default();
        t.set_block_size(s.block_bytes);
        if s.filter == cairn::FilterKind::Bloom {
            t.set_bloom_filter(f64::from(s.bloom_bits_per_key), false);
        }
        if s.block_cache_bytes > 0 {
            t.set_block_cache(&Cache::new_lru_cache(s.block_cache_bytes as usize));
        } else {
            t.disable_cache();
        }
        o.set_block_based_table_factory(&t);
        let db = DB::open(&o, dir.join("rocksdb"))?;
        let mut write = WriteOptions::default();
        write.set_sync(sync);
        Ok(RocksTarget { db, write })
    }
}

#[async_trait]
impl Target for RocksTarget {
    async fn put(&self, key: Bytes, value: Bytes) -> anyhow::Result<()> {
        Ok(self.db.put_opt(&key, &value, &self.write)?)
    }

    async fn get(&self, key: Bytes) -> anyhow::Result<bool> {
        Ok(self.db.get_pinned(&key)?.is_some())
    }

    async fn multi_get(&self, keys: Vec<Bytes>) -> anyhow::Result<usize> {
        let mut found = 0;
        for r in self.db.multi_get(keys.iter()) {
            found += usize::from(r?.is_some());
        }
        Ok(found)
    }

    async fn scan(&self, from: Bytes, limit: usize) -> anyhow::Result<usize> {
        let it = self
            .db
            .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward));
        let mut n = 0;
        for item in it.take(limit) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    async fn aggregate(&self, from: Bytes, to: Bytes) -> anyhow::Result<u64> {
        let mut state = cairn::AggregateState::new(cairn::ValueType::I64);
        let it = self
            .db
            .iterator(IteratorMode::From(&from, rocksdb::Direction::Forward));
        for item in it {
            let (k, v) = item?;
            if k.as_ref() >= to.as_ref() {
                break;
            }
            state.add(&v);
        }
        Ok(state.rows)
    }

    async fn written(&self) -> Written {
        Written::default()
    }

    fn blocking(&self) -> bool {
        true
    }

    async fn close(&self) -> anyhow::Result<()> {
        Ok(self.db.flush()?)
    }
}
