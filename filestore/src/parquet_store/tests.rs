use super::*;
use crate::{conformance, read_range, write_table, write_table_from};
use bytes::Bytes;
use cairn_common::{Entry, KeyRange};
use cairn_testkit::S3Endpoint;
use std::ops::Bound;

/// Small row groups and pages, so the suite's tables span many of each.
fn small(url: String) -> ParquetOptions {
    ParquetOptions {
        url,
        row_group_rows: 1000,
        page_bytes: 4096,
        ..ParquetOptions::default()
    }
}

fn s3_options(s3: &S3Endpoint, sub: &str) -> ParquetOptions {
    ParquetOptions {
        endpoint: Some(s3.endpoint.clone()),
        region: Some(s3.region.clone()),
        access_key_id: Some(s3.access_key_id.clone()),
        secret_access_key: Some(s3.secret_access_key.clone()),
        allow_http: true,
        timeout_ms: 5_000,
        max_retries: 1,
        ..small(s3.url(sub))
    }
}

#[tokio::test]
async fn conformance_on_memory() {
    let s: Arc<dyn Storage> =
        Arc::new(ParquetStorage::open(small("memory://conformance/tables".into())).unwrap());
    conformance::run(s.clone(), 1).await;
    conformance::digests(&s, 500, true).await;
}

#[tokio::test]
async fn conformance_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = ParquetStorage::open(small(format!("file://{}", dir.path().display()))).unwrap();
    conformance::run(Arc::new(s), 1).await;
    // Plain files, named for their tables: readable by any Parquet reader.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "00000000000000000001.parquet",
            "00000000000000000003.parquet"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_s3() {
    let s3 = S3Endpoint::start();
    let s = ParquetStorage::open(s3_options(&s3, "conformance")).unwrap();
    conformance::run(Arc::new(s), 1).await;
}

fn entries(n: u32) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry::put(format!("k{i:08}"), 1, vec![b'v'; 100]))
        .collect()
}

/// Each level's tables take its zstd level; both read back the same.
#[tokio::test]
async fn each_level_takes_its_zstd_level() {
    let s = ParquetStorage::open(ParquetOptions {
        zstd_level_per_level: vec![1, 19],
        ..small("memory://per-level".into())
    })
    .unwrap();
    let mut noise = cairn_testkit::Noise::new(7);
    let written: Vec<Entry> = (0..20_000u32)
        .map(|i| {
            let mut v = noise.bytes(8, true);
            v.extend_from_slice(format!("status=ok region={} tier={}", i % 7, i % 3).as_bytes());
            Entry::put(format!("k{i:08}"), 1, v)
        })
        .collect();
    let light = write_table_from(&s, 1, 0, written.iter().cloned())
        .await
        .unwrap();
    let heavy = write_table_from(&s, 2, 3, written.iter().cloned())
        .await
        .unwrap();
    assert!(
        heavy.size < light.size,
        "{} against {}",
        heavy.size,
        light.size
    );
    for meta in [light, heavy] {
        let t = s.open_table(&meta).await.unwrap();
        assert_eq!(
            read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
            written
        );
    }
}

