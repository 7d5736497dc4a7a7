//! The conformance suite every `Storage` runs (SSTable, and later Parquet, hybrid and remote):
//! write, reopen, versioned point lookups, bounded scans, multi-block tables, listing,
//! deletion, refusal of out-of-order input, aggregates at snapshots, range tombstones
//! (kept aside, through reopens and copies), merge operands and expiring puts.

use crate::{Storage, VisibleFold, copy_table, read_range, write_table, write_table_from};
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, KeyRange, RangeTombstone, ValueType, interleave};
use std::ops::Bound;
use std::sync::Arc;

/// Runs every check on `storage`, which must start empty. Uses table ids from `first_id` on.
pub async fn run(storage: Arc<dyn Storage>, first_id: u64) {
    versions_and_lookups(&storage, first_id).await;
    scans_across_many_blocks(&storage, first_id + 1).await;
    big_values(&storage, first_id + 2).await;
    out_of_order_is_refused(&storage, first_id + 3).await;
    list_and_delete(&storage, first_id).await;
    aggregates(&storage, first_id + 4).await;
    aggregates_over_one_version_per_key(&storage, first_id + 5).await;
    range_tombstones(&storage, first_id + 6).await;
    merge_operands_and_expiring_puts(&storage, first_id + 7).await;
    reached_by_reference(&storage, first_id + 8).await;
    every_level_reads_back_the_same(&storage, first_id + 9).await;
    digests(&storage, first_id + 10, false).await;
}

/// A digest, where a store gives one, is that of the rows it was handed, range tombstones
/// among them: the hybrid store compares two copies by it. Whether a store keeps one at all
/// is its own; with `exactly`, it must when asked and must not otherwise (the SSTable and
/// Parquet stores: a digest costs a crc per row).
pub async fn digests(storage: &Arc<dyn Storage>, id: u64, exactly: bool) {
    let tombstone = RangeTombstone::new(Bytes::from("key000003"), Bytes::from("key000009"), 70);
    let all: Vec<Entry> = interleave(sample(40), &[tombstone]).collect();
    let mut want = crate::ContentDigest::default();
    all.iter()
        .for_each(|e| want.add(&e.key, e.seq, e.kind.as_u8(), &e.value));
    for (n, asked) in [(id, true), (id + 300, false)] {
        let mut b = storage.create_table(n, 0).await.expect("create");
        if asked {
            b.keep_digest();
        }
        for chunk in all.chunks(7) {
            b.add(chunk).await.expect("add");
        }
        let (meta, digest) = b.finish_with_digest().await.expect("finish");
        assert_eq!(meta.entries, all.len() as u64);
        if exactly {
            assert_eq!(digest.is_some(), asked, "a digest only when asked");
        }
        if let Some(d) = digest {
            assert_eq!(
                d, want,
                "the digest of the rows handed over (asked: {asked})"
            );
        }
        storage.delete_table(n).await.expect("delete");
    }
}

/// A table written for any level of the tree (which may choose its encoding) reads back
/// what went in. Each level has its own id: ids are never reused, and a block cache may
/// still hold a deleted table's blocks.
async fn every_level_reads_back_the_same(storage: &Arc<dyn Storage>, id: u64) {
    let entries: Vec<Entry> = (0..3000u32)
        .map(|i| {
            Entry::put(
                format!("level-key{i:06}"),
                5,
                format!("value {} ", i % 7).repeat(9),
            )
        })
        .collect();
    for level in [0, 1, 2, 6, 40] {
        let id = id + 1000 * (u64::from(level) + 1);
        let meta = write_table_from(storage.as_ref(), id, level, entries.iter().cloned())
            .await
            .expect("write");
        let t = storage.open_table(&meta).await.expect("open");
        assert!(
            read_range(t.as_ref(), &KeyRange::all())
                .await
                .expect("scan")
                == entries,
            "a table of level {level} reads back what went in"
        );
        let got = t.get(b"level-key002999", 5).await.expect("get");
        assert!(got.as_ref() == entries.last(), "level {level}");
        drop(t);
        storage.delete_table(id).await.expect("delete");
    }
}

