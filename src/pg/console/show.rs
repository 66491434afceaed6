//! The `SHOW …` tables of the admin console. Column names follow PgBouncer's where PgBouncer
//! has the command; Pake's additions come after them.

use super::Table;
use crate::pg::cancel::{state, unix_ms};
use crate::pg::proxy::Proxy;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

fn s<T: ToString>(v: T) -> Option<String> {
    Some(v.to_string())
}

/// `2026-11-25 14:12:47 UTC` for a wall-clock time in milliseconds since the epoch.
fn timestamp_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn timestamp(t: SystemTime) -> String {
    timestamp_ms(
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn pools(proxy: &Proxy) -> Table {
    let mut t = Table::new(&[
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "cl_cancel_req",
        "sv_active",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
        "maxwait",
        "maxwait_us",
        "pool_mode",
        "target",
        "paused",
    ]);
    let mut pools = proxy.pools();
    pools.sort_by(|a, b| {
        (&a.key.database, &a.key.user, &a.target_name).cmp(&(
            &b.key.database,
            &b.key.user,
            &b.target_name,
        ))
    });
    for p in pools {
        let c = p.counts();
        let wait = p.max_wait();
        t.row(vec![
            s(&p.key.database),
            s(&p.key.user),
            s(c.active),
            s(c.waiting),
            s(0),
            s(c.active),
            s(c.idle),
            s(0),
            s(0),
            s(0),
            s(wait.as_secs()),
            s(wait.subsec_micros()),
            s(p.mode()),
            s(&p.target_name),
            s(if p.is_paused() { "yes" } else { "no" }),
        ]);
    }
    t
}

pub fn stats(proxy: &Proxy) -> Table {
    let mut t = Table::new(&[
        "database",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
    ]);
    #[derive(Default)]
    struct Sum {
        xact: u64,
        query: u64,
        recv: u64,
        sent: u64,
        xact_us: u64,
        wait_us: u64,
        waits: u64,
        uptime: f64,
    }
    let mut by_db: BTreeMap<String, Sum> = BTreeMap::new();
    for p in proxy.pools() {
        let m = &p.metrics;
        let e = by_db.entry(p.key.database.clone()).or_default();
        e.xact += m.transactions.get();
        e.query += m.queries.get();
        e.recv += m.client_received_bytes.get();
        e.sent += m.client_sent_bytes.get();
        e.xact_us += (m.transaction_seconds.get() * 1e6) as u64;
        e.wait_us += (m.checkout_wait.get_sample_sum() * 1e6) as u64;
        e.waits += m.checkout_wait.get_sample_count();
        e.uptime = e.uptime.max(p.created.elapsed().as_secs_f64());
    }
    for (db, v) in by_db {
        let per_sec = |x: u64| (x as f64 / v.uptime.max(1.0)) as u64;
        let avg = |total: u64, n: u64| total.checked_div(n).unwrap_or(0);
        t.row(vec![
            s(db),
            s(v.xact),
            s(v.query),
            s(v.recv),
            s(v.sent),
            s(v.xact_us),
            s(v.xact_us),
            s(v.wait_us),
            s(per_sec(v.xact)),
            s(per_sec(v.query)),
            s(per_sec(v.recv)),
            s(per_sec(v.sent)),
            s(avg(v.xact_us, v.xact)),
            s(avg(v.xact_us, v.query)),
            s(avg(v.wait_us, v.waits)),
        ]);
    }
    t
}

const CONNECTION_COLUMNS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
];

pub fn clients(proxy: &Proxy) -> Table {
    let mut columns = CONNECTION_COLUMNS.to_vec();
    // why a transaction-mode client keeps its server (temp table, advisory lock…); empty if not
    columns.push("pinned");
    let mut t = Table::new(&columns);
    let now = unix_ms();
    for c in proxy.cancel.clients() {
        let (st, since) = c.state();
        let waited = if st == state::WAITING {
            now.saturating_sub(since)
        } else {
            0
        };
        t.row(vec![
            s("C"),
            s(&c.info.user),
            s(&c.info.database),
            s(state::name(st)),
            s(c.info.addr.ip()),
            s(c.info.addr.port()),
            s(c.info.local_addr.ip()),
            s(c.info.local_addr.port()),
            s(timestamp(c.info.connected_at)),
            s(timestamp_ms(since)),
            s(waited / 1000),
            s((waited % 1000) * 1000),
            s(0),
            s(format!("{:x}", c.info.id)),
            None,
            s(c.pid),
            s(""),
            s(&c.info.application_name),
            s(c.pinned().unwrap_or_default()),
        ]);
    }
    t
}

pub fn servers(proxy: &Proxy) -> Table {
    let mut t = Table::new(CONNECTION_COLUMNS);
    for p in proxy.pools() {
        for r in p.server_rows() {
            t.row(vec![
                s("S"),
                s(&p.key.user),
                s(&p.key.database),
                s(if r.idle { "idle" } else { "active" }),
                s(r.addr.ip()),
                s(r.addr.port()),
                r.local_addr.map(|a| a.ip().to_string()),
                r.local_addr.map(|a| a.port().to_string()),
                s(timestamp(r.connected_at)),
                s(timestamp(r.connected_at)),
                s(0),
                s(0),
                s(0),
                s(format!("{:x}", r.id)),
                None,
                s(r.backend_pid),
                s(""),
                s(""),
            ]);
        }
    }
    t
}

pub fn databases(proxy: &Proxy) -> Table {
    let mut t = Table::new(&[
        "name",
        "host",
        "port",
        "database",
        "force_user",
        "pool_size",
        "min_pool_size",
        "reserve_pool",
        "pool_mode",
        "max_connections",
        "current_connections",
        "paused",
        "disabled",
        "replicas",
    ]);
    let config = proxy.config();
    let pools = proxy.pools();
    let topologies = proxy.topologies();
    for db in &config.databases {
        let mine: Vec<_> = pools.iter().filter(|p| p.key.database == db.name).collect();
        // after a failover, the primary is the promoted replica
        let promoted = topologies
            .iter()
            .filter(|t| t.database == db.name)
            .find_map(|t| t.promoted().map(|r| r.config.clone()));
        let (host, port) = promoted.map_or((db.host.clone(), db.port), |r| (r.host, r.port));
        let current: usize = mine
            .iter()
            .map(|p| p.counts().active + p.counts().idle)
            .sum();
        let paused = !mine.is_empty() && mine.iter().all(|p| p.is_paused());
        t.row(vec![
            s(&db.name),
            s(host),
            s(port),
            s(db.server_dbname()),
            db.server_user.clone(),
            s(db.pool_size.unwrap_or(config.pool.pool_size)),
            s(0),
            s(0),
            s(db.pool_mode.unwrap_or(config.pool.pool_mode)),
            s(0),
            s(current),
            s(i32::from(paused)),
            s(0),
            s(db.replicas
                .iter()
                .map(|r| format!("{}:{}", r.host, r.port))
                .collect::<Vec<_>>()
                .join(",")),
        ]);
    }
    t
}

/// Settings that apply live on RELOAD (others need a restart).
const RESTART_ONLY: &[&str] = &[
    "general.pg_listen",
    "general.admin_listen",
    "general.workers",
    "peering.peer_id",
    "peering.peers",
];

pub fn config(proxy: &Proxy) -> Table {
    let mut t = Table::new(&["key", "value", "default", "changeable"]);
    let current = toml::Value::try_from(&*proxy.config()).ok();
    let defaults = toml::Value::try_from(crate::config::Config::default()).ok();
    for section in ["general", "pool", "routing", "peering"] {
        let cur = current
            .as_ref()
            .and_then(|v| v.get(section))
            .and_then(|v| v.as_table());
        let def = defaults
            .as_ref()
            .and_then(|v| v.get(section))
            .and_then(|v| v.as_table());
        let Some(cur) = cur else { continue };
        for (k, v) in cur {
            let key = format!("{section}.{k}");
            let changeable = if RESTART_ONLY.contains(&key.as_str()) {
                "no"
            } else {
                "yes"
            };
            t.row(vec![
                s(&key),
                s(plain(v)),
                def.and_then(|d| d.get(k)).map(plain),
                s(changeable),
            ]);
        }
    }
    redis_config(proxy, &mut t);
    t
}

/// The `[redis]` rows of SHOW CONFIG (a RELOAD applies only the L1 limits live).
fn redis_config(proxy: &Proxy, t: &mut Table) {
    if let Some(redis) = proxy.config().redis.as_ref() {
        for row in redis_rows(redis) {
            t.row(row);
        }
    }
}

/// `key, value, default, changeable` for every `[redis]` key; passwords are masked.
fn redis_rows(redis: &crate::redis::config::RedisConfig) -> Vec<Vec<Option<String>>> {
    let live = ["l1_max_entry_size", "l1_max_ttl"];
    let table = |c: &crate::redis::config::RedisConfig| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let (cur, def) = (
        table(redis),
        table(&crate::redis::config::RedisConfig::default()),
    );
    let masked = |k: &str, v: &toml::Value| match (k, v) {
        ("sentinel_password", _) => "********".to_string(),
        ("url", toml::Value::String(u)) => mask_url_password(u),
        _ => plain(v),
    };
    cur.iter()
        .map(|(k, v)| {
            vec![
                s(format!("redis.{k}")),
                s(masked(k, v)),
                def.get(k).map(|d| masked(k, d)),
                s(if live.contains(&k.as_str()) {
                    "yes"
                } else {
                    "no"
                }),
            ]
        })
        .collect()
}

/// `redis://user:secret@host` shown as `redis://user:********@host`.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((cred, host)) => {
            let user = cred.split_once(':').map_or(cred, |(u, _)| u);
            format!("{scheme}://{user}:********@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod redis_config_tests {
    use super::*;

    #[test]
    fn redis_keys_are_shown_with_passwords_masked() {
        let rc = crate::redis::config::RedisConfig {
            url: "redis://app:hunter2@cache:6379/1".into(),
            sentinel_password: Some("s3cret".into()),
            ..Default::default()
        };
        let rows = redis_rows(&rc);
        let get = |k: &str| {
            rows.iter()
                .find(|r| r[0].as_deref() == Some(k))
                .unwrap_or_else(|| panic!("{k} not shown"))
                .clone()
        };
        assert_eq!(
            get("redis.client_max_request_bytes")[1].as_deref(),
            Some("64MiB")
        );
        assert_eq!(
            get("redis.clients_max_memory")[2].as_deref(),
            Some("256MiB")
        );
        assert_eq!(get("redis.l1_max_ttl")[3].as_deref(), Some("yes"));
        assert_eq!(
            get("redis.url")[1].as_deref(),
            Some("redis://app:********@cache:6379/1")
        );
        let all = format!("{rows:?}");
        assert!(!all.contains("hunter2") && !all.contains("s3cret"), "{all}");
    }
}

fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn users(proxy: &Proxy) -> Table {
    let mut t = Table::new(&["name", "pool_mode", "auth_type", "max_user_connections"]);
    let config = proxy.config();
    for u in &config.users {
        t.row(vec![
            s(&u.name),
            u.pool_mode.map(|m| m.to_string()),
            s(u.auth_type.unwrap_or(config.general.auth_type)),
            s(u.max_user_connections),
        ]);
    }
    t
}

pub fn replicas(proxy: &Proxy) -> Table {
    let mut t = Table::new(&[
        "database",
        "replica",
        "zone",
        "weight",
        "healthy",
        "banned",
        "lag_bytes",
        "lag_seconds",
        "replay_lsn",
        "outstanding",
    ]);
    for topo in proxy.topologies() {
        for r in &topo.replicas {
            let lsn = r.replay_lsn.load(Ordering::Relaxed);
            t.row(vec![
                s(&topo.database),
                s(&r.name),
                r.config.zone.clone(),
                s(r.config.weight),
                s(r.healthy.load(Ordering::Relaxed)),
                s(topo.is_banned(r)),
                s(r.lag_bytes.load(Ordering::Relaxed)),
                s(format!(
                    "{:.3}",
                    r.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0
                )),
                s(format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)),
                s(r.outstanding.load(Ordering::Relaxed)),
            ]);
        }
    }
    t
}

