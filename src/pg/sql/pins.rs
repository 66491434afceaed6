//! Session state that cannot follow a client to another server, and the statements that
//! end it: what pins a transaction-mode client to its server and what lets it go.
//!
//! | state | pinned by | gone after |
//! |---|---|---|
//! | temporary tables | `CREATE TEMP …`, `… pg_temp.x`, `SELECT … INTO TEMP` | `DISCARD TEMP`, `DISCARD ALL` |
//! | session advisory locks | `pg_advisory_lock(…)` and the `try`/`shared` forms | `pg_advisory_unlock_all()`, `DISCARD ALL` |
//! | `WITH HOLD` cursors | `DECLARE c … WITH HOLD` | `CLOSE c`, `CLOSE ALL`, `DISCARD ALL` |
//! | SQL prepared statements | `PREPARE p …` | `DEALLOCATE p`, `DEALLOCATE ALL`, `DISCARD ALL` |
//! | `LISTEN` | `LISTEN ch` | `UNLISTEN *`, `DISCARD ALL` |
//! | loaded code | `LOAD`, `dblink_connect` | the end of the connection |
//!
//! Single locks (`pg_advisory_unlock(k)`) and single `UNLISTEN ch` are not followed: Pake
//! cannot tell whether others remain, so the client stays pinned. The text is read only for
//! statements the session-effect scan flagged, or while the client is pinned.

use super::lexer::{Kind as Tok, Lexer, Token};
use crate::pg::params::{Settled, TxPending};

/// A kind of state that pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Temp,
    Advisory,
    Cursor,
    Prepared,
    Listen,
    /// `LOAD`, `dblink_connect`: until the client disconnects.
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Temp => "temp table",
            Kind::Advisory => "advisory lock",
            Kind::Cursor => "cursor with hold",
            Kind::Prepared => "sql prepare",
            Kind::Listen => "listen",
            Kind::Other => "load",
        }
    }
}

/// What one statement does to the state that pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// State of this kind (and name, for cursors and prepared statements) now exists.
    Pin(Kind, Option<String>),
    /// The named one, or (`None`) every one of this kind, is gone.
    Unpin(Kind, Option<String>),
    DiscardAll,
}

/// Names of cursors and prepared statements followed per client; past this the client stays
/// pinned until `CLOSE ALL` / `DEALLOCATE ALL` / `DISCARD ALL`.
pub const MAX_NAMES: usize = 256;

/// The pin events of a Query or Parse text, in order.
pub fn events(sql: &str) -> Vec<Event> {
    let tokens: Vec<Token> = Lexer::new(sql).filter(|t| t.kind != Tok::Comment).collect();
    let mut out = Vec::new();
    for stmt in tokens.split(|t| t.is_punct(sql, b';')) {
        statement(sql, stmt, &mut out);
    }
    out
}

fn statement(src: &str, t: &[Token], out: &mut Vec<Event>) {
    let w = |i: usize, kw: &str| t.get(i).is_some_and(|tok| tok.is_word(src, kw));
    let name_at = |i: usize| t.get(i).and_then(|tok| name(src, tok));
    let any_word = |kw: &str| t.iter().any(|tok| tok.is_word(src, kw));
    let called = |f: &str| {
        t.windows(2)
            .any(|p| p[0].is_word(src, f) && p[1].is_punct(src, b'('))
    };
    let is_temp = |x: &Token| x.is_word(src, "temp") || x.is_word(src, "temporary");
    // `ON COMMIT DROP`: the table is gone when its transaction ends
    let drops_at_commit = t
        .windows(2)
        .any(|p| p[0].is_word(src, "commit") && p[1].is_word(src, "drop"));
    let creates_temp = w(0, "create")
        && !drops_at_commit
        && (t.iter().take(6).any(is_temp)
            || t.windows(2)
                .any(|p| p[0].is_word(src, "pg_temp") && p[1].is_punct(src, b'.')));
    let selects_into_temp = w(0, "select")
        && t.windows(2)
            .any(|p| p[0].is_word(src, "into") && is_temp(&p[1]));
    if creates_temp || selects_into_temp {
        out.push(Event::Pin(Kind::Temp, None));
    } else if w(0, "declare") && any_word("hold") && !any_word("without") {
        out.push(Event::Pin(Kind::Cursor, name_at(1)));
    } else if w(0, "close") {
        let which = if w(1, "all") { None } else { name_at(1) };
        out.push(Event::Unpin(Kind::Cursor, which));
    } else if w(0, "prepare") && !w(1, "transaction") {
        out.push(Event::Pin(Kind::Prepared, name_at(1)));
    } else if w(0, "deallocate") {
        let at = if w(1, "prepare") { 2 } else { 1 };
        let which = if w(at, "all") { None } else { name_at(at) };
        out.push(Event::Unpin(Kind::Prepared, which));
    } else if w(0, "listen") {
        out.push(Event::Pin(Kind::Listen, None));
    } else if w(0, "unlisten")
        && t.get(1)
            .is_some_and(|x| x.kind == Tok::Op && x.text(src) == "*")
    {
        out.push(Event::Unpin(Kind::Listen, None));
    } else if w(0, "discard") && w(1, "all") {
        out.push(Event::DiscardAll);
    } else if w(0, "discard") && (w(1, "temp") || w(1, "temporary")) {
        out.push(Event::Unpin(Kind::Temp, None));
    } else if w(0, "load") || called("dblink_connect") || called("dblink_connect_u") {
        out.push(Event::Pin(Kind::Other, None));
    }
    if [
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    ]
    .iter()
    .any(|f| called(f))
    {
        out.push(Event::Pin(Kind::Advisory, None));
    }
    if called("pg_advisory_unlock_all") {
        out.push(Event::Unpin(Kind::Advisory, None));
    }
}

