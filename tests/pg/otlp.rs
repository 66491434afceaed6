//! OTLP trace export: a real OTLP/HTTP receiver inside the test (axum, decoding the body with
//! the official generated protobuf types), transactions through Pake with and without a
//! sqlcommenter `traceparent`.
//!
//! Spans leave one session's queue in order and are posted one request after the other, so
//! once the last transaction's span has arrived, every earlier one has too: absence is checked
//! after a later span arrived, never by waiting.

use crate::harness::{code, eventually, http_get, Env, Opts};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status, Span};
use pake::config::{Config, Dur, PoolMode};
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T1: &str = "0af7651916cd43dd8448eb211c80319c";
const P1: &str = "b7ad6b7169203331";
const T2: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const P2: &str = "00f067aa0ba902b7";
const T3: &str = "11111111111111111111111111111111";
const P3: &str = "2222222222222222";
/// A trace the caller did not sample.
const T4: &str = "44444444444444444444444444444444";
const T5: &str = "55555555555555555555555555555555";
const T6: &str = "66666666666666666666666666666666";
/// Session mode, named prepared statements.
const T7: &str = "77777777777777777777777777777777";
const P7: &str = "7777777777777777";
const T8: &str = "88888888888888888888888888888888";
const P: &str = "abcdefabcdefabcd";

fn comment(trace: &str, parent: &str, flags: &str) -> String {
    format!("/*traceparent='00-{trace}-{parent}-{flags}'*/")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// An OTLP/HTTP collector: every span received, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, addr)
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().expect("spans").clone()
    }

    fn of_trace(&self, trace: &str) -> Vec<Span> {
        let id = hex(trace);
        self.spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.trace_id == id)
            .collect()
    }

    /// Wait until a span of `trace` has arrived.
    async fn wait_for(&self, trace: &str) {
        let arrived = eventually(Duration::from_secs(30), || async {
            !self.of_trace(trace).is_empty()
        })
        .await;
        assert!(arrived, "no span of trace {trace}: {:?}", self.spans());
    }
}

async fn receive(
    State(c): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-protobuf")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = c.spans.lock().expect("spans");
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                spans.push((service.clone(), span));
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{key} is {other:?} in {span:?}"),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(i)) => *i,
        other => panic!("{key} is {other:?} in {span:?}"),
    }
}

