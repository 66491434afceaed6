//! The session settings a client's statements change (transaction mode), followed as
//! PostgreSQL applies them: a `SET` counts once its statement has run without error, and
//! for good once its transaction commits; a rollback (whole, to a savepoint, or of the
//! implicit transaction an error ends) undoes it.
//!
//! What a statement changes is known when it is sent (a Query), or bound (a prepared one,
//! with its values), but it only happens when it runs: each statement's changes and
//! savepoint operations wait, numbered as the server's reply queue numbers client
//! statements ([`crate::pg::server::replies::Replies::statements`]), until the server
//! answers that statement. A client that pipelines several groups (Sync or Query) before
//! reading has each group's changes settled by its own answers and its own ReadyForQuery.

use super::pending::Settled;
use super::sql::settings::Change;
use super::sql::Savepoint;
use super::wire::be;
use std::collections::VecDeque;
use std::sync::Arc;

/// Portals bound with setting changes and not yet executed that one client keeps; past
/// it the oldest is forgotten and the transaction's settings are in doubt.
const MAX_PORTALS: usize = 16;

/// Setting changes, and savepoints, one open transaction records; past it the
/// transaction's settings are in doubt (the server is reset after it, as for anything not
/// followed), so a client looping over `SET` or `SAVEPOINT` inside one transaction costs
/// bounded memory.
const MAX_RECORDED: usize = 1024;

/// What one statement does to the settings when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Change(Change),
    Savepoint(Savepoint),
}

/// One client's setting changes on their way: sent, bound, run, committed.
#[derive(Debug, Default)]
pub struct PendingSettings {
    /// The ops of the message being forwarded, until it is known what runs them.
    staged: Vec<Op>,
    /// The ops of the client's unnamed statement: each Bind of it binds them.
    unnamed: Vec<Op>,
    /// The ops of portals bound and not executed yet: (portal name, ops).
    portals: Vec<(Box<[u8]>, Vec<Op>)>,
    /// The ops of client statements sent and not answered yet, by statement number.
    waiting: VecDeque<(u64, Vec<Op>)>,
    /// Changes that ran in the open transaction (or the implicit one).
    items: Vec<Change>,
    /// The open transaction's savepoints: name, changes before it.
    marks: Vec<(Arc<str>, usize)>,
    /// The transaction failed: an error no `ROLLBACK TO` has ended yet.
    error: bool,
    /// Something was not followed: the changes may be other than recorded.
    lost: bool,
    /// A transaction ended (COMMIT, ROLLBACK) inside the statement running: a
    /// multi-statement Query's changes before it are not those after it.
    ended: bool,
}

impl PendingSettings {
    /// The message being forwarded changes these settings when it runs.
    pub fn stage(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.staged.extend(changes.into_iter().map(Op::Change));
    }

    /// The message being forwarded is this savepoint statement.
    pub fn stage_savepoint(&mut self, op: &Savepoint) {
        self.staged.push(Op::Savepoint(op.clone()));
    }

    /// A new client message is being analysed: what an earlier one staged and did not
    /// send is dropped.
    pub fn unstage(&mut self) {
        self.staged.clear();
    }

    /// A Query was sent, numbered `seq` among the server's client statements (`None`: the
    /// server skips it). It replaces the unnamed statement and portal.
    pub fn query_sent(&mut self, seq: Option<u64>) {
        self.unnamed.clear();
        self.portals.retain(|(p, _)| !p.is_empty());
        self.statement_sent(seq);
    }

    /// An Execute of `portal` was sent (`seq` as for [`Self::query_sent`]).
    pub fn execute_sent(&mut self, portal: &[u8], seq: Option<u64>) {
        self.staged.clear();
        if let Some(i) = self.portals.iter().position(|(p, _)| **p == *portal) {
            self.staged = self.portals.remove(i).1;
        }
        self.statement_sent(seq);
    }

    fn statement_sent(&mut self, seq: Option<u64>) {
        let ops = std::mem::take(&mut self.staged);
        if let (Some(seq), false) = (seq, ops.is_empty()) {
            self.waiting.push_back((seq, ops));
        }
    }

    /// A server was attached for the client's next transaction: nothing of the client's is
    /// in flight (statements still waiting were another server's, never answered), and no
    /// portal outlived its transaction.
    pub fn attached(&mut self) {
        self.portals.clear();
        if !self.waiting.is_empty() {
            self.waiting.clear();
            self.lost = true;
        }
    }

    /// The client's unnamed statement was parsed (and not skipped): the staged ops are its.
    pub fn unnamed_parsed(&mut self) {
        self.unnamed = std::mem::take(&mut self.staged);
    }

