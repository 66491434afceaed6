//! Which statements leave state on a server *session* — state that would leak to the next
//! client of a pooled connection: `SET` (not `SET LOCAL`), `RESET`, session advisory locks,
//! temporary tables, `LISTEN`, SQL `PREPARE`, `DECLARE … WITH HOLD`, `LOAD`, `set_config`.
//! The session marks such a server dirty and runs `server_reset_query` before reuse — except
//! settings in transaction mode, which follow the client instead ([`super::settings`]).

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
    /// The whole text is `LISTEN channel` (the channel folded as PostgreSQL folds it).
    Listen(String),
    /// The whole text is `UNLISTEN channel` (`None` for `UNLISTEN *`).
    Unlisten(Option<String>),
}

impl SessionEffect {
    pub fn dirties(&self) -> bool {
        matches!(self, SessionEffect::Dirties(_) | SessionEffect::Listen(_))
    }

    /// Why the statement leaves state on a server session, when it does.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            SessionEffect::Dirties(r) => Some(r),
            SessionEffect::Listen(_) => Some("LISTEN"),
            _ => None,
        }
    }
}

/// Functions whose effect outlives the transaction.
pub(super) const SESSION_FUNCTIONS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "set_config",
    "dblink_connect",
    "dblink_connect_u",
];

/// Classify a normalised statement text (see `normalize`).
///
/// One pass over the tokens keeping a few per statement (memory does not grow with the
/// text: a 20 MB statement is millions of tokens).
pub fn session_effect(normalized: &str) -> SessionEffect {
    let src = normalized;
    let mut seen = Statements::default();
    let mut scan = Scan::default();
    for tok in Lexer::new(src).filter(|t| t.kind != Kind::Comment) {
        if tok.is_punct(src, b';') {
            seen.end(src, &mut scan);
            // a dirty statement and a second statement: nothing else can change the answer
            if seen.dirty.is_some() && seen.count >= 2 {
                break;
            }
            continue;
        }
        scan.feed(src, tok);
    }
    seen.end(src, &mut scan);
    if let (1, Some(only)) = (seen.count, &seen.first) {
        if only.count <= HEAD {
            if let Some(e) = whole_text_command(src, &only.head[..only.count]) {
                return e;
            }
        }
    }
    seen.dirty
        .map_or(SessionEffect::None, SessionEffect::Dirties)
}

/// Whether a statement text may send a notification: `NOTIFY` or a `pg_notify(…)` call (a
/// word that only looks like one costs the listener a round trip; a trigger's is not seen).
pub fn notifies(normalized: &str) -> bool {
    Lexer::new(normalized)
        .any(|t| t.is_word(normalized, "notify") || t.is_word(normalized, "pg_notify"))
}

/// A savepoint statement, so that session changes can be followed through `ROLLBACK TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Savepoint {
    /// `SAVEPOINT name`.
    Set(std::sync::Arc<str>),
    /// `RELEASE [SAVEPOINT] name`.
    Release(std::sync::Arc<str>),
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(std::sync::Arc<str>),
    /// A whole `ROLLBACK` or `ABORT` (`[WORK | TRANSACTION] [AND [NO] CHAIN]`): everything
    /// the transaction did before it is undone.
    Rollback,
    /// A savepoint statement among others in one text, or one not understood: not followed.
    Unknown,
}

/// The savepoint statement a normalised text is, if it is one (alone).
pub fn savepoint(normalized: &str) -> Option<Savepoint> {
    let src = normalized;
    let (mut found, mut statements) = (None, 0);
    let mut head = [Token::default(); HEAD];
    let mut n = 0;
    let toks = Lexer::new(src).filter(|t| t.kind != Kind::Comment);
    for tok in toks.map(Some).chain([None]) {
        if let Some(tok) = tok.filter(|t| !t.is_punct(src, b';')) {
            if n < HEAD {
                head[n] = tok;
            }
            n += 1;
            continue;
        }
        if n > 0 {
            statements += 1;
            let op = savepoint_op(src, &head[..n.min(HEAD)], n);
            found = found.or(op);
        }
        n = 0;
        if statements > 1 && found.is_some() {
            return Some(Savepoint::Unknown);
        }
    }
    found
}

