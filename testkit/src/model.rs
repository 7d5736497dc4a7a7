//! Helpers of the model-based tests, which check every read against a `BTreeMap`: random key
//! ranges of every bound kind, and what the model holds in a range.

use bytes::Bytes;
use cairn_common::KeyRange;
use rand::Rng;
use std::collections::BTreeMap;
use std::ops::Bound;

pub type Model = BTreeMap<Bytes, Bytes>;

/// A range between two keys drawn with `key`, each end unbounded, included or excluded.
pub fn random_range<R: Rng>(rng: &mut R, mut key: impl FnMut(&mut R) -> Bytes) -> KeyRange {
    let a = key(rng);
    let b = key(rng);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let start = match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(lo),
        _ => Bound::Excluded(lo),
    };
    let end = match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(hi),
        _ => Bound::Excluded(hi),
    };
    KeyRange { start, end }
}

/// Removes the keys in `[start, end)`, as a range delete does.
pub fn remove_range(model: &mut Model, start: &Bytes, end: &Bytes) {
    let gone: Vec<Bytes> = model
        .range::<Bytes, _>((Bound::Included(start), Bound::Excluded(end)))
        .map(|(k, _)| k.clone())
        .collect();
    for k in gone {
        model.remove(&k);
    }
}

/// The model's pairs in `r`, in key order: what a scan of `r` must return.
pub fn model_range(model: &Model, r: &KeyRange) -> Vec<(Bytes, Bytes)> {
    model
        .iter()
        .filter(|(k, _)| r.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