#[tokio::test]
async fn lookups_read_one_row_group_and_few_pages() {
    let s = ParquetStorage::open(small("memory://pruning".into())).unwrap();
    let meta = write_table(&s, 1, &entries(20_000)).await.unwrap();
    let t = table::ParquetTable::open(meta, s.loc.store.clone(), s.table_path(1), s.url(), None)
        .await
        .unwrap();
    let key = b"k00012345".as_slice();
    let planned = t.plan(Bound::Included(key), Bound::Included(key));
    let groups: Vec<usize> = planned.iter().map(|p| p.group).collect();
    assert_eq!(groups, vec![12], "one row group of 20 holds the key");
    let selection = parquet::arrow::arrow_reader::RowSelection::from(planned[0].selectors.clone());
    let rows = selection.row_count();
    // Pages are cut near `page_bytes` (about 600 of these rows): one page, not the group.
    assert!(
        rows > 0 && rows < 1000,
        "one page of the 1000-row group: {rows}"
    );
    assert!(
        t.plan(Bound::Included(b"zzz".as_slice()), Bound::Unbounded)
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_tables_upload_in_parts_and_an_abandoned_upload_leaves_nothing() {
    let s3 = S3Endpoint::start();
    let s = ParquetStorage::open(ParquetOptions {
        row_group_rows: 8192,
        zstd_level: 1,
        ..s3_options(&s3, "multipart")
    })
    .unwrap();
    // Random-ish values that zstd cannot shrink below the 5 MiB part size.
    let mut noise = cairn_testkit::Noise::new(0x9e37_79b9_7f4a_7c15);
    let big: Vec<Entry> = (0..70_000u32)
        .map(|i| Entry::put(format!("k{i:08}"), 1, noise.bytes(200, false)))
        .collect();
    let meta = write_table(&s, 7, &big).await.unwrap();
    assert!(meta.size > 10 << 20, "several parts: {}", meta.size);
    let t = s.open_table(&meta).await.unwrap();
    assert_eq!(t.get(b"k00069999", 1).await.unwrap().unwrap(), big[69_999]);

    let mut b = s.create_table(8, 0).await.unwrap();
    b.add(&big).await.unwrap();
    b.abandon().await.unwrap();
    assert_eq!(s.list_tables().await.unwrap(), vec![7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_is_an_error_naming_the_store_and_leaves_no_table() {
    let s3 = S3Endpoint::start();
    if !s3.set_down(false) {
        return; // an external endpoint cannot be taken down from here
    }
    let s = ParquetStorage::open(s3_options(&s3, "failing")).unwrap();
    s3.set_down(true);
    let err = write_table(&s, 1, &entries(100))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("parquet store s3://"), "{err}");
    s3.set_down(false);
    assert!(s.list_tables().await.unwrap().is_empty());
    // And the store works again once the endpoint is back.
    let meta = write_table(&s, 2, &entries(100)).await.unwrap();
    let t = s.open_table(&meta).await.unwrap();
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all())
            .await
            .unwrap()
            .len(),
        100
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_cairn_table_is_refused() {
    let s = ParquetStorage::open(small("memory://foreign".into())).unwrap();
    let meta = write_table(&s, 1, &entries(10)).await.unwrap();
    // Overwrite the object with other bytes of the same length.
    let junk = vec![0u8; meta.size as usize];
    s.loc
        .store
        .put(&s.table_path(1), Bytes::from(junk).into())
        .await
        .unwrap();
    let err = s.open_table(&meta).await.err().unwrap().to_string();
    assert!(err.contains("memory://foreign"), "{err}");
}

#[tokio::test]
async fn aggregates_read_only_values_where_statistics_allow() {
    let s = ParquetStorage::open(small("memory://values-only".into())).unwrap();
    let open =
        |meta| table::ParquetTable::open(meta, s.loc.store.clone(), s.table_path(1), s.url(), None);
    let meta = write_table(&s, 1, &entries(5000)).await.unwrap();
    let t = open(meta).await.unwrap();
    let all = KeyRange::all();
    let planned = t.plan(Bound::Unbounded, Bound::Unbounded);
    assert_eq!(planned.len(), 5);
    let whole = |snapshot, shadowed: &[Bytes]| {
        planned
            .iter()
            .filter(|p| t.values_suffice(p, &all, snapshot, shadowed))
            .count()
    };
    assert_eq!(
        whole(u64::MAX, &[]),
        5,
        "one version per key, no tombstones"
    );
    assert_eq!(
        whole(0, &[]),
        0,
        "versions newer than the snapshot need seq"
    );
    assert_eq!(
        whole(u64::MAX, &[Bytes::from("k00001500")]),
        4,
        "a shadowed key"
    );
    let part = KeyRange::new(Some(Bytes::from("k00000500")), None);
    let partial = planned
        .iter()
        .filter(|p| t.values_suffice(p, &part, u64::MAX, &[]))
        .count();
    assert_eq!(partial, 4, "a group cut by the range needs keys");

    // Two versions of a key: no group may skip seq and kind.
    let mut twice = entries(10);
    twice.insert(1, Entry::put("k00000000", 0, "old"));
    s.delete_table(1).await.unwrap();
    let meta = write_table(&s, 1, &twice).await.unwrap();
    let t = open(meta).await.unwrap();
    let planned = t.plan(Bound::Unbounded, Bound::Unbounded);
    assert!(!t.values_suffice(&planned[0], &all, u64::MAX, &[]));
}

/// Row groups are cut by bytes as well as rows: big values make smaller groups (Arrow's
/// binary builders take 32-bit offsets and panic past 2 GiB in one group).
#[tokio::test]
async fn row_groups_are_cut_by_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ParquetOptions {
        row_group_bytes: 1 << 20,
        ..small(format!("file://{}", dir.path().display()))
    };
    let s = ParquetStorage::open(opts).unwrap();
    // 200 entries of 64 KiB: 12.5 MiB, one group by rows (1000), about 13 by bytes.
    let entries: Vec<Entry> = (0..200u32)
        .map(|i| Entry::put(format!("k{i:04}"), 1, vec![b'v'; 64 << 10]))
        .collect();
    let meta = write_table(&s, 1, &entries).await.unwrap();
    let file = std::fs::File::open(dir.path().join("00000000000000000001.parquet")).unwrap();
    let groups = ::parquet::file::reader::FileReader::metadata(
        &::parquet::file::reader::SerializedFileReader::new(file).unwrap(),
    )
    .num_row_groups();
    assert!((12..=14).contains(&groups), "{groups} row groups");
    let t = s.open_table(&meta).await.unwrap();
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
        entries
    );
}

/// A table of `rows` incompressible `value_len`-byte values in a local store without a page
/// cache, for the tests that corrupt its file: zstd stores such values raw, so its decoder
/// cannot notice a flipped bit in one.
struct OnDisk {
    _dir: tempfile::TempDir,
    store: ParquetStorage,
    entries: Vec<Entry>,
    meta: cairn_common::TableMeta,
    path: std::path::PathBuf,
    /// The file as written.
    good: Vec<u8>,
    /// Where its last row group ends: the footer follows.
    data_end: usize,
}

impl OnDisk {
    /// The file as written with the byte at `at` flipped.
    fn flip(&self, at: usize) {
        let mut bad = self.good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&self.path, &bad).unwrap();
    }

    fn restore(&self) {
        std::fs::write(&self.path, &self.good).unwrap();
    }
}

async fn on_disk(seed: u64, rows: u32, value_len: usize) -> OnDisk {
    let dir = tempfile::tempdir().unwrap();
    let opts = ParquetOptions {
        page_cache_bytes: 0,
        ..small(format!("file://{}", dir.path().display()))
    };
    let store = ParquetStorage::open(opts).unwrap();
    let mut noise = cairn_testkit::Noise::new(seed);
    let entries: Vec<Entry> = (0..rows)
        .map(|i| Entry::put(format!("k{i:04}"), 1, noise.bytes(value_len, false)))
        .collect();
    let meta = write_table(&store, 1, &entries).await.unwrap();
    let path = dir.path().join("00000000000000000001.parquet");
    let good = std::fs::read(&path).unwrap();
    let data_end = {
        let file = std::fs::File::open(&path).unwrap();
        let reader = ::parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let md = ::parquet::file::reader::FileReader::metadata(&reader);
        let last = md.row_group(md.num_row_groups() - 1);
        last.columns()
            .iter()
            .map(|c| {
                let (start, len) = c.byte_range();
                start + len
            })
            .max()
            .unwrap() as usize
    };
    OnDisk {
        _dir: dir,
        store,
        entries,
        meta,
        path,
        good,
        data_end,
    }
}

/// A flipped byte anywhere in a table's row groups is detected by a full scan (what
/// compaction reads) or changes nothing it returns: never a wrong entry. Values are
/// incompressible, so zstd stores them raw and its decoder cannot notice.
#[tokio::test]
async fn every_byte_flip_in_the_data_is_detected_by_a_full_scan() {
    let d = on_disk(5, 300, 200).await;
    let (s, entries, meta) = (&d.store, &d.entries, &d.meta);
    let mut silent = Vec::new();
    for at in (4..d.data_end).step_by(97) {
        d.flip(at);
        let Ok(t) = s.open_table(meta).await else {
            continue;
        };
        if let Ok(got) = read_range(t.as_ref(), &KeyRange::all()).await
            && &got != entries
        {
            silent.push(at);
        }
    }
    d.restore();
    assert!(
        silent.is_empty(),
        "{} flips went unnoticed, the first at {:?}",
        silent.len(),
        silent.first()
    );
}

/// Lookups, ranged scans and column reads fetch single pages, which the page sums cover: after
/// a flipped byte anywhere in a table's data, each such read is an error or exactly right, and
/// some are errors. (Before pages were summed, most flips in values went unnoticed by all
/// three.)
#[tokio::test]
async fn every_byte_flip_is_caught_by_lookups_ranged_scans_and_column_reads() {
    use arrow_array::cast::AsArray;
    use arrow_array::{Array, RecordBatch};
    use futures::TryStreamExt;
    let d = on_disk(6, 1500, 40).await;
    let (s, entries, meta) = (&d.store, &d.entries, &d.meta);
    let range = KeyRange::new(Some(Bytes::from("k0400")), Some(Bytes::from("k1100")));
    let in_range: Vec<Entry> = entries
        .iter()
        .filter(|e| range.contains(&e.key))
        .cloned()
        .collect();
    let values: Vec<Vec<u8>> = entries.iter().map(|e| e.value.to_vec()).collect();
    let field = arrow_schema::Field::new("value", arrow_schema::DataType::Binary, true);
    let (mut silent, mut caught) = (Vec::new(), 0);
    for at in (4..d.data_end).step_by(89) {
        d.flip(at);
        let Ok(t) = s.open_table(meta).await else {
            continue;
        };
        for i in (0..entries.len()).step_by(97) {
            match t.get(&entries[i].key, u64::MAX).await {
                Ok(got) if got.as_ref() != Some(&entries[i]) => silent.push((at, "get")),
                Ok(_) => {}
                Err(_) => caught += 1,
            }
        }
        match read_range(t.as_ref(), &range).await {
            Ok(got) if got != in_range => silent.push((at, "ranged scan")),
            Ok(_) => {}
            Err(_) => caught += 1,
        }
        let read = async {
            let stream = t
                .columns(&KeyRange::all(), std::slice::from_ref(&field), &[])
                .await?;
            let batches: Vec<RecordBatch> =
                stream.expect("value is a column").try_collect().await?;
            Ok::<_, cairn_common::Error>(
                batches
                    .iter()
                    .flat_map(|b| {
                        let v = b.column(0).as_binary::<i32>();
                        (0..v.len())
                            .map(|i| v.value(i).to_vec())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>(),
            )
        };
        match read.await {
            Ok(got) if got != values => silent.push((at, "column read")),
            Ok(_) => {}
            Err(_) => caught += 1,
        }
    }
    d.restore();
    assert!(
        silent.is_empty(),
        "{} flips went unnoticed, the first {:?}",
        silent.len(),
        silent.first()
    );
    assert!(caught > 0, "no read met a flipped page");
}

/// A table written before pages were summed (its footer has no `cairn.page_crc32c`; here the
/// entry's name is changed in place, which no checksum covers) reads as before, and a full
/// scan still checks it by its row-group sums.
#[tokio::test]
async fn a_table_without_page_sums_reads_and_is_checked_by_row_group() {
    let OnDisk {
        _dir,
        store: s,
        entries,
        meta,
        path,
        ..
    } = on_disk(7, 600, 60).await;
    let mut old = std::fs::read(&path).unwrap();
    let key = page_sums::PAGE_CRC_KEY.as_bytes();
    let at = old
        .windows(key.len())
        .position(|w| w == key)
        .expect("the footer names the page sums");
    old[at + key.len() - 1] = b'X';
    std::fs::write(&path, &old).unwrap();
    let t = s.open_table(&meta).await.unwrap();
    assert_eq!(
        read_range(t.as_ref(), &KeyRange::all()).await.unwrap(),
        entries
    );
    let got = t.get(b"k0300", u64::MAX).await.unwrap();
    assert_eq!(got.as_ref(), Some(&entries[300]));
    // A flipped byte inside the last value is caught by the row-group sum.
    let value = &entries[599].value;
    let v = old
        .windows(value.len())
        .position(|w| w == value.as_ref())
        .expect("values are stored raw (incompressible)");
    old[v + 5] ^= 0x20;
    std::fs::write(&path, &old).unwrap();
    let t = s.open_table(&meta).await.unwrap();
    let e = read_range(t.as_ref(), &KeyRange::all()).await.unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
}

/// Opening a local store sweeps the staging files object_store leaves when a write dies, once
/// they are old enough that no live writer can own them; a fresh one stays.
#[tokio::test]
async fn old_staging_files_are_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    drop(ParquetStorage::open(small(url.clone())).unwrap());
    let old = dir.path().join("00000000000000000007.parquet#3");
    let fresh = dir.path().join("00000000000000000008.parquet#1");
    std::fs::create_dir_all(dir.path().join("manifest")).unwrap();
    let old_manifest = dir.path().join("manifest").join("00000000000000000002#5");
    for p in [&old, &fresh, &old_manifest] {
        std::fs::write(p, b"half a write").unwrap();
    }
    let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for p in [&old, &old_manifest] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
    }
    drop(ParquetStorage::open(small(url)).unwrap());
    assert!(!old.exists() && !old_manifest.exists());
    assert!(fresh.exists());
}

/// A server keeps its named databases under its default database's prefix
/// (`<url>/db/<name>`): the default's listing holds its own tables only, or its first open
/// refuses ("holds N tables") and its sweep queues other databases' ids.
#[tokio::test]
async fn tables_under_a_nested_prefix_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/bucket", dir.path().display());
    let outer = ParquetStorage::open(small(url.clone())).unwrap();
    let nested = ParquetStorage::open(small(format!("{url}/db/other"))).unwrap();
    write_table(&nested, 7, &entries(10)).await.unwrap();
    write_table(&outer, 3, &entries(10)).await.unwrap();
    assert_eq!(nested.list_tables().await.unwrap(), vec![7]);
    assert_eq!(outer.list_tables().await.unwrap(), vec![3]);
}

