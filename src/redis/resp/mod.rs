//! RESP framing, sans-IO: find where a frame ends in a buffer, check it against limits
//! *before* anything is reserved for it, then decode it with `redis-protocol` while keeping
//! the raw frame bytes (forwarded as they are on dedicated links).
//!
//! [`scan`] walks one RESP2 or RESP3 value without allocating and answers "a whole frame of
//! N bytes is here" (`Ok(Some(n))`), "need more" (`Ok(None)`) or a [`FrameError`]. A declared
//! bulk length over `max_bulk_len`, an aggregate over `max_elements` or nesting deeper than
//! `max_depth` is refused as soon as its header is read, so a hostile client cannot make the
//! proxy buffer what it declares. [`take_request`] uses it on the client side (multibulk and
//! inline commands); links to Redis use it to delimit replies and pushes.

pub mod encode;

use bytes::{Bytes, BytesMut};

/// Limits applied while scanning.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string (Redis: `proto-max-bulk-len`, 512MiB by default).
    pub max_bulk_len: usize,
    /// Most elements in one aggregate (Redis caps a multibulk request at 1M arguments).
    pub max_elements: usize,
    /// Deepest nesting of aggregates; 1 is a flat array.
    pub max_depth: usize,
    /// Longest inline command line (Redis: 64KiB).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 << 20,
            max_elements: 1 << 20,
            max_depth: 8,
            max_inline: 64 << 10,
        }
    }
}

impl Limits {
    /// Limits for replies from Redis, which we trust to be well-formed but not small.
    pub fn backend() -> Limits {
        Limits {
            max_bulk_len: usize::MAX / 4,
            max_elements: usize::MAX / 4,
            max_depth: 64,
            max_inline: 0,
        }
    }
}

/// Why a frame cannot be accepted. Every variant means the stream can no longer be
/// trusted: the client gets `-ERR Protocol error: …` and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid bulk length")]
    BadBulkLength,
    #[error("bulk string of {len} bytes is over max_bulk_len ({max})")]
    BulkTooLong { len: usize, max: usize },
    #[error("invalid multibulk length")]
    BadAggregateLength,
    #[error("aggregate of {len} elements is over the limit of {max}")]
    TooManyElements { len: usize, max: usize },
    #[error("nesting deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("unexpected type byte {0:?}")]
    BadType(char),
    #[error("expected CRLF")]
    MissingCrlf,
    #[error("invalid integer")]
    BadInteger,
    #[error("too big inline request")]
    InlineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("expected '$', got {0:?}")]
    ExpectedBulk(char),
    #[error("{0}")]
    Decode(String),
}

/// Find the end of the line starting at `pos`: the index of its `\r`.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let mut from = pos;
    loop {
        let at = from + buf.get(from..)?.iter().position(|&b| b == b'\r')?;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
}

/// The longest length or count line there is (`-` and 19 digits): a longer one without its
/// CRLF is refused, not waited for.
const MAX_COUNT_LINE: usize = 20;

fn parse_int(digits: &[u8]) -> Result<i64, FrameError> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(FrameError::BadInteger);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(FrameError::BadInteger);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(FrameError::BadInteger)?;
    }
    Ok(if neg { -v } else { v })
}

/// Scan one value at `pos`; the index just past it, or `None` when incomplete.
pub fn scan(buf: &[u8], pos: usize, limits: &Limits) -> Result<Option<usize>, FrameError> {
    Scanner::at(pos).scan(buf, limits)
}

/// A scan that resumes where the last call stopped for want of bytes. A stream reader
/// keeps one per buffer: a 2.5 MB reply (a 200,000-key MGET) arriving in 16 KiB reads was
/// scanned from its first byte after every read, ~150 times over — 13 % of Pake's CPU
/// for that command. Positions are offsets into the buffer, so the buffer may only grow
/// at the back between calls; a whole frame found (and taken off the front by the caller)
/// starts the next scan at 0. Iterative: the nesting a limit allows costs no stack.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    /// Start of the next value to read.
    pos: usize,
    /// The aggregates open around `pos`, outermost first.
    open: Vec<Open>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    /// Values still to come before this aggregate is whole.
    left: usize,
    /// The nesting depth of those values.
    depth: usize,
}

