//! Backend identity through a pooler.
//!
//! A client's BackendKeyData carries a pid Pake minted (`conn.info.backend_pid` in drivers),
//! not a server's: in transaction mode the client's transactions run on whichever server is
//! free, and `pg_backend_pid()` answers the pid of the server running the current
//! transaction, which may change between transactions. Pake's pid names the *client
//! connection*, so `SELECT pg_terminate_backend(<that pid>)` sent as a lone statement closes
//! that client's connection with 57P01 (its transaction, if any, is rolled back on its
//! server) and answers `t`, as a server would. The same user (or an admin user) may do it;
//! another gets 42501. A pid that is not one of Pake's goes to the server as usual.

use super::{frame, Session};
use crate::pg::route::Class;
use crate::pg::sql::lexer::{Kind, Lexer};
use crate::pg::wire::{self, backend};
use bytes::Buf;

/// Longest Query text read for a `pg_terminate_backend` call.
const MAX_CALL: usize = 256;

impl Session {
    /// Answer `SELECT pg_terminate_backend(<a Pake pid>)` between transactions.
    pub(super) fn terminate_locally(&mut self) -> Result<bool, crate::pg::error::Error> {
        let candidate = self.request.single_query
            && self.request.head().is_some_and(|a| match a.class {
                // a call of a volatile function, read or write as the router sees it
                Class::Read => !a.functions_safe,
                Class::Write => true,
                _ => false,
            });
        if !candidate {
            return Ok(false);
        }
        let Some((_, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok(false);
        };
        if len > MAX_CALL {
            return Ok(false);
        }
        let target = frame::query(&self.crbuf[..len])
            .ok()
            .and_then(|q| terminate_target(&q))
            .and_then(|pid| self.proxy.cancel.get(pid));
        let Some(slot) = target else {
            return Ok(false);
        };
        let admin = self
            .proxy
            .config()
            .general
            .admin_users
            .iter()
            .any(|u| u == self.user());
        if slot.info.user == self.user() || admin {
            slot.terminate();
            backend::row_description(&mut self.cwbuf, &["pg_terminate_backend"]);
            backend::data_row(&mut self.cwbuf, &[Some("t")]);
            backend::command_complete(&mut self.cwbuf, "SELECT 1");
        } else {
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
        }
        backend::ready_for_query(&mut self.cwbuf, b'I');
        self.tally.queries += 1;
        self.crbuf.advance(len);
        self.request.clear();
        Ok(true)
    }
}

/// `SELECT pg_terminate_backend(<integer>)` (an optional `;`): the integer.
fn terminate_target(sql: &str) -> Option<i32> {
    let toks: Vec<_> = Lexer::new(sql)
        .filter(|t| t.kind != Kind::Comment && !t.is_punct(sql, b';'))
        .collect();
    let shape = toks.len() == 5
        && toks[0].is_word(sql, "select")
        && toks[1].is_word(sql, "pg_terminate_backend")
        && toks[2].is_punct(sql, b'(')
        && toks[3].kind == Kind::Number
        && toks[4].is_punct(sql, b')');
    if !shape {
        return None;
    }
    toks[3].text(sql).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::terminate_target;

    #[test]
    fn reads_the_pid() {
        assert_eq!(
            terminate_target("SELECT pg_terminate_backend(1234);"),
            Some(1234)
        );
        assert_eq!(
            terminate_target("select pg_terminate_backend( 7 )"),
            Some(7)
        );
        assert_eq!(
            terminate_target("select pg_terminate_backend(7, 100)"),
            None
        );
        assert_eq!(terminate_target("select pg_terminate_backend($1)"), None);
        assert_eq!(terminate_target("select pg_cancel_backend(7)"), None);
        assert_eq!(
            terminate_target("select pg_terminate_backend(99999999999)"),
            None
        );
    }
}