    /// A Bind of the unnamed statement (`unnamed`) or a named one to `portal`: the portal
    /// runs the statement's ops (and the staged ones, from its values) when executed.
    pub fn bound(&mut self, portal: &[u8], unnamed: bool) {
        let mut ops = std::mem::take(&mut self.staged);
        if unnamed && !self.unnamed.is_empty() {
            ops = self.unnamed.iter().cloned().chain(ops).collect();
        }
        self.portals.retain(|(p, _)| **p != *portal);
        if ops.is_empty() {
            return;
        }
        if self.portals.len() >= MAX_PORTALS {
            self.portals.remove(0);
            self.lost = true;
        }
        self.portals.push((portal.into(), ops));
    }

    /// Whether an Execute's portal must be looked up ([`Self::execute_sent`]).
    pub fn has_portals(&self) -> bool {
        !self.portals.is_empty()
    }

    /// Whether replies must be followed ([`Self::on_message`], [`Self::answered`]).
    pub fn following(&self) -> bool {
        !(self.waiting.is_empty() && self.items.is_empty() && self.marks.is_empty())
    }

    /// A server message reached the client. A COMMIT that completes commits what ran
    /// before it: returned, to be recorded now.
    pub fn on_message(&mut self, tag: u8, body: &[u8]) -> Option<Vec<Change>> {
        match tag {
            be::ERROR_RESPONSE => self.error = true,
            be::COMMAND_COMPLETE if body.starts_with(b"COMMIT\0") => {
                self.ended = true;
                self.marks.clear();
                return Some(std::mem::take(&mut self.items)).filter(|c| !c.is_empty());
            }
            be::COMMAND_COMPLETE if body.starts_with(b"ROLLBACK\0") => self.ended = true,
            _ => {}
        }
        None
    }

    /// The client statement numbered `seq` was answered: it ran (`ok`) or failed or was
    /// skipped. `ready`: the status of the ReadyForQuery that answered it (a Query).
    pub fn answered(&mut self, seq: u64, ok: bool, ready: Option<u8>) {
        let ended = std::mem::take(&mut self.ended);
        while self.waiting.front().is_some_and(|(s, _)| *s < seq) {
            self.waiting.pop_front(); // not expected: every statement is answered in order
            self.lost = true;
        }
        if self.waiting.front().is_none_or(|(s, _)| *s != seq) {
            return;
        }
        let Some((_, ops)) = self.waiting.pop_front() else {
            return;
        };
        // a ROLLBACK its own savepoint op follows (`ROLLBACK TO`, a whole `ROLLBACK`)
        let followed = ops.iter().any(|op| {
            matches!(
                op,
                Op::Savepoint(Savepoint::RollbackTo(_) | Savepoint::Rollback)
            )
        });
        if ended && !followed && (!ok || ready != Some(b'I')) {
            // a Query that committed or rolled back part-way: which of its changes
            // outlived that end is not followed
            self.lost = true;
        }
        if ok {
            ops.into_iter().for_each(|op| self.ran(op));
        }
    }

    /// One op of a statement that ran.
    fn ran(&mut self, op: Op) {
        let find =
            |marks: &[(Arc<str>, usize)], name: &str| marks.iter().rposition(|(n, _)| &**n == name);
        match op {
            Op::Change(_) | Op::Savepoint(Savepoint::Set(_))
                if self.items.len() + self.marks.len() >= MAX_RECORDED =>
            {
                self.lost = true;
            }
            Op::Change(c) => self.items.push(c),
            Op::Savepoint(Savepoint::Set(name)) => self.marks.push((name, self.items.len())),
            Op::Savepoint(Savepoint::Release(name)) => match find(&self.marks, &name) {
                Some(i) => self.marks.truncate(i),
                None => self.lost = true,
            },
            Op::Savepoint(Savepoint::RollbackTo(name)) => match find(&self.marks, &name) {
                Some(i) => {
                    self.items.truncate(self.marks[i].1);
                    self.marks.truncate(i + 1);
                    self.error = false;
                }
                None => self.lost = true,
            },
            Op::Savepoint(Savepoint::Rollback) => {
                self.items.clear();
                self.marks.clear();
                self.error = false;
            }
            Op::Savepoint(Savepoint::Unknown) => self.lost = true,
        }
    }

