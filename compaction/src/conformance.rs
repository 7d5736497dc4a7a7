//! The conformance suite every `Compactor` runs. The caller passes the compactor and the
//! storage it compacts in (the suite writes the inputs there and reads the outputs back).

use crate::{CompactionJob, Compactor};
use cairn_common::{Entry, KeyRange, RangeTombstone, TableMeta};
use cairn_filestore::{Storage, read_range, write_table};
use std::collections::HashSet;
use std::sync::Arc;

pub async fn run(compactor: Arc<dyn Compactor>, storage: Arc<dyn Storage>) {
    merges_and_collects_garbage(&compactor, &storage).await;
    keeps_what_snapshots_see(&compactor, &storage).await;
    cuts_outputs_between_keys(&compactor, &storage).await;
    missing_input_is_an_error(&compactor, &storage).await;
    applies_range_tombstones(&compactor, &storage).await;
    never_cuts_inside_a_range_tombstone(&compactor, &storage).await;
    runs_operators_by_name(&compactor, &storage).await;
    an_unknown_operator_fails_the_job(&compactor, &storage).await;
    reads_inputs_shared_from_another_store(&compactor, &storage).await;
    subcompactions_keep_to_their_ranges(&compactor, &storage).await;
}

/// A job cut into key ranges: each part writes only its keys and its piece of each range
/// tombstone, with its own ids, and the parts' outputs together are the whole job's.
async fn subcompactions_keep_to_their_ranges(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let newer = write_table(
        s.as_ref(),
        95_000,
        &[
            Entry::put("a", 20, "a20"),
            RangeTombstone::new("c", "p", 19).to_entry(),
            Entry::put("k", 18, "k18"),
            Entry::put("x", 17, "x17"),
        ],
    )
    .await
    .expect("input");
    let older = write_table(
        s.as_ref(),
        95_001,
        &[
            Entry::put("b", 5, "b5"),
            Entry::put("d", 6, "d6"),
            Entry::put("m", 7, "m7"),
            Entry::put("q", 8, "q8"),
        ],
    )
    .await
    .expect("input");
    let whole = job(vec![newer.clone(), older.clone()], 96_000, 10, false);
    let want_entries = read_all(s, &c.compact(whole.clone()).await.expect("whole")).await;

    let mut parts = Vec::new();
    for (i, (lower, upper)) in [(None, Some("g")), (Some("g"), Some("n")), (Some("n"), None)]
        .into_iter()
        .enumerate()
    {
        let mut part = job(
            vec![newer.clone(), older.clone()],
            97_000 + 100 * i as u64,
            10,
            false,
        );
        part.lower = lower.map(bytes::Bytes::from);
        part.upper = upper.map(bytes::Bytes::from);
        let out = c.compact(part.clone()).await.expect("part");
        for t in &out {
            assert!(part.output_ids.contains(&t.id), "its own ids");
            // A tombstone's end is excluded: a table may name the range's end as its largest.
            let inside = part.lower.as_ref().is_none_or(|l| t.smallest[..] >= l[..])
                && part.upper.as_ref().is_none_or(|u| t.largest[..] <= u[..]);
            assert!(inside, "part {i} wrote {t:?} outside its range");
        }
        parts.push(out);
    }
    let mut got = Vec::new();
    let mut tombstones = Vec::new();
    for out in &parts {
        got.extend(read_all(s, out).await);
        tombstones.extend(tombstones_of(s, out).await);
    }
    assert_eq!(got, want_entries, "the parts' entries are the whole job's");
    assert_eq!(
        tombstones,
        vec![
            RangeTombstone::new("c", "g", 19),
            RangeTombstone::new("g", "n", 19),
            RangeTombstone::new("n", "p", 19),
        ],
        "the tombstone is cut at the ranges' bounds"
    );
}

