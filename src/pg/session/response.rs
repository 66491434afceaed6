//! Server → client: walk the server's messages, match each against the replies owed
//! ([`crate::pg::server::replies`]), and forward them — as one copy of the whole run, or by swapping
//! buffers when everything read goes through untouched. Large DataRow / CopyData messages
//! are streamed through without waiting for their end.

use super::record::Finished;
use super::Session;
use crate::pg::error::Error;
use crate::pg::prepared::ClientStatements;
use crate::pg::proxy::Proxy;
use crate::pg::server::replies::{Disposition, Effects};
use crate::pg::server::{Server, ServerError};
use crate::pg::wire::{self, be};
use bytes::{Buf, BufMut, BytesMut};

/// Largest server message Pake waits for whole (others than DataRow/CopyData).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

impl Session {
    /// Handle what was just read from the server.
    pub(super) fn on_server_input(&mut self) -> Result<(), Error> {
        let mut finished = std::mem::take(&mut self.finished);
        let Some(pins_changed) = self.read_replies(&mut finished)? else {
            return Ok(());
        };
        // the client's unnamed Parses were not made after all: its unnamed statement is
        // the one before, as directly
        if let Some(s) = self.server.as_deref_mut() {
            if let Some(parse) = s.replies.own_unnamed.restored() {
                self.unnamed_parse = parse;
            }
        }
        self.account(&mut finished);
        self.finished = finished;
        if pins_changed {
            self.show_pins();
        }
        Ok(())
    }

    /// Match the complete messages in the server's read buffer against its reply queue and
    /// move what the client gets to its write buffer; whether the client's pins changed
    /// (`None`: no server).
    fn read_replies(&mut self, finished: &mut Vec<Finished>) -> Result<Option<bool>, Error> {
        let tracing = self.otlp.is_some();
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(None);
        };
        let mut pos = 0;
        // start of the run of bytes to forward as is
        let mut run = 0;
        let mut fx = Effects::default();
        let mut pins_changed = false;
        while let Some((tag, total)) = next_message(server, &mut pos, &mut fx)? {
            if tag == be::NOTIFICATION_RESPONSE {
                name_sender(&mut server.rbuf[pos..pos + total], server.addr, &self.proxy);
            }
            let body = &server.rbuf[pos + wire::HEADER_LEN..pos + total];
            let answered = server.replies.answered();
            let disposition = server.replies.on_message(tag, body, &mut fx)?;
            let seen = disposition != Disposition::Swallow;
            let (msg, seqs) = ((tag, body, seen), (answered, server.replies.answered()));
            let (pending, params) = (&mut self.pending_settings, &mut self.params);
            let sides = (params, &mut server.params);
            super::state::follow_state(&mut self.pins, pending, sides, msg, seqs, &fx);
            let own = seen.then(|| super::own_names::renamed(tag, body, &self.statements));
            let own = own.flatten();
            if !seen || own.is_some() {
                self.cwbuf.put_slice(&server.rbuf[run..pos]);
                self.cwbuf.put_slice(own.as_deref().unwrap_or_default());
                run = pos + total;
            }
            pos += total;
            let statements = &mut self.statements;
            statement_news(&mut fx, server, &self.proxy, statements, &mut self.cwbuf);
            if fx.ended {
                // the server said goodbye: its words reach the client, then the session ends
                hand_over(&mut self.cwbuf, server, run, pos);
                return Err(Error::ServerLost(ServerError::Ended));
            }
            if let Some(body) = fx.injected_failed.take() {
                // the server refused to take the client's settings (a role dropped since
                // login…): the client must not go on without them, and the server is reset
                hand_over(&mut self.cwbuf, server, run, pos);
                server.dirty = Some("a setting Pake replayed failed");
                return Err(crate::pg::login_params::refusal(&body));
            }
            if let Some(status) = settle(&mut fx, server, finished, self.params.sig()) {
                let (pending, params) = (&mut self.pending_settings, &mut self.params);
                super::state::settle_settings(pending, params, server, status);
                if let Some(discarded) = super::state::settle_pins(&mut self.pins, server, status) {
                    pins_changed = true;
                    if discarded {
                        self.params.discard();
                        self.statements.clear();
                        self.listen = None; // DISCARD ALL includes UNLISTEN *
                    }
                }
                if status == b'I' {
                    self.tally.transactions += 1;
                    self.tx_seq += 1;
                    if std::mem::take(&mut server.ddl) {
                        // committed or rolled back: either way, prepare afresh
                        self.proxy.statements.forget_all();
                    }
                }
                if tracing {
                    finished.push(Finished::Ready(status));
                }
            }
            if server.replies.has_synthetic_head() {
                self.cwbuf.put_slice(&server.rbuf[run..pos]);
                run = pos;
                if let Some(stamp) = server.replies.drain_synthetic(&mut self.cwbuf) {
                    self.statements.closed(stamp);
                }
            }
        }
        hand_over(&mut self.cwbuf, server, run, pos);
        Ok(Some(pins_changed))
    }
}

