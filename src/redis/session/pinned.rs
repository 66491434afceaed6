//! Commands that need a connection of their own: blocking commands (BLPOP, BLMOVE, XREAD
//! BLOCK…), transactions with WATCH, and pub/sub. They run on a dedicated [`Link`] to the
//! primary serving their slot, logged in as the client is, speaking the client's protocol,
//! so replies are forwarded as the bytes Redis wrote.
//!
//! MULTI is answered by Pake and the commands are queued locally (`+QUEUED`), checked for
//! CROSSSLOT as they come; EXEC sends `MULTI`, the queue and `EXEC` in one write on the link
//! of the transaction's slot (the one WATCH pinned, if any) and forwards EXEC's reply. The
//! keys the transaction wrote are invalidated in the L1 before that reply is queued.
//!
//! The queue is the client's request bytes held until EXEC: it is charged to the client's
//! request meter (`client_max_request_bytes`, and the process budget), and a command that
//! would pass it is refused with `-ERR` and aborts the transaction (EXECABORT), as any
//! error while queueing does; the connection stays.

use super::dispatch::{common_slot, keys_of};
use super::{Flow, Session};
use crate::redis::backend::link::{self, Link};
use crate::redis::budget::Lease;
use crate::redis::commands::{Kind, Spec, FLUSH, UNLISTED, WRITE};
use crate::redis::error::Error;
use crate::redis::resp::Request;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

/// A transaction being queued.
pub struct Tx {
    /// Encoded commands, in order.
    queued: BytesMut,
    count: usize,
    slot: Option<u16>,
    /// Keys written by queued commands (invalidated after EXEC).
    written: Vec<Bytes>,
    flushes: bool,
    /// A queued command may write keys it does not name: EXEC's reply waits for the
    /// tracking stream ([`super::writes::heard_after`]).
    unlisted: bool,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    aborted: bool,
    /// The queued SELECTs: their place in the queue and their database. Redis runs them at
    /// EXEC, and the last one it answers `+OK` moves the client from then on.
    selects: Vec<(usize, u8)>,
    /// The queued CLIENT SETNAMEs, the same way: the name the client has after EXEC.
    names: Vec<(usize, Option<Bytes>)>,
    /// A CLIENT command is queued: the link is given the client's name before MULTI, so
    /// that GETNAME, LIST and INFO inside the transaction see it.
    client: bool,
    /// The queued `CLIENT PAUSE`s and `UNPAUSE`s, the same way: Pake notes the ones Redis
    /// accepted ([`crate::redis::pause`]), as it does them outside a transaction. (One per
    /// queued command at most, each smaller than the command charged for.)
    pauses: Vec<(usize, Pause)>,
    /// The bytes of `queued` and `written`, on the client's request meter.
    lease: Lease,
}

impl Tx {
    /// A transaction charging `lease`'s meter for what it queues.
    pub(super) fn new(lease: Lease) -> Tx {
        Tx {
            queued: BytesMut::new(),
            count: 0,
            slot: None,
            written: Vec::new(),
            flushes: false,
            unlisted: false,
            aborted: false,
            selects: Vec::new(),
            names: Vec::new(),
            client: false,
            pauses: Vec::new(),
            lease,
        }
    }

    /// Queue one encoded command and the keys it writes (copies: a slice of the client's
    /// read buffer would keep all of that buffer alive until EXEC). Refused, with nothing
    /// queued, when the bytes would pass the client's request budget.
    fn queue(&mut self, command: &[u8], written: &[&Bytes]) -> Result<(), Error> {
        let bytes = command.len() + written.iter().map(|k| k.len()).sum::<usize>();
        self.lease.grow(bytes).map_err(|over| {
            Error::Refused(format!(
                "ERR Pake memory budget: MULTI queue {over}; EXEC will answer EXECABORT"
            ))
        })?;
        self.queued.extend_from_slice(command);
        self.count += 1;
        self.written
            .extend(written.iter().map(|k| Bytes::copy_from_slice(k)));
        Ok(())
    }