/// A store reached by its own reference reads the tables written through it, and one reached
/// by a reference nobody used yet holds nothing: how a clone reads its parent's tables.
async fn reached_by_reference(storage: &Arc<dyn Storage>, id: u64) {
    let reference = storage.reference().expect("every store names itself");
    let entries = vec![Entry::put("r", 3, "by reference"), Entry::delete("s", 2)];
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write");
    let same = storage
        .open_reference(&reference)
        .expect("open by reference");
    let t = same.open_table(&meta).await.expect("open through it");
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all())
            .await
            .expect("scan"),
        entries
    );
    let fresh = storage
        .open_reference(&format!("{reference}-unused"))
        .expect("a store not made yet");
    assert!(fresh.list_tables().await.expect("list").is_empty());
    assert!(fresh.manifests().list().await.expect("list").is_empty());
    storage.delete_table(id).await.expect("clean up");
}

/// Merge operands (kind 3) and expiring puts (kind 4) are versions like any other to a store:
/// kept with their kind and value through writes, reopens and copies, met by gets and scans;
/// an aggregate that meets one deciding a key says so, for the engine to fold a merged scan.
async fn merge_operands_and_expiring_puts(storage: &Arc<dyn Storage>, id: u64) {
    let entries = vec![
        Entry::merge("m", 30, "+3"),
        Entry::merge("m", 20, "+2"),
        Entry::put("m", 10, "base"),
        Entry::expiring("t", 40, b"soon", 1_234),
        Entry::put("t", 5, "older"),
        Entry::put("u", 7, 1i64.to_le_bytes().to_vec()),
    ];
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write");
    let t = storage.open_table(&meta).await.expect("open");
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all())
            .await
            .expect("scan"),
        entries,
        "kinds and values as written"
    );
    let got = t.get(b"m", 25).await.expect("get").expect("an operand");
    assert_eq!(
        (got.kind, got.seq, &got.value[..]),
        (EntryKind::Merge, 20, &b"+2"[..])
    );
    let got = t.get(b"t", u64::MAX).await.expect("get").expect("the put");
    assert_eq!(got, entries[3]);
    let copy = copy_table(storage.as_ref(), id + 100, 0, t.as_ref())
        .await
        .expect("copy");
    let c = storage.open_table(&copy).await.expect("open copy");
    assert_eq!(
        read_range(c.as_ref(), &KeyRange::all())
            .await
            .expect("scan"),
        entries
    );
    let agg = t
        .aggregate(&KeyRange::all(), u64::MAX, ValueType::I64, &[])
        .await
        .expect("aggregate");
    assert_eq!(
        (agg.unresolved, agg.rows),
        (2, 1),
        "m and t are the engine's to fold"
    );
    for id in [id, id + 100] {
        storage.delete_table(id).await.expect("delete");
    }
}

fn sample(n: u32) -> Vec<Entry> {
    let mut v = Vec::new();
    for i in 0..n {
        let key = Bytes::from(format!("key{i:06}"));
        // Three versions per key, newest first; every fifth key's newest is a tombstone.
        if i % 5 == 0 {
            v.push(Entry::delete(key.clone(), 300 + u64::from(i)));
        } else {
            v.push(Entry::put(
                key.clone(),
                300 + u64::from(i),
                format!("new{i}"),
            ));
        }
        v.push(Entry::put(
            key.clone(),
            200 + u64::from(i),
            format!("mid{i}"),
        ));
        v.push(Entry::put(key, 100, format!("old{i}")));
    }
    v
}

async fn versions_and_lookups(storage: &Arc<dyn Storage>, id: u64) {
    let entries = sample(50);
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write table");
    assert_eq!(meta.id, id);
    assert_eq!(meta.entries, 150);
    assert_eq!(meta.smallest, b"key000000".to_vec());
    assert_eq!(meta.largest, b"key000049".to_vec());
    assert_eq!((meta.min_seq, meta.max_seq), (100, 349));
    assert!(meta.size > 0);
    let t = storage.open_table(&meta).await.expect("open table");
    assert_eq!(t.meta(), &meta);

    let newest = t
        .get(b"key000007", u64::MAX)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(newest.value, Bytes::from("new7"));
    let mid = t
        .get(b"key000007", 250)
        .await
        .expect("get")
        .expect("present");
    assert_eq!((mid.seq, mid.value.clone()), (207, Bytes::from("mid7")));
    let old = t
        .get(b"key000007", 150)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(old.value, Bytes::from("old7"));
    assert_eq!(
        t.get(b"key000007", 99).await.expect("get"),
        None,
        "older than every version"
    );
    let tomb = t
        .get(b"key000010", u64::MAX)
        .await
        .expect("get")
        .expect("tombstone");
    assert_eq!(tomb.kind, EntryKind::Delete);
    assert_eq!(
        t.get(b"key000100", u64::MAX).await.expect("get"),
        None,
        "absent key"
    );
    assert_eq!(
        t.get(b"a", u64::MAX).await.expect("get"),
        None,
        "before the table"
    );
    assert_eq!(
        t.get(b"zzz", u64::MAX).await.expect("get"),
        None,
        "after the table"
    );
}

