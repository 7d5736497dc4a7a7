//! Workloads: what operations a run issues and which keys they touch. The names follow
//! db_bench (`put`, `get`, ...) and the YCSB core workloads (`ycsb-a` to `ycsb-f`).

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution as _, Zipf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Writes every key once, in a pseudo-random order (db_bench's fillrandom).
    #[value(alias = "fillrandom")]
    Put,
    /// Writes every key once, in key order (db_bench's fillseq).
    #[value(alias = "fillseq")]
    PutSeq,
    /// Random puts over the loaded keys for the duration (db_bench's overwrite).
    Overwrite,
    /// Point reads (db_bench's readrandom).
    #[value(alias = "readrandom")]
    Get,
    /// One worker overwrites random keys while the others read (db_bench's
    /// readwhilewriting); reported as two rows, the readers' and the writer's.
    Readwhilewriting,
    /// A seek to a random key and a read of `--scan-length` entries from there (db_bench's
    /// seekrandom with `--seek_nexts`).
    #[value(alias = "seekrandom")]
    Scan,
    /// Batched point reads of `--batch` keys.
    Multiget,
    /// Sum over a random range of `--scan-length` keys (`Db::aggregate`).
    Aggregate,
    /// Point reads and updates, `--read-ratio` of them reads.
    Mixed,
    /// YCSB A: 50% reads, 50% updates (zipfian).
    YcsbA,
    /// YCSB B: 95% reads, 5% updates (zipfian).
    YcsbB,
    /// YCSB C: reads only (zipfian).
    YcsbC,
    /// YCSB D: 95% reads of recent keys, 5% inserts.
    YcsbD,
    /// YCSB E: 95% short scans (1-100 entries), 5% inserts.
    YcsbE,
    /// YCSB F: 50% reads, 50% read-modify-writes (zipfian).
    YcsbF,
}

impl Workload {
    /// Whether it writes: a read replica (`--role reader`) runs only those that do not.
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Workload::Get
                | Workload::Scan
                | Workload::Multiget
                | Workload::Aggregate
                | Workload::YcsbC
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::PutSeq => "put-seq",
            Workload::Overwrite => "overwrite",
            Workload::Get => "get",
            Workload::Readwhilewriting => "readwhilewriting",
            Workload::Scan => "scan",
            Workload::Multiget => "multiget",
            Workload::Aggregate => "aggregate",
            Workload::Mixed => "mixed",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
        }
    }

    /// Fills write each key once and end there; everything else runs for the duration and
    /// needs the keys loaded first.
    pub fn is_fill(self) -> bool {
        matches!(self, Workload::Put | Workload::PutSeq)
    }

    pub fn default_distribution(self) -> KeyDistribution {
        match self {
            Workload::YcsbA
            | Workload::YcsbB
            | Workload::YcsbC
            | Workload::YcsbE
            | Workload::YcsbF => KeyDistribution::Zipfian,
            _ => KeyDistribution::Uniform,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    Uniform,
    /// Zipfian with constant 0.99 (YCSB's), hot keys scattered over the key space.
    Zipfian,
}

/// One operation a worker issues. Keys are indexes; `key_bytes` renders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(u64),
    Get(u64),
    Scan(u64, usize),
    MultiGet(Vec<u64>),
    /// Keys `[start, start + len)`.
    Aggregate(u64, u64),
    ReadModifyWrite(u64),
}

pub fn key_bytes(index: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!("key{index:016}"))
}

/// Maps 0..n onto itself in a scattered order (multiplication by a prime coprime with n), so
/// a "random" fill still writes every key exactly once.
pub fn scatter(i: u64, n: u64) -> u64 {
    const P: u64 = 2_147_483_647;
    ((i % n) as u128 * P as u128 % n as u128) as u64
}

#[derive(Debug, Clone)]
pub struct Params {
    pub keys: u64,
    pub read_ratio: f64,
    pub scan_length: usize,
    pub batch: usize,
}

/// State shared by the workers of one run.
pub struct Shared {
    pub workload: Workload,
    pub params: Params,
    pub distribution: KeyDistribution,
    /// Next fill position, and for YCSB D/E the next key to insert.
    pub cursor: AtomicU64,
    zipf: Option<Zipf<f64>>,
}

impl Shared {
    pub fn new(
        workload: Workload,
        params: Params,
        distribution: KeyDistribution,
    ) -> anyhow::Result<Self> {
        let zipf = match distribution {
            KeyDistribution::Zipfian => Some(Zipf::new(params.keys.max(1) as f64, 0.99)?),
            KeyDistribution::Uniform => None,
        };
        let cursor = if matches!(workload, Workload::YcsbD | Workload::YcsbE) {
            params.keys
        } else {
            0
        };
        Ok(Shared {
            workload,
            params,
            distribution,
            cursor: AtomicU64::new(cursor),
            zipf,
        })
    }

    /// Keys that currently exist (inserts grow the space).
    fn live_keys(&self) -> u64 {
        self.cursor
            .load(Ordering::Relaxed)
            .max(self.params.keys)
            .max(1)
    }

