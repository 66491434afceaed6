//! Which columns of which tables a statement filters, joins and sorts on, from its AST: the
//! raw material of index candidates. Each SELECT scope (and the target of an UPDATE/DELETE)
//! is read on its own, so a column resolves against the tables of its own FROM clause.
//!
//! A filter on `lower(col)` or `upper(col)` (a case-insensitive login: `WHERE lower(email) =
//! lower($1)`) is a use of that expression: an index on the column cannot serve it, one on
//! the expression can.

use super::quote_ident;
use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Cte, CteAsMaterialized, Expr, FromTable, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, InTarget, JoinConstraint, JoinOperator,
    ObjectName, ObjectNamePart, OrderByExpr, OrderByKind, OrderBySort, Query, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, UpdateTableFromKind, Value, Visit,
    Visitor,
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
    /// The function the statement applies to the column before comparing it (one of
    /// [`INDEXABLE_CALLS`], or [`FIELD`] and the field's literal), if any.
    pub func: Option<String>,
    pub tables: Vec<String>,
    pub how: How,
    /// `ORDER BY … DESC` (only for [`How::Order`]).
    pub desc: bool,
    /// The `OR` this use is under, numbered per statement: an index serves none of an OR's
    /// rows unless each of its arms has one (see [`super::candidates::arms`]).
    pub arm: Option<usize>,
}

/// Functions whose call on one column an expression index can serve: immutable (so
/// PostgreSQL accepts them in an index) and common in filters. Kept short on purpose: a call
/// the planner would not match to the index exactly as written is a wasted trial.
pub const INDEXABLE_CALLS: [&str; 2] = ["lower", "upper"];

impl ColumnUse {
    /// What an index would be keyed on for this use: the column's name, or for a function
    /// call the parenthesised expression as an index definition writes it (`(lower(email))`).
    pub fn key(&self) -> String {
        match &self.func {
            Some(f) => expression_key(f, &self.column),
            None => self.column.clone(),
        }
    }
}

/// `(f(col))` or `(col ->> 'field')`: an expression key. It starts with `(`, which
/// [`is_expression`] tells apart from a column name (a column whose name starts with `(`
/// gets no candidates).
pub fn expression_key(func: &str, column: &str) -> String {
    match func.strip_prefix(FIELD) {
        Some(field) => format!("({} {FIELD} {field})", quote_ident(column)),
        None => format!("({func}({}))", quote_ident(column)),
    }
}

/// A use's `func` that reads one field of a `json`/`jsonb` column as text (`meta ->>
/// 'order_ref'`), the field written after it as an SQL literal. An expression index on it,
/// `((meta ->> 'order_ref'))`, serves the filter; an index on the column cannot (a
/// stranger's logistics workload: an order-reference search, 23 % of the time left once the
/// rest of the advice was applied, got no candidate and no word; 51 ms, 1 ms with the index).
pub const FIELD: &str = "->>";

