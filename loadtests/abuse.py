#!/usr/bin/env python3
"""The abuse suite's cases (run by loadtests/abuse.sh, `make abuse`).

Each case plays an attacker or a buggy client against Pake's Redis or Postgres listener
while a well-behaved client on the same listener keeps asking (GET / SELECT 1 every 5 ms).
Per case it reports what the abuser was answered, Pake's resident memory before, at its
peak and a few seconds after, and the well-behaved client's worst latency and wrong
answers. Raw sockets on purpose: the point is to send what real client libraries never do.
"""
import argparse
import json
import multiprocessing
import os
import socket
import struct
import threading
import time

# -- measurement ---------------------------------------------------------------------------


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """Peak RSS of `pid`, sampled every 5 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, rss_mb(pid), False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.005)


# -- RESP ----------------------------------------------------------------------------------


def resp_cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespReader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise EOFError("closed")
        self.buf += d

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            self._fill()

    def read(self):
        line = self._line()
        kind = line[:1]
        if kind == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            v, self.buf = self.buf[:n], self.buf[n + 2 :]
            return v
        if kind == b"*":
            n = int(line[1:])
            return None if n < 0 else [self.read() for _ in range(n)]
        if kind == b"-":
            return RuntimeError(line[1:].decode(errors="replace"))
        return line[1:]


def summary(reply):
    if isinstance(reply, list):
        return f"array of {len(reply)}"
    if isinstance(reply, Exception):
        return f"-{reply}"[:160]
    return repr(reply)[:160]


# -- Postgres wire -------------------------------------------------------------------------


def pg_connect(addr, user, db, timeout=10):
    s = socket.create_connection(addr, timeout=timeout)
    body = struct.pack("!i", 196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", db))
    ) + b"\0"
    s.sendall(struct.pack("!i", len(body) + 4) + body)
    pg_until_ready(s)
    return s


def pg_read(s):
    head = b""
    while len(head) < 5:
        d = s.recv(5 - len(head))
        if not d:
            raise EOFError("closed")
        head += d
    tag, n = head[:1], struct.unpack("!i", head[1:])[0] - 4
    body = bytearray()
    while len(body) < n:
        d = s.recv(min(1 << 20, n - len(body)))
        if not d:
            raise EOFError("closed")
        body += d
    return tag, bytes(body)


def pg_error(body):
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
    return f"{fields.get(b'C', '?')} {fields.get(b'M', '')}"[:160]


def pg_until_ready(s):
    """Messages up to ReadyForQuery: (rows, command tags, first error)."""
    rows, tags, err = 0, 0, None
    while True:
        tag, body = pg_read(s)
        if tag == b"Z":
            return rows, tags, err
        if tag == b"D":
            rows += 1
        elif tag == b"C":
            tags += 1
        elif tag == b"E" and err is None:
            err = pg_error(body)
        elif tag == b"R" and struct.unpack("!i", body[:4])[0] not in (0,):
            raise RuntimeError("the suite needs trust auth (pake serve --auth-type trust)")


def pg_query(s, sql):
    data = sql.encode()
    s.sendall(b"Q" + struct.pack("!i", len(data) + 5) + data + b"\0")
    rows, tags, err = pg_until_ready(s)
    return f"ERROR {err}" if err else f"{tags} command(s), {rows} row(s)"


# -- the well-behaved clients --------------------------------------------------------------


class Good:
    """Asks every 5 ms; worst latency and wrong answers. A process of its own (forked), as
    a real client is: a thread would share the interpreter lock with the abuser, whose
    20 MB string copies then show up as the good client's latency."""

    def __init__(self, ask):
        self.ask = ask
        self._stop = multiprocessing.Event()
        self._worst = multiprocessing.Value("d", 0.0)
        self._n = multiprocessing.Value("q", 0)
        self._wrong = multiprocessing.Value("q", 0)
        self._proc = multiprocessing.get_context("fork").Process(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                ok = self.ask()
            except Exception:  # noqa: BLE001 - any failure is a wrong answer
                ok = False
            took = time.monotonic() - t
            with self._worst.get_lock():
                self._worst.value = max(self._worst.value, took)
            self._n.value += 1
            self._wrong.value += 0 if ok else 1
            time.sleep(0.005)

    def start(self):
        self._proc.start()

    def finish(self):
        self._stop.set()
        self._proc.join()

    @property
    def worst(self):
        return self._worst.value

    @property
    def n(self):
        return self._n.value

    @property
    def wrong(self):
        return self._wrong.value


def good_redis(addr):
    s = socket.create_connection(addr, timeout=30)
    r = RespReader(s)
    s.sendall(resp_cmd("SET", "good", "yes"))
    r.read()

    def ask():
        s.sendall(resp_cmd("GET", "good"))
        return r.read() == b"yes"

    return Good(ask)


def control_redis(addr):
    """The same asks straight to a Redis node: what the machine's scheduling alone costs."""
    s = socket.create_connection(addr, timeout=30)
    r = RespReader(s)

    def ask():
        s.sendall(resp_cmd("PING"))
        return r.read() == b"PONG"

    return Good(ask)


def good_pg(addr, user, db):
    s = pg_connect(addr, user, db, timeout=30)

    def ask():
        return pg_query(s, "SELECT 1") == "1 command(s), 1 row(s)"

    return Good(ask)


# -- cases ---------------------------------------------------------------------------------


def mget(addr, n):
    s = socket.create_connection(addr, timeout=120)
    r = RespReader(s)

    def prepare():
        # written directly would not do: the keys must exist on the cluster's nodes too,
        # and Pake routes them; what the fill leaves in the L1 is measured before the case
        for b in range(0, n, 10000):
            s.sendall(b"".join(resp_cmd("SET", f"k{i}", f"v{i}") for i in range(b, min(n, b + 10000))))
            for _ in range(b, min(n, b + 10000)):
                r.read()

    def run():
        s.sendall(resp_cmd("MGET", *[f"k{i}" for i in range(n)]))
        reply = r.read()
        ok = isinstance(reply, list) and len(reply) == n and reply[7] == b"v7"
        return f"{summary(reply)}{'' if ok else ' (WRONG)'}"

    run.prepare = prepare
    return run


def pipeline_no_read(addr, n=1_000_000, secs=5):
    def run():
        s = socket.create_connection(addr)
        s.settimeout(0.2)
        one, sent, end = resp_cmd("GET", "good") * 1000, 0, time.monotonic() + secs
        while sent < n and time.monotonic() < end:
            try:
                s.sendall(one)
                sent += 1000
            except socket.timeout:
                pass
        s.close()
        return f"{sent} of {n} commands accepted in {secs}s without reading (then paused)"

    return run


def slow_reader(addr, secs=4):
    def run():
        s = socket.create_connection(addr, timeout=30)
        r = RespReader(s)
        s.sendall(resp_cmd("SET", "fat", b"z" * 100_000))
        r.read()
        s.sendall(resp_cmd("GET", "fat") * 5000)  # 500 MB of replies
        got, end = 0, time.monotonic() + secs
        while time.monotonic() < end:
            got += len(s.recv(64 << 10))
            time.sleep(0.05)  # ~1.3 MB/s
        s.close()
        return f"read {got >> 10} KiB of 500 MB of replies in {secs}s, then hung up"

    return run


def raw(addr, data, read=True):
    def run():
        s = socket.create_connection(addr, timeout=10)
        try:
            s.sendall(data)
            if not read:
                return "sent"
            reply = s.recv(4096)
            return reply.decode(errors="replace").strip()[:160] or "closed"
        except OSError as e:
            return f"{type(e).__name__}"
        finally:
            s.close()

    return run


def garbage_startups(addr, n=200):
    def run():
        answers = {}
        for i in range(n):
            junk = os.urandom(1 + i % 300)
            if i % 3 == 0:
                junk = struct.pack("!i", 0x7FFFFFF0) + junk  # an absurd declared length
            s = socket.create_connection(addr, timeout=5)
            try:
                s.sendall(junk)
                first = s.recv(1)
                key = {b"E": "ErrorResponse", b"N": "SSL refused", b"": "closed"}.get(first, repr(first))
            except OSError as e:
                key = type(e).__name__
            finally:
                s.close()
            answers[key] = answers.get(key, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))

    return run


