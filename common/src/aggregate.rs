//! Aggregates over the values of a key range: count, sum, min, max and average.
//!
//! `count` counts live keys. The numeric operations read each value that is exactly 8 bytes as
//! a little-endian number, an `i64` or an `f64` as the caller says. Other values are not numbers:
//! they are counted in `skipped` and left out. An [`AggregateState`] is a partial result that
//! merges with others, so shards or tables can each fold their part and a caller combine them.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOp {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl FromStr for AggregateOp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "count" => AggregateOp::Count,
            "sum" => AggregateOp::Sum,
            "min" => AggregateOp::Min,
            "max" => AggregateOp::Max,
            "avg" => AggregateOp::Avg,
            other => {
                return Err(format!(
                    "unknown aggregate `{other}` (count, sum, min, max, avg)"
                ));
            }
        })
    }
}

/// How an 8-byte value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    #[default]
    I64,
    F64,
}

impl FromStr for ValueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "i64" => Ok(ValueType::I64),
            "f64" => Ok(ValueType::F64),
            other => Err(format!("unknown value type `{other}` (i64, f64)")),
        }
    }
}

/// A mergeable partial aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggregateState {
    pub value_type: ValueType,
    /// Live keys seen.
    pub rows: u64,
    /// Values that were numbers (8 bytes).
    pub numeric: u64,
    /// Values that were not.
    pub skipped: u64,
    /// Integer sums are kept exactly.
    pub sum_i: i128,
    pub sum_f: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_i: Option<i64>,
    pub max_i: Option<i64>,
    /// Keys whose newest version a part could not fold alone (a merge operand, or an
    /// expiring put, which needs the reader's clock): the engine then folds a merged scan.
    #[serde(default)]
    pub unresolved: u64,
}

/// The answer to one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AggregateValue {
    Int(i128),
    Float(f64),
    /// min, max or avg over no numbers.
    Null,
}

impl std::fmt::Display for AggregateValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateValue::Int(v) => write!(f, "{v}"),
            AggregateValue::Float(v) => write!(f, "{v}"),
            AggregateValue::Null => write!(f, "null"),
        }
    }
}

impl AggregateState {
    pub fn new(value_type: ValueType) -> Self {
        AggregateState {
            value_type,
            rows: 0,
            numeric: 0,
            skipped: 0,
            sum_i: 0,
            sum_f: 0.0,
            min: None,
            max: None,
            min_i: None,
            max_i: None,
            unresolved: 0,
        }
    }

    /// Folds one live value in.
    pub fn add(&mut self, value: &[u8]) {
        self.rows += 1;
        let Ok(raw) = <[u8; 8]>::try_from(value) else {
            self.skipped += 1;
            return;
        };
        self.numeric += 1;
        match self.value_type {
            ValueType::I64 => {
                let v = i64::from_le_bytes(raw);
                self.sum_i += i128::from(v);
                self.min_i = Some(self.min_i.map_or(v, |m| m.min(v)));
                self.max_i = Some(self.max_i.map_or(v, |m| m.max(v)));
            }
            ValueType::F64 => {
                let v = f64::from_le_bytes(raw);
                self.sum_f += v;
                self.min = Some(self.min.map_or(v, |m| m.min(v)));
                self.max = Some(self.max.map_or(v, |m| m.max(v)));
            }
        }
    }

