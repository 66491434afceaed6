//! Postgres requests for the load generator, over tokio-postgres: pgbench's select-only and
//! TPC-B-like transactions and an autocommit read/write mix, each in the three pgbench
//! protocols (simple with inlined literals, extended with an unnamed statement per request,
//! prepared once per connection). The data is pgbench's own (`pgbench -i`).

use super::measure::{Client, Done};
use super::rng::Rng;
use super::scenario::{QueryMode, Scenario, Workload};
use super::BenchError;
use crate::lab::postgres::describe;
use std::sync::Arc;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client as PgConn, NoTls, Statement};

/// Every statement a workload sends; parameters are `$1..$n` in order, all int4.
const STATEMENTS: [&str; 7] = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "BEGIN",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    "END",
];
const SELECT: usize = 0;
const BEGIN: usize = 1;
const UPDATE_ACCOUNT: usize = 2;
const UPDATE_TELLER: usize = 3;
const UPDATE_BRANCH: usize = 4;
const INSERT_HISTORY: usize = 5;
const END: usize = 6;

/// What one client needs to build its requests.
#[derive(Debug, Clone)]
pub struct PgShape {
    pub workload: Workload,
    pub mode: QueryMode,
    pub scale: i32,
    pub write_percent: u32,
    pub split_roles: bool,
    /// [`STATEMENTS`] with the tables in the scenario's schema.
    texts: Arc<[String]>,
}

/// `sql` with pgbench's tables qualified by `schema` (none: as written, search_path).
pub fn in_schema(sql: &str, schema: Option<&str>) -> String {
    match schema {
        Some(s) => sql.replace("pgbench_", &format!("{s}.pgbench_")),
        None => sql.to_string(),
    }
}

impl PgShape {
    pub fn of(s: &Scenario) -> PgShape {
        PgShape {
            workload: s.workload,
            mode: s.pg.mode,
            scale: s.pg.scale.max(1) as i32,
            write_percent: s.pg.write_percent,
            split_roles: s.pg.split_roles,
            texts: STATEMENTS
                .iter()
                .map(|t| in_schema(t, s.pg.schema.as_deref()))
                .collect(),
        }
    }

    fn statements(&self) -> &'static [usize] {
        match self.workload {
            Workload::PgTpcb => &[
                BEGIN,
                UPDATE_ACCOUNT,
                SELECT,
                UPDATE_TELLER,
                UPDATE_BRANCH,
                INSERT_HISTORY,
                END,
            ],
            Workload::PgMixed => &[SELECT, UPDATE_ACCOUNT],
            _ => &[SELECT],
        }
    }
}

/// One logged-in Postgres client.
pub struct PgClient {
    conn: PgConn,
    shape: PgShape,
    prepared: Vec<Option<Statement>>,
    /// pg-mixed with split roles: this client only writes.
    writer: bool,
}

/// Log in (and, in prepared mode, prepare the workload's statements).
/// `index` numbers the clients of a run (it picks the writers when roles are split).
pub async fn connect(url: String, shape: PgShape, index: usize) -> Result<PgClient, String> {
    let (conn, driver) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        let _ = driver.await;
    });
    let mut prepared = vec![None; STATEMENTS.len()];
    if shape.mode == QueryMode::Prepared {
        for &i in shape.statements() {
            let types = vec![Type::INT4; params_of(STATEMENTS[i])];
            let stmt = conn
                .prepare_typed(&shape.texts[i], &types)
                .await
                .map_err(|e| describe(&e))?;
            prepared[i] = Some(stmt);
        }
    }
    Ok(PgClient {
        conn,
        prepared,
        writer: shape.split_roles && (index % 100) < shape.write_percent as usize,
        shape,
    })
}

fn params_of(sql: &str) -> usize {
    (1..=9)
        .take_while(|n| sql.contains(&format!("${n}")))
        .count()
}

