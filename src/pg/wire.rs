//! Postgres wire framing, sans-IO.
//!
//! After startup every message is `tag (1 byte) + length (4 bytes, counting itself) + body`.
//! The functions here look at a buffer and answer "a whole frame of N bytes is here",
//! "need more bytes" (`Ok(None)`), or an error. The declared length is checked against
//! `max_message_size` *before* anything is reserved, so a hostile client cannot make the
//! proxy allocate what it declares (the trap in `postgres-protocol`'s backend parser, which
//! is fine for a client of a trusted server but not for a proxy facing the internet).
//!
//! Builders for the backend messages the proxy itself emits live in [`backend`].

use bytes::{BufMut, BytesMut};

/// Bytes in a frame header: tag + length.
pub const HEADER_LEN: usize = 5;

/// Largest startup packet accepted (PostgreSQL's own limit is 10000 bytes).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Message tags sent by clients (frontend).
pub mod fe {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const FUNCTION_CALL: u8 = b'F';
    /// Password, SASLInitialResponse and SASLResponse all share this tag.
    pub const PASSWORD: u8 = b'p';
}

/// Message tags sent by servers (backend).
pub mod be {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Special request codes carried in place of a protocol version in a startup packet.
pub mod code {
    pub const PROTOCOL_3_0: i32 = 196_608;
    pub const SSL_REQUEST: i32 = 80_877_103;
    pub const GSSENC_REQUEST: i32 = 80_877_104;
    pub const CANCEL_REQUEST: i32 = 80_877_102;
}

/// What is wrong with a frame. Every variant is the peer's fault (08P01).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid length {len} in message of type {tag}")]
    BadLength { tag: Tag, len: i64 },
    #[error("message of type {tag} declares {len} bytes, over the limit of {max}")]
    TooLarge { tag: Tag, len: usize, max: usize },
    #[error("unknown message type {0}")]
    UnknownTag(Tag),
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
}

/// A message tag that prints as a character when it is one (`'Q'`), as hex otherwise.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(pub u8);

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Is `tag` a message a client may send after startup?
pub fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        fe::QUERY
            | fe::PARSE
            | fe::BIND
            | fe::DESCRIBE
            | fe::EXECUTE
            | fe::CLOSE
            | fe::SYNC
            | fe::FLUSH
            | fe::TERMINATE
            | fe::COPY_DATA
            | fe::COPY_DONE
            | fe::COPY_FAIL
            | fe::FUNCTION_CALL
            | fe::PASSWORD
    )
}

/// The header of the frame at the start of `buf`: `(tag, total frame length)`.
///
/// `Ok(None)` until the 5 header bytes are there. The declared length must be at least 4
/// and at most `max` before the caller reserves or waits for anything.
pub fn frame_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: Tag(tag),
            len: len.into(),
        });
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            tag: Tag(tag),
            len,
            max,
        });
    }
    Ok(Some((tag, len + 1)))
}

/// A whole frame at the start of `buf`, checked against the frontend tag set:
/// `Ok(Some((tag, frame_len)))` once all of it is buffered.
pub fn frontend_frame(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if let Some(&tag) = buf.first() {
        if !is_frontend_tag(tag) {
            return Err(FrameError::UnknownTag(Tag(tag)));
        }
    }
    match frame_header(buf, max)? {
        Some((tag, total)) if buf.len() >= total => Ok(Some((tag, total))),
        _ => Ok(None),
    }
}

/// The length of a startup-phase packet (no tag) once its 4-byte length is buffered.
pub fn startup_packet_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(FrameError::BadLength {
            tag: Tag(0),
            len: len.into(),
        });
    }
    let len = len as usize;
    if len > MAX_STARTUP_PACKET {
        return Err(FrameError::TooLarge {
            tag: Tag(0),
            len,
            max: MAX_STARTUP_PACKET,
        });
    }
    Ok(Some(len))
}

/// Split a NUL-terminated string off the front of `buf`.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = memchr::memchr(0, buf)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

/// Read a big-endian i16 off the front of `buf`.
pub fn i16_at(buf: &[u8]) -> Option<(i16, &[u8])> {
    let bytes: [u8; 2] = buf.get(..2)?.try_into().ok()?;
    Some((i16::from_be_bytes(bytes), &buf[2..]))
}

/// Read a big-endian i32 off the front of `buf`.
pub fn i32_at(buf: &[u8]) -> Option<(i32, &[u8])> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some((i32::from_be_bytes(bytes), &buf[4..]))
}

/// Body of a frame (without tag and length).
pub fn body(frame: &[u8]) -> &[u8] {
    frame.get(HEADER_LEN..).unwrap_or_default()
}