/// A clone's job names inputs that live in its parent's store: the compactor reads them
/// there (reached by the reference the job gives), writes its outputs to its own store, and
/// leaves the parent's table where it was; a clip on the shared tables leaves the keys
/// outside it behind.
async fn reads_inputs_shared_from_another_store(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let reference = format!("{}-parent", s.reference().expect("a store names itself"));
    let parent = s.open_reference(&reference).expect("the parent's store");
    let theirs = write_table(
        parent.as_ref(),
        93_000,
        &[Entry::put("p", 5, "parent"), Entry::put("q", 6, "old")],
    )
    .await
    .expect("the parent's table");
    let ours = write_table(s.as_ref(), 93_001, &[Entry::put("q", 20, "clone")])
        .await
        .expect("the clone's table");
    let mut j = job(vec![ours.clone(), theirs.clone()], 94_000, u64::MAX, true);
    j.shared = vec![cairn_filestore::TablesAt {
        reference: reference.clone(),
        ids: vec![theirs.id],
        within: Default::default(),
    }];
    let out = c.compact(j).await.expect("compact");
    assert_eq!(
        read_all(s, &out).await,
        vec![Entry::put("p", 5, "parent"), Entry::put("q", 20, "clone")]
    );

    // The child of a split sees its parent's tables only within its range: the compaction
    // writes out none of the keys beyond it.
    let mut j = job(vec![ours, theirs.clone()], 94_100, u64::MAX, true);
    j.shared = vec![cairn_filestore::TablesAt {
        reference,
        ids: vec![theirs.id],
        within: cairn_filestore::Within {
            lower: Some(b"q".to_vec()),
            upper: None,
        },
    }];
    let out = c.compact(j).await.expect("compact");
    assert_eq!(
        read_all(s, &out).await,
        vec![Entry::put("q", 20, "clone")],
        "the parent's key before the clip is left behind"
    );
    assert!(
        parent
            .list_tables()
            .await
            .expect("list")
            .contains(&theirs.id),
        "the parent's table stays"
    );
    parent.delete_table(theirs.id).await.expect("clean up");
}

fn n(v: i64) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&v.to_le_bytes())
}

/// Merge operands fold with the operator the job names, expired puts become tombstones by
/// the job's clock, and the job's filter runs: all on the compactor's side.
async fn runs_operators_by_name(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let newer = write_table(
        s.as_ref(),
        90_000,
        &[
            Entry::merge("count", 30, n(5)),
            Entry::put("empty", 31, ""),
            Entry::expiring("gone", 32, b"v", 1_000),
            Entry::expiring("kept", 33, b"v", 5_000),
            Entry::merge("orphan", 34, n(2)),
        ],
    )
    .await
    .expect("input");
    let older = write_table(
        s.as_ref(),
        90_001,
        &[
            Entry::merge("count", 20, n(3)),
            Entry::put("count", 10, n(100)),
            Entry::put("gone", 11, "old"),
            Entry::merge("orphan", 12, n(1)),
        ],
    )
    .await
    .expect("input");
    let mut j = job(vec![newer, older], 91_000, u64::MAX, false);
    j.merge_operator = Some("add".into());
    j.compaction_filter = Some("remove-empty-values".into());
    j.now_ms = 2_000;
    let got = read_all(s, &c.compact(j).await.expect("compact")).await;
    assert_eq!(
        got,
        vec![
            Entry::put("count", 30, n(108)),
            Entry::delete("empty", 31),
            Entry::delete("gone", 32),
            Entry::expiring("kept", 33, b"v", 5_000),
            Entry::merge("orphan", 34, n(3)),
        ],
        "operands fold over their base or into one, the expired put and the filtered \
         value become tombstones"
    );
}

async fn an_unknown_operator_fails_the_job(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let input = write_table(s.as_ref(), 90_002, &[Entry::merge("k", 1, n(1))])
        .await
        .expect("input");
    let before: HashSet<u64> = s.list_tables().await.expect("list").into_iter().collect();
    let mut j = job(vec![input], 92_000, u64::MAX, true);
    j.merge_operator = Some("no-such-operator".into());
    let e = c
        .compact(j)
        .await
        .expect_err("an unknown operator fails the job");
    assert!(e.to_string().contains("no-such-operator"), "{e}");
    let after: HashSet<u64> = s.list_tables().await.expect("list").into_iter().collect();
    assert_eq!(before, after, "a refused job writes nothing");
}

/// Every output's range tombstones, in key order.
async fn tombstones_of(storage: &Arc<dyn Storage>, outputs: &[TableMeta]) -> Vec<RangeTombstone> {
    let mut all = Vec::new();
    for m in outputs {
        let t = storage.open_table(m).await.expect("open output");
        all.extend(t.range_deletes().iter().cloned());
    }
    all
}

async fn read_all(storage: &Arc<dyn Storage>, outputs: &[TableMeta]) -> Vec<Entry> {
    let mut all = Vec::new();
    for m in outputs {
        let t = storage.open_table(m).await.expect("open output");
        all.extend(
            read_range(t.as_ref(), &KeyRange::all())
                .await
                .expect("scan"),
        );
    }
    all
}

