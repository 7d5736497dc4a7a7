//! The `kv` table's columns, and its batches built two ways: from live entries, whose values
//! are decoded here, and from a table's own column data, whose shadowed rows are dropped.

use bytes::Bytes;
use cairn_filestore::ValueColumns;
use cairn_filestore::value_columns::KeyEncoding;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, RecordBatch, RecordBatchOptions, StringBuilder,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use std::sync::Arc;

/// Rows per batch built from entries.
pub(crate) const BATCH_ROWS: usize = 8192;

/// The `kv` table's columns (`key`, `value`, then the declared ones) and what a scan
/// projects of them.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub projected: SchemaRef,
    key_utf8: bool,
    /// The declarations narrowed to the projected columns: only those are decoded.
    decode: ValueColumns,
    /// The projected columns a table gives besides the key, for `Table::columns`.
    pub stored: Vec<Field>,
    pub projects_key: bool,
}

/// The whole table's schema. Declared text columns are `Utf8View`, as DataFusion reads
/// Parquet text: read into views, short values are not copied, and grouping by them is faster.
pub(crate) fn schema(columns: &ValueColumns) -> SchemaRef {
    let key = match columns.key {
        KeyEncoding::Bytes => DataType::Binary,
        KeyEncoding::Utf8 => DataType::Utf8,
    };
    let mut fields = vec![
        Field::new("key", key, false),
        Field::new("value", DataType::Binary, false),
    ];
    fields.extend(columns.fields().into_iter().map(|f| match f.data_type() {
        DataType::Utf8 => f.with_data_type(DataType::Utf8View),
        _ => f,
    }));
    Arc::new(Schema::new(fields))
}

impl Shape {
    pub(crate) fn new(columns: &ValueColumns, projection: Option<&Vec<usize>>) -> Result<Shape> {
        let full = schema(columns);
        let projected = match projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let names: Vec<&str> = projected
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let stored = projected
            .fields()
            .iter()
            .filter(|f| f.name() != "key")
            .map(|f| f.as_ref().clone())
            .collect();
        Ok(Shape {
            projects_key: names.contains(&"key"),
            decode: columns.only(&names),
            key_utf8: columns.key == KeyEncoding::Utf8,
            projected,
            stored,
        })
    }

    /// A batch of live puts.
    pub(crate) fn batch_of_entries(&self, rows: &[(Bytes, Bytes)]) -> Result<RecordBatch> {
        let mut decoded = {
            let mut d = self.decode.decoder(rows.len());
            rows.iter().for_each(|(_, v)| d.append(Some(v)));
            self.decode
                .columns()
                .into_iter()
                .map(|(n, _)| n)
                .zip(d.finish())
                .collect::<Vec<_>>()
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.projected.fields().len());
        for f in self.projected.fields() {
            arrays.push(match f.name().as_str() {
                "key" => self.keys(rows.iter().map(|(k, _)| k.as_ref()), rows.len())?,
                "value" => {
                    let bytes = rows.iter().map(|(_, v)| v.len()).sum();
                    let mut b = BinaryBuilder::with_capacity(rows.len(), bytes);
                    rows.iter().for_each(|(_, v)| b.append_value(v));
                    Arc::new(b.finish())
                }
                name => {
                    let i = decoded
                        .iter()
                        .position(|(n, _)| n == name)
                        .ok_or_else(|| DataFusionError::Internal(format!("no column {name}")))?;
                    let column = decoded.swap_remove(i).1;
                    if column.data_type() == f.data_type() {
                        column
                    } else {
                        cast(&column, f.data_type())?
                    }
                }
            });
        }
        self.batch(arrays, rows.len())
    }

    /// A batch of the projected columns; with none projected (`count(*)`), of rows alone.
    fn batch(&self, arrays: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.projected.clone(),
            arrays,
            &options,
        )?)
    }

    fn keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]>, n: usize) -> Result<ArrayRef> {
        Ok(if self.key_utf8 {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for k in keys {
                b.append_value(utf8(k)?);
            }
            Arc::new(b.finish())
        } else {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            keys.for_each(|k| b.append_value(k));
            Arc::new(b.finish())
        })
    }

    /// A batch of a table's column data (`stored`, and `key` where it is projected or
    /// `shadowed` may hold keys of the batch), with the rows whose keys are in `shadowed`
    /// (sorted) left out.
    pub(crate) fn batch_of_columns(
        &self,
        batch: RecordBatch,
        shadowed: &[Bytes],
    ) -> Result<RecordBatch> {
        let batch = drop_shadowed(batch, shadowed)?;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.projected.fields().len());
        for f in self.projected.fields() {
            let column = batch.column_by_name(f.name()).ok_or_else(|| {
                DataFusionError::Internal(format!("a table gave no column {}", f.name()))
            })?;
            arrays.push(if column.data_type() == f.data_type() {
                column.clone()
            } else {
                // The key (binary in the table, text in `kv`: the cast checks UTF-8), or text
                // a table gave as `Utf8`.
                cast(column, f.data_type())?
            });
        }
        self.batch(arrays, batch.num_rows())
    }
}

fn utf8(k: &[u8]) -> Result<&str> {
    std::str::from_utf8(k).map_err(|e| {
        DataFusionError::Execution(format!(
            "key {k:?} is not UTF-8 ({e}), but [values] key = \"utf8\" says keys are text"
        ))
    })
}

/// `batch` (sorted by its binary `key` column) without the rows `shadowed` names; a batch
/// read without its keys is one `shadowed` has none of.
fn drop_shadowed(batch: RecordBatch, shadowed: &[Bytes]) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let Some(keys) = batch.column_by_name("key") else {
        return Ok(batch);
    };
    if n == 0 || shadowed.is_empty() {
        return Ok(batch);
    }
    let keys = keys
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BinaryArray>()
        .ok_or_else(|| DataFusionError::Internal("a table's key column is not binary".into()))?;
    let (first, last) = (keys.value(0), keys.value(n - 1));
    let lo = shadowed.partition_point(|k| k.as_ref() < first);
    let hi = shadowed.partition_point(|k| k.as_ref() <= last);
    if lo == hi {
        return Ok(batch);
    }
    // Shadowed keys are few against the rows: each is looked up in the sorted batch,
    // rather than every row compared.
    let mut keep = vec![true; n];
    let mut dropped = false;
    let mut from = 0;
    for s in &shadowed[lo..hi] {
        let (mut a, mut b) = (from, n);
        while a < b {
            let mid = (a + b) / 2;
            if keys.value(mid) < s.as_ref() {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        if a < n && keys.value(a) == s.as_ref() {
            keep[a] = false;
            dropped = true;
        }
        from = a;
    }
    if !dropped {
        return Ok(batch);
    }
    Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, BinaryArray, Int64Array};

    #[test]
    fn shadowed_rows_are_dropped_and_the_rest_kept_in_order() {
        let keys = BinaryArray::from_iter_values([b"a", b"b", b"c", b"d"]);
        let n = Int64Array::from(vec![1, 2, 3, 4]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(n)]).unwrap();
        let shadowed = [
            Bytes::from("0"),
            Bytes::from("b"),
            Bytes::from("d"),
            Bytes::from("z"),
        ];
        let kept = drop_shadowed(batch, &shadowed).unwrap();
        let n = kept
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        assert_eq!(n.values(), &[1, 3]);
    }
}
