//! The random command source of the differential test: commands over a small keyspace,
//! biased towards reading what was just written, and how each reply is to be compared.

use pake::bench::rng::Rng;

/// How a reply is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Norm {
    /// Byte for byte.
    Exact,
    /// An array whose order Redis does not fix (set members, KEYS): compared sorted.
    Sorted,
    /// A TTL or PTTL: only "missing" (-2), "no TTL" (-1) or "has one" count.
    Ttl,
    /// Not compared beyond error or not (HELLO: server id and version).
    Shape,
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    Send(Vec<String>, Norm),
    /// Sleep on both sides (after a short PEXPIRE, well past it).
    Sleep(u64),
}

pub(super) const KEYS: &[&str] = &[
    "{a}0", "{a}1", "{a}2", "{b}0", "{b}1", "{b}2", "{c}0", "{c}1",
];
pub(super) const VALS: &[&str] = &[
    "1", "2", "10", "-3", "1.5", "abc", "", "x y", "0", "007", "a\r\nb",
];
pub(super) const MEMBERS: &[&str] = &["a", "b", "c", "1", "2"];
pub(super) const FIELDS: &[&str] = &["f", "g", "h"];
pub(super) const SCORES: &[&str] = &["1", "2", "-1", "2.5", "0", "+inf"];

/// The random command source. Deterministic in its seed alone: it never looks at replies.
pub(super) struct Gen {
    g: Rng,
    cluster: bool,
    /// Keys limited to one hash tag (inside MULTI in a cluster).
    group: Option<char>,
    last: Option<String>,
    db: u8,
    /// A second client writes keys of its own meanwhile: whole-keyspace counts differ.
    hammer: bool,
    /// EXPIRE … GT/LT commands so far.
    expiries: u64,
    /// Between MULTI and EXEC.
    in_multi: bool,
}

pub(super) fn pick<'a>(g: &mut Rng, from: &[&'a str]) -> &'a str {
    from[g.below(from.len() as u64) as usize]
}

pub(super) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

impl Gen {
    pub(super) fn new(seed: u64, cluster: bool, hammer: bool) -> Gen {
        Gen {
            g: Rng::new(seed),
            cluster,
            group: None,
            last: None,
            db: 0,
            hammer,
            expiries: 0,
            in_multi: false,
        }
    }

    /// A key, half the time the one written last.
    fn key(&mut self) -> String {
        if let Some(last) = self.last.clone() {
            if self.g.percent(50) && self.allowed(&last) {
                return last;
            }
        }
        loop {
            let k = pick(&mut self.g, KEYS);
            if self.allowed(k) {
                return k.to_string();
            }
        }
    }

    fn allowed(&self, k: &str) -> bool {
        self.group.is_none_or(|t| k.as_bytes()[1] == t as u8)
    }

    /// A key in the same slot as `k` in a cluster (any key standalone).
    fn near(&mut self, k: &str) -> String {
        loop {
            let other = pick(&mut self.g, KEYS);
            if !self.cluster || other.as_bytes()[1] == k.as_bytes()[1] {
                return other.to_string();
            }
        }
    }

