//! Which statements leave state on a server *session* — state that would leak to the next
//! client of a pooled connection: `SET` (not `SET LOCAL`), `RESET`, session advisory locks,
//! temporary tables, `LISTEN`, SQL `PREPARE`, `DECLARE … WITH HOLD`, `LOAD`, `set_config`.
//! The session marks such a server dirty and runs `server_reset_query` before reuse.

use super::lexer::{Kind, Lexer, Token};

/// How a statement text changes the server session beyond its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    None,
    /// Leaves session state behind (the reason is for logs).
    Dirties(&'static str),
    /// The whole text is `DEALLOCATE name` (`None` for `DEALLOCATE ALL`).
    Deallocate(Option<String>),
    /// The whole text is `DISCARD ALL`.
    DiscardAll,
}

impl SessionEffect {
    pub fn dirties(&self) -> bool {
        matches!(self, SessionEffect::Dirties(_))
    }
}

/// Functions whose effect outlives the transaction.
const SESSION_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "set_config",
    "dblink_connect",
    "dblink_connect_u",
];

/// Classify a normalised statement text (see `normalize`).
pub fn session_effect(normalized: &str) -> SessionEffect {
    let tokens: Vec<Token> = Lexer::new(normalized)
        .filter(|t| t.kind != Kind::Comment)
        .collect();
    let statements: Vec<&[Token]> = tokens
        .split(|t| t.is_punct(normalized, b';'))
        .filter(|s| !s.is_empty())
        .collect();
    if let [only] = statements.as_slice() {
        if let Some(e) = whole_text_command(normalized, only) {
            return e;
        }
    }
    for stmt in &statements {
        if let Some(reason) = dirties(normalized, stmt) {
            return SessionEffect::Dirties(reason);
        }
    }
    SessionEffect::None
}

fn word<'a>(src: &'a str, t: Option<&Token>) -> Option<&'a str> {
    t.filter(|t| t.kind == Kind::Word).map(|t| t.text(src))
}

fn whole_text_command(src: &str, stmt: &[Token]) -> Option<SessionEffect> {
    match (word(src, stmt.first()), stmt.len()) {
        (Some("discard"), 2) if word(src, stmt.get(1)) == Some("all") => {
            Some(SessionEffect::DiscardAll)
        }
        (Some("deallocate"), 2..=3) => {
            let name_tok = if word(src, stmt.get(1)) == Some("prepare") {
                stmt.get(2)
            } else {
                stmt.get(1)
            };
            let name_tok = name_tok?;
            if stmt.len() == 3 && word(src, stmt.get(1)) != Some("prepare") {
                return None;
            }
            match name_tok.kind {
                Kind::Word if name_tok.text(src) == "all" => Some(SessionEffect::Deallocate(None)),
                Kind::Word => Some(SessionEffect::Deallocate(Some(name_tok.text(src).into()))),
                Kind::QuotedIdent => {
                    let t = name_tok.text(src);
                    let inner = t.get(1..t.len().saturating_sub(1)).unwrap_or("");
                    Some(SessionEffect::Deallocate(Some(inner.replace("\"\"", "\""))))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn dirties(src: &str, stmt: &[Token]) -> Option<&'static str> {
    let first = word(src, stmt.first());
    let second = word(src, stmt.get(1));
    match first {
        Some("set") => match second {
            Some("local") | Some("transaction") | Some("constraints") => {}
            _ => return Some("SET"),
        },
        Some("reset") => return Some("RESET"),
        Some("listen") => return Some("LISTEN"),
        Some("prepare") if second != Some("transaction") => return Some("PREPARE"),
        Some("load") => return Some("LOAD"),
        Some("declare") => {
            let hold = stmt
                .windows(2)
                .any(|w| w[0].is_word(src, "with") && w[1].is_word(src, "hold"));
            if hold {
                return Some("DECLARE WITH HOLD");
            }
        }
        Some("create") => {
            let temp = stmt
                .iter()
                .take(6)
                .any(|t| t.is_word(src, "temp") || t.is_word(src, "temporary"))
                || stmt
                    .windows(2)
                    .any(|w| w[0].is_word(src, "pg_temp") && w[1].is_punct(src, b'.'));
            if temp {
                return Some("CREATE TEMP");
            }
        }
        _ => {}
    }
    // SELECT … INTO TEMP, and session-level functions anywhere in the statement
    if first == Some("select")
        && stmt.windows(2).any(|w| {
            w[0].is_word(src, "into")
                && (w[1].is_word(src, "temp") || w[1].is_word(src, "temporary"))
        })
    {
        return Some("SELECT INTO TEMP");
    }
    stmt.windows(2).find_map(|w| {
        let name = word(src, Some(&w[0]))?;
        (w[1].is_punct(src, b'(') && SESSION_FUNCTIONS.contains(&name)).then_some(match name {
            "set_config" => "set_config",
            "dblink_connect" | "dblink_connect_u" => "dblink",
            _ => "advisory lock",
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::sql::normalize::normalize;

    fn effect(sql: &str) -> SessionEffect {
        session_effect(&normalize(sql).0)
    }

    #[test]
    fn dirtying_statements() {
        for sql in [
            "SET search_path = app",
            "set session timezone to 'UTC'",
            "SET statement_timeout TO 5000",
            "RESET ALL",
            "LISTEN jobs",
            "PREPARE q AS SELECT 1",
            "CREATE TEMP TABLE t (id int)",
            "create temporary table t as select 1",
            "CREATE TABLE pg_temp.t (id int)",
            "SELECT pg_advisory_lock(42)",
            "select pg_try_advisory_lock_shared(1, 2)",
            "SELECT set_config('search_path', 'x', false)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "select 1; set work_mem = '1GB'",
            "SELECT * INTO TEMP t2 FROM t",
            "LOAD 'auto_explain'",
        ] {
            assert!(effect(sql).dirties(), "{sql} should dirty the session");
        }
    }

    #[test]
    fn clean_statements() {
        for sql in [
            "SELECT 1",
            "SET LOCAL search_path = app",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT pg_advisory_unlock(1)",
            "BEGIN",
            "UNLISTEN *",
            "CREATE TABLE t (id int)",
            "select 'SET x = 1'",
            "DECLARE c CURSOR FOR SELECT 1",
            "insert into settings(k) values ('set')",
        ] {
            assert_eq!(effect(sql), SessionEffect::None, "{sql}");
        }
    }

    #[test]
    fn local_commands() {
        assert_eq!(effect("DEALLOCATE ALL"), SessionEffect::Deallocate(None));
        assert_eq!(
            effect("deallocate prepare s1;"),
            SessionEffect::Deallocate(Some("s1".into()))
        );
        assert_eq!(
            effect("DEALLOCATE \"MyStmt\""),
            SessionEffect::Deallocate(Some("MyStmt".into()))
        );
        assert_eq!(
            effect("DEALLOCATE Foo"),
            SessionEffect::Deallocate(Some("foo".into()))
        );
        assert_eq!(effect("DISCARD ALL"), SessionEffect::DiscardAll);
        // only a lone DISCARD ALL is answered locally; in a batch it goes to the server
        assert_eq!(effect("DISCARD ALL; SELECT 1"), SessionEffect::None);
    }
}
