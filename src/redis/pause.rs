//! What Pake knows of a `CLIENT PAUSE` in effect: one sent through it, not yet ended by a
//! `CLIENT UNPAUSE` sent through it, nor by its timeout.
//!
//! Redis holds a paused client only: during `PAUSE … WRITE` the client that sent a write
//! waits, every other client's reads go on. Through Pake the clients share backend links,
//! whose replies come back in order, so a held write would hold every read queued behind
//! it on its link — the `CLIENT UNPAUSE` a client sends after such a read included, until
//! the command timeout. So while writes are known held, a command Redis may hold runs
//! alone on its client's own connection, as a blocking command does
//! ([`crate::redis::session`]'s `held`); at most [`Pauses::enter`]'s limit at once. During
//! `PAUSE … ALL`, Redis holds reads too: the L1 answers none (they go to Redis and wait).
//!
//! A pause Pake did not see (sent to Redis directly, by another Pake, a `FAILOVER`) is not
//! known: a write it holds still holds the shared link it is on. An `UNPAUSE` Pake did not
//! see leaves it believing writes held until the timeout: writes then go one at a time on
//! their clients' own connections, slower, still correct.

use crate::redis::commands::{Spec, PUBLISHES, WRITE};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The pause Pake knows of, and the writes it holds on connections of their own.
pub struct Pauses {
    /// When Pake started: deadlines are milliseconds since then.
    epoch: Instant,
    /// Milliseconds since `epoch` the pause Redis accepted ends at; 0: no pause was ever
    /// sent, 1: none accepted (only sent ones may be in effect).
    until: AtomicU64,
    /// The pause Redis accepted holds every command (`ALL`), not only writes.
    all: AtomicBool,
    /// Pauses sent and not yet answered: each may be in effect already.
    sent: AtomicUsize,
    /// Of those, the ones of every command.
    sent_all: AtomicUsize,
    held: AtomicUsize,
    max_held: usize,
}

/// One write held on a connection of its own; counted until dropped.
pub struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What `CLIENT PAUSE <timeout> [WRITE|ALL]` asks for, when its arguments are ones Redis may
/// accept: the timeout in milliseconds and whether it holds every command.
pub fn parse(args: &[Bytes]) -> Option<(u64, bool)> {
    if args.len() > 4 {
        return None;
    }
    // Redis reads a long long, digits only ("+100" is refused)
    let ms = (args.get(2))
        .filter(|t| !t.is_empty() && t.iter().all(u8::is_ascii_digit))
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<i64>().ok())?;
    let all = match args.get(3) {
        None => true,
        Some(m) if m.eq_ignore_ascii_case(b"all") => true,
        Some(m) if m.eq_ignore_ascii_case(b"write") => false,
        Some(_) => return None,
    };
    Some((ms.unsigned_abs(), all))
}

/// A `CLIENT PAUSE` sent and not yet answered, in effect as far as Pake knows until then.
/// [`Sent::answered`] records it only if Redis accepted it; dropped unanswered (the link
/// lost, the client gone), it is recorded as accepted: whether Redis ran it is unknown, and
/// a pause believed in effect only costs writes the slower path.
pub struct Sent {
    pauses: Arc<Pauses>,
    ms: u64,
    all: bool,
    open: bool,
}

impl Sent {
    /// Redis answered: `accepted`, the pause is in effect from now (as late as Redis could
    /// have started it), else it is forgotten.
    pub fn answered(mut self, accepted: bool) {
        self.close(accepted);
    }

    fn close(&mut self, accepted: bool) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        if accepted {
            self.pauses.accepted(self.ms, self.all);
        }
        self.pauses.sent.fetch_sub(1, Ordering::AcqRel);
        if self.all {
            self.pauses.sent_all.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.close(true);
    }
}

impl Pauses {
    /// At most `max_held` writes held on connections of their own at once.
    pub fn new(max_held: usize) -> Pauses {
        Pauses {
            epoch: Instant::now(),
            until: AtomicU64::new(0),
            all: AtomicBool::new(false),
            sent: AtomicUsize::new(0),
            sent_all: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            max_held,
        }
    }

    fn now(&self) -> u64 {
        // past 1, which means none accepted
        self.epoch.elapsed().as_millis() as u64 + 2
    }

    /// `CLIENT PAUSE …` (`args`) is being sent: it may be in effect from now until it is
    /// answered ([`Sent::answered`]). Arguments Redis would refuse give `None`.
    pub fn sending(self: &Arc<Self>, args: &[Bytes]) -> Option<Sent> {
        let (ms, all) = parse(args)?;
        Some(self.tentative(ms, all))
    }

