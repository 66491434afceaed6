//! Client → server: take whole messages off the client buffer, answer the ones that need no
//! server, and forward the rest with prepared-statement names rewritten (transaction mode),
//! recording the replies each message is owed.

use super::record::StatementRef;
use super::{Flow, Session, HIGH_WATER};
use crate::config::PoolMode;
use crate::pg::error::Error;
use crate::pg::server::replies::{Expect, Synth};
use crate::pg::server::Server;
use crate::pg::sql::SessionEffect;
use crate::pg::wire::{self, backend, fe, FrameError};
use bytes::{Buf, BufMut};

/// Forward a request that has no terminator yet once this much of it is buffered.
const EAGER_FORWARD: usize = 64 * 1024;

/// What happened to a message that arrived while no server is attached.
enum Alone {
    Consumed,
    NeedServer,
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
                match self.alone(tag, len)? {
                    Alone::Consumed => continue,
                    Alone::NeedServer => {}
                }
                if !request_ready(&self.crbuf, self.max_message)? {
                    return Ok(Flow::Continue);
                }
                if self.proxy.generation() != self.cluster_gen {
                    self.refresh_cluster();
                }
                if let Err(e) = self.admit_request() {
                    self.fail_request(&e)?;
                    continue;
                }
                let target = match self.plan()? {
                    super::route::Plan::Answered => continue,
                    super::route::Plan::Server(target) => target,
                };
                if self.inject_fault(target).await? {
                    continue;
                }
                if let Err(e) = self.attach_routed(target).await {
                    if !e.is_recoverable() {
                        return Err(e);
                    }
                    self.fail_request(&e)?;
                    continue;
                }
            }
            if self
                .server
                .as_ref()
                .is_some_and(|s| s.wbuf.len() >= HIGH_WATER)
            {
                return Ok(Flow::Continue);
            }
            let mut buf = std::mem::take(&mut self.crbuf);
            let result = self.on_client_frame(tag, &buf[..len]);
            buf.advance(len);
            self.crbuf = buf;
            result?;
        }
    }

    /// Apply an injected fault to the request at the head of the buffer; `true` when the
    /// fault answered it (an error) so it must not be forwarded.
    async fn inject_fault(&mut self, target: crate::pg::cluster::Target) -> Result<bool, Error> {
        self.bandwidth = None;
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
                self.bandwidth = Some(*bytes_per_second);
                Ok(false)
            }
        }
    }

    /// The normalised text and shape hash of the request's first statement (for fault scopes).
    fn head_statement(&self) -> Result<(Option<String>, Option<u64>), Error> {
        let Some((tag, len)) = wire::frontend_frame(&self.crbuf, self.max_message)? else {
            return Ok((None, None));
        };
        let frame = &self.crbuf[..len];
        let text = match tag {
            fe::QUERY => Some(query_text(frame)?.to_string()),
            fe::PARSE => wire::cstr(wire::body(frame))
                .and_then(|(_, rest)| wire::cstr(rest))
                .map(|(q, _)| String::from_utf8_lossy(q).into_owned()),
            fe::BIND => wire::cstr(wire::body(frame))
                .and_then(|(_, rest)| wire::cstr(rest))
                .and_then(|(name, _)| self.statements.get(name))
                .map(|s| s.query.to_string()),
            _ => None,
        };
        Ok(match text {
            Some(t) => {
                let (norm, info) = self.proxy.analyzer.analyze(&t);
                (Some(info.normalized.to_string()), Some(norm.hash))
            }
            None => (None, None),
        })
    }

    /// A message with no server attached.
    fn alone(&mut self, tag: u8, len: usize) -> Result<Alone, Error> {
        match tag {
            fe::SYNC => {
                // nothing is pending: the answer is the transaction status
                let status = if self.routing.pending_begin.is_some() {
                    b'T'
                } else {
                    b'I'
                };
                backend::ready_for_query(&mut self.cwbuf, status);
                self.crbuf.advance(len);
                Ok(Alone::Consumed)
            }
            fe::FLUSH | fe::COPY_DATA | fe::COPY_DONE | fe::COPY_FAIL => {
                // PostgreSQL ignores these outside a COPY / with nothing to flush
                self.crbuf.advance(len);
                Ok(Alone::Consumed)
            }
            fe::QUERY if self.mode == PoolMode::Transaction => {
                let text = query_text(&self.crbuf[..len])?;
                let effect = self
                    .proxy
                    .analyzer
                    .with(text, |_, info| match &info.session {
                        e @ (SessionEffect::Deallocate(_) | SessionEffect::DiscardAll) => {
                            Some(e.clone())
                        }
                        _ => None,
                    });
                match effect {
                    Some(e) if self.answer_locally(&e) => {
                        backend::ready_for_query(&mut self.cwbuf, b'I');
                        self.tally.queries += 1;
                        self.crbuf.advance(len);
                        Ok(Alone::Consumed)
                    }
                    _ => Ok(Alone::NeedServer),
                }
            }
            fe::PARSE if self.mode == PoolMode::Transaction => match self.prepare_locally()? {
                true => Ok(Alone::Consumed),
                false => Ok(Alone::NeedServer),
            },
            fe::PASSWORD => Err(Error::Unexpected(wire::Tag(tag))),
            _ => Ok(Alone::NeedServer),
        }
    }

    /// Answer `Parse… Sync` outside a transaction without a server when every statement is
    /// one a server has already parsed. Synchronous preparers (libpq's PQprepare, used by
    /// `pgbench -M prepared`) would otherwise queue for a server while holding up the other
    /// clients of their thread — whose transactions hold the servers.
    fn prepare_locally(&mut self) -> Result<bool, Error> {
        let mut pos = 0;
        let mut known = Vec::new();
        loop {
            let Some((tag, len)) = wire::frontend_frame(&self.crbuf[pos..], self.max_message)?
            else {
                return Ok(false); // the Sync is not here yet
            };
            let frame = &self.crbuf[pos..pos + len];
            pos += len;
            match tag {
                fe::PARSE => {
                    let (name, rest) = wire::cstr(wire::body(frame)).ok_or(malformed("Parse"))?;
                    if name.is_empty() {
                        return Ok(false);
                    }
                    let stmt = self.proxy.statements.intern(rest);
                    if !stmt.parsed_ok.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok(false);
                    }
                    known.push((name.to_vec(), stmt));
                }
                fe::SYNC => break,
                _ => return Ok(false),
            }
        }
        for (name, stmt) in known {
            self.statements.insert(&name, stmt);
            backend::parse_complete(&mut self.cwbuf);
        }
        backend::ready_for_query(&mut self.cwbuf, b'I');
        self.crbuf.advance(pos);
        Ok(true)
    }

    /// `DEALLOCATE`/`DISCARD ALL` act on the client's statement names, not a server's.
    /// Writes the CommandComplete and returns true when the statement was handled here.
    fn answer_locally(&mut self, effect: &SessionEffect) -> bool {
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
            backend::ready_for_query(&mut self.cwbuf, b'I');
        }
    }

    /// Answer the request at the head of the buffer with `err` and drop it, as the server
    /// would: a Query gets ERROR + ReadyForQuery; an extended request is skipped to its Sync.
    pub(super) fn fail_request(&mut self, err: &Error) -> Result<(), Error> {
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
                backend::ready_for_query(&mut self.cwbuf, b'I');
            }
            _ => self.skip_to_sync = true,
        }
        Ok(())
    }

    /// Forward one client message to the attached server.
    fn on_client_frame(&mut self, tag: u8, frame: &[u8]) -> Result<(), Error> {
        let rename = self.mode == PoolMode::Transaction;
        if tag == fe::QUERY && rename && self.server.as_deref().is_some_and(Server::is_idle) {
            // a lone DEALLOCATE / DISCARD ALL between transactions: nothing is pending,
            // so the answer can be written straight away
            let text = query_text(frame)?;
            let effect = self.proxy.analyzer.with(text, |_, i| i.session.clone());
            if self.answer_locally(&effect) {
                backend::ready_for_query(&mut self.cwbuf, b'I');
                self.tally.queries += 1;
                return Ok(());
            }
        }
        // insight and tracing bookkeeping first: it reads the session, the forwarding below
        // borrows it (a simple Query is noted below, from the same analysis as its session
        // effect)
        let noting = self.insight_on || self.otlp.is_some();
        let mut sent = if noting && tag != fe::QUERY {
            self.note_statement(tag, frame)?.map(|s| (s, None))
        } else {
            None
        };
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        match tag {
            fe::QUERY => {
                let text = query_text(frame)?;
                let (effect, stmt) = self.proxy.analyzer.with(text, |norm, info| {
                    let stmt = noting.then(|| StatementRef::of(norm));
                    (info.session.clone(), stmt)
                });
                // the raw text is kept for insight's slow samples only
                let raw = self.insight_on.then(|| text.into());
                sent = stmt.map(|s| (s, raw));
                if let SessionEffect::Dirties(reason) = effect {
                    server.dirty = Some(reason);
                }
                self.tally.queries += 1;
                server.wbuf.put_slice(frame);
                server.replies.push(Expect::Ready {
                    swallow: false,
                    stmt: true,
                });
            }
            fe::PARSE => {
                let body = wire::body(frame);
                let (name, rest) = wire::cstr(body).ok_or(malformed("Parse"))?;
                let (query, _) = wire::cstr(rest).ok_or(malformed("Parse"))?;
                let query = std::str::from_utf8(query).map_err(|_| malformed("Parse"))?;
                if self.proxy.analyzer.with(query, |_, i| i.session.dirties()) {
                    server.dirty = Some("statement with session effects");
                }
                server.in_extended = true;
                if rename && !name.is_empty() {
                    let stmt = self.proxy.statements.intern(rest);
                    self.statements.insert(name, stmt.clone());
                    if server.statements.contains(stmt.id) {
                        server.replies.push(Expect::Synth(Synth::ParseComplete));
                    } else {
                        evict_statement(
                            server,
                            self.pool.settings().defaults.max_prepared_statements,
                        );
                        server.wbuf.put_slice(&stmt.parse);
                        server.statements.insert(&stmt);
                        server.replies.push(Expect::Parse {
                            swallow: false,
                            registers: Some(stmt.id),
                        });
                    }
                } else {
                    server.wbuf.put_slice(frame);
                    server.replies.push(Expect::Parse {
                        swallow: false,
                        registers: None,
                    });
                }
            }
            fe::BIND => {
                let body = wire::body(frame);
                let (portal, rest) = wire::cstr(body).ok_or(malformed("Bind"))?;
                let (name, rest) = wire::cstr(rest).ok_or(malformed("Bind"))?;
                server.in_extended = true;
                match self
                    .statements
                    .get(name)
                    .filter(|_| rename && !name.is_empty())
                {
                    Some(stmt) => {
                        let stmt = stmt.clone();
                        ensure_prepared(
                            server,
                            &stmt,
                            self.pool.settings().defaults.max_prepared_statements,
                        );
                        let at = wire::begin_frame(&mut server.wbuf, fe::BIND);
                        wire::put_cstr(&mut server.wbuf, portal);
                        wire::put_cstr(&mut server.wbuf, stmt.name.as_bytes());
                        server.wbuf.put_slice(rest);
                        wire::finish_frame(&mut server.wbuf, at);
                    }
                    None => server.wbuf.put_slice(frame),
                }
                server.replies.push(Expect::Bind);
            }
            fe::DESCRIBE | fe::CLOSE => {
                let body = wire::body(frame);
                let (&kind, rest) = body.split_first().ok_or(malformed("Describe/Close"))?;
                let (name, _) = wire::cstr(rest).ok_or(malformed("Describe/Close"))?;
                server.in_extended = true;
                let named_statement = rename && kind == b'S' && !name.is_empty();
                match (tag, named_statement) {
                    (fe::CLOSE, true) => {
                        self.statements.remove(name);
                        server.replies.push(Expect::Synth(Synth::CloseComplete));
                    }
                    (fe::CLOSE, false) => {
                        server.wbuf.put_slice(frame);
                        server.replies.push(Expect::Close { swallow: false });
                    }
                    (_, true) => {
                        match self.statements.get(name) {
                            Some(stmt) => {
                                let stmt = stmt.clone();
                                ensure_prepared(
                                    server,
                                    &stmt,
                                    self.pool.settings().defaults.max_prepared_statements,
                                );
                                let at = wire::begin_frame(&mut server.wbuf, fe::DESCRIBE);
                                server.wbuf.put_u8(b'S');
                                wire::put_cstr(&mut server.wbuf, stmt.name.as_bytes());
                                wire::finish_frame(&mut server.wbuf, at);
                            }
                            None => server.wbuf.put_slice(frame),
                        }
                        server.replies.push(Expect::DescribeStatement);
                    }
                    (_, false) => {
                        server.wbuf.put_slice(frame);
                        server.replies.push(if kind == b'S' {
                            Expect::DescribeStatement
                        } else {
                            Expect::RowDescription
                        });
                    }
                }
            }
            fe::EXECUTE => {
                self.tally.queries += 1;
                server.in_extended = true;
                server.wbuf.put_slice(frame);
                server.replies.push(Expect::Execute);
            }
            fe::SYNC => {
                server.in_extended = false;
                server.wbuf.put_slice(frame);
                server.replies.on_sync_sent();
            }
            fe::FUNCTION_CALL => {
                self.tally.queries += 1;
                server.wbuf.put_slice(frame);
                server.replies.push(Expect::Ready {
                    swallow: false,
                    stmt: false,
                });
            }
            fe::COPY_DONE | fe::COPY_FAIL => {
                server.replies.on_copy_end_sent();
                server.wbuf.put_slice(frame);
            }
            fe::FLUSH | fe::COPY_DATA => server.wbuf.put_slice(frame),
            other => return Err(Error::Unexpected(wire::Tag(other))),
        }
        server.replies.drain_synthetic(&mut self.cwbuf);
        if let Some((stmt, text)) = sent {
            self.sent(stmt, text);
        }
        Ok(())
    }
}

