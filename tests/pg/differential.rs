//! Differential test of the extended query protocol: the same random message sequence sent
//! to PostgreSQL directly and through Pake (transaction mode, pool of 2, a second client
//! running short transactions meanwhile so the fuzzed client's transactions land on
//! different servers) must get the same replies, normalised: message types, SQLSTATEs,
//! CommandComplete tags, DataRow bytes, RowDescription/ParameterDescription, and the
//! ReadyForQuery status. ParameterStatus, notices and notifications are left out.
//!
//! A sequence is a list of steps, each a simple Query or extended messages ending in Sync,
//! so every step ends in exactly one ReadyForQuery and reading is deterministic. Some steps
//! are pipelined (sent together, read together). After each sequence the client hangs up
//! and two fresh clients, holding both pooled servers at once, must find them idle with the
//! GUC it set back to its default; the background client checks the same on every
//! transaction it runs while the fuzzed client is connected.
//!
//! Seeds are fixed (1..=300 by default, about 20 s); `PAKE_DIFF_SEEDS=N` runs N of them
//! (`PAKE_DIFF_FIRST=S` starts at S), for exploration, stopping after
//! `PAKE_DIFF_MAX_FAIL` mismatches (5). A mismatch prints the seed, the sequence and both
//! reply streams. Pake's known differences (bugs not fixed yet, each under a `Known
//! difference:` comment) are kept out of the sequences unless `PAKE_DIFF_KNOWN=1`.

use crate::harness::{field, frame, query, sqlstate, Env, Opts, Raw};
use pake::bench::rng::Rng;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The GUC the sequences SET; its server default.
const GUC_DEFAULT: &str = "4MB";
const STATEMENTS: &[&str] = &["", "s1", "s2", "s3"];
const PORTALS: &[&str] = &["", "p1", "p2"];

/// One frontend message.
#[derive(Clone, Debug)]
enum Msg {
    Query(String),
    Parse {
        name: String,
        sql: String,
        types: Vec<u32>,
    },
    Bind {
        portal: String,
        stmt: String,
        formats: Vec<i16>,
        params: Vec<Option<Vec<u8>>>,
        results: Vec<i16>,
    },
    Describe(u8, String),
    Execute(String, i32),
    Close(u8, String),
    Flush,
    Sync,
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn i16s(out: &mut Vec<u8>, v: &[i16]) {
    out.extend_from_slice(&(v.len() as i16).to_be_bytes());
    for f in v {
        out.extend_from_slice(&f.to_be_bytes());
    }
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Msg::Query(q) => query(q),
            Msg::Parse { name, sql, types } => {
                cstr(&mut b, name);
                cstr(&mut b, sql);
                b.extend_from_slice(&(types.len() as i16).to_be_bytes());
                for t in types {
                    b.extend_from_slice(&t.to_be_bytes());
                }
                frame(b'P', &b)
            }
            Msg::Bind {
                portal,
                stmt,
                formats,
                params,
                results,
            } => {
                cstr(&mut b, portal);
                cstr(&mut b, stmt);
                i16s(&mut b, formats);
                b.extend_from_slice(&(params.len() as i16).to_be_bytes());
                for p in params {
                    match p {
                        None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            b.extend_from_slice(v);
                        }
                    }
                }
                i16s(&mut b, results);
                frame(b'B', &b)
            }
            Msg::Describe(k, name) => {
                b.push(*k);
                cstr(&mut b, name);
                frame(b'D', &b)
            }
            Msg::Execute(portal, rows) => {
                cstr(&mut b, portal);
                b.extend_from_slice(&rows.to_be_bytes());
                frame(b'E', &b)
            }
            Msg::Close(k, name) => {
                b.push(*k);
                cstr(&mut b, name);
                frame(b'C', &b)
            }
            Msg::Flush => frame(b'H', &[]),
            Msg::Sync => frame(b'S', &[]),
        }
    }
}

