//! The classification table: reads, writes and the cases other poolers get wrong.

use super::*;

fn class(sql: &str) -> Class {
    classify(parse(sql).as_deref()).class
}

const READS: &[&str] = &[
    "SELECT 1",
    "select abalance from pgbench_accounts where aid = 42",
    "SELECT * FROM t WHERE id = $1",
    "SELECT a, b FROM t1 JOIN t2 ON t1.id = t2.t1_id WHERE t2.x > 3",
    "SELECT count(*) FROM t",
    "SELECT * FROM t ORDER BY created_at DESC LIMIT 10 OFFSET 20",
    "SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b",
    "SELECT * FROM t WHERE id IN (1, 2, 3)",
    "SELECT * FROM t WHERE id = ANY($1)",
    "SELECT * FROM (SELECT * FROM t) sub",
    "WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval '1 day') SELECT count(*) FROM recent",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT sum(n) FROM r",
    "SELECT * FROM a UNION SELECT * FROM b",
    "SELECT * FROM a INTERSECT SELECT * FROM b",
    "SELECT * FROM a EXCEPT SELECT * FROM b",
    "VALUES (1, 'a'), (2, 'b')",
    "TABLE pgbench_branches",
    "SHOW search_path",
    "SHOW server_version",
    "SELECT lower(name), upper(name), length(name) FROM users",
    "SELECT coalesce(a, b), nullif(a, 0), greatest(a, b) FROM t",
    "SELECT now(), current_timestamp, current_date",
    "SELECT jsonb_build_object('a', 1)",
    "SELECT x::int FROM t",
    "SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t",
    "SELECT * FROM t WHERE name LIKE 'a%'",
    "SELECT * FROM t WHERE name ILIKE $1",
    "SELECT * FROM generate_series(1, 10)",
    "SELECT array_agg(x) FROM t GROUP BY y HAVING count(*) > 1",
    "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t",
    "SELECT EXISTS (SELECT 1 FROM t WHERE id = 1)",
    "SELECT (SELECT max(id) FROM t) AS m",
    "SELECT * FROM t1 LEFT JOIN LATERAL (SELECT * FROM t2 WHERE t2.a = t1.a LIMIT 1) x ON true",
    "EXPLAIN SELECT * FROM t",
    "SELECT pg_is_in_recovery()",
    "SELECT pg_last_wal_replay_lsn()",
    "select 1; select 2",
    "SELECT * FROM t WHERE ts BETWEEN $1 AND $2",
    "SELECT t.* FROM public.t WHERE t.id = 1",
    "SELECT \"Weird\".\"Col\" FROM \"Weird\"",
    "SELECT 'it''s a string with ; and -- inside'",
    "/* comment */ SELECT 1",
    "SELECT 1 -- trailing comment",
    "SELECT substring(name from 1 for 3) FROM t",
    "SELECT extract(epoch from now())",
    "SELECT * FROM t FETCH FIRST 5 ROWS ONLY",
    "SELECT string_agg(name, ',') FROM t",
    "SELECT a FROM t WHERE b IS NOT NULL AND c IS DISTINCT FROM d",
    "SELECT md5('x')",
    "SELECT format('%s', 1)",
];

const WRITES: &[&str] = &[
    "INSERT INTO t VALUES (1)",
    "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id",
    "INSERT INTO t SELECT * FROM s",
    "INSERT INTO t VALUES (1) ON CONFLICT (id) DO NOTHING",
    "UPDATE t SET a = 1 WHERE id = 2",
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 3",
    "DELETE FROM t WHERE id = 1",
    "DELETE FROM t USING s WHERE t.id = s.id",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
    "TRUNCATE t",
    "CREATE TABLE t (id int)",
    "CREATE INDEX ON t (a)",
    "CREATE INDEX CONCURRENTLY i ON t (a)",
    "ALTER TABLE t ADD COLUMN b int",
    "DROP TABLE t",
    "CREATE VIEW v AS SELECT 1",
    "CREATE TEMP TABLE tmp AS SELECT 1",
    "GRANT SELECT ON t TO bob",
    "VACUUM t",
    "ANALYZE t",
    "COPY t FROM STDIN",
    "COPY t TO STDOUT",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR SHARE",
    "SELECT * FROM t FOR NO KEY UPDATE",
    "SELECT * FROM t FOR KEY SHARE",
    "SELECT * FROM t WHERE id = 1 FOR UPDATE SKIP LOCKED",
    "SELECT * FROM t FOR UPDATE NOWAIT",
    "SELECT * FROM (SELECT * FROM t FOR UPDATE) x",
    "SELECT * INTO newt FROM t",
    "SELECT * INTO TEMP newt FROM t",
    "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
    "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x",
    "WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x",
    "WITH a AS (SELECT 1), b AS (DELETE FROM t RETURNING id) SELECT * FROM a, b",
    "SELECT nextval('s')",
    "SELECT setval('s', 10)",
    "SELECT currval('s')",
    "SELECT lastval()",
    "SELECT id, nextval('s') FROM t",
    "SELECT * FROM t WHERE id = nextval('s')",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT pg_advisory_unlock_all()",
    "SELECT set_config('search_path', 'x', false)",
    "SELECT txid_current()",
    "SELECT pg_current_xact_id()",
    "SELECT lo_create(0)",
    "SELECT lo_unlink(1234)",
    "SELECT lo_import('/tmp/x')",
    "SELECT pg_notify('chan', 'msg')",
    "SELECT pg_terminate_backend(123)",
    "SELECT pg_switch_wal()",
    "SELECT pg_create_restore_point('x')",
    "SELECT setseed(0.5)",
    "SELECT public.nextval('s')",
    "SELECT * FROM nextval('s')",
    "SELECT 1; INSERT INTO t VALUES (1)",
    "SELECT 1; UPDATE t SET a = 1",
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
    "EXPLAIN INSERT INTO t VALUES (1)",
    "SET search_path = app",
    "RESET ALL",
    "LISTEN chan",
    "NOTIFY chan",
    "PREPARE q AS SELECT 1",
    "EXECUTE q",
    "DEALLOCATE q",
    "DECLARE c CURSOR FOR SELECT 1",
    "FETCH 10 FROM c",
    "CALL do_things()",
    "DO $$ BEGIN PERFORM 1; END $$",
    "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
    "SAVEPOINT s1",
    "RELEASE SAVEPOINT s1",
    "ROLLBACK TO SAVEPOINT s1",
    "REFRESH MATERIALIZED VIEW mv",
    "CLUSTER t",
    "REINDEX TABLE t",
    "COMMENT ON TABLE t IS 'x'",
    "selec 1",
    "SELECT FROM WHERE",
    "",
    "this is not sql",
    "SELECT * FROM t WHERE (",
    "SELECT 'unterminated",
];

