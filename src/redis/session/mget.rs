//! MGET on the shared path: each key through the L1 as a `GET`, the misses fetched per slot
//! (with their PTTLs, for the fills) and merged in key order.

use super::fanout::{group_by_slot, MGET_L1_MAX_KEYS};
use super::shared::{encode_reply, observe, ttl_of, Ctx};
use super::{Done, Session};
use crate::redis::commands::Spec;
use crate::redis::l1::{CacheKey, Ticket, L1};
use crate::redis::resp::{encode, Request};
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use redis_protocol::resp3::types::BytesFrame;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Session {
    /// MGET: hits from the L1, misses fetched per slot, merged in key order. A wide MGET
    /// (or one without an L1) is a plain bounded fan-out ([`super::fanout`]).
    pub(super) fn mget(
        &mut self,
        ctx: Ctx,
        spec: &'static Spec,
        req: Request,
        l1: Option<Arc<L1>>,
    ) {
        let Some(l1) = l1.filter(|_| req.args.len() <= MGET_L1_MAX_KEYS + 1) else {
            let fut = super::fanout::mget_wide(ctx, spec, req.args, self.replies.clone());
            return self.push_future(fut, None);
        };
        let get_id = crate::redis::commands::Table::get()
            .lookup(b"GET")
            .map_or(0, |s| s.id as u16);
        let keys: Vec<Bytes> = req.args[1..].to_vec();
        let mut parts: Vec<Option<Bytes>> = vec![None; keys.len()];
        let mut cache_keys = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let ck = CacheKey::new(
                get_id,
                std::slice::from_ref(k),
                self.state.db,
                self.state.user_id,
                self.state.proto,
            );
            parts[i] = l1.get(&ck);
            cache_keys.push(ck);
        }
        if parts.iter().all(Option::is_some) {
            return self.push_reply(array_of(parts));
        }
        let cluster = self.svc.backend.cluster;
        let fut = async move {
            let started = Instant::now();
            let missing: Vec<usize> = (0..keys.len()).filter(|&i| parts[i].is_none()).collect();
            let groups = group_by_slot(missing, |i| &keys[i], cluster);
            let fetches = groups.into_iter().map(|(slot, idx)| {
                let ctx = ctx.clone();
                let keys = &keys;
                let l1 = l1.clone();
                async move {
                    let args: Vec<Bytes> = idx.iter().map(|&i| keys[i].clone()).collect();
                    let tickets: Vec<Option<Ticket>> =
                        args.iter().map(|k| ctx.ticket(&l1, slot, k)).collect();
                    let ttls = fetch_ttls(&ctx, &args, slot, &tickets);
                    let (reply, ttls) =
                        futures_util::join!(ctx.send("MGET", &args, Some(slot)), ttls);
                    (idx, tickets, reply, ttls)
                }
            });
            let mut error = None;
            for (idx, tickets, reply, ttls) in join_all(fetches).await {
                match reply {
                    Ok(BytesFrame::Array { data, .. }) if data.len() == idx.len() => {
                        for (j, item) in data.iter().enumerate() {
                            let mut out = BytesMut::new();
                            encode::frame(&mut out, item, ctx.proto);
                            let bytes = out.freeze();
                            // MGET answers nil for a key of another type too, where GET
                            // answers WRONGTYPE: a nil fills only for a key PTTL found missing
                            let (ttl, missing) = ttls[j];
                            let fills = missing || !matches!(item, BytesFrame::Null);
                            if let (Some(t), true) = (tickets[j], fills) {
                                l1.insert(cache_keys[idx[j]].clone(), bytes.clone(), t, ttl);
                            }
                            parts[idx[j]] = Some(bytes);
                        }
                    }
                    other => error = Some(encode_reply(&ctx, &other)),
                }
            }
            observe(&ctx, spec, started);
            let reply = error.unwrap_or_else(|| array_of(parts));
            Done {
                reply,
                write: false,
            }
        };
        self.push_future(fut, None);
    }
}

/// The merged reply: every part, in key order (all present).
fn array_of(parts: Vec<Option<Bytes>>) -> Bytes {
    let mut out = BytesMut::new();
    encode::array(&mut out, parts.len());
    for p in parts.into_iter().flatten() {
        out.extend_from_slice(&p);
    }
    out.freeze()
}

/// PTTL of each ticketed key, sent alongside the read (misses only): the key's TTL, and
/// whether it was missing (-2). A change of the key between the MGET and its PTTL is an
/// invalidation after the ticket, so the fill is dropped then.
async fn fetch_ttls(
    ctx: &Ctx,
    keys: &[Bytes],
    slot: u16,
    tickets: &[Option<Ticket>],
) -> Vec<(Option<Duration>, bool)> {
    let asks = keys.iter().zip(tickets).map(|(k, t)| async move {
        if t.is_none() {
            return (None, false);
        }
        let reply = ctx.send("PTTL", std::slice::from_ref(k), Some(slot)).await;
        let missing = matches!(reply, Ok(BytesFrame::Number { data: -2, .. }));
        (ttl_of(&reply), missing)
    });
    join_all(asks).await
}
