//! Merge operators and compaction filters: user logic that runs inside the engine, on read
//! and in flushes and compactions, wherever those run. Each is registered by name in an
//! [`Operators`] registry and a database names the ones it uses, so a compaction job sent to
//! a remote worker carries names, and the worker runs its own registered copy. An unknown
//! name is an error where it is looked up: at open, and at the worker.

use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Folds merge operands into a value, as RocksDB's and SlateDB's merge operators do.
pub trait MergeOperator: Send + Sync {
    /// The name a database configures and a compaction job carries.
    fn name(&self) -> &str;

    /// Refuses, at write time, an operand this operator could not fold.
    fn check_operand(&self, _operand: &[u8]) -> Result<()> {
        Ok(())
    }

    /// The value of `key` given its older value (`None`: there is none) and its operands,
    /// oldest first.
    fn full_merge(&self, key: &[u8], base: Option<&[u8]>, operands: &[Bytes]) -> Result<Bytes>;

    /// One operand that stands for `operands` (oldest first), when the operator can fold
    /// them without the older value; `None` keeps them apart until the value is known.
    fn partial_merge(&self, _key: &[u8], _operands: &[Bytes]) -> Option<Bytes> {
        None
    }
}

/// What a compaction filter does with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    Keep,
    /// The key is deleted: its newest version becomes a tombstone.
    Remove,
    /// The value is replaced.
    Change(Bytes),
}

/// Runs on each key's newest value that every reader sees, when compaction rewrites it, as
/// RocksDB's compaction filters do. Readers see its decisions only once compaction has made
/// them.
pub trait CompactionFilter: Send + Sync {
    fn name(&self) -> &str;
    fn filter(&self, key: &[u8], value: &[u8]) -> FilterDecision;
}

/// Merge operators and compaction filters by name. `Default` holds the built-ins:
/// merge operators `add` and `max` (8-byte little-endian i64, the encoding aggregates read)
/// and `append` (bytes concatenated), and the filter `remove-empty-values`.
#[derive(Clone)]
pub struct Operators {
    merges: BTreeMap<String, Arc<dyn MergeOperator>>,
    filters: BTreeMap<String, Arc<dyn CompactionFilter>>,
}

impl Default for Operators {
    fn default() -> Self {
        Operators {
            merges: BTreeMap::new(),
            filters: BTreeMap::new(),
        }
        .with_merge(Arc::new(AddI64))
        .with_merge(Arc::new(MaxI64))
        .with_merge(Arc::new(Append))
        .with_filter(Arc::new(RemoveEmptyValues))
    }
}

impl Operators {
    /// Registers `op` under its name, replacing one of the same name.
    pub fn with_merge(mut self, op: Arc<dyn MergeOperator>) -> Self {
        self.merges.insert(op.name().to_string(), op);
        self
    }

    pub fn with_filter(mut self, f: Arc<dyn CompactionFilter>) -> Self {
        self.filters.insert(f.name().to_string(), f);
        self
    }

    pub fn merge(&self, name: &str) -> Result<Arc<dyn MergeOperator>> {
        self.merges
            .get(name)
            .cloned()
            .ok_or_else(|| unknown("merge operator", name, self.merges.keys()))
    }

