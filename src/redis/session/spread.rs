//! Commands that touch more than one node: MSET, DEL, UNLINK, EXISTS and TOUCH split by
//! slot, the broadcast ones (FLUSHALL, DBSIZE, KEYS, SCRIPT…) sent to every primary, and
//! the parts merged into one reply, the first error winning.

use super::dispatch::keys_of;
use super::redirect::Redirect;
use super::shared::{encode_reply, invalidate_written, observe, Ctx, Reply};
use super::Done;
use crate::redis::backend::mux::Mux;
use crate::redis::commands::{Merge, Spec, WRITE};
use crate::redis::error::Error;
use crate::redis::pause::Sent;
use crate::redis::resp::{encode, encode::Proto, Request};
use bytes::{Bytes, BytesMut};
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures_util::future::join_all;
use redis_protocol::resp3::types::BytesFrame;
use std::time::Instant;

/// MSET, DEL, UNLINK, EXISTS, TOUCH across slots: one command per slot, merged.
pub(super) async fn split(ctx: Ctx, spec: &'static Spec, req: Request, merge: Merge) -> Done {
    let started = Instant::now();
    let Some(parts) = crate::redis::commands::split_by_slot(spec, &req.args) else {
        // arity_ok refuses cut pairs first; this is the last line of defence
        let e = Error::Arity(spec.name.to_lowercase());
        return Done {
            reply: encode_reply(&ctx, &Err(e)),
            write: spec.is(WRITE),
        };
    };
    let sends = parts
        .iter()
        .map(|(slot, args)| ctx.send(spec.name, args, Some(*slot)));
    let replies = join_all(sends).await;
    let keys: Vec<Bytes> = keys_of(spec, &req.args).into_iter().cloned().collect();
    invalidate_written(&ctx.svc, spec, &keys);
    observe(&ctx, spec, started);
    Done {
        reply: merge_replies(&ctx, merge, replies),
        write: spec.is(WRITE),
    }
}

/// FLUSHALL, DBSIZE, KEYS, SCRIPT…: every primary, merged. On the primaries' links when
/// the session has them, so a broadcast stays behind the client's earlier commands on each
/// node (a pipelined `SET k v; KEYS *` sees `k`); else through fred.
pub(super) async fn broadcast(ctx: Ctx, spec: &'static Spec, req: Request, merge: Merge) -> Done {
    let started = Instant::now();
    let replies = every_primary(&ctx, spec, &req.args[1..]).await;
    invalidate_written(&ctx.svc, spec, &[]);
    observe(&ctx, spec, started);
    Done {
        reply: merge_replies(&ctx, merge, replies),
        write: spec.is(WRITE),
    }
}

/// `CLIENT PAUSE` to every primary, a cluster being paused as one server, answered `+OK`
/// when all accepted it. `sent` (the pause, noted in effect while it is sent) is kept once
/// any primary accepted it: that one holds writes ([`crate::redis::pause`]).
pub(super) async fn pause(ctx: Ctx, spec: &'static Spec, req: Request, sent: Option<Sent>) -> Done {
    let started = Instant::now();
    let replies = every_primary(&ctx, spec, &req.args[1..]).await;
    let ok = |r: &Reply| matches!(r, Ok(BytesFrame::SimpleString { data, .. }) if data == "OK");
    if let Some(sent) = sent {
        sent.answered(replies.iter().any(ok));
    }
    observe(&ctx, spec, started);
    Done {
        reply: merge_replies(&ctx, Merge::AllOk, replies),
        write: false,
    }
}

/// `args` of `spec` run on every primary: on the primaries' links when the session has
/// them, else through fred.
async fn every_primary(ctx: &Ctx, spec: &'static Spec, args: &[Bytes]) -> Vec<Reply> {
    let links = ctx.nodes.as_ref().map(|n| n.all()).unwrap_or_default();
    match links.is_empty() {
        false => join_all(links.iter().map(|l| on_node_link(ctx, l, spec, args))).await,
        true => {
            let primaries = ctx.svc.backend.primaries();
            join_all(primaries.iter().map(|p| on_node(ctx, &p.addr, spec, args))).await
        }
    }
}

/// A broadcast's part on one primary's link, its reply decoded; a redirection or cluster
/// error (the node did not run it) is sent again to that node through fred.
async fn on_node_link(ctx: &Ctx, link: &Mux, spec: &'static Spec, args: &[Bytes]) -> Reply {
    let raw = ctx.through_mux(link, spec.name, args, false).await?;
    if Redirect::parse(&raw).is_some() {
        ctx.svc.metrics.link_redirects.inc();
        ctx.svc.backend.resync_soon();
        return on_node(ctx, link.addr(), spec, args).await;
    }
    crate::redis::resp::decode_frame(&raw, ctx.proto)
        .ok_or_else(|| Error::Backend("a reply that could not be decoded".into()))
}

/// A broadcast's part on the primary at `addr`, through fred.
async fn on_node(ctx: &Ctx, addr: &str, spec: &'static Spec, args: &[Bytes]) -> Reply {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(Error::Backend(format!("bad node address {addr}")));
    };
    let server = fred::types::config::Server::new(
        host.trim_matches(|c| c == '[' || c == ']'),
        port.parse().unwrap_or(0),
    );
    let cmd = CustomCommand::new_static(spec.name, ClusterHash::Random, false);
    let values: Vec<Value> = args.iter().map(|a| Value::Bytes(a.clone())).collect();
    ctx.client
        .with_cluster_node(server)
        .custom_raw(cmd, values)
        .await
        .map_err(|e| Error::Backend(e.details().to_string()))
}

/// Combine the parts of a split or broadcast command; the first error wins.
fn merge_replies(ctx: &Ctx, merge: Merge, replies: Vec<Reply>) -> Bytes {
    if let Some(bad) = replies
        .iter()
        .find(|r| r.as_ref().map_or(true, encode::is_error))
    {
        return encode_reply(ctx, bad);
    }
    let frames: Vec<BytesFrame> = replies.into_iter().filter_map(Result::ok).collect();
    merge_frames(ctx.proto, merge, frames)
}

/// Combine the parts of a split or broadcast command, none an error, for a client of
/// `proto`.
pub(super) fn merge_frames(proto: Proto, merge: Merge, frames: Vec<BytesFrame>) -> Bytes {
    let mut out = BytesMut::new();
    match merge {
        Merge::Sum => {
            let sum = frames
                .iter()
                .map(|f| match f {
                    BytesFrame::Number { data, .. } => *data,
                    _ => 0,
                })
                .sum();
            encode::int(&mut out, sum);
        }
        Merge::AllOk => encode::simple(&mut out, "OK"),
        Merge::First => match frames.first() {
            Some(f) => encode::frame(&mut out, f, proto),
            None => encode::null(&mut out, proto),
        },
        Merge::Concat => {
            let items: Vec<&BytesFrame> = frames
                .iter()
                .flat_map(|f| match f {
                    BytesFrame::Array { data, .. } => data.iter().collect::<Vec<_>>(),
                    BytesFrame::Set { data, .. } => data.iter().collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .collect();
            encode::array(&mut out, items.len());
            for f in items {
                encode::frame(&mut out, f, proto);
            }
        }
    }
    out.freeze()
}
