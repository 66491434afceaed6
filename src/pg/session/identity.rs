//! Backend identity through a pooler.
//!
//! A client's BackendKeyData carries a pid Pake minted (`conn.info.backend_pid` in drivers),
//! not a server's: in transaction mode the client's transactions run on whichever server is
//! free, and `pg_backend_pid()` answers the pid of the server running the current
//! transaction, which may change between transactions. Pake's pid names the *client
//! connection*, so `SELECT pg_terminate_backend(<that pid>)` closes that client's connection
//! with 57P01 (its transaction, if any, is rolled back on its server) and answers `t`, as a
//! server would, however a driver sends the call: a Query, or the extended protocol with the
//! pid written out or bound, the statement unnamed or named, in or out of a transaction. The
//! same user (or an admin user) may do it; another gets 42501. A pid that is not one of
//! Pake's goes to the server as usual.

use super::frame::{self, Frames};
use super::Session;
use crate::pg::error::Error;
use crate::pg::route::Class;
use crate::pg::sql::lexer::{Kind, Lexer};
use crate::pg::sql::SessionEffect;
use crate::pg::wire::{self, backend, fe};
use bytes::Buf;

/// Longest Query text read for a `pg_terminate_backend` call.
const MAX_CALL: usize = 256;
/// Most named `pg_terminate_backend` statements a session-mode client has remembered.
const MAX_TERMINATE_STATEMENTS: usize = 16;
/// Type oids of the parameter as the call may declare or cast it.
const INT2: u32 = 21;
const INT4: u32 = 23;
const INT8: u32 = 20;

/// `pg_terminate_backend`'s argument, as the call is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    Pid(i32),
    /// `$1`, with the type a cast gives it (`None`: inferred, `integer`).
    Param(Option<u32>),
}

impl Arg {
    /// The pid called with these bound values, and the parameter's type when it was bound
    /// (`declared`: the type the Parse gave `$1`): `None` unless a written-out pid comes
    /// with no values, or `$1` with one non-NULL value that reads as a pid.
    fn pid(
        self,
        values: &frame::BindValues<'_>,
        declared: Option<u32>,
    ) -> Option<(i32, Option<u32>)> {
        match (self, values.params.as_slice()) {
            (Arg::Pid(pid), []) => Some((pid, None)),
            (Arg::Param(cast), [Some(v)]) => {
                let pid = bound_pid(v, values.param_binary(0))?;
                Some((pid, Some(cast.or(declared).unwrap_or(INT4))))
            }
            _ => None,
        }
    }
}

/// A call Pake may answer, read from the request: its pid, how the replies look, and how
/// many bytes of the client buffer it spans.
struct Call {
    pid: i32,
    /// The extended protocol's messages to answer beside the row (`None`: a Query).
    extended: Option<Extended>,
    len: usize,
}

struct Extended {
    /// The request parses the (unnamed) statement.
    parsed: bool,
    /// Describe of the statement (`S`) or of the portal (`P`).
    describe: Option<u8>,
    param_type: u32,
    result_format: i16,
}

impl Session {
    /// Answer `SELECT pg_terminate_backend(<a Pake pid>)` with no server attached: a Query
    /// with the pid written out, or the unnamed statement's Parse, Bind, Describe, Execute
    /// and Sync with the pid written out or bound as `$1` (psycopg, pgjdbc and node-postgres
    /// send a parameter). Another client's pid ends that client; the client's own ends it,
    /// as a server ends its own session, with the FATAL before any row.
    pub(super) fn terminate_locally(&mut self) -> Result<bool, Error> {
        let candidate = self.request.head().is_some_and(|a| match a.class {
            // a call of a volatile function, read or write as the router sees it
            Class::Read => !a.functions_safe,
            Class::Write => true,
            _ => false,
        });
        if !candidate {
            return Ok(false);
        }
        let status = self.unattached_status();
        if !self.answer_terminate(self.request.single_query, status)? {
            return Ok(false);
        }
        self.request.clear();
        Ok(true)
    }

