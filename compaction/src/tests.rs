//! The compactor conformance suite on the local compactor, the version rule against a
//! brute-force reading of every snapshot, and the picker's choices.

use crate::*;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, MergeOperator, Operators, RangeDeletes, Read, TableMeta};
use cairn_filestore::{SstOptions, SstStorage, Storage};
use std::sync::Arc;

#[tokio::test]
async fn conformance_local() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(SstStorage::open(SstOptions::new(dir.path())).unwrap());
    conformance::run(Arc::new(LocalCompactor::new(storage.clone())), storage).await;
}

/// What a reader at `snap` and time `now` reads of one key's versions (newest first), with
/// the `add` operator: operands fold over the first put, expiring put or tombstone below them.
fn read(versions: &[Entry], snap: u64, now: u64) -> Option<Bytes> {
    let add = Operators::default().merge("add").unwrap();
    let mut operands = Vec::new();
    for e in versions.iter().filter(|e| e.seq <= snap) {
        let base = match e.read(now) {
            Read::Operand => {
                operands.insert(0, e.value.clone());
                continue;
            }
            Read::Value(v) => Some(v),
            Read::Absent => None,
        };
        return finish(&*add, &operands, base);
    }
    finish(&*add, &operands, None)
}

fn finish(add: &dyn MergeOperator, operands: &[Bytes], base: Option<Bytes>) -> Option<Bytes> {
    if operands.is_empty() {
        return base;
    }
    Some(add.full_merge(b"k", base.as_deref(), operands).unwrap())
}

fn n(v: u64) -> Bytes {
    Bytes::copy_from_slice(&(v as i64).to_le_bytes())
}

fn rules(oldest: u64, drop: bool, now: u64) -> Rules {
    Rules {
        oldest_snapshot: oldest,
        drop_tombstones: drop,
        now_ms: now,
        merge: Some(Operators::default().merge("add").unwrap()),
        filter: None,
    }
}

fn filtered(rules: Rules, versions: &[Entry]) -> Vec<Entry> {
    let mut f = VersionFilter::new(rules, RangeDeletes::default());
    let mut out = Vec::new();
    for e in versions {
        f.push(e.clone(), &mut out).unwrap();
    }
    f.finish(&mut out).unwrap();
    out
}

#[test]
fn version_filter_preserves_every_reader_at_or_after_the_oldest_snapshot() {
    // Exhaustive over small histories: 1-4 versions, any mix of puts, tombstones, merge
    // operands and puts that expire before or after the time of the job and of the reads.
    let now = 100;
    for n_versions in 1..=4u32 {
        for mix in 0..5u32.pow(n_versions) {
            let versions: Vec<Entry> = (0..n_versions)
                .map(|i| {
                    let seq = u64::from(n_versions - i) * 10;
                    match mix / 5u32.pow(i) % 5 {
                        0 => Entry::put("k", seq, n(seq)),
                        1 => Entry::delete("k", seq),
                        2 => Entry::merge("k", seq, n(seq)),
                        3 => Entry::expiring("k", seq, &n(seq), 50),
                        _ => Entry::expiring("k", seq, &n(seq), 150),
                    }
                })
                .collect();
            for oldest in [0, 5, 10, 15, 25, 35, 100] {
                for drop in [false, true] {
                    let kept = filtered(rules(oldest, drop, now), &versions);
                    for snap in (oldest..=60).step_by(5) {
                        for at in [now, 200] {
                            assert_eq!(
                                read(&kept, snap, at),
                                read(&versions, snap, at),
                                "history {versions:?} oldest {oldest} drop {drop} snapshot {snap} read at {at}, kept {kept:?}"
                            );
                        }
                    }
                    let older = kept.iter().filter(|e| e.seq <= oldest).count();
                    let expiring_below = versions
                        .iter()
                        .any(|e| e.seq <= oldest && e.kind == EntryKind::Expiring);
                    assert!(
                        older <= 1 || expiring_below,
                        "one version at or below the oldest snapshot survives, or operands and the live expiring put below them: {kept:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_filter_removes_or_changes_the_value_every_reader_sees_and_nothing_newer() {
    let mut r = rules(20, false, 0);
    r.filter = Some(Operators::default().filter("remove-empty-values").unwrap());
    let versions = [
        Entry::put("a", 30, ""),
        Entry::put("a", 20, ""),
        Entry::put("a", 10, "old"),
        Entry::put("b", 15, ""),
        Entry::put("b", 5, "old"),
        Entry::put("c", 12, "v"),
    ];
    assert_eq!(
        filtered(r.clone(), &versions),
        vec![
            Entry::put("a", 30, ""),
            Entry::delete("a", 20),
            Entry::delete("b", 15),
            Entry::put("c", 12, "v"),
        ]
    );
    r.drop_tombstones = true;
    let at_bottom = filtered(r, &versions);
    assert_eq!(
        at_bottom,
        vec![Entry::put("a", 30, ""), Entry::put("c", 12, "v")]
    );
}

#[test]
fn operands_without_an_operator_are_kept_as_they_are() {
    let mut r = rules(100, true, 0);
    r.merge = None;
    let versions = [
        Entry::merge("k", 3, "x"),
        Entry::merge("k", 2, "y"),
        Entry::put("k", 1, "z"),
    ];
    assert_eq!(filtered(r, &versions), versions.to_vec());
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
        subcompactions: 1,
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
