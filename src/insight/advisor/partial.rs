//! Constant predicates: conditions whose value is part of a statement's shape, not of one
//! execution — `deleted_at IS NULL`, `NOT archived`, `paid IS TRUE`, and `state = 'pending'`
//! or `state IN ('new', 'open')` when the literals are written into a statement whose other
//! values are bound parameters (or every sample of the shape carries the same literals). A
//! partial index with such a predicate holds only the rows the shape can ever read, so it is
//! smaller than the full index and cheaper to maintain; the search prefers it when it saves
//! as much (near-ties go to the smaller index).
//!
//! Only top-level conjuncts count (a predicate under `OR` does not restrict every row the
//! statement reads), and the rendering names the column alone, as an index predicate must.

use super::columns::{column, resolve, scope_of, Scoped};
use super::quote_ident;
use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, InTarget, SetExpr, Statement, UnaryOperator, Value, Visit,
    Visitor,
};
use std::ops::ControlFlow;

/// A predicate a partial index could carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstantPredicate {
    pub column: String,
    /// The tables the column may belong to (see [`super::columns::ColumnUse::tables`]).
    pub tables: Vec<String>,
    /// The predicate as an index's `WHERE` clause (`"state" = 'pending'`).
    pub sql: String,
}

/// The constant predicates of `statements`. `literals` says whether a literal compared with
/// a column is part of the shape (true for a statement with bound parameters, where literals
/// were written by the application, not substituted per execution).
pub fn constant_predicates(statements: &[Statement], literals: bool) -> Vec<ConstantPredicate> {
    let mut v = Collect {
        out: Vec::new(),
        literals,
    };
    for st in statements {
        let _ = st.visit(&mut v);
    }
    v.out.dedup();
    v.out
}

/// Those of `a` that `b` has too (the same shape sampled twice with the same literal).
pub fn common(a: Vec<ConstantPredicate>, b: &[ConstantPredicate]) -> Vec<ConstantPredicate> {
    a.into_iter().filter(|p| b.contains(p)).collect()
}

struct Collect {
    out: Vec<ConstantPredicate>,
    literals: bool,
}

impl Visitor for Collect {
    type Break = ();

    fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
        if let SetExpr::Select(s) = q.body.as_ref() {
            if let Some(w) = &s.selection {
                self.conjuncts(w, &scope_of(&s.from));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        match st {
            Statement::Update(u) => {
                if let Some(w) = &u.selection {
                    self.conjuncts(w, &scope_of(std::slice::from_ref(&u.table)));
                }
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                if let Some(w) = &d.selection {
                    self.conjuncts(w, &scope_of(f));
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Collect {
    fn conjuncts(&mut self, e: &Expr, scope: &[Scoped]) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                self.conjuncts(left, scope);
                self.conjuncts(right, scope);
            }
            Expr::Nested(inner) => self.conjuncts(inner, scope),
            _ => {
                if let Some((q, c, sql)) = self.predicate(e) {
                    let tables = resolve(q.as_deref(), scope);
                    if !tables.is_empty() {
                        self.out.push(ConstantPredicate {
                            column: c,
                            tables,
                            sql,
                        });
                    }
                }
            }
        }
    }

    /// `(qualifier, column, rendered predicate)` when `e` is a constant predicate.
    fn predicate(&self, e: &Expr) -> Option<(Option<String>, String, String)> {
        let named = |inner: &Expr, f: &dyn Fn(&str) -> String| {
            column(inner).map(|(q, c)| {
                let sql = f(&quote_ident(&c));
                (q, c, sql)
            })
        };
        match e {
            Expr::IsNull(x) => named(x, &|c| format!("{c} IS NULL")),
            Expr::IsNotNull(x) => named(x, &|c| format!("{c} IS NOT NULL")),
            Expr::IsTrue(x) => named(x, &|c| format!("{c} IS TRUE")),
            Expr::IsFalse(x) => named(x, &|c| format!("{c} IS FALSE")),
            Expr::IsNotTrue(x) => named(x, &|c| format!("{c} IS NOT TRUE")),
            Expr::IsNotFalse(x) => named(x, &|c| format!("{c} IS NOT FALSE")),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => named(expr, &|c| format!("NOT {c}")),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => named(e, &|c| c.to_string()),
            Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Eq | BinaryOperator::NotEq),
                right,
            } => {
                let (col, lit) = match (literal(left), literal(right)) {
                    (None, Some(l)) => (left, l),
                    (Some(l), None) => (right, l),
                    _ => return None,
                };
                // `done = false` as `NOT done`: PostgreSQL folds a comparison with a boolean
                // constant so, in queries and in a real index's predicate alike, but hypopg
                // keeps a hypothetical index's predicate as written, and the planner cannot
                // prove `NOT done` implies `done = false`, so the trial would never use it.
                if let Value::Boolean(b) = lit {
                    let holds = *b == (*op == BinaryOperator::Eq);
                    return named(col, &|c| {
                        if holds {
                            c.to_string()
                        } else {
                            format!("NOT {c}")
                        }
                    });
                }
                if !self.literals {
                    return None;
                }
                named(col, &|c| format!("{c} {op} {lit}"))
            }
            // `status IN ('open', 'pending')`: the set an SLA job or an inbox reads, often a
            // few percent of the table (a stranger's helpdesk: a 1.4 MB partial index, 10x
            // faster than the 32 MB one on the sort column alone)
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                ..
            } if self.literals && !list.is_empty() => {
                let items: Option<Vec<String>> = list
                    .iter()
                    .map(|e| literal(e).map(Value::to_string))
                    .collect();
                let items = items?.join(", ");
                let not = if *negated { " NOT" } else { "" };
                named(expr, &|c| format!("{c}{not} IN ({items})"))
            }
            _ => None,
        }
    }
}

