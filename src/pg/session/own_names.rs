//! The client's own statement names in the server's messages (transaction mode). Servers
//! know a client's prepared statements by Pake's process-wide names (`pake_<id>`), and some
//! of their errors name the statement (26000 `prepared statement "pake_41" does not
//! exist`, 42P05, 08P01 for a Bind's parameter count): the client gets the name it used,
//! as PostgreSQL would give it. Only errors and notices are read for it.

use crate::pg::prepared::ClientStatements;
use crate::pg::wire::{self, be};
use bytes::BytesMut;

/// Pake's statement names as a server quotes them.
const PREFIX: &[u8] = b"\"pake_";

/// An ErrorResponse or NoticeResponse (`tag`, `body`) with every `"pake_<id>"` of a
/// statement the client has by another name renamed, framed; `None` when there is nothing
/// to rename (and for any other message).
pub(super) fn renamed(tag: u8, body: &[u8], client: &ClientStatements) -> Option<BytesMut> {
    let errors = matches!(tag, be::ERROR_RESPONSE | be::NOTICE_RESPONSE);
    if !errors || !contains(body, PREFIX) {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 64);
    let at = wire::begin_frame(&mut out, tag);
    let mut changed = false;
    let mut rest = body;
    while let Some((&code, after)) = rest.split_first().filter(|(c, _)| **c != 0) {
        let (value, next) = wire::cstr(after)?;
        out.extend_from_slice(&[code]);
        changed |= rename_in(value, client, &mut out);
        out.extend_from_slice(&[0]);
        rest = next;
    }
    out.extend_from_slice(&[0]);
    wire::finish_frame(&mut out, at);
    changed.then_some(out)
}

/// Copy `text` to `out`, each `"pake_<id>"` the client knows by another name renamed;
/// whether any was.
fn rename_in(text: &[u8], client: &ClientStatements, out: &mut BytesMut) -> bool {
    let mut changed = false;
    let mut rest = text;
    while let Some(at) = find(rest, PREFIX) {
        let start = at + 1;
        let len = rest[start..].iter().position(|&b| b == b'"');
        let own = len.and_then(|len| own_name(&rest[start..start + len], client));
        match (len, own) {
            (Some(len), Some(own)) => {
                out.extend_from_slice(&rest[..start]);
                out.extend_from_slice(own);
                changed = true;
                rest = &rest[start + len..];
            }
            _ => {
                out.extend_from_slice(&rest[..start]);
                rest = &rest[start..];
            }
        }
    }
    out.extend_from_slice(rest);
    changed
}

/// The client's name for the statement the server calls `server_name`.
fn own_name<'a>(server_name: &[u8], client: &'a ClientStatements) -> Option<&'a [u8]> {
    client
        .iter()
        .find(|(_, stmt, _)| stmt.name.as_bytes() == server_name)
        .map(|(name, _, _)| name)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