impl Scanner {
    fn at(pos: usize) -> Scanner {
        Scanner {
            pos,
            open: Vec::new(),
        }
    }

    /// Forget a partial scan (its buffer was taken or replaced).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
    }

    /// The end of the frame starting at the buffer's front (or at the `pos` this scanner
    /// was made for), `Ok(None)` when more bytes are needed. After `Ok(Some(_))` or an
    /// error the scanner is ready for the next frame at 0.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
        let r = self.step(buf, limits);
        if !matches!(r, Ok(None)) {
            self.reset();
        }
        r
    }

    fn step(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
        loop {
            let depth = self.open.last().map_or(0, |o| o.depth);
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let Some(eol) = line_end(buf, self.pos + 1) else {
                // the type byte, the longest line and its `\r` may all be here, waiting for `\n`
                if buf.len() - self.pos > MAX_COUNT_LINE + 2 {
                    match kind {
                        b'$' | b'!' | b'=' => return Err(FrameError::BadBulkLength),
                        b'*' | b'~' | b'>' | b'%' | b'|' => {
                            return Err(FrameError::BadAggregateLength)
                        }
                        _ => {}
                    }
                }
                return Ok(None);
            };
            let header = &buf[self.pos + 1..eol];
            let after = eol + 2;
            let end = match kind {
                // simple types: the line is the value
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => after,
                // blob types: length line, payload, CRLF
                b'$' | b'!' | b'=' => match blob_end(kind, header, after, buf, limits)? {
                    Some(end) => end,
                    None => return Ok(None),
                },
                // aggregates: count line, then count (or 2 × count for maps) values
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_int(header).map_err(|_| FrameError::BadAggregateLength)?;
                    if n == -1 && kind == b'*' {
                        after // RESP2 null array
                    } else {
                        let n = usize::try_from(n).map_err(|_| FrameError::BadAggregateLength)?;
                        if n > limits.max_elements {
                            return Err(FrameError::TooManyElements {
                                len: n,
                                max: limits.max_elements,
                            });
                        }
                        if depth + 1 > limits.max_depth {
                            return Err(FrameError::TooDeep {
                                max: limits.max_depth,
                            });
                        }
                        let count = if matches!(kind, b'%' | b'|') {
                            n * 2
                        } else {
                            n
                        };
                        self.pos = after;
                        if kind == b'|' {
                            // an attribute precedes the value it describes, at its own
                            // depth: both make one value (2 = the pairs, then that value)
                            self.open.push(Open { left: 2, depth });
                            if count == 0 {
                                self.done_one();
                                continue;
                            }
                        }
                        if count > 0 {
                            self.open.push(Open {
                                left: count,
                                depth: depth + 1,
                            });
                            continue;
                        }
                        after // an empty aggregate
                    }
                }
                other => return Err(FrameError::BadType(char::from(other))),
            };
            self.pos = end;
            if self.done_one() {
                return Ok(Some(end));
            }
        }
    }

    /// A value ended at `pos`: count it in the aggregates around it; `true` when that
    /// completed the frame.
    fn done_one(&mut self) -> bool {
        while let Some(top) = self.open.last_mut() {
            top.left -= 1;
            if top.left > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }
}

/// The end of a blob value whose header line ended at `after`, `None` when incomplete.
fn blob_end(
    kind: u8,
    header: &[u8],
    after: usize,
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<usize>, FrameError> {
    if header == b"?" {
        return Err(FrameError::BadBulkLength);
    }
    let len = parse_int(header).map_err(|_| FrameError::BadBulkLength)?;
    if len == -1 && kind == b'$' {
        return Ok(Some(after)); // RESP2 null bulk
    }
    let len = usize::try_from(len).map_err(|_| FrameError::BadBulkLength)?;
    if len > limits.max_bulk_len {
        return Err(FrameError::BulkTooLong {
            len,
            max: limits.max_bulk_len,
        });
    }
    let end = after + len + 2;
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Err(FrameError::MissingCrlf);
    }
    Ok(Some(end))
}

/// One client command: the raw frame bytes and its arguments (views into those bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub raw: Bytes,
    pub args: Vec<Bytes>,
    /// Sent as an inline command (a plain text line) rather than a multibulk array.
    pub inline: bool,
}