async fn scans_across_many_blocks(storage: &Arc<dyn Storage>, id: u64) {
    let entries = sample(3000);
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write table");
    let t = storage.open_table(&meta).await.expect("open table");
    let all = read_range(t.as_ref(), &KeyRange::all())
        .await
        .expect("scan");
    assert_eq!(all, entries, "full scan returns every version in order");

    let r = KeyRange::new(
        Some(Bytes::from("key001000")),
        Some(Bytes::from("key001100")),
    );
    let part: Vec<Entry> = read_range(t.as_ref(), &r).await.expect("scan");
    assert_eq!(part.len(), 300);
    assert_eq!(&part[0].key[..], b"key001000");
    assert_eq!(&part[299].key[..], b"key001099");

    let r = KeyRange {
        start: Bound::Excluded(Bytes::from("key002998")),
        end: Bound::Unbounded,
    };
    let tail: Vec<Entry> = read_range(t.as_ref(), &r).await.expect("scan");
    assert_eq!(tail.len(), 3);
    let empty = KeyRange::new(Some(Bytes::from("x")), None);
    let none: Vec<Entry> = read_range(t.as_ref(), &empty).await.expect("scan");
    assert!(none.is_empty());

    // A table that also reads without waiting gives the same entries that way.
    let ranges = [KeyRange::all(), r, empty];
    for range in ranges.iter().chain([&KeyRange::new(
        Some(Bytes::from("key001000")),
        Some(Bytes::from("key001100")),
    )]) {
        if let Some(ready) = t.scan_ready(range) {
            let ready: Vec<Entry> = ready
                .expect("scan_ready")
                .collect::<cairn_common::Result<_>>()
                .expect("scan_ready entries");
            let streamed = read_range(t.as_ref(), range).await.expect("scan");
            assert_eq!(ready, streamed, "scan_ready and scan agree on {range:?}");
        }
    }

    for i in (0..3000u32).step_by(97) {
        let key = format!("key{i:06}");
        let e = t
            .get(key.as_bytes(), 250 + u64::from(i))
            .await
            .expect("get")
            .expect("present");
        assert_eq!(e.value, Bytes::from(format!("mid{i}")), "{key}");
    }
}

/// Big values, and keys and values at the edges: the empty key, bytes 0x00 and 0xFF, a key at
/// the documented limit (longer than any block), a value of 1 MiB.
async fn big_values(storage: &Arc<dyn Storage>, id: u64) {
    let mut entries = vec![
        Entry::put(Bytes::new(), 1, "the empty key"),
        Entry::put(vec![0u8], 1, Bytes::new()),
    ];
    entries.extend((0..8u8).map(|i| Entry::put(vec![b'b', i], 1, vec![i; 100_000])));
    entries.push(Entry::put(
        vec![b'k'; cairn_common::limits::MAX_KEY_BYTES],
        1,
        "a key at the limit",
    ));
    entries.push(Entry::put(vec![0xFFu8; 3], 1, vec![0xFFu8; 1 << 20]));
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write table");
    let t = storage.open_table(&meta).await.expect("open table");
    for e in &entries {
        let got = t.get(&e.key, 1).await.expect("get");
        assert!(got.as_ref() == Some(e), "key of {} bytes", e.key.len());
    }
    let all = read_range(t.as_ref(), &KeyRange::all())
        .await
        .expect("scan");
    assert!(all == entries, "a scan returns the edge entries in order");
}

async fn out_of_order_is_refused(storage: &Arc<dyn Storage>, id: u64) {
    let mut b = storage.create_table(id, 0).await.expect("create");
    b.add(&[Entry::put("b", 1, "x")]).await.expect("first add");
    let err = b.add(&[Entry::put("a", 1, "x")]).await;
    assert!(err.is_err(), "a key before the previous one is refused");
    b.abandon().await.expect("abandon");
    let b = storage.create_table(id, 0).await.expect("create");
    assert!(b.finish().await.is_err(), "an empty table is refused");
    let ids = storage.list_tables().await.expect("list");
    assert!(!ids.contains(&id), "refused tables are not listed");
}

