//! One client transaction as a session hands it over ([`TxSpan`]: plain values, filled on
//! the request path without allocating), and its OTLP form, built on the exporter task.
//!
//! Attributes follow the OpenTelemetry database semantic conventions, with both the current
//! names (`db.system.name`, `db.namespace`, `db.query.text`, `db.operation.name`,
//! `db.response.status_code`) and the older ones many backends still key on (`db.system`,
//! `db.name`, `db.statement`, `db.operation`, `db.user`). Statement text is always the
//! normalised fingerprint (constants as `?`): no value a client sent is exported.

use crate::obs::traceparent::TraceParent;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Statements whose text a span carries (the first ones of the transaction).
pub const SHAPES: usize = 8;
/// `db.query.text` is cut at this many bytes.
const MAX_TEXT: usize = 4096;

/// What every span of one session shares; built once per session (and again after a
/// RELOAD gave it new pools), handed to each span as an `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanTags {
    /// The database name on the server.
    pub database: String,
    /// The user the client logged in as.
    pub user: String,
    pub client_addr: IpAddr,
    /// Host and port of the primary, then of each replica (see [`TxSpan::backend`]).
    pub backends: Vec<(String, u16)>,
    /// `transaction` or `session`.
    pub pool_mode: &'static str,
}

/// One finished client transaction.
#[derive(Debug, Clone)]
pub struct TxSpan {
    pub tags: Arc<SpanTags>,
    /// Index into [`SpanTags::backends`]: 0 is the primary, `i + 1` replica `i`.
    pub backend: usize,
    /// The caller's span, from the first statement that carried a valid `traceparent`.
    pub parent: Option<TraceParent>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Client statements (Query and Execute messages) in the transaction.
    pub statements: u32,
    /// Shape hashes of its first [`SHAPES`] statements, looked up for `db.query.text`.
    pub shapes: [u64; SHAPES],
    pub rows: u64,
    /// Time spent waiting for a server connection.
    pub wait: Duration,
    /// SQLSTATE of its first error.
    pub error: Option<[u8; 5]>,
    /// The session ended (the client left, or a server failed) inside the transaction.
    pub abandoned: bool,
}

/// The ids a span is exported under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl Ids {
    /// The caller's trace when there is one, a new trace otherwise; always a new span id.
    pub fn new(parent: Option<&TraceParent>) -> Ids {
        Ids {
            trace_id: parent.map_or_else(nonzero, |p| p.trace_id),
            span_id: nonzero(),
        }
    }
}

/// Random ids, never all zero (which OTLP treats as invalid).
fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub(super) fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

/// The SQL keyword a statement starts with, upper-cased (`SELECT`, `INSERT`…).
fn operation(text: &str) -> Option<String> {
    let word = text
        .trim_start_matches(['(', ' '])
        .split([' ', '(', ';'])
        .next()
        .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic()))?;
    Some(word.to_ascii_uppercase())
}

/// Statements that only open or close the transaction do not name its operation.
fn is_transaction_control(op: &str) -> bool {
    matches!(
        op,
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE"
    )
}

