//! Which columns of which tables a statement filters, joins and sorts on, from its AST: the
//! raw material of index candidates. Each SELECT scope (and the target of an UPDATE/DELETE)
//! is read on its own, so a column resolves against the tables of its own FROM clause.

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, Ident, InTarget, JoinConstraint, JoinOperator, ObjectName,
    ObjectNamePart, OrderByExpr, OrderByKind, OrderBySort, Query, SelectItem, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, UpdateTableFromKind, Visit, Visitor,
};
use std::ops::ControlFlow;

/// How a column is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum How {
    /// `=`, `IN`, `IS NULL`, `= ANY`: leads a btree index.
    Eq,
    /// A join key: an index on it serves nested-loop lookups.
    Join,
    /// `<`, `>`, `BETWEEN`, `LIKE 'x%'`: after the equality columns.
    Range,
    /// `ORDER BY`: last, to skip a sort.
    Order,
    /// In the select list: may be carried in `INCLUDE` for an index-only scan.
    Output,
}

/// A column used by the statement. `tables` are the tables it may belong to: one when it is
/// qualified, every table of its scope when not (the catalog decides later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnUse {
    pub column: String,
    pub tables: Vec<String>,
    pub how: How,
    /// `ORDER BY … DESC` (only for [`How::Order`]).
    pub desc: bool,
}

/// A table of a FROM clause: its (lower-cased unless quoted) name and alias.
#[derive(Debug, Clone)]
pub(super) struct Scoped {
    name: String,
    schema: Option<String>,
    alias: Option<String>,
}

/// Every column use in `statements`; table names are `schema.table` when written so.
pub fn column_uses(statements: &[Statement]) -> Vec<ColumnUse> {
    let mut v = Collect(Vec::new());
    for st in statements {
        let _ = st.visit(&mut v);
    }
    v.0.sort_by(|a, b| (a.how, &a.column).cmp(&(b.how, &b.column)));
    v.0.dedup();
    v.0
}

/// The tables an INSERT, UPDATE or DELETE writes, as written (`schema.table` when qualified).
pub fn written_tables(statements: &[Statement]) -> Vec<String> {
    let mut out = Vec::new();
    for st in statements {
        let from: Vec<TableWithJoins> = match st {
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    if let (schema, Some(name)) = object_name(n) {
                        out.push(full_name(&Scoped {
                            name,
                            schema,
                            alias: None,
                        }));
                    }
                }
                continue;
            }
            Statement::Update(u) => vec![u.table.clone()],
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                f.clone()
            }
            _ => continue,
        };
        if let Some(first) = scope_of(&from).first() {
            out.push(full_name(first));
        }
    }
    out
}

struct Collect(Vec<ColumnUse>);

impl Visitor for Collect {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let SetExpr::Select(s) = q.body.as_ref() {
            let scope = scope_of(&s.from);
            for twj in &s.from {
                self.joins(twj, &scope);
            }
            if let Some(w) = &s.selection {
                self.predicate(w, &scope);
            }
            if let Some(ob) = &q.order_by {
                if let OrderByKind::Expressions(exprs) = &ob.kind {
                    self.order(exprs, &scope);
                }
            }
            for item in &s.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    self.one(e, How::Output, &scope);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, st: &Statement) -> ControlFlow<()> {
        match st {
            Statement::Update(u) => {
                let mut from = vec![u.table.clone()];
                if let Some(UpdateTableFromKind::AfterSet(f) | UpdateTableFromKind::BeforeSet(f)) =
                    &u.from
                {
                    from.extend(f.iter().cloned());
                }
                let scope = scope_of(&from);
                if let Some(w) = &u.selection {
                    self.predicate(w, &scope);
                }
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                let mut from = f.clone();
                from.extend(d.using.iter().flatten().cloned());
                let scope = scope_of(&from);
                if let Some(w) = &d.selection {
                    self.predicate(w, &scope);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Collect {
    fn joins(&mut self, twj: &TableWithJoins, scope: &[Scoped]) {
        for j in &twj.joins {
            let c = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c) => c,
                _ => continue,
            };
            if let JoinConstraint::On(e) = c {
                self.predicate(e, scope);
            }
        }
    }

    fn order(&mut self, exprs: &[OrderByExpr], scope: &[Scoped]) {
        for o in exprs {
            if let Some((q, c)) = column(&o.expr) {
                let desc = matches!(o.options.sort, Some(OrderBySort::Desc));
                self.push_use(q, c, How::Order, desc, scope);
            }
        }
    }

    fn push(&mut self, qualifier: Option<String>, column: String, how: How, scope: &[Scoped]) {
        self.push_use(qualifier, column, how, false, scope);
    }

    fn push_use(
        &mut self,
        qualifier: Option<String>,
        column: String,
        how: How,
        desc: bool,
        scope: &[Scoped],
    ) {
        let tables = resolve(qualifier.as_deref(), scope);
        if !tables.is_empty() {
            self.0.push(ColumnUse {
                column,
                tables,
                how,
                desc,
            });
        }
    }

    fn predicate(&mut self, e: &Expr, scope: &[Scoped]) {
        match e {
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    self.predicate(left, scope);
                    self.predicate(right, scope);
                }
                BinaryOperator::Eq => self.compare(left, right, How::Eq, scope),
                BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq => self.compare(left, right, How::Range, scope),
                _ => {}
            },
            Expr::Nested(inner) => self.predicate(inner, scope),
            Expr::IsNull(inner) => self.one(inner, How::Eq, scope),
            Expr::In {
                expr,
                target: InTarget::List(_) | InTarget::Subquery(_),
                negated: false,
                ..
            } => self.one(expr, How::Eq, scope),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                ..
            } => self.one(left, How::Eq, scope),
            Expr::Between {
                expr,
                negated: false,
                ..
            } => self.one(expr, How::Range, scope),
            Expr::Like {
                expr,
                negated: false,
                any: false,
                ..
            } => self.one(expr, How::Range, scope),
            _ => {}
        }
    }

