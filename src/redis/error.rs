//! The Redis side's error type and its one mapping to the wire.
//!
//! Every way a command or a session can fail is a variant here. [`Error::reply`] is the one
//! exhaustive mapping to the `-CODE message` line the client sees, and
//! [`Error::closes_connection`] says whether the stream can still be trusted (a framing
//! error cannot: the client is told why, then disconnected). [`Error::source`] says who
//! caused it, for metrics and logs.

use super::resp::FrameError;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Backend,
    Proxy,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand { name: String, args: String },
    #[error("wrong number of arguments for '{0}' command")]
    Arity(String),
    #[error("Keys in request don't hash to the same slot")]
    CrossSlot,
    /// A client mistake Redis itself would report; the text starts with its code.
    #[error("{0}")]
    Syntax(&'static str),
    #[error("{name} is not supported through Pake: {why}")]
    Unsupported {
        name: &'static str,
        why: &'static str,
    },
    #[error("Redis is unavailable: {0}")]
    Backend(String),
    /// A shared link has more queued than its bounds: the command is refused at once. Not a
    /// sign of Redis failing (one client's huge pipeline fills it as well), so it does not
    /// count for the circuit breaker.
    #[error("{0}")]
    LinkFull(String),
    /// The TLS handshake with a `rediss://` node failed (its certificate, or a node that
    /// does not speak TLS on that port).
    #[error("TLS handshake with Redis failed: {0}")]
    UpstreamTls(String),
    /// Redis refused a login or command; its own words (`WRONGPASS …`) are the reply.
    #[error("{0}")]
    Refused(String),
    #[error("Redis did not answer within command_timeout")]
    Timeout,
    #[error("the connection to Redis was lost: {0}")]
    LinkLost(String),
    #[error("max number of clients reached")]
    TooManyClients,
    #[error("rate limit: this address sends more than {rate} commands per second (redis.rate_limit_per_address)")]
    RateLimited { rate: f64 },
    /// The breaker is open after repeated failures to reach Redis: failing fast.
    #[error(
        "Redis is unavailable: circuit open after repeated failures, next try in {retry_ms}ms"
    )]
    CircuitOpen { retry_ms: u64 },
    /// A request that cannot be buffered within the memory budget: the rest of it cannot
    /// be skipped safely, so the connection closes.
    #[error("Pake memory budget: request {0}")]
    RequestBudget(super::budget::Over),
    /// A reply (or a fan-out's merged reply) that would pass the memory budget; it is
    /// dropped and the connection stays usable.
    #[error("Pake memory budget: reply to {command} {over}; ask for less at a time")]
    ReplyBudget {
        command: &'static str,
        over: super::budget::Over,
    },
    /// A plaintext client on a listener with `client_tls_sslmode = require`.
    #[error("TLS is required on this port (client_tls_sslmode = require): connect with TLS, e.g. redis-cli --tls")]
    TlsRequired,
    /// Pake's own TLS set-up failed (a certificate or key that cannot be loaded): at start.
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("Pake is shutting down")]
    Shutdown,
    #[error("client connection: {0}")]
    ClientIo(#[source] std::io::Error),
}

impl Error {
    /// The error code that starts the reply line.
    pub fn code(&self) -> &'static str {
        match self {
            Error::CrossSlot => "CROSSSLOT",
            Error::Frame(_)
            | Error::UnknownCommand { .. }
            | Error::Arity(_)
            | Error::Syntax(_)
            | Error::Unsupported { .. }
            | Error::Backend(_)
            | Error::LinkFull(_)
            | Error::UpstreamTls(_)
            | Error::Refused(_)
            | Error::Timeout
            | Error::LinkLost(_)
            | Error::TooManyClients
            | Error::RequestBudget(_)
            | Error::ReplyBudget { .. }
            | Error::RateLimited { .. }
            | Error::CircuitOpen { .. }
            | Error::TlsRequired
            | Error::Tls(_)
            | Error::Shutdown
            | Error::ClientIo(_) => "ERR",
        }
    }

    /// The reply line, without the leading `-` and trailing CRLF.
    pub fn reply(&self) -> String {
        match self {
            Error::Refused(msg) => msg.clone(),
            // written with their code, as Redis words them
            Error::Syntax(msg) => (*msg).to_string(),
            _ => format!("{} {}", self.code(), self),
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Error::Frame(_)
            | Error::UnknownCommand { .. }
            | Error::Arity(_)
            | Error::CrossSlot
            | Error::Syntax(_)
            | Error::Unsupported { .. }
            | Error::Refused(_)
            | Error::TlsRequired
            | Error::RequestBudget(_)
            | Error::ReplyBudget { .. }
            | Error::RateLimited { .. }
            | Error::ClientIo(_) => Source::Client,
            Error::Backend(_) | Error::UpstreamTls(_) | Error::Timeout | Error::LinkLost(_) => {
                Source::Backend
            }
            Error::TooManyClients
            | Error::Tls(_)
            | Error::Shutdown
            | Error::CircuitOpen { .. }
            | Error::LinkFull(_) => Source::Proxy,
        }
    }

    /// After this error the client connection is closed (once told, when it can be).
    pub fn closes_connection(&self) -> bool {
        match self {
            Error::Frame(_)
            | Error::TooManyClients
            | Error::RequestBudget(_)
            | Error::TlsRequired
            | Error::Shutdown
            | Error::ClientIo(_) => true,
            // a dedicated link died mid-command: its replies can no longer be matched
            Error::LinkLost(_) => true,
            Error::UnknownCommand { .. }
            | Error::Arity(_)
            | Error::CrossSlot
            | Error::Syntax(_)
            | Error::Unsupported { .. }
            | Error::Backend(_)
            | Error::UpstreamTls(_)
            | Error::Refused(_)
            | Error::ReplyBudget { .. }
            | Error::RateLimited { .. }
            | Error::CircuitOpen { .. }
            | Error::LinkFull(_)
            | Error::Tls(_)
            | Error::Timeout => false,
        }
    }

    /// A metrics label for backend errors.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Backend(_) => "unavailable",
            Error::Timeout => "timeout",
            Error::LinkLost(_) => "link_lost",
            Error::CircuitOpen { .. } => "circuit_open",
            Error::LinkFull(_) => "link_full",
            _ => "other",
        }
    }

    /// Redis's wording for an unknown command.
    pub fn unknown(args: &[bytes::Bytes]) -> Error {
        let name = args
            .first()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        let args = args
            .iter()
            .skip(1)
            .take(8)
            .map(|a| format!("'{}' ", String::from_utf8_lossy(&a[..a.len().min(64)])))
            .collect();
        Error::UnknownCommand { name, args }
    }

    pub fn from_fred(e: &fred::error::Error) -> Error {
        match e.kind() {
            fred::error::ErrorKind::Timeout => Error::Timeout,
            _ => Error::Backend(e.details().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_codes_and_framing_errors_close() {
        let e = Error::Frame(FrameError::TooDeep { max: 2 });
        assert_eq!(
            e.reply(),
            "ERR Protocol error: nesting deeper than 2 levels"
        );
        assert!(e.closes_connection());
        assert_eq!(
            Error::CrossSlot.reply(),
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
        let e = Error::unknown(&[
            bytes::Bytes::from_static(b"foo"),
            bytes::Bytes::from_static(b"a"),
        ]);
        assert_eq!(
            e.reply(),
            "ERR unknown command 'foo', with args beginning with: 'a' "
        );
        assert!(!e.closes_connection());
        assert_eq!(Error::Backend("down".into()).source(), Source::Backend);
    }
}