pub fn cache(proxy: &Proxy) -> Table {
    let mut t = Table::new(&["name", "value"]);
    let Some(redis) = proxy.redis.get() else {
        t.row(vec![s("redis"), s("not configured")]);
        return t;
    };
    let m = &redis.metrics;
    let mut rows: Vec<(&str, String)> = vec![("l1", redis.l1.is_some().to_string())];
    if let Some(l1) = &redis.l1 {
        let st = l1.stats();
        let lookups = st.hits + st.misses;
        let ratio = if lookups == 0 {
            0.0
        } else {
            st.hits as f64 / lookups as f64
        };
        rows.extend([
            ("entries", st.entries.to_string()),
            ("bytes", st.bytes.to_string()),
            ("max_bytes", redis.config.l1_max_bytes.0.to_string()),
            ("hits", st.hits.to_string()),
            ("misses", st.misses.to_string()),
            ("hit_ratio", format!("{ratio:.4}")),
        ]);
    }
    rows.extend([
        ("fills", m.l1_fills.get().to_string()),
        ("invalidations", m.l1_invalidations.get().to_string()),
        ("evictions", m.l1_evictions.get().to_string()),
        (
            "tracking_connections",
            m.tracking_connections.get().to_string(),
        ),
        ("clients", redis.client_count().to_string()),
        // bytes clients hold beyond their free 16KiB each (clients_max_memory)
        ("budget_bytes", redis.budget.used().to_string()),
        ("budget_max_bytes", redis.budget.limit().to_string()),
    ]);
    for (k, v) in rows {
        t.row(vec![s(k), Some(v)]);
    }
    t
}

