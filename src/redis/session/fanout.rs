//! Fan-outs bounded in memory and in time: a wide MGET (more keys than the L1 is worth
//! consulting for, or no L1) is grouped by slot in one pass, at most [`IN_FLIGHT`] groups are
//! asked at once, every part that comes back is charged to the client's reply meter before
//! it is kept (past `client_max_reply_bytes` the client gets `-ERR` and the rest is
//! dropped), and the merge yields to the worker's other clients every [`YIELD_EVERY`] keys.
//!
//! Measured on a 200,000-key MGET: per-key L1 tickets and PTTLs (200,000 concurrent
//! commands) took Pake from ~40 MB to ~1.5 GB; one MGET per slot group holds the keys, the
//! parts and the merged reply, a few tens of MB.

use super::shared::{encode_reply, observe, Ctx, Reply};
use super::Done;
use crate::redis::budget::{Lease, Meter};
use crate::redis::commands::Spec;
use crate::redis::error::Error;
use crate::redis::resp::encode::{self, Proto};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use redis_protocol::resp3::types::BytesFrame;
use std::collections::HashMap;
use std::time::Instant;

/// An MGET with more keys than this skips the L1 (lookups, tickets and a PTTL per key would
/// cost more than the hits save) and goes as a plain fan-out.
pub const MGET_L1_MAX_KEYS: usize = 128;
/// Slot groups asked at once.
const IN_FLIGHT: usize = 32;
/// Keys merged between yields.
const YIELD_EVERY: usize = 8192;

/// Group indices by the slot of their key (one group when not a cluster), keeping order,
/// in one pass.
pub fn group_by_slot<'a>(
    idx: impl IntoIterator<Item = usize>,
    key: impl Fn(usize) -> &'a Bytes,
    cluster: bool,
) -> Vec<(u16, Vec<usize>)> {
    let idx = idx.into_iter();
    if !cluster {
        let all: Vec<usize> = idx.collect();
        return match all.first() {
            Some(&first) => vec![(crate::redis::commands::slot(key(first)), all)],
            None => Vec::new(),
        };
    }
    let mut grouper = SlotGroups::new(idx.size_hint().0);
    for i in idx {
        grouper.add(i, key(i));
    }
    grouper.groups
}

/// Indices grouped by the slot of their key, in order, one key at a time (so a caller can
/// yield between keys).
struct SlotGroups {
    groups: Vec<(u16, Vec<usize>)>,
    /// The group of each slot, for many keys: hashing made grouping a 200,000-key MGET take
    /// ~45 ms on the session's thread.
    table: Vec<u32>,
    /// The same for a few keys (a 64 KiB table is not worth it).
    small: HashMap<u16, usize>,
}

impl SlotGroups {
    fn new(keys: usize) -> Self {
        SlotGroups {
            groups: Vec::new(),
            table: match keys > WIDE {
                true => vec![u32::MAX; SLOTS],
                false => Vec::new(),
            },
            small: HashMap::new(),
        }
    }

    fn add(&mut self, i: usize, key: &Bytes) {
        let slot = crate::redis::commands::slot(key);
        let next = self.groups.len();
        let known = match self.table.get_mut(usize::from(slot)) {
            Some(g) if *g != u32::MAX => Some(*g as usize),
            Some(g) => {
                *g = next as u32;
                None
            }
            None => match self.small.entry(slot) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(next);
                    None
                }
            },
        };
        match known {
            Some(g) => self.groups[g].1.push(i),
            None => self.groups.push((slot, vec![i])),
        }
    }
}

/// Keys from which [`group_by_slot`] uses its direct table.
const WIDE: usize = 256;
/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// What a reply part will take once encoded for the client (an estimate from above).
fn part_size(items: &[BytesFrame]) -> usize {
    items
        .iter()
        .map(|f| match f {
            BytesFrame::BlobString { data, .. } => data.len() + 16,
            _ => 16,
        })
        .sum()
}

fn refused(command: &'static str, over: crate::redis::budget::Over) -> Bytes {
    let mut out = BytesMut::new();
    encode::error(&mut out, &Error::ReplyBudget { command, over }.reply());
    out.freeze()
}

/// MGET without the L1: one MGET per slot group (one in all for a standalone Redis, whose
/// answer is already in key order), merged in key order.
pub(super) async fn mget_wide(
    ctx: Ctx,
    spec: &'static Spec,
    args: Vec<Bytes>,
    meter: Meter,
) -> Done {
    let started = Instant::now();
    let keys = args.get(1..).unwrap_or_default();
    let mut lease = meter.lease();
    let reply = match ctx.svc.backend.cluster {
        false => mget_one(&ctx, keys, &mut lease).await,
        true => mget_split(&ctx, keys, &mut lease).await,
    };
    if reply.is_ok() {
        observe(&ctx, spec, started);
    }
    Done {
        reply: reply.unwrap_or_else(|e| e),
        write: false,
    }
}

/// A part's answer checked against the keys asked and charged to `lease`; `Err` is the
/// reply the client gets instead.
fn take_part(
    ctx: &Ctx,
    reply: Reply,
    asked: usize,
    lease: &mut Lease,
) -> Result<Vec<BytesFrame>, Bytes> {
    match reply {
        Ok(BytesFrame::Array { data, .. }) if data.len() == asked => {
            match lease.grow(part_size(&data)) {
                Ok(()) => Ok(data),
                Err(over) => Err(refused("MGET", over)),
            }
        }
        other => Err(encode_reply(ctx, &other)),
    }
}

