//! The queue of replies a server owes, sans-IO.
//!
//! Every request message the session forwards pushes what the server will answer (Parse →
//! ParseComplete, Execute → rows then CommandComplete, Sync → ReadyForQuery…). Each server
//! message is matched against the head of the queue, so the session always knows whether a
//! server is *in sync*: poolable only when the queue is empty and the last ReadyForQuery said
//! idle. A message that does not fit the queue means the state is unknown, and the server is
//! closed rather than pooled.
//!
//! Two kinds of entries do not come from the client's own messages:
//! * `swallow` entries: replies to messages Pake injected (a re-Parse of a prepared statement
//!   on a server that lacks it, a `SET` that syncs session parameters). They are dropped
//!   instead of forwarded.
//! * [`Synth`] entries: replies Pake produces itself (ParseComplete for a statement the server
//!   already has, CloseComplete for a client-side Close), emitted in order once everything
//!   before them has been forwarded.

use crate::pg::prepared::StatementId;
use crate::pg::wire::{backend, be, Tag};
use bytes::BytesMut;
use std::collections::VecDeque;

/// What one request message will be answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Everything up to ReadyForQuery: Query (`stmt`: a client statement whose completion
    /// is reported), FunctionCall, Sync, and queries Pake injects (`swallow`).
    Ready {
        swallow: bool,
        stmt: bool,
    },
    /// ParseComplete; `registers` names the statement this Parse creates on the server.
    Parse {
        swallow: bool,
        registers: Option<StatementId>,
    },
    Bind,
    Close {
        swallow: bool,
    },
    /// Describe of a statement: ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// Describe of a portal (or the second half of a statement Describe).
    RowDescription,
    /// Execute: DataRows (or a COPY), then CommandComplete / EmptyQuery / PortalSuspended.
    Execute,
    /// A reply Pake writes itself when it reaches the head of the queue.
    Synth(Synth),
}

/// Replies Pake produces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synth {
    ParseComplete,
    CloseComplete,
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Forward,
    Swallow,
}

/// Side effects of one server message that the session acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// ReadyForQuery arrived with this status, and whether it ended an injected query.
    pub ready: Option<(u8, bool)>,
    /// Statements the server did not create after all (their Parse failed or was skipped).
    pub not_created: Vec<StatementId>,
    /// A statement the server just created (ParseComplete for a registering Parse).
    pub created: Option<StatementId>,
    /// The server entered COPY IN (client data must flow) or left it.
    pub copy_in: Option<bool>,
    /// A client statement (a Query, or an Execute) completed.
    pub done: Option<Done>,
    /// Executes the server skipped after an error in their batch (they never ran).
    pub skipped: u32,
}

/// How a client statement ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Done {
    /// Rows from CommandComplete (summed over a multi-statement Query).
    pub rows: u64,
    /// The SQLSTATE of its error, if it failed.
    pub error: Option<[u8; 5]>,
}