fn show_bytes(v: &[u8]) -> String {
    if v.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("'{}'", String::from_utf8_lossy(v))
    } else {
        format!(
            "x{}",
            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Query(q) => write!(f, "Query {q:?}"),
            Msg::Parse { name, sql, types } => write!(f, "Parse {name:?} {sql:?} types={types:?}"),
            Msg::Bind {
                portal,
                stmt,
                formats,
                params,
                results,
            } => {
                let ps: Vec<String> = params
                    .iter()
                    .map(|p| p.as_deref().map_or("NULL".into(), show_bytes))
                    .collect();
                write!(
                    f,
                    "Bind portal={portal:?} stmt={stmt:?} formats={formats:?} params=[{}] results={results:?}",
                    ps.join(", ")
                )
            }
            Msg::Describe(k, n) => write!(f, "Describe {} {n:?}", *k as char),
            Msg::Execute(p, n) => write!(f, "Execute {p:?} max_rows={n}"),
            Msg::Close(k, n) => write!(f, "Close {} {n:?}", *k as char),
            Msg::Flush => write!(f, "Flush"),
            Msg::Sync => write!(f, "Sync"),
        }
    }
}

#[derive(Clone, Copy)]
enum P {
    Int,
    Text,
}

/// Statements for Parse: the text and the parameters it takes.
const PREPARABLE: &[(&str, &[P])] = &[
    ("SELECT 1 AS one, 'x'::text AS two", &[]),
    ("SELECT $1::int4 + 1 AS n", &[P::Int]),
    ("SELECT $1::text AS s, $2::int4 AS n", &[P::Text, P::Int]),
    ("SELECT $1 AS untyped", &[P::Text]),
    ("SELECT g FROM generate_series(1, 7) AS g", &[]),
    (
        "SELECT g, g * $1::int4 AS m FROM generate_series(1, 5) AS g",
        &[P::Int],
    ),
    ("SELECT 10 / $1::int4 AS q", &[P::Int]),
    ("INSERT INTO diff_t (v) VALUES ($1::int4)", &[P::Int]),
    ("SELECT v FROM diff_t ORDER BY v", &[]),
    ("UPDATE diff_t SET v = v + 1", &[]),
    ("DELETE FROM diff_t WHERE v > $1::int4", &[P::Int]),
    ("SELECT current_setting('work_mem') AS w", &[]),
    ("SHOW work_mem", &[]),
    // A SET parsed, bound, executed or not, skipped after an error, in pipelined groups:
    // the client's settings follow what ran (fixed 2026-12-07; before, Pake noted a SET
    // when it was parsed or bound, and settled it at the next ReadyForQuery, whichever
    // group that answered). Left out of the sequences until then, so seeds cited before
    // 2026-12-07 draw other sequences now.
    (SET_PREPARED, &[]),
    ("BEGIN", &[]),
    ("COMMIT", &[]),
    ("ROLLBACK", &[]),
    ("SELEC 1", &[]),
    ("SELECT * FROM diff_nosuch", &[]),
    ("", &[]),
];

const SET_PREPARED: &str = "SET work_mem = '2MB'";

/// Also generate what triggers the known differences (`PAKE_DIFF_KNOWN=1`).
fn with_known() -> bool {
    std::env::var("PAKE_DIFF_KNOWN").is_ok_and(|v| v == "1")
}

/// Simple queries: constants, transaction control, the GUC, errors, the table.
const SIMPLE: &[&str] = &[
    "SELECT 1",
    "SELECT 'a' AS x, 2 AS y",
    "BEGIN",
    "BEGIN",
    "COMMIT",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT sp",
    "ROLLBACK TO SAVEPOINT sp",
    "RELEASE SAVEPOINT sp",
    "SET work_mem = '3MB'",
    "SET work_mem = '3MB'",
    "SET LOCAL work_mem = '5MB'",
    "SET SESSION work_mem = '6MB'",
    "RESET work_mem",
    "SHOW work_mem",
    "SHOW work_mem",
    "SELECT 1/0",
    "SELEC 2",
    "INSERT INTO diff_t (v) VALUES (7)",
    "SELECT v FROM diff_t ORDER BY v",
    "SELECT 1; SELECT 2",
    "BEGIN; SELECT 1",
    "",
];