    pub fn filter(&self, name: &str) -> Result<Arc<dyn CompactionFilter>> {
        self.filters
            .get(name)
            .cloned()
            .ok_or_else(|| unknown("compaction filter", name, self.filters.keys()))
    }
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> Error {
    let known: Vec<&str> = known.map(String::as_str).collect();
    Error::InvalidArgument(format!(
        "unknown {what} `{name}` (registered here: {})",
        known.join(", ")
    ))
}

impl fmt::Debug for Operators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operators")
            .field("merges", &self.merges.keys().collect::<Vec<_>>())
            .field("filters", &self.filters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Operators {
    fn eq(&self, other: &Self) -> bool {
        self.merges.keys().eq(other.merges.keys()) && self.filters.keys().eq(other.filters.keys())
    }
}

impl Eq for Operators {}

/// An 8-byte little-endian i64, or `None`.
fn as_i64(v: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(v.try_into().ok()?))
}

fn check_i64(name: &str, operand: &[u8]) -> Result<()> {
    match as_i64(operand) {
        Some(_) => Ok(()),
        None => Err(Error::InvalidArgument(format!(
            "the `{name}` merge operator takes 8-byte little-endian i64 operands, not {} bytes",
            operand.len()
        ))),
    }
}

/// Folds i64s with `f`. An older value that is not an 8-byte i64 counts as absent, as
/// RocksDB's uint64add treats a malformed value as 0: a merge must not fail in compaction,
/// where it would fail again on every retry. Operands are checked when written.
fn fold_i64(base: Option<&[u8]>, operands: &[Bytes], f: fn(i64, i64) -> i64) -> Option<i64> {
    base.and_then(as_i64)
        .into_iter()
        .chain(operands.iter().filter_map(|o| as_i64(o)))
        .reduce(f)
}

struct AddI64;

impl MergeOperator for AddI64 {
    fn name(&self) -> &str {
        "add"
    }
    fn check_operand(&self, operand: &[u8]) -> Result<()> {
        check_i64("add", operand)
    }
    fn full_merge(&self, _key: &[u8], base: Option<&[u8]>, operands: &[Bytes]) -> Result<Bytes> {
        let sum = fold_i64(base, operands, i64::wrapping_add).unwrap_or(0);
        Ok(Bytes::copy_from_slice(&sum.to_le_bytes()))
    }
    fn partial_merge(&self, key: &[u8], operands: &[Bytes]) -> Option<Bytes> {
        self.full_merge(key, None, operands).ok()
    }
}

struct MaxI64;

impl MergeOperator for MaxI64 {
    fn name(&self) -> &str {
        "max"
    }
    fn check_operand(&self, operand: &[u8]) -> Result<()> {
        check_i64("max", operand)
    }
    fn full_merge(&self, _key: &[u8], base: Option<&[u8]>, operands: &[Bytes]) -> Result<Bytes> {
        let max = fold_i64(base, operands, i64::max).unwrap_or(i64::MIN);
        Ok(Bytes::copy_from_slice(&max.to_le_bytes()))
    }
    fn partial_merge(&self, key: &[u8], operands: &[Bytes]) -> Option<Bytes> {
        self.full_merge(key, None, operands).ok()
    }
}

struct Append;

impl MergeOperator for Append {
    fn name(&self) -> &str {
        "append"
    }
    fn full_merge(&self, _key: &[u8], base: Option<&[u8]>, operands: &[Bytes]) -> Result<Bytes> {
        let len = base.map_or(0, <[u8]>::len) + operands.iter().map(Bytes::len).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(base.unwrap_or_default());
        operands.iter().for_each(|o| out.extend_from_slice(o));
        Ok(Bytes::from(out))
    }
    fn partial_merge(&self, key: &[u8], operands: &[Bytes]) -> Option<Bytes> {
        self.full_merge(key, None, operands).ok()
    }
}

/// Removes keys whose value is empty, as RocksDB's RemoveEmptyValueCompactionFilter does.
struct RemoveEmptyValues;

impl CompactionFilter for RemoveEmptyValues {
    fn name(&self) -> &str {
        "remove-empty-values"
    }
    fn filter(&self, _key: &[u8], value: &[u8]) -> FilterDecision {
        if value.is_empty() {
            FilterDecision::Remove
        } else {
            FilterDecision::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: i64) -> Bytes {
        Bytes::copy_from_slice(&v.to_le_bytes())
    }

    #[test]
    fn built_ins_fold_and_partial_folds_agree() {
        let ops = Operators::default();
        let add = ops.merge("add").unwrap();
        assert_eq!(
            add.full_merge(b"k", Some(&n(10)), &[n(1), n(2)]).unwrap(),
            n(13)
        );
        assert_eq!(add.full_merge(b"k", None, &[n(-4)]).unwrap(), n(-4));
        // A malformed older value counts as absent; a malformed operand is refused.
        assert_eq!(add.full_merge(b"k", Some(b"xy"), &[n(3)]).unwrap(), n(3));
        assert!(add.check_operand(b"five").is_err());
        let partial = add.partial_merge(b"k", &[n(1), n(2)]).unwrap();
        assert_eq!(
            add.full_merge(b"k", Some(&n(10)), &[partial]).unwrap(),
            n(13)
        );

        let max = ops.merge("max").unwrap();
        assert_eq!(
            max.full_merge(b"k", Some(&n(5)), &[n(9), n(-1)]).unwrap(),
            n(9)
        );

        let append = ops.merge("append").unwrap();
        let ab = append.partial_merge(b"k", &[Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(
            append
                .full_merge(b"k", Some(b"x"), &[ab.unwrap(), Bytes::from("c")])
                .unwrap(),
            Bytes::from("xabc")
        );

        let f = ops.filter("remove-empty-values").unwrap();
        assert_eq!(f.filter(b"k", b""), FilterDecision::Remove);
        assert_eq!(f.filter(b"k", b"v"), FilterDecision::Keep);
    }

    #[test]
    fn an_unknown_name_is_an_error_that_lists_the_known_ones() {
        let e = Operators::default().merge("mul").err().unwrap().to_string();
        assert!(
            e.contains("unknown merge operator `mul`") && e.contains("add"),
            "{e}"
        );
        let e = Operators::default()
            .filter("nope")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("remove-empty-values"), "{e}");
    }
}
