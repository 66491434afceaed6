//! Slow statements: samples, logs and plan capture, all off the request path.
//!
//! `record` hands a slow statement to a bounded channel (`try_send`: a full queue drops and
//! counts, it never blocks a client). One background task stores the sample (redacted by
//! default), logs it with its trace id, and — rate-limited globally (`explain_per_minute`) and
//! per fingerprint (`explain_cooldown`) — captures its plan on a side connection.

use super::aggregate::{keep_raw, RawSample};
use super::collector::MAX_SAMPLE_TEXT;
use super::explain::{self, ExplainError};
use super::fingerprint::Fingerprint;
use super::model::{hex_id, SlowSample};
use super::stats::unix_ms;
use super::{Insight, QueryEvent};
use crate::pg::sql::lexer::{Kind as Tok, Lexer};
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// A slow execution, owned, on its way to the background task.
#[derive(Debug)]
pub struct SlowEvent {
    pub fingerprint: Fingerprint,
    pub text: String,
    pub params: Vec<Option<String>>,
    pub duration: Duration,
    pub database: String,
    pub user: String,
    pub application: String,
    pub client_addr: SocketAddr,
    pub client_id: u64,
    pub trace_id: Option<String>,
    pub error: Option<String>,
    pub writes: bool,
    /// An Execute whose `text` has placeholders for values Pake did not keep.
    pub prepared: bool,
    pub at: SystemTime,
}

impl SlowEvent {
    pub fn from_event(ev: &QueryEvent<'_>) -> SlowEvent {
        SlowEvent {
            fingerprint: ev.fingerprint.clone(),
            text: ev.text.to_string(),
            params: ev.owned_params(),
            duration: ev.duration,
            database: ev.database.to_string(),
            user: ev.user.to_string(),
            application: ev.application.to_string(),
            client_addr: ev.client_addr,
            client_id: ev.client_id,
            trace_id: ev.trace_id.map(str::to_string),
            error: ev.error.map(str::to_string),
            writes: ev.writes,
            prepared: ev.is_template(),
            at: SystemTime::now(),
        }
    }

    /// The sample as shown: literals replaced by `?` and no parameter values when redacting.
    fn sample(&self, redact: bool) -> SlowSample {
        SlowSample {
            fingerprint: hex_id(self.fingerprint.id),
            text: if redact {
                redact_literals(&self.text)
            } else {
                self.text.clone()
            },
            params: (!redact).then(|| self.params.clone()),
            duration_ms: self.duration.as_secs_f64() * 1000.0,
            database: self.database.clone(),
            user: self.user.clone(),
            application: self.application.clone(),
            client_addr: self.client_addr.to_string(),
            client_id: self.client_id,
            trace_id: self.trace_id.clone(),
            error: self.error.clone(),
            at_ms: unix_ms(self.at),
        }
    }
}

/// `text` with every string and number literal replaced by `?`; everything else as sent.
pub fn redact_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for t in Lexer::new(text) {
        if matches!(t.kind, Tok::String | Tok::Number) {
            out.push_str(text.get(last..t.start).unwrap_or(""));
            out.push('?');
            last = t.end;
        }
    }
    out.push_str(text.get(last..).unwrap_or(""));
    out
}