/// A statement's first tokens (`count` in all) as a savepoint statement.
fn savepoint_op(src: &str, head: &[Token], count: usize) -> Option<Savepoint> {
    let w = |i: usize| word(src, head.get(i));
    let name = |i: usize| -> Option<std::sync::Arc<str>> {
        (i + 1 == count).then_some(())?;
        identifier(src, head.get(i)?).map(Into::into)
    };
    let after = |i: usize, optional: &[&str]| match w(i) {
        Some(x) if optional.contains(&x) => i + 1,
        _ => i,
    };
    let op = match w(0)? {
        "savepoint" => name(1).map(Savepoint::Set),
        "release" => name(after(1, &["savepoint"])).map(Savepoint::Release),
        "rollback" | "abort" => {
            let to = after(1, &["work", "transaction"]);
            match w(to) {
                Some("to") => name(after(to + 1, &["savepoint"])).map(Savepoint::RollbackTo),
                None if to == count => Some(Savepoint::Rollback),
                Some("and") => Some(Savepoint::Rollback),
                _ => return None, // ROLLBACK PREPARED
            }
        }
        _ => return None,
    };
    Some(op.unwrap_or(Savepoint::Unknown))
}

/// The statements of a text so far.
#[derive(Default)]
struct Statements {
    count: usize,
    /// The first statement (a whole-text command when it is the only one).
    first: Option<Scan>,
    /// Why the first dirtying statement dirties.
    dirty: Option<&'static str>,
}

impl Statements {
    fn end(&mut self, src: &str, scan: &mut Scan) {
        if scan.count == 0 {
            return;
        }
        self.count += 1;
        let done = std::mem::take(scan);
        if self.dirty.is_none() {
            self.dirty = done.dirties(src);
        }
        if self.count == 1 {
            self.first = Some(done);
        }
    }
}

/// Tokens kept from the start of each statement.
const HEAD: usize = 6;

/// What one statement showed, token by token.
#[derive(Default)]
struct Scan {
    count: usize,
    head: [Token; HEAD],
    prev: Option<Token>,
    /// `WITH HOLD` somewhere.
    with_hold: bool,
    /// `pg_temp .` somewhere.
    pg_temp_dot: bool,
    /// `INTO TEMP` / `INTO TEMPORARY` somewhere.
    into_temp: bool,
    /// `COMMIT DROP` somewhere (a temp table `ON COMMIT DROP` is gone at its commit).
    commit_drop: bool,
    /// A session-level function called somewhere (the first one).
    function: Option<&'static str>,
}

impl Scan {
    fn feed(&mut self, src: &str, tok: Token) {
        if self.count < HEAD {
            self.head[self.count] = tok;
        }
        self.count += 1;
        if let Some(prev) = self.prev {
            let pair = [prev, tok];
            self.with_hold |= pair[0].is_word(src, "with") && pair[1].is_word(src, "hold");
            self.pg_temp_dot |= pair[0].is_word(src, "pg_temp") && pair[1].is_punct(src, b'.');
            self.commit_drop |= pair[0].is_word(src, "commit") && pair[1].is_word(src, "drop");
            self.into_temp |= pair[0].is_word(src, "into")
                && (pair[1].is_word(src, "temp") || pair[1].is_word(src, "temporary"));
            if self.function.is_none() {
                self.function = session_function(src, &pair);
            }
        }
        self.prev = Some(tok);
    }

    fn dirties(&self, src: &str) -> Option<&'static str> {
        let head = &self.head[..self.count.min(HEAD)];
        let first = word(src, head.first());
        let second = word(src, head.get(1));
        match first {
            Some("set") => match second {
                Some("local") | Some("transaction") | Some("constraints") => {}
                _ => return Some("SET"),
            },
            Some("reset") => return Some("RESET"),
            Some("listen") => return Some("LISTEN"),
            Some("prepare") if second != Some("transaction") => return Some("PREPARE"),
            Some("load") => return Some("LOAD"),
            Some("declare") if self.with_hold => return Some("DECLARE WITH HOLD"),
            Some("create") => {
                let temp = head
                    .iter()
                    .any(|t| t.is_word(src, "temp") || t.is_word(src, "temporary"));
                if (temp || self.pg_temp_dot) && !self.commit_drop {
                    return Some("CREATE TEMP");
                }
            }
            _ => {}
        }
        // SELECT … INTO TEMP, and session-level functions anywhere in the statement
        if first == Some("select") && self.into_temp {
            return Some("SELECT INTO TEMP");
        }
        self.function
    }
}

