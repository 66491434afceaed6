//! Transaction mode: the client's unnamed statement on whichever server its messages reach.
//! A server has one unnamed statement, the last parsed there by any client; a client's Bind
//! or Describe of its own is preceded by a Parse of it again where it is not the client's.

use crate::pg::server::replies::Expect;
use crate::pg::server::Server;
use bytes::BufMut;

/// Before a Bind or Describe of the unnamed statement of client `id` (`parse`: its last
/// unnamed Parse): the client parsed it in an earlier request, on another server (or
/// another client's replaced it here), or Pake's Parse that made it the client's here is
/// in an earlier batch, which may yet fail: parse it again first.
pub(super) fn own_unnamed(server: &mut Server, id: u64, parse: &[u8]) {
    let lost = server.unnamed_owner != Some(id) || server.replies.unnamed_in_doubt();
    if lost && !parse.is_empty() && !server.replies.is_skipping() {
        server.wbuf.put_slice(parse);
        server.replies.push(Expect::Parse {
            swallow: true,
            registers: None,
            client: None,
        });
        server.unnamed_owner = Some(id);
    }
}
