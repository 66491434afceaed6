//! Pake's own multiplexed links for the shared path to a standalone Redis (or the current
//! primary under Sentinel), or to each primary of a cluster: one connection per reactor
//! thread, node and pool key, carrying the commands of every session on that thread. A
//! cluster link never answers a client with a redirection: the session sends such a
//! command again through fred ([`crate::redis::session`]'s shared path).
//!
//! * A session queues a command with [`Mux::submit`]: the command is encoded straight into
//!   the link's output buffer and a reply slot is put at the back of its FIFO, both under one
//!   short lock, so the order of the bytes is the order of the slots. Nothing is sent yet.
//! * The link's task writes whatever is queued in one write per wake-up, so the commands
//!   of many sessions (and a client's pipeline) go out together; it reads replies as raw RESP
//!   frames ([`resp::scan`]) and hands each to the slot at the front of the FIFO. The reply
//!   is the bytes Redis sent, in the session's protocol (the link logged in with it): it is
//!   written to the client as it is, never decoded and encoded again.
//! * The link lives on the thread of the sessions using it (a reactor's current-thread
//!   runtime), so a command and its reply cross no thread: no futex, no cross-core wake.
//!
//! Bounded: at most [`MAX_QUEUED`] bytes wait to be written (or one command alone, however
//! large the client's request budget let it be) and [`MAX_IN_FLIGHT`] replies are owed on one
//! link; past either a command is refused at once with an error, nothing is lost from what is
//! already queued. A reply is bounded by the backend [`Limits`].
//!
//! Failure: a lost connection, a reply that cannot be framed, a reply nobody asked for, or
//! no reply at all to the oldest command within the command timeout ends the connection:
//! every command still owed a reply gets [`Error::LinkLost`] (it may have been applied), and
//! the link reconnects (at once if it had served, else with a growing backoff: a server
//! that accepts and then refuses must not be hammered). Logging in (HELLO/AUTH/SELECT, then
//! a PING) is bounded by the command timeout too. While it is down, commands are refused
//! at once (as fred's `fail_fast`); while it is connecting they wait in the queue.

use super::link::{Link, Target};
use crate::redis::error::Error;
use crate::redis::resp::{self, encode, Limits};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

/// Bytes queued on one link and not yet written.
pub const MAX_QUEUED: usize = 16 << 20;
/// Replies owed on one link.
pub const MAX_IN_FLIGHT: usize = 65_536;
/// How often the link checks that its oldest command is being answered.
/// What a link reads into at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The most capacity a link's buffers keep once a wide command or reply has gone through.
const KEEP_BUFFER: usize = 64 * 1024;
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long without a command before a link no session holds may be dropped.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);
/// Nesting of a reply frame: Redis returns what a script builds (a Lua table nested 100
/// deep is 100 nested arrays), so deeper than the client-side limit; bounded still, since
/// the scanner recurses.
const MAX_REPLY_DEPTH: usize = 1024;

/// A command's reply: the frame as Redis sent it.
pub type Reply = oneshot::Receiver<Result<Bytes, Error>>;

/// One multiplexed connection. Dropping the last handle closes it.
pub struct Mux {
    shared: Arc<Shared>,
}

struct Shared {
    target: Target,
    timeout: Duration,
    state: Mutex<State>,
    /// Woken when bytes are queued (and when the last handle goes).
    wake: Notify,
    /// When the link was made, and when it last took a command (ms since then).
    born: std::time::Instant,
    last_used_ms: AtomicU64,
}

#[derive(Default)]
struct State {
    link: Phase,
    out: BytesMut,
    waiters: VecDeque<oneshot::Sender<Result<Bytes, Error>>>,
    closed: bool,
}

#[derive(Default)]
enum Phase {
    /// Commands wait in the queue until the login is done.
    #[default]
    Connecting,
    Up,
    /// The last attempt failed (why): commands are refused until the next one.
    Down(String),
    /// Redis refused the login: nothing is tried until a command comes, which then waits
    /// in the queue for that try (a user deleted and created again works at once).
    Refused,
}

impl Mux {
    /// A link to `target`, connecting in the background on the current runtime.
    pub fn spawn(target: Target, timeout: Duration) -> Arc<Mux> {
        let shared = Arc::new(Shared {
            target,
            timeout,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            born: std::time::Instant::now(),
            last_used_ms: AtomicU64::new(0),
        });
        tokio::spawn(run(shared.clone()));
        Arc::new(Mux { shared })
    }

    /// Queue `name args…`; the receiver gets its reply.
    pub fn submit(&self, name: &[u8], args: &[Bytes]) -> Result<Reply, Error> {
        self.queue(false, name, args)
    }

