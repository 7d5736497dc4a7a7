//! The typed columns a database declares for its values (`[values]` in a config): how keys and
//! values are encoded, and which parts of a value become columns of their own. The Parquet
//! store writes those columns beside the raw `value`, so any Parquet reader sees an ordinary
//! table of typed columns; SQL's `kv` table (the `cairn-sql` crate) shows the same columns,
//! decoding values itself where a table has no such column.

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How keys are shown as a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEncoding {
    /// Binary.
    #[default]
    Bytes,
    /// UTF-8 text; a key that is not valid UTF-8 is an error where it is read as text.
    Utf8,
}

/// How values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// Opaque bytes: no column besides `value`.
    #[default]
    Bytes,
    /// UTF-8 text, one column.
    Utf8,
    /// An 8-byte little-endian signed integer (as `cairn aggregate --type i64` reads), one column.
    I64,
    /// An 8-byte little-endian IEEE float, one column.
    F64,
    /// A JSON object; each declared field is a column.
    Json,
    /// An Arrow IPC stream of one row (a schema message, then a record batch, as pyarrow's
    /// `ipc.new_stream` or arrow-rs's `StreamWriter` write it); each declared field is a
    /// column, taken from the stream's column of that name and type.
    Arrow,
}

/// The type of a declared column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Utf8,
    I64,
    F64,
    Bool,
}

impl FieldType {
    pub fn data_type(self) -> DataType {
        match self {
            FieldType::Utf8 => DataType::Utf8,
            FieldType::I64 => DataType::Int64,
            FieldType::F64 => DataType::Float64,
            FieldType::Bool => DataType::Boolean,
        }
    }
}

/// Column names a declared column may not take: the table's own.
pub const RESERVED: &[&str] = &["key", "seq", "kind", "value"];

/// The `[values]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValueColumns {
    pub key: KeyEncoding,
    pub encoding: ValueEncoding,
    /// The column of a `utf8`, `i64` or `f64` value; `v` when not set.
    pub column: Option<String>,
    /// The fields of a `json` value that become columns, with their types.
    pub fields: BTreeMap<String, FieldType>,
}

impl ValueColumns {
    /// The declared columns, in order.
    pub fn columns(&self) -> Vec<(String, FieldType)> {
        let name = || self.column.clone().unwrap_or_else(|| "v".to_string());
        match self.encoding {
            ValueEncoding::Bytes => Vec::new(),
            ValueEncoding::Utf8 => vec![(name(), FieldType::Utf8)],
            ValueEncoding::I64 => vec![(name(), FieldType::I64)],
            ValueEncoding::F64 => vec![(name(), FieldType::F64)],
            ValueEncoding::Json | ValueEncoding::Arrow => {
                self.fields.iter().map(|(n, t)| (n.clone(), *t)).collect()
            }
        }
    }

    /// The declared columns as nullable Arrow fields: a deleted key, or a value that does not
    /// decode as declared, has nulls there.
    pub fn fields(&self) -> Vec<Field> {
        self.columns()
            .into_iter()
            .map(|(n, t)| Field::new(n, t.data_type(), true))
            .collect()
    }

    /// The same declarations narrowed to the named columns (the others are not decoded).
    pub fn only(&self, names: &[&str]) -> ValueColumns {
        let mut c = self.clone();
        c.fields.retain(|n, _| names.contains(&n.as_str()));
        if !c.columns().iter().any(|(n, _)| names.contains(&n.as_str())) {
            c.encoding = ValueEncoding::Bytes;
            c.column = None;
        }
        c
    }

