//! Optimistic transactions: snapshot reads with their own writes, write-write conflicts
//! refused at commit (snapshot isolation), read-write conflicts too when serializable (no
//! write skew), and concurrent read-modify-writes that lose no update.

mod support;

use bytes::Bytes;
use cairn_common::Error;
use cairn_engine::{Db, Isolation};
use cairn_memtable::MemtableOptions;
use std::sync::Arc;
use support::{Harness, JournalKind};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_a_newer_write_is_refused_and_writes_nothing() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    db.put("x", "0").await.unwrap();
    db.put("y", "0").await.unwrap();

    let mut t1 = db.begin(Isolation::Snapshot).unwrap();
    let mut t2 = db.begin(Isolation::Snapshot).unwrap();
    assert_eq!(t1.get(b"x").await.unwrap(), Some(b("0")));
    t1.put("x", "1");
    t1.put("z", "new");
    assert_eq!(t1.get(b"x").await.unwrap(), Some(b("1")), "its own write");
    db.put("y", "plain").await.unwrap();
    assert_eq!(t2.get(b"y").await.unwrap(), Some(b("0")), "the snapshot's");
    t2.put("x", "2");
    t1.commit().await.unwrap();
    let e = t2.commit().await.unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert!(e.to_string().contains("key \"x\""), "{e}");
    assert_eq!(db.get(b"x").await.unwrap(), Some(b("1")));
    assert_eq!(db.get(b"z").await.unwrap(), Some(b("new")));

    // A plain write, a delete and a range delete after the snapshot all count as changes,
    // in the memtable or flushed.
    for change in 0..3 {
        let mut t = db.begin(Isolation::Snapshot).unwrap();
        t.put("y", "txn");
        match change {
            0 => db.put("y", "again").await.map(|_| ()).unwrap(),
            1 => db.delete("y").await.map(|_| ()).unwrap(),
            _ => db.delete_range("a", "zz").await.map(|_| ()).unwrap(),
        }
        if change == 2 {
            db.flush().await.unwrap();
        }
        assert!(
            matches!(t.commit().await, Err(Error::Conflict(_))),
            "change {change}"
        );
    }
    // Keys no one else touched commit, and a transaction that writes nothing commits.
    let mut t = db.begin(Isolation::Snapshot).unwrap();
    t.put("w", "1");
    db.put("other", "1").await.unwrap();
    t.commit().await.unwrap();
    let mut r = db.begin(Isolation::Serializable).unwrap();
    r.get(b"w").await.unwrap();
    r.commit().await.unwrap();
    db.close().await.unwrap();
}

/// Write skew: two transactions each read both keys and write one. Under snapshot isolation
/// both commit; serializable refuses the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_transactions_refuse_write_skew() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = h.open().await;
    for (isolation, second_commits) in [
        (Isolation::Snapshot, true),
        (Isolation::Serializable, false),
    ] {
        db.put("on-call:a", "yes").await.unwrap();
        db.put("on-call:b", "yes").await.unwrap();
        let mut t1 = db.begin(isolation).unwrap();
        let mut t2 = db.begin(isolation).unwrap();
        for t in [&mut t1, &mut t2] {
            assert_eq!(t.get(b"on-call:a").await.unwrap(), Some(b("yes")));
            assert_eq!(t.get(b"on-call:b").await.unwrap(), Some(b("yes")));
        }
        t1.put("on-call:a", "no");
        t2.put("on-call:b", "no");
        t1.commit().await.unwrap();
        let second = t2.commit().await;
        assert_eq!(second.is_ok(), second_commits, "{isolation:?}: {second:?}");
    }
    db.close().await.unwrap();
}

/// Workers move amounts between accounts with read-modify-write transactions, retrying on
/// conflict, while flushes and compactions run: the total never changes, and every commit
/// counted is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_lose_no_update() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db = Arc::new(h.open().await);
    const ACCOUNTS: u64 = 5;
    for a in 0..ACCOUNTS {
        db.put(format!("acct{a}"), 1000i64.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    let read = |v: Option<Bytes>| i64::from_le_bytes(v.unwrap()[..].try_into().unwrap());
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let (mut done, mut conflicts) = (0, 0);
                let mut i = w;
                while done < 150 {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (from, to) = ((i >> 33) % ACCOUNTS, (i >> 40) % ACCOUNTS);
                    if from == to {
                        continue;
                    }
                    let mut t = db.begin(Isolation::Snapshot).unwrap();
                    let f = read(t.get(format!("acct{from}").as_bytes()).await.unwrap());
                    let g = read(t.get(format!("acct{to}").as_bytes()).await.unwrap());
                    t.put(format!("acct{from}"), (f - 7).to_le_bytes().to_vec());
                    t.put(format!("acct{to}"), (g + 7).to_le_bytes().to_vec());
                    match t.commit().await {
                        Ok(_) => done += 1,
                        Err(Error::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                    if done % 50 == 49 && w == 0 {
                        db.flush().await.unwrap();
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for w in workers {
        conflicts += w.await.unwrap();
    }
    db.compact().await.unwrap();
    let mut total = 0;
    for a in 0..ACCOUNTS {
        total += read(db.get(format!("acct{a}").as_bytes()).await.unwrap());
    }
    assert_eq!(total, 1000 * ACCOUNTS as i64, "after {conflicts} conflicts");
    assert!(conflicts > 0, "four workers on five accounts must collide");
    Arc::into_inner(db).unwrap().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_has_no_transactions() {
    let h = Harness::new(JournalKind::Memory, MemtableOptions::default());
    let db: Db = h.open().await;
    db.put("k", "v").await.unwrap();
    db.flush().await.unwrap();
    let reader = h.open_reader("reader").await;
    let e = reader.begin(Isolation::Snapshot).err().unwrap().to_string();
    assert!(e.contains("read-only"), "{e}");
    reader.close().await.unwrap();
    db.close().await.unwrap();
}
