//! The data a scenario needs on your servers (`pake bench --target … --prepare/--cleanup`):
//! pgbench-like tables in a schema of their own (`pg.schema`, default `pake_bench`), the
//! statements a pg-sql scenario lists under `pg.prepare`/`pg.cleanup`, or a Redis key set
//! under a prefix of its own (`redis.prefix`, default `pake_bench:`). Cleanup removes exactly
//! what prepare made: the four tables and the schema if it is then empty, or the keys
//! matching the prefix.

use super::pg_load::in_schema;
use super::redis_load;
use super::resp::{Reply, Resp};
use super::scenario::{Scenario, Workload};
use super::BenchError;
use crate::lab::postgres::{connect, describe};
use std::net::SocketAddr;

/// pgbench's tables, filled the way `pgbench -i` fills them (`SCALE` = `pg.scale`).
const TABLES: &str = "
CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO pgbench_branches SELECT b, 0, '' FROM generate_series(1, SCALE) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, '' FROM generate_series(1, 10 * SCALE) t;
INSERT INTO pgbench_accounts SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series(1, 100000 * SCALE) a;
ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid);
ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid);
ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);
ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;
";

const DROP: &str =
    "DROP TABLE IF EXISTS pgbench_history, pgbench_accounts, pgbench_tellers, pgbench_branches;";

/// Keys deleted per `UNLINK` while cleaning up.
const SCAN_BATCH: usize = 1000;

fn client_err(e: tokio_postgres::Error) -> BenchError {
    BenchError::Client(describe(&e))
}

/// The schema prepare and cleanup may touch: a plain lower-case identifier of our own, never
/// a schema the database or its users already rely on.
pub fn own_schema(s: &Scenario) -> Result<&str, BenchError> {
    let schema = s.pg.schema.as_deref().unwrap_or("pake_bench");
    let plain = schema
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain || schema.len() > 63 {
        return Err(BenchError::Client(format!(
            "pg.schema {schema:?}: use a plain lower-case name (letters, digits, _)"
        )));
    }
    if schema == "public" || schema == "information_schema" || schema.starts_with("pg_") {
        return Err(BenchError::Client(format!(
            "pg.schema {schema:?}: pake bench only creates and drops a schema of its own"
        )));
    }
    Ok(schema)
}

/// Run each statement in order (pg-sql `prepare`/`cleanup` lists, lab set-up).
pub async fn run_sql(url: &str, statements: &[String]) -> Result<(), BenchError> {
    if statements.is_empty() {
        return Ok(());
    }
    let c = connect(url).await?;
    for sql in statements {
        c.batch_execute(sql)
            .await
            .map_err(|e| BenchError::Client(format!("{sql}: {}", describe(&e))))?;
    }
    Ok(())
}

/// Create the scenario's tables through `url`; returns what was done, for the log.
pub async fn prepare_pg(url: &str, s: &Scenario) -> Result<String, BenchError> {
    if s.workload == Workload::PgSql {
        run_sql(url, &s.pg.prepare).await?;
        return Ok(format!(
            "ran {} pg.prepare statement(s)",
            s.pg.prepare.len()
        ));
    }
    let schema = own_schema(s)?;
    let c = connect(url).await?;
    let scale = s.pg.scale.max(1);
    let script = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};\n{}\n{}",
        in_schema(DROP, Some(schema)),
        in_schema(&TABLES.replace("SCALE", &scale.to_string()), Some(schema))
    );
    c.batch_execute(&script).await.map_err(client_err)?;
    Ok(format!(
        "created pgbench tables in schema {schema}, scale {scale} ({} accounts)",
        100_000 * u64::from(scale)
    ))
}

/// Remove what [`prepare_pg`] made.
pub async fn cleanup_pg(url: &str, s: &Scenario) -> Result<String, BenchError> {
    if s.workload == Workload::PgSql {
        run_sql(url, &s.pg.cleanup).await?;
        return Ok(format!(
            "ran {} pg.cleanup statement(s)",
            s.pg.cleanup.len()
        ));
    }
    let schema = own_schema(s)?;
    let c = connect(url).await?;
    c.batch_execute(&in_schema(DROP, Some(schema)))
        .await
        .map_err(client_err)?;
    // without CASCADE: a schema holding anything else stays, and we say so
    match c
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema}"))
        .await
    {
        Ok(()) => Ok(format!("dropped the pgbench tables and schema {schema}")),
        Err(e) => Ok(format!(
            "dropped the pgbench tables; schema {schema} kept ({})",
            describe(&e)
        )),
    }
}

