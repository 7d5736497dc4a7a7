//! The conformance suite every `Shard` implementation runs (local, over gRPC, decorated).
//! Call [`run`] with a fresh, empty shard; it panics with a description on the first violation.

use crate::query::RoutedShards;
use crate::routing::Routing;
use crate::shard::{CheckpointOp, ImportStream, Shard};
use bytes::Bytes;
use cairn_common::{AggregateOp, AggregateValue, KeyRange, ValueType, WriteBatch};
use cairn_filestore::ValueColumns;
use cairn_sql::Fragment;
use cairn_sql::datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use std::sync::Arc;

/// Runs every check on `shard`, which must be empty.
pub async fn run(shard: Arc<dyn Shard>) {
    shard.check().await.expect("check");
    point_writes_and_reads(&shard).await;
    range_deletes_hide_what_they_cover(&shard).await;
    multi_get_keeps_the_callers_order(&shard).await;
    scans_follow_ranges_and_limits(&shard).await;
    large_scans_stream_in_order(&shard).await;
    aggregates_fold_the_range(&shard).await;
    queries_run_their_part_on_the_shard(&shard).await;
    imports_load_and_later_writes_win(&shard).await;
    flush_compact_and_stats(&shard).await;
    checkpoints_are_made_listed_and_deleted(&shard).await;
}

async fn checkpoints_are_made_listed_and_deleted(shard: &Arc<dyn Shard>) {
    let mut batch = WriteBatch::new();
    batch.put("c:k", "before");
    shard.write(batch).await.expect("write");
    let made = shard
        .checkpoint(CheckpointOp::Create("conformance".into()))
        .await
        .expect("create a checkpoint");
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].name, "conformance");
    assert!(made[0].tables > 0, "it holds the flushed write: {made:?}");
    let listed = shard.checkpoint(CheckpointOp::List).await.expect("list");
    assert_eq!(listed, made);
    let left = shard
        .checkpoint(CheckpointOp::Delete("conformance".into()))
        .await
        .expect("delete");
    assert!(left.is_empty(), "{left:?}");
    let e = shard
        .checkpoint(CheckpointOp::Delete("conformance".into()))
        .await
        .expect_err("deleting one that is gone")
        .to_string();
    assert!(e.contains("no checkpoint named"), "{e}");
}

fn b(s: impl Into<String>) -> Bytes {
    Bytes::from(s.into())
}

async fn scan(
    shard: &Arc<dyn Shard>,
    range: KeyRange,
    limit: Option<usize>,
) -> Vec<(Bytes, Bytes)> {
    shard
        .scan(range, limit)
        .await
        .expect("scan")
        .try_collect()
        .await
        .expect("scan stream")
}

async fn point_writes_and_reads(shard: &Arc<dyn Shard>) {
    let mut batch = WriteBatch::new();
    batch.put("p:a", "1").put("p:b", "2").put("p:c", "");
    shard.write(batch).await.expect("write");
    assert_eq!(shard.get(b"p:a").await.unwrap(), Some(b("1")));
    assert_eq!(
        shard.get(b"p:c").await.unwrap(),
        Some(Bytes::new()),
        "an empty value is a value, not an absence"
    );
    assert_eq!(shard.get(b"p:zz").await.unwrap(), None);
    let mut batch = WriteBatch::new();
    batch.delete("p:a").put("p:b", "22");
    shard.write(batch).await.expect("write");
    assert_eq!(shard.get(b"p:a").await.unwrap(), None, "deleted");
    assert_eq!(shard.get(b"p:b").await.unwrap(), Some(b("22")));
    let big = Bytes::from(vec![7u8; 1 << 20]);
    let mut batch = WriteBatch::new();
    batch.put("p:big", big.clone());
    shard.write(batch).await.expect("a 1 MiB value");
    assert_eq!(shard.get(b"p:big").await.unwrap(), Some(big));
}

async fn range_deletes_hide_what_they_cover(shard: &Arc<dyn Shard>) {
    let mut batch = WriteBatch::new();
    for k in ["r:a", "r:b", "r:c", "r:d"] {
        batch.put(k, "x");
    }
    shard.write(batch).await.expect("write");
    let mut batch = WriteBatch::new();
    batch.delete_range("r:b", "r:d").put("r:c", "again");
    shard
        .write(batch)
        .await
        .expect("a range delete, then a put it does not cover");
    let left = scan(shard, KeyRange::new(Some(b("r:")), Some(b("r;"))), None).await;
    assert_eq!(
        left,
        vec![
            (b("r:a"), b("x")),
            (b("r:c"), b("again")),
            (b("r:d"), b("x"))
        ]
    );
    assert_eq!(shard.get(b"r:b").await.unwrap(), None);
    let mut batch = WriteBatch::new();
    batch.delete_range("r:", "r;");
    shard.write(batch).await.expect("write");
    assert!(
        scan(shard, KeyRange::new(Some(b("r:")), Some(b("r;"))), None)
            .await
            .is_empty()
    );
}

