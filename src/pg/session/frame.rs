//! The frontend messages the session looks inside, decoded in one place. Every step
//! (classify, forward, account) reads a Query, Parse, Bind, Describe or Close through these,
//! so a malformed message is refused the same way (08P01) wherever it is first read.

use crate::pg::wire::{self, FrameError};
use std::borrow::Cow;

fn malformed(what: &'static str) -> FrameError {
    FrameError::Malformed { what }
}

/// The SQL text of a Query, for analysis. The bytes are in the client's encoding (LATIN9,
/// SJIS…), not necessarily UTF-8: what is not UTF-8 is replaced for the analysis only — the
/// frame itself is forwarded untouched.
pub(super) fn query(frame: &[u8]) -> Result<Cow<'_, str>, FrameError> {
    let (text, _) = wire::cstr(wire::body(frame)).ok_or(malformed("Query"))?;
    Ok(String::from_utf8_lossy(text))
}

/// The head of a Parse.
pub(super) struct Parse<'a> {
    /// The statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// Everything after the name (query text, parameter types): what the process-wide
    /// statement registry interns.
    pub definition: &'a [u8],
    /// The query text for analysis (see [`query`] on client encodings).
    pub query: Cow<'a, str>,
}

pub(super) fn parse(frame: &[u8]) -> Result<Parse<'_>, FrameError> {
    let (name, definition) = wire::cstr(wire::body(frame)).ok_or(malformed("Parse"))?;
    let (query, _) = wire::cstr(definition).ok_or(malformed("Parse"))?;
    let query = String::from_utf8_lossy(query);
    Ok(Parse {
        name,
        definition,
        query,
    })
}

/// The head of a Bind.
pub(super) struct Bind<'a> {
    pub portal: &'a [u8],
    /// The statement name; empty for the unnamed statement.
    pub statement: &'a [u8],
    /// Parameter formats and values, result formats: forwarded as they are.
    pub rest: &'a [u8],
}

pub(super) fn bind(frame: &[u8]) -> Result<Bind<'_>, FrameError> {
    let (portal, rest) = wire::cstr(wire::body(frame)).ok_or(malformed("Bind"))?;
    let (statement, rest) = wire::cstr(rest).ok_or(malformed("Bind"))?;
    Ok(Bind {
        portal,
        statement,
        rest,
    })
}

/// The parameter values of a Bind, from `rest` ([`Bind::rest`]): `None` for NULL. `None`
/// for the whole when the counts or lengths do not fit the frame.
pub(super) fn bind_params(rest: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (formats, rest) = wire::i16_at(rest)?;
    let rest = rest.get(2 * usize::try_from(formats).ok()?..)?;
    let (count, mut rest) = wire::i16_at(rest)?;
    let mut params = Vec::with_capacity(usize::try_from(count).ok()?);
    for _ in 0..count {
        let (len, after) = wire::i32_at(rest)?;
        if len < 0 {
            params.push(None);
            rest = after;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        params.push(Some(after.get(..len)?));
        rest = &after[len..];
    }
    Some(params)
}

/// What a Describe or a Close is about.
pub(super) struct Subject<'a> {
    /// `b'S'` for a prepared statement, `b'P'` for a portal.
    pub kind: u8,
    pub name: &'a [u8],
}

impl Subject<'_> {
    pub fn is_named_statement(&self) -> bool {
        self.kind == b'S' && !self.name.is_empty()
    }
}

pub(super) fn subject(frame: &[u8]) -> Result<Subject<'_>, FrameError> {
    let (&kind, rest) = wire::body(frame)
        .split_first()
        .ok_or(malformed("Describe/Close"))?;
    let (name, _) = wire::cstr(rest).ok_or(malformed("Describe/Close"))?;
    Ok(Subject { kind, name })
}

/// A whole frontend message (tests).
#[cfg(test)]
pub(super) fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    let at = wire::begin_frame(&mut buf, tag);
    bytes::BufMut::put_slice(&mut buf, body);
    wire::finish_frame(&mut buf, at);
    buf.to_vec()
}

#[cfg(test)]
mod tests {
    use super::framed as frame;
    use super::*;

    #[test]
    fn query_text_needs_nul_not_utf8() {
        assert_eq!(query(&frame(b'Q', b"select 1\0")).unwrap(), "select 1");
        assert!(query(&frame(b'Q', b"select 1")).is_err());
        // LATIN9 '\xa4' is the euro sign: analysed as a replacement character
        assert_eq!(
            query(&frame(b'Q', b"select '\xa4'\0")).unwrap(),
            "select '\u{fffd}'"
        );
    }

    #[test]
    fn bind_parameter_values() {
        // two formats, three values: 'on', NULL, empty
        let rest = b"\0\x02\0\0\0\x01\0\x03\0\0\0\x02on\xff\xff\xff\xff\0\0\0\0\0\0";
        let got = bind_params(rest).unwrap();
        assert_eq!(got, vec![Some(&b"on"[..]), None, Some(&b""[..])]);
        // a length past the frame, a negative count
        assert_eq!(bind_params(b"\0\0\0\x01\0\0\0\x09on"), None);
        assert_eq!(bind_params(b"\0\0\xff\xff"), None);
        assert_eq!(bind_params(b"\0\x05\0\0"), None);
    }

    #[test]
    fn parse_and_bind_heads() {
        let p = frame(b'P', b"s1\0select $1\0\0\x01\0\0\0\x17");
        let p = parse(&p).unwrap();
        assert_eq!((p.name, &*p.query), (&b"s1"[..], "select $1"));
        assert_eq!(p.definition, b"select $1\0\0\x01\0\0\0\x17");
        assert!(parse(&frame(b'P', b"stmt\0select")).is_err());
        assert!(
            parse(&frame(b'P', b"s\0\xff\0\0\0")).is_ok(),
            "any client encoding"
        );
        let b = frame(b'B', b"p\0s1\0\0\0\0\0\0\0");
        let b = bind(&b).unwrap();
        assert_eq!((b.portal, b.statement), (&b"p"[..], &b"s1"[..]));
        assert_eq!(b.rest, b"\0\0\0\0\0\0");
        assert!(bind(&frame(b'B', b"p\0s1")).is_err());
    }

    #[test]
    fn describe_and_close_subjects() {
        let s = frame(b'D', b"Ss1\0");
        let s = subject(&s).unwrap();
        assert!(s.is_named_statement());
        let p = frame(b'C', b"P\0");
        assert!(!subject(&p).unwrap().is_named_statement());
        assert!(subject(&frame(b'D', b"")).is_err());
        assert!(subject(&frame(b'D', b"Sx")).is_err());
    }
}
