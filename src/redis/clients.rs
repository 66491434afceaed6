//! Pake's own client connections, as `CLIENT LIST`/`INFO`/`KILL` and `MONITOR` see them.
//!
//! A proxy owns the client connections: Redis only sees Pake's pooled ones, so asking Redis
//! about "my connection" answers for the wrong one. Every session registers here (id,
//! addresses, name, library, db, protocol) and the CLIENT commands are answered from this
//! registry in Redis's own formats. `CLIENT KILL` marks an entry killed and wakes the task
//! that serves it, which drops the session (and with it the socket and any dedicated link).
//!
//! `MONITOR` is Pake-level: every command a client sends through Pake is fed, as Redis's
//! line (`+1700000000.123456 [0 127.0.0.1:5555] "SET" "k" "v"`), to each monitor's queue.
//! A queue is bounded in bytes: a monitor that falls `monitor_budget` bytes behind is
//! dropped with a clear error, so a slow reader never holds up the clients being watched.
//! The feed costs one atomic load per command while nobody monitors.

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

/// What `CLIENT LIST` shows about one client that the session changes as it goes.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub db: u8,
    /// 2 or 3.
    pub resp: u8,
    pub user: Option<String>,
    /// `N` normal, `P` subscribed, `O` monitor.
    pub flag: char,
    /// While a blocking command runs: the node and Redis's id of the dedicated link it
    /// waits on (`CLIENT UNBLOCK` of this client unblocks that).
    pub blocked_on: Option<(String, u64)>,
}

/// One client connection of Pake's.
pub struct Entry {
    pub id: u64,
    pub addr: Option<SocketAddr>,
    pub laddr: Option<SocketAddr>,
    created: Instant,
    info: Mutex<Info>,
    killed: AtomicBool,
    kill: Notify,
    /// The table id of the last command + 1 (0: none yet), for CLIENT LIST's `cmd=`.
    last_cmd: AtomicUsize,
    /// `CLIENT TRACKING` invalidations queued for this connection.
    pub inbox: super::client_tracking::Inbox,
    /// The connection has closed (a `REDIRECT` to it is broken).
    gone: AtomicBool,
}

impl Entry {
    /// Note the command this client sent last (one relaxed store per command).
    pub fn set_command(&self, id: usize) {
        self.last_cmd.store(id + 1, Ordering::Relaxed);
    }

    /// The last command this client sent, from the table.
    pub fn last_spec(&self) -> Option<&'static crate::redis::commands::Spec> {
        let id = self.last_cmd.load(Ordering::Relaxed);
        id.checked_sub(1)
            .and_then(|i| crate::redis::commands::Table::get().by_id(i))
    }

    /// The last command's name as CLIENT LIST shows it (`NULL` before the first).
    pub fn command(&self) -> String {
        self.last_spec()
            .map_or_else(|| "NULL".into(), |s| s.name.to_ascii_lowercase())
    }

    pub fn info(&self) -> Info {
        self.info.lock().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Info)) {
        f(&mut self.info.lock());
    }

    /// Resolves once `CLIENT KILL` chose this client.
    pub async fn killed(&self) {
        loop {
            let woken = self.kill.notified();
            if self.killed.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// Wake the task serving this client: its session polls again (and sees an inbox
    /// armed since it last looked).
    pub fn poke(&self) {
        self.kill.notify_waiters();
    }

    /// The connection has closed.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// `true` the first time: a client already on its way out is not killed twice.
    fn kill(&self) -> bool {
        let first = !self.killed.swap(true, Ordering::AcqRel);
        self.kill.notify_waiters();
        first
    }

    /// `addr` as CLIENT LIST prints it (`ip:port`).
    fn addr_text(a: Option<SocketAddr>) -> String {
        a.map(|a| a.to_string()).unwrap_or_default()
    }

    /// This client's `CLIENT LIST` line (without the newline), in Redis 7's field order.
    pub fn line(&self, cmd: &str) -> String {
        let i = self.info();
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags={} db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            Self::addr_text(self.addr),
            Self::addr_text(self.laddr),
            text(&i.name),
            self.created.elapsed().as_secs(),
            // `b`: blocked in a command (Redis's own suite reads it to wait for a BLPOP)
            match (i.flag, &i.blocked_on) {
                ('N' | '\0', Some(_)) => 'b',
                ('\0', None) => 'N',
                (f, _) => f,
            },
            i.db,
            cmd,
            i.user.as_deref().unwrap_or("default"),
            i.resp.max(2),
            text(&i.lib_name),
            text(&i.lib_ver),
        )
    }
}

/// Removes its entry from the registry when the session ends.
pub struct Registration {
    pub entry: Arc<Entry>,
    registry: Arc<Registry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.entry.gone.store(true, Ordering::Release);
        self.registry.entries.lock().remove(&self.entry.id);
    }
}

