//! What a client's open transaction changed in its session, held until the transaction ends:
//! the ends of pinned state ([`crate::pg::sql::pins`]), noted as their statements are sent.
//! (Settings are followed as their statements run: [`crate::pg::pending_settings`].)

/// Session-state changes of a client's open transaction (settings, ends of pinned state),
/// kept until it ends: they count if it commits. Savepoints are followed: `ROLLBACK TO`
/// drops the changes made since its savepoint, and an error it rolls back past is forgiven
/// (pgjdbc's `autosave` sets a savepoint before every statement of a transaction and rolls
/// back to it when one fails). A whole `ROLLBACK` sent on its own drops them all. What
/// cannot be followed — an error nothing rolled back, a `ROLLBACK` with more sent behind it
/// or that an error may have skipped, a savepoint statement among others in one Query or of
/// an unknown name — makes the changes doubtful.
#[derive(Debug)]
pub struct TxPending<T> {
    items: Vec<T>,
    /// The transaction's savepoints as its statements were sent: name, items before it.
    marks: Vec<(std::sync::Arc<str>, usize)>,
    /// A savepoint statement was not followed.
    lost: bool,
    /// A statement failed and no `ROLLBACK TO` has been seen to succeed since.
    error: bool,
    /// `ROLLBACK TO` statements sent whose CommandComplete (`ROLLBACK`) has not come.
    rollbacks_to: usize,
    /// A whole `ROLLBACK` was sent, with nothing sent after it yet: when it completes, it
    /// undid every change (`false` once a change or savepoint follows it).
    whole: Option<bool>,
    /// The last CommandComplete was `ROLLBACK`…
    rollback: bool,
    /// …answering one of the `ROLLBACK TO`s: if the transaction goes on, it ended the
    /// failed state of an error before it.
    forgive: bool,
}

impl<T> Default for TxPending<T> {
    fn default() -> Self {
        TxPending {
            items: Vec::new(),
            marks: Vec::new(),
            lost: false,
            error: false,
            rollbacks_to: 0,
            whole: None,
            rollback: false,
            forgive: false,
        }
    }
}

/// What a transaction end means for the pending changes.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled<T> {
    /// Nothing pending, or the transaction goes on.
    Nothing,
    /// Committed: record these.
    Commit(Vec<T>),
    /// An error or a rollback may have undone some.
    Doubtful,
}

impl<T> TxPending<T> {
    pub fn push(&mut self, items: impl IntoIterator<Item = T>) {
        let before = self.items.len();
        self.items.extend(items);
        if self.items.len() > before {
            self.after_whole();
        }
    }