def stalled_logins(addr, n=2000, hold=5):
    def run():
        socks, refused = [], 0
        for i in range(n):
            try:
                s = socket.create_connection(addr, timeout=5)
                s.sendall(struct.pack("!i", 40)[: 1 + i % 4])  # a few bytes of a startup
                socks.append(s)
            except OSError:
                refused += 1
        time.sleep(hold)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        return f"{len(socks)} held open {hold}s ({refused} refused at connect, {closed} closed by Pake)"

    return run


def pg_statement(addr, user, db, sql):
    def run():
        s = pg_connect(addr, user, db, timeout=120)
        try:
            return pg_query(s, sql)
        except (OSError, EOFError) as e:
            return f"connection lost: {e}"
        finally:
            s.close()

    return run


def cases(a):
    r, rc, pg, u, d = a.redis, a.redis_cluster, a.pg, a.pg_user, a.pg_db
    deep = "SELECT " + "(" * 20000 + "1" + ")" * 20000
    out = [
        ("redis", "MGET of 200,000 keys (standalone)", mget(r, 200_000)),
        ("redis-cluster", "MGET of 200,000 keys (3-primary cluster)", mget(rc, 200_000)),
        ("redis", "pipeline 1M GETs without reading", pipeline_no_read(r)),
        ("redis", "slow reader of 5,000 x 100 KB replies", slow_reader(r)),
        ("redis", "bulk length 2^31", raw(r, b"*1\r\n$2147483648\r\n")),
        ("redis", "RESP nesting 100,000 deep", raw(r, b"*1\r\n" * 100_000)),
        ("pg", "garbage startup packets x200", garbage_startups(pg)),
        ("pg", "2,000 stalled logins", stalled_logins(pg)),
        ("pg", "20 MB statement", pg_statement(pg, u, d, "SELECT length('" + "x" * (20 << 20) + "')")),
        ("pg", "IN list of 100,000 constants", pg_statement(pg, u, d, "SELECT 1 WHERE 1 IN (" + ",".join(str(i) for i in range(100_000)) + ")")),
        ("pg", "10,000 statements in one Query", pg_statement(pg, u, d, "SELECT 1;" * 10_000)),
        ("pg", "expression 20,000 parentheses deep", pg_statement(pg, u, d, deep)),
    ]
    return [c for c in out if a.only is None or a.only in c[1]]


