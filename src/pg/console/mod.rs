//! The admin console: `psql -p 6432 -U <admin> pake` (or `pgbouncer`, for PgBouncer habits).
//!
//! Only `general.admin_users` get in (login checks it). Commands use PgBouncer's names and,
//! where PgBouncer has the command, its column names: `SHOW POOLS|STATS|CLIENTS|SERVERS|
//! DATABASES|CONFIG|USERS|VERSION|HELP`, plus Pake's own `SHOW REPLICAS|CACHE|QUERIES`, and
//! `RELOAD`, `PAUSE [db]`, `RESUME [db]`, `SHUTDOWN`.
//!
//! Pake speaks the console itself rather than through pgwire: pgwire's server loop owns the
//! startup phase, but on this port Pake's login has already authenticated the admin, and the
//! answers are plain text rows that `pg::wire::backend` already builds.

mod show;

use super::error::Error;
use super::proxy::{Phase, Proxy};
use super::stream::ClientStream;
use super::wire::{self, backend, fe};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest message accepted on the console.
const MAX_CONSOLE_MESSAGE: usize = 64 * 1024;

/// A result set of text columns.
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, values: Vec<Option<String>>) {
        self.rows.push(values);
    }

    fn write(&self, out: &mut BytesMut, tag: &str) {
        backend::row_description(out, &self.columns);
        for r in &self.rows {
            let values: Vec<Option<&str>> = r.iter().map(|v| v.as_deref()).collect();
            backend::data_row(out, &values);
        }
        backend::command_complete(out, tag);
    }
}

/// Reported parameters for console clients (psql wants a server_version).
pub fn welcome_params() -> Vec<(String, String)> {
    [
        (
            "server_version",
            concat!("15.0 (Pake ", env!("CARGO_PKG_VERSION"), ")"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What one console command produced.
pub enum Reply {
    Rows(Table, String),
    Done(String),
    /// SHUTDOWN: answer, then start the drain.
    Shutdown,
}

/// Serve an admin until it leaves.
pub async fn run(proxy: Arc<Proxy>, mut client: ClientStream) -> Result<(), Error> {
    let mut inbuf = BytesMut::with_capacity(1024);
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let (tag, len) = loop {
            if let Some(f) = wire::frontend_frame(&inbuf, MAX_CONSOLE_MESSAGE)? {
                break f;
            }
            if client.read_buf(&mut inbuf).await.map_err(Error::ClientIo)? == 0 {
                return Ok(());
            }
        };
        let frame = inbuf.split_to(len);
        match tag {
            fe::TERMINATE => return Ok(()),
            fe::QUERY => {
                let (text, _) = wire::cstr(wire::body(&frame)).unwrap_or_default();
                let text = String::from_utf8_lossy(text);
                let shutdown = answer(&proxy, &text, &mut out).await;
                backend::ready_for_query(&mut out, b'I');
                client.write_all(&out).await.map_err(Error::ClientIo)?;
                client.flush().await.map_err(Error::ClientIo)?;
                out.clear();
                if shutdown {
                    proxy.set_phase(Phase::Draining);
                }
            }
            fe::SYNC => {
                backend::ready_for_query(&mut out, b'I');
                client.write_all(&out).await.map_err(Error::ClientIo)?;
                client.flush().await.map_err(Error::ClientIo)?;
                out.clear();
            }
            _ => {
                // the console speaks the simple query protocol only (psql does)
                let e = Error::Console(
                    "the admin console supports the simple query protocol only".into(),
                );
                e.write(&mut out, false);
                skip_to_sync(&mut inbuf);
            }
        }
    }
}

/// Drop extended-protocol messages up to (not including) the next Sync.
fn skip_to_sync(buf: &mut BytesMut) {
    while let Ok(Some((tag, len))) = wire::frontend_frame(buf, MAX_CONSOLE_MESSAGE) {
        if tag == fe::SYNC {
            return;
        }
        buf.advance(len);
    }
}

/// Run each `;`-separated command of a Query; true when SHUTDOWN was asked.
async fn answer(proxy: &Arc<Proxy>, text: &str, out: &mut BytesMut) -> bool {
    let commands: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        backend::empty_query_response(out);
        return false;
    }
    let mut shutdown = false;
    for cmd in commands {
        match execute(proxy, cmd).await {
            Ok(Reply::Rows(table, tag)) => table.write(out, &tag),
            Ok(Reply::Done(tag)) => backend::command_complete(out, &tag),
            Ok(Reply::Shutdown) => {
                backend::command_complete(out, "SHUTDOWN");
                shutdown = true;
            }
            Err(e) => {
                e.write(out, false);
                break;
            }
        }
    }
    shutdown
}

/// One console command.
pub async fn execute(proxy: &Arc<Proxy>, cmd: &str) -> Result<Reply, Error> {
    let words: Vec<String> = cmd
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let rows = |t: Table| Ok(Reply::Rows(t, "SHOW".into()));
    match words.as_slice() {
        ["show", what] => match *what {
            "pools" => rows(show::pools(proxy)),
            "stats" => rows(show::stats(proxy)),
            "clients" => rows(show::clients(proxy)),
            "servers" => rows(show::servers(proxy)),
            "databases" => rows(show::databases(proxy)),
            "config" => rows(show::config(proxy)),
            "users" => rows(show::users(proxy)),
            "replicas" => rows(show::replicas(proxy)),
            "cache" => rows(show::cache(proxy)),
            "queries" => rows(show::queries(proxy)),
            "version" => rows(show::version()),
            "help" => rows(show::help()),
            other => Err(Error::Console(format!(
                "unknown SHOW item \"{other}\"; try SHOW HELP"
            ))),
        },
        ["reload"] => {
            let report = proxy
                .reload()
                .await
                .map_err(|e| Error::Reload(e.to_string()))?;
            for line in &report {
                tracing::info!(change = %line, "reload");
            }
            Ok(Reply::Done("RELOAD".into()))
        }
        ["pause"] => pause(proxy, None).await,
        ["pause", db] => pause(proxy, Some(db)).await,
        ["resume"] => {
            proxy.resume(None);
            Ok(Reply::Done("RESUME".into()))
        }
        ["resume", db] => {
            proxy.resume(Some(db));
            Ok(Reply::Done("RESUME".into()))
        }
        ["shutdown"] => Ok(Reply::Shutdown),
        _ => Err(Error::Console(format!(
            "unknown command \"{cmd}\"; try SHOW HELP"
        ))),
    }
}

async fn pause(proxy: &Arc<Proxy>, db: Option<&str>) -> Result<Reply, Error> {
    if let Some(db) = db {
        if proxy.config().database(db).is_none() {
            return Err(Error::UnknownDatabase(db.to_string()));
        }
    }
    proxy.pause(db).await;
    Ok(Reply::Done("PAUSE".into()))
}