    /// Queue `ASKING` and then `name args…` back to back (a cluster's `-ASK` redirection:
    /// the node serves the command only right after ASKING on the same connection); the
    /// receiver gets the command's reply, ASKING's `+OK` is dropped.
    pub fn submit_asking(&self, name: &[u8], args: &[Bytes]) -> Result<Reply, Error> {
        self.queue(true, name, args)
    }

    fn queue(&self, asking: bool, name: &[u8], args: &[Bytes]) -> Result<Reply, Error> {
        let size = 32 + name.len() + args.iter().map(|a| a.len() + 16).sum::<usize>();
        let (tx, rx) = oneshot::channel();
        let was_empty = {
            let mut s = self.shared.state.lock();
            match &s.link {
                Phase::Down(why) => {
                    return Err(Error::Backend(format!(
                        "{}: not connected ({why})",
                        self.shared.target.addr
                    )));
                }
                Phase::Refused => {
                    // the link waits for demand after a refused login: try now, this
                    // command queued for the outcome
                    s.link = Phase::Connecting;
                    self.shared.wake.notify_one();
                }
                Phase::Connecting | Phase::Up => {}
            }
            // one command larger than the limit goes alone (the client's request budget
            // bounds it); behind others, it waits for them to be written
            let over = !s.out.is_empty() && s.out.len() + size > MAX_QUEUED;
            if over || s.waiters.len() + usize::from(asking) >= MAX_IN_FLIGHT {
                return Err(Error::LinkFull(format!(
                    "{}: too much queued for this Redis connection ({} bytes, {} replies owed; limits {MAX_QUEUED} and {MAX_IN_FLIGHT})",
                    self.shared.target.addr,
                    s.out.len(),
                    s.waiters.len()
                )));
            }
            let was_empty = s.out.is_empty();
            if asking {
                encode::array(&mut s.out, 1);
                encode::bulk(&mut s.out, b"ASKING");
                // nobody waits for ASKING's reply: it is read and dropped in turn
                s.waiters.push_back(oneshot::channel().0);
            }
            encode::array(&mut s.out, args.len() + 1);
            encode::bulk(&mut s.out, name);
            for a in args {
                encode::bulk(&mut s.out, a);
            }
            s.waiters.push_back(tx);
            was_empty
        };
        let now = self.shared.born.elapsed().as_millis() as u64;
        self.shared.last_used_ms.store(now, Relaxed);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(rx)
    }

    /// The node this link goes to (`host:port`).
    pub fn addr(&self) -> &str {
        &self.shared.target.addr
    }