    /// [`Session::terminate_locally`] with a server attached between requests: inside a
    /// transaction (psycopg opens one before each statement by default), or for a client
    /// that holds its server (session mode, pinned). The server is left as it is.
    pub(super) fn terminate_attached(&mut self, tag: u8, len: usize) -> Result<bool, Error> {
        // asyncpg prepares with Parse, Describe and Flush, then sends Bind, Execute, Sync:
        // the server may be inside that batch, everything it was sent answered
        let Some((status, open)) = self
            .server
            .as_deref()
            .filter(|s| s.answered() && (!s.in_extended || tag == fe::BIND))
            .map(|s| (s.tx_status, s.in_extended))
        else {
            return Ok(false);
        };
        // a short Query or Parse naming the function, or a Bind of a statement that does:
        // nothing more is read of any other request
        let text = match tag {
            fe::QUERY | fe::PARSE => Some(&self.crbuf[..len]),
            fe::BIND => frame::bind(&self.crbuf[..len])
                .ok()
                .and_then(|b| self.statement_definition(b.statement)),
            _ => None,
        };
        if !text.is_some_and(|t| t.len() <= MAX_CALL && names_call(t)) {
            return Ok(false);
        }
        if !self.answer_terminate(tag == fe::QUERY, status)? {
            return Ok(false);
        }
        if let Some(server) = self.server.as_deref_mut().filter(|_| open) {
            // the server's batch ends with a Sync of Pake's: its ReadyForQuery is not the
            // client's, which was just written
            server.in_extended = false;
            postgres_protocol::message::frontend::sync(&mut server.wbuf);
            server
                .replies
                .push(crate::pg::server::replies::Expect::Ready {
                    swallow: true,
                    stmt: false,
                });
        }
        Ok(true)
    }

    /// Session mode: a statement is parsed (`definition`: its text and parameter types;
    /// the unnamed one too, whose Bind may come in a later request); remember it when it
    /// calls `pg_terminate_backend`, forget an earlier statement of the name otherwise.
    pub(super) fn note_terminate_statement(&mut self, name: &[u8], definition: &[u8]) {
        let call = definition.len() <= MAX_CALL && names_call(definition);
        if !call {
            self.forget_terminate_statement(name);
            return;
        }
        let known = &mut self.rare().terminate_statements;
        if known.len() >= MAX_TERMINATE_STATEMENTS {
            known.clear();
        }
        known.insert(name.into(), definition.into());
    }

    /// Session mode: the statement `name` is gone (closed, replaced, or, unnamed, destroyed
    /// by a simple Query).
    pub(super) fn forget_terminate_statement(&mut self, name: &[u8]) {
        if let Some(r) = self.rare.as_mut() {
            r.terminate_statements.remove(name);
        }
    }

    /// Session mode: a simple Query with `effect` is sent; SQL `DEALLOCATE` and `DISCARD ALL`
    /// end protocol statements too, so a later Bind of one is the server's to refuse.
    pub(super) fn forget_deallocated(&mut self, effect: &SessionEffect) {
        match effect {
            SessionEffect::Deallocate(Some(name)) => {
                self.forget_terminate_statement(name.as_bytes())
            }
            SessionEffect::Deallocate(None) | SessionEffect::DiscardAll => {
                if let Some(r) = self.rare.as_mut() {
                    r.terminate_statements.clear();
                }
            }
            _ => {}
        }
    }

    /// The Parse definition of the named statement `name`, when it may call
    /// `pg_terminate_backend` (or, in transaction mode, whatever it is).
    fn statement_definition(&self, name: &[u8]) -> Option<&[u8]> {
        if name.is_empty() && !self.unnamed_parse.is_empty() {
            // the unnamed statement of an earlier request (transaction mode keeps its Parse)
            return frame::parse(&self.unnamed_parse).ok().map(|p| p.definition);
        }
        match self.statements.get(name) {
            Some(stmt) => Some(stmt.definition()),
            None => self
                .rare
                .as_ref()
                .and_then(|r| r.terminate_statements.get(name))
                .map(|d| &d[..]),
        }
    }

    /// The call at the head of the client buffer, answered when it names a Pake pid.
    fn answer_terminate(&mut self, query: bool, status: u8) -> Result<bool, Error> {
        let call = match query {
            true => self.query_call()?,
            false => self.extended_call()?,
        };
        let Some(call) = call else {
            return Ok(false);
        };
        let Some(slot) = self.proxy.cancel.get(call.pid) else {
            return Ok(false);
        };
        let admin = self
            .proxy
            .config()
            .general
            .admin_users
            .iter()
            .any(|u| u == self.user());
        let format = call.extended.as_ref().map_or(0, |e| e.result_format);
        if let Some(e) = &call.extended {
            if e.parsed {
                backend::parse_complete(&mut self.cwbuf);
            }
            backend::bind_complete(&mut self.cwbuf);
            match e.describe {
                Some(b'S') => {
                    backend::one_parameter(&mut self.cwbuf, e.param_type);
                    backend::bool_column(&mut self.cwbuf, "pg_terminate_backend", 0);
                }
                Some(_) => backend::bool_column(&mut self.cwbuf, "pg_terminate_backend", format),
                None => {}
            }
        } else {
            backend::bool_column(&mut self.cwbuf, "pg_terminate_backend", 0);
        }
        if slot.info.user != self.user() && !admin {
            let message = "permission denied to terminate process";
            backend::error_response(
                &mut self.cwbuf,
                &backend::Fields {
                    severity: "ERROR",
                    code: "42501",
                    message,
                    detail: None,
                    hint: Some("Only the same user or an admin user may terminate a Pake client."),
                },
            );
        } else if call.pid == self.cancel.pid {
            return Err(Error::Terminated);
        } else {
            slot.terminate();
            backend::bool_row(&mut self.cwbuf, true, format);
            backend::command_complete(&mut self.cwbuf, "SELECT 1");
        }
        backend::ready_for_query(&mut self.cwbuf, status);
        self.tally.queries += 1;
        self.crbuf.advance(call.len);
        Ok(true)
    }