async fn multi_get_keeps_the_callers_order(shard: &Arc<dyn Shard>) {
    let keys = vec![b("p:c"), b("p:none"), b("p:b"), b("p:a"), b("p:b")];
    let got = shard.multi_get(keys).await.expect("multi_get");
    assert_eq!(
        got,
        vec![Some(Bytes::new()), None, Some(b("22")), None, Some(b("22"))]
    );
    assert!(shard.multi_get(Vec::new()).await.unwrap().is_empty());
}

async fn scans_follow_ranges_and_limits(shard: &Arc<dyn Shard>) {
    let mut batch = WriteBatch::new();
    for i in 0..50 {
        batch.put(format!("s:{i:03}"), format!("v{i}"));
    }
    shard.write(batch).await.unwrap();
    let r = KeyRange::new(Some(b("s:010")), Some(b("s:020")));
    let got = scan(shard, r.clone(), None).await;
    let want: Vec<_> = (10..20)
        .map(|i| (b(format!("s:{i:03}")), b(format!("v{i}"))))
        .collect();
    assert_eq!(got, want);
    assert_eq!(scan(shard, r, Some(3)).await, want[..3].to_vec());
    let none = KeyRange::new(Some(b("s:999")), Some(b("s:9999")));
    assert!(scan(shard, none, None).await.is_empty());
}

async fn large_scans_stream_in_order(shard: &Arc<dyn Shard>) {
    // Several messages' worth for a remote shard.
    let mut batch = WriteBatch::new();
    for i in 0..5000 {
        batch.put(format!("l:{i:06}"), vec![b'x'; 100]);
    }
    shard.write(batch).await.unwrap();
    let got = scan(shard, KeyRange::new(Some(b("l:")), Some(b("l;"))), None).await;
    assert_eq!(got.len(), 5000);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
    // A reader that stops early ends the stream cleanly.
    let mut s = shard.scan(KeyRange::all(), None).await.unwrap();
    assert!(s.try_next().await.unwrap().is_some());
    drop(s);
}

async fn aggregates_fold_the_range(shard: &Arc<dyn Shard>) {
    let mut batch = WriteBatch::new();
    for i in 1..=100i64 {
        batch.put(format!("n:{i:03}"), i.to_le_bytes().to_vec());
    }
    batch.put("n:zzz", "not a number");
    shard.write(batch).await.unwrap();
    let r = KeyRange::new(Some(b("n:")), Some(b("n;")));
    let s = shard.aggregate(r, ValueType::I64).await.expect("aggregate");
    assert_eq!(s.result(AggregateOp::Count), AggregateValue::Int(101));
    assert_eq!(s.result(AggregateOp::Sum), AggregateValue::Int(5050));
    assert_eq!(s.result(AggregateOp::Min), AggregateValue::Int(1));
    assert_eq!(s.result(AggregateOp::Max), AggregateValue::Int(100));
    assert_eq!(s.skipped, 1);
}