    /// No command for [`IDLE_AFTER`] (whether or not the server is reachable).
    pub fn idle(&self) -> bool {
        let now = self.shared.born.elapsed().as_millis() as u64;
        now.saturating_sub(self.shared.last_used_ms.load(Relaxed)) >= IDLE_AFTER.as_millis() as u64
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// The reply to a submitted command, or why there is none.
pub async fn reply(rx: Reply) -> Result<Bytes, Error> {
    rx.await
        .unwrap_or_else(|_| Err(Error::LinkLost("the Redis connection closed".into())))
}

/// Connect, serve until the connection fails, fail what was owed, reconnect; until every
/// handle is gone.
async fn run(shared: Arc<Shared>) {
    let mut backoff = Duration::ZERO;
    let mut refused = false;
    loop {
        if shared.state.lock().closed {
            return;
        }
        let (why, sent) = match login(&shared).await {
            Ok(link) => {
                shared.state.lock().link = Phase::Up;
                let (why, answered) = serve(&shared, link).await;
                if answered {
                    // a link that served is worth reconnecting at once; one that closes
                    // before answering anything (maxclients, a balancer with no server
                    // behind it) backs off
                    backoff = Duration::ZERO;
                }
                (why, true)
            }
            Err(e) => {
                refused = matches!(e, Error::Refused(_));
                (e.to_string(), false)
            }
        };
        shared.fail_all(&why, sent);
        if shared.state.lock().closed {
            return;
        }
        tracing::debug!(addr = %shared.target.addr, error = %why, "Redis link down; reconnecting");
        if std::mem::take(&mut refused) {
            // Redis refused the login (a user deleted, a password changed): trying again on
            // a timer would hammer it with failed AUTHs for as long as the link lives,
            // clients or not; the next command asks for the next try and waits for it. No
            // backoff first: a command in that pause would fail at once, though the user
            // may exist again by then (one try per command that asks, no timer)
            {
                let mut s = shared.state.lock();
                if matches!(s.link, Phase::Down(_)) {
                    s.link = Phase::Refused;
                }
            }
            shared.wake.notified().await;
            if shared.state.lock().closed {
                return;
            }
        } else {
            if backoff.is_zero() {
                // a link that served reconnects at once: commands from here on wait for
                // that login instead of failing in the moment before it starts
                let mut s = shared.state.lock();
                if matches!(s.link, Phase::Down(_)) {
                    s.link = Phase::Connecting;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
        }
        shared.state.lock().link = Phase::Connecting;
    }
}

/// Connect and log in (HELLO/AUTH/SELECT as the key asks), then PING: a server that
/// accepts and refuses (`-ERR max number of clients reached`, `-DENIED`) fails here, not
/// in the first session's reply. The whole of it within the command timeout.
async fn login(shared: &Shared) -> Result<Link, Error> {
    let limit = shared.timeout.max(shared.target.connect_timeout);
    let attempt = async {
        let mut link = Link::connect(&shared.target).await?;
        // Redis answering at all is what PING checks: a user whose ACL leaves out `ping`
        // (`+get +set ~app:*`) is answered NOPERM, and is logged in all the same
        let reply = link.call(&[b"PING"]).await?;
        match super::link::error_text(&reply) {
            Some(msg) if !msg.starts_with("NOPERM") => {
                Err(Error::Backend(format!("{}: {msg}", shared.target.addr)))
            }
            _ => Ok(link),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Backend(format!(
                "{}: no login within {limit:?}",
                shared.target.addr
            )))
        })
}

impl Shared {
    /// Every command owed a reply (or still queued) fails with `why`; new ones are refused.
    /// `sent`: the connection had been up, so a command may have been applied (the client
    /// is told so, and closed); otherwise nothing was sent (the login failed) and the
    /// client goes on.
    fn fail_all(&self, why: &str, sent: bool) {
        let waiters = {
            let mut s = self.state.lock();
            s.link = Phase::Down(why.to_string());
            s.out.clear();
            std::mem::take(&mut s.waiters)
        };
        let addr = &self.target.addr;
        for w in waiters {
            let _ = w.send(Err(match sent {
                true => {
                    Error::LinkLost(format!("{addr}: {why} (the command may have been applied)"))
                }
                false => Error::Backend(format!("{addr}: {why} (not sent)")),
            }));
        }
    }
}

/// Write, read and watch one connection; why it ended, and whether it answered anything.
async fn serve(shared: &Shared, link: Link) -> (String, bool) {
    let replies = AtomicU64::new(0);
    let (stream, rbuf, addr) = link.into_parts();
    let tls = stream.is_tls();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let write = async {
        loop {
            let out = {
                let mut s = shared.state.lock();
                // what is queued is written even when the last handle has gone
                if s.closed && s.out.is_empty() {
                    return "closed".to_string();
                }
                // a wide command grew the buffer: give the allocation back once written
                crate::limits::shrink_idle(&mut s.out, KEEP_BUFFER, 0);
                s.out.split()
            };
            if out.is_empty() {
                shared.wake.notified().await;
                continue;
            }
            if let Err(e) = wr.write_all(&out).await {
                return format!("write failed: {e}");
            }
            if tls {
                if let Err(e) = wr.flush().await {
                    return format!("write failed: {e}");
                }
            }
        }
    };
    let read = async {
        let mut rbuf = rbuf;
        // resumes a wide reply's scan where the last read stopped (see `resp::Scanner`)
        let mut scanner = resp::Scanner::default();
        let limits = Limits {
            max_depth: MAX_REPLY_DEPTH,
            ..Limits::backend()
        };
        loop {
            // a wide reply grew the buffer: give the allocation back once it is handled
            crate::limits::shrink_idle(&mut rbuf, KEEP_BUFFER, READ_CHUNK);
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(READ_CHUNK);
            }
            match rd.read_buf(&mut rbuf).await {
                Ok(0) => return format!("{addr} closed the connection"),
                Ok(_) => {}
                Err(e) => return format!("read failed: {e}"),
            }
            loop {
                let len = match scanner.scan(&rbuf, &limits) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return format!("bad reply: {e}"),
                };
                let frame = rbuf.split_to(len).freeze();
                if frame.first() == Some(&b'>') {
                    // a push nobody asked for (this link tracks nothing): not a reply
                    continue;
                }
                let Some(waiter) = shared.state.lock().waiters.pop_front() else {
                    return "a reply nobody asked for".to_string();
                };
                replies.fetch_add(1, Relaxed);
                let _ = waiter.send(Ok(frame));
            }
        }
    };
    let watch = async {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen_replies = 0;
        let mut stalled = Duration::ZERO;
        loop {
            tick.tick().await;
            let owed = !shared.state.lock().waiters.is_empty();
            let answered = replies.load(Relaxed);
            stalled = match owed && answered == seen_replies {
                true => stalled + WATCH_EVERY,
                false => Duration::ZERO,
            };
            seen_replies = answered;
            // a zero command timeout means none, as for fred
            if !shared.timeout.is_zero() && stalled > shared.timeout {
                return format!("no reply within {:?}", shared.timeout);
            }
        }
    };
    let why = tokio::select! {
        why = write => why,
        why = read => why,
        why = watch => why,
    };
    (why, replies.load(Relaxed) > 0)
}
