//! A minimal RESP client for the load generator. A full client (fred) greets the server
//! with `HELLO`/`CLIENT SETNAME` and probes the topology, which twemproxy rejects; this one
//! sends exactly the commands the scenario names, pipelines them, and parses replies with a
//! sans-IO function (`Ok(None)`: need more bytes). RESP3's types are read too (a scenario
//! with `client_tracking` says `HELLO 3`): maps and sets as arrays, and out-of-band pushes
//! (invalidations) counted and set aside, never taken for a command's reply.

use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    /// RESP3 out-of-band data (`>`): an invalidation, a pub/sub message.
    Push(Vec<Reply>),
}

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("redis I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply: {0}")]
    Protocol(&'static str),
    #[error("connection closed by the server")]
    Closed,
}

/// Deepest nesting accepted in a reply (CLUSTER SLOTS needs 3).
const MAX_DEPTH: usize = 8;
/// Largest bulk string accepted in a reply.
const MAX_BULK: usize = 64 << 20;

/// Parse one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`, or `Ok(None)`
/// when the reply is not complete yet.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn int(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Protocol("bad integer"))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Protocol("nested too deep"));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let text_string = || String::from_utf8_lossy(text).into_owned();
    match tag {
        // RESP3 double, boolean and big number read as their text
        b'+' | b',' | b'#' | b'(' => Ok(Some((Reply::Simple(text_string()), next))),
        b'_' => Ok(Some((Reply::Bulk(None), next))),
        b'-' => Ok(Some((Reply::Error(text_string()), next))),
        b':' => Ok(Some((Reply::Int(int(text)?), next))),
        // a verbatim string keeps its `txt:` prefix
        b'$' | b'=' => {
            let len = int(text)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::Protocol("bad length"))?;
            if len > MAX_BULK {
                return Err(RespError::Protocol("bulk string too large"));
            }
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            let body = buf[next..next + len].to_vec();
            Ok(Some((Reply::Bulk(Some(body)), next + len + 2)))
        }
        b'*' | b'~' | b'%' | b'>' => {
            let n = int(text)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            // a map's pairs flattened, as RESP2 sends them
            let n = if tag == b'%' { n.saturating_mul(2) } else { n };
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((item, used)) => {
                        items.push(item);
                        pos = used;
                    }
                    None => return Ok(None),
                }
            }
            if tag == b'>' {
                return Ok(Some((Reply::Push(items), pos)));
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        _ => Err(RespError::Protocol("unknown reply type")),
    }
}

/// The keys an invalidation push names (Redis sends one per message, Pake as many as
/// were queued for the client; a flush, or a push of another kind, counts one).
fn invalidated(push: &[Reply]) -> u64 {
    match push {
        [Reply::Bulk(Some(kind)), Reply::Array(Some(keys))] if kind == b"invalidate" => {
            keys.len() as u64
        }
        _ => 1,
    }
}

/// One connection; commands are queued with [`Resp::push`] and sent by [`Resp::round_trip`].
pub struct Resp {
    stream: TcpStream,
    input: BytesMut,
    output: Vec<u8>,
    queued: usize,
    pushes: u64,
}

impl Resp {
    pub async fn connect(addr: SocketAddr) -> Result<Resp, RespError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            stream,
            input: BytesMut::with_capacity(16 << 10),
            output: Vec::with_capacity(4 << 10),
            queued: 0,
            pushes: 0,
        })
    }

    /// Queue one command (an array of bulk strings).
    pub fn push(&mut self, args: &[&[u8]]) {
        let out = &mut self.output;
        out.push(b'*');
        out.extend_from_slice(args.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for a in args {
            out.push(b'$');
            out.extend_from_slice(a.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.queued += 1;
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Keys invalidated by the pushes read since the last call (a flush, or any other
    /// push, counts one), set aside by [`Resp::round_trip`].
    pub fn take_pushes(&mut self) -> u64 {
        std::mem::take(&mut self.pushes)
    }

    /// Send everything queued, read one reply per command.
    pub async fn round_trip(&mut self) -> Result<Vec<Reply>, RespError> {
        let n = std::mem::take(&mut self.queued);
        self.stream.write_all(&self.output).await?;
        self.output.clear();
        let mut replies = Vec::with_capacity(n);
        while replies.len() < n {
            match parse(&self.input)? {
                Some((reply, used)) => {
                    self.input.advance(used);
                    match reply {
                        Reply::Push(items) => self.pushes += invalidated(&items),
                        reply => replies.push(reply),
                    }
                }
                None => {
                    if self.stream.read_buf(&mut self.input).await? == 0 {
                        return Err(RespError::Closed);
                    }
                }
            }
        }
        Ok(replies)
    }

    /// One command, one reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        self.push(args);
        self.round_trip()
            .await?
            .pop()
            .ok_or(RespError::Protocol("no reply"))
    }
}

/// The first error reply among `replies`, as text.
pub fn first_error(replies: &[Reply]) -> Option<String> {
    replies.iter().find_map(|r| match r {
        Reply::Error(e) => Some(e.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type() {
        assert_eq!(
            parse(b"+OK\r\n").unwrap(),
            Some((Reply::Simple("OK".into()), 5))
        );
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Some((Reply::Error("ERR no".into()), 9))
        );
        assert_eq!(parse(b":42\r\n").unwrap(), Some((Reply::Int(42), 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Bulk(None), 5)));
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap(),
            Some((Reply::Bulk(Some(b"abc".to_vec())), 9))
        );
        let arr = b"*2\r\n:1\r\n*1\r\n+x\r\n";
        assert_eq!(
            parse(arr).unwrap(),
            Some((
                Reply::Array(Some(vec![
                    Reply::Int(1),
                    Reply::Array(Some(vec![Reply::Simple("x".into())]))
                ])),
                arr.len()
            ))
        );
    }

    #[test]
    fn parses_resp3_and_sets_pushes_apart() {
        let hello = b"%2\r\n+proto\r\n:3\r\n+role\r\n=8\r\ntxt:main\r\n";
        assert_eq!(
            parse(hello).unwrap(),
            Some((
                Reply::Array(Some(vec![
                    Reply::Simple("proto".into()),
                    Reply::Int(3),
                    Reply::Simple("role".into()),
                    Reply::Bulk(Some(b"txt:main".to_vec())),
                ])),
                hello.len()
            ))
        );
        assert_eq!(parse(b"_\r\n").unwrap(), Some((Reply::Bulk(None), 3)));
        assert_eq!(
            parse(b"#t\r\n").unwrap(),
            Some((Reply::Simple("t".into()), 4))
        );
        let push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n";
        let Some((Reply::Push(items), used)) = parse(push).unwrap() else {
            panic!("not a push");
        };
        assert_eq!((items.len(), used), (2, push.len()));
        assert_eq!(invalidated(&items), 1);
        let flush = [Reply::Bulk(Some(b"invalidate".to_vec())), Reply::Bulk(None)];
        assert_eq!(invalidated(&flush), 1);
        assert_eq!(parse(&push[..push.len() - 1]).unwrap(), None);
    }

    #[test]
    fn incomplete_needs_more() {
        for partial in [
            &b""[..],
            b"+O",
            b"$3\r\nab",
            b"*2\r\n:1\r\n",
            b"$3\r\nabc\r",
        ] {
            assert_eq!(parse(partial).unwrap(), None, "{partial:?}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
    }
}