def run_case(a, listener, name, fn):
    pid = a.pid_cluster if listener == "redis-cluster" else a.pid
    good = {
        "redis": lambda: good_redis(a.redis),
        "redis-cluster": lambda: good_redis(a.redis_cluster),
        "pg": lambda: good_pg(a.pg, a.pg_user, a.pg_db),
    }[listener]()
    # a control beside it, straight to the backend: a worst latency both see is the
    # machine's scheduling (two shared cores), not Pake holding the good client up
    direct = {"redis": a.redis_direct, "redis-cluster": a.redis_cluster_direct, "pg": a.pg_direct}[listener]
    control = None
    if direct is not None:
        control = good_pg(direct, a.pg_user, a.pg_db) if listener == "pg" else control_redis(direct)
    if hasattr(fn, "prepare"):
        fn.prepare()
        time.sleep(1)
    before = rss_mb(pid)
    sampler = Sampler(pid)
    sampler.start()
    good.start()
    if control:
        control.start()
    time.sleep(0.3)
    t = time.monotonic()
    try:
        answer = fn()
    except Exception as e:  # noqa: BLE001 - reported, the suite goes on
        answer = f"client error: {type(e).__name__}: {e}"[:160]
    took = time.monotonic() - t
    time.sleep(0.5)
    good.finish()
    if control:
        control.finish()
    sampler.stop = True
    sampler.join()
    time.sleep(a.settle)
    return {
        "listener": listener,
        "case": name,
        "answer": answer,
        "seconds": round(took, 2),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(sampler.peak, 1),
        "rss_settled_mb": round(rss_mb(pid), 1),
        "good_requests": good.n,
        "good_wrong": good.wrong,
        "good_worst_ms": round(good.worst * 1000, 1),
        "direct_worst_ms": round(control.worst * 1000, 1) if control else None,
        "direct_wrong": control.wrong if control else None,
    }


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--redis", type=hostport, required=True)
    p.add_argument("--redis-cluster", type=hostport, required=True)
    p.add_argument("--pg", type=hostport, required=True)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-db", default="postgres")
    p.add_argument("--pid", type=int, required=True, help="Pake in front of --pg and --redis")
    p.add_argument("--pid-cluster", type=int, required=True, help="Pake in front of the cluster")
    p.add_argument("--redis-direct", type=hostport, help="the Redis behind --redis (control client)")
    p.add_argument("--redis-cluster-direct", type=hostport, help="a node of the cluster (control client)")
    p.add_argument("--pg-direct", type=hostport, help="the Postgres behind --pg (control client)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before the settled RSS")
    p.add_argument("--only", help="run the cases whose name contains this")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--smaps", help="keep --pid's /proc smaps at idle and 10 s after, as PREFIX-idle/-after")
    a = p.parse_args()

    def keep_smaps(when):
        if a.smaps:
            with open(f"/proc/{a.pid}/smaps") as src, open(f"{a.smaps}-{when}", "w") as dst:
                dst.write(src.read())

    idle = rss_mb(a.pid)
    keep_smaps("idle")
    results = [run_case(a, *c) for c in cases(a)]
    time.sleep(10)
    keep_smaps("after")
    end = {"rss_idle_mb": round(idle, 1), "rss_10s_after_mb": round(rss_mb(a.pid), 1)}
    print(
        f"{'listener':<14}{'case':<42}{'peak +MB':>9}{'settled':>8}{'good worst ms':>14}{'wrong':>6}"
        f"{'direct worst':>13}  answer"
    )
    for r in results:
        d = "-" if r["direct_worst_ms"] is None else f"{r['direct_worst_ms']:.1f}"
        print(
            f"{r['listener']:<14}{r['case']:<42}{r['rss_peak_mb'] - r['rss_before_mb']:>+9.0f}"
            f"{r['rss_settled_mb']:>8.0f}{r['good_worst_ms']:>14.1f}{r['good_wrong']:>6}{d:>13}  {r['answer']}"
        )
    print(f"Pake (pg + redis) RSS: idle {end['rss_idle_mb']} MB, 10 s after the suite {end['rss_10s_after_mb']} MB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cases": results, **end}, f, indent=1)
    bad = [r for r in results if r["good_wrong"] or r["answer"].startswith("client error")]
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
