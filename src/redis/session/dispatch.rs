//! Step 2 of the request path: classify one command with the table and start it.
//!
//! Commands answered from local state or the L1 get their reply queued at once; shared-path
//! commands become futures queued in order; commands that must run alone are deferred as a
//! barrier. Inside MULTI, commands are checked (arity, CROSSSLOT) and queued for EXEC.

use super::{Done, Flow, Session};
use crate::redis::commands::{Kind, Spec, Table, PUBLISHES, SUBSCRIBES, WRITE};
use crate::redis::error::Error;
use crate::redis::pubsub::Openings;
use crate::redis::resp::{encode, Request};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// The single slot all `keys` hash to: `Ok(None)` for none, `CROSSSLOT` when they differ.
pub fn common_slot(keys: &[&Bytes]) -> Result<Option<u16>, Error> {
    let mut slot = None;
    for k in keys {
        let s = crate::redis::commands::slot(k);
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => return Err(Error::CrossSlot),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// The key arguments of a command.
pub fn keys_of<'a>(spec: &Spec, args: &'a [Bytes]) -> Vec<&'a Bytes> {
    spec.key_positions(args)
        .into_iter()
        .filter_map(|i| args.get(i))
        .collect()
}

impl Session {
    /// Apply an injected fault to this command; `true` when the fault answered it.
    fn inject_fault(&mut self, command: &str) -> bool {
        self.bandwidth = None;
        if self.svc.faults.list_is_empty() {
            return false;
        }
        let target = crate::faults::Target {
            redis_command: Some(command),
            ..crate::faults::Target::default()
        };
        let Some(fault) = self.svc.faults.pick(&target) else {
            return false;
        };
        use crate::faults::FaultKind;
        match &fault.spec.kind {
            FaultKind::Error {
                redis_error,
                message,
                ..
            } => {
                let text = redis_error
                    .clone()
                    .or_else(|| message.clone().map(|m| format!("ERR {m}")))
                    .unwrap_or_else(|| "ERR injected fault (Pake fault injection)".into());
                let mut out = BytesMut::new();
                encode::error(&mut out, &text);
                self.push_reply(out.freeze());
                true
            }
            FaultKind::Reset => {
                self.reset_now = true;
                true
            }
            FaultKind::Latency { millis } => {
                // a reply-less delay queued ahead of the command's own reply
                let d = std::time::Duration::from_millis(*millis);
                self.push_future(
                    async move {
                        tokio::time::sleep(d).await;
                        Done {
                            reply: Bytes::new(),
                            write: false,
                        }
                    },
                    None,
                );
                false
            }
            FaultKind::Bandwidth { bytes_per_second } => {
                self.bandwidth = Some(*bytes_per_second);
                false
            }
        }
    }

    /// Answer a command with `e` before it runs or is queued. Inside MULTI the transaction
    /// is aborted too: Redis answers EXEC with EXECABORT after any error while queueing, and
    /// running the rest would apply part of what the client meant as one.
    fn refuse(&mut self, e: &Error) {
        if let Some(tx) = self.tx.as_mut() {
            tx.abort();
        }
        self.push_error(e);
    }

