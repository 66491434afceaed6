//! The forward path against what a server really does (issue 16): stale plans after DDL and
//! the driver's re-prepare, errors in the middle of a pipeline, the server's own goodbye
//! (57P01, idle timeouts) reaching the client as sent, non-UTF-8 client encodings, COPY data
//! sent before the server asked for it, and ParameterStatus values as the server names them.
//! The client-library view of the same causes is `matrix`.

use crate::harness::{code, frame, Env, Opts, Raw};

/// A Query frame (of bytes: the encoding tests send text that is not UTF-8).
fn query(text: &[u8]) -> Vec<u8> {
    let mut body = text.to_vec();
    body.push(0);
    frame(b'Q', &body)
}

/// Parse (unnamed) + Bind + Execute of `text`.
fn extended(text: &str) -> Vec<u8> {
    let mut v = frame(b'P', format!("\0{text}\0\0\0").as_bytes());
    v.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    v.extend(frame(b'E', b"\0\0\0\0\0"));
    v
}

/// Read messages up to and including the next ReadyForQuery; their tags, and the first
/// DataRow's first column.
async fn until_ready(raw: &mut Raw) -> (String, Option<Vec<u8>>) {
    let r = raw.until_ready().await;
    (r.tags, r.value)
}

/// A Pake with a pool of one server, the table `ddl` creates, and a raw client.
async fn one_server_with(ddl: &str) -> (Env, Raw) {
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    env.direct().await.batch_execute(ddl).await.unwrap();
    let raw = login(&env).await;
    (env, raw)
}

/// Parse of `text` as the statement `name`, then Sync.
fn parse_sync(name: &str, text: &str) -> Vec<u8> {
    let mut v = frame(b'P', format!("{name}\0{text}\0\0\0").as_bytes());
    v.extend(frame(b'S', b""));
    v
}

