"""The Postgres client-compatibility scenario for psycopg 3 (libpq; issue 16), direct and
through Pake. Usage: scenario_psycopg.py URL PREFIX. Prints one JSON object: step name ->
normalised result, or "error: <SQLSTATE>" (see tests/pg/matrix.rs).
"""
import json
import sys
import threading
import time

import psycopg
from psycopg import pq

url, prefix = sys.argv[1], sys.argv[2]
t, u = prefix + "_t", prefix + "_u"
out = {}


def norm(v):
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    return v


def step(name, fn):
    try:
        out[name] = norm(fn())
    except psycopg.Error as e:
        out[name] = "error: " + str(e.sqlstate) if e.sqlstate else "client error: " + type(e).__name__


def pgresult(res):
    """A libpq result as (status, sqlstate or rows)."""
    status = pq.ExecStatus(res.status).name
    if res.status == pq.ExecStatus.FATAL_ERROR:
        return [status, norm(res.error_field(pq.DiagnosticField.SQLSTATE))]
    return [status, [[norm(res.get_value(r, c)) for c in range(res.nfields)] for r in range(res.ntuples)]]


c = psycopg.connect(url, autocommit=True)
c.execute(f"drop table if exists {t}, {u}")
c.execute(f"create table {t} (a int)")
c.execute(f"insert into {t} values (1), (2)")
# server-side prepared statements (prepare=True), then the table changes its result type
step("prepared_before", lambda: c.execute(f"select * from {t} order by a", prepare=True).fetchall())
c.execute(f"alter table {t} add column b text default 'x'")
step("prepared_after_alter", lambda: c.execute(f"select * from {t} order by a", prepare=True).fetchall())
step("prepared_after_alter_again", lambda: c.execute(f"select * from {t} order by a", prepare=True).fetchall())
# an explicitly named statement (libpq PQprepare), executed later
pg = c.pgconn
step("named_prepare", lambda: pgresult(pg.prepare(b"foobar", b"select $1::int + 1")))
step("named_other", lambda: c.execute("select 7").fetchone())
step("named_later", lambda: pgresult(pg.exec_prepared(b"foobar", [b"41"])))
# the unnamed statement, parsed in one Sync and bound in the next
step("unnamed_prepare", lambda: pgresult(pg.prepare(b"", b"select $1::int * 2")))
step("unnamed_later", lambda: pgresult(pg.exec_prepared(b"", [b"21"])))
# executemany (pipeline mode) with a server error in the middle
c.execute(f"create table {u} (a int primary key)")
step("executemany_error", lambda: c.cursor().executemany(f"insert into {u} values (%s)", [(1,), (2,), (1,), (3,)]))
step("executemany_after", lambda: c.execute(f"select array_agg(a order by a) from {u}").fetchone())
# pipeline mode with an error in the middle: every reply the server sends, then usable.
# psycopg raises the error from whichever call first finds its result (an execute, or the
# sync when the results arrive later, as one more hop makes likely), so the transcript
# records which SQLSTATEs surfaced, not where.
def pipeline():
    got = []
    states = set()
    with c.pipeline() as p:
        curs = [c.cursor() for _ in range(4)]
        queries = ["select 1", "select 1/0", "select 3", f"insert into {u} values (50)"]
        for cur, q in zip(curs, queries):
            try:
                cur.execute(q)
            except psycopg.Error as e:
                states.add(e.sqlstate)
        try:
            p.sync()
        except psycopg.Error as e:
            states.add(e.sqlstate)
        got.append("errors: " + ",".join(sorted(s for s in states if s)))
        for cur in curs:
            try:
                got.append(cur.fetchall())
            except psycopg.Error as e:
                got.append("fetch error: " + type(e).__name__)
    return got
step("pipeline_error", pipeline)
step("pipeline_after", lambda: c.execute(f"select count(*) from {u} where a = 50").fetchone())
def until_syncs(results, n):
    """Collect a libpq pipeline's results up to its n-th Sync, then leave pipeline mode."""
    while len([r for r in results if r == "SYNC"]) < n:
        res = pg.get_result()
        if res is None:
            continue
        results.append("SYNC" if res.status == pq.ExecStatus.PIPELINE_SYNC else pgresult(res))
    pg.exit_pipeline_mode()
    return results
