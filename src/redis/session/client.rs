//! `CLIENT …` answered for Pake's own client connection, and `MONITOR`.
//!
//! Redis only sees Pake's pooled connections, so every CLIENT subcommand about connections
//! (ID, SETNAME/GETNAME, SETINFO, LIST, INFO, KILL, NO-EVICT, NO-TOUCH, GETREDIR) is
//! answered from the [`crate::redis::clients`] registry in Redis's formats. PAUSE, UNPAUSE
//! and HELP go to Redis (they are about the server; UNPAUSE on a connection of its own,
//! [`super::rescue`]). TRACKING/CACHING/REPLY/UNBLOCK are
//! refused with the reason: Pake keeps its own cache coherent and cannot act on a client's
//! blocked server connection by id.

use super::Session;
use crate::redis::backend::link::{Link, Target};
use crate::redis::clients::{Entry, Filter};
use crate::redis::commands::Kind;
use crate::redis::error::Error;
use crate::redis::resp::encode::{self, Proto};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CLIENT subcommands that Redis answers about the server, not the connection.
const FORWARDED: [&[u8]; 3] = [b"PAUSE", b"UNPAUSE", b"HELP"];

/// Whether `CLIENT <sub>` is answered by Pake (everything but [`FORWARDED`]).
pub fn is_local(args: &[Bytes]) -> bool {
    args.get(1).is_some_and(|s| {
        !FORWARDED.iter().any(|f| s.eq_ignore_ascii_case(f)) && !s.eq_ignore_ascii_case(b"unblock")
    })
}

/// `CLIENT PAUSE …`: sent to every primary, and known to be in effect from then on.
pub fn is_pause(args: &[Bytes]) -> bool {
    args.get(1)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"pause"))
}

/// `CLIENT UNBLOCK …`: answered by Pake, after asking Redis (a barrier command).
pub fn is_unblock(args: &[Bytes]) -> bool {
    args.get(1)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"unblock"))
}

/// How long `CLIENT UNBLOCK` waits for a client whose blocking command has arrived but is not
/// yet blocked at Redis.
const UNBLOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

fn wrong_args(sub: &str) -> String {
    format!("ERR wrong number of arguments for 'client|{sub}' command")
}

