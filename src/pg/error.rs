//! The session's error type and its one mapping to the wire.
//!
//! Every way a client session can fail is a variant here; [`Error::sqlstate`] is one
//! exhaustive match, so a new variant does not compile without a SQLSTATE. Codes come from
//! tokio-postgres's generated [`SqlState`] constants, not string literals. Each error also
//! says who caused it ([`Source`]): client faults close the client, server faults mean the
//! server connection is not reused.

use super::auth::AuthError;
use super::pool::PoolError;
use super::server::ServerError;
use super::startup::StartupError;
use super::wire::{backend, FrameError};
use crate::config::Dur;
use bytes::BytesMut;
use tokio_postgres::error::SqlState;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Server,
    Proxy,
}

/// A server answered out of turn: the connection is lost to this client.
impl From<super::server::replies::Desync> for Error {
    fn from(d: super::server::replies::Desync) -> Self {
        Error::ServerLost(ServerError::Desync(d))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid frontend message: {0}")]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The `auth_query` lookup of a user without a `[[users]]` entry could not answer.
    #[error(transparent)]
    AuthQuery(#[from] super::auth_query::AuthQueryError),
    #[error("no such database: {0}")]
    UnknownDatabase(String),
    /// A RELOAD removed the session's database or user; its transaction had ended.
    #[error("database \"{database}\" or user \"{user}\" was removed from Pake's configuration by a RELOAD")]
    Removed { database: String, user: String },
    #[error("user \"{0}\" is not an admin: only general.admin_users may use the console")]
    NotAdmin(String),
    #[error("{0}")]
    Console(String),
    /// RELOAD could not use the configuration file; the running configuration stays.
    #[error("RELOAD failed, the running configuration is unchanged: {0}")]
    Reload(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("rate limit exceeded: more than {limit} transactions per second for this {scope}")]
    RateLimited { scope: &'static str, limit: f64 },
    #[error("{message}")]
    Injected { code: String, message: String },
    /// The server refused a setting of the client's startup packet when Pake tried it at
    /// login ([`super::login_params`]): PostgreSQL's own words, as its login would give them.
    #[error("{message}")]
    SettingRefused {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    #[error("connection reset by an injected fault")]
    InjectedReset,
    #[error(
        "SSL connection is required: connect with sslmode=require (client_tls_sslmode = require)"
    )]
    TlsRequired,
    #[error("sorry, too many clients already (max_client_conn = {0})")]
    TooManyClients(usize),
    #[error("too many connections for user \"{user}\" (max_user_connections = {max})")]
    TooManyUserConnections { user: String, max: usize },
    #[error("too many databases served through the wildcard entry, all in use (max_wildcard_databases = {0})")]
    TooManyDatabases(usize),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("lost the server connection: {0}")]
    ServerLost(#[source] ServerError),
    #[error("client did not log in within client_login_timeout ({0})")]
    LoginTimeout(Dur),
    #[error("terminating connection due to idle-in-transaction timeout ({0})")]
    IdleInTransaction(Dur),
    #[error("terminating connection due to idle-session timeout ({0})")]
    ClientIdle(Dur),
    #[error("terminating connection due to administrator command: Pake is shutting down")]
    Shutdown,
    /// `pg_terminate_backend(<this client's pid>)` from another client.
    #[error("terminating connection due to administrator command")]
    Terminated,
    #[error("unexpected message {0} from the client")]
    Unexpected(super::wire::Tag),
    #[error("client connection: {0}")]
    ClientIo(#[source] std::io::Error),
    #[error(
        "terminating connection: more than {0} bytes of notifications were waiting for this \
         client to read them (general.listen_queue_size)"
    )]
    NotificationsBehind(usize),
    #[error("LISTEN through Pake: {0}")]
    Listen(String),
    #[error(
        "out of memory: this client's {need}-byte message would pass general.clients_max_memory \
         ({limit} bytes for all clients' large messages together)"
    )]
    ClientsMemory { need: usize, limit: usize },
    /// A statement of a transaction Pake failed before any server saw it (the BEGIN was
    /// still deferred): refused until the transaction ends, as a server refuses them.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
}