impl TxSpan {
    /// The OTLP span; `text` gives the fingerprint text of a statement shape (`None` when it
    /// is no longer cached).
    pub fn to_proto(&self, ids: Ids, text: &mut dyn FnMut(u64) -> Option<String>) -> Span {
        let t = &self.tags;
        let shown = (self.statements as usize).min(SHAPES);
        let texts: Vec<String> = self.shapes[..shown]
            .iter()
            .map(|&h| text(h).unwrap_or_else(|| "?".into()))
            .collect();
        let mut query = texts.join("; ");
        if self.statements as usize > SHAPES {
            query.push_str("; …");
        }
        if query.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !query.is_char_boundary(cut) {
                cut -= 1;
            }
            query.truncate(cut);
            query.push('…');
        }
        // one operation name when every statement that does work shares it
        let mut ops = texts
            .iter()
            .filter_map(|t| operation(t))
            .filter(|op| !is_transaction_control(op));
        let op = ops.next().filter(|first| ops.all(|o| o == *first));
        let name = match &op {
            Some(op) => format!("{op} {}", t.database),
            None => t.database.clone(),
        };
        let (host, port) = t
            .backends
            .get(self.backend)
            .or(t.backends.first())
            .cloned()
            .unwrap_or_default();
        let mut attributes = vec![
            s("db.system.name", "postgresql"),
            s("db.system", "postgresql"),
            s("db.namespace", t.database.as_str()),
            s("db.name", t.database.as_str()),
            s("db.user", t.user.as_str()),
            s("db.query.text", query.as_str()),
            s("db.statement", query),
            s("server.address", host),
            i("server.port", i64::from(port)),
            s("client.address", t.client_addr.to_string()),
            i("db.response.returned_rows", self.rows as i64),
            i("pake.statements", i64::from(self.statements)),
            kv(
                "pake.pool.wait_ms",
                any_value::Value::DoubleValue(self.wait.as_secs_f64() * 1000.0),
            ),
            s(
                "pake.route",
                if self.backend == 0 {
                    "primary"
                } else {
                    "replica"
                },
            ),
            s("pake.pool.mode", t.pool_mode),
        ];
        if let Some(op) = op {
            attributes.push(s("db.operation.name", op.as_str()));
            attributes.push(s("db.operation", op));
        }
        let status = match (&self.error, self.abandoned) {
            (Some(code), _) => {
                let code = String::from_utf8_lossy(code).into_owned();
                attributes.push(s("db.response.status_code", code.as_str()));
                attributes.push(s("error.type", code.as_str()));
                Some(Status {
                    message: format!("SQLSTATE {code}"),
                    code: StatusCode::Error as i32,
                })
            }
            (None, true) => {
                attributes.push(s("error.type", "session_ended"));
                Some(Status {
                    message: "the session ended inside the transaction".into(),
                    code: StatusCode::Error as i32,
                })
            }
            (None, false) => None,
        };
        // bits 0-7: trace flags (sampled); bit 8: "is the parent remote" is known; bit 9: it is
        let flags = 0x01 | 0x100 | if self.parent.is_some() { 0x200 } else { 0 };
        Span {
            trace_id: ids.trace_id.to_vec(),
            span_id: ids.span_id.to_vec(),
            parent_span_id: self
                .parent
                .map(|p| p.parent_id.to_vec())
                .unwrap_or_default(),
            flags,
            name,
            kind: SpanKind::Client as i32,
            start_time_unix_nano: self.start_unix_nanos,
            end_time_unix_nano: self.end_unix_nanos.max(self.start_unix_nanos),
            attributes,
            status,
            ..Span::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(statements: u32, error: Option<[u8; 5]>) -> TxSpan {
        TxSpan {
            tags: Arc::new(SpanTags {
                database: "shop".into(),
                user: "alice".into(),
                client_addr: [10, 0, 0, 7].into(),
                backends: vec![("db1".into(), 5432), ("db2".into(), 5433)],
                pool_mode: "transaction",
            }),
            backend: 1,
            parent: TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            start_unix_nanos: 1_000,
            end_unix_nanos: 5_000,
            statements,
            shapes: [1, 2, 3, 4, 5, 6, 7, 8],
            rows: 3,
            wait: Duration::from_micros(1500),
            error,
            abandoned: false,
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn text(span: &Span, key: &str) -> Option<String> {
        match attr(span, key) {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn lookup(h: u64) -> Option<String> {
        match h {
            1 => Some("begin".into()),
            2 => Some("select * from t where id = ?".into()),
            3 => Some("commit".into()),
            4 => Some("select 1".into()),
            _ => None,
        }
    }

    #[test]
    fn transaction_span_carries_the_conventions() {
        let t = tx(3, None);
        let ids = Ids::new(t.parent.as_ref());
        let span = t.to_proto(ids, &mut lookup);
        assert_eq!(span.trace_id, t.parent.unwrap().trace_id.to_vec());
        assert_eq!(span.parent_span_id, t.parent.unwrap().parent_id.to_vec());
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.flags, 0x301);
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.name, "SELECT shop");
        assert_eq!(text(&span, "db.system").as_deref(), Some("postgresql"));
        assert_eq!(text(&span, "db.namespace").as_deref(), Some("shop"));
        assert_eq!(text(&span, "db.operation.name").as_deref(), Some("SELECT"));
        assert_eq!(
            text(&span, "db.query.text").as_deref(),
            Some("begin; select * from t where id = ?; commit")
        );
        assert_eq!(text(&span, "server.address").as_deref(), Some("db2"));
        assert_eq!(text(&span, "pake.route").as_deref(), Some("replica"));
        assert_eq!(
            attr(&span, "server.port"),
            Some(&any_value::Value::IntValue(5433))
        );
        assert_eq!(
            attr(&span, "pake.statements"),
            Some(&any_value::Value::IntValue(3))
        );
        assert!(span.status.is_none());
    }

    #[test]
    fn errors_unknown_shapes_and_mixed_operations() {
        let mut t = tx(10, Some(*b"22012"));
        t.parent = None;
        let span = t.to_proto(Ids::new(None), &mut lookup);
        assert_eq!(span.parent_span_id, Vec::<u8>::new());
        assert_ne!(span.trace_id, vec![0; 16]);
        assert_eq!(span.flags, 0x101);
        let status = span.status.clone().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert!(status.message.contains("22012"));
        assert_eq!(
            text(&span, "db.response.status_code").as_deref(),
            Some("22012")
        );
        // eight texts shown (four of them no longer cached), then an ellipsis
        let q = text(&span, "db.query.text").unwrap();
        assert!(q.ends_with("?; ?; ?; ?; …"), "{q}");
        // two different SELECTs share the operation; the unknown "?" ones have none
        assert_eq!(span.name, "SELECT shop");
        let mut insert = |h: u64| {
            Some(
                if h == 4 {
                    "insert into t values (?)"
                } else {
                    "select ?"
                }
                .to_string(),
            )
        };
        let span = t.to_proto(Ids::new(None), &mut insert);
        assert_eq!(span.name, "shop", "mixed operations name the database only");
        assert_eq!(text(&span, "db.operation.name"), None);
        t.error = None;
        t.abandoned = true;
        let span = t.to_proto(Ids::new(None), &mut lookup);
        assert_eq!(span.status.unwrap().code, StatusCode::Error as i32);
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let t = tx(2, None);
        let mut long = |_: u64| Some("select 'é".repeat(1000));
        let span = t.to_proto(Ids::new(None), &mut long);
        let q = text(&span, "db.query.text").unwrap();
        assert!(q.len() <= MAX_TEXT + '…'.len_utf8() && q.ends_with('…'));
    }
}