fn pick<'a, T>(g: &mut Rng, v: &'a [T]) -> &'a T {
    &v[g.below(v.len() as u64) as usize]
}

fn int_param(g: &mut Rng, binary: bool) -> Option<Vec<u8>> {
    let n: i32 = *pick(g, &[0, 1, 2, 3, -4, 40]);
    match (binary, g.below(12)) {
        (_, 0) => None,
        (false, 1) => Some(b"abc".to_vec()),
        (true, 1) => Some(vec![0, 1]),
        (false, _) => Some(n.to_string().into_bytes()),
        (true, _) => Some(n.to_be_bytes().to_vec()),
    }
}

fn parse(g: &mut Rng, names: &[String]) -> Msg {
    let (sql, params) = *pick(g, PREPARABLE);
    let name = if !names.is_empty() && g.percent(15) {
        pick(g, names).clone() // redefinition: 42P05 unless unnamed
    } else {
        pick(g, STATEMENTS).to_string()
    };
    let types = match g.below(4) {
        0 | 1 => Vec::new(),
        2 => params
            .iter()
            .map(|p| match p {
                P::Int => 23,
                P::Text => 25,
            })
            .collect(),
        _ => params.iter().map(|_| *pick(g, &[0u32, 23, 25])).collect(),
    };
    Msg::Parse {
        name,
        sql: sql.into(),
        types,
    }
}

/// A Bind for `stmt`, guessing its parameters from the SQL it was last parsed with.
fn bind(g: &mut Rng, stmt: String, params: &[P]) -> Msg {
    let binary = g.percent(30);
    let mut kinds: Vec<P> = params.to_vec();
    if g.percent(8) {
        if kinds.is_empty() || g.percent(50) {
            kinds.push(P::Int);
        } else {
            kinds.pop();
        }
    }
    let values = kinds
        .iter()
        .map(|k| match k {
            P::Int => int_param(g, binary),
            P::Text => Some(pick(g, &["hello", "", "ü"]).as_bytes().to_vec()),
        })
        .collect::<Vec<_>>();
    let formats = match (binary, g.below(3)) {
        (false, 0) => Vec::new(),
        (false, _) => vec![0; kinds.len()],
        (true, 0) => vec![1],
        (true, _) => vec![1; kinds.len()],
    };
    let results = match g.below(10) {
        0..=4 => Vec::new(),
        5..=6 => vec![0],
        7..=8 => vec![1],
        _ => vec![0, 1, 0],
    };
    Msg::Bind {
        portal: pick(g, PORTALS).to_string(),
        stmt,
        formats,
        params: values,
        results,
    }
}