/// A declared text column asked for as `Utf8View` reads straight into views, with the same
/// values as the `Utf8` it is stored as; a type the column cannot take is `None`.
#[tokio::test]
async fn text_columns_read_as_views_where_asked() {
    use arrow_array::cast::AsArray;
    use arrow_schema::{DataType, Field};
    let values: ValueColumns =
        serde_json::from_str(r#"{"encoding":"json","fields":{"who":"utf8","n":"i64"}}"#).unwrap();
    let s = ParquetStorage::open(ParquetOptions {
        values,
        ..small("memory://views/tables".into())
    })
    .unwrap();
    let rows: Vec<Entry> = (0..3000)
        .map(|i| {
            let who = if i % 7 == 0 {
                "a name longer than twelve bytes"
            } else {
                "bo"
            };
            Entry::put(
                format!("k{i:05}"),
                1,
                format!(r#"{{"who":"{who}","n":{i}}}"#),
            )
        })
        .collect();
    let meta = write_table(&s, 1, &rows).await.unwrap();
    let table = s.open_table(&meta).await.unwrap();
    let read = |t: DataType| {
        let table = table.clone();
        async move {
            let fields = [Field::new("who", t, true)];
            let batches = table
                .columns(&KeyRange::all(), &fields, &[])
                .await
                .unwrap()?;
            let batches: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(batches).await.unwrap();
            Some(batches)
        }
    };
    let plain: Vec<String> = read(DataType::Utf8)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let views = read(DataType::Utf8View).await.unwrap();
    assert!(
        views
            .iter()
            .all(|b| b.column(0).data_type() == &DataType::Utf8View)
    );
    let viewed: Vec<String> = views
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string_view()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(plain.len(), 3000);
    assert_eq!(viewed, plain);
    assert!(
        read(DataType::Int64).await.is_none(),
        "text is not an integer"
    );
}

/// Row groups whose declared columns' statistics rule a condition out are not read; those
/// that may hold a match are read whole (the caller filters their rows).
#[tokio::test]
async fn conditions_on_declared_columns_skip_row_groups() {
    use crate::column_condition::{ColumnCondition, Comparison, Literal};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::{DataType, Field};
    let values: ValueColumns =
        serde_json::from_str(r#"{"encoding":"json","fields":{"g":"utf8","n":"i64","x":"f64"}}"#)
            .unwrap();
    let s = ParquetStorage::open(ParquetOptions {
        values,
        ..small("memory://pruning/tables".into())
    })
    .unwrap();
    // Row groups of 1000 rows: n and x rise with the key, g names the row group.
    let rows: Vec<Entry> = (0..3000)
        .map(|i| {
            let v = format!(r#"{{"g":"g{}","n":{i},"x":{i}.5}}"#, i / 1000);
            Entry::put(format!("k{i:05}"), 1, v)
        })
        .collect();
    let meta = write_table(&s, 1, &rows).await.unwrap();
    let table = s.open_table(&meta).await.unwrap();
    let cond = |column: &str, op, literal| ColumnCondition {
        column: column.into(),
        op,
        literal,
    };
    let read = |conditions: Vec<ColumnCondition>| {
        let table = table.clone();
        async move {
            let fields = [Field::new("n", DataType::Int64, true)];
            let batches = table
                .columns(&KeyRange::all(), &fields, &conditions)
                .await
                .unwrap()
                .unwrap();
            let batches: Vec<RecordBatch> =
                futures::TryStreamExt::try_collect(batches).await.unwrap();
            batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect::<Vec<i64>>()
        }
    };
    let all: Vec<i64> = (0..3000).collect();
    assert_eq!(read(vec![]).await, all);
    let last = read(vec![cond("n", Comparison::Gt, Literal::I64(2500))]).await;
    assert_eq!(
        last,
        all[2000..],
        "only the last row group may hold n > 2500"
    );
    assert!(
        read(vec![cond("n", Comparison::Lt, Literal::I64(0))])
            .await
            .is_empty()
    );
    let middle = read(vec![cond("g", Comparison::Eq, Literal::Utf8("g1".into()))]).await;
    assert_eq!(middle, all[1000..2000]);
    // Conditions together: each row group must pass all of them.
    let none = read(vec![
        cond("x", Comparison::LtEq, Literal::F64(999.5)),
        cond("g", Comparison::GtEq, Literal::Utf8("g1".into())),
    ])
    .await;
    assert!(none.is_empty());
    // A condition on a column the table lacks, or of another type, skips nothing.
    let kept = read(vec![
        cond("nope", Comparison::Lt, Literal::I64(0)),
        cond("n", Comparison::Lt, Literal::Utf8("0".into())),
    ])
    .await;
    assert_eq!(kept, all);
}