/// Rows in a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `UPDATE 7`…).
fn tag_rows(body: &[u8]) -> u64 {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    tag.rsplit(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn sqlstate(body: &[u8]) -> Option<[u8; 5]> {
    crate::pg::wire::error_code(body).and_then(|c| c.try_into().ok())
}

/// A server message that does not fit the queue: the connection's state is unknown.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("server sent {tag} while Pake expected {expected}")]
pub struct Desync {
    pub tag: Tag,
    pub expected: String,
}

/// The queue of replies one server owes.
#[derive(Debug, Default)]
pub struct Replies {
    q: VecDeque<Expect>,
    /// What the client Query at the head has returned so far.
    running: Done,
    /// The server is in COPY IN (from CopyInResponse until CommandComplete/Error).
    copy_in: bool,
    /// The client's COPY data is still flowing (from CopyInResponse until the client's
    /// CopyDone/CopyFail or an error): Syncs sent now are ignored by the server.
    client_copy_open: bool,
}

impl Replies {
    pub fn push(&mut self, e: Expect) {
        self.q.push_back(e);
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Is the next reply one Pake writes itself?
    pub fn has_synthetic_head(&self) -> bool {
        matches!(self.q.front(), Some(Expect::Synth(_)))
    }

    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }

    /// A Sync forwarded now: owed a ReadyForQuery unless the server is taking COPY data
    /// (PostgreSQL ignores Sync in copy-in mode).
    pub fn on_sync_sent(&mut self) {
        if !self.client_copy_open {
            self.q.push_back(Expect::Ready {
                swallow: false,
                stmt: false,
            });
        }
    }

    /// The client sent CopyDone or CopyFail.
    pub fn on_copy_end_sent(&mut self) {
        self.client_copy_open = false;
    }

    /// Write every synthetic reply at the head of the queue into `out`.
    pub fn drain_synthetic(&mut self, out: &mut BytesMut) {
        while let Some(Expect::Synth(s)) = self.q.front() {
            match s {
                Synth::ParseComplete => backend::parse_complete(out),
                Synth::CloseComplete => backend::close_complete(out),
            }
            self.q.pop_front();
        }
    }

    fn desync(&self, tag: u8) -> Desync {
        Desync {
            tag: Tag(tag),
            expected: match self.q.front() {
                Some(e) => format!("{e:?}"),
                None => "nothing".into(),
            },
        }
    }

    /// Match one server message (tag and body) against the queue.
    pub fn on_message(
        &mut self,
        tag: u8,
        body: &[u8],
        fx: &mut Effects,
    ) -> Result<Disposition, Desync> {
        use Disposition::*;
        if let Some(d) = self.asynchronous(tag) {
            return Ok(d);
        }
        let head = self.q.front().cloned().ok_or_else(|| self.desync(tag))?;
        match (tag, head) {
            (be::READY_FOR_QUERY, Expect::Ready { swallow, stmt }) => {
                Ok(self.on_ready(body, swallow, stmt, fx))
            }
            (be::ERROR_RESPONSE, Expect::Ready { swallow, stmt }) => {
                Ok(self.on_query_error(body, swallow, stmt, fx))
            }
            (be::ERROR_RESPONSE, _) => Ok(self.on_extended_error(body, fx)),
            (be::PARSE_COMPLETE, Expect::Parse { swallow, registers }) => {
                self.q.pop_front();
                fx.created = registers;
                Ok(pass(swallow))
            }
            (be::BIND_COMPLETE, Expect::Bind) => {
                self.q.pop_front();
                Ok(Forward)
            }
            (be::CLOSE_COMPLETE, Expect::Close { swallow }) => {
                self.q.pop_front();
                Ok(pass(swallow))
            }
            (be::PARAMETER_DESCRIPTION, Expect::DescribeStatement) => {
                if let Some(front) = self.q.front_mut() {
                    *front = Expect::RowDescription;
                }
                Ok(Forward)
            }
            (be::ROW_DESCRIPTION | be::NO_DATA, Expect::RowDescription) => {
                self.q.pop_front();
                Ok(Forward)
            }
            (
                be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED,
                Expect::Execute,
            ) => Ok(self.on_execute_done(tag, body, fx)),
            (
                be::COPY_IN_RESPONSE,
                head @ (Expect::Execute | Expect::Ready { swallow: false, .. }),
            ) => Ok(self.on_copy_in(head == Expect::Execute, fx)),
            (
                be::DATA_ROW
                | be::COPY_OUT_RESPONSE
                | be::COPY_BOTH_RESPONSE
                | be::COPY_DATA
                | be::COPY_DONE,
                Expect::Execute,
            ) => Ok(Forward),
            (
                be::COMMAND_COMPLETE
                | be::EMPTY_QUERY_RESPONSE
                | be::ROW_DESCRIPTION
                | be::DATA_ROW
                | be::COPY_OUT_RESPONSE
                | be::COPY_BOTH_RESPONSE
                | be::COPY_DATA
                | be::COPY_DONE
                | be::FUNCTION_CALL_RESPONSE,
                Expect::Ready { swallow, stmt },
            ) => {
                if tag == be::COMMAND_COMPLETE {
                    self.on_query_command_done(body, stmt, fx);
                }
                Ok(pass(swallow))
            }
            _ => Err(self.desync(tag)),
        }
    }

    /// Messages that may arrive at any time, whatever is owed: forwarded (a notice is
    /// dropped with the rest of an injected query's replies).
    fn asynchronous(&self, tag: u8) -> Option<Disposition> {
        match tag {
            be::PARAMETER_STATUS | be::NOTIFICATION_RESPONSE => Some(Disposition::Forward),
            be::NOTICE_RESPONSE => Some(pass(matches!(
                self.q.front(),
                Some(Expect::Ready { swallow: true, .. })
            ))),
            _ => None,
        }
    }

    /// An error inside a simple Query: the ReadyForQuery that follows ends it.
    fn on_query_error(
        &mut self,
        body: &[u8],
        swallow: bool,
        stmt: bool,
        fx: &mut Effects,
    ) -> Disposition {
        if stmt && self.running.error.is_none() {
            self.running.error = sqlstate(body);
        }
        self.client_copy_open = false;
        self.leave_copy_in(fx);
        pass(swallow)
    }

    /// One statement of a simple Query completed (its rows add up; a COPY ended).
    fn on_query_command_done(&mut self, body: &[u8], stmt: bool, fx: &mut Effects) {
        if stmt {
            self.running.rows += tag_rows(body);
        }
        self.leave_copy_in(fx);
    }

    /// ReadyForQuery ends the Query (or Sync, or injected query) at the head.
    fn on_ready(
        &mut self,
        body: &[u8],
        swallow: bool,
        stmt: bool,
        fx: &mut Effects,
    ) -> Disposition {
        if stmt {
            fx.done = Some(std::mem::take(&mut self.running));
        }
        self.q.pop_front();
        self.copy_in = false;
        fx.ready = Some((body.first().copied().unwrap_or(b'I'), swallow));
        pass(swallow)
    }

    /// An error in an extended-protocol batch: the server skips everything up to the next
    /// Sync, so the replies owed up to it are dropped.
    fn on_extended_error(&mut self, body: &[u8], fx: &mut Effects) -> Disposition {
        self.client_copy_open = false;
        self.leave_copy_in(fx);
        let mut failed = false;
        while let Some(e) = self.q.front() {
            match e {
                Expect::Ready { .. } => break,
                Expect::Parse {
                    registers: Some(id),
                    ..
                } => fx.not_created.push(*id),
                // the first Execute is the statement that failed (itself, or the
                // Parse/Bind it needed); the ones after it never ran
                Expect::Execute if !failed => {
                    failed = true;
                    fx.done = Some(Done {
                        rows: 0,
                        error: sqlstate(body),
                    });
                }
                Expect::Execute => fx.skipped += 1,
                _ => {}
            }
            self.q.pop_front();
        }
        Disposition::Forward
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended ends an Execute.
    fn on_execute_done(&mut self, tag: u8, body: &[u8], fx: &mut Effects) -> Disposition {
        self.q.pop_front();
        fx.done = Some(Done {
            rows: if tag == be::COMMAND_COMPLETE {
                tag_rows(body)
            } else {
                0
            },
            error: None,
        });
        self.leave_copy_in(fx);
        Disposition::Forward
    }

    /// The server entered COPY IN.
    fn on_copy_in(&mut self, in_execute: bool, fx: &mut Effects) -> Disposition {
        self.copy_in = true;
        self.client_copy_open = true;
        fx.copy_in = Some(true);
        if in_execute {
            // Syncs pipelined behind this Execute reach the server in copy-in mode, where
            // it ignores them: no ReadyForQuery will come for them.
            let sync = Expect::Ready {
                swallow: false,
                stmt: false,
            };
            let mut i = 1;
            while i < self.q.len() {
                if self.q[i] == sync {
                    self.q.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        Disposition::Forward
    }

    /// COPY IN ended (CommandComplete or an error).
    fn leave_copy_in(&mut self, fx: &mut Effects) {
        if self.copy_in {
            self.copy_in = false;
            fx.copy_in = Some(false);
        }
    }
}

/// Forward a reply, or drop it when it answers a message Pake injected.
fn pass(swallow: bool) -> Disposition {
    if swallow {
        Disposition::Swallow
    } else {
        Disposition::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition::*;

    fn feed(r: &mut Replies, msgs: &[(u8, &[u8])]) -> Result<(Vec<Disposition>, Effects), Desync> {
        let mut fx = Effects::default();
        let mut out = Vec::new();
        for (tag, body) in msgs {
            out.push(r.on_message(*tag, body, &mut fx)?);
        }
        Ok((out, fx))
    }

    #[test]
    fn simple_query_cycle() {
        let mut r = Replies::default();
        r.push(Expect::Ready {
            swallow: false,
            stmt: false,
        });
        let (d, fx) = feed(
            &mut r,
            &[(b'T', b""), (b'D', b""), (b'C', b""), (b'Z', b"I")],
        )
        .unwrap();
        assert!(d.iter().all(|d| *d == Forward));
        assert_eq!(fx.ready, Some((b'I', false)));
        assert!(r.is_empty());
    }

    #[test]
    fn extended_batch_in_order() {
        let mut r = Replies::default();
        for e in [
            Expect::Parse {
                swallow: true,
                registers: Some(7),
            },
            Expect::Bind,
            Expect::DescribeStatement,
            Expect::Execute,
            Expect::Ready {
                swallow: false,
                stmt: false,
            },
        ] {
            r.push(e);
        }
        let (d, _) = feed(
            &mut r,
            &[
                (b'1', b""),
                (b'2', b""),
                (b't', b""),
                (b'T', b""),
                (b'D', b""),
                (b'C', b""),
                (b'Z', b"T"),
            ],
        )
        .unwrap();
        assert_eq!(d[0], Swallow, "injected Parse's reply is dropped");
        assert!(d[1..].iter().all(|d| *d == Forward));
        assert!(r.is_empty());
    }

    #[test]
    fn error_skips_to_sync_and_reports_uncreated_statements() {
        let mut r = Replies::default();
        r.push(Expect::Parse {
            swallow: false,
            registers: Some(1),
        });
        r.push(Expect::Bind);
        r.push(Expect::Parse {
            swallow: false,
            registers: Some(2),
        });
        r.push(Expect::Execute);
        r.push(Expect::Ready {
            swallow: false,
            stmt: false,
        });
        let (_, fx) = feed(&mut r, &[(b'E', b"")]).unwrap();
        assert_eq!(fx.not_created, vec![1, 2]);
        assert_eq!(r.len(), 1);
        let (_, fx) = feed(&mut r, &[(b'Z', b"I")]).unwrap();
        assert_eq!(fx.ready, Some((b'I', false)));
    }

    #[test]
    fn synthetic_replies_emit_in_order() {
        let mut r = Replies::default();
        r.push(Expect::Synth(Synth::ParseComplete));
        r.push(Expect::Bind);
        r.push(Expect::Synth(Synth::CloseComplete));
        r.push(Expect::Ready {
            swallow: false,
            stmt: false,
        });
        let mut out = BytesMut::new();
        r.drain_synthetic(&mut out);
        assert_eq!(&out[..], b"1\0\0\0\x04");
        assert_eq!(
            r.on_message(b'2', b"", &mut Effects::default()),
            Ok(Forward)
        );
        out.clear();
        r.drain_synthetic(&mut out);
        assert_eq!(&out[..], b"3\0\0\0\x04");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn injected_query_is_swallowed_but_parameter_status_is_not() {
        let mut r = Replies::default();
        r.push(Expect::Ready {
            swallow: true,
            stmt: false,
        });
        r.push(Expect::Ready {
            swallow: false,
            stmt: false,
        });
        let (d, fx) = feed(
            &mut r,
            &[
                (b'S', b"TimeZone\0UTC\0"),
                (b'C', b"SET\0"),
                (b'N', b""),
                (b'Z', b"I"),
            ],
        )
        .unwrap();
        assert_eq!(d, vec![Forward, Swallow, Swallow, Swallow]);
        assert_eq!(fx.ready, Some((b'I', true)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn extended_copy_in_ignores_pipelined_sync() {
        // tokio-postgres: Bind, Execute, Sync, then data, then CopyDone, Sync
        let mut r = Replies::default();
        r.push(Expect::Bind);
        r.push(Expect::Execute);
        r.on_sync_sent();
        let (_, fx) = feed(&mut r, &[(b'2', b""), (b'G', b"")]).unwrap();
        assert_eq!(fx.copy_in, Some(true));
        assert_eq!(r.len(), 1, "the early Sync is owed nothing");
        r.on_sync_sent(); // during copy: ignored by the server
        assert_eq!(r.len(), 1);
        r.on_copy_end_sent();
        r.on_sync_sent();
        feed(&mut r, &[(b'C', b""), (b'Z', b"I")]).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn copy_in_state() {
        let mut r = Replies::default();
        r.push(Expect::Ready {
            swallow: false,
            stmt: false,
        });
        let (_, fx) = feed(&mut r, &[(b'G', b"")]).unwrap();
        assert_eq!(fx.copy_in, Some(true));
        assert!(r.in_copy_in());
        let (_, fx) = feed(&mut r, &[(b'C', b""), (b'Z', b"I")]).unwrap();
        assert_eq!(fx.copy_in, Some(false));
        assert!(!r.in_copy_in() && r.is_empty());
    }

    #[test]
    fn out_of_place_messages_are_desync() {
        let mut r = Replies::default();
        assert!(r.on_message(b'D', b"", &mut Effects::default()).is_err());
        r.push(Expect::Bind);
        assert!(r.on_message(b'1', b"", &mut Effects::default()).is_err());
        assert!(r.on_message(b'K', b"", &mut Effects::default()).is_err());
        // notices and parameter status are fine even with nothing expected
        let mut idle = Replies::default();
        assert_eq!(
            idle.on_message(b'N', b"", &mut Effects::default()),
            Ok(Forward)
        );
        assert_eq!(
            idle.on_message(b'A', b"", &mut Effects::default()),
            Ok(Forward)
        );
    }
}