/// Is this key an expression (see [`expression_key`]) rather than a column name?
pub fn is_expression(key: &str) -> bool {
    key.starts_with('(')
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
    let mut v = Collect::default();
    for st in statements {
        let _ = st.visit(&mut v);
    }
    // by kind, then by name; ORDER BY columns stay in the order written (the sort is
    // stable): `(user_id, blog_id)` serves `ORDER BY user_id, blog_id`, the other order not
    v.uses.sort_by(|a, b| {
        let by_name = if a.how == How::Order {
            std::cmp::Ordering::Equal
        } else {
            a.column.cmp(&b.column)
        };
        a.how.cmp(&b.how).then(by_name)
    });
    v.uses.dedup();
    v.uses
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

/// The columns each UPDATE of `statements` sets, each with its table as written: an index
/// carrying one of them, even in `INCLUDE`, ends the HOT updates that UPDATE had (every
/// index of the table is then written for each row it changes, not only the heap page).
pub fn set_columns(statements: &[Statement]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for st in statements {
        let Statement::Update(u) = st else { continue };
        let Some(table) = scope_of(std::slice::from_ref(&u.table))
            .first()
            .map(full_name)
        else {
            continue;
        };
        for a in &u.assignments {
            let names: Vec<&ObjectName> = match &a.target {
                AssignmentTarget::ColumnName(n) => vec![n],
                AssignmentTarget::Tuple(ns) => ns.iter().collect(),
            };
            for n in names {
                if let (_, Some(column)) = object_name(n) {
                    out.push((table.clone(), column));
                }
            }
        }
    }
    out
}

#[derive(Default)]
struct Collect {
    uses: Vec<ColumnUse>,
    /// Common table expressions that read one table as it is (`WITH c AS (SELECT * FROM t
    /// WHERE …)`): PostgreSQL inlines such a CTE, so a filter on `c` outside is a filter on
    /// `t`. Keyed by the CTE's name, statement-wide.
    ctes: Vec<(String, Scoped)>,
    /// The `OR` being walked (see [`ColumnUse::arm`]), and how many were met.
    arm: Option<usize>,
    ors: usize,
}

impl Visitor for Collect {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                if let Some(table) = inlined_table(cte) {
                    self.ctes.push((ident(&cte.alias.name), table));
                }
            }
        }
        if let SetExpr::Select(s) = q.body.as_ref() {
            let scope = self.through_ctes(scope_of(&s.from));
            for twj in &s.from {
                self.joins(twj, &scope);
            }
            if let Some(w) = &s.selection {
                self.predicate(w, &scope);
            }
            if let Some(ob) = &q.order_by {
                if let OrderByKind::Expressions(exprs) = &ob.kind {
                    self.order(exprs, &s.projection, &scope);
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
                let scope = self.through_ctes(scope_of(&from));
                if let Some(w) = &u.selection {
                    self.predicate(w, &scope);
                }
            }
            Statement::Delete(d) => {
                let (FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f)) = &d.from;
                let mut from = f.clone();
                from.extend(d.using.iter().flatten().cloned());
                let scope = self.through_ctes(scope_of(&from));
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

    /// `scope` with each table that names an inlined CTE replaced by the CTE's table (under
    /// the name the query reads it by).
    fn through_ctes(&self, mut scope: Vec<Scoped>) -> Vec<Scoped> {
        for t in scope.iter_mut().filter(|t| t.schema.is_none()) {
            if let Some((_, table)) = self.ctes.iter().rev().find(|(name, _)| *name == t.name) {
                let alias = t.alias.take().unwrap_or_else(|| t.name.clone());
                *t = Scoped {
                    alias: Some(alias),
                    ..table.clone()
                };
            }
        }
        scope
    }

    fn order(&mut self, exprs: &[OrderByExpr], projection: &[SelectItem], scope: &[Scoped]) {
        for o in exprs {
            let expr = output_column(&o.expr, projection).unwrap_or(&o.expr);
            if let Some((q, c)) = column(expr) {
                let desc = matches!(o.options.sort, Some(OrderBySort::Desc));
                self.push_use((q, c, None), How::Order, desc, scope);
            }
        }
    }

    fn push(&mut self, o: Operand, how: How, scope: &[Scoped]) {
        self.push_use(o, how, false, scope);
    }

    fn push_use(
        &mut self,
        (qualifier, column, func): Operand,
        how: How,
        desc: bool,
        scope: &[Scoped],
    ) {
        let tables = resolve(qualifier.as_deref(), scope);
        if !tables.is_empty() {
            self.uses.push(ColumnUse {
                column,
                func,
                tables,
                how,
                desc,
                arm: self.arm,
            });
        }
    }

    fn predicate(&mut self, e: &Expr, scope: &[Scoped]) {
        match e {
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => {
                    self.predicate(left, scope);
                    self.predicate(right, scope);
                }
                BinaryOperator::Or => self.disjunction(left, right, scope),
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

    /// Both sides of an `OR`, their uses marked as its arms; an OR within keeps the outer
    /// one's number (its arms are arms of the outer one as well).
    fn disjunction(&mut self, l: &Expr, r: &Expr, scope: &[Scoped]) {
        let outer = self.arm;
        if outer.is_none() {
            self.ors += 1;
            self.arm = Some(self.ors);
        }
        self.predicate(l, scope);
        self.predicate(r, scope);
        self.arm = outer;
    }

    fn one(&mut self, e: &Expr, how: How, scope: &[Scoped]) {
        // an output is carried in INCLUDE, which takes columns only
        let o = match how {
            How::Output => column(e).map(|(q, c)| (q, c, None)),
            _ => operand(e),
        };
        if let Some(o) = o {
            self.push(o, how, scope);
        }
    }

    fn compare(&mut self, l: &Expr, r: &Expr, how: How, scope: &[Scoped]) {
        match (operand(l), operand(r)) {
            (Some(l), Some(r)) => {
                let how = if how == How::Eq { How::Join } else { how };
                self.push(l, how, scope);
                self.push(r, how, scope);
            }
            (Some(o), None) | (None, Some(o)) => self.push(o, how, scope),
            (None, None) => {}
        }
    }
}

/// What an `ORDER BY` item names in the select list, as PostgreSQL reads it: a position
/// (`ORDER BY 1`; not past a `*`, whose columns only the catalog knows) or an output
/// column's alias (`SELECT user_id AS u … ORDER BY u`). `None`: it is an expression of
/// its own.
fn output_column<'a>(e: &Expr, projection: &'a [SelectItem]) -> Option<&'a Expr> {
    let item = |i: &'a SelectItem| match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    };
    match e {
        Expr::Value(v) => {
            let Value::Number(n, _) = &v.value else {
                return None;
            };
            let at = n.parse::<usize>().ok()?.checked_sub(1)?;
            let before = projection.get(..at)?;
            if before.iter().any(|i| item(i).is_none()) {
                return None;
            }
            item(projection.get(at)?)
        }
        Expr::Identifier(name) => projection.iter().find_map(|i| match i {
            SelectItem::ExprWithAlias { expr, alias } if ident(alias) == ident(name) => Some(expr),
            _ => None,
        }),
        _ => None,
    }
}

/// The table a CTE reads when PostgreSQL inlines it and its columns are the table's own:
/// not `MATERIALIZED`, no column list, one table without joins, grouping or `DISTINCT`,
/// and a select list of `*` or unrenamed columns.
fn inlined_table(cte: &Cte) -> Option<Scoped> {
    if matches!(cte.materialized, Some(CteAsMaterialized::Materialized))
        || !cte.alias.columns.is_empty()
    {
        return None;
    }
    let (s, table) = one_table(&cte.query)?;
    let plain_list = s.projection.iter().all(|i| match i {
        SelectItem::Wildcard(_) => true,
        SelectItem::UnnamedExpr(e) => column(e).is_some(),
        _ => false,
    });
    plain_list.then_some(table)
}

/// A query that reads one table row for row: a SELECT of one table without joins,
/// grouping, `HAVING` or `DISTINCT`. Its select list, and the table.
fn one_table(q: &Query) -> Option<(&sqlparser::ast::Select, Scoped)> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let grouped = !matches!(&s.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if grouped || s.distinct.is_some() || s.having.is_some() {
        return None;
    }
    match s.from.as_slice() {
        [one] if one.joins.is_empty() => Some((s, scope_of(std::slice::from_ref(one)).pop()?)),
        _ => None,
    }
}

/// A view that shows one table's columns, some under new names: what an index on the table
/// can do for a filter on the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewColumns {
    /// The table, as the definition writes it (`schema.table` when qualified).
    pub table: String,
    /// (the view's column, the table's column it shows).
    pub columns: Vec<(String, String)>,
    /// The view shows every column of the table under its own name (`SELECT *`).
    pub star: bool,
}

