//! The startup phase, sans-IO: what a client's first packet asks for.
//!
//! A connection opens with one of SSLRequest, GSSENCRequest, CancelRequest or a
//! StartupMessage (protocol 3.x). [`parse`] turns one whole packet (length included) into a
//! [`Request`]; the caller owns the socket and the timeout.

use super::wire::{self, code, cstr, i32_at, FrameError};

/// What the first packet of a connection asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Answer `N` (no TLS yet) and read the next packet.
    Ssl,
    /// Answer `N` (no GSSAPI encryption) and read the next packet.
    GssEnc,
    /// Cancel the query running for the session holding this key.
    Cancel { pid: i32, secret: i32 },
    /// Log in.
    Startup(Startup),
}

/// A StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Startup {
    /// Requested protocol minor version (3.x); Pake speaks 3.0 and negotiates down.
    pub minor: i32,
    pub user: String,
    /// Database name; defaults to the user name as in PostgreSQL.
    pub database: String,
    /// Run-time parameters the client wants on its session: everything in the packet except
    /// user/database/options/replication, plus `-c name=value` and `--name=value` from `options`.
    pub params: Vec<(String, String)>,
    /// `_pq_.*` protocol options we do not support (reported in NegotiateProtocolVersion).
    pub protocol_options: Vec<String>,
    /// A replication connection's `replication` value as the client gave it (`true`/`on`/
    /// `1`/`yes` physical, `database` logical; the server checks it); `None` for an ordinary
    /// connection. Such a client gets a server connection of its own (see `pg::replication`).
    pub replication: Option<String>,
}

impl Startup {
    /// The value of a startup parameter, compared case-insensitively like GUC names.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A boolean PostgreSQL reads as false: any prefix of `false` or `no`, `of`/`off`, `0`,
/// case-insensitive (its `parse_bool`). `replication=f` is an ordinary connection, so it
/// must be pooled as one; a value PostgreSQL reads as neither is the server's to refuse.
fn is_false(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0"
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: i32, minor: i32 },
    #[error("invalid startup packet layout: {0}")]
    Layout(&'static str),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
}

/// Parse one whole startup-phase packet, its 4-byte length included.
pub fn parse(packet: &[u8]) -> Result<Request, StartupError> {
    let (_, rest) = i32_at(packet).ok_or(StartupError::Layout("short packet"))?;
    let (version, body) = i32_at(rest).ok_or(StartupError::Layout("short packet"))?;
    match version {
        code::SSL_REQUEST => Ok(Request::Ssl),
        code::GSSENC_REQUEST => Ok(Request::GssEnc),
        code::CANCEL_REQUEST => {
            let (pid, rest) = i32_at(body).ok_or(StartupError::Layout("short cancel request"))?;
            let (secret, _) = i32_at(rest).ok_or(StartupError::Layout("short cancel request"))?;
            Ok(Request::Cancel { pid, secret })
        }
        v if (v >> 16) == 3 => parse_startup(v & 0xffff, body).map(Request::Startup),
        v => Err(StartupError::UnsupportedProtocol {
            major: v >> 16,
            minor: v & 0xffff,
        }),
    }
}

fn parse_startup(minor: i32, mut body: &[u8]) -> Result<Startup, StartupError> {
    let mut s = Startup {
        minor,
        ..Startup::default()
    };
    loop {
        let (name, rest) = cstr(body).ok_or(StartupError::Layout("missing terminator"))?;
        if name.is_empty() {
            break;
        }
        let (value, rest) = cstr(rest).ok_or(StartupError::Layout("parameter without value"))?;
        body = rest;
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        match name.as_str() {
            "user" => s.user = value,
            "database" => s.database = value,
            "options" => parse_options(&value, &mut s.params),
            "replication" => s.replication = (!is_false(&value)).then_some(value),
            n if n.starts_with("_pq_.") => s.protocol_options.push(name),
            _ => s.params.push((name, value)),
        }
    }
    if s.user.is_empty() {
        return Err(StartupError::NoUser);
    }
    if s.database.is_empty() {
        s.database = s.user.clone();
    }
    Ok(s)
}

/// Split libpq's `options` value (`-c a=b --c=d`, backslash escapes spaces) into settings.
fn parse_options(options: &str, out: &mut Vec<(String, String)>) {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            w.strip_prefix("--").map(str::to_string)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_string()));
        }
    }
}