    /// A command was refused while queueing: EXEC will answer EXECABORT.
    pub(super) fn abort(&mut self) {
        self.aborted = true;
    }
}

impl Session {
    /// Check and queue a command inside MULTI.
    pub(super) fn queue_in_tx(&mut self, spec: &'static Spec, req: Request) {
        let cluster = self.svc.backend.cluster;
        let watch_slot = self.watch_slot.flatten();
        let Some(tx) = self.tx.as_mut() else { return };
        let keys = keys_of(spec, &req.args);
        let slot = common_slot(&keys).and_then(|s| match (s, tx.slot.or(watch_slot)) {
            (Some(a), Some(b)) if a != b && cluster => Err(Error::CrossSlot),
            (s, prev) => Ok(s.or(prev)),
        });
        match slot {
            Err(e) if cluster => {
                tx.aborted = true;
                self.push_error(&e);
            }
            other => {
                let args: Vec<&[u8]> = req.args.iter().map(|a| a.as_ref()).collect();
                let written = if spec.is(WRITE) { &keys[..] } else { &[] };
                if let Err(e) = tx.queue(&link::command(&args), written) {
                    tx.aborted = true;
                    return self.push_error(&e);
                }
                tx.slot = other.ok().flatten();
                let db = std::str::from_utf8(req.args.get(1).map_or(&[][..], |a| a));
                if let (Kind::Select, Ok(Ok(db))) = (spec.kind, db.map(str::parse::<u8>)) {
                    tx.selects.push((tx.count - 1, db));
                }
                if spec.kind == Kind::Client {
                    tx.client = true;
                    if let Some(p) = Pause::of(&req.args) {
                        tx.pauses.push((tx.count - 1, p));
                    }
                    if req.args.len() == 3 && req.args[1].eq_ignore_ascii_case(b"SETNAME") {
                        let name = &req.args[2];
                        let name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                        tx.names.push((tx.count - 1, name));
                    }
                }
                tx.flushes |= spec.is(FLUSH);
                tx.unlisted |= spec.is(UNLISTED);
                self.push_reply(Bytes::from_static(b"+QUEUED\r\n"));
            }
        }
    }

    /// The session's link to the primary of `slot`, opened (or re-opened) as needed.
    async fn link_for(&mut self, slot: Option<u16>) -> Result<&mut Link, Error> {
        let addr = self
            .svc
            .backend
            .node_for(slot)
            .ok_or_else(|| Error::Backend("no primary known for this slot".into()))?;
        if self.link.as_ref().is_some_and(|l| l.addr != addr) {
            self.link = None;
        }
        if self.link.is_none() {
            let target = self.svc.backend.target(addr, &self.state.pool_key());
            self.link = Some(Link::connect(&target).await?);
        }
        self.link
            .as_mut()
            .ok_or_else(|| Error::Backend("no link".into()))
    }

    /// Wait for the link's next reply. A client that hangs up meanwhile ends a blocking
    /// command (Redis drops a blocked client at its EOF); any other gets its reply, written
    /// with the rest of what the client sent before the EOF.
    async fn link_reply(&mut self) -> Result<Bytes, Error> {
        let Session {
            link,
            client,
            rbuf,
            eof,
            blocked,
            ..
        } = self;
        let Some(link) = link.as_mut() else {
            return Err(Error::LinkLost("no link".into()));
        };
        if *eof && *blocked {
            return Err(client_gone());
        }
        loop {
            if let Some(f) = link.buffered_frame()? {
                return Ok(f);
            }
            rbuf.reserve(4096);
            tokio::select! {
                r = link.fill() => r?,
                r = client.read_buf(rbuf), if !*eof => {
                    if r.map_err(Error::ClientIo)? == 0 {
                        *eof = true;
                        if *blocked {
                            return Err(client_gone());
                        }
                    }
                }
            }
        }
    }

    /// Send `bytes` on the link and wait for one reply; a lost link is dropped.
    pub(super) async fn on_link(
        &mut self,
        slot: Option<u16>,
        bytes: &[u8],
    ) -> Result<Bytes, Error> {
        self.link_for(slot).await?.send(bytes).await?;
        self.checked_reply().await
    }

