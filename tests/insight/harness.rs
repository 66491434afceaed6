//! Shared set-up: a lab primary (with hypopg created in `postgres`), an `Insight` with test
//! settings, and a driver that executes a statement and records it exactly as the proxy
//! session will: fingerprint once per statement shape, then one `QueryEvent` per execution.

use pake::config::Dur;
use pake::insight::model::{AdviceReport, IndexAdvice};
use pake::insight::{
    fingerprint, parse, ConnTarget, Fingerprint, Insight, InsightConfig, QueryEvent, Route,
};
use pake::lab::{PgLab, PgOptions};
use pake::pg::sql::normalize::normalize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

pub struct Rig {
    pub lab: PgLab,
    pub insight: Arc<Insight>,
    pub registry: prometheus::Registry,
    /// The proxy's per-shape cache, as the integrator keeps it: normalised-text hash → fingerprint.
    shapes: HashMap<u64, Fingerprint>,
    pub transaction: u64,
    /// Hold the current transaction number across `exec` calls (else each is its own).
    pub in_transaction: bool,
}

/// How a statement is sent and attributed.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub database: &'a str,
    pub user: &'a str,
    pub application: &'a str,
    pub client_id: u64,
    pub trace_id: Option<&'a str>,
    pub writes: bool,
}

impl Default for Who<'_> {
    fn default() -> Self {
        Who {
            database: "postgres",
            user: "pake",
            application: "tests",
            client_id: 1,
            trace_id: None,
            writes: false,
        }
    }
}

/// What one execution returned.
pub struct Outcome {
    pub fingerprint: Fingerprint,
    pub duration: Duration,
    pub error: Option<String>,
}

pub fn test_config() -> InsightConfig {
    InsightConfig {
        // everything is "slow": every statement is sampled and its plan captured
        slow_query_threshold: Dur::millis(0),
        explain_per_minute: 100_000,
        explain_cooldown: Dur::millis(0),
        advisor_interval: Dur::secs(0),
        advisor_min_rows: 5_000,
        ..InsightConfig::default()
    }
}

impl Rig {
    pub async fn start(config: InsightConfig, opts: PgOptions) -> Rig {
        if let Ok(level) = std::env::var("PAKE_TEST_LOG") {
            pake::obs::logging::init(pake::config::LogFormat::Text, &level);
        }
        let lab = tokio::task::spawn_blocking(move || PgLab::start(opts))
            .await
            .expect("lab thread")
            .expect("lab start");
        lab.primary
            .psql(&lab.user, "CREATE EXTENSION hypopg")
            .expect("hypopg (postgresql-15-hypopg) is installed");
        let registry = prometheus::Registry::new();
        let insight = Insight::new(config, &registry);
        let rig = Rig {
            lab,
            insight,
            registry,
            shapes: HashMap::new(),
            transaction: 0,
            in_transaction: false,
        };
        rig.register("postgres");
        rig
    }

    pub async fn default() -> Rig {
        Rig::start(test_config(), PgOptions::default()).await
    }

    /// Point the side channel of `db` at the lab primary.
    pub fn register(&self, db: &str) {
        self.insight.register_database(
            db,
            ConnTarget {
                host: "127.0.0.1".into(),
                port: self.lab.primary.port,
                user: self.lab.user.clone(),
                password: Some(self.lab.password.clone()),
                dbname: db.into(),
            },
        );
    }

    pub async fn client(&self, db: &str) -> Client {
        self.lab.client(db).await.expect("connect to the lab")
    }

    /// The fingerprint of `sql`, computed once per shape as the proxy does.
    pub fn fingerprint_of(&mut self, sql: &str) -> Fingerprint {
        let (_, norm) = normalize(sql);
        self.shapes
            .entry(norm.hash)
            .or_insert_with(|| fingerprint(sql, parse(sql).as_deref()))
            .clone()
    }

    /// Execute `sql` (extended protocol when `params` is not empty, simple otherwise), time it,
    /// and record it. Each call is its own transaction unless inside `begin`/`commit`.
    pub async fn exec(
        &mut self,
        client: &Client,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        text_params: &[Option<&str>],
        who: Who<'_>,
    ) -> Outcome {
        let fp = self.fingerprint_of(sql);
        if !self.in_transaction {
            self.transaction += 1;
        }
        let started = Instant::now();
        let result = if params.is_empty() {
            client.simple_query(sql).await.map(|msgs| {
                msgs.iter()
                    .map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => *n,
                        _ => 0,
                    })
                    .sum()
            })
        } else {
            client.execute(sql, params).await
        };
        let duration = started.elapsed();
        let (rows, error) = match &result {
            Ok(n) => (*n, None),
            Err(e) => (
                0,
                Some(
                    e.code()
                        .map(|c| c.code().to_string())
                        .unwrap_or_else(|| "08006".into()),
                ),
            ),
        };
        let raw: Vec<Option<&[u8]>> = text_params.iter().map(|p| p.map(str::as_bytes)).collect();
        let addr: SocketAddr = ([127, 0, 0, 1], 40000 + who.client_id as u16).into();
        self.insight.record(&QueryEvent {
            fingerprint: &fp,
            text: sql,
            params: &raw,
            prepared: false,
            database: who.database,
            user: who.user,
            application: who.application,
            route: Route::Primary,
            split: pake::insight::collector::split_hash(
                who.database,
                who.user,
                who.application,
                Route::Primary,
            ),
            client_id: who.client_id,
            client_addr: addr,
            transaction: self.transaction,
            duration,
            wait: Duration::from_micros(50),
            rows,
            error: error.as_deref(),
            trace_id: who.trace_id,
            writes: who.writes,
        });
        Outcome {
            fingerprint: fp,
            duration,
            error,
        }
    }

    /// Start a transaction: `exec` calls share one number until `commit`.
    pub fn begin(&mut self) {
        self.transaction += 1;
        self.in_transaction = true;
    }

    pub fn commit(&mut self) {
        self.in_transaction = false;
    }
}

/// Poll `f` until it returns `Some` (background tasks are asynchronous), up to 30 s.
pub async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not met within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A value bound to a statement run with [`run_rows`].
pub enum Value {
    Int(i32),
    Big(i64),
    Text(&'static str),
}

impl Value {
    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Int(v) => v,
            Value::Big(v) => v,
            Value::Text(v) => v,
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Big(v) => v.to_string(),
            Value::Text(v) => v.to_string(),
        }
    }
}

/// Run `sql` once per row of `values` (bound in turn, all as text for the record); its
/// fingerprint id, once its plan is captured.
pub async fn run_rows(rig: &mut Rig, c: &Client, sql: &str, values: &[Vec<Value>]) -> String {
    let mut id = String::new();
    for row in values {
        let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(Value::param).collect();
        let texts: Vec<String> = row.iter().map(Value::text).collect();
        let texts: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
        let o = rig.exec(c, sql, &params, &texts, Who::default()).await;
        assert!(o.error.is_none(), "{sql}: {:?}", o.error);
        id = format!("{:016x}", o.fingerprint.id);
    }
    let ins = rig.insight.clone();
    eventually(|| ins.plan(&id)).await;
    id
}

/// The advice that helps fingerprint `id`, if any.
pub fn helping<'a>(advice: &'a AdviceReport, id: &str) -> Option<&'a IndexAdvice> {
    advice
        .indexes
        .iter()
        .find(|a| a.fingerprints.iter().any(|f| f == id))
}