/// A text reply as Redis sends CLIENT LIST/INFO: bulk in RESP2, verbatim `txt` in RESP3.
fn text_reply(out: &mut BytesMut, text: &str, proto: Proto) {
    match proto {
        Proto::Resp2 => encode::bulk(out, text.as_bytes()),
        Proto::Resp3 => {
            out.extend_from_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl Session {
    /// The registry entry of this client.
    pub fn entry(&self) -> std::sync::Arc<Entry> {
        self.reg.entry.clone()
    }

    /// Mirror the session's state into its registry entry (after HELLO/AUTH/SELECT…).
    pub(super) fn publish_state(&self) {
        let s = &self.state;
        self.reg.entry.update(|i| {
            i.name = s.name.clone();
            i.db = s.db;
            i.resp = if s.proto == Proto::Resp3 { 3 } else { 2 };
            i.user = s.auth.as_ref().map(|(u, _)| u.clone());
        });
    }

    /// `CLIENT <sub> …` for this connection, answered at once.
    pub(super) fn client_local(&mut self, args: &[Bytes]) {
        let sub = args
            .get(1)
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .unwrap_or_default();
        let mut out = BytesMut::new();
        let p = self.state.proto;
        match (sub.as_str(), args.len()) {
            ("id", 2) => encode::int(&mut out, self.id as i64),
            ("getname", 2) => match &self.state.name {
                Some(n) => encode::bulk(&mut out, n),
                None => encode::null(&mut out, p),
            },
            ("setname", 3) => {
                if args[2].iter().any(|b| *b <= b' ' || *b > b'~') {
                    encode::error(
                        &mut out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    // a copy: kept for the connection's life, a slice of the read buffer
                    // would keep all of that buffer alive
                    self.state.name =
                        (!args[2].is_empty()).then(|| Bytes::copy_from_slice(&args[2]));
                    self.publish_state();
                    encode::simple(&mut out, "OK");
                }
            }
            ("setinfo", 4) => self.setinfo(&mut out, &args[2], &args[3]),
            ("list", _) => self.client_list(&mut out, &args[2..]),
            ("info", 2) => text_reply(
                &mut out,
                &format!("{}\n", self.reg.entry.line("client|info")),
                p,
            ),
            ("kill", n) if n >= 3 => self.client_kill(&mut out, &args[2..]),
            ("no-evict" | "no-touch", 3) => match &args[2].to_ascii_lowercase()[..] {
                b"on" | b"off" => encode::simple(&mut out, "OK"),
                _ => encode::error(&mut out, "ERR syntax error"),
            },
            ("getredir", 2) => encode::int(&mut out, self.getredir()),
            ("tracking", n) if n >= 3 => self.client_tracking(&mut out, args),
            ("caching", 3) => self.client_caching(&mut out, &args[2]),
            ("trackinginfo", 2) => self.tracking_info(&mut out),
            ("reply", 3) => match &args[2].to_ascii_lowercase()[..] {
                b"on" => {
                    self.reply_mode = super::ReplyMode::On;
                    encode::simple(&mut out, "OK");
                }
                // no reply to these themselves
                b"off" => self.reply_mode = super::ReplyMode::Off,
                b"skip" => {
                    if self.reply_mode == super::ReplyMode::On {
                        self.reply_mode = super::ReplyMode::Skip;
                    }
                }
                _ => encode::error(&mut out, "ERR syntax error"),
            },
            (
                "id" | "getname" | "setname" | "setinfo" | "info" | "kill" | "no-evict"
                | "no-touch" | "getredir" | "reply" | "tracking" | "caching" | "trackinginfo",
                _,
            ) => encode::error(&mut out, &wrong_args(&sub)),
            _ => encode::error(
                &mut out,
                &format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP."),
            ),
        }
        self.push_reply(out.freeze());
    }

    fn setinfo(&mut self, out: &mut BytesMut, attr: &Bytes, value: &Bytes) {
        if value.iter().any(|b| *b <= b' ' || *b > b'~') {
            let a = String::from_utf8_lossy(attr).to_ascii_lowercase();
            encode::error(
                out,
                &format!("ERR {a} cannot contain spaces, newlines or special characters."),
            );
            return;
        }
        // a copy: kept for the connection's life, a slice would pin the read buffer
        let v = (!value.is_empty()).then(|| Bytes::copy_from_slice(value));
        match &attr.to_ascii_lowercase()[..] {
            b"lib-name" => self.reg.entry.update(|i| i.lib_name = v),
            b"lib-ver" => self.reg.entry.update(|i| i.lib_ver = v),
            _ => {
                let a = String::from_utf8_lossy(attr);
                encode::error(out, &format!("ERR Unrecognized option '{a}'"));
                return;
            }
        }
        encode::simple(out, "OK");
    }

    /// `CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id …]`
    fn client_list(&self, out: &mut BytesMut, opts: &[Bytes]) {
        let mut filter = Filter::default();
        let mut ids: Option<Vec<u64>> = None;
        match opts {
            [] => {}
            [t, kind] if t.eq_ignore_ascii_case(b"TYPE") => {
                let k = String::from_utf8_lossy(kind).to_ascii_lowercase();
                if !["normal", "pubsub", "master", "replica", "slave"].contains(&k.as_str()) {
                    return encode::error(out, &format!("ERR Unknown client type '{k}'"));
                }
                filter.kind = Some(k);
            }
            [t, rest @ ..] if t.eq_ignore_ascii_case(b"ID") && !rest.is_empty() => {
                let parsed: Option<Vec<u64>> = rest
                    .iter()
                    .map(|r| parse_u64(r).filter(|n| *n > 0))
                    .collect();
                match parsed {
                    Some(v) => ids = Some(v),
                    None => return encode::error(out, "ERR Invalid client ID"),
                }
            }
            _ => return encode::error(out, "ERR syntax error"),
        }
        let mut text = String::new();
        for e in self.svc.registry.list() {
            let chosen = match &ids {
                Some(ids) => ids.contains(&e.id),
                None => filter.matches(&e),
            };
            if chosen {
                let cmd = if e.id == self.id {
                    "client|list".into()
                } else {
                    e.command()
                };
                text.push_str(&e.line(&cmd));
                text.push('\n');
            }
        }
        text_reply(out, &text, self.state.proto);
    }

    /// `CLIENT KILL ip:port` (old form) or `CLIENT KILL <filter> <value> …`.
    fn client_kill(&mut self, out: &mut BytesMut, opts: &[Bytes]) {
        if let [addr] = opts {
            let filter = Filter {
                addr: Some(String::from_utf8_lossy(addr).into_owned()),
                ..Filter::default()
            };
            let own = self.reg.entry.addr.map(|a| a.to_string()) == filter.addr;
            // the old form kills the caller too, after its reply
            match self.svc.registry.kill(&filter, Some(self.id)) + usize::from(own) {
                0 => encode::error(out, "ERR No such client"),
                _ => {
                    self.close_after |= own;
                    encode::simple(out, "OK")
                }
            }
            return;
        }
        let (filter, skipme) = match parse_kill(opts) {
            Ok(f) => f,
            Err(e) => return encode::error(out, &e),
        };
        let own = !skipme && filter.matches(&self.reg.entry);
        let n = self.svc.registry.kill(&filter, Some(self.id)) + usize::from(own);
        self.close_after |= own;
        encode::int(out, n as i64);
    }

    /// MONITOR: `+OK`, then every command passing through Pake as Redis's MONITOR lines,
    /// until the client hangs up, sends QUIT/RESET, or falls too far behind.
    pub(super) async fn monitor(&mut self) -> Result<super::Flow, Error> {
        if let Some(refusal) = self.monitor_refused().await? {
            self.push_reply(refusal);
            return Ok(super::Flow::Continue);
        }
        let mut feed = self.svc.registry.monitor(self.id);
        self.reg.entry.update(|i| i.flag = 'O');
        let mut out = std::mem::take(&mut self.wbuf);
        out.extend_from_slice(b"+OK\r\n");
        let result = async {
            self.write_out(&out).await?;
            loop {
                self.rbuf.reserve(1024);
                tokio::select! {
                    line = feed.rx.recv() => match line {
                        Some(line) => {
                            self.write_out(&line).await?;
                            feed.written(line.len());
                        }
                        None if feed.was_dropped() => {
                            let msg = format!(
                                "-ERR MONITOR dropped by Pake: this client fell more than {} bytes behind the commands it watches\r\n",
                                self.svc.registry.monitor_budget
                            );
                            self.write_out(msg.as_bytes()).await?;
                            return Ok(super::Flow::Close);
                        }
                        None => return Ok(super::Flow::Close),
                    },
                    r = self.client.read_buf(&mut self.rbuf) => {
                        if r.map_err(Error::ClientIo)? == 0 {
                            // the client hung up (ioredis half-closes): nothing to answer
                            return Ok(super::Flow::Close);
                        }
                        match ends_monitor(&self.rbuf) {
                            Some(End::Quit) => {
                                let _ = self.client.write_all(b"+OK\r\n").await;
                                return Ok(super::Flow::Close);
                            }
                            // the connection goes on as a new one (Redis's own suite,
                            // unit/introspection): RESET is answered by the usual path
                            Some(End::Reset) => {
                                self.rbuf.clear();
                                self.rbuf.extend_from_slice(b"*1\r\n$5\r\nRESET\r\n");
                                self.reg.entry.update(|i| i.flag = 'N');
                                return Ok(super::Flow::Continue);
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        .await;
        self.svc.registry.unmonitor(self.id);
        result
    }
}

impl Session {
    /// `CLIENT UNBLOCK <id> [TIMEOUT|ERROR]`, `id` one of Pake's clients: its blocking
    /// command waits on a dedicated link whose Redis id it noted, and Redis unblocks that
    /// (asked as this client's own user: Redis's ACLs decide). `:0` when it is not blocked.
    pub(super) async fn unblock(&mut self, args: &[Bytes]) -> Result<super::Flow, Error> {
        if !(3..=4).contains(&args.len()) {
            return Err(Error::Arity("client|unblock".into()));
        }
        let id = parse_u64(&args[2])
            .ok_or(Error::Syntax("ERR value is not an integer or out of range"))?;
        let mode: &[u8] = match args.get(3).map(|m| m.to_ascii_uppercase()) {
            None => b"TIMEOUT",
            Some(m) if m == b"TIMEOUT" => b"TIMEOUT",
            Some(m) if m == b"ERROR" => b"ERROR",
            Some(_) => {
                return Err(Error::Syntax(
                    "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
                ))
            }
        };
        // CLIENT LIST shows a blocking command from the moment it arrives, but it reaches
        // Redis only after its dedicated link is ready (and named: `blocked_on`) and the
        // command is sent: a client seen blocking is waited for, briefly, as Redis would
        // have it blocked already
        let deadline = tokio::time::Instant::now() + UNBLOCK_WAIT;
        let mut link: Option<Link> = None;
        let reply = loop {
            let target = self.svc.registry.get(id);
            let on_its_way = target
                .as_ref()
                .and_then(|e| e.last_spec())
                .is_some_and(|s| matches!(s.kind, Kind::Blocking | Kind::StreamRead));
            let reply = match target.and_then(|e| e.info().blocked_on) {
                Some((addr, redis_id)) => {
                    // one connection for the retries, while the link stays on one node
                    let l = match &mut link {
                        Some(l) if l.addr == addr => l,
                        _ => link.insert(Link::connect(&self.own_target(Some(addr))?).await?),
                    };
                    let rid = redis_id.to_string();
                    l.call(&[b"CLIENT", b"UNBLOCK", rid.as_bytes(), mode])
                        .await?
                }
                None => Bytes::from_static(b":0\r\n"),
            };
            if &reply[..] != b":0\r\n" || !on_its_way || tokio::time::Instant::now() >= deadline {
                break reply;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        };
        self.push_reply(reply);
        Ok(super::Flow::Continue)
    }

    /// Redis's ACLs decide who may watch every command (MONITOR is in @admin): the client's
    /// own user asks Redis on a connection of its own, closed at once. The refusal
    /// (`-NOPERM …`) as Redis wrote it, or `None` when Redis let it monitor.
    async fn monitor_refused(&mut self) -> Result<Option<Bytes>, Error> {
        let mut link = Link::connect(&self.own_target(None)?).await?;
        let reply = link.call(&[b"MONITOR"]).await?;
        Ok(reply.starts_with(b"-").then_some(reply))
    }

    /// Where a connection of its own goes, to `addr` (or the primary), logged in as this
    /// client is: for a question Redis must answer with this client's permissions.
    pub(super) fn own_target(&self, addr: Option<String>) -> Result<Target, Error> {
        let addr = match addr {
            Some(a) => a,
            None => (self.svc.backend.node_for(None))
                .ok_or_else(|| Error::Backend("no primary known".into()))?,
        };
        Ok(self.svc.backend.target(addr, &self.state.pool_key()))
    }
}

/// `CLIENT REPLY …` and `RESET` are answered by their own rules, whatever the reply mode
/// (RESET turns replies back on and says so).
pub(super) fn answers_regardless(args: &[Bytes]) -> bool {
    args.first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"reset"))
        || is_reply(args)
}

/// A (un)subscription, whose confirmations Redis writes as pushes (RESP2: as its pub/sub
/// arrays), which `CLIENT REPLY OFF|SKIP` does not silence (its own suite, unit/pubsub).
pub(super) fn is_subscription(args: &[Bytes]) -> bool {
    let table = crate::redis::commands::Table::get();
    (args.first().and_then(|name| table.lookup(name)))
        .is_some_and(|spec| spec.kind == Kind::Subscribe)
}

/// `CLIENT REPLY …`.
pub(super) fn is_reply(args: &[Bytes]) -> bool {
    args.first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"client"))
        && args
            .get(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"reply"))
}

/// A monitor client's input that ends the monitor (QUIT or RESET).
/// How a MONITOR ends: the connection closes, or goes on reset.
enum End {
    Quit,
    Reset,
}

fn ends_monitor(buf: &[u8]) -> Option<End> {
    let lower = buf.to_ascii_lowercase();
    if lower.windows(4).any(|w| w == b"quit") {
        Some(End::Quit)
    } else if lower.windows(5).any(|w| w == b"reset") {
        Some(End::Reset)
    } else {
        None
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The new form's `<filter> <value>` pairs, and SKIPME (default yes).
fn parse_kill(opts: &[Bytes]) -> Result<(Filter, bool), String> {
    if opts.len() % 2 != 0 {
        return Err("ERR syntax error".into());
    }
    let mut f = Filter::default();
    let mut skipme = true;
    for pair in opts.chunks(2) {
        let v = String::from_utf8_lossy(&pair[1]).into_owned();
        match &pair[0].to_ascii_lowercase()[..] {
            b"id" => match parse_u64(&pair[1]).filter(|n| *n > 0) {
                Some(id) => f.id = Some(id),
                None => return Err("ERR client-id should be greater than 0".into()),
            },
            b"addr" => f.addr = Some(v),
            b"laddr" => f.laddr = Some(v),
            b"user" => f.user = Some(v),
            b"maxage" => f.max_age = Some(parse_u64(&pair[1]).ok_or("ERR syntax error")?),
            b"type" => {
                let k = v.to_ascii_lowercase();
                if !["normal", "pubsub", "master", "replica", "slave"].contains(&k.as_str()) {
                    return Err(format!("ERR Unknown client type '{v}'"));
                }
                f.kind = Some(k);
            }
            b"skipme" => match &pair[1].to_ascii_lowercase()[..] {
                b"yes" => skipme = true,
                b"no" => skipme = false,
                _ => return Err("ERR syntax error".into()),
            },
            _ => return Err("ERR syntax error".into()),
        }
    }
    Ok((f, skipme))
}
