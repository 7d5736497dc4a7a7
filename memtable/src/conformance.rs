//! The conformance suite every `Memtable` runs: versions, snapshots, tombstones, ordered
//! scans with bounds, accounting, and concurrent writers checked against a model.

use crate::Memtable;
use bytes::Bytes;
use cairn_common::{Entry, EntryKind, KeyRange};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

pub fn run(make: &dyn Fn() -> Arc<dyn Memtable>) {
    versions_and_snapshots(make());
    scans_are_ordered_and_bounded(make());
    scan_streams_past_one_run(make());
    concurrent_writers_lose_nothing(make());
}

fn versions_and_snapshots(m: Arc<dyn Memtable>) {
    assert!(m.is_empty());
    m.insert(Entry::put("k", 1, "v1"));
    m.insert(Entry::put("k", 5, "v5"));
    m.insert(Entry::delete("k", 9));
    m.insert(Entry::put("k2", 3, "x"));
    assert_eq!(m.len(), 4);
    let bytes = m.approximate_bytes();
    assert!(bytes > 0);
    // A replayed record inserts the same (key, seq) again: the same write, counted once.
    m.insert(Entry::put("k", 5, "v5"));
    assert_eq!((m.len(), m.approximate_bytes()), (4, bytes));
    assert_eq!(m.get(b"k", 0), None, "nothing at snapshot 0");
    assert_eq!(m.get(b"k", 1).unwrap().value, Bytes::from("v1"));
    assert_eq!(m.get(b"k", 8).unwrap().value, Bytes::from("v5"));
    let tomb = m.get(b"k", u64::MAX).unwrap();
    assert_eq!(
        (tomb.kind, tomb.seq),
        (EntryKind::Delete, 9),
        "tombstones are returned"
    );
    assert_eq!(m.get(b"k0", u64::MAX), None);
    assert_eq!(m.get(b"", u64::MAX), None);
    assert_eq!(m.get(b"k2", 2), None);
}

fn scans_are_ordered_and_bounded(m: Arc<dyn Memtable>) {
    for i in 0..200u32 {
        let key = format!("key{i:04}");
        m.insert(Entry::put(key.clone(), u64::from(i) + 1, "a"));
        m.insert(Entry::put(key, u64::from(i) + 1000, "b"));
    }
    let all: Vec<Entry> = m.scan(&KeyRange::all(), u64::MAX).collect();
    assert_eq!(all.len(), 400);
    assert!(
        all.windows(2).all(|w| w[0].cmp_internal(&w[1]).is_lt()),
        "internal order"
    );
    assert_eq!(all[0].seq, 1000, "newest version first");

    let snap: Vec<Entry> = m.scan(&KeyRange::all(), 999).collect();
    assert_eq!(snap.len(), 200, "snapshot hides the newer versions");
    assert!(snap.iter().all(|e| e.seq <= 999));

    let r = KeyRange::new(Some(Bytes::from("key0010")), Some(Bytes::from("key0020")));
    let part: Vec<Entry> = m.scan(&r, u64::MAX).collect();
    assert_eq!(part.len(), 20);
    assert_eq!(&part[0].key[..], b"key0010");
    assert_eq!(&part[19].key[..], b"key0019");

    let r = KeyRange {
        start: Bound::Excluded(Bytes::from("key0010")),
        end: Bound::Included(Bytes::from("key0020")),
    };
    let part: Vec<Entry> = m.scan(&r, u64::MAX).collect();
    assert_eq!(part.len(), 20);
    assert_eq!(&part[0].key[..], b"key0011");
    assert_eq!(&part[19].key[..], b"key0020");

    for (start, end) in [
        (
            Bound::Excluded(Bytes::from("key0010")),
            Bound::Excluded(Bytes::from("key0010")),
        ),
        (
            Bound::Included(Bytes::from("key0020")),
            Bound::Excluded(Bytes::from("key0010")),
        ),
    ] {
        let r = KeyRange { start, end };
        assert_eq!(
            m.scan(&r, u64::MAX).count(),
            0,
            "empty or inverted range {r:?}"
        );
    }
}

fn scan_streams_past_one_run(m: Arc<dyn Memtable>) {
    // Many versions of one key cross the cursor's refill boundary.
    for seq in 1..=1000u64 {
        m.insert(Entry::put("same", seq, seq.to_string()));
    }
    let got: Vec<u64> = m.scan(&KeyRange::all(), u64::MAX).map(|e| e.seq).collect();
    assert_eq!(got, (1..=1000).rev().collect::<Vec<_>>());
}

fn concurrent_writers_lose_nothing(m: Arc<dyn Memtable>) {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    m.insert(Entry::put(
                        format!("t{t}-{i:05}"),
                        t * 10_000 + i + 1,
                        i.to_string(),
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let mut model = BTreeMap::new();
    for t in 0..4u64 {
        for i in 0..2000u64 {
            model.insert(format!("t{t}-{i:05}"), i.to_string());
        }
    }
    assert_eq!(m.len(), 8000);
    let got: Vec<(String, String)> = m
        .scan(&KeyRange::all(), u64::MAX)
        .map(|e| {
            (
                String::from_utf8(e.key.to_vec()).expect("utf8 key"),
                String::from_utf8(e.value.to_vec()).expect("utf8 value"),
            )
        })
        .collect();
    assert_eq!(got, model.into_iter().collect::<Vec<_>>());
}
