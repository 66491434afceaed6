"""The client-compatibility scenario for redis-py (issue 16), run direct and through Pake.

Usage: scenario.py URL PROTOCOL(2|3) MODE(standalone|cluster)
Prints one JSON object: step name -> normalised result (or "error: <first word>"). The
Rust test (tests/redis/matrix.rs) runs it against Redis and against Pake and compares.
Cluster mode talks to Pake with a plain client: Pake is the cluster client.
"""
import json
import sys
import time

import redis

url, proto, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}


def norm(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, set):
        return sorted(norm(x) for x in v)
    if isinstance(v, dict):
        return {str(norm(k)): norm(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    return v


def step(name, fn):
    try:
        out[name] = norm(fn())
    except redis.exceptions.RedisError as e:
        out[name] = "error: " + str(e).split(" ")[0]


r = redis.Redis.from_url(url, protocol=proto, lib_name="compat-py")
other = redis.Redis.from_url(url, protocol=proto)
step("flushdb", lambda: r.flushdb())
def hello():
    h = norm(r.execute_command("HELLO", proto))
    return dict(zip(h[::2], h[1::2])).get("proto") if isinstance(h, list) else h.get("proto")
step("hello_proto", hello)
step("setinfo", lambda: r.client_setinfo("lib-ver", "1.2.3"))
step("setname", lambda: r.client_setname("compat-a"))
step("getname", lambda: r.client_getname())
me = r.client_id()
step("client_info_is_me", lambda: r.client_info()["id"] == me)
step("client_info_name", lambda: r.client_info()["name"])
step("client_info_lib", lambda: (r.client_info().get("lib-name"), r.client_info().get("lib-ver")))
other.ping()
other_id = other.client_id()
step("client_list_has_both", lambda: sorted(str(c["id"]) for c in r.client_list() if str(c["id"]) in (str(me), str(other_id))) == sorted([str(me), str(other_id)]))
step("client_list_name", lambda: [c["name"] for c in r.client_list() if str(c["id"]) == str(me)])
step("client_kill_id", lambda: r.client_kill_filter(_id=other_id))
step("client_killed_gone", lambda: any(str(c["id"]) == str(other_id) for c in r.client_list()))
step("client_kill_missing", lambda: r.client_kill_filter(_id=987654321))
if mode == "standalone":
    def select():
        s = redis.Redis.from_url(url, protocol=proto, db=1)
        s.set("compat:db", "one")
        return [s.get("compat:db"), r.get("compat:db")]
    step("select_db1", select)
else:
    step("select_db1", lambda: redis.Redis.from_url(url, protocol=proto).execute_command("SELECT", 1))
step("info_server", lambda: "redis_version" in r.info("server"))
step("info_keyspace_type", lambda: type(r.info("keyspace")).__name__)
keys = [f"compat:k{i}" for i in range(60)]
for k in keys:
    r.set(k, "v")
step("scan_all", lambda: sorted(r.scan_iter(match="compat:k*", count=7)) == sorted(k.encode() for k in keys))
step("dbsize", lambda: r.dbsize() >= 60)
step("sadd_smembers", lambda: (r.sadd("compat:s", "a", "b", "c"), r.smembers("compat:s")))
step("hset_hgetall", lambda: (r.hset("compat:h", mapping={"f": "1", "g": "2"}), r.hgetall("compat:h")))
step("zadd_zrange_scores", lambda: (r.zadd("compat:z", {"a": 1, "b": 2}), r.zrange("compat:z", 0, -1, withscores=True)))


def watch_multi():
    with r.pipeline() as p:
        p.watch("{compat}w1", "{compat}w2")
        p.multi()
        p.set("{compat}w1", "1")
        p.incr("{compat}w3")
        return p.execute()
step("watch_multi", watch_multi)


def watch_touched():
    with r.pipeline() as p:
        p.watch("{compat}t")
        redis.Redis.from_url(url, protocol=proto).set("{compat}t", "x")
        p.multi()
        p.set("{compat}t", "mine")
        try:
            return p.execute()
        except redis.exceptions.WatchError:
            return "WatchError"
step("watch_touched", watch_touched)
if mode == "standalone":
    def watch_other_slots():
        with r.pipeline() as p:
            p.watch("a", "b")
            p.multi()
            p.set("c", "1")
            p.mset({"a": "1", "d": "2"})
            return p.execute()
    step("watch_other_slots", watch_other_slots)


def pubsub():
    ps = r.pubsub()
    ps.subscribe("compat:ch")
    got = []
    deadline = time.time() + 5
    published = False
    while time.time() < deadline and len(got) < 2:
        m = ps.get_message(timeout=0.2)
        if m:
            got.append([m["type"], norm(m["data"])])
        if got and not published:
            other2 = redis.Redis.from_url(url, protocol=proto)
            other2.publish("compat:ch", "hello")
            published = True
    ps.close()
    return got
step("pubsub", pubsub)


def tracking():
    # the client asks for tracking (client-side caching)
    return r.execute_command("CLIENT", "TRACKING", "on")
step("client_tracking", tracking)
step("flushdb_end", lambda: (r.flushdb(), r.dbsize()))
print(json.dumps(out, sort_keys=True))