#[test]
fn reads_are_reads() {
    for sql in READS {
        assert_eq!(class(sql), Class::Read, "{sql}");
    }
}

#[test]
fn everything_else_goes_to_the_primary() {
    for sql in WRITES {
        let c = class(sql);
        assert!(!matches!(c, Class::Read), "{sql} must not be a read: {c:?}");
    }
}

#[test]
fn table_is_large_enough() {
    assert!(READS.len() + WRITES.len() + TRANSACTION.len() >= 100);
}

const TRANSACTION: &[(&str, Class)] = &[
    (
        "BEGIN",
        Class::Begin {
            read_only: false,
            plain: true,
        },
    ),
    (
        "begin transaction",
        Class::Begin {
            read_only: false,
            plain: true,
        },
    ),
    (
        "START TRANSACTION",
        Class::Begin {
            read_only: false,
            plain: true,
        },
    ),
    (
        "BEGIN READ ONLY",
        Class::Begin {
            read_only: true,
            plain: false,
        },
    ),
    (
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        Class::Begin {
            read_only: true,
            plain: false,
        },
    ),
    (
        "BEGIN READ WRITE",
        Class::Begin {
            read_only: false,
            plain: false,
        },
    ),
    (
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        Class::Begin {
            read_only: false,
            plain: false,
        },
    ),
    (
        "SET TRANSACTION READ ONLY",
        Class::SetTransaction { read_only: true },
    ),
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        Class::SetTransaction { read_only: false },
    ),
    ("COMMIT", Class::End),
    ("END", Class::End),
    ("ROLLBACK", Class::End),
    (
        "SET pake.route = 'primary'",
        Class::RouteSetting(Some(Route::Primary)),
    ),
    (
        "SET pake.route TO replica",
        Class::RouteSetting(Some(Route::Replica)),
    ),
    ("SET pake.route = 'auto'", Class::RouteSetting(None)),
];

#[test]
fn transaction_control() {
    for (sql, want) in TRANSACTION {
        assert_eq!(&class(sql), want, "{sql}");
    }
    // in a batch, transaction control is just "not a read"
    assert_eq!(class("BEGIN; SELECT 1; COMMIT"), Class::Write);
}

#[test]
fn reads_record_their_functions() {
    let c = classify(parse("SELECT lower(a), my_schema.my_func(b) FROM t").as_deref());
    assert_eq!(c.class, Class::Read);
    assert_eq!(
        &*c.functions,
        &["lower".into(), "my_func".into()] as &[Box<str>]
    );
    let c = classify(parse("SELECT * FROM generate_series(1, 3)").as_deref());
    assert_eq!(&*c.functions, &["generate_series".into()] as &[Box<str>]);
}

#[test]
fn deep_nesting_is_refused_not_crashed() {
    let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(class(&sql), Class::Write);
}
#[test]
fn route_setting_value_comes_from_the_text() {
    // the literal is not part of the cached shape: the value is read per request
    assert_eq!(
        route_value("SET pake.route = 'primary'"),
        Some(Route::Primary)
    );
    assert_eq!(
        route_value("set pake.route to replica"),
        Some(Route::Replica)
    );
    assert_eq!(route_value("SET pake.route = 'auto'"), None);
    assert_eq!(route_value("SET pake.route = DEFAULT"), None);
}