    /// Something that outlives a whole ROLLBACK in flight was sent after it.
    fn after_whole(&mut self) {
        if let Some(alone) = self.whole.as_mut() {
            *alone = false;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A savepoint statement is being sent (in order with the changes' statements).
    pub fn savepoint(&mut self, op: &super::sql::Savepoint) {
        use super::sql::Savepoint;
        let find = |marks: &[(std::sync::Arc<str>, usize)], name: &str| {
            marks.iter().rposition(|(n, _)| &**n == name)
        };
        if !matches!(op, Savepoint::Rollback) {
            self.after_whole();
        }
        match op {
            Savepoint::Rollback if self.whole.is_none() => self.whole = Some(true),
            // two in flight: which completion is which is not followed
            Savepoint::Rollback => self.lost = true,
            Savepoint::Set(name) => self.marks.push((name.clone(), self.items.len())),
            Savepoint::Release(name) => match find(&self.marks, name) {
                Some(i) => self.marks.truncate(i),
                None => self.lost = true,
            },
            Savepoint::RollbackTo(name) => match find(&self.marks, name) {
                Some(i) => {
                    self.items.truncate(self.marks[i].1);
                    self.marks.truncate(i + 1);
                    self.rollbacks_to += 1;
                }
                None => self.lost = true,
            },
            Savepoint::Unknown => self.lost = true,
        }
    }

    /// A server message that reached the client.
    pub fn on_message(&mut self, tag: u8, body: &[u8]) {
        use super::wire::be;
        if self.items.is_empty() && self.marks.is_empty() {
            return;
        }
        match tag {
            be::ERROR_RESPONSE => {
                self.error = true;
                self.rollback = false;
                self.forgive = false;
                if self.whole.take().is_some() {
                    // the ROLLBACK may be skipped to the Sync: not followed
                    self.lost = true;
                }
            }
            be::COMMAND_COMPLETE
                if body.starts_with(b"ROLLBACK\0")
                    && self.rollbacks_to == 0
                    && self.whole.is_some() =>
            {
                // a whole ROLLBACK with nothing sent after it: every change is undone
                match self.whole.take() {
                    Some(true) => {
                        self.items.clear();
                        self.marks.clear();
                        self.error = false;
                        self.rollback = false;
                        self.forgive = false;
                    }
                    _ => self.lost = true,
                }
            }
            be::COMMAND_COMPLETE if body.starts_with(b"ROLLBACK") => {
                self.rollback = true;
                match self.rollbacks_to.checked_sub(1) {
                    Some(n) => {
                        self.rollbacks_to = n;
                        self.forgive = true;
                    }
                    None => self.lost = true, // a whole ROLLBACK, or a ROLLBACK TO not followed
                }
            }
            be::COMMAND_COMPLETE => self.goes_on(),
            _ => {}
        }
    }

    /// The transaction went on after the last CommandComplete: a `ROLLBACK` was a
    /// `ROLLBACK TO`, which ended the failed state of an error before it.
    fn goes_on(&mut self) {
        let forgive = std::mem::take(&mut self.forgive);
        if std::mem::take(&mut self.rollback) && forgive {
            self.error = false;
        }
    }

    /// A ReadyForQuery with `status` answered the client.
    pub fn on_ready(&mut self, status: u8) -> Settled<T> {
        if status != b'I' {
            if status == b'T' {
                self.goes_on();
            }
            return Settled::Nothing;
        }
        let doubtful = self.error || self.rollback || self.lost;
        let items = std::mem::take(&mut self.items);
        *self = TxPending::default();
        match (items.is_empty(), doubtful) {
            (true, _) => Settled::Nothing,
            (false, true) => Settled::Doubtful,
            (false, false) => Settled::Commit(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::sql::settings::Change;

    #[test]
    fn pending_changes_count_only_when_committed() {
        use crate::pg::wire::be;
        let mut p: TxPending<Change> = TxPending::default();
        assert_eq!(p.on_ready(b'I'), Settled::Nothing);
        p.push([Change::ResetAll]);
        assert_eq!(
            p.on_ready(b'T'),
            Settled::Nothing,
            "still in the transaction"
        );
        assert_eq!(p.on_ready(b'I'), Settled::Commit(vec![Change::ResetAll]));
        p.push([Change::ResetAll]);
        p.on_message(be::ERROR_RESPONSE, b"");
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
        p.push([Change::ResetAll]);
        p.on_message(be::COMMAND_COMPLETE, b"ROLLBACK\0");
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
        assert!(p.is_empty());
    }

    #[test]
    fn pending_changes_follow_savepoints() {
        use crate::pg::sql::Savepoint;
        use crate::pg::wire::be;
        let sp = |n: &str| std::sync::Arc::<str>::from(n);
        let set = |n: &str| Change::Set {
            name: n.into(),
            sql: "1".into(),
        };
        let done = |p: &mut TxPending<Change>, tag: &[u8]| p.on_message(be::COMMAND_COMPLETE, tag);
        // pgjdbc autosave: SET; SAVEPOINT; failing statement; ROLLBACK TO; more; COMMIT
        let mut p: TxPending<Change> = TxPending::default();
        p.push([set("a")]);
        done(&mut p, b"SET\0");
        p.savepoint(&Savepoint::Set(sp("autosave")));
        done(&mut p, b"SAVEPOINT\0");
        p.on_message(be::ERROR_RESPONSE, b"");
        assert_eq!(p.on_ready(b'E'), Settled::Nothing);
        p.savepoint(&Savepoint::RollbackTo(sp("autosave")));
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(p.on_ready(b'T'), Settled::Nothing);
        p.savepoint(&Savepoint::Set(sp("autosave")));
        p.push([set("b")]);
        done(&mut p, b"COMMIT\0");
        assert_eq!(p.on_ready(b'I'), Settled::Commit(vec![set("a"), set("b")]));
        // ROLLBACK TO undoes what came after its savepoint (the latest of that name)
        p.savepoint(&Savepoint::Set(sp("x")));
        p.push([set("c")]);
        p.savepoint(&Savepoint::Set(sp("x")));
        p.push([set("d")]);
        p.savepoint(&Savepoint::RollbackTo(sp("x")));
        done(&mut p, b"ROLLBACK\0");
        done(&mut p, b"COMMIT\0");
        assert_eq!(p.on_ready(b'I'), Settled::Commit(vec![set("c")]));
        // RELEASE drops the savepoint and keeps the changes; an unknown name is doubtful
        p.savepoint(&Savepoint::Set(sp("y")));
        p.push([set("e")]);
        p.savepoint(&Savepoint::Release(sp("y")));
        p.savepoint(&Savepoint::RollbackTo(sp("y")));
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
        // an error nothing rolled back past, or a whole ROLLBACK, stays doubtful
        p.savepoint(&Savepoint::Set(sp("z")));
        p.push([set("f")]);
        p.on_message(be::ERROR_RESPONSE, b"");
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
        p.push([set("g")]);
        done(&mut p, b"ROLLBACK\0");
        done(&mut p, b"SET\0");
        assert_eq!(
            p.on_ready(b'I'),
            Settled::Doubtful,
            "BEGIN; SET; ROLLBACK; SET"
        );
        // a ROLLBACK TO skipped after a pipeline error, then a whole ROLLBACK
        p.push([set("h")]);
        p.savepoint(&Savepoint::Set(sp("w")));
        p.push([set("i")]);
        p.on_message(be::ERROR_RESPONSE, b"");
        p.savepoint(&Savepoint::RollbackTo(sp("w")));
        assert_eq!(p.on_ready(b'E'), Settled::Nothing);
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(p.on_ready(b'I'), Settled::Doubtful);
        assert!(p.is_empty());
    }

    /// A whole ROLLBACK sent on its own undid everything: nothing to record, no doubt
    /// (SQLAlchemy's pool rolls back every returned connection; asyncpg's type lookup sets
    /// jit inside a transaction).
    #[test]
    fn a_whole_rollback_alone_undoes_without_doubt() {
        use crate::pg::sql::Savepoint;
        use crate::pg::wire::be;
        let mut p: TxPending<Change> = TxPending::default();
        let sp = |n: &str| std::sync::Arc::<str>::from(n);
        let set = |n: &str| Change::Set {
            name: n.into(),
            sql: "1".into(),
        };
        let done = |p: &mut TxPending<Change>, tag: &[u8]| p.on_message(be::COMMAND_COMPLETE, tag);
        p.push([set("j")]);
        p.savepoint(&Savepoint::Set(sp("v")));
        p.on_message(be::ERROR_RESPONSE, b"");
        p.savepoint(&Savepoint::Rollback);
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(
            p.on_ready(b'I'),
            Settled::Nothing,
            "BEGIN; SET; error; ROLLBACK"
        );
        // …unless something was sent after it before it completed, or an error may have
        // skipped it
        p.push([set("k")]);
        p.savepoint(&Savepoint::Rollback);
        p.push([set("l")]);
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(
            p.on_ready(b'I'),
            Settled::Doubtful,
            "ROLLBACK; SET in flight"
        );
        p.push([set("m")]);
        p.savepoint(&Savepoint::Rollback);
        p.on_message(be::ERROR_RESPONSE, b"");
        assert_eq!(p.on_ready(b'E'), Settled::Nothing);
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(
            p.on_ready(b'I'),
            Settled::Doubtful,
            "a ROLLBACK behind an error"
        );
        // ROLLBACK AND CHAIN: the new transaction's changes commit
        p.push([set("n")]);
        p.savepoint(&Savepoint::Rollback);
        done(&mut p, b"ROLLBACK\0");
        assert_eq!(p.on_ready(b'T'), Settled::Nothing);
        p.push([set("o")]);
        done(&mut p, b"COMMIT\0");
        assert_eq!(p.on_ready(b'I'), Settled::Commit(vec![set("o")]));
    }
}