fn export_to(c: &mut Config, addr: SocketAddr) {
    c.otlp.enabled = true;
    c.otlp.endpoint = format!("http://{addr}");
    c.otlp.service_name = "pake-under-test".into();
    c.otlp.export_interval = Dur::millis(20);
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_per_transaction_under_the_callers_span() {
    let (collector, addr) = Collector::start().await;
    let env = Env::with(Opts {
        tweak_lab: Some(Arc::new(move |c, _| {
            export_to(c, addr);
            // the same server as a session-mode database
            let mut session = c.databases[0].clone();
            session.name = "sessions".into();
            session.dbname = Some("postgres".into());
            session.pool_mode = Some(PoolMode::Session);
            c.databases.push(session);
        })),
        ..Opts::default()
    })
    .await;
    let c = env.client().await;
    // 1. an autocommit statement (simple protocol) carrying a traceparent
    c.simple_query(&format!("select 1 as one {}", comment(T1, P1, "01")))
        .await
        .unwrap();
    // 2. the caller did not sample this one: no span
    c.simple_query(&format!("select 2 as unsampled {}", comment(T4, P, "00")))
        .await
        .unwrap();
    // 3. an explicit transaction; the traceparent is on its second statement (extended
    //    protocol, a named prepared statement)
    c.batch_execute("begin").await.unwrap();
    let two: i32 = c
        .query_one(
            &format!("select $1::int as two {}", comment(T2, P2, "01")),
            &[&2i32],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(two, 2);
    c.batch_execute("commit").await.unwrap();
    // 4. no traceparent: a trace of its own
    c.simple_query("select 3 as untraced").await.unwrap();
    // 5. session mode: a transaction of named prepared statements (which session mode
    //    forwards untouched), the traceparent on the first
    let s = pake::lab::postgres::connect(&env.url("sessions"))
        .await
        .expect("connect session mode");
    s.batch_execute(&format!("begin {}", comment(T7, P7, "01")))
        .await
        .unwrap();
    let stmt = s.prepare("select $1::int as three").await.unwrap();
    for i in 0..2i32 {
        let v: i32 = s.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i);
    }
    s.batch_execute("commit").await.unwrap();
    // 6. a transaction that fails
    c.batch_execute("begin").await.unwrap();
    let err = c
        .simple_query(&format!("select 1/0 as boom {}", comment(T3, P3, "01")))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "22012");
    c.batch_execute("rollback").await.unwrap();

    collector.wait_for(T3).await;
    let all = collector.spans();
    assert_eq!(all.len(), 5, "one span per sampled transaction: {all:#?}");
    assert!(all.iter().all(|(service, _)| service == "pake-under-test"));
    assert!(collector.of_trace(T4).is_empty());

    let one = collector.of_trace(T1);
    assert_eq!(one.len(), 1);
    let one = &one[0];
    assert_eq!(one.parent_span_id, hex(P1));
    assert_eq!(one.span_id.len(), 8);
    assert_ne!(one.span_id, hex(P1));
    assert_eq!(one.kind, SpanKind::Client as i32);
    assert!(one.start_time_unix_nano > 0 && one.start_time_unix_nano <= one.end_time_unix_nano);
    assert_eq!(one.name, "SELECT postgres");
    assert_eq!(text(one, "db.system"), "postgresql");
    assert_eq!(text(one, "db.namespace"), "postgres");
    assert_eq!(text(one, "db.user"), env.lab.user);
    assert_eq!(text(one, "db.operation.name"), "SELECT");
    let query = text(one, "db.query.text");
    assert!(query.contains("as one"), "{query}");
    assert!(
        !query.contains('1') && !query.contains("traceparent"),
        "no literal or comment is exported: {query}"
    );
    assert_eq!(text(one, "server.address"), "127.0.0.1");
    assert_eq!(int(one, "server.port"), i64::from(env.lab.primary.port));
    assert_eq!(text(one, "pake.route"), "primary");
    assert_eq!(int(one, "pake.statements"), 1);
    assert!(matches!(attr(one, "pake.pool.wait_ms"), Some(Value::DoubleValue(w)) if *w >= 0.0));
    assert!(one.status.is_none(), "{one:?}");

    let tx = collector.of_trace(T2);
    assert_eq!(
        tx.len(),
        1,
        "BEGIN, SELECT and COMMIT are one span: {tx:#?}"
    );
    let tx = &tx[0];
    assert_eq!(tx.parent_span_id, hex(P2));
    assert_eq!(int(tx, "pake.statements"), 3);
    assert_eq!(text(tx, "db.operation.name"), "SELECT");
    let query = text(tx, "db.query.text");
    assert!(
        query.starts_with("begin") && query.contains("as two") && query.ends_with("commit"),
        "{query}"
    );

    let untraced: Vec<Span> = all
        .iter()
        .map(|(_, s)| s.clone())
        .filter(|s| text(s, "db.query.text").contains("untraced"))
        .collect();
    assert_eq!(untraced.len(), 1);
    let untraced = &untraced[0];
    assert!(untraced.parent_span_id.is_empty());
    assert_eq!(untraced.trace_id.len(), 16);
    assert!(![T1, T2, T3].iter().any(|t| hex(t) == untraced.trace_id));

    let session = collector.of_trace(T7);
    assert_eq!(session.len(), 1, "{session:#?}");
    let session = &session[0];
    assert_eq!(session.parent_span_id, hex(P7));
    assert_eq!(
        int(session, "pake.statements"),
        4,
        "BEGIN, two Executes, COMMIT"
    );
    assert_eq!(text(session, "pake.pool.mode"), "session");
    assert_eq!(text(session, "db.namespace"), "postgres");
    let query = text(session, "db.query.text");
    assert_eq!(query.matches("as three").count(), 2, "{query}");

    let failed = collector.of_trace(T3);
    assert_eq!(failed.len(), 1);
    let failed = &failed[0];
    assert_eq!(failed.parent_span_id, hex(P3));
    let st = failed.status.as_ref().expect("error status");
    assert_eq!(st.code, status::StatusCode::Error as i32);
    assert!(st.message.contains("22012"), "{st:?}");
    assert_eq!(text(failed, "db.response.status_code"), "22012");
    assert_eq!(int(failed, "pake.statements"), 3);

    let counted = eventually(Duration::from_secs(10), || async {
        let (_, m) = http_get(&env.admin_url("/metrics")).await;
        metric(&m, "pake_otlp_spans_exported_total") >= 5.0
    })
    .await;
    assert!(counted, "pake_otlp_spans_exported_total");

    // a span still waiting for its batch when Pake shuts down is sent by the drain
    let mut config = (*env.pake.proxy.config()).clone();
    config.otlp.export_interval = Dur::secs(3600);
    env.pake.proxy.apply(config);
    traced(&c, T8).await;
    drop((c, s));
    assert!(collector.of_trace(T8).is_empty(), "waits for its batch");
    env.pake.drain(Duration::from_secs(5)).await;
    assert_eq!(collector.of_trace(T8).len(), 1, "flushed at shutdown");
}