/// A literal (not a placeholder, not `NULL`).
fn literal(e: &Expr) -> Option<&Value> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(_) | Value::Null => None,
            other => Some(other),
        },
        Expr::Nested(inner) => literal(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::fingerprint::parse;

    fn preds(sql: &str, literals: bool) -> Vec<String> {
        constant_predicates(&parse(sql).unwrap_or_default(), literals)
            .into_iter()
            .map(|p| format!("{}:{}", p.tables.join("|"), p.sql))
            .collect()
    }

    #[test]
    fn structural_predicates_are_always_constant() {
        assert_eq!(
            preds(
                "select id from jobs j where j.deleted_at is null and not j.archived \
                 and paid is true and queue = 'mail' order by run_at limit 10",
                false
            ),
            vec![
                "jobs:deleted_at IS NULL",
                "jobs:NOT archived",
                "jobs:paid IS TRUE"
            ]
        );
        assert_eq!(
            preds("update jobs set x = 1 where done = false and id = 3", false),
            vec!["jobs:NOT done"]
        );
    }

    #[test]
    fn a_comparison_with_a_boolean_is_rendered_as_postgresql_folds_it() {
        // found on a stranger's shop workload: hypopg never used `WHERE active = true`
        assert_eq!(
            preds(
                "select id from products where active = true and category_id = $1",
                true
            ),
            vec!["products:active"]
        );
        assert_eq!(
            preds(
                "select id from jobs where false = done and a <> true and b != false",
                false
            ),
            vec!["jobs:NOT done", "jobs:NOT a", "jobs:b"]
        );
        assert_eq!(
            preds("select id from jobs where \"Done\" = false", false),
            vec!["jobs:NOT \"Done\""]
        );
    }

    #[test]
    fn literals_count_only_beside_parameters_and_never_under_or() {
        let sql = "select id from jobs where state = 'pending' and queue = $1";
        assert_eq!(preds(sql, true), vec!["jobs:state = 'pending'"]);
        assert!(preds(sql, false).is_empty());
        assert!(preds(
            "select id from jobs where state = 'a' or deleted_at is null",
            true
        )
        .is_empty());
        assert!(preds("delete from jobs where id = $1", true).is_empty());
    }

    #[test]
    fn an_in_list_of_literals_is_a_constant_predicate_beside_parameters() {
        // found on a stranger's helpdesk: an SLA job reading `status IN ('open', 'pending')`
        assert_eq!(
            preds(
                "select id from tickets t where t.status in ('open', 'pending') and due_at < now() \
                 and tenant_id = $1 and kind not in (3, 4)",
                true
            ),
            vec![
                "tickets:status IN ('open', 'pending')",
                "tickets:kind NOT IN (3, 4)"
            ]
        );
        // a value bound per execution, or substituted into literal text, is not the shape's
        assert!(preds("select id from tickets where status in ('a', $1)", true).is_empty());
        assert!(preds("select id from tickets where status in ('a', 'b')", false).is_empty());
    }

    #[test]
    fn common_keeps_what_two_samples_share() {
        let p = |s| constant_predicates(&parse(s).unwrap_or_default(), true);
        let a = p("select 1 from t where state = 'x' and k = 1");
        let b = p("select 1 from t where state = 'x' and k = 2");
        let c = common(a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].sql, "state = 'x'");
    }
}