    pub fn merge(&mut self, other: &AggregateState) {
        self.rows += other.rows;
        self.numeric += other.numeric;
        self.skipped += other.skipped;
        self.unresolved += other.unresolved;
        self.sum_i += other.sum_i;
        self.sum_f += other.sum_f;
        let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(x), Some(y)) => Some(f(x, y)),
            (x, y) => x.or(y),
        };
        self.min = pick(self.min, other.min, f64::min);
        self.max = pick(self.max, other.max, f64::max);
        self.min_i = self.min_i.into_iter().chain(other.min_i).min();
        self.max_i = self.max_i.into_iter().chain(other.max_i).max();
    }

    pub fn result(&self, op: AggregateOp) -> AggregateValue {
        let int = self.value_type == ValueType::I64;
        match op {
            AggregateOp::Count => AggregateValue::Int(i128::from(self.rows)),
            AggregateOp::Sum if int => AggregateValue::Int(self.sum_i),
            AggregateOp::Sum => AggregateValue::Float(self.sum_f),
            AggregateOp::Min if int => self
                .min_i
                .map_or(AggregateValue::Null, |v| AggregateValue::Int(v.into())),
            AggregateOp::Max if int => self
                .max_i
                .map_or(AggregateValue::Null, |v| AggregateValue::Int(v.into())),
            AggregateOp::Min => self.min.map_or(AggregateValue::Null, AggregateValue::Float),
            AggregateOp::Max => self.max.map_or(AggregateValue::Null, AggregateValue::Float),
            AggregateOp::Avg if self.numeric == 0 => AggregateValue::Null,
            AggregateOp::Avg if int => {
                AggregateValue::Float(self.sum_i as f64 / self.numeric as f64)
            }
            AggregateOp::Avg => AggregateValue::Float(self.sum_f / self.numeric as f64),
        }
    }
}

/// A value type's number on the wire (the services' `value_type` fields).
impl From<ValueType> for u32 {
    fn from(v: ValueType) -> u32 {
        match v {
            ValueType::I64 => 0,
            ValueType::F64 => 1,
        }
    }
}

impl TryFrom<u32> for ValueType {
    type Error = crate::Error;

    fn try_from(v: u32) -> crate::Result<Self> {
        match v {
            0 => Ok(ValueType::I64),
            1 => Ok(ValueType::F64),
            _ => Err(crate::Error::InvalidArgument(format!(
                "unknown value type {v}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_floats_and_non_numbers() {
        let mut s = AggregateState::new(ValueType::I64);
        for v in [5i64, -3, 10] {
            s.add(&v.to_le_bytes());
        }
        s.add(b"not a number");
        assert_eq!(s.result(AggregateOp::Count), AggregateValue::Int(4));
        assert_eq!(s.result(AggregateOp::Sum), AggregateValue::Int(12));
        assert_eq!(s.result(AggregateOp::Min), AggregateValue::Int(-3));
        assert_eq!(s.result(AggregateOp::Max), AggregateValue::Int(10));
        assert_eq!(s.result(AggregateOp::Avg), AggregateValue::Float(4.0));
        assert_eq!(s.skipped, 1);

        let mut f = AggregateState::new(ValueType::F64);
        f.add(&1.5f64.to_le_bytes());
        f.add(&2.5f64.to_le_bytes());
        assert_eq!(f.result(AggregateOp::Sum), AggregateValue::Float(4.0));
        assert_eq!(
            AggregateState::new(ValueType::F64).result(AggregateOp::Avg),
            AggregateValue::Null
        );
    }

    #[test]
    fn merging_partials_equals_folding_everything() {
        let values: Vec<i64> = (-50..50).map(|i| i * 7919 % 1000).collect();
        let mut whole = AggregateState::new(ValueType::I64);
        let (mut a, mut b) = (
            AggregateState::new(ValueType::I64),
            AggregateState::new(ValueType::I64),
        );
        for (i, v) in values.iter().enumerate() {
            whole.add(&v.to_le_bytes());
            if i % 3 == 0 {
                a.add(&v.to_le_bytes())
            } else {
                b.add(&v.to_le_bytes())
            }
        }
        a.merge(&b);
        assert_eq!(a, whole);
        let sum_exact = AggregateState {
            sum_i: i128::from(i64::MAX) * 2,
            ..whole
        };
        assert_eq!(
            sum_exact.result(AggregateOp::Sum),
            AggregateValue::Int(i128::from(i64::MAX) * 2),
            "no overflow"
        );
    }
}
