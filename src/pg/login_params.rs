//! Startup settings tried on a real server at login.
//!
//! PostgreSQL applies a client's startup parameters while it logs the client in: it
//! reports them back in their canonical form (`DateStyle=german` → `German, DMY`,
//! `TimeZone=utc` → `UTC`) and refuses the login with a FATAL error when one is invalid
//! (`DateStyle=nonsense`: 22023, an unknown name: 42704, a fixed one: 55P02). Pake answers
//! the login itself, so when a client asks for a setting its pool's servers do not report by
//! default, Pake first tries the client's settings on a pooled server inside a transaction it
//! rolls back: what `set_config` returns is the canonical value, the server's error is the
//! client's FATAL, and the server goes back to the pool as it came. Each pool remembers the
//! answers ([`Canonical`]), so a login with the same settings again (and the common one,
//! with none or the servers' own) needs no server.

use super::encoding;
use super::error::Error;
use super::params::{is_tracked, tracked_name};
use super::pool::Pool;
use super::server::{Server, ServerError};
use super::sql::settings::quote_literal;
use super::wire::{self, be};
use bytes::BytesMut;
use parking_lot::Mutex;
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Distinct (name, value) answers a pool keeps; past it the map starts afresh. Clients use
/// few distinct settings, and a bound keeps one client inventing values from growing it.
const MAX_ENTRIES: usize = 256;

/// How long trying the settings on a server may take before the server is closed.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A setting as a client asked for it: (lower-case name, value as given).
type Asked = (Box<str>, Box<str>);

/// A pool's answers so far: what the server reports for a setting asked for (`None`: a
/// valid setting PostgreSQL does not report).
#[derive(Debug, Default)]
pub struct Canonical {
    map: Mutex<HashMap<Asked, Option<Box<str>>>>,
}

impl Canonical {
    fn get(&self, name: &str, value: &str) -> Option<Option<Box<str>>> {
        let key = (name.to_ascii_lowercase().into(), value.into());
        self.map.lock().get(&key).cloned()
    }

    fn insert(&self, name: &str, value: &str, reported: Option<&str>) {
        let mut map = self.map.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        let key = (name.to_ascii_lowercase().into(), value.into());
        map.insert(key, reported.map(Into::into));
    }
}

