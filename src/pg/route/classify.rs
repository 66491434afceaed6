//! Is a statement read-only? Decided with `sqlparser` (PostgreSqlDialect), once per statement
//! shape, and strictly: a statement may go to a replica only when it is a plain read.
//!
//! Primary, always: DML, DDL, `SELECT … FOR UPDATE/SHARE/NO KEY UPDATE/KEY SHARE`,
//! `SELECT … INTO`, CTEs that write, multi-statement strings with any write, anything that
//! fails to parse, calls of functions that change state. A read records the functions it
//! calls: whether they are safe on a replica depends on the database's catalog (VOLATILE
//! functions are not), checked at routing time (see `route::Topology::functions_safe`).

use sqlparser::ast::{
    Expr, Query, Set, SetExpr, Statement, TableFactor, TransactionAccessMode, TransactionMode,
    Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use std::ops::ControlFlow;

/// What a statement text is, for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Reads only (SELECT, VALUES, TABLE, SHOW, EXPLAIN of a read).
    Read,
    /// Anything that may write or lock, or that we cannot be sure about.
    Write,
    /// `BEGIN` / `START TRANSACTION`; `plain` when it has no modes at all.
    Begin { read_only: bool, plain: bool },
    /// `SET TRANSACTION …` inside a transaction.
    SetTransaction { read_only: bool },
    /// `COMMIT` / `ROLLBACK` / `END` / `ABORT` (without `AND CHAIN`).
    End,
    /// `SET pake.route = 'primary' | 'replica' | 'auto'`, `RESET pake.route`.
    RouteSetting(Option<Route>),
}

/// Where `SET pake.route` pins a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
}

/// The routing facts of one statement shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub class: Class,
    /// Lower-cased names of the functions a read calls (checked against the catalog).
    pub functions: Box<[Box<str>]>,
}

impl Classification {
    pub fn write() -> Self {
        Classification {
            class: Class::Write,
            functions: Box::default(),
        }
    }
}

/// Functions that change state whatever the catalog says (several are not VOLATILE-marked
/// in a way that reveals it, or are session-scoped).
pub const STATE_CHANGING: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "set_config",
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_notify",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "setseed",
];

/// Prefixes of state-changing function families (`pg_advisory_*`, `lo_*`…).
pub const STATE_CHANGING_PREFIXES: &[&str] = &[
    "pg_advisory",
    "pg_try_advisory",
    "lo_",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "dblink",
];

