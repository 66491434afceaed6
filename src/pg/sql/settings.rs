//! Session settings a statement text changes, in a form Pake can replay on another server.
//!
//! In transaction mode a client's session-level `SET`, `RESET`, `RESET ALL`,
//! `SET SESSION CHARACTERISTICS AS TRANSACTION …` and `SELECT set_config(…, false)` must
//! follow it from server to server. This reads the raw text (only for statements the
//! session-effect scan already found to be settings, so never on the hot path) and returns
//! one [`Change`] per setting, or `None` when some statement leaves state that cannot be
//! replayed (`SET ROLE`, `set_config` inside a query over rows, a temp table in the same
//! text…): the caller then falls back to resetting the server, and the setting is lost on
//! the next server. `set_config` counts wherever it stands in a plain select list, as
//! drivers use it (asyncpg turns JIT off around its type introspection with `SELECT
//! current_setting('jit') AS cur, set_config('jit', 'off', false) AS new`, and back with
//! `set_config('jit', $1, false)`): its name and value are literals, or parameters whose
//! bound values [`setting_changes_bound`] is given.

use super::effects::{session_effect, SessionEffect};
use super::lexer::{Kind, Lexer, Token};
use super::normalize::normalize;

/// One session-level setting change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `name` (lower case) now has the value `sql` sets.
    Set { name: String, sql: String },
    /// `name` is back to its session default.
    Reset(String),
    /// Every setting is back to its session default.
    ResetAll,
}

/// The setting changes of a whole Query (or Parse) text, in order; `None` when one of its
/// statements changes the session in a way that cannot be replayed.
pub fn setting_changes(sql: &str) -> Option<Vec<Change>> {
    setting_changes_bound(sql, &[])
}

/// [`setting_changes`] of a statement bound with `params` (`params[0]` is `$1`; `None` is
/// NULL): a `set_config` argument may be one of them.
pub fn setting_changes_bound(sql: &str, params: &[Option<&[u8]>]) -> Option<Vec<Change>> {
    let tokens: Vec<Token> = Lexer::new(sql)
        .filter(|t| t.kind != Kind::Comment)
        .collect();
    let mut changes = Vec::new();
    for stmt in tokens.split(|t| t.is_punct(sql, b';')) {
        if stmt.is_empty() {
            continue;
        }
        match statement(sql, stmt, params) {
            Some(Found::Changes(c)) => changes.extend(c),
            Some(Found::Transactional) => {}
            None => {
                // not a setting: fine only when it leaves nothing else behind
                let start = stmt.first()?.start;
                let end = stmt.last()?.end;
                let text = sql.get(start..end)?;
                match session_effect(&normalize(text).0) {
                    SessionEffect::DiscardAll => changes.push(Change::ResetAll),
                    e if e.dirties() => return None,
                    // UNLISTEN, DEALLOCATE…: nothing a setting replay must know
                    _ => {}
                }
            }
        }
    }
    Some(changes)
}

enum Found {
    Changes(Vec<Change>),
    /// `SET LOCAL`, `SET TRANSACTION`, `set_config(…, true)`: ends with the transaction.
    Transactional,
}

fn statement(src: &str, t: &[Token], params: &[Option<&[u8]>]) -> Option<Found> {
    let w = |i: usize, kw: &str| t.get(i).is_some_and(|tok| tok.is_word(src, kw));
    if w(0, "set") {
        if w(1, "local") || w(1, "transaction") || w(1, "constraints") {
            return Some(Found::Transactional);
        }
        let rest = if w(1, "session") && !w(2, "characteristics") && !w(2, "authorization") {
            &t[2..]
        } else {
            &t[1..]
        };
        return set(src, rest).map(Found::Changes);
    }
    if w(0, "reset") {
        if t.len() == 2 && w(1, "all") {
            return Some(Found::Changes(vec![Change::ResetAll]));
        }
        let name = dotted_name(src, &t[1..])?;
        return Some(Found::Changes(vec![Change::Reset(name)]));
    }
    if w(0, "select") {
        return set_configs(src, &t[1..], params);
    }
    None
}