    fn one(&mut self, e: &Expr, how: How, scope: &[Scoped]) {
        if let Some((q, c)) = column(e) {
            self.push(q, c, how, scope);
        }
    }

    fn compare(&mut self, l: &Expr, r: &Expr, how: How, scope: &[Scoped]) {
        match (column(l), column(r)) {
            (Some((lq, lc)), Some((rq, rc))) => {
                let how = if how == How::Eq { How::Join } else { how };
                self.push(lq, lc, how, scope);
                self.push(rq, rc, how, scope);
            }
            (Some((q, c)), None) | (None, Some((q, c))) => self.push(q, c, how, scope),
            (None, None) => {}
        }
    }
}

/// The tables of `scope` a column written with `qualifier` may belong to.
pub(super) fn resolve(qualifier: Option<&str>, scope: &[Scoped]) -> Vec<String> {
    match qualifier {
        Some(q) => scope
            .iter()
            .filter(|t| t.alias.as_deref() == Some(q) || (t.alias.is_none() && t.name == q))
            .map(full_name)
            .collect(),
        None => scope.iter().map(full_name).collect(),
    }
}

/// `col`, `t.col` or `s.t.col` (casts on the column are looked through).
pub(super) fn column(e: &Expr) -> Option<(Option<String>, String)> {
    match e {
        Expr::Identifier(i) => Some((None, ident(i))),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let n = parts.len();
            Some((Some(ident(&parts[n - 2])), ident(&parts[n - 1])))
        }
        Expr::Nested(inner) => column(inner),
        _ => None,
    }
}

/// An identifier as PostgreSQL folds it: lower case unless quoted.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

fn object_name(n: &ObjectName) -> (Option<String>, Option<String>) {
    let parts: Vec<String> =
        n.0.iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(i) => Some(ident(i)),
                _ => None,
            })
            .collect();
    let name = parts.last().cloned();
    let schema = (parts.len() >= 2).then(|| parts[parts.len() - 2].clone());
    (schema, name)
}

pub(super) fn scope_of(from: &[TableWithJoins]) -> Vec<Scoped> {
    let mut out = Vec::new();
    let mut add = |f: &TableFactor| {
        if let TableFactor::Table { name, alias, .. } = f {
            if let (schema, Some(name)) = object_name(name) {
                out.push(Scoped {
                    name,
                    schema,
                    alias: alias.as_ref().map(|a| ident(&a.name)),
                });
            }
        }
    };
    for twj in from {
        add(&twj.relation);
        for j in &twj.joins {
            add(&j.relation);
        }
    }
    out
}

fn full_name(t: &Scoped) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::fingerprint::parse;

    fn uses(sql: &str) -> Vec<(String, Vec<String>, How)> {
        column_uses(&parse(sql).unwrap_or_default())
            .into_iter()
            .map(|u| (u.column, u.tables, u.how))
            .collect()
    }

    fn t(s: &str) -> Vec<String> {
        vec![s.to_string()]
    }

    #[test]
    fn where_join_and_order_columns() {
        let u = uses(
            "select o.id from orders o join Customers c on c.id = o.customer_id \
             where c.email = $1 and o.created > now() - interval '1 day' order by o.created",
        );
        assert!(
            u.contains(&("email".into(), t("customers"), How::Eq)),
            "{u:?}"
        );
        assert!(u.contains(&("customer_id".into(), t("orders"), How::Join)));
        assert!(u.contains(&("id".into(), t("customers"), How::Join)));
        assert!(u.contains(&("created".into(), t("orders"), How::Range)));
        assert!(u.contains(&("created".into(), t("orders"), How::Order)));
    }

    #[test]
    fn unqualified_columns_may_belong_to_any_table_of_the_scope() {
        let u = uses("select * from a, s.b where x in (1, 2) and y between 1 and 2");
        assert!(u.contains(&("x".into(), vec!["a".into(), "s.b".into()], How::Eq)));
        assert!(u.contains(&("y".into(), vec!["a".into(), "s.b".into()], How::Range)));
    }

    #[test]
    fn updates_deletes_and_subqueries() {
        assert_eq!(
            uses("update t set a = 1 where k = $1"),
            vec![("k".into(), t("t"), How::Eq)]
        );
        assert_eq!(
            uses("delete from t where k is null"),
            vec![("k".into(), t("t"), How::Eq)]
        );
        let w = |sql: &str| written_tables(&parse(sql).unwrap_or_default());
        assert_eq!(w("insert into s.t (a) values (1)"), vec!["s.t".to_string()]);
        assert_eq!(w("update t set a = 1 where k = 2"), vec!["t".to_string()]);
        assert_eq!(w("delete from t where k = 2"), vec!["t".to_string()]);
        assert!(w("select 1").is_empty());
        let u = uses("select * from t where id in (select tid from u where u.flag = true)");
        assert!(u.contains(&("flag".into(), t("u"), How::Eq)), "{u:?}");
        assert!(u.contains(&("id".into(), t("t"), How::Eq)));
    }
}