    /// A Query calling `pg_terminate_backend` with a pid written out.
    fn query_call(&self) -> Result<Option<Call>, Error> {
        let Some((_, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok(None);
        };
        if len > MAX_CALL {
            return Ok(None);
        }
        let arg = frame::query(&self.crbuf[..len])
            .ok()
            .and_then(|q| terminate_arg(&q));
        Ok(match arg {
            Some(Arg::Pid(pid)) => Some(Call {
                pid,
                extended: None,
                len,
            }),
            _ => None,
        })
    }

    /// Parse, Bind, an optional Describe, Execute and Sync, all of the unnamed statement and
    /// portal, calling `pg_terminate_backend` with a pid written out or bound.
    fn extended_call(&self) -> Result<Option<Call>, Error> {
        let mut frames = Frames::new(&self.crbuf, self.max_message);
        // the unnamed statement parsed here, or a named one this client prepared before
        // (asyncpg, tokio-postgres)
        let (text, bind, parsed) = match frames.next(&[fe::PARSE, fe::BIND])? {
            Some((fe::PARSE, msg)) => {
                let parse = frame::parse(msg)?;
                let Some((_, bind)) = frames.next(&[fe::BIND])? else {
                    return Ok(None);
                };
                let bind = frame::bind(bind)?;
                if !parse.name.is_empty() || !bind.statement.is_empty() {
                    return Ok(None);
                }
                (parse.definition, bind, true)
            }
            Some((_, msg)) => {
                let bind = frame::bind(msg)?;
                match self.statement_definition(bind.statement) {
                    Some(text) => (text, bind, false),
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        if text.len() > MAX_CALL || !bind.portal.is_empty() {
            return Ok(None);
        }
        let arg = wire::cstr(text)
            .and_then(|(q, _)| std::str::from_utf8(q).ok())
            .and_then(terminate_arg);
        let Some(arg) = arg else {
            return Ok(None);
        };
        let Some(values) = frame::bind_values(bind.rest) else {
            return Ok(None);
        };
        let Some((pid, param_type)) = arg.pid(&values, declared_type(text)) else {
            return Ok(None);
        };
        let Some(describe) = frames.execute_unnamed()? else {
            return Ok(None);
        };
        Ok(Some(Call {
            pid,
            extended: Some(Extended {
                parsed,
                describe,
                param_type: param_type.unwrap_or(0),
                result_format: values.result_format(0),
            }),
            len: frames.read(),
        }))
    }
}

/// The message's bytes name `pg_terminate_backend` (any case).
fn names_call(msg: &[u8]) -> bool {
    const NAME: &[u8] = b"pg_terminate_backend";
    // one pass over the bytes: the comparison runs only where a `p` starts
    (0..msg.len().saturating_sub(NAME.len() - 1)).any(|i| {
        msg[i].eq_ignore_ascii_case(&b'p') && msg[i..i + NAME.len()].eq_ignore_ascii_case(NAME)
    })
}

/// The first parameter type a Parse declares (after its text), if any and not 0.
fn declared_type(definition: &[u8]) -> Option<u32> {
    let (_, types) = wire::cstr(definition)?;
    let (count, types) = wire::i16_at(types)?;
    let (oid, _) = wire::i32_at(types).filter(|_| count > 0)?;
    u32::try_from(oid).ok().filter(|&oid| oid != 0)
}

/// A pid bound as a parameter: text digits, or a binary `int2`, `int4` or `int8`.
fn bound_pid(value: &[u8], binary: bool) -> Option<i32> {
    if !binary {
        return std::str::from_utf8(value).ok()?.trim().parse().ok();
    }
    match *value {
        [a, b] => Some(i16::from_be_bytes([a, b]).into()),
        [a, b, c, d] => Some(i32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => {
            i32::try_from(i64::from_be_bytes([a, b, c, d, e, f, g, h])).ok()
        }
        _ => None,
    }
}

/// `SELECT pg_terminate_backend(<integer> | $1)`, the argument optionally cast to an integer
/// type, with an optional `;`: the argument.
fn terminate_arg(sql: &str) -> Option<Arg> {
    let toks: Vec<_> = Lexer::new(sql)
        .filter(|t| t.kind != Kind::Comment && !t.is_punct(sql, b';'))
        .collect();
    let (arg, cast) = match toks.as_slice() {
        [select, f, open, arg, close] if close.is_punct(sql, b')') => (*arg, None),
        [select, f, open, arg, op, ty, close]
            if close.is_punct(sql, b')') && op.kind == Kind::Op && op.text(sql) == "::" =>
        {
            let _ = (select, f, open);
            (*arg, Some(integer_type(ty.text(sql))?))
        }
        _ => return None,
    };
    let shape = toks[0].is_word(sql, "select")
        && toks[1].is_word(sql, "pg_terminate_backend")
        && toks[2].is_punct(sql, b'(');
    if !shape {
        return None;
    }
    match arg.kind {
        Kind::Number => arg.text(sql).parse().ok().map(Arg::Pid),
        Kind::Param if arg.text(sql) == "$1" => Some(Arg::Param(cast)),
        _ => None,
    }
}

/// The oid of an integer type as a cast names it.
fn integer_type(name: &str) -> Option<u32> {
    match name.to_ascii_lowercase().as_str() {
        "int2" | "smallint" => Some(INT2),
        "int" | "int4" | "integer" => Some(INT4),
        "int8" | "bigint" => Some(INT8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pid_or_the_parameter() {
        let pid = |sql| terminate_arg(sql);
        assert_eq!(
            pid("SELECT pg_terminate_backend(1234);"),
            Some(Arg::Pid(1234))
        );
        assert_eq!(pid("select pg_terminate_backend( 7 )"), Some(Arg::Pid(7)));
        assert_eq!(
            pid("select pg_terminate_backend(7::int)"),
            Some(Arg::Pid(7))
        );
        assert_eq!(
            pid("select pg_terminate_backend($1)"),
            Some(Arg::Param(None))
        );
        assert_eq!(
            pid("select pg_terminate_backend($1::INTEGER)"),
            Some(Arg::Param(Some(INT4)))
        );
        assert_eq!(
            pid("select pg_terminate_backend($1::bigint)"),
            Some(Arg::Param(Some(INT8)))
        );
        assert_eq!(pid("select pg_terminate_backend(7, 100)"), None);
        assert_eq!(pid("select pg_terminate_backend($2)"), None);
        assert_eq!(pid("select pg_terminate_backend($1::text)"), None);
        assert_eq!(pid("select pg_cancel_backend(7)"), None);
        assert_eq!(pid("select pg_terminate_backend(99999999999)"), None);
        assert_eq!(pid("select pg_terminate_backend(7) from t"), None);
    }

    #[test]
    fn bound_pids_in_text_and_binary() {
        assert_eq!(bound_pid(b"12345", false), Some(12345));
        assert_eq!(bound_pid(b"x", false), None);
        assert_eq!(bound_pid(&12345i32.to_be_bytes(), true), Some(12345));
        assert_eq!(bound_pid(&12345i64.to_be_bytes(), true), Some(12345));
        assert_eq!(bound_pid(&7i16.to_be_bytes(), true), Some(7));
        assert_eq!(bound_pid(&(1i64 << 40).to_be_bytes(), true), None);
        assert_eq!(bound_pid(b"abc", true), None);
    }

    #[test]
    fn finds_the_name_and_the_declared_type() {
        assert!(names_call(b"Q\0\0\0\x20SELECT PG_TERMINATE_BACKEND(1)"));
        assert!(names_call(b"pg_terminate_backend"));
        assert!(!names_call(b"select pg_terminate_backen"));
        assert!(!names_call(b""));
        assert_eq!(declared_type(b"select $1\0\0\x01\0\0\0\x14"), Some(INT8));
        assert_eq!(declared_type(b"select $1\0\0\x01\0\0\0\0"), None);
        assert_eq!(declared_type(b"select $1\0\0\0"), None);
        assert_eq!(declared_type(b"select $1"), None);
    }
}