# a raw pipeline: Parse/Bind/Execute with a Flush, an error, more messages, then Sync
def raw_pipeline():
    pg.enter_pipeline_mode()
    pg.send_query_params(b"select 1", None)
    pg.send_query_params(b"select 1/0", None)
    pg.send_query_params(b"select 2", None)
    pg.pipeline_sync()
    pg.send_query_params(b"select 4", None)
    pg.pipeline_sync()
    results = []
    return until_syncs(results, 2)
step("raw_pipeline", raw_pipeline)
# the error arrives before the Sync is sent (a Flush asked for it): what is sent after it is
# discarded by the server until the Sync
def raw_pipeline_flush():
    pg.enter_pipeline_mode()
    pg.send_query_params(b"select 1/0", None)
    pg.send_flush_request()
    pg.flush()
    results = []
    while not results:
        pg.consume_input()
        res = pg.get_result()
        if res is not None:
            results.append(pgresult(res))
        else:
            time.sleep(0.01)
    pg.send_query_params(b"select 5", None)
    pg.send_prepare(b"late", b"select 6")
    pg.pipeline_sync()
    pg.send_query_params(b"select 7", None)
    pg.pipeline_sync()
    return until_syncs(results, 2)
step("raw_pipeline_flush", raw_pipeline_flush)
step("after_raw_pipeline", lambda: c.execute("select 8").fetchone())
# cancel from another thread while a statement sleeps: the server drops a cancel that lands
# between statements, so it is sent once the statement runs (a fixed delay raced a loaded
# machine), and the sleep is long enough for a slow cancel to land inside it
def cancel():
    sql = f"select pg_sleep(60) /* {prefix} cancel */"

    def when_running():
        with psycopg.connect(url, autocommit=True) as w:
            for _ in range(600):
                running = "select count(*) from pg_stat_activity where state = 'active' and query = %s"
                if w.execute(running, (sql,)).fetchone()[0]:
                    break
                time.sleep(0.05)
        c.cancel_safe()

    threading.Thread(target=when_running).start()
    return c.execute(sql).fetchone()
step("cancel", cancel)
step("after_cancel", lambda: c.execute("select 1").fetchone())
# COPY both ways
def copy_in():
    with c.cursor().copy(f"copy {u} (a) from stdin") as cp:
        cp.write_row((100,))
        cp.write_row((101,))
    return c.execute(f"select count(*) from {u} where a >= 100").fetchone()
step("copy_in", copy_in)
def copy_out():
    with c.cursor().copy(f"copy (select a from {u} where a >= 100 order by a) to stdout") as cp:
        return [bytes(b).decode() for b in cp]
step("copy_out", copy_out)
# ParameterStatus values are the server's
for p in ["client_encoding", "server_encoding", "DateStyle", "integer_datetimes", "standard_conforming_strings"]:
    step("param_" + p, lambda p=p: pg.parameter_status(p.encode()))
# a LATIN9 client sends non-UTF-8 bytes in a Query (in one transaction: the setting is the
# session-state engineer's; here only the forward path is under test)
def latin9():
    with psycopg.connect(url) as l9:
        l9.execute("set client_encoding = 'LATIN9'")
        enc = l9.pgconn.parameter_status(b"client_encoding")
        row = l9.execute("select %s::text, length(%s::text), octet_length(convert_to(%s::text, 'UTF8'))", ["caf\u00e9 \u20ac"] * 3).fetchone()
        simple = l9.pgconn.exec_("select 'd\u00e9j\u00e0 \u20ac'".encode("iso8859_15"))
        return [norm(enc), list(row), pgresult(simple)]
step("latin9", latin9)
# a second connection terminates the server behind the first: the server's own 57P01
victim = psycopg.connect(url)
pid = victim.execute("select pg_backend_pid()").fetchone()[0]
step("terminate", lambda: c.execute("select pg_terminate_backend(%s)", [pid]).fetchone())
time.sleep(0.3)
step("terminated_victim", lambda: victim.execute("select 1").fetchone())
step("after_terminate", lambda: c.execute("select 2").fetchone())
c.execute(f"drop table {t}, {u}")
print(json.dumps(out, sort_keys=True))
