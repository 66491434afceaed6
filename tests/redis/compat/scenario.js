// The client-compatibility scenario for ioredis (issue 16), run direct and through Pake.
// Usage: node scenario.js URL PROTOCOL(2|3) MODE(standalone|cluster)
// Prints one JSON object: step name -> normalised result (or "error: <first word>");
// tests/redis/matrix.rs runs it against Redis and against Pake and compares.
"use strict";
const Redis = require("ioredis");

const [url, protoText, mode] = process.argv.slice(2);
const protocol = Number(protoText);
const out = {};
const connect = (extra = {}) => new Redis(url, { protocol, lazyConnect: false, maxRetriesPerRequest: 0, retryStrategy: () => null, ...extra });

function norm(v) {
  if (Buffer.isBuffer(v)) return v.toString();
  if (v instanceof Set) return [...v].map(norm).sort();
  if (v instanceof Map) return norm(Object.fromEntries(v));
  if (Array.isArray(v)) return v.map(norm);
  if (v && typeof v === "object") {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = norm(v[k]);
    return o;
  }
  return v;
}

async function step(name, fn) {
  try {
    out[name] = norm(await fn());
  } catch (e) {
    out[name] = "error: " + String(e.message).split(" ")[0];
  }
}

const field = (line, name) => (line.split(" ").find((f) => f.startsWith(name + "=")) || "").slice(name.length + 1);

async function main() {
  const r = connect();
  const other = connect();
  await step("flushdb", () => r.flushdb());
  await step("hello_proto", async () => {
    const h = await r.call("HELLO", String(protocol));
    const m = Array.isArray(h) ? Object.fromEntries(h.reduce((a, x, i) => (i % 2 ? a : [...a, [String(x), h[i + 1]]]), [])) : norm(h);
    return m.proto;
  });
  await step("setinfo", () => r.call("CLIENT", "SETINFO", "lib-name", "compat-js"));
  await step("setname", () => r.client("SETNAME", "compat-a"));
  await step("getname", () => r.client("GETNAME"));
  const me = await r.client("ID");
  const info = String(await r.client("INFO"));
  await step("client_info_is_me", () => field(info, "id") === String(me));
  await step("client_info_name", () => field(info, "name"));
  await step("client_info_lib", () => field(info, "lib-name"));
  const otherId = await other.client("ID");
  const list = async () => String(await r.client("LIST")).trim().split("\n");
  await step("client_list_has_both", async () => (await list()).filter((l) => [String(me), String(otherId)].includes(field(l, "id"))).length === 2);
  await step("client_list_name", async () => (await list()).filter((l) => field(l, "id") === String(me)).map((l) => field(l, "name")));
  await step("client_kill_id", () => r.client("KILL", "ID", String(otherId)));
  await step("client_killed_gone", async () => (await list()).some((l) => field(l, "id") === String(otherId)));
  await step("client_kill_missing", () => r.client("KILL", "ID", "987654321"));
  other.disconnect();
  if (mode === "standalone") {
    await step("select_db1", async () => {
      const s = connect({ db: 1 });
      await s.set("compat:db", "one");
      const got = [await s.get("compat:db"), await r.get("compat:db")];
      s.disconnect();
      return got;
    });
  } else {
    await step("select_db1", async () => {
      const s = connect();
      try {
        return await s.select(1);
      } finally {
        s.disconnect();
      }
    });
  }
  await step("info_server", async () => String(await r.info("server")).includes("redis_version"));
  const keys = Array.from({ length: 60 }, (_, i) => `compat:k${i}`);
  for (const k of keys) await r.set(k, "v");
  await step("scan_all", async () => {
    const seen = new Set();
    let cursor = "0";
    do {
      const [next, batch] = await r.scan(cursor, "MATCH", "compat:k*", "COUNT", 7);
      batch.forEach((k) => seen.add(String(k)));
      cursor = String(next);
    } while (cursor !== "0");
    return [...seen].sort().join(",") === [...keys].sort().join(",");
  });
  await step("dbsize", async () => (await r.dbsize()) >= 60);
  await step("sadd_smembers", async () => [await r.sadd("compat:s", "a", "b", "c"), (await r.smembers("compat:s")).map(String).sort()]);
  await step("hset_hgetall", async () => [await r.hset("compat:h", { f: "1", g: "2" }), await r.hgetall("compat:h")]);
  await step("zadd_zrange_scores", async () => [await r.zadd("compat:z", 1, "a", 2, "b"), await r.zrange("compat:z", 0, -1, "WITHSCORES")]);
  await step("watch_multi", async () => {
    await r.watch("{compat}w1", "{compat}w2");
    return r.multi().set("{compat}w1", "1").incr("{compat}w3").exec();
  });
  await step("watch_touched", async () => {
    await r.watch("{compat}t");
    const o = connect();
    await o.set("{compat}t", "x");
    o.disconnect();
    return r.multi().set("{compat}t", "mine").exec();
  });
  if (mode === "standalone") {
    await step("watch_other_slots", async () => {
      await r.watch("a", "b");
      return r.multi().set("c", "1").mset("a", "1", "d", "2").exec();
    });
  }
  await step("pubsub", async () => {
    const sub = connect();
    const got = [];
    const done = new Promise((resolve) => {
      sub.on("message", (ch, msg) => {
        got.push([ch, msg]);
        resolve();
      });
      setTimeout(resolve, 5000);
    });
    got.push(["subscribe", await sub.subscribe("compat:ch")]);
    const pub = connect();
    await pub.publish("compat:ch", "hello");
    await done;
    sub.disconnect();
    pub.disconnect();
    return got;
  });
  await step("client_tracking", () => r.client("TRACKING", "on"));
  await step("flushdb_end", async () => [await r.flushdb(), await r.dbsize()]);
  r.disconnect();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