/// Start a frame with `tag`, returning the offset of its length field for [`finish_frame`].
pub fn begin_frame(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Patch the length field written by [`begin_frame`].
pub fn finish_frame(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Put a NUL-terminated string.
pub fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Builders for the backend messages Pake writes itself.
pub mod backend {
    use super::{be, begin_frame, finish_frame, put_cstr};
    use bytes::{BufMut, BytesMut};

    /// The fields of an ErrorResponse or NoticeResponse.
    #[derive(Debug, Clone)]
    pub struct Fields<'a> {
        /// `ERROR`, `FATAL`, `WARNING`, `NOTICE`…
        pub severity: &'a str,
        /// Five-character SQLSTATE.
        pub code: &'a str,
        pub message: &'a str,
        pub detail: Option<&'a str>,
        pub hint: Option<&'a str>,
    }

    fn put_fields(buf: &mut BytesMut, tag: u8, f: &Fields<'_>) {
        let at = begin_frame(buf, tag);
        buf.put_u8(b'S');
        put_cstr(buf, f.severity.as_bytes());
        buf.put_u8(b'V');
        put_cstr(buf, f.severity.as_bytes());
        buf.put_u8(b'C');
        put_cstr(buf, f.code.as_bytes());
        buf.put_u8(b'M');
        put_cstr(buf, f.message.as_bytes());
        if let Some(d) = f.detail {
            buf.put_u8(b'D');
            put_cstr(buf, d.as_bytes());
        }
        if let Some(h) = f.hint {
            buf.put_u8(b'H');
            put_cstr(buf, h.as_bytes());
        }
        buf.put_u8(0);
        finish_frame(buf, at);
    }

    pub fn error_response(buf: &mut BytesMut, f: &Fields<'_>) {
        put_fields(buf, be::ERROR_RESPONSE, f);
    }

    pub fn notice_response(buf: &mut BytesMut, f: &Fields<'_>) {
        put_fields(buf, be::NOTICE_RESPONSE, f);
    }

    fn empty(buf: &mut BytesMut, tag: u8) {
        buf.put_u8(tag);
        buf.put_i32(4);
    }

    pub fn parse_complete(buf: &mut BytesMut) {
        empty(buf, be::PARSE_COMPLETE);
    }

    pub fn bind_complete(buf: &mut BytesMut) {
        empty(buf, be::BIND_COMPLETE);
    }

    pub fn close_complete(buf: &mut BytesMut) {
        empty(buf, be::CLOSE_COMPLETE);
    }

    pub fn no_data(buf: &mut BytesMut) {
        empty(buf, be::NO_DATA);
    }

    /// ParameterDescription of a statement that takes no parameters.
    pub fn no_parameters(buf: &mut BytesMut) {
        buf.put_u8(be::PARAMETER_DESCRIPTION);
        buf.put_i32(6);
        buf.put_i16(0);
    }

    pub fn empty_query_response(buf: &mut BytesMut) {
        empty(buf, be::EMPTY_QUERY_RESPONSE);
    }

    pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
        buf.put_u8(be::READY_FOR_QUERY);
        buf.put_i32(5);
        buf.put_u8(status);
    }

    pub fn command_complete(buf: &mut BytesMut, tag: &str) {
        let at = begin_frame(buf, be::COMMAND_COMPLETE);
        put_cstr(buf, tag.as_bytes());
        finish_frame(buf, at);
    }

    pub fn parameter_status(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
        let at = begin_frame(buf, be::PARAMETER_STATUS);
        put_cstr(buf, name);
        put_cstr(buf, value);
        finish_frame(buf, at);
    }

    pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
        buf.put_u8(be::BACKEND_KEY_DATA);
        buf.put_i32(12);
        buf.put_i32(pid);
        buf.put_i32(secret);
    }

    /// Authentication request with sub-code and payload.
    pub fn authentication(buf: &mut BytesMut, code: i32, payload: &[u8]) {
        let at = begin_frame(buf, be::AUTHENTICATION);
        buf.put_i32(code);
        buf.put_slice(payload);
        finish_frame(buf, at);
    }

    pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unsupported: &[&[u8]]) {
        let at = begin_frame(buf, be::NEGOTIATE_PROTOCOL_VERSION);
        buf.put_i32(minor);
        buf.put_i32(unsupported.len() as i32);
        for opt in unsupported {
            put_cstr(buf, opt);
        }
        finish_frame(buf, at);
    }

    /// ParameterDescription of a statement taking one parameter of type `oid`.
    pub fn one_parameter(buf: &mut BytesMut, oid: u32) {
        buf.put_u8(be::PARAMETER_DESCRIPTION);
        buf.put_i32(10);
        buf.put_i16(1);
        buf.put_u32(oid);
    }

    /// One column's field of a RowDescription: no table, type `oid` of size `len`.
    fn put_column(buf: &mut BytesMut, name: &str, oid: i32, len: i16, format: i16) {
        put_cstr(buf, name.as_bytes());
        buf.put_i32(0); // table oid
        buf.put_i16(0); // column number
        buf.put_i32(oid);
        buf.put_i16(len);
        buf.put_i32(-1); // type modifier
        buf.put_i16(format);
    }

    /// A RowDescription of one `bool` column in `format` (0 text, 1 binary).
    pub fn bool_column(buf: &mut BytesMut, name: &str, format: i16) {
        let at = begin_frame(buf, be::ROW_DESCRIPTION);
        buf.put_i16(1);
        put_column(buf, name, 16, 1, format);
        finish_frame(buf, at);
    }

    /// A DataRow of one `bool` in `format` (0 text, 1 binary).
    pub fn bool_row(buf: &mut BytesMut, value: bool, format: i16) {
        let at = begin_frame(buf, be::DATA_ROW);
        buf.put_i16(1);
        buf.put_i32(1);
        match format {
            1 => buf.put_u8(u8::from(value)),
            _ => buf.put_u8(if value { b't' } else { b'f' }),
        }
        finish_frame(buf, at);
    }

    /// A RowDescription of text columns (for answers Pake produces itself).
    pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
        let at = begin_frame(buf, be::ROW_DESCRIPTION);
        buf.put_i16(columns.len() as i16);
        for name in columns {
            put_column(buf, name, 25, -1, 0); // text, in text format
        }
        finish_frame(buf, at);
    }

    /// A DataRow of text values (`None` is NULL).
    pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
        let at = begin_frame(buf, be::DATA_ROW);
        buf.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v.as_bytes());
                }
                None => buf.put_i32(-1),
            }
        }
        finish_frame(buf, at);
    }
}

