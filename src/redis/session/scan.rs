//! SCAN across the primaries of a cluster, with one merged cursor.
//!
//! A client iterating with SCAN through Pake expects to see every key, as it would on a
//! single Redis. Pake walks the primaries one after another: its cursor carries the node's
//! own cursor and which primary it is on, `node_cursor * primaries + index`, so it is an
//! integer as clients expect and `0` still means "start" and "done". When a node's cursor
//! comes back `0`, the next call starts on the next primary. A resharding in the middle of
//! an iteration may repeat or miss keys that moved (SCAN's own guarantee covers one node).

use super::{Done, Session};
use crate::redis::error::Error;
use crate::redis::resp::{encode, encode::Proto, Request};
use bytes::{Bytes, BytesMut};
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use redis_protocol::resp3::types::BytesFrame;

/// Split Pake's cursor into (primary index, that node's cursor).
pub fn split_cursor(cursor: u64, primaries: u64) -> (u64, u64) {
    (cursor % primaries, cursor / primaries)
}

/// Pake's cursor after a node answered `next` on primary `index`: `None` when the node's
/// cursor is too large to carry (the iteration cannot go on).
pub fn next_cursor(index: u64, next: u64, primaries: u64) -> Option<u64> {
    if next == 0 {
        // this node is done: the next primary from its start, or the end
        return Some(if index + 1 >= primaries { 0 } else { index + 1 });
    }
    next.checked_mul(primaries)?.checked_add(index)
}

fn error(msg: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, msg);
    out.freeze()
}

impl Session {
    /// `SCAN cursor [MATCH …] [COUNT …] [TYPE …]` on a cluster.
    pub(super) fn scan_cluster(&mut self, req: Request) {
        let mut primaries = self.svc.backend.primaries();
        primaries.sort_by(|a, b| a.addr.cmp(&b.addr));
        let (Some(client), n) = (self.fred.clone(), primaries.len() as u64) else {
            return self.push_error(&Error::Backend("no connection to Redis".into()));
        };
        let cursor = std::str::from_utf8(&req.args[1])
            .ok()
            .and_then(|c| c.parse::<u64>().ok());
        let Some(cursor) = cursor.filter(|_| n > 0) else {
            return self.push_reply(error("ERR invalid cursor"));
        };
        let (index, node_cursor) = split_cursor(cursor, n);
        let addr = primaries[index as usize].addr.clone();
        let proto = self.state.proto;
        // on the node's link when the session has one: behind the client's earlier writes
        // there (a pipelined `SET k v; SCAN 0` sees `k`)
        let link = self.nodes.as_ref().and_then(|n| n.by_addr(&addr)).cloned();
        let metrics = self.svc.metrics.clone();
        let fut = async move {
            let mut args = vec![Bytes::from(node_cursor.to_string())];
            args.extend(req.args[2..].iter().cloned());
            let on_link = match &link {
                Some(link) => {
                    metrics.link_commands.inc();
                    match link.submit(b"SCAN", &args) {
                        Ok(rx) => crate::redis::backend::mux::reply(rx).await.map(Some),
                        Err(e) => Err(e),
                    }
                }
                None => Ok(None),
            };
            let reply = match on_link {
                // a cluster error (the node did not run it): fred asks the node again
                Ok(Some(raw)) if super::redirect::is_redirect(&raw) => {
                    metrics.link_redirects.inc();
                    on_node(&client, &addr, &args).await
                }
                Ok(Some(raw)) => crate::redis::resp::decode_frame(&raw, proto)
                    .ok_or_else(|| Error::Backend("a reply that could not be decoded".into())),
                Ok(None) => on_node(&client, &addr, &args).await,
                Err(e) => Err(e),
            };
            Done {
                reply: match reply {
                    Ok(frame) => merged_reply(&frame, index, n, proto),
                    Err(e) => error(&e.reply()),
                },
                write: false,
            }
        };
        self.push_future(fut, None);
    }
}

/// SCAN on the primary at `addr` through fred.
async fn on_node(
    client: &fred::clients::Client,
    addr: &str,
    args: &[Bytes],
) -> Result<BytesFrame, Error> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Backend(format!("bad node address {addr}")))?;
    let server = fred::types::config::Server::new(
        host.trim_matches(|c| c == '[' || c == ']'),
        port.parse().unwrap_or(0),
    );
    let values: Vec<Value> = args.iter().map(|a| Value::Bytes(a.clone())).collect();
    let cmd = CustomCommand::new_static("SCAN", ClusterHash::Random, false);
    client
        .with_cluster_node(server)
        .custom_raw(cmd, values)
        .await
        .map_err(|e| Error::Backend(e.details().to_string()))
}

/// The node's `[cursor, keys]` with the cursor replaced by Pake's.
fn merged_reply(frame: &BytesFrame, index: u64, primaries: u64, proto: Proto) -> Bytes {
    let mut out = BytesMut::new();
    let BytesFrame::Array { data, .. } = frame else {
        encode::frame(&mut out, frame, proto);
        return out.freeze();
    };
    let next = match data.first() {
        Some(BytesFrame::BlobString { data, .. }) => std::str::from_utf8(data)
            .ok()
            .and_then(|c| c.parse::<u64>().ok()),
        _ => None,
    };
    let (Some(next), Some(keys)) = (next, data.get(1)) else {
        encode::frame(&mut out, frame, proto);
        return out.freeze();
    };
    let Some(cursor) = next_cursor(index, next, primaries) else {
        return error("ERR SCAN cursor too large to merge across the cluster's primaries (Pake)");
    };
    encode::array(&mut out, 2);
    encode::bulk(&mut out, cursor.to_string().as_bytes());
    encode::frame(&mut out, keys, proto);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_walks_every_primary_then_ends() {
        let n = 3;
        // node 0 has two pages, node 1 one, node 2 one
        let c = next_cursor(0, 17, n).expect("fits");
        assert_eq!(split_cursor(c, n), (0, 17));
        let c = next_cursor(0, 0, n).expect("fits");
        assert_eq!(split_cursor(c, n), (1, 0));
        let c = next_cursor(1, 0, n).expect("fits");
        assert_eq!(split_cursor(c, n), (2, 0));
        assert_eq!(next_cursor(2, 0, n), Some(0), "done after the last primary");
        assert_eq!(next_cursor(1, u64::MAX / 2, n), None, "too large to carry");
    }
}