/// Make sure `server` has `stmt` before a Bind/Describe uses it: inject its Parse (reply
/// swallowed) if not.
fn ensure_prepared(
    server: &mut Server,
    stmt: &std::sync::Arc<crate::pg::prepared::Statement>,
    cap: usize,
) {
    if server.statements.contains(stmt.id) {
        return;
    }
    evict_statement(server, cap);
    server.wbuf.put_slice(&stmt.parse);
    server.statements.insert(stmt);
    server.replies.push(Expect::Parse {
        swallow: true,
        registers: Some(stmt.id),
    });
}

/// Close the least recently used statement on `server` when it is at its cap.
fn evict_statement(server: &mut Server, cap: usize) {
    if let Some(old) = server.statements.evict_over(cap.saturating_sub(1)) {
        let at = wire::begin_frame(&mut server.wbuf, fe::CLOSE);
        server.wbuf.put_u8(b'S');
        wire::put_cstr(&mut server.wbuf, old.name.as_bytes());
        wire::finish_frame(&mut server.wbuf, at);
        server.replies.push(Expect::Close { swallow: true });
    }
}

fn malformed(what: &'static str) -> FrameError {
    FrameError::Malformed { what }
}

/// The SQL text of a Query frame.
fn query_text(frame: &[u8]) -> Result<&str, FrameError> {
    let (text, _) = wire::cstr(wire::body(frame)).ok_or(malformed("Query"))?;
    std::str::from_utf8(text).map_err(|_| malformed("Query"))
}

/// Is a whole request buffered: a message that ends one (Query, Sync, Flush, FunctionCall,
/// COPY data), or enough of a long batch to start forwarding it?
fn request_ready(buf: &[u8], max: usize) -> Result<bool, FrameError> {
    let mut pos = 0;
    while let Some((tag, len)) = wire::frontend_frame(&buf[pos..], max)? {
        pos += len;
        if matches!(
            tag,
            fe::QUERY
                | fe::SYNC
                | fe::FLUSH
                | fe::FUNCTION_CALL
                | fe::COPY_DATA
                | fe::COPY_DONE
                | fe::COPY_FAIL
        ) || pos >= EAGER_FORWARD
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

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

    #[test]
    fn query_text_needs_nul_and_utf8() {
        assert_eq!(query_text(&frame(b'Q', b"select 1\0")).unwrap(), "select 1");
        assert!(query_text(&frame(b'Q', b"select 1")).is_err());
        assert!(query_text(&frame(b'Q', b"\xff\0")).is_err());
    }
}