    fn val(&mut self) -> &'static str {
        pick(&mut self.g, VALS)
    }

    fn wrote(&mut self, k: &str) {
        self.last = Some(k.to_string());
    }

    /// The next steps: one command, or a transaction, or a short expiry and a sleep.
    pub(super) fn next(&mut self) -> Vec<Step> {
        let mut steps = self.pick_next();
        // and often a read the L1 may answer of a key the step named, read or written: the
        // L1 has just been filled, refilled or invalidated for it
        for _ in 0..2 {
            let named: Vec<String> = match steps.last() {
                Some(Step::Send(args, _)) => args
                    .iter()
                    .filter(|a| KEYS.contains(&a.as_str()))
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            if named.is_empty() || !self.g.percent(50) {
                break;
            }
            let k = named[self.g.below(named.len() as u64) as usize].clone();
            steps.push(self.probe(&k));
        }
        // Redis takes names and options in any case; so must Pake's plans and key positions
        if self.g.percent(15) {
            for step in &mut steps {
                if let Step::Send(args, _) = step {
                    for a in args.iter_mut().filter(|a| is_token(a)) {
                        *a = if self.g.percent(50) {
                            a.to_lowercase()
                        } else {
                            a[..1].to_string() + &a[1..].to_lowercase()
                        };
                    }
                }
            }
        }
        steps
    }

    fn pick_next(&mut self) -> Vec<Step> {
        match self.g.below(100) {
            0..=3 => self.multi(),
            4 if self.g.percent(30) => {
                let k = self.key();
                self.wrote(&k);
                vec![
                    Step::Send(s(&["PEXPIRE", &k, "20"]), Norm::Exact),
                    Step::Sleep(120),
                    Step::Send(s(&["EXISTS", &k]), Norm::Exact),
                ]
            }
            5 if !self.cluster => {
                let other = if self.db == 0 { 1 } else { 0 };
                self.db = other;
                vec![Step::Send(s(&["SELECT", &other.to_string()]), Norm::Exact)]
            }
            6 if self.g.percent(10) => vec![Step::Send(s(&["FLUSHDB"]), Norm::Exact)],
            7 if !self.cluster && self.g.percent(20) => {
                vec![Step::Send(s(&["SWAPDB", "0", "1"]), Norm::Exact)]
            }
            8 if self.g.percent(30) => {
                let v = pick(&mut self.g, &["2", "3"]);
                vec![Step::Send(s(&["HELLO", v]), Norm::Shape)]
            }
            9..=11 => self.odd_write(),
            12..=13 => vec![self.edge()],
            14..=45 => vec![self.read()],
            _ => vec![self.write()],
        }
    }

    /// MULTI, a few reads and writes compared exactly, EXEC (DISCARD now and then). In a
    /// cluster its keys share a hash tag.
    fn multi(&mut self) -> Vec<Step> {
        if self.cluster {
            self.group = Some(pick(&mut self.g, &["a", "b", "c"]).as_bytes()[0] as char);
        }
        let mut steps = Vec::new();
        if self.g.percent(40) {
            let k = self.key();
            steps.push(Step::Send(s(&["WATCH", &k]), Norm::Exact));
            if self.g.percent(50) {
                // a write before MULTI, of the watched key half the time: EXEC aborts
                let w = self.write();
                if matches!(&w, Step::Send(_, Norm::Exact)) {
                    steps.push(w);
                }
            }
        }
        steps.push(Step::Send(s(&["MULTI"]), Norm::Exact));
        self.in_multi = true;
        let n = steps.len() as u64 + self.g.below(5);
        while (steps.len() as u64) <= n {
            let step = match self.g.below(20) {
                0 => self.edge(),
                1 if !self.cluster => {
                    // switched at EXEC, not when queued: Pake's idea of the database must
                    // follow
                    let other = if self.db == 0 { 1 } else { 0 };
                    self.db = other;
                    Step::Send(s(&["SELECT", &other.to_string()]), Norm::Exact)
                }
                2 if !self.cluster => {
                    let flush = if self.g.percent(50) {
                        s(&["SWAPDB", "0", "1"])
                    } else {
                        s(&["FLUSHDB"])
                    };
                    Step::Send(flush, Norm::Exact)
                }
                3..=10 => self.read(),
                _ => self.write(),
            };
            if matches!(&step, Step::Send(_, Norm::Exact)) {
                steps.push(step);
            }
        }
        let end = if self.g.percent(10) {
            "DISCARD"
        } else {
            "EXEC"
        };
        steps.push(Step::Send(s(&[end]), Norm::Exact));
        self.group = None;
        self.in_multi = false;
        steps
    }

    /// Commands Pake answers itself or refuses before Redis sees them: errors and texts
    /// must be Redis's.
    fn edge(&mut self) -> Step {
        let k = self.key();
        let args = match self.g.below(24) {
            0 => s(&["PING"]),
            1 => s(&["PING", "hi"]),
            2 => s(&["ECHO", "x y"]),
            3 => s(&["GET"]),
            4 => s(&["GET", &k, "extra"]),
            5 => s(&["NOSUCHCMD", &k]),
            // a cluster says SELECT is not allowed there: no standalone equivalent
            6 if !self.cluster => s(&["SELECT", "99"]),
            7 => s(&["SELECT", "abc"]),
            8 => s(&["HELLO", "4"]),
            // inside MULTI too: the transaction's link must carry the client's name, and a
            // name set there is the client's afterwards
            9 => s(&["CLIENT", "GETNAME"]),
            10 => s(&[
                "CLIENT",
                "SETNAME",
                pick(&mut self.g, &["diff", "", "bad name"]),
            ]),
            11 => s(&["MGET"]),
            12 => s(&["MSET", &k]),
            13 => s(&["HGET", &k]),
            14 => s(&["EXISTS"]),
            15 => s(&["SET", &k]),
            16 if !self.in_multi => {
                // back to database 0 and RESP2
                self.db = 0;
                s(&["RESET"])
            }
            17 => s(&["OBJECT", "ENCODING", &k]),
            18 => s(&["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", &k]),
            19 if !self.cluster => s(&[
                "EVAL",
                "redis.call('SELECT', ARGV[1]) return redis.call('SET', KEYS[1], ARGV[2])",
                "1",
                &k,
                if self.db == 0 { "1" } else { "0" },
                "from a script",
            ]),
            20 => s(&["BLPOP", &k, "0.01"]),
            21 => s(&["BLMOVE", &k, &self.near(&k), "RIGHT", "LEFT", "0.01"]),
            22 => s(&["SETRANGE", &k, "70000", "tail"]),
            // in a cluster's MULTI it flushes one node: no standalone equivalent
            _ if self.g.percent(20) && !(self.cluster && self.in_multi) => s(&["FLUSHALL"]),
            _ if !self.in_multi => {
                let hello = s(&["HELLO", "3", "SETNAME", "hello"]);
                return Step::Send(hello, Norm::Shape);
            }
            _ => s(&["PING"]),
        };
        Step::Send(args, Norm::Exact)
    }

    /// A read the L1 may answer.
    fn probe(&mut self, k: &str) -> Step {
        let f = pick(&mut self.g, FIELDS);
        let other = pick(&mut self.g, KEYS);
        let args = match self.g.below(9) {
            0..=1 => s(&["GET", k]),
            2 => s(&["HGET", k, f]),
            3 => s(&["HGETALL", k]),
            4 => s(&["STRLEN", k]),
            5 => s(&["GETRANGE", k, "0", "-1"]),
            6 => s(&["HMGET", k, f, "g"]),
            7 => s(&["MGET", other, k]),
            _ => s(&["EXISTS", k]),
        };
        Step::Send(args, Norm::Exact)
    }

    fn read(&mut self) -> Step {
        let k = self.key();
        let f = pick(&mut self.g, FIELDS);
        let m = pick(&mut self.g, MEMBERS);
        let e = |v: &[&str]| Step::Send(s(v), Norm::Exact);
        match self.g.below(35) {
            0..=3 => e(&["GET", &k]),
            4 => {
                let (b, c) = (self.key(), self.key());
                e(&["MGET", &k, &b, &c])
            }
            5 => e(&["STRLEN", &k]),
            6 => e(&["GETRANGE", &k, "1", "-1"]),
            7 => {
                let b = self.key();
                e(&["EXISTS", &k, &b])
            }
            8 => e(&["TYPE", &k]),
            9..=10 => e(&["HGET", &k, f]),
            11 => e(&["HGETALL", &k]),
            12 => e(&["HMGET", &k, f, "g"]),
            13 => e(&["LRANGE", &k, "0", "-1"]),
            14 => e(&["LLEN", &k]),
            15 => e(&["LINDEX", &k, pick(&mut self.g, &["0", "-1", "1"])]),
            16 => Step::Send(s(&["SMEMBERS", &k]), Norm::Sorted),
            17 => e(&["SISMEMBER", &k, m]),
            18 => e(&["SCARD", &k]),
            19 => e(&["ZRANGE", &k, "0", "-1", "WITHSCORES"]),
            20 => e(&["ZSCORE", &k, m]),
            21 => Step::Send(s(&[pick(&mut self.g, &["TTL", "PTTL"]), &k]), Norm::Ttl),
            22 => Step::Send(s(&["KEYS", "*"]), Norm::Sorted),
            // in a cluster's MULTI it counts one node's keys: no standalone equivalent
            23 if self.group.is_none() && !self.hammer => e(&["DBSIZE"]),
            24 => e(&["HLEN", &k]),
            26 => e(&["HSTRLEN", &k, f]),
            27 => e(&["HEXISTS", &k, f]),
            28 => e(&["GETRANGE", &k, "0", "2"]),
            29 => e(&["LPOS", &k, m]),
            30 => e(&["ZRANK", &k, m]),
            31 => e(&["ZCARD", &k]),
            32 => e(&["HKEYS", &k]),
            33 => {
                let b = self.key();
                e(&["TOUCH", &k, &b])
            }
            _ => {
                let b = self.near(&k);
                Step::Send(s(&["SUNION", &k, &b]), Norm::Sorted)
            }
        }
    }

    fn write(&mut self) -> Step {
        let k = self.key();
        self.wrote(&k);
        let v = self.val();
        let op = self.g.below(12);
        let args = match op {
            0..=2 => self.string_write(&k, v),
            3 => self.keyspace_write(&k),
            4 => self.ttl_write(&k),
            5..=6 => self.list_or_hash_write(&k, v),
            7..=8 => self.set_or_zset_write(&k),
            9 => self.script(&k, v),
            _ => self.multi_key_write(&k, v),
        };
        // SPOP's members come in Redis's own order
        let norm = if args[0] == "SPOP" {
            Norm::Sorted
        } else {
            Norm::Exact
        };
        Step::Send(args, norm)
    }

    /// Writes Redis refuses, or takes in a form a write-through plan may misread: repeated
    /// or clashing options, expiry times of zero, negative or in the past, repeated keys.
    fn odd_write(&mut self) -> Vec<Step> {
        let k = self.key();
        self.wrote(&k);
        let v = self.val();
        let f = pick(&mut self.g, FIELDS);
        let args = match self.g.below(18) {
            0 => s(&["SET", &k, v, "EX", "0"]),
            1 => s(&["SET", &k, v, "EX", "10", "PX", "100000"]),
            2 => s(&["SET", &k, v, "NX", "XX"]),
            3 => s(&["SET", &k, v, "KEEPTTL", "EX", "100"]),
            4 => s(&["SET", &k, v, "GET", "GET"]),
            5 => s(&["SET", &k, v, "EX", "abc"]),
            6 => s(&["SETEX", &k, "0", v]),
            7 => s(&["SETEX", &k, "-5", v]),
            8 => s(&["GETEX", &k, "EX", "0"]),
            9 => s(&["EXPIRE", &k, "-1"]),
            10 => s(&["PEXPIREAT", &k, "1"]),
            11 => s(&["SET", &k, v, "PXAT", "1"]),
            12 => s(&["GETEX", &k, "EXAT", "1"]),
            13 => s(&["HSET", &k, f, v, f, "dup"]),
            14 => s(&["HSET", &k, f]),
            15 => s(&["GETSET", &k, v, "extra"]),
            16 => s(&["SET", &k, v, "EX", "100", "EX", "100"]),
            _ => s(&["DEL", &k, &k]),
        };
        // then read it: a SET with a time in the past stores a key already expired, and
        // until something reads it DBSIZE counts it or not as Redis's expiry cycle goes
        vec![
            Step::Send(args, Norm::Exact),
            Step::Send(s(&["EXISTS", &k]), Norm::Exact),
        ]
    }

    fn string_write(&mut self, k: &str, v: &str) -> Vec<String> {
        let g = &mut self.g;
        match g.below(16) {
            0..=3 => {
                let mut a = s(&["SET", k, v]);
                if g.percent(30) {
                    a.push(pick(g, &["NX", "XX"]).into());
                }
                if g.percent(30) {
                    a.push("GET".into());
                }
                match g.below(4) {
                    0 => a.extend(s(&["EX", "1000"])),
                    1 => a.push("KEEPTTL".into()),
                    2 => a.extend(s(&["PX", "2000000"])),
                    _ => {}
                }
                a
            }
            4 => s(&["SETNX", k, v]),
            5 => s(&["SETRANGE", k, pick(g, &["0", "2"]), v]),
            6 => s(&["APPEND", k, v]),
            7 => s(&["INCR", k]),
            8 => s(&["INCRBY", k, pick(g, &["5", "-2"])]),
            9 => s(&["INCRBYFLOAT", k, pick(g, &["1.5", "-0.5", "3"])]),
            10 => s(&["DECR", k]),
            11 => s(&["GETSET", k, v]),
            12 => s(&["GETDEL", k]),
            13 => match g.below(3) {
                0 => s(&["GETEX", k, "EX", "1000"]),
                1 => s(&["GETEX", k, "PERSIST"]),
                _ => s(&["GETEX", k]),
            },
            14 => s(&["SETEX", k, "1000", v]),
            _ => s(&["PSETEX", k, "1000000", v]),
        }
    }

    fn keyspace_write(&mut self, k: &str) -> Vec<String> {
        let other = self.near(k);
        match self.g.below(8) {
            0 => s(&["DEL", k, &self.key()]),
            1 => s(&["UNLINK", k]),
            2 => s(&["RENAME", k, &other]),
            3 => s(&["RENAMENX", k, &other]),
            4 => {
                let mut a = s(&["COPY", k, &other]);
                if self.g.percent(50) {
                    a.push("REPLACE".into());
                }
                a
            }
            5 if !self.cluster && self.group.is_none() => {
                s(&["MOVE", k, if self.db == 0 { "1" } else { "0" }])
            }
            6 => {
                let mut a = s(&["MSET", k, self.val()]);
                let b = self.key();
                a.extend(s(&[&b, self.val()]));
                a
            }
            _ => s(&["MSETNX", k, self.val(), &other, self.val()]),
        }
    }

    fn ttl_write(&mut self, k: &str) -> Vec<String> {
        match self.g.below(9) {
            0 => s(&["EXPIRE", k, "1000"]),
            1 => s(&["PEXPIRE", k, "3000000"]),
            2 => s(&["PERSIST", k]),
            // a TTL no other write sets, and no other EXPIRE of the last 800: an equal
            // TTL would make GT/LT a race of milliseconds
            3 => {
                self.expiries += 1;
                let secs = (2100 + self.expiries * 7919 % 800).to_string();
                let cond = pick(&mut self.g, &["NX", "XX", "GT", "LT"]);
                s(&["EXPIRE", k, &secs, cond])
            }
            // an absolute time far ahead (2100): write-through cannot plan it
            4 => s(&["EXPIREAT", k, "4102444800"]),
            5 => s(&["SET", k, self.val(), "EXAT", "4102444800"]),
            6 => s(&["GETEX", k, "PXAT", "4102444800000"]),
            7 if !self.cluster && self.group.is_none() => s(&["COPY", k, k, "DB", "1"]),
            _ => s(&["GETEX", k, "PX", "5000000"]),
        }
    }

    fn list_or_hash_write(&mut self, k: &str, v: &str) -> Vec<String> {
        let m = pick(&mut self.g, MEMBERS);
        let f = pick(&mut self.g, FIELDS);
        match self.g.below(18) {
            0 => s(&["LPUSH", k, m, v]),
            1 => s(&["RPUSH", k, m]),
            2 => s(&["LPOP", k]),
            3 => s(&["RPOP", k, "2"]),
            4 => s(&["LSET", k, pick(&mut self.g, &["0", "-1", "5"]), v]),
            5 => s(&["LMOVE", k, &self.near(k), "LEFT", "RIGHT"]),
            6 => s(&["LREM", k, "0", m]),
            7 => s(&["LTRIM", k, "1", "-1"]),
            8 => s(&["HSET", k, f, v]),
            9 => s(&["HSET", k, f, v, pick(&mut self.g, FIELDS), "2"]),
            10 => s(&["HDEL", k, f]),
            11 => s(&["HINCRBY", k, f, "2"]),
            12 => s(&["HSETNX", k, f, v]),
            14 => s(&["HMSET", k, f, v, "g", "1"]),
            15 => s(&["LINSERT", k, "BEFORE", m, v]),
            16 => s(&["RPOPLPUSH", k, &self.near(k)]),
            _ => s(&["HINCRBYFLOAT", k, f, "0.5"]),
        }
    }

    fn set_or_zset_write(&mut self, k: &str) -> Vec<String> {
        let m = pick(&mut self.g, MEMBERS);
        let score = pick(&mut self.g, SCORES);
        let other = self.near(k);
        match self.g.below(18) {
            0..=1 => s(&["SADD", k, m, pick(&mut self.g, MEMBERS)]),
            2 => s(&["SREM", k, m]),
            3 => s(&["SMOVE", k, &other, m]),
            4 => s(&["SINTERSTORE", k, &other, &self.near(k)]),
            5 => s(&["SUNIONSTORE", k, &other, &self.near(k)]),
            6 => s(&["SPOP", k, "100"]),
            7..=8 => {
                let mut a = s(&["ZADD", k]);
                if self.g.percent(25) {
                    a.push(pick(&mut self.g, &["NX", "XX", "GT", "CH"]).into());
                }
                a.extend(s(&[score, m]));
                a
            }
            9 => s(&["ZINCRBY", k, score, m]),
            10 => s(&["ZREM", k, m]),
            11 => s(&["ZUNIONSTORE", k, "2", &other, &self.near(k)]),
            12 => s(&["SORT", &other, "ALPHA", "STORE", k]),
            13 => s(&["SDIFFSTORE", k, &other, &self.near(k)]),
            14 => s(&["ZPOPMIN", k]),
            15 => s(&["ZADD", k, "INCR", score, m]),
            16 => s(&["ZREMRANGEBYSCORE", k, "-inf", "1"]),
            _ => s(&["SORT", k, pick(&mut self.g, &["ALPHA", "DESC"])]),
        }
    }

    /// Scripts writing keys they declare, and (with a declared key for routing, in the
    /// same slot) keys they do not.
    fn script(&mut self, k: &str, v: &str) -> Vec<String> {
        let other = self.near(k);
        match self.g.below(5) {
            0 => s(&[
                "EVAL",
                "return redis.call('SET', KEYS[1], ARGV[1])",
                "1",
                k,
                v,
            ]),
            1 => s(&[
                "EVAL",
                "redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])",
                "1",
                k,
            ]),
            2 => s(&[
                "EVAL",
                "redis.call('SET', ARGV[1], ARGV[2]) return redis.call('GET', KEYS[1])",
                "1",
                k,
                &other,
                v,
            ]),
            3 => s(&["EVAL", "return redis.call('DEL', ARGV[1])", "1", k, &other]),
            _ => s(&[
                "EVAL",
                "redis.call('HSET', KEYS[1], 'f', ARGV[1]) return redis.call('HGETALL', KEYS[1])",
                "1",
                k,
                v,
            ]),
        }
    }

    fn multi_key_write(&mut self, k: &str, v: &str) -> Vec<String> {
        let b = self.key();
        s(&["MSET", k, v, &b, self.val()])
    }
}

/// A command name or option word (upper-case letters only): never a key, value or script.
pub(super) fn is_token(a: &str) -> bool {
    !a.is_empty() && a.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}
