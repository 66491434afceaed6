"""The Postgres client-compatibility scenario for asyncpg (issue 16), run direct and through Pake.

Usage: scenario_asyncpg.py URL PREFIX
Prints one JSON object: step name -> normalised result, or "error: <SQLSTATE>". The Rust test
(tests/pg/matrix.rs) runs it against Postgres and against Pake in transaction mode and
compares. PREFIX names this run's tables so runs never share them.
"""
import asyncio
import io
import json
import sys

import asyncpg

url, prefix = sys.argv[1], sys.argv[2]
t = prefix + "_t"
u = prefix + "_u"
out = {}


def norm(v):
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, asyncpg.Record):
        return [norm(x) for x in v.values()]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


async def step(name, coro):
    try:
        out[name] = norm(await coro)
    except asyncpg.PostgresError as e:
        out[name] = "error: " + str(e.sqlstate)
    except (asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as e:
        out[name] = "client error: " + type(e).__name__ + ": " + str(e)[:60]


async def main():
    c = await asyncpg.connect(url)
    await c.execute(f"drop table if exists {t}, {u}; create table {t} (a int); insert into {t} values (1), (2)")
    # a cached statement, the table changes its result type, asyncpg re-prepares
    await step("cached_before", c.fetch(f"select * from {t} order by a"))
    await c.execute(f"alter table {t} add column b text default 'x'")
    await step("cached_after_alter", c.fetch(f"select * from {t} order by a"))
    await c.execute(f"alter table {t} alter column a type bigint")
    await step("cached_after_retype", c.fetch(f"select * from {t} order by a"))
    # an explicitly named statement, executed later
    ps = await c.prepare("select $1::int + 1", name="foobar")
    await step("named_other", c.fetchval("select 7"))
    await step("named_later", ps.fetchval(41))
    await step("named_again", ps.fetchval(1))
    # no statement cache: the unnamed statement is parsed in one batch, bound in the next
    n = await asyncpg.connect(url, statement_cache_size=0)
    await step("unnamed_across_sync", n.fetchval("select $1::int * 2", 21))
    await step("unnamed_again", n.fetch("select $1::text || $2::text", "a", "b"))
    await n.close()
    # executemany with a server error in the middle: the error, and the connection lives on
    await c.execute(f"create table {u} (a int primary key)")
    await step("executemany_error", c.executemany(f"insert into {u} values ($1)", [(1,), (2,), (1,), (3,)]))
    await step("executemany_after", c.fetchval(f"select count(*) from {u}"))
    await step("executemany_ok", c.executemany(f"insert into {u} values ($1)", [(10,), (11,)]))
    await step("executemany_count", c.fetchval(f"select count(*) from {u}"))
    # cancel: a timeout makes asyncpg send a CancelRequest
    await step("cancel", c.fetchval("select pg_sleep(5)", timeout=0.5))
    await step("after_cancel", c.fetchval("select 1"))
    # COPY both ways
    await step("copy_in", c.copy_records_to_table(u, records=[(100,), (101,)]))
    buf = io.BytesIO()
    await step("copy_out", c.copy_from_query(f"select a from {u} where a >= 100 order by a", output=buf))
    out["copy_out_data"] = buf.getvalue().decode()
    # the server's own messages
    await step("param_client_encoding", asyncio.sleep(0, c.get_settings().client_encoding))
    await step("param_server_encoding", asyncio.sleep(0, c.get_settings().server_encoding))
    await step("param_integer_datetimes", asyncio.sleep(0, c.get_settings().integer_datetimes))
    # a second connection terminates the server behind the first: the server's own 57P01
    victim = await asyncpg.connect(url)
    tr = victim.transaction()
    await tr.start()
    pid = await victim.fetchval("select pg_backend_pid()")
    killer = await asyncpg.connect(url)
    await step("terminate", killer.fetchval("select pg_terminate_backend($1)", pid))
    await asyncio.sleep(0.3)
    await step("terminated_victim", victim.fetchval("select 1"))
    await step("killer_after", killer.fetchval("select 2"))
    await killer.close()
    victim.terminate()
    await c.execute(f"drop table {t}, {u}")
    await c.close()
    print(json.dumps(out, sort_keys=True))


asyncio.run(main())
