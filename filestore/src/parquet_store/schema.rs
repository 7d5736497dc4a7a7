//! The Arrow schema of a Parquet table, stable across versions (see `FORMAT.md`): one row per
//! entry, in internal order (key ascending, then seq descending).

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use cairn_common::{Error, Result};
use std::sync::{Arc, LazyLock};

/// Key-value metadata entry holding the table's `TableMeta` as JSON (size excluded).
pub const TABLE_META_KEY: &str = "cairn.table_meta";

/// Key-value metadata entry, `"true"` when every key appears once (as in a compaction's
/// output): a reader may then skip the seq and kind columns where statistics allow.
pub const UNIQUE_KEYS_KEY: &str = "cairn.unique_keys";

/// Key-value metadata entry holding the table's range tombstones as JSON, present only when
/// it has some: they are rows too (kind 2), but a reader needs them all at open.
pub const RANGE_DELETES_KEY: &str = "cairn.range_deletes";

/// Key-value metadata entry holding the `[values]` section (JSON) that the columns after
/// `value` were decoded by; present only when there are such columns.
pub const VALUE_COLUMNS_KEY: &str = "cairn.value_columns";

pub(crate) const KEY: usize = 0;
pub(crate) const SEQ: usize = 1;
pub(crate) const KIND: usize = 2;
pub(crate) const VALUE: usize = 3;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("seq", DataType::UInt64, false),
        // 0 = put, 1 = delete (a tombstone, whose value is empty), 2 = range delete (the
        // key is the first key deleted, the value the end, excluded).
        Field::new("kind", DataType::UInt8, false),
        Field::new("value", DataType::Binary, false),
    ]))
});

pub fn table_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The table's own columns, in order: the ones every read of entries projects.
pub(crate) const OWN: [usize; 4] = [KEY, SEQ, KIND, VALUE];

/// Refuses a file whose first columns are not Cairn's (declared value columns may follow).
pub(crate) fn check(found: &Schema, what: &str) -> Result<()> {
    let expected = table_schema();
    let same = found.fields().len() >= expected.fields().len()
        && found
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if same {
        Ok(())
    } else {
        Err(Error::Corruption {
            what: what.to_string(),
            detail: format!("not a Cairn table schema: {found}"),
        })
    }
}