/// `name (` where `name` is a session-level function: the reason it dirties.
fn session_function(src: &str, pair: &[Token; 2]) -> Option<&'static str> {
    let name = word(src, Some(&pair[0]))?;
    (pair[1].is_punct(src, b'(') && SESSION_FUNCTIONS.contains(&name)).then_some(match name {
        "set_config" => "set_config",
        "dblink_connect" | "dblink_connect_u" => "dblink",
        _ => "advisory lock",
    })
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
                _ => Some(SessionEffect::Deallocate(Some(identifier(src, name_tok)?))),
            }
        }
        (Some("listen"), 2) => Some(SessionEffect::Listen(identifier(src, stmt.get(1)?)?)),
        (Some("unlisten"), 2) => match stmt.get(1)? {
            t if t.text(src) == "*" => Some(SessionEffect::Unlisten(None)),
            t => Some(SessionEffect::Unlisten(Some(identifier(src, t)?))),
        },
        _ => None,
    }
}

/// The database a statement needs free of other sessions: `DROP DATABASE name`,
/// `ALTER DATABASE name RENAME TO …`, `CREATE DATABASE … TEMPLATE name`. PostgreSQL refuses
/// them (55006, after waiting 5 s) while anyone is connected to `name` — Pake's idle pooled
/// servers included, which a client never sees, so Pake closes those first.
pub fn database_to_free(normalized: &str) -> Option<String> {
    let src = normalized;
    let mut toks = Lexer::new(src).filter(|t| t.kind != Kind::Comment);
    let first = toks.next()?;
    let second = toks.next()?;
    if first.kind != Kind::Word || word(src, Some(&second)) != Some("database") {
        return None;
    }
    match first.text(src) {
        "drop" => {
            let mut name = toks.next()?;
            if word(src, Some(&name)) == Some("if") {
                toks.next()?; // exists
                name = toks.next()?;
            }
            identifier(src, &name)
        }
        "alter" => {
            let name = toks.next()?;
            (word(src, toks.next().as_ref()) == Some("rename")).then_some(())?;
            identifier(src, &name)
        }
        "create" => {
            // bounded: CREATE DATABASE takes a dozen options at most
            let mut toks = toks.take(64);
            while let Some(t) = toks.next() {
                if word(src, Some(&t)) == Some("template") {
                    let mut name = toks.next()?;
                    if name.kind == Kind::Op && name.text(src) == "=" {
                        name = toks.next()?;
                    }
                    return identifier(src, &name);
                }
            }
            // without TEMPLATE it copies template1, which no other session may be using
            // (a psql session to template1 left a pooled server there: every plain CREATE
            // DATABASE failed with 55006 until it idled out)
            Some("template1".to_string())
        }
        _ => None,
    }
}

