//! Connection commands answered by Pake from session state: HELLO, AUTH, SELECT, RESET and
//! the CLIENT subcommands about this connection. Credentials are never judged here: AUTH
//! (and HELLO … AUTH) log a backend pool in as that user, and Redis's verdict is the reply.

use super::{Flow, Session};
use crate::redis::backend::link::{self, Link};
use crate::redis::commands::Spec;
use crate::redis::error::Error;
use crate::redis::resp::{encode, encode::Proto, Request};
use bytes::{Bytes, BytesMut};

/// Redis's answer to a HELLO without AUTH from a client that has not logged in.
const NOAUTH_HELLO: &str = "NOAUTH HELLO must be called with the client already \
    authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to \
    authenticate the client and select the RESP protocol version at the same time";

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Session {
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`
    pub(super) async fn hello(&mut self, args: &[Bytes]) -> Result<Flow, Error> {
        let mut next = self.state.clone();
        if let Some(v) = args.get(1) {
            next.proto = match &v[..] {
                b"2" => Proto::Resp2,
                b"3" => Proto::Resp3,
                _ => {
                    self.push_reply(Bytes::from_static(
                        b"-NOPROTO unsupported protocol version\r\n",
                    ));
                    return Ok(Flow::Continue);
                }
            };
        }
        let mut i = 2;
        while i < args.len() {
            let opt = &args[i];
            if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
                next.auth = Some((text(&args[i + 1]), text(&args[i + 2])));
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
                // a copy: kept for the connection's life, a slice would pin the read buffer
                next.name = Some(Bytes::copy_from_slice(&args[i + 1]));
                i += 2;
            } else {
                return Err(Error::Syntax("ERR Syntax error in HELLO option"));
            }
        }
        if self.svc.auth_required && next.auth.is_none() {
            return Err(Error::Refused(NOAUTH_HELLO.into()));
        }
        self.switch(next).await?;
        let mut out = BytesMut::new();
        let p = self.state.proto;
        encode::map(&mut out, 7, p);
        let mode = if self.svc.backend.cluster {
            "cluster"
        } else {
            "standalone"
        };
        encode::bulk(&mut out, b"server");
        encode::bulk(&mut out, b"redis");
        encode::bulk(&mut out, b"version");
        encode::bulk(&mut out, self.svc.backend.version.as_bytes());
        encode::bulk(&mut out, b"proto");
        encode::int(&mut out, if p == Proto::Resp3 { 3 } else { 2 });
        encode::bulk(&mut out, b"id");
        encode::int(&mut out, self.id as i64);
        encode::bulk(&mut out, b"mode");
        encode::bulk(&mut out, mode.as_bytes());
        encode::bulk(&mut out, b"role");
        encode::bulk(&mut out, b"master");
        encode::bulk(&mut out, b"modules");
        encode::array(&mut out, 0);
        self.push_reply(out.freeze());
        Ok(Flow::Continue)
    }

    /// `AUTH [user] password`
    pub(super) async fn auth(&mut self, args: &[Bytes]) -> Result<Flow, Error> {
        let (user, pass) = match args {
            [_, pass] => {
                // a Redis without a password refuses the one-argument form, which Pake's
                // pool login (as `default`) would accept: Redis gives its verdict first
                if let Some(refusal) = self.auth_verdict(args).await? {
                    self.push_reply(refusal);
                    return Ok(Flow::Continue);
                }
                ("default".to_string(), text(pass))
            }
            [_, user, pass] => (text(user), text(pass)),
            _ => return Err(Error::Syntax("ERR syntax error")),
        };
        let mut next = self.state.clone();
        next.auth = Some((user, pass));
        self.switch(next).await?;
        self.push_reply(Bytes::from_static(b"+OK\r\n"));
        Ok(Flow::Continue)
    }

    /// Send the client's own AUTH to Redis on a fresh, unauthenticated link: Redis's error
    /// reply when it refuses, `None` when it accepts.
    async fn auth_verdict(&mut self, args: &[Bytes]) -> Result<Option<Bytes>, Error> {
        let addr = self
            .svc
            .backend
            .node_for(None)
            .ok_or_else(|| Error::Backend("no primary known".into()))?;
        let mut target = self.svc.backend.target(addr, &self.state.pool_key());
        (target.username, target.password, target.db) = (None, None, 0);
        target.proto = Proto::Resp2;
        let mut link = Link::connect(&target).await?;
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        let reply = link.call(&argv).await?;
        Ok(link::error_text(&reply).is_some().then_some(reply))
    }

    pub(super) async fn select(&mut self, args: &[Bytes]) -> Result<Flow, Error> {
        // Redis's checks in its order: an integer, then cluster mode, then the range
        let index = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
            .ok_or(Error::Syntax("ERR value is not an integer or out of range"))?;
        if self.svc.backend.cluster && index != 0 {
            return Err(Error::Syntax("ERR SELECT is not allowed in cluster mode"));
        }
        let db = u8::try_from(index).map_err(|_| Error::Syntax("ERR DB index is out of range"))?;
        let mut next = self.state.clone();
        next.db = db;
        self.switch(next).await?;
        self.push_reply(Bytes::from_static(b"+OK\r\n"));
        Ok(Flow::Continue)
    }

    pub(super) async fn reset(&mut self) -> Result<Flow, Error> {
        self.reply_mode = super::ReplyMode::On;
        self.tx = None;
        self.link = None;
        self.watch_slot = None;
        let next = super::ClientState {
            proto: Proto::Resp2,
            db: self.svc.backend.default_db(),
            auth: None,
            user_id: 0,
            name: None,
        };
        self.switch(next).await?;
        self.push_reply(Bytes::from_static(b"+RESET\r\n"));
        Ok(Flow::Continue)
    }

    /// Move the session to the pool of `next`'s (user, db, protocol); the login is checked
    /// by Redis when that pool connects. Links opened for the old identity are dropped.
    pub(super) async fn switch(&mut self, mut next: super::ClientState) -> Result<(), Error> {
        next.user_id = self
            .svc
            .user_id(next.auth.as_ref().map(|(u, _)| u.as_str()));
        let key = next.pool_key();
        self.bind(&key).await.map_err(|e| match e {
            // Redis's own words (WRONGPASS…, NOAUTH…) reach the client as they are
            Error::Backend(msg) => Error::Refused(msg),
            other => other,
        })?;
        if next.pool_key() != self.state.pool_key() {
            // a WATCH outlives a SELECT in Redis: its link moves to the new db with the
            // client instead of being dropped (EXEC then always answered nil)
            let keep = self.watch_slot.is_some()
                && self.link.is_some()
                && next.auth == self.state.auth
                && next.proto == self.state.proto;
            let moved = keep && {
                let select = link::command(&[b"SELECT", next.db.to_string().as_bytes()]);
                matches!(self.on_link(None, &select).await, Ok(r) if r.starts_with(b"+OK"))
            };
            if !moved {
                self.link = None;
            }
        }
        self.state = next;
        self.publish_state();
        Ok(())
    }

    /// Other CLIENT subcommands (LIST, INFO, KILL…) go to Redis as they are.
    pub(super) async fn client_forward(
        &mut self,
        spec: &'static Spec,
        req: Request,
    ) -> Result<Flow, Error> {
        self.shared(spec, req);
        Ok(Flow::Continue)
    }
}
