//! Transaction mode: the client's unnamed statement on whichever server its messages reach.
//! A server has one unnamed statement, the last parsed there by any client; a client's Bind
//! or Describe of its own is preceded by a Parse of it again where it is not the client's.

use crate::pg::server::replies::Expect;
use crate::pg::server::Server;
use crate::pg::wire::{self, fe};
use bytes::{BufMut, BytesMut};

/// The client `id`'s own unnamed Parse `frame`: the server's unnamed statement is the
/// client's, and `parse` (the client's unnamed Parse) is `frame`, unless an error earlier
/// in its batch makes the server skip it ([`crate::pg::server::replies::OwnUnnamed`]).
pub(super) fn parse(server: &mut Server, id: u64, parse: &mut BytesMut, frame: &[u8]) {
    server.wbuf.put_slice(frame);
    if server.replies.push_own_unnamed(parse, frame) {
        server.unnamed_owner = Some(id);
    }
}

/// Before a Bind or Describe of the unnamed statement of client `id` (`parse`: its last
/// unnamed Parse): the client parsed it in an earlier request, on another server (or
/// another client's replaced it here), or Pake's Parse that made it the client's here is
/// in an earlier batch, which may yet fail: parse it again first. A client with none (a
/// simple Query destroyed it, its Parse failed, it never made one) gets none: the server's
/// is closed, and the message fails with 26000 as directly, not running another client's.
pub(super) fn own_unnamed(server: &mut Server, id: u64, parse: &[u8]) {
    let lost = server.unnamed_owner != Some(id) || server.replies.unnamed_in_doubt();
    if !lost || server.replies.is_skipping() {
        return;
    }
    if parse.is_empty() {
        let at = wire::begin_frame(&mut server.wbuf, fe::CLOSE);
        server.wbuf.put_slice(b"S\0");
        wire::finish_frame(&mut server.wbuf, at);
        server.replies.push(Expect::Close {
            swallow: true,
            stmt: None,
        });
    } else {
        server.wbuf.put_slice(parse);
        server.replies.push(Expect::Parse {
            swallow: true,
            registers: None,
            client: None,
        });
    }
    server.unnamed_owner = Some(id);
}