    /// What is wrong with the section, as the offending key (relative to the section) and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        let scalar = matches!(
            self.encoding,
            ValueEncoding::Utf8 | ValueEncoding::I64 | ValueEncoding::F64
        );
        if self.column.is_some() && !scalar {
            return Err((
                "column".into(),
                "names the column of a utf8, i64 or f64 value; for json and arrow name `fields`"
                    .into(),
            ));
        }
        let has_fields = matches!(self.encoding, ValueEncoding::Json | ValueEncoding::Arrow);
        if !self.fields.is_empty() && !has_fields {
            return Err((
                "fields".into(),
                "applies to encoding = \"json\" or \"arrow\" only".into(),
            ));
        }
        if let Some(c) = &self.column {
            check_name(c).map_err(|why| ("column".to_string(), why))?;
        }
        for name in self.fields.keys() {
            check_name(name).map_err(|why| (format!("fields.{name}"), why))?;
        }
        Ok(())
    }

    /// Builds the declared columns of a batch of values, one row each (`None`: a tombstone).
    pub fn decoder(&self, capacity: usize) -> ColumnDecoder {
        ColumnDecoder {
            encoding: self.encoding,
            columns: self
                .columns()
                .into_iter()
                .map(|(name, t)| (name, Builder::new(t, capacity)))
                .collect(),
        }
    }
}

/// A column name SQL can use unquoted, and not one of the table's own.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!(
            "`{name}` is not a column name: use lowercase letters, digits and `_`, not first a digit"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!("`{name}` is a column of the table already"));
    }
    Ok(())
}

