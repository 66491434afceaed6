//! Transaction mode `LISTEN`/`UNLISTEN`, answered through the database's listening
//! connection ([`crate::pg::notify`]), and the notifications it hands this session, written
//! to the client between transactions.

use super::frame::{self, Frames};
use super::Session;
use crate::config::PoolMode;
use crate::pg::error::Error;
use crate::pg::sql::SessionEffect;
use crate::pg::wire::{backend, fe};
use bytes::Buf;

impl Session {
    /// A lone `LISTEN`/`UNLISTEN` between transactions: writes its CommandComplete (or an
    /// ErrorResponse when the listening connection is unavailable). `false` when the
    /// statement is not one, or the database has no listener (it goes to a server then).
    pub(super) async fn answer_listen(&mut self, effect: &SessionEffect) -> bool {
        self.listen_or_unlisten(effect).await.is_some()
    }

    /// [`Session::answer_listen`]: `None` when not answered here, `Some(false)` when an
    /// ErrorResponse was written.
    async fn listen_or_unlisten(&mut self, effect: &SessionEffect) -> Option<bool> {
        match effect {
            SessionEffect::Listen(channel) => {
                if self.listen.is_none() {
                    let listener = self.notify.clone()?;
                    let limit = self.proxy.config().general.listen_queue_size.0 as usize;
                    self.listen = Some(Box::new(listener.subscriber(limit)));
                }
                let sub = self.listen.as_mut()?;
                match sub.listen(channel).await {
                    Ok(()) => {
                        backend::command_complete(&mut self.cwbuf, "LISTEN");
                        Some(true)
                    }
                    Err(e) => {
                        Error::Listen(e.to_string()).write(&mut self.cwbuf, false);
                        Some(false)
                    }
                }
            }
            SessionEffect::Unlisten(channel) => {
                if let Some(sub) = self.listen.as_mut() {
                    sub.unlisten(channel.as_deref());
                    if !sub.is_listening() {
                        self.listen = None;
                    }
                }
                backend::command_complete(&mut self.cwbuf, "UNLISTEN");
                Some(true)
            }
            _ => None,
        }
    }

    /// Transaction mode: an extended-protocol request up to its Sync whose every statement
    /// is a `LISTEN`/`UNLISTEN` (asyncpg's `add_listener` prepares and binds one; JDBC sends
    /// Parse/Bind/Describe/Execute) is answered through the listening connection like the
    /// simple Query form, instead of pinning the client to a server that listens for it.
    /// `false` leaves the request to the server path.
    pub(super) async fn answer_extended_listen(&mut self) -> Result<bool, Error> {
        if self.mode != PoolMode::Transaction
            || self.request.single_query
            || self.notify.is_none()
            || self.pinned()
            || self.routing.pending_begin.is_some()
        {
            return Ok(false);
        }
        // every statement-bearing message is a LISTEN/UNLISTEN (a Bind of the unnamed
        // statement runs the Parse before it)
        let mut effects = Vec::new();
        let mut unnamed = None;
        for part in self.request.parts() {
            let effect = match (&part.analysis, part.tag) {
                (Some(a), _) => a.effect.clone(),
                (None, fe::BIND) if part.unnamed => match &unnamed {
                    Some(e) => SessionEffect::clone(e),
                    None => return Ok(false),
                },
                _ => return Ok(false),
            };
            if !matches!(
                effect,
                SessionEffect::Listen(_) | SessionEffect::Unlisten(_)
            ) {
                return Ok(false);
            }
            if part.tag == fe::PARSE && part.unnamed {
                unnamed = Some(effect.clone());
            }
            effects.push(effect);
        }
        if effects.is_empty() {
            return Ok(false);
        }
        // only messages answered here, and the Sync (or Flush) is in the buffer
        let mut frames = Frames::new(&self.crbuf, self.max_message);
        loop {
            let Some((tag, _)) = frames.next_any()? else {
                return Ok(false);
            };
            match tag {
                fe::PARSE | fe::BIND | fe::DESCRIBE | fe::EXECUTE => {}
                fe::SYNC | fe::FLUSH => break, // asyncpg prepares with a Flush
                _ => return Ok(false),
            }
        }
        let pos = frames.read();
        let mut buf = std::mem::take(&mut self.crbuf);
        let result = self.answer_listen_frames(&buf[..pos], effects).await;
        buf.advance(pos);
        self.crbuf = buf;
        self.request.clear();
        result.map(|()| true)
    }