/// A Terminate (`X`, length 4) where the startup packet belongs: a client that gave up before
/// it logged in (node-postgres's `connect()` then `end()` in one tick writes it first).
/// PostgreSQL closes such a connection without a reply, and so does Pake: an ErrorResponse
/// would reach a client that already left, as an error for a `connect()` it abandoned.
pub fn gave_up(buf: &[u8]) -> bool {
    buf.starts_with(&[b'X', 0, 0, 0, 4])
}

/// The whole packet at the start of `buf`, if it is all there.
pub fn packet(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    Ok(wire::startup_packet_len(buf)?.filter(|&len| buf.len() >= len))
}

/// Entry point for fuzzing: never panics on any input.
pub fn fuzz_logic(data: &[u8]) {
    if let Ok(Some(len)) = packet(data) {
        let _ = parse(&data[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(pairs: &[(&str, &str)], version: i32) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        for (k, v) in pairs {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        p.extend(body);
        p
    }

    #[test]
    fn parses_startup_with_defaults_and_options() {
        let p = startup(
            &[
                ("user", "alice"),
                ("application_name", "psql"),
                (
                    "options",
                    "-c search_path=a\\ b --statement-timeout=5s -cwork_mem=4MB",
                ),
            ],
            code::PROTOCOL_3_0,
        );
        let Request::Startup(s) = parse(&p).unwrap() else {
            panic!("not startup")
        };
        assert_eq!(s.user, "alice");
        assert_eq!(s.database, "alice");
        assert_eq!(s.param("APPLICATION_NAME"), Some("psql"));
        assert_eq!(s.param("search_path"), Some("a b"));
        assert_eq!(s.param("statement_timeout"), Some("5s"));
        assert_eq!(s.param("work_mem"), Some("4MB"));
    }

    #[test]
    fn special_requests() {
        let mut p = 8i32.to_be_bytes().to_vec();
        p.extend(code::SSL_REQUEST.to_be_bytes());
        assert_eq!(parse(&p), Ok(Request::Ssl));
        let mut c = 16i32.to_be_bytes().to_vec();
        c.extend(code::CANCEL_REQUEST.to_be_bytes());
        c.extend(7i32.to_be_bytes());
        c.extend(9i32.to_be_bytes());
        assert_eq!(parse(&c), Ok(Request::Cancel { pid: 7, secret: 9 }));
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(matches!(
            parse(&startup(&[("user", "a")], 2 << 16)),
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        assert_eq!(
            parse(&startup(&[("database", "d")], code::PROTOCOL_3_0)),
            Err(StartupError::NoUser)
        );
        let logical = parse(&startup(
            &[("user", "a"), ("replication", "database")],
            code::PROTOCOL_3_0,
        ));
        let mode = |r: Result<Request, StartupError>| match r {
            Ok(Request::Startup(s)) => s.replication,
            other => panic!("{other:?}"),
        };
        assert_eq!(mode(logical), Some("database".into()));
        let off = parse(&startup(
            &[("user", "a"), ("replication", "OFF")],
            code::PROTOCOL_3_0,
        ));
        assert_eq!(mode(off), None);
        for no in ["f", "FA", "false", "n", "no", "of", "off", "0"] {
            assert!(is_false(no), "{no}");
        }
        for not_no in [
            "t", "true", "on", "1", "yes", "database", "o", "fals3", "00", "",
        ] {
            assert!(!is_false(not_no), "{not_no}");
        }
        // value missing its NUL
        let mut p = startup(&[("user", "a")], code::PROTOCOL_3_0);
        p.truncate(p.len() - 2);
        assert!(parse(&p).is_err());
    }

    #[test]
    fn fuzz_logic_survives_garbage() {
        for seed in 0u32..2000 {
            let data: Vec<u8> = (0..(seed % 40))
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8)
                .collect();
            fuzz_logic(&data);
        }
        fuzz_logic(&startup(&[("user", "x")], code::PROTOCOL_3_0));
    }
}