/// Take the next whole command off the front of `buf`. `Ok(None)` means more bytes are
/// needed (nothing is consumed). Blank inline lines are skipped, as Redis does.
pub fn take_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, FrameError> {
    take_request_resuming(buf, &mut Scanner::default(), limits)
}

/// [`take_request`] for a reader that keeps `scanner` with `buf`, so a long command arriving
/// over many reads is scanned once, not from its start after every read.
pub fn take_request_resuming(
    buf: &mut BytesMut,
    scanner: &mut Scanner,
    limits: &Limits,
) -> Result<Option<Request>, FrameError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != b'*' {
            match take_inline(buf, limits)? {
                Some(r) if r.args.is_empty() => continue,
                other => return Ok(other),
            }
        }
        if let Some(len) = empty_count(buf) {
            let _ = buf.split_to(len);
            continue;
        }
        let Some(len) = scanner.scan(buf, limits)? else {
            return Ok(None);
        };
        let args = match bulk_args(&buf[..len]) {
            Some(args) => args,
            // anything but an array of bulk strings: redis-protocol says what is wrong
            None => decode_args(&buf[..len])?,
        };
        let raw = buf.split_to(len).freeze();
        let args = args.into_iter().map(|r| raw.slice(r)).collect();
        return Ok(Some(Request {
            raw,
            args,
            inline: false,
        }));
    }
}

/// The length of a whole request line `*0` or `*-n` at the front of `buf`: Redis skips such
/// a request and reads on (`processMultibulkBuffer`), so Pake does too.
fn empty_count(buf: &[u8]) -> Option<usize> {
    let eol = line_end(buf, 1)?;
    let n = parse_int(&buf[1..eol]).ok()?;
    (n <= 0).then_some(eol + 2)
}

/// The byte range of each argument of a complete request that is an array of bulk strings
/// (what every client library sends), in one pass over it; `None` for anything else.
/// redis-protocol's decoder took ~25 ms for a 200,000-key MGET, on the session's thread,
/// ahead of every other client of that thread.
fn bulk_args(frame: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let header_end = line_end(frame, 1)?;
    if frame.first() != Some(&b'*') {
        return None;
    }
    let n = plain_count(&frame[1..header_end])?;
    // each argument takes at least 6 bytes (`$0\r\n\r\n`): a count the frame cannot hold
    // is not believed (and allocates nothing)
    if n > frame.len() / 6 {
        return None;
    }
    let mut args = Vec::with_capacity(n);
    let mut pos = header_end + 2;
    for _ in 0..n {
        if frame.get(pos) != Some(&b'$') {
            return None;
        }
        let eol = line_end(frame, pos + 1)?;
        let len = plain_count(&frame[pos + 1..eol])?;
        let start = eol + 2;
        let end = start.checked_add(len)?;
        if frame.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        args.push(start..end);
        pos = end + 2;
    }
    (pos == frame.len()).then_some(args)
}

/// A count or length as clients write it: digits, no sign, no leading zero.
fn plain_count(digits: &[u8]) -> Option<usize> {
    let ok = match digits {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.len() < 18 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    ok.then(|| digits.iter().fold(0, |v, d| v * 10 + usize::from(d - b'0')))
}

/// Decode a complete multibulk request with redis-protocol; the byte range of each argument.
fn decode_args(frame: &[u8]) -> Result<Vec<std::ops::Range<usize>>, FrameError> {
    use redis_protocol::resp2::types::RangeFrame;
    let decoded = redis_protocol::resp2::decode::decode_range(frame)
        .map_err(|e| FrameError::Decode(e.details().to_string()))?;
    let Some((RangeFrame::Array(items), _)) = decoded else {
        return match decoded {
            // `*-1` and friends: not a command
            Some(_) => Err(FrameError::BadAggregateLength),
            None => Err(FrameError::Decode("incomplete frame after scan".into())),
        };
    };
    items
        .into_iter()
        .map(|item| match item {
            RangeFrame::BulkString((start, end)) => Ok(start..end),
            RangeFrame::Array(_) => Err(FrameError::ExpectedBulk('*')),
            RangeFrame::Integer(_) => Err(FrameError::ExpectedBulk(':')),
            RangeFrame::SimpleString(_) => Err(FrameError::ExpectedBulk('+')),
            RangeFrame::Error(_) => Err(FrameError::ExpectedBulk('-')),
            RangeFrame::Null => Err(FrameError::BadBulkLength),
        })
        .collect()
}

/// An inline command: one line, arguments split on blanks, with "…" and '…' quoting.
fn take_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, FrameError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(FrameError::InlineTooLong);
        }
        return Ok(None);
    };
    if nl > limits.max_inline {
        return Err(FrameError::InlineTooLong);
    }
    let raw = buf.split_to(nl + 1).freeze();
    let line = raw[..nl].strip_suffix(b"\r").unwrap_or(&raw[..nl]);
    let args = split_inline(line)?.into_iter().map(Bytes::from).collect();
    Ok(Some(Request {
        raw,
        args,
        inline: true,
    }))
}

fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(FrameError::UnbalancedQuotes),
                        Some(&b'\\') if q == b'"' && i + 1 < line.len() => {
                            arg.push(unescape(line[i + 1]));
                            i += 2;
                        }
                        Some(&c) if c == q => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            arg.push(c);
                            i += 1;
                        }
                    }
                }
                if i < line.len() && !line[i].is_ascii_whitespace() {
                    return Err(FrameError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    Ok(args)
}

fn unescape(c: u8) -> u8 {
    match c {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        other => other,
    }
}

/// Fuzz entry point: whatever the bytes, the decoder must not panic, must consume exactly
/// the frames it reports, and must never hand back a bulk over the limit.
pub fn fuzz_logic(data: &[u8]) {
    let limits = Limits {
        max_bulk_len: 64,
        max_elements: 16,
        max_depth: 3,
        max_inline: 128,
    };
    let mut buf = BytesMut::from(data);
    for _ in 0..data.len() + 1 {
        let before = buf.len();
        match take_request(&mut buf, &limits) {
            Ok(Some(req)) => {
                assert!(buf.len() < before, "a request consumed nothing");
                // blank inline lines before a command are consumed too
                assert!(before - buf.len() >= req.raw.len());
                assert!(req
                    .args
                    .iter()
                    .all(|a| a.len() <= limits.max_inline.max(64)));
            }
            Ok(None) | Err(_) => break,
        }
    }
    let whole = scan(data, 0, &Limits::backend());
    // the one-pass argument reader agrees with redis-protocol wherever it answers
    if let Ok(Some(end)) = whole {
        if let Some(fast) = bulk_args(&data[..end]) {
            assert_eq!(Some(fast), decode_args(&data[..end]).ok(), "{data:?}");
        }
    }
    // the same bytes arriving a few at a time: a resumed scan agrees with the one-shot scan
    // (the step is the first byte, so the corpus explores the split points too)
    let step = usize::from(data.first().copied().unwrap_or(1) % 7) + 1;
    let mut scanner = Scanner::default();
    let mut seen = 0;
    let resumed = loop {
        seen = (seen + step).min(data.len());
        match scanner.scan(&data[..seen], &Limits::backend()) {
            Ok(None) if seen < data.len() => continue,
            other => break other,
        }
    };
    match (&whole, &resumed) {
        // an error may show at an earlier split (a count line too long to wait for)
        (Err(_), Err(_)) => {}
        _ => assert_eq!(whole, resumed, "resumed scan disagrees"),
    }
}

/// One whole frame Redis sent in `proto`, decoded (RESP2 frames as their RESP3 equivalent:
/// RESP2's null bulk `$-1` is not valid RESP3); `None` when it cannot be.
pub fn decode_frame(
    raw: &Bytes,
    proto: encode::Proto,
) -> Option<redis_protocol::resp3::types::BytesFrame> {
    match proto {
        encode::Proto::Resp3 => redis_protocol::resp3::decode::complete::decode_bytes(raw)
            .ok()
            .flatten()
            .map(|(f, _)| f),
        encode::Proto::Resp2 => redis_protocol::resp2::decode::decode_bytes(raw)
            .ok()
            .flatten()
            .map(|(f, _)| f.into_resp3()),
    }
}

#[cfg(test)]
mod tests;