/// Read the SQLSTATE (`C` field) out of an ErrorResponse/NoticeResponse body.
pub fn error_code(body: &[u8]) -> Option<&[u8]> {
    error_field(body, b'C')
}

/// Read one field out of an ErrorResponse/NoticeResponse body.
pub fn error_field(mut body: &[u8], field: u8) -> Option<&[u8]> {
    while let Some((&kind, rest)) = body.split_first() {
        if kind == 0 {
            return None;
        }
        let (value, rest) = cstr(rest)?;
        if kind == field {
            return Some(value);
        }
        body = rest;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn needs_more_until_whole() {
        let f = frame(b'Q', b"select 1\0");
        for cut in 0..f.len() {
            assert_eq!(frontend_frame(&f[..cut], 1024), Ok(None), "cut at {cut}");
        }
        assert_eq!(frontend_frame(&f, 1024), Ok(Some((b'Q', f.len()))));
    }

    #[test]
    fn rejects_short_and_negative_lengths() {
        let mut f = frame(b'Q', b"");
        f[1..5].copy_from_slice(&3i32.to_be_bytes());
        assert!(matches!(
            frontend_frame(&f, 1024),
            Err(FrameError::BadLength { len: 3, .. })
        ));
        f[1..5].copy_from_slice(&(-7i32).to_be_bytes());
        assert!(matches!(
            frontend_frame(&f, 1024),
            Err(FrameError::BadLength { len: -7, .. })
        ));
    }

    #[test]
    fn caps_declared_length_before_waiting() {
        let mut f = vec![b'Q'];
        f.extend_from_slice(&(1_000_000i32).to_be_bytes());
        assert!(matches!(
            frontend_frame(&f, 1024),
            Err(FrameError::TooLarge { len: 1_000_000, .. })
        ));
    }

    #[test]
    fn unknown_tag_is_an_error_at_first_byte() {
        assert_eq!(
            frontend_frame(b"\x01", 1024),
            Err(FrameError::UnknownTag(Tag(1)))
        );
        assert_eq!(format!("{}", Tag(b'Q')), "'Q'");
        assert_eq!(format!("{}", Tag(0)), "0x00");
    }

    #[test]
    fn startup_length_bounds() {
        assert_eq!(startup_packet_len(&[0, 0]), Ok(None));
        assert!(startup_packet_len(&[0, 0, 0, 4]).is_err());
        assert!(startup_packet_len(&20_000i32.to_be_bytes()).is_err());
        assert_eq!(startup_packet_len(&16i32.to_be_bytes()), Ok(Some(16)));
    }

    #[test]
    fn builders_produce_parseable_frames() {
        let mut b = BytesMut::new();
        backend::error_response(
            &mut b,
            &backend::Fields {
                severity: "FATAL",
                code: "08P01",
                message: "bad",
                detail: Some("d"),
                hint: None,
            },
        );
        let (tag, len) = frame_header(&b, usize::MAX).unwrap().unwrap();
        assert_eq!(tag, be::ERROR_RESPONSE);
        assert_eq!(len, b.len());
        assert_eq!(error_code(body(&b)), Some(&b"08P01"[..]));
        assert_eq!(error_field(body(&b), b'M'), Some(&b"bad"[..]));
        assert_eq!(error_field(body(&b), b'H'), None);

        let mut r = BytesMut::new();
        backend::ready_for_query(&mut r, b'I');
        assert_eq!(&r[..], b"Z\0\0\0\x05I");
    }

    #[test]
    fn cstr_and_ints() {
        assert_eq!(cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(cstr(b"ab"), None);
        assert_eq!(i16_at(&[0, 5, 9]), Some((5, &[9u8][..])));
        assert_eq!(i32_at(&[0, 0, 1]), None);
    }
}
