//! Errors Pake makes the server raise in the client's place (transaction mode), where the
//! server could not raise them itself because the client's names are Pake's: a message that
//! fails there (a Describe of a statement no server has: 26000, in any transaction state)
//! takes the place of the client's, and its error is replaced by PostgreSQL's own.
//!
//! A Bind of a client statement the server lacks is one: Pake parses the statement there
//! first, and in an aborted transaction that Parse fails (25P02) before the Bind is looked
//! at. PostgreSQL's `exec_bind_message` checks the statement, then the Bind's counts
//! (08P01), then the transaction (25P02): a Bind whose counts do not fit is refused here
//! with its 08P01, named as the client named it. Only when a copy must be parsed: a server
//! that has one checks the counts itself.

use crate::pg::prepared::Statement;
use crate::pg::server::replies::Expect;
use crate::pg::server::Server;
use crate::pg::sql::lexer::{Kind, Lexer};
use crate::pg::wire::backend;
use bytes::BytesMut;

/// Make the next message fail on `server` with `code` and `message` in the error the
/// client gets (nothing while the server skips to Sync: it would discard it).
pub(super) fn refuse(server: &mut Server, code: &str, message: &str) {
    if server.replies.is_skipping() {
        return;
    }
    super::forward::describe_statement(&mut server.wbuf, super::forward::STALE);
    let mut error = BytesMut::new();
    let fields = backend::Fields {
        severity: "ERROR",
        code,
        message,
        detail: None,
        hint: None,
    };
    backend::error_response(&mut error, &fields);
    server.replies.push(Expect::Refused {
        body: crate::pg::wire::body(&error).into(),
    });
}

/// A Bind of `stmt` (the client's `name`; `rest`: the Bind after its names) about to make
/// Pake parse a copy on `server`: refused when PostgreSQL would refuse it for its counts
/// (`true`: nothing else is to be sent for it).
pub(super) fn bind_counts_refused(
    server: &mut Server,
    stmt: &Statement,
    name: &[u8],
    rest: &[u8],
) -> bool {
    if server.replies.is_skipping() || server.statements.contains(stmt.id) {
        return false;
    }
    match count_error(stmt, name, rest) {
        Some(message) => {
            refuse(server, "08P01", &message);
            true
        }
        None => false,
    }
}

/// PostgreSQL's 08P01 for a Bind (`rest` after its names) of `stmt` named `name` whose
/// counts do not fit, if they do not.
fn count_error(stmt: &Statement, name: &[u8], rest: &[u8]) -> Option<String> {
    let count = |at: usize| -> Option<usize> {
        let b = rest.get(at..at + 2)?;
        usize::try_from(i16::from_be_bytes([b[0], b[1]])).ok()
    };
    let formats = count(0)?;
    let params = count(2 + 2 * formats)?;
    if formats > 1 && formats != params {
        return Some(format!(
            "bind message has {formats} parameter formats but {params} parameters"
        ));
    }
    let wants = statement_params(stmt)?;
    (params != wants).then(|| {
        format!(
            "bind message supplies {params} parameters, but prepared statement \"{}\" \
             requires {wants}",
            String::from_utf8_lossy(name)
        )
    })
}

/// The parameters a statement takes, as PostgreSQL counts them: its declared types, or
/// the highest `$n` its text uses if higher.
fn statement_params(stmt: &Statement) -> Option<usize> {
    let definition = stmt.definition();
    let end = definition.iter().position(|&b| b == 0)?;
    let declared = definition.get(end + 1..end + 3)?;
    let declared = usize::try_from(i16::from_be_bytes([declared[0], declared[1]])).ok()?;
    let text = &*stmt.query;
    let used = Lexer::new(text)
        .filter(|t| t.kind == Kind::Param)
        .filter_map(|t| text.get(t.start + 1..t.end)?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    Some(declared.max(used))
}