/// Which clients a `CLIENT KILL` filter chooses.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    pub user: Option<String>,
    /// `normal`, `pubsub` (`master`/`replica` never match: Pake has none).
    pub kind: Option<String>,
    pub max_age: Option<u64>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let info = e.info();
        self.id.is_none_or(|id| id == e.id)
            && self
                .addr
                .as_ref()
                .is_none_or(|a| *a == Entry::addr_text(e.addr))
            && self
                .laddr
                .as_ref()
                .is_none_or(|a| *a == Entry::addr_text(e.laddr))
            && self
                .user
                .as_ref()
                .is_none_or(|u| *u == info.user.as_deref().unwrap_or("default"))
            && self.kind.as_ref().is_none_or(|k| match k.as_str() {
                "normal" => info.flag != 'P',
                "pubsub" => info.flag == 'P',
                _ => false,
            })
            && self
                .max_age
                .is_none_or(|m| e.created.elapsed().as_secs() >= m)
    }
}

/// One MONITOR client's queue.
struct Monitor {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// The receiving end of a MONITOR: lines to write, and the bytes still owed.
pub struct MonitorFeed {
    pub rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl MonitorFeed {
    /// `n` bytes of lines have been written to the monitor.
    pub fn written(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// The feed ended because this monitor fell too far behind.
    pub fn was_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }
}

/// Every client connection of the Redis side, and the monitors watching them.
pub struct Registry {
    entries: Mutex<BTreeMap<u64, Arc<Entry>>>,
    monitors: Mutex<Vec<Monitor>>,
    monitoring: AtomicUsize,
    /// Bytes a monitor may fall behind before it is dropped.
    pub monitor_budget: usize,
}

impl Registry {
    pub fn new(monitor_budget: usize) -> Arc<Registry> {
        Arc::new(Registry {
            entries: Mutex::new(BTreeMap::new()),
            monitors: Mutex::new(Vec::new()),
            monitoring: AtomicUsize::new(0),
            monitor_budget,
        })
    }

    pub fn register(
        self: &Arc<Self>,
        id: u64,
        addr: Option<SocketAddr>,
        laddr: Option<SocketAddr>,
    ) -> Registration {
        let entry = Arc::new(Entry {
            id,
            addr,
            laddr,
            created: Instant::now(),
            info: Mutex::new(Info {
                resp: 2,
                flag: 'N',
                ..Info::default()
            }),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            last_cmd: AtomicUsize::new(0),
            inbox: Default::default(),
            gone: AtomicBool::new(false),
        });
        self.entries.lock().insert(id, entry.clone());
        Registration {
            entry,
            registry: self.clone(),
        }
    }

    /// A live client's entry.
    pub fn get(&self, id: u64) -> Option<Arc<Entry>> {
        let entries = self.entries.lock();
        entries.get(&id).filter(|e| !e.is_killed()).cloned()
    }

    /// Every live client's entry, by id (a killed client is gone, as in Redis, though its
    /// task may still be closing the connection).
    pub fn list(&self) -> Vec<Arc<Entry>> {
        let entries = self.entries.lock();
        entries
            .values()
            .filter(|e| !e.is_killed())
            .cloned()
            .collect()
    }

    /// Kill the clients `filter` matches, except `skip`; how many.
    pub fn kill(&self, filter: &Filter, skip: Option<u64>) -> usize {
        let chosen: Vec<Arc<Entry>> = self
            .list()
            .into_iter()
            .filter(|e| Some(e.id) != skip && filter.matches(e))
            .collect();
        chosen.iter().filter(|e| e.kill()).count()
    }

    /// Whether any MONITOR is listening (one atomic load: the check on every command).
    pub fn monitoring(&self) -> bool {
        self.monitoring.load(Ordering::Relaxed) > 0
    }

    /// Start a MONITOR for client `id`.
    pub fn monitor(&self, id: u64) -> MonitorFeed {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let mut monitors = self.monitors.lock();
        monitors.retain(|m| m.id != id);
        monitors.push(Monitor {
            id,
            tx,
            queued: queued.clone(),
            dropped: dropped.clone(),
        });
        self.monitoring.store(monitors.len(), Ordering::Relaxed);
        MonitorFeed {
            rx,
            queued,
            dropped,
        }
    }

    /// Stop client `id`'s MONITOR (it hung up).
    pub fn unmonitor(&self, id: u64) {
        let mut monitors = self.monitors.lock();
        monitors.retain(|m| m.id != id);
        self.monitoring.store(monitors.len(), Ordering::Relaxed);
    }