fn job(
    inputs: Vec<TableMeta>,
    first_id: u64,
    oldest_snapshot: u64,
    drop_tombstones: bool,
) -> CompactionJob {
    CompactionJob {
        inputs,
        output_level: 1,
        output_ids: (first_id..first_id + 100).collect(),
        oldest_snapshot,
        drop_tombstones,
        target_table_bytes: 64 << 20,
        ..CompactionJob::default()
    }
}

async fn merges_and_collects_garbage(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let newer = write_table(
        s.as_ref(),
        1,
        &[
            Entry::put("a", 10, "a10"),
            Entry::delete("b", 11),
            Entry::put("d", 12, "d12"),
        ],
    )
    .await
    .expect("input");
    let older = write_table(
        s.as_ref(),
        2,
        &[
            Entry::put("a", 1, "a1"),
            Entry::put("b", 2, "b2"),
            Entry::put("c", 3, "c3"),
        ],
    )
    .await
    .expect("input");

    let out = c
        .compact(job(
            vec![newer.clone(), older.clone()],
            100,
            u64::MAX,
            false,
        ))
        .await
        .expect("compact");
    let got = read_all(s, &out).await;
    let keys: Vec<(&[u8], u64)> = got.iter().map(|e| (&e.key[..], e.seq)).collect();
    assert_eq!(
        keys,
        vec![(&b"a"[..], 10), (b"b", 11), (b"c", 3), (b"d", 12)],
        "shadowed versions go, a tombstone stays when not at the bottom"
    );
    assert!(
        out.iter().all(|m| (100..200).contains(&m.id)),
        "outputs use the job's ids"
    );

    let out = c
        .compact(job(vec![newer, older], 200, u64::MAX, true))
        .await
        .expect("compact");
    let got = read_all(s, &out).await;
    let keys: Vec<&[u8]> = got.iter().map(|e| &e.key[..]).collect();
    assert_eq!(
        keys,
        vec![&b"a"[..], b"c", b"d"],
        "at the bottom the tombstone and what it hid go"
    );
    assert!(
        s.list_tables().await.expect("list").contains(&1),
        "inputs are never deleted by the compactor"
    );
}

async fn keeps_what_snapshots_see(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let t = write_table(
        s.as_ref(),
        3,
        &[
            Entry::delete("k", 30),
            Entry::put("k", 20, "v20"),
            Entry::put("k", 15, "v15"),
            Entry::put("k", 10, "v10"),
        ],
    )
    .await
    .expect("input");
    // A snapshot at 17 sees v15; everything newer than 17 may be seen by someone too.
    let out = c
        .compact(job(vec![t], 300, 17, true))
        .await
        .expect("compact");
    let got = read_all(s, &out).await;
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![30, 20, 15]);
}

async fn cuts_outputs_between_keys(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let mut entries = Vec::new();
    for i in 0..2000u32 {
        for seq in [3u64, 2, 1] {
            entries.push(Entry::put(format!("key{i:05}"), seq, vec![b'x'; 100]));
        }
    }
    let t = write_table(s.as_ref(), 4, &entries).await.expect("input");
    let mut j = job(vec![t], 400, 2, false);
    j.target_table_bytes = 32 << 10;
    let out = c.compact(j).await.expect("compact");
    assert!(
        out.len() > 3,
        "outputs are cut at the target size, got {}",
        out.len()
    );
    for w in out.windows(2) {
        assert!(
            w[0].largest < w[1].smallest,
            "a key never spans two outputs, and outputs are in key order"
        );
    }
    let got = read_all(s, &out).await;
    assert_eq!(
        got.len(),
        4000,
        "versions 3 and 2 of every key survive a snapshot at 2"
    );
    let ids: HashSet<u64> = out.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), out.len());

    // Fewer ids than the target size would need (a budget made from compressed sizes, say):
    // the last output takes the rest rather than failing the job, which would fail on
    // every retry. (A remote compactor may keep some of the ids for another attempt.)
    let mut j = job(vec![t_again(s, &entries).await], 450, 2, false);
    j.target_table_bytes = 32 << 10;
    j.output_ids.truncate(2);
    let out = c.compact(j).await.expect("compact with two ids");
    assert!((1..=2).contains(&out.len()), "{} outputs", out.len());
    assert!(out.iter().all(|t| (450..452).contains(&t.id)));
    assert_eq!(read_all(s, &out).await.len(), 4000);
}

/// The same entries again, as table 5.
async fn t_again(s: &Arc<dyn Storage>, entries: &[Entry]) -> TableMeta {
    write_table(s.as_ref(), 5, entries).await.expect("input")
}