    /// A ReadyForQuery with `status` answered the client: at the end of a transaction,
    /// what it committed, nothing if it rolled back, or doubt.
    pub fn on_ready(&mut self, status: u8) -> Settled<Change> {
        match status {
            b'T' => self.error = false,
            b'E' => self.error = true,
            _ => {}
        }
        self.ended = false;
        if status != b'I' {
            return Settled::Nothing;
        }
        let items = std::mem::take(&mut self.items);
        let rolled_back = std::mem::take(&mut self.error);
        self.marks.clear();
        if std::mem::take(&mut self.lost) {
            return Settled::Doubtful;
        }
        match (rolled_back, items.is_empty()) {
            (false, false) => Settled::Commit(items),
            _ => Settled::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: &str) -> Change {
        Change::Set {
            name: n.into(),
            sql: format!("SET {n} TO 1"),
        }
    }

    /// A Query numbered `seq` with `changes` answered with `status`, failing if `error`.
    fn query(p: &mut PendingSettings, seq: u64, changes: &[&str], error: bool, status: u8) {
        p.stage(changes.iter().map(|n| set(n)));
        p.query_sent(Some(seq));
        if error {
            p.on_message(be::ERROR_RESPONSE, b"");
        }
        p.answered(seq, !error, Some(status));
    }

    #[test]
    fn a_transaction_records_a_bounded_number_of_changes() {
        let mut p = PendingSettings::default();
        for i in 0..MAX_RECORDED as u64 + 10 {
            query(&mut p, i + 1, &["a"], false, b'T');
            assert!(p.items.len() + p.marks.len() <= MAX_RECORDED);
        }
        // past the bound the transaction's settings are in doubt, not silently cut
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
        // and the next transaction starts afresh
        query(&mut p, MAX_RECORDED as u64 + 20, &["b"], false, b'I');
        assert_eq!(p.on_ready(b'I'), Settled::Commit(vec![set("b")]));
    }

    #[test]
    fn each_group_is_settled_by_its_own_answers() {
        let mut p = PendingSettings::default();
        // SET a; SELECT 1/0 in one Query: the implicit transaction rolls both back
        query(&mut p, 1, &["a"], true, b'I');
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        // a failing group, then a SET pipelined behind it: the SET counts
        p.stage([set("b")]);
        p.query_sent(Some(3));
        p.on_message(be::ERROR_RESPONSE, b"");
        p.answered(2, false, Some(b'I'));
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        p.answered(3, true, Some(b'I'));
        assert_eq!(p.on_ready(b'I'), Settled::Commit(vec![set("b")]));
        // an Execute SET, then a failing Execute before the Sync: both roll back
        p.stage([set("c")]);
        p.bound(b"", false);
        p.execute_sent(b"", Some(4));
        p.answered(4, true, None);
        p.on_message(be::ERROR_RESPONSE, b"");
        p.answered(5, false, None);
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        // bound and never executed, or executed and failed: nothing
        p.stage([set("d")]);
        p.bound(b"", false);
        p.stage([set("e")]);
        p.bound(b"", false);
        p.execute_sent(b"", Some(6));
        p.on_message(be::ERROR_RESPONSE, b"");
        p.answered(6, false, None);
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        assert!(!p.has_portals());
    }

    #[test]
    fn savepoints_and_commits_are_followed_as_they_run() {
        let sp = |n: &str| Savepoint::Set(n.into());
        let mut p = PendingSettings::default();
        // BEGIN; SET a; SAVEPOINT s; SET b; error; ROLLBACK TO s; COMMIT
        query(&mut p, 1, &["a"], false, b'T');
        p.stage_savepoint(&sp("s"));
        p.query_sent(Some(2));
        p.answered(2, true, Some(b'T'));
        query(&mut p, 3, &["b"], false, b'T');
        query(&mut p, 4, &[], true, b'E');
        assert_eq!(p.on_ready(b'E'), Settled::Nothing);
        p.stage_savepoint(&Savepoint::RollbackTo("s".into()));
        p.query_sent(Some(5));
        p.on_message(be::COMMAND_COMPLETE, b"ROLLBACK\0");
        p.answered(5, true, Some(b'T'));
        assert_eq!(p.on_ready(b'T'), Settled::Nothing);
        assert_eq!(
            p.on_message(be::COMMAND_COMPLETE, b"COMMIT\0"),
            Some(vec![set("a")])
        );
        p.answered(6, true, Some(b'I'));
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        // a failed transaction's COMMIT is a ROLLBACK
        query(&mut p, 7, &["c"], false, b'T');
        query(&mut p, 8, &[], true, b'E');
        p.on_message(be::COMMAND_COMPLETE, b"ROLLBACK\0");
        p.answered(9, true, Some(b'I'));
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        // SET a; COMMIT; SELECT 1/0 in one Query: a outlives the error, not followed
        p.stage([set("d")]);
        p.query_sent(Some(10));
        p.on_message(be::COMMAND_COMPLETE, b"COMMIT\0");
        p.on_message(be::ERROR_RESPONSE, b"");
        p.answered(10, false, Some(b'I'));
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
    }
}