/// The statements a generator believes exist: name → parameters of its SQL.
type Known = Vec<(String, &'static [P])>;

fn extended_msg(g: &mut Rng, known: &mut Known) -> Msg {
    let names: Vec<String> = known.iter().map(|(n, _)| n.clone()).collect();
    match g.below(20) {
        0..=4 => {
            let m = parse(g, &names);
            if let Msg::Parse { name, sql, .. } = &m {
                let params = PREPARABLE
                    .iter()
                    .find(|(s, _)| s == sql)
                    .map_or(&[][..], |(_, p)| *p);
                if !known.iter().any(|(n, _)| n == name) || name.is_empty() {
                    known.retain(|(n, _)| n != name);
                    known.push((name.clone(), params));
                }
            }
            m
        }
        5..=9 => {
            let (stmt, params) = if !known.is_empty() && g.percent(85) {
                pick(g, known).clone()
            } else {
                (pick(g, STATEMENTS).to_string(), &[][..])
            };
            bind(g, stmt, params)
        }
        10..=13 => Msg::Execute(pick(g, PORTALS).to_string(), *pick(g, &[0, 0, 1, 2, 3])),
        14..=15 => {
            if g.percent(50) {
                Msg::Describe(b'S', pick(g, STATEMENTS).to_string())
            } else {
                Msg::Describe(b'P', pick(g, PORTALS).to_string())
            }
        }
        16..=17 => {
            if g.percent(60) {
                let n = pick(g, STATEMENTS).to_string();
                known.retain(|(k, _)| *k != n);
                Msg::Close(b'S', n)
            } else {
                Msg::Close(b'P', pick(g, PORTALS).to_string())
            }
        }
        _ => Msg::Flush,
    }
}

/// Known difference (a Pake bug, not fixed yet): Pake keeps the client's last unnamed Parse
/// to parse it again on the next server, also when the server skipped that Parse after an
/// error in its batch, where directly the unnamed statement is the one before it (or none
/// after a simple Query); a Bind of the unnamed statement in a later batch then works
/// through Pake and fails directly with 26000 (seed 258 with PAKE_DIFF_KNOWN=1). Drivers
/// bind the unnamed statement in the batch that parses it, so unless PAKE_DIFF_KNOWN=1 a
/// Bind or Describe of it before an unnamed Parse in its batch names `s1` instead.
fn unnamed_in_batch(batch: &mut [Msg]) {
    let mut parsed = false;
    for m in batch {
        match m {
            Msg::Parse { name, .. } if name.is_empty() => parsed = true,
            Msg::Bind { stmt, .. } | Msg::Describe(b'S', stmt) if stmt.is_empty() && !parsed => {
                *stmt = "s1".into();
            }
            _ => {}
        }
    }
}

/// A random sequence of steps; each step is one Query or messages ending in Sync.
fn sequence(seed: u64) -> Vec<Vec<Msg>> {
    let mut g = Rng::new(seed);
    let mut known: Known = Vec::new();
    let mut steps = Vec::new();
    let mut total = 0;
    let target = 20 + g.below(21) as usize;
    while total < target {
        let step = if g.percent(30) {
            vec![Msg::Query(pick(&mut g, SIMPLE).to_string())]
        } else {
            let n = 1 + g.below(6) as usize;
            let mut s: Vec<Msg> = (0..n).map(|_| extended_msg(&mut g, &mut known)).collect();
            if !with_known() {
                unnamed_in_batch(&mut s);
            }
            s.push(Msg::Sync);
            s
        };
        total += step.len();
        steps.push(step);
    }
    steps
}

/// One normalised backend message: `key` is compared, `note` only shown.
#[derive(Clone, PartialEq)]
struct Item {
    key: String,
    note: String,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    b.get(at..at + 2)
        .map_or(0, |s| i16::from_be_bytes([s[0], s[1]]))
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    b.get(at..at + 4)
        .map_or(0, |s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn normalise(tag: u8, body: &[u8]) -> Option<Item> {
    let note = String::new();
    let key = match tag {
        b'S' | b'N' | b'A' => return None,
        b'E' => {
            return Some(Item {
                key: format!("Error {}", sqlstate(body)),
                note: field(body, b'M'),
            })
        }
        b'C' => format!(
            "Complete {}",
            String::from_utf8_lossy(body).trim_end_matches('\0')
        ),
        b'Z' => format!("Ready {}", body.first().map_or('?', |b| *b as char)),
        b'D' => {
            let n = be_i16(body, 0);
            let mut at = 2;
            let mut cols = Vec::new();
            for _ in 0..n {
                let len = be_i32(body, at);
                at += 4;
                if len < 0 {
                    cols.push("NULL".to_string());
                } else {
                    let end = (at + len as usize).min(body.len());
                    cols.push(show_bytes(&body[at..end]));
                    at = end;
                }
            }
            format!("DataRow [{}]", cols.join(", "))
        }
        b'T' => {
            let n = be_i16(body, 0);
            let mut at = 2;
            let mut cols = Vec::new();
            for _ in 0..n {
                let end = body[at..]
                    .iter()
                    .position(|b| *b == 0)
                    .map_or(body.len(), |p| at + p);
                let name = String::from_utf8_lossy(&body[at..end]).into_owned();
                at = end + 1;
                // table oid 4, attnum 2, type oid 4, typlen 2, typmod 4, format 2
                let oid = be_i32(body, at + 6);
                let fmt = be_i16(body, at + 16);
                cols.push(format!("{name}:{oid}:{fmt}"));
                at += 18;
            }
            format!("RowDescription [{}]", cols.join(", "))
        }
        b't' => {
            let n = be_i16(body, 0);
            let oids: Vec<String> = (0..n as usize)
                .map(|i| be_i32(body, 2 + 4 * i).to_string())
                .collect();
            format!("ParameterDescription [{}]", oids.join(", "))
        }
        b'1' => "ParseComplete".into(),
        b'2' => "BindComplete".into(),
        b'3' => "CloseComplete".into(),
        b'n' => "NoData".into(),
        b'I' => "EmptyQuery".into(),
        b's' => "PortalSuspended".into(),
        other => format!("'{}' {}", other as char, show_bytes(body)),
    };
    Some(Item { key, note })
}

/// Send the steps of one flight together; read until one ReadyForQuery per step.
async fn flight(raw: &mut Raw, steps: &[Vec<Msg>]) -> Vec<Item> {
    let bytes: Vec<u8> = steps.iter().flatten().flat_map(Msg::encode).collect();
    raw.send(&bytes).await;
    let mut items = Vec::new();
    let mut ready = 0;
    while ready < steps.len() {
        let Some((tag, body)) = raw.read().await else {
            items.push(Item {
                key: "<closed or silent for 10 s>".into(),
                note: String::new(),
            });
            break;
        };
        ready += usize::from(tag == b'Z');
        items.extend(normalise(tag, &body));
    }
    items
}

/// A step that changes the session's settings (SET, RESET).
fn sets(step: &[Msg]) -> bool {
    step.iter().any(|m| match m {
        Msg::Query(q) => q.starts_with("SET") || q.starts_with("RESET"),
        Msg::Parse { sql, .. } => sql.starts_with("SET"),
        _ => false,
    })
}

/// Flights: 1–3 consecutive steps sent before reading.
///
/// Known difference (a Pake bug, not fixed yet): Pake follows the settings a client's
/// transaction changes from when it sends them, and settles them at the next
/// ReadyForQuery, which with requests pipelined past a Sync is the answer to an *earlier*
/// request: a SET sent behind a batch that fails is dropped as doubtful although it runs
/// later (a client's `SET work_mem` lost, seed 562 with PAKE_DIFF_KNOWN=1), and one behind
/// a batch that succeeds is recorded before it has run; a failed savepoint statement
/// behind it makes it doubtful too (seed 595). So unless PAKE_DIFF_KNOWN=1, a step that
/// changes settings is a flight of its own.
fn flights(seed: u64, steps: &[Vec<Msg>]) -> Vec<std::ops::Range<usize>> {
    let mut g = Rng::new(seed ^ 0xF11);
    let mut out = Vec::new();
    let mut at = 0;
    while at < steps.len() {
        let n = if g.percent(25) {
            2 + g.below(2) as usize
        } else {
            1
        };
        let mut end = (at + n).min(steps.len());
        if !with_known() {
            if let Some(i) = (at..end).find(|&i| sets(&steps[i])) {
                end = end.min(i.max(at + 1));
            }
        }
        out.push(at..end);
        at = end;
    }
    out
}

/// Run `steps` on a fresh connection to `addr`; the replies of each flight.
async fn run(
    env: &Env,
    addr: std::net::SocketAddr,
    seed: u64,
    steps: &[Vec<Msg>],
) -> Vec<Vec<Item>> {
    let mut raw = Raw::login_at(addr, &env.lab.user, &env.lab.password, "postgres", &[])
        .await
        .expect("login");
    let mut out = Vec::new();
    for f in flights(seed, steps) {
        let items = flight(&mut raw, &steps[f]).await;
        let dead = items.iter().any(|i| i.key.starts_with('<'));
        out.push(items);
        if dead {
            break;
        }
    }
    if seed % 2 == 0 {
        raw.send(&frame(b'X', &[])).await;
    }
    out
}

/// Two normalised messages match.
fn equivalent(direct: &Item, pake: &Item) -> bool {
    direct.key == pake.key
}

fn same(direct: &[Vec<Item>], pake: &[Vec<Item>]) -> bool {
    direct.len() == pake.len()
        && direct
            .iter()
            .zip(pake)
            .all(|(d, p)| d.len() == p.len() && d.iter().zip(p).all(|(a, b)| equivalent(a, b)))
}

/// The first differing pair, for a one-line summary.
fn first_difference(direct: &[Vec<Item>], pake: &[Vec<Item>]) -> String {
    let (a, b) = first_pair(direct, pake);
    format!("direct {:?} vs pake {:?}", a.key, b.key)
}

/// The first replies that differ (`-` past the end of either stream).
fn first_pair(direct: &[Vec<Item>], pake: &[Vec<Item>]) -> (Item, Item) {
    let none = Item {
        key: "-".into(),
        note: String::new(),
    };
    let d = direct.iter().flatten();
    let p = pake.iter().flatten();
    let mut d = d.chain(std::iter::repeat(&none));
    let mut p = p.chain(std::iter::repeat(&none));
    loop {
        let (a, b) = (d.next().unwrap_or(&none), p.next().unwrap_or(&none));
        if !equivalent(a, b) || (a.key == "-" && b.key == "-") {
            return (a.clone(), b.clone());
        }
    }
}

struct Report<'a> {
    seed: u64,
    /// The run's first seed.
    first: u64,
    steps: &'a [Vec<Msg>],
    direct: &'a [Vec<Item>],
    pake: &'a [Vec<Item>],
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Pake's servers keep prepared statements from seed to seed: a seed may need the
        // ones before it
        writeln!(
            f,
            "seed {seed}: PAKE_DIFF_FIRST={seed} PAKE_DIFF_SEEDS=1 cargo test --test pg \
             differential (or, after the seeds before it, PAKE_DIFF_FIRST={first} \
             PAKE_DIFF_SEEDS={n})",
            seed = self.seed,
            first = self.first,
            n = self.seed + 1 - self.first,
        )?;
        let fl = flights(self.seed, self.steps);
        for (i, r) in fl.iter().enumerate() {
            writeln!(f, "--- flight {i}")?;
            for m in self.steps[r.clone()].iter().flatten() {
                writeln!(f, "  > {m}")?;
            }
            let d = self.direct.get(i).map_or(&[][..], |v| &v[..]);
            let p = self.pake.get(i).map_or(&[][..], |v| &v[..]);
            for j in 0..d.len().max(p.len()) {
                let show = |x: Option<&Item>| {
                    x.map_or(String::from("-"), |x| {
                        if x.note.is_empty() {
                            x.key.clone()
                        } else {
                            format!("{} ({})", x.key, x.note)
                        }
                    })
                };
                let (a, b) = (d.get(j), p.get(j));
                let mark = match (a, b) {
                    (Some(a), Some(b)) if equivalent(a, b) => " ",
                    _ => "!",
                };
                writeln!(f, " {mark} direct: {:<50} pake: {}", show(a), show(b))?;
            }
            if !same(&[d.to_vec()], &[p.to_vec()]) {
                return writeln!(f, "(first difference above)");
            }
        }
        Ok(())
    }
}

/// Problems seen by the background client or the after-sequence check.
type Problems = Arc<std::sync::Mutex<Vec<String>>>;

/// Short transactions through Pake until `stop`; each must see the GUC's default and end
/// idle. It holds `gate` while in a transaction, so the checker can take both servers.
async fn background(
    env: &Env,
    gate: Arc<Mutex<u64>>,
    problems: Problems,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut raw = Raw::login(env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("background login");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        {
            let seed = gate.lock().await;
            raw.send(&query(
                "BEGIN; SELECT current_setting('work_mem'); SELECT pg_sleep(0.002); COMMIT",
            ))
            .await;
            let reply = raw.until_ready().await;
            let value = reply.value.as_deref().map(String::from_utf8_lossy);
            if value.as_deref() != Some(GUC_DEFAULT)
                || reply.status != b'I'
                || !reply.sqlstate.is_empty()
            {
                problems
                    .lock()
                    .map(|mut p| {
                        p.push(format!(
                    "seed {}: background transaction saw work_mem {value:?}, status {}, error {:?}",
                    *seed, reply.status as char, reply.sqlstate
                ))
                    })
                    .ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Two fresh clients take both servers at once: each must find it idle and with defaults.
async fn check_clean(env: &Env, seed: u64) -> Vec<String> {
    let mut found = Vec::new();
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = Raw::login(env, &env.lab.user, &env.lab.password, "postgres")
            .await
            .expect("check login");
        c.send(&query("BEGIN")).await;
        let begin = c.until_ready().await;
        c.send(&query("SHOW work_mem")).await;
        let show = c.until_ready().await;
        let value = show.value.as_deref().map(String::from_utf8_lossy);
        if begin.tags != "CZ" || begin.status != b'T' {
            found.push(format!(
                "seed {seed}: check client {i}: BEGIN got {:?}",
                begin
            ));
        }
        if value.as_deref() != Some(GUC_DEFAULT) {
            found.push(format!(
                "seed {seed}: check client {i}: work_mem is {value:?}"
            ));
        }
        held.push(c);
    }
    for mut c in held {
        c.send(&query("ROLLBACK")).await;
        c.until_ready().await;
        c.send(&frame(b'X', &[])).await;
    }
    found
}

async fn reset_table(env: &Env) {
    let c = env.direct().await;
    c.batch_execute("SET lock_timeout = '5s'; TRUNCATE diff_t")
        .await
        .expect("truncate diff_t (a transaction left holding it?)");
}

fn max_failures() -> usize {
    std::env::var("PAKE_DIFF_MAX_FAIL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

fn seeds() -> std::ops::Range<u64> {
    let n: u64 = std::env::var("PAKE_DIFF_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let first: u64 = std::env::var("PAKE_DIFF_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    first..first + n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_matches_direct() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("CREATE TABLE diff_t (v int)")
        .await
        .expect("create diff_t");
    let direct_addr: std::net::SocketAddr = format!("127.0.0.1:{}", env.lab.primary.port)
        .parse()
        .expect("addr");
    let env = Arc::new(env);
    let gate = Arc::new(Mutex::new(0u64));
    let problems: Problems = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = tokio::spawn({
        let (env, gate, problems, stop) =
            (env.clone(), gate.clone(), problems.clone(), stop.clone());
        async move { background(&env, gate, problems, stop).await }
    });
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    for seed in seeds() {
        *gate.lock().await = seed;
        let steps = sequence(seed);
        reset_table(&env).await;
        let direct = run(&env, direct_addr, seed, &steps).await;
        reset_table(&env).await;
        let pake = run(&env, env.pake.pg_addr, seed, &steps).await;
        ran += 1;
        if !same(&direct, &pake) {
            let report = Report {
                seed,
                first: seeds().start,
                steps: &steps,
                direct: &direct,
                pake: &pake,
            }
            .to_string();
            eprintln!("{report}");
            eprintln!("MISMATCH seed {seed}: {}", first_difference(&direct, &pake));
            failures.push(report);
        }
        // let Pake see the hang-up before taking both servers
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _quiet = gate.lock().await;
        let dirty = check_clean(&env, seed).await;
        for d in &dirty {
            eprintln!("{d}");
        }
        problems.lock().map(|mut p| p.extend(dirty)).ok();
        if failures.len() >= max_failures() {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    bg.await.ok();
    let problems = problems.lock().map(|p| p.clone()).unwrap_or_default();
    eprintln!(
        "differential: {ran} seeds in {:.1} s, {} mismatches, {} dirty-server problems",
        started.elapsed().as_secs_f64(),
        failures.len(),
        problems.len()
    );
    assert!(
        failures.is_empty() && problems.is_empty(),
        "{} mismatches (first:\n{}), problems: {problems:#?}",
        failures.len(),
        failures.first().map_or("", String::as_str)
    );
}
