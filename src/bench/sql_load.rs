//! `workload = "pg-sql"`: your own statements, so a team can replay its hot queries. Each
//! request picks one statement by weight and fills its `$1..$n` from parameter generators:
//!
//! ```toml
//! [[pg.statements]]
//! sql = "SELECT * FROM orders WHERE customer_id = $1 AND status = $2"
//! weight = 9                                         # default 1
//! params = [{ int = [1, 100000], zipf = 0.99 }, { choice = ["open", "shipped"] }]
//! ```
//!
//! Generators: `int = [LOW, HIGH]` (inclusive, uniform, or Zipf-skewed towards LOW with
//! `zipf = S`), `choice = [...]` (one of the strings, uniformly), `text = LEN` (random
//! lowercase letters). Values go to the server as text, so it infers and checks each
//! parameter's type as it would for psql; in `simple` mode they are inlined as literals
//! (strings quoted). Whether a statement writes is decided by Pake's own SQL classifier:
//! anything not plainly a read counts as a write (and needs `--allow-writes`).

use super::measure::{Client, Done};
use super::rng::{Rng, Zipf};
use super::scenario::QueryMode;
use crate::lab::postgres::describe;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::error::Error as StdError;
use std::sync::Arc;
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Client as PgConn, NoTls, Statement};

/// One statement of a pg-sql scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStatement {
    pub sql: String,
    /// Relative frequency among the scenario's statements.
    #[serde(default = "one")]
    pub weight: u32,
    /// One generator per placeholder, `$1` first.
    #[serde(default)]
    pub params: Vec<Param>,
}

fn one() -> u32 {
    1
}

/// A parameter generator: exactly one of `int`, `choice`, `text`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub int: Option<[i64; 2]>,
    /// With `int`: Zipf exponent over the range (0 or absent: uniform).
    pub zipf: Option<f64>,
    pub choice: Option<Vec<String>>,
    pub text: Option<usize>,
}

/// Longest `text = LEN` accepted (a generator, not a blob loader).
const MAX_TEXT: usize = 1 << 16;
/// Widest `int` range with `zipf` (its sampler holds one float per value).
const MAX_ZIPF_SPAN: u64 = 1 << 22;

