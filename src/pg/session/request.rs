//! The request loop: take whole messages off the client buffer, answer the ones that need
//! no server, and run each request through the steps — classify → route → checkout →
//! forward — until it is on its way; the replies come back through `response`, and the
//! server goes back at the transaction boundary (`attach`).

use super::frame::{self, Frames};
use super::route::Plan;
use super::{Flow, Session, HIGH_WATER};
use crate::config::PoolMode;
use crate::pg::error::Error;
use crate::pg::prepared::Statement;
use crate::pg::sql::SessionEffect;
use crate::pg::wire::{self, backend, fe, FrameError};
use bytes::Buf;
use std::sync::Arc;

/// Forward a request that has no terminator yet once this much of it is buffered.
const EAGER_FORWARD: usize = 64 * 1024;

/// What happened to a message that arrived while no server is attached.
enum Alone {
    Consumed,
    NeedServer,
}

/// How far a request got without a server.
enum Start {
    /// A server is attached: forward.
    Attached,
    /// Answered (or refused) without a server: take the next message.
    Done,
    /// The rest of the request has not arrived yet.
    Wait,
}

impl Session {
    /// Handle every whole message in the client buffer (checking out a server when a
    /// request needs one).
    pub(super) async fn pump_client(&mut self) -> Result<Flow, Error> {
        loop {
            let Some((tag, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
                return Ok(Flow::Continue);
            };
            if tag == fe::TERMINATE {
                return Ok(Flow::Exit);
            }
            if self.skip_to_sync {
                self.skip(tag, len);
                continue;
            }
            if self.server.is_none() {
                // boxed: starting a request (classify, route, check out, answer locally) is
                // the largest state the client's task could be in, and an idle client's
                // task is sized for its largest state; one small allocation per request
                match Box::pin(self.start_request(tag, len)).await? {
                    Start::Attached => {}
                    Start::Done => continue,
                    Start::Wait => return Ok(Flow::Continue),
                }
            } else if self.terminate_attached(tag, len)? {
                continue;
            }
            if self
                .server
                .as_ref()
                .is_some_and(|s| s.wbuf.len() >= HIGH_WATER)
            {
                return Ok(Flow::Continue);
            }
            let mut buf = std::mem::take(&mut self.crbuf);
            let held = self.hold_for_result(tag, &buf[..len]);
            let result = match held {
                Ok(false) => {
                    let r = self.forward(tag, &buf[..len]);
                    buf.advance(len);
                    r
                }
                _ => Ok(()),
            };
            self.crbuf = buf;
            result?;
            if held? {
                return Ok(Flow::Continue); // the message waits for its server's answer
            }
        }
    }

    /// A request with no server attached: answer what needs none, otherwise classify it,
    /// route it and check a server out for it.
    async fn start_request(&mut self, tag: u8, len: usize) -> Result<Start, Error> {
        if let Alone::Consumed = self.alone(tag, len)? {
            return Ok(Start::Done);
        }
        if !request_ready(&self.crbuf, self.max_message)? {
            return Ok(Start::Wait);
        }
        if self.proxy.generation() != self.cluster_gen {
            self.refresh_cluster()?;
        }
        self.classify()?;
        if self.answer_query_locally().await? {
            return Ok(Start::Done);
        }
        if let Err(e) = self.admit_request() {
            self.fail_request(&e)?;
            return Ok(Start::Done);
        }
        let target = match self.plan()? {
            Plan::Answered => return Ok(Start::Done),
            Plan::Server(target) => target,
        };
        if self.inject_fault(target).await? {
            return Ok(Start::Done);
        }
        if let Err(e) = self.attach_routed(target).await {
            if !e.is_recoverable() {
                return Err(e);
            }
            self.fail_request(&e)?;
            return Ok(Start::Done);
        }
        Ok(Start::Attached)
    }

    /// Apply an injected fault to the request at the head of the buffer; `true` when the
    /// fault answered it (an error) so it must not be forwarded.
    async fn inject_fault(&mut self, target: crate::pg::cluster::Target) -> Result<bool, Error> {
        if let Some(r) = &mut self.rare {
            r.bandwidth = None;
        }
        let faults = self.proxy.faults.clone();
        if faults.list_is_empty() {
            return Ok(false);
        }
        let (statement, fingerprint) = self.head_statement()?;
        let pool = self.cluster.pool(target);
        let pool_name = pool.key.to_string();
        let backend = format!("{}:{}", pool.target().host, pool.target().port);
        let t = crate::faults::Target {
            pool: Some(&pool_name),
            backend: Some(&backend),
            redis_command: None,
            fingerprint,
            statement: statement.as_deref(),
        };
        let Some(fault) = faults.pick(&t) else {
            return Ok(false);
        };
        use crate::faults::FaultKind;
        match &fault.spec.kind {
            FaultKind::Latency { millis } => {
                tokio::time::sleep(std::time::Duration::from_millis(*millis)).await;
                Ok(false)
            }
            FaultKind::Error {
                sqlstate, message, ..
            } => {
                let e = Error::Injected {
                    code: sqlstate.clone().unwrap_or_else(|| "58000".into()),
                    message: message
                        .clone()
                        .unwrap_or_else(|| "injected fault (Pake fault injection)".into()),
                };
                self.fail_request(&e)?;
                Ok(true)
            }
            FaultKind::Reset => Err(Error::InjectedReset),
            FaultKind::Bandwidth { bytes_per_second } => {
                self.rare().bandwidth = Some(*bytes_per_second);
                Ok(false)
            }
        }
    }

    /// The normalised text and shape hash of the request's first statement (for fault scopes).
    fn head_statement(&self) -> Result<(Option<String>, Option<u64>), Error> {
        let Some((tag, _)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok((None, None));
        };
        if !matches!(tag, fe::QUERY | fe::PARSE | fe::BIND) {
            return Ok((None, None));
        }
        let Some(shape) = self.request.head().map(|a| a.shape) else {
            return Ok((None, None));
        };
        let text = self
            .proxy
            .analyzer
            .with_hash(shape, |info| info.normalized.to_string());
        Ok((text, Some(shape)))
    }

    /// A message with no server attached.
    fn alone(&mut self, tag: u8, len: usize) -> Result<Alone, Error> {
        match tag {
            fe::SYNC => {
                // nothing is pending: the answer is the transaction status
                self.ready_unattached();
                self.crbuf.advance(len);
                Ok(Alone::Consumed)
            }
            fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                // PostgreSQL ignores these outside a COPY / with nothing to flush
                self.crbuf.advance(len);
                Ok(Alone::Consumed)
            }
            fe::PARSE | fe::CLOSE if self.mode == PoolMode::Transaction => {
                match self.answer_extended_locally()? {
                    true => Ok(Alone::Consumed),
                    false => Ok(Alone::NeedServer),
                }
            }
            fe::PASSWORD => Err(Error::Unexpected(wire::Tag(tag))),
            _ => Ok(Alone::NeedServer),
        }
    }

