//! A command Redis holds during a `CLIENT PAUSE … WRITE` that Pake saw
//! ([`crate::redis::pause`]): it runs alone on the client's own connection, as a blocking
//! command does, so the shared link it would have taken keeps carrying other clients'
//! commands (reads, `INFO`, the `UNPAUSE` after them) while Redis holds it.
//!
//! It is a barrier: the client's earlier commands are answered first, and none of its later
//! ones is sent until Redis answers this one — Redis holds the paused client the same way,
//! so the client's order is kept. A cluster's write to several primaries (a cross-slot
//! `MSET`/`DEL`, a `FLUSHALL`) goes the same way, on one connection of its own to each
//! primary it touches, all at once, its parts merged as on the shared path. At most
//! `max_held_writes` connections wait at once; past it the command is answered `-ERR` and
//! not run (none of its parts).

use super::dispatch::{common_slot, keys_of};
use super::{Flow, Session};
use crate::redis::backend::link::{self, Link};
use crate::redis::commands::{split_by_slot, Kind, Merge, Spec, PUBLISHES, UNLISTED, WRITE};
use crate::redis::error::Error;
use crate::redis::pause::waits_for_writes;
use crate::redis::resp::Request;
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;

impl Session {
    /// Whether the command goes alone on connections of the client's own: Redis would hold
    /// it now.
    pub(super) fn held_alone(&self, spec: &Spec) -> bool {
        matches!(spec.kind, Kind::Plain | Kind::Split(_) | Kind::Broadcast(_))
            && waits_for_writes(spec)
            && self.svc.pauses.writes_held()
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
        let keys = keys_of(spec, &req.args);
        if let Some(merge) = self.spread_over(spec, &keys) {
            return self.held_spread(spec, req, merge).await;
        }
        let _held = svc.pauses.enter().map_err(too_many)?;
        svc.metrics.held_by_pause.inc();
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

/// The refusal of a held command past `redis.max_held_writes`.
fn too_many(limit: usize) -> Error {
    Error::Refused(format!(
        "ERR Pake: {limit} writes are already held by CLIENT PAUSE, each on a connection of \
         its own (redis.max_held_writes); this one was not run, send it again once unpaused"
    ))
}

impl Session {
    /// How the parts of a command that goes to several primaries are merged: a cluster's
    /// broadcast, or split whose keys are in several slots. `None`: it has one node.
    fn spread_over(&self, spec: &Spec, keys: &[&Bytes]) -> Option<Merge> {
        match spec.kind {
            _ if !self.svc.backend.cluster => None,
            Kind::Broadcast(merge) => Some(merge),
            Kind::Split(merge) if common_slot(keys).is_err() => Some(merge),
            _ => None,
        }
    }

    /// A held write to several primaries (see the module): each primary's parts on a
    /// connection of its own, in order, the primaries at once.
    async fn held_spread(
        &mut self,
        spec: &'static Spec,
        req: &Request,
        merge: Merge,
    ) -> Result<Flow, Error> {
        let svc = self.svc.clone();
        let parts: Vec<(String, Vec<Bytes>)> = match spec.kind {
            Kind::Broadcast(_) => (svc.backend.primaries().into_iter())
                .map(|p| (p.addr, req.args.to_vec()))
                .collect(),
            _ => {
                let parts = split_by_slot(spec, &req.args)
                    .ok_or_else(|| Error::Arity(spec.name.to_lowercase()))?;
                let mut named = Vec::with_capacity(parts.len());
                for (slot, args) in parts {
                    let addr = (svc.backend.node_for(Some(slot)))
                        .ok_or_else(|| Error::Backend("no primary known for this slot".into()))?;
                    let mut all = Vec::with_capacity(args.len() + 1);
                    all.push(Bytes::from_static(spec.name.as_bytes()));
                    all.extend(args);
                    named.push((addr, all));
                }
                named
            }
        };
        // each primary's parts, in the order of the first
        let mut nodes: Vec<(String, BytesMut, usize)> = Vec::new();
        for (addr, args) in &parts {
            let argv: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
            let at = match nodes.iter().position(|(a, _, _)| a == addr) {
                Some(at) => at,
                None => {
                    nodes.push((addr.clone(), BytesMut::new(), 0));
                    nodes.len() - 1
                }
            };
            nodes[at].1.extend_from_slice(&link::command(&argv));
            nodes[at].2 += 1;
        }
        let mut held = Vec::with_capacity(nodes.len());
        for _ in &nodes {
            held.push(svc.pauses.enter().map_err(too_many)?);
        }
        svc.metrics.held_by_pause.inc_by(nodes.len() as u64);
        let mut asks = Vec::with_capacity(nodes.len());
        for (addr, batch, count) in nodes {
            let target = self.own_target(Some(addr))?;
            asks.push(async move {
                let mut link = Link::connect(&target).await?;
                link.send(&batch).await?;
                let mut replies = Vec::with_capacity(count);
                for _ in 0..count {
                    replies.push(link.read_frame().await?);
                }
                Ok::<_, Error>(replies)
            });
        }
        let answers = join_all(asks).await;
        drop(held);
        let keys: Vec<Bytes> = keys_of(spec, &req.args).into_iter().cloned().collect();
        super::shared::invalidate_written(&svc, spec, &keys);
        let mut frames = Vec::with_capacity(parts.len());
        for raw in answers
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?
            .concat()
        {
            if link::error_text(&raw).is_some() {
                // the first error wins, as Redis's own words
                self.push_reply(raw);
                return Ok(Flow::Continue);
            }
            let frame = crate::redis::resp::decode_frame(&raw, self.state.proto)
                .ok_or_else(|| Error::Backend("a reply that could not be decoded".into()))?;
            frames.push(frame);
        }
        self.push_reply(super::spread::merge_frames(self.state.proto, merge, frames));
        Ok(Flow::Continue)
    }
}
