//! The compactor conformance suite on the local compactor, the GC rule against a brute-force
//! reading of every snapshot, and the picker's choices.

use crate::*;
use cairn_common::{Entry, TableMeta};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use std::sync::Arc;

#[tokio::test]
async fn conformance_local() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.path())).unwrap());
    conformance::run(Arc::new(LocalCompactor::new(storage.clone())), storage).await;
}

/// What a reader at `snap` sees of one key's versions (newest first): the first at or below.
fn visible(versions: &[Entry], snap: u64) -> Option<&Entry> {
    versions
        .iter()
        .find(|e| e.seq <= snap)
        .filter(|e| !e.is_delete())
}

#[test]
fn gc_filter_preserves_every_reader_at_or_after_the_oldest_snapshot() {
    // Exhaustive over small histories: 1-5 versions, any mix of puts and deletes.
    for n in 1..=5u64 {
        for mask in 0..(1u32 << n) {
            let versions: Vec<Entry> = (0..n)
                .map(|i| {
                    let seq = (n - i) * 10;
                    if mask & (1 << i) != 0 {
                        Entry::delete("k", seq)
                    } else {
                        Entry::put("k", seq, seq.to_string())
                    }
                })
                .collect();
            for oldest in [0, 5, 10, 15, 25, 35, 100] {
                for drop in [false, true] {
                    let mut f = GcFilter::new(oldest, drop);
                    let kept: Vec<Entry> = versions.iter().filter(|e| f.keep(e)).cloned().collect();
                    for snap in (oldest..=60).step_by(5) {
                        assert_eq!(
                            visible(&kept, snap),
                            visible(&versions, snap),
                            "history {versions:?} oldest {oldest} drop {drop} snapshot {snap}"
                        );
                    }
                    let older_than_oldest = kept.iter().filter(|e| e.seq <= oldest).count();
                    assert!(
                        older_than_oldest <= 1,
                        "at most one version at or below the oldest snapshot survives"
                    );
                }
            }
        }
    }
}

fn meta(id: u64, lo: &str, hi: &str, size: u64) -> TableMeta {
    TableMeta {
        id,
        smallest: lo.as_bytes().to_vec(),
        largest: hi.as_bytes().to_vec(),
        min_seq: 1,
        max_seq: 1,
        entries: 1,
        size,
    }
}

fn picker() -> LeveledPicker {
    LeveledPicker::new(PickerOptions {
        l0_trigger: 4,
        levels: 4,
        base_level_bytes: 1000,
        level_size_ratio: 10,
        target_table_bytes: 100,
    })
}

#[test]
fn picker_waits_for_the_l0_trigger() {
    let p = picker();
    let mut levels = vec![vec![meta(1, "a", "z", 10); 3], vec![], vec![], vec![]];
    assert_eq!(p.pick(&levels), None);
    levels[0].push(meta(4, "a", "c", 10));
    levels[1].push(meta(5, "b", "d", 10));
    levels[1].push(meta(6, "zz", "zzz", 10));
    let pick = p
        .pick(&levels)
        .expect("four L0 tables trigger a compaction");
    assert_eq!((pick.level, pick.output_level), (0, 1));
    assert_eq!(
        pick.inputs.len(),
        5,
        "all of L0 plus the overlapping L1 table"
    );
    assert!(pick.drop_tombstones, "nothing below L1");
    assert!(!pick.trivial_move);
}

#[test]
fn picker_compacts_an_oversized_level_with_the_least_overlap() {
    let p = picker();
    let levels = vec![
        vec![],
        vec![meta(1, "a", "c", 600), meta(2, "d", "f", 600)],
        vec![meta(3, "a", "b", 5000), meta(9, "x", "y", 10)],
        vec![meta(4, "e", "e", 10)],
    ];
    let pick = p.pick(&levels).expect("L1 is over its 1000-byte target");
    assert_eq!((pick.level, pick.output_level), (1, 2));
    assert_eq!(pick.inputs[0].id, 2, "table 2 overlaps nothing in L2");
    assert!(pick.trivial_move);
    assert!(!pick.drop_tombstones, "L3 holds key e");
}

#[test]
fn last_level_is_never_compacted_further() {
    let p = picker();
    let levels = vec![vec![], vec![], vec![], vec![meta(1, "a", "z", 1 << 40)]];
    assert_eq!(p.pick(&levels), None);
}