    /// Answer `Parse… Close… Sync` without a server when every Parse names a statement a
    /// server has already parsed and every Close names a prepared statement (transaction
    /// mode: names are the client's, the servers keep the statements). Synchronous
    /// preparers (libpq's PQprepare, used by `pgbench -M prepared`) would otherwise queue
    /// for a server while holding up the other clients of their thread — whose
    /// transactions hold the servers; and a driver that closes each statement after use
    /// (tokio-postgres's `query_one(&str)`: Close + Sync) would pay a server round trip.
    fn answer_extended_locally(&mut self) -> Result<bool, Error> {
        enum Step {
            Parse(Vec<u8>, Arc<Statement>),
            Close(Vec<u8>),
        }
        let mut frames = Frames::new(&self.crbuf, self.max_message);
        let mut steps = Vec::new();
        loop {
            let Some((tag, frame)) = frames.next_any()? else {
                return Ok(false); // the Sync is not here yet
            };
            match tag {
                fe::PARSE => {
                    let p = frame::parse(frame)?;
                    if p.name.is_empty() || self.routing.aborted() {
                        return Ok(false);
                    }
                    // a name the client has (unless closed first) fails directly (42P05):
                    // the server says so
                    let mut live = self.statements.exists(p.name);
                    for step in &steps {
                        match step {
                            Step::Parse(n, _) if n == p.name => live = true,
                            Step::Close(n) if n == p.name => live = false,
                            _ => {}
                        }
                    }
                    if live {
                        return Ok(false);
                    }
                    let (name, stmt) = (p.name, self.proxy.statements.intern(p.definition));
                    if !stmt.parsed_ok.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok(false);
                    }
                    steps.push(Step::Parse(name.to_vec(), stmt));
                }
                fe::CLOSE => match frame::subject(frame)? {
                    s if s.is_named_statement() => steps.push(Step::Close(s.name.to_vec())),
                    _ => return Ok(false),
                },
                fe::SYNC => break,
                _ => return Ok(false),
            }
        }
        let read = frames.read();
        for step in steps {
            match step {
                Step::Parse(name, stmt) => {
                    self.statements.insert(&name, stmt);
                    backend::parse_complete(&mut self.cwbuf);
                }
                Step::Close(name) => {
                    if self.noting() {
                        self.note_close(&name);
                    }
                    self.statements.remove(&name);
                    backend::close_complete(&mut self.cwbuf);
                }
            }
        }
        // a BEGIN may be waiting for the statement that decides where it runs
        self.ready_unattached();
        self.crbuf.advance(read);
        self.request.clear();
        Ok(true)
    }

    /// Transaction mode: a lone `DEALLOCATE`/`DISCARD ALL`/`LISTEN`/`UNLISTEN` Query,
    /// answered without a server.
    async fn answer_query_locally(&mut self) -> Result<bool, Error> {
        if self.terminate_locally()? {
            return Ok(true);
        }
        if self.answer_extended_listen().await? {
            return Ok(true);
        }
        if self.mode != PoolMode::Transaction
            || !self.request.single_query
            || self.routing.aborted()
        {
            return Ok(false);
        }
        let effect = match self.request.head().map(|a| &a.effect) {
            Some(
                e @ (SessionEffect::Deallocate(_)
                | SessionEffect::DiscardAll
                | SessionEffect::Listen(_)
                | SessionEffect::Unlisten(_)),
            ) => e.clone(),
            _ => return Ok(false),
        };
        let Some((_, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok(false);
        };
        let answered = match effect {
            SessionEffect::Listen(_) | SessionEffect::Unlisten(_) => {
                self.answer_listen(&effect).await
            }
            _ => self.answer_locally(&effect),
        };
        if !answered {
            return Ok(false);
        }
        self.ready_unattached();
        self.tally.queries += 1;
        self.crbuf.advance(len);
        self.request.clear();
        Ok(true)
    }

    /// `DEALLOCATE`/`DISCARD ALL` act on the client's statement names, not a server's.
    /// Writes the CommandComplete and returns true when the statement was handled here.
    pub(super) fn answer_locally(&mut self, effect: &SessionEffect) -> bool {
        if self.pinned()
            && matches!(
                effect,
                SessionEffect::DiscardAll | SessionEffect::Deallocate(None)
            )
        {
            return false; // the pinned server holds state these end
        }
        match effect {
            SessionEffect::Deallocate(None) => {
                self.statements.clear();
                backend::command_complete(&mut self.cwbuf, "DEALLOCATE ALL");
                true
            }
            SessionEffect::Deallocate(Some(name)) => {
                if self.statements.remove(name.as_bytes()).is_none() {
                    return false; // not ours: let the server answer (or fail)
                }
                backend::command_complete(&mut self.cwbuf, "DEALLOCATE");
                true
            }
            SessionEffect::DiscardAll => {
                self.statements.clear();
                self.params.discard();
                self.listen = None; // DISCARD ALL includes UNLISTEN *
                backend::command_complete(&mut self.cwbuf, "DISCARD ALL");
                true
            }
            _ => false,
        }
    }

    /// After an error answered by Pake, skip the rest of the failed extended request.
    fn skip(&mut self, tag: u8, len: usize) {
        self.crbuf.advance(len);
        if tag == fe::SYNC {
            self.skip_to_sync = false;
            self.ready_unattached();
        }
    }

    /// Answer the request at the head of the buffer with `err` and drop it, as the server
    /// would: a Query gets ERROR + ReadyForQuery; an extended request is skipped to its Sync.
    pub(super) fn fail_request(&mut self, err: &Error) -> Result<(), Error> {
        self.request.clear();
        self.abort_deferred_transaction();
        err.write(&mut self.cwbuf, false);
        self.proxy
            .metrics
            .client_errors
            .with_label_values(&[err.sqlstate().code()])
            .inc();
        let Some((tag, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok(());
        };
        match tag {
            fe::QUERY | fe::FUNCTION_CALL => {
                self.crbuf.advance(len);
                self.ready_unattached();
            }
            _ => self.skip_to_sync = true,
        }
        Ok(())
    }
}

/// Is a whole request buffered: a message that ends one (Query, Sync, Flush, FunctionCall,
/// COPY data), or enough of a long batch to start forwarding it?
fn request_ready(buf: &[u8], max: usize) -> Result<bool, FrameError> {
    let mut frames = Frames::new(buf, max);
    while let Some((tag, _)) = frames.next_any()? {
        if matches!(
            tag,
            fe::QUERY
                | fe::SYNC
                | fe::FLUSH
                | fe::FUNCTION_CALL
                | fe::COPY_DATA
                | fe::COPY_DONE
                | fe::COPY_FAIL
        ) || frames.read() >= EAGER_FORWARD
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::super::frame::framed as frame;
    use super::*;

    #[test]
    fn request_unit_detection() {
        let mut batch = frame(b'P', b"\0select 1\0\0\0");
        batch.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(frame(b'E', b"\0\0\0\0\0"));
        assert!(!request_ready(&batch, 1 << 20).unwrap());
        batch.extend(frame(b'S', b""));
        assert!(request_ready(&batch, 1 << 20).unwrap());
        assert!(request_ready(&frame(b'Q', b"select 1\0"), 1 << 20).unwrap());
        assert!(request_ready(b"\x01\0\0\0\x04", 1 << 20).is_err());
    }
}
