//! Fingerprints: one id per *logical* statement, whatever its constants, parameter style,
//! IN-list length, casts on constants, case, whitespace or comments.
//!
//! pg_stat_statements keys on the post-analysis tree, so a literal `1`, a bound int4 `$1` and a
//! bound int8 `$1` are three entries, and every IN-list length is another (see
//! `shared/INSIGHT.md`). Here the sqlparser AST is rewritten instead: every constant (literal,
//! `$n`, typed string, a cast or sign on a constant) becomes `?`, lists of constants collapse to
//! one element (`IN (…)`, `ARRAY[…]`, `VALUES` rows of the same shape), and `x = ANY(?)` reads
//! as `x IN (?)` (ORMs bind an array where hand-written SQL lists values). The rewritten tree is
//! printed and put through the literal normaliser of [`crate::pg::sql::normalize`], which
//! lower-cases words and fixes spacing, and the result is hashed.
//!
//! A statement sqlparser cannot parse still gets a fingerprint from the token-level normaliser
//! alone, so nothing is dropped. This runs once per statement *shape* (on the proxy's
//! statement-cache miss), never per execution.

use crate::pg::sql::normalize::{hash64, normalize};
use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, InTarget, Query, SetExpr, Statement, UnaryOperator, Value,
    ValueWithSpan, VisitMut, VisitorMut,
};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// The identity of one logical statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash of [`Fingerprint::text`]; stable across processes and restarts.
    pub id: u64,
    /// The canonical text: lower-case, constants as `?`, lists collapsed. Contains no value a
    /// client sent, so it is safe to show and to use as a metric label.
    pub text: Box<str>,
    /// How the fingerprint was computed.
    pub source: Source,
    /// What kind of statement it is (for EXPLAIN eligibility and the report).
    pub kind: Kind,
}

/// Where a fingerprint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The sqlparser AST, rewritten.
    Ast,
    /// The statement did not parse: the token-level normaliser alone.
    Tokens,
}

/// The statement's kind, from its first keyword (or its AST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// Anything else: DDL, SET, BEGIN, COPY, CALL…; never EXPLAINed.
    Other,
}

impl Kind {
    /// Can `EXPLAIN` take this statement?
    pub fn explainable(self) -> bool {
        !matches!(self, Kind::Other)
    }

    fn of_text(normalized: &str) -> Kind {
        let first = normalized
            .trim_start_matches(['(', ' '])
            .split([' ', '('])
            .next()
            .unwrap_or("");
        match first {
            "select" | "values" | "table" => Kind::Select,
            "insert" => Kind::Insert,
            "update" => Kind::Update,
            "delete" => Kind::Delete,
            "merge" => Kind::Merge,
            // a WITH query: what its main statement is, is known only from the AST
            "with" => Kind::Select,
            _ => Kind::Other,
        }
    }

    fn of_statement(st: &Statement) -> Kind {
        match st {
            Statement::Query(q) => match q.body.as_ref() {
                SetExpr::Insert(_) => Kind::Insert,
                SetExpr::Update(_) => Kind::Update,
                SetExpr::Delete(_) => Kind::Delete,
                SetExpr::Merge(_) => Kind::Merge,
                _ => Kind::Select,
            },
            Statement::Insert(_) => Kind::Insert,
            Statement::Update(_) => Kind::Update,
            Statement::Delete(_) => Kind::Delete,
            Statement::Merge(_) => Kind::Merge,
            _ => Kind::Other,
        }
    }
}

/// Parse `raw` as PostgreSQL, the way the proxy does (so fingerprints and routing agree: it
/// is the proxy's [`crate::pg::sql::parse`]). `None` when it does not parse, holds no
/// statement, or is text sqlparser would misread.
pub fn parse(raw: &str) -> Option<Vec<Statement>> {
    crate::pg::sql::parse(raw).filter(|statements| !statements.is_empty())
}

/// The fingerprint of `raw`, from its AST when it parsed (see the module doc).
pub fn fingerprint(raw: &str, ast: Option<&[Statement]>) -> Fingerprint {
    match ast.filter(|a| !a.is_empty()) {
        Some(statements) => {
            let mut canon: Vec<Statement> = statements.to_vec();
            let _ = canon.visit(&mut Canonicalize);
            let printed = canon
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let (text, _) = normalize(&printed);
            let kind = if statements.len() == 1 {
                Kind::of_statement(&statements[0])
            } else {
                Kind::Other
            };
            build(text, Source::Ast, kind)
        }
        None => {
            let (text, _) = normalize(raw);
            let text = text.trim_end_matches([';', ' ']).to_string();
            let kind = if text.contains(';') {
                Kind::Other
            } else {
                Kind::of_text(&text)
            };
            build(text, Source::Tokens, kind)
        }
    }
}

