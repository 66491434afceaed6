//! Server → client: walk the server's messages, match each against the replies owed
//! ([`crate::pg::server::replies`]), and forward them — as one copy of the whole run, or by swapping
//! buffers when everything read goes through untouched. Large DataRow / CopyData messages
//! are streamed through without waiting for their end.

use super::record::Finished;
use super::Session;
use crate::pg::error::Error;
use crate::pg::server::replies::{Disposition, Effects};
use crate::pg::server::{Server, ServerError};
use crate::pg::wire::{self, be};
use bytes::{Buf, BufMut};

/// Largest server message Pake waits for whole (others than DataRow/CopyData).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

impl Session {
    /// Handle what was just read from the server.
    pub(super) fn on_server_input(&mut self) -> Result<(), Error> {
        let mut finished = std::mem::take(&mut self.finished);
        let tracing = self.otlp.is_some();
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let rbuf_len = server.rbuf.len();
        let mut pos = 0;
        // start of the run of bytes to forward as is
        let mut run = 0;
        let mut fx = Effects::default();
        let mut pins_changed = false;
        loop {
            if server.streaming > 0 {
                let n = server.streaming.min(rbuf_len - pos);
                pos += n;
                server.streaming -= n;
                if server.streaming > 0 {
                    break;
                }
                continue;
            }
            let header = wire::frame_header(&server.rbuf[pos..], MAX_SERVER_MESSAGE)
                .map_err(|e| Error::ServerLost(ServerError::Protocol(e.to_string())))?;
            let Some((tag, total)) = header else { break };
            let available = rbuf_len - pos;
            if available < total {
                if matches!(tag, be::DATA_ROW | be::COPY_DATA) {
                    // stream it: check it fits the queue, forward what is here
                    if server.replies.on_message(tag, &[], &mut fx)? != Disposition::Forward {
                        return Err(Error::ServerLost(ServerError::Protocol(
                            "large message where none may be forwarded".into(),
                        )));
                    }
                    server.streaming = total - available;
                    pos = rbuf_len;
                    break;
                }
                server.rbuf.reserve(total - available);
                break;
            }
            let body = &server.rbuf[pos + wire::HEADER_LEN..pos + total];
            let disposition = server.replies.on_message(tag, body, &mut fx)?;
            if tag == be::PARAMETER_STATUS {
                server.params.on_status(body);
                self.params.on_status(body);
            }
            if disposition != Disposition::Swallow {
                self.pending_settings.on_message(tag, body);
                self.pins.on_message(tag, body);
            }
            if disposition == Disposition::Swallow {
                self.cwbuf.put_slice(&server.rbuf[run..pos]);
                run = pos + total;
            }
            pos += total;
            if let Some(id) = fx.invalidated.take() {
                tracing::debug!(
                    statement = id,
                    "server reported a stale plan: preparing afresh"
                );
                if let Some(stmt) = server.statements.get(id) {
                    self.proxy.statements.forget(stmt);
                }
            }
            if let Some(kept) = fx.statements_dropped.take() {
                // the client's DISCARD ALL / DEALLOCATE ALL ran on the server: neither has
                // the statements any more (a Parse of one goes to the server again)
                server.statements.retain(&kept);
                self.statements.retain(&kept);
            }
            if fx.ended {
                // the server said goodbye: its words reach the client, then the session ends
                self.cwbuf.put_slice(&server.rbuf[run..pos]);
                server.rbuf.advance(pos);
                return Err(Error::ServerLost(ServerError::Ended));
            }
            if let Some(status) = settle(&mut fx, server, &mut finished, self.params.sig()) {
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
                }
                if tracing {
                    finished.push(Finished::Ready(status));
                }
            }
            if server.replies.has_synthetic_head() {
                self.cwbuf.put_slice(&server.rbuf[run..pos]);
                run = pos;
                server.replies.drain_synthetic(&mut self.cwbuf);
            }
        }
        if run == 0 && pos == rbuf_len && self.cwbuf.is_empty() {
            // everything read goes through untouched: hand the buffer over
            std::mem::swap(&mut self.cwbuf, &mut server.rbuf);
            server.rbuf.clear();
        } else {
            self.cwbuf.put_slice(&server.rbuf[run..pos]);
            server.rbuf.advance(pos);
        }
        self.account(&mut finished);
        self.finished = finished;
        if pins_changed {
            self.show_pins();
        }
        Ok(())
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
    if let Some(id) = fx.created.take() {
        server.statements.mark_parsed(id);
    }
    for id in fx.not_created.drain(..) {
        server.statements.remove(id);
    }
    let (status, injected) = fx.ready.take()?;
    server.tx_status = status;
    if injected {
        server.params.synced_sig = params_sig;
        return None;
    }
    Some(status)
}
