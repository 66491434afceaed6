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
use std::time::Instant;

/// The pause Pake knows of, and the writes it holds on connections of their own.
pub struct Pauses {
    /// When Pake started: deadlines are milliseconds since then.
    epoch: Instant,
    /// Milliseconds since `epoch` the pause ends at; 0: none known.
    until: AtomicU64,
    /// The pause holds every command (`ALL`), not only writes.
    all: AtomicBool,
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

impl Pauses {
    /// At most `max_held` writes held on connections of their own at once.
    pub fn new(max_held: usize) -> Pauses {
        Pauses {
            epoch: Instant::now(),
            until: AtomicU64::new(0),
            all: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            max_held,
        }
    }

    fn now(&self) -> u64 {
        // never 0, which means no pause
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// `CLIENT PAUSE <timeout> [WRITE|ALL]` is being sent: from now it may be in effect. As
    /// Redis does, the mode is the latest, the end the later of the two. Arguments Redis
    /// would refuse record nothing.
    pub fn paused(&self, args: &[Bytes]) {
        let Some(ms) = args
            .get(2)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let all = match args.get(3) {
            None => true,
            Some(m) if m.eq_ignore_ascii_case(b"all") => true,
            Some(m) if m.eq_ignore_ascii_case(b"write") => false,
            Some(_) => return,
        };
        if args.len() > 4 {
            return;
        }
        self.all.store(all, Ordering::Release);
        let until = self.now().saturating_add(ms);
        self.until.fetch_max(until, Ordering::AcqRel);
    }

    /// `CLIENT UNPAUSE` was answered `+OK`: no pause is in effect.
    pub fn unpaused(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// A pause is known to be in effect (one atomic load when none was seen).
    pub fn any(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until != 0 && self.now() < until
    }

    /// Writes are known to be held, reads not (`PAUSE … WRITE`).
    pub fn writes_held(&self) -> bool {
        self.any() && !self.all.load(Ordering::Acquire)
    }

    /// Every command is known to be held (`PAUSE … ALL`): the L1 answers none.
    pub fn all_held(&self) -> bool {
        self.any() && self.all.load(Ordering::Acquire)
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
    fn a_pause_seen_is_in_effect_until_unpaused_or_over() {
        let p = Pauses::new(1);
        assert!(!p.any());
        p.paused(&args(&["CLIENT", "PAUSE", "60000", "write"]));
        assert!(p.writes_held() && !p.all_held());
        p.paused(&args(&["CLIENT", "PAUSE", "10"]));
        assert!(p.all_held(), "the latest mode, the later end");
        p.unpaused();
        assert!(!p.any());
        for refused in [
            &["CLIENT", "PAUSE", "-1"][..],
            &["CLIENT", "PAUSE", "x", "WRITE"],
            &["CLIENT", "PAUSE", "100", "READ"],
            &["CLIENT", "PAUSE"],
        ] {
            p.paused(&args(refused));
            assert!(!p.any(), "{refused:?}");
        }
        p.paused(&args(&["CLIENT", "PAUSE", "0", "WRITE"]));
        assert!(!p.any(), "over at once");
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
