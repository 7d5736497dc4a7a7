//! Reading a table file built elsewhere, for ingestion: a Cairn SSTable (`FORMAT.md`) or a
//! Parquet file with Cairn's schema (`key`, `seq`, `kind`, `value`; written by this store or
//! by pyarrow, sorted or not). The file is read whole, checked, and handed back as entries in
//! internal order and range tombstones.

use crate::Table;
use crate::cache::BlockCache;
use crate::parquet_store::schema;
use crate::sstable::SstTable;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt8Type, UInt64Type};
use bytes::Bytes;
use cairn_common::{
    Entry, EntryKind, Error, IoContext, KeyRange, RangeTombstone, Result, TableMeta,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// What a table file holds.
#[derive(Debug, Default)]
pub struct TableFile {
    /// Every version, in internal order (key ascending, seq descending).
    pub entries: Vec<Entry>,
    pub range_deletes: Vec<RangeTombstone>,
}

/// Reads `path`: an SSTable if it ends with Cairn's SSTable magic, else a Parquet file.
pub fn read_table_file(path: &Path) -> Result<TableFile> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let (mut head, mut tail) = ([0u8; 4], [0u8; 8]);
    if len >= 12 {
        file.read_exact_at(&mut head, 0).at(path)?;
        file.read_exact_at(&mut tail, len - 8).at(path)?;
    }
    if tail == crate::format::MAGIC.to_le_bytes() {
        read_sstable(path)
    } else if &head == b"PAR1" {
        read_parquet(path, file)
    } else {
        Err(Error::InvalidArgument(format!(
            "{} is neither a Cairn SSTable nor a Parquet file",
            path.display()
        )))
    }
}

fn read_sstable(path: &Path) -> Result<TableFile> {
    // Size 0: the manifest's size check does not apply to a file from elsewhere.
    let meta = TableMeta {
        id: 0,
        smallest: Vec::new(),
        largest: Vec::new(),
        min_seq: 0,
        max_seq: 0,
        entries: 0,
        size: 0,
    };
    let table = SstTable::open(path.to_path_buf(), meta, BlockCache::new(0))?;
    let entries = match table.scan_ready(&KeyRange::all()) {
        Some(it) => it?.collect::<Result<Vec<Entry>>>()?,
        None => Vec::new(),
    };
    Ok(TableFile {
        entries,
        range_deletes: table.range_deletes().to_vec(),
    })
}

fn read_parquet(path: &Path, file: std::fs::File) -> Result<TableFile> {
    let what = path.display().to_string();
    let bad = |e: &dyn std::fmt::Display| Error::corruption(what.clone(), e.to_string());
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
    schema::check(builder.schema(), &what)?;
    let mut file = TableFile::default();
    for batch in builder.build().map_err(|e| bad(&e))? {
        let batch = batch.map_err(|e| bad(&e))?;
        let keys = batch.column(schema::KEY).as_binary::<i32>();
        let seqs = batch.column(schema::SEQ).as_primitive::<UInt64Type>();
        let kinds = batch.column(schema::KIND).as_primitive::<UInt8Type>();
        let values = batch.column(schema::VALUE).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            let kind = EntryKind::from_u8(kinds.value(i))
                .ok_or_else(|| bad(&format!("row with unknown kind {}", kinds.value(i))))?;
            let e = Entry {
                key: Bytes::copy_from_slice(keys.value(i)),
                seq: seqs.value(i),
                kind,
                value: Bytes::copy_from_slice(values.value(i)),
            };
            if kind == EntryKind::RangeDelete {
                file.range_deletes.push(RangeTombstone::from_entry(&e)?);
            } else {
                file.entries.push(e);
            }
        }
    }
    file.entries.sort_by(|a, b| a.cmp_internal(b));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SstOptions, SstStorage, write_table};
    use arrow_array::{ArrayRef, BinaryArray, RecordBatch, UInt8Array, UInt64Array};
    use std::sync::Arc;

    #[tokio::test]
    async fn an_sstable_reads_back_whole_with_its_range_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let s = SstStorage::open(SstOptions::new(dir.path())).unwrap();
        let entries = vec![
            RangeTombstone::new("a", "b", 9).to_entry(),
            Entry::put("a", 5, "new"),
            Entry::put("a", 1, "old"),
            Entry::delete("c", 3),
        ];
        let meta = write_table(&s, 4, &entries).await.unwrap();
        let path = dir.path().join(format!("{:020}.sst", meta.id));
        let file = read_table_file(&path).unwrap();
        assert_eq!(file.entries, entries[1..].to_vec());
        assert_eq!(file.range_deletes, vec![RangeTombstone::new("a", "b", 9)]);
    }

    /// A Parquet file with Cairn's schema, written in any row order (as pyarrow may write
    /// it), reads back in internal order; anything else is refused, naming the file.
    #[test]
    fn a_parquet_file_in_any_order_reads_back_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loose.parquet");
        let col = |v: Vec<&str>| -> ArrayRef {
            Arc::new(BinaryArray::from_iter_values(
                v.into_iter().map(str::as_bytes),
            ))
        };
        let batch = RecordBatch::try_new(
            crate::table_schema(),
            vec![
                col(vec!["b", "a", "b", "c"]),
                Arc::new(UInt64Array::from(vec![1, 2, 7, 3])),
                Arc::new(UInt8Array::from(vec![0, 0, 0, 1])),
                col(vec!["b1", "a2", "b7", ""]),
            ],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            crate::table_schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let file = read_table_file(&path).unwrap();
        let got: Vec<(String, u64)> = file
            .entries
            .iter()
            .map(|e| (String::from_utf8_lossy(&e.key).into_owned(), e.seq))
            .collect();
        let want = [("a", 2), ("b", 7), ("b", 1), ("c", 3)];
        assert_eq!(got, want.map(|(k, s)| (k.to_string(), s)).to_vec());
        assert!(file.entries[3].is_delete());

        let junk = dir.path().join("junk.bin");
        std::fs::write(&junk, b"not a table at all").unwrap();
        let e = read_table_file(&junk).unwrap_err().to_string();
        assert!(
            e.contains("neither a Cairn SSTable nor a Parquet file"),
            "{e}"
        );
    }
}