    fn pick(&self, rng: &mut SmallRng) -> u64 {
        let n = self.params.keys.max(1);
        match &self.zipf {
            Some(z) => scatter(z.sample(rng) as u64 - 1, n),
            None => rng.random_range(0..n),
        }
    }

    /// Whether `worker` is the one writer of `readwhilewriting`.
    pub fn is_writer(&self, worker: usize) -> bool {
        self.workload == Workload::Readwhilewriting && worker == 0
    }

    /// The next operation of `worker`, or `None` when a fill has written every key.
    pub fn next(&self, rng: &mut SmallRng, worker: usize) -> Option<Op> {
        let p = &self.params;
        let read = |rng: &mut SmallRng, ratio: f64| rng.random_bool(ratio.clamp(0.0, 1.0));
        Some(match self.workload {
            Workload::Put | Workload::PutSeq => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed);
                if i >= p.keys {
                    return None;
                }
                Op::Put(if self.workload == Workload::Put {
                    scatter(i, p.keys)
                } else {
                    i
                })
            }
            Workload::Overwrite => Op::Put(self.pick(rng)),
            Workload::Readwhilewriting if self.is_writer(worker) => Op::Put(self.pick(rng)),
            Workload::Get | Workload::YcsbC | Workload::Readwhilewriting => Op::Get(self.pick(rng)),
            Workload::Scan => Op::Scan(self.pick(rng), p.scan_length),
            Workload::Multiget => Op::MultiGet((0..p.batch).map(|_| self.pick(rng)).collect()),
            Workload::Aggregate => Op::Aggregate(self.pick(rng), p.scan_length as u64),
            Workload::Mixed => {
                let k = self.pick(rng);
                if read(rng, p.read_ratio) {
                    Op::Get(k)
                } else {
                    Op::Put(k)
                }
            }
            Workload::YcsbA | Workload::YcsbB => {
                let ratio = if self.workload == Workload::YcsbA {
                    0.5
                } else {
                    0.95
                };
                let k = self.pick(rng);
                if read(rng, ratio) {
                    Op::Get(k)
                } else {
                    Op::Put(k)
                }
            }
            Workload::YcsbD => {
                if read(rng, 0.95) {
                    // "Latest": most reads go to the most recently inserted keys.
                    let live = self.live_keys();
                    let back = match &self.zipf {
                        Some(z) => z.sample(rng) as u64 - 1,
                        None => rng.random_range(0..live),
                    };
                    Op::Get(live - 1 - back.min(live - 1))
                } else {
                    Op::Put(self.cursor.fetch_add(1, Ordering::Relaxed))
                }
            }
            Workload::YcsbE => {
                if read(rng, 0.95) {
                    Op::Scan(self.pick(rng), rng.random_range(1..=p.scan_length.max(1)))
                } else {
                    Op::Put(self.cursor.fetch_add(1, Ordering::Relaxed))
                }
            }
            Workload::YcsbF => {
                let k = self.pick(rng);
                if read(rng, 0.5) {
                    Op::Get(k)
                } else {
                    Op::ReadModifyWrite(k)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scatter_is_a_permutation() {
        for n in [1u64, 2, 7, 1000, 4096] {
            let mut seen: Vec<u64> = (0..n).map(|i| scatter(i, n)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn a_fill_writes_each_key_once_then_ends() {
        let params = Params {
            keys: 100,
            read_ratio: 0.5,
            scan_length: 10,
            batch: 5,
        };
        let s = Shared::new(Workload::Put, params, KeyDistribution::Uniform).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut keys: Vec<u64> = std::iter::from_fn(|| s.next(&mut rng, 0))
            .map(|op| match op {
                Op::Put(k) => k,
                other => panic!("a fill only puts: {other:?}"),
            })
            .collect();
        keys.sort();
        assert_eq!(keys, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn readwhilewriting_has_one_writer_and_readers() {
        let params = Params {
            keys: 1000,
            read_ratio: 0.5,
            scan_length: 10,
            batch: 5,
        };
        let s = Shared::new(Workload::Readwhilewriting, params, KeyDistribution::Uniform).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            assert!(matches!(s.next(&mut rng, 0), Some(Op::Put(k)) if k < 1000));
            assert!(matches!(s.next(&mut rng, 1), Some(Op::Get(k)) if k < 1000));
            assert!(matches!(s.next(&mut rng, 7), Some(Op::Get(_))));
        }
    }

    #[test]
    fn zipfian_keys_stay_in_range_and_are_skewed() {
        let params = Params {
            keys: 1000,
            read_ratio: 1.0,
            scan_length: 10,
            batch: 5,
        };
        let s = Shared::new(Workload::YcsbC, params, KeyDistribution::Zipfian).unwrap();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut counts = vec![0u32; 1000];
        for _ in 0..20_000 {
            match s.next(&mut rng, 0) {
                Some(Op::Get(k)) => counts[k as usize] += 1,
                other => panic!("{other:?}"),
            }
        }
        let hottest = *counts.iter().max().unwrap();
        assert!(
            hottest > 20 * 20,
            "zipfian puts far more than the uniform 20 reads on the hottest key: {hottest}"
        );
    }
}