    pub(super) fn dispatch(&mut self, req: Request) {
        let Some(name) = req.args.first() else {
            return;
        };
        if !self.svc.within_rate(self.reg.entry.addr) {
            let rate = self.svc.config.rate_limit_per_address;
            self.refuse(&Error::RateLimited { rate });
            return;
        }
        let Some(spec) = Table::get().lookup(name) else {
            self.refuse(&Error::unknown(&req.args));
            return;
        };
        if !spec.arity_ok(req.args.len()) {
            self.refuse(&Error::Arity(String::from_utf8_lossy(name).to_lowercase()));
            return;
        }
        if self.svc.auth_required
            && self.state.auth.is_none()
            && !matches!(
                spec.kind,
                Kind::Auth | Kind::Hello | Kind::Reset | Kind::Quit
            )
        {
            // Redis's order: unknown and arity errors first, then the login
            self.refuse(&Error::Refused("NOAUTH Authentication required.".into()));
            return;
        }
        self.reg.entry.set_command(spec.id);
        if self.tracking.is_some() {
            self.track(spec, &req.args);
        }
        if self.svc.registry.monitoring() {
            self.svc
                .registry
                .feed(&self.reg.entry, self.state.db, &req.args);
        }
        if self.inject_fault(spec.name) {
            if let Some(tx) = self.tx.as_mut() {
                tx.abort(); // an injected error stands for a refused command
            }
            return;
        }
        if let (Some(_), Kind::Unsupported(why)) = (&self.tx, spec.kind) {
            // never queued for Redis to run what Pake refuses outside MULTI
            self.refuse(&Error::Unsupported {
                name: spec.name,
                why,
            });
            return;
        }
        if self.tx.is_some() && super::client::is_reply(&req.args) {
            // queued, it would turn off the replies of Pake's link, EXEC's included
            self.refuse(&Error::Unsupported {
                name: "CLIENT REPLY inside MULTI",
                why: "it changes how the connection answers; send it outside MULTI",
            });
            return;
        }
        if self.tx.is_some()
            && !matches!(
                spec.kind,
                Kind::Exec | Kind::Discard | Kind::Multi | Kind::Watch | Kind::Quit | Kind::Reset
            )
        {
            self.queue_in_tx(spec, req);
            return;
        }
        match spec.kind {
            // Redis takes at most one message (found with its own suite, unit/protocol)
            Kind::Ping if req.args.len() > 2 => self.push_error(&Error::Arity("ping".into())),
            Kind::Ping => {
                let mut out = BytesMut::new();
                match req.args.get(1) {
                    Some(msg) => encode::bulk(&mut out, msg),
                    None => encode::simple(&mut out, "PONG"),
                }
                self.push_reply(out.freeze());
            }
            Kind::Ok if !self.svc.backend.cluster => self.push_error(&Error::Syntax(
                "ERR This instance has cluster support disabled",
            )),
            Kind::Ok => self.push_reply(Bytes::from_static(b"+OK\r\n")),
            Kind::Quit => {
                self.push_reply(Bytes::from_static(b"+OK\r\n"));
                self.close_after = true;
            }
            Kind::Unsupported(why) => self.push_error(&Error::Unsupported {
                name: spec.name,
                why,
            }),
            Kind::Multi => {
                if self.tx.is_some() {
                    self.push_error(&Error::Syntax("ERR MULTI calls can not be nested"));
                } else {
                    self.tx = Some(super::pinned::Tx::new(self.rlease.sibling()));
                    self.push_reply(Bytes::from_static(b"+OK\r\n"));
                }
            }
            Kind::Scan if self.svc.backend.cluster => self.scan_cluster(req),
            // after a subscription still being opened: it waits as a barrier (pubsub.rs)
            Kind::Plain if spec.is(PUBLISHES) && self.svc.subscriptions.busy() => {
                self.deferred = Some(req)
            }
            Kind::Subscribe if spec.is(SUBSCRIBES) => {
                self.opening = Some(self.svc.subscriptions.opening());
                self.deferred = Some(req)
            }
            // a write read while a blocking command is still being opened follows it
            Kind::Plain | Kind::Split(_) | Kind::Broadcast(_)
                if spec.is(WRITE) && self.svc.blocking.busy() =>
            {
                self.deferred = Some(req)
            }
            // they go out of band, and wait as barriers (rescue.rs)
            Kind::Broadcast(_) | Kind::Client if super::rescue::is_rescue(&req.args) => {
                self.deferred = Some(req)
            }
            // held by a CLIENT PAUSE Pake saw: alone, on the client's own connection (held.rs)
            Kind::Plain | Kind::Split(_) | Kind::Broadcast(_) if self.held_alone(spec) => {
                self.deferred = Some(req)
            }
            Kind::Plain | Kind::Split(_) | Kind::Broadcast(_) | Kind::Scan => {
                self.shared(spec, req)
            }
            Kind::StreamRead if !is_blocking_read(&req.args) => self.shared(spec, req),
            Kind::StreamRead | Kind::Blocking => {
                // only a link still to be opened (connect, log in) is slow enough to lose
                // the command its place; a job queue's consumers keep theirs, and their
                // producers' writes do not wait
                if self.link.is_none() {
                    self.opening = Some(self.svc.blocking.opening());
                }
                self.deferred = Some(req)
            }
            Kind::Client if super::client::is_local(&req.args) => self.client_local(&req.args),
            Kind::Subscribe
            | Kind::Exec
            | Kind::Discard
            | Kind::Watch
            | Kind::Unwatch
            | Kind::Select
            | Kind::Hello
            | Kind::Auth
            | Kind::Client
            | Kind::Reset
            | Kind::Raw
            | Kind::Monitor => self.deferred = Some(req),
        }
    }