/// Bring `params` (a client's startup settings) to the values the server reports for them,
/// or refuse the login as PostgreSQL would. `welcome` is what the pool's servers report.
pub async fn settle(
    pool: &Arc<Pool>,
    welcome: &[(String, String)],
    params: &mut [(String, String)],
) -> Result<(), Error> {
    let mut unknown = Vec::new();
    for (i, (name, value)) in params.iter_mut().enumerate() {
        if is_default(name, value, welcome) {
            continue;
        }
        match pool.canonical.get(name, value) {
            Some(Some(reported)) => *value = reported.into(),
            Some(None) => {}
            None => unknown.push(i),
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    pool.metrics.startup_checks.inc();
    let asked: Vec<(String, String)> = unknown.iter().map(|&i| params[i].clone()).collect();
    // in a task of its own: a login given up (client_login_timeout) midway must not drop a
    // checked-out server without returning or closing it
    let trial = tokio::spawn(probe(pool.clone(), asked));
    let answers = trial
        .await
        .map_err(|e| Error::ServerLost(ServerError::Protocol(e.to_string())))??;
    for (&i, answer) in unknown.iter().zip(answers) {
        let (name, value) = &mut params[i];
        let reported = is_tracked(name).then_some(answer.as_str());
        pool.canonical.insert(name, value, reported);
        if let Some(r) = reported {
            *value = r.to_string();
        }
    }
    Ok(())
}

/// A setting the pool's servers report with this very value already, or an
/// `application_name` PostgreSQL keeps as it is (printable ASCII; it was cut to length
/// before): nothing to ask.
fn is_default(name: &str, value: &str, welcome: &[(String, String)]) -> bool {
    if name.eq_ignore_ascii_case("application_name") {
        return value.bytes().all(|b| (32..127).contains(&b));
    }
    let Some((k, current)) = welcome.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) else {
        return false;
    };
    is_tracked(k) && encoding::reported(k, value) == current
}

/// Try `asked` on a server of `pool`: the value `set_config` returned for each, in order.
async fn probe(pool: Arc<Pool>, asked: Vec<(String, String)>) -> Result<Vec<String>, Error> {
    let mut server = pool.checkout().await?;
    let answer = tokio::time::timeout(PROBE_LIMIT, exchange(&mut server, &asked)).await;
    match answer {
        Ok(Ok(answer)) => {
            // rolled back: as clean as it came (anything else is not reused)
            if server.is_idle() {
                pool.checkin(server);
            } else {
                pool.discard(server);
            }
            answer
        }
        Ok(Err(e)) => {
            pool.discard(server);
            Err(Error::ServerLost(e))
        }
        Err(_) => {
            pool.discard(server);
            Err(Error::ServerLost(ServerError::Io(
                std::io::ErrorKind::TimedOut.into(),
            )))
        }
    }
}

/// The statements that try `asked` (each tracked one from the server's login value, as
/// PostgreSQL applies a partial `DateStyle` to its default), then the ROLLBACK, sent apart so
/// that it runs after an error too.
fn statements(asked: &[(String, String)]) -> String {
    let mut sql = String::from("BEGIN;");
    for (name, value) in asked {
        if let Some(t) = tracked_name(name) {
            sql.push_str(&format!("RESET {};", t.to_ascii_lowercase()));
        }
        sql.push_str(&format!(
            "SELECT pg_catalog.set_config({}, {}, false);",
            quote_literal(name),
            quote_literal(value)
        ));
    }
    sql
}

/// Send the trial and read its replies: the values, or the server's error as the client's.
/// A server error leaves the connection usable; an I/O or protocol one does not.
async fn exchange(
    server: &mut Server,
    asked: &[(String, String)],
) -> Result<Result<Vec<String>, Error>, ServerError> {
    let mut out = BytesMut::new();
    frontend::query(&statements(asked), &mut out)?;
    frontend::query("ROLLBACK", &mut out)?;
    server.send(&out).await?;
    let (mut values, mut refused, mut ready) = (Vec::new(), None, 0);
    while ready < 2 {
        let (tag, body) = server.read_message().await?;
        match tag {
            be::DATA_ROW => {
                let row = crate::pg::server::data_row(&body)?;
                values.push(row.into_iter().next().flatten().unwrap_or_default());
            }
            be::ERROR_RESPONSE if refused.is_none() => refused = Some(refusal(&body)),
            be::PARAMETER_STATUS => server.params.on_status(&body),
            be::READY_FOR_QUERY => {
                server.tx_status = body.first().copied().unwrap_or(b'I');
                ready += 1;
            }
            _ => {}
        }
    }
    Ok(match refused {
        Some(e) => Err(e),
        None if values.len() == asked.len() => Ok(values),
        None => Err(Error::ServerLost(ServerError::Protocol(
            "set_config returned no value".into(),
        ))),
    })
}

/// The server's ErrorResponse as the FATAL PostgreSQL gives at login: its code, message,
/// detail and hint. Also how a session ends whose settings a server refused later.
pub fn refusal(body: &[u8]) -> Error {
    let text = |f| wire::error_field(body, f).map(|v| String::from_utf8_lossy(v).into_owned());
    Error::SettingRefused {
        code: text(b'C').unwrap_or_else(|| "22023".into()),
        message: text(b'M').unwrap_or_default(),
        detail: text(b'D'),
        hint: text(b'H'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn the_servers_own_values_need_no_server() {
        let welcome = [
            s("DateStyle", "ISO, MDY"),
            s("client_encoding", "UTF8"),
            s("server_version", "15.4"),
        ];
        assert!(is_default("datestyle", "ISO, MDY", &welcome));
        assert!(is_default("client_encoding", "utf-8", &welcome));
        assert!(is_default("application_name", "psql", &welcome));
        assert!(!is_default("application_name", "caf\u{e9}", &welcome));
        assert!(!is_default("DateStyle", "iso", &welcome));
        assert!(!is_default("server_version", "15.4", &welcome), "fixed");
        assert!(!is_default("search_path", "app", &welcome));
    }

    #[test]
    fn trial_resets_tracked_settings_first() {
        let sql = statements(&[s("DateStyle", "german"), s("work_mem", "it's")]);
        assert_eq!(
            sql,
            "BEGIN;RESET datestyle;SELECT pg_catalog.set_config('DateStyle', 'german', false);\
             SELECT pg_catalog.set_config('work_mem', 'it''s', false);"
        );
    }

    #[test]
    fn the_cache_is_bounded_and_case_blind_on_names() {
        let c = Canonical::default();
        c.insert("DateStyle", "german", Some("German, DMY"));
        assert_eq!(
            c.get("datestyle", "german"),
            Some(Some("German, DMY".into()))
        );
        assert_eq!(c.get("datestyle", "German"), None);
        for i in 0..MAX_ENTRIES {
            c.insert("x.y", &i.to_string(), None);
        }
        assert!(c.map.lock().len() <= MAX_ENTRIES);
    }

    #[test]
    fn a_refusal_keeps_the_servers_words() {
        let mut out = BytesMut::new();
        wire::backend::error_response(
            &mut out,
            &wire::backend::Fields {
                severity: "ERROR",
                code: "22023",
                message: "invalid value for parameter \"DateStyle\": \"nonsense\"",
                detail: Some("Unrecognized key word: \"nonsense\"."),
                hint: None,
            },
        );
        match refusal(wire::body(&out)) {
            Error::SettingRefused {
                code,
                message,
                detail,
                hint,
            } => {
                assert_eq!(code, "22023");
                assert!(message.starts_with("invalid value"));
                assert_eq!(
                    detail.as_deref(),
                    Some("Unrecognized key word: \"nonsense\".")
                );
                assert_eq!(hint, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