/// The next whole message (tag, length) in the server's read buffer from `*pos`, after the
/// rest of a message being streamed through (which moves `*pos` past it); `None` when there
/// is none yet: a partial message waits for its end, or is streamed from here.
fn next_message(
    server: &mut Server,
    pos: &mut usize,
    fx: &mut Effects,
) -> Result<Option<(u8, usize)>, Error> {
    let len = server.rbuf.len();
    if server.streaming > 0 {
        *pos += server.pass_streamed(len - *pos);
        if server.streaming > 0 {
            return Ok(None);
        }
    }
    let header = wire::frame_header(&server.rbuf[*pos..], MAX_SERVER_MESSAGE)
        .map_err(|e| Error::ServerLost(ServerError::Protocol(e.to_string())))?;
    let Some((tag, total)) = header else {
        return Ok(None);
    };
    let available = len - *pos;
    if available < total {
        if wait_or_stream(server, tag, total - available, fx)? {
            *pos = len;
        }
        return Ok(None);
    }
    Ok(Some((tag, total)))
}

/// Move the server's read bytes up to `pos` out of its buffer, those from `run` on to the
/// client's write buffer: the whole buffer itself when all of it goes through untouched.
fn hand_over(cwbuf: &mut BytesMut, server: &mut Server, run: usize, pos: usize) {
    if run == 0 && pos == server.rbuf.len() && cwbuf.is_empty() {
        std::mem::swap(cwbuf, &mut server.rbuf);
        server.rbuf.clear();
    } else {
        cwbuf.put_slice(&server.rbuf[run..pos]);
        server.rbuf.advance(pos);
    }
}

/// A message not all here yet: a DataRow or CopyData is streamed (checked against the
/// queue, what is here forwarded, `missing` bytes more to pass through as they come:
/// `true`); for any other, room is made and the read waits for the rest.
fn wait_or_stream(
    server: &mut Server,
    tag: u8,
    missing: usize,
    fx: &mut Effects,
) -> Result<bool, Error> {
    if !matches!(tag, be::DATA_ROW | be::COPY_DATA) {
        server.rbuf.reserve(missing);
        return Ok(false);
    }
    if server.replies.on_message(tag, &[], fx)? != Disposition::Forward {
        return Err(Error::ServerLost(ServerError::Protocol(
            "large message where none may be forwarded".into(),
        )));
    }
    server.streaming = missing;
    Ok(true)
}

/// What one server message said about prepared statements. A Describe tells what a
/// server's copy takes and returns (and, answering the client's own, what the client was
/// told). The client's own Parses answered: its names that exist, and those that do not
/// after all. A message Pake made fail (a copy that takes or returns other than the client
/// was told, a duplicate name): the client gets PostgreSQL's error in its place. A
/// statement the server no longer has: a stale plan it reported (prepared afresh on its
/// next use), or all of them after the client's DISCARD ALL / DEALLOCATE ALL ran there
/// (neither side has them any more; a Parse of one goes to the server again).
fn statement_news(
    fx: &mut Effects,
    server: &mut Server,
    proxy: &Proxy,
    client: &mut ClientStatements,
    cwbuf: &mut BytesMut,
) {
    if let Some((id, sig, injected)) = fx.described.take() {
        server.statements.described(id, sig);
        if !injected {
            client.tell(id, sig);
        }
    }
    if let Some(stamp) = fx.parsed.take() {
        client.parsed(stamp);
    }
    // before the Parses: one that failed before the Close leaves its name naming nothing
    for stamp in fx.not_closed.drain(..) {
        client.not_closed(stamp);
    }
    if let Some((first, last)) = fx.not_parsed.take() {
        client.not_parsed(first, last);
    }
    if let Some(body) = fx.refused.take() {
        let at = wire::begin_frame(cwbuf, be::ERROR_RESPONSE);
        cwbuf.put_slice(&body);
        wire::finish_frame(cwbuf, at);
    }
    if let Some(id) = fx.invalidated.take() {
        tracing::debug!(
            statement = id,
            "server reported a stale plan: preparing afresh"
        );
        if let Some(stmt) = server.statements.get(id) {
            proxy.statements.forget(stmt);
        }
    }
    if std::mem::take(&mut fx.unnamed_lost) {
        server.unnamed_owner = None; // the client's is parsed again before its next Bind
    }
    if let Some(kept) = fx.statements_dropped.take() {
        server.statements.retain(&kept);
        client.retain(&kept);
    }
}

/// Act on what one server message changed: completions for accounting (a statement
/// completes before the ReadyForQuery that may end its transaction), the server's
/// transaction status and parameters, the statements it has. Returns the status of a
/// ReadyForQuery that answered a client request.
fn settle(
    fx: &mut Effects,
    server: &mut Server,
    finished: &mut Vec<Finished>,
    params_sig: u64,
) -> Option<u8> {
    if let Some(done) = fx.done.take() {
        finished.push(Finished::Statement(done));
    }
    let skipped = std::mem::take(&mut fx.skipped);
    if skipped > 0 {
        finished.push(Finished::Skipped(skipped));
    }
    server.statements.answered(fx);
    let (status, injected) = fx.ready.take()?;
    server.tx_status = status;
    if injected {
        server.params.synced_sig = params_sig;
        return None;
    }
    Some(status)
}

/// A NotificationResponse from a server names its sender by backend pid; when a client holds
/// that backend (session mode), name it by the pid Pake handed that client instead, the one
/// its driver compares (`get_server_pid()`, `pgconn.backend_pid`).
fn name_sender(msg: &mut [u8], server: std::net::SocketAddr, proxy: &crate::pg::proxy::Proxy) {
    let Some(field) = msg.get_mut(wire::HEADER_LEN..wire::HEADER_LEN + 4) else {
        return;
    };
    let pid = i32::from_be_bytes([field[0], field[1], field[2], field[3]]);
    if let Some(client) = proxy.cancel.holder(server, pid) {
        field.copy_from_slice(&client.to_be_bytes());
    }
}