    /// The replies to a request [`Session::answer_extended_listen`] accepted.
    async fn answer_listen_frames(
        &mut self,
        request: &[u8],
        effects: Vec<SessionEffect>,
    ) -> Result<(), Error> {
        let mut effects = effects.into_iter();
        let mut portal = None;
        let mut failed = false;
        let mut frames = Frames::new(request, self.max_message);
        while let Some((tag, msg)) = frames.next_any()? {
            if failed && !matches!(tag, fe::SYNC | fe::FLUSH) {
                continue; // after an error the server skips to the Sync too
            }
            match tag {
                fe::PARSE => {
                    let p = frame::parse(msg)?;
                    if p.name.is_empty() {
                        self.unnamed_parse.clear();
                        self.unnamed_parse.extend_from_slice(msg);
                    } else {
                        let stmt = self.proxy.statements.intern(p.definition);
                        self.statements.insert(p.name, stmt);
                    }
                    effects.next();
                    backend::parse_complete(&mut self.cwbuf);
                }
                fe::BIND => {
                    portal = effects.next();
                    backend::bind_complete(&mut self.cwbuf);
                }
                fe::DESCRIBE => {
                    if frame::subject(msg)?.kind == b'S' {
                        backend::no_parameters(&mut self.cwbuf);
                    }
                    backend::no_data(&mut self.cwbuf);
                }
                fe::EXECUTE => {
                    let effect = portal.clone().unwrap_or(SessionEffect::None);
                    self.tally.queries += 1;
                    failed = self.listen_or_unlisten(&effect).await != Some(true);
                    if failed && !matches!(effect, SessionEffect::Listen(_)) {
                        // no portal: the server would say so
                        Error::Listen("portal does not exist".into()).write(&mut self.cwbuf, false);
                    }
                }
                fe::SYNC => backend::ready_for_query(&mut self.cwbuf, b'I'),
                _ => {} // Flush: the replies go out now anyway
            }
        }
        Ok(())
    }

    /// A Query that goes to a server with `UNLISTEN *` or `DISCARD ALL` among its statements
    /// (a driver's reset query: `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    /// RESET ALL;`) ends this client's subscriptions here too.
    pub(super) fn unlisten_within(&mut self, frame: &[u8]) {
        let Ok(text) = super::frame::query(frame) else {
            return;
        };
        let all = crate::pg::sql::pins::events(&text).iter().any(|e| {
            use crate::pg::sql::pins::{Event, Kind};
            matches!(e, Event::Unpin(Kind::Listen, None) | Event::DiscardAll)
        });
        if all {
            self.listen = None;
        }
    }

    /// The transaction's ReadyForQuery waits until the listener has received what it
    /// committed (at most the listener's timeout when its connection is lost); the
    /// notifications waiting for this client go out ahead of it, as a server writes them.
    /// Meanwhile what is buffered is written and the client's notifications keep flowing:
    /// one that notifies itself more than its inbox holds would otherwise stall the
    /// listener, which waits for room in that inbox before it reads the round trip's answer.
    pub(super) async fn ready_after(
        &mut self,
        listener: &crate::pg::notify::Listener,
    ) -> Result<(), Error> {
        const READY_IDLE: [u8; 6] = [b'Z', 0, 0, 0, 5, b'I'];
        // the server is idle, so nothing of its own follows its last ReadyForQuery: the
        // buffer's last six bytes are that message if it has not been written yet
        let held = self.cwbuf.ends_with(&READY_IDLE);
        if held {
            self.cwbuf.truncate(self.cwbuf.len() - READY_IDLE.len());
        }
        let inbox = self.listen.as_ref().map(|s| s.inbox.clone());
        let barrier = listener.barrier();
        tokio::pin!(barrier);
        loop {
            let arrived = async {
                match &inbox {
                    Some(i) => i.wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut barrier => break,
                () = arrived => {
                    self.deliver_notifications()?;
                    self.flush_client().await?;
                }
            }
        }
        self.deliver_notifications()?;
        if held {
            self.cwbuf.extend_from_slice(&READY_IDLE);
        }
        Ok(())
    }

    /// Write the notifications waiting for this client (between transactions only).
    pub(super) fn deliver_notifications(&mut self) -> Result<(), Error> {
        let Some(sub) = self.listen.as_ref() else {
            return Ok(());
        };
        if self.server.is_some() {
            return Ok(());
        }
        sub.inbox.drain_into(&mut self.cwbuf).map_err(|limit| {
            self.proxy
                .metrics
                .pg_listen_dropped
                .with_label_values(&[self.database()])
                .inc();
            Error::NotificationsBehind(limit)
        })
    }
}
