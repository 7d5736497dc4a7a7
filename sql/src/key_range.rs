//! Which `WHERE` conditions narrow the key range a query reads: comparisons of `key` with a
//! literal, and `BETWEEN`. The scan applies them exactly, so DataFusion need not filter
//! again, and a `LIMIT` over them reaches the scan.

use bytes::Bytes;
use cairn_common::KeyRange;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use std::cmp::Ordering;
use std::ops::Bound;

/// The bounds `expr` puts on the key, or `None` when it is not a condition on the key alone.
pub(crate) fn of(expr: &Expr) -> Option<KeyRange> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, literal) = match (key_column(left), key_column(right)) {
                (true, false) => (*op, literal(right)?),
                (false, true) => (op.swap()?, literal(left)?),
                _ => return None,
            };
            let (start, end) = match op {
                Operator::Eq => (Bound::Included(literal.clone()), Bound::Included(literal)),
                Operator::Lt => (Bound::Unbounded, Bound::Excluded(literal)),
                Operator::LtEq => (Bound::Unbounded, Bound::Included(literal)),
                Operator::Gt => (Bound::Excluded(literal), Bound::Unbounded),
                Operator::GtEq => (Bound::Included(literal), Bound::Unbounded),
                _ => return None,
            };
            Some(KeyRange { start, end })
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if key_column(expr) => Some(KeyRange {
            start: Bound::Included(literal(low)?),
            end: Bound::Included(literal(high)?),
        }),
        _ => None,
    }
}

/// The range the key conditions among `filters` leave.
pub(crate) fn of_all(filters: &[Expr]) -> KeyRange {
    filters
        .iter()
        .filter_map(of)
        .fold(KeyRange::all(), intersect)
}

/// The intersection of two ranges.
pub(crate) fn intersect(a: KeyRange, b: KeyRange) -> KeyRange {
    KeyRange {
        start: narrower(a.start, b.start, Ordering::Greater),
        end: narrower(a.end, b.end, Ordering::Less),
    }
}

/// Of two bounds on one side, the narrower: the one whose key is further in (`inward`),
/// or the excluding one of two at the same key.
fn narrower(x: Bound<Bytes>, y: Bound<Bytes>, inward: Ordering) -> Bound<Bytes> {
    match (x, y) {
        (Bound::Unbounded, b) | (b, Bound::Unbounded) => b,
        (x, y) => match bound_key(&x).cmp(bound_key(&y)) {
            o if o == inward => x,
            Ordering::Equal if matches!(x, Bound::Excluded(_)) => x,
            _ => y,
        },
    }
}

fn bound_key(b: &Bound<Bytes>) -> &[u8] {
    match b {
        Bound::Included(k) | Bound::Excluded(k) => k,
        Bound::Unbounded => &[],
    }
}

fn key_column(e: &Expr) -> bool {
    matches!(e, Expr::Column(Column { name, .. }) if name == "key")
}

fn literal(e: &Expr) -> Option<Bytes> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => Some(Bytes::copy_from_slice(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn range(start: Bound<&str>, end: Bound<&str>) -> KeyRange {
        let b = |x: Bound<&str>| x.map(|s| Bytes::copy_from_slice(s.as_bytes()));
        KeyRange {
            start: b(start),
            end: b(end),
        }
    }

    #[test]
    fn comparisons_with_the_key_become_bounds_either_way_round() {
        assert_eq!(
            of(&col("key").gt_eq(lit("b"))),
            Some(range(Bound::Included("b"), Bound::Unbounded))
        );
        assert_eq!(
            of(&lit("b").gt(col("key"))),
            Some(range(Bound::Unbounded, Bound::Excluded("b")))
        );
        assert_eq!(
            of(&col("key").between(lit("a"), lit("c"))),
            Some(range(Bound::Included("a"), Bound::Included("c")))
        );
        assert_eq!(of(&col("value").gt(lit("b"))), None);
        assert_eq!(of(&col("key").not_eq(lit("b"))), None);
    }

    #[test]
    fn bounds_intersect_to_the_narrower() {
        let a = range(Bound::Included("b"), Bound::Included("m"));
        let b = range(Bound::Excluded("b"), Bound::Excluded("x"));
        assert_eq!(
            intersect(a, b),
            range(Bound::Excluded("b"), Bound::Included("m"))
        );
    }
}
