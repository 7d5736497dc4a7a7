//! Conditions on declared value columns (`amount < 50`) that a scan hands a table with the
//! columns it reads, so that the table may skip the row groups whose statistics prove no row
//! meets them. Skipping is all a table does with them: it may return rows that fail a
//! condition, and the caller still applies it.

/// How a column's value compares with the literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Comparison {
    /// The same comparison with its two sides swapped (`5 < x` is `x > 5`).
    pub fn swap(self) -> Comparison {
        match self {
            Comparison::Eq => Comparison::Eq,
            Comparison::Lt => Comparison::Gt,
            Comparison::LtEq => Comparison::GtEq,
            Comparison::Gt => Comparison::Lt,
            Comparison::GtEq => Comparison::LtEq,
        }
    }

    /// Whether some value between `min` and `max` (inclusive) compares so with `v`.
    pub fn may_hold<T: PartialOrd + ?Sized>(self, min: &T, max: &T, v: &T) -> bool {
        match self {
            Comparison::Eq => min <= v && v <= max,
            Comparison::Lt => min < v,
            Comparison::LtEq => min <= v,
            Comparison::Gt => max > v,
            Comparison::GtEq => max >= v,
        }
    }
}

/// A literal of a declared column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    I64(i64),
    F64(f64),
    Utf8(String),
}

/// `column op literal`: a row whose column is null never meets it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnCondition {
    pub column: String,
    pub op: Comparison,
    pub literal: Literal,
}

impl std::fmt::Display for ColumnCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Comparison::Eq => "=",
            Comparison::Lt => "<",
            Comparison::LtEq => "<=",
            Comparison::Gt => ">",
            Comparison::GtEq => ">=",
        };
        match &self.literal {
            Literal::I64(n) => write!(f, "{} {op} {n}", self.column),
            Literal::F64(x) => write!(f, "{} {op} {x:?}", self.column),
            Literal::Utf8(s) => write!(f, "{} {op} '{s}'", self.column),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_that_exclude_the_literal_rule_the_comparison_out() {
        use Comparison::*;
        // Values 10..=20.
        let may = |op: Comparison, v: i64| op.may_hold(&10, &20, &v);
        assert!(may(Eq, 10) && may(Eq, 20) && !may(Eq, 9) && !may(Eq, 21));
        assert!(may(Lt, 11) && !may(Lt, 10));
        assert!(may(LtEq, 10) && !may(LtEq, 9));
        assert!(may(Gt, 19) && !may(Gt, 20));
        assert!(may(GtEq, 20) && !may(GtEq, 21));
        assert_eq!(Lt.swap(), Gt);
        // Text compares as its UTF-8 bytes, as Parquet's statistics and Arrow do.
        assert!(Gt.may_hold(&b"a"[..], &b"c"[..], &b"b"[..]));
        assert!(!Gt.may_hold(&b"a"[..], &b"c"[..], &b"c"[..]));
    }
}