    /// The link's next reply; a lost link is dropped, a demoted primary suspected.
    async fn checked_reply(&mut self) -> Result<Bytes, Error> {
        let reply = self.link_reply().await;
        if matches!(reply, Err(Error::LinkLost(_))) {
            self.link = None;
            self.watch_slot = None;
            self.svc.backend.suspect_primary();
        }
        if reply.as_ref().is_ok_and(|r| r.starts_with(b"-READONLY")) {
            self.svc.backend.suspect_primary();
        }
        reply
    }

    /// Send `bytes` on the link, its reply still to be read ([`Self::checked_reply`]).
    async fn on_link_sent(&mut self, slot: Option<u16>, bytes: &[u8]) -> Result<(), Error> {
        self.link_for(slot).await?.send(bytes).await
    }

    fn encoded(req: &Request) -> BytesMut {
        let args: Vec<&[u8]> = req.args.iter().map(|a| a.as_ref()).collect();
        link::command(&args)
    }

    pub(super) async fn blocking(&mut self, spec: &Spec, req: &Request) -> Result<Flow, Error> {
        if !matches!(spec.kind, Kind::Raw) && !self.wbuf.is_empty() {
            // it may wait for data (BLPOP, XREAD BLOCK; only blocking reads come here):
            // replies queued before it leave first, as from Redis
            let wbuf = self.wbuf.split();
            self.write_out(&wbuf).await?;
            self.wlease.force(self.wbuf.len());
        }
        let keys = keys_of(spec, &req.args);
        let slot = common_slot(&keys).or_else(|e| {
            if self.svc.backend.cluster {
                Err(e)
            } else {
                Ok(None)
            }
        })?;
        let link = self.link_for(slot).await?;
        if link.redis_id.is_none() {
            // asked once per link, only by a client that blocks on it
            let id = link.call_ok(&[b"CLIENT", b"ID"]).await?;
            link.redis_id = std::str::from_utf8(id.get(1..).unwrap_or_default())
                .ok()
                .and_then(|s| s.trim_end().parse().ok());
        }
        let on = link.redis_id.map(|id| (link.addr.clone(), id));
        if let Some(n) = self.opening.as_ref().map(|t| t.number()) {
            // the blocking commands read before this one reach Redis first (pubsub.rs)
            let limit = self.svc.config.connect_timeout.0;
            self.svc.blocking.settled_before(n, limit).await;
        }
        self.reg.entry.update(|i| i.blocked_on = on);
        self.blocked = true;
        let sent = self.on_link_sent(slot, &Self::encoded(req)).await;
        // sent (or failed): the writes read after it may go
        self.opening = None;
        let mut reply = match sent {
            Ok(()) => self.checked_reply().await,
            Err(e) => Err(e),
        };
        if matches!(reply, Err(Error::ClientIo(_))) && self.eof {
            reply = self.unblock_at_eof().await;
        }
        self.blocked = false;
        self.reg.entry.update(|i| i.blocked_on = None);
        let reply = reply?;
        if let Some(l1) = &self.svc.l1 {
            if spec.is(WRITE) {
                keys.iter().for_each(|k| l1.invalidate_key(k));
            }
        }
        self.push_reply(reply);
        Ok(Flow::Continue)
    }