/// Bind, Execute and Sync of the statement `name` (no parameters).
fn run_named(name: &str) -> Vec<u8> {
    let mut v = frame(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
    v.extend(frame(b'E', b"\0\0\0\0\0"));
    v.extend(frame(b'S', b""));
    v
}

/// Bind "" with the text parameter `21`, Execute, Sync.
fn bind_unnamed_21() -> Vec<u8> {
    let mut bind = frame(b'B', b"\0\0\0\0\0\x01\0\0\0\x0221\0\0");
    bind.extend(frame(b'E', b"\0\0\0\0\0"));
    bind.extend(frame(b'S', b""));
    bind
}

/// An unnamed Parse of `text` and Sync.
fn parse_unnamed(text: &str) -> Vec<u8> {
    parse_sync("", text)
}

async fn login(env: &Env) -> Raw {
    Raw::login(env, &env.lab.user, &env.lab.password, "postgres")
        .await
        .expect("login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_plan_is_prepared_afresh() {
    let env = Env::start().await;
    let direct = env.direct().await;
    direct
        .batch_execute("create table stale (a int); insert into stale values (1)")
        .await
        .unwrap();
    let c = env.client().await;
    let old = c.prepare("select * from stale").await.unwrap();
    assert_eq!(c.query(&old, &[]).await.unwrap()[0].len(), 1);
    // DDL Pake does not see: the server's 0A000 reaches the client, as directly
    direct
        .batch_execute("alter table stale add column b text default 'x'")
        .await
        .unwrap();
    let e = c.query(&old, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    // the driver's re-prepare of the same text reaches a server and sees the new columns
    let new = c.prepare("select * from stale").await.unwrap();
    assert_eq!(new.columns().len(), 2);
    assert_eq!(c.query(&new, &[]).await.unwrap()[0].len(), 2);
    // DDL through Pake: the next prepare is fresh straight away, on any server
    let other = env.client().await;
    other
        .batch_execute("alter table stale alter column a type bigint")
        .await
        .unwrap();
    let again = other.prepare("select * from stale").await.unwrap();
    let a: i64 = other.query_one(&again, &[]).await.unwrap().get(0);
    assert_eq!(a, 1);
}

/// A transaction that changed a setting and then rolled back as a whole (asyncpg's type
/// lookup turns `jit` off inside one; SQLAlchemy's pool rolls back every connection it is
/// given back): every change is undone, so the server is kept as it is. Before, Pake took
/// the ROLLBACK as doubtful and reset the server (`DISCARD ALL`), its statements went, and
/// the client's next Bind re-prepared one afresh: after DDL Pake did not see, the client
/// got rows of a new type under the old description (SQLAlchemy's
/// test_detect_stale_type_cache_raise_recover) instead of the server's 0A000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_rollback_keeps_the_server_and_its_statements() {
    let (env, _) = one_server_with("create table wr (v int); insert into wr values (7)").await;
    let c = env.client().await;
    let old = c.prepare("select v from wr").await.unwrap();
    let v: i32 = c.query_one(&old, &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    c.batch_execute("begin").await.unwrap();
    c.query_one("select set_config('jit', 'off', false)", &[])
        .await
        .unwrap();
    c.batch_execute("set work_mem = '7MB'").await.unwrap();
    c.batch_execute("rollback").await.unwrap();
    let jit: String = c.query_one("show jit", &[]).await.unwrap().get(0);
    let mem: String = c.query_one("show work_mem", &[]).await.unwrap().get(0);
    assert_eq!((jit.as_str(), mem.as_str()), ("on", "4MB"), "undone");
    // DDL Pake does not see: the server still has the statement, so it says 0A000
    env.direct()
        .await
        .batch_execute("alter table wr alter column v type bigint")
        .await
        .unwrap();
    let e = c.query(&old, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
}

/// A described statement prepared again on a server that lacks it (another pooled
/// connection, or one reset since) after DDL Pake did not see. Directly, the client's next
/// use fails with 0A000 and the driver prepares again; through Pake the fresh copy returned
/// the new type under the old description: tokio-postgres failed to decode it, asyncpg raised
/// BufferError, and a change between types of one size would give wrong values. Pake now
/// learns what each copy returns and refuses one that differs, with the server's 0A000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_again_returns_what_the_client_was_told() {
    let (env, mut raw) =
        one_server_with("create table rt (v int); insert into rt values (7)").await;
    let a = env.client().await;
    let old = a.prepare("select v from rt").await.unwrap();
    let v: i32 = a.query_one(&old, &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    behind_pakes_back(&env, &mut raw, "alter table rt alter column v type bigint").await;
    let b = env.client().await;
    // the same text prepared by another client after DDL Pake did not see, on a server whose
    // copy predates it: parsed afresh as directly, not answered from the stale copy (whose
    // plan PostgreSQL refuses with 0A000 at the first Describe, during the driver's prepare)
    let direct = env.direct().await;
    direct
        .batch_execute("create table rt2 (x int); insert into rt2 values (5)")
        .await
        .unwrap();
    let held = a.prepare("select x from rt2").await.unwrap();
    a.query_one(&held, &[]).await.unwrap();
    let ddl = "alter table rt2 alter column x type bigint";
    direct.batch_execute(ddl).await.unwrap();
    let late = b.prepare("select x from rt2").await;
    let late = late.unwrap_or_else(|e| panic!("a prepare after DDL: {e}"));
    let x: i64 = b.query_one(&late, &[]).await.unwrap().get(0);
    assert_eq!(x, 5);
    // another client prepares the same text now, on the one server: it sees bigint
    let fresh = b.prepare("select v from rt").await.unwrap();
    let v: i64 = b.query_one(&fresh, &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    // the first client's description says int: the copy is refused, the connection goes on
    for round in 0..2 {
        let e = a.query(&old, &[]).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "round {round}: {e}");
        // drivers tell a stale plan by PostgreSQL's routine (asyncpg retries only then)
        let routine = e.as_db_error().and_then(|e| e.routine());
        assert_eq!(routine, Some("RevalidateCachedQuery"));
    }
    let new = a.prepare("select v from rt").await.unwrap();
    let v: i64 = a.query_one(&new, &[]).await.unwrap().get(0);
    assert_eq!(v, 7, "the driver's prepare again sees the new type");
    // in a transaction, the refusal fails it as the server's own 0A000 would
    a.batch_execute("begin").await.unwrap();
    let e = a.query(&old, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    let e = a.query_one(&new, &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02", "{e}");
    a.batch_execute("rollback").await.unwrap();
    // the server loses its statements again: the next use prepares and describes a copy
    // before it runs, which returns what the client was told
    lose_statements(&mut raw).await;
    let v: i64 = a.query_one(&new, &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    // two described statements in one pipeline, each waiting for its copy's description
    let plus = a.prepare("select v + 1 from rt").await.unwrap();
    lose_statements(&mut raw).await;
    let (one, two) = tokio::join!(a.query_one(&new, &[]), a.query_one(&plus, &[]));
    let (one, two): (i64, i64) = (one.unwrap().get(0), two.unwrap().get(0));
    assert_eq!((one, two), (7, 8));
    // and once more, with DDL behind Pake's back: that copy is refused
    behind_pakes_back(&env, &mut raw, "alter table rt alter column v type numeric").await;
    let e = a.query(&new, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    // a client that never described its statement gets what the server returns
    let mut c = login(&env).await;
    c.send(&prepared_with_value("s1", "select v + $1 from rt", "1"))
        .await;
    let r = c.until_ready().await;
    assert_eq!(
        (r.sqlstate.as_str(), r.value.as_deref()),
        ("", Some(&b"8"[..]))
    );
    // the table dropped behind Pake's back: the copy's Parse fails while the Bind waits for
    // its description; the client gets the server's error and the connection goes on
    let fresh = a.prepare("select v from rt").await.unwrap();
    behind_pakes_back(&env, &mut raw, "drop table rt").await;
    let e = a.query(&fresh, &[]).await.unwrap_err();
    assert_eq!(code(&e), "42P01", "{e}");
    let one: i32 = a.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// The parameter types a client was told are checked too. PostgreSQL keeps a statement's
/// parameter types when DDL re-plans it (an int4 bound into a column now float4 is cast); a
/// copy parsed afresh infers them again, and the client's four bytes of int4 would be read
/// as a float4. Pake refuses that copy (0A000: the driver prepares again) instead of letting
/// a wrong value be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_type_changed_behind_pakes_back_is_refused() {
    let (env, mut raw) =
        one_server_with("create table pt (v int); insert into pt values (1)").await;
    let a = env.client().await;
    let set = a.prepare("update pt set v = $1").await.unwrap();
    assert_eq!(set.params(), &[tokio_postgres::types::Type::INT4]);
    a.execute(&set, &[&2i32]).await.unwrap();
    behind_pakes_back(&env, &mut raw, "alter table pt alter column v type real").await;
    let e = a.execute(&set, &[&3i32]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    let direct = env.direct().await;
    let v: f32 = direct
        .query_one("select v from pt", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2.0, "no value written from bytes of another type");
    let again = a.prepare("update pt set v = $1").await.unwrap();
    assert_eq!(again.params(), &[tokio_postgres::types::Type::FLOAT4]);
    a.execute(&again, &[&3.5f32]).await.unwrap();
    let v: f32 = direct
        .query_one("select v from pt", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 3.5);
}

/// The one server loses its prepared statements, then `ddl` runs straight at PostgreSQL.
async fn behind_pakes_back(env: &Env, raw: &mut Raw, ddl: &str) {
    lose_statements(raw).await;
    env.direct().await.batch_execute(ddl).await.unwrap();
}

/// The one server loses its prepared statements: `raw` sends a `DISCARD ALL` that reaches it.
async fn lose_statements(raw: &mut Raw) {
    let mut discard = named("d", "discard all");
    discard.extend(frame(b'S', b""));
    raw.send(&discard).await;
    assert!(!until_ready(raw).await.0.contains('E'));
}

/// Parse `name` (no parameter types: the server infers them) + Bind with one text value +
/// Execute + Sync.
fn prepared_with_value(name: &str, text: &str, value: &str) -> Vec<u8> {
    let mut v = frame(b'P', format!("{name}\0{text}\0\0\0").as_bytes());
    let mut bind = format!("\0{name}\0").into_bytes();
    bind.extend_from_slice(&[0, 0, 0, 1]);
    bind.extend_from_slice(&(value.len() as i32).to_be_bytes());
    bind.extend_from_slice(value.as_bytes());
    bind.extend_from_slice(&[0, 0]);
    v.extend(frame(b'B', &bind));
    v.extend(frame(b'E', b"\0\0\0\0\0"));
    v.extend(frame(b'S', b""));
    v
}

/// A statement prepared in a transaction that created the type its parameter has, which
/// then rolls back (psycopg's test_change_type, whose fixture never commits): the server
/// keeps the statement (prepared statements are not transactional), naming a type that no
/// longer exists. Directly, the next connection prepares afresh; through Pake, the
/// process-wide registry answered its Parse of the same text with the stale statement, and
/// the Bind failed (XX000, cache lookup failed for type). Both ways a transaction ends are
/// tested: the client's ROLLBACK, and the client leaving with the transaction open. Then
/// DDL Pake does not see: a new client's Parse of the shared statement's text is parsed
/// afresh, as on a new direct connection (until 2026-12-06 its Bind failed with XX000 once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_in_a_rolled_back_ddl_transaction_are_not_reused() {
    let (env, _) = one_server_with("select 1").await;
    let direct = env.direct().await;
    for (round, leave) in [(0, false), (1, true)] {
        let text = format!("select $1::rb_mood{round}::text");
        let mut a = login(&env).await;
        a.send(&query(b"begin")).await;
        assert_eq!(a.until_ready().await.status, b'T');
        let create = format!("create type rb_mood{round} as enum ('calm')");
        a.send(&query(create.as_bytes())).await;
        assert_eq!(a.until_ready().await.sqlstate, "", "round {round}");
        a.send(&prepared_with_value("s1", &text, "calm")).await;
        assert_calm(&a.until_ready().await, &format!("round {round}"));
        if leave {
            drop(a);
        } else {
            a.send(&query(b"rollback")).await;
            assert_eq!(a.until_ready().await.status, b'I');
        }
        // the type again, committed this time (not through Pake: it waits for the
        // rollback), and a new client
        direct.batch_execute(&create).await.unwrap();
        let mut b = login(&env).await;
        b.send(&prepared_with_value("s9", &text, "calm")).await;
        let what = format!("round {round}: the new client's statement was prepared afresh");
        assert_calm(&b.until_ready().await, &what);
    }
    // DDL behind Pake's back: the new client's statement does not name the old type
    let text = "select $1::rb_mood0::text";
    let mut c = login(&env).await;
    c.send(&prepared_with_value("s2", text, "calm")).await;
    assert_eq!(c.until_ready().await.sqlstate, "");
    direct
        .batch_execute("drop type rb_mood0; create type rb_mood0 as enum ('calm')")
        .await
        .unwrap();
    let mut d = login(&env).await;
    d.send(&prepared_with_value("s3", text, "calm")).await;
    assert_calm(&d.until_ready().await, "prepared afresh after the DDL");
    // the client that prepared it before the DDL, and never described it, runs the fresh
    // copy (directly its own copy fails with XX000; one that described it is checked)
    let mut bind = frame(b'B', b"\0s2\0\0\0\0\x01\0\0\0\x04calm\0\0");
    bind.extend(frame(b'E', b"\0\0\0\0\0"));
    bind.extend(frame(b'S', b""));
    c.send(&bind).await;
    assert_calm(&c.until_ready().await, "the fresh copy");
}

/// The statement ran without an error and returned `calm`.
fn assert_calm(r: &crate::harness::Reply, what: &str) {
    assert_value(r, b"calm", what);
}

/// The statement ran without an error and returned `want`.
fn assert_value(r: &crate::harness::Reply, want: &[u8], what: &str) {
    assert_eq!(
        (r.sqlstate.as_str(), r.value.as_deref()),
        ("", Some(want)),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_before_sync_in_a_pipeline() {
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    // P B E Flush: the error comes back before any Sync is sent
    let mut batch = extended("select 1/0");
    batch.extend(frame(b'H', b""));
    raw.send(&batch).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("22012".into()));
    // what follows until the Sync is discarded by the server: only the ReadyForQuery
    let mut rest = extended("select 2");
    rest.extend(frame(b'C', b"Sfoo\0"));
    rest.extend(frame(b'S', b""));
    raw.send(&rest).await;
    assert_eq!(until_ready(&mut raw).await.0, "Z");
    // and the next request on the same (only) server is answered in full
    let mut next = extended("select 3");
    next.extend(frame(b'S', b""));
    raw.send(&next).await;
    let (tags, value) = until_ready(&mut raw).await;
    assert_eq!(
        (tags.as_str(), value.as_deref()),
        ("12DCZ", Some(&b"3"[..]))
    );
    raw.send(&query(b"select 4")).await;
    assert_eq!(until_ready(&mut raw).await.1.as_deref(), Some(&b"4"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_own_goodbye_reaches_the_client() {
    let env = Env::start().await;
    let direct = env.direct().await;
    // pg_terminate_backend on the server behind a client in a transaction
    let mut raw = login(&env).await;
    raw.send(&query(b"begin; select pg_backend_pid()")).await;
    let pid = until_ready(&mut raw).await.1.expect("a pid");
    let pid: i32 = String::from_utf8_lossy(&pid).parse().expect("pid");
    let killed: bool = direct
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    // the server's own error, as it sent it, and no paraphrase of Pake's after it
    let (state, severity) = raw.error().await.expect("the server's FATAL");
    assert_eq!((state.as_str(), severity.as_str()), ("57P01", "FATAL"));
    assert!(
        raw.read().await.is_none(),
        "nothing after the server's goodbye"
    );
    // a timeout the server enforces while nothing is owed (an error out of turn)
    let mut raw = login(&env).await;
    raw.send(&query(
        b"begin; set local idle_in_transaction_session_timeout = '300ms'",
    ))
    .await;
    until_ready(&mut raw).await;
    let (state, severity) = raw.error().await.expect("the server's FATAL");
    assert_eq!((state.as_str(), severity.as_str()), ("25P03", "FATAL"));
    assert!(raw.closed().await);
    // others are served
    let v: i32 = env
        .client()
        .await
        .query_one("select 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin9_bytes_are_forwarded_untouched() {
    let env = Env::start().await;
    let mut raw = login(&env).await;
    raw.send(&query(b"begin; set local client_encoding = 'LATIN9'"))
        .await;
    let (tags, _) = until_ready(&mut raw).await;
    assert!(!tags.contains('E'), "{tags}");
    // 0xa4 is the euro sign in LATIN9 (3 bytes in UTF-8), 0xe9 is e-acute: not UTF-8
    raw.send(&query(
        b"select octet_length(convert_to('\xa4\xe9', 'UTF8'))",
    ))
    .await;
    assert_eq!(until_ready(&mut raw).await.1.as_deref(), Some(&b"5"[..]));
    raw.send(&query(b"select 'caf\xe9 \xa4'")).await;
    assert_eq!(
        until_ready(&mut raw).await.1.as_deref(),
        Some(&b"caf\xe9 \xa4"[..])
    );
    // the extended protocol too
    let mut batch = frame(b'P', b"\0select length('\xe9\xa4')\0\0\0");
    batch.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(frame(b'E', b"\0\0\0\0\0"));
    batch.extend(frame(b'S', b""));
    raw.send(&batch).await;
    assert_eq!(until_ready(&mut raw).await.1.as_deref(), Some(&b"2"[..]));
    raw.send(&query(b"commit")).await;
    until_ready(&mut raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_before_the_server_asks() {
    let (_env, mut raw) = one_server_with("create table early (a int)").await;
    // asyncpg's way: the COPY, its data and its end in one write
    let mut w = query(b"copy early from stdin");
    w.extend(frame(b'd', b"1\n2\n"));
    w.extend(frame(b'c', b""));
    raw.send(&w).await;
    let (tags, _) = until_ready(&mut raw).await;
    assert_eq!(tags, "GCZ");
    // the same server then owes a Sync its ReadyForQuery as usual
    let mut next = extended("select count(*) from early");
    next.extend(frame(b'S', b""));
    raw.send(&next).await;
    let (tags, value) = until_ready(&mut raw).await;
    assert_eq!(
        (tags.as_str(), value.as_deref()),
        ("12DCZ", Some(&b"2"[..]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encoding_is_reported_as_the_server_names_it() {
    let env = Env::start().await;
    let raw = Raw::login_with(
        &env,
        &env.lab.user,
        &env.lab.password,
        "postgres",
        &[("client_encoding", "'utf-8'")],
    )
    .await
    .expect("login");
    let enc = raw.params.iter().find(|(k, _)| k == "client_encoding");
    assert_eq!(enc.map(|(_, v)| v.as_str()), Some("UTF8"));
    let server = raw.params.iter().find(|(k, _)| k == "server_encoding");
    assert_eq!(server.map(|(_, v)| v.as_str()), Some("UTF8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statement_bound_in_a_later_request_on_another_server() {
    let env = Env::start().await;
    let mut a = login(&env).await;
    let mut b = login(&env).await;
    // a parses its unnamed statement and syncs: its server goes back to the pool
    a.send(&parse_unnamed("select $1::int * 2")).await;
    assert_eq!(until_ready(&mut a).await.0, "1Z");
    // b holds that server in a transaction and replaces its unnamed statement
    b.send(&query(b"begin")).await;
    until_ready(&mut b).await;
    b.send(&parse_unnamed("select 'b'")).await;
    assert_eq!(until_ready(&mut b).await.0, "1Z");
    // a binds its unnamed statement now, wherever it runs
    let bind = bind_unnamed_21();
    a.send(&bind).await;
    let (tags, value) = until_ready(&mut a).await;
    assert_eq!(
        (tags.as_str(), value.as_deref()),
        ("2DCZ", Some(&b"42"[..]))
    );
    b.send(&query(b"commit")).await;
    until_ready(&mut b).await;
    // a simple Query destroys the unnamed statement, as on a server
    a.send(&query(b"select 1")).await;
    until_ready(&mut a).await;
    a.send(&bind).await;
    assert_eq!(a.error().await.map(|e| e.0), Some("26000".into()));
}

/// `DISCARD ALL` and `DEALLOCATE ALL` that reach a server — as prepared statements (pgjdbc
/// names them at `prepareThreshold=1`), unnamed, or among other statements — drop every
/// prepared statement on it, Pake's process-wide ones included: Pake forgets them there, so
/// another client's statement is prepared again on that server instead of failing (26000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_on_a_server_drops_its_statements_for_every_client() {
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    let a = env.client().await;
    let b = env.client().await;
    let plus = a.prepare("select $1::int + 1").await.unwrap();
    let mut raw = login(&env).await;
    let sync = |mut v: Vec<u8>| {
        v.extend(frame(b'S', b""));
        v
    };
    let discards = [
        ("named DISCARD ALL", sync(named("d1", "discard all"))),
        ("unnamed DEALLOCATE ALL", sync(extended("deallocate all"))),
        (
            "DEALLOCATE ALL among others",
            query(b"select 1; deallocate all"),
        ),
        ("named DEALLOCATE ALL", sync(named("d2", "deallocate all"))),
    ];
    for (i, (what, discard)) in discards.into_iter().enumerate() {
        let v: i32 = a.query_one(&plus, &[&(i as i32)]).await.unwrap().get(0);
        assert_eq!(v, i as i32 + 1);
        // the same text prepared by b: its Parse is answered from the server's copy
        let same = b.prepare("select $1::int + 1").await.unwrap();
        b.query_one(&same, &[&0]).await.unwrap();
        raw.send(&discard).await;
        let (tags, _) = until_ready(&mut raw).await;
        assert!(!tags.contains('E'), "{what}: {tags}");
        // the one server lost every statement: both clients' statements still run
        let v: i32 = a.query_one(&plus, &[&(i as i32)]).await.unwrap().get(0);
        assert_eq!(v, i as i32 + 1, "{what}");
        let again = b.prepare("select $1::int + 1").await.unwrap();
        let v: i32 = b.query_one(&again, &[&41]).await.unwrap().get(0);
        assert_eq!(v, 42, "{what}");
    }
    // the client that discarded lost its own names, as on a server
    let mut bind = frame(b'B', b"\0d1\0\0\0\0\0\0\0");
    bind.extend(frame(b'S', b""));
    raw.send(&bind).await;
    assert_eq!(raw.error().await.map(|e| e.0), Some("26000".into()));
}

/// Parse of the named statement `name`, then Bind + Execute of it.
fn named(name: &str, text: &str) -> Vec<u8> {
    let mut v = frame(b'P', format!("{name}\0{text}\0\0\0").as_bytes());
    v.extend(frame(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes()));
    v.extend(frame(b'E', b"\0\0\0\0\0"));
    v
}

/// Read up to the next ReadyForQuery: the tags and the transaction status it reports.
async fn status(raw: &mut Raw) -> (String, u8) {
    let r = raw.until_ready().await;
    (r.tags, r.status)
}

/// A Parse… Sync of statements a server already parsed is answered without a server; inside
/// a transaction whose BEGIN Pake has not sent yet, its ReadyForQuery still says `T`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_prepare_after_begin_reports_the_transaction() {
    // with a replica, a BEGIN waits for the statement that decides where it runs
    let env = Env::with(Opts {
        lab: pake::lab::PgOptions {
            replica: true,
            ..Default::default()
        },
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    let parse = |name: &str| {
        let mut v = frame(b'P', format!("{name}\0select 41\0\0\0").as_bytes());
        v.extend(frame(b'S', b""));
        v
    };
    // a server parses it once
    raw.send(&parse("a")).await;
    assert_eq!(status(&mut raw).await, ("1Z".to_string(), b'I'));
    raw.send(&query(b"BEGIN")).await;
    assert_eq!(status(&mut raw).await, ("CZ".to_string(), b'T'));
    // answered here, not by a server: the transaction is still open
    raw.send(&parse("b")).await;
    assert_eq!(status(&mut raw).await, ("1Z".to_string(), b'T'));
    // so is a DEALLOCATE of one of its statements
    raw.send(&query(b"DEALLOCATE b")).await;
    assert_eq!(status(&mut raw).await, ("CZ".to_string(), b'T'));
    raw.send(&query(b"COMMIT")).await;
    assert_eq!(status(&mut raw).await, ("CZ".to_string(), b'I'));
}

/// Closing prepared statements (tokio-postgres closes each `query_one(&str)` statement with
/// Close + Sync) is answered without a server: it does not wait behind a transaction that
/// holds the only one, and the name is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_close_needs_no_server() {
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    let mut parse = frame(b'P', b"a\0select 41\0\0\0");
    parse.extend(frame(b'S', b""));
    raw.send(&parse).await;
    assert_eq!(status(&mut raw).await, ("1Z".to_string(), b'I'));
    // another client holds the only server in a transaction
    let holder = env.client().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut close = frame(b'C', b"Sa\0");
    close.extend(frame(b'C', b"Sa\0")); // closing a closed statement is no error
    close.extend(frame(b'P', b"b\0select 41\0\0\0"));
    close.extend(frame(b'C', b"Sb\0"));
    close.extend(frame(b'S', b""));
    raw.send(&close).await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), status(&mut raw)).await;
    assert_eq!(answer.ok(), Some(("3313Z".to_string(), b'I')));
    holder.batch_execute("COMMIT").await.unwrap();
    // the names are gone, as on a server
    for name in ["a", "b"] {
        let mut bind = frame(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
        bind.extend(frame(b'S', b""));
        raw.send(&bind).await;
        assert_eq!(
            raw.error().await.map(|e| e.0),
            Some("26000".into()),
            "{name}"
        );
    }
}

/// An extended COPY whose data fails before the client's CopyDone and Sync arrive leaves the
/// server discarding messages until that Sync: it stays with the client until then, never
/// goes back to the pool (where it would swallow the next client's Parse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_waiting_for_a_sync_after_a_failed_copy_is_not_pooled() {
    let (env, mut raw) = one_server_with("create table copy_skip (n int)").await;
    let mut copy = extended("copy copy_skip (n) from stdin");
    copy.extend(frame(b'S', b""));
    copy.extend(frame(b'd', b"not-a-number\n"));
    raw.send(&copy).await;
    // the server refuses the data before the client ends the COPY
    let mut tags = String::new();
    loop {
        let (tag, _) = raw.read().await.expect("a reply");
        tags.push(tag as char);
        if tag == b'E' {
            break;
        }
    }
    assert_eq!(tags, "12GE");
    // another client meanwhile: it waits for the one server, then runs as usual
    let other = env.client().await;
    let waiting = tokio::spawn(async move {
        let row = other.query_one("select 41 + 1", &[]).await;
        row.map(|r| r.get::<_, i32>(0))
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut end = frame(b'c', b"");
    end.extend(frame(b'S', b""));
    raw.send(&end).await;
    assert_eq!(status(&mut raw).await, ("Z".to_string(), b'I'));
    assert_eq!(
        waiting
            .await
            .expect("task")
            .expect("the other client's query"),
        42
    );
    raw.send(&query(b"select 1")).await;
    let (tags, value) = until_ready(&mut raw).await;
    assert_eq!((tags.as_str(), value), ("TDCZ", Some(b"1".to_vec())));
}

/// A client's statement names behave as on the server it would have alone: a Parse of a name
/// the client has fails with 42P05 (the statement keeps its text, an open transaction
/// fails), and a Parse that failed or was skipped after an error leaves no name behind (a
/// Bind of it fails with 26000, not with the Parse's error or by running it). Each value is
/// what PostgreSQL itself answers to the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_names_are_the_clients_own() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    raw.send(&parse_sync("s1", "select 1")).await;
    assert_eq!(raw.until_ready().await.tags, "1Z");
    raw.send(&parse_sync("s1", "select 2")).await;
    let r = raw.until_ready().await;
    assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "42P05"));
    // the same text again: a Parse…Sync of a text a server parsed is answered by Pake alone,
    // but not a duplicate name
    raw.send(&parse_sync("s1", "select 1")).await;
    let r = raw.until_ready().await;
    assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "42P05"));
    raw.send(&run_named("s1")).await;
    assert_eq!(raw.until_ready().await.value.as_deref(), Some(&b"1"[..]));

    // a Parse that fails names nothing
    raw.send(&parse_sync("bad", "selec 1")).await;
    assert_eq!(raw.until_ready().await.sqlstate, "42601");
    raw.send(&run_named("bad")).await;
    assert_eq!(raw.until_ready().await.sqlstate, "26000");
    raw.send(&parse_sync("bad", "select 3")).await;
    assert_eq!(raw.until_ready().await.tags, "1Z");
    raw.send(&run_named("bad")).await;
    assert_eq!(raw.until_ready().await.value.as_deref(), Some(&b"3"[..]));

    // nor does one the server skipped after an earlier error in its batch
    let mut skipped = frame(b'B', b"\0nosuch\0\0\0\0\0\0\0");
    skipped.extend(frame(b'P', b"later\0select 7\0\0\0"));
    skipped.extend(frame(b'S', b""));
    raw.send(&skipped).await;
    let r = raw.until_ready().await;
    assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "26000"));
    raw.send(&run_named("later")).await;
    assert_eq!(raw.until_ready().await.sqlstate, "26000");

    // inside a transaction the duplicate fails it, as on the server
    raw.send(&query(b"BEGIN")).await;
    assert_eq!(raw.until_ready().await.status, b'T');
    raw.send(&parse_sync("s1", "select 4")).await;
    let r = raw.until_ready().await;
    assert_eq!((r.sqlstate.as_str(), r.status), ("42P05", b'E'));
    raw.send(&query(b"select 5")).await;
    assert_eq!(raw.until_ready().await.sqlstate, "25P02");
    raw.send(&query(b"ROLLBACK")).await;
    assert_eq!(raw.until_ready().await.status, b'I');
    raw.send(&run_named("s1")).await;
    assert_eq!(raw.until_ready().await.value.as_deref(), Some(&b"1"[..]));

    // closed, the name is free again; and another client's names are its own
    let mut reuse = frame(b'C', b"Ss1\0");
    reuse.extend(parse_sync("s1", "select 6"));
    raw.send(&reuse).await;
    assert_eq!(raw.until_ready().await.tags, "31Z");
    raw.send(&run_named("s1")).await;
    assert_eq!(raw.until_ready().await.value.as_deref(), Some(&b"6"[..]));
    let mut other = login(&env).await;
    other.send(&parse_sync("s1", "select 8")).await;
    assert_eq!(other.until_ready().await.tags, "1Z");
    other.send(&run_named("s1")).await;
    assert_eq!(other.until_ready().await.value.as_deref(), Some(&b"8"[..]));
}

/// SQL `DEALLOCATE` of a protocol-prepared statement inside a transaction, as psycopg
/// evicts its statements with autocommit off: it drops the client's name as directly (it is
/// not transactional), where through Pake it reached the server, which has none of the
/// client's names, and failed with 26000. In a failed transaction it fails (25P02) and the
/// name stays; `DEALLOCATE ALL` drops every name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_inside_a_transaction_drops_the_clients_name() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    for (name, text) in [("d1", "select 1"), ("d2", "select 2"), ("d3", "select 3")] {
        raw.send(&parse_sync(name, text)).await;
        assert_eq!(raw.until_ready().await.tags, "1Z");
    }
    raw.send(&query(b"BEGIN")).await;
    assert_eq!(raw.until_ready().await.status, b'T');
    raw.send(&query(b"DEALLOCATE d1")).await;
    let r = raw.until_ready().await;
    assert_eq!(
        (r.tags.as_str(), r.sqlstate.as_str(), r.status),
        ("CZ", "", b'T')
    );
    raw.send(&query(b"COMMIT")).await;
    assert_eq!(raw.until_ready().await.status, b'I');
    raw.send(&run_named("d1")).await;
    assert_eq!(raw.until_ready().await.sqlstate, "26000", "d1 is gone");

    // in a failed transaction nothing runs, DEALLOCATE included
    raw.send(&query(b"BEGIN")).await;
    raw.until_ready().await;
    raw.send(&query(b"select 1/0")).await;
    assert_eq!(raw.until_ready().await.status, b'E');
    raw.send(&query(b"DEALLOCATE d2")).await;
    let r = raw.until_ready().await;
    assert_eq!((r.sqlstate.as_str(), r.status), ("25P02", b'E'));
    raw.send(&query(b"ROLLBACK")).await;
    raw.until_ready().await;
    raw.send(&run_named("d2")).await;
    assert_eq!(raw.until_ready().await.value.as_deref(), Some(&b"2"[..]));

    raw.send(&query(b"BEGIN")).await;
    raw.until_ready().await;
    raw.send(&query(b"DEALLOCATE ALL")).await;
    assert_eq!(raw.until_ready().await.status, b'T');
    raw.send(&query(b"COMMIT")).await;
    raw.until_ready().await;
    for name in ["d2", "d3"] {
        raw.send(&run_named(name)).await;
        assert_eq!(raw.until_ready().await.sqlstate, "26000", "{name} is gone");
    }
}

/// Parses of one name pipelined before the server answered the first: each answered as
/// PostgreSQL answers the same bytes (the values below were read off a direct connection).
/// The second waits for the first's answer: before, in one batch, it silently replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_parses_of_one_name_answer_as_directly() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    let parse = |name: &str, text: &str| frame(b'P', format!("{name}\0{text}\0\0\0").as_bytes());
    let sync = || frame(b'S', b"");
    // (first text, Sync between, answers up to each ReadyForQuery, what the name runs)
    let cases = [
        ("select 1", false, vec![("1EZ", "42P05")], Ok("1")),
        ("select 1", true, vec![("1Z", ""), ("EZ", "42P05")], Ok("1")),
        ("selec 1", true, vec![("EZ", "42601"), ("1Z", "")], Ok("2")),
        ("selec 1", false, vec![("EZ", "42601")], Err("26000")),
    ];
    for (i, (first, between, answers, runs)) in cases.into_iter().enumerate() {
        let name = format!("p{i}");
        let mut bytes = parse(&name, first);
        if between {
            bytes.extend(sync());
        }
        bytes.extend(parse(&name, "select 2"));
        bytes.extend(sync());
        raw.send(&bytes).await;
        for (tags, code) in answers {
            let r = raw.until_ready().await;
            assert_eq!(
                (r.tags.as_str(), r.sqlstate.as_str()),
                (tags, code),
                "case {i}"
            );
        }
        raw.send(&run_named(&name)).await;
        let r = raw.until_ready().await;
        match runs {
            Ok(v) => assert_eq!(r.value.as_deref(), Some(v.as_bytes()), "case {i}"),
            Err(code) => assert_eq!(r.sqlstate, code, "case {i}"),
        }
    }
}

/// A raw client on a one-server Pake whose statement `s1` (`select 7`) the server lacks
/// (another client's `DISCARD ALL` dropped it there), and a pipeline of two batches: the
/// first fails, then binds `s1` — Pake parses it on the server first, and the server skips
/// that Parse with the rest of the batch.
async fn statement_lost_in_a_failed_batch() -> (Env, Raw, Vec<u8>) {
    let (env, mut raw) = one_server_with("select 1").await;
    raw.send(&parse_sync("s1", "select 7")).await;
    assert_eq!(until_ready(&mut raw).await.0, "1Z");
    let mut other = login(&env).await;
    lose_statements(&mut other).await;
    let mut failing = extended("select 1/0");
    failing.extend(run_named("s1"));
    (env, raw, failing)
}

/// The failed first batch of [`statement_lost_in_a_failed_batch`], as directly.
async fn assert_failed(raw: &mut Raw) {
    let r = raw.until_ready().await;
    assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("1EZ", "22012"));
}

/// A statement the client has that its server lacks, bound in a batch that fails before the
/// Bind, and again in the next batch, pipelined behind it: the Parse Pake sends ahead of the
/// first Bind is skipped by the server with the rest of its batch, so the second Bind needs
/// one too. Until 2026-12-07 Pake counted the statement as the server's from when it sent
/// that Parse and sent the second Bind alone, which failed with 26000 (`pake_N` does not
/// exist) where directly it runs: the differential test's seed 54, now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reparse_skipped_after_an_error_is_sent_again_in_the_next_batch() {
    let (_env, mut raw, mut pipeline) = statement_lost_in_a_failed_batch().await;
    pipeline.extend(run_named("s1"));
    raw.send(&pipeline).await;
    assert_failed(&mut raw).await;
    let r = raw.until_ready().await;
    assert_eq!(
        (r.tags.as_str(), r.sqlstate.as_str(), r.value.as_deref()),
        ("2DCZ", "", Some(&b"7"[..])),
        "the statement runs in the next batch"
    );
    raw.send(&run_named("s1")).await;
    assert_eq!(until_ready(&mut raw).await.1.as_deref(), Some(&b"7"[..]));
}

/// As above, with the next batch preparing the same text under another name: Pake parses it
/// afresh there (closing the server's copy first). Counting on the skipped Parse, Pake then
/// believed the server lacked the statement it had just parsed, and the client's next Bind
/// of `s1` parsed it again, failing with 42P05 (`pake_N` already exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reparse_skipped_after_an_error_leaves_the_next_batchs_parse_counted() {
    let (_env, mut raw, mut pipeline) = statement_lost_in_a_failed_batch().await;
    pipeline.extend(parse_sync("s2", "select 7"));
    raw.send(&pipeline).await;
    assert_failed(&mut raw).await;
    assert_eq!(until_ready(&mut raw).await.0, "1Z");
    for name in ["s1", "s2", "s1"] {
        raw.send(&run_named(name)).await;
        assert_value(&raw.until_ready().await, b"7", name);
    }
}

/// The unnamed statement, parsed in an earlier request, bound in a batch that fails before
/// the Bind, on a server where another client's unnamed statement is, then bound again in the
/// next batch — pipelined behind it, or sent once it is answered: the Parse Pake sends ahead
/// of the first Bind is skipped with the rest of its batch, so the second Bind needs one too.
/// Until 2026-12-07 Pake counted the server's unnamed statement as the client's from when it
/// sent that Parse, and the second Bind ran the other client's statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_reparse_skipped_after_an_error_is_sent_again_in_the_next_batch() {
    for pipelined in [true, false] {
        let (env, mut a) = one_server_with("select 1").await;
        a.send(&parse_unnamed("select $1::int * 2")).await;
        assert_eq!(until_ready(&mut a).await.0, "1Z");
        let mut b = login(&env).await;
        b.send(&parse_unnamed("select $1::int * 1000")).await;
        assert_eq!(until_ready(&mut b).await.0, "1Z");
        let bind = bind_unnamed_21();
        let mut failing = frame(b'D', b"Pnosuch\0");
        failing.extend(&bind);
        if pipelined {
            failing.extend(&bind);
        }
        a.send(&failing).await;
        let r = a.until_ready().await;
        assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "34000"));
        if !pipelined {
            a.send(&bind).await;
        }
        let r = a.until_ready().await;
        assert_eq!(
            (r.tags.as_str(), r.sqlstate.as_str(), r.value.as_deref()),
            ("2DCZ", "", Some(&b"42"[..])),
            "pipelined {pipelined}: a's own unnamed statement runs in the next batch"
        );
    }
}

/// A Pake of one server keeping at most 2 statements on it (`max_prepared_statements`),
/// and a raw client that prepared `s1` and `s2` there: the server is at its cap.
async fn two_statements_at_the_cap() -> (Env, Raw) {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.max_prepared_statements = 2,
        ..Opts::default()
    })
    .await;
    let mut raw = login(&env).await;
    for (name, text) in [("s1", "select 1"), ("s2", "select 2")] {
        raw.send(&parse_sync(name, text)).await;
        assert_eq!(until_ready(&mut raw).await.0, "1Z");
    }
    (env, raw)
}

/// A Parse of a third statement on a server at its cap, in a batch that fails before it:
/// Pake closes the least recently used statement there (`s1`'s) to make room, and the server
/// skips that Close with the rest of the batch. Until 2026-12-07 Pake forgot the copy when it
/// sent the Close, and the client's next Bind of `s1` (the next batch, pipelined or sent
/// later) parsed it there again: 42P05 (`pake_N` already exists) where directly it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_skipped_after_an_error_leaves_the_statement_there() {
    for pipelined in [false, true] {
        let (_env, mut raw) = two_statements_at_the_cap().await;
        let mut failing = frame(b'D', b"Pnosuch\0");
        failing.extend(parse_sync("s3", "select 3"));
        if pipelined {
            failing.extend(run_named("s1"));
        }
        raw.send(&failing).await;
        let r = raw.until_ready().await;
        assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "34000"));
        if !pipelined {
            raw.send(&run_named("s1")).await;
        }
        let r = raw.until_ready().await;
        assert_eq!(
            (r.tags.as_str(), r.sqlstate.as_str(), r.value.as_deref()),
            ("2DCZ", "", Some(&b"1"[..])),
            "pipelined {pipelined}: s1 runs in the next batch"
        );
        // s3 was never made (its Parse was skipped): a Parse of it now makes room again
        raw.send(&parse_sync("s3", "select 3")).await;
        assert_eq!(until_ready(&mut raw).await.0, "1Z");
        for name in ["s3", "s1", "s2"] {
            raw.send(&run_named(name)).await;
            let r = raw.until_ready().await;
            assert_eq!(
                (r.sqlstate.as_str(), r.value.as_deref()),
                ("", Some(&name.as_bytes()[1..])),
                "{name}"
            );
        }
    }
}

