//! The writes a session has in flight, and which keys each may change.
//!
//! A read of a key none of them may change is answered from the L1 while they run: it is
//! concurrent with them (sent before their replies), and none of this session's commands
//! ordered before it touches its key, so Redis would answer it as the L1 does. A read of a
//! key one of them names, or behind a write whose reach the command table does not fix,
//! goes to Redis behind it (a pipelined `SET k v; GET k` reads `v`).
//!
//! Writes finish in the order they were sent (the session's replies are collected in
//! order), so the first one in flight is the one that finishes. At most one entry per
//! command the session has in flight, which the session's request and reply limits bound.

use crate::redis::commands::Spec;
use crate::redis::Service;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::VecDeque;

/// What one write may change.
#[derive(Debug)]
pub enum Reach {
    /// Only these keys (in any database: a key name alone decides).
    Keys(Vec<Bytes>),
    /// Anything: a flush, a script, a STORE option the table does not list as a key.
    Anything,
}

impl Reach {
    /// The reach of `spec` run on these keys (its key positions' arguments).
    pub fn of(spec: &Spec, keys: &[&Bytes]) -> Reach {
        match spec.changes_only_its_keys() && !keys.is_empty() {
            true => Reach::Keys(keys.iter().map(|k| (*k).clone()).collect()),
            false => Reach::Anything,
        }
    }

    fn may_change(&self, key: &[u8]) -> bool {
        match self {
            Reach::Keys(keys) => keys.iter().any(|k| k[..] == *key),
            Reach::Anything => true,
        }
    }
}

/// The session's writes in flight, oldest first.
#[derive(Debug, Default)]
pub struct InFlight {
    writes: VecDeque<Reach>,
}

impl InFlight {
    pub fn started(&mut self, reach: Reach) {
        self.writes.push_back(reach);
    }

    /// The oldest write in flight was answered.
    pub fn finished(&mut self) {
        self.writes.pop_front();
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Whether a write in flight may change `key`.
    fn may_change(&self, key: &[u8]) -> bool {
        self.writes.iter().any(|w| w.may_change(key))
    }

    /// Whether a write in flight may change any of `keys`: a read of them must not be
    /// answered from the L1 now.
    pub fn fences(&self, keys: &[&Bytes]) -> bool {
        keys.iter().any(|k| self.may_change(k))
    }
}

/// What the reply of a write that may change keys it does not name (`unlisted`: a script,
/// a STORE destination, a transaction holding one) waits for: the tracking stream of its
/// node (`slot`; every node: `None`) heard past it, so no read after the reply finds in the
/// L1 what it changed ([`crate::redis::tracking::Tracking::heard`]). `None`: nothing to
/// wait for.
pub(super) fn heard_after(
    svc: &Service,
    unlisted: bool,
    slot: Option<u16>,
) -> Option<BoxFuture<'static, ()>> {
    if !unlisted || svc.l1.is_none() {
        return None;
    }
    let heard = svc.tracking.as_ref()?.heard(slot);
    Some(Box::pin(heard))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::test_args as args;

    fn reach(words: &[&str]) -> Reach {
        let args = args(words);
        let spec = crate::redis::commands::Table::get()
            .lookup(&args[0])
            .expect("a command of the table");
        let keys = crate::redis::session::dispatch::keys_of(spec, &args);
        Reach::of(spec, &keys)
    }

    #[test]
    fn a_write_fences_its_own_keys_and_an_unlisted_reach_fences_all() {
        let mut w = InFlight::default();
        assert!(!w.may_change(b"a"));
        w.started(reach(&["SET", "a", "1"]));
        w.started(reach(&["MSET", "b", "1", "c", "2"]));
        w.started(reach(&["RENAME", "d", "e"]));
        for key in ["a", "b", "c", "d", "e"] {
            assert!(w.may_change(key.as_bytes()), "{key}");
        }
        assert!(!w.may_change(b"f"), "a key no write in flight names");
        w.finished();
        assert!(!w.may_change(b"a"), "the SET was answered");
        assert!(w.may_change(b"b"));
        for unlisted in [
            &["SORT", "src", "STORE", "dst"][..],
            &["EVAL", "return 1", "0"],
            &["FLUSHDB"],
            &["COPY", "a", "b", "DB", "1"],
            &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "dst"],
        ] {
            let mut w = InFlight::default();
            w.started(reach(unlisted));
            assert!(w.may_change(b"anything"), "{unlisted:?}");
        }
    }
}