    /// The client hung up (read EOF) while its command blocks on the link. Directly, Redis
    /// drops a blocked client at its EOF: what it answered before is written (a half-closed
    /// client still reads it), and nothing is taken after. So the command is unblocked on
    /// Redis (`CLIENT UNBLOCK`, as Pake's own user) before the client's connection closes: a
    /// reply Redis gave first (the list had an element) is the client's; the unblocked one
    /// (as for a timeout) is not. Dropping the link alone lost both: the reply read by no
    /// one, and an element pushed before Redis saw the link close, taken by the abandoned
    /// command. (Found with ioredis's suite: its reconnect test lost list elements.)
    async fn unblock_at_eof(&mut self) -> Result<Bytes, Error> {
        let Some((addr, id)) = self
            .link
            .as_ref()
            .and_then(|l| Some((l.addr.clone(), l.redis_id?)))
        else {
            self.link = None;
            return Err(client_gone());
        };
        let key = self
            .svc
            .backend
            .default_key(crate::redis::resp::encode::Proto::Resp2);
        let target = self.svc.backend.target(addr, &key);
        let deadline = tokio::time::Instant::now() + target.connect_timeout;
        let unblocked = async {
            let mut admin = Link::connect(&target).await?;
            let id = id.to_string();
            loop {
                let r = admin.call(&[b"CLIENT", b"UNBLOCK", id.as_bytes()]).await?;
                if let Some(e) = link::error_text(&r) {
                    return Err(Error::Refused(e)); // Pake's user may not: drop the link
                }
                let Some(link) = self.link.as_mut() else {
                    return Err(Error::LinkLost("no link".into()));
                };
                // `:0`: answered already, or the command is still on its way to Redis
                let unblocked = &r[..] == b":1\r\n";
                let wait = std::time::Duration::from_millis(if unblocked { 1000 } else { 20 });
                if let Ok(reply) = tokio::time::timeout(wait, link.read_frame()).await {
                    return Ok((!unblocked).then_some(reply?));
                }
            }
        };
        match tokio::time::timeout_at(deadline, unblocked).await {
            Ok(Ok(Some(reply))) => Ok(reply),
            Ok(Ok(None)) => Err(client_gone()),
            _ => {
                self.link = None; // its state is unknown: Redis drops it at its close
                Err(client_gone())
            }
        }
    }

    pub(super) async fn watch(&mut self, spec: &Spec, req: &Request) -> Result<Flow, Error> {
        if self.tx.is_some() {
            return Err(Error::Syntax("ERR WATCH inside MULTI is not allowed"));
        }
        let keys = keys_of(spec, &req.args);
        // slot rules bind a cluster only: a single Redis watches any keys together
        let slot = match common_slot(&keys) {
            Err(_) if !self.svc.backend.cluster => None,
            other => other?,
        };
        if let (Some(Some(prev)), Some(s)) = (self.watch_slot, slot) {
            if prev != s && self.svc.backend.cluster {
                return Err(Error::CrossSlot);
            }
        }
        let reply = self.on_link(slot, &Self::encoded(req)).await?;
        if link::error_text(&reply).is_none() {
            self.watch_slot = Some(slot.or(self.watch_slot.flatten()));
        }
        self.push_reply(reply);
        Ok(Flow::Continue)
    }

    /// UNWATCH on the link holding the watches, if any; its reply.
    async fn unwatch_link(&mut self) -> Result<Option<Bytes>, Error> {
        if self.watch_slot.take().is_none() {
            return Ok(None);
        }
        let Some(l) = self.link.as_mut() else {
            return Ok(None);
        };
        l.send(&link::command(&[b"UNWATCH"])).await?;
        self.link_reply().await.map(Some)
    }

    pub(super) async fn unwatch(&mut self) -> Result<Flow, Error> {
        let reply = self.unwatch_link().await?;
        self.push_reply(reply.unwrap_or_else(|| Bytes::from_static(b"+OK\r\n")));
        Ok(Flow::Continue)
    }

    pub(super) async fn discard(&mut self) -> Result<Flow, Error> {
        if self.tx.take().is_none() {
            return Err(Error::Syntax("ERR DISCARD without MULTI"));
        }
        self.unwatch_link().await?;
        self.push_reply(Bytes::from_static(b"+OK\r\n"));
        Ok(Flow::Continue)
    }