/// A cursor or statement name as PostgreSQL folds it.
fn name(src: &str, tok: &Token) -> Option<String> {
    match tok.kind {
        Tok::Word => Some(tok.text(src).to_ascii_lowercase()),
        Tok::QuotedIdent => {
            let q = tok.text(src);
            Some(q.get(1..q.len().saturating_sub(1))?.replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// The state pinning one client, and the ends of state waiting for their transaction to
/// commit.
#[derive(Debug, Default)]
pub struct Pins {
    temp: bool,
    advisory: bool,
    listen: bool,
    other: bool,
    cursors: Vec<String>,
    prepared: Vec<String>,
    /// More names than `MAX_NAMES`: pinned until an `ALL` form or `DISCARD ALL`.
    overflow: bool,
    /// Ends seen in the open transaction, applied when it commits.
    pending: TxPending<Event>,
}

impl Pins {
    pub fn is_pinned(&self) -> bool {
        self.temp
            || self.advisory
            || self.listen
            || self.other
            || self.overflow
            || !self.cursors.is_empty()
            || !self.prepared.is_empty()
    }

    /// Why, for SHOW CLIENTS and logs: "temp table, advisory lock".
    pub fn reason(&self) -> Option<String> {
        let kinds = [
            (self.temp, Kind::Temp),
            (self.advisory, Kind::Advisory),
            (!self.cursors.is_empty() || self.overflow, Kind::Cursor),
            (!self.prepared.is_empty() || self.overflow, Kind::Prepared),
            (self.listen, Kind::Listen),
            (self.other, Kind::Other),
        ];
        let names: Vec<&str> = kinds
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, k)| k.name())
            .collect();
        (!names.is_empty()).then(|| names.join(", "))
    }

    /// A statement was sent: state it creates pins at once (even if it fails, being pinned
    /// longer is safe); ends wait for the commit.
    pub fn on_sent(&mut self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Pin(kind, name) => self.pin(kind, name),
                end => self.pending.push([end]),
            }
        }
    }

    fn pin(&mut self, kind: Kind, name: Option<String>) {
        let list = match kind {
            Kind::Temp => return self.temp = true,
            Kind::Advisory => return self.advisory = true,
            Kind::Listen => return self.listen = true,
            Kind::Other => return self.other = true,
            Kind::Cursor => &mut self.cursors,
            Kind::Prepared => &mut self.prepared,
        };
        match name {
            Some(n) if list.len() < MAX_NAMES => {
                if !list.contains(&n) {
                    list.push(n);
                }
            }
            _ => self.overflow = true,
        }
    }

    fn end(&mut self, e: Event) {
        match e {
            Event::Pin(..) => {}
            Event::DiscardAll => {
                let other = self.other;
                *self = Pins::default();
                self.other = other;
            }
            Event::Unpin(kind, name) => match kind {
                Kind::Temp => self.temp = false,
                Kind::Advisory => self.advisory = false,
                Kind::Listen => self.listen = false,
                Kind::Other => {}
                Kind::Cursor | Kind::Prepared => {
                    let list = match kind {
                        Kind::Cursor => &mut self.cursors,
                        _ => &mut self.prepared,
                    };
                    match name {
                        Some(n) => list.retain(|x| *x != n),
                        None => {
                            list.clear();
                            self.overflow = false;
                        }
                    }
                }
            },
        }
    }

    /// A server message reached the client.
    pub fn on_message(&mut self, tag: u8, body: &[u8]) {
        self.pending.on_message(tag, body);
    }

    /// A savepoint statement is being sent (ends of pinned state after a savepoint are
    /// undone by `ROLLBACK TO` it).
    pub fn savepoint(&mut self, op: &super::Savepoint) {
        self.pending.savepoint(op);
    }

    /// A ReadyForQuery answered the client: at the end of a transaction that committed, the
    /// ends it saw apply. Returns whether a `DISCARD ALL` was among them.
    pub fn on_ready(&mut self, status: u8) -> bool {
        let Settled::Commit(ends) = self.pending.on_ready(status) else {
            return false;
        };
        let mut discarded = false;
        for e in ends {
            discarded |= e == Event::DiscardAll;
            self.end(e);
        }
        discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_pin_and_end() {
        use Event::*;
        assert_eq!(
            events("create temp table t (id int)"),
            vec![Pin(Kind::Temp, None)]
        );
        assert_eq!(
            events("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1"),
            vec![]
        );
        assert_eq!(
            events("CREATE TABLE pg_temp.t (id int)"),
            vec![Pin(Kind::Temp, None)]
        );
        assert_eq!(
            events("SELECT * INTO TEMP t2 FROM t"),
            vec![Pin(Kind::Temp, None)]
        );
        assert_eq!(
            events("select pg_advisory_lock(1)"),
            vec![Pin(Kind::Advisory, None)]
        );
        assert_eq!(
            events("DECLARE \"C1\" CURSOR WITH HOLD FOR SELECT 1; CLOSE \"C1\""),
            vec![
                Pin(Kind::Cursor, Some("C1".into())),
                Unpin(Kind::Cursor, Some("C1".into()))
            ]
        );
        assert_eq!(events("declare c cursor without hold for select 1"), vec![]);
        assert_eq!(
            events("PREPARE q AS SELECT 1"),
            vec![Pin(Kind::Prepared, Some("q".into()))]
        );
        assert_eq!(
            events("DEALLOCATE PREPARE ALL"),
            vec![Unpin(Kind::Prepared, None)]
        );
        assert_eq!(events("PREPARE TRANSACTION 'x'"), vec![]);
        assert_eq!(
            events("LISTEN jobs; UNLISTEN *"),
            vec![Pin(Kind::Listen, None), Unpin(Kind::Listen, None)]
        );
        assert_eq!(events("UNLISTEN jobs"), vec![]);
        assert_eq!(
            events("select pg_advisory_unlock_all()"),
            vec![Unpin(Kind::Advisory, None)]
        );
        assert_eq!(events("DISCARD TEMP"), vec![Unpin(Kind::Temp, None)]);
        assert_eq!(events("discard all"), vec![DiscardAll]);
        assert_eq!(events("LOAD 'auto_explain'"), vec![Pin(Kind::Other, None)]);
        assert_eq!(events("select 'create temp table'"), vec![]);
    }

    #[test]
    fn pins_end_when_their_transaction_commits() {
        let mut p = Pins::default();
        p.on_sent(events(
            "create temp table t (id int); select pg_advisory_lock(1)",
        ));
        p.on_sent(events("declare c cursor with hold for select 1"));
        assert_eq!(
            p.reason().as_deref(),
            Some("temp table, advisory lock, cursor with hold")
        );
        // a rolled back end does not count
        p.on_sent(events("discard temp"));
        p.on_message(crate::pg::wire::be::COMMAND_COMPLETE, b"ROLLBACK\0");
        assert!(!p.on_ready(b'I'));
        assert!(p.reason().unwrap().contains("temp table"));
        p.on_sent(events("close c; discard temp"));
        assert!(!p.on_ready(b'T'), "still in the transaction");
        assert!(p.is_pinned());
        p.on_ready(b'I');
        assert_eq!(p.reason().as_deref(), Some("advisory lock"));
        p.on_sent(events("DISCARD ALL"));
        assert!(p.on_ready(b'I'));
        assert!(!p.is_pinned());
        // LOAD stays until the end of the connection
        p.on_sent(events("load 'x'"));
        p.on_sent(events("discard all"));
        p.on_ready(b'I');
        assert!(p.is_pinned());
    }

    #[test]
    fn names_are_bounded() {
        let mut p = Pins::default();
        for i in 0..MAX_NAMES + 1 {
            p.on_sent(events(&format!("prepare p{i} as select 1")));
        }
        assert_eq!(p.prepared.len(), MAX_NAMES);
        for i in 0..MAX_NAMES {
            p.on_sent(events(&format!("deallocate p{i}")));
        }
        p.on_ready(b'I');
        assert!(p.is_pinned(), "the names past the bound are unknown");
        p.on_sent(events("deallocate all"));
        p.on_ready(b'I');
        assert!(!p.is_pinned());
    }
}