/// After `SET [SESSION]`: `name {TO|=} value`, `TIME ZONE …`, `SCHEMA '…'`,
/// `SESSION CHARACTERISTICS AS TRANSACTION …`.
fn set(src: &str, t: &[Token]) -> Option<Vec<Change>> {
    let w = |i: usize, kw: &str| t.get(i).is_some_and(|tok| tok.is_word(src, kw));
    if w(0, "session") && w(1, "characteristics") && w(2, "as") && w(3, "transaction") {
        return characteristics(src, &t[4..]);
    }
    if w(0, "time") && w(1, "zone") {
        return Some(vec![value_change("timezone", src, &t[2..])?]);
    }
    if w(0, "schema") && t.len() == 2 && t[1].kind == Kind::String {
        return Some(vec![value_change("search_path", src, &t[1..])?]);
    }
    if w(0, "names") {
        return Some(vec![value_change("client_encoding", src, &t[1..])?]);
    }
    if w(0, "role") || w(0, "session") {
        return None; // identity: not replayed, the server is reset instead
    }
    let eq = t
        .iter()
        .position(|tok| tok.is_word(src, "to") || (tok.kind == Kind::Op && tok.text(src) == "="))?;
    let name = dotted_name(src, &t[..eq])?;
    Some(vec![value_change(&name, src, &t[eq + 1..])?])
}

/// `SET name TO value` for the raw value tokens (`DEFAULT` resets).
fn value_change(name: &str, src: &str, value: &[Token]) -> Option<Change> {
    let (first, last) = (value.first()?, value.last()?);
    if value.iter().any(|t| t.kind == Kind::Param) {
        return None;
    }
    if value.len() == 1 && first.is_word(src, "default") {
        return Some(Change::Reset(name.to_string()));
    }
    let text = src.get(first.start..last.end)?;
    Some(Change::Set {
        name: name.to_string(),
        sql: format!("SET {} TO {}", quote_name(name), text),
    })
}