    pub(super) async fn exec(&mut self) -> Result<Flow, Error> {
        let Some(tx) = self.tx.take() else {
            return Err(Error::Syntax("ERR EXEC without MULTI"));
        };
        if tx.aborted {
            self.unwatch_link().await?;
            self.push_reply(Bytes::from_static(
                b"-EXECABORT Transaction discarded because of previous errors.\r\n",
            ));
            return Ok(Flow::Continue);
        }
        let watched = self.watch_slot.is_some();
        let slot = tx.slot.or(self.watch_slot.take().flatten());
        let watched_node = self.link.as_ref().map(|l| l.addr.clone());
        if watched && watched_node != self.svc.backend.node_for(slot) {
            // the WATCHes were set on a primary that has since been replaced: the keys may
            // have changed, so the transaction is aborted as Redis aborts a touched WATCH
            self.link = None;
            let mut out = BytesMut::new();
            match self.state.proto {
                crate::redis::resp::encode::Proto::Resp2 => out.extend_from_slice(b"*-1\r\n"),
                crate::redis::resp::encode::Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
            }
            self.push_reply(out.freeze());
            return Ok(Flow::Continue);
        }
        let mut batch = match tx.client {
            true => {
                let name = self.state.name.clone().unwrap_or_default();
                link::command(&[b"CLIENT", b"SETNAME", &name])
            }
            false => BytesMut::new(),
        };
        batch.extend_from_slice(&link::command(&[b"MULTI"]));
        batch.extend_from_slice(&tx.queued);
        batch.extend_from_slice(&link::command(&[b"EXEC"]));
        // a pause queued may be in effect from now, until EXEC's reply says
        let sent = (tx.pauses.iter())
            .filter_map(|(_, p)| match p {
                Pause::Pause(ms, all) => Some((*ms, *all)),
                Pause::Unpause => None,
            })
            .reduce(|(a, all_a), (b, all_b)| (a.max(b), all_a || all_b))
            .map(|(ms, all)| self.svc.pauses.tentative(ms, all));
        // MULTI's +OK and each +QUEUED come first; EXEC's reply is the last
        self.on_link(slot, &batch).await?;
        if tx.client {
            self.link_reply().await?; // MULTI's, after SETNAME's
        }
        let mut refused = None;
        for n in 1..=tx.count {
            let queued = self.link_reply().await?;
            if refused.is_none() {
                refused = link::error_text(&queued).map(|e| (n, e));
            }
        }
        let mut reply = self.link_reply().await?;
        if let Some(sent) = sent {
            sent.answered(false); // what Redis accepted of it is noted next
        }
        for p in accepted(&reply, &tx.pauses) {
            match *p {
                Pause::Pause(ms, all) => self.svc.pauses.accepted(ms, all),
                Pause::Unpause => self.svc.pauses.unpaused(),
            }
        }
        if let Some((n, why)) = refused.filter(|_| reply.starts_with(b"-EXECABORT")) {
            reply = refused_at_queueing(n, &why);
        }
        if let Some(l1) = &self.svc.l1 {
            if tx.flushes {
                l1.flush_all("flushall");
            }
            tx.written.iter().for_each(|k| l1.invalidate_key(k));
        }
        if let Some(heard) = super::writes::heard_after(&self.svc, tx.unlisted, slot) {
            heard.await;
        }
        if let Some(name) = last_accepted(&reply, &tx.names) {
            self.state.name = name;
            self.publish_state();
        }
        if let Some(db) = last_accepted(&reply, &tx.selects) {
            // the link is in that database now; the session follows (a new link for it)
            let mut next = self.state.clone();
            next.db = db;
            self.switch(next).await?;
        }
        self.push_reply(reply);
        Ok(Flow::Continue)
    }

    /// SUBSCRIBE and friends: send on the link, then pipe the client to it.
    pub(super) async fn subscribe(&mut self, spec: &Spec, req: &Request) -> Result<Flow, Error> {
        let keys = keys_of(spec, &req.args);
        let slot = match common_slot(&keys) {
            Ok(s) => s,
            Err(e) if self.svc.backend.cluster => {
                self.push_error(&e);
                return Ok(Flow::Continue);
            }
            Err(_) => None,
        };
        let name = self.state.name.clone();
        let link = self.link_for(slot).await?;
        if let Some(name) = name {
            // from here on the link answers CLIENT GETNAME/LIST itself: it carries the name
            // the client gave Pake (ioredis names its connection, then subscribes)
            link.call_ok(&[b"CLIENT", b"SETNAME", &name]).await?;
        }
        link.send(&Self::encoded(req)).await?;
        if let Some(opening) = self.opening.take() {
            // Redis answers a subscription's first channel once it holds them all: from
            // here a publish finds it (pubsub.rs)
            let confirmed = self.link_reply().await;
            drop(opening);
            match confirmed {
                Ok(reply) => self.push_reply(reply),
                Err(e) => {
                    self.link = None;
                    return Err(e);
                }
            }
        }
        Ok(Flow::Pipe)
    }
}