/// A name token as PostgreSQL reads it: a word (already folded by the normaliser) or a
/// quoted identifier, unquoted.
fn identifier(src: &str, t: &Token) -> Option<String> {
    match t.kind {
        Kind::Word => Some(t.text(src).into()),
        Kind::QuotedIdent => {
            let t = t.text(src);
            let inner = t.get(1..t.len().saturating_sub(1)).unwrap_or("");
            Some(inner.replace("\"\"", "\""))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::sql::normalize::normalize;

    #[test]
    fn savepoint_statements() {
        let sp = |sql: &str| savepoint(&normalize(sql).0);
        let name = |n: &str| std::sync::Arc::<str>::from(n);
        assert_eq!(
            sp("SAVEPOINT PGJDBC_AUTOSAVE"),
            Some(Savepoint::Set(name("pgjdbc_autosave")))
        );
        assert_eq!(
            sp("release savepoint \"A b\""),
            Some(Savepoint::Release(name("A b")))
        );
        assert_eq!(sp("RELEASE a;"), Some(Savepoint::Release(name("a"))));
        assert_eq!(
            sp("ROLLBACK TO SAVEPOINT PGJDBC_AUTOSAVE"),
            Some(Savepoint::RollbackTo(name("pgjdbc_autosave")))
        );
        assert_eq!(
            sp("rollback work to a"),
            Some(Savepoint::RollbackTo(name("a")))
        );
        assert_eq!(sp("ROLLBACK"), Some(Savepoint::Rollback));
        assert_eq!(sp("abort work;"), Some(Savepoint::Rollback));
        assert_eq!(
            sp("rollback transaction and no chain"),
            Some(Savepoint::Rollback)
        );
        assert_eq!(sp("rollback; set x = 1"), Some(Savepoint::Unknown));
        assert_eq!(sp("rollback prepared 'x'"), None);
        assert_eq!(sp("select 1"), None);
        assert_eq!(sp("savepoint a; set x = 1"), Some(Savepoint::Unknown));
        assert_eq!(sp("set x = 1; rollback to a"), Some(Savepoint::Unknown));
        assert_eq!(sp("savepoint"), Some(Savepoint::Unknown));
        assert_eq!(sp("select 1; select 2"), None);
    }

    #[test]
    fn statements_that_need_a_database_free_of_sessions() {
        let free = |sql: &str| database_to_free(&normalize(sql).0);
        assert_eq!(free("DROP DATABASE testdb"), Some("testdb".into()));
        assert_eq!(
            free("drop database if exists \"My DB\""),
            Some("My DB".into())
        );
        assert_eq!(free("DROP DATABASE x WITH (FORCE)"), Some("x".into()));
        assert_eq!(free("ALTER DATABASE Old RENAME TO new"), Some("old".into()));
        assert_eq!(free("ALTER DATABASE old SET work_mem = '1MB'"), None);
        assert_eq!(
            free("CREATE DATABASE copy TEMPLATE = tpl ENCODING 'UTF8'"),
            Some("tpl".into())
        );
        assert_eq!(free("CREATE DATABASE fresh"), Some("template1".into()));
        assert_eq!(free("DROP TABLE database"), None);
        assert_eq!(free("SELECT 1"), None);
    }

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
            "UNLISTEN * ; select 1",
            "CREATE TABLE t (id int)",
            "create temp table t (id int) on commit drop",
            "select 'SET x = 1'",
            "DECLARE c CURSOR FOR SELECT 1",
            "insert into settings(k) values ('set')",
        ] {
            assert_eq!(effect(sql), SessionEffect::None, "{sql}");
        }
    }

    #[test]
    fn listen_and_unlisten_name_their_channel() {
        assert_eq!(effect("LISTEN Jobs"), SessionEffect::Listen("jobs".into()));
        assert_eq!(
            effect("listen \"Mixed\"\"Case\";"),
            SessionEffect::Listen("Mixed\"Case".into())
        );
        assert_eq!(effect("UNLISTEN *"), SessionEffect::Unlisten(None));
        assert_eq!(
            effect("unlisten jobs"),
            SessionEffect::Unlisten(Some("jobs".into()))
        );
        // with anything else in the text it is a statement for a server, and dirties it
        assert_eq!(
            effect("LISTEN a; LISTEN b"),
            SessionEffect::Dirties("LISTEN")
        );
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

    /// Issue 18: the reader keeps a few tokens per statement, not all of them (a 20 MB
    /// statement is millions), and still reads to the end.
    #[test]
    fn long_texts_are_read_to_the_end() {
        let long = format!(
            "select {} set_config('a', 'b', false)",
            "1, ".repeat(100_000)
        );
        assert_eq!(effect(&long), SessionEffect::Dirties("set_config"));
        let many = format!("{}set x = 1; select 2", "select 1; ".repeat(10_000));
        assert_eq!(effect(&many), SessionEffect::Dirties("SET"));
        assert_eq!(effect("discard all;"), SessionEffect::DiscardAll);
        assert_eq!(effect("select 1; discard all"), SessionEffect::None);
    }
}