    /// Feed one command to every monitor but the sender's own; a monitor past its budget
    /// is dropped (its feed ends with `was_dropped`).
    pub fn feed(&self, from: &Entry, db: u8, args: &[Bytes]) {
        let line = monitor_line(SystemTime::now(), db, from.addr, args);
        let budget = self.monitor_budget;
        let mut monitors = self.monitors.lock();
        monitors.retain(|m| {
            if m.id == from.id {
                return true;
            }
            let before = m.queued.fetch_add(line.len(), Ordering::AcqRel);
            if before + line.len() > budget {
                m.dropped.store(true, Ordering::Release);
                return false;
            }
            m.tx.send(line.clone()).is_ok()
        });
        self.monitoring.store(monitors.len(), Ordering::Relaxed);
    }
}

/// Commands whose arguments MONITOR must not show (credentials).
fn redacted(args: &[Bytes]) -> bool {
    args.first().is_some_and(|n| {
        n.eq_ignore_ascii_case(b"AUTH")
            || (n.eq_ignore_ascii_case(b"HELLO")
                && args.iter().any(|a| a.eq_ignore_ascii_case(b"AUTH")))
    })
}

/// Redis's MONITOR line for a command: `+<secs>.<micros> [<db> <addr>] "arg" "arg"…\r\n`,
/// each argument quoted as Redis's `sdscatrepr` does.
pub fn monitor_line(now: SystemTime, db: u8, addr: Option<SocketAddr>, args: &[Bytes]) -> Bytes {
    let t = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = BytesMut::with_capacity(64 + args.iter().map(|a| a.len() + 3).sum::<usize>());
    let addr = addr.map(|a| a.to_string()).unwrap_or_default();
    out.put_slice(
        format!(
            "+{}.{:06} [{} {}]",
            t.as_secs(),
            t.subsec_micros(),
            db,
            addr
        )
        .as_bytes(),
    );
    let hide = redacted(args);
    for (i, a) in args.iter().enumerate() {
        out.put_u8(b' ');
        if hide && i > 0 {
            out.put_slice(b"\"(redacted)\"");
        } else {
            quote(&mut out, a);
        }
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// `"…"` with `\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b` escaped and other non-printable
/// bytes as `\xhh`.
fn quote(out: &mut BytesMut, a: &[u8]) {
    out.put_u8(b'"');
    for &b in a {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'"' => out.put_slice(b"\\\""),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            7 => out.put_slice(b"\\a"),
            8 => out.put_slice(b"\\b"),
            0x20..=0x7e => out.put_u8(b),
            _ => out.put_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn monitor_line_is_redis_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let addr = Some("127.0.0.1:5555".parse().expect("addr"));
        let line = monitor_line(t, 0, addr, &args(&["SET", "k", "a\"b\\\n\x01"]));
        assert_eq!(
            &line[..],
            b"+1700000000.123456 [0 127.0.0.1:5555] \"SET\" \"k\" \"a\\\"b\\\\\\n\\x01\"\r\n"
        );
        let auth = monitor_line(t, 2, addr, &args(&["AUTH", "user", "secret"]));
        assert!(!auth.windows(6).any(|w| w == b"secret"), "{auth:?}");
    }

    #[tokio::test]
    async fn slow_monitor_is_dropped_others_keep_going() {
        let reg = Registry::new(200);
        let a = reg.register(1, None, None);
        let _m = reg.register(2, None, None);
        let mut slow = reg.monitor(2);
        let mut fast = reg.monitor(3);
        for _ in 0..10 {
            reg.feed(&a.entry, 0, &args(&["GET", "key"]));
            // the fast monitor keeps up: it writes what it receives
            let line = fast.rx.recv().await.expect("line");
            fast.written(line.len());
        }
        assert!(slow.was_dropped(), "the slow monitor went past 200 bytes");
        let mut got = 0;
        while slow.rx.recv().await.is_some() {
            got += 1;
        }
        assert!(got > 0 && got < 10, "{got}");
        assert!(!fast.was_dropped());
        assert!(reg.monitoring(), "the fast monitor is still there");
    }

    #[tokio::test]
    async fn kill_by_filter() {
        let reg = Registry::new(1024);
        let a = reg.register(1, Some("127.0.0.1:1000".parse().expect("a")), None);
        let b = reg.register(2, Some("127.0.0.1:2000".parse().expect("a")), None);
        let by_addr = Filter {
            addr: Some("127.0.0.1:2000".into()),
            ..Filter::default()
        };
        assert_eq!(reg.kill(&by_addr, None), 1);
        b.entry.killed().await;
        assert!(!a.entry.is_killed());
        // b is on its way out (its task has not dropped it yet): not listed, not killed again
        assert_eq!(reg.list().len(), 1);
        assert_eq!(reg.kill(&by_addr, None), 0);
        let c = reg.register(3, Some("127.0.0.1:3000".parse().expect("c")), None);
        assert_eq!(reg.kill(&Filter::default(), Some(1)), 1, "skipme: c only");
        assert!(c.entry.is_killed() && !a.entry.is_killed());
        drop(b);
        drop(c);
        assert_eq!(reg.list().len(), 1);
    }
}