enum Builder {
    Utf8(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(t: FieldType, capacity: usize) -> Builder {
        match t {
            FieldType::Utf8 => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 8)),
            FieldType::I64 => Builder::I64(Int64Builder::with_capacity(capacity)),
            FieldType::F64 => Builder::F64(Float64Builder::with_capacity(capacity)),
            FieldType::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
        }
    }

    fn null(&mut self) {
        match self {
            Builder::Utf8(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
        }
    }

    /// Appends a JSON field's value, null where it is missing or of another type. An integer
    /// is a valid f64; a float is not a valid i64.
    fn json(&mut self, v: Option<&serde_json::Value>) {
        match (self, v) {
            (Builder::Utf8(b), Some(serde_json::Value::String(s))) => b.append_value(s),
            (Builder::I64(b), Some(v)) if v.is_i64() => b.append_option(v.as_i64()),
            (Builder::F64(b), Some(v)) if v.is_number() => b.append_option(v.as_f64()),
            (Builder::Bool(b), Some(serde_json::Value::Bool(x))) => b.append_value(*x),
            (b, _) => b.null(),
        }
    }

    /// Appends row 0 of an Arrow column, null where it is missing, of another type or null.
    fn arrow(&mut self, column: Option<&ArrayRef>) {
        let Some(c) = column.filter(|c| c.is_valid(0)) else {
            self.null();
            return;
        };
        match (self, c.data_type()) {
            (Builder::Utf8(b), DataType::Utf8) => b.append_value(c.as_string::<i32>().value(0)),
            (Builder::Utf8(b), DataType::LargeUtf8) => {
                b.append_value(c.as_string::<i64>().value(0))
            }
            (Builder::Utf8(b), DataType::Utf8View) => b.append_value(c.as_string_view().value(0)),
            (Builder::I64(b), DataType::Int64) => {
                b.append_value(c.as_primitive::<Int64Type>().value(0))
            }
            (Builder::F64(b), DataType::Float64) => {
                let x = c.as_primitive::<Float64Type>().value(0);
                b.append_option((!x.is_nan()).then_some(x))
            }
            (Builder::Bool(b), DataType::Boolean) => b.append_value(c.as_boolean().value(0)),
            (b, _) => b.null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Decodes values into the declared columns, a row at a time. A NaN is a null: then a
/// column's statistics (which leave NaNs out) bound every value it holds, and scans may skip
/// row groups by them.
pub struct ColumnDecoder {
    encoding: ValueEncoding,
    columns: Vec<(String, Builder)>,
}

impl ColumnDecoder {
    /// Appends one row: `None` for a deleted key, whose columns are null.
    pub fn append(&mut self, value: Option<&[u8]>) {
        let Some(value) = value else {
            self.columns.iter_mut().for_each(|(_, b)| b.null());
            return;
        };
        match (self.encoding, self.columns.first_mut()) {
            (ValueEncoding::Bytes, _) | (_, None) => {}
            (ValueEncoding::Utf8, Some((_, Builder::Utf8(b)))) => {
                b.append_option(std::str::from_utf8(value).ok())
            }
            (ValueEncoding::I64, Some((_, Builder::I64(b)))) => {
                b.append_option(value.try_into().ok().map(i64::from_le_bytes))
            }
            (ValueEncoding::F64, Some((_, Builder::F64(b)))) => b.append_option(
                value
                    .try_into()
                    .ok()
                    .map(f64::from_le_bytes)
                    .filter(|x| !x.is_nan()),
            ),
            (ValueEncoding::Json, _) => match serde_json::from_slice::<serde_json::Value>(value) {
                Ok(serde_json::Value::Object(map)) => {
                    for (name, b) in &mut self.columns {
                        b.json(map.get(name.as_str()));
                    }
                }
                _ => self.columns.iter_mut().for_each(|(_, b)| b.null()),
            },
            (ValueEncoding::Arrow, _) => match one_row(value) {
                Some(row) => {
                    for (name, b) in &mut self.columns {
                        b.arrow(row.column_by_name(name));
                    }
                }
                None => self.columns.iter_mut().for_each(|(_, b)| b.null()),
            },
            (_, Some((_, b))) => b.null(),
        }
    }

    /// The columns of the rows appended since the last call.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns.iter_mut().map(|(_, b)| b.finish()).collect()
    }
}

/// The one row of the Arrow IPC stream `value`; `None` if it is not one, or holds another
/// number of rows.
fn one_row(value: &[u8]) -> Option<RecordBatch> {
    let mut reader = arrow_ipc::reader::StreamReader::try_new(value, None).ok()?;
    let batch = reader.next()?.ok()?;
    (batch.num_rows() == 1 && reader.next().is_none()).then_some(batch)
}

/// `base` followed by the declared columns.
pub fn extend_schema(base: &Schema, columns: &ValueColumns) -> SchemaRef {
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(columns.fields());
    Arc::new(Schema::new(fields))
}

/// `batch` with the declared columns of its rows appended, decoded from `values` (`None`:
/// a row without a live value).
pub fn with_columns<'a>(
    batch: RecordBatch,
    columns: &ValueColumns,
    values: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    if columns.columns().is_empty() {
        return Ok(batch);
    }
    let mut decoder = columns.decoder(values.len());
    values.for_each(|v| decoder.append(v));
    let schema = extend_schema(batch.schema_ref(), columns);
    let mut arrays = batch.columns().to_vec();
    arrays.extend(decoder.finish());
    RecordBatch::try_new(schema, arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};

    fn json(fields: &[(&str, FieldType)]) -> ValueColumns {
        ValueColumns {
            encoding: ValueEncoding::Json,
            fields: fields.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn json_fields_decode_to_typed_columns_and_anything_else_is_null() {
        let c = json(&[
            ("amount", FieldType::F64),
            ("n", FieldType::I64),
            ("ok", FieldType::Bool),
            ("user", FieldType::Utf8),
        ]);
        let mut d = c.decoder(4);
        d.append(Some(br#"{"user":"ann","amount":2.5,"n":3,"ok":true}"#));
        d.append(Some(br#"{"user":7,"amount":4,"n":1.5}"#));
        d.append(None);
        d.append(Some(b"not json"));
        let cols = d.finish();
        let amount = cols[0].as_primitive::<Float64Type>();
        assert_eq!(
            amount.iter().collect::<Vec<_>>(),
            [Some(2.5), Some(4.0), None, None]
        );
        let n = cols[1].as_primitive::<Int64Type>();
        assert_eq!(n.iter().collect::<Vec<_>>(), [Some(3), None, None, None]);
        let ok = cols[2].as_boolean();
        assert_eq!(
            ok.iter().collect::<Vec<_>>(),
            [Some(true), None, None, None]
        );
        let user = cols[3].as_string::<i32>();
        assert_eq!(
            user.iter().collect::<Vec<_>>(),
            [Some("ann"), None, None, None]
        );
    }

    /// One Arrow IPC stream of `columns` (name, array), as a value.
    fn arrow_value(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut out = Vec::new();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    }

    #[test]
    fn arrow_values_decode_by_field_name_and_type_and_anything_else_is_null() {
        use arrow_array::{BooleanArray, Float64Array, Int64Array, StringArray};
        let c = ValueColumns {
            encoding: ValueEncoding::Arrow,
            fields: [
                ("amount", FieldType::F64),
                ("n", FieldType::I64),
                ("ok", FieldType::Bool),
                ("user", FieldType::Utf8),
            ]
            .iter()
            .map(|(n, t)| (n.to_string(), *t))
            .collect(),
            ..Default::default()
        };
        assert_eq!(c.check(), Ok(()));
        let full = arrow_value(vec![
            ("user", Arc::new(StringArray::from(vec!["ann"])) as ArrayRef),
            ("ok", Arc::new(BooleanArray::from(vec![true])) as ArrayRef),
            ("n", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
            (
                "amount",
                Arc::new(Float64Array::from(vec![2.5])) as ArrayRef,
            ),
            ("extra", Arc::new(Int64Array::from(vec![9])) as ArrayRef),
        ]);
        // `n` of another type, `user` null, the rest missing.
        let partial = arrow_value(vec![
            ("n", Arc::new(Float64Array::from(vec![1.5])) as ArrayRef),
            (
                "user",
                Arc::new(StringArray::from(vec![None::<&str>])) as ArrayRef,
            ),
        ]);
        let two_rows = arrow_value(vec![(
            "n",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )]);
        let mut d = c.decoder(5);
        d.append(Some(&full));
        d.append(Some(&partial));
        d.append(Some(&two_rows));
        d.append(Some(&full[..full.len() / 2]));
        d.append(None);
        let cols = d.finish();
        let amount = cols[0].as_primitive::<Float64Type>();
        assert_eq!(
            amount.iter().collect::<Vec<_>>(),
            [Some(2.5), None, None, None, None]
        );
        let n = cols[1].as_primitive::<Int64Type>();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            [Some(3), None, None, None, None]
        );
        assert_eq!(
            cols[2].as_boolean().iter().collect::<Vec<_>>(),
            [Some(true), None, None, None, None]
        );
        assert_eq!(
            cols[3].as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("ann"), None, None, None, None]
        );
    }

    #[test]
    fn scalar_values_decode_to_one_column() {
        let c = ValueColumns {
            encoding: ValueEncoding::I64,
            column: Some("hits".into()),
            ..Default::default()
        };
        assert_eq!(c.columns(), [("hits".to_string(), FieldType::I64)]);
        let mut d = c.decoder(2);
        d.append(Some(&42i64.to_le_bytes()));
        d.append(Some(b"short"));
        let cols = d.finish();
        let hits = cols[0].as_primitive::<Int64Type>();
        assert_eq!(hits.iter().collect::<Vec<_>>(), [Some(42), None]);
    }

    #[test]
    fn a_bad_section_names_its_key() {
        let mut c = json(&[("Amount", FieldType::F64)]);
        assert_eq!(c.check().unwrap_err().0, "fields.Amount");
        c = json(&[("value", FieldType::F64)]);
        assert!(c.check().unwrap_err().1.contains("already"));
        c.encoding = ValueEncoding::I64;
        assert_eq!(c.check().unwrap_err().0, "fields");
        c = ValueColumns {
            column: Some("v".into()),
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().0, "column");
        assert!(json(&[("amount", FieldType::F64)]).check().is_ok());
    }
}