/// A token bucket: `per_minute` tokens, refilled continuously.
struct Bucket {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(self.per_minute.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The background task: runs until the engine is dropped.
pub async fn run(insight: Weak<Insight>, mut rx: mpsc::Receiver<SlowEvent>) {
    let per_minute = insight.upgrade().map_or(0, |i| i.config.explain_per_minute);
    let mut bucket = Bucket {
        per_minute: f64::from(per_minute),
        tokens: f64::from(per_minute),
        at: Instant::now(),
    };
    while let Some(ev) = rx.recv().await {
        let Some(ins) = insight.upgrade() else {
            break;
        };
        tracing::info!(
            target: "pake::insight::slow",
            fingerprint = %hex_id(ev.fingerprint.id),
            duration_ms = ev.duration.as_secs_f64() * 1000.0,
            database = %ev.database,
            user = %ev.user,
            client = %ev.client_addr,
            trace_id = ev.trace_id.as_deref().unwrap_or(""),
            query = %ev.fingerprint.text,
            "slow query"
        );
        let due = store(&ins, &ev);
        if due && bucket.take() {
            capture_plan(&ins, &ev).await;
        }
    }
}

/// Keep the sample; say whether a plan capture is due for its fingerprint.
fn store(ins: &Insight, ev: &SlowEvent) -> bool {
    let cfg = &ins.config;
    let mut agg = ins.agg.lock();
    let entry = agg.entry_for(&ev.fingerprint, ev.at);
    if entry.samples.len() >= cfg.samples_per_fingerprint.max(1) {
        entry.samples.pop_front();
    }
    entry.samples.push_back(ev.sample(cfg.redact_parameters));
    if ev.text.len() <= MAX_SAMPLE_TEXT && *ev.text != *ev.fingerprint.text {
        let sample = RawSample {
            database: ev.database.clone(),
            text: ev.text.clone(),
            params: ev.params.clone(),
            writes: ev.writes,
            ns: u64::try_from(ev.duration.as_nanos()).unwrap_or(u64::MAX),
        };
        match ev.prepared {
            true => entry.template = Some(sample),
            false => keep_raw(&mut entry.raw, sample),
        }
    }
    let cooled = entry
        .last_explain
        .is_none_or(|t| t.elapsed() >= cfg.explain_cooldown.0);
    let due = cfg.explain && ev.fingerprint.kind.explainable() && cooled && ev.error.is_none();
    if due {
        entry.last_explain = Some(Instant::now());
    }
    due
}

/// Capture the plan of `ev` on a side connection opened for it and closed after. None is
/// kept between captures (at most `explain_per_minute` of them): an idle session of Pake's
/// on a client's database made the client's `DROP DATABASE`, or a `CREATE DATABASE …
/// TEMPLATE` of it, fail with 55006 for as long as Pake ran (found with Django's suite, whose
/// test database could then not be dropped).
async fn capture_plan(ins: &Insight, ev: &SlowEvent) {
    let Some(target) = ins.databases.read().get(&ev.database).cloned() else {
        tracing::debug!(database = %ev.database, "no side connection registered; plan not captured");
        return;
    };
    let timeout = ins.config.explain_timeout.0.max(Duration::from_millis(100));
    // writes are never ANALYZEd: EXPLAIN alone does not execute the statement; nor is a
    // statement as prepared (no values to run it with)
    let analyze = ins.config.explain_analyze && !ev.writes && !ev.prepared;
    let result = async {
        let client = &explain::connect(&target, timeout).await?;
        // a statement as prepared has no values to run it with: its generic plan is the
        // one the server uses for it after five executions
        let plan = async {
            match ev.prepared {
                true => explain::explain_generic(client, &ev.text).await,
                false => explain::explain(client, &ev.text, &ev.params, analyze).await,
            }
        };
        tokio::time::timeout(timeout * 2, plan)
            .await
            .map_err(|_| ExplainError::Timeout(timeout * 2))?
    }
    .await;
    let mut agg = ins.agg.lock();
    match result {
        Ok(plan) => {
            agg.counters.explains += 1;
            let captured =
                explain::summarize(&hex_id(ev.fingerprint.id), &ev.database, analyze, plan);
            agg.entry_for(&ev.fingerprint, ev.at).plan = Some(captured);
        }
        Err(e) => {
            agg.counters.explain_errors += 1;
            tracing::debug!(error = %e, fingerprint = %hex_id(ev.fingerprint.id), "plan capture failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_shape_and_drops_values() {
        assert_eq!(
            redact_literals("select * from users where email = 'a@b.c' and age > 41 and id = $1"),
            "select * from users where email = ? and age > ? and id = $1"
        );
        assert_eq!(
            redact_literals("select t1.c2 from t1"),
            "select t1.c2 from t1"
        );
    }

    #[test]
    fn bucket_limits_rate() {
        let mut b = Bucket {
            per_minute: 2.0,
            tokens: 2.0,
            at: Instant::now(),
        };
        assert!(b.take());
        assert!(b.take());
        assert!(!b.take());
    }
}