impl PgClient {
    /// Run statement `i` with `args` in the scenario's protocol.
    async fn exec(&self, i: usize, args: &[i32]) -> Result<(), String> {
        let result = match self.shape.mode {
            QueryMode::Simple => {
                let mut sql = self.shape.texts[i].clone();
                for (n, v) in args.iter().enumerate().rev() {
                    sql = sql.replace(&format!("${}", n + 1), &v.to_string());
                }
                self.conn.simple_query(&sql).await.map(drop)
            }
            QueryMode::Extended => {
                let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                    args.iter().map(|v| (v as _, Type::INT4)).collect();
                self.conn
                    .query_typed(&self.shape.texts[i], &typed)
                    .await
                    .map(drop)
            }
            QueryMode::Prepared => {
                let Some(stmt) = &self.prepared[i] else {
                    return Err(format!("statement {i} was not prepared"));
                };
                let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as _).collect();
                self.conn.query(stmt, &params).await.map(drop)
            }
        };
        result.map_err(|e| describe(&e))
    }

    async fn tpcb(&self, rng: &mut Rng) -> Result<(), String> {
        let scale = self.shape.scale;
        let aid = 1 + rng.below(100_000 * scale as u64) as i32;
        let bid = 1 + rng.below(scale as u64) as i32;
        let tid = 1 + rng.below(10 * scale as u64) as i32;
        let delta = rng.below(10_001) as i32 - 5000;
        let steps: [(usize, &[i32]); 7] = [
            (BEGIN, &[]),
            (UPDATE_ACCOUNT, &[delta, aid]),
            (SELECT, &[aid]),
            (UPDATE_TELLER, &[delta, tid]),
            (UPDATE_BRANCH, &[delta, bid]),
            (INSERT_HISTORY, &[tid, bid, aid, delta]),
            (END, &[]),
        ];
        for (i, args) in steps {
            if let Err(e) = self.exec(i, args).await {
                // leave no failed transaction behind for the next request
                let _ = self.conn.simple_query("ROLLBACK").await;
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Client for PgClient {
    async fn request(&mut self, rng: &mut Rng) -> Result<Done, String> {
        let accounts = 100_000 * self.shape.scale as u64;
        match self.shape.workload {
            Workload::PgTpcb => {
                self.tpcb(rng).await?;
                Ok(Done { ops: 1, reads: 0 })
            }
            Workload::PgMixed
                if self.writer
                    || (!self.shape.split_roles && rng.percent(self.shape.write_percent)) =>
            {
                let aid = 1 + rng.below(accounts) as i32;
                let delta = rng.below(10_001) as i32 - 5000;
                self.exec(UPDATE_ACCOUNT, &[delta, aid]).await?;
                Ok(Done { ops: 1, reads: 0 })
            }
            _ => {
                let aid = 1 + rng.below(accounts) as i32;
                self.exec(SELECT, &[aid]).await?;
                Ok(Done { ops: 1, reads: 1 })
            }
        }
    }
}

/// `pgbench -i -q -s SCALE` against `url` (the primary, directly).
pub fn init_data(url: &str, scale: u32) -> Result<(), BenchError> {
    let pgbench = crate::lab::postgres::bindir()?.join("pgbench");
    let out = std::process::Command::new(pgbench)
        .args(["-i", "-q", "-s", &scale.max(1).to_string(), url])
        .env("LC_ALL", "C")
        .output()?;
    if !out.status.success() {
        return Err(BenchError::Peer {
            what: "pgbench -i".into(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Wait until the replica has replayed everything the primary had written when we asked.
pub async fn wait_replica_caught_up(primary: &str, replica: &str) -> Result<(), BenchError> {
    let p = crate::lab::postgres::connect(primary).await?;
    let r = crate::lab::postgres::connect(replica).await?;
    let client = |e: tokio_postgres::Error| BenchError::Client(describe(&e));
    let row = p
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(client)?;
    let target: String = row.get(0);
    for _ in 0..600 {
        let row = r
            .query_one(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&target],
            )
            .await
            .map_err(client)?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(BenchError::Client(
        "the replica did not catch up within 60 s".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_counted() {
        assert_eq!(params_of(STATEMENTS[SELECT]), 1);
        assert_eq!(params_of(STATEMENTS[BEGIN]), 0);
        assert_eq!(params_of(STATEMENTS[INSERT_HISTORY]), 4);
    }
}