/// The address of the lab's primary, for the same messages sent directly.
/// A raw client of `addr` (PostgreSQL directly, or Pake), logged in as the lab's user.
async fn login_to(env: &Env, addr: std::net::SocketAddr) -> Raw {
    Raw::login_at(addr, &env.lab.user, &env.lab.password, "postgres", &[])
        .await
        .expect("login")
}

fn direct_addr(env: &Env) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", env.lab.primary.port)
        .parse()
        .expect("addr")
}

/// The client's own unnamed Parse in a batch that fails before it: the server skips it, and
/// directly the client's unnamed statement is still the one it parsed before (`$1 * 2`),
/// whatever another client did meanwhile on another connection. Through Pake another
/// client's unnamed statement (`$1 * 1000`) was on the server, and Pake counted the skipped
/// Parse as making it the client's own: the client's next Bind of "" (the next batch,
/// pipelined or sent later) ran the other client's statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_unnamed_parse_skipped_after_an_error_leaves_its_old_one() {
    for pipelined in [false, true] {
        let (env, _) = one_server_with("select 1").await;
        for addr in [direct_addr(&env), env.pake.pg_addr] {
            let mut a = login_to(&env, addr).await;
            a.send(&parse_unnamed("select $1::int * 2")).await;
            assert_eq!(until_ready(&mut a).await.0, "1Z");
            let mut b = login_to(&env, addr).await;
            b.send(&parse_unnamed("select $1::int * 1000")).await;
            assert_eq!(until_ready(&mut b).await.0, "1Z");
            let mut failing = frame(b'D', b"Pnosuch\0");
            failing.extend(parse_unnamed("select $1::int * 3"));
            if pipelined {
                failing.extend(bind_unnamed_21());
            }
            a.send(&failing).await;
            let r = a.until_ready().await;
            assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "34000"));
            if !pipelined {
                a.send(&bind_unnamed_21()).await;
            }
            let r = a.until_ready().await;
            assert_eq!(
                (r.tags.as_str(), r.sqlstate.as_str(), r.value.as_deref()),
                ("2DCZ", "", Some(&b"42"[..])),
                "pipelined {pipelined}, {addr}: the client's old unnamed statement runs"
            );
        }
    }
}

