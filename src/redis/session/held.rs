//! A command Redis holds during a `CLIENT PAUSE … WRITE` that Pake saw
//! ([`crate::redis::pause`]): it runs alone on the client's own connection, as a blocking
//! command does, so the shared link it would have taken keeps carrying other clients'
//! commands (reads, `INFO`, the `UNPAUSE` after them) while Redis holds it.
//!
//! It is a barrier: the client's earlier commands are answered first, and none of its later
//! ones is sent until Redis answers this one — Redis holds the paused client the same way,
//! so the client's order is kept. At most `max_held_writes` wait at once; past it the
//! command is answered `-ERR` and not run.

use super::dispatch::{common_slot, keys_of};
use super::{Flow, Session};
use crate::redis::backend::link;
use crate::redis::commands::{Kind, Spec, PUBLISHES, UNLISTED, WRITE};
use crate::redis::error::Error;
use crate::redis::pause::waits_for_writes;
use crate::redis::resp::Request;
use bytes::Bytes;

impl Session {
    /// Whether the command goes alone on the client's own connection: Redis would hold it
    /// now, and it has one node to go to (a cluster's broadcasts and cross-slot splits keep
    /// the shared path).
    pub(super) fn held_alone(&self, spec: &Spec, args: &[Bytes]) -> bool {
        if !waits_for_writes(spec) || !self.svc.pauses.writes_held() {
            return false;
        }
        let cluster = self.svc.backend.cluster;
        match spec.kind {
            Kind::Plain | Kind::Split(_) => !cluster || common_slot(&keys_of(spec, args)).is_ok(),
            Kind::Broadcast(_) => !cluster,
            _ => false,
        }
    }

    /// Run a held command (see the module) and queue its reply.
    pub(super) async fn held(&mut self, spec: &'static Spec, req: &Request) -> Result<Flow, Error> {
        if spec.is(WRITE) {
            self.follow(&self.svc.blocking, "a held write").await;
        } else if spec.is(PUBLISHES) {
            self.follow(&self.svc.subscriptions, "a held publish").await;
        }
        if !self.wbuf.is_empty() {
            // it may wait long: the replies before it leave first, as from Redis
            let wbuf = self.wbuf.split();
            self.write_out(&wbuf).await?;
            self.wlease.force(self.wbuf.len());
        }
        let svc = self.svc.clone();
        let _held = svc.pauses.enter().map_err(|limit| {
            Error::Refused(format!(
                "ERR Pake: {limit} writes are already held by CLIENT PAUSE, each on a \
                 connection of its own (redis.max_held_writes); this one was not run, send \
                 it again once unpaused"
            ))
        })?;
        svc.metrics.held_by_pause.inc();
        let keys = keys_of(spec, &req.args);
        let slot = common_slot(&keys).unwrap_or(None);
        let args: Vec<&[u8]> = req.args.iter().map(|a| a.as_ref()).collect();
        let reply = self.on_link(slot, &link::command(&args)).await?;
        let written: Vec<Bytes> = keys.into_iter().cloned().collect();
        super::shared::invalidate_written(&svc, spec, &written);
        if let Some(heard) = super::writes::heard_after(&svc, spec.is(UNLISTED), slot) {
            heard.await;
        }
        self.push_reply(reply);
        Ok(Flow::Continue)
    }
}