/// EXECABORT for a transaction Redis refused to queue a command of (READONLY, NOPERM, OOM…).
/// The client was answered `+QUEUED` by Pake, so Redis's own refusal of the `n`th command
/// (1-based) is named in the abort, which directly has it as that command's reply.
fn refused_at_queueing(n: usize, why: &str) -> Bytes {
    let why: String = why.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    Bytes::from(format!(
        "-EXECABORT Transaction discarded because of previous errors: queued command {n}: {why}\r\n"
    ))
}

/// What a transaction's SELECTs (or SETNAMEs) left the client with: the value of the last of
/// them whose element of EXEC's reply is `+OK` (`None`: none ran, or EXEC answered nil or an
/// error).
fn last_accepted<T: Clone>(reply: &[u8], selects: &[(usize, T)]) -> Option<T> {
    accepted(reply, selects).last().map(|d| (*d).clone())
}

/// The values of `entries` (queue positions, in order) whose element of EXEC's reply is
/// `+OK`, in order (none: EXEC answered nil or an error).
fn accepted<'a, T>(reply: &[u8], entries: &'a [(usize, T)]) -> Vec<&'a T> {
    let mut ok = Vec::new();
    let Some(last) = entries.last().filter(|_| reply.starts_with(b"*")) else {
        return ok;
    };
    let limits = crate::redis::resp::Limits::backend();
    let Some(mut pos) = reply.iter().position(|&b| b == b'\n').map(|p| p + 1) else {
        return ok;
    };
    for index in 0..=last.0 {
        let Ok(Some(end)) = crate::redis::resp::scan(reply, pos, &limits) else {
            break;
        };
        if reply[pos..end].starts_with(b"+OK") {
            ok.extend(
                entries
                    .iter()
                    .filter(|(at, _)| *at == index)
                    .map(|(_, d)| d),
            );
        }
        pos = end;
    }
    ok
}

/// A queued `CLIENT PAUSE` (its timeout in milliseconds, whether it holds every command)
/// or `CLIENT UNPAUSE`.
#[derive(Clone, Copy)]
enum Pause {
    Pause(u64, bool),
    Unpause,
}

impl Pause {
    fn of(args: &[Bytes]) -> Option<Pause> {
        if super::client::is_pause(args) {
            let (ms, all) = crate::redis::pause::parse(args)?;
            return Some(Pause::Pause(ms, all));
        }
        let unpause = args.len() == 2 && args[1].eq_ignore_ascii_case(b"unpause");
        unpause.then_some(Pause::Unpause)
    }
}

/// The client hung up.
fn client_gone() -> Error {
    Error::ClientIo(std::io::ErrorKind::UnexpectedEof.into())
}

#[cfg(test)]
mod tests {
    use super::last_accepted;

    #[test]
    fn the_last_select_exec_accepted_moves_the_client() {
        let reply = b"*4\r\n+OK\r\n$1\r\nx\r\n*1\r\n:1\r\n+OK\r\n";
        assert_eq!(last_accepted(reply, &[(0, 1), (3, 2)]), Some(2));
        let refused = b"*2\r\n+OK\r\n-ERR DB index is out of range\r\n";
        assert_eq!(last_accepted(refused, &[(0, 1), (1, 99)]), Some(1));
        assert_eq!(last_accepted(b"*-1\r\n", &[(0, 1)]), None, "WATCH fired");
        assert_eq!(last_accepted(b"_\r\n", &[(0, 1)]), None);
        assert_eq!(last_accepted(b"-EXECABORT x\r\n", &[(0, 1)]), None);
        assert_eq!(last_accepted::<u8>(b"*1\r\n+OK\r\n", &[]), None);
    }
}