pub fn queries(proxy: &Proxy) -> Table {
    let mut t = Table::new(&[
        "fingerprint",
        "calls",
        "errors",
        "total_time_ms",
        "mean_ms",
        "p50_ms",
        "p99_ms",
        "rows",
        "query",
    ]);
    proxy.insight.flush();
    let top = proxy
        .insight
        .queries(crate::insight::model::SortBy::default(), 20, None);
    for q in top {
        t.row(vec![
            s(&q.id),
            s(q.calls),
            s(q.errors),
            s(format!("{:.3}", q.total_ms)),
            s(format!("{:.3}", q.mean_ms)),
            s(format!("{:.3}", q.p50_ms)),
            s(format!("{:.3}", q.p99_ms)),
            s(q.rows),
            s(&q.query),
        ]);
    }
    t
}

pub fn version() -> Table {
    let mut t = Table::new(&["version"]);
    t.row(vec![s(concat!("Pake ", env!("CARGO_PKG_VERSION")))]);
    t
}

pub fn help() -> Table {
    let mut t = Table::new(&["command", "description"]);
    for (c, d) in [
        (
            "SHOW POOLS",
            "pools per (database, user, target): clients, servers, longest wait",
        ),
        (
            "SHOW STATS",
            "per database: transactions, queries, bytes, times (µs)",
        ),
        ("SHOW CLIENTS", "client connections"),
        ("SHOW SERVERS", "server connections"),
        ("SHOW DATABASES", "configured databases"),
        ("SHOW CONFIG", "settings; changeable = applied by RELOAD"),
        ("SHOW USERS", "configured users"),
        ("SHOW REPLICAS", "replicas: health, lag, bans"),
        ("SHOW CACHE", "Redis L1 cache"),
        ("SHOW QUERIES", "top statements by total time"),
        ("SHOW VERSION", "Pake's version"),
        (
            "RELOAD",
            "re-read the config file and apply it without dropping clients",
        ),
        ("PAUSE [db]", "let transactions finish, hold new ones"),
        ("RESUME [db]", "release what PAUSE held"),
        ("SHUTDOWN", "drain and exit, like SIGTERM"),
    ] {
        t.row(vec![s(c), s(d)]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp_ms(1_795_875_167_000), "2026-11-28 14:12:47 UTC");
        assert_eq!(timestamp_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
