//! The leveled picker: L0 is compacted into L1 once it holds `l0_trigger` tables; a deeper
//! level is compacted into the next once its size passes its target (`base_level_bytes`
//! times `level_size_ratio` per level below L1). From an over-full level it takes the table
//! whose overlap with the next level is smallest relative to its size (RocksDB's
//! min-overlapping-ratio), and moves a table down without rewriting it when nothing overlaps.

use cairn_common::TableMeta;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PickerOptions {
    /// L0 table count that starts an L0 -> L1 compaction.
    pub l0_trigger: usize,
    /// Number of levels, L0 included.
    pub levels: usize,
    /// Target size of L1; each deeper level's target is this times the ratio per level.
    pub base_level_bytes: u64,
    pub level_size_ratio: u64,
    /// Compaction outputs are cut at this size.
    pub target_table_bytes: u64,
    /// A compaction of more than `target_table_bytes` of input is cut by key range into
    /// up to this many subcompactions that run at once: on the workers of a compaction pool,
    /// or on the background threads. 1 runs every job whole.
    pub subcompactions: usize,
}

impl Default for PickerOptions {
    fn default() -> Self {
        PickerOptions {
            l0_trigger: 4,
            levels: 7,
            base_level_bytes: 256 << 20,
            level_size_ratio: 10,
            target_table_bytes: 64 << 20,
            subcompactions: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub level: usize,
    pub output_level: usize,
    /// Tables from `level` and the overlapping ones from `output_level`.
    pub inputs: Vec<TableMeta>,
    /// No deeper level overlaps the inputs' key range.
    pub drop_tombstones: bool,
    /// The single input overlaps nothing in the output level: move it, do not rewrite it.
    pub trivial_move: bool,
}

#[derive(Debug, Clone)]
pub struct LeveledPicker {
    pub opts: PickerOptions,
}

impl LeveledPicker {
    pub fn new(opts: PickerOptions) -> Self {
        LeveledPicker { opts }
    }

    pub fn level_target(&self, level: usize) -> u64 {
        let ratio = self.opts.level_size_ratio.max(2);
        let mut t = self.opts.base_level_bytes.max(1);
        for _ in 1..level {
            t = t.saturating_mul(ratio);
        }
        t
    }

    /// How urgently each level wants compaction; >= 1.0 means it should be compacted.
    pub fn scores(&self, levels: &[Vec<TableMeta>]) -> Vec<f64> {
        levels
            .iter()
            .enumerate()
            .map(|(l, tables)| {
                if l + 1 >= self.opts.levels.min(levels.len()) {
                    0.0
                } else if l == 0 {
                    tables.len() as f64 / self.opts.l0_trigger.max(1) as f64
                } else {
                    size(tables) as f64 / self.level_target(l) as f64
                }
            })
            .collect()
    }

    /// The next compaction worth doing, if any. `levels[0]` may overlap; deeper levels are
    /// sorted by key and do not.
    pub fn pick(&self, levels: &[Vec<TableMeta>]) -> Option<Pick> {
        let scores = self.scores(levels);
        let (level, score) = scores
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if score < 1.0 {
            return None;
        }
        Some(self.pick_level(levels, level))
    }

    /// A compaction of `level` into the next, whether or not the level is over its target
    /// (manual compaction uses this to push everything down).
    pub fn pick_level(&self, levels: &[Vec<TableMeta>], level: usize) -> Pick {
        let output_level = level + 1;
        let mut inputs: Vec<TableMeta> = if level == 0 {
            levels[0].clone()
        } else {
            let next = levels.get(output_level).map(Vec::as_slice).unwrap_or(&[]);
            levels[level]
                .iter()
                .min_by(|a, b| {
                    let ra = size(&overlapping(next, a)) as f64 / a.size.max(1) as f64;
                    let rb = size(&overlapping(next, b)) as f64 / b.size.max(1) as f64;
                    ra.total_cmp(&rb)
                })
                .cloned()
                .into_iter()
                .collect()
        };
        let (lo, hi) = key_span(&inputs);
        let next = levels.get(output_level).map(Vec::as_slice).unwrap_or(&[]);
        let overlap: Vec<TableMeta> = next
            .iter()
            .filter(|t| t.overlaps_keys(&lo, &hi))
            .cloned()
            .collect();
        let trivial_move = overlap.is_empty() && inputs.len() == 1;
        inputs.extend(overlap);
        let (lo, hi) = key_span(&inputs);
        let drop_tombstones = levels
            .iter()
            .skip(output_level + 1)
            .all(|tables| tables.iter().all(|t| !t.overlaps_keys(&lo, &hi)));
        Pick {
            level,
            output_level,
            inputs,
            drop_tombstones,
            trivial_move,
        }
    }
}

fn size(tables: &[TableMeta]) -> u64 {
    tables.iter().map(|t| t.size).sum()
}

fn overlapping(tables: &[TableMeta], t: &TableMeta) -> Vec<TableMeta> {
    tables
        .iter()
        .filter(|o| o.overlaps_keys(&t.smallest, &t.largest))
        .cloned()
        .collect()
}

fn key_span(tables: &[TableMeta]) -> (Vec<u8>, Vec<u8>) {
    let lo = tables
        .iter()
        .map(|t| t.smallest.clone())
        .min()
        .unwrap_or_default();
    let hi = tables
        .iter()
        .map(|t| t.largest.clone())
        .max()
        .unwrap_or_default();
    (lo, hi)
}