/// Longest fingerprint text kept for a statement too long to analyse (see
/// [`oversized`]); the id still covers the whole normalised text.
pub const OVERSIZED_TEXT: usize = 1024;

/// The fingerprint of a statement too long for the SQL parser, from its normalised text
/// (one linear pass, already done by the caller): the id hashes all of it, the text keeps
/// its first [`OVERSIZED_TEXT`] bytes, so the insight report holds no megabyte of SQL.
pub fn oversized(normalized: &str) -> Fingerprint {
    let text = normalized.trim_end_matches([';', ' ']);
    let kind = if text.contains(';') {
        Kind::Other
    } else {
        Kind::of_text(text)
    };
    let mut cut = text.len().min(OVERSIZED_TEXT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut shown = text[..cut].to_string();
    if cut < text.len() {
        shown.push('…');
    }
    Fingerprint {
        id: hash64(text.as_bytes()),
        text: shown.into_boxed_str(),
        source: Source::Tokens,
        kind,
    }
}

fn build(text: String, source: Source, kind: Kind) -> Fingerprint {
    Fingerprint {
        id: hash64(text.as_bytes()),
        text: text.into_boxed_str(),
        source,
        kind,
    }
}

/// The AST rewrite: constants to `?`, constant lists to one element.
struct Canonicalize;

fn placeholder() -> Expr {
    Expr::Value(ValueWithSpan::from(Value::Placeholder("?".into())))
}

fn is_placeholder(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if p == "?"))
}

/// A constant after the rewrite: `?`, or a tuple/array of constants.
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Tuple(items) => items.iter().all(is_constant),
        Expr::Array(a) => a.elem.iter().all(is_constant),
        Expr::Nested(inner) => is_constant(inner),
        other => is_placeholder(other),
    }
}

/// Collapse a list of constants to its first element (lists of one shape, any length).
fn collapse(list: &mut Vec<Expr>) {
    if list.len() > 1 && list.iter().all(is_constant) {
        list.truncate(1);
    }
}

impl VisitorMut for Canonicalize {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let replace = match expr {
            Expr::Value(v) => !matches!(&v.value, Value::Placeholder(p) if p == "?"),
            Expr::TypedString(_) => true,
            // a cast or a sign on a constant is part of the constant: `'5'::int`, `-1`, `$1::int8`
            Expr::Cast {
                expr: inner,
                kind: CastKind::Cast | CastKind::DoubleColon,
                ..
            } => is_placeholder(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Minus | UnaryOperator::Plus,
                expr: inner,
            } => is_placeholder(inner),
            Expr::In {
                target: InTarget::List(list),
                ..
            } => {
                collapse(list);
                false
            }
            Expr::Array(a) => {
                collapse(&mut a.elem);
                false
            }
            _ => false,
        };
        if replace {
            *expr = placeholder();
        }
        any_as_in(expr);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Values(values) = query.body.as_mut() {
            // rows of one shape, any number of them, are one statement; the shape is compared
            // as the fingerprint text will be, normalised (`vAluEs` and `ValUes` name one
            // column: found by the sql_fingerprint fuzzer)
            let mut seen: HashSet<String> = HashSet::new();
            values.rows.retain(|row| {
                let shape = row
                    .content
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                seen.insert(normalize(&shape).0)
            });
        }
        ControlFlow::Continue(())
    }
}

/// `x = ANY(?)` is `x IN (?)` and `x <> ALL(?)` is `x NOT IN (?)`, when the right side is a
/// constant (a bound array, or an ARRAY of constants).
fn any_as_in(expr: &mut Expr) {
    let (left, negated) = match expr {
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } if is_constant(right) => (left, false),
        Expr::AllOp {
            left,
            compare_op: BinaryOperator::NotEq,
            right,
        } if is_constant(right) => (left, true),
        _ => return,
    };
    let left = std::mem::replace(left, Box::new(placeholder()));
    *expr = Expr::In {
        expr: left,
        target: InTarget::List(vec![placeholder()]),
        negated,
        global: false,
    };
}

#[cfg(test)]
mod tests;