/// `ISOLATION LEVEL …`, `READ ONLY|WRITE`, `[NOT] DEFERRABLE`, separated by optional commas.
fn characteristics(src: &str, t: &[Token]) -> Option<Vec<Change>> {
    let words: Vec<String> = t
        .iter()
        .filter(|tok| !tok.is_punct(src, b','))
        .map(|tok| match tok.kind {
            Kind::Word => Some(tok.text(src).to_ascii_lowercase()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut out = Vec::new();
    let mut i = 0;
    let set = |name: &str, value: &str| Change::Set {
        name: name.into(),
        sql: format!("SET {name} TO '{value}'"),
    };
    while i < words.len() {
        let at = |k: usize| words.get(i + k).map(String::as_str);
        let (change, used) = match (at(0), at(1), at(2), at(3)) {
            (Some("isolation"), Some("level"), Some("serializable"), _) => {
                (set("default_transaction_isolation", "serializable"), 3)
            }
            (Some("isolation"), Some("level"), Some(a @ ("repeatable" | "read")), Some(b)) => {
                let level = format!("{a} {b}");
                if !["repeatable read", "read committed", "read uncommitted"]
                    .contains(&level.as_str())
                {
                    return None;
                }
                (set("default_transaction_isolation", &level), 4)
            }
            (Some("read"), Some("only"), _, _) => (set("default_transaction_read_only", "on"), 2),
            (Some("read"), Some("write"), _, _) => (set("default_transaction_read_only", "off"), 2),
            (Some("deferrable"), _, _, _) => (set("default_transaction_deferrable", "on"), 1),
            (Some("not"), Some("deferrable"), _, _) => {
                (set("default_transaction_deferrable", "off"), 2)
            }
            _ => return None,
        };
        out.push(change);
        i += used;
    }
    (!out.is_empty()).then_some(out)
}

/// Words that make a select list more than a list of expressions evaluated once: rows
/// (a `set_config` would run once per row, or not at all), a nested query, a target table.
const NOT_A_PLAIN_LIST: &[&str] = &[
    "from",
    "where",
    "into",
    "union",
    "intersect",
    "except",
    "limit",
    "offset",
    "fetch",
    "having",
    "group",
    "window",
    "case",
    "select",
    "with",
    "for",
    "returning",
    "values",
];

/// After `SELECT`: a select list whose only session-level calls are `set_config(name,
/// value, false|true)`, each argument a plain literal or a bound parameter, in a list of
/// expressions evaluated once (no `FROM`, no subquery, no `CASE`).
fn set_configs(src: &str, t: &[Token], params: &[Option<&[u8]>]) -> Option<Found> {
    if t.iter()
        .any(|tok| NOT_A_PLAIN_LIST.iter().any(|w| tok.is_word(src, w)))
    {
        return None;
    }
    let mut changes = Vec::new();
    let mut found = false;
    for (i, tok) in t.iter().enumerate() {
        let calls = t.get(i + 1).is_some_and(|n| n.is_punct(src, b'('));
        if tok.kind != Kind::Word || !calls {
            continue;
        }
        let name = tok.text(src).to_ascii_lowercase();
        if !super::effects::SESSION_FUNCTIONS.contains(&name.as_str()) {
            continue;
        }
        if name != "set_config" {
            return None; // an advisory lock, dblink: not a setting
        }
        found = true;
        if let Some(change) = set_config_call(src, &t[i + 1..], params)? {
            changes.push(change);
        }
    }
    match (found, changes.is_empty()) {
        (false, _) => None,
        (true, true) => Some(Found::Transactional),
        (true, false) => Some(Found::Changes(changes)),
    }
}

/// `(name, value, false|true)` after `set_config`: the change (`None` inside for `true`,
/// which ends with the transaction); `None` when it is not of that shape.
fn set_config_call(src: &str, t: &[Token], params: &[Option<&[u8]>]) -> Option<Option<Change>> {
    let shape = t.len() >= 7
        && t[0].is_punct(src, b'(')
        && t[2].is_punct(src, b',')
        && t[4].is_punct(src, b',')
        && t[5].kind == Kind::Word
        && t[6].is_punct(src, b')');
    if !shape {
        return None;
    }
    if t[5].is_word(src, "true") {
        return Some(None);
    }
    if !t[5].is_word(src, "false") {
        return None;
    }
    let name = argument(src, &t[1], params)?;
    let value = argument(src, &t[3], params)?;
    let sql = format!(
        "SELECT set_config({}, {}, false)",
        quote_literal(&name),
        quote_literal(&value)
    );
    let name = name.to_ascii_lowercase();
    Some(Some(Change::Set { name, sql }))
}

/// A `set_config` argument's value: a plain literal, or a bound parameter that is not NULL
/// (text or binary format alike: the argument's type is `text`, whose binary form is its
/// UTF-8 bytes).
fn argument(src: &str, t: &Token, params: &[Option<&[u8]>]) -> Option<String> {
    match t.kind {
        Kind::String => plain_literal(t.text(src)),
        Kind::Param => {
            let n: usize = t.text(src).strip_prefix('$')?.parse().ok()?;
            let bytes = (*params.get(n.checked_sub(1)?)?)?;
            String::from_utf8(bytes.to_vec()).ok()
        }
        _ => None,
    }
}

/// `value` as a SQL string literal, read the same whatever `standard_conforming_strings`
/// says (a backslash makes it an `E''` literal with the backslashes doubled).
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// The content of a plain `'…'` literal (no `E''`, no `$$`).
fn plain_literal(lit: &str) -> Option<String> {
    let inner = lit.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// `a` or `a.b` (words or quoted names) as one lower-case GUC name; the whole slice.
fn dotted_name(src: &str, t: &[Token]) -> Option<String> {
    let mut name = String::new();
    for (i, tok) in t.iter().enumerate() {
        match (i % 2, tok.kind) {
            (0, Kind::Word) => name.push_str(&tok.text(src).to_ascii_lowercase()),
            (0, Kind::QuotedIdent) => {
                let q = tok.text(src);
                name.push_str(&q.get(1..q.len().saturating_sub(1))?.replace("\"\"", "\""));
            }
            (1, Kind::Punct) if tok.is_punct(src, b'.') => name.push('.'),
            _ => return None,
        }
    }
    (!name.is_empty() && !name.ends_with('.')).then_some(name)
}

/// A GUC name as SQL: plain when it is a simple lower-case name, quoted otherwise.
pub fn quote_name(name: &str) -> String {
    name.split('.')
        .map(|p| {
            let plain = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !p.as_bytes()[0].is_ascii_digit();
            match plain {
                true => p.to_string(),
                false => format!("\"{}\"", p.replace('"', "\"\"")),
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, sql: &str) -> Change {
        Change::Set {
            name: name.into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn a_drivers_reset_query_resets_the_settings() {
        // asyncpg's Connection.reset(), run when a connection goes back to its pool
        let q = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;";
        assert_eq!(setting_changes(q), Some(vec![Change::ResetAll]));
        assert_eq!(
            setting_changes("DISCARD ALL; SET x = 1"),
            Some(vec![Change::ResetAll, set("x", "SET x TO 1")])
        );
        assert_eq!(
            setting_changes("CREATE TEMP TABLE t (a int); RESET ALL"),
            None
        );
    }

    #[test]
    fn plain_sets_keep_their_raw_value() {
        assert_eq!(
            setting_changes("SET search_path = app, public"),
            Some(vec![set("search_path", "SET search_path TO app, public")])
        );
        assert_eq!(
            setting_changes("set session Work_Mem to '64MB';"),
            Some(vec![set("work_mem", "SET work_mem TO '64MB'")])
        );
        assert_eq!(
            setting_changes("SET my.Custom = 'x'"),
            Some(vec![set("my.custom", "SET my.custom TO 'x'")])
        );
        assert_eq!(
            setting_changes("SET statement_timeout TO DEFAULT"),
            Some(vec![Change::Reset("statement_timeout".into())])
        );
        assert_eq!(
            setting_changes("SET SCHEMA 'app'"),
            Some(vec![set("search_path", "SET search_path TO 'app'")])
        );
    }

    #[test]
    fn resets_and_set_config() {
        assert_eq!(
            setting_changes("RESET ALL; reset work_mem"),
            Some(vec![Change::ResetAll, Change::Reset("work_mem".into())])
        );
        assert_eq!(
            setting_changes("SELECT set_config('Search_Path', 'a, b', false)"),
            Some(vec![set(
                "search_path",
                "SELECT set_config('Search_Path', 'a, b', false)"
            )])
        );
        assert_eq!(
            setting_changes("select set_config('x.y', '1', true)"),
            Some(vec![])
        );
        // parameters without their values, or a query over rows: not replayable
        assert_eq!(setting_changes("SELECT set_config($1, $2, false)"), None);
        assert_eq!(
            setting_changes("SELECT set_config('a.b', name, false) FROM t"),
            None
        );
        assert_eq!(
            setting_changes("SELECT set_config('a.b', 'c', false) FROM t WHERE false"),
            None
        );
        assert_eq!(
            setting_changes("SELECT (SELECT set_config('a.b', 'c', false))"),
            None
        );
        assert_eq!(
            setting_changes("SELECT set_config('a.b', 'c', false), pg_advisory_lock(1)"),
            None
        );
        assert_eq!(
            setting_changes("SELECT set_config('a.b', E'c', false)"),
            None
        );
    }

    /// asyncpg's JIT switch around its type introspection: off with literals among other
    /// columns, back with a bound parameter.
    #[test]
    fn set_config_in_a_select_list_and_with_parameters() {
        assert_eq!(
            setting_changes(
                "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new"
            ),
            Some(vec![set("jit", "SELECT set_config('jit', 'off', false)")])
        );
        let restore = "SELECT set_config('jit', $1, false)";
        assert_eq!(
            setting_changes_bound(restore, &[Some(b"on")]),
            Some(vec![set("jit", "SELECT set_config('jit', 'on', false)")])
        );
        assert_eq!(setting_changes_bound(restore, &[None]), None, "NULL");
        assert_eq!(setting_changes_bound(restore, &[]), None, "no value");
        assert_eq!(
            setting_changes_bound(
                "select pg_catalog.set_config($2, $1, false), set_config('x.y', '1', true)",
                &[Some(b"it's \\ me"), Some(b"App.User")]
            ),
            Some(vec![set(
                "app.user",
                "SELECT set_config('App.User', E'it''s \\\\ me', false)"
            )])
        );
        assert_eq!(
            setting_changes_bound(restore, &[Some(&[0xff, 0xfe])]),
            None,
            "not UTF-8"
        );
    }

    #[test]
    fn session_characteristics() {
        assert_eq!(
            setting_changes(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
            ),
            Some(vec![
                set(
                    "default_transaction_isolation",
                    "SET default_transaction_isolation TO 'repeatable read'"
                ),
                set(
                    "default_transaction_read_only",
                    "SET default_transaction_read_only TO 'on'"
                ),
            ])
        );
        assert_eq!(
            setting_changes("set session characteristics as transaction not deferrable"),
            Some(vec![set(
                "default_transaction_deferrable",
                "SET default_transaction_deferrable TO 'off'"
            )])
        );
        assert_eq!(
            setting_changes(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ SOMETHING"
            ),
            None
        );
    }

    #[test]
    fn mixed_texts() {
        // transaction-scoped settings and plain statements leave nothing to replay
        assert_eq!(
            setting_changes("BEGIN; SET LOCAL work_mem = '1MB'; SELECT 1; COMMIT"),
            Some(vec![])
        );
        assert_eq!(
            setting_changes("SET a.b = 1; SELECT 2"),
            Some(vec![set("a.b", "SET a.b TO 1")])
        );
        // state that cannot be replayed makes the whole text fall back
        for sql in [
            "SET ROLE app",
            "SET SESSION AUTHORIZATION app",
            "SET a.b = 1; CREATE TEMP TABLE t (id int)",
            "SET work_mem",
        ] {
            assert_eq!(setting_changes(sql), None, "{sql}");
        }
    }

    #[test]
    fn names_are_quoted_when_needed() {
        assert_eq!(quote_name("work_mem"), "work_mem");
        assert_eq!(quote_name("My.Odd\"name"), "\"My\".\"Odd\"\"name\"");
    }
}