async fn list_and_delete(storage: &Arc<dyn Storage>, first: u64) {
    let mut ids = storage.list_tables().await.expect("list");
    ids.sort();
    assert_eq!(ids, vec![first, first + 1, first + 2]);
    storage.delete_table(first + 1).await.expect("delete");
    storage
        .delete_table(first + 1)
        .await
        .expect("deleting twice is fine");
    let mut ids = storage.list_tables().await.expect("list");
    ids.sort();
    assert_eq!(ids, vec![first, first + 2]);
}

/// `Table::aggregate` must agree with folding the table's scan, for every snapshot, range and
/// shadowed set, whichever way a storage computes it; and with a hand count in one case.
async fn aggregates(storage: &Arc<dyn Storage>, id: u64) {
    let n = |v: i64| Bytes::copy_from_slice(&v.to_le_bytes());
    let mut entries = Vec::new();
    for i in 0..5000i64 {
        let key = Bytes::from(format!("agg{i:06}"));
        if i % 7 == 0 {
            entries.push(Entry::delete(key.clone(), 2000 + i as u64));
        } else if i % 3 == 0 {
            entries.push(Entry::put(key.clone(), 2000 + i as u64, n(i * 10)));
        }
        if i % 11 == 0 {
            entries.push(Entry::put(key.clone(), 100, "not a number"));
        } else {
            entries.push(Entry::put(key, 100, n(i)));
        }
    }
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write table");
    let t = storage.open_table(&meta).await.expect("open table");
    let shadow: Vec<Bytes> = (0..5000)
        .step_by(13)
        .map(|i| Bytes::from(format!("agg{i:06}")))
        .collect();
    let ranges = [
        KeyRange::all(),
        KeyRange::new(
            Some(Bytes::from("agg001000")),
            Some(Bytes::from("agg003500")),
        ),
        KeyRange::new(Some(Bytes::from("agg004990")), None),
        KeyRange::new(Some(Bytes::from("b")), None),
    ];
    agrees_with_folding_the_scan(t.as_ref(), &ranges, &[50, 100, 3000, u64::MAX], &shadow).await;
    // At 100 only the old versions exist: keys 0..5000, of which multiples of 11 are text.
    let s = t
        .aggregate(&KeyRange::all(), 100, ValueType::I64, &[])
        .await
        .expect("aggregate");
    let numbers: Vec<i64> = (0..5000).filter(|i| i % 11 != 0).collect();
    assert_eq!((s.rows, s.numeric), (5000, numbers.len() as u64));
    assert_eq!(
        s.sum_i,
        numbers.iter().map(|&v| i128::from(v)).sum::<i128>()
    );
    storage.delete_table(id).await.expect("delete");
}

/// `Table::aggregate` equals folding `Table::scan` for every range, snapshot, and with and
/// without the shadowed keys.
async fn agrees_with_folding_the_scan(
    t: &dyn crate::Table,
    ranges: &[KeyRange],
    snapshots: &[u64],
    shadow: &[Bytes],
) {
    for range in ranges {
        for &snapshot in snapshots {
            for shadowed in [&[][..], shadow] {
                let got = t
                    .aggregate(range, snapshot, ValueType::I64, shadowed)
                    .await
                    .expect("aggregate");
                let scan = t.scan(range).await.expect("scan");
                let want = VisibleFold::new(snapshot, ValueType::I64, shadowed)
                    .fold_stream(scan)
                    .await
                    .expect("fold");
                assert_eq!(
                    got,
                    want,
                    "{range:?} at {snapshot}, {} shadowed",
                    shadowed.len()
                );
            }
        }
    }
}