/// A statement carrying a sampled traceparent, on its own.
async fn traced(c: &tokio_postgres::Client, trace: &str) {
    c.simple_query(&format!("select 1 as traced {}", comment(trace, P, "01")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_reloadable_and_never_slows_clients() {
    let (collector, addr) = Collector::start().await;
    let env = Env::with(Opts {
        tweak_lab: Some(Arc::new(move |c, _| {
            export_to(c, addr);
            c.otlp.enabled = false;
        })),
        ..Opts::default()
    })
    .await;
    let proxy = env.pake.proxy.clone();
    assert!(proxy.otlp().is_none(), "disabled: no exporter at all");
    let c = env.client().await;
    traced(&c, T5).await;

    // turned on by a reload: the same client's next transaction is exported
    let mut config = (*proxy.config()).clone();
    config.otlp.enabled = true;
    proxy.apply(config.clone());
    traced(&c, T6).await;
    collector.wait_for(T6).await;
    assert!(collector.of_trace(T5).is_empty(), "nothing while disabled");
    assert_eq!(collector.spans().len(), 1);

    // a collector that is down: spans are dropped and counted, queries go on
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    config.otlp.endpoint = format!("http://{dead}");
    proxy.apply(config.clone());
    for _ in 0..3 {
        traced(&c, T5).await;
    }
    let failed = eventually(Duration::from_secs(30), || async {
        let (_, m) = http_get(&env.admin_url("/metrics")).await;
        metric(
            &m,
            "pake_otlp_spans_dropped_total{reason=\"export_failed\"}",
        ) >= 1.0
    })
    .await;
    assert!(failed, "export_failed not counted");

    // a collector that accepts and never answers: the queue fills, spans are dropped on the
    // spot and every query still completes
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    config.otlp.endpoint = format!("http://{hung_addr}");
    config.otlp.queue_size = 1;
    config.otlp.batch_size = 1;
    config.otlp.export_timeout = Dur::secs(600);
    proxy.apply(config);
    for _ in 0..6 {
        traced(&c, T5).await;
    }
    // the exporter holds at most one span and the queue one more; the others were dropped
    // before their ReadyForQuery reached the client
    let (_, m) = http_get(&env.admin_url("/metrics")).await;
    let full = metric(&m, "pake_otlp_spans_dropped_total{reason=\"queue_full\"}");
    assert!(full >= 4.0, "queue_full {full}\n{m}");
    assert!(collector.of_trace(T5).is_empty());
}