/// Is `name` one of the built-in state-changing functions?
pub fn changes_state(name: &str) -> bool {
    STATE_CHANGING.contains(&name) || STATE_CHANGING_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Parse with the dialect Pake uses everywhere (router and fingerprints).
pub fn parse(sql: &str) -> Option<Vec<Statement>> {
    // `TABLE name` is PostgreSQL shorthand sqlparser lacks: the same as SELECT * FROM name
    let trimmed = sql.trim_start();
    if let (Some(head), Some(rest)) = (trimmed.get(..6), trimmed.get(6..)) {
        // any whitespace after the keyword (the fuzzer's twin: `TABLE\nt`)
        let head = head.as_bytes();
        if head[..5].eq_ignore_ascii_case(b"table") && head[5].is_ascii_whitespace() {
            let rewritten = format!("SELECT * FROM {rest}");
            return parse_faithful(&rewritten);
        }
    }
    parse_faithful(sql)
}

/// Tokenize and parse as `Parser::parse_sql` does, unless a token sqlparser produced does
/// not spell what the input holds at its place (`None`, as for text that does not parse).
fn parse_faithful(sql: &str) -> Option<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .ok()?;
    if !tokens_spell(sql, &tokens) {
        return None;
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let statements = parser.parse_statements().ok()?;
    // sqlparser stops at an END where a statement could end (it closes BEGIN … END blocks
    // in other dialects) and drops the rest: `use 'n' end x.y` is `USE 'n'` to it, a syntax
    // error to PostgreSQL (found by the sql_fingerprint fuzzer)
    if parser.peek_token().token != Token::EOF {
        return None;
    }
    Some(statements)
}

/// Whether every operator and punctuation token covers as much of `sql` as it spells, and
/// every `$` placeholder and dollar quote is one PostgreSQL would read.
/// sqlparser 0.64 reads `&>1` as `&>` and skips the `1` (it consumes one character too many
/// after `&>`): the tree of such text is not the statement PostgreSQL runs (unless what
/// it skipped is a space). Words, numbers
/// and strings are not compared (their display re-quotes and re-escapes); the cursor only
/// moves forward, so this is one pass over the text.
fn tokens_spell(sql: &str, tokens: &[TokenWithSpan]) -> bool {
    let mut at = TextCursor::default();
    // the source text of the operator token just before, when nothing came between
    let mut glued: Option<&str> = None;
    for t in tokens {
        let before = glued.take();
        match alone(&t.token) {
            Alone::Misread => return false,
            Alone::Fine => continue,
            Alone::Symbol => {}
        }
        let shown = t.token.to_string();
        let symbol = !shown.is_empty()
            && !shown.starts_with(['\'', '"', '`', '$'])
            && shown.bytes().all(|b| b.is_ascii_punctuation());
        if !symbol {
            continue;
        }
        let (Some(start), Some(end)) = (at.seek(sql, t.span.start), at.seek(sql, t.span.end))
        else {
            return false;
        };
        // the length, not the text (`!=` is shown as `<>`); a skipped space is harmless
        let Some(source) = sql.get(start..end) else {
            return false;
        };
        let covered = source.trim_end();
        if covered.len() != shown.len() {
            return false;
        }
        // PostgreSQL ends an operator before `/*` or `--` (a comment starts there); sqlparser
        // read `#/*` as one custom operator
        if covered.contains("/*") || covered.contains("--") {
            return false;
        }
        if covered.bytes().all(is_operator_char) {
            if let Some(left) = before {
                if !splits_as_postgres(left, covered) {
                    return false;
                }
            }
            // a swallowed space ends the run
            glued = (covered.len() == source.len()).then_some(covered);
        }
    }
    true
}

/// What a token says on its own (see [`tokens_spell`]).
enum Alone {
    /// PostgreSQL reads that text otherwise, or not at all.
    Misread,
    /// Read as written (words, numbers and strings are not compared further).
    Fine,
    /// An operator or punctuation: checked against the text it covers.
    Symbol,
}

fn alone(token: &Token) -> Alone {
    let misread_if = |wrong: bool| if wrong { Alone::Misread } else { Alone::Fine };
    match token {
        // PostgreSQL's only `$` parameter is `$` and digits: sqlparser also reads
        // `$88888S8888` as one placeholder, where PostgreSQL reads `$88888` and a word
        Token::Placeholder(p) => misread_if(
            p.strip_prefix('$')
                .is_some_and(|d| d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit())),
        ),
        // nor does a dollar-quote tag start with a digit: `$8S$…$8S$` is a parameter and
        // words to PostgreSQL, a string to sqlparser
        Token::DollarQuotedString(d) => misread_if(
            d.tag
                .as_deref()
                .is_some_and(|tag| tag.starts_with(|c: char| c.is_ascii_digit())),
        ),
        // `''` does not escape a quote in PostgreSQL's bit and hex strings: `x'ab''cd'` is
        // two constants to it, one (`ab'cd`) to sqlparser
        Token::HexStringLiteral(v) | Token::SingleQuotedByteStringLiteral(v) => {
            misread_if(v.contains('\''))
        }
        // sqlparser prints a quote after a backslash inside a quoted identifier undoubled
        // (`"a\""b"` comes out as `"a\"b"`), so the printed statement, which the
        // fingerprint is taken from, quotes differently from the text
        Token::Word(w) => misread_if(w.quote_style == Some('"') && w.value.contains("\\\"")),
        // characters PostgreSQL's grammar has no token for (`{`, `}`, `\` outside a
        // string, anything sqlparser can only call a `Char`): a syntax error to it, while
        // sqlparser reads `{t 'x'}` and `{t:n}` as ODBC escapes, the letter's case deciding
        // (`{T:n}` does not parse; found by the sql_fingerprint fuzzer)
        Token::LBrace | Token::RBrace | Token::Backslash | Token::Char(_) => Alone::Misread,
        // the usual tokens, spelled as read: no display to build
        Token::Number(..)
        | Token::Whitespace(_)
        | Token::SingleQuotedString(_)
        | Token::Comma
        | Token::Period
        | Token::LParen
        | Token::RParen
        | Token::EOF => Alone::Fine,
        _ => Alone::Symbol,
    }
}

/// The characters PostgreSQL reads as one operator when they follow each other.
fn is_operator_char(b: u8) -> bool {
    b"+-*/<>=~!@#%^&|`?".contains(&b)
}

/// Whether PostgreSQL also reads operator text `left` immediately followed by `right` as two
/// operators, as sqlparser did: it reads the whole run as one, except that trailing `+`/`-`
/// are split off a run that holds none of ``~!@#%^&|`?`` (`=-1` is `=` and `-1`). sqlparser
/// splits `@@@@` into `@@ @@`, one operator to PostgreSQL (found by the sql_fingerprint fuzzer).
fn splits_as_postgres(left: &str, right: &str) -> bool {
    let special = |s: &str| s.bytes().any(|b| b"~!@#%^&|`?".contains(&b));
    right.bytes().all(|b| b == b'+' || b == b'-') && !special(left)
}