/// A statement Describe's answer: the tags up to ReadyForQuery, the SQLSTATE of an error,
/// and the parameter types' count.
async fn described(raw: &mut Raw) -> (String, String, Option<u16>) {
    let (mut tags, mut sqlstate, mut params) = (String::new(), String::new(), None);
    loop {
        let (tag, body) = raw.read().await.expect("a reply");
        tags.push(tag as char);
        match tag {
            b'E' => sqlstate = crate::harness::sqlstate(&body),
            b't' => params = body.get(..2).map(|n| u16::from_be_bytes([n[0], n[1]])),
            b'Z' => return (tags, sqlstate, params),
            _ => {}
        }
    }
}

/// A Describe of the unnamed statement in a later request than its Parse, where the
/// server's unnamed statement is not the client's: another client's replaced it there
/// (one server), or the client runs on another server (another client holds the first in
/// a transaction). Directly it describes the client's statement (one int parameter);
/// through Pake it described whatever the server had, or failed with 26000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_described_in_a_later_request_is_the_clients() {
    for one_server in [true, false] {
        let env = Env::with(Opts {
            pool_size: if one_server { 1 } else { 2 },
            ..Opts::default()
        })
        .await;
        for addr in [direct_addr(&env), env.pake.pg_addr] {
            let mut a = login_to(&env, addr).await;
            a.send(&parse_unnamed("select $1::int * 2")).await;
            assert_eq!(until_ready(&mut a).await.0, "1Z");
            let mut b = login_to(&env, addr).await;
            if !one_server {
                b.send(&query(b"begin")).await;
                until_ready(&mut b).await;
            }
            b.send(&parse_unnamed("select 'b'::text")).await;
            assert_eq!(until_ready(&mut b).await.0, "1Z");
            let mut describe = frame(b'D', b"S\0");
            describe.extend(frame(b'S', b""));
            a.send(&describe).await;
            assert_eq!(
                described(&mut a).await,
                ("tTZ".into(), String::new(), Some(1)),
                "one server {one_server}, {addr}"
            );
            // and its Bind runs it, after the Describe as before
            a.send(&bind_unnamed_21()).await;
            assert_eq!(a.until_ready().await.value.as_deref(), Some(&b"42"[..]));
        }
    }
}