/// Before a run: the tables are there (else: run with --prepare).
pub async fn check_pg(url: &str, s: &Scenario) -> Result<(), BenchError> {
    if matches!(s.workload, Workload::PgSql | Workload::IdleMemory) {
        return Ok(());
    }
    let c = connect(url).await?;
    let table = in_schema("pgbench_accounts", s.pg.schema.as_deref());
    c.query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
        .await
        .map_err(|e| {
            BenchError::Client(format!(
                "{table} is not readable ({}): run once with --prepare",
                describe(&e)
            ))
        })?;
    Ok(())
}

fn own_prefix(s: &Scenario) -> Result<&str, BenchError> {
    match s.redis.prefix.as_deref() {
        Some(p) if !p.is_empty() && !p.contains(['*', '?', '[']) => Ok(p),
        _ => Err(BenchError::Client(
            "redis.prefix: give a non-empty prefix without glob characters".into(),
        )),
    }
}

/// Write the scenario's keys (`redis.keys` values of `redis.value_size` bytes) for each of
/// `targets` targets, every one on keys of its own.
pub async fn prepare_redis(
    addr: SocketAddr,
    auth: Option<&[String]>,
    s: &Scenario,
    targets: usize,
) -> Result<String, BenchError> {
    let prefix = own_prefix(s)?;
    redis_load::preload(addr, None, s, prefix, targets, auth).await?;
    let first = redis_load::target_prefix(prefix, 0);
    Ok(format!(
        "wrote {} keys {first}0… for each of {targets} target(s)",
        s.redis.keys
    ))
}

/// Delete every key under the scenario's prefix (SCAN + UNLINK, a batch at a time).
pub async fn cleanup_redis(
    addr: SocketAddr,
    auth: Option<&[String]>,
    s: &Scenario,
) -> Result<String, BenchError> {
    let pattern = format!("{}*", own_prefix(s)?);
    let mut c = Resp::connect(addr).await?;
    if let Some(args) = auth {
        let mut cmd: Vec<&[u8]> = vec![b"AUTH"];
        cmd.extend(args.iter().map(|a| a.as_bytes()));
        if let Reply::Error(e) = c.call(&cmd).await? {
            return Err(BenchError::Client(format!("AUTH: {e}")));
        }
    }
    let (mut cursor, mut deleted) = (b"0".to_vec(), 0i64);
    let count = SCAN_BATCH.to_string();
    loop {
        let reply = c
            .call(&[
                b"SCAN",
                &cursor,
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                count.as_bytes(),
            ])
            .await?;
        let Reply::Array(Some(parts)) = reply else {
            return Err(BenchError::Client(format!("SCAN: {reply:?}")));
        };
        let (Some(Reply::Bulk(Some(next))), Some(Reply::Array(Some(keys)))) =
            (parts.first(), parts.get(1))
        else {
            return Err(BenchError::Client("SCAN: unexpected reply".into()));
        };
        let keys: Vec<&[u8]> = keys
            .iter()
            .filter_map(|k| match k {
                Reply::Bulk(Some(k)) => Some(k.as_slice()),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            let mut cmd: Vec<&[u8]> = vec![b"UNLINK"];
            cmd.extend(keys);
            match c.call(&cmd).await? {
                Reply::Int(n) => deleted += n,
                other => return Err(BenchError::Client(format!("UNLINK: {other:?}"))),
            }
        }
        cursor = next.clone();
        if cursor == b"0" {
            break;
        }
    }
    Ok(format!("deleted {deleted} keys {pattern}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_schema(schema: &str) -> Scenario {
        let mut s = Scenario::parse(super::super::scenario::DEFAULT, "t").unwrap();
        s.pg.schema = Some(schema.into());
        s
    }

    #[test]
    fn only_a_schema_of_our_own_is_touched() {
        assert_eq!(
            own_schema(&with_schema("pake_bench")).unwrap(),
            "pake_bench"
        );
        for bad in [
            "public",
            "pg_catalog",
            "information_schema",
            "Bad",
            "x;drop",
            "",
        ] {
            assert!(own_schema(&with_schema(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_land_in_the_schema() {
        let sql = in_schema(TABLES, Some("bench1"));
        assert!(sql.contains("CREATE TABLE bench1.pgbench_accounts"));
        assert!(!sql.contains(" pgbench_"), "{sql}");
    }
}