    /// Run a barrier command: earlier replies have all been queued for writing.
    pub(super) async fn barrier(&mut self, req: Request) -> Result<Flow, Error> {
        let Some(spec) = req.args.first().and_then(|n| Table::get().lookup(n)) else {
            return Ok(Flow::Continue);
        };
        let result = match spec.kind {
            Kind::Hello => self.hello(&req.args).await,
            Kind::Auth => self.auth(&req.args).await,
            Kind::Select => self.select(&req.args).await,
            Kind::Reset => self.reset().await,
            _ if super::rescue::is_rescue(&req.args) => self.rescue(&req.args).await,
            Kind::Client if super::client::is_unblock(&req.args) => self.unblock(&req.args).await,
            Kind::Client => self.client_forward(spec, req).await,
            Kind::Blocking | Kind::StreamRead => {
                let flow = self.blocking(spec, &req).await;
                self.opening = None; // sent, or failed before
                flow
            }
            Kind::Raw => self.blocking(spec, &req).await,
            Kind::Watch => self.watch(spec, &req).await,
            Kind::Unwatch => self.unwatch().await,
            Kind::Exec => {
                self.follow(&self.svc.blocking, "an EXEC").await;
                self.exec().await
            }
            Kind::Discard => self.discard().await,
            Kind::Subscribe => {
                self.reg.entry.update(|i| i.flag = 'P');
                let flow = self.subscribe(spec, &req).await;
                self.opening = None; // settled, whatever happened
                return flow;
            }
            Kind::Monitor => self.monitor().await,
            Kind::Plain | Kind::Split(_) | Kind::Broadcast(_) if self.held_alone(spec) => {
                self.held(spec, &req).await
            }
            Kind::Plain | Kind::Split(_) | Kind::Broadcast(_) if spec.is(WRITE) => {
                self.follow(&self.svc.blocking, "a write").await;
                self.shared(spec, req);
                Ok(Flow::Continue)
            }
            Kind::Plain if spec.is(PUBLISHES) => {
                self.follow(&self.svc.subscriptions, "a publish").await;
                self.shared(spec, req);
                Ok(Flow::Continue)
            }
            // deferred to be held (held.rs), and the pause ended meanwhile
            Kind::Plain | Kind::Split(_) | Kind::Broadcast(_) => {
                self.shared(spec, req);
                Ok(Flow::Continue)
            }
            _ => Ok(Flow::Continue),
        };
        match result {
            Ok(flow) => Ok(flow),
            Err(e) if e.closes_connection() => Err(e),
            Err(e) => {
                self.svc.metrics.backend_error(e.label());
                self.push_error(&e);
                Ok(Flow::Continue)
            }
        }
    }
}

/// XREAD/XREADGROUP with a BLOCK option.
fn is_blocking_read(args: &[Bytes]) -> bool {
    args.iter()
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

impl Session {
    /// Wait, at most the connect timeout, for what `openings` was opening when this command
    /// was read: a publish follows the subscriptions, a write or EXEC the blocking commands
    /// read before it, as Redis would have them ([`crate::redis::pubsub`]). Not an `async
    /// fn`: the future holds no borrow of the session.
    pub(super) fn follow(
        &self,
        openings: &Arc<Openings>,
        what: &'static str,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let (openings, limit) = (openings.clone(), self.svc.config.connect_timeout.0);
        async move {
            if openings.busy() && !openings.settled_before_now(limit).await {
                tracing::debug!("{what} waited its limit for a command being opened before it");
            }
        }
    }
}