/// A compaction's output: one version per key, few tombstones or none. Storages may answer
/// from fewer columns here (Parquet reads only values where statistics allow); the answer
/// must not change.
async fn aggregates_over_one_version_per_key(storage: &Arc<dyn Storage>, id: u64) {
    let n = |v: i64| Bytes::copy_from_slice(&v.to_le_bytes());
    // Tombstones only near the end, so most of the table has none.
    let entries: Vec<Entry> = (0..6000i64)
        .map(|i| {
            let key = Bytes::from(format!("one{i:06}"));
            if i >= 5900 && i % 2 == 0 {
                Entry::delete(key, 10 + i as u64)
            } else {
                Entry::put(key, 10 + i as u64, n(i))
            }
        })
        .collect();
    let meta = write_table(storage.as_ref(), id, &entries)
        .await
        .expect("write table");
    let t = storage.open_table(&meta).await.expect("open table");
    let shadow = [Bytes::from("one000500"), Bytes::from("one004321")];
    let ranges = [
        KeyRange::all(),
        KeyRange::new(
            Some(Bytes::from("one001000")),
            Some(Bytes::from("one005950")),
        ),
        KeyRange::new(None, Some(Bytes::from("one000999"))),
    ];
    agrees_with_folding_the_scan(t.as_ref(), &ranges, &[9, 2000, 5000, u64::MAX], &shadow).await;
    let s = t
        .aggregate(&KeyRange::all(), u64::MAX, ValueType::I64, &[])
        .await
        .expect("aggregate");
    assert_eq!(s.rows, 5950);
    storage.delete_table(id).await.expect("delete");
}

/// Range tombstones come in among the entries at their start keys. A table keeps them aside:
/// `range_deletes` gives them back after a reopen and a copy, reads return the versions alone
/// (applying tombstones is the reader's business), the key bounds reach their ends, and a
/// table of tombstones alone is a table.
async fn range_tombstones(storage: &Arc<dyn Storage>, id: u64) {
    let b = |s: &str| Bytes::from(s.to_string());
    let mut tombstones = vec![
        RangeTombstone::new(b("key000010"), b("key000020"), 250),
        RangeTombstone::new(b("key000040"), b("key000099"), 50),
        RangeTombstone::new(b("key000005"), b("key000006"), 400),
    ];
    tombstones.sort_by(|x, y| (&x.start, x.seq).cmp(&(&y.start, y.seq)));
    let entries = sample(50);
    let all: Vec<Entry> = interleave(entries.clone(), &tombstones).collect();
    let meta = write_table(storage.as_ref(), id, &all)
        .await
        .expect("write");
    assert_eq!(meta.entries, 153);
    assert_eq!(
        meta.largest,
        b"key000099".to_vec(),
        "the bounds reach the last end"
    );
    assert_eq!((meta.min_seq, meta.max_seq), (50, 400));
    let sorted = |t: &[RangeTombstone]| {
        let mut t = t.to_vec();
        t.sort_by(|x, y| (&x.start, x.seq).cmp(&(&y.start, y.seq)));
        t
    };
    let t = storage.open_table(&meta).await.expect("open");
    assert_eq!(sorted(t.range_deletes()), tombstones);
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all())
            .await
            .expect("scan"),
        entries
    );
    let got = t.get(b"key000005", u64::MAX).await.expect("get");
    assert_eq!(
        got.map(|e| e.kind),
        Some(EntryKind::Delete),
        "the version, not the tombstone"
    );
    assert_eq!(t.get(b"key000060", u64::MAX).await.expect("get"), None);
    let ranges = [
        KeyRange::all(),
        KeyRange::new(Some(b("key000004")), Some(b("key000012"))),
    ];
    agrees_with_folding_the_scan(t.as_ref(), &ranges, &[u64::MAX, 260], &[]).await;

    let copy = copy_table(storage.as_ref(), id + 100, 0, t.as_ref())
        .await
        .expect("copy");
    assert_eq!((copy.entries, &copy.largest), (meta.entries, &meta.largest));
    let c = storage.open_table(&copy).await.expect("open the copy");
    assert_eq!(sorted(c.range_deletes()), tombstones);

    let lone = RangeTombstone::new(b("key000040"), b("key000099"), 50);
    let only = write_table(storage.as_ref(), id + 200, &[lone.to_entry()])
        .await
        .expect("a table of one tombstone");
    assert_eq!(
        (only.smallest.as_slice(), only.largest.as_slice()),
        (&b"key000040"[..], &b"key000099"[..])
    );
    let o = storage.open_table(&only).await.expect("open");
    assert_eq!(o.range_deletes(), &[lone]);
    assert!(
        read_range(o.as_ref(), &KeyRange::all())
            .await
            .expect("scan")
            .is_empty()
    );

    let backwards = Entry::range_delete(b("b"), b("a"), 9);
    let mut builder = storage.create_table(id + 300, 0).await.expect("create");
    assert!(
        builder.add(&[backwards]).await.is_err(),
        "an empty range is refused"
    );
    builder.abandon().await.expect("abandon");
    for t in [id, id + 100, id + 200] {
        storage.delete_table(t).await.expect("delete");
    }
}
