//! The frontend messages the session looks inside, decoded in one place. Every step
//! (classify, forward, account) reads a Query, Parse, Bind, Describe or Close through these,
//! so a malformed message is refused the same way (08P01) wherever it is first read.

use crate::pg::wire::{self, fe, FrameError};
use std::borrow::Cow;

fn malformed(what: &'static str) -> FrameError {
    FrameError::Malformed { what }
}

/// The SQL text of a Query, for analysis. The bytes are in the client's encoding (LATIN9,
/// SJIS…), not necessarily UTF-8: what is not UTF-8 is replaced for the analysis only — the
/// frame itself is forwarded untouched.
pub(super) fn query(frame: &[u8]) -> Result<Cow<'_, str>, FrameError> {
    let (text, _) = wire::cstr(wire::body(frame)).ok_or(malformed("Query"))?;
    Ok(sql_text(text))
}

/// `text` as UTF-8, replacing what is not. `str::from_utf8` checks ASCII a word at a time;
/// `from_utf8_lossy` goes through `Utf8Chunks`, ~7 instructions a byte (callgrind).
fn sql_text(text: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(text) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(text),
    }
}

/// The frontend messages of a buffered request, one at a time.
pub(super) struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max: usize,
}

impl<'a> Frames<'a> {
    /// The messages at the start of `buf`, each at most `max` bytes (past it: 08P01).
    pub fn new(buf: &'a [u8], max: usize) -> Self {
        Frames { buf, pos: 0, max }
    }

    /// The next whole message, `None` when the buffer holds no more.
    pub fn next_any(&mut self) -> Result<Option<(u8, &'a [u8])>, FrameError> {
        let rest = &self.buf[self.pos..];
        let Some((tag, len)) = wire::frontend_frame(rest, self.max)? else {
            return Ok(None);
        };
        self.pos += len;
        Ok(Some((tag, &rest[..len])))
    }

    /// The next message, when it is whole and its tag is one of `want`.
    pub fn next(&mut self, want: &[u8]) -> Result<Option<(u8, &'a [u8])>, FrameError> {
        let msg = self.next_any()?;
        Ok(msg.filter(|(tag, _)| want.contains(tag)))
    }

    /// The bytes of the messages read so far.
    pub fn read(&self) -> usize {
        self.pos
    }

    /// An optional Describe of the unnamed statement or portal, Execute of the unnamed
    /// portal, then Sync: `Some(describe)` (the Describe's kind, if any) when that is all
    /// that follows.
    pub fn execute_unnamed(&mut self) -> Result<Option<Option<u8>>, FrameError> {
        let mut describe = None;
        let mut msg = self.next(&[fe::DESCRIBE, fe::EXECUTE])?;
        if let Some((fe::DESCRIBE, m)) = msg {
            let subject = subject(m)?;
            if !subject.name.is_empty() {
                return Ok(None);
            }
            describe = Some(subject.kind);
            msg = self.next(&[fe::EXECUTE])?;
        }
        let Some((fe::EXECUTE, execute)) = msg else {
            return Ok(None);
        };
        if wire::cstr(wire::body(execute)).is_none_or(|(portal, _)| !portal.is_empty()) {
            return Ok(None);
        }
        Ok(self.next(&[fe::SYNC])?.map(|_| describe))
    }
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
    let query = sql_text(query);
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
    bind_values(rest).map(|b| b.params)
}

/// What follows a Bind's names: formats and values.
pub(super) struct BindValues<'a> {
    /// Parameter format codes as sent: none (all text), one (for all) or one each.
    param_formats: Vec<i16>,
    /// The values, `None` for NULL.
    pub params: Vec<Option<&'a [u8]>>,
    /// Result-column format codes, as for the parameters.
    result_formats: Vec<i16>,
}

impl BindValues<'_> {
    /// Parameter `i` is sent in binary.
    pub fn param_binary(&self, i: usize) -> bool {
        format_of(&self.param_formats, i) == 1
    }

    /// The format code asked for result column `i`.
    pub fn result_format(&self, i: usize) -> i16 {
        format_of(&self.result_formats, i)
    }
}

fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [all] => *all,
        each => each.get(i).copied().unwrap_or(0),
    }
}

/// A list of `i16` format codes, counted by an `i16`.
fn formats(rest: &[u8]) -> Option<(Vec<i16>, &[u8])> {
    let (count, mut rest) = wire::i16_at(rest)?;
    let mut codes = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 2));
    for _ in 0..count {
        let (code, after) = wire::i16_at(rest)?;
        codes.push(code);
        rest = after;
    }
    Some((codes, rest))
}

/// A Bind's formats and values, from `rest` ([`Bind::rest`]); `None` when the counts or
/// lengths do not fit the frame.
pub(super) fn bind_values(rest: &[u8]) -> Option<BindValues<'_>> {
    let (param_formats, rest) = formats(rest)?;
    let (count, mut rest) = wire::i16_at(rest)?;
    let mut params = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 4));
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
    let (result_formats, _) = formats(rest)?;
    Some(BindValues {
        param_formats,
        params,
        result_formats,
    })
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
    fn bind_formats() {
        // one binary parameter of four bytes, results in binary
        let b = bind_values(b"\0\x01\0\x01\0\x01\0\0\0\x04\0\0\x30\x39\0\x01\0\x01").unwrap();
        assert_eq!(b.params, vec![Some(&b"\0\0\x30\x39"[..])]);
        assert!(b.param_binary(0));
        assert_eq!((b.result_format(0), b.result_format(3)), (1, 1));
        // no codes: all text; one code each
        let b = bind_values(b"\0\0\0\x01\0\0\0\x0212\0\x02\0\0\0\x01").unwrap();
        assert!(!b.param_binary(0));
        assert_eq!((b.result_format(0), b.result_format(1)), (0, 1));
        assert_eq!(b.result_format(2), 0);
        // the result codes cut short
        assert!(bind_values(b"\0\0\0\0\0\x02\0\x01").is_none());
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