impl Error {
    /// The SQLSTATE the client is told.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            Error::Frame(_) | Error::Unexpected(_) => SqlState::PROTOCOL_VIOLATION,
            Error::Startup(e) => match e {
                StartupError::UnsupportedProtocol { .. } => SqlState::FEATURE_NOT_SUPPORTED,
                StartupError::NoUser => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                StartupError::Frame(_) | StartupError::Layout(_) => SqlState::PROTOCOL_VIOLATION,
            },
            Error::Auth(e) => match e {
                AuthError::Failed(_) => SqlState::INVALID_PASSWORD,
                AuthError::ChannelBinding | AuthError::MethodUnavailable { .. } => {
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                }
                AuthError::Malformed(_) | AuthError::Mechanism(_) | AuthError::ExpectedPassword => {
                    SqlState::PROTOCOL_VIOLATION
                }
            },
            Error::AuthQuery(e) if e.is_unreachable() => SqlState::CONNECTION_FAILURE,
            Error::AuthQuery(_) => SqlState::CONFIG_FILE_ERROR,
            Error::UnknownDatabase(_) | Error::Removed { .. } => SqlState::INVALID_CATALOG_NAME,
            Error::NotAdmin(_) => SqlState::INSUFFICIENT_PRIVILEGE,
            Error::Console(_) => SqlState::SYNTAX_ERROR,
            Error::Reload(_) => SqlState::CONFIG_FILE_ERROR,
            Error::Tls(_) => SqlState::PROTOCOL_VIOLATION,
            Error::TlsRequired => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            Error::TooManyClients(_)
            | Error::TooManyUserConnections { .. }
            | Error::TooManyDatabases(_) => SqlState::TOO_MANY_CONNECTIONS,
            Error::Pool(e) => e.sqlstate(),
            Error::RateLimited { .. } => SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            Error::Injected { code, .. } | Error::SettingRefused { code, .. } => {
                SqlState::from_code(code)
            }
            Error::InjectedReset => SqlState::CONNECTION_FAILURE,
            Error::ServerLost(_) => SqlState::CONNECTION_FAILURE,
            Error::LoginTimeout(_) => SqlState::PROTOCOL_VIOLATION,
            Error::IdleInTransaction(_) => SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            Error::ClientIdle(_) => SqlState::IDLE_SESSION_TIMEOUT,
            Error::Shutdown | Error::Terminated => SqlState::ADMIN_SHUTDOWN,
            Error::ClientIo(_) => SqlState::CONNECTION_FAILURE,
            Error::NotificationsBehind(_) => SqlState::PROGRAM_LIMIT_EXCEEDED,
            Error::Listen(_) => SqlState::CONNECTION_FAILURE,
            Error::ClientsMemory { .. } => SqlState::OUT_OF_MEMORY,
            Error::TransactionAborted => SqlState::IN_FAILED_SQL_TRANSACTION,
        }
    }

    /// A pool could not open a server connection (the request may try another server).
    pub fn connect_failure(&self) -> Option<&ServerError> {
        match self {
            Error::Pool(e) => e.connect_failure(),
            _ => None,
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Error::Frame(_)
            | Error::Startup(_)
            | Error::Auth(_)
            | Error::UnknownDatabase(_)
            | Error::NotAdmin(_)
            | Error::Console(_)
            | Error::Reload(_)
            | Error::Tls(_)
            | Error::TlsRequired
            | Error::Unexpected(_)
            | Error::LoginTimeout(_)
            | Error::IdleInTransaction(_)
            | Error::ClientIdle(_)
            | Error::ClientIo(_)
            | Error::NotificationsBehind(_)
            | Error::SettingRefused { .. }
            | Error::TransactionAborted => Source::Client,
            Error::ServerLost(_) | Error::AuthQuery(_) => Source::Server,
            Error::Pool(e) if e.connect_failure().is_some() => Source::Server,
            Error::TooManyClients(_)
            | Error::TooManyUserConnections { .. }
            | Error::TooManyDatabases(_)
            | Error::Removed { .. }
            | Error::RateLimited { .. }
            | Error::Injected { .. }
            | Error::InjectedReset
            | Error::Listen(_)
            | Error::ClientsMemory { .. }
            | Error::Pool(_)
            | Error::Shutdown
            | Error::Terminated => Source::Proxy,
        }
    }

    /// Can the client still be told about it?
    pub fn reaches_client(&self) -> bool {
        !matches!(self, Error::ClientIo(_) | Error::InjectedReset) && !self.is_server_farewell()
    }

    /// The server ended the connection with an error of its own, already forwarded.
    pub fn is_server_farewell(&self) -> bool {
        matches!(self, Error::ServerLost(ServerError::Ended))
    }

    /// May the client keep its connection after this error (answered with ERROR, not FATAL)?
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Error::Pool(_) | Error::RateLimited { .. } | Error::Injected { .. } | Error::Listen(_)
        )
    }

    /// Write this error as an ErrorResponse.
    pub fn write(&self, out: &mut BytesMut, fatal: bool) {
        let message = self.to_string();
        let (detail, hint) = match self {
            Error::SettingRefused { detail, hint, .. } => (detail.as_deref(), hint.as_deref()),
            Error::Pool(e) => (None, e.hint()),
            Error::ServerLost(_) => (
                None,
                Some("the server connection was closed; reconnect and retry"),
            ),
            _ => (None, None),
        };
        backend::error_response(
            out,
            &backend::Fields {
                severity: if fatal { "FATAL" } else { "ERROR" },
                code: self.sqlstate().code(),
                message: &message,
                detail,
                hint,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            Error::Frame(FrameError::UnknownTag(crate::pg::wire::Tag(1)))
                .sqlstate()
                .code(),
            "08P01"
        );
        assert_eq!(
            Error::Auth(AuthError::Failed("x".into())).sqlstate().code(),
            "28P01"
        );
        assert_eq!(
            Error::UnknownDatabase("x".into()).sqlstate().code(),
            "3D000"
        );
        assert_eq!(Error::TooManyClients(1).sqlstate().code(), "53300");
        assert_eq!(Error::Shutdown.sqlstate().code(), "57P01");
        assert_eq!(Error::Reload("x".into()).sqlstate().code(), "F0000");
        assert_eq!(
            Error::Pool(PoolError::Timeout(Dur::secs(1), "a/b".into()))
                .sqlstate()
                .code(),
            "57014"
        );
        let rejected = ServerError::Rejected {
            addr: "x".into(),
            code: "3D000".into(),
            message: "database \"nope\" does not exist".into(),
        };
        assert_eq!(
            Error::Pool(PoolError::Connect(rejected)).sqlstate().code(),
            "3D000"
        );
        assert_eq!(
            Error::ServerLost(ServerError::Closed).sqlstate().code(),
            "08006"
        );
    }

    #[test]
    fn written_error_carries_code_and_severity() {
        let mut b = BytesMut::new();
        Error::Shutdown.write(&mut b, true);
        let body = crate::pg::wire::body(&b);
        assert_eq!(
            crate::pg::wire::error_field(body, b'S'),
            Some(&b"FATAL"[..])
        );
        assert_eq!(crate::pg::wire::error_code(body), Some(&b"57P01"[..]));
    }
}
