//! Connection commands answered by Pake from session state: HELLO, AUTH, SELECT, RESET and
//! the CLIENT subcommands about this connection. Credentials are never judged here: AUTH
//! (and HELLO … AUTH) log a backend pool in as that user, and Redis's verdict is the reply.

use super::{Flow, Session};
use crate::redis::commands::Spec;
use crate::redis::error::Error;
use crate::redis::resp::{encode, encode::Proto, Request};
use bytes::{Bytes, BytesMut};

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
                next.name = Some(args[i + 1].clone());
                i += 2;
            } else {
                return Err(Error::Syntax("ERR Syntax error in HELLO option"));
            }
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
            [_, pass] => ("default".to_string(), text(pass)),
            [_, user, pass] => (text(user), text(pass)),
            _ => return Err(Error::Syntax("ERR syntax error")),
        };
        let mut next = self.state.clone();
        next.auth = Some((user, pass));
        self.switch(next).await?;
        self.push_reply(Bytes::from_static(b"+OK\r\n"));
        Ok(Flow::Continue)
    }

    pub(super) async fn select(&mut self, args: &[Bytes]) -> Result<Flow, Error> {
        let db = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|d| d.parse::<u8>().ok())
            .ok_or(Error::Syntax("ERR DB index is out of range"))?;
        if self.svc.backend.cluster && db != 0 {
            return Err(Error::Syntax("ERR SELECT is not allowed in cluster mode"));
        }
        let mut next = self.state.clone();
        next.db = db;
        self.switch(next).await?;
        self.push_reply(Bytes::from_static(b"+OK\r\n"));
        Ok(Flow::Continue)
    }

    pub(super) async fn reset(&mut self) -> Result<Flow, Error> {
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
    async fn switch(&mut self, mut next: super::ClientState) -> Result<(), Error> {
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
            self.link = None;
        }
        self.state = next;
        Ok(())
    }

    /// CLIENT SETNAME/GETNAME/ID from session state; TRACKING and REPLY refused.
    pub(super) fn client_local(&mut self, args: &[Bytes]) {
        let sub = args
            .get(1)
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        let mut out = BytesMut::new();
        match &sub[..] {
            b"SETNAME" | b"SETINFO" if args.len() != 3 + usize::from(&sub[..] == b"SETINFO") => {
                encode::error(&mut out, "ERR wrong number of arguments for 'client' command");
            }
            b"SETNAME" => {
                if args[2].iter().any(|b| *b <= b' ') {
                    encode::error(&mut out, "ERR Client names cannot contain spaces, newlines or special characters.");
                } else {
                    self.state.name = (!args[2].is_empty()).then(|| args[2].clone());
                    encode::simple(&mut out, "OK");
                }
            }
            b"SETINFO" => encode::simple(&mut out, "OK"),
            b"GETNAME" => match &self.state.name {
                Some(n) => encode::bulk(&mut out, n),
                None => encode::null(&mut out, self.state.proto),
            },
            b"ID" => encode::int(&mut out, self.id as i64),
            _ => encode::error(
                &mut out,
                "ERR CLIENT TRACKING and CLIENT REPLY are not supported through Pake: it keeps its own cache coherent",
            ),
        }
        self.push_reply(out.freeze());
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
