//! What `kv` takes of a query's `WHERE` conditions: those on the key alone narrow the range
//! read, exactly (`key_range`); comparisons of a declared column with a literal go to the
//! tables read by column, which skip the row groups their statistics rule out. DataFusion
//! applies the latter again to the rows read.

use crate::key_range;
use cairn_filestore::ColumnCondition;
use cairn_filestore::column_condition::{Comparison, Literal};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};

/// How `kv` takes each of `filters`.
pub(crate) fn pushdown(filters: &[&Expr]) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if key_range::of(f).is_some() {
                TableProviderFilterPushDown::Exact
            } else if condition(f).is_some() {
                TableProviderFilterPushDown::Inexact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// The conditions on declared columns among `filters`.
pub(crate) fn conditions(filters: &[Expr]) -> Vec<ColumnCondition> {
    filters.iter().filter_map(condition).collect()
}

/// `expr` as a comparison of a declared column with a literal of its kind.
fn condition(expr: &Expr) -> Option<ColumnCondition> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return None;
    };
    let op = match op {
        Operator::Eq => Comparison::Eq,
        Operator::Lt => Comparison::Lt,
        Operator::LtEq => Comparison::LtEq,
        Operator::Gt => Comparison::Gt,
        Operator::GtEq => Comparison::GtEq,
        _ => return None,
    };
    let (column, op, literal) = match (column(left), column(right)) {
        (Some(c), None) => (c, op, literal(right)?),
        (None, Some(c)) => (c, op.swap(), literal(left)?),
        _ => return None,
    };
    (column != "key" && column != "value").then(|| ColumnCondition {
        column: column.to_string(),
        op,
        literal,
    })
}

fn column(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(Column { name, .. }) => Some(name),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<Literal> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    Some(match v {
        ScalarValue::Int64(Some(n)) => Literal::I64(*n),
        ScalarValue::Float64(Some(x)) if !x.is_nan() => Literal::F64(*x),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Literal::Utf8(s.clone()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn comparisons_of_declared_columns_with_literals_become_conditions() {
        let c = |e: Expr| condition(&e);
        assert_eq!(
            c(col("amount").lt(lit(50.0))),
            Some(ColumnCondition {
                column: "amount".into(),
                op: Comparison::Lt,
                literal: Literal::F64(50.0)
            })
        );
        assert_eq!(
            c(lit(5i64).lt(col("n"))).map(|c| c.op),
            Some(Comparison::Gt)
        );
        assert_eq!(
            c(col("who").eq(lit("ann"))).map(|c| c.literal),
            Some(Literal::Utf8("ann".into()))
        );
        assert_eq!(c(col("key").gt(lit("a"))), None, "the key's are ranges");
        assert_eq!(c(col("n").not_eq(lit(5i64))), None);
        assert_eq!(c(col("n").gt(col("m"))), None);
        let f = [
            col("key").gt(lit("a")),
            col("n").gt(lit(1i64)),
            col("n").is_null(),
        ];
        let refs: Vec<&Expr> = f.iter().collect();
        assert_eq!(
            pushdown(&refs),
            [
                TableProviderFilterPushDown::Exact,
                TableProviderFilterPushDown::Inexact,
                TableProviderFilterPushDown::Unsupported
            ]
        );
    }
}
