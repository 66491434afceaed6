//! `pake report` and `pake observability`: read the admin API of a running Pake and write the
//! report files / print what was asked. The HTTP client is a minimal HTTP/1.0 GET over a
//! `TcpStream` (the admin API is local, plain HTTP, and tiny): no HTTP client dependency.

use super::model::{QueryStats, ReportData, TraceStatement};
use super::report::{self, ReportError};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("admin URL must look like http://HOST:PORT, not {0:?}")]
    BadUrl(String),
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: String,
        body: String,
    },
    #[error("{url} sent a malformed response: {reason}")]
    Malformed { url: String, reason: String },
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Largest admin response accepted.
const MAX_BODY: u64 = 64 << 20;

/// `GET base + path`, returning the body of a 200 response.
pub fn http_get(base: &str, path: &str) -> Result<String, CliError> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| CliError::BadUrl(base.to_string()))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(CliError::BadUrl(base.to_string()));
    }
    let url = format!("http://{authority}{prefix}{path}");
    let connect = |source| CliError::Connect {
        url: url.clone(),
        source,
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| CliError::BadUrl(base.to_string()))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(connect)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(connect)?;
    write!(
        s,
        "GET {prefix}{path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(connect)?;
    let mut raw = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut raw).map_err(connect)?;
    let text = String::from_utf8_lossy(&raw);
    let malformed = |reason: &str| CliError::Malformed {
        url: url.clone(),
        reason: reason.to_string(),
    };
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers"))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| malformed("no status line"))?;
    if status != "200" {
        return Err(CliError::Status {
            url,
            status: status.to_string(),
            body: body.chars().take(500).collect(),
        });
    }
    Ok(body.to_string())
}

fn get_json<T: serde::de::DeserializeOwned>(base: &str, path: &str) -> Result<T, CliError> {
    let body = http_get(base, path)?;
    serde_json::from_str(&body).map_err(|e| CliError::Malformed {
        url: format!("{base}{path}"),
        reason: e.to_string(),
    })
}

/// `pake report`: fetch the report data (the advisor runs on the current statistics first,
/// unless `advise` is false) and write Markdown, JSON and HTML into `out`.
pub fn report(
    admin: &str,
    out: &Path,
    limit: usize,
    advise: bool,
) -> Result<Vec<PathBuf>, CliError> {
    let data: ReportData = get_json(admin, &format!("/api/report?limit={limit}&advise={advise}"))?;
    Ok(report::write_all(&data, out)?)
}

/// `pake observability`: the top fingerprints (`metrics`) and/or the statements of one trace.
pub fn observability(
    admin: &str,
    metrics: bool,
    trace_id: Option<&str>,
    limit: usize,
) -> Result<String, CliError> {
    let mut out = String::new();
    if metrics {
        let q: Vec<QueryStats> = get_json(admin, &format!("/api/queries?limit={limit}"))?;
        out.push_str(&report::text_table(&q));
    }
    if let Some(t) = trace_id {
        let stmts: Vec<TraceStatement> = get_json(admin, &format!("/api/traces/{t}"))?;
        out.push_str(&format!("trace {t}: {} statement(s)\n", stmts.len()));
        for s in stmts {
            out.push_str(&format!(
                "{:>13} {:>9.2} ms {:>6} rows {:<5} {:<16} {}\n",
                s.at_ms,
                s.duration_ms,
                s.rows,
                s.error.as_deref().unwrap_or("ok"),
                s.fingerprint,
                report::short(&s.query, 100)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_named() {
        assert!(matches!(
            http_get("https://x:1", "/"),
            Err(CliError::BadUrl(_))
        ));
        assert!(matches!(http_get("http://", "/"), Err(CliError::BadUrl(_))));
    }
}