impl ViewColumns {
    /// The table's column that the view's `column` shows.
    pub fn base(&self, column: &str) -> Option<String> {
        let named = self.columns.iter().find(|(v, _)| v == column);
        match named {
            Some((_, base)) => Some(base.clone()),
            None => self.star.then(|| column.to_string()),
        }
    }
}

/// A view definition (`pg_get_viewdef`) read as [`ViewColumns`]: one table without joins,
/// grouping or `DISTINCT`, whose select list is `*` or columns, renamed or not. `None` for
/// anything else (the planner may still use the table's indexes; the advisor does not try).
pub fn view_columns(definition: &[Statement]) -> Option<ViewColumns> {
    let [Statement::Query(q)] = definition else {
        return None;
    };
    if q.with.is_some() {
        return None;
    }
    let (s, table) = one_table(q)?;
    let mut view = ViewColumns {
        table: full_name(&table),
        columns: Vec::new(),
        star: false,
    };
    for item in &s.projection {
        match item {
            SelectItem::Wildcard(_) => view.star = true,
            SelectItem::UnnamedExpr(e) => view.columns.push({
                let (_, c) = column(e)?;
                (c.clone(), c)
            }),
            SelectItem::ExprWithAlias { expr, alias } => {
                view.columns.push((ident(alias), column(expr)?.1));
            }
            _ => return None,
        }
    }
    Some(view)
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

/// A column as [`column`] reads it, with the function applied to it, if any.
type Operand = (Option<String>, String, Option<String>);

/// A column, one of [`INDEXABLE_CALLS`] applied to a column alone (`lower(u.email)`), or a
/// [`FIELD`] of a column named by a literal (`s.meta ->> 'order_ref'`).
fn operand(e: &Expr) -> Option<Operand> {
    if let Some((q, c)) = column(e) {
        return Some((q, c, None));
    }
    let call = match e {
        Expr::Nested(inner) => return operand(inner),
        Expr::Function(f) => f,
        Expr::BinaryOp {
            left,
            op: BinaryOperator::LongArrow,
            right,
        } => {
            let (q, c) = column(left)?;
            return Some((q, c, Some(format!("{FIELD}{}", field_literal(right)?))));
        }
        _ => return None,
    };
    let [name] = call.name.0.as_slice() else {
        return None;
    };
    let name = name.as_ident().filter(|i| i.quote_style.is_none())?;
    let func = name.value.to_lowercase();
    let FunctionArguments::List(list) = &call.args else {
        return None;
    };
    let plain = INDEXABLE_CALLS.contains(&func.as_str())
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && call.filter.is_none()
        && call.over.is_none()
        && call.within_group.is_empty()
        && matches!(call.parameters, FunctionArguments::None);
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] if plain => {
            column(arg).map(|(q, c)| (q, c, Some(func)))
        }
        _ => None,
    }
}

/// A json field's name or array position as an SQL literal (`'order_ref'`, `0`); not a
/// parameter, whose value each execution may change.
fn field_literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Nested(inner) => field_literal(inner),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(format!("'{}'", s.replace('\'', "''"))),
            Value::Number(n, _) if n.chars().all(|c| c.is_ascii_digit()) => Some(n.to_string()),
            _ => None,
        },
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
mod tests;
