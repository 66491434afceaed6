//! Writing replies in the protocol the client speaks (RESP2 or RESP3, chosen by `HELLO`).
//!
//! Replies Pake makes itself (`+OK`, `-ERR …`, `HELLO` maps, merged multi-key results) are
//! written with the small builders here. Replies from `fred` arrive as RESP3 frames (fred
//! lifts RESP2 replies to RESP3 types): RESP3 clients get them re-encoded by
//! `redis-protocol`; RESP2 clients get them lowered by [`frame_resp2`] (maps flattened,
//! doubles and big numbers as bulk strings, booleans as 1/0), as Redis itself does.

use bytes::{BufMut, BytesMut};
use redis_protocol::resp3::types::BytesFrame;

/// The protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

fn int_line(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.reserve(24);
    out.put_u8(prefix);
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

pub fn simple(out: &mut BytesMut, s: &str) {
    out.reserve(s.len() + 3);
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

/// An error line. `msg` starts with its code (`ERR …`, `CROSSSLOT …`); CR/LF are replaced
/// so a message can never break the framing.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.reserve(msg.len() + 3);
    out.put_u8(b'-');
    for b in msg.bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

pub fn int(out: &mut BytesMut, n: i64) {
    int_line(out, b':', n);
}

pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    int_line(out, b'$', data.len() as i64);
    out.extend_from_slice(data);
    out.put_slice(b"\r\n");
}

pub fn null(out: &mut BytesMut, proto: Proto) {
    out.put_slice(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

pub fn array(out: &mut BytesMut, len: usize) {
    int_line(out, b'*', len as i64);
}

/// A map header: `%n` for RESP3, an array of 2n for RESP2.
pub fn map(out: &mut BytesMut, pairs: usize, proto: Proto) {
    match proto {
        Proto::Resp2 => int_line(out, b'*', (pairs * 2) as i64),
        Proto::Resp3 => int_line(out, b'%', pairs as i64),
    }
}

/// Encode a frame from fred for a client speaking `proto`.
pub fn frame(out: &mut BytesMut, f: &BytesFrame, proto: Proto) {
    match proto {
        Proto::Resp3 => {
            if redis_protocol::resp3::encode::complete::extend_encode(out, f, false).is_err() {
                error(out, "ERR Pake could not encode the reply");
            }
        }
        Proto::Resp2 => frame_resp2(out, f),
    }
}

/// Lower a RESP3 frame to RESP2 the way Redis does for RESP2 connections.
pub fn frame_resp2(out: &mut BytesMut, f: &BytesFrame) {
    match f {
        BytesFrame::BlobString { data, .. }
        | BytesFrame::BigNumber { data, .. }
        | BytesFrame::VerbatimString { data, .. }
        | BytesFrame::ChunkedString(data) => bulk(out, data),
        BytesFrame::SimpleString { data, .. } => {
            out.put_u8(b'+');
            out.extend_from_slice(data);
            out.put_slice(b"\r\n");
        }
        BytesFrame::SimpleError { data, .. } => error(out, data),
        BytesFrame::BlobError { data, .. } => error(out, &String::from_utf8_lossy(data)),
        BytesFrame::Boolean { data, .. } => int(out, i64::from(*data)),
        BytesFrame::Null => null(out, Proto::Resp2),
        BytesFrame::Number { data, .. } => int(out, *data),
        BytesFrame::Double { data, .. } => bulk(out, format_double(*data).as_bytes()),
        BytesFrame::Array { data, .. } | BytesFrame::Push { data, .. } => {
            array(out, data.len());
            for item in data {
                frame_resp2(out, item);
            }
        }
        BytesFrame::Set { data, .. } => {
            array(out, data.len());
            for item in data {
                frame_resp2(out, item);
            }
        }
        BytesFrame::Map { data, .. } => {
            array(out, data.len() * 2);
            for (k, v) in data {
                frame_resp2(out, k);
                frame_resp2(out, v);
            }
        }
        BytesFrame::Hello { .. } => error(out, "ERR unexpected HELLO frame"),
    }
}

fn format_double(d: f64) -> String {
    if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{d}")
    }
}

/// Is this frame an error reply?
pub fn is_error(f: &BytesFrame) -> bool {
    matches!(
        f,
        BytesFrame::SimpleError { .. } | BytesFrame::BlobError { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn blob(s: &str) -> BytesFrame {
        BytesFrame::BlobString {
            data: Bytes::copy_from_slice(s.as_bytes()),
            attributes: None,
        }
    }

    #[test]
    fn builders() {
        let mut b = BytesMut::new();
        int(&mut b, -42);
        int(&mut b, 0);
        bulk(&mut b, b"hi");
        null(&mut b, Proto::Resp2);
        null(&mut b, Proto::Resp3);
        error(&mut b, "ERR bad\r\nthing");
        map(&mut b, 2, Proto::Resp2);
        map(&mut b, 2, Proto::Resp3);
        assert_eq!(
            &b[..],
            b":-42\r\n:0\r\n$2\r\nhi\r\n$-1\r\n_\r\n-ERR bad  thing\r\n*4\r\n%2\r\n"
        );
    }

    #[test]
    fn resp3_frames_lower_to_resp2() {
        let mut map = redis_protocol::resp3::types::FrameMap::default();
        map.insert(
            blob("f"),
            BytesFrame::Double {
                data: 1.5,
                attributes: None,
            },
        );
        let f = BytesFrame::Map {
            data: map,
            attributes: None,
        };
        let mut b = BytesMut::new();
        frame(&mut b, &f, Proto::Resp2);
        assert_eq!(&b[..], b"*2\r\n$1\r\nf\r\n$3\r\n1.5\r\n");
        let mut b = BytesMut::new();
        frame(&mut b, &f, Proto::Resp3);
        assert_eq!(&b[..], b"%1\r\n$1\r\nf\r\n,1.5\r\n");
    }
}