async fn missing_input_is_an_error(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let before: HashSet<u64> = s.list_tables().await.expect("list").into_iter().collect();
    let ghost = TableMeta {
        id: 999_999,
        smallest: b"a".to_vec(),
        largest: b"z".to_vec(),
        min_seq: 1,
        max_seq: 1,
        entries: 1,
        size: 100,
    };
    assert!(
        c.compact(job(vec![ghost], 500, u64::MAX, false))
            .await
            .is_err()
    );
    let after: HashSet<u64> = s.list_tables().await.expect("list").into_iter().collect();
    assert_eq!(before, after, "a failed job leaves no outputs behind");
}

/// A tombstone every reader sees drops the versions it covers and, at the bottom, goes
/// itself; one that a snapshot predates keeps them; versions newer than it stay.
async fn applies_range_tombstones(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let tombstone = RangeTombstone::new("a", "m", 15);
    let newer = [
        tombstone.to_entry(),
        Entry::put("b", 20, "b20"),
        Entry::put("z", 21, "z21"),
    ];
    let older = [
        Entry::put("a", 1, "a1"),
        Entry::put("c", 2, "c2"),
        Entry::put("d", 3, "d3"),
        Entry::put("m", 4, "m4"),
    ];
    let cases = [
        // (oldest snapshot, drop tombstones, versions left, tombstone left)
        (u64::MAX, false, vec![("b", 20), ("m", 4), ("z", 21)], true),
        (u64::MAX, true, vec![("b", 20), ("m", 4), ("z", 21)], false),
        (
            10,
            true,
            vec![("a", 1), ("b", 20), ("c", 2), ("d", 3), ("m", 4), ("z", 21)],
            true,
        ),
    ];
    for (i, (oldest, drop, want, kept)) in cases.into_iter().enumerate() {
        let base = 600 + 10 * i as u64;
        let n = write_table(s.as_ref(), base, &newer).await.expect("input");
        let o = write_table(s.as_ref(), base + 1, &older)
            .await
            .expect("input");
        let out = c
            .compact(job(vec![n, o], base * 100, oldest, drop))
            .await
            .expect("compact");
        let got: Vec<(String, u64)> = read_all(s, &out)
            .await
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.key).into_owned(), e.seq))
            .collect();
        let want: Vec<(String, u64)> = want.iter().map(|(k, q)| (k.to_string(), *q)).collect();
        assert_eq!(got, want, "oldest snapshot {oldest}, drop {drop}");
        let left = tombstones_of(s, &out).await;
        assert_eq!(
            left,
            if kept {
                vec![tombstone.clone()]
            } else {
                vec![]
            }
        );
        if kept {
            assert!(
                out.iter().any(
                    |m| m.smallest.as_slice() <= &b"a"[..] && m.largest.as_slice() >= &b"m"[..]
                )
            );
        }
    }
}

/// Outputs are cut at the target size, but never inside a tombstone they hold: the tables of
/// a level must not overlap, and each one's key range reaches its tombstones' ends.
async fn never_cuts_inside_a_range_tombstone(c: &Arc<dyn Compactor>, s: &Arc<dyn Storage>) {
    let tombstone = RangeTombstone::new("key00100", "key00600", 500);
    let mut entries = vec![tombstone.to_entry()];
    for i in 0..3000u32 {
        entries.push(Entry::put(
            format!("key{i:05}"),
            1000 + u64::from(i),
            vec![b'x'; 100],
        ));
    }
    entries.sort_by(|a, b| a.cmp_internal(b));
    let t = write_table(s.as_ref(), 700, &entries).await.expect("input");
    let mut j = job(vec![t], 70_000, u64::MAX, false);
    j.target_table_bytes = 8 << 10;
    let out = c.compact(j).await.expect("compact");
    assert!(out.len() > 3, "outputs are cut, got {}", out.len());
    for w in out.windows(2) {
        assert!(
            w[0].largest < w[1].smallest,
            "outputs do not overlap: {out:?}"
        );
    }
    let holder: Vec<&TableMeta> = out
        .iter()
        .filter(|m| {
            m.smallest.as_slice() <= &b"key00100"[..] && m.largest.as_slice() >= &b"key00600"[..]
        })
        .collect();
    assert_eq!(holder.len(), 1, "one output spans the tombstone: {out:?}");
    assert_eq!(tombstones_of(s, &out).await, vec![tombstone]);
    assert_eq!(
        read_all(s, &out).await.len(),
        3000,
        "every version is newer than it"
    );
}