impl SqlStatement {
    pub fn validate(&self) -> Result<(), String> {
        if self.sql.trim().is_empty() {
            return Err("sql: empty".into());
        }
        if self.weight == 0 {
            return Err("weight: must be at least 1".into());
        }
        let wanted = max_placeholder(&self.sql);
        if wanted != self.params.len() {
            return Err(format!(
                "params: the SQL uses ${wanted} at most but {} generator(s) are given",
                self.params.len()
            ));
        }
        for (i, p) in self.params.iter().enumerate() {
            p.validate().map_err(|e| format!("params[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// A plain read by Pake's classifier (what replica routing trusts).
    pub fn is_read(&self) -> bool {
        use crate::pg::route::classify::{classify, parse, Class};
        let ast = parse(&self.sql);
        classify(ast.as_deref()).class == Class::Read
    }
}

impl Param {
    fn validate(&self) -> Result<(), String> {
        let kinds = [
            self.int.is_some(),
            self.choice.is_some(),
            self.text.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("give exactly one of int = [LOW, HIGH], choice = [...], text = LEN".into());
        }
        if let Some([lo, hi]) = self.int {
            if lo > hi {
                return Err(format!("int: {lo} > {hi}"));
            }
        } else if self.zipf.is_some() {
            return Err("zipf: only with int".into());
        }
        if self.zipf.is_some_and(|z| !(0.0..=5.0).contains(&z)) {
            return Err("zipf: between 0 and 5".into());
        }
        if let (Some([lo, hi]), Some(_)) = (self.int, self.zipf) {
            if hi.abs_diff(lo) >= MAX_ZIPF_SPAN {
                return Err(format!("int with zipf: at most {MAX_ZIPF_SPAN} values"));
            }
        }
        if self.choice.as_ref().is_some_and(Vec::is_empty) {
            return Err("choice: name at least one value".into());
        }
        if self.text.is_some_and(|n| n > MAX_TEXT) {
            return Err(format!("text: at most {MAX_TEXT} characters"));
        }
        Ok(())
    }
}

/// The highest `$n` in `sql` (0 without placeholders).
fn max_placeholder(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut max = 0;
    for (i, _) in sql.match_indices('$') {
        let digits: String = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .map(|&c| c as char)
            .collect();
        max = max.max(digits.parse().unwrap_or(0));
    }
    max
}

/// A generated parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

impl Value {
    /// As an SQL literal for the simple protocol.
    fn literal(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
        }
    }
}

/// Sent in text format whatever the parameter's type: the server parses it as it would
/// a literal, so generators need not know the column types.
impl ToSql for Value {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(self.to_string().as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A statement ready to generate requests.
#[derive(Debug, Clone)]
struct Ready {
    sql: String,
    weight: u32,
    gens: Vec<Gen>,
}

#[derive(Debug, Clone)]
enum Gen {
    Int {
        lo: i64,
        span: u64,
        zipf: Option<Zipf>,
    },
    Choice(Vec<String>),
    Text(usize),
}

impl Gen {
    fn of(p: &Param) -> Gen {
        match (p.int, &p.choice, p.text) {
            (Some([lo, hi]), _, _) => {
                let span = hi.abs_diff(lo).saturating_add(1);
                let zipf = p.zipf.filter(|z| *z > 0.0).map(|z| Zipf::new(span, z));
                Gen::Int { lo, span, zipf }
            }
            (_, Some(c), _) => Gen::Choice(c.clone()),
            (_, _, n) => Gen::Text(n.unwrap_or(8)),
        }
    }

    fn sample(&self, rng: &mut Rng) -> Value {
        match self {
            Gen::Int { lo, span, zipf } => {
                let off = match zipf {
                    Some(z) => z.sample(rng),
                    None => rng.below(*span),
                };
                Value::Int(lo.saturating_add_unsigned(off))
            }
            Gen::Choice(c) => Value::Text(c[rng.below(c.len() as u64) as usize].clone()),
            Gen::Text(n) => Value::Text(
                (0..*n)
                    .map(|_| char::from(b'a' + rng.below(26) as u8))
                    .collect(),
            ),
        }
    }
}

/// What every pg-sql client shares.
#[derive(Debug, Clone)]
pub struct SqlShape {
    statements: Arc<Vec<Ready>>,
    total_weight: u64,
    mode: QueryMode,
}

impl SqlShape {
    pub fn new(statements: &[SqlStatement], mode: QueryMode) -> SqlShape {
        let ready: Vec<Ready> = statements
            .iter()
            .map(|s| Ready {
                sql: s.sql.clone(),
                weight: s.weight,
                gens: s.params.iter().map(Gen::of).collect(),
            })
            .collect();
        SqlShape {
            total_weight: ready
                .iter()
                .map(|r| u64::from(r.weight))
                .sum::<u64>()
                .max(1),
            statements: Arc::new(ready),
            mode,
        }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let mut left = rng.below(self.total_weight);
        for (i, s) in self.statements.iter().enumerate() {
            if left < u64::from(s.weight) {
                return i;
            }
            left -= u64::from(s.weight);
        }
        0
    }
}

/// `sql` with `$n` replaced by the literals of `values` (highest first, so `$1` does not
/// eat into `$12`).
fn inline(sql: &str, values: &[Value]) -> String {
    let mut out = sql.to_string();
    for (n, v) in values.iter().enumerate().rev() {
        out = out.replace(&format!("${}", n + 1), &v.literal());
    }
    out
}

/// One logged-in client of a pg-sql scenario.
pub struct SqlClient {
    conn: PgConn,
    shape: SqlShape,
    /// Prepared mode: the statements, prepared once on this connection.
    prepared: Vec<Statement>,
    /// Extended mode: parameter types left to the server (OID 0), one round trip each.
    unspecified: Type,
}

pub async fn connect(url: String, shape: SqlShape) -> Result<SqlClient, String> {
    let (conn, driver) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        let _ = driver.await;
    });
    let mut prepared = Vec::new();
    if shape.mode == QueryMode::Prepared {
        for s in shape.statements.iter() {
            prepared.push(conn.prepare(&s.sql).await.map_err(|e| describe(&e))?);
        }
    }
    Ok(SqlClient {
        conn,
        shape,
        prepared,
        unspecified: Type::new("unknown".into(), 0, Kind::Pseudo, "pg_catalog".into()),
    })
}

impl Client for SqlClient {
    async fn request(&mut self, rng: &mut Rng) -> Result<Done, String> {
        let i = self.shape.pick(rng);
        let st = &self.shape.statements[i];
        let values: Vec<Value> = st.gens.iter().map(|g| g.sample(rng)).collect();
        let result = match self.shape.mode {
            QueryMode::Simple => self
                .conn
                .simple_query(&inline(&st.sql, &values))
                .await
                .map(drop),
            QueryMode::Extended => {
                let typed: Vec<(&(dyn ToSql + Sync), Type)> = values
                    .iter()
                    .map(|v| (v as _, self.unspecified.clone()))
                    .collect();
                self.conn.query_typed(&st.sql, &typed).await.map(drop)
            }
            QueryMode::Prepared => {
                let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
                self.conn.query(&self.prepared[i], &params).await.map(drop)
            }
        };
        result.map_err(|e| describe(&e))?;
        Ok(Done { ops: 1, reads: 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(sql: &str, params: Vec<Param>) -> SqlStatement {
        SqlStatement {
            sql: sql.into(),
            weight: 1,
            params,
        }
    }

    fn int(lo: i64, hi: i64) -> Param {
        Param {
            int: Some([lo, hi]),
            ..Param::default()
        }
    }

    #[test]
    fn placeholders_and_generators_must_match() {
        assert_eq!(max_placeholder("SELECT $1, $12, '$'"), 12);
        assert!(st("SELECT $1", vec![int(1, 2)]).validate().is_ok());
        let e = st("SELECT $2", vec![int(1, 2)]).validate().unwrap_err();
        assert!(e.contains("$2"), "{e}");
        let both = Param {
            int: Some([1, 2]),
            text: Some(3),
            ..Param::default()
        };
        assert!(st("SELECT $1", vec![both]).validate().is_err());
        assert!(st("SELECT $1", vec![int(5, 1)]).validate().is_err());
    }

    #[test]
    fn reads_and_writes_are_told_apart() {
        assert!(st("SELECT * FROM t WHERE id = $1", vec![]).is_read());
        assert!(!st("UPDATE t SET x = 1", vec![]).is_read());
        assert!(!st("SELECT * FROM t FOR UPDATE", vec![]).is_read());
        assert!(!st(
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            vec![]
        )
        .is_read());
        assert!(!st("not sql at all", vec![]).is_read());
    }

    #[test]
    fn values_stay_in_range_and_inline_safely() {
        let mut rng = Rng::new(3);
        let skewed = Gen::of(&Param {
            int: Some([10, 19]),
            zipf: Some(1.2),
            ..Param::default()
        });
        let choice = Gen::of(&Param {
            choice: Some(vec!["o'brien".into()]),
            ..Param::default()
        });
        let mut tens = 0;
        for _ in 0..1000 {
            match skewed.sample(&mut rng) {
                Value::Int(v) => {
                    assert!((10..=19).contains(&v), "{v}");
                    tens += usize::from(v == 10);
                }
                v => panic!("{v:?}"),
            }
        }
        assert!(tens > 200, "Zipf favours the low end: {tens}");
        let v = choice.sample(&mut rng);
        assert_eq!(
            inline("SELECT $1, $10", &vec![v; 10]),
            "SELECT 'o''brien', 'o''brien'"
        );
        assert_eq!(
            Gen::of(&Param {
                text: Some(5),
                ..Param::default()
            })
            .sample(&mut rng)
            .to_string()
            .len(),
            5
        );
    }

    #[test]
    fn weights_pick_statements() {
        let mut a = st("SELECT 1", vec![]);
        a.weight = 9;
        let shape = SqlShape::new(&[a, st("SELECT 2", vec![])], QueryMode::Simple);
        let mut rng = Rng::new(1);
        let firsts = (0..1000).filter(|_| shape.pick(&mut rng) == 0).count();
        assert!((850..=950).contains(&firsts), "{firsts}");
    }
}