/// Standalone: Redis's answer is already the client's, in key order and (on a link) in the
/// client's protocol, so it goes on as it came. Decoding 200,000 values into frames and
/// encoding them again was a third of Pake's CPU for such an MGET.
async fn mget_one(ctx: &Ctx, keys: &[Bytes], lease: &mut Lease) -> Result<Bytes, Bytes> {
    let raw = match ctx.send_raw("MGET", keys, None).await {
        Ok(raw) => raw,
        Err(e) => return Err(encode_reply(ctx, &Err(e))),
    };
    if array_len(&raw) == Some(keys.len()) {
        return match lease.grow(raw.len()) {
            Ok(()) => Ok(raw),
            Err(over) => Err(refused("MGET", over)),
        };
    }
    // an error, or not the array asked for: as the split path reports it
    let reply = crate::redis::resp::decode_frame(&raw, ctx.proto)
        .ok_or_else(|| Error::Backend("a reply that could not be decoded".into()));
    let part = take_part(ctx, reply, keys.len(), lease)?;
    Ok(merge(ctx.proto, keys.len(), lease, |i| part.get(i)).await)
}

/// The element count of a RESP array frame (`*N\r\n…`).
fn array_len(raw: &[u8]) -> Option<usize> {
    let rest = raw.strip_prefix(b"*")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

async fn mget_split(ctx: &Ctx, keys: &[Bytes], lease: &mut Lease) -> Result<Bytes, Bytes> {
    // grouped a slice at a time, yielding between: the worker's other clients wait for one
    // slice, not for the whole MGET (one pass was ~45 ms for 200,000 keys)
    let mut grouper = SlotGroups::new(keys.len());
    for (i, key) in keys.iter().enumerate() {
        grouper.add(i, key);
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    let groups = grouper.groups;
    // where each key's value will be: its group, and its place in that group
    let mut at: Vec<(u32, u32)> = vec![(0, 0); keys.len()];
    for (g, (_, idx)) in groups.iter().enumerate() {
        for (j, &i) in idx.iter().enumerate() {
            at[i] = (g as u32, j as u32);
        }
    }
    let mut parts: Vec<Vec<BytesFrame>> = vec![Vec::new(); groups.len()];
    {
        // each part's keys are copied (reference counts) only when it is about to be sent
        let groups = &groups;
        let owned = (0..groups.len()).map(|g| {
            let (slot, idx) = &groups[g];
            let part: Vec<Bytes> = idx.iter().map(|&i| keys[i].clone()).collect();
            (g, *slot, part)
        });
        let mut replies = stream::iter(owned)
            .map(|(g, slot, part)| {
                let ctx = ctx.clone();
                async move { (g, ctx.send("MGET", &part, Some(slot)).await) }
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some((g, reply)) = replies.next().await {
            parts[g] = take_part(ctx, reply, groups[g].1.len(), lease)?;
        }
    }
    let frame = |i: usize| {
        let (g, j) = at[i];
        parts.get(g as usize).and_then(|p| p.get(j as usize))
    };
    Ok(merge(ctx.proto, keys.len(), lease, frame).await)
}

/// The client's array of `n` values, `frame(i)` the i-th; yields to the worker's other
/// clients every [`YIELD_EVERY`] values. The merged copy is held beside the parts while it
/// is built: it is counted too.
async fn merge<'a>(
    proto: Proto,
    n: usize,
    lease: &mut Lease,
    frame: impl Fn(usize) -> Option<&'a BytesFrame>,
) -> Bytes {
    lease.force(lease.bytes() * 2);
    let mut out = BytesMut::with_capacity(lease.bytes() / 2 + 16);
    encode::array(&mut out, n);
    for i in 0..n {
        if let Some(f) = frame(i) {
            encode::frame(&mut out, f, proto);
        }
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_len_reads_the_header_only() {
        assert_eq!(array_len(b"*3\r\n$1\r\na\r\n"), Some(3));
        assert_eq!(array_len(b"*0\r\n"), Some(0));
        assert_eq!(array_len(b"*-1\r\n"), None);
        assert_eq!(array_len(b"-ERR x\r\n"), None);
        assert_eq!(array_len(b"*"), None);
    }

    #[test]
    fn groups_keep_order_and_take_one_pass() {
        let keys: Vec<Bytes> = (0..20_000).map(|i| Bytes::from(format!("k{i}"))).collect();
        let groups = group_by_slot(0..keys.len(), |i| &keys[i], true);
        let total: usize = groups.iter().map(|g| g.1.len()).sum();
        assert_eq!(total, keys.len());
        for (slot, idx) in &groups {
            assert!(idx.windows(2).all(|w| w[0] < w[1]));
            assert!(idx
                .iter()
                .all(|&i| crate::redis::commands::slot(&keys[i]) == *slot));
        }
        let slots: std::collections::HashSet<u16> = groups.iter().map(|g| g.0).collect();
        assert_eq!(slots.len(), groups.len(), "one group per slot");
        // the direct table (many keys) and the map (a few, or no size hint) group alike
        let mapped = group_by_slot((0..keys.len()).filter(|_| true), |i| &keys[i], true);
        assert_eq!(mapped, groups);
        let few = group_by_slot(0..40, |i| &keys[i], true);
        assert_eq!(
            few,
            group_by_slot((0..40).filter(|_| true), |i| &keys[i], true)
        );
        let one = group_by_slot(0..keys.len(), |i| &keys[i], false);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1.len(), keys.len());
    }
}