/// The client's own unnamed Parse that fails: PostgreSQL drops the unnamed statement before
/// it parses, so the client's next Bind of "" fails with 26000, directly and through Pake
/// (which takes the failed text for the client's no more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_unnamed_parse_that_fails_leaves_none() {
    let (env, _) = one_server_with("select 1").await;
    for addr in [direct_addr(&env), env.pake.pg_addr] {
        let mut a = login_to(&env, addr).await;
        a.send(&parse_unnamed("select $1::int * 2")).await;
        assert_eq!(until_ready(&mut a).await.0, "1Z");
        a.send(&parse_unnamed("selec $1")).await;
        let r = a.until_ready().await;
        assert_eq!((r.tags.as_str(), r.sqlstate.as_str()), ("EZ", "42601"));
        a.send(&bind_unnamed_21()).await;
        let r = a.until_ready().await;
        assert_eq!(
            (r.tags.as_str(), r.sqlstate.as_str()),
            ("EZ", "26000"),
            "{addr}"
        );
    }
}

/// A Bind of "" from a client with no unnamed statement (its simple Query destroyed it) on a
/// server where another client's unnamed statement is: directly 26000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_of_no_unnamed_statement_runs_no_other_clients() {
    let (env, _) = one_server_with("select 1").await;
    for addr in [direct_addr(&env), env.pake.pg_addr] {
        let mut a = login_to(&env, addr).await;
        a.send(&parse_unnamed("select $1::int * 2")).await;
        assert_eq!(until_ready(&mut a).await.0, "1Z");
        a.send(&query(b"select 1")).await;
        until_ready(&mut a).await;
        let mut b = login_to(&env, addr).await;
        b.send(&parse_unnamed("select $1::int * 1000")).await;
        assert_eq!(until_ready(&mut b).await.0, "1Z");
        a.send(&bind_unnamed_21()).await;
        let r = a.until_ready().await;
        assert_eq!(
            (r.tags.as_str(), r.sqlstate.as_str()),
            ("EZ", "26000"),
            "{addr}"
        );
    }
}