async fn queries_run_their_part_on_the_shard(shard: &Arc<dyn Shard>) {
    let mut batch = WriteBatch::new();
    for i in 0..60i64 {
        let c = ["x", "y", "z"][i as usize % 3];
        batch.put(format!("q:{i:02}"), format!(r#"{{"c":"{c}","n":{i}}}"#));
    }
    batch.put("q:99", "not json");
    batch.delete("q:00");
    shard.write(batch).await.unwrap();
    let columns: ValueColumns =
        serde_json::from_str(r#"{"key":"utf8","encoding":"json","fields":{"c":"utf8","n":"i64"}}"#)
            .unwrap();
    let sql = "SELECT c, count(*) AS rows, sum(n) AS total FROM kv \
               WHERE key >= 'q:' AND key < 'q;' GROUP BY c ORDER BY c";
    // What the shard itself sends: partial aggregates, one row per group and partition of its
    // plan (one per core at most), not its 60 rows.
    let part: Vec<RecordBatch> = shard
        .query(Fragment {
            sql: sql.into(),
            columns: columns.clone(),
        })
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("the shard's part");
    let sent: usize = part.iter().map(RecordBatch::num_rows).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        (4..=4 * cores).contains(&sent),
        "{sent} rows: a partial row per group (x, y, z and the null of `not json`)"
    );
    // Through a router of this one shard, the final answer.
    let routing = Arc::new(Routing::hashed(1, vec![shard.clone()]));
    let got = cairn_sql::distributed::query(Arc::new(RoutedShards(routing.clone())), &columns, sql)
        .await
        .expect("query through a router");
    let text = cairn_sql::output::render(&got, cairn_sql::Format::Csv).unwrap();
    let (x, y, z): (i64, i64, i64) = (
        (3..60).step_by(3).sum(),
        (1..60).step_by(3).sum(),
        (2..60).step_by(3).sum(),
    );
    assert_eq!(
        text,
        format!("c,rows,total\nx,19,{x}\ny,20,{y}\nz,20,{z}\n,1,\n"),
        "the deleted key is gone and the non-JSON value has null columns"
    );
    // A statement the shard cannot plan is an error naming what it does not know.
    let e = cairn_sql::distributed::query(
        Arc::new(RoutedShards(routing)),
        &columns,
        "SELECT nope FROM kv",
    )
    .await
    .expect_err("an unknown column");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = match shard
        .query(Fragment {
            sql: "SELECT nope FROM kv".into(),
            columns,
        })
        .await
    {
        Ok(batches) => batches.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    }
    .expect_err("an unknown column, asked of the shard");
    assert!(e.to_string().contains("nope"), "{e}");
}

async fn imports_load_and_later_writes_win(shard: &Arc<dyn Shard>) {
    shard.put_one("i:0005", "written before").await;
    let mut entries: Vec<(Bytes, Bytes)> = (0..3000)
        .rev()
        .map(|i| (b(format!("i:{i:04}")), b(format!("imported {i}"))))
        .collect();
    entries.push((b("i:0007"), b("repeated, last wins")));
    let (a, rest) = entries.split_at(1000);
    let batches: ImportStream = Box::pin(futures::stream::iter(vec![
        Ok(a.to_vec()),
        Ok(Vec::new()),
        Ok(rest.to_vec()),
    ]));
    let n = shard.import(batches).await.expect("import");
    assert_eq!(n, 3001, "entries handed in, repeats included");
    assert_eq!(
        shard.get(b"i:0005").await.unwrap(),
        Some(b("imported 5")),
        "an import is newer than the writes before it"
    );
    assert_eq!(
        shard.get(b"i:0007").await.unwrap(),
        Some(b("repeated, last wins"))
    );
    shard.put_one("i:0009", "written after").await;
    assert_eq!(
        shard.get(b"i:0009").await.unwrap(),
        Some(b("written after"))
    );
    let all = scan(shard, KeyRange::new(Some(b("i:")), Some(b("i;"))), None).await;
    assert_eq!(all.len(), 3000);

    // A failing input loads nothing, though the shard had built tables of it (about 200 KiB
    // goes in before the failure; the suite's local shards cut tables at 64 KiB).
    let big = |n: usize| {
        (0..1000)
            .map(|i| (b(format!("f:{n}:{i:04}")), Bytes::from(vec![b'v'; 100])))
            .collect::<Vec<_>>()
    };
    let failing: ImportStream = Box::pin(futures::stream::iter(vec![
        Ok(big(0)),
        Ok(big(1)),
        Err(cairn_common::Error::InvalidArgument(
            "the input broke".into(),
        )),
    ]));
    let e = shard.import(failing).await.unwrap_err().to_string();
    assert!(e.contains("the input broke"), "{e}");
    let left = scan(shard, KeyRange::new(Some(b("f:")), Some(b("f;"))), None).await;
    assert_eq!(left.len(), 0, "a failed import loads none of its input");
}

async fn flush_compact_and_stats(shard: &Arc<dyn Shard>) {
    shard.flush().await.expect("flush");
    shard.compact().await.expect("compact");
    let s = shard.stats().await.expect("stats");
    assert!(s.table_count() > 0, "compacted data lives in tables");
    assert!(s.imports >= 1, "the import is counted");
    assert_eq!(shard.get(b"p:b").await.unwrap(), Some(b("22")));
    assert_eq!(
        shard.get(b"i:0009").await.unwrap(),
        Some(b("written after"))
    );
}

/// A put through `write`, for the checks above.
#[async_trait::async_trait]
trait PutOne {
    async fn put_one(&self, key: &str, value: &str);
}

#[async_trait::async_trait]
impl PutOne for Arc<dyn Shard> {
    async fn put_one(&self, key: &str, value: &str) {
        let mut batch = WriteBatch::new();
        batch.put(key.to_string(), value.to_string());
        self.write(batch).await.expect("put");
    }
}