/// A byte offset in a text and the (1-based) line and column sqlparser gives it.
struct TextCursor {
    line: u64,
    column: u64,
    byte: usize,
}

impl Default for TextCursor {
    fn default() -> Self {
        TextCursor {
            line: 1,
            column: 1,
            byte: 0,
        }
    }
}

impl TextCursor {
    /// Move forward to `to` and return its byte offset (`None` if it lies behind the cursor
    /// or past the end of `sql`).
    fn seek(&mut self, sql: &str, to: Location) -> Option<usize> {
        while (self.line, self.column) < (to.line, to.column) {
            let c = sql.get(self.byte..)?.chars().next()?;
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        ((self.line, self.column) == (to.line, to.column)).then_some(self.byte)
    }
}

/// Classify parsed statements (`None`: the text did not parse).
pub fn classify(ast: Option<&[Statement]>) -> Classification {
    let Some(stmts) = ast else {
        return Classification::write();
    };
    if let [only] = stmts {
        if let Some(class) = transaction_control(only) {
            return Classification {
                class,
                functions: Box::default(),
            };
        }
    }
    if stmts.is_empty() {
        return Classification::write();
    }
    let mut v = ReadCheck::default();
    for s in stmts {
        if !read_walk(s, &mut v) {
            return Classification::write();
        }
    }
    v.functions.sort();
    v.functions.dedup();
    if v.functions.iter().any(|f| changes_state(f)) {
        return Classification::write();
    }
    Classification {
        class: Class::Read,
        functions: v
            .functions
            .into_iter()
            .map(String::into_boxed_str)
            .collect(),
    }
}

fn read_only_modes(modes: &[TransactionMode]) -> bool {
    modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
        )
    })
}

fn transaction_control(s: &Statement) -> Option<Class> {
    match s {
        Statement::StartTransaction {
            modes, modifier, ..
        } => Some(Class::Begin {
            read_only: read_only_modes(modes),
            plain: modes.is_empty() && modifier.is_none(),
        }),
        Statement::Set(Set::SetTransaction {
            modes,
            session: false,
            ..
        }) => Some(Class::SetTransaction {
            read_only: read_only_modes(modes),
        }),
        Statement::Commit {
            chain: false,
            modifier: None,
            ..
        }
        | Statement::Rollback {
            chain: false,
            savepoint: None,
        } => Some(Class::End),
        _ => route_setting(s),
    }
}

fn route_setting(s: &Statement) -> Option<Class> {
    let text = s.to_string();
    route_setting_value(&text).map(Class::RouteSetting)
}

/// The value of `SET [SESSION] pake.route = …` in `text`; `None` when the text is not that.
/// Literals are not part of a cached statement shape, so the session reads the value from
/// each request's own text with [`route_value`].
fn route_setting_value(text: &str) -> Option<Option<Route>> {
    let text = text.trim().trim_end_matches(';').to_ascii_lowercase();
    let rest = text.strip_prefix("set ")?.trim_start();
    let rest = rest.strip_prefix("session ").unwrap_or(rest).trim_start();
    let rest = rest.strip_prefix("pake.route")?.trim_start();
    let value = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix("to "))?
        .trim()
        .trim_matches(|c| c == '\'' || c == '"');
    Some(match value {
        "primary" => Some(Route::Primary),
        "replica" => Some(Route::Replica),
        _ => None,
    })
}

/// The route a `SET pake.route` request asks for (`None`: automatic).
pub fn route_value(text: &str) -> Option<Route> {
    route_setting_value(text).flatten()
}

/// Is this top-level statement a read? Walks queries for writes, locks and functions.
fn read_walk(s: &Statement, v: &mut ReadCheck) -> bool {
    match s {
        Statement::Query(q) => q.visit(v).is_continue(),
        Statement::ShowVariable { .. } => true,
        Statement::Explain {
            analyze, statement, ..
        } => !*analyze && read_walk(statement, v),
        _ => false,
    }
}

/// Walks a read looking for anything that writes or locks, collecting function names.
#[derive(Default)]
struct ReadCheck {
    functions: Vec<String>,
}

impl Visitor for ReadCheck {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if !q.locks.is_empty() || q.for_clause.is_some() {
            return ControlFlow::Break(());
        }
        if let SetExpr::Select(sel) = q.body.as_ref() {
            if sel.into.is_some() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        // nested statements: writing CTEs (WITH x AS (INSERT …) …) and the like
        match s {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            if let Some(name) = f.name.0.last().and_then(|p| p.as_ident()) {
                self.functions.push(name.value.to_ascii_lowercase());
            } else {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => {
                match name.0.last().and_then(|p| p.as_ident()) {
                    Some(id) => self.functions.push(id.value.to_ascii_lowercase()),
                    None => return ControlFlow::Break(()),
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests;