    /// A pause of `ms` (`all`: of every command) is being sent, maybe among others (a
    /// transaction's): in effect from now until it is answered.
    pub fn tentative(self: &Arc<Self>, ms: u64, all: bool) -> Sent {
        self.sent.fetch_add(1, Ordering::AcqRel);
        if all {
            self.sent_all.fetch_add(1, Ordering::AcqRel);
        }
        self.until.fetch_max(1, Ordering::AcqRel);
        Sent {
            pauses: self.clone(),
            ms,
            all,
            open: true,
        }
    }

    /// Redis accepted a pause of `ms` (`all`: of every command). As Redis does, the mode is
    /// the latest, the end the later of the two.
    pub fn accepted(&self, ms: u64, all: bool) {
        self.all.store(all, Ordering::Release);
        let until = self.now().saturating_add(ms);
        self.until.fetch_max(until, Ordering::AcqRel);
    }

    /// `CLIENT UNPAUSE` was answered `+OK`: no pause is in effect (one still being sent
    /// may be).
    pub fn unpaused(&self) {
        self.until.store(1, Ordering::Release);
    }

    /// A pause is known to be in effect, or may be (one atomic load when none was ever
    /// sent).
    pub fn any(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0 && (self.now() < until || self.sent.load(Ordering::Acquire) > 0)
    }

    fn accepted_all(&self) -> bool {
        self.now() < self.until.load(Ordering::Acquire) && self.all.load(Ordering::Acquire)
    }

    /// Writes are known (or may be) held, reads not (`PAUSE … WRITE`).
    pub fn writes_held(&self) -> bool {
        self.any() && !self.all_held()
    }

    /// Every command is known (or may be) held (`PAUSE … ALL`): the L1 answers none.
    pub fn all_held(&self) -> bool {
        self.until.load(Ordering::Acquire) != 0
            && (self.accepted_all() || self.sent_all.load(Ordering::Acquire) > 0)
    }

    /// Count one more write held on a connection of its own; `Err(limit)` at the limit.
    pub fn enter(&self) -> Result<Held<'_>, usize> {
        let taken = self.held.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max_held {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return Err(self.max_held);
        }
        Ok(Held(&self.held))
    }
}

/// Whether Redis holds `spec` during `CLIENT PAUSE … WRITE`: writes, and the commands it
/// flags may-replicate (PUBLISH, SPUBLISH, PFCOUNT; scripts are writes in the table).
pub fn waits_for_writes(spec: &Spec) -> bool {
    spec.is(WRITE) || spec.is(PUBLISHES) || spec.name == "PFCOUNT"
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::test_args as args;

    #[test]
    fn a_pause_sent_is_in_effect_until_refused_unpaused_or_over() {
        let p = Arc::new(Pauses::new(1));
        assert!(!p.any());
        let sent = p.sending(&args(&["CLIENT", "PAUSE", "60000", "write"]));
        assert!(
            p.writes_held() && !p.all_held(),
            "from the moment it is sent"
        );
        sent.into_iter().for_each(|s| s.answered(false));
        assert!(!p.any(), "refused: forgotten");
        let sent = p.sending(&args(&["CLIENT", "PAUSE", "60000", "write"]));
        sent.into_iter().for_each(|s| s.answered(true));
        assert!(p.writes_held() && !p.all_held(), "accepted");
        let sent = p.sending(&args(&["CLIENT", "PAUSE", "10"]));
        assert!(p.all_held(), "one of every command being sent");
        drop(sent);
        assert!(
            p.all_held(),
            "the latest mode, the later end; unanswered: accepted"
        );
        p.unpaused();
        assert!(!p.any());
        for refused in [
            &["CLIENT", "PAUSE", "-1"][..],
            &["CLIENT", "PAUSE", "+100", "WRITE"],
            &["CLIENT", "PAUSE", "18446744073709551615", "WRITE"],
            &["CLIENT", "PAUSE", "x", "WRITE"],
            &["CLIENT", "PAUSE", "100", "READ"],
            &["CLIENT", "PAUSE", "100", "WRITE", "x"],
            &["CLIENT", "PAUSE"],
        ] {
            assert!(p.sending(&args(refused)).is_none(), "{refused:?}");
        }
        let sent = p.sending(&args(&["CLIENT", "PAUSE", "0", "WRITE"]));
        sent.into_iter().for_each(|s| s.answered(true));
        assert!(!p.any(), "over at once");
        let sent = p.tentative(60_000, false);
        p.unpaused();
        assert!(
            p.writes_held(),
            "an unpause does not end one still being sent"
        );
        sent.answered(false);
        assert!(!p.any());
    }

    #[test]
    fn held_writes_are_counted_to_the_limit() {
        let p = Pauses::new(1);
        let one = p.enter();
        assert!(one.is_ok());
        assert_eq!(p.enter().err(), Some(1));
        drop(one);
        assert!(p.enter().is_ok());
    }
}
